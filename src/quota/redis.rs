//! Counters in Redis (`policy: redis`, `strategy: redis`), shared by every gateway node.
//! One Lua script reads every slot's windows, decides, and increments, so two nodes can
//! never both take the last unit of a quota.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

use crate::store::redis::RedisStore;

use super::{at, reading, Adds, Mode, Outcome, Settlement, Slot, StoreError};

/// After a failed connection, requests do not wait on Redis again for this long.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// KEYS: per slot, the current window's key, the previous one's, and the key holding the
/// reservations of requests in flight.
/// ARGV: mode (ca|c|a), now_ms, then per slot: limit, window_ms, sliding (0|1), the amount
/// that must fit, the amount to add, the part of it that is a reservation.
/// Returns: allowed (1|0), then per slot the current and previous counts and the
/// reservations (strings, since Lua numbers would be truncated to integers on the way back).
const SCRIPT: &str = r#"
local mode = ARGV[1]
local now = tonumber(ARGV[2])
local n = #KEYS / 3
local cur, prev, held = {}, {}, {}
local ok = 1
for i = 1, n do
  local base = 2 + (i - 1) * 6
  local limit = tonumber(ARGV[base + 1])
  local w = tonumber(ARGV[base + 2])
  local sliding = ARGV[base + 3] == "1"
  local need = tonumber(ARGV[base + 4])
  cur[i] = tonumber(redis.call("GET", KEYS[3 * i - 2]) or "0")
  held[i] = tonumber(redis.call("GET", KEYS[3 * i]) or "0")
  prev[i] = 0
  local used = cur[i]
  if sliding then
    prev[i] = tonumber(redis.call("GET", KEYS[3 * i - 1]) or "0")
    local start = now - (now % w)
    used = used + prev[i] * (w - (now - start)) / w
  end
  if mode ~= "a" and (used >= limit or used + need > limit) then ok = 0 end
end
if mode == "a" or (mode == "ca" and ok == 1) then
  for i = 1, n do
    local base = 2 + (i - 1) * 6
    local w = tonumber(ARGV[base + 2])
    local add = tonumber(ARGV[base + 5])
    local hold = tonumber(ARGV[base + 6])
    if add > 0 then
      cur[i] = tonumber(redis.call("INCRBYFLOAT", KEYS[3 * i - 2], add))
      redis.call("PEXPIRE", KEYS[3 * i - 2], 2 * w)
    end
    if hold > 0 then
      held[i] = tonumber(redis.call("INCRBYFLOAT", KEYS[3 * i], hold))
      redis.call("PEXPIRE", KEYS[3 * i], 2 * w)
    end
  end
