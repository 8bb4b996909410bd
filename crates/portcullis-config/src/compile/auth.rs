//! `[authentication]`: JWT settings and keys, and the API keys file.

use std::str::FromStr;

use http::HeaderName;
use portcullis_core::authn::apikey::ApiKeyEntry;
use portcullis_core::authn::jwt::{ClaimMapping, KeyFamily};
use portcullis_core::authn::keys::{key_from_pem, keys_from_jwks};
use portcullis_core::authn::{
    ApiKeyStore, Authenticator, JwtSettings, JwtVerifier, KeySet, VerificationKey,
};
use portcullis_core::jsonwebtoken::{Algorithm, DecodingKey};
use toml::Spanned;

use super::Ctx;
use crate::diag::ConfigError;
use crate::duration::parse_seconds;
use crate::raw::{RawApiKeyFile, RawApiKeys, RawAuthentication, RawDuration, RawJwt, RawKey};
use crate::{JwksUrl, MintKey, TokenDefaults};

/// HMAC secrets shorter than this are refused (RFC 7518 §3.2 asks for at
/// least the hash size; 32 bytes covers HS256).
const MIN_SECRET_BYTES: usize = 32;

pub(crate) struct CompiledAuth {
    pub authenticator: Authenticator,
    pub static_keys: KeySet,
    pub mint: Option<MintKey>,
    pub token_defaults: TokenDefaults,
    pub jwks_urls: Vec<JwksUrl>,
}

pub(crate) fn compile(
    ctx: &Ctx,
    raw: &RawAuthentication,
) -> Result<CompiledAuth, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut mint = None;
    let mut token_defaults = TokenDefaults {
        subject_claim: "sub".into(),
        roles_claim: vec!["roles".into()],
        ..TokenDefaults::default()
    };
    let mut jwks_urls = Vec::new();
    let mut static_keys = KeySet::default();
    let jwt = match &raw.jwt {
        None => None,
        Some(j) => match jwt(ctx, j) {
            Ok(c) => {
                mint = c.mint;
                jwks_urls = c.jwks_urls;
                token_defaults = TokenDefaults {
                    issuer: c.settings.issuer.clone(),
                    audience: c.settings.audiences.first().cloned(),
                    subject_claim: c.settings.claims.subject.clone(),
                    roles_claim: c.settings.claims.roles.clone(),
                };
                static_keys = c.keys.clone();
                Some(JwtVerifier::new(c.settings, c.keys))
            }
            Err(mut e) => {
                errors.append(&mut e);
                None
            }
        },
    };
    let api_keys = match &raw.api_keys {
        None => None,
        Some(a) => api_keys(ctx, a.get_ref()).map_err(|e| errors.push(e)).ok(),
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(CompiledAuth {
        authenticator: Authenticator::new(raw.realm.get_ref().clone(), jwt, api_keys),
        static_keys,
        mint,
        token_defaults,
        jwks_urls,
    })
}

struct CompiledJwt {
    settings: JwtSettings,
    keys: KeySet,
    mint: Option<MintKey>,
    jwks_urls: Vec<JwksUrl>,
}

