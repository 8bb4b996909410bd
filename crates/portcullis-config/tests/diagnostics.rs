//! Every configuration mistake is refused with the file, the line and what to
//! do. Each test starts from a valid minimal configuration and breaks one thing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use portcullis_config::{LoadError, load};

const SCHEMA: &str = r#"entity Role;
entity User in [Role];
entity Anonymous;
entity Doc { owner: User };
action read appliesTo { principal: [User, Anonymous], resource: Doc };
action write appliesTo { principal: User, resource: Doc };
"#;

const POLICIES: &str = r#"@id("read-all")
permit (principal, action == Action::"read", resource);

@id("write-own")
permit (principal, action == Action::"write", resource)
when { resource.owner == principal };
"#;

const CONFIG: &str = r#"[authentication.jwt]
algorithms = ["HS256"]
audience = "docs-api"

[[authentication.jwt.keys]]
secret = "0123456789abcdef0123456789abcdef-long-enough"

[policy]
files = ["policies.cedar"]
schema = "schema.cedarschema"

[[route]]
name = "read"
methods = ["GET"]
path = "/docs/{id}"
auth = "optional"
action = "read"
resource = { type = "Doc", id = "{id}" }

[[route]]
name = "write"
methods = ["PUT"]
path = "/docs/{id}"
action = "write"
resource = { type = "Doc", id = "{id}" }
"#;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let f = Fixture {
            dir: tempfile::tempdir().unwrap(),
        };
        f.write("schema.cedarschema", SCHEMA);
        f.write("policies.cedar", POLICIES);
        f.write("portcullis.toml", CONFIG);
        f
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir.path().join(name), text).unwrap();
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("portcullis.toml")
    }

    fn edit_config(&self, from: &str, to: &str) {
        assert!(CONFIG.contains(from), "fixture does not contain {from:?}");
        self.write("portcullis.toml", &CONFIG.replacen(from, to, 1));
    }

    fn error(&self) -> LoadError {
        match load(&self.config()) {
            Ok(_) => panic!("the configuration loaded, but should have been refused"),
            Err(e) => e,
        }
    }
}

/// The one error's `file:line:col` and message.
fn only(e: &LoadError) -> (String, String) {
    assert_eq!(e.errors.len(), 1, "{e}");
    let err = &e.errors[0];
    (err.location().to_owned(), err.message().to_owned())
}

fn help(e: &LoadError) -> String {
    use miette::Diagnostic;
    Diagnostic::help(&e.errors[0])
        .map(|h| h.to_string())
        .unwrap_or_default()
}

#[test]
fn the_fixture_itself_loads() {
    let f = Fixture::new();
    let loaded = load(&f.config()).unwrap();
    assert_eq!(loaded.engine.routes().len(), 2);
}

#[test]
fn an_unknown_key_is_refused_where_it_stands() {
    let f = Fixture::new();
    f.edit_config("auth = \"optional\"", "auth = \"optional\"\nconcel = true");
    let (loc, msg) = only(&f.error());
    assert!(loc.ends_with("portcullis.toml:17:1"), "{loc}");
    assert!(msg.contains("unknown field `concel`"), "{msg}");
}

#[test]
fn a_policy_syntax_error_points_into_the_policy_file() {
    let f = Fixture::new();
    f.write(
        "policies.cedar",
        &POLICIES.replace(
            "when { resource.owner == principal }",
            "when { resource.owner == }",
        ),
    );
    let (loc, msg) = only(&f.error());
    assert!(loc.contains("policies.cedar:6:"), "{loc}: {msg}");
}

#[test]
fn a_policy_that_does_not_type_check_is_refused_with_its_line() {
    let f = Fixture::new();
    f.write(
        "policies.cedar",
        &POLICIES.replace("resource.owner", "resource.author"),
    );
    let (loc, msg) = only(&f.error());
    assert!(loc.contains("policies.cedar:6:"), "{loc}: {msg}");
    assert!(msg.contains("author"), "{msg}");
}

