//! Stage 9: authorization with Cedar. Maps the request onto a Cedar request
//! (principal, action, resource, context), evaluates only the policies that
//! can apply to the route's action, and reads the operator's annotations
//! (`@error`, `@message`, `@conceal`) off the policies that decided.
//!
//! Anything uncertain is a deny: a forbid policy that fails to evaluate
//! denies, because Cedar alone would skip it.

mod context;
mod fast;
mod hint;
mod slice;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use cedar_policy::{
    ActionConstraint, Effect, Entities, Entity, EntityId, EntityTypeName, EntityUid, Policy,
    PolicyId, PolicySet, Request,
};
use cedar_policy_core::ast;
use cedar_policy_core::evaluator::Evaluator;
use cedar_policy_core::extensions::Extensions;
use smol_str::SmolStr;

use crate::authn::Identity;
pub use hint::PermitHint;
use slice::EntityIndex;

/// The Cedar types portcullis maps requests onto.
#[derive(Debug, Clone)]
pub struct EntityNames {
    /// The type of authenticated principals (default `User`).
    pub principal_type: EntityTypeName,
    /// The type of roles, the principal's parents (default `Role`).
    pub role_type: EntityTypeName,
    /// The principal used when nobody authenticated (default `Anonymous::"anonymous"`).
    pub anonymous: EntityUid,
}

/// What an operator wrote on a policy to shape its denial.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyMeta {
    /// `@error("...")`: the client-facing error code.
    pub error: Option<String>,
    /// `@message("...")`: the client-facing message.
    pub message: Option<String>,
    /// `@conceal`: deny as 404.
    pub conceal: bool,
}

impl PolicyMeta {
    fn of(p: &Policy) -> Self {
        PolicyMeta {
            error: p.annotation("error").map(str::to_owned),
            message: p.annotation("message").map(str::to_owned),
            conceal: p.annotation("conceal").is_some(),
        }
    }

    fn is_empty(&self) -> bool {
        self.error.is_none() && self.message.is_none() && !self.conceal
    }
}

/// A policy as evaluated per request: its condition (scope and body in
/// one expression) built once at load. Cedar's authorizer rebuilds it on
/// every call.
#[derive(Debug)]
struct Compiled {
    id: ast::PolicyID,
    forbid: bool,
    condition: ast::Expr,
    env: ast::SlotEnv,
    /// The condition for the direct evaluator, when it models all of it.
    fast: Option<fast::Fast>,
}

#[derive(Debug)]
struct ActionPolicies {
    /// The policies that can apply to the action, ready to evaluate, in id
    /// order.
    compiled: Vec<Compiled>,
    /// Permits, in id order (the order annotations are looked up in).
    permits: Vec<PermitHint>,
    /// Whether any policy for the action asks for concealment.
    conceal_any: bool,
    /// When every policy for the action is a permit with no condition and
    /// no principal or resource constraint, the answer is known without
    /// evaluating: allowed, by all of them (their ids, sorted).
    always: Option<Vec<Arc<str>>>,
}

/// The loaded policy: partitioned by action, with the entities from the
/// operator's file and the schema's action hierarchy.
#[derive(Debug)]
pub struct CedarPolicy {
    by_action: HashMap<EntityUid, ActionPolicies>,
    meta: HashMap<PolicyId, PolicyMeta>,
    entities: EntityIndex,
    names: EntityNames,
    ips: context::IpValueCache,
    slices: slice::SliceCache,
    /// Each policy id as text, made at load: formatting a `PolicyId`
    /// escapes it character by character, which showed in profiles.
    id_text: HashMap<ast::PolicyID, Arc<str>>,
}

/// The facts one authorization needs.
#[derive(Debug)]
pub struct AuthzInput<'a> {
    /// The caller, or `None` for anonymous.
    pub identity: Option<&'a Arc<Identity>>,
    /// The route's action.
    pub action: &'a EntityUid,
    /// The resource built from the path.
    pub resource: &'a EntityUid,
    /// The client address.
    pub client_ip: IpAddr,
    /// The client's country, if known.
    pub country: Option<crate::network::Country>,
    /// The method.
    pub method: &'a str,
    /// The canonical path.
    pub path: &'a str,
    /// The route name.
    pub route: &'a str,
    /// Unix seconds.
    pub now: i64,
}

