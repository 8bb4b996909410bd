//! Stage 4, the stateful half: the rate limits the engine keyed, counted
//! against the store. An exhausted limit replaces the decision with 429
//! `RateLimited`; every response that counted carries the IETF
//! `RateLimit-Policy` and `RateLimit` headers, and a refusal `Retry-After`.
//! Shared by `serve` and `portcullis test` (which counts its cases in order).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use portcullis_config::LimitStore;
use portcullis_core::decision::Denial;
use portcullis_core::ratelimit::LimitCheck;
use portcullis_core::{Decision, Face, ReasonCode, Stage};
use portcullis_limit::{MemoryStore, Quota, RedisStore, Step, StoreError};

/// Headers a counted response carries, lower-case names.
pub type LimitHeaders = Vec<(&'static str, String)>;

/// The store the limits are counted in.
#[derive(Debug)]
enum Store {
    Memory(MemoryStore),
    Redis(Box<RedisStore>),
}

/// Counts rate limits: in memory, or shared through Redis.
#[derive(Debug)]
pub struct Limiter {
    store: Store,
    /// Checks the store could not answer (fail-open limits let them pass).
    pub store_errors: StoreErrors,
}

/// Failures of a shared store: counted for `/metrics`, and said on stderr
/// at most once a second.
#[derive(Debug)]
pub struct StoreErrors {
    what: &'static str,
    count: AtomicU64,
    last_report: AtomicU64,
}

impl StoreErrors {
    /// Counters for the store of `what` (`rate limit`, `ban`).
    pub fn new(what: &'static str) -> Self {
        StoreErrors {
            what,
            count: AtomicU64::new(0),
            last_report: AtomicU64::new(0),
        }
    }

    /// Failures so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Count one failure at `now_ms`.
    pub fn record(&self, e: &StoreError, now_ms: u64) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let last = self.last_report.load(Ordering::Relaxed);
        if now_ms >= last + 1000
            && self
                .last_report
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            eprintln!("portcullis: {} store: {e}", self.what);
        }
    }
}

impl Limiter {
    /// An in-memory limiter holding at most about `max_keys` keys.
    pub fn in_memory(max_keys: usize) -> Self {
        Limiter::with(Store::Memory(MemoryStore::new(max_keys)))
    }

    /// The limiter the configuration asks for.
    pub fn configured(store: &LimitStore) -> Result<Self, String> {
        Ok(Limiter::with(match store {
            LimitStore::Memory { max_keys } => Store::Memory(MemoryStore::new(*max_keys)),
            LimitStore::Redis {
                url,
                key_prefix,
                timeout,
            } => Store::Redis(Box::new(
                RedisStore::new(url, key_prefix, *timeout).map_err(|e| e.to_string())?,
            )),
        }))
    }

    fn with(store: Store) -> Self {
        Limiter {
            store,
            store_errors: StoreErrors::new("rate limit"),
        }
    }

    /// Count `d` against its limits at `now_ms`; refuse it if one is
    /// exhausted (or, fail-closed, cannot be checked). Returns the headers
    /// for the response.
    pub async fn apply(&self, d: &mut Decision, now_ms: u64) -> LimitHeaders {
        if d.limits.is_empty() {
            return Vec::new();
        }
        let mut results = Vec::with_capacity(d.limits.len());
        for check in &d.limits {
            let quota = quota(check);
            results.push(match &self.store {
                Store::Memory(m) => Ok(m.check(&check.key, now_ms, quota)),
                Store::Redis(r) => Box::pin(r.check(&check.key, now_ms, quota)).await,
            });
        }
        self.settle(d, results, now_ms)
    }

    /// [`Limiter::apply`] without a runtime, for the offline commands,
    /// which count in memory ([`Limiter::in_memory`]).
    pub fn apply_offline(&self, d: &mut Decision, now_ms: u64) -> LimitHeaders {
        let Store::Memory(m) = &self.store else {
            return Vec::new();
        };
        let results = d
            .limits
            .iter()
            .map(|c| Ok(m.check(&c.key, now_ms, quota(c))))
            .collect();
        self.settle(d, results, now_ms)
    }

