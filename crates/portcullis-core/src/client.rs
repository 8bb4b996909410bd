//! Stage 2: the client's address. The TCP peer is the client unless it is a
//! trusted proxy; then the configured forwarding header names the chain,
//! and the client is the rightmost address in it that is not itself a
//! trusted proxy. Every address examined must be written canonically: a
//! malformed one is a refusal, never a reason to look at another entry
//! (that would let a client choose which entry counts).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::{HeaderMap, HeaderName};
use ipnet::IpNet;

/// Which header a trusted proxy names the client in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientHeader {
    /// `X-Forwarded-For`: every field line, combined in order.
    XForwardedFor,
    /// `Forwarded` (RFC 7239): the `for=` of each element, in order.
    Forwarded,
    /// A header holding exactly one address (`X-Real-IP` and the like).
    Single(HeaderName),
}

/// How the client address is found.
#[derive(Debug, Clone)]
pub struct ClientAddressPolicy {
    trusted: Vec<IpNet>,
    header: ClientHeader,
}

impl Default for ClientAddressPolicy {
    /// No trusted proxies: the TCP peer is always the client.
    fn default() -> Self {
        ClientAddressPolicy {
            trusted: Vec::new(),
            header: ClientHeader::XForwardedFor,
        }
    }
}

/// Where the client address came from, for the trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientSource {
    /// The TCP peer (not a trusted proxy, or no forwarding header).
    Peer,
    /// The forwarding header of a trusted proxy.
    Header,
}

impl ClientAddressPolicy {
    /// Believe `header` from peers in `trusted`.
    pub fn new(trusted: Vec<IpNet>, header: ClientHeader) -> Self {
        ClientAddressPolicy { trusted, header }
    }

    /// Whether `ip` is a trusted proxy.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted.iter().any(|n| n.contains(&ip))
    }

    /// The header the trusted proxies use.
    pub fn header(&self) -> &ClientHeader {
        &self.header
    }

    /// The client address of a request from `peer`, or why none can be
    /// trusted.
    pub fn resolve(
        &self,
        peer: IpAddr,
        headers: &HeaderMap,
    ) -> Result<(IpAddr, ClientSource), String> {
        let peer = peer.to_canonical();
        if !self.is_trusted(peer) {
            return Ok((peer, ClientSource::Peer));
        }
        let chain = match &self.header {
            ClientHeader::XForwardedFor => list(headers, "x-forwarded-for", |e| Some(e.to_owned())),
            ClientHeader::Forwarded => forwarded_for(headers)?,
            ClientHeader::Single(name) => {
                let mut values = headers.get_all(name).iter();
                match (values.next(), values.next()) {
                    (None, _) => Vec::new(),
                    (Some(v), None) => vec![
                        v.to_str()
                            .map_err(|_| format!("{name} is not text"))?
                            .trim()
                            .to_owned(),
                    ],
                    _ => return Err(format!("{name} appears more than once")),
                }
            }
        };
        if chain.is_empty() {
            return Ok((peer, ClientSource::Peer));
        }
        for entry in chain.iter().rev() {
            let ip = parse_node(entry).ok_or_else(|| {
                format!(
                    "the forwarded address {:?} is not a canonical IP address",
                    truncate(entry)
                )
            })?;
            if !self.is_trusted(ip) {
                return Ok((ip, ClientSource::Header));
            }
        }
        // Every hop is a trusted proxy: the leftmost is as far as the chain goes.
        let first = chain.first().and_then(|e| parse_node(e)).unwrap_or(peer);
        Ok((first, ClientSource::Header))
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Comma-separated entries of every field line of `name`, in order.
fn list(headers: &HeaderMap, name: &str, f: impl Fn(&str) -> Option<String>) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .split(',')
                .map(str::trim)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter_map(|e| f(&e))
        .collect()
}

