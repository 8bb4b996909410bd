//! The engine: `decide(&RequestFacts) -> Decision`. No I/O, no clock, no
//! randomness; it cannot fail. Every front door (proxy, decision API, tower
//! layer, `explain`, `test`) calls this and only renders the result.

use std::net::IpAddr;

use http::header::HOST;
use http::{HeaderMap, Method};

use crate::authn::{AuthFailure, AuthOutcome, Authenticator, Identity, TokenError};
use crate::authz::{AuthzInput, AuthzOutcome, AuthzVerdict, CedarPolicy};
use crate::bans::Bans;
use crate::client::ClientAddressPolicy;
use crate::network::{Blocked, CountryLookup, IpGate};
use crate::ratelimit::{self, KeyFacts, RateLimitSpec};
use crate::rules::Rules;
use std::sync::Arc;

use crate::decision::{
    Challenge, Decision, Denial, Face, RouteRef, StepOutcome, Trace, TraceStep, Verdict,
};
use crate::normalize::{PathError, host_of, normalize_target};
use crate::reason::{ReasonCode, Stage};
use crate::route::{RouteMatch, RouteTable};
use crate::spec::RouteSpec;

/// The facts of one request, as the front door extracted them.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// The method.
    pub method: &'a Method,
    /// The raw request-target, as on the request line.
    pub target: &'a str,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The TCP peer's address. The engine resolves the client from it and,
    /// when the peer is a trusted proxy, the forwarding header.
    pub peer: IpAddr,
    /// The current time, Unix seconds.
    pub now: i64,
}

/// A validated, compiled configuration: the only thing `decide` reads.
#[derive(Debug)]
pub struct Engine {
    client: ClientAddressPolicy,
    gate: IpGate,
    route_gates: Vec<IpGate>,
    geo: Option<Arc<dyn CountryLookup>>,
    bans: Option<Bans>,
    rules: Rules,
    global_limits: Vec<Arc<RateLimitSpec>>,
    route_limits: Vec<Vec<Arc<RateLimitSpec>>>,
    table: RouteTable,
    routes: Vec<RouteSpec>,
    authn: Authenticator,
    policy: CedarPolicy,
}

impl Engine {
    /// Assemble an engine from compiled parts. `routes[i]` describes the
    /// table's route `i`.
    pub fn new(
        table: RouteTable,
        routes: Vec<RouteSpec>,
        authn: Authenticator,
        policy: CedarPolicy,
    ) -> Self {
        Engine {
            client: ClientAddressPolicy::default(),
            gate: IpGate::default(),
            route_gates: Vec::new(),
            geo: None,
            bans: None,
            rules: Rules::default(),
            global_limits: Vec::new(),
            route_limits: Vec::new(),
            table,
            routes,
            authn,
            policy,
        }
    }

    /// Resolve client addresses with `policy` (trusted proxies and their
    /// header) instead of always taking the TCP peer.
    pub fn with_client_policy(mut self, policy: ClientAddressPolicy) -> Self {
        self.client = policy;
        self
    }

    /// IP lists: `global` for every request, `per_route[i]` for route `i`
    /// once matched.
    pub fn with_ip_gates(mut self, global: IpGate, per_route: Vec<IpGate>) -> Self {
        self.gate = global;
        self.route_gates = per_route;
        self
    }

    /// Country rules read the client's country from `geo`; so does the
    /// Cedar context.
    pub fn with_geo(mut self, geo: Arc<dyn CountryLookup>) -> Self {
        self.geo = Some(geo);
        self
    }

    /// Timed bans: checked at stage 3, escalated by the front door.
    pub fn with_bans(mut self, bans: Bans) -> Self {
        self.bans = Some(bans);
        self
    }

    /// The ban configuration, if bans are on.
    pub fn bans(&self) -> Option<&Bans> {
        self.bans.as_ref()
    }

