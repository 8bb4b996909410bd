//! The client connection's byte stream, before hyper sees it (stage 1).
//!
//! Two jobs. First, the client's deadlines: a connection on which no byte
//! moves for `idle` is failed, and so is one whose next request head is not
//! complete within `head` of when the gateway began waiting for it (the
//! connection opening, or the last response ending), so a stalled or
//! trickling client cannot hold a slot forever. Both run on one timer that
//! is moved only when it fires: a request that arrives in time costs no
//! timer work at all.
//! Second, for HTTP/1 only, a framing guard: each request head is parsed
//! (with the same parser hyper uses) before hyper may read it, and a head
//! that is too large, malformed, or whose body length could be read two ways
//! (`Content-Length` with `Transfer-Encoding`, two `Content-Length`s, a
//! length that is not plain digits) is never handed over. hyper receives a
//! synthetic request carrying a secret marker instead; the service answers
//! it with the JSON error the status contract asks for and closes the
//! connection. hyper on its own would quietly prefer `Transfer-Encoding` or
//! answer with an empty body.
//!
//! Bodies are followed (`Content-Length` counted, chunked framing walked) so
//! the guard always knows where the next head starts, and whose turn it is:
//! the idle deadline runs only while the client owes bytes (a head or a body
//! under way, or an idle connection), never while a request is waiting for
//! a slow upstream.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The header on a synthetic request that stands for a refused head.
pub const REFUSED_HEADER: &str = "x-portcullis-refused";

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const READ_CHUNK: usize = 16 * 1024;

/// Why a head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The request line alone is over the URI limit.
    UriTooLong,
    /// The head is over the byte or field limit.
    HeadersTooLarge,
    /// The head does not parse.
    Malformed,
    /// The body's length is ambiguous or malformed.
    Framing,
}

impl Refusal {
    /// The token on the synthetic request.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::UriTooLong => "uri",
            Refusal::HeadersTooLarge => "headers",
            Refusal::Malformed => "malformed",
            Refusal::Framing => "framing",
        }
    }

    /// Read the token back.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Refusal::UriTooLong,
            Refusal::HeadersTooLarge,
            Refusal::Malformed,
            Refusal::Framing,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// Head limits the guard enforces.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Request line and headers, bytes.
    pub max_head: usize,
    /// Header fields.
    pub max_headers: usize,
    /// Request target, bytes.
    pub max_uri: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// First bytes of a plaintext connection: HTTP/1 or an h2c preface.
    Start,
    Head,
    Body(u64),
    Chunked(Chunk),
    /// HTTP/2: framing is the h2 codec's job.
    Transparent,
    /// A refusal was handed over; nothing more is read.
    Refused,
    /// The chunked framing broke; the next read fails.
    Broken,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size { digits: u8, value: u64 },
    Ext(u64),
    SizeLf { last: bool, value: u64 },
    Data(u64),
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    TrailerLf,
    FinalLf,
}

/// The client's deadlines (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// No byte moving while it is the client's turn.
    pub idle: Duration,
    /// An HTTP/1 request head, from when the gateway begins waiting for it.
    pub head: Duration,
}

/// A client connection wrapped with the deadlines and, for HTTP/1, the
/// framing guard.
#[derive(Debug)]
pub struct Guarded<IO> {
    io: IO,
    state: State,
    pending: BytesMut,
    out: BytesMut,
    limits: HeadLimits,
    marker: &'static str,
    timeouts: Timeouts,
    last_io: Instant,
    /// When the wait for the current request head began, while there is one.
    head_since: Option<Instant>,
    /// The last write did not go through: a response is still going out.
    write_blocked: bool,
    /// Fires no later than either deadline; moved on only when it fires.
    deadline: Pin<Box<Sleep>>,
    in_flight: Arc<AtomicUsize>,
}

impl<IO> Guarded<IO> {
    /// Wrap `io`. `http1_possible` is false for a TLS connection that chose
    /// h2 by ALPN. `marker` is the process's secret for synthetic requests.
    /// `in_flight` counts this connection's requests whose responses are
    /// not finished.
    pub fn new(
        io: IO,
        http1_possible: bool,
        limits: HeadLimits,
        marker: &'static str,
        timeouts: Timeouts,
        in_flight: Arc<AtomicUsize>,
    ) -> Self {
        let now = Instant::now();
        Guarded {
            io,
            state: if http1_possible {
                State::Start
            } else {
                State::Transparent
            },
            pending: BytesMut::new(),
            out: BytesMut::new(),
            limits,
            marker,
            timeouts,
            last_io: now,
            head_since: None,
            write_blocked: false,
            deadline: Box::pin(tokio::time::sleep_until(
                now + timeouts.idle.min(timeouts.head),
            )),
            in_flight,
        }
    }

