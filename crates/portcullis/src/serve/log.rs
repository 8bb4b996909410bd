//! The decision log (stage 11): one JSON line per request, allowed or not.
//!
//! Requests hand an [`Entry`] to a bounded queue; a writer thread formats and
//! writes it, so serialisation and disk I/O stay off the request path. A line
//! is never dropped: when the queue is full the request waits for room
//! (backpressure), and every such wait is counted in `/metrics`
//! (`portcullis_decision_log_waits_total`) so a slow disk is visible.

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::Method;
use portcullis_core::decision::Verdict;
use portcullis_core::{Decision, ReasonCode, Stage};
use serde::Serialize;
use tokio::sync::mpsc;

/// What happened to one request, as the log records it.
#[derive(Debug)]
pub struct Entry {
    /// When the request arrived.
    pub at: SystemTime,
    /// The request id.
    pub request_id: String,
    /// The client address (resolved through trusted proxies).
    pub client: IpAddr,
    /// The TCP peer.
    pub peer: IpAddr,
    /// The method.
    pub method: Method,
    /// The engine's decision; `None` when the request was refused before it
    /// (malformed head, a limit).
    pub decision: Option<Decision>,
    /// A refusal by the server itself (limits, the static file server, the
    /// upstream transport), with its stage and detail.
    pub refusal: Option<(ReasonCode, Stage, String)>,
    /// The status sent.
    pub status: u16,
    /// Time until the response head was ready.
    pub latency: Duration,
    /// The upstream's status, when it answered.
    pub upstream_status: Option<u16>,
    /// Bans this response started (it was the strike past a threshold).
    pub bans_started: Vec<portcullis_limit::bans::Ban>,
}

/// Counters the log exposes.
#[derive(Debug, Default)]
pub struct LogStats {
    /// Lines written.
    pub written: AtomicU64,
    /// Times a request waited for room in the queue.
    pub waits: AtomicU64,
    /// Lines the writer could not write (I/O errors), reported on stderr.
    pub failed: AtomicU64,
}

/// The sending side, held by the gateway.
#[derive(Debug, Clone)]
pub struct DecisionLog {
    tx: Option<mpsc::Sender<Entry>>,
    stats: Arc<LogStats>,
}

/// The writer thread; join it after the last sender is gone.
#[derive(Debug)]
pub struct Writer(Option<JoinHandle<()>>);

impl Writer {
    /// Wait for every queued line to be written and flushed.
    pub fn finish(mut self) {
        if let Some(h) = self.0.take() {
            let _ = h.join();
        }
    }
}

impl DecisionLog {
    /// Start the writer for `target`.
    pub fn start(target: &portcullis_config::DecisionLog) -> io::Result<(Self, Writer)> {
        let stats = Arc::new(LogStats::default());
        let (sink, queue): (Box<dyn Write + Send>, usize) = match target {
            portcullis_config::DecisionLog::Off => {
                return Ok((DecisionLog { tx: None, stats }, Writer(None)));
            }
            portcullis_config::DecisionLog::Stdout { queue } => (Box::new(io::stdout()), *queue),
            portcullis_config::DecisionLog::File { path, queue } => (open(path)?, *queue),
        };
        let (tx, rx) = mpsc::channel(queue);
        let writer_stats = Arc::clone(&stats);
        let handle = std::thread::Builder::new()
            .name("decision-log".into())
            .spawn(move || write_lines(rx, sink, &writer_stats))?;
        Ok((
            DecisionLog {
                tx: Some(tx),
                stats,
            },
            Writer(Some(handle)),
        ))
    }

