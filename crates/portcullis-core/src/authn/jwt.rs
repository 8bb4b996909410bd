//! JWT bearer verification. The header and claims are parsed here, strictly;
//! `jsonwebtoken` is used only for the signature primitive, so that every
//! check (algorithm allow-list, key type, `crit`, claim types, `nbf`) is ours
//! and tested here.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, crypto};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::cache::TokenCache;
use super::{AuthMethod, Identity};

/// The kind of key, which fixes the algorithms it can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFamily {
    /// A shared secret: HS256/384/512.
    Hmac,
    /// RSA: RS256/384/512 and PS256/384/512.
    Rsa,
    /// EC P-256: ES256.
    EcP256,
    /// EC P-384: ES384.
    EcP384,
    /// Ed25519: EdDSA.
    Ed25519,
}

impl KeyFamily {
    /// Whether a key of this family may verify `alg`.
    pub fn fits(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        matches!(
            (self, alg),
            (KeyFamily::Hmac, HS256 | HS384 | HS512)
                | (
                    KeyFamily::Rsa,
                    RS256 | RS384 | RS512 | PS256 | PS384 | PS512
                )
                | (KeyFamily::EcP256, ES256)
                | (KeyFamily::EcP384, ES384)
                | (KeyFamily::Ed25519, EdDSA)
        )
    }
}

/// One key that may verify tokens.
#[derive(Clone)]
pub struct VerificationKey {
    /// The `kid` a token must name to select this key (if the key has one).
    pub kid: Option<String>,
    /// An algorithm the key is pinned to (JWKS `alg`), if any.
    pub alg: Option<Algorithm>,
    /// The key's family.
    pub family: KeyFamily,
    /// The key itself.
    pub key: DecodingKey,
}

impl fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("VerificationKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("family", &self.family)
            .finish_non_exhaustive()
    }
}

/// The keys in force; replaced whole when a JWKS is refreshed.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    /// The keys.
    pub keys: Vec<VerificationKey>,
}

/// Where in the claims the identity is found.
#[derive(Debug, Clone)]
pub struct ClaimMapping {
    /// The claim holding the subject (default `sub`).
    pub subject: String,
    /// The dotted path of the roles claim (default `roles`), string or array.
    pub roles: Vec<String>,
    /// Claims copied to principal attributes.
    pub attributes: Vec<String>,
}

impl Default for ClaimMapping {
    fn default() -> Self {
        ClaimMapping {
            subject: "sub".to_owned(),
            roles: vec!["roles".to_owned()],
            attributes: Vec::new(),
        }
    }
}

/// What a token must satisfy.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    /// The accepted algorithms.
    pub algorithms: Vec<Algorithm>,
    /// The required `iss`, if any.
    pub issuer: Option<String>,
    /// Accepted audiences; a token must name one of them (if any are set).
    pub audiences: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway: i64,
    /// Whether a token without `exp` is refused.
    pub require_exp: bool,
    /// The largest token accepted, in bytes.
    pub max_token_bytes: usize,
    /// Claims mapping.
    pub claims: ClaimMapping,
    /// How many verified tokens the cache keeps.
    pub cache_capacity: usize,
}

impl Default for JwtSettings {
    fn default() -> Self {
        JwtSettings {
            algorithms: Vec::new(),
            issuer: None,
            audiences: Vec::new(),
            leeway: 30,
            require_exp: true,
            max_token_bytes: 8192,
            claims: ClaimMapping::default(),
            cache_capacity: 10_000,
        }
    }
}

/// Why a token was refused. Descriptions are safe to send to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Larger than the configured limit.
    TooLarge,
    /// Not three base64url parts of JSON objects.
    Malformed,
    /// `alg` is `none`, unknown, or not in the allow-list.
    AlgorithmNotAllowed(String),
    /// A `crit` header names extensions we do not implement.
    UnsupportedCritical,
    /// `typ` says this is not a JWT.
    WrongType,
    /// `kid` names no configured key.
    UnknownKeyId(String),
    /// No configured key of the algorithm's type.
    NoKeyForAlgorithm,
    /// The signature does not verify.
    BadSignature,
    /// `exp` has passed.
    Expired,
    /// `nbf` is in the future.
    NotYetValid,
    /// `iss` is not the configured issuer.
    WrongIssuer,
    /// `aud` names none of the configured audiences.
    WrongAudience,
    /// A required claim is missing.
    MissingClaim(String),
    /// A claim has the wrong JSON type.
    ClaimType(String),
    /// Bearer tokens are not configured for this gateway.
    NotAccepted,
}