/// How authorization ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthzOutcome {
    /// Permitted by these policies.
    Allow(Vec<Arc<str>>),
    /// Forbidden by these policies.
    Forbid(Vec<Arc<str>>),
    /// No permit applied.
    DefaultDeny,
    /// Could not be decided (a forbid failed to evaluate, or the request could
    /// not be built); refused.
    Error(Vec<String>),
}

/// The result of authorization, with what the renderer and the log need.
#[derive(Debug, Clone)]
pub struct AuthzVerdict {
    /// The outcome.
    pub outcome: AuthzOutcome,
    /// The annotations that shape the denial, if a policy carries them.
    pub meta: PolicyMeta,
    /// The principal as Cedar saw it.
    pub principal: EntityUid,
    /// Evaluation errors (also for allowed requests, where only permits failed).
    pub errors: Vec<String>,
    /// The fix hint (denials only).
    pub hint: String,
}

impl CedarPolicy {
    /// Partition `policies` by the route actions that can use them. `entities`
    /// must already hold the schema's action entities.
    pub fn new(
        policies: &PolicySet,
        entities: Entities,
        names: EntityNames,
        route_actions: &[EntityUid],
    ) -> Result<Self, String> {
        let mut by_action = HashMap::new();
        for action in route_actions {
            if by_action.contains_key(action) {
                continue;
            }
            let mut permits = Vec::new();
            let mut conceal_any = false;
            let mut sorted: Vec<&Policy> = policies.policies().collect();
            sorted.sort_by_key(|p| p.id().to_string());
            let mut compiled = Vec::new();
            let mut unconditional: Vec<Arc<str>> = Vec::new();
            let mut all_unconditional = true;
            for p in sorted {
                if !applies_to(p, action, &entities) {
                    continue;
                }
                if unconditional_permit(p, action) {
                    unconditional.push(Arc::from(p.id().to_string()));
                } else {
                    all_unconditional = false;
                }
                let core = AsRef::<ast::Policy>::as_ref(p);
                let condition = core.condition();
                compiled.push(Compiled {
                    id: core.id().clone(),
                    forbid: p.effect() == Effect::Forbid,
                    fast: fast::Fast::compile(&condition, core.env(), action.as_ref()),
                    condition,
                    env: core.env().clone(),
                });
                conceal_any |= p.annotation("conceal").is_some();
                if p.effect() == Effect::Permit {
                    permits.push(PermitHint::new(p)?);
                }
            }
            unconditional.sort();
            by_action.insert(
                action.clone(),
                ActionPolicies {
                    compiled,
                    permits,
                    conceal_any,
                    always: (all_unconditional && !unconditional.is_empty())
                        .then_some(unconditional),
                },
            );
        }
        let meta = policies
            .policies()
            .map(|p| (p.id().clone(), PolicyMeta::of(p)))
            .filter(|(_, m)| !m.is_empty())
            .collect();
        Ok(CedarPolicy {
            by_action,
            meta,
            entities: EntityIndex::new(entities, policies)?,
            names,
            ips: context::IpValueCache::new(),
            slices: slice::SliceCache::default(),
            id_text: policies
                .policies()
                .map(|p| {
                    (
                        AsRef::<ast::PolicyID>::as_ref(p.id()).clone(),
                        Arc::from(p.id().to_string()),
                    )
                })
                .collect(),
        })
    }

    /// The principal uid of an identity (or the anonymous principal).
    pub fn principal_uid(&self, identity: Option<&Arc<Identity>>) -> EntityUid {
        match identity {
            Some(id) => EntityUid::from_type_name_and_id(
                self.names.principal_type.clone(),
                EntityId::new(&id.subject),
            ),
            None => self.names.anonymous.clone(),
        }
    }

