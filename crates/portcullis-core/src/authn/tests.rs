//! Authentication: forgeries and confusions first, then every algorithm, the
//! claim rules, the cache, and credential extraction.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderValue, header::AUTHORIZATION};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, crypto};
use serde_json::{Value, json};

use super::*;
use crate::authn::apikey::{ApiKeyEntry, digest_hex};
use crate::authn::jwt::{ClaimMapping, KeyFamily};

const NOW: i64 = 1_800_000_000;
const SECRET: &[u8] = b"a-test-secret-that-is-long-enough-for-hs512-----------------";

fn key(name: &str) -> Vec<u8> {
    let path = format!("{}/../../testdata/keys/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn settings(algs: &[Algorithm]) -> JwtSettings {
    JwtSettings {
        algorithms: algs.to_vec(),
        issuer: Some("https://issuer.test".into()),
        audiences: vec!["api".into()],
        leeway: 30,
        claims: ClaimMapping {
            attributes: vec!["email".into()],
            ..ClaimMapping::default()
        },
        ..JwtSettings::default()
    }
}

fn hmac_key(kid: Option<&str>) -> VerificationKey {
    VerificationKey {
        kid: kid.map(str::to_owned),
        alg: None,
        family: KeyFamily::Hmac,
        key: DecodingKey::from_secret(SECRET),
    }
}

fn rsa_key() -> VerificationKey {
    VerificationKey {
        kid: Some("rsa".into()),
        alg: None,
        family: KeyFamily::Rsa,
        key: DecodingKey::from_rsa_pem(&key("rsa.pub.pem")).unwrap(),
    }
}

fn verifier(algs: &[Algorithm], keys: Vec<VerificationKey>) -> JwtVerifier {
    JwtVerifier::new(settings(algs), KeySet { keys })
}

fn claims() -> Value {
    json!({"sub": "alice", "iss": "https://issuer.test", "aud": "api", "exp": NOW + 600, "roles": ["editor"], "scope": "read write", "email": "a@x.test"})
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

/// A token with exactly this header and claims, signed by `key` with `alg`.
fn forge(header: Value, claims: &Value, key: &EncodingKey, alg: Algorithm) -> String {
    let input = format!("{}.{}", b64(&header), b64(claims));
    let sig = crypto::sign(input.as_bytes(), key, alg).unwrap();
    format!("{input}.{sig}")
}

fn hs(alg: Algorithm, claims: &Value) -> String {
    let name = format!("{alg:?}");
    forge(
        json!({"alg": name, "typ": "JWT"}),
        claims,
        &EncodingKey::from_secret(SECRET),
        alg,
    )
}

#[test]
fn alg_none_is_refused_in_every_spelling() {
    let v = verifier(&[Algorithm::HS256], vec![hmac_key(None)]);
    for alg in ["none", "None", "NONE", "nOnE"] {
        let input = format!("{}.{}", b64(&json!({"alg": alg})), b64(&claims()));
        assert_eq!(
            v.verify(&format!("{input}."), NOW),
            Err(TokenError::Malformed),
            "{alg}"
        );
        assert_eq!(
            v.verify(&format!("{input}.AAAA"), NOW),
            Err(TokenError::AlgorithmNotAllowed(alg.into())),
            "{alg}"
        );
    }
}

#[test]
fn hmac_signed_with_the_public_key_is_refused() {
    // The classic confusion: the attacker uses the RSA public key as an HMAC secret.
    let v = verifier(&[Algorithm::RS256, Algorithm::HS256], vec![rsa_key()]);
    let token = forge(
        json!({"alg": "HS256", "kid": "rsa"}),
        &claims(),
        &EncodingKey::from_secret(&key("rsa.pub.pem")),
        Algorithm::HS256,
    );
    assert_eq!(v.verify(&token, NOW), Err(TokenError::NoKeyForAlgorithm));
}

#[test]
fn algorithms_outside_the_allow_list_or_the_key_pin_are_refused() {
    let rsa_priv = EncodingKey::from_rsa_pem(&key("rsa.key")).unwrap();
    let v = verifier(&[Algorithm::RS256], vec![rsa_key()]);
    let t = forge(
        json!({"alg": "RS384"}),
        &claims(),
        &rsa_priv,
        Algorithm::RS384,
    );
    assert_eq!(
        v.verify(&t, NOW),
        Err(TokenError::AlgorithmNotAllowed("RS384".into()))
    );
    // A key pinned to RS256 (as a JWKS `alg` pins it) refuses PS256 even when allowed.
    let mut pinned = rsa_key();
    pinned.alg = Some(Algorithm::RS256);
    let v = verifier(&[Algorithm::RS256, Algorithm::PS256], vec![pinned]);
    let t = forge(
        json!({"alg": "PS256"}),
        &claims(),
        &rsa_priv,
        Algorithm::PS256,
    );
    assert_eq!(v.verify(&t, NOW), Err(TokenError::NoKeyForAlgorithm));
}

#[test]
fn keys_carried_by_the_token_are_never_used() {
    let attacker = EncodingKey::from_rsa_pem(&key("rsa2.key")).unwrap();
    let v = verifier(&[Algorithm::RS256], vec![rsa_key()]);
    for header in [
        json!({"alg": "RS256", "jwk": {"kty": "RSA", "n": "AQAB", "e": "AQAB"}}),
        json!({"alg": "RS256", "jku": "http://127.0.0.1:1/jwks.json"}),
        json!({"alg": "RS256", "x5u": "http://127.0.0.1:1/cert.pem"}),
        json!({"alg": "RS256", "x5c": ["MIIB"]}),
    ] {
        let t = forge(header.clone(), &claims(), &attacker, Algorithm::RS256);
        assert_eq!(v.verify(&t, NOW), Err(TokenError::BadSignature), "{header}");
    }
}

#[test]
fn unknown_critical_headers_and_non_jwt_types_are_refused() {
    let v = verifier(&[Algorithm::HS256], vec![hmac_key(None)]);
    let key = EncodingKey::from_secret(SECRET);
    let t = forge(
        json!({"alg": "HS256", "crit": ["exp"]}),
        &claims(),
        &key,
        Algorithm::HS256,
    );
    assert_eq!(v.verify(&t, NOW), Err(TokenError::UnsupportedCritical));
    let t = forge(
        json!({"alg": "HS256", "b64": false, "crit": ["b64"]}),
        &claims(),
        &key,
        Algorithm::HS256,
    );
    assert_eq!(v.verify(&t, NOW), Err(TokenError::UnsupportedCritical));
    let t = forge(
        json!({"alg": "HS256", "typ": "JWE"}),
        &claims(),
        &key,
        Algorithm::HS256,
    );
    assert_eq!(v.verify(&t, NOW), Err(TokenError::WrongType));
    let t = forge(
        json!({"alg": "HS256", "typ": "application/at+jwt"}),
        &claims(),
        &key,
        Algorithm::HS256,
    );
    assert!(v.verify(&t, NOW).is_ok());
}

#[test]
fn claims_of_the_wrong_type_are_refusals_not_absences() {
    // CVE-2026-25537: jsonwebtoken < 10.3.0 treated these as absent.
    let v = verifier(&[Algorithm::HS256], vec![hmac_key(None)]);
    let cases = [
        ("exp", json!("soon")),
        ("exp", json!(null)),
        ("nbf", json!("later")),
        ("iat", json!([1])),
        ("iss", json!(7)),
        ("aud", json!(42)),
        ("aud", json!(["api", 3])),
        ("sub", json!(123)),
        ("roles", json!({"admin": true})),
        ("scope", json!(["read"])),
        ("scp", json!(5)),
        ("email", json!(1.5)),
    ];
    for (claim, value) in cases {
        let mut c = claims();
        c[claim] = value.clone();
        let got = v.verify(&hs(Algorithm::HS256, &c), NOW);
        assert_eq!(
            got,
            Err(TokenError::ClaimType(claim.into())),
            "{claim}={value}"
        );
    }
}

#[test]
fn nbf_is_checked_with_leeway() {
    let v = verifier(&[Algorithm::HS256], vec![hmac_key(None)]);
    let mut c = claims();
    c["nbf"] = json!(NOW + 31);
    assert_eq!(
        v.verify(&hs(Algorithm::HS256, &c), NOW),
        Err(TokenError::NotYetValid)
    );
    c["nbf"] = json!(NOW + 29);
    assert!(v.verify(&hs(Algorithm::HS256, &c), NOW).is_ok());
}

#[test]
fn exp_is_checked_with_leeway_and_required() {
    let v = verifier(&[Algorithm::HS256], vec![hmac_key(None)]);
    let mut c = claims();
    c["exp"] = json!(NOW - 30);
    assert_eq!(
        v.verify(&hs(Algorithm::HS256, &c), NOW),
        Err(TokenError::Expired)
    );
    c["exp"] = json!(NOW - 29);
    assert!(v.verify(&hs(Algorithm::HS256, &c), NOW).is_ok());
    c.as_object_mut().unwrap().remove("exp");
    assert_eq!(
        v.verify(&hs(Algorithm::HS256, &c), NOW),
        Err(TokenError::MissingClaim("exp".into()))
    );
}

#[test]
fn issuer_and_audience_must_match() {
    let v = verifier(&[Algorithm::HS256], vec![hmac_key(None)]);
    let mut c = claims();
    c["iss"] = json!("https://evil.test");
    assert_eq!(
        v.verify(&hs(Algorithm::HS256, &c), NOW),
        Err(TokenError::WrongIssuer)
    );
    let mut c = claims();
    c["aud"] = json!("other");
    assert_eq!(
        v.verify(&hs(Algorithm::HS256, &c), NOW),
        Err(TokenError::WrongAudience)
    );
    c["aud"] = json!(["other", "api"]);
    assert!(v.verify(&hs(Algorithm::HS256, &c), NOW).is_ok());
    c.as_object_mut().unwrap().remove("aud");
    assert_eq!(
        v.verify(&hs(Algorithm::HS256, &c), NOW),
        Err(TokenError::MissingClaim("aud".into()))
    );
}

#[test]
fn tampering_and_malformed_tokens_are_refused() {
    let v = verifier(&[Algorithm::HS256], vec![hmac_key(None)]);
    let good = hs(Algorithm::HS256, &claims());
    let mut parts: Vec<&str> = good.split('.').collect();
    let mut evil = claims();
    evil["roles"] = json!(["admin"]);
    let evil_b64 = b64(&evil);
    parts[1] = &evil_b64;
    assert_eq!(
        v.verify(&parts.join("."), NOW),
        Err(TokenError::BadSignature)
    );
    for bad in [
        "",
        "a",
        "a.b",
        "a.b.c.d",
        "e30.e30.",
        "!!.e30.AAAA",
        "W10.e30.AAAA",
    ] {
        assert_eq!(v.verify(bad, NOW), Err(TokenError::Malformed), "{bad}");
    }
    // Padded base64 is not base64url as JWS defines it.
    let padded = format!("{}=", good);
    assert!(v.verify(&padded, NOW).is_err());
    let huge = "a".repeat(9000);
    assert_eq!(v.verify(&huge, NOW), Err(TokenError::TooLarge));
}

#[test]
fn an_unknown_kid_is_named_so_keys_can_be_refreshed() {
    let v = verifier(&[Algorithm::HS256], vec![hmac_key(Some("k1"))]);
    let t = forge(
        json!({"alg": "HS256", "kid": "k2"}),
        &claims(),
        &EncodingKey::from_secret(SECRET),
        Algorithm::HS256,
    );
    assert_eq!(
        v.verify(&t, NOW),
        Err(TokenError::UnknownKeyId("k2".into()))
    );
    let t = forge(
        json!({"alg": "HS256", "kid": "k1"}),
        &claims(),
        &EncodingKey::from_secret(SECRET),
        Algorithm::HS256,
    );
    assert!(v.verify(&t, NOW).is_ok());
}

#[test]
fn every_supported_algorithm_verifies_with_its_key_type() {
    // Also proves the crypto backend is compiled in (jsonwebtoken 10+ panics
    // at first use without one).
    let cases: Vec<(Algorithm, EncodingKey, VerificationKey)> = vec![
        (
            Algorithm::HS256,
            EncodingKey::from_secret(SECRET),
            hmac_key(None),
        ),
        (
            Algorithm::HS384,
            EncodingKey::from_secret(SECRET),
            hmac_key(None),
        ),
        (
            Algorithm::HS512,
            EncodingKey::from_secret(SECRET),
            hmac_key(None),
        ),
        (
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(&key("rsa.key")).unwrap(),
            rsa_key(),
        ),
        (
            Algorithm::RS384,
            EncodingKey::from_rsa_pem(&key("rsa.key")).unwrap(),
            rsa_key(),
        ),
        (
            Algorithm::RS512,
            EncodingKey::from_rsa_pem(&key("rsa.key")).unwrap(),
            rsa_key(),
        ),
        (
            Algorithm::PS256,
            EncodingKey::from_rsa_pem(&key("rsa.key")).unwrap(),
            rsa_key(),
        ),
        (
            Algorithm::PS384,
            EncodingKey::from_rsa_pem(&key("rsa.key")).unwrap(),
            rsa_key(),
        ),
        (
            Algorithm::PS512,
            EncodingKey::from_rsa_pem(&key("rsa.key")).unwrap(),
            rsa_key(),
        ),
        (
            Algorithm::ES256,
            EncodingKey::from_ec_pem(&key("ec256.key")).unwrap(),
            VerificationKey {
                kid: None,
                alg: None,
                family: KeyFamily::EcP256,
                key: DecodingKey::from_ec_pem(&key("ec256.pub.pem")).unwrap(),
            },
        ),
        (
            Algorithm::ES384,
            EncodingKey::from_ec_pem(&key("ec384.key")).unwrap(),
            VerificationKey {
                kid: None,
                alg: None,
                family: KeyFamily::EcP384,
                key: DecodingKey::from_ec_pem(&key("ec384.pub.pem")).unwrap(),
            },
        ),
        (
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(&key("ed25519.key")).unwrap(),
            VerificationKey {
                kid: None,
                alg: None,
                family: KeyFamily::Ed25519,
                key: DecodingKey::from_ed_pem(&key("ed25519.pub.pem")).unwrap(),
            },
        ),
    ];
    for (alg, enc, dec) in cases {
        let v = verifier(&[alg], vec![dec]);
        let t = forge(json!({"alg": format!("{alg:?}")}), &claims(), &enc, alg);
        let id = v
            .verify(&t, NOW)
            .unwrap_or_else(|e| panic!("{alg:?}: {e:?}"));
        assert_eq!(id.subject, "alice");
        // The same token with one signature byte flipped fails.
        let mut bytes = t.into_bytes();
        let last = bytes.len() - 2;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(bytes).unwrap();
        assert!(
            v.verify(&flipped, NOW).is_err(),
            "{alg:?} accepted a flipped signature"
        );
    }
}

#[test]
fn claims_map_to_roles_scopes_and_attributes() {
    let mut s = settings(&[Algorithm::HS256]);
    s.claims.roles = vec!["realm_access".into(), "roles".into()];
    let v = JwtVerifier::new(
        s,
        KeySet {
            keys: vec![hmac_key(None)],
        },
    );
    let mut c = claims();
    c["realm_access"] = json!({"roles": "admin"});
    c["scp"] = json!(["orders:write"]);
    let id = v.verify(&hs(Algorithm::HS256, &c), NOW).unwrap();
    assert_eq!(id.roles, vec!["admin"]);
    assert_eq!(id.scopes, vec!["orders:write", "read", "write"]);
    assert_eq!(id.attributes, vec![("email".to_owned(), json!("a@x.test"))]);
}

#[test]
fn the_cache_answers_repeats_and_still_honours_exp() {
    let v = verifier(&[Algorithm::HS256], vec![hmac_key(None)]);
    let t = hs(Algorithm::HS256, &claims());
    let a = v.verify(&t, NOW).unwrap();
    let b = v.verify(&t, NOW + 1).unwrap();
    assert!(
        Arc::ptr_eq(&a, &b),
        "second verification should come from the cache"
    );
    // Past exp + leeway the cached entry no longer answers.
    assert_eq!(v.verify(&t, NOW + 630), Err(TokenError::Expired));
    // Rotating keys drops cached verifications.
    v.verify(&t, NOW).unwrap();
    v.replace_keys(KeySet {
        keys: vec![rsa_key()],
    });
    assert!(v.verify(&t, NOW).is_err());
}

#[test]
fn the_cache_stays_bounded() {
    let mut s = settings(&[Algorithm::HS256]);
    s.cache_capacity = 8;
    let v = JwtVerifier::new(
        s,
        KeySet {
            keys: vec![hmac_key(None)],
        },
    );
    for i in 0..50 {
        let mut c = claims();
        c["sub"] = json!(format!("user{i}"));
        v.verify(&hs(Algorithm::HS256, &c), NOW).unwrap();
    }
    assert!(v.cache_len() <= 8);
}

fn authenticator() -> Authenticator {
    let store = ApiKeyStore::new(
        http::HeaderName::from_static("x-api-key"),
        vec![ApiKeyEntry {
            sha256: {
                let hex = digest_hex(b"k-123");
                let mut d = [0u8; 32];
                for (i, b) in d.iter_mut().enumerate() {
                    *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
                }
                d
            },
            subject: "billing".into(),
            roles: vec!["service".into()],
            scopes: vec!["orders:read".into()],
        }],
    );
    Authenticator::new(
        "test".into(),
        Some(verifier(&[Algorithm::HS256], vec![hmac_key(None)])),
        Some(store),
    )
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn failure(o: AuthOutcome) -> Option<AuthFailure> {
    match o {
        AuthOutcome::Failed(f) => Some(f),
        _ => None,
    }
}

#[test]
fn two_credentials_or_two_headers_are_ambiguous() {
    let a = authenticator();
    let t = format!("Bearer {}", hs(Algorithm::HS256, &claims()));
    let two = headers(&[("authorization", &t), ("authorization", &t)]);
    assert!(matches!(
        failure(a.authenticate(&two, AuthMode::Required, NOW)),
        Some(AuthFailure::Ambiguous(_))
    ));
    // Even on a route that does not authenticate, the framing is refused.
    assert!(matches!(
        failure(a.authenticate(&two, AuthMode::Off, NOW)),
        Some(AuthFailure::Ambiguous(_))
    ));
    let both = headers(&[("authorization", &t), ("x-api-key", "k-123")]);
    assert!(matches!(
        failure(a.authenticate(&both, AuthMode::Required, NOW)),
        Some(AuthFailure::Ambiguous(_))
    ));
    let keys = headers(&[("x-api-key", "k-123"), ("X-API-KEY", "k-123")]);
    assert!(matches!(
        failure(a.authenticate(&keys, AuthMode::Required, NOW)),
        Some(AuthFailure::Ambiguous(_))
    ));
}

#[test]
fn absent_malformed_and_foreign_credentials() {
    let a = authenticator();
    assert_eq!(
        failure(a.authenticate(&HeaderMap::new(), AuthMode::Required, NOW)),
        Some(AuthFailure::Missing)
    );
    assert!(matches!(
        a.authenticate(&HeaderMap::new(), AuthMode::Optional, NOW),
        AuthOutcome::Anonymous
    ));
    // Another scheme is not a bearer credential.
    let basic = headers(&[("authorization", "Basic YWxpY2U6cHc=")]);
    assert_eq!(
        failure(a.authenticate(&basic, AuthMode::Required, NOW)),
        Some(AuthFailure::Missing)
    );
    for bad in ["Bearer", "Bearer ", "Bearer a b", "Bearer a=b"] {
        let h = headers(&[("authorization", bad)]);
        assert_eq!(
            failure(a.authenticate(&h, AuthMode::Optional, NOW)),
            Some(AuthFailure::Token(TokenError::Malformed)),
            "{bad}"
        );
    }
    // An invalid credential on an optional route is refused, not downgraded.
    let expired = {
        let mut c = claims();
        c["exp"] = json!(NOW - 100);
        headers(&[(
            "authorization",
            &format!("bearer {}", hs(Algorithm::HS256, &c)),
        )])
    };
    assert_eq!(
        failure(a.authenticate(&expired, AuthMode::Optional, NOW)),
        Some(AuthFailure::Token(TokenError::Expired))
    );
    assert!(matches!(
        a.authenticate(&expired, AuthMode::Off, NOW),
        AuthOutcome::Anonymous
    ));
}

#[test]
fn api_keys_are_known_by_digest() {
    let a = authenticator();
    match a.authenticate(&headers(&[("x-api-key", "k-123")]), AuthMode::Required, NOW) {
        AuthOutcome::Authenticated(id) => {
            assert_eq!(id.subject, "billing");
            assert_eq!(id.method, AuthMethod::ApiKey);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        failure(a.authenticate(&headers(&[("x-api-key", "k-124")]), AuthMode::Required, NOW)),
        Some(AuthFailure::UnknownApiKey)
    );
}

#[test]
fn a_verification_in_flight_during_rotation_does_not_outlive_the_old_key() {
    let v = verifier(&[Algorithm::HS256], vec![hmac_key(None)]);
    let t = hs(Algorithm::HS256, &claims());
    let id = v.verify(&t, NOW).unwrap();
    v.replace_keys(KeySet {
        keys: vec![rsa_key()],
    });
    // The old verification lands in the cache after the rotation cleared it.
    v.insert_in_flight(&t, id, NOW + 600, 0);
    assert_eq!(v.verify(&t, NOW), Err(TokenError::NoKeyForAlgorithm));
}

#[test]
fn bearer_accepts_tabs_as_separators() {
    let a = authenticator();
    let t = format!("Bearer\t{}", hs(Algorithm::HS256, &claims()));
    assert!(matches!(
        a.authenticate(&headers(&[("authorization", &t)]), AuthMode::Required, NOW),
        AuthOutcome::Authenticated(_)
    ));
    let bad = format!("Bearer\t{}", "a b");
    assert_eq!(
        failure(a.authenticate(
            &headers(&[("authorization", &bad)]),
            AuthMode::Optional,
            NOW
        )),
        Some(AuthFailure::Token(TokenError::Malformed))
    );
}

#[test]
fn regression_a_malformed_bearer_is_refused_even_where_auth_is_off() {
    // Found in review: with the character check gone, auth = "off" took
    // these as anonymous.
    let a = authenticator();
    for bad in [
        "Bearer a b",
        "Bearer x,y",
        "Bearer \u{e9}t\u{e9}",
        "Bearer ===",
        "Bearer a=b",
    ] {
        let v = HeaderValue::from_bytes(bad.as_bytes()).unwrap();
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, v);
        for mode in [AuthMode::Off, AuthMode::Optional, AuthMode::Required] {
            assert_eq!(
                failure(a.authenticate(&h, mode, NOW)),
                Some(AuthFailure::Token(TokenError::Malformed)),
                "{bad} ({mode:?})"
            );
        }
    }
}
