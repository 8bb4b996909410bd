//! The built-in static file upstream (stage 10, when `[upstream] static_dir`
//! is set): the engine's canonical path, mapped onto a folder.
//!
//! Nothing outside the root is served: every path is resolved with its
//! symlinks and must still lie inside the (canonicalised) root. Dotfiles are
//! never served. A folder is answered with its index file, a listing when
//! listing is on, or 403 `DirectoryListingDisabled`; a file the process may
//! not read is 403 `FileNotReadable`. Files carry `Content-Type`, `ETag` and
//! `Last-Modified`, answer conditional requests with 304/412, and single
//! byte ranges with 206.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use portcullis_config::StaticSite;
use portcullis_core::ReasonCode;
use portcullis_core::render::escape_html;
use tokio::io::AsyncSeekExt;

use super::body::{Body, FileBody, empty, full};

/// A refusal, rendered by the gateway like any other.
#[derive(Debug)]
pub struct Refusal {
    /// Why.
    pub reason: ReasonCode,
    /// For the operator (the decision log), never the client.
    pub detail: String,
    /// Extra headers (`Allow`, `Content-Range`).
    pub headers: Vec<(header::HeaderName, String)>,
}

fn refuse(reason: ReasonCode, detail: impl Into<String>) -> Refusal {
    Refusal {
        reason,
        detail: detail.into(),
        headers: Vec::new(),
    }
}

/// Answer `method path` from `site`.
pub async fn serve(
    site: &StaticSite,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response<Body>, Refusal> {
    if method != Method::GET && method != Method::HEAD {
        let mut r = refuse(
            ReasonCode::MethodNotAllowed,
            "the static file server answers GET and HEAD",
        );
        r.headers.push((header::ALLOW, "GET, HEAD".to_owned()));
        return Err(r);
    }
    let relative = relative_path(path)?;
    let found = resolve(&site.root, &site.root.join(&relative)).await?;
    let meta = metadata(&found).await?;
    if meta.is_dir() {
        if !path.ends_with('/') {
            let location = match query {
                Some(q) => format!("{path}/?{q}"),
                None => format!("{path}/"),
            };
            return Ok(redirect(&location));
        }
        if let Some(index) = &site.index {
            match resolve(&site.root, &found.join(index)).await {
                Ok(file) if metadata(&file).await.is_ok_and(|m| m.is_file()) => {
                    return send_file(&file, method, headers).await;
                }
                Err(r) if r.reason == ReasonCode::FileNotReadable => return Err(r),
                _ => {}
            }
        }
        if site.listing {
            return listing(&found, path).await;
        }
        return Err(refuse(
            ReasonCode::DirectoryListingDisabled,
            format!(
                "{} has no {} and listing is off",
                found.display(),
                site.index.as_deref().unwrap_or("index")
            ),
        ));
    }
    if !meta.is_file() {
        return Err(refuse(ReasonCode::NotFound, "not a regular file"));
    }
    send_file(&found, method, headers).await
}

/// The canonical path's segments, percent-decoded, as a relative path.
fn relative_path(path: &str) -> Result<PathBuf, Refusal> {
    let mut out = PathBuf::new();
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        let decoded = percent_encoding::percent_decode_str(seg)
            .decode_utf8()
            .map_err(|_| refuse(ReasonCode::NotFound, "a segment is not UTF-8"))?;
        if decoded.starts_with('.') || decoded.contains(['/', '\\', '\0']) {
            return Err(refuse(
                ReasonCode::NotFound,
                format!("segment {decoded:?} is hidden or not a plain name"),
            ));
        }
        out.push(&*decoded);
    }
    Ok(out)
}