#[test]
fn duplicate_policy_ids_are_refused() {
    let f = Fixture::new();
    f.write("policies.cedar", &POLICIES.replace("write-own", "read-all"));
    let e = f.error();
    let (loc, msg) = only(&e);
    assert!(loc.contains("policies.cedar:4:"), "{loc}");
    assert!(msg.contains("\"read-all\" is used twice"), "{msg}");
    assert!(help(&e).contains("policies.cedar:1:1"), "{}", help(&e));
}

#[test]
fn annotations_are_checked() {
    let f = Fixture::new();
    f.write(
        "policies.cedar",
        &format!("@error(\"not a code\")\n{POLICIES}"),
    );
    let (_, msg) = only(&f.error());
    assert!(msg.contains("not a valid error code"), "{msg}");
}

#[test]
fn routes_that_compete_for_the_same_requests_are_refused() {
    let f = Fixture::new();
    f.edit_config("methods = [\"PUT\"]", "methods = [\"PUT\", \"GET\"]");
    let e = f.error();
    let (loc, msg) = only(&e);
    assert!(loc.ends_with("portcullis.toml:23:8"), "{loc}");
    assert!(
        msg.contains("route \"write\" competes with route \"read\""),
        "{msg}"
    );
    assert!(help(&e).contains("portcullis.toml:15:8"), "{}", help(&e));
}

#[test]
fn an_action_missing_from_the_schema_lists_the_declared_ones() {
    let f = Fixture::new();
    f.edit_config("action = \"write\"", "action = \"wirte\"");
    let e = f.error();
    let (loc, msg) = only(&e);
    assert!(loc.ends_with("portcullis.toml:24:10"), "{loc}");
    assert!(msg.contains("\"wirte\" is not declared"), "{msg}");
    assert_eq!(help(&e), "declared actions: read, write");
}

#[test]
fn a_resource_type_the_action_does_not_apply_to_is_refused() {
    let f = Fixture::new();
    f.edit_config(
        "resource = { type = \"Doc\", id = \"{id}\" }\n\n",
        "resource = { type = \"User\", id = \"{id}\" }\n\n",
    );
    let e = f.error();
    assert!(
        only(&e)
            .1
            .contains("does not apply to resources of type User"),
        "{e}"
    );
    assert!(help(&e).contains("[Doc]"), "{}", help(&e));
}

#[test]
fn a_resource_id_must_use_path_parameters() {
    let f = Fixture::new();
    f.edit_config("id = \"{id}\" }\n\n", "id = \"{doc}\" }\n\n");
    assert!(
        only(&f.error())
            .1
            .contains("{doc}, which is not a parameter")
    );
}

#[test]
fn anonymous_callers_must_be_principals_the_action_accepts() {
    let f = Fixture::new();
    f.edit_config(
        "action = \"write\"",
        "action = \"write\"\nauth = \"optional\"",
    );
    let e = f.error();
    assert!(
        only(&e)
            .1
            .contains("does not apply to principals of type Anonymous"),
        "{e}"
    );
}

#[test]
fn templates_that_no_request_could_match_are_refused() {
    let f = Fixture::new();
    f.edit_config("path = \"/docs/{id}\"", "path = \"/docs/../{id}\"");
    let (_, msg) = only(&f.error());
    assert!(msg.contains("canonical form"), "{msg}");
    let f = Fixture::new();
    f.edit_config("path = \"/docs/{id}\"", "path = \"/docs/{*rest}/x\"");
    assert!(only(&f.error()).1.contains("last segment"));
}

#[test]
fn methods_are_case_sensitive() {
    let f = Fixture::new();
    f.edit_config("methods = [\"GET\"]", "methods = [\"get\"]");
    let e = f.error();
    assert!(only(&e).1.contains("\"get\" is not a method"));
    assert!(help(&e).contains("case-sensitive"));
}

