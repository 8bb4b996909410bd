//! Counters and the admin listener: `/metrics` in the Prometheus text
//! format, `/healthz` and `/bans`, on their own address so that they are
//! never reachable through the gateway's routes.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use portcullis_limit::bans::Ban;
use tokio::net::TcpListener;

use super::body::{Body, full};
use super::gateway::Gateway;
use super::log::{LogStats, rfc3339};

/// Counters shared by every connection.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Responses by status class, 1xx..5xx.
    pub responses: [AtomicU64; 5],
    /// Connections accepted.
    pub connections_accepted: AtomicU64,
    /// Connections closed.
    pub connections_closed: AtomicU64,
    /// Connections refused at the limit.
    pub connections_refused: AtomicU64,
}

impl Metrics {
    /// Count one response.
    pub fn count_response(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self, log: &LogStats, limit_store_errors: u64) -> String {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        out.push_str("# TYPE portcullis_responses_total counter\n");
        for (i, c) in self.responses.iter().enumerate() {
            let _ = writeln!(
                out,
                "portcullis_responses_total{{class=\"{}xx\"}} {}",
                i + 1,
                get(c)
            );
        }
        let open = get(&self.connections_accepted).saturating_sub(get(&self.connections_closed));
        for (name, kind, v) in [
            ("portcullis_connections_open", "gauge", open),
            (
                "portcullis_connections_accepted_total",
                "counter",
                get(&self.connections_accepted),
            ),
            (
                "portcullis_connections_refused_total",
                "counter",
                get(&self.connections_refused),
            ),
            (
                "portcullis_decision_log_lines_total",
                "counter",
                get(&log.written),
            ),
            (
                "portcullis_decision_log_waits_total",
                "counter",
                get(&log.waits),
            ),
            (
                "portcullis_decision_log_failures_total",
                "counter",
                get(&log.failed),
            ),
            (
                "portcullis_rate_limit_store_errors_total",
                "counter",
                limit_store_errors,
            ),
        ] {
            let _ = writeln!(out, "# TYPE {name} {kind}\n{name} {v}");
        }
        out
    }
}

/// Serve the admin endpoints until the task is dropped.
pub async fn run(listener: TcpListener, gateway: Arc<Gateway>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let gw = Arc::clone(&gateway);
        // A peer is on this host when it is loopback or comes from the
        // address it reached (the CLI connecting to a non-loopback
        // admin_listen).
        let local = stream.local_addr().map(|a| a.ip().to_canonical()).ok();
        let peer_ip = peer.ip().to_canonical();
        let same_host = peer_ip.is_loopback() || Some(peer_ip) == local;
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let gw = Arc::clone(&gw);
                async move { Ok::<_, Infallible>(answer(&req, same_host, &gw).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(5))
                .serve_connection(TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(30), conn).await;
        });
    }
}

async fn answer<B>(req: &Request<B>, same_host: bool, gw: &Gateway) -> Response<Body> {
    let read = matches!(*req.method(), Method::GET | Method::HEAD);
    match (read, req.uri().path()) {
        (true, "/metrics") => text(StatusCode::OK, metrics(gw), "text/plain; version=0.0.4"),
        (true, "/healthz") => text(StatusCode::OK, "ok\n".to_owned(), "text/plain"),
        (_, "/bans") => bans(req, same_host, gw).await,
        _ => text(
            StatusCode::NOT_FOUND,
            "not found\n".to_owned(),
            "text/plain",
        ),
    }
}

fn metrics(gw: &Gateway) -> String {
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut out = gw
        .metrics
        .render(gw.log.stats(), gw.limiter.store_errors.count());
    for (name, v) in [
        ("portcullis_bans_started_total", get(&gw.bans.started)),
        (
            "portcullis_ban_store_errors_total",
            gw.bans.store_errors.count(),
        ),
    ] {
        let _ = writeln!(out, "# TYPE {name} counter\n{name} {v}");
    }
    out
}

/// The header a change to the bans must carry. A browser cannot send it
/// to another origin without a preflight, which this listener never
/// grants, so a web page on the gateway's host cannot add or lift bans.
pub const CHANGE_HEADER: &str = "x-portcullis-admin";