impl TokenError {
    /// A short description for `error_description` and the log. Never holds
    /// key material or claim values.
    pub fn describe(&self) -> String {
        match self {
            TokenError::TooLarge => "the token is too large".to_owned(),
            TokenError::Malformed => "the token is malformed".to_owned(),
            TokenError::AlgorithmNotAllowed(_) => "the token algorithm is not accepted".to_owned(),
            TokenError::UnsupportedCritical => {
                "the token requires unsupported extensions".to_owned()
            }
            TokenError::WrongType => "the token is not a JWT".to_owned(),
            TokenError::UnknownKeyId(_) => "the token was signed with an unknown key".to_owned(),
            TokenError::NoKeyForAlgorithm | TokenError::BadSignature => {
                "the token signature is invalid".to_owned()
            }
            TokenError::Expired => "the token has expired".to_owned(),
            TokenError::NotYetValid => "the token is not valid yet".to_owned(),
            TokenError::WrongIssuer => "the token issuer is not trusted".to_owned(),
            TokenError::WrongAudience => "the token is meant for another audience".to_owned(),
            TokenError::MissingClaim(c) => format!("the token lacks the '{c}' claim"),
            TokenError::ClaimType(c) => format!("the token claim '{c}' has the wrong type"),
            TokenError::NotAccepted => "bearer tokens are not accepted here".to_owned(),
        }
    }

    /// Operator-facing detail (may name the algorithm or key id the client sent).
    pub fn detail(&self) -> String {
        match self {
            TokenError::AlgorithmNotAllowed(a) => {
                format!("algorithm {a:?} is not in the allow-list")
            }
            TokenError::UnknownKeyId(k) => format!("kid {k:?} matches no configured key"),
            TokenError::NoKeyForAlgorithm => {
                "no configured key has a type that fits the token's algorithm".to_owned()
            }
            other => other.describe(),
        }
    }
}

/// Verifies bearer tokens against a replaceable key set, with a cache.
#[derive(Debug)]
pub struct JwtVerifier {
    settings: JwtSettings,
    /// The keys in force and their generation; cache entries remember the
    /// generation they were verified under, so a rotation invalidates even
    /// a verification that was in flight while the keys changed.
    keys: RwLock<(u64, Arc<KeySet>)>,
    /// The generation alone, readable without the lock on the cache-hit path.
    generation: AtomicU64,
    cache: TokenCache,
}

struct Parts<'a> {
    signing_input: &'a str,
    signature: &'a str,
    header: Map<String, Value>,
    claims: Map<String, Value>,
}

impl JwtVerifier {
    /// Build a verifier.
    pub fn new(settings: JwtSettings, keys: KeySet) -> Self {
        let cache = TokenCache::new(settings.cache_capacity);
        JwtVerifier {
            settings,
            keys: RwLock::new((0, Arc::new(keys))),
            generation: AtomicU64::new(0),
            cache,
        }
    }

    /// Replace the key set (a JWKS refresh). Cached verifications are dropped,
    /// so a key removed from the set stops working at once.
    pub fn replace_keys(&self, keys: KeySet) {
        let mut guard = match self.keys.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let next = guard.0.wrapping_add(1);
        *guard = (next, Arc::new(keys));
        self.generation.store(next, Ordering::Release);
        drop(guard);
        self.cache.clear();
    }

    #[cfg(test)]
    pub(super) fn cache_len(&self) -> usize {
        self.cache.len()
    }

    /// Simulate a verification that finished after a key rotation: its entry
    /// carries the generation it started under.
    #[cfg(test)]
    pub(super) fn insert_in_flight(
        &self,
        token: &str,
        id: Arc<Identity>,
        exp: i64,
        generation: u64,
    ) {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.cache.insert(digest, (id, exp, generation), 0);
    }

    fn current_keys(&self) -> (u64, Arc<KeySet>) {
        let guard = match self.keys.read() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        (guard.0, Arc::clone(&guard.1))
    }