    /// Rate limits: `global` for every request past the network gates,
    /// `per_route[i]` for route `i`.
    pub fn with_rate_limits(
        mut self,
        global: Vec<Arc<RateLimitSpec>>,
        per_route: Vec<Vec<Arc<RateLimitSpec>>>,
    ) -> Self {
        self.global_limits = global;
        self.route_limits = per_route;
        self
    }

    fn limit_checks(
        &self,
        specs: &[Arc<RateLimitSpec>],
        facts: &RequestFacts<'_>,
        client: IpAddr,
        caller: Option<&Identity>,
        route: Option<&str>,
        d: &mut Decision,
    ) {
        let subject = caller.map(|id| id.subject.as_str());
        // Only a key that authenticated names a bucket of its own.
        let api_key = caller
            .filter(|id| id.method == crate::authn::AuthMethod::ApiKey)
            .and_then(|_| self.authn.api_key_header())
            .and_then(|h| facts.headers.get(h))
            .map(|v| v.as_bytes());
        let key_facts = KeyFacts {
            client,
            headers: facts.headers,
            subject,
            api_key,
            route,
        };
        ratelimit::checks(specs, &key_facts, &mut d.limits);
    }

    /// User-Agent and request rules.
    pub fn with_rules(mut self, rules: Rules) -> Self {
        self.rules = rules;
        self
    }

    /// How client addresses are resolved.
    pub fn client_policy(&self) -> &ClientAddressPolicy {
        &self.client
    }

    /// The authenticator (the server refreshes JWKS keys through it).
    pub fn authenticator(&self) -> &Authenticator {
        &self.authn
    }

    /// The routes.
    pub fn routes(&self) -> &[RouteSpec] {
        &self.routes
    }

