//! The data path: one request from hyper to a response, stage by stage
//! (PRODUCT.md's pipeline). [`Gateway::handle`] is the whole of it; each
//! stage is a call with a comment saying why it sits where it does.
//!
//! Errors become HTTP in two places only: a refusal (a denial by the engine,
//! a limit, the static file server) is rendered by [`Gateway::refusal`], and
//! a transport fault (upstream down or slow) by the same function from a
//! [`Fault`]. Nothing else writes an error response.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::SystemTime;

use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, Version};
use hyper::body::Incoming;
use portcullis_config::{IdentityHeaders, Limits, StaticSite};
use portcullis_core::client::ClientHeader;
use portcullis_core::{Decision, Engine, Face, ReasonCode, RequestFacts, Stage, render};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::admin::Metrics;
use super::body::{Body, BodyWatch, Capped, full, has_body};
use super::forward::{self, Fault, Hop, Proxy};
use super::guard::{REFUSED_HEADER, Refusal};
use super::log::{DecisionLog, Entry};
use super::{reqid, static_files};
use crate::bans::BanBook;
use crate::limits::{LimitHeaders, Limiter};

/// Where allowed requests go.
#[derive(Debug)]
pub enum Target {
    /// A URL, through the pooled client.
    Proxy(Box<Proxy>),
    /// The built-in static file server.
    Static(StaticSite),
    /// The built-in echo.
    Echo,
}

/// The connection a request arrived on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// Whether it came over TLS.
    pub tls: bool,
}

/// Everything the data path reads, shared by all connections.
#[derive(Debug)]
pub struct Gateway {
    /// The decision engine.
    pub engine: Engine,
    /// Where allowed requests go.
    pub target: Target,
    /// Identity header names.
    pub identity: IdentityHeaders,
    /// Limits.
    pub limits: Limits,
    /// Body limits by route name.
    pub route_max_body: HashMap<String, u64>,
    /// The decision log.
    pub log: DecisionLog,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The secret on synthetic requests from the connection guard.
    pub marker: &'static str,
    /// Wakes the JWKS refresher when a token names an unknown key.
    pub jwks_wake: Option<Arc<Notify>>,
    /// Where rate limits are counted.
    pub limiter: Limiter,
    /// Bans in force and strike counts.
    pub bans: BanBook,
}

/// What one request's handling produced, for the log.
struct Outcome {
    response: Response<Body>,
    refusal: Option<(ReasonCode, Stage, String)>,
    upstream_status: Option<u16>,
}

