//! Stage 1: turn the raw request-target into the one canonical path that the
//! route table, the policy and the upstream all see.
//!
//! The rules (docs/normalisation.md explains why):
//! - percent-escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded;
//!   every other escape is kept, with its hex digits upper-cased;
//! - `.` and `..` segments are removed as RFC 3986 §5.2.4 says; `..` never climbs
//!   above the root;
//! - runs of `/` collapse into one; a trailing `/` is kept and is significant;
//! - the path is case-sensitive;
//! - escapes of the other characters a path segment may hold unencoded
//!   (`! $ & ' ( ) * + , = : @`) are decoded too, since every upstream reads
//!   them as those characters; `%3B` (`;`) stays encoded;
//! - the characters a path may not hold raw (`" < > [ ] ^ ` { | }`) are
//!   percent-encoded, so each has one spelling;
//! - anything that could be read more than one way is refused: an encoded `/`
//!   or `\`, an encoded NUL or control character, a raw `\`, a raw `;` (servlet
//!   containers strip `;...` path parameters, so `/admin;x` would be `/admin`
//!   upstream but not here), a segment that only becomes `.` or `..` after
//!   decoding, escapes that do not decode to UTF-8 (overlong forms included),
//!   raw bytes outside visible ASCII, and fragments.

use std::fmt;

use http::Method;

/// Why a request-target was refused. Each maps to 400 `InvalidPath`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// The target is empty or neither origin-form, absolute-form nor `*`.
    UnsupportedForm,
    /// `*` with a method other than OPTIONS.
    AsteriskNotOptions,
    /// A raw byte outside visible ASCII (control, space, DEL or non-ASCII).
    ForbiddenByte,
    /// A `#`: fragments are never sent by conforming clients.
    Fragment,
    /// A raw backslash, which some servers treat as `/`.
    Backslash,
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// `%2F`: an encoded slash would hide a segment boundary.
    EncodedSlash,
    /// `%5C`: an encoded backslash.
    EncodedBackslash,
    /// An encoded NUL or other control character.
    EncodedControl,
    /// Decoded bytes that are not UTF-8 (overlong forms included).
    InvalidUtf8,
    /// A segment that becomes `.` or `..` only after decoding.
    EncodedDotSegment,
    /// A raw `;`: servlet containers strip `;` path parameters before routing.
    PathParameter,
    /// An absolute-form target whose authority is not a plain host[:port].
    BadAuthority,
}

impl PathError {
    /// A short operator-facing description for the trace and the log.
    pub const fn describe(self) -> &'static str {
        match self {
            PathError::UnsupportedForm => {
                "the request target is not origin-form, absolute-form or '*'"
            }
            PathError::AsteriskNotOptions => "'*' is only a valid target for OPTIONS",
            PathError::ForbiddenByte => "the target contains a byte outside visible ASCII",
            PathError::Fragment => "the target contains a fragment ('#')",
            PathError::Backslash => "the path contains a backslash",
            PathError::BadEscape => "a '%' is not followed by two hex digits",
            PathError::EncodedSlash => "the path contains an encoded '/' (%2F)",
            PathError::EncodedBackslash => "the path contains an encoded '\\' (%5C)",
            PathError::EncodedControl => "the path contains an encoded control character",
            PathError::InvalidUtf8 => "the decoded path is not valid UTF-8",
            PathError::EncodedDotSegment => "a segment becomes '.' or '..' only after decoding",
            PathError::PathParameter => {
                "the path contains ';', which some servers strip as a path parameter"
            }
            PathError::BadAuthority => "the absolute-form authority is not a plain host",
        }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// A request-target after normalisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The canonical path: starts with `/`, no empty, `.` or `..` segments.
    /// For the `*` target of OPTIONS it is `*`.
    pub path: String,
    /// The query, without the `?`, escapes validated but otherwise as sent.
    pub query: Option<String>,
    /// The host named by an absolute-form target, lower-cased, port removed.
    pub authority_host: Option<String>,
}

impl Target {
    /// Whether this is the server-wide `OPTIONS *` target.
    pub fn is_asterisk(&self) -> bool {
        self.path == "*"
    }
}

/// Normalise a raw request-target (as it appeared on the request line).
pub fn normalize_target(method: &Method, raw: &str) -> Result<Target, PathError> {
    if raw == "*" {
        return if method == Method::OPTIONS {
            Ok(Target {
                path: "*".to_owned(),
                query: None,
                authority_host: None,
            })
        } else {
            Err(PathError::AsteriskNotOptions)
        };
    }
    check_bytes(raw)?;
    let (authority_host, path_and_query) = split_form(raw)?;
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    if let Some(q) = query {
        check_escapes(q)?;
    }
    // `http://h?q` has an empty path, which means `/`.
    let path = if path.is_empty() && authority_host.is_some() {
        "/"
    } else {
        path
    };
    Ok(Target {
        path: normalize_path(path)?,
        query: query.map(str::to_owned),
        authority_host,
    })
}

fn check_bytes(raw: &str) -> Result<(), PathError> {
    for b in raw.bytes() {
        match b {
            b'#' => return Err(PathError::Fragment),
            0x21..=0x7e => {}
            _ => return Err(PathError::ForbiddenByte),
        }
    }
    Ok(())
}

