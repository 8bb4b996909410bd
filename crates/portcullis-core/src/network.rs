//! Stage 3: network gates. IP allow and deny lists, global or per route,
//! each a set of CIDRs compiled into sorted, merged address ranges so that
//! a lookup is two binary searches whatever the list's size; then country
//! rules, on the country a [`CountryLookup`] (a MaxMind database, opened by
//! the configuration) gives the client address.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

/// A set of addresses: IPv4 and IPv6 ranges, sorted and merged.
#[derive(Debug, Clone, Default)]
pub struct IpSet {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl IpSet {
    /// The union of `nets`. IPv4-mapped IPv6 networks count as IPv4.
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for net in nets {
            match canonical_net(net) {
                IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.broadcast()))),
                IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.broadcast()))),
            }
        }
        IpSet {
            v4: merge(v4),
            v6: merge(v6),
        }
    }

    /// Whether `ip` is in the set.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(a) => find(&self.v4, u32::from(a)),
            IpAddr::V6(a) => find(&self.v6, u128::from(a)),
        }
    }

    /// Ranges held (after merging), for reports.
    pub fn ranges(&self) -> usize {
        self.v4.len() + self.v6.len()
    }
}

/// `net` without host bits, and an IPv4-mapped IPv6 network (`::ffff:0:0/96`
/// and inside) as the IPv4 network it maps: addresses are compared as IPv4
/// when they are IPv4-mapped, so networks must be too.
pub fn canonical_net(net: IpNet) -> IpNet {
    match net.trunc() {
        IpNet::V6(n) if n.prefix_len() >= 96 => match n.network().to_ipv4_mapped() {
            Some(v4) => IpNet::new(v4.into(), n.prefix_len() - 96).map_or(net, |m| m.trunc()),
            None => IpNet::V6(n),
        },
        other => other,
    }
}

fn merge<T: Ord + Copy + num_like::Succ>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match out.last_mut() {
            Some(last) if start <= last.1.succ() => {
                if end > last.1 {
                    last.1 = end;
                }
            }
            _ => out.push((start, end)),
        }
    }
    out.shrink_to_fit();
    out
}

fn find<T: Ord + Copy>(ranges: &[(T, T)], x: T) -> bool {
    // The last range starting at or before x is the only one that can hold it.
    let i = ranges.partition_point(|&(start, _)| start <= x);
    i > 0 && ranges[i - 1].1 >= x
}

mod num_like {
    /// The next value, saturating (adjacent ranges merge).
    pub trait Succ {
        fn succ(self) -> Self;
    }
    impl Succ for u32 {
        fn succ(self) -> Self {
            self.saturating_add(1)
        }
    }
    impl Succ for u128 {
        fn succ(self) -> Self {
            self.saturating_add(1)
        }
    }
}

/// An ISO 3166-1 alpha-2 country code, upper case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Country([u8; 2]);

impl Country {
    /// `code` if it is two ASCII letters (either case).
    pub fn parse(code: &str) -> Option<Country> {
        match code.as_bytes() {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                Some(Country([a.to_ascii_uppercase(), b.to_ascii_uppercase()]))
            }
            _ => None,
        }
    }

    /// The code, e.g. `"FR"`.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl std::fmt::Display for Country {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an address's country comes from. The engine asks once per request,
/// at stage 3; an address the source does not know (private ranges, gaps,
/// an unreadable record) has no country.
pub trait CountryLookup: Send + Sync + std::fmt::Debug {
    /// The country of `ip`, if known.
    fn country(&self, ip: IpAddr) -> Option<Country>;
}

/// What a gate with country rules does with an address that has no country.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownCountry {
    /// Let it pass the country rules.
    Allow,
    /// Refuse it (403 `GeoBlocked`).
    Deny,
}

/// Country allow and deny rules at one place.
#[derive(Debug, Clone)]
pub struct CountryRules {
    /// Countries refused.
    pub deny: Vec<Country>,
    /// When not empty, only these countries pass.
    pub allow: Vec<Country>,
    /// Addresses with no country.
    pub unknown: UnknownCountry,
    /// The client-facing message when these rules refuse.
    pub message: Option<String>,
}