impl Gateway {
    /// Answer one request.
    pub async fn handle(&self, mut req: Request<Incoming>, conn: ConnInfo) -> Response<Body> {
        let started = Instant::now();
        // One clock reading per request: the log's time, the engine's `now`
        // and the rate limits' all come from it.
        let at = SystemTime::now();
        let now_ms = crate::cmd::unix_ms(at);
        let peer = conn.peer.ip().to_canonical();
        let trusted = self.engine.client_policy().is_trusted(peer);
        // Stage 1: the id comes first so every answer, even a refusal of a
        // malformed head, carries it.
        let request_id = reqid::assign(req.headers(), trusted, now_ms);
        // Stage 11 starts here: whichever way the request ends, even with
        // the client gone before the answer, this writes its one log line.
        let mut record = Record::new(self, at, started, request_id, peer, req.method());
        // Stage 1: heads the connection guard refused, and the same limits
        // for HTTP/2, whose heads the guard does not parse.
        if let Some(reason) = self.refused_head(&req) {
            let out = self.refuse(
                &req,
                &record.request_id,
                reason,
                Stage::Parse,
                String::new(),
                true,
            );
            return record.finish(out, None).await;
        }
        authority_as_host(&mut req);
        // Stages 2 and 7-9: the client address (through trusted proxies),
        // route, authenticate, authorize. The engine is pure and cannot
        // fail; a denial here is final and nothing reaches the upstream.
        let mut decision = self.decide(&req, peer, now_ms);
        record.client = decision.client.unwrap_or(peer);
        // Stage 3, last: a ban in force on the client refuses it, whatever
        // the engine concluded after the network gates.
        if let Some(bans) = self.engine.bans() {
            Box::pin(self.bans.check(bans, &mut decision, now_ms)).await;
        }
        // Stage 4: the rate limits the engine keyed, counted in the store;
        // an exhausted one turns any outcome into 429.
        let limit_headers = self.limiter.apply(&mut decision, now_ms).await;
        if let Some(denial) = decision.denial() {
            let mut out = self.deny(&req, &record.request_id, &denial.face);
            add_headers(&mut out.response, &limit_headers);
            return record.finish(out, Some(decision)).await;
        }
        // Stage 1, late: the body limit belongs to the route just matched.
        let limit = self.body_limit(&decision);
        if declared_length(&req).is_some_and(|n| n > limit) {
            let detail = format!("Content-Length over the route's {limit} bytes");
            let reason = ReasonCode::PayloadTooLarge;
            let mut out = self.refuse(&req, &record.request_id, reason, Stage::Parse, detail, true);
            add_headers(&mut out.response, &limit_headers);
            return record.finish(out, Some(decision)).await;
        }
        // Stage 10: forward to the upstream, the static files or the echo.
        let hop = Hop {
            peer,
            proto: if conn.tls { "https" } else { "http" },
            trusted,
            client_header: match self.engine.client_policy().header() {
                ClientHeader::Single(name) => Some(name),
                _ => None,
            },
            request_id: &record.request_id,
        };
        let (parts, body) = req.into_parts();
        let unread_body = has_body(&body);
        let head = Request::from_parts(parts, ());
        let mut out = self
            .forward(&head, body, &decision, &hop, limit, unread_body)
            .await;
        add_headers(&mut out.response, &limit_headers);
        // Stage 11: record, off the request path (the writer thread formats).
        record.finish(out, Some(decision)).await
    }

    fn refused_head<B>(&self, req: &Request<B>) -> Option<ReasonCode> {
        if let Some(v) = req.headers().get(REFUSED_HEADER) {
            let text = v.to_str().unwrap_or_default();
            return Some(match text.split_once(' ') {
                Some((m, r)) if m == self.marker => match Refusal::parse(r) {
                    Some(Refusal::UriTooLong) => ReasonCode::UriTooLong,
                    Some(Refusal::HeadersTooLarge) => ReasonCode::HeadersTooLarge,
                    Some(Refusal::Framing) => ReasonCode::InvalidFraming,
                    Some(Refusal::Malformed) | None => ReasonCode::InvalidRequest,
                },
                // A client sending the marker header itself.
                _ => ReasonCode::InvalidRequest,
            });
        }
        if req.version() != Version::HTTP_2 {
            return None;
        }
        // Routing reads `Host`; over HTTP/2 it must not disagree with the
        // `:authority` the connection's peers see.
        if let (Some(host), Some(authority)) =
            (req.headers().get(header::HOST), req.uri().authority())
            && !host
                .as_bytes()
                .eq_ignore_ascii_case(authority.as_str().as_bytes())
        {
            return Some(ReasonCode::InvalidRequest);
        }
        let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
        if uri_len > self.limits.max_uri_bytes {
            return Some(ReasonCode::UriTooLong);
        }
        let bytes: usize = req
            .headers()
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum();
        if req.headers().len() > self.limits.max_headers || bytes > self.limits.max_header_bytes {
            return Some(ReasonCode::HeadersTooLarge);
        }
        None
    }

