//! Minting tokens with the configured HMAC key, for `token` and for the
//! tokens that `test` cases describe (including deliberately bad ones).

use crate::Loaded;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portcullis_core::jsonwebtoken::{EncodingKey, crypto};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// What a token should say. Unset fields take the configuration's values.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    /// `sub` (under the configured subject claim).
    pub sub: Option<String>,
    /// Roles (under the configured roles claim).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Scopes (`scope`, space-separated).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Lifetime: seconds, or a duration such as `"1h"`; negative for an
    /// expired token. Default one hour.
    #[serde(default, deserialize_with = "de_ttl")]
    pub ttl: Option<i64>,
    /// Further claims, overriding the others.
    #[serde(default)]
    pub claims: Map<String, Value>,
    /// `none` makes an unsigned token (which must be refused).
    pub alg: Option<String>,
    /// Sign with this secret instead of the configured one (a wrong key).
    pub secret: Option<String>,
}

fn de_ttl<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Ttl {
        Seconds(i64),
        Text(String),
    }
    match Ttl::deserialize(d)? {
        Ttl::Seconds(s) => Ok(Some(s)),
        Ttl::Text(t) => crate::duration::parse_seconds(&t)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

/// Mint a token per `spec` at time `now`.
pub fn mint(loaded: &Loaded, spec: &TokenSpec, now: i64) -> Result<String, String> {
    let key = loaded.mint.as_ref().ok_or_else(|| {
        "no HMAC key is configured to sign with (add a secret, secret_file or secret_env key under [authentication.jwt])".to_owned()
    })?;
    let d = &loaded.token_defaults;
    let mut claims = Map::new();
    if let Some(sub) = &spec.sub {
        claims.insert(d.subject_claim.clone(), json!(sub));
    }
    if let Some(iss) = &d.issuer {
        claims.insert("iss".into(), json!(iss));
    }
    if let Some(aud) = &d.audience {
        claims.insert("aud".into(), json!(aud));
    }
    claims.insert("iat".into(), json!(now));
    claims.insert("exp".into(), json!(now + spec.ttl.unwrap_or(3600)));
    if !spec.roles.is_empty() {
        insert_path(&mut claims, &d.roles_claim, json!(spec.roles));
    }
    if !spec.scopes.is_empty() {
        claims.insert("scope".into(), json!(spec.scopes.join(" ")));
    }
    for (k, v) in &spec.claims {
        claims.insert(k.clone(), v.clone());
    }
    let alg = spec.alg.clone().unwrap_or_else(|| format!("{:?}", key.alg));
    let mut header = Map::new();
    header.insert("alg".into(), json!(alg));
    header.insert("typ".into(), json!("JWT"));
    if let Some(kid) = &key.kid {
        header.insert("kid".into(), json!(kid));
    }
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(Value::Object(header).to_string()),
        URL_SAFE_NO_PAD.encode(Value::Object(claims).to_string())
    );
    if alg.eq_ignore_ascii_case("none") {
        return Ok(format!("{input}."));
    }
    let secret = spec
        .secret
        .as_ref()
        .map_or(key.secret.as_slice(), |s| s.as_bytes());
    let sig = crypto::sign(input.as_bytes(), &EncodingKey::from_secret(secret), key.alg)
        .map_err(|e| format!("signing failed: {e}"))?;
    Ok(format!("{input}.{sig}"))
}

fn insert_path(claims: &mut Map<String, Value>, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = claims;
    for p in parents {
        let entry = cur
            .entry(p.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        let Value::Object(next) = entry else {
            return;
        };
        cur = next;
    }
    cur.insert(last.clone(), value);
}
