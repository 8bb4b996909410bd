//! Timed bans, the stateful half (stage 3 and its escalation). The engine
//! writes the keys a request is looked up under; [`BanBook::check`] finds a
//! ban in force on any of them and replaces the decision with 403 `Banned`,
//! the ban's end in the body and in `Retry-After`. After the response,
//! [`BanBook::strike`] counts it against every escalation rule its status
//! matches, which may start a ban. Shared by `serve`, `portcullis test`
//! (in memory, in case order) and `portcullis ban`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use portcullis_config::LimitStore;
use portcullis_core::bans::Bans;
use portcullis_core::decision::{Denial, Expiry};
use portcullis_core::{Decision, Face, ReasonCode, Stage};
use portcullis_limit::bans::{Ban, Escalation, MemoryBans};
use portcullis_limit::{RedisStore, StoreError};

use crate::limits::StoreErrors;
use crate::serve::log::rfc3339;

/// Where bans are kept.
#[derive(Debug)]
enum Store {
    Memory(MemoryBans),
    Redis(Box<RedisStore>),
}

/// Bans in force and strike counts: in memory, or shared through Redis
/// (the `[rate_limit_store]` server, under `[bans] key_prefix`).
#[derive(Debug)]
pub struct BanBook {
    store: Store,
    /// Lookups and strikes the store could not answer.
    pub store_errors: StoreErrors,
    /// Bans started by escalation rules.
    pub started: AtomicU64,
}

impl BanBook {
    /// A book in this process.
    pub fn in_memory(max_keys: usize) -> Self {
        BanBook::with(Store::Memory(MemoryBans::new(max_keys)))
    }

    /// The book the configuration asks for: in Redis when the rate limits
    /// are counted there, else in memory.
    pub fn configured(store: &LimitStore, key_prefix: &str) -> Result<Self, String> {
        Ok(BanBook::with(match store {
            LimitStore::Memory { max_keys } => Store::Memory(MemoryBans::new(*max_keys)),
            LimitStore::Redis { url, timeout, .. } => Store::Redis(Box::new(
                RedisStore::new(url, key_prefix, *timeout).map_err(|e| e.to_string())?,
            )),
        }))
    }

    fn with(store: Store) -> Self {
        BanBook {
            store,
            store_errors: StoreErrors::new("ban"),
            started: AtomicU64::new(0),
        }
    }

    /// Whether the bans live in Redis (shared) rather than this process.
    pub fn is_shared(&self) -> bool {
        matches!(self.store, Store::Redis(_))
    }

    /// Look `d`'s ban keys up at `now_ms`; refuse it if one is banned (or,
    /// fail-closed, if the store cannot say). Returns whether it refused.
    pub async fn check(&self, bans: &Bans, d: &mut Decision, now_ms: u64) -> bool {
        if d.ban_keys.is_empty() {
            return false;
        }
        let found = match &self.store {
            Store::Memory(m) => Ok(m.find(&d.ban_keys, now_ms)),
            Store::Redis(r) => r.find_ban(&d.ban_keys, now_ms).await,
        };
        self.settle(bans, d, found, now_ms)
    }

