//! Stage 4, the pure half: which rate limits a request counts against and
//! under which keys. The engine records them in the decision; the front
//! door runs them against its store (in memory or shared) and turns an
//! exhausted limit into 429. Global limits are keyed as soon as the client
//! address is known; a route's limits once authentication has been tried,
//! so failed logins count too.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderName};
use ipnet::IpNet;

/// One part of a limit's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    /// The client address.
    Ip,
    /// The client's network: its address cut to these prefix lengths, so
    /// rotating addresses inside one allocation does not escape.
    IpPrefix {
        /// IPv4 prefix length.
        v4: u8,
        /// IPv6 prefix length.
        v6: u8,
    },
    /// The authenticated subject; the client address when anonymous.
    Subject,
    /// The API key that authenticated the request (by its digest, never
    /// the key); the client address otherwise, so made-up keys cannot
    /// each get a fresh bucket.
    ApiKey,
    /// The matched route's name.
    Route,
    /// A header's value (`-` when absent); written `hdr:NAME:VALUE`, and
    /// never shown in hints or logs (it may be a credential).
    Header(HeaderName),
}

/// A configured limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitSpec {
    /// Its name (the `RateLimit-Policy` name and the rule id).
    pub name: Arc<str>,
    /// Requests per period.
    pub limit: u32,
    /// The period, in milliseconds.
    pub period_ms: u64,
    /// What the key is made of.
    pub key: Vec<KeyPart>,
    /// When the shared store cannot be reached: let the request pass
    /// (true) or refuse it with 503 (false).
    pub fail_open: bool,
}

/// One limit to count this request against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitCheck {
    /// The limit.
    pub spec: Arc<RateLimitSpec>,
    /// The key within it.
    pub key: String,
    /// A route's own limit (false: a global one). A concealing route's
    /// own limits never show in a response.
    pub route_level: bool,
}

/// What the key parts read.
pub(crate) struct KeyFacts<'a> {
    pub client: IpAddr,
    pub headers: &'a HeaderMap,
    pub subject: Option<&'a str>,
    pub api_key: Option<&'a [u8]>,
    pub route: Option<&'a str>,
}

pub(crate) fn checks(
    specs: &[Arc<RateLimitSpec>],
    facts: &KeyFacts<'_>,
    out: &mut Vec<LimitCheck>,
) {
    for spec in specs {
        let mut key = String::with_capacity(64);
        key.push_str(&escape(&spec.name));
        for part in &spec.key {
            key.push('|');
            part_value(part, facts, &mut key);
        }
        out.push(LimitCheck {
            spec: Arc::clone(spec),
            key,
            route_level: facts.route.is_some(),
        });
    }
}

fn part_value(part: &KeyPart, f: &KeyFacts<'_>, out: &mut String) {
    match part {
        KeyPart::Ip => {
            let _ = write!(out, "ip:{}", f.client);
        }
        KeyPart::IpPrefix { v4, v6 } => {
            let len = if f.client.is_ipv4() { *v4 } else { *v6 };
            let net = IpNet::new(f.client, len).map_or(IpNet::from(f.client), |n| n.trunc());
            let _ = write!(out, "net:{net}");
        }
        KeyPart::Subject => match f.subject {
            Some(s) => {
                let _ = write!(out, "sub:{}", escape(s));
            }
            None => {
                let _ = write!(out, "ip:{}", f.client);
            }
        },
        KeyPart::ApiKey => match f.api_key {
            Some(k) => {
                let _ = write!(out, "key:{}", digest_hex(k));
            }
            None => {
                let _ = write!(out, "ip:{}", f.client);
            }
        },
        KeyPart::Route => {
            let _ = write!(out, "route:{}", f.route.map_or("-".into(), escape));
        }
        KeyPart::Header(name) => {
            // By digest: the value may be a credential, and the key travels
            // to Redis and into logs.
            let v = f
                .headers
                .get(name)
                .map(|v| digest_hex(v.as_bytes()))
                .unwrap_or_else(|| "-".to_owned());
            let _ = write!(out, "hdr:{}:{v}", escape(name.as_str()));
        }
    }
}

/// `%` then `|` escaped, so distinct values stay distinct keys. Most
/// values have neither, and are borrowed as they are.
fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains(['%', '|']) {
        s.replace('%', "%25").replace('|', "%7C").into()
    } else {
        s.into()
    }
}

/// The first 16 bytes of the SHA-256, in hex.
fn digest_hex(v: &[u8]) -> String {
    use sha2::Digest as _;
    crate::authn::apikey::hex(&sha2::Sha256::digest(v)[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, parts: Vec<KeyPart>, route: Option<&str>, subject: Option<&str>) -> String {
        let spec = Arc::new(RateLimitSpec {
            name: name.into(),
            limit: 1,
            period_ms: 1000,
            key: parts,
            fail_open: true,
        });
        let headers = HeaderMap::new();
        let facts = KeyFacts {
            client: "192.0.2.1".parse().unwrap(),
            headers: &headers,
            subject,
            api_key: None,
            route,
        };
        let mut out = Vec::new();
        checks(&[spec], &facts, &mut out);
        out.remove(0).key
    }

    #[test]
    fn names_routes_and_subjects_cannot_forge_each_others_keys() {
        // A limit name holding the separator is not another limit's key.
        assert_ne!(
            key("x|route:r", vec![KeyPart::Ip], None, None),
            key("x", vec![KeyPart::Route, KeyPart::Ip], Some("r"), None)
        );
        // An escaped form is not the character it stands for.
        assert_ne!(
            key("s", vec![KeyPart::Subject], None, Some("auth0|42")),
            key("s", vec![KeyPart::Subject], None, Some("auth0%7C42"))
        );
        // Anonymous callers fall back to the address, never one shared bucket.
        assert_eq!(
            key("s", vec![KeyPart::Subject], None, None),
            "s|ip:192.0.2.1"
        );
    }
}
