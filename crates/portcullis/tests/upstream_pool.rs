//! The gateway's connections to a URL upstream, seen from the upstream: a
//! kept-alive connection is used again, one the upstream closed is
//! replaced, and a request the upstream took and then dropped is answered
//! 502 without being sent twice.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/gateway.rs"]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use support::{Gateway, exchange, get, quickstart_copy};

/// How the upstream treats a connection.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Answers every request and keeps the connection.
    KeepAlive,
    /// Answers, then closes the connection without saying so.
    CloseAfterEach,
    /// Like `KeepAlive`, but the second request it receives (on whatever
    /// connection) is read and the connection closed with no answer.
    DropSecond,
    /// Like `KeepAlive`, but the first `n` requests are answered only once
    /// all `n` have arrived, so that they hold `n` connections at once.
    HoldFirst(usize),
}

/// A plain HTTP/1.1 upstream on a thread, counting connections and
/// requests. Each answer's body names the connection that served it.
struct Upstream {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

impl Upstream {
    fn start(mode: Mode) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (c, r) = (Arc::clone(&connections), Arc::clone(&requests));
        let held = match mode {
            Mode::HoldFirst(n) => n,
            _ => 1,
        };
        let barrier = Arc::new(std::sync::Barrier::new(held));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let n = c.fetch_add(1, Ordering::SeqCst);
                let r = Arc::clone(&r);
                let b = Arc::clone(&barrier);
                std::thread::spawn(move || serve(stream, n, mode, &r, &b));
            }
        });
        Upstream {
            addr,
            connections,
            requests,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn serve(
    stream: TcpStream,
    conn: usize,
    mode: Mode,
    requests: &AtomicUsize,
    barrier: &std::sync::Barrier,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        // A GET head, up to its blank line; end of stream ends the loop.
        let mut saw_line = false;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            saw_line = true;
        }
        if !saw_line {
            continue;
        }
        let nth = requests.fetch_add(1, Ordering::SeqCst) + 1;
        if mode == Mode::DropSecond && nth == 2 {
            return;
        }
        if let Mode::HoldFirst(n) = mode
            && nth <= n
        {
            barrier.wait();
        }
        let body = format!("conn {conn}");
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if out.write_all(answer.as_bytes()).is_err() || mode == Mode::CloseAfterEach {
            return;
        }
    }
}

fn gateway_for(up: &Upstream) -> (tempfile::TempDir, Gateway) {
    let (dir, config) = quickstart_copy(&format!(
        "[upstream]\nurl = \"http://{}\"\n\n[log]\ndecisions = \"off\"\n",
        up.addr
    ));
    (dir, Gateway::start(&config))
}

/// Twenty GETs on one client connection (so on one worker), one at a
/// time, each after the last one's answer; the last closes.
fn twenty_in_a_row(addr: SocketAddr) -> Vec<support::Reply> {
    let mut wire = String::new();
    for i in 0..20 {
        let close = if i == 19 { "Connection: close\r\n" } else { "" };
        wire.push_str(&format!(
            "GET /public/{i} HTTP/1.1\r\nHost: gateway.test\r\n{close}\r\n"
        ));
    }
    exchange(addr, wire.as_bytes()).0
}

#[test]
fn a_request_the_upstream_took_and_dropped_is_502_and_not_sent_again() {
    let up = Upstream::start(Mode::DropSecond);
    let (_d, gw) = gateway_for(&up);
    // Both on one client connection, so on one worker: the second goes out
    // on the first's pooled upstream connection. It has a body, so it is
    // not one the gateway may send twice (a bodiless GET would be).
    let (replies, _) = exchange(
        gw.addr,
        b"GET /public/a HTTP/1.1\r\nHost: gateway.test\r\n\r\n\
          GET /public/b HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: 3\r\n\r\npay",
    );
    assert_eq!(replies.len(), 2);
    assert_eq!(replies[0].status, 200);
    let r = &replies[1];
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (502, Some("BadGateway"))
    );
    assert_eq!(up.connections(), 1);
    // The upstream may have acted on it: it was not retried.
    assert_eq!(up.requests(), 2);
    // The broken connection is not used again.
    let r = get(gw.addr, "/public/c", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(up.requests(), 3);
}

#[test]
fn an_upstream_that_closes_after_each_answer_gets_a_new_connection_each_time() {
    let up = Upstream::start(Mode::CloseAfterEach);
    let (_d, gw) = gateway_for(&up);
    for i in 0..10 {
        let r = get(gw.addr, &format!("/public/{i}"), &[]);
        assert_eq!((i, r.status), (i, 200), "{}", r.text());
    }
    assert_eq!((up.requests(), up.connections()), (10, 10));
}

#[test]
fn a_kept_alive_upstream_connection_is_used_again() {
    let up = Upstream::start(Mode::KeepAlive);
    let (_d, gw) = gateway_for(&up);
    // Twenty requests on one client connection, so on one worker: one at a
    // time, each after the last one's answer.
    let replies = twenty_in_a_row(gw.addr);
    assert_eq!(replies.len(), 20);
    assert!(replies.iter().all(|r| r.status == 200));
    assert!(
        up.connections() == 1,
        "{} upstream connections for 20 requests: {:?}",
        up.connections(),
        replies.iter().map(|r| r.text()).collect::<Vec<_>>()
    );
    assert_eq!(up.requests(), 20);
}

#[test]
fn sequential_requests_stay_on_the_most_recently_used_upstream_connection() {
    const BURST: usize = 8;
    let up = Upstream::start(Mode::HoldFirst(BURST));
    let (_d, gw) = gateway_for(&up);
    // A burst that holds eight upstream connections at once, from client
    // connections spread over the workers: each worker pools several.
    let burst: Vec<_> = (0..BURST)
        .map(|i| {
            let addr = gw.addr;
            std::thread::spawn(move || get(addr, &format!("/public/burst{i}"), &[]).status)
        })
        .collect();
    for t in burst {
        assert_eq!(t.join().unwrap(), 200);
    }
    assert_eq!(up.connections(), BURST);
    // Then twenty, one after another on one client connection (one
    // worker): all on the connection that worker used last, not taken in
    // turn from its pool. The upstream keeps one connection warm.
    let replies = twenty_in_a_row(gw.addr);
    assert_eq!(replies.len(), 20);
    let used: std::collections::BTreeSet<String> = replies.iter().map(|r| r.text()).collect();
    assert_eq!(used.len(), 1, "upstream connections used in turn: {used:?}");
    assert_eq!(up.connections(), BURST);
}