impl CountryRules {
    fn check(&self, client: IpAddr, country: Option<Country>, place: &str) -> Result<(), Blocked> {
        let refuse = |rule: String, hint: String| {
            Err(Blocked {
                reason: crate::reason::ReasonCode::GeoBlocked,
                rule: rule.into(),
                message: self.message.clone(),
                hint,
            })
        };
        let Some(c) = country else {
            return match self.unknown {
                UnknownCountry::Allow => Ok(()),
                UnknownCountry::Deny => refuse(
                    "country:unknown".to_owned(),
                    format!(
                        "client {client} has no country in the GeoIP database, and the {place} country rules refuse addresses with no country"
                    ),
                ),
            };
        };
        if self.deny.contains(&c) {
            return refuse(
                format!("country:{c}"),
                format!("client {client} is in country {c}, which the {place} country rules deny"),
            );
        }
        if !self.allow.is_empty() && !self.allow.contains(&c) {
            let allowed: Vec<&str> = self.allow.iter().map(Country::as_str).collect();
            return refuse(
                format!("country:{c}"),
                format!(
                    "client {client} is in country {c}, which is not among the {place} allowed countries [{}]",
                    allowed.join(", ")
                ),
            );
        }
        Ok(())
    }
}

/// A named list, as the configuration declares it.
#[derive(Debug)]
pub struct IpList {
    /// Its name (the rule id in decisions and logs).
    pub name: Arc<str>,
    /// The addresses.
    pub set: IpSet,
    /// The client-facing message when it blocks.
    pub message: Option<String>,
}

/// Allow and deny lists at one place (global, or one route).
#[derive(Debug, Clone, Default)]
pub struct IpGate {
    /// Any match refuses.
    pub deny: Vec<Arc<IpList>>,
    /// When not empty, a client in none of these is refused.
    pub allow: Vec<Arc<IpList>>,
    /// Country rules, checked after the lists.
    pub countries: Option<CountryRules>,
}

/// Why a gate refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    /// `IpBlocked` or `GeoBlocked`.
    pub reason: crate::reason::ReasonCode,
    /// The list that decided (`ip-list:NAME`).
    pub rule: Arc<str>,
    /// The operator's message, if the list has one.
    pub message: Option<String>,
    /// For the operator.
    pub hint: String,
}

impl IpGate {
    /// Whether the gate has anything to check.
    pub fn is_empty(&self) -> bool {
        self.deny.is_empty() && self.allow.is_empty() && self.countries.is_none()
    }

