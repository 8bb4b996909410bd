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
}
