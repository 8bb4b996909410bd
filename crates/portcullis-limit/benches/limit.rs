//! The in-memory limiter per check: one key hot, and keys spread over
//! 100,000 clients (the shape of an address-keyed limit under load).
//!
//! Run: cargo bench -p portcullis-limit --bench limit

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis_limit::{MemoryStore, Quota};

fn bench(c: &mut Criterion) {
    let q = Quota {
        limit: 1_000_000,
        period_ms: 1_000,
    };
    let store = MemoryStore::new(1_000_000);
    let mut now = 0u64;
    c.bench_function("memory limiter, one key", |b| {
        b.iter(|| {
            now += 1;
            black_box(store.check(black_box("public-limited|ip:198.51.100.20"), now, q))
        });
    });
    let keys: Vec<String> = (0..100_000u32)
        .map(|i| {
            format!(
                "public-limited|ip:10.{}.{}.{}",
                i >> 16,
                (i >> 8) & 255,
                i & 255
            )
        })
        .collect();
    let mut i = 0;
    c.bench_function("memory limiter, 100k keys", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            now += 1;
            black_box(store.check(black_box(&keys[i]), now, q))
        });
    });
}

/// Redis-backed checks from one instance: 64 requests in flight on the one
/// multiplexed connection, as a busy gateway would have them. Needs the
/// server at 127.0.0.1:6379. Reports the time for 10,000 checks; checks per
/// second = 10,000 / that time.
fn redis(c: &mut Criterion) {
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = Arc::new(
        portcullis_limit::RedisStore::new(
            "redis://127.0.0.1:6379/",
            &format!("portcullis-bench:{}:", std::process::id()),
            Duration::from_secs(2),
        )
        .unwrap(),
    );
    let q = Quota {
        limit: 1_000_000,
        period_ms: 1_000,
    };
    let mut group = c.benchmark_group("redis limiter");
    group.sample_size(10);
    group.bench_function("10,000 checks, 64 in flight", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let store = Arc::clone(&store);
                total += rt.block_on(async move {
                    let started = Instant::now();
                    let mut tasks = Vec::new();
                    for t in 0..64u64 {
                        let store = Arc::clone(&store);
                        tasks.push(tokio::spawn(async move {
                            for i in 0..10_000 / 64 + 1 {
                                let key = format!("ip:10.0.{}.{}", t, i % 250);
                                store.check(&key, 1_795_000_000_000 + i, q).await.unwrap();
                            }
                        }));
                    }
                    for t in tasks {
                        t.await.unwrap();
                    }
                    started.elapsed()
                });
            }
            total
        });
    });
    group.finish();
}

criterion_group!(benches, bench, redis);
criterion_main!(benches);
