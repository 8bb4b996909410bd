//! Forwarding an allowed request (stage 10): the headers the upstream sees,
//! the pooled client, and the built-in echo.
//!
//! Header rules, in order: hop-by-hop headers go (with every header the
//! client named in `Connection`); every client-sent copy of an identity
//! header goes, whatever its case or count; forwarding headers from a peer
//! that is not a trusted proxy go; then the gateway sets the identity
//! headers, appends `X-Forwarded-For`, sets `X-Forwarded-Proto`/`-Host`,
//! rebuilds `Forwarded`, and sets `X-Request-Id` and `Host`.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use portcullis_config::{IdentityHeaders, UrlUpstream};
use portcullis_core::ReasonCode;
use portcullis_core::authn::Identity;
use serde_json::json;

use super::body::{Body, BodyWatch, BoxError, full};

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded either way.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// What the gateway knows about the hop the request came over.
#[derive(Debug, Clone)]
pub struct Hop<'a> {
    /// The TCP peer: the hop this gateway appends to the forwarding chain.
    pub peer: IpAddr,
    /// `https` or `http`.
    pub proto: &'static str,
    /// Whether the peer is a trusted proxy (its forwarding headers are kept).
    pub trusted: bool,
    /// A single-address client header the configuration believes from
    /// trusted proxies (`X-Real-IP` and the like); removed from anyone else.
    pub client_header: Option<&'a HeaderName>,
    /// The request id.
    pub request_id: &'a str,
}

/// Remove hop-by-hop headers, including those `Connection` names.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        // The framing and the host the decision was made on are not the
        // client's to drop: `Connection: host` would route the upstream
        // somewhere the policy never looked at.
        .filter(|n| *n != header::HOST && *n != header::CONTENT_LENGTH)
        .collect();
    for n in named.iter().chain(HOP_BY_HOP.iter()) {
        h.remove(n);
    }
    h.remove(header::TRANSFER_ENCODING);
}

/// Rewrite a request's headers for the upstream (see the module docs).
pub fn upstream_headers(
    h: &mut HeaderMap,
    hop: &Hop<'_>,
    identity: Option<&Identity>,
    names: &IdentityHeaders,
) {
    let original_host = h.get(header::HOST).cloned();
    strip_hop_by_hop(h);
    for n in [&names.subject, &names.roles, &names.scopes] {
        h.remove(n);
    }
    // One pass over the names, each compared as an upstream that reads `_`
    // as `-` (CGI, Rack) would read it, so `X_Auth_Subject` is the identity
    // header too:
    // - underscore spellings of the headers the gateway manages never pass
    //   (their hyphenated spellings are set below);
    // - headers that make an upstream take another method or path than the
    //   one decided on never pass;
    // - headers that name the client or the scheme, from anyone but a
    //   trusted proxy, never pass.
    let managed = |n: &str| {
        [&names.subject, &names.roles, &names.scopes]
            .iter()
            .any(|m| m.as_str() == n)
            || n.starts_with("x-forwarded-")
            || n == "forwarded"
            || n == super::reqid::HEADER
            || hop.client_header.is_some_and(|c| c.as_str() == n)
    };
    let refused: Vec<HeaderName> = h
        .keys()
        .filter(|k| {
            let raw = k.as_str();
            let n: std::borrow::Cow<'_, str> = if raw.contains('_') {
                raw.replace('_', "-").into()
            } else {
                raw.into()
            };
            (raw.contains('_') && managed(&n))
                || OVERRIDES.contains(&&*n)
                || (!hop.trusted
                    && (n.starts_with("x-forwarded-")
                        || n == "forwarded"
                        || CLIENT_NAMING.contains(&&*n)
                        || hop.client_header.is_some_and(|c| c.as_str() == n)))
        })
        .cloned()
        .collect();
    for n in refused {
        h.remove(n);
    }
    if let Some(id) = identity {
        set(h, &names.subject, &encode(&id.subject));
        let roles: Vec<String> = id.roles.iter().map(|r| encode(r)).collect();
        set(h, &names.roles, &roles.join(","));
        let scopes: Vec<String> = id.scopes.iter().map(|s| encode(s)).collect();
        set(h, &names.scopes, &scopes.join(" "));
    }
    forwarding(h, hop, original_host.as_ref());
    set(
        h,
        &HeaderName::from_static(super::reqid::HEADER),
        hop.request_id,
    );
}

