//! Route table: precedence, conflicts, 405, and the trie against a naive
//! reference matcher on random requests.

use super::*;
use proptest::prelude::*;

fn pat(host: Option<&str>, methods: &[Method], t: &str) -> RoutePattern {
    RoutePattern {
        host: host.map(str::to_owned),
        methods: if methods.is_empty() {
            Methods::Any
        } else {
            Methods::only(methods.to_vec())
        },
        template: Template::parse(t).unwrap(),
    }
}

fn found(m: RouteMatch) -> Option<RouteId> {
    match m {
        RouteMatch::Found { route, .. } => Some(route),
        _ => None,
    }
}

#[test]
fn literals_beat_parameters_beat_tails() {
    let t = RouteTable::new(vec![
        pat(None, &[Method::GET], "/files/{*rest}"),
        pat(None, &[Method::GET], "/files/{name}"),
        pat(None, &[Method::GET], "/files/readme"),
    ])
    .unwrap();
    assert_eq!(found(t.find(None, &Method::GET, "/files/readme")), Some(2));
    assert_eq!(found(t.find(None, &Method::GET, "/files/other")), Some(1));
    assert_eq!(found(t.find(None, &Method::GET, "/files/a/b")), Some(0));
    assert_eq!(found(t.find(None, &Method::GET, "/files/")), Some(0));
    assert_eq!(t.find(None, &Method::GET, "/files"), RouteMatch::NotFound);
}

#[test]
fn the_leftmost_difference_decides() {
    let t = RouteTable::new(vec![
        pat(None, &[Method::GET], "/{a}/b"),
        pat(None, &[Method::GET], "/a/{b}"),
    ])
    .unwrap();
    assert_eq!(found(t.find(None, &Method::GET, "/a/b")), Some(1));
}

#[test]
fn a_less_specific_route_serves_a_method_the_specific_one_lacks() {
    let t = RouteTable::new(vec![
        pat(None, &[Method::GET], "/users/me"),
        pat(None, &[Method::DELETE], "/users/{id}"),
    ])
    .unwrap();
    assert_eq!(found(t.find(None, &Method::DELETE, "/users/me")), Some(1));
}

#[test]
fn host_routes_beat_any_host_routes() {
    let t = RouteTable::new(vec![
        pat(None, &[Method::GET], "/x"),
        pat(Some("api.example.com"), &[Method::GET], "/x"),
    ])
    .unwrap();
    assert_eq!(
        found(t.find(Some("api.example.com"), &Method::GET, "/x")),
        Some(1)
    );
    assert_eq!(found(t.find(Some("other"), &Method::GET, "/x")), Some(0));
    assert_eq!(found(t.find(None, &Method::GET, "/x")), Some(0));
}

#[test]
fn same_shape_with_overlapping_methods_is_a_conflict() {
    let err = RouteTable::new(vec![
        pat(None, &[Method::GET], "/users/{id}"),
        pat(None, &[Method::POST], "/users/{id}"),
        pat(None, &[Method::GET, Method::PUT], "/users/{name}"),
    ])
    .unwrap_err();
    assert_eq!(
        err,
        Conflict {
            first: 0,
            second: 2
        }
    );
    // GET implies HEAD, so GET and HEAD overlap.
    assert!(
        RouteTable::new(vec![
            pat(None, &[Method::GET], "/a"),
            pat(None, &[Method::HEAD], "/a"),
        ])
        .is_err()
    );
    assert!(RouteTable::new(vec![pat(None, &[], "/a"), pat(None, &[Method::GET], "/a")]).is_err());
    // Different hosts, or a trailing slash, are different shapes.
    assert!(
        RouteTable::new(vec![
            pat(None, &[Method::GET], "/a"),
            pat(Some("h"), &[Method::GET], "/a"),
            pat(None, &[Method::GET], "/a/"),
        ])
        .is_ok()
    );
}

