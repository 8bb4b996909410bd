//! Fuzz the configuration loader with arbitrary text placed beside the
//! quickstart's files: never a panic; an error always names a location.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use portcullis_config::load_text;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart/fuzzed.toml");
    if let Err(e) = load_text(&path, text.to_owned()) {
        assert!(!e.errors.is_empty());
        assert!(e.errors.iter().all(|err| !err.location().is_empty()));
    }
});
