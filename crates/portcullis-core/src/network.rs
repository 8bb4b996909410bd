//! Stage 3: network gates. IP allow and deny lists, global or per route,
//! each a set of CIDRs compiled into sorted, merged address ranges so that
//! a lookup is two binary searches whatever the list's size.

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
            match net.trunc() {
                IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.broadcast()))),
                IpNet::V6(n) => match (n.network().to_ipv4_mapped(), n.prefix_len()) {
                    (Some(a), p) if p >= 96 => {
                        let start = u32::from(a);
                        let end = n.broadcast().to_ipv4_mapped().map_or(start, u32::from);
                        v4.push((start, end));
                    }
                    _ => v6.push((u128::from(n.network()), u128::from(n.broadcast()))),
                },
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
}

/// Why a gate refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
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
        self.deny.is_empty() && self.allow.is_empty()
    }

    /// Check `client`; deny lists first, then the allow lists. `route` is
    /// the route whose gate this is (`None`: the global one); it is only
    /// written into the hint of a refusal.
    pub fn check(&self, client: IpAddr, route: Option<&str>) -> Result<(), Blocked> {
        let place = || match route {
            Some(r) => format!("route \"{r}\""),
            None => "global".to_owned(),
        };
        if let Some(list) = self.deny.iter().find(|l| l.set.contains(client)) {
            return Err(Blocked {
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
                rule: format!("ip-list:{}", names.join(",")).into(),
                message: self.allow.iter().find_map(|l| l.message.clone()),
                hint: format!(
                    "client {client} is in none of the allow lists [{}] ({})",
                    names.join(", "),
                    place()
                ),
            });
        }
        Ok(())
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
