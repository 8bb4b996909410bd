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

criterion_group!(benches, bench);
criterion_main!(benches);
