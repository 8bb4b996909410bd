//! The Redis store against the real server at 127.0.0.1:6379 (`.ci/run`
//! starts it): the same operation sequences through the in-memory store
//! and the Redis store must give the same answers, step for step.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use portcullis_limit::bans::{Ban, Escalation, MemoryBans};
use portcullis_limit::{MemoryStore, Quota, RedisStore};
use proptest::prelude::*;

const URL: &str = "redis://127.0.0.1:6379/";

fn prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("portcullis-test:{test}:{}:{nanos}:", std::process::id())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn redis_is_answering() {
    // Not a skip: without the server the store cannot be tested at all.
    let rt = runtime();
    let store = RedisStore::new(URL, &prefix("ping"), Duration::from_secs(2)).unwrap();
    let q = Quota {
        limit: 1,
        period_ms: 1_000,
    };
    let r = rt.block_on(store.check("k", 1_000, q));
    assert!(r.is_ok(), "redis at {URL} is not answering: {r:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn memory_and_redis_agree_on_every_step(
        limit in 1u32..8,
        ops in prop::collection::vec((0usize..3, 0u64..3_000), 1..60),
    ) {
        let rt = runtime();
        let q = Quota { limit, period_ms: 10_000 - 10_000 % u64::from(limit) };
        let memory = MemoryStore::new(1_000);
        let redis = RedisStore::new(URL, &prefix("diff"), Duration::from_secs(2)).unwrap();
        // A realistic clock: epoch milliseconds, so the script's arithmetic
        // runs on numbers of the size it meets in production.
        let mut now = 1_795_000_000_000u64;
        for (key, gap) in ops {
            now += gap;
            let key = format!("k{key}");
            let m = memory.check(&key, now, q);
            let r = rt.block_on(redis.check(&key, now, q)).unwrap();
            prop_assert_eq!(m, r, "key {} at {}", key, now);
        }
    }
}

#[test]
fn an_unreachable_server_is_an_error_not_a_hang() {
    let rt = runtime();
    // Nothing listens on port 1.
    let store = RedisStore::new("redis://127.0.0.1:1/", "x:", Duration::from_millis(200)).unwrap();
    let q = Quota {
        limit: 1,
        period_ms: 1_000,
    };
    let started = std::time::Instant::now();
    assert!(rt.block_on(store.check("k", 1, q)).is_err());
    // And the next request fails fast instead of trying again at once.
    assert!(rt.block_on(store.check("k", 2, q)).is_err());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Bans: the strike script and the in-memory book, through the same
    /// strikes, bans by hand, lookups and lifts.
    #[test]
    fn memory_and_redis_bans_agree_on_every_step(
        more_than in 0u32..4,
        ops in prop::collection::vec((0usize..4, 0usize..3, 0u64..2_500), 1..50),
    ) {
        let rt = runtime();
        let e = Escalation { more_than, within_ms: 5_000, ban_ms: 7_000 };
        let memory = MemoryBans::new(1_000);
        let redis = RedisStore::new(URL, &prefix("bans"), Duration::from_secs(2)).unwrap();
        let mut now = 1_795_000_000_000u64;
        let keys: Vec<String> = (0..3).map(|k| format!("ip:192.0.2.{k}")).collect();
        for (op, key, gap) in ops {
            now += gap;
            let k = &keys[key];
            match op {
                0 | 1 => {
                    let m = memory.strike("rule", k, now, e).map(|b| b.until_ms);
                    let r = rt.block_on(redis.strike("rule", k, now, e)).unwrap().map(|b| b.until_ms);
                    prop_assert_eq!(m, r, "strike {} at {}", k, now);
                }
                2 => {
                    let until = now + gap * 3 + 1;
                    let m = memory.put(k, until, "manual", now).map(|b| b.until_ms);
                    let r = rt.block_on(redis.put_ban(k, until, "manual", now)).unwrap();
                    prop_assert_eq!(m, Some(r), "put {} at {}", k, now);
                }
                _ => {
                    let m = memory.remove(k, now);
                    let r = rt.block_on(redis.remove_ban(k)).unwrap();
                    // Redis may still hold a ban that expired a moment ago
                    // by its own clock; what is in force must agree.
                    prop_assert!(m <= r, "remove {} at {}", k, now);
                }
            }
            let found = |b: Option<Ban>| b.map(|b| (b.key, b.until_ms));
            let m = found(memory.find(&keys, now));
            let r = found(rt.block_on(redis.find_ban(&keys, now)).unwrap());
            prop_assert_eq!(m, r, "find at {}", now);
        }
        let listed = |v: Vec<Ban>| v.into_iter().map(|b| (b.key, b.until_ms, b.by.to_string())).collect::<Vec<_>>();
        prop_assert_eq!(listed(memory.list(now)), listed(rt.block_on(redis.list_bans(now)).unwrap()));
    }
}