/// Split absolute-form (`http://host/p?q`) from origin-form (`/p?q`).
fn split_form(raw: &str) -> Result<(Option<String>, &str), PathError> {
    if raw.starts_with('/') {
        return Ok((None, raw));
    }
    let lower_scheme = raw
        .get(..8)
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let rest = if lower_scheme.starts_with("http://") {
        &raw[7..]
    } else if lower_scheme.starts_with("https://") {
        &raw[8..]
    } else {
        return Err(PathError::UnsupportedForm);
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let host = host_of(authority).ok_or(PathError::BadAuthority)?;
    Ok((Some(host), tail))
}

/// The host part of an authority or `Host` value: lower-cased, port removed.
/// `None` for userinfo, empty hosts, or characters a host cannot hold.
pub fn host_of(authority: &str) -> Option<String> {
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let host = if let Some(rest) = authority.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        return inside
            .parse::<std::net::Ipv6Addr>()
            .ok()
            .map(|ip| format!("[{ip}]"));
    } else {
        match authority.rsplit_once(':') {
            Some((h, port)) if is_port(port) => h,
            Some(_) => return None,
            None => authority,
        }
    };
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    let host = host.trim_end_matches('.');
    (valid && !host.is_empty()).then(|| host.to_ascii_lowercase())
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())
}

fn check_escapes(s: &str) -> Result<(), PathError> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            hex_pair(bytes, i)?;
            i += 3;
        } else {
            i += 1;
        }
    }
    Ok(())
}

fn hex_pair(bytes: &[u8], at: usize) -> Result<u8, PathError> {
    let hi = bytes.get(at + 1).and_then(|b| (*b as char).to_digit(16));
    let lo = bytes.get(at + 2).and_then(|b| (*b as char).to_digit(16));
    match (hi, lo) {
        (Some(h), Some(l)) => Ok((h * 16 + l) as u8),
        _ => Err(PathError::BadEscape),
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Normalise an origin-form path (already known to be visible ASCII).
pub fn normalize_path(path: &str) -> Result<String, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::UnsupportedForm);
    }
    if path.contains('\\') {
        return Err(PathError::Backslash);
    }
    if path.contains(';') {
        return Err(PathError::PathParameter);
    }
    if is_already_canonical(path) {
        return Ok(path.to_owned());
    }
    let mut out: Vec<String> = Vec::new();
    let mut trailing_slash = false;
    let raw_segments: Vec<&str> = path[1..].split('/').collect();
    let last = raw_segments.len() - 1;
    for (i, raw) in raw_segments.iter().enumerate() {
        let seg = canonical_segment(raw)?;
        let is_last = i == last;
        match seg.as_str() {
            "" => trailing_slash = is_last,
            "." => trailing_slash = is_last,
            ".." => {
                out.pop();
                trailing_slash = is_last;
            }
            _ => {
                out.push(seg);
                trailing_slash = false;
            }
        }
    }
    let mut canonical = String::with_capacity(path.len());
    for seg in &out {
        canonical.push('/');
        canonical.push_str(seg);
    }
    if out.is_empty() || trailing_slash {
        canonical.push('/');
    }
    Ok(canonical)
}

/// The common case: only characters that stand for themselves, no escapes,
/// no empty or dot segments. Such a path is its own canonical form.
fn is_already_canonical(path: &str) -> bool {
    let bytes = path.as_bytes();
    let plain = bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'~' | b'.'));
    plain && !path.contains("//") && path[1..].split('/').all(|seg| seg != "." && seg != "..")
}

/// Decode unreserved escapes of one segment, keep the rest upper-cased, and
/// refuse the ambiguous forms. Returns the segment in canonical spelling.
fn canonical_segment(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut decoded: Vec<u8> = Vec::with_capacity(raw.len());
    let mut encoded_dot = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            if is_unreserved(b) || is_decoded_pchar(b) {
                out.push(b as char);
            } else {
                // `" < > [ ] ^ ` { | }` may not appear raw in a path; their
                // canonical spelling is the escape, so `/a|b` and `/a%7Cb` are
                // one path, as upstreams read them.
                push_escape(&mut out, b);
            }
            decoded.push(b);
            i += 1;
            continue;
        }
        let v = hex_pair(bytes, i)?;
        i += 3;
        match v {
            b'/' => return Err(PathError::EncodedSlash),
            b'\\' => return Err(PathError::EncodedBackslash),
            0x00..=0x1f | 0x7f => return Err(PathError::EncodedControl),
            _ if is_unreserved(v) || is_decoded_pchar(v) => {
                encoded_dot |= v == b'.';
                out.push(v as char);
            }
            _ => push_escape(&mut out, v),
        }
        decoded.push(v);
    }
    if std::str::from_utf8(&decoded).is_err() {
        return Err(PathError::InvalidUtf8);
    }
    if encoded_dot && (out == "." || out == "..") {
        return Err(PathError::EncodedDotSegment);
    }
    Ok(out)
}

/// Characters a segment may hold unencoded (RFC 3986 `pchar`) whose escapes
/// every common server decodes: decoding them here keeps the route table in
/// step with the upstream. `;` is not among them.
fn is_decoded_pchar(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'=' | b':' | b'@'
    )
}

fn push_escape(out: &mut String, b: u8) {
    out.push('%');
    out.push(hex_digit(b >> 4));
    out.push(hex_digit(b & 0x0f));
}

fn hex_digit(n: u8) -> char {
    char::from(b"0123456789ABCDEF"[usize::from(n & 0x0f)])
}

/// Decode every escape of a canonical segment (for route parameters). The
/// canonical form guarantees the result is UTF-8; anything else is `None`.
pub fn decode_segment(canonical: &str) -> Option<String> {
    let bytes = canonical.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(hex_pair(bytes, i).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests;