/// Headers with which some frameworks replace the request's method or path.
const OVERRIDES: [&str; 7] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-original-uri",
    "x-original-method",
    "x-rewrite-url",
];

/// Headers that name the client or the host to some upstreams, besides
/// the `X-Forwarded-*` family.
const CLIENT_NAMING: [&str; 12] = [
    "x-host",
    "x-original-host",
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-cluster-client-ip",
    "forwarded-for",
    "x-forwarded",
    "x-original-forwarded-for",
];

const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
const XFP: HeaderName = HeaderName::from_static("x-forwarded-proto");
const XFH: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Rebuild the forwarding headers. An untrusted peer's are already gone
/// (`upstream_headers`); a trusted proxy's chains are appended to.
fn forwarding(h: &mut HeaderMap, hop: &Hop<'_>, host: Option<&HeaderValue>) {
    let (xff, xfp, xfh) = (XFF, XFP, XFH);
    // Each header built in one string: this runs on every proxied request.
    let mut chain = prior_chain(h, &xff);
    let _ = write!(chain, "{}", hop.peer);
    set(h, &xff, &chain);
    if !h.contains_key(&xfp) {
        h.insert(xfp.clone(), HeaderValue::from_static(hop.proto));
    }
    let host_text = host.and_then(|v| v.to_str().ok());
    if let (false, Some(host)) = (h.contains_key(&xfh), host_text) {
        set(h, &xfh, host);
    }
    let mut chain = prior_chain(h, &header::FORWARDED);
    let _ = match hop.peer {
        IpAddr::V4(ip) => write!(chain, "for={ip};proto={}", hop.proto),
        IpAddr::V6(ip) => write!(chain, "for=\"[{ip}]\";proto={}", hop.proto),
    };
    if let Some(host) = host_text {
        chain.push_str(";host=\"");
        chain.extend(host.chars().filter(|c| !matches!(c, '"' | '\\')));
        chain.push('"');
    }
    set(h, &header::FORWARDED, &chain);
}

/// The non-empty values of `name`, trimmed, each followed by `, `; the
/// header is removed (it is set again whole).
fn prior_chain(h: &mut HeaderMap, name: &HeaderName) -> String {
    let mut chain = String::with_capacity(64);
    for v in h.get_all(name).iter().filter_map(|v| v.to_str().ok()) {
        let v = v.trim();
        if !v.is_empty() {
            chain.push_str(v);
            chain.push_str(", ");
        }
    }
    h.remove(name);
    chain
}

fn set(h: &mut HeaderMap, name: &HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name.clone(), v);
    }
}

