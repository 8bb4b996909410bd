//! `[bans]`: whether bans are checked, where they are kept, and the
//! escalation rules that start them.

use std::sync::Arc;

use portcullis_core::bans::{BanKey, BanRule, Bans};
use toml::Spanned;

use super::{Ctx, limits};
use crate::diag::ConfigError;
use crate::raw::{RawBanRule, RawConfig};

/// The default prefix of the Redis keys bans and strikes are kept under.
pub const DEFAULT_KEY_PREFIX: &str = "portcullis:ban:";

/// The bans, if `[bans]` is present, and their Redis key prefix.
pub(crate) fn compile(
    ctx: &Ctx,
    raw: &RawConfig,
) -> Result<(Option<Bans>, String), Vec<ConfigError>> {
    let Some(b) = &raw.bans else {
        return Ok((None, DEFAULT_KEY_PREFIX.to_owned()));
    };
    let at = b.span();
    let b = b.get_ref();
    let mut errors = Vec::new();
    let route_names: Vec<&str> = raw
        .routes
        .iter()
        .map(|r| r.get_ref().name.get_ref().as_str())
        .collect();
    let mut rules = Vec::new();
    for (name, r) in &b.rules {
        if name.starts_with(portcullis_core::bans::MANUAL) {
            errors.push(
                ctx.err(r.span(), format!("ban rule {name:?}: names starting with \"manual\" are kept for bans added by hand"))
                    .help("choose another name"),
            );
        }
        if let Some(rule) = one(ctx, name, r, &route_names, &mut errors) {
            rules.push(Arc::new(rule));
        }
    }
    let fail_open = limits::fail_open(ctx, b.on_store_error.as_ref(), &mut errors);
    if b.key_prefix.is_some() && raw.rate_limit_store.redis.is_none() {
        errors.push(ctx.err(
            at.clone(),
            "[bans] key_prefix names Redis keys, but bans are kept in memory: set [rate_limit_store] redis too",
        ));
    }
    let prefix = b
        .key_prefix
        .clone()
        .unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_owned());
    if errors.is_empty() {
        Ok((Some(Bans::new(rules, b.message.clone(), fail_open)), prefix))
    } else {
        Err(errors)
    }
}

fn one(
    ctx: &Ctx,
    name: &str,
    raw: &Spanned<RawBanRule>,
    routes: &[&str],
    errors: &mut Vec<ConfigError>,
) -> Option<BanRule> {
    let r = raw.get_ref();
    let before = errors.len();
    let statuses: Vec<u16> = r.statuses.get_ref().iter().map(|s| *s.get_ref()).collect();
    for s in r.statuses.get_ref() {
        if !(400..600).contains(s.get_ref()) {
            errors.push(
                ctx.err(s.span(), format!("{} is not an error status", s.get_ref()))
                    .help("count refusals, such as [401, 403, 429]"),
            );
        }
    }
    if statuses.is_empty() {
        errors.push(
            ctx.err(
                r.statuses.span(),
                format!("ban rule {name:?} counts no status"),
            )
            .help("for example statuses = [401, 403, 429]"),
        );
    }
    let mut duration = |d: &Spanned<crate::raw::RawDuration>| match d.get_ref().millis() {
        Ok(0) => {
            errors.push(ctx.err(d.span(), "must be longer than zero"));
            0
        }
        Ok(ms) if ms > 366 * 86_400_000 => {
            errors.push(ctx.err(d.span(), "is at most a year"));
            ms
        }
        Ok(ms) => ms,
        Err(e) => {
            errors.push(ctx.err(d.span(), e));
            0
        }
    };
    let within_ms = duration(&r.within);
    let ban_ms = duration(&r.ban_for);
    let v4 = limits::prefix_len(ctx, r.ipv4_prefix.as_ref(), 24, 32, errors);
    let v6 = limits::prefix_len(ctx, r.ipv6_prefix.as_ref(), 64, 128, errors);
    let key = match r.key.as_ref().map(|k| (k, k.get_ref().as_str())) {
        None | Some((_, "ip")) => {
            if let Some(p) = r.ipv4_prefix.as_ref().or(r.ipv6_prefix.as_ref()) {
                errors.push(ctx.err(p.span(), "prefix lengths apply to key = \"ip_prefix\" only"));
            }
            BanKey::Ip
        }
        Some((k, "ip_prefix")) => {
            if v4 == 0 || v6 == 0 {
                errors.push(ctx.err(
                    k.span(),
                    "a prefix length of 0 would ban every client with one ban",
                ));
            }
            BanKey::IpPrefix { v4, v6 }
        }
        Some((k, other)) => {
            errors.push(
                ctx.err(k.span(), format!("{other:?} is not a ban key"))
                    .help("bans are on the client address: use \"ip\" or \"ip_prefix\""),
            );
            BanKey::Ip
        }
    };
    for route in &r.routes {
        if !routes.contains(&route.get_ref().as_str()) {
            errors.push(
                ctx.err(
                    route.span(),
                    format!("no route is named {:?}", route.get_ref()),
                )
                .help(format!("routes: {}", routes.join(", "))),
            );
        }
    }
    (errors.len() == before).then(|| BanRule {
        name: name.into(),
        statuses,
        more_than: *r.more_than.get_ref(),
        within_ms,
        ban_ms,
        key,
        routes: r
            .routes
            .iter()
            .map(|x| Arc::from(x.get_ref().as_str()))
            .collect(),
    })
}
