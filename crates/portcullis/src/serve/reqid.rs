//! Request ids (stage 1): a UUIDv7 per request, or the `X-Request-Id` a
//! trusted proxy sent, so one id follows a request through every hop. An id
//! from anyone else is ignored: it would let a client forge log entries.

use http::HeaderMap;

/// The header that carries the id, both ways.
pub const HEADER: &str = "x-request-id";

/// The id for a request arriving at `now_ms` (Unix milliseconds); `trusted`
/// says whether the peer is a trusted proxy.
pub fn assign(headers: &HeaderMap, trusted: bool, now_ms: u64) -> String {
    if trusted {
        let mut values = headers.get_all(HEADER).iter();
        if let (Some(v), None) = (values.next(), values.next())
            && let Ok(s) = v.to_str()
            && is_acceptable(s)
        {
            return s.to_owned();
        }
    }
    uuid::Builder::from_unix_timestamp_millis(now_ms, &random_bits())
        .into_uuid()
        .hyphenated()
        .to_string()
}

thread_local! {
    /// A key drawn from the OS once per thread, and a counter: each id's
    /// random bits are SipHash of the counter under that key, so no id
    /// costs a system call and no two ids of a process repeat their bits.
    static BITS: (std::hash::RandomState, std::cell::Cell<u64>) =
        (std::hash::RandomState::new(), std::cell::Cell::new(0));
}

/// The 80 random bits of a UUIDv7.
fn random_bits() -> [u8; 10] {
    use std::hash::BuildHasher as _;
    BITS.with(|(key, counter)| {
        let n = counter.get();
        counter.set(n.wrapping_add(1));
        let a = key.hash_one((n, 0u8)).to_le_bytes();
        let b = key.hash_one((n, 1u8)).to_le_bytes();
        let mut out = [0u8; 10];
        out[..8].copy_from_slice(&a);
        out[8..].copy_from_slice(&b[..2]);
        out
    })
}

/// Short, and only characters that need no escaping anywhere it is echoed.
fn is_acceptable(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_350_896_789;

    fn headers(v: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in v {
            h.append(HEADER, v.parse().unwrap());
        }
        h
    }

    /// The gateway asks the engine's client policy whether a peer is trusted.
    fn trusted(peer: &str) -> bool {
        portcullis_core::client::ClientAddressPolicy::new(
            vec!["10.0.0.0/8".parse().unwrap()],
            portcullis_core::client::ClientHeader::XForwardedFor,
        )
        .is_trusted(peer.parse().unwrap())
    }

    #[test]
    fn only_a_trusted_peer_names_the_id() {
        let h = headers(&["abc-123"]);
        assert_eq!(assign(&h, trusted("10.1.2.3"), NOW), "abc-123");
        assert_eq!(assign(&h, trusted("::ffff:10.1.2.3"), NOW), "abc-123");
        let own = assign(&h, trusted("192.0.2.1"), NOW);
        assert_ne!(own, "abc-123");
        let parsed = uuid::Uuid::parse_str(&own).unwrap();
        assert_eq!(parsed.get_version_num(), 7);
        // The id carries the request's time.
        let (secs, nanos) = parsed.get_timestamp().unwrap().to_unix();
        assert_eq!(secs * 1000 + u64::from(nanos) / 1_000_000, NOW);
    }

    #[test]
    fn ids_do_not_repeat_within_or_across_threads() {
        // Each worker thread has its own key and counter: the same instant
        // on four threads still gives 40,000 different ids.
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    let h = HeaderMap::new();
                    (0..10_000)
                        .map(|_| assign(&h, false, NOW))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let ids: std::collections::HashSet<String> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        assert_eq!(ids.len(), 40_000);
    }

    #[test]
    fn a_strange_or_repeated_id_is_replaced() {
        for h in [
            headers(&["a b"]),
            headers(&["<script>"]),
            headers(&[&"x".repeat(129)]),
            headers(&["a", "b"]),
            headers(&[""]),
        ] {
            let id = assign(&h, trusted("10.0.0.1"), NOW);
            assert!(uuid::Uuid::parse_str(&id).is_ok(), "{h:?}");
        }
    }
}