    fn decide<B>(&self, req: &Request<B>, peer: IpAddr, now_ms: u64) -> Decision {
        let uri = req.uri();
        let target_owned;
        // The target as the client wrote it: origin form (and HTTP/2's
        // path) as is; absolute and authority form (CONNECT) whole, so the
        // engine judges them rather than a "/" made up here.
        let target = match (req.version(), uri.scheme(), uri.path_and_query()) {
            (Version::HTTP_2, _, Some(p)) | (_, None, Some(p)) => p.as_str(),
            _ => {
                target_owned = uri.to_string();
                &target_owned
            }
        };
        let facts = RequestFacts {
            method: req.method(),
            target,
            headers: req.headers(),
            peer,
            now: i64::try_from(now_ms / 1000).unwrap_or(i64::MAX),
        };
        let decision = self.engine.decide(&facts);
        if decision.unknown_key_id
            && let Some(w) = &self.jwks_wake
        {
            w.notify_one();
        }
        decision
    }

    fn body_limit(&self, d: &Decision) -> u64 {
        d.route
            .as_ref()
            .and_then(|r| self.route_max_body.get(&*r.name))
            .copied()
            .unwrap_or(self.limits.max_body)
    }

    async fn forward(
        &self,
        head: &Request<()>,
        body: Incoming,
        decision: &Decision,
        hop: &Hop<'_>,
        limit: u64,
        unread_body: bool,
    ) -> Outcome {
        let path = decision.path.as_deref().unwrap_or("/");
        let result = match &self.target {
            Target::Static(site) => Box::pin(static_files::serve(
                site,
                head.method(),
                path,
                decision.query.as_deref(),
                head.headers(),
            ))
            .await
            .map_err(|r| (r.reason, r.detail, r.headers)),
            Target::Proxy(_) | Target::Echo => self
                .pass_on(head, body, decision, hop, limit)
                .await
                .map_err(|Fault { reason, detail }| (reason, detail, Vec::new())),
        };
        match result {
            Ok(mut response) => {
                let status = response.status().as_u16();
                set_request_id(response.headers_mut(), hop.request_id);
                Outcome {
                    response,
                    refusal: None,
                    upstream_status: matches!(self.target, Target::Proxy(_)).then_some(status),
                }
            }
            Err((reason, detail, extra)) => {
                // A body over the limit is a stage 1 refusal wherever it
                // was found; an unread body must not become the next request.
                let stage = if reason == ReasonCode::PayloadTooLarge {
                    Stage::Parse
                } else {
                    Stage::Forward
                };
                let mut out = self.refuse(head, hop.request_id, reason, stage, detail, unread_body);
                for (name, value) in extra {
                    if let Ok(v) = HeaderValue::from_str(&value) {
                        out.response.headers_mut().insert(name, v);
                    }
                }
                out
            }
        }
    }

    /// To the URL upstream or the echo: the headers rewritten, the body
    /// streamed under the route's cap.
    async fn pass_on(
        &self,
        head: &Request<()>,
        body: Incoming,
        decision: &Decision,
        hop: &Hop<'_>,
        limit: u64,
    ) -> Result<Response<Body>, Fault> {
        let path = decision.path.as_deref().unwrap_or("/");
        let query = decision.query.as_deref();
        let watch = Arc::new(BodyWatch::default());
        let body = Capped::new(body, limit, Arc::clone(&watch));
        let mut up = Request::new(http_body_util::BodyExt::boxed_unsync(body));
        *up.method_mut() = head.method().clone();
        *up.headers_mut() = head.headers().clone();
        let identity = decision.identity.as_deref();
        forward::upstream_headers(up.headers_mut(), hop, identity, &self.identity);
        match &self.target {
            Target::Proxy(proxy) => proxy.send(up, path, query, &watch).await,
            _ => Box::pin(forward::echo(up, path, query, &watch)).await,
        }
    }

    fn deny<B: hyper::body::Body>(
        &self,
        req: &Request<B>,
        request_id: &str,
        face: &Face,
    ) -> Outcome {
        let close = has_body(req.body());
        Outcome {
            response: self.refusal(req, request_id, face, close),
            refusal: None,
            upstream_status: None,
        }
    }

    fn refuse<B>(
        &self,
        req: &Request<B>,
        request_id: &str,
        reason: ReasonCode,
        stage: Stage,
        detail: String,
        close: bool,
    ) -> Outcome {
        Outcome {
            response: self.refusal(req, request_id, &Face::of(reason), close),
            refusal: Some((reason, stage, detail)),
            upstream_status: None,
        }
    }

