//! Fix hints, derived from the policies themselves: for a default deny, each
//! permit policy that could have applied, with the scope constraint or the
//! condition that failed, phrased with the request's facts.
//!
//! Each permit is split at load into its scope constraints and one small
//! policy per `when`/`unless` clause, so that a denial can evaluate the parts
//! separately and name the one that was false.

use cedar_policy::{
    Authorizer, Decision, Entities, EntityUid, Policy, PolicyId, PolicySet, PrincipalConstraint,
    Request, ResourceConstraint,
};
use serde_json::{Value, json};

/// A permit policy, taken apart for explaining why it did not apply.
#[derive(Debug)]
pub struct PermitHint {
    id: String,
    principal: PrincipalConstraint,
    resource: ResourceConstraint,
    clauses: Vec<Clause>,
}

#[derive(Debug)]
struct Clause {
    text: String,
    set: PolicySet,
}

/// The request as authorization saw it.
pub(super) struct Facts<'a> {
    pub principal: &'a EntityUid,
    pub resource: &'a EntityUid,
    pub action: &'a EntityUid,
    pub entities: &'a Entities,
    pub request: &'a Request,
}

impl PermitHint {
    pub(super) fn new(p: &Policy) -> Result<Self, String> {
        let est = p.to_json().map_err(|e| e.to_string())?;
        let conditions = est
            .get("conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut clauses = Vec::new();
        for (i, cond) in conditions.into_iter().enumerate() {
            let single = json!({
                "effect": "permit",
                "principal": {"op": "All"},
                "action": {"op": "All"},
                "resource": {"op": "All"},
                "conditions": [cond],
            });
            let id = PolicyId::new(format!("{}#{i}", p.id()));
            let policy = Policy::from_json(Some(id), single).map_err(|e| e.to_string())?;
            let text = clause_text(&policy.to_string());
            let set = PolicySet::from_policies([policy]).map_err(|e| e.to_string())?;
            clauses.push(Clause { text, set });
        }
        Ok(PermitHint {
            id: p.id().to_string(),
            principal: p.principal_constraint(),
            resource: p.resource_constraint(),
            clauses,
        })
    }

    pub(super) fn id(&self) -> &str {
        &self.id
    }

    /// What kept this permit from applying, one phrase per failed part.
    fn failures(&self, f: &Facts<'_>) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(s) = scope_failure(
            "principal",
            f.principal,
            &principal_scope(&self.principal),
            f,
        ) {
            out.push(s);
        }
        if let Some(s) = scope_failure("resource", f.resource, &resource_scope(&self.resource), f) {
            out.push(s);
        }
        for clause in &self.clauses {
            let response = Authorizer::new().is_authorized(f.request, &clause.set, f.entities);
            let errors: Vec<String> = response
                .diagnostics()
                .errors()
                .map(|e| e.to_string())
                .collect();
            if !errors.is_empty() {
                out.push(format!(
                    "`{}` could not be evaluated: {}",
                    clause.text,
                    errors.join("; ")
                ));
            } else if response.decision() == Decision::Deny {
                out.push(match clause.text.strip_prefix("unless ") {
                    Some(cond) => format!("`{cond}` is true, and the policy says unless"),
                    None => format!("`{}` is false", clause.text),
                });
            }
        }
        out
    }
}

/// A scope constraint in one shape for both principal and resource.
enum Scope {
    Any,
    In(EntityUid),
    Eq(EntityUid),
    Is(String),
    IsIn(String, EntityUid),
}

fn principal_scope(c: &PrincipalConstraint) -> Scope {
    match c {
        PrincipalConstraint::Any => Scope::Any,
        PrincipalConstraint::In(u) => Scope::In(u.clone()),
        PrincipalConstraint::Eq(u) => Scope::Eq(u.clone()),
        PrincipalConstraint::Is(t) => Scope::Is(t.to_string()),
        PrincipalConstraint::IsIn(t, u) => Scope::IsIn(t.to_string(), u.clone()),
    }
}

fn resource_scope(c: &ResourceConstraint) -> Scope {
    match c {
        ResourceConstraint::Any => Scope::Any,
        ResourceConstraint::In(u) => Scope::In(u.clone()),
        ResourceConstraint::Eq(u) => Scope::Eq(u.clone()),
        ResourceConstraint::Is(t) => Scope::Is(t.to_string()),
        ResourceConstraint::IsIn(t, u) => Scope::IsIn(t.to_string(), u.clone()),
    }
}

fn scope_failure(var: &str, uid: &EntityUid, scope: &Scope, f: &Facts<'_>) -> Option<String> {
    let ty = uid.type_name().to_string();
    let in_ok = |g: &EntityUid| f.entities.is_ancestor_of(g, uid);
    let ancestors = || {
        let mut v: Vec<String> = f
            .entities
            .ancestors(uid)
            .map(|it| it.map(ToString::to_string).collect())
            .unwrap_or_default();
        v.sort();
        format!("[{}]", v.join(", "))
    };
    match scope {
        Scope::Any => None,
        Scope::Eq(want) if want != uid => Some(format!("requires {var} == {want}; {var} is {uid}")),
        Scope::In(g) if !in_ok(g) => Some(format!(
            "requires {var} in {g}; {uid} is in {}",
            ancestors()
        )),
        Scope::Is(t) if *t != ty => Some(format!("requires {var} is {t}; {var} is {uid}")),
        Scope::IsIn(t, g) if *t != ty || !in_ok(g) => Some(format!(
            "requires {var} is {t} in {g}; {uid} is in {}",
            ancestors()
        )),
        _ => None,
    }
}

/// The body of the single `when { ... }` / `unless { ... }` of a one-clause policy.
fn clause_text(policy_src: &str) -> String {
    let kind_at = policy_src
        .find(") when")
        .or_else(|| policy_src.find(") unless"));
    let Some(at) = kind_at else {
        return policy_src.trim().to_owned();
    };
    let rest = &policy_src[at + 2..];
    let unless = rest.starts_with("unless");
    let body = rest
        .find('{')
        .zip(rest.rfind('}'))
        .map(|(a, b)| rest[a + 1..b].trim())
        .unwrap_or(rest);
    let body = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if unless {
        format!("unless {body}")
    } else {
        body
    }
}

pub(super) fn default_deny_hint(permits: &[PermitHint], f: &Facts<'_>) -> String {
    if permits.is_empty() {
        return format!(
            "no permit policy can apply to {}; add one that permits it",
            f.action
        );
    }
    let mut parts = Vec::new();
    for p in permits {
        let failures = p.failures(f);
        let why = if failures.is_empty() {
            "did not apply".to_owned()
        } else {
            failures.join("; ")
        };
        parts.push(format!("policy {:?}: {why}", p.id));
    }
    format!(
        "no permit policy applied to {} for {} on {}. {}",
        f.principal,
        f.action,
        f.resource,
        parts.join(". ")
    )
}

pub(super) fn forbid_hint(ids: &[std::sync::Arc<str>], f: &Facts<'_>) -> String {
    format!(
        "forbid polic{} {} applied to {} for {} on {}",
        if ids.len() == 1 { "y" } else { "ies" },
        ids.iter()
            .map(|i| format!("{i:?}"))
            .collect::<Vec<_>>()
            .join(", "),
        f.principal,
        f.action,
        f.resource
    )
}
