//! Decisions -> responses: status, headers and body from a denial's face, in
//! the format the client accepts. The one place a denial becomes HTTP.
//!
//! A concealed denial already carries the face of a genuine 404, so the two
//! render to the same bytes but for the request id.

use serde::Serialize;

use crate::accept::{BodyFormat, negotiate};
use crate::decision::{Challenge, Face};

/// A rendered error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The status.
    pub status: u16,
    /// Headers, lower-case names, in a fixed order.
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: String,
}

#[derive(Serialize)]
struct JsonBody<'a> {
    error: &'a str,
    message: &'a str,
    status: u16,
    request_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires: Option<&'a str>,
}

#[derive(Serialize)]
struct ProblemBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'static str,
    status: u16,
    detail: &'a str,
    error: &'a str,
    request_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires: Option<&'a str>,
}

/// Render a face for a client whose `Accept` is `accept`.
pub fn render(face: &Face, accept: Option<&str>, request_id: &str) -> Rendered {
    let format = negotiate(accept);
    let body = match format {
        BodyFormat::Json => serde_json::to_string(&JsonBody {
            error: &face.code,
            message: &face.message,
            status: face.status,
            request_id,
            expires: face.expires.as_ref().map(|e| e.at.as_str()),
        })
        .unwrap_or_default(),
        BodyFormat::Problem => serde_json::to_string(&ProblemBody {
            kind: "about:blank",
            title: status_text(face.status),
            status: face.status,
            detail: &face.message,
            error: &face.code,
            request_id,
            expires: face.expires.as_ref().map(|e| e.at.as_str()),
        })
        .unwrap_or_default(),
        BodyFormat::Html => html_page(face, request_id),
    };
    let mut headers = vec![
        ("content-type", format.content_type().to_owned()),
        ("cache-control", "no-store".to_owned()),
    ];
    if let Some(c) = &face.challenge {
        headers.push(("www-authenticate", challenge_header(c)));
    }
    if let Some(a) = &face.allow {
        headers.push(("allow", a.clone()));
    }
    if let Some(e) = &face.expires {
        headers.push(("retry-after", e.retry_after_s.to_string()));
    }
    Rendered {
        status: face.status,
        headers,
        body,
    }
}

/// `Bearer realm="…"[, error="…"][, error_description="…"][, scope="…"]`.
pub fn challenge_header(c: &Challenge) -> String {
    let mut out = format!("Bearer realm=\"{}\"", quote(&c.realm));
    if let Some(e) = c.error {
        out.push_str(&format!(", error=\"{e}\""));
    }
    if let Some(d) = &c.description {
        out.push_str(&format!(", error_description=\"{}\"", quote(d)));
    }
    if let Some(s) = &c.scope {
        out.push_str(&format!(", scope=\"{}\"", quote(s)));
    }
    out
}

/// Inside a quoted-string only `"` and `\` need escaping; anything outside
/// visible ASCII is dropped so the header stays valid.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => {}
        }
    }
    out
}

fn html_page(face: &Face, request_id: &str) -> String {
    let title = format!("{} {}", face.status, status_text(face.status));
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>{t}</title></head>\n<body>\n<h1>{t}</h1>\n<p>{m}</p>\n{u}<p><small>Error <code>{c}</code>, request id <code>{r}</code></small></p>\n</body>\n</html>\n",
        t = escape_html(&title),
        m = escape_html(&face.message),
        u = face.expires.as_ref().map_or_else(String::new, |e| format!(
            "<p>Until <time datetime=\"{a}\">{a}</time>.</p>\n",
            a = escape_html(&e.at)
        )),
        c = escape_html(&face.code),
        r = escape_html(request_id),
    )
}

/// Escape for HTML text and attribute values.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// The reason phrase of the statuses portcullis answers with.
pub const fn status_text(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reason::ReasonCode;

    #[test]
    fn json_body_has_the_documented_shape_and_order() {
        let mut face = Face::of(ReasonCode::AccessDenied);
        face.code = "InsufficientPermissions".into();
        face.message = "Deleting users requires the 'admin' role.".into();
        let r = render(&face, None, "r-1");
        assert_eq!(
            r.body,
            r#"{"error":"InsufficientPermissions","message":"Deleting users requires the 'admin' role.","status":403,"request_id":"r-1"}"#
        );
        assert_eq!(
            r.headers[0],
            ("content-type", "application/json".to_owned())
        );
    }

    #[test]
    fn a_ban_says_when_it_ends_in_every_format_and_in_retry_after() {
        let mut face = Face::of(ReasonCode::Banned);
        face.expires = Some(crate::decision::Expiry {
            at: "2026-11-22T16:00:00.000Z".into(),
            retry_after_s: 600,
        });
        for accept in [None, Some("application/problem+json")] {
            let r = render(&face, accept, "r");
            let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            assert_eq!(v["expires"], "2026-11-22T16:00:00.000Z", "{accept:?}");
            assert!(r.headers.contains(&("retry-after", "600".to_owned())));
        }
        let html = render(&face, Some("text/html"), "r").body;
        assert!(
            html.contains("datetime=\"2026-11-22T16:00:00.000Z\""),
            "{html}"
        );
        // Other refusals have no expiry field at all.
        let plain = render(&Face::of(ReasonCode::IpBlocked), None, "r");
        assert!(
            !plain.body.contains("expires") && !plain.headers.iter().any(|h| h.0 == "retry-after")
        );
    }

    #[test]
    fn html_escapes_everything_it_prints() {
        let mut face = Face::of(ReasonCode::AccessDenied);
        face.message = "<script>alert('x')</script> & \"q\"".into();
        let r = render(&face, Some("text/html"), "<id>");
        assert!(!r.body.contains("<script>"));
        assert!(
            r.body
                .contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;")
        );
        assert!(r.body.contains("&lt;id&gt;"));
    }

    #[test]
    fn problem_details_carry_the_same_facts() {
        let r = render(
            &Face::of(ReasonCode::NotFound),
            Some("application/problem+json"),
            "r",
        );
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["status"], 404);
        assert_eq!(v["title"], "Not Found");
        assert_eq!(v["error"], "NotFound");
        assert_eq!(v["request_id"], "r");
        assert_eq!(r.headers[0].1, "application/problem+json");
    }

    #[test]
    fn challenges_quote_safely() {
        let c = Challenge {
            realm: "a\"b".into(),
            error: Some("invalid_token"),
            description: Some("x\u{7}y".into()),
            scope: None,
        };
        assert_eq!(
            challenge_header(&c),
            r#"Bearer realm="a\"b", error="invalid_token", error_description="xy""#
        );
    }
}