    /// [`BanBook::check`] outside a runtime, for the offline commands: a
    /// shared store is asked through a runtime of its own, so `explain`
    /// shows a ban in force on every instance.
    pub fn check_offline(&self, bans: &Bans, d: &mut Decision, now_ms: u64) -> bool {
        if d.ban_keys.is_empty() {
            return false;
        }
        let found = match &self.store {
            Store::Memory(m) => Ok(m.find(&d.ban_keys, now_ms)),
            Store::Redis(r) => match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(r.find_ban(&d.ban_keys, now_ms)),
                Err(e) => Err(StoreError(format!("no runtime to reach redis: {e}"))),
            },
        };
        self.settle(bans, d, found, now_ms)
    }

    fn settle(
        &self,
        bans: &Bans,
        d: &mut Decision,
        found: Result<Option<Ban>, StoreError>,
        now_ms: u64,
    ) -> bool {
        let denial = match found {
            Ok(None) => return false,
            Ok(Some(ban)) => banned(bans, d, &ban, now_ms),
            Err(e) => {
                self.store_errors.record(&e, now_ms);
                if bans.fail_open {
                    return false;
                }
                let reason = ReasonCode::RateLimiterUnavailable;
                Denial {
                    reason,
                    stage: Stage::Network,
                    face: Face::of(reason),
                    concealed: None,
                    policies: vec!["bans".into()],
                    hint: format!(
                        "bans are fail-closed ([bans] on_store_error = \"closed\") and their store could not be reached: {e}"
                    ),
                }
            }
        };
        // Stage 3 decided: the rate limits of stage 4 are not counted.
        d.limits.clear();
        d.refuse_at_front_door(denial);
        true
    }

    /// Count the response `status` to `d` against the escalation rules;
    /// the bans it started.
    pub async fn strike(&self, bans: &Bans, d: &Decision, status: u16, now_ms: u64) -> Vec<Ban> {
        let mut started = Vec::new();
        for (rule, key) in strikes(bans, d, status) {
            let e = escalation(&rule);
            let result = match &self.store {
                Store::Memory(m) => Ok(m.strike(&rule.name, &key, now_ms, e)),
                Store::Redis(r) => r.strike(&rule.name, &key, now_ms, e).await,
            };
            match result {
                Ok(Some(ban)) => started.push(ban),
                Ok(None) => {}
                Err(e) => self.store_errors.record(&e, now_ms),
            }
        }
        self.started
            .fetch_add(started.len() as u64, Ordering::Relaxed);
        started
    }

    /// [`BanBook::strike`] without a runtime, for the offline commands.
    pub fn strike_offline(&self, bans: &Bans, d: &Decision, status: u16, now_ms: u64) -> Vec<Ban> {
        let Store::Memory(m) = &self.store else {
            return Vec::new();
        };
        strikes(bans, d, status)
            .into_iter()
            .filter_map(|(rule, key)| m.strike(&rule.name, &key, now_ms, escalation(&rule)))
            .collect()
    }

    /// Every ban in force.
    pub async fn list(&self, now_ms: u64) -> Result<Vec<Ban>, StoreError> {
        match &self.store {
            Store::Memory(m) => Ok(m.list(now_ms)),
            Store::Redis(r) => r.list_bans(now_ms).await,
        }
    }

    /// Ban `key` for `duration` by hand; the ban in force afterwards.
    pub async fn add(
        &self,
        key: &str,
        duration: Duration,
        by: &str,
        now_ms: u64,
    ) -> Result<Ban, StoreError> {
        let until = now_ms.saturating_add(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX));
        let until_ms = match &self.store {
            Store::Memory(m) => m.put(key, until, by, now_ms).map_or(until, |b| b.until_ms),
            Store::Redis(r) => r.put_ban(key, until, by, now_ms).await?,
        };
        let found = match &self.store {
            Store::Memory(m) => m.find(&[key.to_owned()], now_ms),
            Store::Redis(r) => r.find_ban(&[key.to_owned()], now_ms).await?,
        };
        Ok(found.unwrap_or(Ban {
            key: key.to_owned(),
            until_ms,
            by: by.into(),
        }))
    }

    /// Lift the ban on `key`; whether there was one.
    pub async fn remove(&self, key: &str, now_ms: u64) -> Result<bool, StoreError> {
        match &self.store {
            Store::Memory(m) => Ok(m.remove(key, now_ms)),
            Store::Redis(r) => r.remove_ban(key).await,
        }
    }
}

/// The escalation rules a response counts against. A refusal by a ban is
/// not a strike (the ban is already running), and neither is a request
/// refused before the ban lookup (it has no ban keys).
fn strikes(
    bans: &Bans,
    d: &Decision,
    status: u16,
) -> Vec<(std::sync::Arc<portcullis_core::bans::BanRule>, String)> {
    let Some(client) = d.client else {
        return Vec::new();
    };
    if d.ban_keys.is_empty() || d.denial().is_some_and(|x| x.reason == ReasonCode::Banned) {
        return Vec::new();
    }
    bans.strikes(client, status, d.route.as_ref().map(|r| &*r.name))
}

fn escalation(rule: &portcullis_core::bans::BanRule) -> Escalation {
    Escalation {
        more_than: rule.more_than,
        within_ms: rule.within_ms,
        ban_ms: rule.ban_ms,
    }
}

/// The refusal of a banned client.
fn banned(bans: &Bans, d: &Decision, ban: &Ban, now_ms: u64) -> Denial {
    let reason = ReasonCode::Banned;
    let mut face = Face::of(reason);
    if let Some(m) = &bans.message {
        face.message.clone_from(m);
    }
    let left_ms = ban.until_ms.saturating_sub(now_ms);
    let at = rfc3339(Duration::from_millis(ban.until_ms));
    face.expires = Some(Expiry {
        at: at.clone(),
        retry_after_s: left_ms.div_ceil(1000).max(1),
    });
    let client = d.client.map(|c| c.to_string()).unwrap_or_default();
    let manual = ban.by.starts_with(MANUAL);
    let by = if manual {
        format!("a ban added by hand ({})", ban.by)
    } else {
        format!("ban rule \"{}\"", ban.by)
    };
    Denial {
        reason,
        stage: Stage::Network,
        face,
        concealed: None,
        policies: vec![if manual {
            MANUAL_RULE.into()
        } else {
            format!("ban:{}", ban.by).into()
        }],
        hint: format!(
            "client {client} is banned under key {} by {by} until {at} ({} s from now); lift it with `portcullis ban remove {}`",
            ban.key,
            left_ms.div_ceil(1000),
            ban.key
        ),
    }
}

