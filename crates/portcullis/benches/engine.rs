//! The engine per request (normalise, route, verify a cached HS256 token,
//! Cedar) on the quickstart and on a generated set of 200 routes and 500
//! policies; and uncached RS256 / ES256 verification.
//!
//! Run: cargo bench -p portcullis --bench engine

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use portcullis_config::mint::{TokenSpec, mint};
use portcullis_config::{Loaded, load};
use portcullis_core::RequestFacts;
use portcullis_core::authn::jwt::{JwtSettings, JwtVerifier, KeySet};
use portcullis_core::authn::keys::key_from_pem;
use portcullis_core::jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;

const NOW: i64 = 1_800_000_000;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn bearer(loaded: &Loaded, sub: &str, roles: &[&str]) -> HeaderMap {
    let spec = TokenSpec {
        sub: Some(sub.into()),
        roles: roles.iter().map(|r| (*r).into()).collect(),
        ..TokenSpec::default()
    };
    let t = mint(loaded, &spec, NOW).unwrap();
    let mut h = HeaderMap::new();
    h.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
    );
    h
}

fn decide_bench(
    c: &mut Criterion,
    name: &str,
    loaded: &Loaded,
    method: Method,
    target: &str,
    headers: &HeaderMap,
    expect_allow: bool,
) {
    let facts = RequestFacts {
        method: &method,
        target,
        headers,
        peer: "192.0.2.7".parse().unwrap(),
        now: NOW,
    };
    assert_eq!(
        loaded.engine.decide(&facts).is_allowed(),
        expect_allow,
        "{name}: unexpected decision"
    );
    c.bench_function(name, |b| {
        b.iter(|| black_box(loaded.engine.decide(black_box(&facts))))
    });
}

fn quickstart(c: &mut Criterion) {
    let loaded = load(&root().join("examples/quickstart/portcullis.toml")).unwrap();
    let owner = bearer(&loaded, "123", &["user"]);
    decide_bench(
        c,
        "engine/quickstart/allow owner (cached HS256)",
        &loaded,
        Method::GET,
        "/users/123",
        &owner,
        true,
    );
    let editor = bearer(&loaded, "alice", &["editor"]);
    decide_bench(
        c,
        "engine/quickstart/deny with hint (cached HS256)",
        &loaded,
        Method::DELETE,
        "/users/123",
        &editor,
        false,
    );
    decide_bench(
        c,
        "engine/quickstart/public anonymous",
        &loaded,
        Method::GET,
        "/public/hello",
        &HeaderMap::new(),
        true,
    );
}

/// 200 routes over 200 actions; 500 policies: per action a role permit and
/// an owner permit with a condition (400), 90 more role permits spread over
/// the actions, and 10 forbids that apply to every action.
fn generated(dir: &Path) {
    let mut schema = String::from(
        "entity Role;\nentity User in [Role] { suspended?: Bool, dept?: String };\nentity Anonymous;\nentity Item { owner: User, dept: String };\n",
    );
    schema.push_str("type Ctx = { ip: ipaddr, method: String, path: String, route: String, scopes: Set<String>, authenticated: Bool, auth_method: String, time: Long };\n");
    let mut policies = String::new();
    let mut config = String::from(
        "[authentication.jwt]\nalgorithms = [\"HS256\"]\naudience = \"bench\"\n[[authentication.jwt.keys]]\nsecret = \"bench-secret-bench-secret-bench-secret-0123\"\n\n[policy]\nfiles = [\"policies.cedar\"]\nschema = \"schema.cedarschema\"\n\n",
    );
    for i in 0..200 {
        writeln!(
            schema,
            "action act{i} appliesTo {{ principal: [User], resource: Item, context: Ctx }};"
        )
        .unwrap();
        writeln!(policies, "@id(\"role-{i}\")\npermit (principal in Role::\"r{i}\", action == Action::\"act{i}\", resource);").unwrap();
        writeln!(policies, "@id(\"owner-{i}\")\npermit (principal, action == Action::\"act{i}\", resource) when {{ resource.owner == principal && context.time > 0 }};").unwrap();
        writeln!(config, "[[route]]\nname = \"r{i}\"\nmethods = [\"GET\", \"PUT\"]\npath = \"/svc{i}/items/{{id}}\"\naction = \"act{i}\"\nresource = {{ type = \"Item\", id = \"{{id}}\" }}\n").unwrap();
    }
    for j in 0..90 {
        writeln!(policies, "@id(\"extra-{j}\")\npermit (principal in Role::\"ops{j}\", action == Action::\"act{}\", resource) when {{ context.method == \"GET\" }};", j * 2).unwrap();
    }
    for k in 0..10 {
        writeln!(policies, "@id(\"forbid-{k}\")\nforbid (principal, action, resource) when {{ principal has dept && principal.dept == \"blocked{k}\" }};").unwrap();
    }
    std::fs::write(dir.join("schema.cedarschema"), schema).unwrap();
    std::fs::write(dir.join("policies.cedar"), policies).unwrap();
    std::fs::write(dir.join("portcullis.toml"), config).unwrap();
}

fn large(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    generated(dir.path());
    let loaded = load(&dir.path().join("portcullis.toml")).unwrap();
    assert_eq!(loaded.engine.routes().len(), 200);
    let h = bearer(&loaded, "u1", &["r150"]);
    decide_bench(
        c,
        "engine/200 routes 500 policies/allow (cached HS256)",
        &loaded,
        Method::GET,
        "/svc150/items/42",
        &h,
        true,
    );
    decide_bench(
        c,
        "engine/200 routes 500 policies/deny with hint (cached HS256)",
        &loaded,
        Method::GET,
        "/svc151/items/42",
        &h,
        false,
    );
}

fn uncached(c: &mut Criterion) {
    let claims = json!({"sub": "alice", "exp": NOW + 3600});
    for (alg, private, public) in [
        (Algorithm::RS256, "rsa.key", "rsa.pub.pem"),
        (Algorithm::ES256, "ec256.key", "ec256.pub.pem"),
    ] {
        let keys = root().join("testdata/keys");
        let private = std::fs::read(keys.join(private)).unwrap();
        let enc = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&private).unwrap(),
            _ => EncodingKey::from_ec_pem(&private).unwrap(),
        };
        let token = encode(&Header::new(alg), &claims, &enc).unwrap();
        let key = key_from_pem(&std::fs::read(keys.join(public)).unwrap(), None, None).unwrap();
        let settings = JwtSettings {
            algorithms: vec![alg],
            cache_capacity: 0,
            ..JwtSettings::default()
        };
        let v = JwtVerifier::new(settings, KeySet { keys: vec![key] });
        assert!(v.verify(&token, NOW).is_ok());
        c.bench_function(&format!("jwt/uncached {alg:?} verify"), |b| {
            b.iter(|| black_box(v.verify(black_box(&token), NOW)))
        });
    }
}

criterion_group!(benches, quickstart, large, uncached);
criterion_main!(benches);