/// Resolve symlinks; the result must lie inside `root` and, like the
/// request path, name no hidden file or folder (a symlink to `.env` is as
/// hidden as `.env`).
async fn resolve(root: &Path, p: &Path) -> Result<PathBuf, Refusal> {
    match tokio::fs::canonicalize(p).await {
        Ok(real) if real.starts_with(root) && !hidden(root, &real) => Ok(real),
        Ok(real) => Err(refuse(
            ReasonCode::NotFound,
            format!(
                "{} resolves to {}, outside the root or hidden",
                p.display(),
                real.display()
            ),
        )),
        Err(e) => Err(io_refusal(p, &e)),
    }
}

fn hidden(root: &Path, real: &Path) -> bool {
    real.strip_prefix(root).is_ok_and(|rel| {
        rel.components()
            .any(|c| c.as_os_str().to_string_lossy().starts_with('.'))
    })
}

async fn metadata(p: &Path) -> Result<std::fs::Metadata, Refusal> {
    tokio::fs::metadata(p).await.map_err(|e| io_refusal(p, &e))
}

fn io_refusal(p: &Path, e: &std::io::Error) -> Refusal {
    let reason = if e.kind() == std::io::ErrorKind::PermissionDenied {
        ReasonCode::FileNotReadable
    } else {
        ReasonCode::NotFound
    };
    refuse(reason, format!("{}: {e}", p.display()))
}

fn redirect(location: &str) -> Response<Body> {
    let mut r = Response::new(empty());
    *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

async fn send_file(
    file: &Path,
    method: &Method,
    req: &HeaderMap,
) -> Result<Response<Body>, Refusal> {
    let mut f = tokio::fs::File::open(file)
        .await
        .map_err(|e| io_refusal(file, &e))?;
    let meta = f.metadata().await.map_err(|e| io_refusal(file, &e))?;
    let len = meta.len();
    let modified = meta.modified().unwrap_or(UNIX_EPOCH);
    let tag = etag(len, modified);
    let mut resp = Response::new(empty());
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, content_type(file));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    put(h, header::ETAG, &tag);
    put(h, header::LAST_MODIFIED, &httpdate::fmt_http_date(modified));
    match precondition(req, &tag, modified) {
        Some(StatusCode::NOT_MODIFIED) => {
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
            resp.headers_mut().remove(header::CONTENT_TYPE);
            return Ok(resp);
        }
        Some(status) => {
            *resp.status_mut() = status;
            put(resp.headers_mut(), header::CONTENT_LENGTH, "0");
            return Ok(resp);
        }
        None => {}
    }
    let (start, count) = match range(req, &tag, modified, len) {
        Ranged::Whole => (0, len),
        Ranged::Part(start, end) => {
            *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
            put(
                resp.headers_mut(),
                header::CONTENT_RANGE,
                &format!("bytes {start}-{end}/{len}"),
            );
            (start, end - start + 1)
        }
        Ranged::Unsatisfiable => {
            let mut r = refuse(
                ReasonCode::RangeNotSatisfiable,
                format!("file is {len} bytes"),
            );
            r.headers
                .push((header::CONTENT_RANGE, format!("bytes */{len}")));
            return Err(r);
        }
    };
    put(
        resp.headers_mut(),
        header::CONTENT_LENGTH,
        &count.to_string(),
    );
    if method == Method::HEAD {
        return Ok(resp);
    }
    if start > 0 {
        f.seek(SeekFrom::Start(start))
            .await
            .map_err(|e| io_refusal(file, &e))?;
    }
    *resp.body_mut() = http_body_util::BodyExt::boxed_unsync(FileBody::new(f, count));
    Ok(resp)
}

fn put(h: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

fn etag(len: u64, modified: SystemTime) -> String {
    let nanos = modified
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("\"{len:x}-{nanos:x}\"")
}

fn content_type(file: &Path) -> HeaderValue {
    let mime = mime_guess::from_path(file).first_or_octet_stream();
    let text = mime.type_() == mime_guess::mime::TEXT
        || matches!(mime.subtype().as_str(), "javascript" | "json" | "xml");
    let value = if text {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_string()
    };
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("application/octet-stream"))
}