    /// Check `client`, whose country is `country`: deny lists first, then
    /// the allow lists, then the country rules. `route` is the route whose
    /// gate this is (`None`: the global one); it is only written into the
    /// hint of a refusal.
    pub fn check(
        &self,
        client: IpAddr,
        country: Option<Country>,
        route: Option<&str>,
    ) -> Result<(), Blocked> {
        let place = || match route {
            Some(r) => format!("route \"{r}\""),
            None => "global".to_owned(),
        };
        if let Some(list) = self.deny.iter().find(|l| l.set.contains(client)) {
            return Err(Blocked {
                reason: crate::reason::ReasonCode::IpBlocked,
                rule: format!("ip-list:{}", list.name).into(),
                message: list.message.clone(),
                hint: format!(
                    "client {client} is in the deny list \"{}\" ({})",
                    list.name,
                    place()
                ),
            });
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|l| l.set.contains(client)) {
            let names: Vec<&str> = self.allow.iter().map(|l| &*l.name).collect();
            return Err(Blocked {
                reason: crate::reason::ReasonCode::IpBlocked,
                rule: format!("ip-list:{}", names.join(",")).into(),
                message: self.allow.iter().find_map(|l| l.message.clone()),
                hint: format!(
                    "client {client} is in none of the allow lists [{}] ({})",
                    names.join(", "),
                    place()
                ),
            });
        }
        match &self.countries {
            Some(rules) => rules.check(client, country, &place()),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set(nets: &[&str]) -> IpSet {
        IpSet::new(nets.iter().map(|n| n.parse::<IpNet>().unwrap()))
    }

    #[test]
    fn v4_and_v6_membership() {
        let s = set(&[
            "203.0.113.0/24",
            "2001:db8:bad::/48",
            "192.0.2.7/32",
            "::ffff:198.51.100.0/120",
        ]);
        for yes in [
            "203.0.113.0",
            "203.0.113.255",
            "192.0.2.7",
            "2001:db8:bad::1",
            "2001:db8:bad:ffff::",
            "::ffff:203.0.113.9",
            "198.51.100.3",
        ] {
            assert!(s.contains(yes.parse().unwrap()), "{yes}");
        }
        for no in [
            "203.0.112.255",
            "203.0.114.0",
            "192.0.2.8",
            "2001:db8:bae::",
            "2001:db8:bac:ffff::",
            "0.0.0.0",
            "::",
        ] {
            assert!(!s.contains(no.parse().unwrap()), "{no}");
        }
    }

    #[test]
    fn overlapping_and_adjacent_ranges_merge() {
        let s = set(&[
            "10.0.0.0/24",
            "10.0.1.0/24",
            "10.0.0.128/25",
            "0.0.0.0/0",
            "255.255.255.255/32",
        ]);
        assert_eq!(s.ranges(), 1);
        assert!(s.contains("255.255.255.255".parse().unwrap()));
        // Adjacent ranges merge; ranges with a gap between them do not.
        assert_eq!(set(&["10.0.0.0/24", "10.0.1.0/24"]).ranges(), 1);
        assert_eq!(set(&["10.0.0.0/24", "10.0.2.0/24"]).ranges(), 2);
        assert_eq!(set(&["2001:db8::/33", "2001:db8:8000::/33"]).ranges(), 1);
    }

    fn rules(deny: &[&str], allow: &[&str], unknown: UnknownCountry) -> IpGate {
        let codes = |c: &[&str]| c.iter().map(|c| Country::parse(c).unwrap()).collect();
        IpGate {
            countries: Some(CountryRules {
                deny: codes(deny),
                allow: codes(allow),
                unknown,
                message: None,
            }),
            ..IpGate::default()
        }
    }

    fn verdict(gate: &IpGate, ip: &str, country: Option<&str>) -> Result<(), (String, String)> {
        gate.check(
            ip.parse().unwrap(),
            country.map(|c| Country::parse(c).unwrap()),
            None,
        )
        .map_err(|b| (b.reason.info().code.to_owned(), b.rule.to_string()))
    }

    #[test]
    fn country_codes_are_two_letters_in_either_case() {
        assert_eq!(Country::parse("fr").unwrap().as_str(), "FR");
        for bad in ["", "F", "FRA", "F1", "ÉT", "--"] {
            assert!(Country::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn country_deny_rules_refuse_listed_countries_and_let_unknown_pass() {
        let gate = rules(&["RU", "KP"], &[], UnknownCountry::Allow);
        let blocked = Err(("GeoBlocked".to_owned(), "country:RU".to_owned()));
        assert_eq!(verdict(&gate, "192.0.2.1", Some("RU")), blocked);
        assert_eq!(verdict(&gate, "2001:db8::1", Some("RU")), blocked);
        assert_eq!(verdict(&gate, "192.0.2.1", Some("FR")), Ok(()));
        assert_eq!(verdict(&gate, "192.0.2.1", None), Ok(()));
    }

    #[test]
    fn country_allow_rules_refuse_every_other_country_and_unknown_follows_its_setting() {
        let gate = rules(&[], &["FR", "DE"], UnknownCountry::Deny);
        assert_eq!(verdict(&gate, "2001:db8::1", Some("DE")), Ok(()));
        assert_eq!(
            verdict(&gate, "2001:db8::1", Some("US")),
            Err(("GeoBlocked".to_owned(), "country:US".to_owned()))
        );
        assert_eq!(
            verdict(&gate, "10.0.0.1", None),
            Err(("GeoBlocked".to_owned(), "country:unknown".to_owned()))
        );
        let lenient = rules(&[], &["FR"], UnknownCountry::Allow);
        assert_eq!(verdict(&lenient, "10.0.0.1", None), Ok(()));
    }

    #[test]
    fn ip_lists_decide_before_country_rules() {
        let mut gate = rules(&["RU"], &[], UnknownCountry::Allow);
        gate.deny.push(Arc::new(IpList {
            name: "bad".into(),
            set: set(&["192.0.2.0/24"]),
            message: None,
        }));
        assert_eq!(
            verdict(&gate, "192.0.2.9", Some("RU")),
            Err(("IpBlocked".to_owned(), "ip-list:bad".to_owned()))
        );
    }

    proptest! {
        #[test]
        fn agrees_with_a_naive_scan(nets in prop::collection::vec((any::<u32>(), 8u8..=32), 0..40), probes in prop::collection::vec(any::<u32>(), 50)) {
            let nets: Vec<IpNet> = nets.into_iter().map(|(a, p)| IpNet::new(std::net::Ipv4Addr::from(a).into(), p).unwrap()).collect();
            let s = IpSet::new(nets.clone());
            for p in probes.into_iter().chain(nets.iter().map(|n| match n.network() { IpAddr::V4(a) => u32::from(a), IpAddr::V6(_) => 0 })) {
                let ip = IpAddr::from(std::net::Ipv4Addr::from(p));
                prop_assert_eq!(s.contains(ip), nets.iter().any(|n| n.contains(&ip)));
            }
        }
    }

    proptest! {
        /// IPv4-mapped networks and probes, which random IPv6 values almost
        /// never are: they count as the IPv4 they map.
        #[test]
        fn mapped_networks_and_addresses_agree_with_ipv4(
            nets in prop::collection::vec((any::<u32>(), 96u8..=128), 1..20),
            probes in prop::collection::vec(any::<u32>(), 40),
        ) {
            let mapped = |a: u32| std::net::Ipv6Addr::from(0xffff_0000_0000u128 | u128::from(a));
            let v6: Vec<IpNet> = nets.iter().map(|&(a, p)| IpNet::new(mapped(a).into(), p).unwrap()).collect();
            let v4: Vec<IpNet> = nets.iter().map(|&(a, p)| IpNet::new(std::net::Ipv4Addr::from(a).into(), p - 96).unwrap()).collect();
            let (s6, s4) = (IpSet::new(v6), IpSet::new(v4.clone()));
            let starts = v4.iter().map(|n| match n.network() {
                IpAddr::V4(a) => u32::from(a),
                IpAddr::V6(_) => 0,
            });
            for p in probes.into_iter().chain(starts) {
                let plain = IpAddr::from(std::net::Ipv4Addr::from(p));
                let naive = v4.iter().any(|n| n.contains(&plain));
                prop_assert_eq!(s6.contains(plain), naive);
                prop_assert_eq!(s6.contains(IpAddr::from(mapped(p))), naive);
                prop_assert_eq!(s4.contains(IpAddr::from(mapped(p))), naive);
            }
        }
    }

    proptest! {
        #[test]
        fn v6_and_mapped_sets_agree_with_a_naive_scan(
            nets in prop::collection::vec((any::<u128>(), 0u8..=128), 0..30),
            probes in prop::collection::vec(any::<u128>(), 40),
        ) {
            let nets: Vec<IpNet> = nets
                .into_iter()
                .map(|(a, p)| IpNet::new(std::net::Ipv6Addr::from(a).into(), p).unwrap())
                .collect();
            let s = IpSet::new(nets.clone());
            let starts = nets.iter().map(|n| match n.network() {
                IpAddr::V6(a) => u128::from(a),
                IpAddr::V4(_) => 0,
            });
            for p in probes.into_iter().chain(starts) {
                let ip = IpAddr::from(std::net::Ipv6Addr::from(p));
                // The naive scan compares canonically, as lookups do.
                let naive = nets.iter().any(|n| {
                    n.contains(&ip) && (ip.to_canonical().is_ipv6() || n.prefix_len() >= 96)
                });
                prop_assert_eq!(s.contains(ip), naive, "{}", ip);
            }
        }
    }
}
