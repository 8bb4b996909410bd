//! Fuzz the whole engine on the quickstart: never a panic, every denial is an
//! error status, and a concealed denial wears a genuine 404.

#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;
use portcullis_config::{Loaded, load};
use portcullis_core::RequestFacts;

fn quickstart() -> Option<&'static Loaded> {
    static LOADED: OnceLock<Option<Loaded>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            load(
                &Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../examples/quickstart/portcullis.toml"),
            )
            .ok()
        })
        .as_ref()
}

fuzz_target!(|data: &[u8]| {
    let Some(loaded) = quickstart() else {
        return;
    };
    // method \n target \n (name: value \n)*
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let method =
        Method::from_bytes(lines.next().unwrap_or("GET").as_bytes()).unwrap_or(Method::GET);
    let target = lines.next().unwrap_or("/");
    let mut headers = HeaderMap::new();
    for line in lines {
        if let Some((n, v)) = line.split_once(':')
            && let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(n.trim().as_bytes()),
                HeaderValue::from_str(v.trim()),
            )
        {
            headers.append(n, v);
        }
    }
    let facts = RequestFacts {
        method: &method,
        target,
        headers: &headers,
        // The first byte picks the peer: odd bytes come from the quickstart's
        // trusted proxy, so the forwarding-header parsers are fuzzed too.
        peer: if data.first().is_some_and(|b| b % 2 == 1) {
            [127, 0, 0, 2].into()
        } else {
            [192, 0, 2, 1].into()
        },
        now: 1_800_000_000,
    };
    let d = loaded.engine.decide(&facts);
    if let Some(den) = d.denial() {
        assert!((400..500).contains(&den.face.status));
        if den.concealed.is_some() {
            assert_eq!((den.face.status, den.face.code.as_str()), (404, "NotFound"));
        }
    }
});