    /// Verify a token at time `now` (Unix seconds).
    pub fn verify(&self, token: &str, now: i64) -> Result<Arc<Identity>, TokenError> {
        if token.len() > self.settings.max_token_bytes {
            return Err(TokenError::TooLarge);
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let cache_now = now.saturating_sub(self.settings.leeway);
        // A hit needs only the generation: an entry verified under an older
        // key set never answers.
        if let Some(id) =
            self.cache
                .get(&digest, cache_now, self.generation.load(Ordering::Acquire))
        {
            return Ok(id);
        }
        let (generation, keys) = self.current_keys();
        let parts = split(token)?;
        let alg = self.check_header(&parts.header)?;
        check_signature(&keys, &parts, alg)?;
        let identity = Arc::new(self.check_claims(&parts.claims, now)?);
        if let Some(exp) = identity.expires_at {
            let entry = (Arc::clone(&identity), exp, generation);
            self.cache.insert(digest, entry, cache_now);
        }
        Ok(identity)
    }

    fn check_header(&self, header: &Map<String, Value>) -> Result<Algorithm, TokenError> {
        let alg_name = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(TokenError::Malformed)?;
        let alg = Algorithm::from_str(alg_name)
            .ok()
            .filter(|a| self.settings.algorithms.contains(a))
            .ok_or_else(|| TokenError::AlgorithmNotAllowed(truncate(alg_name)))?;
        // We implement no JWS extensions, so any `crit` is one we cannot honour.
        if header.contains_key("crit") {
            return Err(TokenError::UnsupportedCritical);
        }
        if let Some(typ) = header.get("typ") {
            let typ = typ
                .as_str()
                .ok_or(TokenError::WrongType)?
                .to_ascii_lowercase();
            let typ = typ.strip_prefix("application/").unwrap_or(&typ);
            if typ != "jwt" && typ != "at+jwt" {
                return Err(TokenError::WrongType);
            }
        }
        if header.get("kid").is_some_and(|k| !k.is_string()) {
            return Err(TokenError::Malformed);
        }
        Ok(alg)
    }

    fn check_claims(&self, claims: &Map<String, Value>, now: i64) -> Result<Identity, TokenError> {
        let s = &self.settings;
        let exp = numeric_date(claims, "exp")?;
        let nbf = numeric_date(claims, "nbf")?;
        numeric_date(claims, "iat")?;
        match exp {
            Some(exp) if now >= exp.saturating_add(s.leeway) => return Err(TokenError::Expired),
            None if s.require_exp => return Err(TokenError::MissingClaim("exp".to_owned())),
            _ => {}
        }
        if nbf.is_some_and(|nbf| now.saturating_add(s.leeway) < nbf) {
            return Err(TokenError::NotYetValid);
        }
        check_issuer(claims, s.issuer.as_deref())?;
        check_audience(claims, &s.audiences)?;
        let subject = match claims.get(&s.claims.subject) {
            Some(Value::String(v)) if !v.is_empty() => v.clone(),
            Some(_) => return Err(TokenError::ClaimType(s.claims.subject.clone())),
            None => return Err(TokenError::MissingClaim(s.claims.subject.clone())),
        };
        let roles = roles(claims, &s.claims.roles)?;
        let scopes = scopes(claims)?;
        let mut attributes = Vec::new();
        for name in &s.claims.attributes {
            if let Some(v) = claims.get(name) {
                if !attribute_value_ok(v) {
                    return Err(TokenError::ClaimType(name.clone()));
                }
                attributes.push((name.clone(), v.clone()));
            }
        }
        Ok(Identity {
            subject,
            roles,
            scopes,
            attributes,
            method: AuthMethod::Jwt,
            expires_at: exp,
        })
    }
}

/// Keys are chosen by `kid` among the configured ones only: `jku`, `x5u`,
/// `jwk` and `x5c` are never consulted, so a token cannot bring its own key.
fn check_signature(keys: &KeySet, parts: &Parts<'_>, alg: Algorithm) -> Result<(), TokenError> {
    let kid = parts.header.get("kid").and_then(Value::as_str);
    let by_kid: Vec<&VerificationKey> = match kid {
        Some(kid) => {
            let v: Vec<_> = keys
                .keys
                .iter()
                .filter(|k| k.kid.as_deref() == Some(kid))
                .collect();
            if v.is_empty() {
                return Err(TokenError::UnknownKeyId(truncate(kid)));
            }
            v
        }
        None => keys.keys.iter().collect(),
    };
    let fitting = by_kid
        .into_iter()
        .filter(|k| k.family.fits(alg) && k.alg.is_none_or(|a| a == alg));
    let mut any = false;
    for key in fitting {
        any = true;
        if crypto::verify(
            parts.signature,
            parts.signing_input.as_bytes(),
            &key.key,
            alg,
        )
        .unwrap_or(false)
        {
            return Ok(());
        }
    }
    Err(if any {
        TokenError::BadSignature
    } else {
        TokenError::NoKeyForAlgorithm
    })
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

fn split(token: &str) -> Result<Parts<'_>, TokenError> {
    let mut it = token.split('.');
    let (Some(h), Some(c), Some(sig), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(TokenError::Malformed);
    };
    if sig.is_empty() {
        return Err(TokenError::Malformed);
    }
    URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| TokenError::Malformed)?;
    Ok(Parts {
        signing_input: &token[..h.len() + 1 + c.len()],
        signature: sig,
        header: json_object(h)?,
        claims: json_object(c)?,
    })
}

