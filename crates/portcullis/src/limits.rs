//! Stage 4, the stateful half: the rate limits the engine keyed, counted
//! against the store. An exhausted limit replaces the decision with 429
//! `RateLimited`; every response that counted carries the IETF
//! `RateLimit-Policy` and `RateLimit` headers, and a refusal `Retry-After`.
//! Shared by `serve` and `portcullis test` (which counts its cases in order).

use std::sync::Arc;

use portcullis_core::decision::Denial;
use portcullis_core::{Decision, Face, ReasonCode, Stage};
use portcullis_limit::{MemoryStore, Quota};

/// Headers a counted response carries, lower-case names.
pub type LimitHeaders = Vec<(&'static str, String)>;

/// The store the limits are counted in.
#[derive(Debug)]
pub struct Limiter {
    store: MemoryStore,
}

impl Limiter {
    /// An in-memory limiter holding at most about `max_keys` keys.
    pub fn in_memory(max_keys: usize) -> Self {
        Limiter {
            store: MemoryStore::new(max_keys),
        }
    }

    /// Count `d` against its limits at `now_ms`; refuse it if one is
    /// exhausted. Returns the headers for the response.
    pub fn apply(&self, d: &mut Decision, now_ms: u64) -> LimitHeaders {
        if d.limits.is_empty() {
            return Vec::new();
        }
        let mut policies = Vec::with_capacity(d.limits.len());
        let mut shown: Option<(Arc<str>, portcullis_limit::Step)> = None;
        let mut refused = None;
        for check in &d.limits {
            let spec = &check.spec;
            let quota = Quota {
                limit: spec.limit,
                period_ms: spec.period_ms,
            };
            let step = self.store.check(&check.key, now_ms, quota);
            policies.push(format!(
                "\"{}\";q={};w={}",
                spec.name,
                spec.limit,
                spec.period_ms.div_ceil(1000)
            ));
            if !step.allowed && refused.is_none() {
                refused = Some((check.clone(), step));
            }
            let tighter = shown
                .as_ref()
                .is_none_or(|(_, s)| step.remaining < s.remaining);
            if refused.is_none() && tighter {
                shown = Some((Arc::clone(&spec.name), step));
            }
        }
        if let Some((check, step)) = &refused {
            shown = Some((Arc::clone(&check.spec.name), *step));
        }
        let mut headers: LimitHeaders = vec![("ratelimit-policy", policies.join(", "))];
        if let Some((name, step)) = &shown {
            headers.push((
                "ratelimit",
                format!(
                    "\"{name}\";r={};t={}",
                    step.remaining,
                    step.reset_ms.div_ceil(1000)
                ),
            ));
        }
        if let Some((check, step)) = refused {
            let wait = step.retry_after_ms.div_ceil(1000).max(1);
            headers.push(("retry-after", wait.to_string()));
            let spec = &check.spec;
            d.refuse_at_front_door(Denial {
                reason: ReasonCode::RateLimited,
                stage: Stage::RateLimit,
                face: Face::of(ReasonCode::RateLimited),
                concealed: None,
                policies: vec![format!("rate-limit:{}", spec.name).into()],
                hint: format!(
                    "key {} of rate limit \"{}\" ({} per {} s) is exhausted; the next request passes in {wait} s",
                    check.key.split_once('|').map_or("", |(_, k)| k),
                    spec.name,
                    spec.limit,
                    spec.period_ms as f64 / 1000.0
                ),
            });
        }
        headers
    }
}