#[test]
fn short_hmac_secrets_are_refused() {
    let f = Fixture::new();
    f.edit_config("0123456789abcdef0123456789abcdef-long-enough", "short");
    let e = f.error();
    let (loc, msg) = only(&e);
    assert!(loc.ends_with("portcullis.toml:6:10"), "{loc}");
    assert!(msg.contains("5 bytes; at least 32"), "{msg}");
}

#[test]
fn alg_none_cannot_be_allowed() {
    let f = Fixture::new();
    f.edit_config(
        "algorithms = [\"HS256\"]",
        "algorithms = [\"HS256\", \"none\"]",
    );
    let e = f.error();
    assert!(only(&e).1.contains("\"none\" is not a supported algorithm"));
}

#[test]
fn keys_that_fit_no_allowed_algorithm_are_refused() {
    let f = Fixture::new();
    f.edit_config("algorithms = [\"HS256\"]", "algorithms = [\"RS256\"]");
    assert!(only(&f.error()).1.contains("no configured key can verify"));
}

#[test]
fn a_private_key_is_refused_as_a_verification_key() {
    let f = Fixture::new();
    let key = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/keys/rsa.key");
    f.edit_config(
        "secret = \"0123456789abcdef0123456789abcdef-long-enough\"",
        &format!("pem = \"{key}\""),
    );
    assert!(only(&f.error()).1.contains("private key"));
}

#[test]
fn missing_files_are_named_relative_to_the_config() {
    let f = Fixture::new();
    f.edit_config("files = [\"policies.cedar\"]", "files = [\"policy.cedar\"]");
    let (loc, msg) = only(&f.error());
    assert!(loc.ends_with("portcullis.toml:9:10"), "{loc}");
    assert!(msg.contains("policy.cedar"), "{msg}");
}

#[test]
fn several_independent_errors_are_all_reported() {
    let f = Fixture::new();
    let bad = CONFIG
        .replace("methods = [\"GET\"]", "methods = [\"get\"]")
        .replace("action = \"write\"", "action = \"wirte\"");
    f.write("portcullis.toml", &bad);
    assert_eq!(f.error().errors.len(), 2);
}

#[test]
fn entities_that_do_not_match_the_schema_are_refused() {
    let f = Fixture::new();
    f.write(
        "entities.json",
        r#"[{"uid":{"type":"Doc","id":"d1"},"attrs":{"owner":"not-an-entity"},"parents":[]}]"#,
    );
    f.edit_config(
        "schema = \"schema.cedarschema\"",
        "schema = \"schema.cedarschema\"\nentities = \"entities.json\"",
    );
    let (loc, _) = only(&f.error());
    assert!(loc.ends_with("entities.json"), "{loc}");
}

#[test]
fn api_key_files_store_digests_only() {
    let f = Fixture::new();
    f.write(
        "keys.toml",
        "[[key]]\nsha256 = \"my-plain-key\"\nsubject = \"svc\"\n",
    );
    f.edit_config(
        "[policy]",
        "[authentication.api_keys]\nheader = \"X-Api-Key\"\nfile = \"keys.toml\"\n\n[policy]",
    );
    let e = f.error();
    let (loc, msg) = only(&e);
    assert!(loc.ends_with("keys.toml:2:10"), "{loc}");
    assert!(msg.contains("64 lower-case hex digits"), "{msg}");
    assert!(help(&e).contains("sha256sum"));
}

#[test]
fn an_audience_is_required_unless_explicitly_waived() {
    let f = Fixture::new();
    f.edit_config("audience = \"docs-api\"\n", "");
    let e = f.error();
    assert!(only(&e).1.contains("no audience is configured"), "{e}");
    f.edit_config("audience = \"docs-api\"\n", "require_audience = false\n");
    assert!(load(&f.config()).is_ok());
}

