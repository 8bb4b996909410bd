//! Stage two for rate limits: named `[rate_limits.NAME]` tables compiled
//! into specs, and the global and per-route lists that name them.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::HeaderName;
use portcullis_core::ratelimit::{KeyPart, RateLimitSpec};
use toml::Spanned;

use super::Ctx;
use crate::LimitStore;
use crate::diag::ConfigError;
use crate::raw::{RawConfig, RawRateLimit};

type Limits = Vec<Arc<RateLimitSpec>>;

/// Where limits are counted.
pub(crate) fn store(ctx: &Ctx, raw: &RawConfig) -> Result<LimitStore, ConfigError> {
    let s = &raw.rate_limit_store;
    let max_keys = s.max_keys.as_ref().map_or(1_000_000, |m| *m.get_ref());
    let Some(url) = &s.redis else {
        if s.timeout.is_some() || s.key_prefix.is_some() {
            return Err(ctx.err(
                0..0,
                "[rate_limit_store] timeout and key_prefix need redis = \"redis://...\"",
            ));
        }
        return Ok(LimitStore::Memory { max_keys });
    };
    if url.get_ref().starts_with("rediss://") {
        return Err(ctx
            .err(url.span(), "TLS to Redis (rediss://) is not supported yet")
            .help("reach Redis over a private network with redis://"));
    }
    if !url.get_ref().starts_with("redis://") {
        return Err(ctx
            .err(url.span(), "not a Redis URL")
            .help("write it as redis://127.0.0.1:6379/0"));
    }
    if let Some(m) = &s.max_keys {
        return Err(ctx.err(
            m.span(),
            "max_keys bounds the in-memory store; with redis it has no effect",
        ));
    }
    let timeout_ms = match &s.timeout {
        None => 100,
        Some(t) => t.get_ref().millis().map_err(|e| ctx.err(t.span(), e))?,
    };
    if timeout_ms == 0 {
        return Err(ctx.err(0..0, "[rate_limit_store] timeout must be longer than zero"));
    }
    Ok(LimitStore::Redis {
        url: url.get_ref().clone(),
        key_prefix: s
            .key_prefix
            .clone()
            .unwrap_or_else(|| "portcullis:rl:".to_owned()),
        timeout: std::time::Duration::from_millis(timeout_ms),
    })
}

/// The global limits and each route's, in route order.
pub(crate) fn compile(
    ctx: &Ctx,
    raw: &RawConfig,
) -> Result<(Limits, Vec<Limits>), Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut specs = BTreeMap::new();
    for (name, r) in &raw.rate_limits {
        match one(ctx, name, r) {
            Ok(s) => {
                specs.insert(name.as_str(), Arc::new(s));
            }
            Err(mut e) => errors.append(&mut e),
        }
    }
    let declared: Vec<&str> = raw.rate_limits.keys().map(String::as_str).collect();
    let mut pick = |wanted: &[Spanned<String>], global: bool| -> Limits {
        let mut out = Vec::new();
        for w in wanted {
            match specs.get(w.get_ref().as_str()) {
                Some(s) if global && s.key.iter().any(|k| matches!(k, KeyPart::Subject | KeyPart::ApiKey)) => errors.push(
                    ctx.err(w.span(), format!("rate limit {:?} is keyed by the caller (subject or api_key), which a global limit does not know yet", w.get_ref()))
                        .help("global limits are counted before authentication; name it on the routes instead"),
                ),
                Some(s) if global && s.key.contains(&KeyPart::Route) => errors.push(
                    ctx.err(
                        w.span(),
                        format!(
                            "rate limit {:?} is keyed by route, which a global limit does not know",
                            w.get_ref()
                        ),
                    )
                    .help("name it on the routes instead, with rate_limits = [...] in [[route]]"),
                ),
                Some(s) => out.push(Arc::clone(s)),
                None if declared.contains(&w.get_ref().as_str()) => {}
                None => errors.push(
                    ctx.err(
                        w.span(),
                        format!("no rate limit is named {:?}", w.get_ref()),
                    )
                    .help(if declared.is_empty() {
                        "declare it with [rate_limits.NAME] (none are declared)".to_owned()
                    } else {
                        format!("declared with [rate_limits.NAME]: {}", declared.join(", "))
                    }),
                ),
            }
        }
        out
    };
    let global = raw
        .network
        .as_ref()
        .map(|n| pick(&n.get_ref().rate_limits, true))
        .unwrap_or_default();
    let per_route = raw
        .routes
        .iter()
        .map(|r| pick(&r.get_ref().rate_limits, false))
        .collect();
    if errors.is_empty() {
        Ok((global, per_route))
    } else {
        Err(errors)
    }
}

