//! Counters in Redis (`policy: redis`, `strategy: redis`), shared by every gateway node.
//! One Lua script reads every slot's windows, decides, and increments, so two nodes can
//! never both take the last unit of a quota.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

use crate::balancer::vectordb::RedisStore;

use super::{at, reading, Mode, Outcome, Settlement, Slot, StoreError};

/// After a failed connection, requests do not wait on Redis again for this long.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// KEYS: per slot, the current then the previous window's key.
/// ARGV: mode (ca|c|a), now_ms, then per slot: limit, window_ms, sliding (0|1), the amount
/// that must fit, the amount to add.
/// Returns: allowed (1|0), then per slot the current and previous counts (strings, since
/// Lua numbers would be truncated to integers on the way back).
const SCRIPT: &str = r#"
local mode = ARGV[1]
local now = tonumber(ARGV[2])
local n = #KEYS / 2
local cur, prev = {}, {}
local ok = 1
for i = 1, n do
  local base = 2 + (i - 1) * 5
  local limit = tonumber(ARGV[base + 1])
  local w = tonumber(ARGV[base + 2])
  local sliding = ARGV[base + 3] == "1"
  local need = tonumber(ARGV[base + 4])
  cur[i] = tonumber(redis.call("GET", KEYS[2 * i - 1]) or "0")
  prev[i] = 0
  local used = cur[i]
  if sliding then
    prev[i] = tonumber(redis.call("GET", KEYS[2 * i]) or "0")
    local start = now - (now % w)
    used = used + prev[i] * (w - (now - start)) / w
  end
  if mode ~= "a" and (used >= limit or used + need > limit) then ok = 0 end
end
if mode == "a" or (mode == "ca" and ok == 1) then
  for i = 1, n do
    local base = 2 + (i - 1) * 5
    local w = tonumber(ARGV[base + 2])
    local add = tonumber(ARGV[base + 5])
    if add > 0 then
      cur[i] = tonumber(redis.call("INCRBYFLOAT", KEYS[2 * i - 1], add))
      redis.call("PEXPIRE", KEYS[2 * i - 1], 2 * w)
    end
  end
end
local out = { ok }
for i = 1, n do
  out[#out + 1] = tostring(cur[i])
  out[#out + 1] = tostring(prev[i])
end
return out
"#;

/// KEYS: per slot, the current window's key, then the key of the window a reservation was
/// added to. ARGV: per slot: the real usage, the reserved amount, window_ms.
/// A reservation is only taken back from a window key that still exists (an expired one is
/// not recreated), and never below zero.
const SETTLE: &str = r#"
for i = 1, #KEYS / 2 do
  local real = tonumber(ARGV[3 * i - 2])
  local reserved = tonumber(ARGV[3 * i - 1])
  local w = tonumber(ARGV[3 * i])
  local res = KEYS[2 * i]
  if reserved > 0 and redis.call("EXISTS", res) == 1 then
    local left = tonumber(redis.call("INCRBYFLOAT", res, -reserved))
    if left < 0 then redis.call("INCRBYFLOAT", res, -left) end
  end
  if real > 0 then
    redis.call("INCRBYFLOAT", KEYS[2 * i - 1], real)
    redis.call("PEXPIRE", KEYS[2 * i - 1], 2 * w)
  end
end
return 1
"#;

/// A Redis holding quota counters, with one multiplexed connection kept open.
pub struct RedisCounters {
    store: RedisStore,
    script: redis::Script,
    settle_script: redis::Script,
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
            settle_script: redis::Script::new(SETTLE),
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

    /// The key of the window of `slot` starting at `start`.
    fn key(slot: &Slot, start: u64) -> String {
        format!("tollgate:quota:{}:{}:{start}", slot.key, slot.window)
    }

    /// Forgets a connection a command failed on (the next request opens a new one).
    fn failed(&self, e: &redis::RedisError) -> StoreError {
        let mut c = self.lock();
        c.open = None;
        if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
            c.failed_at = Some(Instant::now());
        }
        StoreError(format!("redis {}: {e}", self.address()))
    }

    /// Runs the counting script for `slots`: slot `i` must have room for `need[i]` and
    /// gets `add[i]`.
    pub async fn apply_each(
        &self,
        slots: &[Slot],
        need: &[f64],
        add: &[f64],
        mode: Mode,
        now_ms: u64,
    ) -> Result<Outcome, StoreError> {
        let mut con = self.connection().await?;
        let mut inv = self.script.prepare_invoke();
        for s in slots {
            let start = super::window_start(now_ms, s.window);
            let w_ms = s.window.max(1) * 1000;
            inv.key(Self::key(s, start));
            inv.key(Self::key(s, start.saturating_sub(w_ms)));
        }
        let m = match mode {
            Mode::CheckAndAdd => "ca",
            Mode::Check => "c",
            Mode::Add => "a",
        };
        inv.arg(m).arg(now_ms);
        for (i, s) in slots.iter().enumerate() {
            inv.arg(s.limit)
                .arg(s.window.max(1) * 1000)
                .arg(if s.sliding { 1 } else { 0 })
                .arg(at(need, i))
                .arg(at(add, i));
        }
        let out: Vec<redis::Value> = match inv.invoke_async(&mut con).await {
            Ok(v) => v,
            Err(e) => return Err(self.failed(&e)),
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
        let added = mode == Mode::Add || (mode == Mode::CheckAndAdd && allowed);
        let mut readings = Vec::with_capacity(slots.len());
        for (i, s) in slots.iter().enumerate() {
            let cur = num(out.get(1 + 2 * i)).ok_or_else(bad)?;
            let prev = num(out.get(2 + 2 * i)).ok_or_else(bad)?;
            let pending = if added { 0.0 } else { at(need, i) };
            readings.push(reading(s, cur, prev, pending, now_ms));
        }
        Ok(Outcome { allowed, readings })
    }

    /// Charges real usage to the current windows and gives reservations back to the
    /// windows they were added to, in one script.
    pub async fn settle(
        &self,
        slots: &[Slot],
        items: &[Settlement],
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let mut con = self.connection().await?;
        let mut inv = self.settle_script.prepare_invoke();
        for (s, it) in slots.iter().zip(items) {
            inv.key(Self::key(s, super::window_start(now_ms, s.window)));
            inv.key(Self::key(s, it.reserved_at));
            inv.arg(it.real)
                .arg(it.reserved)
                .arg(s.window.max(1) * 1000);
        }
        match inv.invoke_async::<redis::Value>(&mut con).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.failed(&e)),
        }
    }
}