    /// Decide one request. Stages run in pipeline order; the first that
    /// refuses ends it.
    pub fn decide(&self, facts: &RequestFacts<'_>) -> Decision {
        let mut d = Decision {
            verdict: Verdict::Allow {
                policies: Vec::new(),
            },
            method: facts.method.clone(),
            path: None,
            query: None,
            route: None,
            params: Vec::new(),
            identity: None,
            principal: None,
            action: None,
            resource: None,
            trace: Trace::default(),
            unknown_key_id: false,
            policy_errors: Vec::new(),
            peer: facts.peer.to_canonical(),
            client: None,
            limits: Vec::new(),
            engine_verdict: None,
            rules_logged: Vec::new(),
            country: None,
            ban_keys: Vec::new(),
        };

        // 1. Parse: one canonical path, before anything looks at the path, so
        //    the route table, the policy and the upstream agree on it.
        let target = match normalize_target(facts.method, facts.target) {
            Ok(t) => t,
            Err(e) => return refuse(d, path_denial(e)),
        };
        let host = match request_host(facts.headers, target.authority_host.as_deref()) {
            Ok(h) => h,
            Err(why) => return refuse(d, simple(ReasonCode::InvalidRequest, Stage::Parse, why)),
        };
        d.query = target.query;
        d.path = Some(target.path);
        d.step(Stage::Parse, StepOutcome::Pass);

        // 2. Client: the address every later stage and the log use, believed
        //    from a forwarding header only when a trusted proxy sent it.
        let client = match self.client.resolve(facts.peer, facts.headers) {
            Ok((ip, _)) => ip,
            Err(why) => {
                return refuse(
                    d,
                    simple(ReasonCode::InvalidClientAddress, Stage::Client, why),
                );
            }
        };
        d.client = Some(client);
        d.step(Stage::Client, StepOutcome::Pass);

        // 3. Network gates: a blocked address is refused before the route
        //    table says anything about what exists. The country is looked
        //    up once, for the gates and the policy's context.
        d.country = self.geo.as_ref().and_then(|g| g.country(client));
        if !self.gate.is_empty() {
            if let Err(b) = self.gate.check(client, d.country, None) {
                return refuse(d, blocked(b));
            }
            d.step(Stage::Network, StepOutcome::Pass);
        }
        // Bans come last in stage 3: the front door looks these keys up.
        if let Some(bans) = &self.bans {
            d.ban_keys = bans.keys(client);
        }

        // 4. Rate limits (global): keyed now, counted by the front door's
        //    store, before the route table answers anything.
        if !self.global_limits.is_empty() {
            self.limit_checks(&self.global_limits, facts, client, None, None, &mut d);
        }

        // 6. Request rules: on the canonical path, before the route table,
        //    so a blocked probe learns nothing about what exists.
        if !self.rules.is_empty() {
            let path = d.path.as_deref().unwrap_or("/");
            let outcome = self
                .rules
                .check(facts.method, path, d.query.as_deref(), facts.headers);
            d.rules_logged = outcome.logged;
            if let Some(b) = outcome.blocked_by {
                return refuse(d, rule_denial(b));
            }
            d.step(Stage::Rules, StepOutcome::Pass);
        }

        // 7. Route: which action and resource this is, and whether it exists.
        let (route_id, params) = match self.table.find(
            host.as_deref(),
            facts.method,
            d.path.as_deref().unwrap_or("/"),
        ) {
            RouteMatch::Found { route, params } => (route, params),
            RouteMatch::NotFound => {
                return refuse(
                    d,
                    simple(
                        ReasonCode::NotFound,
                        Stage::Route,
                        "no route matches this path".into(),
                    ),
                );
            }
            RouteMatch::MethodNotAllowed { allow, routes } => {
                return refuse(d, self.method_not_allowed(facts.method, &allow, &routes));
            }
        };
        let route = &self.routes[route_id];
        let resource = route.resource.build(&params);
        let route_gate = self.route_gates.get(route_id).filter(|g| !g.is_empty());
        d.route = Some(RouteRef {
            name: Arc::clone(&route.name),
            template: Arc::clone(&route.path),
            auth: route.auth,
            conceal: route.conceal,
        });
        d.action = Some(route.action.clone());
        d.resource = Some(resource.clone());
        d.step(Stage::Route, StepOutcome::Pass);
        d.params = params;

        // 3, per route: the route's own IP lists, now that it is known.
        if let Some(gate) = route_gate {
            if let Err(b) = gate.check(client, d.country, Some(&route.name)) {
                return refuse(d, blocked(b));
            }
            d.step(Stage::Network, StepOutcome::Pass);
        }

        // 8. Authenticate: after routing, because the route says whether an
        //    identity is needed; before policy, which needs the identity.
        let outcome = self
            .authn
            .authenticate(facts.headers, route.auth, facts.now);

        // 4, per route: the route's rate limits are keyed once the caller is
        //    known or refused, and counted either way, so guessing
        //    credentials against a 401 is limited too.
        if let Some(specs) = self.route_limits.get(route_id).filter(|s| !s.is_empty()) {
            let caller = match &outcome {
                AuthOutcome::Authenticated(id) => Some(&**id),
                _ => None,
            };
            self.limit_checks(specs, facts, client, caller, Some(&route.name), &mut d);
        }

        let identity = match outcome {
            AuthOutcome::Anonymous => None,
            AuthOutcome::Authenticated(id) => Some(id),
            AuthOutcome::Failed(f) => {
                d.unknown_key_id = matches!(f, AuthFailure::Token(TokenError::UnknownKeyId(_)));
                return refuse(d, self.auth_denial(route, f));
            }
        };
        d.step(Stage::Authenticate, StepOutcome::Pass);

        // 9. Authorize: scopes first (they have their own challenge), then Cedar.
        if let Some(denial) = self.check_scopes(route, identity.as_deref()) {
            d.identity = identity;
            return refuse(d, denial);
        }
        let verdict = self.policy.authorize(&AuthzInput {
            identity: identity.as_ref(),
            action: &route.action,
            resource: &resource,
            client_ip: client,
            country: d.country,
            method: facts.method.as_str(),
            path: d.path.as_deref().unwrap_or("/"),
            route: &route.name,
            now: facts.now,
        });
        // Handed to the decision only now: the slice cache keeps slices of
        // identities something else (the token cache) also holds, and a copy
        // here would make every identity look shared.
        d.identity = identity;
        d.principal = Some(verdict.principal.clone());
        match verdict.outcome {
            AuthzOutcome::Allow(policies) => {
                d.step(Stage::Authorize, StepOutcome::Pass);
                d.policy_errors = verdict.errors;
                d.verdict = Verdict::Allow { policies };
                d
            }
            outcome => {
                let verdict = AuthzVerdict { outcome, ..verdict };
                refuse(d, policy_denial(route, verdict))
            }
        }
    }