#[test]
fn method_not_allowed_lists_every_method_of_the_path() {
    let t = RouteTable::new(vec![
        pat(None, &[Method::GET], "/public/{*rest}"),
        pat(None, &[Method::POST], "/public/upload"),
    ])
    .unwrap();
    match t.find(None, &Method::PUT, "/public/upload") {
        RouteMatch::MethodNotAllowed { allow, routes } => {
            assert_eq!(allow, vec![Method::GET, Method::HEAD, Method::POST]);
            assert_eq!(routes.len(), 2);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn trailing_slash_is_significant() {
    let t = RouteTable::new(vec![pat(None, &[Method::GET], "/docs")]).unwrap();
    assert_eq!(t.find(None, &Method::GET, "/docs/"), RouteMatch::NotFound);
    let t = RouteTable::new(vec![pat(None, &[Method::GET], "/")]).unwrap();
    assert_eq!(found(t.find(None, &Method::GET, "/")), Some(0));
}

#[test]
fn parameters_are_decoded() {
    let t = RouteTable::new(vec![pat(None, &[], "/u/{id}/f/{*rest}")]).unwrap();
    match t.find(None, &Method::GET, "/u/caf%C3%A9/f/a%20b/c/") {
        RouteMatch::Found { params, .. } => assert_eq!(
            params,
            vec![
                ("id".to_owned(), "café".to_owned()),
                ("rest".to_owned(), "a b/c".to_owned())
            ]
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_templates_are_refused_with_a_reason() {
    assert_eq!(Template::parse("users"), Err(TemplateError::NotAbsolute));
    assert!(matches!(
        Template::parse("/a/../b"),
        Err(TemplateError::NotCanonical { .. })
    ));
    assert!(matches!(
        Template::parse("/a/%7e"),
        Err(TemplateError::NotCanonical { .. })
    ));
    assert!(matches!(
        Template::parse("/a b"),
        Err(TemplateError::NotCanonical { .. })
    ));
    assert!(matches!(
        Template::parse("/a?b"),
        Err(TemplateError::NotCanonical { .. })
    ));
    assert!(matches!(
        Template::parse("/a//b"),
        Err(TemplateError::NotCanonical { .. })
    ));
    assert!(matches!(
        Template::parse("/a{id}"),
        Err(TemplateError::BadParameter(_))
    ));
    assert!(matches!(
        Template::parse("/{1x}"),
        Err(TemplateError::BadParameter(_))
    ));
    assert_eq!(Template::parse("/{*a}/b"), Err(TemplateError::TailNotLast));
    assert_eq!(
        Template::parse("/{a}/{a}"),
        Err(TemplateError::DuplicateParameter("a".into()))
    );
}

/// The reference: every route that matches path and method, most specific by
/// host first and then by rank.
fn naive(
    patterns: &[RoutePattern],
    host: Option<&str>,
    method: &Method,
    path: &str,
) -> Option<RouteId> {
    let segs = PathSegments::of(path);
    patterns
        .iter()
        .enumerate()
        .filter(|(_, p)| p.host.is_none() || p.host.as_deref() == host)
        .filter(|(_, p)| p.methods.contains(method) && p.template.matches(&segs))
        .max_by(|(_, a), (_, b)| {
            (a.host.is_some(), a.template.rank()).cmp(&(b.host.is_some(), b.template.rank()))
        })
        .map(|(i, _)| i)
}

fn seg() -> impl Strategy<Value = String> {
    prop_oneof![Just("a"), Just("b"), Just("c")].prop_map(str::to_owned)
}

fn tseg() -> impl Strategy<Value = String> {
    prop_oneof![seg(), Just("{p}".to_owned())]
}

fn template_src() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(tseg(), 0..4),
        prop::bool::ANY,
        prop::bool::ANY,
    )
        .prop_map(|(segs, tail, slash)| {
            let mut named: Vec<String> = segs
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    if s == "{p}" {
                        format!("{{p{i}}}")
                    } else {
                        s.clone()
                    }
                })
                .collect();
            if tail {
                named.push("{*t}".to_owned());
            }
            let mut s = format!("/{}", named.join("/"));
            if slash && !tail && !named.is_empty() {
                s.push('/');
            }
            s
        })
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![Just(Method::GET), Just(Method::POST), Just(Method::DELETE)]
}

fn pattern() -> impl Strategy<Value = RoutePattern> {
    (
        template_src(),
        prop::collection::vec(method(), 0..2),
        prop::option::of(Just("h".to_owned())),
    )
        .prop_map(|(t, ms, host)| RoutePattern {
            host,
            methods: if ms.is_empty() {
                Methods::Any
            } else {
                Methods::only(ms)
            },
            template: Template::parse(&t).unwrap(),
        })
}

fn request_path() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop_oneof![seg(), Just("x".to_owned())], 0..5),
        prop::bool::ANY,
    )
        .prop_map(|(s, slash)| {
            let mut p = format!("/{}", s.join("/"));
            if slash && !s.is_empty() {
                p.push('/');
            }
            p
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn trie_agrees_with_the_naive_matcher(
        pats in prop::collection::vec(pattern(), 1..12),
        reqs in prop::collection::vec((prop::option::of(Just("h")), method(), request_path()), 1..20),
    ) {
        // Drop conflicting patterns the way the loader would refuse them.
        let mut kept: Vec<RoutePattern> = Vec::new();
        for p in pats {
            if RouteTable::new(kept.iter().cloned().chain([p.clone()]).collect()).is_ok() {
                kept.push(p);
            }
        }
        let table = RouteTable::new(kept.clone()).unwrap();
        for (host, m, path) in reqs {
            let got = found(table.find(host, &m, &path));
            prop_assert_eq!(got, naive(&kept, host, &m, &path), "{:?} {} {}", host, m, path);
        }
    }
}

#[test]
fn regression_the_root_beats_a_root_tail() {
    // Found by the property test: `/` and `/{*t}` both match `/`.
    let t = RouteTable::new(vec![pat(None, &[], "/{*t}"), pat(None, &[], "/")]).unwrap();
    assert_eq!(found(t.find(None, &Method::GET, "/")), Some(1));
    assert_eq!(found(t.find(None, &Method::GET, "/x")), Some(0));
}

#[test]
fn regression_options_asterisk_is_not_a_path() {
    // Found in review: `*` was split like `/*` and matched catch-all routes.
    let t = RouteTable::new(vec![pat(None, &[], "/{*rest}"), pat(None, &[], "/{p}")]).unwrap();
    assert_eq!(t.find(None, &Method::OPTIONS, "*"), RouteMatch::NotFound);
    assert!(found(t.find(None, &Method::OPTIONS, "/x")).is_some());
}
