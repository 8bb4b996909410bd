//! `[[route]]`: path templates, methods, hosts, Cedar actions and resources,
//! checked against the schema so a route cannot name an action or resource
//! type the policies can never match.

use std::collections::HashMap;
use std::str::FromStr;

use http::Method;
use portcullis_core::authn::AuthMode;
use portcullis_core::cedar_policy::{EntityTypeName, EntityUid};
use portcullis_core::normalize::host_of;
use portcullis_core::route::{Methods, RoutePattern, RouteTable, Template};
use portcullis_core::spec::{ResourceTemplate, RouteSpec};
use toml::Spanned;

use super::Ctx;
use super::policy::CompiledPolicy;
use crate::diag::ConfigError;
use crate::raw::RawRoute;

pub(crate) fn compile(
    ctx: &Ctx,
    raw: &[Spanned<RawRoute>],
    policy: &CompiledPolicy,
) -> Result<(RouteTable, Vec<RouteSpec>), Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut patterns = Vec::new();
    let mut specs = Vec::new();
    let mut names: HashMap<&str, usize> = HashMap::new();
    for r in raw {
        let route = r.get_ref();
        if let Some(first) = names.insert(route.name.get_ref(), route.name.span().start) {
            errors.push(
                ctx.err(
                    route.name.span(),
                    format!("route name {:?} is used twice", route.name.get_ref()),
                )
                .help(format!("the first is at {}", ctx.src.location(first))),
            );
        }
        match one(ctx, route, policy) {
            Ok((p, s)) => {
                patterns.push(p);
                specs.push(s);
            }
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    if raw.is_empty() {
        return Err(vec![
            ctx.err(
                0..0,
                "no routes are configured, so every request would be 404",
            )
            .help("add [[route]] tables; docs/configuration.md has an example"),
        ]);
    }
    let table = RouteTable::new(patterns).map_err(|c| {
        let first = raw[c.first].get_ref();
        let second = raw[c.second].get_ref();
        vec![ctx
            .err(second.path.span(), format!(
                "route {:?} competes with route {:?} for the same requests",
                second.name.get_ref(),
                first.name.get_ref()
            ))
            .label("same shape and host as an earlier route, with overlapping methods")
            .help(format!(
                "route {:?} (at {}) has the same path shape and shares a method; merge them or make the methods disjoint",
                first.name.get_ref(),
                ctx.src.location(first.path.span().start)
            ))]
    })?;
    Ok((table, specs))
}

fn one(
    ctx: &Ctx,
    r: &RawRoute,
    policy: &CompiledPolicy,
) -> Result<(RoutePattern, RouteSpec), ConfigError> {
    let template =
        Template::parse(r.path.get_ref()).map_err(|e| ctx.err(r.path.span(), e.to_string()))?;
    let methods = methods(ctx, &r.methods)?;
    let host =
        match &r.host {
            None => None,
            Some(h) => Some(host_of(h.get_ref()).ok_or_else(|| {
                ctx.err(h.span(), format!("{:?} is not a host name", h.get_ref()))
            })?),
        };
    let action = action(ctx, &r.action, policy)?;
    let auth = match r.auth.as_ref().map(|a| (a.get_ref().as_str(), a.span())) {
        None | Some(("required", _)) => AuthMode::Required,
        Some(("optional", _)) => AuthMode::Optional,
        Some(("off", _)) => AuthMode::Off,
        Some((other, span)) => {
            return Err(ctx
                .err(span, format!("auth = {other:?} is not a mode"))
                .help("use \"required\", \"optional\" or \"off\""));
        }
    };
    let resource = resource(ctx, r, &template, &action, policy)?;
    check_principals(ctx, r, &action, auth, policy)?;
    if auth == AuthMode::Off && !r.scopes.is_empty() {
        return Err(ctx
            .err(r.name.span(), "the route needs scopes but does not authenticate, so it would refuse every request")
            .help("remove auth = \"off\" or the scopes"));
    }
    if let Some(code) = r
        .deny
        .as_ref()
        .and_then(|d| d.error.as_deref())
        .filter(|c| !crate::compile::is_error_code(c))
    {
        return Err(ctx
            .err(
                r.name.span(),
                format!("deny.error {code:?} is not a valid error code"),
            )
            .help("error codes are identifiers such as InsufficientPermissions"));
    }
    if let Some(bad) = r.scopes.iter().find(|s| s.is_empty() || s.contains(' ')) {
        return Err(ctx.err(
            r.name.span(),
            format!("scope {bad:?} is not a single scope token"),
        ));
    }
    let spec = RouteSpec {
        name: r.name.get_ref().as_str().into(),
        path: r.path.get_ref().as_str().into(),
        action,
        resource,
        auth,
        scopes: r.scopes.clone(),
        conceal: r.conceal,
        deny_code: r.deny.as_ref().and_then(|d| d.error.clone()),
        deny_message: r.deny.as_ref().and_then(|d| d.message.clone()),
    };
    Ok((
        RoutePattern {
            host,
            methods,
            template,
        },
        spec,
    ))
}

pub(crate) fn methods(ctx: &Ctx, raw: &Spanned<Vec<String>>) -> Result<Methods, ConfigError> {
    let list = raw.get_ref();
    if list.iter().any(|m| m == "*") {
        if list.len() > 1 {
            return Err(ctx.err(
                raw.span(),
                "\"*\" already means every method; list nothing else",
            ));
        }
        return Ok(Methods::Any);
    }
    if list.is_empty() {
        return Err(ctx
            .err(raw.span(), "no methods listed")
            .help("list methods such as [\"GET\"], or [\"*\"] for any"));
    }
    let mut out = Vec::new();
    for m in list {
        let ok = !m.is_empty()
            && m.bytes()
                .all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_');
        let method = Method::from_bytes(m.as_bytes())
            .ok()
            .filter(|_| ok)
            .ok_or_else(|| {
                ctx.err(raw.span(), format!("{m:?} is not a method"))
                    .help("methods are case-sensitive: write GET, POST, DELETE ...")
            })?;
        out.push(method);
    }
    Ok(Methods::only(out))
}

/// `readUser` finds the one schema action with that id; `Ns::Action::"x"`
/// is taken as written. Either way it must exist in the schema.
fn action(
    ctx: &Ctx,
    raw: &Spanned<String>,
    policy: &CompiledPolicy,
) -> Result<EntityUid, ConfigError> {
    let text = raw.get_ref();
    let known: Vec<&EntityUid> = policy.schema.actions().collect();
    let found = if text.contains("::") {
        let uid = EntityUid::from_str(text)
            .map_err(|e| ctx.err(raw.span(), format!("{text:?} is not an action uid: {e}")))?;
        known.iter().find(|a| ***a == uid).map(|a| (*a).clone())
    } else {
        let matches: Vec<&&EntityUid> = known
            .iter()
            .filter(|a| a.id().unescaped() == text)
            .collect();
        if matches.len() > 1 {
            return Err(ctx
                .err(
                    raw.span(),
                    format!("action {text:?} exists in several namespaces"),
                )
                .help(format!(
                    "write it in full, one of: {}",
                    matches
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
        }
        matches.first().map(|a| (**a).clone())
    };
    found.ok_or_else(|| {
        let mut names: Vec<String> = known
            .iter()
            .map(|a| a.id().unescaped().to_owned())
            .collect();
        names.sort();
        ctx.err(
            raw.span(),
            format!("action {text:?} is not declared in the schema"),
        )
        .help(format!("declared actions: {}", names.join(", ")))
    })
}

fn resource(
    ctx: &Ctx,
    r: &RawRoute,
    template: &Template,
    action: &EntityUid,
    policy: &CompiledPolicy,
) -> Result<ResourceTemplate, ConfigError> {
    let Some(res) = &r.resource else {
        let route_type =
            EntityTypeName::from_str("Route").map_err(|e| ctx.err(r.name.span(), e.to_string()))?;
        return Ok(ResourceTemplate::fixed(route_type, r.name.get_ref()));
    };
    let raw = res.get_ref();
    let type_name = EntityTypeName::from_str(&raw.type_name).map_err(|e| {
        ctx.err(
            res.span(),
            format!("{:?} is not an entity type name: {e}", raw.type_name),
        )
    })?;
    let allowed: Vec<String> = policy
        .schema
        .resources_for_action(action)
        .map(|it| it.map(ToString::to_string).collect())
        .unwrap_or_default();
    if !allowed.contains(&type_name.to_string()) {
        return Err(ctx
            .err(
                res.span(),
                format!("action {action} does not apply to resources of type {type_name}"),
            )
            .help(format!(
                "the schema says {action} applies to: [{}]",
                allowed.join(", ")
            )));
    }
    let id = raw.id.clone().unwrap_or_else(|| r.name.get_ref().clone());
    ResourceTemplate::parse(type_name, &id, template).map_err(|e| ctx.err(res.span(), e))
}

/// The principals the route can produce must be ones the action applies to,
/// or every policy for the action is unreachable for them.
fn check_principals(
    ctx: &Ctx,
    r: &RawRoute,
    action: &EntityUid,
    auth: AuthMode,
    policy: &CompiledPolicy,
) -> Result<(), ConfigError> {
    let allowed: Vec<String> = policy
        .schema
        .principals_for_action(action)
        .map(|it| it.map(ToString::to_string).collect())
        .unwrap_or_default();
    let mut needed = Vec::new();
    if auth != AuthMode::Off {
        needed.push(policy.names.principal_type.to_string());
    }
    if auth != AuthMode::Required {
        needed.push(policy.names.anonymous.type_name().to_string());
    }
    if let Some(missing) = needed.iter().find(|n| !allowed.contains(n)) {
        let why = if *missing == policy.names.anonymous.type_name().to_string() {
            format!(
                "with auth = {:?} anonymous callers ({}) reach it",
                auth.as_str(),
                policy.names.anonymous
            )
        } else {
            "authenticated callers reach it".to_owned()
        };
        return Err(ctx
            .err(r.action.span(), format!("action {action} does not apply to principals of type {missing}, but {why}"))
            .help(format!("add {missing} to the action's `principal` list in the schema (it lists [{}]), or change the route's auth", allowed.join(", "))));
    }
    Ok(())
}