    fn method_not_allowed(&self, method: &Method, allow: &[Method], routes: &[usize]) -> Denial {
        let allow_list = allow
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        let mut denial = simple(
            ReasonCode::MethodNotAllowed,
            Stage::Route,
            format!("{method} is not routed for this path; routed methods: {allow_list}"),
        );
        denial.face.allow = Some(allow_list);
        if routes.iter().any(|r| self.routes[*r].conceal) {
            conceal(&mut denial);
        }
        denial
    }

    fn auth_denial(&self, route: &RouteSpec, failure: AuthFailure) -> Denial {
        let realm = self.authn.realm().to_owned();
        let (reason, error, description, hint) = match failure {
            AuthFailure::Missing => (
                ReasonCode::AuthenticationRequired,
                None,
                None,
                format!(
                    "route {:?} requires authentication and the request carried no credential",
                    route.name
                ),
            ),
            AuthFailure::Ambiguous(why) => {
                return simple(
                    ReasonCode::InvalidRequest,
                    Stage::Authenticate,
                    why.to_owned(),
                );
            }
            AuthFailure::Token(e) => (
                ReasonCode::InvalidToken,
                Some("invalid_token"),
                Some(e.describe()),
                format!("bearer token refused: {}", e.detail()),
            ),
            AuthFailure::UnknownApiKey => (
                ReasonCode::InvalidApiKey,
                Some("invalid_token"),
                Some("the API key is not valid".to_owned()),
                "the API key matches no configured key".to_owned(),
            ),
        };
        let mut denial = simple(reason, Stage::Authenticate, hint);
        denial.face.challenge = Some(Challenge {
            realm,
            error,
            description,
            scope: None,
        });
        denial
    }

    fn check_scopes(&self, route: &RouteSpec, identity: Option<&Identity>) -> Option<Denial> {
        let have: &[String] = identity.map(|i| i.scopes.as_slice()).unwrap_or_default();
        let missing: Vec<&str> = route
            .scopes
            .iter()
            .filter(|s| !have.contains(s))
            .map(String::as_str)
            .collect();
        if missing.is_empty() {
            return None;
        }
        if identity.is_none() {
            // Scopes only come with a credential: ask for one.
            let mut denial = self.auth_denial(route, AuthFailure::Missing);
            denial.hint = format!(
                "route {:?} needs scopes [{}], which only a token can carry",
                route.name,
                route.scopes.join(" ")
            );
            return Some(denial);
        }
        let mut denial = simple(
            ReasonCode::InsufficientScope,
            Stage::Authorize,
            format!(
                "route {:?} requires scopes [{}]; the token carries [{}]",
                route.name,
                route.scopes.join(" "),
                have.join(" ")
            ),
        );
        denial.face.challenge = Some(Challenge {
            realm: self.authn.realm().to_owned(),
            error: Some("insufficient_scope"),
            description: None,
            scope: Some(route.scopes.join(" ")),
        });
        Some(denial)
    }
}

impl Decision {
    fn step(&mut self, stage: Stage, outcome: StepOutcome) {
        self.trace.push(TraceStep { stage, outcome });
    }
}

