//! The Cedar context of a request, and claim values turned into Cedar values.
//!
//! The context record is fixed (docs/policy.md lists it): `ip`, `country`,
//! `method`, `path`, `route`, `scopes`, `authenticated`, `auth_method`,
//! `time`.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use cedar_policy::{Context, RestrictedExpression};
use cedar_policy_core::ast;
use serde_json::Value;
use smol_str::SmolStr;

use super::AuthzInput;

/// The `ip` value of a client address. Building it through Cedar's public
/// API (`RestrictedExpression::new_ip`) parses the extension's name with the
/// policy parser on every call, so it is built once per address and kept.
/// Bounded: when full it is emptied, which costs rebuilding, never a wrong
/// answer.
#[derive(Debug)]
pub(super) struct IpValueCache {
    entries: Mutex<HashMap<IpAddr, ast::Value>>,
}

const IP_CACHE_CAPACITY: usize = 4096;

impl IpValueCache {
    pub(super) fn new() -> Self {
        IpValueCache {
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, ip: IpAddr) -> Result<ast::Value, String> {
        if let Some(v) = self.entries.lock().ok().and_then(|e| e.get(&ip).cloned()) {
            return Ok(v);
        }
        let ctx = Context::from_pairs([(
            "ip".to_owned(),
            RestrictedExpression::new_ip(ip.to_string()),
        )])
        .map_err(|e| e.to_string())?;
        let value = match AsRef::<ast::Context>::as_ref(&ctx) {
            ast::Context::Value(map) => map.get("ip").cloned(),
            ast::Context::RestrictedResidual(_) => None,
        }
        .ok_or_else(|| "the client address has no Cedar ip value".to_owned())?;
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= IP_CACHE_CAPACITY {
                entries.clear();
            }
            entries.insert(ip, value.clone());
        }
        Ok(value)
    }
}

/// The context record, built from values (an IPv4-mapped IPv6 address is
/// given as the IPv4 address, which is what it is and what Cedar accepts): nothing in it needs evaluating,
/// and going through restricted expressions would evaluate every field.
pub(super) fn build(input: &AuthzInput<'_>, ips: &IpValueCache) -> Result<Context, String> {
    let scopes = input
        .identity
        .map(|id| id.scopes.as_slice())
        .unwrap_or_default();
    let auth_method = input.identity.map_or("none", |id| id.method.as_str());
    // In key order, so the map is built in one pass.
    let record: BTreeMap<SmolStr, ast::Value> = BTreeMap::from([
        (
            SmolStr::new_static("auth_method"),
            ast::Value::from(auth_method),
        ),
        (
            SmolStr::new_static("authenticated"),
            ast::Value::from(input.identity.is_some()),
        ),
        (
            SmolStr::new_static("country"),
            ast::Value::from(input.country.as_ref().map_or("", |c| c.as_str())),
        ),
        (
            SmolStr::new_static("ip"),
            ips.get(input.client_ip.to_canonical())?,
        ),
        (
            SmolStr::new_static("method"),
            ast::Value::from(input.method),
        ),
        (SmolStr::new_static("path"), ast::Value::from(input.path)),
        (SmolStr::new_static("route"), ast::Value::from(input.route)),
        (
            SmolStr::new_static("scopes"),
            ast::Value::set(scopes.iter().map(|s| ast::Value::from(s.as_str())), None),
        ),
        (SmolStr::new_static("time"), ast::Value::from(input.now)),
    ]);
    Ok(Context::from(ast::Context::Value(Arc::new(record))))
}

/// A claim value as a Cedar value. The JWT verifier has already refused
/// claims that have no Cedar form (floats, nulls).
pub(super) fn json_to_value(v: &Value) -> Result<ast::Value, String> {
    Ok(match v {
        Value::String(s) => ast::Value::from(s.as_str()),
        Value::Bool(b) => ast::Value::from(*b),
        Value::Number(n) => ast::Value::from(
            n.as_i64()
                .ok_or_else(|| "a claim is not an integer".to_owned())?,
        ),
        Value::Array(items) => ast::Value::set(
            items
                .iter()
                .map(json_to_value)
                .collect::<Result<Vec<_>, _>>()?,
            None,
        ),
        Value::Object(m) => ast::Value::record(
            m.iter()
                .map(|(k, v)| json_to_value(v).map(|e| (SmolStr::from(k.as_str()), e)))
                .collect::<Result<Vec<_>, _>>()?,
            None,
        ),
        Value::Null => return Err("a claim is null".to_owned()),
    })
}