fn jwt(ctx: &Ctx, raw: &Spanned<RawJwt>) -> Result<CompiledJwt, Vec<ConfigError>> {
    let j = raw.get_ref();
    let mut errors = Vec::new();
    let mut algorithms = Vec::new();
    for a in j.algorithms.get_ref() {
        match Algorithm::from_str(a.get_ref()) {
            Ok(alg) => algorithms.push(alg),
            Err(_) => errors.push(
                ctx.err(a.span(), format!("{:?} is not a supported algorithm", a.get_ref()))
                    .help("use HS256/384/512, RS256/384/512, PS256/384/512, ES256, ES384 or EdDSA (\"none\" is never accepted)"),
            ),
        }
    }
    if j.algorithms.get_ref().is_empty() {
        errors.push(
            ctx.err(j.algorithms.span(), "no algorithms are allowed")
                .help("list the algorithms your issuer signs with, e.g. [\"RS256\"]"),
        );
    }
    let leeway = match &j.leeway {
        None => 30,
        Some(l) => match seconds(l.get_ref()) {
            Ok(s) if s >= 0 => s,
            Ok(_) => {
                errors.push(ctx.err(l.span(), "leeway cannot be negative"));
                0
            }
            Err(e) => {
                errors.push(ctx.err(l.span(), e));
                0
            }
        },
    };
    let mut keys = Vec::new();
    let mut mint = None;
    let mut jwks_urls = Vec::new();
    for k in &j.keys {
        match key(ctx, k) {
            Ok(Loaded::Keys(mut v, secret)) => {
                if let (Some(secret), None) = (secret, &mint) {
                    let pin = v.first().and_then(|k| k.alg);
                    let alg = algorithms
                        .iter()
                        .copied()
                        .find(|a| KeyFamily::Hmac.fits(*a) && pin.is_none_or(|p| p == *a));
                    if let Some(alg) = alg {
                        mint = Some(MintKey {
                            kid: k.get_ref().kid.clone(),
                            alg,
                            secret,
                        });
                    }
                }
                keys.append(&mut v);
            }
            Ok(Loaded::Url(u)) => jwks_urls.push(u),
            Err(e) => errors.push(e),
        }
    }
    if j.keys.is_empty() {
        errors.push(
            ctx.err(raw.span(), "no verification keys are configured")
                .help("add [[authentication.jwt.keys]] with a secret, pem, jwks or jwks_url"),
        );
    } else if jwks_urls.is_empty() && errors.is_empty() {
        let usable = keys.iter().any(|k| {
            algorithms
                .iter()
                .any(|a| k.family.fits(*a) && k.alg.is_none_or(|p| p == *a))
        });
        if !usable {
            errors.push(ctx.err(j.algorithms.span(), "no configured key can verify any of these algorithms").help("an HMAC secret verifies HS*, an RSA key RS*/PS*, a P-256 key ES256, a P-384 key ES384, an Ed25519 key EdDSA"));
        }
    }
    let audiences: Vec<String> = j
        .audience
        .as_ref()
        .map(|a| a.get_ref().to_vec())
        .unwrap_or_default();
    if audiences.iter().any(String::is_empty)
        || (audiences.is_empty() && j.require_audience != Some(false))
    {
        let span = j.audience.as_ref().map_or(raw.span(), Spanned::span);
        errors.push(
            ctx.err(span, "no audience is configured, so tokens issued for any other service would be accepted")
                .help("set audience = \"<this API's identifier>\"; or, knowingly, require_audience = false"),
        );
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let defaults = ClaimMapping::default();
    let settings = JwtSettings {
        algorithms,
        issuer: j.issuer.clone(),
        audiences,
        leeway,
        require_exp: j.require_exp.unwrap_or(true),
        max_token_bytes: j.max_token_bytes.unwrap_or(8192),
        cache_capacity: j.cache_capacity.unwrap_or(10_000),
        claims: ClaimMapping {
            subject: j.subject_claim.clone().unwrap_or(defaults.subject),
            roles: j.roles_claim.as_ref().map_or(defaults.roles, |r| {
                r.split('.').map(str::to_owned).collect()
            }),
            attributes: j.attribute_claims.clone(),
        },
    };
    Ok(CompiledJwt {
        settings,
        keys: KeySet { keys },
        mint,
        jwks_urls,
    })
}

fn seconds(d: &RawDuration) -> Result<i64, String> {
    match d {
        RawDuration::Seconds(s) => i64::try_from(*s).map_err(|_| "too large".to_owned()),
        RawDuration::Text(t) => parse_seconds(t),
    }
}

enum Loaded {
    /// Keys, and the HMAC secret when the key is one (for minting).
    Keys(Vec<VerificationKey>, Option<Vec<u8>>),
    Url(JwksUrl),
}

fn key(ctx: &Ctx, raw: &Spanned<RawKey>) -> Result<Loaded, ConfigError> {
    let k = raw.get_ref();
    let sources = [
        k.secret.is_some(),
        k.secret_file.is_some(),
        k.secret_env.is_some(),
        k.pem.is_some(),
        k.jwks.is_some(),
        k.jwks_url.is_some(),
    ];
    if sources.iter().filter(|s| **s).count() != 1 {
        return Err(ctx.err(
            raw.span(),
            "a key needs exactly one of secret, secret_file, secret_env, pem, jwks, jwks_url",
        ));
    }
    let alg = match &k.alg {
        None => None,
        Some(a) => Some(Algorithm::from_str(a.get_ref()).map_err(|_| {
            ctx.err(
                a.span(),
                format!("{:?} is not a supported algorithm", a.get_ref()),
            )
        })?),
    };
    let secret = if let Some(s) = &k.secret {
        Some((s.get_ref().as_bytes().to_vec(), s.span()))
    } else if let Some(f) = &k.secret_file {
        let path = ctx.path(f.get_ref());
        let bytes = std::fs::read(&path)
            .map_err(|e| ctx.err(f.span(), format!("cannot read {}: {e}", path.display())))?;
        Some((trim_newline(bytes), f.span()))
    } else if let Some(v) = &k.secret_env {
        let value = std::env::var(v.get_ref()).map_err(|_| {
            ctx.err(
                v.span(),
                format!("environment variable {} is not set", v.get_ref()),
            )
        })?;
        Some((value.into_bytes(), v.span()))
    } else {
        None
    };
    if let Some((secret, span)) = secret {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(ctx
                .err(
                    span,
                    format!(
                        "the HMAC secret is {} bytes; at least {MIN_SECRET_BYTES} are required",
                        secret.len()
                    ),
                )
                .help("generate one with: openssl rand -base64 48"));
        }
        if alg.is_some_and(|a| !KeyFamily::Hmac.fits(a)) {
            return Err(ctx.err(
                raw.span(),
                "an HMAC secret can only be pinned to HS256, HS384 or HS512",
            ));
        }
        let key = VerificationKey {
            kid: k.kid.clone(),
            alg,
            family: KeyFamily::Hmac,
            key: DecodingKey::from_secret(&secret),
        };
        return Ok(Loaded::Keys(vec![key], Some(secret)));
    }
    if let Some(p) = &k.pem {
        let path = ctx.path(p.get_ref());
        let bytes = std::fs::read(&path)
            .map_err(|e| ctx.err(p.span(), format!("cannot read {}: {e}", path.display())))?;
        let key = key_from_pem(&bytes, k.kid.clone(), alg)
            .map_err(|e| ctx.err(p.span(), format!("{}: {e}", path.display())))?;
        return Ok(Loaded::Keys(vec![key], None));
    }
    if let Some(f) = &k.jwks {
        let (path, src) = ctx.read(f)?;
        let set = keys_from_jwks(&src.text)
            .map_err(|e| ctx.err(f.span(), format!("{}: {e}", path.display())))?;
        return Ok(Loaded::Keys(set.keys, None));
    }
    if let Some(u) = &k.jwks_url {
        let uri: http::Uri = u
            .get_ref()
            .parse()
            .map_err(|_| ctx.err(u.span(), "not a valid URL"))?;
        let loopback = matches!(uri.host(), Some("127.0.0.1" | "localhost" | "[::1]"));
        match uri.scheme_str() {
            Some("https") if uri.host().is_some() => {}
            Some("http") if loopback => {}
            _ => {
                return Err(ctx
                    .err(
                        u.span(),
                        "a JWKS URL must be https:// (plain http only to a loopback address)",
                    )
                    .help("keys fetched over plain HTTP can be replaced by anyone on the path"));
            }
        }
        return Ok(Loaded::Url(JwksUrl {
            url: u.get_ref().clone(),
        }));
    }
    Err(ctx.err(raw.span(), "the key has no source"))
}