/// Identity values are sent as printable ASCII: `%`, `,`, space and
/// anything outside visible ASCII are percent-encoded, so a value can
/// neither break the header nor split a list.
fn encode(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
        .add(b' ')
        .add(b'%')
        .add(b',')
        .add(b'"');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

/// One upstream connection's sending half; its connection is a task on the
/// worker that opened it.
type Sender = http1::SendRequest<Body>;

/// A connection in a worker's pool, and when it last came back to it.
struct Pooled {
    sender: Sender,
    used: Instant,
}

/// A connection idle this long is closed when a checkout next meets it
/// (there is no timer: with no traffic at all, the upstream's own idle
/// timeout closes it).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// At most this many connections per upstream per worker are kept; past
/// that the oldest is let go (an exchange on it still completes).
const MAX_POOLED: usize = 1024;

thread_local! {
    /// Each worker thread's own connections to each upstream (by
    /// [`Proxy::id`]): a connection is driven by the runtime of the thread
    /// whose requests use it, and taking one is a borrow, not a lock.
    static POOLS: RefCell<Vec<(usize, VecDeque<Pooled>)>> = const { RefCell::new(Vec::new()) };
}

static NEXT_PROXY: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A URL upstream and its connections: one pool per worker thread.
#[derive(Debug)]
pub struct Proxy {
    id: usize,
    connector: HttpsConnector<HttpConnector>,
    /// `scheme://authority`, what the connector dials.
    origin: Uri,
    prefix: String,
    preserve_host: bool,
    /// `Host` for the upstream when the client's is not kept.
    host: HeaderValue,
    timeout: Duration,
}

/// Why forwarding failed, for the one place transport faults become HTTP.
#[derive(Debug)]
pub struct Fault {
    /// 502, 504 or 413.
    pub reason: ReasonCode,
    /// For the decision log.
    pub detail: String,
}

impl Proxy {
    /// A client for `u`.
    pub fn new(u: &UrlUpstream) -> Result<Self, String> {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(u.connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| format!("cannot load the system's root certificates: {e}"))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let parts = u.url.clone().into_parts();
        let authority = parts.authority.ok_or("the upstream URL has no host")?;
        let host = HeaderValue::from_str(authority.as_str())
            .map_err(|_| "the upstream URL's host is not a header value")?;
        let origin = Uri::builder()
            .scheme(parts.scheme.unwrap_or(http::uri::Scheme::HTTP))
            .authority(authority)
            .path_and_query("/")
            .build()
            .map_err(|e| format!("the upstream URL is not usable: {e}"))?;
        Ok(Proxy {
            id: NEXT_PROXY.fetch_add(1, Ordering::Relaxed),
            connector: https,
            origin,
            host,
            prefix: parts
                .path_and_query
                .map(|p| p.path().trim_end_matches('/').to_owned())
                .unwrap_or_default(),
            preserve_host: u.preserve_host,
            timeout: u.timeout,
        })
    }

    /// The most recently used ready connection in this worker's pool, if
    /// one is: its socket and buffers are warm, and the upstream sees as
    /// few connections as the load needs. Busy ones (a response still
    /// streaming) are passed over; closed ones are dropped where met, and
    /// ones idle past [`IDLE_TIMEOUT`] from the cold end.
    fn checkout(&self) -> Option<Sender> {
        POOLS.with(|pools| {
            let mut pools = pools.borrow_mut();
            let (_, pool) = pools.iter_mut().find(|(id, _)| *id == self.id)?;
            let now = Instant::now();
            while pool
                .front()
                .is_some_and(|p| p.sender.is_closed() || now.duration_since(p.used) >= IDLE_TIMEOUT)
            {
                pool.pop_front();
            }
            let mut i = pool.len();
            while i > 0 {
                i -= 1;
                if pool[i].sender.is_ready() {
                    return pool.remove(i).map(|p| p.sender);
                }
                if pool[i].sender.is_closed() {
                    pool.remove(i);
                }
            }
            None
        })
    }

    /// Back into this worker's pool once the response head is in: it is
    /// taken again when its connection is ready for the next request.
    fn checkin(&self, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        POOLS.with(|pools| {
            let mut pools = pools.borrow_mut();
            let i = match pools.iter().position(|(id, _)| *id == self.id) {
                Some(i) => i,
                None => {
                    pools.push((self.id, VecDeque::new()));
                    pools.len() - 1
                }
            };
            let pool = &mut pools[i].1;
            if pool.len() >= MAX_POOLED {
                pool.pop_front();
            }
            pool.push_back(Pooled {
                sender,
                used: Instant::now(),
            });
        });
    }

    /// A new connection, its task spawned on this worker.
    async fn connect(&self) -> Result<Sender, BoxError> {
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| tower_service::Service::<Uri>::poll_ready(&mut connector, cx))
            .await?;
        let io = tower_service::Service::call(&mut connector, self.origin.clone()).await?;
        let (sender, conn) = http1::handshake(io).await?;
        tokio::spawn(async move {
            // Its errors reach the request that was using it.
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// One exchange: on a pooled connection if one is ready, else on a new
    /// one. An upstream may close an idle connection just as a request is
    /// put on it. The request then goes out once more, on a new connection,
    /// when it cannot have been acted on (the connection handed it back
    /// unsent) or when it may safely be sent twice: an idempotent method
    /// with no body, on a connection that ended before any of the answer
    /// came (what nginx does for a cached upstream connection).
    async fn exchange(&self, req: Request<Body>) -> Result<Response<Incoming>, BoxError> {
        let Some(mut sender) = self.checkout() else {
            return self.exchange_on_new(req).await;
        };
        let replay = replayable(&req).then(|| {
            let mut copy = Request::new(super::body::empty());
            *copy.method_mut() = req.method().clone();
            *copy.uri_mut() = req.uri().clone();
            *copy.headers_mut() = req.headers().clone();
            copy
        });
        match sender.try_send_request(req).await {
            Ok(resp) => {
                self.checkin(sender);
                Ok(resp)
            }
            Err(mut e) => {
                let again = e
                    .take_message()
                    .or_else(|| replay.filter(|_| e.error().is_incomplete_message()));
                match again {
                    Some(req) => self.exchange_on_new(req).await,
                    None => Err(e.into_error().into()),
                }
            }
        }
    }

    /// One exchange on a new connection, pooled once the answer's head is in.
    async fn exchange_on_new(&self, req: Request<Body>) -> Result<Response<Incoming>, BoxError> {
        // Boxed: dialling (TLS included) is a large future, and a rare one.
        let mut sender = Box::pin(self.connect()).await?;
        let resp = sender.send_request(req).await?;
        self.checkin(sender);
        Ok(resp)
    }

    /// Send `req` (headers already rewritten) to `path?query` on the
    /// upstream. The response timeout starts once `watch` says the request
    /// body has ended, so a long upload is not a slow upstream.
    pub async fn send(
        &self,
        mut req: Request<Body>,
        path: &str,
        query: Option<&str>,
        watch: &Arc<BodyWatch>,
    ) -> Result<Response<Body>, Fault> {
        let mut target = format!("{}{path}", self.prefix);
        if let Some(q) = query {
            target.push('?');
            target.push_str(q);
        }
        // Origin form: the connection already goes to the upstream.
        let uri = Uri::try_from(target).map_err(|e| Fault {
            reason: ReasonCode::UpstreamUnavailable,
            detail: format!("cannot build the upstream URI: {e}"),
        })?;
        *req.uri_mut() = uri;
        *req.version_mut() = http::Version::HTTP_11;
        if !self.preserve_host || !req.headers().contains_key(header::HOST) {
            req.headers_mut().insert(header::HOST, self.host.clone());
        }
        let deadline = upstream_deadline(watch, self.timeout);
        let sent = tokio::select! {
            r = self.exchange(req) => Ok(r),
            () = deadline => Err(()),
        };
        let mut resp = match sent {
            Err(()) => {
                return Err(Fault {
                    reason: ReasonCode::UpstreamTimeout,
                    detail: format!("no response head within {:?}", self.timeout),
                });
            }
            Ok(Err(_)) if watch.tripped.load(Ordering::Relaxed) => {
                return Err(Fault {
                    reason: ReasonCode::PayloadTooLarge,
                    detail: "the body went over the limit while streaming".into(),
                });
            }
            Ok(Err(e)) => {
                return Err(Fault {
                    reason: ReasonCode::UpstreamUnavailable,
                    detail: error_chain(&*e),
                });
            }
            Ok(Ok(r)) => r,
        };
        strip_hop_by_hop(resp.headers_mut());
        Ok(resp.map(|b| b.map_err(Into::into).boxed_unsync()))
    }
}

/// Whether `req` may be sent twice: an idempotent method (RFC 9110
/// §9.2.2) and no body.
fn replayable(req: &Request<Body>) -> bool {
    use http::Method;
    matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    ) && hyper::body::Body::is_end_stream(req.body())
}

/// Ends once the upstream has had `timeout` to answer after the request
/// body ended, or once the upload made no progress for `timeout` (an
/// upstream that stopped reading). A long upload that keeps moving is not a
/// slow upstream.
async fn upstream_deadline(watch: &BodyWatch, timeout: std::time::Duration) {
    loop {
        let ended = watch.ended.load(Ordering::Acquire);
        let frames = watch.frames.load(Ordering::Relaxed);
        tokio::time::sleep(timeout).await;
        if ended
            || (!watch.ended.load(Ordering::Acquire)
                && watch.frames.load(Ordering::Relaxed) == frames)
        {
            return;
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

/// The built-in echo: what an upstream would have received, as JSON.
/// Credentials are not echoed.
pub async fn echo(
    req: Request<Body>,
    path: &str,
    query: Option<&str>,
    watch: &BodyWatch,
) -> Result<Response<Body>, Fault> {
    let (parts, body) = req.into_parts();
    let mut headers = serde_json::Map::new();
    for (name, value) in &parts.headers {
        let n = name.as_str();
        let secret = matches!(n, "authorization" | "cookie" | "proxy-authorization")
            || n.contains("key")
            || n.contains("token")
            || n.contains("secret");
        let v = if secret {
            "(redacted)".to_owned()
        } else {
            String::from_utf8_lossy(value.as_bytes()).into_owned()
        };
        headers.insert(n.to_owned(), json!(v));
    }
    let mut body_bytes: u64 = 0;
    let mut body = body;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => body_bytes += f.data_ref().map_or(0, |d| d.len() as u64),
            Err(e) => {
                let reason = if watch.tripped.load(Ordering::Relaxed) {
                    ReasonCode::PayloadTooLarge
                } else {
                    ReasonCode::UpstreamUnavailable
                };
                return Err(Fault {
                    reason,
                    detail: format!("reading the request body: {e}"),
                });
            }
        }
    }
    let doc = json!({
        "upstream": "echo",
        "method": parts.method.as_str(),
        "path": path,
        "query": query,
        "headers": headers,
        "body_bytes": body_bytes,
    });
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    text.push('\n');
    let mut r = Response::new(full(Bytes::from(text)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(trusted: bool) -> Hop<'static> {
        Hop {
            peer: "192.0.2.7".parse().unwrap(),
            proto: "http",
            trusted,
            client_header: None,
            request_id: "rid",
        }
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        m
    }

    fn identity() -> Identity {
        Identity {
            subject: "al ice,%".into(),
            roles: vec!["admin".into(), "a,b".into()],
            scopes: vec!["read".into()],
            attributes: Vec::new(),
            method: portcullis_core::authn::AuthMethod::Jwt,
            expires_at: None,
        }
    }

    #[test]
    fn spoofed_identity_headers_are_replaced_whatever_their_case_or_count() {
        let mut h = map(&[
            ("X-Auth-Subject", "root"),
            ("x-auth-subject", "root2"),
            ("X-AUTH-ROLES", "admin"),
            ("connection", "x-auth-subject, keep-alive, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("host", "example.test"),
        ]);
        upstream_headers(
            &mut h,
            &hop(false),
            Some(&identity()),
            &IdentityHeaders::default(),
        );
        let all = |n: &str| {
            h.get_all(n)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(all("x-auth-subject"), ["al%20ice%2C%25"]);
        assert_eq!(all("x-auth-roles"), ["admin,a%2Cb"]);
        assert_eq!(all("x-auth-scopes"), ["read"]);
        assert!(h.get("connection").is_none());
        assert!(h.get("keep-alive").is_none());
        assert!(h.get("x-secret-hop").is_none());
    }

    #[test]
    fn connection_cannot_drop_the_host_or_the_length() {
        let mut h = map(&[
            ("host", "decided.test"),
            ("content-length", "3"),
            ("connection", "host, content-length, x-other"),
            ("x-other", "1"),
        ]);
        upstream_headers(&mut h, &hop(false), None, &IdentityHeaders::default());
        assert_eq!(h["host"], "decided.test");
        assert_eq!(h["content-length"], "3");
        assert!(h.get("x-other").is_none());
    }

    #[test]
    fn underscore_spellings_and_an_untrusted_client_header_never_pass() {
        let real_ip = HeaderName::from_static("x-real-ip");
        let mut h = map(&[
            ("x_auth_subject", "root"),
            ("X_Auth_Roles", "admin"),
            ("x_forwarded_for", "10.9.9.9"),
            ("x_request_id", "forged"),
            ("x-real-ip", "10.9.9.9"),
            ("x_real_ip", "10.9.9.9"),
            ("x_unrelated", "kept"),
        ]);
        let mut untrusted = hop(false);
        untrusted.client_header = Some(&real_ip);
        upstream_headers(&mut h, &untrusted, None, &IdentityHeaders::default());
        for gone in [
            "x_auth_subject",
            "x_auth_roles",
            "x_forwarded_for",
            "x_request_id",
            "x-real-ip",
            "x_real_ip",
        ] {
            assert!(h.get(gone).is_none(), "{gone} reached the upstream");
        }
        assert_eq!(h["x_unrelated"], "kept");
        // From a trusted proxy the configured header is its to send.
        let mut h = map(&[("x-real-ip", "203.0.113.7")]);
        let mut trusted = hop(true);
        trusted.client_header = Some(&real_ip);
        upstream_headers(&mut h, &trusted, None, &IdentityHeaders::default());
        assert_eq!(h["x-real-ip"], "203.0.113.7");
    }

    #[test]
    fn anonymous_requests_carry_no_identity_headers() {
        let mut h = map(&[("x-auth-subject", "root"), ("x-auth-scopes", "all")]);
        upstream_headers(&mut h, &hop(false), None, &IdentityHeaders::default());
        assert!(h.get("x-auth-subject").is_none());
        assert!(h.get("x-auth-scopes").is_none());
    }

    #[test]
    fn forwarding_headers_from_an_untrusted_peer_are_replaced() {
        let mut h = map(&[
            ("x-forwarded-for", "10.9.9.9"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.test"),
            ("forwarded", "for=10.9.9.9"),
            ("host", "example.test"),
        ]);
        upstream_headers(&mut h, &hop(false), None, &IdentityHeaders::default());
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "example.test");
        assert_eq!(
            h["forwarded"],
            "for=192.0.2.7;proto=http;host=\"example.test\""
        );
        assert_eq!(h["x-request-id"], "rid");
    }

    #[test]
    fn a_trusted_proxy_chain_is_appended_to() {
        let mut h = map(&[
            ("x-forwarded-for", "203.0.113.1"),
            ("x-forwarded-for", "10.0.0.2"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=203.0.113.1;proto=https"),
        ]);
        let mut hp = hop(true);
        hp.peer = "2001:db8::1".parse().unwrap();
        upstream_headers(&mut h, &hp, None, &IdentityHeaders::default());
        assert_eq!(h["x-forwarded-for"], "203.0.113.1, 10.0.0.2, 2001:db8::1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(
            h["forwarded"],
            "for=203.0.113.1;proto=https, for=\"[2001:db8::1]\";proto=http"
        );
    }

    /// A pooled connection the upstream closed while the worker was busy,
    /// so that the close is seen only once `method` has been written on
    /// it. Returns the status (or the error) and how many requests the
    /// upstream's second connection received.
    fn on_a_connection_closed_under_it(
        method: &str,
        body: &'static [u8],
    ) -> (Result<u16, String>, usize) {
        use std::io::{BufRead, BufReader, Write as _};
        use std::sync::mpsc;

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (close_first, closing) = mpsc::channel::<()>();
        let upstream = std::thread::spawn(move || {
            // The first connection is closed on request, having served none.
            let (first, _) = listener.accept().unwrap();
            closing.recv().unwrap();
            drop(first);
            // The second serves one request, if one comes.
            let (second, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(second.try_clone().unwrap());
            let mut requests = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                    break;
                }
                requests += usize::from(line.contains(" HTTP/1.1"));
            }
            let _ = (&second).write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            requests
        });

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let proxy = Proxy::new(&UrlUpstream {
            url: format!("http://{addr}").parse().unwrap(),
            preserve_host: false,
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(2),
        })
        .unwrap();
        let resp = rt.block_on(async {
            let sender = proxy.connect().await.unwrap();
            proxy.checkin(sender);
            // Let the connection's task run once, so it waits for a request.
            tokio::time::sleep(Duration::from_millis(20)).await;
            close_first.send(()).unwrap();
            // Block the worker while the close arrives: the pooled
            // connection still looks ready when it is taken.
            std::thread::sleep(Duration::from_millis(100));
            let req = Request::builder()
                .method(method)
                .uri("/x")
                .header(header::HOST, "up")
                .body(full(Bytes::from_static(body)))
                .unwrap();
            proxy.exchange(req).await
        });
        let status = resp
            .map(|r| r.status().as_u16())
            .map_err(|e| error_chain(&*e));
        if status.is_err() {
            // Nothing came: let the upstream's second accept end.
            let _ = std::net::TcpStream::connect(addr);
        }
        (status, upstream.join().unwrap())
    }

    #[test]
    fn a_get_cut_off_by_a_closed_pooled_connection_is_sent_again_on_a_new_one() {
        assert_eq!(on_a_connection_closed_under_it("GET", b""), (Ok(200), 1));
    }

    #[test]
    fn a_post_cut_off_by_a_closed_pooled_connection_is_not_sent_again() {
        let (status, again) = on_a_connection_closed_under_it("POST", b"pay");
        assert_eq!(again, 0);
        let error = status.unwrap_err();
        assert!(
            error.contains("connection closed before message completed"),
            "{error}"
        );
    }
}
