//! Network gates at scale: a configuration naming a 1,000,000-entry IP
//! list file (half IPv4, half IPv6), loaded through the real loader; then
//! the membership lookup alone, and a whole decision on the quickstart
//! policy with that list as its global deny list.
//!
//! Then country lookups in a database built here, and a decision with a
//! country rule.
//!
//! Run: cargo bench -p portcullis --bench network
//! The load time and the memory the list takes are printed before the
//! criterion runs (one measurement each).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::fmt::Write as _;
use std::hint::black_box;
use std::net::IpAddr;
use std::path::Path;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, Method};
use portcullis_core::RequestFacts;
use portcullis_core::network::IpSet;

#[path = "../tests/support/mmdb.rs"]
mod mmdb;

const ENTRIES: usize = 1_000_000;

/// xorshift64*: deterministic addresses without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn list_text() -> String {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut out = String::with_capacity(ENTRIES * 28);
    out.push_str("# generated: 500,000 IPv4 and 500,000 IPv6 entries\n");
    for i in 0..ENTRIES {
        let r = rng.next();
        if i % 2 == 0 {
            let a = std::net::Ipv4Addr::from((r >> 32) as u32);
            let prefix = [32, 32, 32, 24, 28, 30][(r % 6) as usize];
            let _ = writeln!(out, "{a}/{prefix}");
        } else {
            let a = std::net::Ipv6Addr::from((u128::from(r) << 64) | u128::from(rng.next()));
            let prefix = [128, 64, 56, 48][(r % 4) as usize];
            let _ = writeln!(out, "{a}/{prefix}");
        }
    }
    out
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A whole decision on `GET /public/hello` from each of the 1,024 `probes`
/// in turn.
fn bench_public(
    c: &mut Criterion,
    name: &str,
    loaded: &portcullis_config::Loaded,
    probes: &[IpAddr],
) {
    let method = Method::GET;
    let headers = HeaderMap::new();
    let mut j = 0;
    c.bench_function(name, |b| {
        b.iter(|| {
            j = (j + 1) & 1023;
            let d = loaded.engine.decide(&RequestFacts {
                method: &method,
                target: "/public/hello",
                headers: &headers,
                peer: probes[j],
                now: 1_800_000_000,
            });
            black_box(d.is_allowed())
        });
    });
}

/// The quickstart's files in a temporary folder.
fn quickstart_copy() -> tempfile::TempDir {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "schema.cedarschema",
        "policies.cedar",
        "entities.json",
        "api-keys.toml",
        "portcullis.toml",
    ] {
        std::fs::copy(root.join("examples/quickstart").join(f), dir.path().join(f)).unwrap();
    }
    dir
}

fn bench(c: &mut Criterion) {
    let dir = quickstart_copy();
    std::fs::write(dir.path().join("big.txt"), list_text()).unwrap();
    let config = dir.path().join("portcullis.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "cidrs = [\"203.0.113.0/24\", \"2001:db8:bad::/48\"]",
        "cidrs = [\"203.0.113.0/24\", \"2001:db8:bad::/48\"]\nfiles = [\"big.txt\"]",
    );
    std::fs::write(&config, text).unwrap();

    let before = rss_kib();
    let started = Instant::now();
    let loaded = portcullis_config::load(&config).unwrap();
    let load = started.elapsed();
    let after = rss_kib();
    eprintln!(
        "network: loaded the quickstart with a {ENTRIES}-entry list in {:.2} s; resident memory grew by {:.1} MiB",
        load.as_secs_f64(),
        (after.saturating_sub(before)) as f64 / 1024.0
    );

    // The set alone, built the same way, for the lookup.
    let nets: Vec<ipnet::IpNet> = list_text()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.parse().unwrap())
        .collect();
    let set = IpSet::new(nets);
    let mut rng = Rng(7);
    let probes: Vec<IpAddr> = (0..1024)
        .map(|i| {
            let r = rng.next();
            if i % 2 == 0 {
                IpAddr::from(std::net::Ipv4Addr::from((r >> 32) as u32))
            } else {
                IpAddr::from(std::net::Ipv6Addr::from(
                    (u128::from(r) << 64) | u128::from(rng.next()),
                ))
            }
        })
        .collect();
    let mut i = 0;
    c.bench_function("ip list, 1M mixed entries, lookup", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            black_box(set.contains(black_box(probes[i])))
        });
    });

    bench_public(
        c,
        "quickstart public, 1M-entry global deny list",
        &loaded,
        &probes,
    );
}

/// Country lookups in a database about the size of GeoLite2-Country
/// (300,000 networks, half IPv4 /24s, half IPv6 /48s), built here; then a
/// whole decision with a global country deny rule.
fn countries(c: &mut Criterion) {
    let dir = quickstart_copy();
    let codes = ["FR", "DE", "US", "RU", "JP", "BR", "IN", "NG"];
    let mut rng = Rng(0x5EED);
    let nets: Vec<(String, &str)> = (0..300_000)
        .map(|i| {
            let r = rng.next();
            let code = codes[(r % 8) as usize];
            if i % 2 == 0 {
                let a = std::net::Ipv4Addr::from(((r >> 32) as u32) & 0xFFFF_FF00);
                (format!("{a}/24"), code)
            } else {
                let a = std::net::Ipv6Addr::from(u128::from(r >> 16) << 80);
                (format!("{a}/48"), code)
            }
        })
        .collect();
    let entries: Vec<(&str, &str)> = nets.iter().map(|(n, c)| (n.as_str(), *c)).collect();
    std::fs::write(
        dir.path().join("countries.mmdb"),
        mmdb::country_db(&entries),
    )
    .unwrap();
    let config = dir.path().join("portcullis.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "deny = [\"blocked\"]\n",
        "deny = [\"blocked\"]\ndeny_countries = [\"RU\"]\n",
    );
    std::fs::write(
        &config,
        format!("[geoip]\ndatabase = \"countries.mmdb\"\n\n{text}"),
    )
    .unwrap();
    let started = Instant::now();
    let loaded = portcullis_config::load(&config).unwrap();
    eprintln!(
        "network: loaded and verified a {}-byte country database of 300,000 networks in {:.2} s",
        std::fs::metadata(dir.path().join("countries.mmdb"))
            .unwrap()
            .len(),
        started.elapsed().as_secs_f64()
    );
    let db = loaded.geoip.clone().unwrap();
    // Half the probes fall inside a listed network, half anywhere.
    let probes: Vec<IpAddr> = nets
        .iter()
        .step_by(293)
        .take(512)
        .map(|(n, _)| n.parse::<ipnet::IpNet>().unwrap().network())
        .chain((0..512).map(|_| IpAddr::from(std::net::Ipv4Addr::from((rng.next() >> 32) as u32))))
        .collect();
    let mut i = 0;
    c.bench_function("country lookup, 300k-network database", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            black_box(portcullis_core::network::CountryLookup::country(
                &*db,
                black_box(probes[i]),
            ))
        });
    });
    bench_public(c, "quickstart public, country deny rule", &loaded, &probes);
}

criterion_group!(benches, bench, countries);
criterion_main!(benches);
