//! Timed bans, the pure half. Escalation rules turn repeated refusals from
//! one key ("more than 20 answers of 401, 403 or 429 within a minute from
//! one address") into a ban on that key; a banned key is refused at stage 3
//! until the ban ends. The engine writes the keys a request is checked
//! under into its decision; the front door looks them up in its store
//! (memory, or Redis shared by every instance), and after the response
//! counts a strike against each rule the answer matches.
//!
//! Ban keys name the client, never a rule: `ip:ADDR` for an address and
//! `net:CIDR` for an address prefix, so one lookup covers every rule (and
//! bans added by hand) that bans the same thing.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

/// What a rule counts and bans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BanKey {
    /// The client address.
    Ip,
    /// The client's network, the address cut to these prefix lengths.
    IpPrefix {
        /// IPv4 prefix length.
        v4: u8,
        /// IPv6 prefix length.
        v6: u8,
    },
}

impl BanKey {
    /// The key of `client` (`ip:ADDR` or `net:CIDR`).
    pub fn of(self, client: IpAddr) -> String {
        let client = client.to_canonical();
        match self {
            BanKey::Ip => format!("ip:{client}"),
            BanKey::IpPrefix { v4, v6 } => {
                let len = if client.is_ipv4() { v4 } else { v6 };
                let net = IpNet::new(client, len).map_or(IpNet::from(client), |n| n.trunc());
                format!("net:{net}")
            }
        }
    }
}

/// An escalation rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanRule {
    /// Its name (`ban:NAME` in decisions and logs).
    pub name: Arc<str>,
    /// The response statuses that count as a strike.
    pub statuses: Vec<u16>,
    /// A ban starts when strikes exceed this many...
    pub more_than: u32,
    /// ...within this window (from the first strike), in milliseconds.
    pub within_ms: u64,
    /// How long the ban lasts, in milliseconds.
    pub ban_ms: u64,
    /// What is counted and banned.
    pub key: BanKey,
    /// Only responses on these routes count (empty: every response).
    pub routes: Vec<Arc<str>>,
}

/// The `by` of bans added by hand (`manual`, or `manual: REASON`); rule
/// names starting with it are refused at load, so the two never mix.
pub const MANUAL: &str = "manual";

/// The rule id a ban added by hand refuses under.
pub const MANUAL_RULE: &str = "ban:manual";

/// The ban configuration: whether bans are checked, and the rules.
#[derive(Debug, Clone)]
pub struct Bans {
    /// The escalation rules.
    pub rules: Vec<Arc<BanRule>>,
    /// The client-facing message of a `Banned` refusal.
    pub message: Option<String>,
    /// When the store cannot be reached: let the request pass (true) or
    /// refuse it with 503 (false).
    pub fail_open: bool,
    /// The network prefixes bans are looked up under, besides the address
    /// itself: those the rules ban.
    prefixes: Vec<BanKey>,
}

impl Bans {
    /// Bans with `rules` (none: only bans added by hand, on addresses).
    pub fn new(rules: Vec<Arc<BanRule>>, message: Option<String>, fail_open: bool) -> Self {
        let mut prefixes: Vec<BanKey> = Vec::new();
        for key in rules.iter().map(|r| r.key) {
            if key != BanKey::Ip && !prefixes.contains(&key) {
                prefixes.push(key);
            }
        }
        Bans {
            rules,
            message,
            fail_open,
            prefixes,
        }
    }

    /// The keys `client` is looked up under: its address, then each
    /// network prefix in use.
    pub fn keys(&self, client: IpAddr) -> Vec<String> {
        let mut keys = Vec::with_capacity(1 + self.prefixes.len());
        keys.push(BanKey::Ip.of(client));
        for p in &self.prefixes {
            let k = p.of(client);
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        keys
    }

    /// The prefixes looked up besides the address.
    pub fn prefixes(&self) -> &[BanKey] {
        &self.prefixes
    }

    /// The rules a response with `status` on `route` counts against, with
    /// the key each counts it under.
    pub fn strikes(
        &self,
        client: IpAddr,
        status: u16,
        route: Option<&str>,
    ) -> Vec<(Arc<BanRule>, String)> {
        self.rules
            .iter()
            .filter(|r| r.statuses.contains(&status))
            .filter(|r| {
                r.routes.is_empty() || route.is_some_and(|n| r.routes.iter().any(|x| &**x == n))
            })
            .map(|r| (Arc::clone(r), r.key.of(client)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, key: BanKey, routes: &[&str]) -> Arc<BanRule> {
        Arc::new(BanRule {
            name: name.into(),
            statuses: vec![401, 403],
            more_than: 3,
            within_ms: 60_000,
            ban_ms: 600_000,
            key,
            routes: routes.iter().map(|r| Arc::from(*r)).collect(),
        })
    }

    #[test]
    fn keys_cover_the_address_and_each_prefix_once() {
        let net = BanKey::IpPrefix { v4: 24, v6: 64 };
        let bans = Bans::new(
            vec![
                rule("a", BanKey::Ip, &[]),
                rule("b", net, &[]),
                rule("c", net, &[]),
                rule("d", BanKey::IpPrefix { v4: 16, v6: 48 }, &[]),
            ],
            None,
            true,
        );
        assert_eq!(
            bans.keys("203.0.113.7".parse().unwrap()),
            ["ip:203.0.113.7", "net:203.0.113.0/24", "net:203.0.0.0/16"]
        );
        assert_eq!(
            bans.keys("2001:db8:1:2:3::9".parse().unwrap()),
            [
                "ip:2001:db8:1:2:3::9",
                "net:2001:db8:1:2::/64",
                "net:2001:db8:1::/48"
            ]
        );
        // An IPv4-mapped address is the IPv4 address it carries.
        assert_eq!(
            bans.keys("::ffff:203.0.113.7".parse().unwrap())[0],
            "ip:203.0.113.7"
        );
    }

    #[test]
    fn strikes_follow_status_and_route() {
        let bans = Bans::new(
            vec![
                rule("any", BanKey::Ip, &[]),
                rule("login", BanKey::Ip, &["login"]),
            ],
            None,
            true,
        );
        let client = "192.0.2.1".parse().unwrap();
        let names = |status, route| {
            bans.strikes(client, status, route)
                .into_iter()
                .map(|(r, k)| format!("{}={k}", r.name))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(401, Some("login")),
            ["any=ip:192.0.2.1", "login=ip:192.0.2.1"]
        );
        assert_eq!(names(403, Some("home")), ["any=ip:192.0.2.1"]);
        assert_eq!(names(403, None), ["any=ip:192.0.2.1"]);
        assert!(names(200, Some("login")).is_empty());
        assert!(names(429, Some("login")).is_empty());
    }
}
