//! Normalisation: the attacker's spellings first, then the ordinary cases, then
//! the properties that make the canonical path trustworthy.

use super::*;
use proptest::prelude::*;

fn get(raw: &str) -> Result<String, PathError> {
    normalize_target(&Method::GET, raw).map(|t| t.path)
}

#[test]
fn encoded_separators_and_controls_are_refused() {
    assert_eq!(get("/public/..%2fadmin"), Err(PathError::EncodedSlash));
    assert_eq!(get("/public/..%2Fadmin"), Err(PathError::EncodedSlash));
    assert_eq!(get("/a%5cb"), Err(PathError::EncodedBackslash));
    assert_eq!(get("/a%00b"), Err(PathError::EncodedControl));
    assert_eq!(get("/a%0d%0aSet-Cookie:x"), Err(PathError::EncodedControl));
    assert_eq!(get("/a%7f"), Err(PathError::EncodedControl));
}

#[test]
fn raw_backslashes_and_bytes_outside_visible_ascii_are_refused() {
    assert_eq!(get("/a\\..\\admin"), Err(PathError::Backslash));
    assert_eq!(get("/a b"), Err(PathError::ForbiddenByte));
    assert_eq!(get("/a\tb"), Err(PathError::ForbiddenByte));
    assert_eq!(get("/caf\u{e9}"), Err(PathError::ForbiddenByte));
    assert_eq!(get("/a#frag"), Err(PathError::Fragment));
}

#[test]
fn encoded_dot_segments_are_refused_rather_than_guessed() {
    assert_eq!(
        get("/public/%2e%2e/admin"),
        Err(PathError::EncodedDotSegment)
    );
    assert_eq!(get("/public/.%2E/admin"), Err(PathError::EncodedDotSegment));
    assert_eq!(get("/public/%2e/admin"), Err(PathError::EncodedDotSegment));
    // A dot that is part of a name is fine, encoded or not.
    assert_eq!(get("/files/a%2Etxt").as_deref(), Ok("/files/a.txt"));
}

#[test]
fn servlet_path_parameters_are_refused() {
    // Tomcat, Jetty and Spring strip `;...`, so these are /admin upstream.
    assert_eq!(get("/public/..;/admin"), Err(PathError::PathParameter));
    assert_eq!(get("/public/.;x/admin"), Err(PathError::PathParameter));
    assert_eq!(get("/admin;x/settings"), Err(PathError::PathParameter));
    assert_eq!(get("/users/root;x"), Err(PathError::PathParameter));
    // An encoded ';' is data, not a parameter, and stays encoded.
    assert_eq!(get("/a%3bb").as_deref(), Ok("/a%3Bb"));
    // A ';' in the query is the query's business.
    assert!(get("/a?x=1;y=2").is_ok());
}

#[test]
fn regression_characters_not_allowed_raw_have_one_spelling() {
    // Found in review: `/a|b` and `/a%7Cb` were two canonical paths.
    assert_eq!(get("/a|b").as_deref(), Ok("/a%7Cb"));
    assert_eq!(get("/a%7cb").as_deref(), Ok("/a%7Cb"));
    assert_eq!(
        get("/x/{y}/\"q\"/[z]/^`<>").as_deref(),
        Ok("/x/%7By%7D/%22q%22/%5Bz%5D/%5E%60%3C%3E")
    );
}

#[test]
fn escapes_of_path_safe_characters_are_decoded_as_upstreams_read_them() {
    assert_eq!(get("/%40admin").as_deref(), Ok("/@admin"));
    assert_eq!(
        get("/a%3Ab%2Cc%3D%2B%21%24%26%27%28%29%2A").as_deref(),
        Ok("/a:b,c=+!$&'()*")
    );
}

#[test]
fn escapes_must_be_well_formed_and_decode_to_utf8() {
    assert_eq!(get("/a%zz"), Err(PathError::BadEscape));
    assert_eq!(get("/a%4"), Err(PathError::BadEscape));
    assert_eq!(get("/a?x=%g1"), Err(PathError::BadEscape));
    // Overlong encoding of '/' and of '.'.
    assert_eq!(get("/a%c0%afb"), Err(PathError::InvalidUtf8));
    assert_eq!(get("/a%c0%ae%c0%ae/b"), Err(PathError::InvalidUtf8));
    // A lone continuation byte and a truncated sequence.
    assert_eq!(get("/%80"), Err(PathError::InvalidUtf8));
    assert_eq!(get("/%e2%82"), Err(PathError::InvalidUtf8));
    // Real UTF-8 is kept, escaped, with upper-case hex.
    assert_eq!(get("/caf%c3%a9").as_deref(), Ok("/caf%C3%A9"));
}