/// RFC 9110 §13.2.2, in its order: `Some(412)` or `Some(304)` ends it.
fn precondition(req: &HeaderMap, tag: &str, modified: SystemTime) -> Option<StatusCode> {
    let text = |n: header::HeaderName| req.get(n).and_then(|v| v.to_str().ok());
    let date = |n| text(n).and_then(|v| httpdate::parse_http_date(v).ok());
    let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if let Some(m) = text(header::IF_MATCH) {
        if !tag_matches(m, tag, false) {
            return Some(StatusCode::PRECONDITION_FAILED);
        }
    } else if let Some(d) = date(header::IF_UNMODIFIED_SINCE)
        && secs(modified) > secs(d)
    {
        return Some(StatusCode::PRECONDITION_FAILED);
    }
    if let Some(m) = text(header::IF_NONE_MATCH) {
        if tag_matches(m, tag, true) {
            return Some(StatusCode::NOT_MODIFIED);
        }
    } else if let Some(d) = date(header::IF_MODIFIED_SINCE)
        && secs(modified) <= secs(d)
    {
        return Some(StatusCode::NOT_MODIFIED);
    }
    None
}

/// Whether a list of entity tags (or `*`) names `tag`. Weak comparison
/// ignores `W/`; strong comparison never matches a weak tag.
fn tag_matches(list: &str, tag: &str, weak: bool) -> bool {
    list.split(',').map(str::trim).any(|t| {
        if t == "*" {
            return true;
        }
        match t.strip_prefix("W/") {
            Some(w) => weak && w == tag,
            None => t == tag,
        }
    })
}

#[derive(Debug, PartialEq, Eq)]
enum Ranged {
    Whole,
    Part(u64, u64),
    Unsatisfiable,
}

/// One byte range, honoured only if `If-Range` (when sent) still holds. A
/// malformed or multi-part `Range` is ignored, as RFC 9110 allows.
fn range(req: &HeaderMap, tag: &str, modified: SystemTime, len: u64) -> Ranged {
    let Some(spec) = req
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return Ranged::Whole;
    };
    if let Some(cond) = req.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
        let holds = if cond.starts_with('"') {
            cond == tag
        } else {
            httpdate::parse_http_date(cond).is_ok_and(|d| {
                modified
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |m| m.as_secs())
                    <= d.duration_since(UNIX_EPOCH).map_or(0, |m| m.as_secs())
            })
        };
        if !holds {
            return Ranged::Whole;
        }
    }
    if spec.contains(',') {
        return Ranged::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Ranged::Whole;
    };
    let num = |s: &str| {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    match (num(a), num(b), a.is_empty()) {
        (None, Some(0), true) => Ranged::Unsatisfiable,
        (None, Some(_), true) if len == 0 => Ranged::Unsatisfiable,
        (None, Some(n), true) => Ranged::Part(len.saturating_sub(n), len - 1),
        (Some(s), None, false) if b.is_empty() => {
            if s >= len {
                Ranged::Unsatisfiable
            } else {
                Ranged::Part(s, len - 1)
            }
        }
        (Some(s), Some(e), false) if s <= e => {
            if s >= len {
                Ranged::Unsatisfiable
            } else {
                Ranged::Part(s, e.min(len - 1))
            }
        }
        _ => Ranged::Whole,
    }
}

