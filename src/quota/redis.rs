//! Counters in Redis (`policy: redis`, `strategy: redis`), shared by every gateway node.
//! One Lua script reads every slot's windows, decides, and increments, so two nodes can
//! never both take the last unit of a quota.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

use crate::balancer::vectordb::RedisStore;

use super::{reading, Mode, Outcome, Slot, StoreError};

/// After a failed connection, requests do not wait on Redis again for this long.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// KEYS: per slot, the current then the previous window's key.
/// ARGV: amount, mode (ca|c|a), now_ms, then per slot: limit, window_ms, sliding (0|1).
/// Returns: allowed (1|0), then per slot the current and previous counts (strings, since
/// Lua numbers would be truncated to integers on the way back).
const SCRIPT: &str = r#"
local amount = tonumber(ARGV[1])
local mode = ARGV[2]
local now = tonumber(ARGV[3])
local n = #KEYS / 2
local cur, prev = {}, {}
local ok = 1
for i = 1, n do
  local limit = tonumber(ARGV[3 + (i - 1) * 3 + 1])
  local w = tonumber(ARGV[3 + (i - 1) * 3 + 2])
  local sliding = ARGV[3 + (i - 1) * 3 + 3] == "1"
  cur[i] = tonumber(redis.call("GET", KEYS[2 * i - 1]) or "0")
  prev[i] = 0
  local used = cur[i]
  if sliding then
    prev[i] = tonumber(redis.call("GET", KEYS[2 * i]) or "0")
    local start = now - (now % w)
    used = used + prev[i] * (w - (now - start)) / w
  end
  if mode ~= "a" and (used >= limit or used + amount > limit) then ok = 0 end
end
if amount > 0 and (mode == "a" or (mode == "ca" and ok == 1)) then
  for i = 1, n do
    local w = tonumber(ARGV[3 + (i - 1) * 3 + 2])
    cur[i] = tonumber(redis.call("INCRBYFLOAT", KEYS[2 * i - 1], amount))
    redis.call("PEXPIRE", KEYS[2 * i - 1], 2 * w)
  end
end
local out = { ok }
for i = 1, n do
  out[#out + 1] = tostring(cur[i])
  out[#out + 1] = tostring(prev[i])
end
return out
"#;

/// A Redis holding quota counters, with one multiplexed connection kept open.
pub struct RedisCounters {
    store: RedisStore,
    script: redis::Script,
    conn: Mutex<Conn>,
}

#[derive(Default)]
struct Conn {
    open: Option<MultiplexedConnection>,
    failed_at: Option<Instant>,
}

impl std::fmt::Debug for RedisCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCounters")
            .field("address", &self.store.address())
            .finish()
    }
}

impl RedisCounters {
    /// Counters in the Redis `store` points at.
    pub fn new(store: RedisStore) -> RedisCounters {
        RedisCounters {
            store,
            script: redis::Script::new(SCRIPT),
            conn: Mutex::new(Conn::default()),
        }
    }

    /// `host:port/db`, for logs.
    pub fn address(&self) -> &str {
        self.store.address()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Conn> {
        match self.conn.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    async fn connection(&self) -> Result<MultiplexedConnection, StoreError> {
        {
            let c = self.lock();
            if let Some(open) = &c.open {
                return Ok(open.clone());
            }
            if c.failed_at.is_some_and(|t| t.elapsed() < RECONNECT_AFTER) {
                return Err(StoreError(format!(
                    "redis {}: unreachable (retrying shortly)",
                    self.address()
                )));
            }
        }
        match self.store.connect().await {
            Ok(con) => {
                let mut c = self.lock();
                c.open = Some(con.clone());
                c.failed_at = None;
                Ok(con)
            }
            Err(e) => {
                self.lock().failed_at = Some(Instant::now());
                Err(StoreError(e))
            }
        }
    }

    /// Runs the counting script for `slots`.
    pub async fn apply(
        &self,
        slots: &[Slot],
        amount: f64,
        mode: Mode,
        now_ms: u64,
    ) -> Result<Outcome, StoreError> {
        let mut con = self.connection().await?;
        let mut inv = self.script.prepare_invoke();
        for s in slots {
            let start = super::window_start(now_ms, s.window);
            let w_ms = s.window.max(1) * 1000;
            inv.key(format!("tollgate:quota:{}:{}:{start}", s.key, s.window));
            inv.key(format!(
                "tollgate:quota:{}:{}:{}",
                s.key,
                s.window,
                start.saturating_sub(w_ms)
            ));
        }
        let m = match mode {
            Mode::CheckAndAdd => "ca",
            Mode::Check => "c",
            Mode::Add => "a",
        };
        inv.arg(amount).arg(m).arg(now_ms);
        for s in slots {
            inv.arg(s.limit)
                .arg(s.window.max(1) * 1000)
                .arg(if s.sliding { 1 } else { 0 });
        }
        let out: Vec<redis::Value> = match inv.invoke_async(&mut con).await {
            Ok(v) => v,
            Err(e) => {
                // The connection may be dead; the next request opens a new one.
                let mut c = self.lock();
                c.open = None;
                if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
                    c.failed_at = Some(Instant::now());
                }
                return Err(StoreError(format!("redis {}: {e}", self.address())));
            }
        };
        let num = |v: Option<&redis::Value>| -> Option<f64> {
            match v? {
                redis::Value::Int(i) => Some(*i as f64),
                redis::Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
                redis::Value::SimpleString(s) => s.parse().ok(),
                _ => None,
            }
        };
        let bad = || StoreError(format!("redis {}: unexpected script reply", self.address()));
        let allowed = num(out.first()).ok_or_else(bad)? == 1.0;
        let added = amount > 0.0 && (mode == Mode::Add || (mode == Mode::CheckAndAdd && allowed));
        let pending = if added { 0.0 } else { amount };
        let mut readings = Vec::with_capacity(slots.len());
        for (i, s) in slots.iter().enumerate() {
            let cur = num(out.get(1 + 2 * i)).ok_or_else(bad)?;
            let prev = num(out.get(2 + 2 * i)).ok_or_else(bad)?;
            readings.push(reading(s, cur, prev, pending, now_ms));
        }
        Ok(Outcome { allowed, readings })
    }
}