#[test]
fn dot_segments_are_resolved_and_never_climb_above_the_root() {
    assert_eq!(get("/public/../admin/x").as_deref(), Ok("/admin/x"));
    assert_eq!(get("/../../etc/passwd").as_deref(), Ok("/etc/passwd"));
    assert_eq!(get("/a/./b/../c").as_deref(), Ok("/a/c"));
    assert_eq!(get("/a/b/..").as_deref(), Ok("/a/"));
    assert_eq!(get("/a/.").as_deref(), Ok("/a/"));
    assert_eq!(get("/..").as_deref(), Ok("/"));
}

#[test]
fn unreserved_escapes_are_decoded_and_others_kept() {
    assert_eq!(get("/%75sers/%31%32%33").as_deref(), Ok("/users/123"));
    assert_eq!(get("/a%7eb%2d%5f").as_deref(), Ok("/a~b-_"));
    assert_eq!(get("/a%20b%3f%25").as_deref(), Ok("/a%20b%3F%25"));
}

#[test]
fn slashes_collapse_and_a_trailing_slash_is_kept() {
    assert_eq!(get("//users///123").as_deref(), Ok("/users/123"));
    assert_eq!(get("/users/123/").as_deref(), Ok("/users/123/"));
    assert_eq!(get("/users//").as_deref(), Ok("/users/"));
    assert_eq!(get("/").as_deref(), Ok("/"));
    // Case is significant.
    assert_eq!(get("/Users").as_deref(), Ok("/Users"));
}

#[test]
fn query_is_kept_apart_from_the_path() {
    let t = normalize_target(&Method::GET, "/a/../b?x=/../y&z=%2F")
        .unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(t.path, "/b");
    assert_eq!(t.query.as_deref(), Some("x=/../y&z=%2F"));
}

#[test]
fn absolute_form_is_matched_on_its_path() {
    let t = normalize_target(&Method::GET, "http://API.example.com:8080/x/../users/1?q=1")
        .unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(t.path, "/users/1");
    assert_eq!(t.authority_host.as_deref(), Some("api.example.com"));
    assert_eq!(t.query.as_deref(), Some("q=1"));
    assert_eq!(get("http://h").as_deref(), Ok("/"));
    assert_eq!(get("http://h?x").as_deref(), Ok("/"));
    assert_eq!(get("http://user@h/x"), Err(PathError::BadAuthority));
    assert_eq!(get("ftp://h/x"), Err(PathError::UnsupportedForm));
    assert_eq!(get("h:443"), Err(PathError::UnsupportedForm));
    assert_eq!(get(""), Err(PathError::UnsupportedForm));
}

#[test]
fn asterisk_is_only_for_options() {
    assert_eq!(get("*"), Err(PathError::AsteriskNotOptions));
    let t = normalize_target(&Method::OPTIONS, "*").unwrap_or_else(|e| unreachable!("{e}"));
    assert!(t.is_asterisk());
}

#[test]
fn host_values_are_canonicalised_or_refused() {
    assert_eq!(host_of("Example.COM:80").as_deref(), Some("example.com"));
    assert_eq!(host_of("example.com.").as_deref(), Some("example.com"));
    assert_eq!(host_of("[::1]:8080").as_deref(), Some("[::1]"));
    assert_eq!(host_of("a@b"), None);
    assert_eq!(host_of("a b"), None);
    assert_eq!(host_of("a:b"), None);
    assert_eq!(host_of(""), None);
}

#[test]
fn decode_segment_reverses_the_kept_escapes() {
    assert_eq!(decode_segment("caf%C3%A9%20x").as_deref(), Some("café x"));
}

