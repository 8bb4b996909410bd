//! Architecture invariants of the core, checked mechanically (ARCHITECTURE.md
//! lists them): no I/O crates, no clock, no filesystem, no randomness.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_core_depends_on_no_runtime_network_or_storage_crate() {
    let manifest =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .unwrap()
        .split("\n[")
        .next()
        .unwrap();
    for banned in [
        "tokio",
        "hyper",
        "redis",
        "reqwest",
        "axum",
        "tower",
        "rand",
        "maxminddb",
    ] {
        assert!(
            !deps.lines().any(|l| l.trim_start().starts_with(banned)),
            "portcullis-core must stay pure, but depends on {banned}"
        );
    }
}

#[test]
fn the_core_reads_no_clock_file_or_socket() {
    let mut files = Vec::new();
    sources(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src")),
        &mut files,
    );
    assert!(files.len() > 10);
    for file in files {
        if file.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        // Unit tests may read fixtures; the code above them may not.
        let code = text.split("#[cfg(test)]").next().unwrap();
        for banned in [
            "std::fs",
            "SystemTime::now",
            "Instant::now",
            "std::net::TcpStream",
            "std::env::var",
            "thread_rng",
            "std::process",
        ] {
            assert!(!code.contains(banned), "{} uses {banned}", file.display());
        }
    }
}