    /// Decide one request.
    pub fn authorize(&self, input: &AuthzInput<'_>) -> AuthzVerdict {
        let principal = self.principal_uid(input.identity);
        let mut verdict = AuthzVerdict {
            outcome: AuthzOutcome::DefaultDeny,
            meta: PolicyMeta::default(),
            principal: principal.clone(),
            errors: Vec::new(),
            hint: String::new(),
        };
        let Some(part) = self.by_action.get(input.action) else {
            verdict.hint = format!(
                "no policy mentions {}; add a permit policy for it",
                input.action
            );
            return verdict;
        };
        if let Some(ids) = &part.always {
            verdict.outcome = AuthzOutcome::Allow(ids.clone());
            return verdict;
        }
        let built = self
            .slices
            .get_or_build(input.identity, input.resource, input.action, || {
                self.request_entities(&principal, input.identity, input.resource, input.action)
            })
            .and_then(|entities| {
                let ctx = context::build(input, &self.ips)?;
                Request::new(
                    principal.clone(),
                    input.action.clone(),
                    input.resource.clone(),
                    ctx,
                    None,
                )
                .map(|r| (entities, r))
                .map_err(|e| e.to_string())
            });
        let (entities, request) = match built {
            Ok(b) => b,
            Err(e) => {
                verdict.outcome = AuthzOutcome::Error(vec![e.clone()]);
                verdict.meta.conceal = part.conceal_any;
                verdict.hint = format!("the Cedar request could not be built: {e}");
                return verdict;
            }
        };
        let entities: &Entities = &entities;
        verdict.outcome = self.evaluate(part, &request, entities, &mut verdict.errors);
        let facts = hint::Facts {
            principal: &principal,
            resource: input.resource,
            action: input.action,
            entities,
            request: &request,
        };
        match &verdict.outcome {
            AuthzOutcome::Allow(_) => {}
            AuthzOutcome::Forbid(ids) => {
                verdict.meta = self.denial_meta(ids.iter().map(AsRef::as_ref));
                verdict.hint = hint::forbid_hint(ids, &facts);
            }
            AuthzOutcome::DefaultDeny => {
                verdict.meta = self.denial_meta(part.permits.iter().map(|p| p.id()));
                verdict.hint = hint::default_deny_hint(&part.permits, &facts);
            }
            AuthzOutcome::Error(errs) => {
                verdict.meta.conceal = part.conceal_any;
                verdict.hint = format!(
                    "a forbid policy could not be evaluated, so the request was refused: {}",
                    errs.join("; ")
                );
            }
        }
        verdict
    }

    /// Cedar's rules, over the conditions built at load: a satisfied forbid
    /// denies, else a satisfied permit allows, else deny; and ours on top:
    /// a forbid that fails to evaluate denies. Each condition goes to the
    /// direct evaluator first (`fast`), and to Cedar's own evaluator
    /// whenever that one gives up; the authorizer's per-call rebuilding of
    /// every policy's condition, and its response maps, are left out.
    fn evaluate(
        &self,
        part: &ActionPolicies,
        request: &Request,
        entities: &Entities,
        errors: &mut Vec<String>,
    ) -> AuthzOutcome {
        let request = AsRef::<ast::Request>::as_ref(request);
        let entities = AsRef::<cedar_policy_core::entities::Entities>::as_ref(entities);
        let scope = fast::Scope::new(request, entities);
        let mut cedar: Option<Evaluator<'_>> = None;
        let text = |id: &ast::PolicyID| -> Arc<str> {
            self.id_text
                .get(id)
                .cloned()
                .unwrap_or_else(|| Arc::from(id.to_string()))
        };
        let mut permits = Vec::new();
        let mut forbids = Vec::new();
        let mut failed_forbids = Vec::new();
        let mut residual = false;
        for c in &part.compiled {
            if let Some(b) = c
                .fast
                .as_ref()
                .zip(scope.as_ref())
                .and_then(|(f, s)| f.satisfied(s))
            {
                match (b, c.forbid) {
                    (true, true) => forbids.push(text(&c.id)),
                    (true, false) => permits.push(text(&c.id)),
                    (false, _) => {}
                }
                continue;
            }
            let eval = cedar.get_or_insert_with(|| {
                Evaluator::new(request.clone(), entities, Extensions::all_available())
            });
            let satisfied = match eval.partial_interpret(&c.condition, &c.env) {
                Ok(ast::PartialValue::Value(v)) => match v.value_kind() {
                    ast::ValueKind::Lit(ast::Literal::Bool(b)) => Ok(*b),
                    // A condition is a conjunction: never anything else.
                    _ => Err("the condition did not evaluate to a boolean".to_owned()),
                },
                Ok(ast::PartialValue::Residual(_)) => {
                    residual = true;
                    continue;
                }
                Err(e) => Err(e.to_string()),
            };
            match satisfied {
                Ok(true) if c.forbid => forbids.push(text(&c.id)),
                Ok(true) => permits.push(text(&c.id)),
                Ok(false) => {}
                Err(error) => {
                    let message = format!("policy {}: {error}", text(&c.id));
                    if c.forbid {
                        failed_forbids.push(message.clone());
                    }
                    errors.push(message);
                }
            }
        }
        if !failed_forbids.is_empty() {
            AuthzOutcome::Error(failed_forbids)
        } else if residual {
            // Concrete requests leave no residuals; if one ever did, refuse.
            AuthzOutcome::Error(vec!["the policy could not be fully evaluated".to_owned()])
        } else if !forbids.is_empty() {
            forbids.sort();
            AuthzOutcome::Forbid(forbids)
        } else if !permits.is_empty() {
            permits.sort();
            AuthzOutcome::Allow(permits)
        } else {
            AuthzOutcome::DefaultDeny
        }
    }