/// Paths built from the pieces attackers like to combine.
fn path_strategy() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("a".to_owned()),
        Just("admin".to_owned()),
        Just(".".to_owned()),
        Just("..".to_owned()),
        Just("".to_owned()),
        Just("%2e".to_owned()),
        Just("%2E%2e".to_owned()),
        Just("%2f".to_owned()),
        Just("%41".to_owned()),
        Just("%c3%a9".to_owned()),
        Just("%c0%ae".to_owned()),
        Just("%25".to_owned()),
        Just("%3b".to_owned()),
        Just(";".to_owned()),
        Just("..;".to_owned()),
        Just("%40".to_owned()),
        Just("%3a".to_owned()),
        Just("|".to_owned()),
        Just("%7c".to_owned()),
        Just("[x]".to_owned()),
        Just("%".to_owned()),
        Just("~x".to_owned()),
        "[a-z0-9._~-]{1,4}",
    ];
    prop::collection::vec(piece, 0..8).prop_map(|v| format!("/{}", v.join("/")))
}

proptest! {
    #[test]
    fn normalising_twice_changes_nothing(p in path_strategy()) {
        if let Ok(once) = normalize_path(&p) {
            prop_assert_eq!(normalize_path(&once), Ok(once.clone()));
        }
    }

    #[test]
    fn the_result_never_holds_a_dot_or_empty_segment(p in path_strategy()) {
        if let Ok(c) = normalize_path(&p) {
            prop_assert!(c.starts_with('/'));
            let body = c.trim_end_matches('/');
            for seg in body.split('/').skip(1) {
                prop_assert!(seg != "." && seg != "..", "{} -> {}", p, c);
                prop_assert!(!seg.is_empty(), "{} -> {}", p, c);
                prop_assert!(!seg.to_ascii_lowercase().contains("%2f"));
            }
            // Every segment decodes to UTF-8, so route parameters always exist.
            for seg in c.split('/') {
                prop_assert!(decode_segment(seg).is_some());
            }
        }
    }

    #[test]
    fn canonical_segments_hold_only_needed_escapes(p in path_strategy()) {
        if let Ok(c) = normalize_path(&p) {
            let bytes = c.as_bytes();
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i] == b'%' {
                    let v = hex_pair(bytes, i).map_err(|e| TestCaseError::fail(e.describe()))?;
                    prop_assert!(!is_unreserved(v) && !is_decoded_pchar(v), "{} kept a decodable escape", c);
                    prop_assert!(bytes[i + 1..i + 3].iter().all(|b| !b.is_ascii_lowercase()));
                    i += 3;
                } else {
                    i += 1;
                }
            }
        }
    }
}

/// A canonical path and a random other spelling of it: characters
/// percent-encoded (either hex case) or raw, `.` segments, `x/..` detours and
/// doubled slashes inserted.
fn spelling_strategy() -> impl Strategy<Value = (String, String)> {
    let segment =
        "[a-zA-Z0-9._~@:!,=|{}^-]{1,6}".prop_filter("not a dot segment", |s| s != "." && s != "..");
    (
        prop::collection::vec(segment, 0..5),
        prop::bool::ANY,
        prop::collection::vec(0u8..6, 0..40),
    )
        .prop_map(|(segs, slash, noise)| {
            let canon_seg = |seg: &String| -> String {
                seg.chars()
                    .map(|c| match c {
                        '|' | '{' | '}' | '^' => format!("%{:02X}", c as u32),
                        _ => c.to_string(),
                    })
                    .collect()
            };
            let canonical = if segs.is_empty() {
                "/".to_owned()
            } else {
                let joined: Vec<String> = segs.iter().map(canon_seg).collect();
                format!("/{}{}", joined.join("/"), if slash { "/" } else { "" })
            };
            let mut n = noise.into_iter().cycle();
            let mut out = String::new();
            for seg in &segs {
                match n.next().unwrap_or(0) {
                    1 => out.push_str("/."),
                    2 => out.push_str("/detour/.."),
                    3 => out.push('/'),
                    _ => {}
                }
                out.push('/');
                for c in seg.chars() {
                    match n.next().unwrap_or(0) {
                        4 => out.push_str(&format!("%{:02X}", c as u32)),
                        5 => out.push_str(&format!("%{:02x}", c as u32)),
                        _ => out.push(c),
                    }
                }
            }
            if slash || segs.is_empty() {
                out.push('/');
            }
            (canonical, out)
        })
}

proptest! {
    #[test]
    fn every_spelling_of_a_path_normalises_to_the_same_canonical_path((canonical, spelling) in spelling_strategy()) {
        // The route table sees only the canonical path, so two spellings of
        // one path can never reach different routes.
        prop_assert_eq!(normalize_path(&spelling), Ok(canonical.clone()), "spelling {}", spelling);
    }
}
