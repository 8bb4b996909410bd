//! The decision: what the engine concluded about one request, with the facts
//! it saw and a trace of every stage, for the response, the log and `explain`.

use std::sync::Arc;

use cedar_policy::EntityUid;

use crate::authn::{AuthMode, Identity};
use crate::reason::{ReasonCode, Stage};

/// A `WWW-Authenticate: Bearer` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The realm.
    pub realm: String,
    /// RFC 6750 error code (`invalid_token`, `insufficient_scope`,
    /// `invalid_request`), absent when no credential was given.
    pub error: Option<&'static str>,
    /// A short, safe description.
    pub description: Option<String>,
    /// The scope needed (with `insufficient_scope`).
    pub scope: Option<String>,
}

/// What the client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Face {
    /// The status.
    pub status: u16,
    /// The machine code in the body.
    pub code: String,
    /// The message in the body.
    pub message: String,
    /// `WWW-Authenticate`, for 401 and insufficient scope.
    pub challenge: Option<Challenge>,
    /// `Allow`, for 405.
    pub allow: Option<String>,
    /// When a temporary refusal (a ban) ends.
    pub expires: Option<Expiry>,
}

/// The end of a temporary refusal: in the body and as `Retry-After`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry {
    /// RFC 3339, UTC.
    pub at: String,
    /// Seconds from now, at least 1.
    pub retry_after_s: u64,
}

impl Face {
    /// The face of a reason with its defaults.
    pub fn of(reason: ReasonCode) -> Self {
        let info = reason.info();
        Face {
            status: info.status,
            code: info.code.to_owned(),
            message: info.message.to_owned(),
            challenge: None,
            allow: None,
            expires: None,
        }
    }
}

/// A refusal.
#[derive(Debug, Clone)]
pub struct Denial {
    /// The reason (never overridden).
    pub reason: ReasonCode,
    /// The stage that refused.
    pub stage: Stage,
    /// What the client gets.
    pub face: Face,
    /// When the route conceals denials: the face the 404 replaced.
    pub concealed: Option<Face>,
    /// The policies (or rule) that decided, if any.
    pub policies: Vec<Arc<str>>,
    /// How to fix it, for the operator.
    pub hint: String,
}

/// Allowed or refused.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// Forward the request.
    Allow {
        /// The permit policies that applied.
        policies: Vec<Arc<str>>,
    },
    /// Answer with the denial.
    Deny(Box<Denial>),
}

/// One stage's entry in the trace. The readable account of what the stage
/// saw is composed on demand by [`Decision::describe`], so that deciding
/// formats no strings on the allow path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceStep {
    /// The stage.
    pub stage: Stage,
    /// What the stage concluded.
    pub outcome: StepOutcome,
}

/// What one stage concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    /// The request went on to the next stage.
    Pass,
    /// The stage refused the request.
    Deny,
}

impl StepOutcome {
    /// `pass` or `deny`.
    pub const fn as_str(self) -> &'static str {
        match self {
            StepOutcome::Pass => "pass",
            StepOutcome::Deny => "deny",
        }
    }
}

/// The stages a request went through, kept inline (a request passes at
/// most a handful of stages; no allocation on the hot path).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trace {
    // The engine's most (parse, client, network, rules, route, network,
    // authenticate, authorize) and the front door's rate limit.
    steps: [Option<TraceStep>; 10],
    len: usize,
}

impl Trace {
    /// Record a stage (beyond capacity, the last entry is replaced, so the
    /// deciding stage is always the last one).
    pub fn push(&mut self, step: TraceStep) {
        let at = self.len.min(self.steps.len() - 1);
        self.steps[at] = Some(step);
        self.len = at + 1;
    }

    /// The stages in order.
    pub fn iter(&self) -> impl Iterator<Item = &TraceStep> {
        self.steps[..self.len].iter().flatten()
    }

    /// The last stage.
    pub fn last(&self) -> Option<&TraceStep> {
        self.len.checked_sub(1).and_then(|i| self.steps[i].as_ref())
    }