#[test]
fn jwks_urls_must_use_https_except_on_loopback() {
    let f = Fixture::new();
    let secret = "secret = \"0123456789abcdef0123456789abcdef-long-enough\"";
    f.edit_config(secret, "jwks_url = \"http://idp.example/jwks.json\"");
    assert!(only(&f.error()).1.contains("must be https://"));
    f.edit_config(secret, "jwks_url = \"http://127.0.0.1:9999/jwks.json\"");
    assert_eq!(load(&f.config()).unwrap().jwks_urls.len(), 1);
}

#[test]
fn a_route_that_needs_scopes_must_authenticate() {
    let f = Fixture::new();
    f.edit_config(
        "auth = \"optional\"",
        "auth = \"off\"\nscopes = [\"docs:read\"]",
    );
    assert!(only(&f.error()).1.contains("does not authenticate"));
}

#[test]
fn identical_policies_without_ids_get_their_own_ids() {
    let f = Fixture::new();
    let twice = "permit (principal, action == Action::\"read\", resource);\n";
    f.write("policies.cedar", &format!("{POLICIES}{twice}{twice}"));
    assert!(load(&f.config()).is_ok());
}

#[test]
fn deny_codes_are_checked_like_annotations() {
    let f = Fixture::new();
    f.edit_config(
        "auth = \"optional\"",
        "auth = \"optional\"\ndeny = { error = \"no such code!\" }",
    );
    assert!(only(&f.error()).1.contains("not a valid error code"));
}

#[test]
fn conceal_takes_no_value_but_true() {
    let f = Fixture::new();
    f.write(
        "policies.cedar",
        &format!("@conceal(\"false\")\n{POLICIES}"),
    );
    assert!(
        only(&f.error())
            .1
            .contains("@conceal(\"false\") is ambiguous")
    );
}

/// Serving settings: each mistake is refused at its line.
#[test]
fn serving_settings_are_checked_where_they_stand() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "[upstream]\nurl = \"http://127.0.0.1:9\"\necho = true\n",
            "portcullis.toml:1:1",
            "exactly one of `url`, `static_dir` and `echo = true`",
        ),
        (
            "[upstream]\nurl = \"ftp://example.test\"\n",
            "portcullis.toml:2:7",
            "http(s)://host",
        ),
        (
            "[upstream]\necho = true\nidentity_headers = { subject = \"Authorization\" }\n",
            "portcullis.toml:3:32",
            "authorization is managed by the gateway",
        ),
        (
            "[server]\nmax_body = \"10mb\"\n",
            "portcullis.toml:2:12",
            "unknown unit 'mb'",
        ),
        (
            "[server]\nmax_uri_bytes = \"64KiB\"\n",
            "portcullis.toml:2:17",
            "no more than max_header_bytes",
        ),
        (
            "[server]\ntrusted_proxies = [\"10.0.0.0/33\"]\n",
            "portcullis.toml:2:20",
            "not an address or CIDR",
        ),
        (
            "[server]\nidle_timeout = \"0s\"\n",
            "portcullis.toml:2:16",
            "longer than zero",
        ),
        (
            "[server]\ntls = { cert = \"missing.pem\", key = \"missing.key\" }\n",
            "portcullis.toml:2:16",
            "missing.pem is not a readable file",
        ),
        (
            "[upstream]\nstatic_dir = \".\"\ntimeout = \"5s\"\n",
            "portcullis.toml:1:1",
            "belongs to another kind of upstream",
        ),
        (
            "[upstream]\nstatic_dir = \".\"\nindex = \".secret\"\n",
            "portcullis.toml:1:1",
            "plain, visible file name",
        ),
        (
            "[server]\nclient_ip_header = \"X-Real-IP\"\n",
            "portcullis.toml:2:20",
            "none are listed",
        ),
        (
            "[log]\nqueue = 0\n",
            "portcullis.toml:2:9",
            "at least one line",
        ),
    ];
    refused_at(cases);
}

