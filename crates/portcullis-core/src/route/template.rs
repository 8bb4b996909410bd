//! Path templates: `/users/{id}`, `/files/{*path}`, literals in canonical form.

use std::fmt;

use super::PathSegments;
use crate::normalize::{decode_segment, normalize_target};

/// One segment of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Matches exactly this canonical segment.
    Literal(String),
    /// Matches any one segment, bound to the name.
    Param(String),
    /// Matches the rest of the path (possibly empty), bound to the name.
    Tail(String),
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    segments: Vec<Segment>,
    trailing_slash: bool,
}

/// Why a template was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateError {
    /// It does not start with `/`.
    NotAbsolute,
    /// A literal is not in canonical form (it would never match).
    NotCanonical {
        /// The canonical spelling to use instead.
        canonical: String,
    },
    /// A `{...}` is not a whole segment, or its name is not an identifier.
    BadParameter(String),
    /// The same parameter name twice.
    DuplicateParameter(String),
    /// `{*tail}` anywhere but the last segment.
    TailNotLast,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TemplateError::NotAbsolute => f.write_str("a path template must start with '/'"),
            TemplateError::NotCanonical { canonical } => write!(
                f,
                "the path is not in canonical form, so no request could match it; write it as '{canonical}'"
            ),
            TemplateError::BadParameter(s) => write!(
                f,
                "'{s}' is not a valid parameter: write {{name}} or {{*name}} as a whole segment, name made of letters, digits and '_'"
            ),
            TemplateError::DuplicateParameter(s) => write!(f, "parameter '{s}' appears twice"),
            TemplateError::TailNotLast => {
                f.write_str("a {*tail} parameter must be the last segment")
            }
        }
    }
}

impl Template {
    /// Parse a template.
    pub fn parse(src: &str) -> Result<Self, TemplateError> {
        if !src.starts_with('/') {
            return Err(TemplateError::NotAbsolute);
        }
        let split = PathSegments::of(src);
        let mut segments = Vec::with_capacity(split.segments.len());
        let mut names: Vec<String> = Vec::new();
        let count = split.segments.len();
        for (i, raw) in split.segments.iter().enumerate() {
            let seg = parse_segment(raw)?;
            if let Segment::Param(n) | Segment::Tail(n) = &seg {
                if names.contains(n) {
                    return Err(TemplateError::DuplicateParameter(n.clone()));
                }
                names.push(n.clone());
            }
            if matches!(seg, Segment::Tail(_)) && (i + 1 != count || split.trailing_slash) {
                return Err(TemplateError::TailNotLast);
            }
            segments.push(seg);
        }
        let template = Template {
            source: src.to_owned(),
            segments,
            trailing_slash: split.trailing_slash,
        };
        template.check_canonical()?;
        Ok(template)
    }

    /// A template's literals must be what normalisation produces, or the route
    /// could never be reached.
    fn check_canonical(&self) -> Result<(), TemplateError> {
        let mut literal_path = String::new();
        for seg in &self.segments {
            literal_path.push('/');
            literal_path.push_str(match seg {
                Segment::Literal(l) => l,
                Segment::Param(_) | Segment::Tail(_) => "p",
            });
        }
        if literal_path.is_empty() || self.trailing_slash {
            literal_path.push('/');
        }
        match normalize_target(&http::Method::GET, &literal_path).map(|t| t.path) {
            Ok(c) if c == literal_path => Ok(()),
            Ok(c) => Err(TemplateError::NotCanonical { canonical: c }),
            Err(e) => Err(TemplateError::NotCanonical {
                canonical: format!("(none: {e})"),
            }),
        }
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The segments.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Whether the template ends with `/` (only for templates without a tail).
    pub fn trailing_slash(&self) -> bool {
        self.trailing_slash
    }

    /// Whether two templates match exactly the same paths.
    pub fn same_shape(&self, other: &Template) -> bool {
        self.trailing_slash == other.trailing_slash
            && self.segments.len() == other.segments.len()
            && self
                .segments
                .iter()
                .zip(&other.segments)
                .all(|(a, b)| match (a, b) {
                    (Segment::Literal(x), Segment::Literal(y)) => x == y,
                    (Segment::Param(_), Segment::Param(_))
                    | (Segment::Tail(_), Segment::Tail(_)) => true,
                    _ => false,
                })
    }

    /// Whether the template matches the path (reference semantics; the trie
    /// must agree with this).
    pub fn matches(&self, path: &PathSegments<'_>) -> bool {
        let n = path.segments.len();
        for (i, seg) in self.segments.iter().enumerate() {
            match seg {
                Segment::Tail(_) => return n > i || (n == i && path.trailing_slash),
                Segment::Param(_) => {
                    if i >= n {
                        return false;
                    }
                }
                Segment::Literal(l) => {
                    if path.segments.get(i) != Some(&l.as_str()) {
                        return false;
                    }
                }
            }
        }
        n == self.segments.len() && path.trailing_slash == self.trailing_slash
    }

    /// Specificity, compared lexicographically: higher is more specific. A
    /// template that ends (rank 3) beats a tail at the same depth, so `/`
    /// wins over `/{*rest}` for the path `/`.
    pub fn rank(&self) -> Vec<u8> {
        let mut rank: Vec<u8> = self
            .segments
            .iter()
            .map(|s| match s {
                Segment::Literal(_) => 2,
                Segment::Param(_) => 1,
                Segment::Tail(_) => 0,
            })
            .collect();
        if !matches!(self.segments.last(), Some(Segment::Tail(_))) {
            rank.push(3);
        }
        rank
    }

    /// The decoded parameters of a path this template matches.
    pub fn params(&self, path: &PathSegments<'_>) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (i, seg) in self.segments.iter().enumerate() {
            match seg {
                Segment::Param(name) => {
                    let v = path.segments.get(i).copied().unwrap_or_default();
                    out.push((name.clone(), decode_segment(v).unwrap_or_default()));
                }
                Segment::Tail(name) => {
                    let rest = path.segments.get(i..).unwrap_or_default();
                    // The trailing '/' stays in the path but not in the value, so
                    // `/files/secret/` names the same resource as `/files/secret`.
                    let v: Vec<String> = rest
                        .iter()
                        .map(|s| decode_segment(s).unwrap_or_default())
                        .collect();
                    out.push((name.clone(), v.join("/")));
                }
                Segment::Literal(_) => {}
            }
        }
        out
    }
}

fn parse_segment(raw: &str) -> Result<Segment, TemplateError> {
    if !(raw.contains('{') || raw.contains('}')) {
        return Ok(Segment::Literal(raw.to_owned()));
    }
    let inner = raw
        .strip_prefix('{')
        .and_then(|r| r.strip_suffix('}'))
        .ok_or_else(|| TemplateError::BadParameter(raw.to_owned()))?;
    let (tail, name) = match inner.strip_prefix('*') {
        Some(n) => (true, n),
        None => (false, inner),
    };
    let ident = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ident {
        return Err(TemplateError::BadParameter(raw.to_owned()));
    }
    Ok(if tail {
        Segment::Tail(name.to_owned())
    } else {
        Segment::Param(name.to_owned())
    })
}
