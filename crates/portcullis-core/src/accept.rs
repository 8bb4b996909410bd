//! `Accept` negotiation for error bodies: JSON, RFC 9457 problem details, or a
//! small HTML page. Media ranges are weighed by q-value, and the most specific
//! range that matches a type decides that type's weight (RFC 9110 §12.5.1).

/// The body formats portcullis can answer errors in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// `application/json`: `{"error","message","status","request_id"}`.
    Json,
    /// `application/problem+json` (RFC 9457).
    Problem,
    /// `text/html`, for browsers.
    Html,
}

impl BodyFormat {
    /// The `Content-Type` to send.
    pub const fn content_type(self) -> &'static str {
        match self {
            BodyFormat::Json => "application/json",
            BodyFormat::Problem => "application/problem+json",
            BodyFormat::Html => "text/html; charset=utf-8",
        }
    }
}

/// In order of preference when weights tie.
const CANDIDATES: [(BodyFormat, &str, &str); 3] = [
    (BodyFormat::Json, "application", "json"),
    (BodyFormat::Problem, "application", "problem+json"),
    (BodyFormat::Html, "text", "html"),
];

/// Choose the body format for an `Accept` value. No header, an unparseable
/// one, `*/*` alone, or nothing acceptable: JSON (an error must still be
/// delivered, so there is no 406 here).
pub fn negotiate(accept: Option<&str>) -> BodyFormat {
    let Some(accept) = accept else {
        return BodyFormat::Json;
    };
    let ranges: Vec<Range<'_>> = accept.split(',').filter_map(Range::parse).collect();
    let mut best = (BodyFormat::Json, 0u16);
    for (format, ty, sub) in CANDIDATES {
        let weight = ranges
            .iter()
            .filter(|r| r.matches(ty, sub))
            .max_by_key(|r| r.specificity())
            .map_or(0, |r| r.q);
        if weight > best.1 {
            best = (format, weight);
        }
    }
    best.0
}

#[derive(Debug)]
struct Range<'a> {
    ty: &'a str,
    sub: &'a str,
    /// q-value in thousandths.
    q: u16,
}

impl<'a> Range<'a> {
    fn parse(item: &'a str) -> Option<Self> {
        let mut parts = item.split(';');
        let (ty, sub) = parts.next()?.trim().split_once('/')?;
        let (ty, sub) = (ty.trim(), sub.trim());
        if ty.is_empty() || sub.is_empty() || (ty == "*" && sub != "*") {
            return None;
        }
        let mut q = 1000;
        for param in parts {
            let Some((k, v)) = param.split_once('=') else {
                continue;
            };
            if k.trim().eq_ignore_ascii_case("q") {
                q = parse_q(v.trim())?;
            }
        }
        Some(Range { ty, sub, q })
    }

    fn matches(&self, ty: &str, sub: &str) -> bool {
        (self.ty == "*" || self.ty.eq_ignore_ascii_case(ty))
            && (self.sub == "*" || self.sub.eq_ignore_ascii_case(sub))
    }

    fn specificity(&self) -> u8 {
        u8::from(self.ty != "*") + u8::from(self.sub != "*")
    }
}

/// `q` is `0`, `1`, or a decimal with up to three digits.
fn parse_q(v: &str) -> Option<u16> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_val: u16 = format!("{frac:0<3}").parse().ok()?;
    match int {
        "0" => Some(frac_val),
        "1" if frac_val == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsers_get_html() {
        let chrome = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8";
        assert_eq!(negotiate(Some(chrome)), BodyFormat::Html);
    }

    #[test]
    fn wildcards_and_absence_get_json() {
        assert_eq!(negotiate(None), BodyFormat::Json);
        assert_eq!(negotiate(Some("*/*")), BodyFormat::Json);
        assert_eq!(negotiate(Some("application/*")), BodyFormat::Json);
        assert_eq!(negotiate(Some("image/png")), BodyFormat::Json);
        assert_eq!(negotiate(Some("garbage")), BodyFormat::Json);
        assert_eq!(negotiate(Some("")), BodyFormat::Json);
    }

    #[test]
    fn problem_json_when_preferred() {
        assert_eq!(
            negotiate(Some("application/problem+json")),
            BodyFormat::Problem
        );
        assert_eq!(
            negotiate(Some("application/json;q=0.5, application/problem+json")),
            BodyFormat::Problem
        );
        assert_eq!(
            negotiate(Some("application/problem+json;q=0.4, application/json")),
            BodyFormat::Json
        );
    }

    #[test]
    fn q_values_decide_and_zero_excludes() {
        assert_eq!(
            negotiate(Some("text/html;q=0.3, application/json;q=0.2")),
            BodyFormat::Html
        );
        assert_eq!(
            negotiate(Some("text/html;q=0.3, */*;q=0.5")),
            BodyFormat::Json
        );
        assert_eq!(
            negotiate(Some("text/html, application/json;q=0")),
            BodyFormat::Html
        );
        // The specific range decides for its type even when a wildcard weighs more.
        assert_eq!(
            negotiate(Some("*/*;q=1, application/json;q=0, text/html;q=0.1")),
            BodyFormat::Problem
        );
        // Malformed q invalidates that range only.
        assert_eq!(
            negotiate(Some("text/html;q=2, application/problem+json")),
            BodyFormat::Problem
        );
    }
}