/// Every denial ends here. Once a route has matched, a route that conceals
/// existence turns every denial (401, 400 for credential framing, 403, and
/// whatever later stages add) into a genuine 404, so no answer tells a caller
/// that the route is there; no stage has to remember to.
fn refuse(mut d: Decision, mut denial: Denial) -> Decision {
    if d.route.as_ref().is_some_and(|r| r.conceal) && denial.concealed.is_none() {
        conceal(&mut denial);
    }
    d.step(denial.stage, StepOutcome::Deny);
    d.verdict = Verdict::Deny(Box::new(denial));
    d
}

fn rule_denial(b: crate::rules::Blocked) -> Denial {
    let reason = if b.user_agent_only {
        ReasonCode::UserAgentBlocked
    } else {
        ReasonCode::RequestBlocked
    };
    let mut denial = simple(
        reason,
        Stage::Rules,
        format!("request rule \"{}\" matched", b.id),
    );
    if let Some(m) = b.message {
        denial.face.message = m;
    }
    denial.policies = vec![format!("rule:{}", b.id).into()];
    denial
}

fn blocked(b: Blocked) -> Denial {
    let mut denial = simple(b.reason, Stage::Network, b.hint);
    if let Some(m) = b.message {
        denial.face.message = m;
    }
    denial.policies = vec![b.rule];
    denial
}

fn simple(reason: ReasonCode, stage: Stage, hint: String) -> Denial {
    Denial {
        reason,
        stage,
        face: Face::of(reason),
        concealed: None,
        policies: Vec::new(),
        hint,
    }
}

fn path_denial(e: PathError) -> Denial {
    simple(
        ReasonCode::InvalidPath,
        Stage::Parse,
        format!("refused the request target: {e}"),
    )
}

/// Replace the face with a genuine 404's, keeping the real one for the log.
fn conceal(denial: &mut Denial) {
    let real = std::mem::replace(&mut denial.face, Face::of(ReasonCode::NotFound));
    denial.concealed = Some(real);
}

fn policy_denial(route: &RouteSpec, verdict: AuthzVerdict) -> Denial {
    let (reason, policies) = match verdict.outcome {
        AuthzOutcome::Forbid(ids) => (ReasonCode::AccessDenied, ids),
        AuthzOutcome::Error(_) => (ReasonCode::PolicyError, Vec::new()),
        AuthzOutcome::DefaultDeny | AuthzOutcome::Allow(_) => {
            (ReasonCode::AccessDenied, Vec::new())
        }
    };
    let mut face = Face::of(reason);
    if reason == ReasonCode::AccessDenied {
        if let Some(code) = verdict
            .meta
            .error
            .clone()
            .or_else(|| route.deny_code.clone())
        {
            face.code = code;
        }
        if let Some(msg) = verdict
            .meta
            .message
            .clone()
            .or_else(|| route.deny_message.clone())
        {
            face.message = msg;
        }
    }
    let mut denial = Denial {
        reason,
        stage: Stage::Authorize,
        face,
        concealed: None,
        policies,
        hint: verdict.hint,
    };
    if verdict.meta.conceal {
        conceal(&mut denial);
    }
    denial
}

/// The request's host: the absolute-form authority wins (RFC 9112 §3.2.2);
/// otherwise the single `Host` header. Two `Host` headers, or a malformed
/// one, are refused.
fn request_host(headers: &HeaderMap, authority: Option<&str>) -> Result<Option<String>, String> {
    let mut values = headers.get_all(HOST).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err("more than one Host header".to_owned());
    }
    let header = match first {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(host_of)
                .ok_or_else(|| "the Host header is malformed".to_owned())?,
        ),
    };
    match (authority, header) {
        // An upstream may route on Host while we routed on the target's
        // authority: refuse rather than decide for one and forward the other.
        (Some(a), Some(h)) if a != h => {
            Err("the Host header does not match the request target's authority".to_owned())
        }
        (Some(a), _) => Ok(Some(a.to_owned())),
        (None, h) => Ok(h),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_engine_can_be_shared_across_threads() {
        fn is<T: Send + Sync>() {}
        is::<super::Engine>();
    }
}
