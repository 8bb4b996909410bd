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
                // Boxed: a future holding the entry would make every
                // request's future that much larger, to be moved each time.
                let _ = Box::pin(tx.send(entry)).await;
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
/// How often the writer looks for more lines while a batch is open. Each
/// look is a wake-up of its thread on the gateway's cores: at 0.5 ms the
/// full benchmark made about 0.51 context switches per request, at 2 ms
/// about 0.44.
const BATCH_POLL: std::time::Duration = std::time::Duration::from_millis(2);

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
                    let age = since.elapsed();
                    if age >= BATCH_WINDOW {
                        flush(&mut out);
                        open_since = None;
                    } else {
                        // Never past the batch's deadline.
                        std::thread::sleep(BATCH_POLL.min(BATCH_WINDOW - age));
                    }
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            },
        };
        line.clear();
        Line::of(&entry).write(&mut line);
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
struct Line<'a> {
    time: SystemTime,
    request_id: &'a str,
    client: IpAddr,
    peer: IpAddr,
    country: Option<&'a str>,
    method: &'a str,
    path: Option<&'a str>,
    route: Option<&'a str>,
    subject: Option<&'a str>,
    action: Option<&'a dyn std::fmt::Display>,
    resource: Option<&'a dyn std::fmt::Display>,
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
    bans_started: &'a [portcullis_limit::bans::Ban],
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
        Line {
            time: e.at,
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
            action: d
                .and_then(|d| d.action.as_ref())
                .map(|a| a as &dyn std::fmt::Display),
            resource: d
                .and_then(|d| d.resource.as_ref())
                .map(|r| r as &dyn std::fmt::Display),
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
            bans_started: &e.bans_started,
        }
    }

    /// The line as JSON, written by hand: it is made once per request on
    /// the gateway's own cores, and serde's generic path (with a `String`
    /// for the time and for each entity uid) was most of the writer
    /// thread's time. Field order and formats are what the docs show.
    fn write(&self, out: &mut Vec<u8>) {
        let unix = self.time.duration_since(UNIX_EPOCH).unwrap_or_default();
        let mut j = Json::new(out);
        j.display("time", &Rfc3339(unix));
        j.raw("unix", unix.as_secs());
        j.str("request_id", Some(self.request_id));
        j.display("client", &self.client);
        j.display("peer", &self.peer);
        if let Some(c) = self.country {
            j.str("country", Some(c));
        }
        j.str("method", Some(self.method));
        j.str("path", self.path);
        j.str("route", self.route);
        j.str("subject", self.subject);
        j.opt_display("action", self.action);
        j.opt_display("resource", self.resource);
        j.str("decision", Some(self.decision));
        j.raw("status", self.status);
        j.str("error", self.error);
        j.str("reason", self.reason);
        j.str("stage", self.stage);
        j.strs("policies", &self.policies);
        j.str("hint", self.hint);
        j.strs("rules_logged", &self.rules_logged);
        j.key("latency_ms");
        // serde_json's float format (`1.0`, not `1`), as before.
        if serde_json::to_writer(&mut *j.out, &self.latency_ms).is_err() {
            j.out.extend_from_slice(b"null");
        }
        match self.upstream_status {
            Some(s) => j.raw("upstream_status", s),
            None => j.null("upstream_status"),
        }
        if !self.bans_started.is_empty() {
            j.key("bans_started");
            j.out.push(b'[');
            for (i, b) in self.bans_started.iter().enumerate() {
                if i > 0 {
                    j.out.push(b',');
                }
                let mut o = Json::new(j.out);
                o.str("key", Some(&b.key));
                o.str("rule", Some(&b.by));
                o.display("until", &Rfc3339(Duration::from_millis(b.until_ms)));
                o.out.push(b'}');
            }
            j.out.push(b']');
        }
        j.out.push(b'}');
    }
}

/// A JSON object being written: keys in the order given.
struct Json<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Json<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Json { out, first: true }
    }

    fn key(&mut self, k: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(k.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    fn null(&mut self, k: &str) {
        self.key(k);
        self.out.extend_from_slice(b"null");
    }

    fn raw(&mut self, k: &str, v: impl Into<u64>) {
        self.key(k);
        let _ = write!(self.out, "{}", v.into());
    }

    fn str(&mut self, k: &str, v: Option<&str>) {
        match v {
            Some(v) => {
                self.key(k);
                quoted(self.out, v);
            }
            None => self.null(k),
        }
    }

    fn strs(&mut self, k: &str, vs: &[&str]) {
        self.key(k);
        self.out.push(b'[');
        for (i, v) in vs.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            quoted(self.out, v);
        }
        self.out.push(b']');
    }

    fn display(&mut self, k: &str, v: &dyn std::fmt::Display) {
        self.key(k);
        self.out.push(b'"');
        let _ = std::fmt::Write::write_fmt(&mut Escaped(self.out), format_args!("{v}"));
        self.out.push(b'"');
    }

    fn opt_display(&mut self, k: &str, v: Option<&dyn std::fmt::Display>) {
        match v {
            Some(v) => self.display(k, v),
            None => self.null(k),
        }
    }
}

