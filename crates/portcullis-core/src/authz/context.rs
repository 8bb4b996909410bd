//! The Cedar context of a request, and claim values turned into Cedar values.
//!
//! The context record is fixed (docs/policy.md lists it): `ip`, `method`,
//! `path`, `route`, `scopes`, `authenticated`, `auth_method`, `time`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use cedar_policy::{Context, RestrictedExpression};
use serde_json::Value;

use super::AuthzInput;

/// Cedar's `RestrictedExpression::new_ip` parses the extension's name with
/// its policy parser on every call (about 4 µs, most of a request's cost),
/// so the expression is built once per client address. Bounded: when full
/// it is emptied, which costs rebuilding, never a wrong answer.
#[derive(Debug)]
pub(super) struct IpExprCache {
    entries: Mutex<HashMap<IpAddr, RestrictedExpression>>,
}

const IP_CACHE_CAPACITY: usize = 4096;

impl IpExprCache {
    pub(super) fn new() -> Self {
        IpExprCache {
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, ip: IpAddr) -> RestrictedExpression {
        let Ok(mut entries) = self.entries.lock() else {
            return RestrictedExpression::new_ip(ip.to_string());
        };
        if let Some(e) = entries.get(&ip) {
            return e.clone();
        }
        if entries.len() >= IP_CACHE_CAPACITY {
            entries.clear();
        }
        let e = RestrictedExpression::new_ip(ip.to_string());
        entries.insert(ip, e.clone());
        e
    }
}

pub(super) fn build(input: &AuthzInput<'_>, ips: &IpExprCache) -> Result<Context, String> {
    let scopes = input
        .identity
        .map(|id| id.scopes.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|s| RestrictedExpression::new_string(s.clone()));
    let auth_method = input.identity.map_or("none", |id| id.method.as_str());
    Context::from_pairs([
        ("ip".to_owned(), ips.get(input.client_ip)),
        (
            "method".to_owned(),
            RestrictedExpression::new_string(input.method.to_owned()),
        ),
        (
            "path".to_owned(),
            RestrictedExpression::new_string(input.path.to_owned()),
        ),
        (
            "route".to_owned(),
            RestrictedExpression::new_string(input.route.to_owned()),
        ),
        ("scopes".to_owned(), RestrictedExpression::new_set(scopes)),
        (
            "authenticated".to_owned(),
            RestrictedExpression::new_bool(input.identity.is_some()),
        ),
        (
            "auth_method".to_owned(),
            RestrictedExpression::new_string(auth_method.to_owned()),
        ),
        ("time".to_owned(), RestrictedExpression::new_long(input.now)),
    ])
    .map_err(|e| e.to_string())
}

/// A claim value as a Cedar value. The JWT verifier has already refused
/// claims that have no Cedar form (floats, nulls).
pub(super) fn json_to_cedar(v: &Value) -> Result<RestrictedExpression, String> {
    Ok(match v {
        Value::String(s) => RestrictedExpression::new_string(s.clone()),
        Value::Bool(b) => RestrictedExpression::new_bool(*b),
        Value::Number(n) => RestrictedExpression::new_long(
            n.as_i64()
                .ok_or_else(|| "a claim is not an integer".to_owned())?,
        ),
        Value::Array(items) => RestrictedExpression::new_set(
            items
                .iter()
                .map(json_to_cedar)
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Value::Object(m) => RestrictedExpression::new_record(
            m.iter()
                .map(|(k, v)| json_to_cedar(v).map(|e| (k.clone(), e)))
                .collect::<Result<Vec<_>, _>>()?,
        )
        .map_err(|e| e.to_string())?,
        Value::Null => return Err("a claim is null".to_owned()),
    })
}