#[test]
fn a_route_body_limit_is_a_size() {
    let f = Fixture::new();
    f.edit_config(
        "path = \"/docs/{id}\"\naction = \"write\"",
        "path = \"/docs/{id}\"\naction = \"write\"\nmax_body = \"1 TB\"",
    );
    let (loc, msg) = only(&f.error());
    assert!(loc.ends_with("portcullis.toml:25:12"), "{loc}");
    assert!(msg.contains("unknown unit 'TB'"), "{msg}");
}

#[test]
fn a_bad_line_in_an_ip_list_file_is_refused_with_its_file_and_line() {
    let f = Fixture::new();
    f.write(
        "blocked.txt",
        "# blocked networks\n203.0.113.0/24\n\n2001:db8:bad::/48 # v6\n10.0.0.01\n",
    );
    f.write(
        "portcullis.toml",
        &format!("[ip_lists.blocked]\nfiles = [\"blocked.txt\"]\n\n[network]\ndeny = [\"blocked\"]\n\n{CONFIG}"),
    );
    let (loc, msg) = only(&f.error());
    assert!(loc.ends_with("blocked.txt:5:1"), "{loc}");
    assert!(
        msg.contains("\"10.0.0.01\" is not an IP address or CIDR"),
        "{msg}"
    );
}

#[test]
fn an_unknown_ip_list_name_is_refused_with_the_declared_ones() {
    let f = Fixture::new();
    f.write(
        "portcullis.toml",
        &format!(
            "[ip_lists.office]\ncidrs = [\"192.0.2.0/24\"]\n\n{}",
            CONFIG.replacen(
                "path = \"/docs/{id}\"\naction = \"write\"",
                "path = \"/docs/{id}\"\naction = \"write\"\nip_allow = [\"ofice\"]",
                1,
            )
        ),
    );
    let e = f.error();
    let (loc, msg) = only(&e);
    assert!(loc.ends_with("portcullis.toml:28:13"), "{loc}");
    assert!(msg.contains("no IP list is named \"ofice\""), "{msg}");
    assert!(help(&e).contains("office"), "{}", help(&e));
}

#[test]
fn route_and_global_ip_lists_decide() {
    let f = Fixture::new();
    f.write(
        "portcullis.toml",
        &format!(
            "[ip_lists.office]\ncidrs = [\"192.0.2.0/24\", \"2001:db8:1::/48\"]\nmessage = \"Writes only from the office.\"\n\n[ip_lists.bad]\ncidrs = [\"198.51.100.0/24\"]\n\n[network]\ndeny = [\"bad\"]\n\n{}",
            CONFIG.replacen(
                "path = \"/docs/{id}\"\naction = \"write\"",
                "path = \"/docs/{id}\"\naction = \"write\"\nip_allow = [\"office\"]",
                1,
            )
        ),
    );
    let loaded = load(&f.config()).unwrap();
    let decide = |method: &str, ip: &str| {
        let method: http::Method = method.parse().unwrap();
        let headers = http::HeaderMap::new();
        let d = loaded.engine.decide(&portcullis_core::RequestFacts {
            method: &method,
            target: "/docs/1",
            headers: &headers,
            peer: ip.parse().unwrap(),
            now: 1_700_000_000,
        });
        d.denial().map(|den| {
            (
                den.face.code.clone(),
                den.face.message.clone(),
                den.stage.as_str(),
            )
        })
    };
    let blocked = Some((
        "IpBlocked".to_owned(),
        "Requests from your network address are not allowed.".to_owned(),
        "network",
    ));
    assert_eq!(decide("GET", "198.51.100.9"), blocked);
    assert_eq!(decide("GET", "192.0.2.1"), None);
    // The route's allow list: outside it, the list's message.
    let outside = decide("PUT", "203.0.113.1").unwrap();
    assert_eq!(
        (outside.0.as_str(), outside.1.as_str()),
        ("IpBlocked", "Writes only from the office.")
    );
    // Inside it, on to authentication (no token: 401).
    assert_eq!(
        decide("PUT", "2001:db8:1::5").unwrap().0,
        "AuthenticationRequired"
    );
    assert_eq!(
        decide("PUT", "192.0.2.77").unwrap().0,
        "AuthenticationRequired"
    );
}