fn trim_newline(mut b: Vec<u8>) -> Vec<u8> {
    while b.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
        b.pop();
    }
    b
}

fn api_keys(ctx: &Ctx, raw: &RawApiKeys) -> Result<ApiKeyStore, ConfigError> {
    let header = HeaderName::from_str(raw.header.get_ref()).map_err(|_| {
        ctx.err(
            raw.header.span(),
            format!("{:?} is not a header name", raw.header.get_ref()),
        )
    })?;
    if header == http::header::AUTHORIZATION || header == http::header::COOKIE {
        return Err(ctx
            .err(raw.header.span(), format!("{header} cannot carry API keys"))
            .help("use a dedicated header such as X-Api-Key"));
    }
    let (_, src) = ctx.read(&raw.file)?;
    let file: RawApiKeyFile = toml::from_str(&src.text).map_err(|e| {
        crate::diag::ConfigError::at(
            &src,
            e.span().unwrap_or(0..0),
            e.message().trim().to_owned(),
        )
    })?;
    let mut entries: Vec<ApiKeyEntry> = Vec::new();
    for k in &file.keys {
        let k_ref = k.get_ref();
        let digest = hex32(k_ref.sha256.get_ref()).ok_or_else(|| {
            crate::diag::ConfigError::at(
                &src,
                k_ref.sha256.span(),
                "sha256 must be 64 lower-case hex digits",
            )
            .help("store the digest, never the key: printf %s \"$KEY\" | sha256sum")
        })?;
        if entries.iter().any(|e| e.sha256 == digest) {
            return Err(crate::diag::ConfigError::at(
                &src,
                k_ref.sha256.span(),
                "this key digest is listed twice",
            ));
        }
        entries.push(ApiKeyEntry {
            sha256: digest,
            subject: k_ref.subject.clone(),
            roles: k_ref.roles.clone(),
            scopes: k_ref.scopes.clone(),
        });
    }
    Ok(ApiKeyStore::new(header, entries))
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    let lower_hex = s
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if s.len() != 64 || !lower_hex {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}
