//! Rate limits shared through Redis, end to end: two gateway processes
//! enforce one limit exactly, and a Redis that goes away mid-load makes
//! each limit follow its mode until it comes back. The first test uses the
//! server at 127.0.0.1:6379 (`.ci/run` starts it); the fault test starts
//! and stops its own `redis-server` on a spare port.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/gateway.rs"]
mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{Gateway, get, quickstart_copy, spare_port};

fn unique(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("portcullis-test:{test}:{}:{nanos}:", std::process::id())
}

/// The quickstart with `store` as its `[rate_limit_store]` and `limits`
/// (TOML) appended.
fn config(store: &str, limits: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let (dir, config) = quickstart_copy("[upstream]\necho = true\n\n[log]\ndecisions = \"off\"\n");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{text}\n[rate_limit_store]\n{store}\n\n{limits}\n"),
    )
    .unwrap();
    (dir, config)
}

#[test]
fn two_gateways_sharing_redis_enforce_one_limit_exactly() {
    let store = format!(
        "redis = \"redis://127.0.0.1:6379/\"\nkey_prefix = \"{}\"",
        unique("pair")
    );
    // The quickstart's /public/limited: 5 a minute per client address.
    let (_d, config) = config(&store, "");
    let a = Gateway::start(&config);
    let b = Gateway::start(&config);
    let mut passed = 0;
    for i in 0..20 {
        let gw = if i % 2 == 0 { &a } else { &b };
        let r = get(gw.addr, "/public/limited", &[]);
        match r.status {
            200 => passed += 1,
            429 => assert_eq!(r.json()["error"], "RateLimited"),
            s => panic!("unexpected {s}: {}", r.text()),
        }
    }
    assert_eq!(passed, 5, "two instances let {passed} through a limit of 5");
}

struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed for this test");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Redis { child, port }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn when_redis_goes_away_each_limit_follows_its_mode_and_recovers() {
    let mut redis = Redis::start(spare_port());
    let store = format!(
        "redis = \"redis://127.0.0.1:{}/\"\ntimeout = \"200ms\"\nkey_prefix = \"{}\"",
        redis.port,
        unique("fault")
    );
    // The public area fails open; /public/limited fails closed.
    let limits = "[rate_limits.open]\nlimit = 1000\nperiod = \"1m\"\nkey = [\"ip\"]\n";
    let (_d, config) = config(&store, limits);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replacen(
            "key = [\"ip\"]\n",
            "key = [\"ip\"]\non_store_error = \"closed\"\n",
            1,
        )
        .replacen(
            "path = \"/public/{*path}\"\nauth = \"off\"\n",
            "path = \"/public/{*path}\"\nauth = \"off\"\nrate_limits = [\"open\"]\n",
            1,
        )
        .replacen(
            "[server]\n",
            "[server]\nadmin_listen = \"127.0.0.1:0\"\n",
            1,
        );
    assert!(
        text.contains("on_store_error = \"closed\"") && text.contains("rate_limits = [\"open\"]")
    );
    std::fs::write(&config, text).unwrap();
    let gw = Gateway::start(&config);

    assert_eq!(get(gw.addr, "/public/x", &[]).status, 200);
    assert_eq!(get(gw.addr, "/public/limited", &[]).status, 200);

    redis.stop();
    let open = get(gw.addr, "/public/x", &[]);
    assert_eq!(open.status, 200, "fail-open: {}", open.text());
    // Letting it through is counted, so the outage shows in /metrics.
    let metrics = get(gw.admin.unwrap(), "/metrics", &[]).text();
    let errors: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("portcullis_rate_limit_store_errors_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(errors >= 1, "{metrics}");
    let closed = get(gw.addr, "/public/limited", &[]);
    assert_eq!(
        (closed.status, closed.json()["error"].as_str()),
        (503, Some("RateLimiterUnavailable"))
    );
    let started = Instant::now();
    assert_eq!(get(gw.addr, "/public/limited", &[]).status, 503);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a down store must not stall requests"
    );

    // Back on the same port: the gateway uses it again without a restart.
    let _redis = Redis::start(redis.port);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = get(gw.addr, "/public/limited", &[]);
        if r.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {} after redis came back",
            r.status
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