    /// Whether the next bytes are the client's to send: part of a head or
    /// body, or a new request on a connection with nothing in flight.
    fn client_owes(&self) -> bool {
        matches!(self.state, State::Body(_) | State::Chunked(_))
            || !self.pending.is_empty()
            || self.in_flight.load(Ordering::Acquire) == 0
    }

    /// Start or end the wait for a request head: it runs while the client
    /// owes one (an HTTP/1 connection with nothing in flight, no body under
    /// way and no response still going out: a body can end while its last
    /// bytes wait for the client to take them), from the last I/O before
    /// it began: the connection opening or the previous response's last
    /// write.
    fn track_head_wait(&mut self) {
        let waiting = matches!(self.state, State::Start | State::Head)
            && !self.write_blocked
            && self.in_flight.load(Ordering::Acquire) == 0;
        if !waiting {
            self.head_since = None;
        } else if self.head_since.is_none() {
            self.head_since = Some(self.last_io);
        }
    }

    /// Keep the timer armed (hyper may not read again after a response
    /// until the timer wakes it) and, when it fires while `owes` (it is the
    /// client's turn), fail with `TimedOut` if nothing has moved for
    /// `idle` or the head waited for has taken longer than `head`. The timer
    /// is reset only here, when it fires, to the earliest deadline that can
    /// fall due: one running now, or a head wait or idle spell that begins
    /// later (`last_io` is now whenever the client owes nothing).
    fn poll_deadline(&mut self, cx: &mut Context<'_>, owes: bool) -> io::Result<()> {
        loop {
            if self.deadline.as_mut().poll(cx).is_pending() {
                return Ok(());
            }
            let now = Instant::now();
            let head_due = self.head_since.map(|t| t + self.timeouts.head);
            let idle_due = self.last_io + self.timeouts.idle;
            if owes && head_due.is_some_and(|due| now >= due) {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "request head not complete in time",
                ));
            }
            if owes && now >= idle_due {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "connection idle"));
            }
            let next = head_due
                .map_or(idle_due, |due| due.min(idle_due))
                .min(now + self.timeouts.head);
            // Never at or before now: a timer already due would spin this
            // loop. (The checks above, and `last_io` being now whenever the
            // client owes nothing, keep it ahead; this only makes sure.)
            let next = if next > now {
                next
            } else {
                now + Duration::from_millis(1)
            };
            self.deadline.as_mut().reset(next);
        }
    }

    /// Move judged bytes from `pending` to `out`. Returns whether anything
    /// changed (bytes moved or the state moved on).
    fn judge(&mut self) -> bool {
        let mut progressed = false;
        while !self.pending.is_empty() {
            let before = (self.pending.len(), self.state);
            match self.state {
                State::Start => self.start(),
                State::Head => self.head(),
                State::Body(rem) => {
                    let n = usize::try_from(rem)
                        .unwrap_or(usize::MAX)
                        .min(self.pending.len());
                    self.pass(n);
                    let rem = rem - n as u64;
                    self.state = if rem == 0 {
                        State::Head
                    } else {
                        State::Body(rem)
                    };
                }
                State::Chunked(c) => self.chunked(c),
                State::Transparent => {
                    let n = self.pending.len();
                    self.pass(n);
                }
                State::Refused | State::Broken => {
                    self.pending.clear();
                }
            }
            if before == (self.pending.len(), self.state) {
                break;
            }
            progressed = true;
        }
        progressed
    }

    fn pass(&mut self, n: usize) {
        let bytes = self.pending.split_to(n);
        self.out.unsplit(bytes);
    }

    fn start(&mut self) {
        let n = self.pending.len().min(H2_PREFACE.len());
        if self.pending[..n] != H2_PREFACE[..n] {
            self.state = State::Head;
        } else if n == H2_PREFACE.len() {
            self.state = State::Transparent;
        }
    }

    fn head(&mut self) {
        // The fields on the stack up to the default limit and a little
        // more; only a larger configured limit allocates (this runs on
        // every request).
        const ON_STACK: usize = 128;
        let mut stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; ON_STACK];
        let mut heap = Vec::new();
        let fields = if self.limits.max_headers <= ON_STACK {
            &mut stack[..self.limits.max_headers]
        } else {
            heap.resize_with(self.limits.max_headers, MaybeUninit::uninit);
            &mut heap[..]
        };
        let mut req = httparse::Request::new(&mut []);
        let verdict = match req.parse_with_uninit_headers(&self.pending, fields) {
            Ok(httparse::Status::Partial) => {
                if self.pending.len() <= self.limits.max_head {
                    return;
                }
                if self.pending.contains(&b'\n') {
                    Err(Refusal::HeadersTooLarge)
                } else {
                    Err(Refusal::UriTooLong)
                }
            }
            Ok(httparse::Status::Complete(len)) => judge_head(&req, len, self.limits),
            Err(httparse::Error::TooManyHeaders) => Err(Refusal::HeadersTooLarge),
            Err(_) => Err(Refusal::Malformed),
        };
        match verdict {
            Ok((len, next)) => {
                self.pass(len);
                self.state = next;
                self.head_since = None;
            }
            Err(refusal) => self.refuse(refusal),
        }
    }

    fn refuse(&mut self, refusal: Refusal) {
        self.pending.clear();
        let synthetic = format!(
            "GET / HTTP/1.1\r\nhost: gateway.invalid\r\n{REFUSED_HEADER}: {} {}\r\n\r\n",
            self.marker,
            refusal.as_str()
        );
        self.out.extend_from_slice(synthetic.as_bytes());
        self.state = State::Refused;
    }

    fn chunked(&mut self, mut c: Chunk) {
        let mut i = 0;
        let buf = &self.pending[..];
        while i < buf.len() {
            if let Chunk::Data(rem) = c {
                let n = usize::try_from(rem)
                    .unwrap_or(usize::MAX)
                    .min(buf.len() - i);
                i += n;
                let rem = rem - n as u64;
                c = if rem == 0 {
                    Chunk::DataCr
                } else {
                    Chunk::Data(rem)
                };
                continue;
            }
            match step(c, buf[i]) {
                Some(Some(next)) => c = next,
                Some(None) => {
                    i += 1;
                    self.pass(i);
                    self.state = State::Head;
                    return;
                }
                None => {
                    self.pass(i);
                    self.state = State::Broken;
                    return;
                }
            }
            i += 1;
        }
        self.pass(i);
        self.state = State::Chunked(c);
    }
}