async fn listing(dir: &Path, path: &str) -> Result<Response<Body>, Refusal> {
    let mut rd = tokio::fs::read_dir(dir)
        .await
        .map_err(|e| io_refusal(dir, &e))?;
    let mut names = Vec::new();
    while let Ok(Some(entry)) = rd.next_entry().await {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let is_dir = entry.file_type().await.is_ok_and(|t| t.is_dir());
        names.push(if is_dir { format!("{name}/") } else { name });
    }
    names.sort();
    let mut html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>Index of {p}</title></head>\n<body>\n<h1>Index of {p}</h1>\n<ul>\n",
        p = escape_html(path)
    );
    for n in names {
        let href: String =
            percent_encoding::utf8_percent_encode(&n, percent_encoding::NON_ALPHANUMERIC)
                .to_string()
                .replace("%2F", "/")
                .replace("%2E", ".")
                .replace("%2D", "-")
                .replace("%5F", "_");
        html.push_str(&format!(
            "<li><a href=\"{}\">{}</a></li>\n",
            href,
            escape_html(&n)
        ));
    }
    html.push_str("</ul>\n</body>\n</html>\n");
    let mut r = Response::new(full(html));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        m
    }

    #[test]
    fn ranges() {
        let t = "\"a\"";
        let m = UNIX_EPOCH;
        let r = |v: &str| range(&h(&[("range", v)]), t, m, 100);
        assert_eq!(r("bytes=0-9"), Ranged::Part(0, 9));
        assert_eq!(r("bytes=90-"), Ranged::Part(90, 99));
        assert_eq!(r("bytes=-10"), Ranged::Part(90, 99));
        assert_eq!(r("bytes=-1000"), Ranged::Part(0, 99));
        assert_eq!(r("bytes=50-1000"), Ranged::Part(50, 99));
        assert_eq!(r("bytes=100-"), Ranged::Unsatisfiable);
        assert_eq!(r("bytes=-0"), Ranged::Unsatisfiable);
        assert_eq!(r("bytes=9-0"), Ranged::Whole);
        assert_eq!(r("bytes=0-1,5-6"), Ranged::Whole);
        assert_eq!(r("items=0-1"), Ranged::Whole);
        assert_eq!(r("bytes=+1-2"), Ranged::Whole);
        let stale = range(
            &h(&[("range", "bytes=0-9"), ("if-range", "\"b\"")]),
            t,
            m,
            100,
        );
        assert_eq!(stale, Ranged::Whole);
        let fresh = range(
            &h(&[("range", "bytes=0-9"), ("if-range", "\"a\"")]),
            t,
            m,
            100,
        );
        assert_eq!(fresh, Ranged::Part(0, 9));
    }

    #[test]
    fn preconditions() {
        let t = "\"a\"";
        let m = UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        let p = |pairs: &[(&str, &str)]| precondition(&h(pairs), t, m);
        assert_eq!(
            p(&[("if-none-match", "\"a\"")]),
            Some(StatusCode::NOT_MODIFIED)
        );
        assert_eq!(
            p(&[("if-none-match", "W/\"a\"")]),
            Some(StatusCode::NOT_MODIFIED)
        );
        assert_eq!(
            p(&[("if-none-match", "\"b\", \"a\"")]),
            Some(StatusCode::NOT_MODIFIED)
        );
        assert_eq!(p(&[("if-none-match", "\"b\"")]), None);
        assert_eq!(
            p(&[("if-match", "\"b\"")]),
            Some(StatusCode::PRECONDITION_FAILED)
        );
        assert_eq!(
            p(&[("if-match", "W/\"a\"")]),
            Some(StatusCode::PRECONDITION_FAILED)
        );
        let later = httpdate::fmt_http_date(m + std::time::Duration::from_secs(10));
        let earlier = httpdate::fmt_http_date(m - std::time::Duration::from_secs(10));
        assert_eq!(
            p(&[("if-modified-since", &later)]),
            Some(StatusCode::NOT_MODIFIED)
        );
        assert_eq!(p(&[("if-modified-since", &earlier)]), None);
        // If-None-Match wins over If-Modified-Since.
        assert_eq!(
            p(&[("if-none-match", "\"b\""), ("if-modified-since", &later)]),
            None
        );
    }

    #[test]
    fn hidden_and_strange_segments_are_not_found() {
        for p in ["/.env", "/a/.git/config", "/a%00b", "/%2e%2e/x"] {
            assert!(relative_path(p).is_err(), "{p}");
        }
        assert_eq!(
            relative_path("/a/hello%20world.txt").unwrap(),
            PathBuf::from("a/hello world.txt")
        );
    }
}
