//! Request ids (stage 1): a UUIDv7 per request, or the `X-Request-Id` a
//! trusted proxy sent, so one id follows a request through every hop. An id
//! from anyone else is ignored: it would let a client forge log entries.

use http::HeaderMap;

/// The header that carries the id, both ways.
pub const HEADER: &str = "x-request-id";

/// The id for a request; `trusted` says whether the peer is a trusted proxy.
pub fn assign(headers: &HeaderMap, trusted: bool) -> String {
    if trusted {
        let mut values = headers.get_all(HEADER).iter();
        if let (Some(v), None) = (values.next(), values.next())
            && let Ok(s) = v.to_str()
            && is_acceptable(s)
        {
            return s.to_owned();
        }
    }
    uuid::Uuid::now_v7().to_string()
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
        assert_eq!(assign(&h, trusted("10.1.2.3")), "abc-123");
        assert_eq!(assign(&h, trusted("::ffff:10.1.2.3")), "abc-123");
        let own = assign(&h, trusted("192.0.2.1"));
        assert_ne!(own, "abc-123");
        assert_eq!(uuid::Uuid::parse_str(&own).unwrap().get_version_num(), 7);
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
            let id = assign(&h, trusted("10.0.0.1"));
            assert!(uuid::Uuid::parse_str(&id).is_ok(), "{h:?}");
        }
    }
}
