//! `portcullis ban list|add|remove`: the bans in force. With Redis as the
//! store ([rate_limit_store] redis) the command works on Redis directly, so
//! a ban applies to every instance at once. Without it, bans live in the
//! running gateway's memory, and the command asks its admin listener
//! ([server] admin_listen), which accepts changes from its own host only.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use portcullis_config::Loaded;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::now_ms;
use super::{FAILED, load, usage};
use crate::bans::{BanBook, manual_by, parse_target};
use crate::serve::admin::ban_json;
use crate::{BanAction, BanArgs};

pub fn run(args: &BanArgs) -> ExitCode {
    let Some(config) = &args.config else {
        return usage("give the configuration file with --config");
    };
    let loaded = match load(config) {
        Ok(l) => l,
        Err(code) => return code,
    };
    if loaded.engine.bans().is_none() {
        eprintln!(
            "error: bans are off in {}: add a [bans] table (docs/configuration.md#bans)",
            config.display()
        );
        return ExitCode::from(FAILED);
    }
    // Parse before reaching anything, so a typo changes nothing.
    let (key, duration) = match &args.action {
        BanAction::List => (None, None),
        BanAction::Add { target, r#for, .. } => {
            let d = match portcullis_config::duration::parse_millis(r#for) {
                Ok(ms) if ms > 0 => Duration::from_millis(ms),
                Ok(_) => return usage("--for must be longer than zero"),
                Err(e) => return usage(format!("--for {for:?}: {e}", r#for = r#for)),
            };
            match parse_target(target, loaded.engine.bans()) {
                Ok(k) => (Some(k), Some(d)),
                Err(e) => return usage(e),
            }
        }
        BanAction::Remove { target } => match parse_target(target, loaded.engine.bans()) {
            Ok(k) => (Some(k), None),
            Err(e) => return usage(e),
        },
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(FAILED);
        }
    };
    let result = rt.block_on(async {
        let book = BanBook::configured(&loaded.rate_limit_store, &loaded.ban_key_prefix)?;
        if book.is_shared() {
            direct(&book, args, key.as_deref(), duration).await
        } else {
            through_admin(&loaded, args, key.as_deref(), duration).await
        }
    });
    match result {
        Ok(out) => {
            print(&out, args.json);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(FAILED)
        }
    }
}

fn reason(args: &BanArgs) -> String {
    match &args.action {
        BanAction::Add { reason, .. } => manual_by(reason.as_deref()),
        _ => manual_by(None),
    }
}

/// On Redis, shared by every instance.
async fn direct(
    book: &BanBook,
    args: &BanArgs,
    key: Option<&str>,
    duration: Option<Duration>,
) -> Result<Value, String> {
    let now = now_ms();
    let e = |e: portcullis_limit::StoreError| format!("the ban store: {e}");
    Ok(match (&args.action, key, duration) {
        (BanAction::Add { .. }, Some(k), Some(d)) => {
            ban_json(&book.add(k, d, &reason(args), now).await.map_err(e)?, now)
        }
        (BanAction::Remove { .. }, Some(k), _) => {
            serde_json::json!({"key": k, "lifted": book.remove(k, now).await.map_err(e)?})
        }
        _ => serde_json::json!({
            "shared": true,
            "bans": book.list(now).await.map_err(e)?.iter().map(|b| ban_json(b, now)).collect::<Vec<_>>(),
        }),
    })
}

/// Through the running gateway's admin listener.
async fn through_admin(
    loaded: &Loaded,
    args: &BanArgs,
    key: Option<&str>,
    duration: Option<Duration>,
) -> Result<Value, String> {
    let Some(mut addr) = loaded.server.admin_listen else {
        return Err("bans are kept in the gateway's memory, and [server] admin_listen is not set, so nothing can reach them; set admin_listen, or keep bans in Redis with [rate_limit_store] redis".to_owned());
    };
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let (method, target) = match (&args.action, key, duration) {
        (BanAction::Add { r#for, reason, .. }, Some(k), Some(_)) => (
            "POST",
            format!(
                "/bans?key={}&for={}&reason={}",
                enc(k),
                enc(r#for),
                enc(reason.as_deref().unwrap_or(""))
            ),
        ),
        (BanAction::Remove { .. }, Some(k), _) => ("DELETE", format!("/bans?key={}", enc(k))),
        _ => ("GET", "/bans".to_owned()),
    };
    let (status, body) = exchange(addr, method, &target)
        .await
        .map_err(|e| format!("cannot reach the gateway's admin listener at {addr}: {e} (is `portcullis serve` running?)"))?;
    let v: Value = serde_json::from_str(&body).map_err(|_| {
        format!(
            "the admin listener at {addr} answered {status}: {}",
            body.trim()
        )
    })?;
    if status != 200 {
        return Err(format!(
            "the admin listener at {addr} refused ({status}): {}",
            v.get("message")
                .and_then(Value::as_str)
                .unwrap_or(body.trim())
        ));
    }
    Ok(v)
}

async fn exchange(addr: SocketAddr, method: &str, target: &str) -> std::io::Result<(u16, String)> {
    let io = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let req = format!(
            "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n{}: 1\r\n\r\n",
            crate::serve::admin::CHANGE_HEADER
        );
        s.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(5), io)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in 5 s"))??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_owned()))
}

fn print(v: &Value, json: bool) {
    if json {
        println!("{v:#}");
        return;
    }
    if let Some(list) = v.get("bans").and_then(Value::as_array) {
        if list.is_empty() {
            println!("no bans in force");
        }
        for b in list {
            println!("{}", line(b));
        }
    } else if let Some(lifted) = v.get("lifted").and_then(Value::as_bool) {
        let key = v.get("key").and_then(Value::as_str).unwrap_or("");
        println!(
            "{}",
            if lifted {
                format!("lifted the ban on {key}")
            } else {
                format!("{key} was not banned")
            }
        );
    } else {
        println!("banned {}", line(v));
    }
}

fn line(b: &Value) -> String {
    let s = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    format!(
        "{} until {} ({} s) by {}",
        s("key"),
        s("until"),
        b.get("seconds_left").and_then(Value::as_u64).unwrap_or(0),
        s("by")
    )
}
