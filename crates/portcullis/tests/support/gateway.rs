//! End-to-end scaffolding: the real `portcullis serve` process, an
//! in-process upstream that records everything it receives, and a raw
//! HTTP/1.1 client that sends exact bytes (ordinary clients would refuse or
//! normalise the malformed requests these tests need).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// What the upstream received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: HeaderMap,
    pub body_len: u64,
}

/// The recording upstream. `/slow/...` answers after 3 s; `/reset/...`
/// drops the connection without answering; `/big/...` streams 100 MiB;
/// anything else is 200.
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let record = Arc::clone(&record);
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let record = Arc::clone(&record);
                        async move { answer(req, &record).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Upstream { addr, seen }
    }

    /// Everything received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }
}

/// A body of `left` bytes, made as it is read.
struct Repeat {
    left: u64,
    chunk: Bytes,
}

impl hyper::body::Body for Repeat {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = self.left.min(self.chunk.len() as u64);
        self.left -= n;
        let data = self.chunk.slice(..n as usize);
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(data))))
    }
}

type TestBody = http_body_util::combinators::UnsyncBoxBody<Bytes, std::convert::Infallible>;

async fn answer(
    req: Request<Incoming>,
    record: &Mutex<Vec<Seen>>,
) -> Result<Response<TestBody>, std::io::Error> {
    let (parts, mut body) = req.into_parts();
    let mut body_len = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => body_len += f.data_ref().map_or(0, |d| d.len() as u64),
            Err(_) => break,
        }
    }
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    record.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        target: target.clone(),
        headers: parts.headers,
        body_len,
    });
    if target.starts_with("/slow") {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    if target.starts_with("/reset") {
        return Err(std::io::Error::other("reset"));
    }
    if target.starts_with("/big") {
        let body = Repeat {
            left: 100 << 20,
            chunk: Bytes::from(vec![b'b'; 1 << 20]),
        };
        return Ok(Response::new(body.boxed_unsync()));
    }
    let mut r = Response::new(
        Full::new(Bytes::from(format!(
            "upstream saw {target} ({body_len} bytes)"
        )))
        .boxed_unsync(),
    );
    r.headers_mut().insert("x-upstream", "yes".parse().unwrap());
    r.headers_mut()
        .insert("connection", "x-upstream-hop".parse().unwrap());
    r.headers_mut()
        .insert("x-upstream-hop", "1".parse().unwrap());
    Ok(r)
}

/// A running `portcullis serve`.
pub struct Gateway {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl Gateway {
    /// Start with `config`, listening on an ephemeral port.
    pub fn start(config: &Path) -> Gateway {
        Self::start_with(Command::new(env!("CARGO_BIN_EXE_portcullis")), config)
    }

    /// Start through `cmd` (e.g. `setpriv ... portcullis`).
    pub fn start_with(mut cmd: Command, config: &Path) -> Gateway {
        let mut child = cmd
            .args(["serve", "--config"])
            .arg(config)
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut admin = None;
        let mut said = Vec::new();
        let addr = loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("the gateway exited:\n{}", said.join("\n")))
                .unwrap();
            said.push(line.clone());
            if let Some(a) = line.strip_prefix("portcullis: admin on http://") {
                admin = Some(a.parse().unwrap());
            }
            if let Some(rest) = line.strip_prefix("portcullis: listening on ") {
                let a = rest.split("://").nth(1).unwrap();
                break a.parse().unwrap();
            }
            if line.starts_with("error") {
                panic!("the gateway did not start: {line}");
            }
        };
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let keep = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                keep.lock().unwrap().push(l);
            }
        });
        Gateway {
            child,
            addr,
            admin,
            stderr,
        }
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        for _ in 0..200 {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the gateway did not exit within 10 s of SIGTERM");
    }

    /// Peak resident memory so far, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        status_field(self.child.id(), "VmHWM:")
    }

    /// Resident memory now, in KiB.
    pub fn rss_kib(&self) -> u64 {
        status_field(self.child.id(), "VmRSS:")
    }
}