fn json_object(part: &str) -> Result<Map<String, Value>, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed)?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(TokenError::Malformed),
    }
}

/// A NumericDate claim: absent is `None`, a number is its whole seconds, and
/// anything else (a string such as `"soon"`) refuses the token.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Ok(Some(i))
            } else {
                match n.as_f64() {
                    Some(f) if f.is_finite() && f.abs() < 1e15 => Ok(Some(f.floor() as i64)),
                    _ => Err(TokenError::ClaimType(name.to_owned())),
                }
            }
        }
        Some(_) => Err(TokenError::ClaimType(name.to_owned())),
    }
}

fn check_issuer(claims: &Map<String, Value>, issuer: Option<&str>) -> Result<(), TokenError> {
    match (claims.get("iss"), issuer) {
        (Some(Value::String(got)), Some(want)) if got == want => Ok(()),
        (Some(Value::String(_)), Some(_)) => Err(TokenError::WrongIssuer),
        (Some(Value::String(_)), None) | (None, None) => Ok(()),
        (Some(_), _) => Err(TokenError::ClaimType("iss".to_owned())),
        (None, Some(_)) => Err(TokenError::MissingClaim("iss".to_owned())),
    }
}

fn check_audience(claims: &Map<String, Value>, audiences: &[String]) -> Result<(), TokenError> {
    let named: Vec<&str> = match claims.get("aud") {
        None => Vec::new(),
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| TokenError::ClaimType("aud".to_owned()))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(TokenError::ClaimType("aud".to_owned())),
    };
    if audiences.is_empty() || named.iter().any(|a| audiences.iter().any(|w| w == a)) {
        Ok(())
    } else if claims.contains_key("aud") {
        Err(TokenError::WrongAudience)
    } else {
        Err(TokenError::MissingClaim("aud".to_owned()))
    }
}

fn roles(claims: &Map<String, Value>, path: &[String]) -> Result<Vec<String>, TokenError> {
    let name = path.join(".");
    let mut cur: Option<&Value> = None;
    for (i, key) in path.iter().enumerate() {
        let next = if i == 0 {
            claims.get(key)
        } else {
            match cur {
                Some(Value::Object(m)) => m.get(key),
                Some(_) => return Err(TokenError::ClaimType(name)),
                None => None,
            }
        };
        cur = next;
        if cur.is_none() {
            return Ok(Vec::new());
        }
    }
    string_list(cur, &name)
}

fn string_list(v: Option<&Value>, name: &str) -> Result<Vec<String>, TokenError> {
    match v {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| TokenError::ClaimType(name.to_owned()))
            })
            .collect(),
        Some(_) => Err(TokenError::ClaimType(name.to_owned())),
    }
}

fn scopes(claims: &Map<String, Value>) -> Result<Vec<String>, TokenError> {
    let mut out = match claims.get("scope") {
        None => Vec::new(),
        Some(Value::String(s)) => s
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        Some(_) => return Err(TokenError::ClaimType("scope".to_owned())),
    };
    out.extend(string_list(claims.get("scp"), "scp")?);
    out.sort();
    out.dedup();
    Ok(out)
}

/// Attribute claims must map onto Cedar values: strings, integers, booleans,
/// and sets or records of those.
fn attribute_value_ok(v: &Value) -> bool {
    match v {
        Value::String(_) | Value::Bool(_) => true,
        Value::Number(n) => n.as_i64().is_some(),
        Value::Array(items) => items.iter().all(attribute_value_ok),
        Value::Object(m) => m.values().all(attribute_value_ok),
        Value::Null => false,
    }
}