    /// Queue one line, waiting for room if the queue is full.
    pub async fn record(&self, entry: Entry) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(entry) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(entry)) => {
                self.stats.waits.fetch_add(1, Ordering::Relaxed);
                let _ = tx.send(entry).await;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Queue one line without waiting (from `Drop`, which cannot await); a
    /// full queue counts it as failed rather than losing it silently.
    pub fn record_now(&self, entry: Entry) {
        let Some(tx) = &self.tx else { return };
        if tx.try_send(entry).is_err() {
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counters.
    pub fn stats(&self) -> &LogStats {
        &self.stats
    }
}

fn open(path: &Path) -> io::Result<Box<dyn Write + Send>> {
    let f = OpenOptions::new().create(true).append(true).open(path)?;
    Ok(Box::new(f))
}

/// How long a written line may wait in the buffer for company before it
/// is flushed: under load the writer wakes once per batch, not per line
/// (each wake is a context switch on a request's core); a quiet server's
/// log is at most this far behind.
const BATCH_WINDOW: std::time::Duration = std::time::Duration::from_millis(5);
/// How often the writer looks for more lines while a batch is open.
const BATCH_POLL: std::time::Duration = std::time::Duration::from_micros(500);

fn write_lines(mut rx: mpsc::Receiver<Entry>, sink: Box<dyn Write + Send>, stats: &LogStats) {
    let mut out = BufWriter::with_capacity(64 * 1024, sink);
    let mut line = Vec::with_capacity(1024);
    // When the oldest unflushed line was written, if any is.
    let mut open_since: Option<std::time::Instant> = None;
    loop {
        let entry = match open_since {
            // Nothing waiting to be flushed: sleep until a line comes.
            None => match rx.blocking_recv() {
                Some(e) => e,
                None => break,
            },
            // A batch is open: take what has come, without parking (a
            // parked receiver makes every sender wake it).
            Some(since) => match rx.try_recv() {
                Ok(e) => e,
                Err(mpsc::error::TryRecvError::Empty) => {
                    if since.elapsed() >= BATCH_WINDOW {
                        flush(&mut out);
                        open_since = None;
                    } else {
                        std::thread::sleep(BATCH_POLL);
                    }
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            },
        };
        line.clear();
        if serde_json::to_writer(&mut line, &Line::of(&entry)).is_err() {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        line.push(b'\n');
        if let Err(e) = out.write_all(&line) {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            eprintln!("decision log: {e}");
            continue;
        }
        stats.written.fetch_add(1, Ordering::Relaxed);
        // Under steady load the queue is seldom empty: flush by age too.
        if open_since
            .get_or_insert_with(std::time::Instant::now)
            .elapsed()
            >= BATCH_WINDOW
        {
            flush(&mut out);
            open_since = None;
        }
    }
    flush(&mut out);
}

fn flush(out: &mut BufWriter<Box<dyn Write + Send>>) {
    if let Err(e) = out.flush() {
        eprintln!("decision log: {e}");
    }
}

/// The JSON line.
#[derive(Serialize)]
struct Line<'a> {
    time: String,
    unix: i64,
    request_id: &'a str,
    client: IpAddr,
    peer: IpAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    country: Option<&'a str>,
    method: &'a str,
    path: Option<&'a str>,
    route: Option<&'a str>,
    subject: Option<&'a str>,
    action: Option<String>,
    resource: Option<String>,
    decision: &'static str,
    status: u16,
    error: Option<&'a str>,
    reason: Option<&'static str>,
    stage: Option<&'static str>,
    policies: Vec<&'a str>,
    hint: Option<&'a str>,
    rules_logged: Vec<&'a str>,
    latency_ms: f64,
    upstream_status: Option<u16>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    bans_started: Vec<BanLine<'a>>,
}

/// A ban a response started.
#[derive(Serialize)]
struct BanLine<'a> {
    key: &'a str,
    rule: &'a str,
    until: String,
}

impl<'a> Line<'a> {
    fn of(e: &'a Entry) -> Self {
        let d = e.decision.as_ref();
        let denial = d.and_then(Decision::denial);
        let (error, reason, stage, hint) = match (&e.refusal, denial) {
            (Some((r, s, h)), _) => (
                Some(r.info().code),
                Some(r.as_str()),
                Some(*s),
                Some(h.as_str()),
            ),
            (None, Some(den)) => (
                Some(den.face.code.as_str()),
                Some(den.reason.as_str()),
                Some(den.stage),
                Some(den.hint.as_str()),
            ),
            (None, None) => (None, None, None, None),
        };
        let policies = match d.map(|d| &d.verdict) {
            Some(Verdict::Allow { policies }) => policies.iter().map(|p| &**p).collect(),
            Some(Verdict::Deny(den)) => den.policies.iter().map(|p| &**p).collect(),
            None => Vec::new(),
        };
        // The gateway's own faults (5xx refusals, a fail-closed limiter, a
        // client gone) are errors; an upstream's 5xx on an allowed request
        // is still an allow.
        let decision = match (&e.refusal, error) {
            (Some((r, _, _)), _) if *r == ReasonCode::ClientClosedRequest => "error",
            (_, Some(_)) if e.status >= 500 => "error",
            (_, Some(_)) => "deny",
            _ => "allow",
        };
        let unix = e.at.duration_since(UNIX_EPOCH).unwrap_or_default();
        Line {
            time: rfc3339(unix),
            unix: i64::try_from(unix.as_secs()).unwrap_or(i64::MAX),
            request_id: &e.request_id,
            client: e.client,
            peer: e.peer,
            country: d.and_then(|d| d.country.as_ref()).map(|c| c.as_str()),
            method: e.method.as_str(),
            path: d.and_then(|d| d.path.as_deref()),
            route: d.and_then(|d| d.route.as_ref()).map(|r| &*r.name),
            subject: d
                .and_then(|d| d.identity.as_ref())
                .map(|i| i.subject.as_str()),
            action: d.and_then(|d| d.action.as_ref()).map(ToString::to_string),
            resource: d.and_then(|d| d.resource.as_ref()).map(ToString::to_string),
            decision,
            status: e.status,
            error,
            reason,
            stage: stage.map(Stage::as_str),
            policies,
            hint: hint.filter(|h| !h.is_empty()),
            rules_logged: d
                .map(|d| d.rules_logged.iter().map(|r| &**r).collect())
                .unwrap_or_default(),
            latency_ms: e.latency.as_secs_f64() * 1000.0,
            upstream_status: e.upstream_status,
            bans_started: e
                .bans_started
                .iter()
                .map(|b| BanLine {
                    key: &b.key,
                    rule: &b.by,
                    until: rfc3339(Duration::from_millis(b.until_ms)),
                })
                .collect(),
        }
    }
}

/// `2026-11-22T10:38:01.123Z`.
pub fn rfc3339(since_epoch: Duration) -> String {
    let secs = since_epoch.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since_epoch.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(Duration::from_secs(0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(Duration::from_millis(1_795_350_896_789)),
            "2026-11-22T12:34:56.789Z"
        );
        assert_eq!(
            rfc3339(Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000Z"
        );
    }
}
