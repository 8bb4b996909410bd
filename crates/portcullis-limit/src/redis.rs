//! The Redis store: limits shared by every gateway instance. Each check is
//! one Lua script, run atomically by Redis, that performs the same step as
//! [`crate::gcra`]; the script returns the state it found, and the step is
//! recomputed here from it, so both stores share one definition of the
//! answer. The connection is multiplexed and reconnects on its own; a
//! store that cannot be reached is an error the caller turns into its
//! configured mode (fail open or closed). Redis coming back needs no
//! restart.

use std::sync::Mutex;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::bans::{Ban, Escalation};
use crate::{Quota, Step, gcra};

/// The GCRA step in Lua. KEYS[1] the key; ARGV now, interval, window (ms).
/// Returns the stored state it found (-1 for none or expired).
const SCRIPT: &str = r"
local stored = tonumber(redis.call('GET', KEYS[1]))
local now = tonumber(ARGV[1])
local t = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
if stored and stored <= now then stored = nil end
local tat = stored or now
local new_tat = tat + t
if new_tat - now <= window then
  redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', string.format('%d', new_tat - now))
end
return stored or -1
";

/// One strike (see [`crate::bans::strike`]). KEYS[1] the count, KEYS[2]
/// the ban; ARGV now, within, more_than, ban_ms, the rule. The count is
/// stored as "count ends_ms", the ban as "until_ms by". Returns the end of
/// the ban in force after the strike, 0 when none started.
const STRIKE: &str = r"
local now = tonumber(ARGV[1])
local count, ends = 0, now + tonumber(ARGV[2])
local v = redis.call('GET', KEYS[1])
if v then
  local c, e = string.match(v, '^(%d+) (%d+)$')
  if c and tonumber(e) > now then count = tonumber(c); ends = tonumber(e) end
end
count = count + 1
if count > tonumber(ARGV[3]) then
  redis.call('DEL', KEYS[1])
  local until_ms = now + tonumber(ARGV[4])
  local cur = redis.call('GET', KEYS[2])
  local cur_until = cur and tonumber(string.match(cur, '^(%d+)')) or 0
  if cur_until >= until_ms then return cur_until end
  redis.call('SET', KEYS[2], string.format('%d', until_ms) .. ' ' .. ARGV[5], 'PX', ARGV[4])
  return until_ms
end
redis.call('SET', KEYS[1], string.format('%d %d', count, ends), 'PX', string.format('%d', ends - now))
return 0
";

/// A ban by hand. KEYS[1] the ban; ARGV now, until_ms, by. A ban that ends
/// later stays. Returns the end of the ban in force.
const PUT: &str = r"
local now = tonumber(ARGV[1])
local until_ms = tonumber(ARGV[2])
local cur = redis.call('GET', KEYS[1])
local cur_until = cur and tonumber(string.match(cur, '^(%d+)')) or 0
if cur_until >= until_ms then return cur_until end
redis.call('SET', KEYS[1], ARGV[2] .. ' ' .. ARGV[3], 'PX', string.format('%d', until_ms - now))
return until_ms
";

/// Why the store could not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// GCRA state in Redis.
pub struct RedisStore {
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
    last_failure: Mutex<Option<Instant>>,
    script: redis::Script,
    strike: redis::Script,
    put: redis::Script,
    prefix: String,
    timeout: Duration,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("connected", &self.conn.initialized())
            .finish_non_exhaustive()
    }
}

/// After a failed connection attempt, requests fail fast for this long
/// instead of each waiting for its own attempt.
const RETRY_AFTER: Duration = Duration::from_millis(500);

impl RedisStore {
    /// A store at `url` (`redis://host:port/db`); nothing is connected yet.
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> Result<Self, StoreError> {
        // The URL may hold a password: it is never repeated in an error.
        let client = redis::Client::open(url)
            .map_err(|e| StoreError(format!("the Redis URL is invalid: {e}")))?;
        Ok(RedisStore {
            client,
            conn: OnceCell::new(),
            last_failure: Mutex::new(None),
            script: redis::Script::new(SCRIPT),
            strike: redis::Script::new(STRIKE),
            put: redis::Script::new(PUT),
            prefix: prefix.to_owned(),
            timeout,
        })
    }

    async fn connection(&self) -> Result<ConnectionManager, StoreError> {
        if let Some(c) = self.conn.get() {
            return Ok(c.clone());
        }
        let recent = self
            .last_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some_and(|at| at.elapsed() < RETRY_AFTER);
        if recent {
            return Err(StoreError("redis is unreachable (retrying shortly)".into()));
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout)
            .set_number_of_retries(1)
            .set_max_delay(500);
        let made = tokio::time::timeout(
            self.timeout * 2,
            self.conn
                .get_or_try_init(|| self.client.get_connection_manager_with_config(config)),
        )
        .await;
        match made {
            Ok(Ok(c)) => Ok(c.clone()),
            Ok(Err(e)) => Err(self.failed(format!("cannot connect to redis: {e}"))),
            Err(_) => Err(self.failed("connecting to redis timed out".into())),
        }
    }

    fn failed(&self, why: String) -> StoreError {
        *self
            .last_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
        StoreError(why)
    }

