//! portcullis-limit: rate limiting by the generic cell rate algorithm
//! (GCRA), pipeline stage 4.
//!
//! [`gcra`] is the whole algorithm as a pure function of (stored state,
//! now, quota); every store (the in-memory one here, the Redis script)
//! implements exactly this step. Time is an input in milliseconds; nothing
//! here reads a clock.

pub mod bans;
mod memory;
mod redis;

pub use memory::MemoryStore;
pub use redis::{RedisStore, StoreError};

/// A quota of `limit` requests per `period`: a burst of up to `limit` from
/// idle, then one request every `period / limit` (rounded down to whole
/// milliseconds). Not a sliding window: a window that opens with a full
/// burst can hold up to `2 * limit - 1` requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    /// Requests per period (also the burst).
    pub limit: u32,
    /// The period in milliseconds.
    pub period_ms: u64,
}

impl Quota {
    /// The time one request "costs": the emission interval.
    pub fn interval_ms(&self) -> u64 {
        (self.period_ms / u64::from(self.limit.max(1))).max(1)
    }
}

/// What one step decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Whether the request may pass.
    pub allowed: bool,
    /// The state to store (the theoretical arrival time, ms). Unchanged
    /// when refused.
    pub tat: u64,
    /// Requests that would still pass now.
    pub remaining: u32,
    /// When refused: how long until one request would pass (ms).
    pub retry_after_ms: u64,
    /// How long until the full quota is available again (ms).
    pub reset_ms: u64,
}

/// One GCRA step for a key whose stored state is `tat` (`None` when the
/// key is new or expired).
pub fn gcra(tat: Option<u64>, now_ms: u64, q: Quota) -> Step {
    let t = q.interval_ms();
    let burst_window = t.saturating_mul(u64::from(q.limit.max(1)));
    let tat = tat.unwrap_or(now_ms).max(now_ms);
    let new_tat = tat.saturating_add(t);
    // Allowed while the new arrival time stays within one full window of now.
    if new_tat - now_ms <= burst_window {
        let used = new_tat - now_ms;
        Step {
            allowed: true,
            tat: new_tat,
            remaining: u32::try_from((burst_window - used) / t).unwrap_or(u32::MAX),
            retry_after_ms: 0,
            reset_ms: used,
        }
    } else {
        Step {
            allowed: false,
            tat,
            remaining: 0,
            retry_after_ms: new_tat - now_ms - burst_window,
            reset_ms: tat - now_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FIVE_A_MINUTE: Quota = Quota {
        limit: 5,
        period_ms: 60_000,
    };

    #[test]
    fn five_a_minute_then_a_wait_of_one_interval() {
        let mut tat = None;
        for i in 0..5 {
            let s = gcra(tat, 1_000, FIVE_A_MINUTE);
            assert!(s.allowed, "request {i}");
            assert_eq!(s.remaining, 4 - i);
            tat = Some(s.tat);
        }
        let s = gcra(tat, 1_000, FIVE_A_MINUTE);
        assert!(!s.allowed);
        assert_eq!(s.retry_after_ms, 12_000);
        assert_eq!(s.reset_ms, 60_000);
        assert_eq!(Some(s.tat), tat, "a refusal does not cost");
        assert!(!gcra(tat, 12_999, FIVE_A_MINUTE).allowed);
        let s = gcra(tat, 13_000, FIVE_A_MINUTE);
        assert!(s.allowed);
        assert_eq!(s.remaining, 0);
    }

    #[test]
    fn an_idle_key_gets_its_whole_burst_back() {
        let mut tat = None;
        for _ in 0..5 {
            tat = Some(gcra(tat, 0, FIVE_A_MINUTE).tat);
        }
        assert_eq!(gcra(tat, 60_000, FIVE_A_MINUTE).remaining, 4);
        assert_eq!(gcra(tat, 600_000, FIVE_A_MINUTE).remaining, 4);
    }

    /// The naive model: a bucket holding up to `limit` tokens, refilled
    /// continuously at one token per interval; a request takes a whole
    /// token or is refused. Kept in milliseconds of credit to stay exact.
    struct Bucket {
        credit: u64,
        at: u64,
    }

    impl Bucket {
        fn take(&mut self, now: u64, q: Quota) -> bool {
            let t = q.interval_ms();
            let cap = t * u64::from(q.limit);
            self.credit = (self.credit + (now - self.at)).min(cap);
            self.at = now;
            if self.credit >= t {
                self.credit -= t;
                true
            } else {
                false
            }
        }
    }

    fn agrees_with_the_bucket(q: Quota, gaps: &[u64]) -> Result<(), TestCaseError> {
        let mut tat = None;
        let mut now = 0u64;
        let mut bucket = Bucket {
            credit: q.interval_ms() * u64::from(q.limit),
            at: 0,
        };
        for g in gaps {
            now += g;
            let s = gcra(tat, now, q);
            prop_assert_eq!(s.allowed, bucket.take(now, q), "at {}", now);
            if s.allowed {
                tat = Some(s.tat);
            } else {
                // A refusal names a wait after which the next request passes.
                prop_assert!(s.retry_after_ms > 0);
                prop_assert!(gcra(tat, now + s.retry_after_ms, q).allowed);
                prop_assert!(!gcra(tat, now + s.retry_after_ms - 1, q).allowed);
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn gcra_agrees_with_a_token_bucket(
            limit in 1u32..20,
            period_ms in prop::sample::select(vec![1_000u64, 60_000, 3_600_000]),
            gaps in prop::collection::vec(0u64..5_000, 1..200),
        ) {
            let q = Quota { limit, period_ms: period_ms - period_ms % u64::from(limit) };
            agrees_with_the_bucket(q, &gaps)?;
        }

        #[test]
        fn a_burst_from_idle_passes_exactly_the_limit(limit in 1u32..50, at in 0u64..1_000_000) {
            let q = Quota { limit, period_ms: 60_000 };
            let mut tat = None;
            let mut passed = 0;
            for _ in 0..limit * 2 {
                let s = gcra(tat, at, q);
                if s.allowed {
                    passed += 1;
                    tat = Some(s.tat);
                }
            }
            prop_assert_eq!(passed, limit);
        }
    }
}