    /// How many stages ran.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no stage ran.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The matched route, as the decision record names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRef {
    /// The route's name.
    pub name: Arc<str>,
    /// Its path template.
    pub template: Arc<str>,
    /// Its authentication mode.
    pub auth: AuthMode,
    /// Whether its denials wear the face of a genuine 404.
    pub conceal: bool,
}

/// Everything the engine concluded.
#[derive(Debug, Clone)]
pub struct Decision {
    /// Allowed or refused.
    pub verdict: Verdict,
    /// The method.
    pub method: http::Method,
    /// The canonical path, once parsed.
    pub path: Option<String>,
    /// The query, as sent.
    pub query: Option<String>,
    /// The matched route.
    pub route: Option<RouteRef>,
    /// Path parameters.
    pub params: Vec<(String, String)>,
    /// The verified caller.
    pub identity: Option<Arc<Identity>>,
    /// The Cedar principal.
    pub principal: Option<EntityUid>,
    /// The Cedar action.
    pub action: Option<EntityUid>,
    /// The Cedar resource.
    pub resource: Option<EntityUid>,
    /// Every stage, in order.
    pub trace: Trace,
    /// A token named a key id no configured key has: a JWKS refresh may help.
    pub unknown_key_id: bool,
    /// Permit policies that failed to evaluate on an allowed request (they
    /// could not deny, so the request passed; the operator should know).
    pub policy_errors: Vec<String>,
    /// The TCP peer.
    pub peer: std::net::IpAddr,
    /// The client, once resolved (stage 2).
    pub client: Option<std::net::IpAddr>,
    /// Rate limits this request counts against (stage 4), in order. The
    /// front door runs them against its store.
    pub limits: Vec<crate::ratelimit::LimitCheck>,
    /// What the engine concluded, when the front door replaced it (a rate
    /// limit refused): the engine's stages are explained by this.
    pub engine_verdict: Option<Verdict>,
    /// Request rules in log mode that matched: they would have blocked.
    pub rules_logged: Vec<Arc<str>>,
    /// The client's country, when a GeoIP database is configured and knows it.
    pub country: Option<crate::network::Country>,
    /// Ban keys to look up (stage 3), once the request has passed the IP
    /// and country rules: the front door checks them against its store.
    pub ban_keys: Vec<String>,
}

impl Decision {
    /// The denial, if refused.
    pub fn denial(&self) -> Option<&Denial> {
        match &self.verdict {
            Verdict::Deny(d) => Some(d),
            Verdict::Allow { .. } => None,
        }
    }

    /// Refuse at a stage the front door runs (a rate limit counted against
    /// its store): the denial replaces whatever the engine concluded.
    pub fn refuse_at_front_door(&mut self, denial: Denial) {
        self.trace.push(TraceStep {
            stage: denial.stage,
            outcome: StepOutcome::Deny,
        });
        let engine = std::mem::replace(&mut self.verdict, Verdict::Deny(Box::new(denial)));
        self.engine_verdict.get_or_insert(engine);
    }

    /// Whether the request may pass.
    pub fn is_allowed(&self) -> bool {
        matches!(self.verdict, Verdict::Allow { .. })
    }

    /// The stage that decided (the last in the trace).
    pub fn stage(&self) -> Option<Stage> {
        self.trace.last().map(|s| s.stage)
    }

    /// The trace with a readable account of each stage, for `explain` and
    /// the decision log.
    pub fn describe(&self) -> Vec<(Stage, &'static str, String)> {
        let last = self.trace.len().saturating_sub(1);
        self.trace
            .iter()
            .enumerate()
            .map(|(i, step)| {
                (
                    step.stage,
                    step.outcome.as_str(),
                    self.detail(*step, i == last),
                )
            })
            .collect()
    }