fn one(
    ctx: &Ctx,
    name: &str,
    raw: &Spanned<RawRateLimit>,
) -> Result<RateLimitSpec, Vec<ConfigError>> {
    let r = raw.get_ref();
    let mut errors = Vec::new();
    let limit = *r.limit.get_ref();
    if limit == 0 {
        errors.push(
            ctx.err(r.limit.span(), "a limit of 0 refuses everything")
                .help("use an IP deny list for that"),
        );
    }
    let period_ms = match r.period.get_ref().millis() {
        Ok(0) => {
            errors.push(ctx.err(r.period.span(), "the period must be longer than zero"));
            0
        }
        Ok(ms) if ms > 366 * 86_400_000 => {
            errors.push(ctx.err(r.period.span(), "the period is at most a year"));
            ms
        }
        Ok(ms) if limit > 0 && ms < u64::from(limit) => {
            errors.push(ctx.err(
                r.period.span(),
                "the period must be at least one millisecond per request",
            ));
            ms
        }
        Ok(ms) => ms,
        Err(e) => {
            errors.push(ctx.err(r.period.span(), e));
            0
        }
    };
    let v4 = prefix_len(ctx, r.ipv4_prefix.as_ref(), 24, 32, &mut errors);
    let v6 = prefix_len(ctx, r.ipv6_prefix.as_ref(), 64, 128, &mut errors);
    let mut key = Vec::new();
    for part in r.key.get_ref() {
        let p = part.get_ref().trim();
        let parsed = match p {
            "ip" => Some(KeyPart::Ip),
            "ip_prefix" => Some(KeyPart::IpPrefix { v4, v6 }),
            "subject" => Some(KeyPart::Subject),
            "api_key" => Some(KeyPart::ApiKey),
            "route" => Some(KeyPart::Route),
            _ => p
                .strip_prefix("header:")
                .and_then(|h| HeaderName::from_bytes(h.trim().as_bytes()).ok())
                .map(KeyPart::Header),
        };
        match parsed {
            Some(k) => key.push(k),
            None => errors.push(
                ctx.err(part.span(), format!("{p:?} is not a key part"))
                    .help("use ip, ip_prefix, subject, api_key, route or header:NAME"),
            ),
        }
    }
    if r.key.get_ref().is_empty() {
        errors.push(
            ctx.err(r.key.span(), format!("rate limit {name:?} needs a key"))
                .help("for example key = [\"ip\"]"),
        );
    }
    let fail_open = fail_open(ctx, r.on_store_error.as_ref(), &mut errors);
    if errors.is_empty() {
        Ok(RateLimitSpec {
            name: name.into(),
            limit,
            period_ms,
            key,
            fail_open,
        })
    } else {
        Err(errors)
    }
}

/// `on_store_error`: `open` (the default) or `closed`.
pub(crate) fn fail_open(
    ctx: &Ctx,
    mode: Option<&Spanned<String>>,
    errors: &mut Vec<ConfigError>,
) -> bool {
    match mode.map(|m| (m, m.get_ref().as_str())) {
        None | Some((_, "open")) => true,
        Some((_, "closed")) => false,
        Some((m, other)) => {
            errors.push(ctx.err(m.span(), format!("{other:?}: use \"open\" or \"closed\"")));
            true
        }
    }
}

/// An `ipv4_prefix` / `ipv6_prefix` of at most `max` bits, or `default`.
pub(crate) fn prefix_len(
    ctx: &Ctx,
    v: Option<&Spanned<u8>>,
    default: u8,
    max: u8,
    errors: &mut Vec<ConfigError>,
) -> u8 {
    match v {
        Some(p) if *p.get_ref() > max => {
            errors.push(ctx.err(p.span(), format!("a prefix length is at most {max}")));
            default
        }
        Some(p) => *p.get_ref(),
        None => default,
    }
}