    /// The code and message of the first policy (in the given order) that
    /// has either; concealment if any of them asks for it, so that one
    /// policy's `@message` cannot cancel another's `@conceal`.
    fn denial_meta<'a>(&self, ids: impl Iterator<Item = &'a str>) -> PolicyMeta {
        let mut out = PolicyMeta::default();
        for id in ids {
            let Some(m) = self.meta.get(&PolicyId::new(id)) else {
                continue;
            };
            if out.error.is_none() && out.message.is_none() {
                out.error.clone_from(&m.error);
                out.message.clone_from(&m.message);
            }
            out.conceal |= m.conceal;
        }
        out
    }

    /// The entities this request can reach: the principal (its roles as
    /// parents, merged with its own entry in the file if it has one), the
    /// resource, the action, and everything reachable from them.
    fn request_entities(
        &self,
        principal: &EntityUid,
        identity: Option<&Arc<Identity>>,
        resource: &EntityUid,
        action: &EntityUid,
    ) -> Result<Entities, String> {
        let Some(identity) = identity else {
            return self.entities.slice(None, &[principal, resource, action]);
        };
        // The principal's own entry in the file is kept whole (attributes,
        // parents, tags); the token adds its roles as parents and fills in
        // attributes the file does not set: the file is authoritative, so a
        // token cannot clear `suspended`.
        let (uid, mut attrs, indirect, mut parents, tags) = match self.entities.get(principal) {
            Some(e) => AsRef::<ast::Entity>::as_ref(e).clone().into_inner(),
            None => (
                AsRef::<ast::EntityUID>::as_ref(principal).clone(),
                BTreeMap::new(),
                HashSet::new(),
                HashSet::new(),
                BTreeMap::new(),
            ),
        };
        let mut roots: Vec<EntityUid> = Vec::with_capacity(identity.roles.len() + 2);
        for role in &identity.roles {
            let role =
                EntityUid::from_type_name_and_id(self.names.role_type.clone(), EntityId::new(role));
            parents.insert(AsRef::<ast::EntityUID>::as_ref(&role).clone());
            roots.push(role);
        }
        for (name, value) in &identity.attributes {
            let key = SmolStr::from(name.as_str());
            if let std::collections::btree_map::Entry::Vacant(slot) = attrs.entry(key) {
                slot.insert(ast::PartialValue::Value(context::json_to_value(value)?));
            }
        }
        roots.extend([resource.clone(), action.clone()]);
        let entity = Entity::from(ast::Entity::new_with_attr_partial_value(
            uid, attrs, indirect, parents, tags,
        ));
        self.entities
            .slice(Some(entity), &roots.iter().collect::<Vec<_>>())
    }
}

/// Whether a policy's action scope can match `action` (directly or through
/// the schema's action groups).
fn applies_to(p: &Policy, action: &EntityUid, entities: &Entities) -> bool {
    match p.action_constraint() {
        ActionConstraint::Any => true,
        ActionConstraint::Eq(a) => &a == action,
        ActionConstraint::In(groups) => groups
            .iter()
            .any(|g| g == action || entities.is_ancestor_of(g, action)),
    }
}

/// `permit (principal, action == A, resource);` (or with `action` alone)
/// for the action `A`: satisfied by every request for `A`, whatever the
/// principal, resource, context or entities.
fn unconditional_permit(p: &Policy, action: &EntityUid) -> bool {
    use cedar_policy::{ActionConstraint, PrincipalConstraint, ResourceConstraint};
    p.effect() == Effect::Permit
        && !p.has_non_scope_constraint()
        && p.principal_constraint() == PrincipalConstraint::Any
        && p.resource_constraint() == ResourceConstraint::Any
        && match p.action_constraint() {
            ActionConstraint::Any => true,
            ActionConstraint::Eq(a) => &a == action,
            ActionConstraint::In(_) => false,
        }
}
