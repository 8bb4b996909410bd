//! An action whose policies are all unconditional permits is allowed
//! without evaluating Cedar; that shortcut must give exactly what Cedar
//! gives, and must not be taken when any policy could say otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{bearer, decide, load_things};
use http::{HeaderMap, Method};
use portcullis_config::Loaded;
use portcullis_config::mint::TokenSpec;
use portcullis_core::decision::Verdict;

const SCHEMA: &str = r#"entity Role;
entity User in [Role];
entity Anonymous;
entity Thing;
action read, write appliesTo { principal: [User, Anonymous], resource: Thing };
"#;

fn loaded(policies: &str) -> Loaded {
    load_things(SCHEMA, policies, "optional")
}

/// The outcome for an anonymous caller and for user `alice`.
fn outcomes(l: &Loaded) -> Vec<(bool, Vec<String>)> {
    let alice = bearer(
        l,
        &TokenSpec {
            sub: Some("alice".into()),
            ..TokenSpec::default()
        },
    );
    [HeaderMap::new(), alice]
        .iter()
        .map(|h| {
            let d = decide(
                l,
                &Method::GET,
                "/things/1",
                h,
                "192.0.2.1".parse().unwrap(),
            );
            let ids = match &d.verdict {
                Verdict::Allow { policies } => policies.iter().map(|p| p.to_string()).collect(),
                Verdict::Deny(den) => den.policies.iter().map(|p| p.to_string()).collect(),
            };
            (d.is_allowed(), ids)
        })
        .collect()
}

#[test]
fn unconditional_permits_allow_with_the_ids_cedar_would_give() {
    let shortcut = loaded(
        "@id(\"b\")\npermit (principal, action == Action::\"read\", resource);\n@id(\"a\")\npermit (principal, action, resource);\n",
    );
    // The same policies with a condition that always holds: evaluated.
    let evaluated = loaded(
        "@id(\"b\")\npermit (principal, action == Action::\"read\", resource) when { true };\n@id(\"a\")\npermit (principal, action, resource) when { true };\n",
    );
    let both = vec![(true, vec!["a".to_owned(), "b".to_owned()]); 2];
    assert_eq!(outcomes(&shortcut), both);
    assert_eq!(outcomes(&evaluated), both);
}

#[test]
fn any_constraint_condition_or_forbid_is_evaluated() {
    // A principal constraint: only alice.
    let l = loaded(
        "@id(\"alice\")\npermit (principal == User::\"alice\", action == Action::\"read\", resource);\n@id(\"all\")\npermit (principal, action == Action::\"write\", resource);\n",
    );
    assert_eq!(
        outcomes(&l).iter().map(|o| o.0).collect::<Vec<_>>(),
        [false, true]
    );
    // A resource constraint that does not hold.
    let l = loaded(
        "@id(\"other\")\npermit (principal, action == Action::\"read\", resource == Thing::\"2\");\n",
    );
    assert!(outcomes(&l).iter().all(|o| !o.0));
    // An unconditional permit beside a forbid: the forbid wins.
    let l = loaded(
        "@id(\"all\")\npermit (principal, action, resource);\n@id(\"no\")\nforbid (principal, action == Action::\"read\", resource) when { context has nothing || true };\n",
    );
    assert_eq!(outcomes(&l), vec![(false, vec!["no".to_owned()]); 2]);
    // A conditional permit beside an unconditional one: each is credited
    // only when it holds.
    let l = loaded(
        "@id(\"a\")\npermit (principal, action, resource);\n@id(\"c\")\npermit (principal, action, resource) when { principal is User };\n",
    );
    assert_eq!(
        outcomes(&l),
        vec![
            (true, vec!["a".to_owned()]),
            (true, vec!["a".to_owned(), "c".to_owned()])
        ]
    );
    // An action group the read action is not in: the policy does not apply
    // (it never reaches the shortcut's test; this is the partition's).
    let l = loaded("@id(\"w\")\npermit (principal, action in [Action::\"write\"], resource);\n");
    assert!(outcomes(&l).iter().all(|o| !o.0));
}
