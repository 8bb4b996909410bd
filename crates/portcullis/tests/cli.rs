//! The commands as an operator runs them: exit codes, output shapes, and the
//! quickstart's cases.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn quickstart(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/quickstart")
        .join(file)
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn config() -> String {
    quickstart("portcullis.toml").display().to_string()
}

fn explain_json(args: &[&str]) -> Value {
    explain_json_in(&config(), args)
}

fn explain_json_in(c: &str, args: &[&str]) -> Value {
    let mut all = vec!["explain", "--config", c, "--format", "json"];
    all.extend_from_slice(args);
    let o = run(&all);
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap()
}

fn mint(args: &[&str]) -> String {
    let c = config();
    let mut all = vec!["token", "--config", &c];
    all.extend_from_slice(args);
    let o = run(&all);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o).trim().to_owned()
}

#[test]
fn check_accepts_the_quickstart() {
    let o = run(&["check", "--config", &config()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("ok (7 routes"), "{}", stdout(&o));
}

#[test]
fn check_refuses_a_broken_policy_with_file_line_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "portcullis.toml",
        "schema.cedarschema",
        "entities.json",
        "api-keys.toml",
    ] {
        std::fs::copy(quickstart(f), dir.path().join(f)).unwrap();
    }
    std::fs::create_dir(dir.path().join("public")).unwrap();
    let policies = std::fs::read_to_string(quickstart("policies.cedar")).unwrap();
    std::fs::write(
        dir.path().join("policies.cedar"),
        policies.replace("principal == resource", "principal == resource.owner"),
    )
    .unwrap();
    let o = run(&[
        "check",
        "--config",
        dir.path().join("portcullis.toml").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("policies.cedar:10:21"), "{err}");
    assert!(err.contains("1 error in the configuration"), "{err}");
}

