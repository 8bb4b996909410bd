//! The fail-closed rules of evaluation: a forbid that cannot be evaluated
//! denies; a permit that cannot be evaluated only fails to allow, and is
//! reported when another permit allows.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{bearer, decide, load_things};
use http::Method;
use portcullis_config::Loaded;
use portcullis_config::mint::TokenSpec;
use portcullis_core::ReasonCode;
use portcullis_core::decision::Verdict;

// `email` is declared, so policies using it validate; tokens here carry
// none, so reading it fails at evaluation.
const SCHEMA: &str = r#"entity Role;
entity User in [Role] { email: String };
entity Anonymous;
entity Thing;
action read appliesTo { principal: [User], resource: Thing };
"#;

fn decided(policies: &str) -> portcullis_core::Decision {
    let l: Loaded = load_things(SCHEMA, policies, "required");
    let h = bearer(
        &l,
        &TokenSpec {
            sub: Some("alice".into()),
            ..TokenSpec::default()
        },
    );
    decide(
        &l,
        &Method::GET,
        "/things/1",
        &h,
        "192.0.2.1".parse().unwrap(),
    )
}

#[test]
fn a_forbid_that_cannot_be_evaluated_denies() {
    let d = decided(
        "@id(\"all\")\npermit (principal, action, resource);\n@id(\"evil\")\nforbid (principal, action, resource) when { principal.email like \"*@evil.test\" };\n",
    );
    let den = d.denial().expect("denied");
    assert_eq!(den.reason, ReasonCode::PolicyError);
    assert_eq!(
        (den.face.status, den.face.code.as_str()),
        (403, "AccessDenied")
    );
    assert!(den.hint.contains("policy evil"), "{}", den.hint);
}

#[test]
fn a_permit_that_cannot_be_evaluated_only_fails_to_allow() {
    // Beside a permit that holds: allowed by it, the failure reported.
    let d = decided(
        "@id(\"all\")\npermit (principal, action, resource);\n@id(\"mail\")\npermit (principal, action, resource) when { principal.email like \"*@example.test\" };\n",
    );
    match &d.verdict {
        Verdict::Allow { policies } => {
            assert_eq!(policies.iter().map(|p| &**p).collect::<Vec<_>>(), ["all"])
        }
        Verdict::Deny(den) => panic!("denied: {}", den.hint),
    }
    assert_eq!(d.policy_errors.len(), 1, "{:?}", d.policy_errors);
    assert!(
        d.policy_errors[0].starts_with("policy mail:"),
        "{:?}",
        d.policy_errors
    );
    // Alone: nothing allows.
    let d = decided(
        "@id(\"mail\")\npermit (principal, action, resource) when { principal.email like \"*@example.test\" };\n",
    );
    assert_eq!(d.denial().expect("denied").reason, ReasonCode::AccessDenied);
}

#[test]
fn satisfied_forbids_and_permits_are_named_in_id_order() {
    let d = decided(
        "@id(\"p2\")\npermit (principal, action, resource);\n@id(\"p1\")\npermit (principal == User::\"alice\", action, resource);\n@id(\"p3\")\npermit (principal == User::\"bob\", action, resource);\n",
    );
    match &d.verdict {
        Verdict::Allow { policies } => assert_eq!(
            policies.iter().map(|p| &**p).collect::<Vec<_>>(),
            ["p1", "p2"]
        ),
        Verdict::Deny(den) => panic!("denied: {}", den.hint),
    }
    let d = decided(
        "@id(\"ok\")\npermit (principal, action, resource);\n@id(\"f2\")\nforbid (principal, action, resource == Thing::\"1\");\n@id(\"f1\")\nforbid (principal in Role::\"none\", action, resource) unless { false };\n@id(\"f0\")\nforbid (principal, action, resource) when { resource == Thing::\"1\" };\n",
    );
    let den = d.denial().expect("denied");
    assert_eq!(den.reason, ReasonCode::AccessDenied);
    assert_eq!(
        den.policies.iter().map(|p| &**p).collect::<Vec<_>>(),
        ["f0", "f2"]
    );
}