/// Check a complete head: sizes, then framing. Returns its length and what
/// follows it.
fn judge_head(
    req: &httparse::Request<'_, '_>,
    len: usize,
    limits: HeadLimits,
) -> Result<(usize, State), Refusal> {
    if req.path.map_or(0, str::len) > limits.max_uri {
        return Err(Refusal::UriTooLong);
    }
    if len > limits.max_head {
        return Err(Refusal::HeadersTooLarge);
    }
    let mut length = None;
    let mut lengths = 0;
    let mut encodings = 0;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            lengths += 1;
            length = Some(content_length(h.value).ok_or(Refusal::Framing)?);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            encodings += 1;
            if !trim(h.value).eq_ignore_ascii_case(b"chunked") {
                return Err(Refusal::Framing);
            }
        }
    }
    let next = match (lengths, encodings) {
        (0, 0) | (1, 0) => match length {
            Some(n) if n > 0 => State::Body(n),
            _ => State::Head,
        },
        // HTTP/1.0 has no chunked framing.
        (0, 1) if req.version == Some(1) => State::Chunked(Chunk::Size {
            digits: 0,
            value: 0,
        }),
        _ => return Err(Refusal::Framing),
    };
    Ok((len, next))
}

/// Plain decimal digits, nothing else (no sign, no list, no spaces inside).
fn content_length(v: &[u8]) -> Option<u64> {
    let v = trim(v);
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |e| e + 1);
    &v[start..end]
}