/// The `for=` parameter of each `Forwarded` element, in order. Commas and
/// semicolons inside quoted strings separate nothing (a quoted `host`
/// cannot smuggle in an element). An element without `for=`, or with two,
/// breaks the chain: the proxy that wrote it did not say, or said twice.
/// So does a quote that is not a whole quoted-string value: an unclosed
/// `host="` would otherwise swallow every element after it (the next
/// proxy's too, once a hop joins the lines into one), and the client would
/// name itself.
fn forwarded_for(headers: &HeaderMap) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for line in headers.get_all("forwarded") {
        let line = String::from_utf8_lossy(line.as_bytes());
        let badly_quoted = || format!("a Forwarded value is badly quoted: {:?}", truncate(&line));
        for element in split_unquoted(&line, ',').ok_or_else(badly_quoted)? {
            let element = element.trim();
            if element.is_empty() {
                continue;
            }
            let pairs = split_unquoted(element, ';').ok_or_else(badly_quoted)?;
            if pairs
                .iter()
                .filter_map(|pair| pair.split_once('='))
                .any(|(_, v)| !well_quoted(v.trim()))
            {
                return Err(badly_quoted());
            }
            let fors: Vec<&str> = pairs
                .into_iter()
                .filter_map(|pair| pair.split_once('='))
                .filter(|(k, _)| k.trim().eq_ignore_ascii_case("for"))
                .map(|(_, v)| v.trim())
                .collect();
            match fors.as_slice() {
                [one] => out.push(unquote(one).ok_or_else(|| {
                    format!("a Forwarded for= is badly quoted: {:?}", truncate(element))
                })?),
                [] => {
                    return Err(format!(
                        "a Forwarded element has no for=: {:?}",
                        truncate(element)
                    ));
                }
                _ => {
                    return Err(format!(
                        "a Forwarded element has two for=: {:?}",
                        truncate(element)
                    ));
                }
            }
        }
    }
    Ok(out)
}

/// Split on `sep` outside double-quoted strings (with `\` escapes); `None`
/// when a quoted string is not closed.
fn split_unquoted(s: &str, sep: char) -> Option<Vec<&str>> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    (!quoted).then_some(parts)
}

/// A parameter value is a token (no `"`) or one whole quoted-string.
fn well_quoted(v: &str) -> bool {
    let Some(rest) = v.strip_prefix('"') else {
        return !v.contains('"');
    };
    let mut escaped = false;
    for (i, c) in rest.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return i + 1 == rest.len(),
            _ => {}
        }
    }
    false
}

/// A token, or a quoted string without escapes (a node never needs one).
fn unquote(v: &str) -> Option<String> {
    match v.strip_prefix('"') {
        None if !v.contains('"') => Some(v.to_owned()),
        None => None,
        Some(rest) => {
            let inner = rest.strip_suffix('"')?;
            (!inner.contains(['"', '\\'])).then(|| inner.to_owned())
        }
    }
}

/// One chain entry: an IPv4 address in dotted-quad form, an IPv6 address,
/// optionally in brackets and with a port (`[2001:db8::1]:443`,
/// `192.0.2.1:443`, as RFC 7239 writes nodes). No leading zeros, octal, hex,
/// integers or zone ids. IPv4-mapped IPv6 becomes IPv4.
pub fn parse_node(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        if !(after.is_empty() || port(after.strip_prefix(':')?)) {
            return None;
        }
        return inner
            .parse::<Ipv6Addr>()
            .ok()
            .map(|a| IpAddr::V6(a).to_canonical());
    }
    if s.contains(':') {
        if let Ok(v6) = s.parse::<Ipv6Addr>() {
            return Some(IpAddr::V6(v6).to_canonical());
        }
        let (host, p) = s.rsplit_once(':')?;
        return (port(p) && !host.contains(':'))
            .then(|| ipv4(host))
            .flatten();
    }
    ipv4(s)
}

fn port(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 5
        && p.bytes().all(|b| b.is_ascii_digit())
        && p.parse::<u16>().is_ok()
}

