//! Counters and the admin listener: `/metrics` in the Prometheus text
//! format and `/healthz`, on their own address so that they are never
//! reachable through the gateway's routes.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::body::{Body, full};
use super::log::LogStats;

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

/// Serve `/metrics` and `/healthz` until the task is dropped.
pub async fn run(listener: TcpListener, render: Arc<dyn Fn() -> String + Send + Sync>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let render = Arc::clone(&render);
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let render = Arc::clone(&render);
                async move { Ok::<_, Infallible>(answer(req.uri().path(), &*render)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(5))
                .serve_connection(TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(30), conn).await;
        });
    }
}

fn answer(path: &str, render: &(dyn Fn() -> String + Send + Sync)) -> Response<Body> {
    let (status, body, kind) = match path {
        "/metrics" => (StatusCode::OK, render(), "text/plain; version=0.0.4"),
        "/healthz" => (StatusCode::OK, "ok\n".to_owned(), "text/plain"),
        _ => (
            StatusCode::NOT_FOUND,
            "not found\n".to_owned(),
            "text/plain",
        ),
    };
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    if let Ok(v) = kind.parse() {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}