/// A JSON string.
fn quoted(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    escape(out, s);
    out.push(b'"');
}

/// JSON string escaping, as serde_json does it: `"`, `\\` and control
/// characters; everything else as is.
fn escape(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(bytes.get(start..i).unwrap_or_default());
        if esc.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(bytes.get(start..).unwrap_or_default());
}

/// `fmt::Write` into a JSON string's contents.
struct Escaped<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        escape(self.0, s);
        Ok(())
    }
}

/// A time as [`rfc3339`] writes it, without the `String`.
struct Rfc3339(Duration);

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let since_epoch = self.0;
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
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60,
            since_epoch.subsec_millis()
        )
    }
}

/// `2026-11-22T10:38:01.123Z`.
pub fn rfc3339(since_epoch: Duration) -> String {
    Rfc3339(since_epoch).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(entry: &Entry) -> (String, serde_json::Value) {
        let mut out = Vec::new();
        Line::of(entry).write(&mut out);
        let text = String::from_utf8(out).unwrap();
        let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        (text, value)
    }

    fn entry(decision: Option<Decision>) -> Entry {
        Entry {
            at: UNIX_EPOCH + Duration::from_millis(1_795_350_896_789),
            request_id: "id-\"1\"".into(),
            client: "2001:db8::7".parse().unwrap(),
            peer: "192.0.2.7".parse().unwrap(),
            method: Method::GET,
            decision,
            refusal: None,
            status: 200,
            latency: Duration::from_micros(1500),
            upstream_status: Some(200),
            bans_started: Vec::new(),
        }
    }

    /// The line an allowed request gets, entity uids and all, field by
    /// field as docs/serving.md lists them.
    #[test]
    fn an_allowed_request_is_one_json_object_with_every_field() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let loaded =
            portcullis_config::load(&root.join("examples/quickstart/portcullis.toml")).unwrap();
        let headers = http::HeaderMap::new();
        let decision = loaded.engine.decide(&portcullis_core::RequestFacts {
            method: &Method::GET,
            target: "/public/hello",
            headers: &headers,
            peer: "192.0.2.7".parse().unwrap(),
            now: 1_795_350_896,
        });
        assert!(decision.is_allowed());
        let (text, v) = line(&entry(Some(decision)));
        assert!(text.starts_with("{\"time\":\"2026-11-22T12:34:56.789Z\",\"unix\":1795350896,"));
        assert_eq!(v["request_id"], "id-\"1\"");
        assert_eq!(v["client"], "2001:db8::7");
        assert_eq!(v["peer"], "192.0.2.7");
        assert!(v.get("country").is_none());
        assert_eq!(v["method"], "GET");
        assert_eq!(v["path"], "/public/hello");
        assert_eq!(v["route"], "public");
        assert_eq!(v["subject"], serde_json::Value::Null);
        assert_eq!(v["action"], "Action::\"readPublic\"");
        assert_eq!(v["resource"], "Public::\"hello\"");
        assert_eq!(v["decision"], "allow");
        assert_eq!(v["status"], 200);
        assert_eq!(v["error"], serde_json::Value::Null);
        assert_eq!(v["policies"], serde_json::json!(["public-read"]));
        assert_eq!(v["rules_logged"], serde_json::json!([]));
        assert_eq!(v["latency_ms"], 1.5);
        assert_eq!(v["upstream_status"], 200);
        assert!(v.get("bans_started").is_none());
    }

    /// Quotes, backslashes and control characters are escaped as JSON
    /// needs; other text, non-ASCII included, is written as is.
    #[test]
    fn strings_are_escaped_as_json() {
        let mut e = entry(None);
        e.refusal = Some((
            ReasonCode::UpstreamUnavailable,
            Stage::Forward,
            "a \"b\" \\ c\n\t\u{1}é".into(),
        ));
        e.status = 502;
        e.latency = Duration::from_millis(2);
        e.upstream_status = None;
        e.bans_started = vec![portcullis_limit::bans::Ban {
            key: "ip:2001:db8::7".into(),
            until_ms: 1_795_351_496_789,
            by: Arc::from("too-many"),
        }];
        let (text, v) = line(&e);
        assert!(
            text.contains(r#""hint":"a \"b\" \\ c\n\t\u0001é""#),
            "{text}"
        );
        assert_eq!(v["hint"], "a \"b\" \\ c\n\t\u{1}é");
        assert_eq!(v["decision"], "error");
        assert_eq!(v["latency_ms"], 2.0);
        assert!(text.contains(r#""latency_ms":2.0,"#), "{text}");
        assert_eq!(v["upstream_status"], serde_json::Value::Null);
        assert_eq!(
            v["bans_started"],
            serde_json::json!([{"key": "ip:2001:db8::7", "rule": "too-many", "until": "2026-11-22T12:44:56.789Z"}])
        );
    }

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