/// One byte of chunked framing outside chunk data. `None`: malformed;
/// `Some(None)`: the message ended with this byte.
fn step(c: Chunk, b: u8) -> Option<Option<Chunk>> {
    let next = match (c, b) {
        (Chunk::Size { digits, value }, _) if b.is_ascii_hexdigit() => {
            if digits >= 16 {
                return None;
            }
            let d = u64::from(char::from(b).to_digit(16)?);
            Chunk::Size {
                digits: digits + 1,
                value: value * 16 + d,
            }
        }
        (Chunk::Size { digits: 0, .. }, _) => return None,
        (Chunk::Size { value, .. }, b'\r') => Chunk::SizeLf {
            last: value == 0,
            value,
        },
        (Chunk::Size { value, .. }, b';' | b' ' | b'\t') => Chunk::Ext(value),
        (Chunk::Size { .. }, _) => return None,
        (Chunk::Ext(value), b'\r') => Chunk::SizeLf {
            last: value == 0,
            value,
        },
        (Chunk::Ext(_), b'\n') => return None,
        (Chunk::Ext(value), _) => Chunk::Ext(value),
        (Chunk::SizeLf { last: true, .. }, b'\n') => Chunk::TrailerStart,
        (Chunk::SizeLf { value, .. }, b'\n') => Chunk::Data(value),
        (Chunk::SizeLf { .. }, _) => return None,
        (Chunk::DataCr, b'\r') => Chunk::DataLf,
        (Chunk::DataLf, b'\n') => Chunk::Size {
            digits: 0,
            value: 0,
        },
        (Chunk::TrailerStart, b'\r') => Chunk::FinalLf,
        (Chunk::TrailerStart | Chunk::Trailer, b'\n') => return None,
        (Chunk::Trailer, b'\r') => Chunk::TrailerLf,
        (Chunk::TrailerStart | Chunk::Trailer, _) => Chunk::Trailer,
        (Chunk::TrailerLf, b'\n') => Chunk::TrailerStart,
        (Chunk::FinalLf, b'\n') => return Some(None),
        _ => return None,
    };
    Some(Some(next))
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.out.is_empty() {
                let n = this.out.len().min(buf.remaining());
                buf.put_slice(&this.out[..n]);
                this.out.advance(n);
                return Poll::Ready(Ok(()));
            }
            match this.state {
                // hyper answers the refusal and closes; nothing after it is read.
                State::Refused => return Poll::Pending,
                State::Broken => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "malformed chunked framing",
                    )));
                }
                _ => {}
            }
            if !this.pending.is_empty() && this.judge() {
                continue;
            }
            this.track_head_wait();
            this.pending.reserve(READ_CHUNK);
            let read = tokio_util::io::poll_read_buf(Pin::new(&mut this.io), cx, &mut this.pending);
            let n = match read {
                Poll::Pending => {
                    let owes = this.client_owes();
                    if !owes {
                        // Waiting on the upstream is not the client's idleness.
                        this.last_io = Instant::now();
                    }
                    this.poll_deadline(cx, owes)?;
                    return Poll::Pending;
                }
                Poll::Ready(r) => r?,
            };
            if n == 0 {
                // End of stream: whatever partial head is pending is dropped.
                return Poll::Ready(Ok(()));
            }
            this.last_io = Instant::now();
        }
    }
}

impl<IO> Guarded<IO> {
    /// After a write: progress resets the deadline; a client that does not
    /// take what is written to it is idle whatever else is in flight.
    fn wrote(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        // A response is going out: the wait for the next head starts again
        // once it is over.
        self.head_since = None;
        self.write_blocked = r.is_pending();
        match r {
            Poll::Pending => {
                self.poll_deadline(cx, true)?;
                Poll::Pending
            }
            Poll::Ready(r) => {
                self.last_io = Instant::now();
                Poll::Ready(r)
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, data);
        this.wrote(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.wrote(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    const LIMITS: HeadLimits = HeadLimits {
        max_head: 1024,
        max_headers: 8,
        max_uri: 256,
    };

    /// A guarded HTTP/1 connection with a 10 s idle deadline.
    fn guarded<IO>(io: IO, head: Duration, in_flight: Arc<AtomicUsize>) -> Guarded<IO> {
        let timeouts = Timeouts {
            idle: Duration::from_secs(10),
            head,
        };
        Guarded::new(io, true, LIMITS, "secret", timeouts, in_flight)
    }

    /// What hyper would read from `input`, fed in pieces of `piece` bytes.
    async fn through(input: &[u8], piece: usize) -> (Vec<u8>, bool) {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let input = input.to_vec();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for c in input.chunks(piece.max(1)) {
                client.write_all(c).await.unwrap();
            }
            client.shutdown().await.unwrap();
            client
        });
        let mut g = guarded(server, Duration::from_secs(5), Arc::default());
        let mut out = Vec::new();
        let mut buf = [0u8; 100];
        let mut failed = false;
        loop {
            match tokio::time::timeout(Duration::from_millis(200), g.read(&mut buf)).await {
                Ok(Ok(0)) | Err(_) => break,
                Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
                Ok(Err(_)) => {
                    failed = true;
                    break;
                }
            }
        }
        drop(writer.await.unwrap());
        (out, failed)
    }

    fn refused(out: &[u8], r: Refusal) -> bool {
        let s = String::from_utf8_lossy(out);
        s.ends_with(&format!("{REFUSED_HEADER}: secret {}\r\n\r\n", r.as_str()))
    }

    #[tokio::test]
    async fn well_formed_pipelines_pass_unchanged_in_any_split() {
        let input = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloPOST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nTrailer: t\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\n";
        for piece in [1, 2, 3, 7, 64, 4096] {
            let (out, failed) = through(input, piece).await;
            assert!(!failed, "piece {piece}");
            assert_eq!(out, input.to_vec(), "piece {piece}");
        }
    }

    #[tokio::test]
    async fn a_smuggled_head_after_a_good_request_is_refused() {
        let first = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        let mut input = first.clone();
        input.extend_from_slice(
            b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\n\r\n",
        );
        for piece in [1, 5, 4096] {
            let (out, _) = through(&input, piece).await;
            assert!(out.starts_with(&first));
            assert!(
                refused(&out[first.len()..], Refusal::Framing),
                "piece {piece}"
            );
            assert!(!String::from_utf8_lossy(&out).contains("/admin"));
        }
    }

    #[tokio::test]
    async fn framing_refusals() {
        for head in [
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 0x3\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length:\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            let (out, _) = through(head.as_bytes(), 4096).await;
            assert!(refused(&out, Refusal::Framing), "{head:?}");
        }
    }

    #[tokio::test]
    async fn malformed_and_oversized_heads() {
        let cases: Vec<(Vec<u8>, Refusal)> = vec![
            (
                b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n".to_vec(),
                Refusal::Malformed,
            ),
            (
                b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n".to_vec(),
                Refusal::Malformed,
            ),
            (
                b"GET / HTTP/1.1\r\nBad Name: a\r\n\r\n".to_vec(),
                Refusal::Malformed,
            ),
            (
                format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(300)).into_bytes(),
                Refusal::UriTooLong,
            ),
            (
                format!("GET /{}", "a".repeat(2000)).into_bytes(),
                Refusal::UriTooLong,
            ),
            (
                format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(2000)).into_bytes(),
                Refusal::HeadersTooLarge,
            ),
            (
                (String::from("GET / HTTP/1.1\r\n") + &"X: a\r\n".repeat(9) + "\r\n").into_bytes(),
                Refusal::HeadersTooLarge,
            ),
        ];
        for (input, want) in cases {
            let (out, _) = through(&input, 4096).await;
            assert!(refused(&out, want), "{:?}", String::from_utf8_lossy(&input));
        }
    }