#[test]
fn rate_limit_settings_are_checked() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "[rate_limits.a]\nlimit = 0\nperiod = \"1m\"\nkey = [\"ip\"]\n",
            "portcullis.toml:2:9",
            "a limit of 0 refuses everything",
        ),
        (
            "[rate_limits.a]\nlimit = 5\nperiod = \"1m\"\nkey = [\"cookie\"]\n",
            "portcullis.toml:4:8",
            "\"cookie\" is not a key part",
        ),
        (
            "[rate_limits.a]\nlimit = 5\nperiod = \"1m\"\nkey = [\"route\"]\n\n[network]\nrate_limits = [\"a\"]\n",
            "portcullis.toml:7:16",
            "keyed by route",
        ),
        (
            "[rate_limit_store]\nredis = \"rediss://cache.internal:6380\"\n",
            "portcullis.toml:2:9",
            "not supported yet",
        ),
        (
            "[network]\nrate_limits = [\"nope\"]\n",
            "portcullis.toml:2:16",
            "no rate limit is named \"nope\"",
        ),
        (
            "[rate_limits.a]\nlimit = 5\nperiod = \"1m\"\nkey = [\"ip_prefix\"]\nipv4_prefix = 33\n",
            "portcullis.toml:5:15",
            "at most 32",
        ),
    ];
    refused_at(cases);
}

#[test]
fn request_rules_are_checked_where_they_stand() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "[[request_rule]]\nid = \"a\"\nuser_agent = { regex = \"(unclosed\" }\n",
            "portcullis.toml:3:14",
            "the regex does not compile",
        ),
        (
            "[[request_rule]]\nid = \"a\"\npath = { exact = \"/x\", prefix = \"/y\" }\n",
            "portcullis.toml:3:8",
            "exactly one of exact, prefix and regex",
        ),
        (
            "[[request_rule]]\nid = \"a\"\nmethods = [\"get\"]\npath = { prefix = \"/x\" }\n",
            "portcullis.toml:3:11",
            "\"get\" is not a method",
        ),
        (
            "[[request_rule]]\nid = \"a\"\npath = { prefix = \"/%7Euser\" }\n",
            "portcullis.toml:3:8",
            "is not a canonical path",
        ),
        (
            "[[request_rule]]\nid = \"a\"\nmethods = [\"GET\"]\n",
            "portcullis.toml:1:1",
            "has no condition",
        ),
        (
            "[[request_rule]]\nid = \"a\"\npath = { prefix = \"/x\" }\naction = \"drop\"\n",
            "portcullis.toml:4:10",
            "use \"block\" or \"log\"",
        ),
        (
            "[[request_rule]]\nid = \"a\"\npath = { prefix = \"/x\" }\n\n[[request_rule]]\nid = \"a\"\npath = { prefix = \"/y\" }\n",
            "portcullis.toml:6:6",
            "rule id \"a\" is used twice",
        ),
    ];
    refused_at(cases);
}

/// Each configuration prefix, put before the fixture, is refused with its
/// first error at `file:line:col` and a message containing the text.
fn refused_at(cases: &[(&str, &str, &str)]) {
    for (prefix, want_loc, want_msg) in cases {
        let f = Fixture::new();
        f.write("portcullis.toml", &format!("{prefix}\n{CONFIG}"));
        let e = f.error();
        let (loc, msg) = (
            e.errors[0].location().to_owned(),
            e.errors[0].message().to_owned(),
        );
        assert!(loc.ends_with(want_loc), "{prefix}: {loc}");
        assert!(msg.contains(want_msg), "{prefix}: {msg}");
    }
}
