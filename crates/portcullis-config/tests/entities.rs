//! The engine evaluates each request against a slice of the entity store;
//! these cases prove the slice reaches everything a policy can: role
//! hierarchies, attribute chains, entity literals, a principal's own entry.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{bearer, decide, load_files};
use http::Method;
use portcullis_config::mint::TokenSpec;

const SCHEMA: &str = r#"entity Role in [Role];
entity Dept { head: User };
entity User in [Role] { dept?: Dept, level?: Long } tags Bool;
entity Anonymous;
entity Doc { owner: User };
entity Settings { minimum: Long };
action read appliesTo { principal: [User], resource: Doc };
"#;

const POLICIES: &str = r#"@id("staff-read")
permit (principal in Role::"staff", action == Action::"read", resource);

@id("dept-head-reads-dept-docs")
permit (principal, action == Action::"read", resource)
when { resource.owner has dept && resource.owner.dept.head == principal };

@id("blocked-by-tag")
forbid (principal, action, resource)
when { principal.hasTag("blocked") && principal.getTag("blocked") };

@id("level-from-settings")
permit (principal, action == Action::"read", resource)
when { principal has level && principal.level >= Settings::"global".minimum };
"#;

const ENTITIES: &str = r#"[
  {"uid": {"type": "Role", "id": "editor"}, "attrs": {}, "parents": [{"type": "Role", "id": "staff"}]},
  {"uid": {"type": "Role", "id": "staff"}, "attrs": {}, "parents": []},
  {"uid": {"type": "User", "id": "bob"}, "attrs": {"dept": {"__entity": {"type": "Dept", "id": "sales"}}}, "parents": []},
  {"uid": {"type": "User", "id": "vip"}, "attrs": {"level": 9}, "parents": []},
  {"uid": {"type": "User", "id": "tagged"}, "attrs": {}, "parents": [], "tags": {"blocked": true}},
  {"uid": {"type": "Dept", "id": "sales"}, "attrs": {"head": {"__entity": {"type": "User", "id": "helen"}}}, "parents": []},
  {"uid": {"type": "Doc", "id": "d1"}, "attrs": {"owner": {"__entity": {"type": "User", "id": "bob"}}}, "parents": []},
  {"uid": {"type": "Settings", "id": "global"}, "attrs": {"minimum": 5}, "parents": []}
]"#;

const CONFIG: &str = r#"[authentication.jwt]
algorithms = ["HS256"]
audience = "docs"
attribute_claims = ["level"]
[[authentication.jwt.keys]]
secret = "entities-test-secret-entities-test-secret"

[policy]
files = ["policies.cedar"]
schema = "schema.cedarschema"
entities = "entities.json"

[[route]]
name = "doc"
methods = ["GET"]
path = "/docs/{id}"
action = "read"
resource = { type = "Doc", id = "{id}" }
"#;

fn allowed(sub: &str, roles: &[&str], path: &str) -> bool {
    allowed_with(sub, roles, path, serde_json::Map::new())
}

fn allowed_with(
    sub: &str,
    roles: &[&str],
    path: &str,
    claims: serde_json::Map<String, serde_json::Value>,
) -> bool {
    let loaded = load_files(&[
        ("schema.cedarschema", SCHEMA),
        ("policies.cedar", POLICIES),
        ("entities.json", ENTITIES),
        ("portcullis.toml", CONFIG),
    ]);
    let spec = TokenSpec {
        sub: Some(sub.into()),
        roles: roles.iter().map(|r| (*r).into()).collect(),
        claims,
        ..TokenSpec::default()
    };
    let h = bearer(&loaded, &spec);
    decide(
        &loaded,
        &Method::GET,
        path,
        &h,
        "192.0.2.1".parse().unwrap(),
    )
    .is_allowed()
}

#[test]
fn a_role_inherits_through_the_file_hierarchy() {
    assert!(allowed("erin", &["editor"], "/docs/d1"));
    assert!(!allowed("erin", &["intern"], "/docs/d1"));
}

#[test]
fn attribute_chains_reach_entities_two_steps_away() {
    // Doc d1 -> owner bob -> dept sales -> head helen.
    assert!(allowed("helen", &[], "/docs/d1"));
    assert!(!allowed("harry", &[], "/docs/d1"));
}

#[test]
fn entity_literals_in_conditions_are_present_and_the_principal_keeps_its_file_entry() {
    // vip's level comes from the file, the minimum from Settings::"global".
    assert!(allowed("vip", &[], "/docs/d1"));
    assert!(!allowed("nobody", &[], "/docs/d1"));
}

#[test]
fn the_entities_file_wins_over_token_claims() {
    let level = |n: i64| {
        let mut m = serde_json::Map::new();
        m.insert("level".into(), serde_json::json!(n));
        m
    };
    // A claim fills an attribute the file does not set...
    assert!(allowed_with("newcomer", &[], "/docs/d1", level(9)));
    assert!(!allowed_with("newcomer", &[], "/docs/d1", level(1)));
    // ...but never replaces one it does (vip is level 9 in the file).
    assert!(allowed_with("vip", &[], "/docs/d1", level(1)));
}

#[test]
fn regression_the_principal_keeps_its_tags() {
    // Found in review: rebuilding the principal dropped its tags, so a
    // forbid on a tag failed open.
    assert!(!allowed("tagged", &["editor"], "/docs/d1"));
    assert!(allowed("erin", &["editor"], "/docs/d1"));
}