/// Dotted quad, each part 0-255 without leading zeros.
fn ipv4(s: &str) -> Option<IpAddr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() != 4 {
        return None;
    }
    let mut octets = [0u8; 4];
    for (o, p) in octets.iter_mut().zip(&parts) {
        let ok = !p.is_empty()
            && p.len() <= 3
            && p.bytes().all(|b| b.is_ascii_digit())
            && !(p.len() > 1 && p.starts_with('0'));
        if !ok {
            return None;
        }
        *o = p.parse().ok()?;
    }
    Some(IpAddr::V4(Ipv4Addr::from(octets)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(header: ClientHeader) -> ClientAddressPolicy {
        ClientAddressPolicy::new(
            vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()],
            header,
        )
    }

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        m
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let p = policy(ClientHeader::XForwardedFor);
        for headers in [
            h(&[("x-forwarded-for", "203.0.113.7")]),
            h(&[("forwarded", "for=203.0.113.7")]),
            h(&[
                ("x-real-ip", "203.0.113.7"),
                ("true-client-ip", "203.0.113.7"),
                ("cf-connecting-ip", "203.0.113.7"),
            ]),
            h(&[("x-forwarded-for", "not an address")]),
        ] {
            assert_eq!(
                p.resolve(ip("192.0.2.1"), &headers),
                Ok((ip("192.0.2.1"), ClientSource::Peer))
            );
        }
    }

    #[test]
    fn a_trusted_peer_names_the_rightmost_untrusted_entry() {
        let p = policy(ClientHeader::XForwardedFor);
        let peer = ip("10.0.0.1");
        let got = |pairs: &[(&str, &str)]| p.resolve(peer, &h(pairs)).map(|(a, _)| a);
        assert_eq!(
            got(&[("x-forwarded-for", "203.0.113.7")]),
            Ok(ip("203.0.113.7"))
        );
        // A client-supplied entry to the left of the real one is not believed.
        assert_eq!(
            got(&[("x-forwarded-for", "1.1.1.1, 203.0.113.7, 10.0.0.9")]),
            Ok(ip("203.0.113.7"))
        );
        // Field lines combine in order.
        assert_eq!(
            got(&[
                ("x-forwarded-for", "1.1.1.1"),
                ("x-forwarded-for", "203.0.113.7")
            ]),
            Ok(ip("203.0.113.7"))
        );
        // Only trusted hops: the leftmost.
        assert_eq!(
            got(&[("x-forwarded-for", "10.1.1.1, 10.2.2.2")]),
            Ok(ip("10.1.1.1"))
        );
        // No header: the peer.
        assert_eq!(got(&[]), Ok(peer));
        // Other headers are not read.
        assert_eq!(got(&[("x-real-ip", "203.0.113.7")]), Ok(peer));
        assert_eq!(
            got(&[("x-forwarded-for", "::ffff:203.0.113.7")]),
            Ok(ip("203.0.113.7"))
        );
        assert_eq!(
            got(&[("x-forwarded-for", "2001:db8::7")]),
            Ok(ip("2001:db8::7"))
        );
        assert_eq!(
            got(&[("x-forwarded-for", "[2001:db8::7]:443")]),
            Ok(ip("2001:db8::7"))
        );
        assert_eq!(
            got(&[("x-forwarded-for", "203.0.113.7:5000")]),
            Ok(ip("203.0.113.7"))
        );
        assert_eq!(
            p.resolve(
                ip("::ffff:10.0.0.1"),
                &h(&[("x-forwarded-for", "203.0.113.7")])
            ),
            Ok((ip("203.0.113.7"), ClientSource::Header))
        );
    }

    #[test]
    fn a_malformed_selected_entry_is_refused_never_skipped() {
        let p = policy(ClientHeader::XForwardedFor);
        for bad in [
            "203.0.113.007",
            "0203.0.113.7",
            "0x7f.0.0.1",
            "3405803783",
            "127.1",
            "fe80::1%eth0",
            "203.0.113.256",
            "unknown",
            "",
            "1.2.3.4, garbage",
            "203.0.113.7:99999",
        ] {
            assert!(
                p.resolve(ip("10.0.0.1"), &h(&[("x-forwarded-for", bad)]))
                    .is_err(),
                "{bad:?}"
            );
        }
        // The entry left of the client is never examined, malformed or not.
        assert_eq!(
            p.resolve(
                ip("10.0.0.1"),
                &h(&[("x-forwarded-for", "garbage, 203.0.113.7")])
            )
            .map(|r| r.0),
            Ok(ip("203.0.113.7"))
        );
    }

    #[test]
    fn an_unclosed_or_stray_quote_in_forwarded_is_refused() {
        let p = policy(ClientHeader::Forwarded);
        let peer = ip("10.0.0.1");
        let got = |lines: &[&str]| {
            let pairs: Vec<(&str, &str)> = lines.iter().map(|l| ("forwarded", *l)).collect();
            p.resolve(peer, &h(&pairs)).map(|(a, _)| a)
        };
        // The client opens a quote; the trusted proxy appends its element to
        // the same line: the quote must not swallow it.
        assert!(got(&["for=6.6.6.6;host=\", for=203.0.113.9"]).is_err());
        // On its own line, the proxy's element is not swallowed either way.
        assert!(got(&["for=6.6.6.6;host=\"", "for=203.0.113.9"]).is_err());
        for bad in [
            "for=203.0.113.9;host=a\"b",
            "for=203.0.113.9;host=\"a\"b",
            "for=203.0.113.9;host=\"ab\\\"",
        ] {
            assert!(got(&[bad]).is_err(), "{bad}");
        }
        // Whole quoted strings, separators and escapes inside, are fine.
        assert_eq!(
            got(&["for=203.0.113.9;host=\"a,b;c=\\\"d\\\"\";proto=https"]),
            Ok(ip("203.0.113.9"))
        );
    }

    #[test]
    fn forwarded_elements_in_order() {
        let p = policy(ClientHeader::Forwarded);
        let peer = ip("10.0.0.1");
        let got = |v: &str| p.resolve(peer, &h(&[("forwarded", v)])).map(|(a, _)| a);
        assert_eq!(got("for=203.0.113.7;proto=https"), Ok(ip("203.0.113.7")));
        assert_eq!(
            got("for=1.1.1.1, for=\"[2001:db8::7]:4711\";proto=https, for=10.0.0.5"),
            Ok(ip("2001:db8::7"))
        );
        assert_eq!(got("For=203.0.113.7"), Ok(ip("203.0.113.7")));
        assert!(got("for=unknown").is_err());
        assert!(got("for=_hidden").is_err());
        assert!(got("proto=https").is_err());
        // Separators inside a quoted host separate nothing.
        assert_eq!(
            got("for=203.0.113.7;host=\"x,for=1.2.3.4\""),
            Ok(ip("203.0.113.7"))
        );
        assert_eq!(
            got("host=\"x;for=1.2.3.4\";for=203.0.113.7"),
            Ok(ip("203.0.113.7"))
        );
        assert!(got("for=203.0.113.7;for=1.2.3.4").is_err());
        // X-Forwarded-For is not read when Forwarded is the configured header.
        assert_eq!(
            p.resolve(peer, &h(&[("x-forwarded-for", "203.0.113.7")]))
                .map(|r| r.0),
            Ok(peer)
        );
    }

    #[test]
    fn a_single_value_header_is_believed_only_when_configured() {
        let p = policy(ClientHeader::Single(HeaderName::from_static("x-real-ip")));
        let peer = ip("10.0.0.1");
        assert_eq!(
            p.resolve(peer, &h(&[("x-real-ip", "203.0.113.7")]))
                .map(|r| r.0),
            Ok(ip("203.0.113.7"))
        );
        assert!(
            p.resolve(
                peer,
                &h(&[("x-real-ip", "203.0.113.7"), ("x-real-ip", "1.1.1.1")])
            )
            .is_err()
        );
        assert!(
            p.resolve(peer, &h(&[("x-real-ip", "203.0.113.7, 1.1.1.1")]))
                .is_err()
        );
        assert_eq!(
            p.resolve(peer, &h(&[("x-forwarded-for", "203.0.113.7")]))
                .map(|r| r.0),
            Ok(peer)
        );
    }
}
