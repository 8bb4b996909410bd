//! The benchmark's upstream: answers every request with `200 OK` and a
//! 13-byte body, over HTTP/1.1 keep-alive, as fast as hyper can. Every
//! scenario of `bench/run.py` ends here, so the differences between them
//! are what sits in front.
//!
//! Usage: bench-upstream [ADDR]   (default 127.0.0.1:18080)

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const BODY: &[u8] = b"hello, bench\n";

async fn answer(_: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut r = Response::new(Full::new(Bytes::from_static(BODY)));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    Ok(r)
}

fn main() -> std::process::ExitCode {
    let addr: SocketAddr = match std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18080".to_owned())
        .parse()
    {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: the address: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot listen on {addr}: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        eprintln!("bench-upstream: listening on http://{addr}");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(answer))
                    .await;
            });
        }
    })
}
