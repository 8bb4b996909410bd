//! Timed bans: the strike count of an escalation rule as one pure step,
//! and the in-memory ban book. The Redis store (in `redis.rs`) runs the
//! same step in a script, so instances sharing it share bans.
//!
//! A strike window opens at a key's first strike and lasts `within_ms`;
//! the strike that makes the count exceed `more_than` inside it starts a
//! ban of `ban_ms` and clears the count. A ban never shortens one already
//! running.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// An escalation rule's numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Escalation {
    /// A ban starts when strikes exceed this many...
    pub more_than: u32,
    /// ...within this window, from the first strike (ms).
    pub within_ms: u64,
    /// How long the ban lasts (ms).
    pub ban_ms: u64,
}

/// A key's strikes: how many, and when the window closes (ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Strikes {
    /// Strikes counted in the window.
    pub count: u32,
    /// When the window closes.
    pub ends_ms: u64,
}

/// One strike at `now_ms` against the stored state: the state to keep
/// (`None` once a ban starts) and, if one starts, when it ends.
pub fn strike(
    stored: Option<Strikes>,
    now_ms: u64,
    e: Escalation,
) -> (Option<Strikes>, Option<u64>) {
    let current = stored.filter(|s| s.ends_ms > now_ms).unwrap_or(Strikes {
        count: 0,
        ends_ms: now_ms.saturating_add(e.within_ms),
    });
    let count = current.count.saturating_add(1);
    if count > e.more_than {
        (None, Some(now_ms.saturating_add(e.ban_ms)))
    } else {
        (
            Some(Strikes {
                count,
                ends_ms: current.ends_ms,
            }),
            None,
        )
    }
}

/// A ban in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    /// What is banned: `ip:ADDR` or `net:CIDR`.
    pub key: String,
    /// When it ends (Unix ms).
    pub until_ms: u64,
    /// Why: the escalation rule's name, or `manual` (with a reason).
    pub by: Arc<str>,
}

/// Bans and strike counts in this process: the default for one instance.
/// Two maps, each bounded to `max_keys`. A full count map drops its
/// expired windows, then, if still full, every count (a count lost is a
/// ban later, never a wrong one). A full ban map drops the bans that have
/// ended, then, if still full, the one in force that ends soonest.
#[derive(Debug)]
pub struct MemoryBans {
    bans: Mutex<HashMap<String, (u64, Arc<str>)>>,
    /// Entries in `bans`, readable without the lock: with none (the usual
    /// case) a lookup takes no lock at all.
    held: AtomicUsize,
    strikes: Mutex<HashMap<String, Strikes>>,
    max_keys: usize,
}

impl MemoryBans {
    /// A book holding at most about `max_keys` bans and as many counts.
    pub fn new(max_keys: usize) -> Self {
        MemoryBans {
            bans: Mutex::new(HashMap::new()),
            held: AtomicUsize::new(0),
            strikes: Mutex::new(HashMap::new()),
            max_keys: max_keys.max(1),
        }
    }

    /// The longest ban in force on any of `keys` at `now_ms`.
    pub fn find(&self, keys: &[String], now_ms: u64) -> Option<Ban> {
        if self.held.load(Ordering::Acquire) == 0 {
            return None;
        }
        let bans = self.bans.lock().unwrap_or_else(PoisonError::into_inner);
        keys.iter()
            .filter_map(|k| {
                bans.get(k)
                    .filter(|(until, _)| *until > now_ms)
                    .map(|(until, by)| Ban {
                        key: k.clone(),
                        until_ms: *until,
                        by: Arc::clone(by),
                    })
            })
            .max_by_key(|b| b.until_ms)
    }

    /// Count one strike of `rule` against `key`; the ban it starts, if any.
    pub fn strike(&self, rule: &str, key: &str, now_ms: u64, e: Escalation) -> Option<Ban> {
        let counter = format!("{rule}|{key}");
        let until = {
            let mut strikes = self.strikes.lock().unwrap_or_else(PoisonError::into_inner);
            let (state, until) = strike(strikes.get(&counter).copied(), now_ms, e);
            match state {
                Some(s) => {
                    if strikes.len() >= self.max_keys && !strikes.contains_key(&counter) {
                        strikes.retain(|_, s| s.ends_ms > now_ms);
                        if strikes.len() >= self.max_keys {
                            strikes.clear();
                        }
                    }
                    strikes.insert(counter, s);
                }
                None => {
                    strikes.remove(&counter);
                }
            }
            until?
        };
        self.put(key, until, rule, now_ms)
    }

    /// Ban `key` until `until_ms` (a running ban that ends later stays);
    /// the ban in force afterwards.
    pub fn put(&self, key: &str, until_ms: u64, by: &str, now_ms: u64) -> Option<Ban> {
        let mut bans = self.bans.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((until, by)) = bans.get(key).filter(|(u, _)| *u >= until_ms) {
            return Some(Ban {
                key: key.to_owned(),
                until_ms: *until,
                by: Arc::clone(by),
            });
        }
        if bans.len() >= self.max_keys && !bans.contains_key(key) {
            bans.retain(|_, (until, _)| *until > now_ms);
            if bans.len() >= self.max_keys {
                let soonest = bans
                    .iter()
                    .min_by_key(|(_, (until, _))| *until)
                    .map(|(k, _)| k.clone());
                if let Some(k) = soonest {
                    bans.remove(&k);
                }
            }
        }
        let by: Arc<str> = by.into();
        bans.insert(key.to_owned(), (until_ms, Arc::clone(&by)));
        self.held.store(bans.len(), Ordering::Release);
        Some(Ban {
            key: key.to_owned(),
            until_ms,
            by,
        })
    }