    fn detail(&self, step: TraceStep, last: bool) -> String {
        // The engine's own stages are explained by the engine's verdict,
        // even when the front door replaced it afterwards; the front door's
        // refusal (a ban, a rate limit) is the last step, explained by the
        // verdict that replaced it.
        let verdict = match &self.engine_verdict {
            Some(v) if !last => v,
            _ => &self.verdict,
        };
        if step.outcome == StepOutcome::Deny {
            return match verdict {
                Verdict::Deny(d) => d.hint.clone(),
                Verdict::Allow { .. } => String::new(),
            };
        }
        let uid = |u: &Option<EntityUid>| u.as_ref().map(ToString::to_string).unwrap_or_default();
        match step.stage {
            Stage::Parse => format!(
                "canonical path {}",
                self.path.as_deref().unwrap_or_default()
            ),
            Stage::Route => match &self.route {
                Some(r) => format!(
                    "route {:?} ({} {}), action {}, resource {}",
                    r.name,
                    self.method,
                    r.template,
                    uid(&self.action),
                    uid(&self.resource)
                ),
                None => String::new(),
            },
            Stage::Authenticate => {
                let mode = self.route.as_ref().map_or("", |r| r.auth.as_str());
                match &self.identity {
                    None => format!("anonymous (authentication {mode})"),
                    Some(id) => format!(
                        "subject {:?} via {}, roles [{}], scopes [{}]",
                        id.subject,
                        id.method.as_str(),
                        id.roles.join(", "),
                        id.scopes.join(" ")
                    ),
                }
            }
            Stage::Authorize => match verdict {
                Verdict::Allow { policies } if self.policy_errors.is_empty() => {
                    format!("permitted by {}", policies.join(", "))
                }
                Verdict::Allow { policies } => format!(
                    "permitted by {}; permit policies that could not be evaluated: {}",
                    policies.join(", "),
                    self.policy_errors.join("; ")
                ),
                Verdict::Deny(d) => d.hint.clone(),
            },
            Stage::Client => match self.client {
                Some(c) if c == self.peer => format!("client {c} (the TCP peer)"),
                Some(c) => format!("client {c}, named by trusted proxy {}", self.peer),
                None => String::new(),
            },
            Stage::RateLimit => String::new(),
            Stage::Rules if self.rules_logged.is_empty() => "no rule matched".to_owned(),
            Stage::Rules => format!(
                "log-only rules matched (would have blocked): {}",
                self.rules_logged.join(", ")
            ),
            Stage::Network => {
                let client = self.client.map(|c| c.to_string()).unwrap_or_default();
                match self.country {
                    Some(c) => format!("client {client} (country {c}) passed the network gates"),
                    None => format!("client {client} passed the network gates"),
                }
            }
            // The server records what forwarding did; the engine never gets there.
            Stage::Forward => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_trace_and_a_front_door_refusal_all_fit() {
        let engine = [
            Stage::Parse,
            Stage::Client,
            Stage::Network,
            Stage::Rules,
            Stage::Route,
            Stage::Network,
            Stage::Authenticate,
            Stage::Authorize,
            Stage::RateLimit,
        ];
        let mut t = Trace::default();
        for stage in engine {
            t.push(TraceStep {
                stage,
                outcome: StepOutcome::Pass,
            });
        }
        let kept: Vec<Stage> = t.iter().map(|s| s.stage).collect();
        assert_eq!(kept, engine);
    }

    #[test]
    fn the_trace_keeps_order_and_the_deciding_stage_last() {
        let mut t = Trace::default();
        assert!(t.is_empty() && t.last().is_none());
        for stage in [Stage::Parse, Stage::Route, Stage::Authenticate] {
            t.push(TraceStep {
                stage,
                outcome: StepOutcome::Pass,
            });
        }
        let stages: Vec<Stage> = t.iter().map(|s| s.stage).collect();
        assert_eq!(stages, [Stage::Parse, Stage::Route, Stage::Authenticate]);
        // Past capacity the last slot takes the newest step.
        for _ in 0..10 {
            t.push(TraceStep {
                stage: Stage::Route,
                outcome: StepOutcome::Pass,
            });
        }
        t.push(TraceStep {
            stage: Stage::Authorize,
            outcome: StepOutcome::Deny,
        });
        assert_eq!(t.len(), 10);
        assert_eq!(
            t.last().map(|s| (s.stage, s.outcome)),
            Some((Stage::Authorize, StepOutcome::Deny))
        );
    }
}