    /// The one place a refusal becomes a response. `close` ends an HTTP/1
    /// connection whose request body was not read, so no byte of it can be
    /// taken for the next request.
    fn refusal<B>(
        &self,
        req: &Request<B>,
        request_id: &str,
        face: &Face,
        close: bool,
    ) -> Response<Body> {
        let accept = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok());
        let rendered = render(face, accept, request_id);
        let mut resp = Response::new(full(rendered.body));
        *resp.status_mut() =
            http::StatusCode::from_u16(rendered.status).unwrap_or(http::StatusCode::FORBIDDEN);
        let h = resp.headers_mut();
        for (name, value) in rendered.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(HeaderName::from_static(name), v);
            }
        }
        set_request_id(h, request_id);
        if close && req.version() < Version::HTTP_2 {
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

/// One request's log line in the making. [`Record::finish`] writes it with
/// the response; if the request is dropped first (the client went away, the
/// drain ended), `Drop` writes it with status 499.
struct Record<'g> {
    gateway: &'g Gateway,
    at: SystemTime,
    started: Instant,
    request_id: String,
    peer: IpAddr,
    client: IpAddr,
    method: http::Method,
    done: bool,
}

impl<'g> Record<'g> {
    fn new(
        gateway: &'g Gateway,
        at: SystemTime,
        started: Instant,
        request_id: String,
        peer: IpAddr,
        method: &http::Method,
    ) -> Self {
        Record {
            gateway,
            at,
            started,
            request_id,
            peer,
            client: peer,
            method: method.clone(),
            done: false,
        }
    }

    fn entry(&self, status: u16, refusal: Option<(ReasonCode, Stage, String)>) -> Entry {
        Entry {
            bans_started: Vec::new(),
            at: self.at,
            request_id: self.request_id.clone(),
            client: self.client,
            peer: self.peer,
            method: self.method.clone(),
            decision: None,
            refusal,
            status,
            latency: self.started.elapsed(),
            upstream_status: None,
        }
    }

    async fn finish(mut self, out: Outcome, decision: Option<Decision>) -> Response<Body> {
        self.done = true;
        let status = out.response.status().as_u16();
        self.gateway.metrics.count_response(status);
        let mut entry = self.entry(status, out.refusal);
        // Stage 3's escalation: this answer may be the strike that starts
        // a ban; the line that records it says so.
        if let (Some(bans), Some(d)) = (self.gateway.engine.bans(), &decision) {
            let now_ms = crate::cmd::unix_ms(self.at);
            entry.bans_started = Box::pin(self.gateway.bans.strike(bans, d, status, now_ms)).await;
        }
        entry.decision = decision;
        entry.upstream_status = out.upstream_status;
        self.gateway.log.record(entry).await;
        out.response
    }
}

impl Drop for Record<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let reason = ReasonCode::ClientClosedRequest;
        let detail = "the connection closed before the response was ready".to_owned();
        let entry = self.entry(reason.info().status, Some((reason, Stage::Forward, detail)));
        self.gateway.metrics.count_response(entry.status);
        self.gateway.log.record_now(entry);
    }
}

/// HTTP/2 carries the host in `:authority`; the engine and the upstream
/// read `Host`.
fn authority_as_host<B>(req: &mut Request<B>) {
    if req.headers().contains_key(header::HOST) {
        return;
    }
    let host = req
        .uri()
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
    if let Some(h) = host {
        req.headers_mut().insert(header::HOST, h);
    }
}

fn declared_length<B>(req: &Request<B>) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

fn set_request_id(h: &mut http::HeaderMap, id: &str) {
    if let Ok(v) = HeaderValue::from_str(id) {
        h.insert(HeaderName::from_static(reqid::HEADER), v);
    }
}

fn add_headers(resp: &mut Response<Body>, headers: &LimitHeaders) {
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            resp.headers_mut().insert(HeaderName::from_static(name), v);
        }
    }
}
