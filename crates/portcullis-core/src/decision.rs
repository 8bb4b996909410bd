//! The decision: what the engine concluded about one request, with the facts
//! it saw and a trace of every stage, for the response, the log and `explain`.

use std::sync::Arc;

use crate::authn::Identity;
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
    pub policies: Vec<String>,
    /// How to fix it, for the operator.
    pub hint: String,
}

/// Allowed or refused.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// Forward the request.
    Allow {
        /// The permit policies that applied.
        policies: Vec<String>,
    },
    /// Answer with the denial.
    Deny(Box<Denial>),
}

/// One stage's entry in the trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceStep {
    /// The stage.
    pub stage: Stage,
    /// `pass`, `deny` or `skip`.
    pub outcome: &'static str,
    /// What the stage saw and concluded.
    pub detail: String,
}

/// Everything the engine concluded.
#[derive(Debug, Clone)]
pub struct Decision {
    /// Allowed or refused.
    pub verdict: Verdict,
    /// The method.
    pub method: String,
    /// The canonical path, once parsed.
    pub path: Option<String>,
    /// The query, as sent.
    pub query: Option<String>,
    /// The matched route's name.
    pub route: Option<String>,
    /// Path parameters.
    pub params: Vec<(String, String)>,
    /// The verified caller.
    pub identity: Option<Arc<Identity>>,
    /// The Cedar principal.
    pub principal: Option<String>,
    /// The Cedar action.
    pub action: Option<String>,
    /// The Cedar resource.
    pub resource: Option<String>,
    /// Every stage, in order.
    pub trace: Vec<TraceStep>,
    /// A token named a key id no configured key has: a JWKS refresh may help.
    pub unknown_key_id: bool,
}

impl Decision {
    /// The denial, if refused.
    pub fn denial(&self) -> Option<&Denial> {
        match &self.verdict {
            Verdict::Deny(d) => Some(d),
            Verdict::Allow { .. } => None,
        }
    }

    /// Whether the request may pass.
    pub fn is_allowed(&self) -> bool {
        matches!(self.verdict, Verdict::Allow { .. })
    }

    /// The stage that decided (the last in the trace).
    pub fn stage(&self) -> Option<Stage> {
        self.trace.last().map(|s| s.stage)
    }
}
