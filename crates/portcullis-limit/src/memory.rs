//! The in-memory store: the default for a single instance. Keys are spread
//! over shards, each behind its own lock, so concurrent requests for
//! different keys rarely meet. Memory is bounded: a key whose state has
//! expired is worth nothing (a fresh key behaves the same) and is dropped
//! first; when a shard is full of live keys, the one closest to expiring
//! goes.
//!
//! A key is held as its 64-bit hash under a per-process random SipHash key,
//! not as text: less memory, one hash per check, and no way for a client to
//! choose keys that collide.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::Mutex;

use crate::{Quota, Step, gcra};

const SHARDS: usize = 64;

/// Sharded, bounded GCRA state.
#[derive(Debug)]
pub struct MemoryStore {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
    hasher: RandomState,
}

/// Keys are already uniform hashes; the map need not hash them again.
type Shard = HashMap<u64, u64, BuildHasherDefault<Identity>>;

#[derive(Debug, Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl MemoryStore {
    /// A store holding at most about `max_keys` keys.
    pub fn new(max_keys: usize) -> Self {
        MemoryStore {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: (max_keys / SHARDS).max(1),
            hasher: RandomState::new(),
        }
    }

    /// One step for `key` at `now_ms`.
    pub fn check(&self, key: &str, now_ms: u64, q: Quota) -> Step {
        let h = self.hasher.hash_one(key);
        // Middle bits: the map itself uses the low bits and the top seven.
        let shard = &self.shards[(h >> 32) as usize % SHARDS];
        // A poisoned lock only means another request panicked mid-update of
        // a plain map of numbers; the data is still usable.
        let mut map = shard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let stored = map.get(&h).copied().filter(|&tat| tat > now_ms);
        let step = gcra(stored, now_ms, q);
        if step.allowed {
            if let Some(slot) = map.get_mut(&h) {
                *slot = step.tat;
            } else {
                if map.len() >= self.per_shard {
                    evict(&mut map, now_ms, self.per_shard);
                }
                map.insert(h, step.tat);
            }
        }
        step
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .len()
            })
            .sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn evict(map: &mut Shard, now_ms: u64, cap: usize) {
    map.retain(|_, tat| *tat > now_ms);
    if map.len() < cap {
        return;
    }
    // Still full of live keys: drop the eighth that expires first (it has
    // the least state worth keeping), so the next inserts are cheap again.
    let mut tats: Vec<u64> = map.values().copied().collect();
    let nth = tats.len() / 8;
    let (_, threshold, _) = tats.select_nth_unstable(nth);
    let threshold = *threshold;
    map.retain(|_, tat| *tat > threshold);
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: Quota = Quota {
        limit: 3,
        period_ms: 3_000,
    };

    #[test]
    fn keys_are_independent() {
        let s = MemoryStore::new(1000);
        for _ in 0..3 {
            assert!(s.check("a", 0, Q).allowed);
        }
        assert!(!s.check("a", 0, Q).allowed);
        assert!(s.check("b", 0, Q).allowed);
    }

    #[test]
    fn memory_stays_bounded_and_the_newest_key_keeps_its_state() {
        let s = MemoryStore::new(SHARDS * 4);
        for i in 0..10_000 {
            s.check(&format!("k{i}"), i, Q);
        }
        assert!(s.len() <= SHARDS * 4, "{} keys", s.len());
        // The last key counted is live and was not the one evicted: its
        // burst is one request down.
        assert_eq!(s.check("k9999", 9_999, Q).remaining, Q.limit - 2);
    }

    #[test]
    fn eviction_drops_expired_keys_before_live_ones() {
        let mut shard = Shard::default();
        for k in 0..8u64 {
            shard.insert(k, 100); // expired at now = 200
        }
        for k in 8..10u64 {
            shard.insert(k, 1_000); // live
        }
        evict(&mut shard, 200, 10);
        let mut left: Vec<u64> = shard.keys().copied().collect();
        left.sort_unstable();
        assert_eq!(left, [8, 9]);
        // Full of live keys, the ones nearest expiry go first.
        let mut shard = Shard::default();
        for k in 0..16u64 {
            shard.insert(k, 1_000 + k);
        }
        evict(&mut shard, 200, 16);
        assert!(!shard.contains_key(&0) && !shard.contains_key(&1));
        assert!(shard.contains_key(&15));
    }

    #[test]
    fn matches_the_pure_step() {
        let s = MemoryStore::new(1000);
        let mut tat = None;
        for now in [0, 0, 0, 0, 500, 1000, 1000, 2500, 9000] {
            let pure = gcra(tat, now, Q);
            if pure.allowed {
                tat = Some(pure.tat);
            }
            assert_eq!(s.check("k", now, Q), pure, "at {now}");
        }
    }
}