    #[tokio::test]
    async fn broken_chunked_framing_fails_the_stream() {
        let input = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n";
        let (_, failed) = through(input, 4096).await;
        assert!(failed);
    }

    #[tokio::test]
    async fn h2c_preface_passes_through() {
        let mut input = H2_PREFACE.to_vec();
        input.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        let (out, failed) = through(&input, 3).await;
        assert!(!failed);
        assert_eq!(out, input);
    }

    /// A body can end while its last bytes still wait for the client to
    /// take them; hyper reads meanwhile to notice a client going away. That
    /// read is not a wait for the next head: a slow reader is bounded by
    /// the idle deadline, not cut off by the head one.
    #[tokio::test]
    async fn a_response_still_going_out_is_not_cut_by_the_head_deadline() {
        use tokio::io::AsyncWriteExt;
        let (mut client, server) = tokio::io::duplex(1024);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let mut g = guarded(server, Duration::from_millis(200), Arc::clone(&in_flight));
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        assert!(g.read(&mut buf).await.unwrap() > 0);
        in_flight.store(1, Ordering::Release);
        // More than the pipe holds; the client takes none of it yet.
        let response = vec![b'x'; 8192];
        let mut sent = 0;
        let blocked = tokio::time::timeout(Duration::from_millis(50), async {
            loop {
                sent += g.write(&response[sent..]).await.unwrap();
            }
        })
        .await;
        assert!(blocked.is_err() && sent < response.len());
        // The body has ended; its last bytes have not gone out.
        in_flight.store(0, Ordering::Release);
        let read = tokio::time::timeout(Duration::from_millis(700), g.read(&mut buf)).await;
        assert!(read.is_err(), "the read ended: {read:?}");
        // The client takes the response, all of it.
        let taker = tokio::spawn(async move {
            let mut got = 0;
            let mut b = [0u8; 4096];
            while got < 8192 {
                got += client.read(&mut b).await.unwrap();
            }
            (client, got)
        });
        g.write_all(&response[sent..]).await.unwrap();
        let (mut client, got) = taker.await.unwrap();
        assert_eq!(got, 8192);
        // Then the wait for the next head runs, and ends the connection.
        let start = std::time::Instant::now();
        let err = g.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(start.elapsed() < Duration::from_secs(2));
        client.shutdown().await.unwrap();
    }
}