    /// From the store's answers to the response headers and, if a limit
    /// refuses, the 429 (or the 503 of a fail-closed limit).
    fn settle(
        &self,
        d: &mut Decision,
        results: Vec<Result<Step, StoreError>>,
        now_ms: u64,
    ) -> LimitHeaders {
        // A concealing route's own limits are counted but never shown: they
        // would tell the route apart from a path that does not exist.
        let concealing = d.route.as_ref().is_some_and(|r| r.conceal);
        let hidden = |c: &LimitCheck| concealing && c.route_level;
        let mut policies = Vec::with_capacity(d.limits.len());
        let mut shown: Option<(Arc<str>, Step)> = None;
        let mut refused: Option<(LimitCheck, Step)> = None;
        let mut unavailable: Option<(LimitCheck, StoreError)> = None;
        for (check, result) in d.limits.iter().zip(results) {
            let spec = &check.spec;
            if !hidden(check) {
                policies.push(format!(
                    "\"{}\";q={};w={}",
                    spec.name,
                    spec.limit,
                    spec.period_ms.div_ceil(1000)
                ));
            }
            let step = match result {
                Ok(step) => step,
                Err(e) => {
                    self.store_errors.record(&e, now_ms);
                    if !spec.fail_open && unavailable.is_none() {
                        unavailable = Some((check.clone(), e));
                    }
                    continue;
                }
            };
            if !step.allowed && refused.is_none() {
                refused = Some((check.clone(), step));
            }
            let tighter = shown
                .as_ref()
                .is_none_or(|(_, s)| step.remaining < s.remaining);
            if refused.is_none() && tighter && !hidden(check) {
                shown = Some((Arc::clone(&spec.name), step));
            }
        }
        if let Some((check, step)) = &refused
            && !hidden(check)
        {
            shown = Some((Arc::clone(&check.spec.name), *step));
        }
        let mut headers: LimitHeaders = Vec::new();
        if !policies.is_empty() {
            headers.push(("ratelimit-policy", policies.join(", ")));
        }
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
        if let Some((check, e)) = unavailable {
            headers.push(("retry-after", "1".to_owned()));
            d.refuse_at_front_door(conceal_if(
                hidden(&check),
                denial(
                    ReasonCode::RateLimiterUnavailable,
                    &check,
                    format!(
                        "rate limit \"{}\" is fail-closed and its store could not be reached: {e}",
                        check.spec.name
                    ),
                ),
            ));
        } else if let Some((check, step)) = refused {
            let wait = step.retry_after_ms.div_ceil(1000).max(1);
            headers.push(("retry-after", wait.to_string()));
            let spec = &check.spec;
            let hint = format!(
                "key {} of rate limit \"{}\" ({} per {} s) is exhausted; the next request passes in {wait} s",
                shown_key(&check.key),
                spec.name,
                spec.limit,
                spec.period_ms as f64 / 1000.0
            );
            let refusal = denial(ReasonCode::RateLimited, &check, hint);
            d.refuse_at_front_door(conceal_if(hidden(&check), refusal));
        }
        // A 404 never carries them: a concealed route's limits would tell
        // it apart from a path that does not exist.
        if d.denial().is_some_and(|den| den.face.status == 404) {
            headers.clear();
        }
        headers
    }
}

/// A limit's key for people (hints, `explain`), without the limit's name
/// and without header values (they may be credentials).
pub fn shown_key(key: &str) -> String {
    key.split('|')
        .skip(1)
        .map(|part| match part.strip_prefix("hdr:") {
            Some(h) => format!("hdr:{}:…", h.split(':').next().unwrap_or("")),
            None => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("|")
}

fn quota(c: &LimitCheck) -> Quota {
    Quota {
        limit: c.spec.limit,
        period_ms: c.spec.period_ms,
    }
}

/// On a concealing route, its own limit refuses with the face of a
/// genuine 404, like every other denial there; the log keeps the real one.
fn conceal_if(hidden: bool, mut d: Denial) -> Denial {
    if hidden {
        d.concealed = Some(std::mem::replace(
            &mut d.face,
            Face::of(ReasonCode::NotFound),
        ));
    }
    d
}

fn denial(reason: ReasonCode, check: &LimitCheck, hint: String) -> Denial {
    Denial {
        reason,
        stage: Stage::RateLimit,
        face: Face::of(reason),
        concealed: None,
        policies: vec![format!("rate-limit:{}", check.spec.name).into()],
        hint,
    }
}
