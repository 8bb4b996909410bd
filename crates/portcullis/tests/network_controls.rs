//! Country rules and timed bans, as an operator meets them: through
//! `check`, `explain`, `ban` and a running gateway with a recording
//! upstream. The country databases are built here (support/mmdb.rs).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/mmdb.rs"]
mod mmdb;
#[path = "support/gateway.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use support::{Gateway, Upstream, quickstart_copy, request_from, spare_port};

/// 192.0.2.0/24 is France, 198.51.100.0/24 and 2001:db8:1::/48 Russia,
/// 2001:db8:2::/48 Germany; everything else has no country.
const COUNTRIES: &[(&str, &str)] = &[
    ("192.0.2.0/24", "FR"),
    ("198.51.100.0/24", "RU"),
    ("2001:db8:1::/48", "RU"),
    ("2001:db8:2::/48", "DE"),
];

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

/// The quickstart with the country database, `network` added to its
/// `[network]` table and `extra` appended.
fn geo_config(upstream_and_log: &str, network: &str, extra: &str) -> (tempfile::TempDir, PathBuf) {
    let (dir, config) = quickstart_copy(upstream_and_log);
    std::fs::write(
        dir.path().join("countries.mmdb"),
        mmdb::country_db(COUNTRIES),
    )
    .unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    let marker = "[network]\ndeny = [\"blocked\"]\n";
    assert!(text.contains(marker));
    let text = text.replace(marker, &format!("{marker}{network}\n"));
    std::fs::write(
        &config,
        format!("[geoip]\ndatabase = \"countries.mmdb\"\n\n{text}\n{extra}\n"),
    )
    .unwrap();
    (dir, config)
}

fn offline() -> &'static str {
    "[upstream]\necho = true\n\n[log]\ndecisions = \"off\"\n"
}

