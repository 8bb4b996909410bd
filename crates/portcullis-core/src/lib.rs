//! portcullis-core: the pure decision engine.
//!
//! Request facts go in, a [`Decision`] with reasons and a trace comes out:
//! normalisation ([`normalize`]), the route table ([`route`]), authentication
//! ([`authn`]), Cedar authorization ([`authz`]), and rendering of denials
//! ([`render`]). No I/O, no clock, no tokio or hyper: the server, the decision
//! API, the tower layer and the CLI all call [`Engine::decide`] unchanged.

pub mod accept;
pub mod authn;
pub mod authz;
pub mod bans;
pub mod client;
pub mod decision;
pub mod engine;
pub mod network;
pub mod normalize;
pub mod ratelimit;
pub mod reason;
pub mod render;
pub mod route;
pub mod rules;
pub mod spec;

pub use decision::{Challenge, Decision, Denial, Face, StepOutcome, Trace, TraceStep, Verdict};
pub use engine::{Engine, RequestFacts};
pub use reason::{ReasonCode, Stage};
pub use render::{Rendered, render};

/// Re-exported so callers build policies, entities and keys with the same
/// versions the engine uses.
pub use cedar_policy;
pub use jsonwebtoken;