/// Whether a request comes from a web page: browsers send `Origin` on
/// every POST and DELETE, and `Sec-Fetch-Site` (other than `none`) on
/// whatever a page sends. A page whose name was rebound to this host is
/// same-origin, so [`CHANGE_HEADER`] alone would not stop it; the CLI
/// sends neither.
fn from_a_page(h: &http::HeaderMap) -> bool {
    h.contains_key(http::header::ORIGIN)
        || h.get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes() != b"none")
}

/// `/bans`: GET lists the bans in force; POST `?key=K&for=D[&reason=R]`
/// adds one and DELETE `?key=K` lifts one, from this host only and with
/// [`CHANGE_HEADER`] (the admin listener has no credentials; anyone who can
/// reach it could otherwise lift their own ban).
async fn bans<B>(req: &Request<B>, same_host: bool, gw: &Gateway) -> Response<Body> {
    let now_ms = crate::cmd::now_ms();
    let query: Vec<(String, String)> = req.uri().query().map(url_form).unwrap_or_default();
    let arg = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let method = req.method();
    if gw.engine.bans().is_none() {
        return error(
            StatusCode::CONFLICT,
            "BansOff",
            "bans are off: the configuration has no [bans] table",
        );
    }
    if *method != Method::GET && !same_host {
        return error(
            StatusCode::FORBIDDEN,
            "AdminLocalOnly",
            "bans are changed from the gateway's own host only",
        );
    }
    if *method != Method::GET && !req.headers().contains_key(CHANGE_HEADER) {
        return error(
            StatusCode::FORBIDDEN,
            "AdminHeaderMissing",
            "a change to the bans must carry the X-Portcullis-Admin header (portcullis ban sends it)",
        );
    }
    if *method != Method::GET && from_a_page(req.headers()) {
        return error(
            StatusCode::FORBIDDEN,
            "AdminFromBrowser",
            "bans are not changed from a web page; use portcullis ban",
        );
    }
    let result = match *method {
        Method::GET => gw.bans.list(now_ms).await.map(|list| {
            serde_json::json!({
                "shared": gw.bans.is_shared(),
                "bans": list.iter().map(|b| ban_json(b, now_ms)).collect::<Vec<_>>(),
            })
        }),
        Method::POST | Method::DELETE => {
            let key = match crate::bans::parse_target(arg("key").unwrap_or(""), gw.engine.bans()) {
                Ok(k) => k,
                Err(e) => return error(StatusCode::BAD_REQUEST, "InvalidBanKey", &e),
            };
            if *method == Method::DELETE {
                gw.bans
                    .remove(&key, now_ms)
                    .await
                    .map(|lifted| serde_json::json!({"key": key, "lifted": lifted}))
            } else {
                let duration = match arg("for").map(portcullis_config::duration::parse_millis) {
                    Some(Ok(ms)) if ms > 0 => std::time::Duration::from_millis(ms),
                    _ => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            "InvalidDuration",
                            "give for=DURATION, such as 10m or 2h",
                        );
                    }
                };
                let by = crate::bans::manual_by(arg("reason"));
                gw.bans
                    .add(&key, duration, &by, now_ms)
                    .await
                    .map(|b| ban_json(&b, now_ms))
            }
        }
        _ => {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "use GET, POST or DELETE",
            );
        }
    };
    match result {
        Ok(v) => json(StatusCode::OK, &v),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "BanStoreUnavailable",
            &e.to_string(),
        ),
    }
}

/// A ban as the admin API and `portcullis ban list` show it.
pub fn ban_json(b: &Ban, now_ms: u64) -> serde_json::Value {
    serde_json::json!({
        "key": b.key,
        "until": rfc3339(std::time::Duration::from_millis(b.until_ms)),
        "seconds_left": b.until_ms.saturating_sub(now_ms).div_ceil(1000),
        "by": &*b.by,
    })
}

fn url_form(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let dec = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8()
                    .ok()
                    .map(|c| c.into_owned())
            };
            Some((dec(k)?, dec(v)?))
        })
        .collect()
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    json(
        status,
        &serde_json::json!({"error": code, "message": message}),
    )
}

fn json(status: StatusCode, v: &serde_json::Value) -> Response<Body> {
    text(status, format!("{v}\n"), "application/json")
}

fn text(status: StatusCode, body: String, kind: &str) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    if let Ok(v) = kind.parse() {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}