    /// One step for `key` at `now_ms`, atomically in Redis.
    pub async fn check(&self, key: &str, now_ms: u64, q: Quota) -> Result<Step, StoreError> {
        let mut conn = self.connection().await?;
        let t = q.interval_ms();
        let window = t.saturating_mul(u64::from(q.limit.max(1)));
        let mut invocation = self.script.key(format!("{}{key}", self.prefix));
        invocation.arg(now_ms).arg(t).arg(window);
        let stored: i64 = tokio::time::timeout(self.timeout, invocation.invoke_async(&mut conn))
            .await
            .map_err(|_| StoreError("redis did not answer in time".into()))?
            .map_err(|e| StoreError(format!("redis: {e}")))?;
        let stored = u64::try_from(stored).ok();
        Ok(gcra(stored, now_ms, q))
    }

    async fn answer<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        tokio::time::timeout(self.timeout, f)
            .await
            .map_err(|_| StoreError("redis did not answer in time".into()))?
            .map_err(|e| StoreError(format!("redis: {e}")))
    }

    fn ban_key(&self, key: &str) -> String {
        format!("{}b:{key}", self.prefix)
    }

    /// The longest ban in force on any of `keys` at `now_ms`.
    pub async fn find_ban(&self, keys: &[String], now_ms: u64) -> Result<Option<Ban>, StoreError> {
        if keys.is_empty() {
            return Ok(None);
        }
        let mut conn = self.connection().await?;
        let full: Vec<String> = keys.iter().map(|k| self.ban_key(k)).collect();
        let mut cmd = redis::cmd("MGET");
        cmd.arg(&full);
        let values: Vec<Option<String>> = self.answer(cmd.query_async(&mut conn)).await?;
        Ok(keys
            .iter()
            .zip(values)
            .filter_map(|(k, v)| parse_ban(k, v.as_deref()?))
            .filter(|b| b.until_ms > now_ms)
            .max_by_key(|b| b.until_ms))
    }

    /// One strike of `rule` against `key`; the ban in force if it started one.
    pub async fn strike(
        &self,
        rule: &str,
        key: &str,
        now_ms: u64,
        e: Escalation,
    ) -> Result<Option<Ban>, StoreError> {
        let mut conn = self.connection().await?;
        let mut inv = self.strike.key(format!("{}s:{rule}|{key}", self.prefix));
        inv.key(self.ban_key(key))
            .arg(now_ms)
            .arg(e.within_ms)
            .arg(e.more_than)
            .arg(e.ban_ms)
            .arg(rule);
        let until: u64 = self.answer(inv.invoke_async(&mut conn)).await?;
        Ok((until > 0).then(|| Ban {
            key: key.to_owned(),
            until_ms: until,
            by: rule.into(),
        }))
    }

    /// Ban `key` until `until_ms` by hand (a ban that ends later stays);
    /// when the ban in force ends.
    pub async fn put_ban(
        &self,
        key: &str,
        until_ms: u64,
        by: &str,
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        let mut conn = self.connection().await?;
        let mut inv = self.put.key(self.ban_key(key));
        inv.arg(now_ms).arg(until_ms).arg(by);
        self.answer(inv.invoke_async(&mut conn)).await
    }

    /// Lift the ban on `key`; whether there was one.
    pub async fn remove_ban(&self, key: &str) -> Result<bool, StoreError> {
        let mut conn = self.connection().await?;
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.ban_key(key));
        let n: u64 = self.answer(cmd.query_async(&mut conn)).await?;
        Ok(n > 0)
    }

    /// Every ban in force, soonest ending first.
    pub async fn list_bans(&self, now_ms: u64) -> Result<Vec<Ban>, StoreError> {
        let mut conn = self.connection().await?;
        let head = self.ban_key("");
        let pattern = format!("{}*", glob_escape(&head));
        let mut cursor: u64 = 0;
        let mut names: Vec<String> = Vec::new();
        loop {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000);
            let (next, batch): (u64, Vec<String>) = self.answer(cmd.query_async(&mut conn)).await?;
            names.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        names.sort();
        names.dedup();
        let mut out = Vec::new();
        for chunk in names.chunks(500) {
            let mut cmd = redis::cmd("MGET");
            cmd.arg(chunk);
            let values: Vec<Option<String>> = self.answer(cmd.query_async(&mut conn)).await?;
            for (name, v) in chunk.iter().zip(values) {
                let key = name.strip_prefix(&head).unwrap_or(name);
                if let Some(b) = v.as_deref().and_then(|v| parse_ban(key, v))
                    && b.until_ms > now_ms
                {
                    out.push(b);
                }
            }
        }
        out.sort_by(|a, b| a.until_ms.cmp(&b.until_ms).then(a.key.cmp(&b.key)));
        Ok(out)
    }
}

/// "until_ms by" as stored.
fn parse_ban(key: &str, v: &str) -> Option<Ban> {
    let (until, by) = v.split_once(' ')?;
    Some(Ban {
        key: key.to_owned(),
        until_ms: until.parse().ok()?,
        by: by.into(),
    })
}

/// `*`, `?`, `[`, `]` and `\` taken literally in a SCAN pattern.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
