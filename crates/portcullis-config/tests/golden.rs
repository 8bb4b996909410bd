//! Golden decisions on the quickstart configuration: request in, status,
//! code, stage and body out, through one helper. The attacker's requests
//! come first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::OnceLock;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use portcullis_config::mint::{TokenSpec, mint};
use portcullis_config::{Loaded, load};
use portcullis_core::{RequestFacts, Stage, render};

const NOW: i64 = 1_800_000_000;

fn quickstart() -> &'static Loaded {
    static LOADED: OnceLock<Loaded> = OnceLock::new();
    LOADED.get_or_init(|| {
        load(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../examples/quickstart/portcullis.toml"),
        )
        .unwrap()
    })
}

fn token(sub: &str, roles: &[&str]) -> String {
    let spec = TokenSpec {
        sub: Some(sub.to_owned()),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        ..TokenSpec::default()
    };
    mint(quickstart(), &spec, NOW).unwrap()
}

/// What the client would see, and where the engine decided.
#[derive(Debug, PartialEq)]
struct Seen {
    status: u16,
    code: String,
    stage: Option<Stage>,
    headers: Vec<(&'static str, String)>,
    body: String,
}

fn send(method: &str, target: &str, headers: &[(&str, &str)]) -> Seen {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let facts = RequestFacts {
        method: &method,
        target,
        headers: &map,
        peer: "192.0.2.1".parse().unwrap(),
        now: NOW,
    };
    let d = quickstart().engine.decide(&facts);
    match d.denial() {
        None => Seen {
            status: 200,
            code: "allow".into(),
            stage: None,
            headers: vec![],
            body: String::new(),
        },
        Some(den) => {
            let accept = map.get("accept").and_then(|v| v.to_str().ok());
            let r = render(&den.face, accept, "rid");
            Seen {
                status: r.status,
                code: den.face.code.clone(),
                stage: Some(den.stage),
                headers: r.headers,
                body: r.body,
            }
        }
    }
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

#[test]
fn path_spellings_cannot_reach_another_route() {
    let cases: &[(&str, u16, &str)] = &[
        ("/public/..%2fadmin/x", 400, "InvalidPath"),
        ("/public/%2e%2e/admin/x", 400, "InvalidPath"),
        ("/public/..;/admin/x", 400, "InvalidPath"),
        ("/public/..%5cadmin/x", 400, "InvalidPath"),
        ("/public/hello%00.txt", 400, "InvalidPath"),
        ("/public/%c0%ae%c0%ae/admin", 400, "InvalidPath"),
        ("/public\\..\\admin/x", 400, "InvalidPath"),
        // Resolved spellings of /admin/x are decided as /admin/x.
        ("/public/../admin/x", 401, "AuthenticationRequired"),
        ("/public/./../../admin/x", 401, "AuthenticationRequired"),
        ("//admin//x", 401, "AuthenticationRequired"),
        ("/%61dmin/x", 401, "AuthenticationRequired"),
        (
            "http://public.example/admin/x",
            401,
            "AuthenticationRequired",
        ),
        // Case is significant: /PUBLIC is not /public.
        ("/PUBLIC/hello", 404, "NotFound"),
        ("*", 400, "InvalidPath"),
    ];
    for (target, status, code) in cases {
        let seen = send("GET", target, &[]);
        assert_eq!(
            (seen.status, seen.code.as_str()),
            (*status, *code),
            "{target}"
        );
    }
}

#[test]
fn forged_and_misplaced_credentials_are_refused() {
    let none = mint(
        quickstart(),
        &TokenSpec {
            sub: Some("root".into()),
            roles: vec!["admin".into()],
            alg: Some("none".into()),
            ..TokenSpec::default()
        },
        NOW,
    )
    .unwrap();
    let seen = send("DELETE", "/users/1", &[("authorization", &bearer(&none))]);
    assert_eq!((seen.status, seen.stage), (401, Some(Stage::Authenticate)));
    // A token in the query string is not a credential.
    let t = token("root", &["admin"]);
    let seen = send("DELETE", &format!("/users/1?access_token={t}"), &[]);
    assert_eq!(seen.code, "AuthenticationRequired");
    // Two Authorization headers are refused before anything else.
    let seen = send(
        "GET",
        "/public/hello",
        &[
            ("authorization", &bearer(&t)),
            ("authorization", &bearer(&t)),
        ],
    );
    assert_eq!((seen.status, seen.code.as_str()), (400, "InvalidRequest"));
    // An absolute-form target and a Host header naming different hosts.
    let seen = send(
        "GET",
        "http://public.example/public/hello",
        &[("host", "admin.example")],
    );
    assert_eq!((seen.status, seen.code.as_str()), (400, "InvalidRequest"));
    assert_eq!(
        send(
            "GET",
            "http://a.example/public/hello",
            &[("host", "A.example:80")]
        )
        .status,
        200
    );
    // `OPTIONS *` is not a path and matches no route, not even a tail.
    assert_eq!(send("OPTIONS", "*", &[]).status, 404);
    // So are two Host headers.
    let seen = send("GET", "/public/hello", &[("host", "a"), ("host", "b")]);
    assert_eq!((seen.status, seen.code.as_str()), (400, "InvalidRequest"));
}

#[test]
fn role_and_subject_strings_cannot_inject_entities() {
    // A role spelled as a Cedar uid is just an odd role name.
    let t = token("mallet", &["Role::\"admin\"", "admin\""]);
    assert_eq!(
        send("DELETE", "/users/1", &[("authorization", &bearer(&t))]).status,
        403
    );
    // A subject that looks like another entity is not that entity.
    let t = token("User::\"123\"", &["user"]);
    assert_eq!(
        send("GET", "/users/123", &[("authorization", &bearer(&t))]).status,
        403
    );
}

#[test]
fn a_concealed_denial_is_byte_identical_to_a_genuine_404() {
    let t = token("dave", &["user"]);
    for accept in [None, Some("application/problem+json"), Some("text/html")] {
        let mut h = vec![("authorization", bearer(&t))];
        let mut plain = vec![];
        if let Some(a) = accept {
            h.push(("accept", a.to_owned()));
            plain.push(("accept", a.to_owned()));
        }
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let plain: Vec<(&str, &str)> = plain.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let concealed = send("GET", "/reports/q3", &h);
        let genuine = send("GET", "/no-such-thing", &plain);
        assert_eq!(concealed.status, 404);
        assert_eq!(
            (concealed.headers, concealed.body),
            (genuine.headers, genuine.body),
            "{accept:?}"
        );
    }
    // Also for a report that does not exist at all, and for a wrong method.
    let h = [("authorization", bearer(&t))];
    let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(
        send("GET", "/reports/nope", &h).body,
        send("GET", "/nope", &[]).body
    );
    assert_eq!(
        send("POST", "/reports/q3", &h).body,
        send("GET", "/nope", &[]).body
    );
}

#[test]
fn the_status_contract_for_the_quickstart() {
    let alice = bearer(&token("alice", &["editor"]));
    let root = bearer(&token("root", &["admin"]));
    let seen = send("DELETE", "/users/123", &[("authorization", &alice)]);
    assert_eq!(seen.status, 403);
    assert_eq!(
        seen.body,
        r#"{"error":"InsufficientPermissions","message":"Deleting users requires the 'admin' role.","status":403,"request_id":"rid"}"#
    );
    assert_eq!(
        send("DELETE", "/users/123", &[("authorization", &root)]).status,
        200
    );
    let seen = send("GET", "/users/123", &[]);
    assert_eq!(
        seen.headers
            .iter()
            .find(|(k, _)| *k == "www-authenticate")
            .unwrap()
            .1,
        r#"Bearer realm="quickstart""#
    );
    let seen = send("PUT", "/public/hello", &[]);
    assert_eq!(
        (
            seen.status,
            seen.headers
                .iter()
                .find(|(k, _)| *k == "allow")
                .map(|(_, v)| v.as_str())
        ),
        (405, Some("GET, HEAD"))
    );
    assert_eq!(send("HEAD", "/public/hello", &[]).status, 200);
}

#[test]
fn client_bodies_never_name_policies_roles_or_keys() {
    let alice = bearer(&token("alice", &["editor"]));
    for (m, p) in [
        ("DELETE", "/users/123"),
        ("GET", "/users/456"),
        ("GET", "/admin/x"),
        ("GET", "/reports/q3"),
    ] {
        for accept in ["application/json", "application/problem+json", "text/html"] {
            let seen = send(m, p, &[("authorization", &alice), ("accept", accept)]);
            for secret in [
                "users-delete-admin",
                "Role::",
                "editor",
                "quickstart-secret",
                "policy",
                "alice",
            ] {
                assert!(
                    !seen.body.contains(secret),
                    "{m} {p} ({accept}) leaks {secret:?}: {}",
                    seen.body
                );
            }
        }
    }
}