/// Who a ban added by hand is by: `manual`, or `manual: REASON`. Rule
/// names starting with `manual` are refused at load, so the two never mix.
pub fn manual_by(reason: Option<&str>) -> String {
    match reason.map(str::trim).filter(|r| !r.is_empty()) {
        Some(r) => format!("{MANUAL}: {r}"),
        None => MANUAL.to_owned(),
    }
}

pub use portcullis_core::bans::{MANUAL, MANUAL_RULE};

/// What `portcullis ban add|remove` and the admin API name: an address
/// (`203.0.113.7` or `ip:203.0.113.7`) or a network (`203.0.113.0/24` or
/// `net:…`) whose prefix length some escalation rule bans by (the only
/// networks requests are looked up under). Returns the ban key.
pub fn parse_target(s: &str, bans: Option<&Bans>) -> Result<String, String> {
    use portcullis_core::bans::BanKey;
    let s = s.trim();
    let bare = s
        .strip_prefix("ip:")
        .or_else(|| s.strip_prefix("net:"))
        .unwrap_or(s);
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        if s.starts_with("net:") {
            return Err(format!(
                "{s:?}: a network is written with its prefix length, such as net:203.0.113.0/24"
            ));
        }
        return Ok(BanKey::Ip.of(ip));
    }
    let net: ipnet::IpNet = bare.parse().map(portcullis_core::network::canonical_net).map_err(|_| {
        format!("{s:?} is neither an address nor a network (write 203.0.113.7, 2001:db8::1 or 203.0.113.0/24)")
    })?;
    if s.starts_with("ip:") {
        return Err(format!(
            "{s:?}: an ip: key names one address; write a network as net:{bare}"
        ));
    }
    let in_use: Vec<BanKey> = bans.map(|b| b.prefixes().to_vec()).unwrap_or_default();
    let len = net.prefix_len();
    let usable = in_use.iter().any(|k| match (k, net) {
        (BanKey::IpPrefix { v4, .. }, ipnet::IpNet::V4(_)) => *v4 == len,
        (BanKey::IpPrefix { v6, .. }, ipnet::IpNet::V6(_)) => *v6 == len,
        (BanKey::Ip, _) => false,
    });
    if !usable {
        let lens: Vec<String> = in_use
            .iter()
            .filter_map(|k| match k {
                BanKey::IpPrefix { v4, v6 } => Some(format!("/{v4} (IPv4), /{v6} (IPv6)")),
                BanKey::Ip => None,
            })
            .collect();
        return Err(if lens.is_empty() {
            format!(
                "{s}: requests are looked up by address only (no ban rule has key = \"ip_prefix\"); ban single addresses, or use an IP deny list"
            )
        } else {
            format!(
                "{s}: requests are looked up under networks of {} only",
                lens.join(", ")
            )
        });
    }
    Ok(format!("net:{}", net.trunc()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_core::bans::{BanKey, BanRule};

    fn bans() -> Bans {
        Bans::new(
            vec![std::sync::Arc::new(BanRule {
                name: "r".into(),
                statuses: vec![401],
                more_than: 1,
                within_ms: 1_000,
                ban_ms: 1_000,
                key: BanKey::IpPrefix { v4: 24, v6: 64 },
                routes: Vec::new(),
            })],
            None,
            true,
        )
    }

    #[test]
    fn targets_name_the_keys_requests_are_looked_up_under() {
        let b = bans();
        let key = |t: &str| parse_target(t, Some(&b));
        assert_eq!(key("203.0.113.7").unwrap(), "ip:203.0.113.7");
        assert_eq!(key("ip:::ffff:203.0.113.7").unwrap(), "ip:203.0.113.7");
        assert_eq!(key("203.0.113.9/24").unwrap(), "net:203.0.113.0/24");
        // An IPv4-mapped network is the IPv4 network a request maps to.
        assert_eq!(
            key("net:::ffff:203.0.113.0/120").unwrap(),
            "net:203.0.113.0/24"
        );
        assert_eq!(key("2001:db8::/64").unwrap(), "net:2001:db8::/64");
        assert_eq!(
            key("net:203.0.113.0/24").unwrap(),
            b.keys("203.0.113.200".parse().unwrap())[1]
        );
        for bad in ["10.0.0.0/8", "net:203.0.113.7", "ip:203.0.113.0/24", "nope"] {
            assert!(key(bad).is_err(), "{bad}");
        }
    }
}