    /// Lift the ban on `key`; whether there was one in force.
    pub fn remove(&self, key: &str, now_ms: u64) -> bool {
        let mut bans = self.bans.lock().unwrap_or_else(PoisonError::into_inner);
        let lifted = bans.remove(key).is_some_and(|(until, _)| until > now_ms);
        self.held.store(bans.len(), Ordering::Release);
        lifted
    }

    /// Every ban in force, soonest ending first.
    pub fn list(&self, now_ms: u64) -> Vec<Ban> {
        let bans = self.bans.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<Ban> = bans
            .iter()
            .filter(|(_, (until, _))| *until > now_ms)
            .map(|(k, (until, by))| Ban {
                key: k.clone(),
                until_ms: *until,
                by: Arc::clone(by),
            })
            .collect();
        out.sort_by(|a, b| a.until_ms.cmp(&b.until_ms).then(a.key.cmp(&b.key)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const E: Escalation = Escalation {
        more_than: 3,
        within_ms: 10_000,
        ban_ms: 60_000,
    };

    #[test]
    fn the_strike_past_the_threshold_bans_and_a_ban_never_shortens() {
        let book = MemoryBans::new(100);
        for t in [0, 1_000, 2_000] {
            assert_eq!(book.strike("r", "ip:192.0.2.1", t, E), None);
        }
        let ban = book.strike("r", "ip:192.0.2.1", 3_000, E).unwrap();
        assert_eq!((ban.until_ms, &*ban.by), (63_000, "r"));
        let keys = ["ip:192.0.2.9".to_owned(), "ip:192.0.2.1".to_owned()];
        assert_eq!(book.find(&keys, 62_999).map(|b| b.until_ms), Some(63_000));
        assert_eq!(book.find(&keys, 63_000), None);
        // A shorter ban by hand leaves the longer one in force.
        assert_eq!(
            book.put("ip:192.0.2.1", 10_000, "manual", 5_000)
                .unwrap()
                .until_ms,
            63_000
        );
        assert!(book.remove("ip:192.0.2.1", 5_000));
        assert_eq!(book.find(&keys, 5_000), None);
    }

    #[test]
    fn strikes_outside_the_window_start_a_new_count() {
        let book = MemoryBans::new(100);
        for t in [0, 1_000, 2_000, 10_000, 11_000, 12_000] {
            assert_eq!(book.strike("r", "k", t, E), None, "at {t}");
        }
        assert!(book.strike("r", "k", 12_500, E).is_some());
    }

    #[test]
    fn a_full_book_drops_what_has_ended_first_then_what_ends_soonest() {
        let book = MemoryBans::new(2);
        book.put("ended", 10, "manual", 0);
        book.put("late", 1_000, "manual", 0);
        // Full: the ban that has ended goes, not the one in force.
        book.put("soon", 500, "manual", 20);
        let keys = |now| {
            book.list(now)
                .into_iter()
                .map(|b| b.key)
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(20), ["soon", "late"]);
        // Full of bans in force: the one ending soonest goes.
        book.put("new", 800, "manual", 30);
        assert_eq!(keys(30), ["new", "late"]);
    }

    #[test]
    fn a_full_count_map_loses_counts_never_bans() {
        let book = MemoryBans::new(2);
        let quick = Escalation { more_than: 0, ..E };
        assert!(book.strike("r", "a", 0, quick).is_some());
        assert!(book.strike("r", "b", 0, quick).is_some());
        // Counts for "x" are dropped once the count map overflows...
        for _ in 0..E.more_than {
            assert_eq!(book.strike("r", "x", 1, E), None);
        }
        for i in 0..10 {
            assert_eq!(book.strike("r", &format!("c{i}"), 1, E), None);
        }
        // ...while the bans stay...
        let keys = book.list(2).into_iter().map(|b| b.key).collect::<Vec<_>>();
        assert_eq!(keys, ["a", "b"]);
        // ...so "x" needs a whole new run of strikes.
        for _ in 0..E.more_than {
            assert_eq!(book.strike("r", "x", 2, E), None);
        }
        assert!(book.strike("r", "x", 2, E).is_some());
    }

    proptest! {
        /// Against a naive model: a list of strike times, a ban when more
        /// than `more_than` fall in the window opened by the first.
        #[test]
        fn strike_agrees_with_counting_timestamps(
            more_than in 0u32..5,
            gaps in prop::collection::vec(0u64..4_000, 1..60),
        ) {
            let e = Escalation { more_than, within_ms: 10_000, ban_ms: 1 };
            let mut state = None;
            let mut window: Vec<u64> = Vec::new();
            let mut now = 1_795_000_000_000u64;
            for gap in gaps {
                now += gap;
                if window.first().is_some_and(|&first| now >= first + e.within_ms) {
                    window.clear();
                }
                window.push(now);
                let naive_ban = window.len() as u64 > u64::from(more_than);
                if naive_ban {
                    window.clear();
                }
                let (next, ban) = strike(state, now, e);
                prop_assert_eq!(ban.is_some(), naive_ban);
                state = next;
            }
        }
    }
}