end
local out = { ok }
for i = 1, n do
  out[#out + 1] = tostring(cur[i])
  out[#out + 1] = tostring(prev[i])
  out[#out + 1] = tostring(held[i])
end
return out
"#;

/// KEYS: per slot, the current window's key, the key of the window a reservation was
/// added to, and the reservations key. ARGV: per slot: the real usage, the reserved
/// amount, window_ms. A reservation is only taken back from keys that still exist (an
/// expired one is not recreated), and never below zero.
const SETTLE: &str = r#"
local function give_back(key, amount)
  if amount > 0 and redis.call("EXISTS", key) == 1 then
    local left = tonumber(redis.call("INCRBYFLOAT", key, -amount))
    if left < 0 then redis.call("INCRBYFLOAT", key, -left) end
  end
end
for i = 1, #KEYS / 3 do
  local real = tonumber(ARGV[3 * i - 2])
  local reserved = tonumber(ARGV[3 * i - 1])
  local w = tonumber(ARGV[3 * i])
  give_back(KEYS[3 * i - 1], reserved)
  give_back(KEYS[3 * i], reserved)
  if real > 0 then
    redis.call("INCRBYFLOAT", KEYS[3 * i - 2], real)
    redis.call("PEXPIRE", KEYS[3 * i - 2], 2 * w)
  end
end
return 1
"#;

/// KEYS: per item, a window's key and the previous window's. ARGV: per item, what this
/// node added to each since the last sync (negative: reservations given back), and
/// window_ms. Returns both windows' totals per item (strings). A negative amount never
/// recreates an expired key nor takes a count below zero.
const SYNC: &str = r#"
local function push(key, amount, w)
  if amount > 0 then
    redis.call("INCRBYFLOAT", key, amount)
    redis.call("PEXPIRE", key, 2 * w)
  elseif amount < 0 and redis.call("EXISTS", key) == 1 then
    local left = tonumber(redis.call("INCRBYFLOAT", key, amount))
    if left < 0 then redis.call("INCRBYFLOAT", key, -left) end
  end
end
local out = {}
for i = 1, #KEYS / 2 do
  local w = tonumber(ARGV[3 * i])
  push(KEYS[2 * i - 1], tonumber(ARGV[3 * i - 2]), w)
  push(KEYS[2 * i], tonumber(ARGV[3 * i - 1]), w)
  out[#out + 1] = redis.call("GET", KEYS[2 * i - 1]) or "0"
  out[#out + 1] = redis.call("GET", KEYS[2 * i]) or "0"
end
return out
"#;

/// One counter's batched sync: what this node added to the window starting at `start`
/// and to the one before it since the last sync.
#[derive(Debug, Clone)]
pub struct Push {
    pub slot: Slot,
    pub start: u64,
    pub cur: f64,
    pub prev: f64,
}

/// A Redis holding quota counters, with one multiplexed connection kept open.
pub struct RedisCounters {
    store: RedisStore,
    script: redis::Script,
    settle_script: redis::Script,
    sync_script: redis::Script,
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
            sync_script: redis::Script::new(SYNC),
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

    /// The key of the reservations `slot`'s requests in flight hold.
    fn held_key(slot: &Slot) -> String {
        format!("tollgate:quota:{}:{}:held", slot.key, slot.window)
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
    /// gets `add.total[i]`, `add.held[i]` of it reserved.
    pub async fn apply_each(
        &self,
        slots: &[Slot],
        need: &[f64],
        add: Adds<'_>,
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
            inv.key(Self::held_key(s));
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
                .arg(at(add.total, i))
                .arg(at(add.held, i));
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
            let cur = num(out.get(1 + 3 * i)).ok_or_else(bad)?;
            let prev = num(out.get(2 + 3 * i)).ok_or_else(bad)?;
            let held = num(out.get(3 + 3 * i)).ok_or_else(bad)?;
            let pending = if added { 0.0 } else { at(need, i) };
            readings.push(reading(s, cur, prev, pending, now_ms).with_held(held, pending));
        }
        Ok(Outcome { allowed, readings })
    }

    /// The current counters whose keys start with `prefix` (at most `max` of them): each
    /// with its current and previous window's counts (`used` and `limit` left 0).
    pub async fn list(
        &self,
        prefix: &str,
        now_ms: u64,
        max: usize,
    ) -> Result<Vec<super::local::Listed>, StoreError> {
        let mut con = self.connection().await?;
        let pattern = format!("tollgate:quota:{}*", escape_glob(prefix));
        let mut cursor: u64 = 0;
        let mut keys: Vec<String> = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut con)
                .await
                .map_err(|e| self.failed(&e))?;
            keys.extend(batch);
            cursor = next;
            if cursor == 0 || keys.len() >= 4 * max {
                break;
            }
        }
        // `tollgate:quota:<slot key>:<window>:<start>`: keep the current windows.
        let mut current: Vec<(String, u64, u64)> = keys
            .iter()
            .filter_map(|k| {
                let rest = k.strip_prefix("tollgate:quota:")?;
                let (rest, start) = rest.rsplit_once(':')?;
                let (slot, window) = rest.rsplit_once(':')?;
                let (window, start) = (window.parse::<u64>().ok()?, start.parse::<u64>().ok()?);
                (start == super::window_start(now_ms, window))
                    .then(|| (slot.to_string(), window, start))
            })
            .collect();
        current.sort();
        current.truncate(max);
        if current.is_empty() {
            return Ok(Vec::new());
        }
        let mut get = redis::cmd("MGET");
        for (slot, window, start) in &current {
            get.arg(format!("tollgate:quota:{slot}:{window}:{start}"));
            get.arg(format!(
                "tollgate:quota:{slot}:{window}:{}",
                start.saturating_sub((*window).max(1) * 1000)
            ));
        }
        let values: Vec<Option<String>> = get
            .query_async(&mut con)
            .await
            .map_err(|e| self.failed(&e))?;
        let count = |i: usize| -> f64 {
            values
                .get(i)
                .and_then(|v| v.as_deref())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0)
        };
        Ok(current
            .into_iter()
            .enumerate()
            .map(|(i, (key, window, _))| super::local::Listed {
                key,
                window,
                used: 0.0,
                limit: 0.0,
                cur: count(2 * i),
                prev: count(2 * i + 1),
            })
            .collect())
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
            inv.key(Self::held_key(s));
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

impl RedisCounters {
    /// Adds each push's amounts to its windows and reads both windows' totals back
    /// (current, previous), in one script per call.
    pub async fn sync(&self, pushes: &[Push]) -> Result<Vec<(f64, f64)>, StoreError> {
        let mut con = self.connection().await?;
        let mut inv = self.sync_script.prepare_invoke();
        for p in pushes {
            let w_ms = p.slot.window.max(1) * 1000;
            inv.key(Self::key(&p.slot, p.start));
            inv.key(Self::key(&p.slot, p.start.saturating_sub(w_ms)));
            inv.arg(p.cur).arg(p.prev).arg(w_ms);
        }
        let out: Vec<String> = match inv.invoke_async(&mut con).await {
            Ok(v) => v,
            Err(e) => return Err(self.failed(&e)),
        };
        let num = |i: usize| out.get(i).and_then(|v| v.parse::<f64>().ok());
        (0..pushes.len())
            .map(|i| match (num(2 * i), num(2 * i + 1)) {
                (Some(c), Some(p)) => Ok((c, p)),
                _ => Err(StoreError(format!(
                    "redis {}: unexpected sync reply",
                    self.address()
                ))),
            })
            .collect()
    }
}

/// `s` with Redis glob metacharacters escaped, for a `MATCH` pattern.
fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
