//! The Cedar context carries the documented facts with the documented types:
//! one policy per field, each reachable only through its own path, checked
//! both ways.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{bearer, decide, load_files};
use http::{HeaderMap, Method};
use portcullis_config::Loaded;
use portcullis_config::mint::TokenSpec;

const SCHEMA: &str = r#"entity Role;
entity User in [Role];
entity Anonymous;
entity Probe;
type Ctx = { ip: ipaddr, method: String, path: String, route: String, scopes: Set<String>, authenticated: Bool, auth_method: String, time: Long };
action probe appliesTo { principal: [User, Anonymous], resource: Probe, context: Ctx };
"#;

const POLICIES: &str = r#"
permit (principal, action, resource) when { context.path == "/ctx/ip" && context.ip.isInRange(ip("192.0.2.0/24")) };
permit (principal, action, resource) when { context.path == "/ctx/ip6" && context.ip.isInRange(ip("2001:db8::/32")) };
permit (principal, action, resource) when { context.path == "/ctx/method" && context.method == "POST" };
permit (principal, action, resource) when { context.path like "/ctx/path/ok*" };
permit (principal, action, resource) when { context.path == "/ctx/scopes" && context.scopes.contains("x:read") };
permit (principal, action, resource) when { context.path == "/ctx/auth" && context.authenticated && context.auth_method == "jwt" };
permit (principal, action, resource) when { context.path == "/ctx/time" && context.time > 1799999999 && context.time < 1800000001 };
permit (principal, action, resource) when { context.path == "/ctx/route" && context.route == "probe-route" };
"#;

const CONFIG: &str = r#"[authentication.jwt]
algorithms = ["HS256"]
audience = "probe"
[[authentication.jwt.keys]]
secret = "context-test-secret-context-test-secret"

[policy]
files = ["policies.cedar"]
schema = "schema.cedarschema"

[[route]]
name = "probe-route"
methods = ["GET", "POST"]
path = "/ctx/{*rest}"
auth = "optional"
action = "probe"
resource = { type = "Probe", id = "p" }
"#;

fn loaded() -> Loaded {
    load_files(&[
        ("schema.cedarschema", SCHEMA),
        ("policies.cedar", POLICIES),
        ("portcullis.toml", CONFIG),
    ])
}

fn allowed(l: &Loaded, method: Method, path: &str, ip: &str, scopes: Option<&[&str]>) -> bool {
    let h = match scopes {
        Some(scopes) => bearer(
            l,
            &TokenSpec {
                sub: Some("u".into()),
                scopes: scopes.iter().map(|s| (*s).into()).collect(),
                ..TokenSpec::default()
            },
        ),
        None => HeaderMap::new(),
    };
    decide(l, &method, path, &h, ip.parse().unwrap()).is_allowed()
}

#[test]
fn every_context_field_has_its_documented_value() {
    let l = loaded();
    let v4 = "192.0.2.9";
    assert!(allowed(&l, Method::GET, "/ctx/ip", v4, None));
    assert!(!allowed(&l, Method::GET, "/ctx/ip", "198.51.100.1", None));
    assert!(allowed(&l, Method::GET, "/ctx/ip6", "2001:db8::7", None));
    // An IPv4-mapped IPv6 address is the IPv4 address.
    assert!(allowed(
        &l,
        Method::GET,
        "/ctx/ip",
        "::ffff:192.0.2.9",
        None
    ));
    assert!(!allowed(&l, Method::GET, "/ctx/ip6", "2001:db9::7", None));
    assert!(allowed(&l, Method::POST, "/ctx/method", v4, None));
    assert!(!allowed(&l, Method::GET, "/ctx/method", v4, None));
    assert!(allowed(&l, Method::GET, "/ctx/path/ok/deeper", v4, None));
    assert!(!allowed(&l, Method::GET, "/ctx/path/no", v4, None));
    assert!(allowed(
        &l,
        Method::GET,
        "/ctx/scopes",
        v4,
        Some(&["x:read", "y"])
    ));
    assert!(!allowed(&l, Method::GET, "/ctx/scopes", v4, Some(&["y"])));
    assert!(!allowed(&l, Method::GET, "/ctx/scopes", v4, None));
    assert!(allowed(&l, Method::GET, "/ctx/auth", v4, Some(&[])));
    assert!(!allowed(&l, Method::GET, "/ctx/auth", v4, None));
    assert!(allowed(&l, Method::GET, "/ctx/time", v4, None));
    assert!(allowed(&l, Method::GET, "/ctx/route", v4, None));
    // The same address many times (the ip value is cached) gives the same answers.
    for _ in 0..3 {
        assert!(allowed(&l, Method::GET, "/ctx/ip", v4, None));
        assert!(!allowed(&l, Method::GET, "/ctx/ip", "198.51.100.1", None));
    }
}
