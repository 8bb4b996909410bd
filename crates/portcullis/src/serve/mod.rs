//! `portcullis serve`: the gateway's lifecycle. Load and validate, start the
//! decision log and the JWKS refresher, accept connections (TLS when
//! configured) up to the connection cap, hand each to hyper with the
//! connection guard in front, and on SIGTERM/SIGINT stop accepting, let
//! requests in flight finish (up to `shutdown_timeout`), flush the log and
//! exit 0.
//!
//! The request data path itself is [`gateway::Gateway::handle`].
//!
//! The runtime layout suits a small core count: one single-threaded tokio
//! runtime per core, each on its own thread. The main one accepts and
//! hands each connection, whole, to a worker in turn; from then on the
//! connection, its requests and the upstream connections they use (one
//! pool per worker) stay on that thread, and no work is stolen. What still
//! crosses threads: the decision-log queue (its writer thread wakes once
//! per batch) and, with `[rate_limit_store] redis`, the one Redis connection,
//! which one runtime drives for all.

pub(crate) mod admin;
mod body;
mod forward;
mod gateway;
mod guard;
pub(crate) mod log;
mod reqid;
mod static_files;
mod tls;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use portcullis_config::{Loaded, Upstream};
use portcullis_core::{Face, ReasonCode, render};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::cmd::{FAILED, load, usage};
use crate::jwks::{JwksSource, Refresher};
use admin::Metrics;
use body::InFlight;
use gateway::{ConnInfo, Gateway, Target};
use guard::{Guarded, HeadLimits};

