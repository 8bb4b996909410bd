//! What several test files need: a configuration written to a temporary
//! folder and loaded, a bearer header minted with its key, and one decision.

#![allow(dead_code, reason = "each test file uses part of this")]

use std::net::IpAddr;

use http::{HeaderMap, HeaderValue, Method};
use portcullis_config::mint::{TokenSpec, mint};
use portcullis_config::{Loaded, load};
use portcullis_core::{Decision, RequestFacts};

/// The time every test decides at (Unix seconds).
pub const NOW: i64 = 1_800_000_000;

/// Write `files` into a temporary folder and load its `portcullis.toml`.
/// Everything is read at load, so the folder can go afterwards.
pub fn load_files(files: &[(&str, &str)]) -> Loaded {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    load(&dir.path().join("portcullis.toml")).unwrap()
}

/// A configuration with an HS256 key and one route, `GET /things/{id}`
/// (action `read` on `Thing::"{id}"`, authentication `auth`), over `schema`
/// and `policies`: for tests about how policies are evaluated.
pub fn load_things(schema: &str, policies: &str, auth: &str) -> Loaded {
    let config = format!(
        r#"[authentication.jwt]
algorithms = ["HS256"]
audience = "t"
[[authentication.jwt.keys]]
secret = "things-test-secret-things-test-secret"

[policy]
files = ["policies.cedar"]
schema = "schema.cedarschema"

[[route]]
name = "read"
methods = ["GET"]
path = "/things/{{id}}"
auth = "{auth}"
action = "read"
resource = {{ type = "Thing", id = "{{id}}" }}
"#
    );
    load_files(&[
        ("schema.cedarschema", schema),
        ("policies.cedar", policies),
        ("portcullis.toml", &config),
    ])
}

/// Headers carrying a token minted (at `NOW`) with the configuration's key.
pub fn bearer(loaded: &Loaded, spec: &TokenSpec) -> HeaderMap {
    let token = mint(loaded, spec, NOW).unwrap();
    let mut h = HeaderMap::new();
    h.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    h
}

/// Decide one request at `NOW`.
pub fn decide(
    loaded: &Loaded,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    ip: IpAddr,
) -> Decision {
    let facts = RequestFacts {
        method,
        target,
        headers,
        peer: ip,
        now: NOW,
    };
    loaded.engine.decide(&facts)
}