fn status_field(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response as read off the wire.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Send `bytes`, then read responses until the server closes the
/// connection. Returns the responses and whether the server closed it
/// (rather than the read timing out with the connection still open).
pub fn exchange(addr: SocketAddr, bytes: &[u8]) -> (Vec<Reply>, bool) {
    let (buf, closed) = exchange_bytes(addr, bytes);
    (parse_replies(&buf, false), closed)
}

/// [`exchange`] from a chosen source address on loopback (127.0.0.2 and
/// so on), to play a proxy at another address.
pub fn exchange_from(source: &str, addr: SocketAddr, bytes: &[u8]) -> (Vec<Reply>, bool) {
    let (buf, closed) = exchange_bytes_from(source, addr, bytes);
    (parse_replies(&buf, false), closed)
}

fn exchange_bytes_from(source: &str, addr: SocketAddr, bytes: &[u8]) -> (Vec<u8>, bool) {
    if source == "127.0.0.1" {
        return exchange_bytes(addr, bytes);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stream = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        socket.connect(addr).await.unwrap().into_std().unwrap()
    });
    stream.set_nonblocking(false).unwrap();
    exchange_on(stream, bytes)
}

fn exchange_bytes(addr: SocketAddr, bytes: &[u8]) -> (Vec<u8>, bool) {
    exchange_on(TcpStream::connect(addr).unwrap(), bytes)
}

fn exchange_on(mut s: TcpStream, bytes: &[u8]) -> (Vec<u8>, bool) {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(bytes);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    let closed = loop {
        match s.read(&mut chunk) {
            Ok(0) => break true,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                break false;
            }
            Err(_) => break true,
        }
    };
    (buf, closed)
}

/// One request with `Connection: close`; the one response.
pub fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    request(addr, "GET", path, headers, b"")
}

/// One request with a body and `Connection: close`.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    request_from("127.0.0.1", addr, method, path, headers, body)
}

/// [`request`] from a chosen loopback source address.
pub fn request_from(
    source: &str,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    let (buf, _) = exchange_bytes_from(source, addr, &bytes);
    let mut replies = parse_replies(&buf, method == "HEAD");
    assert_eq!(replies.len(), 1, "{method} {path}: {replies:?}");
    replies.remove(0)
}

fn parse_replies(mut buf: &[u8], head: bool) -> Vec<Reply> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let mut hs = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut hs);
        let Ok(httparse::Status::Complete(n)) = r.parse(buf) else {
            panic!("unparseable response: {:?}", String::from_utf8_lossy(buf));
        };
        let headers: Vec<(String, String)> = r
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        let status = r.code.unwrap();
        let bodiless = head || status == 304 || status == 204;
        let len: usize = if bodiless { 0 } else { headers_len(&headers) };
        let body = buf[n..n + len].to_vec();
        buf = &buf[n + len..];
        out.push(Reply {
            status,
            headers,
            body,
        });
    }
    out
}

fn headers_len(headers: &[(String, String)]) -> usize {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.parse().unwrap())
}

/// A copy of the quickstart folder in a temporary folder, with its
/// `[upstream]` and `[log]` replaced by `upstream_and_log` (TOML).
pub fn quickstart_copy(upstream_and_log: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart");
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
        }
    }
    let config = dir.path().join("portcullis.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let start = text.find("[upstream]").unwrap();
    // The upstream and log sections end where the network lists begin.
    let end = text
        .find("[ip_lists")
        .or_else(|| text.find("[authentication]"))
        .unwrap();
    let text = format!("{}{upstream_and_log}\n\n{}", &text[..start], &text[end..]);
    // The quickstart's fixed admin port would collide between tests; a
    // test that wants the admin listener adds its own.
    let text = text.replace("admin_listen = \"127.0.0.1:9090\"\n", "");
    // Its ban rule too: tests that want bans declare their own, and one
    // left in would ban the loopback clients of every other test.
    let bans = text.find("[bans]").unwrap();
    let after = bans + text[bans..].find("\n\n#").unwrap() + 2;
    let text = format!("{}{}", &text[..bans], &text[after..]);
    std::fs::write(&config, text).unwrap();
    (dir, config)
}

/// A loopback port nothing listens on now.
pub fn spare_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A token from the quickstart's key.
pub fn token(config: &Path, sub: &str, roles: &[&str], scopes: &[&str]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    cmd.args(["token", "--config"])
        .arg(config)
        .args(["--sub", sub]);
    for r in roles {
        cmd.args(["--role", r]);
    }
    for s in scopes {
        cmd.args(["--scope", s]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}
