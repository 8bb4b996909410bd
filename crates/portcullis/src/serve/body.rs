//! Body types of the server: one boxed type for every response, a file
//! streamed in chunks, and a request body that stops at the route's limit.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::AsyncReadExt;

/// Errors inside bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every response body.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A body of these bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|e| match e {})
        .boxed_unsync()
}

/// No body.
pub fn empty() -> Body {
    Empty::new().map_err(|e| match e {}).boxed_unsync()
}

const CHUNK: usize = 64 * 1024;

/// `len` bytes of a file (already positioned), read as the client takes them.
#[derive(Debug)]
pub struct FileBody {
    file: tokio::fs::File,
    remaining: u64,
    buf: BytesMut,
}

impl FileBody {
    /// Stream `len` bytes from the file's current position.
    pub fn new(file: tokio::fs::File, len: u64) -> Self {
        FileBody {
            file,
            remaining: len,
            buf: BytesMut::new(),
        }
    }
}

impl HttpBody for FileBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let want = usize::try_from(this.remaining).unwrap_or(CHUNK).min(CHUNK);
        this.buf.reserve(want);
        let mut limited = (&mut this.file).take(want as u64);
        let n = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut limited),
            cx,
            &mut this.buf
        ))?;
        if n == 0 {
            return Poll::Ready(Some(Err("the file ended early".into())));
        }
        this.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(this.buf.split().freeze()))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// The error a [`Capped`] body ends with past its limit.
#[derive(Debug)]
pub struct TooLarge;

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body is over the limit")
    }
}

impl std::error::Error for TooLarge {}

/// What the server learns about a request body as it streams.
#[derive(Debug, Default)]
pub struct BodyWatch {
    /// The body went over its limit.
    pub tripped: AtomicBool,
    /// The body ended.
    pub ended: AtomicBool,
    /// Frames read so far (progress, for the upstream deadline).
    pub frames: std::sync::atomic::AtomicU64,
}

/// A request body that fails once more than `limit` bytes arrive, and
/// reports through a [`BodyWatch`] when it trips and when it ends, so the
/// caller can answer 413 whatever error the upstream client reports, and
/// start the upstream's response timeout only once the upload is over.
#[derive(Debug)]
pub struct Capped<B> {
    inner: B,
    left: u64,
    watch: Arc<BodyWatch>,
}

impl<B: HttpBody> Capped<B> {
    /// Cap `inner` at `limit` bytes.
    pub fn new(inner: B, limit: u64, watch: Arc<BodyWatch>) -> Self {
        let c = Capped {
            inner,
            left: limit,
            watch,
        };
        c.check_end();
        c
    }

    fn check_end(&self) {
        if self.inner.is_end_stream() {
            self.watch.ended.store(true, Ordering::Release);
        }
    }
}

impl<B> HttpBody for Capped<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            None => {
                this.watch.ended.store(true, Ordering::Release);
                Poll::Ready(None)
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e.into()))),
            Some(Ok(frame)) => {
                let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                if n > this.left {
                    this.watch.tripped.store(true, Ordering::Relaxed);
                    return Poll::Ready(Some(Err(Box::new(TooLarge))));
                }
                this.left -= n;
                this.watch.frames.fetch_add(1, Ordering::Relaxed);
                this.check_end();
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether a read of the body is still owed: a request whose body the
/// server did not read must not leave its bytes for the next request.
pub fn has_body(b: &impl HttpBody) -> bool {
    !b.is_end_stream()
}

/// A response body that holds its connection's in-flight count up until it
/// is finished or dropped (see the idle deadline in `guard.rs`).
#[derive(Debug)]
pub struct InFlight {
    inner: Body,
    count: Arc<AtomicUsize>,
}

impl InFlight {
    /// Count one request in flight until `inner` is dropped.
    pub fn new(inner: Body, count: Arc<AtomicUsize>) -> Self {
        InFlight { inner, count }
    }

    /// Count a request before its response exists.
    pub fn enter(count: &AtomicUsize) {
        count.fetch_add(1, Ordering::AcqRel);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

impl HttpBody for InFlight {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
