//! Stage two for the network gates: named IP lists (inline CIDRs and list
//! files) compiled into address sets, and the global and per-route gates
//! that name them and hold country rules. A bad entry fails the load with
//! its file and line.

use std::collections::HashMap;
use std::sync::Arc;

use ipnet::IpNet;
use portcullis_core::network::{IpGate, IpList, IpSet};
use toml::Spanned;

use super::Ctx;
use super::geo::{self, RawRules};
use crate::diag::{ConfigError, Source};
use crate::raw::{RawConfig, RawIpList};

/// At most this many bad lines are reported per file.
const MAX_ERRORS_PER_FILE: usize = 10;

/// The global gate and one gate per route, in route order. Country rules
/// need the country database (`have_db`).
pub(crate) fn compile(
    ctx: &Ctx,
    raw: &RawConfig,
    have_db: bool,
) -> Result<(IpGate, Vec<IpGate>), Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut lists = HashMap::new();
    for (name, list) in &raw.ip_lists {
        if let Some(l) = one_list(ctx, name, list, &mut errors) {
            lists.insert(name.as_str(), Arc::new(l));
        }
    }
    // A list that failed is declared: naming it is not a second error.
    let declared: Vec<&str> = raw.ip_lists.keys().map(String::as_str).collect();
    let mut gate = |deny: &[Spanned<String>], allow: &[Spanned<String>], countries| IpGate {
        deny: names(ctx, &lists, &declared, deny, &mut errors),
        allow: names(ctx, &lists, &declared, allow, &mut errors),
        countries: geo::rules(ctx, &countries, have_db, &mut errors),
    };
    let global = raw
        .network
        .as_ref()
        .map(|n| {
            let at = n.span();
            let n = n.get_ref();
            let countries = RawRules {
                at,
                deny: &n.deny_countries,
                allow: &n.allow_countries,
                unknown: n.unknown_country.as_ref(),
                message: n.country_message.as_ref(),
            };
            gate(&n.deny, &n.allow, countries)
        })
        .unwrap_or_default();
    let per_route = raw
        .routes
        .iter()
        .map(|r| {
            let at = r.span();
            let r = r.get_ref();
            let countries = RawRules {
                at,
                deny: &r.deny_countries,
                allow: &r.allow_countries,
                unknown: r.unknown_country.as_ref(),
                message: r.country_message.as_ref(),
            };
            gate(&r.ip_deny, &r.ip_allow, countries)
        })
        .collect();
    if errors.is_empty() {
        Ok((global, per_route))
    } else {
        Err(errors)
    }
}

fn names(
    ctx: &Ctx,
    lists: &HashMap<&str, Arc<IpList>>,
    declared: &[&str],
    wanted: &[Spanned<String>],
    errors: &mut Vec<ConfigError>,
) -> Vec<Arc<IpList>> {
    wanted
        .iter()
        .filter_map(|w| match lists.get(w.get_ref().as_str()) {
            Some(l) => Some(Arc::clone(l)),
            None if declared.contains(&w.get_ref().as_str()) => None,
            None => {
                let help = if declared.is_empty() {
                    "declare it with [ip_lists.NAME] (none are declared)".to_owned()
                } else {
                    format!("declared with [ip_lists.NAME]: {}", declared.join(", "))
                };
                errors.push(
                    ctx.err(w.span(), format!("no IP list is named {:?}", w.get_ref()))
                        .help(help),
                );
                None
            }
        })
        .collect()
}

fn one_list(
    ctx: &Ctx,
    name: &str,
    raw: &Spanned<RawIpList>,
    errors: &mut Vec<ConfigError>,
) -> Option<IpList> {
    let r = raw.get_ref();
    let before = errors.len();
    let mut nets = Vec::new();
    for c in &r.cidrs {
        match parse_entry(c.get_ref()) {
            Some(n) => nets.push(n),
            None => errors.push(bad_entry(ctx.err(c.span(), entry_message(c.get_ref())))),
        }
    }
    for f in &r.files {
        match ctx.read(f) {
            Ok((_, src)) => read_list(&src, &mut nets, errors),
            Err(e) => errors.push(e),
        }
    }
    if r.cidrs.is_empty() && r.files.is_empty() {
        errors.push(ctx.err(
            raw.span(),
            format!("IP list {name:?} has no cidrs and no files"),
        ));
    }
    (errors.len() == before).then(|| IpList {
        name: name.into(),
        set: IpSet::new(nets),
        message: r.message.clone(),
    })
}

/// One entry a line; `#` starts a comment; blank lines are skipped.
fn read_list(src: &Source, nets: &mut Vec<IpNet>, errors: &mut Vec<ConfigError>) {
    let mut bad = 0;
    let mut offset = 0;
    for line in src.text.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        let content = line.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        match parse_entry(content) {
            Some(n) => nets.push(n),
            None => {
                bad += 1;
                if bad <= MAX_ERRORS_PER_FILE {
                    let col = line.find(content).unwrap_or(0);
                    let span = start + col..start + col + content.len();
                    errors.push(bad_entry(ConfigError::at(
                        src,
                        span,
                        entry_message(content),
                    )));
                }
            }
        }
    }
    if bad > MAX_ERRORS_PER_FILE {
        let more = bad - MAX_ERRORS_PER_FILE;
        errors.push(ConfigError::at(
            src,
            src.text.len()..src.text.len(),
            format!("and {more} more bad lines in this file"),
        ));
    }
}

fn entry_message(entry: &str) -> String {
    let shown: String = entry.chars().take(60).collect();
    format!("{shown:?} is not an IP address or CIDR")
}

fn bad_entry(e: ConfigError) -> ConfigError {
    e.help("write one address or CIDR, such as 203.0.113.0/24 or 2001:db8::/32")
}

/// An address or CIDR, written canonically enough for `std` (no leading
/// zeros, no octal or hex); host bits below the prefix are dropped.
pub(crate) fn parse_entry(s: &str) -> Option<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(IpNet::from))
        .map(|n| n.trunc())
}
