//! Fuzz request normalisation: never a panic, and whatever is accepted is
//! canonical (normalising it again changes nothing, no dot or empty segments).

#![no_main]

use http::Method;
use libfuzzer_sys::fuzz_target;
use portcullis_core::normalize::{normalize_path, normalize_target};

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(t) = normalize_target(&Method::GET, raw) {
        assert_eq!(normalize_path(&t.path).as_deref(), Ok(t.path.as_str()));
        let body = t.path.trim_end_matches('/');
        for seg in body.split('/').skip(1) {
            assert!(
                !seg.is_empty() && seg != "." && seg != "..",
                "{raw:?} -> {}",
                t.path
            );
        }
    }
});