fn explain(config: &Path, ip: &str, path: &str, headers: &[&str]) -> Value {
    let c = config.display().to_string();
    let mut args = vec![
        "explain", "--config", &c, "--format", "json", "--ip", ip, "--path", path,
    ];
    for h in headers {
        args.extend_from_slice(&["-H", h]);
    }
    let o = run(&args);
    assert!(o.status.success(), "{}", text(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn verdict(v: &Value) -> (Value, Value, Value) {
    (
        v["status"].clone(),
        v["error"].clone(),
        v["policies"].clone(),
    )
}

#[test]
fn country_deny_rules_refuse_on_ipv4_and_ipv6_and_unknown_passes() {
    let (_d, config) = geo_config(offline(), "deny_countries = [\"RU\"]", "");
    for ip in ["198.51.100.7", "2001:db8:1::5", "::ffff:198.51.100.7"] {
        let v = explain(&config, ip, "/public/hello", &[]);
        assert_eq!(
            verdict(&v),
            (
                403.into(),
                "GeoBlocked".into(),
                serde_json::json!(["country:RU"])
            ),
            "{ip}: {v:#}"
        );
        assert_eq!(v["stage"], "network");
        assert_eq!(v["country"], "RU");
        assert!(v["hint"].as_str().unwrap().contains("country RU"), "{v:#}");
    }
    for (ip, country) in [
        ("192.0.2.1", Value::from("FR")),
        ("2001:db8:2::1", "DE".into()),
        ("10.1.2.3", Value::Null),
    ] {
        let v = explain(&config, ip, "/public/hello", &[]);
        assert_eq!(v["decision"], "allow", "{ip}: {v:#}");
        assert_eq!(v["country"], country, "{ip}");
    }
}

#[test]
fn the_country_is_the_resolved_clients_not_the_proxys() {
    let (_d, config) = geo_config(offline(), "deny_countries = [\"RU\"]", "");
    // 127.0.0.2 is the quickstart's trusted proxy: its header is believed.
    let v = explain(
        &config,
        "127.0.0.2",
        "/public/hello",
        &["X-Forwarded-For: 198.51.100.7"],
    );
    assert_eq!(v["error"], "GeoBlocked", "{v:#}");
    // From anyone else, the header is ignored and the peer has no country.
    let v = explain(
        &config,
        "127.0.0.1",
        "/public/hello",
        &["X-Forwarded-For: 198.51.100.7"],
    );
    assert_eq!(v["decision"], "allow", "{v:#}");
}

#[test]
fn a_routes_allow_list_refuses_other_and_unknown_countries() {
    let (dir, config) = geo_config(offline(), "", "");
    let text = std::fs::read_to_string(&config).unwrap();
    let route = "name = \"public\"\nmethods = [\"GET\"]\n";
    assert!(text.contains(route));
    std::fs::write(
        &config,
        text.replace(
            route,
            &format!("{route}allow_countries = [\"fr\"]\ncountry_message = \"France only.\"\n"),
        ),
    )
    .unwrap();
    let v = explain(&config, "192.0.2.1", "/public/hello", &[]);
    assert_eq!(v["decision"], "allow", "{v:#}");
    for (ip, rule) in [
        ("2001:db8:2::1", "country:DE"),
        ("10.1.2.3", "country:unknown"),
        ("2001:db8:ffff::1", "country:unknown"),
    ] {
        let v = explain(&config, ip, "/public/hello", &[]);
        assert_eq!(
            verdict(&v),
            (403.into(), "GeoBlocked".into(), serde_json::json!([rule])),
            "{ip}: {v:#}"
        );
        assert_eq!(v["message"], "France only.");
    }
    // Other routes are not the public route's business.
    let v = explain(&config, "10.1.2.3", "/users/alice", &[]);
    assert_eq!(v["error"], "AuthenticationRequired", "{v:#}");
    drop(dir);
}

#[test]
fn policies_read_the_country_from_the_context() {
    let (dir, config) = geo_config(offline(), "", "");
    let policies = dir.path().join("policies.cedar");
    let mut p = std::fs::read_to_string(&policies).unwrap();
    p.push_str("\n@id(\"no-public-from-de\")\n@error(\"RegionRestricted\")\nforbid (principal, action == Action::\"readPublic\", resource)\nwhen { context.country == \"DE\" };\n");
    std::fs::write(&policies, p).unwrap();
    let v = explain(&config, "2001:db8:2::7", "/public/hello", &[]);
    assert_eq!(
        verdict(&v),
        (
            403.into(),
            "RegionRestricted".into(),
            serde_json::json!(["no-public-from-de"])
        ),
        "{v:#}"
    );
    assert_eq!(
        explain(&config, "192.0.2.7", "/public/hello", &[])["decision"],
        "allow"
    );
}

#[test]
fn bad_country_settings_fail_the_load_with_the_line() {
    // Rules without a database.
    let (dir, config) = quickstart_copy(offline());
    let original = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        original.replace(
            "deny = [\"blocked\"]\n",
            "deny = [\"blocked\"]\ndeny_countries = [\"RU\", \"XYZ\"]\n",
        ),
    )
    .unwrap();
    let o = run(&["check", "--config", &config.display().to_string()]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains("country rules need a country database"),
        "{err}"
    );
    let at = at_line(&config, "deny_countries");
    assert!(err.contains(&at), "{at} in {err}");
    drop(dir);

    // A bad code and a bad unknown_country.
    let (_d, config) = geo_config(
        offline(),
        "deny_countries = [\"XYZ\"]\nunknown_country = \"maybe\"",
        "",
    );
    let o = run(&["check", "--config", &config.display().to_string()]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(err.contains("\"XYZ\" is not a country code"), "{err}");
    assert!(
        err.contains("\"maybe\": use \"allow\" or \"deny\""),
        "{err}"
    );
    for key in ["deny_countries", "unknown_country"] {
        let at = at_line(&config, key);
        assert!(err.contains(&at), "{at} in {err}");
    }

    // A file that is not a database.
    let (dir, config) = geo_config(offline(), "deny_countries = [\"RU\"]", "");
    let db = dir.path().join("countries.mmdb");
    let mut bytes = std::fs::read(&db).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&db, bytes).unwrap();
    let o = run(&["check", "--config", &config.display().to_string()]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains("countries.mmdb is not a valid MaxMind DB file"),
        "{err}"
    );
    assert!(err.contains("portcullis.toml:2"), "{err}");
    // Said once, not again by every gate that has country rules.
    assert!(!err.contains("country rules need"), "{err}");

    // A message with nothing to say it for.
    let (_d, config) = geo_config(offline(), "country_message = \"No.\"", "");
    let o = run(&["check", "--config", &config.display().to_string()]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(err.contains("country_message is set, but there are no country rules for it"));
    let at = at_line(&config, "[network]");
    assert!(err.contains(&at), "{at} in {err}");
}

const BAN_RULE: &str = "[bans]\nmessage = \"Too many failed requests; try again later.\"\n\n[bans.rules.auth-failures]\nstatuses = [401, 403]\nmore_than = 3\nwithin = \"1m\"\nban_for = \"10m\"\n";

fn ban(config: &Path, args: &[&str]) -> Output {
    let c = config.display().to_string();
    let mut all = vec!["ban"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--config", &c]);
    run(&all)
}

#[test]
fn repeated_refusals_start_a_ban_that_refuses_until_it_ends() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let upstream = rt.block_on(Upstream::start());
    let admin = spare_port();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("decisions.log");
    let (_d, config) = geo_config(
        &format!(
            "[upstream]\nurl = \"http://{}\"\n\n[log]\ndecisions = \"{}\"\n",
            upstream.addr,
            log.display()
        ),
        "deny_countries = [\"RU\"]",
        BAN_RULE,
    );
    let text0 = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text0.replace(
            "[server]\n",
            &format!("[server]\nadmin_listen = \"127.0.0.1:{admin}\"\n"),
        ),
    )
    .unwrap();
    let gw = Gateway::start(&config);

    // Country rules over the wire: the trusted proxy relays a Russian client.
    let r = request_from(
        "127.0.0.2",
        gw.addr,
        "GET",
        "/public/hello",
        &[("X-Forwarded-For", "198.51.100.7")],
        b"",
    );
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (403, "GeoBlocked".into())
    );

    // Three refusals are strikes; the fourth is one too many.
    for i in 0..4 {
        let r = request_from("127.0.0.5", gw.addr, "GET", "/users/alice", &[], b"");
        assert_eq!(r.status, 401, "strike {i}");
    }
    upstream.clear();
    for path in ["/public/hello", "/users/alice"] {
        let r = request_from("127.0.0.5", gw.addr, "GET", path, &[], b"");
        assert_eq!(r.status, 403, "{path}: {}", r.text());
        let body = r.json();
        assert_eq!(body["error"], "Banned");
        assert_eq!(
            body["message"],
            "Too many failed requests; try again later."
        );
        let expires = body["expires"].as_str().unwrap();
        assert!(expires.ends_with('Z') && expires.len() == 24, "{expires}");
        let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((595..=600).contains(&wait), "{wait}");
    }
    assert!(
        upstream.seen().is_empty(),
        "a banned client reached the upstream"
    );
    // Someone else is not banned.
    let r = request_from("127.0.0.6", gw.addr, "GET", "/public/hello", &[], b"");
    assert_eq!(r.status, 200);

    // The operator's view: the log line of the fourth strike says it
    // started the ban; `ban list` shows it; `ban remove` lifts it.
    // The log is written in batches, at most a few milliseconds behind.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let lines: Vec<Value> = loop {
        let lines: Vec<Value> = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= 8 || std::time::Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let started: Vec<&Value> = lines
        .iter()
        .filter(|l| l.get("bans_started").is_some())
        .collect();
    assert_eq!(started.len(), 1, "{lines:#?}");
    assert_eq!(started[0]["bans_started"][0]["key"], "ip:127.0.0.5");
    assert_eq!(started[0]["bans_started"][0]["rule"], "auth-failures");
    let banned: Vec<&Value> = lines.iter().filter(|l| l["error"] == "Banned").collect();
    assert_eq!(banned.len(), 2);
    assert_eq!(banned[0]["stage"], "network");
    assert_eq!(
        banned[0]["policies"],
        serde_json::json!(["ban:auth-failures"])
    );
    assert!(
        banned[0]["hint"]
            .as_str()
            .unwrap()
            .contains("portcullis ban remove ip:127.0.0.5")
    );
    let geo = lines.iter().find(|l| l["error"] == "GeoBlocked").unwrap();
    assert_eq!(geo["country"], "RU");

    // While banned, nothing else counts: not the rate limits of stage 4,
    // and not the ban's own refusals as strikes.
    for _ in 0..7 {
        let r = request_from("127.0.0.5", gw.addr, "GET", "/public/limited", &[], b"");
        assert_eq!(r.json()["error"], "Banned");
    }
    let o = ban(&config, &["list"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let listed = text(&o.stdout);
    assert!(
        listed.starts_with("ip:127.0.0.5 until ") && listed.contains("by auth-failures"),
        "{listed}"
    );
    let o = ban(&config, &["remove", "127.0.0.5"]);
    assert_eq!(
        text(&o.stdout).trim(),
        "lifted the ban on ip:127.0.0.5",
        "{}",
        text(&o.stderr)
    );
    assert_eq!(
        request_from("127.0.0.5", gw.addr, "GET", "/public/hello", &[], b"").status,
        200
    );
    for _ in 0..5 {
        let r = request_from("127.0.0.5", gw.addr, "GET", "/public/limited", &[], b"");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    for _ in 0..3 {
        let r = request_from("127.0.0.5", gw.addr, "GET", "/users/alice", &[], b"");
        assert_eq!(r.status, 401);
    }
    let r = request_from("127.0.0.5", gw.addr, "GET", "/public/hello", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());

    // A ban by hand, with a reason, and its bad inputs.
    let o = ban(
        &config,
        &[
            "add",
            "127.0.0.6",
            "--for",
            "5m",
            "--reason",
            "abuse report 42",
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let r = request_from("127.0.0.6", gw.addr, "GET", "/public/hello", &[], b"");
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (403, "Banned".into())
    );
    let o = ban(&config, &["--json", "list"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["bans"][0]["by"], "manual: abuse report 42");
    assert_eq!(v["shared"], false);
    // A change without the admin header (what a web page could send) is
    // refused and changes nothing.
    let admin_addr: std::net::SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    let r = support::request(admin_addr, "DELETE", "/bans?key=127.0.0.6", &[], b"");
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (403, "AdminHeaderMissing".into())
    );
    // Nor from a page whose name was rebound to this host: same-origin, it
    // can send the header, but the browser names where it comes from.
    for page in [
        ("Origin", "http://rebound.example:9090"),
        ("Sec-Fetch-Site", "same-origin"),
    ] {
        let r = support::request(
            admin_addr,
            "DELETE",
            "/bans?key=127.0.0.6",
            &[("X-Portcullis-Admin", "1"), page],
            b"",
        );
        assert_eq!(
            (r.status, r.json()["error"].clone()),
            (403, "AdminFromBrowser".into()),
            "{page:?}"
        );
    }
    let r = request_from("127.0.0.6", gw.addr, "GET", "/public/hello", &[], b"");
    assert_eq!(r.json()["error"], "Banned");
    for bad in [
        vec!["add", "127.0.0.300", "--for", "5m"],
        vec!["add", "10.0.0.0/8", "--for", "5m"],
        vec!["add", "127.0.0.7", "--for", "soon"],
    ] {
        let o = ban(&config, &bad);
        assert_eq!(o.status.code(), Some(2), "{bad:?}");
        assert!(text(&o.stderr).starts_with("error: "), "{bad:?}");
    }
    drop(gw);
}

#[test]
fn bans_shared_through_redis_hold_on_every_instance() {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let store = format!(
        "[rate_limit_store]\nredis = \"redis://127.0.0.1:6379/\"\nkey_prefix = \"portcullis-test:rl:{nanos}:\"\n"
    );
    let bans = BAN_RULE.replace(
        "[bans]\n",
        &format!("[bans]\nkey_prefix = \"portcullis-test:ban:{nanos}:\"\n"),
    );
    let (_d, config) = geo_config(offline(), "", &format!("{store}\n{bans}"));
    let a = Gateway::start(&config);
    let b = Gateway::start(&config);
    // Strikes on both instances count together: 2 + 2 is more than 3.
    for gw in [&a, &b, &a, &b] {
        assert_eq!(
            request_from("127.0.0.9", gw.addr, "GET", "/users/alice", &[], b"").status,
            401
        );
    }
    for gw in [&a, &b] {
        let r = request_from("127.0.0.9", gw.addr, "GET", "/public/hello", &[], b"");
        assert_eq!(
            (r.status, r.json()["error"].clone()),
            (403, "Banned".into())
        );
    }
    // `ban` works on Redis itself, and so on both at once.
    let o = ban(&config, &["--json", "list"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["shared"], true);
    assert_eq!(v["bans"][0]["key"], "ip:127.0.0.9");
    let o = ban(&config, &["remove", "ip:127.0.0.9"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    for gw in [&a, &b] {
        assert_eq!(
            request_from("127.0.0.9", gw.addr, "GET", "/public/hello", &[], b"").status,
            200
        );
    }
    // explain asks Redis too, so a ban in force shows offline.
    let o = ban(&config, &["add", "2001:db8:2::1", "--for", "1h"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v = explain(&config, "2001:db8:2::1", "/public/hello", &[]);
    assert_eq!(
        verdict(&v),
        (
            403.into(),
            "Banned".into(),
            serde_json::json!(["ban:manual"])
        ),
        "{v:#}"
    );
    // The trace ends with the ban, explained by the ban; the engine's own
    // network step before it passed.
    let trace = v["trace"].as_array().unwrap();
    let last = trace.last().unwrap();
    assert_eq!(
        (&last["stage"], &last["outcome"]),
        (&"network".into(), &"deny".into())
    );
    assert!(
        last["detail"]
            .as_str()
            .unwrap()
            .contains("is banned under key ip:2001:db8:2::1"),
        "{last}"
    );
    assert_eq!(
        trace[2]["detail"],
        "client 2001:db8:2::1 (country DE) passed the network gates"
    );
    // explain's clock is in whole seconds: up to one more second left.
    let wait: u64 = v["response"]["headers"]["retry-after"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((3599..=3601).contains(&wait), "{wait}");
}

#[test]
fn bad_ban_settings_fail_the_load() {
    let rule = "[bans]\non_store_error = \"sometimes\"\n\n[bans.rules.x]\nstatuses = [200]\nmore_than = 3\nwithin = \"0s\"\nban_for = \"10m\"\nkey = \"subject\"\nroutes = [\"nope\"]\n";
    let (_d, config) = quickstart_copy(offline());
    let text0 = std::fs::read_to_string(&config).unwrap();
    // The quickstart with `rule` appended fails `check`, naming each of `wants`.
    let fails_with = |rule: &str, wants: &[&str]| {
        std::fs::write(&config, format!("{text0}\n{rule}")).unwrap();
        let o = run(&["check", "--config", &config.display().to_string()]);
        assert_eq!(o.status.code(), Some(1));
        let err = text(&o.stderr);
        for want in wants {
            assert!(err.contains(want), "missing {want:?} in:\n{err}");
        }
    };
    fails_with(
        rule,
        &[
            "200 is not an error status",
            "must be longer than zero",
            "\"subject\" is not a ban key",
            "no route is named \"nope\"",
            "\"sometimes\": use \"open\" or \"closed\"",
        ],
    );
    // Names kept for bans by hand, a /0 ban, and a Redis prefix for bans
    // kept in memory.
    fails_with(
        "[bans]\nkey_prefix = \"x:\"\n\n[bans.rules.manual-review]\nstatuses = [401]\nmore_than = 3\nwithin = \"1m\"\nban_for = \"10m\"\nkey = \"ip_prefix\"\nipv4_prefix = 0\n",
        &[
            "names starting with \"manual\" are kept for bans added by hand",
            "a prefix length of 0 would ban every client",
            "[bans] key_prefix names Redis keys, but bans are kept in memory",
        ],
    );
    // Without [bans], `ban` says bans are off.
    std::fs::write(&config, &text0).unwrap();
    let o = ban(&config, &["list"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("bans are off in"),
        "{}",
        text(&o.stderr)
    );
}

/// `portcullis.toml:N:` for the first line of `config` that starts with `key`.
fn at_line(config: &Path, key: &str) -> String {
    let text = std::fs::read_to_string(config).unwrap();
    let n = text.lines().position(|l| l.starts_with(key)).unwrap() + 1;
    format!("portcullis.toml:{n}:")
}

#[test]
fn an_unreachable_ban_store_follows_the_configured_mode() {
    let port = spare_port();
    let store =
        format!("[rate_limit_store]\nredis = \"redis://127.0.0.1:{port}/\"\ntimeout = \"100ms\"\n");
    for (mode, status, error) in [
        ("open", 200, None),
        ("closed", 503, Some("RateLimiterUnavailable")),
    ] {
        let bans = BAN_RULE.replace(
            "[bans]\n",
            &format!("[bans]\non_store_error = \"{mode}\"\n"),
        );
        let (_d, config) = geo_config(offline(), "", &format!("{store}\n{bans}"));
        let gw = Gateway::start(&config);
        let r = request_from("127.0.0.1", gw.addr, "GET", "/public/hello", &[], b"");
        assert_eq!(r.status, status, "{mode}: {}", r.text());
        if let Some(e) = error {
            assert_eq!(r.json()["error"], e);
            assert_eq!(r.header("retry-after"), None);
        }
        // The gateway says why on stderr (read by a thread: allow it a moment).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        loop {
            let said = gw.stderr.lock().unwrap().join("\n");
            if said.contains("portcullis: ban store:") {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{mode}: {said}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