#[test]
fn test_runs_the_quickstart_cases() {
    let o = run(&[
        "test",
        "--config",
        &config(),
        quickstart("cases.toml").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).trim_end().ends_with("41 passed, 0 failed"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_failing_case_prints_its_trace_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let cases = dir.path().join("cases.toml");
    std::fs::write(
        &cases,
        "[[case]]\nname = \"wrong on purpose\"\npath = \"/users/1\"\nexpect = \"allow\"\n",
    )
    .unwrap();
    let o = run(&["test", "--config", &config(), cases.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(out.contains("FAIL wrong on purpose"), "{out}");
    assert!(out.contains("expected allow, got deny"), "{out}");
    assert!(out.contains("authenticate  deny"), "{out}");
    assert!(out.trim_end().ends_with("0 passed, 1 failed"), "{out}");
}

#[test]
fn a_malformed_cases_file_is_a_diagnostic() {
    let dir = tempfile::tempdir().unwrap();
    let cases = dir.path().join("cases.toml");
    std::fs::write(
        &cases,
        "[[case]]\nname = \"x\"\npath = \"/\"\nstatus = 403\nexpected = \"deny\"\n",
    )
    .unwrap();
    let o = run(&["test", "--config", &config(), cases.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("cases.toml:5:1"), "{}", stderr(&o));
}

#[test]
fn explain_json_has_the_documented_fields() {
    let v = explain_json(&[
        "--method",
        "DELETE",
        "--path",
        "/users/123",
        "--token",
        &mint(&["--sub", "alice", "--role", "editor"]),
    ]);
    assert_eq!(v["decision"], "deny");
    assert_eq!(v["status"], 403);
    assert_eq!(v["error"], "InsufficientPermissions");
    assert_eq!(v["message"], "Deleting users requires the 'admin' role.");
    assert_eq!(v["stage"], "authorize");
    assert_eq!(v["trace"].as_array().unwrap().len(), 7);
    assert_eq!(v["client"], "127.0.0.1");
    assert!(
        v["hint"].as_str().unwrap().contains(
            r#"requires principal in Role::"admin"; User::"alice" is in [Role::"editor"]"#
        ),
        "{}",
        v["hint"]
    );

    let v = explain_json(&["--path", "/public/limited"]);
    assert_eq!(v["rate_limits"][0]["name"], "public-limited");
    assert_eq!(v["rate_limits"][0]["key"], "ip:127.0.0.1");

    let v = explain_json(&["--path", "/public/hello"]);
    assert_eq!(v["decision"], "allow");
    assert!(v["status"].is_null());
    assert_eq!(v["policies"][0], "public-read");
}

#[test]
fn explain_shows_what_concealment_hid() {
    let v = explain_json(&[
        "--path",
        "/reports/q3",
        "--token",
        &mint(&["--sub", "dave", "--role", "user"]),
    ]);
    assert_eq!(v["status"], 404);
    assert_eq!(v["concealed"]["status"], 403);
    assert!(
        v["hint"]
            .as_str()
            .unwrap()
            .contains("`resource.members.contains(principal)` is false"),
        "{}",
        v["hint"]
    );
}

#[test]
fn token_options_shape_the_token() {
    let expired = mint(&["--sub", "123", "--role", "user", "--ttl", "-1h"]);
    let v = explain_json(&["--path", "/users/123", "--token", &expired]);
    assert_eq!(v["error"], "InvalidToken");
    assert!(
        v["response"]["headers"]["www-authenticate"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
    let scoped = mint(&[
        "--sub",
        "bob",
        "--scope",
        "orders:write",
        "--claim",
        "email=bob@example.test",
    ]);
    let v = explain_json(&[
        "--method",
        "POST",
        "--path",
        "/api/orders",
        "--token",
        &scoped,
    ]);
    assert_eq!(v["decision"], "allow");
    assert_eq!(v["identity"]["scopes"][0], "orders:write");
}

#[test]
fn bad_command_line_input_exits_2() {
    let c = config();
    for args in [
        vec!["token", "--config", &c, "--sub", "x", "--ttl", "soon"],
        vec!["token", "--config", &c, "--sub", "x", "--claim", "novalue"],
        vec![
            "explain", "--config", &c, "--path", "/", "--header", "no-colon",
        ],
        vec!["explain", "--config", &c, "--path", "/", "--ip", "1.2.3"],
        vec!["explain", "--config", &c, "--path", "/", "--method", "G ET"],
    ] {
        let o = run(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).starts_with("error: "),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    assert_eq!(run(&["frobnicate"]).status.code(), Some(2));
}

#[path = "support/loopback.rs"]
mod loopback;

/// Serve one fixed JSON body on loopback; returns the URL.
fn serve_json(body: String) -> String {
    let state = std::sync::Arc::new(std::sync::Mutex::new((200, body)));
    format!("http://{}/.well-known/jwks.json", loopback::serve(state))
}

fn jwks_config(dir: &std::path::Path, url: &str) -> String {
    for f in [
        "schema.cedarschema",
        "policies.cedar",
        "entities.json",
        "api-keys.toml",
    ] {
        std::fs::copy(quickstart(f), dir.join(f)).unwrap();
    }
    std::fs::create_dir_all(dir.join("public")).unwrap();
    let config = std::fs::read_to_string(quickstart("portcullis.toml"))
        .unwrap()
        .replace("algorithms = [\"HS256\"]", "algorithms = [\"RS256\"]")
        .replace("kid = \"quickstart\"\nsecret = \"quickstart-secret-do-not-use-in-production-0123456789\"", &format!("jwks_url = \"{url}\""));
    assert!(config.contains("jwks_url"));
    let path = dir.join("portcullis.toml");
    std::fs::write(&path, config).unwrap();
    path.display().to_string()
}

#[test]
fn keys_from_a_jwks_url_verify_tokens() {
    use portcullis_core::jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    let keys = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/keys");
    let url = serve_json(std::fs::read_to_string(keys.join("rsa.jwks.json")).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let config = jwks_config(dir.path(), &url);
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa-1".into());
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let claims = serde_json::json!({"sub": "123", "roles": ["user"], "iss": "portcullis-quickstart", "aud": "quickstart-api", "exp": exp});
    let token = encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(&std::fs::read(keys.join("rsa.key")).unwrap()).unwrap(),
    )
    .unwrap();
    let o = run(&[
        "explain",
        "--config",
        &config,
        "--path",
        "/users/123",
        "--token",
        &token,
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["decision"], "allow", "{v:#}");
}

#[test]
fn an_unreachable_jwks_url_is_a_clear_error() {
    // Nothing listens on port 1.
    let dir = tempfile::tempdir().unwrap();
    let config = jwks_config(dir.path(), "http://127.0.0.1:1/jwks.json");
    let o = run(&["explain", "--config", &config, "--path", "/users/123"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("JWKS http://127.0.0.1:1/jwks.json"),
        "{}",
        stderr(&o)
    );
    // `check` stays offline and accepts the configuration.
    assert!(run(&["check", "--config", &config]).status.success());
}

#[test]
fn now_fixes_the_time_of_a_decision() {
    let token = mint(&["--sub", "123", "--role", "user", "--ttl", "10m"]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let later = (now + 3600).to_string();
    let v = explain_json(&["--path", "/users/123", "--token", &token]);
    assert_eq!(v["decision"], "allow");
    // An hour later the same token has expired.
    let v = explain_json(&["--path", "/users/123", "--token", &token, "--now", &later]);
    assert_eq!(v["error"], "InvalidToken");
}

#[test]
fn the_bench_configurations_load_and_the_full_one_passes_its_token() {
    let bench = |f: &str| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../bench")
            .join(f)
            .display()
            .to_string()
    };
    for f in ["passthrough.toml", "full.toml"] {
        let o = run(&["check", "--config", &bench(f)]);
        assert!(o.status.success(), "{f}: {}", stderr(&o));
    }
    let full = bench("full.toml");
    let o = run(&["token", "--config", &full, "--sub", "bench"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let token = stdout(&o).trim().to_owned();
    let v = explain_json_in(&full, &["--path", "/bench/items/1", "--token", &token]);
    assert_eq!(v["decision"], "allow", "{v:#}");
    assert_eq!(v["policies"], serde_json::json!(["items-read"]));
    // Every check is on: the limit, a credential, the deny list.
    assert_eq!(v["rate_limits"][0]["name"], "per-client");
    let v = explain_json_in(&full, &["--path", "/bench/items/1"]);
    assert_eq!(v["error"], "AuthenticationRequired");
    let listed = std::fs::read_to_string(bench("full/deny.txt")).unwrap();
    assert_eq!(
        listed.lines().filter(|l| !l.starts_with('#')).count(),
        10_000
    );
    let first = listed.lines().find(|l| !l.starts_with('#')).unwrap();
    let ip = first.split('/').next().unwrap();
    let v = explain_json_in(
        &full,
        &["--path", "/bench/items/1", "--token", &token, "--ip", ip],
    );
    assert_eq!(v["error"], "IpBlocked", "{ip}: {v:#}");
}