/// Run the server until a signal; the exit code says how it ended.
pub fn run(config: &std::path::Path, listen: Option<SocketAddr>) -> ExitCode {
    let loaded = match load(config) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let Some(addr) = listen.or(loaded.server.listen) else {
        return usage("no address to listen on: set [server] listen or pass --listen");
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    let result = runtime.block_on(serve(loaded, addr));
    // Connections still open after the drain are cut here; that drops the
    // last senders of the decision log, whose writer then flushes and ends.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(writer) => {
            writer.finish();
            eprintln!("portcullis: stopped");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn fail(msg: String) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(FAILED)
}

async fn serve(loaded: Loaded, addr: SocketAddr) -> Result<log::Writer, String> {
    let target = match &loaded.upstream {
        Some(Upstream::Url(u)) => Target::Proxy(Box::new(forward::Proxy::new(u)?)),
        Some(Upstream::StaticDir(site)) => Target::Static(site.clone()),
        Some(Upstream::Echo) => Target::Echo,
        None => {
            return Err(format!(
                "{}: [upstream] is needed to serve: a url, a static_dir or echo = true",
                loaded.path.display()
            ));
        }
    };
    let tls = loaded.server.tls.as_ref().map(tls::acceptor).transpose()?;
    let (decision_log, writer) =
        log::DecisionLog::start(&loaded.decision_log).map_err(|e| format!("decision log: {e}"))?;
    let refresher = jwks_refresher(&loaded).await?;
    let server = loaded.server.clone();
    let gateway = Arc::new(Gateway {
        engine: loaded.engine,
        target,
        identity: loaded.identity_headers,
        limits: server.limits,
        route_max_body: loaded.route_max_body,
        log: decision_log,
        metrics: Arc::new(Metrics::default()),
        marker: Box::leak(uuid::Uuid::new_v4().simple().to_string().into_boxed_str()),
        jwks_wake: refresher.as_ref().map(Refresher::wake_handle),
        limiter: crate::limits::Limiter::configured(&loaded.rate_limit_store)?,
        bans: crate::bans::BanBook::configured(&loaded.rate_limit_store, &loaded.ban_key_prefix)?,
    });
    if let Some(r) = refresher {
        let gw = Arc::clone(&gateway);
        tokio::spawn(async move {
            if let Some(verifier) = gw.engine.authenticator().jwt() {
                r.run(verifier, |e| {
                    eprintln!("portcullis: JWKS refresh failed: {e}")
                })
                .await;
            }
        });
    }
    if let Some(admin_addr) = server.admin_listen {
        let l = TcpListener::bind(admin_addr)
            .await
            .map_err(|e| format!("cannot listen on {admin_addr}: {e}"))?;
        eprintln!(
            "portcullis: admin on http://{}",
            l.local_addr().unwrap_or(admin_addr)
        );
        tokio::spawn(admin::run(l, Arc::clone(&gateway)));
    }
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr().unwrap_or(addr);
    let workers = Workers::start(worker_count())?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    eprintln!("portcullis: listening on {scheme}://{bound}");
    accept_until_signal(listener, &gateway, tls, &server, &workers).await;
    workers.stop();
    Ok(writer)
}

/// One worker per core the process may use (at least one).
fn worker_count() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// A connection on its way to a worker.
type Job = Box<dyn FnOnce() + Send>;

/// The worker threads besides the main one, each running a single-threaded
/// runtime that serves the connections it is handed.
struct Workers {
    queues: Vec<tokio::sync::mpsc::UnboundedSender<Job>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    done: tokio::sync::watch::Sender<bool>,
    next: std::sync::atomic::AtomicUsize,
}

impl Workers {
    /// `total` workers in all: the main thread and `total - 1` more.
    fn start(total: usize) -> Result<Self, String> {
        let (done, _) = tokio::sync::watch::channel(false);
        let mut queues = Vec::new();
        let mut threads = Vec::new();
        for i in 1..total {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
            let mut done_rx = done.subscribe();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start a worker runtime: {e}"))?;
            let thread = std::thread::Builder::new()
                .name(format!("portcullis-worker-{i}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        loop {
                            tokio::select! {
                                job = rx.recv() => match job {
                                    Some(job) => job(),
                                    None => break,
                                },
                                _ = done_rx.changed() => break,
                            }
                        }
                        // Connections being drained keep running until the
                        // main thread says the drain is over.
                        let _ = done_rx.wait_for(|d| *d).await;
                    });
                    // Whatever is still open after the drain is cut here.
                    runtime.shutdown_timeout(Duration::from_secs(1));
                })
                .map_err(|e| format!("cannot start a worker thread: {e}"))?;
            queues.push(tx);
            threads.push(thread);
        }
        Ok(Workers {
            queues,
            threads,
            done,
            next: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Run `job` (which spawns a connection's task) on the next worker in
    /// turn; the main thread's turn runs it here.
    fn dispatch(&self, job: Job) {
        let n = self.queues.len() + 1;
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % n;
        match i.checked_sub(1).and_then(|q| self.queues.get(q)) {
            Some(q) => {
                if let Err(e) = q.send(job) {
                    (e.0)();
                }
            }
            None => job(),
        }
    }

    /// After the drain: end the workers and wait for them.
    fn stop(self) {
        let _ = self.done.send(true);
        drop(self.queues);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// The JWKS refresher, after a first fetch. A failed first fetch is
/// reported and retried; tokens signed by those keys are refused meanwhile.
async fn jwks_refresher(loaded: &Loaded) -> Result<Option<Refresher>, String> {
    let Some(verifier) = loaded.engine.authenticator().jwt() else {
        return Ok(None);
    };
    if loaded.jwks_urls.is_empty() {
        return Ok(None);
    }
    let urls: Vec<String> = loaded.jwks_urls.iter().map(|u| u.url.clone()).collect();
    let source = Arc::new(JwksSource::new(
        &urls,
        loaded.static_keys.clone(),
        Duration::from_secs(10),
    )?);
    if let Err(e) = source.refresh(verifier).await {
        eprintln!("portcullis: JWKS fetch failed, retrying in the background: {e}");
    }
    Ok(Some(Refresher::new(
        source,
        Duration::from_secs(300),
        Duration::from_secs(10),
    )))
}

async fn accept_until_signal(
    listener: TcpListener,
    gateway: &Arc<Gateway>,
    tls: Option<TlsAcceptor>,
    server: &portcullis_config::Server,
    workers: &Workers,
) {
    let builder = Arc::new(connection_builder(server));
    let slots = Arc::new(Semaphore::new(server.limits.max_connections));
    let graceful = GracefulShutdown::new();
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    eprintln!("portcullis: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            gateway
                .metrics
                .connections_refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::spawn(refuse_overloaded(stream, tls.is_none()));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = Conn {
            gateway: Arc::clone(gateway),
            builder: Arc::clone(&builder),
            watcher: graceful.watcher(),
            info: ConnInfo {
                peer,
                tls: tls.is_some(),
            },
            limits: HeadLimits {
                max_head: server.limits.max_header_bytes,
                max_headers: server.limits.max_headers,
                max_uri: server.limits.max_uri_bytes,
            },
            timeouts: guard::Timeouts {
                idle: server.idle_timeout,
                head: server.header_read_timeout,
            },
            _slot: slot,
        };
        let tls = tls.clone();
        let handshake_timeout = server.header_read_timeout;
        // The socket leaves this runtime's reactor and joins the worker's.
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        workers.dispatch(Box::new(move || {
            let Ok(stream) = TcpStream::from_std(stream) else {
                return;
            };
            tokio::spawn(async move {
                match tls {
                    None => conn.serve(stream, true).await,
                    Some(acceptor) => {
                        let Ok(Ok(s)) =
                            tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await
                        else {
                            return;
                        };
                        let h1 = s.get_ref().1.alpn_protocol() != Some(b"h2");
                        conn.serve(s, h1).await;
                    }
                }
            });
        }));
    }
    drop(listener);
    eprintln!(
        "portcullis: draining {} connection(s), up to {:?}",
        graceful.count(),
        server.shutdown_timeout
    );
    if tokio::time::timeout(server.shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        eprintln!("portcullis: shutdown timeout reached; closing the remaining connections");
    }
}

/// hyper's own limit on a head's fields when none is set.
const HYPER_MAX_HEADERS: usize = 100;

fn connection_builder(server: &portcullis_config::Server) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    let l = server.limits;
    b.http1()
        // The guard keeps the head deadline on its one timer; hyper's would
        // arm and cancel a timer of its own for every request.
        .header_read_timeout(None)
        .keep_alive(true)
        // The guard has already held the head to these limits; hyper's own
        // must never be the tighter ones.
        .max_buf_size((l.max_header_bytes + 8192).max(16 * 1024));
    // hyper's default field limit (100) keeps its parser's field arrays
    // uninitialised on the stack; a configured limit fills two heap
    // arrays of that size for every head. Only a larger one is passed on.
    if l.max_headers > HYPER_MAX_HEADERS {
        b.http1().max_headers(l.max_headers);
    }
    // h2 counts 32 bytes of overhead per field where the gateway counts 4:
    // leave room so the gateway's own JSON 431 is what a client meets. No
    // keep-alive pings: they would keep an idle connection from its deadline.
    let h2_list = l.max_header_bytes + 32 * l.max_headers;
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(h2_list).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        .keep_alive_interval(None);
    b
}

/// One accepted connection and what serving it needs.
struct Conn {
    gateway: Arc<Gateway>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: Watcher,
    info: ConnInfo,
    limits: HeadLimits,
    timeouts: guard::Timeouts,
    _slot: OwnedSemaphorePermit,
}

impl Conn {
    async fn serve<IO>(self, io: IO, http1_possible: bool)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let metrics = Arc::clone(&self.gateway.metrics);
        metrics
            .connections_accepted
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let guarded = Guarded::new(
            io,
            http1_possible,
            self.limits,
            self.gateway.marker,
            self.timeouts,
            Arc::clone(&in_flight),
        );
        let gateway = self.gateway;
        let info = self.info;
        let svc = service_fn(move |req| {
            let gateway = Arc::clone(&gateway);
            let in_flight = Arc::clone(&in_flight);
            InFlight::enter(&in_flight);
            // Boxed: the request's future is several kilobytes, and hyper
            // moves the future it is handed into its own slot; a box is
            // moved as a pointer.
            Box::pin(async move {
                // If hyper drops this future, no body takes over the count.
                let release = Release(Some(Arc::clone(&in_flight)));
                let resp = gateway.handle(req, info).await;
                release.disarm();
                Ok::<_, Infallible>(resp.map(|b| InFlight::new(b, in_flight).boxed_unsync()))
            })
        });
        let conn = self.builder.serve_connection(TokioIo::new(guarded), svc);
        let _ = self.watcher.watch(conn).await;
        metrics
            .connections_closed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Releases an in-flight count if the request is dropped before its
/// response body takes over the count.
struct Release(Option<Arc<AtomicUsize>>);

impl Release {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        }
    }
}

/// Over the connection cap: a plaintext client is told 503 before the close.
async fn refuse_overloaded(stream: TcpStream, plaintext: bool) {
    // A client that does not read cannot hold this task either.
    let _ = tokio::time::timeout(Duration::from_secs(2), write_overloaded(stream, plaintext)).await;
}

async fn write_overloaded(mut stream: TcpStream, plaintext: bool) {
    if plaintext {
        let r = render(&Face::of(ReasonCode::Overloaded), None, "-");
        let head = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n",
            r.body.len()
        );
        let _ = stream.write_all(head.as_bytes()).await;
        let _ = stream.write_all(r.body.as_bytes()).await;
        let _ = stream.shutdown().await;
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        // SIGHUP would end the process without a drain; reloading comes
        // later, so until then it is reported and ignored.
        if let Ok(mut hup) = signal(SignalKind::hangup()) {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    eprintln!(
                        "portcullis: SIGHUP ignored: configuration reload is not supported yet"
                    );
                }
            });
        }
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
