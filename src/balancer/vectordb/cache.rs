//! The semantic cache's entries (`ai-semantic-cache`): answers stored under a namespace (the
//! plugin, the model, the partition the request belongs to) with their prompt's vector,
//! found again by exact key or by the nearest vector within the threshold, until they
//! expire.
//!
//! - memory (no strategy): this process; kept across config reloads by plugin id;
//! - `redis` / `pgvector`: shared by every node (see their modules).
//!
//! Searches are exact (every live vector of the namespace is compared): a cache holds what
//! one model answered one audience within a TTL, thousands of entries rather than millions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::balancer::semantic::Metric;

/// The most entries one namespace keeps in memory; the soonest to expire goes first.
pub const MEMORY_CAPACITY: usize = 4096;

/// A cached answer found.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// The entry's key (the hash of its prompt).
    pub key: String,
    /// The answer as stored.
    pub answer: Arc<str>,
    /// When it was stored and when it expires (ms since the epoch).
    pub stored_ms: u64,
    pub expires_ms: u64,
    /// The prompt's distance to the request's (0 for an exact hit).
    pub distance: f64,
}

/// One entry to store.
#[derive(Debug, Clone)]
pub struct Entry {
    pub key: String,
    pub vector: Option<Arc<[f32]>>,
    pub answer: Arc<str>,
    pub stored_ms: u64,
    pub expires_ms: u64,
}

/// One process's entries, by namespace.
#[derive(Debug, Default)]
pub struct Memory {
    spaces: Mutex<HashMap<String, HashMap<String, Entry>>>,
}

impl Memory {
    /// The entries of the plugin `id`, the same across config reloads.
    pub fn of(plugin_id: &str) -> Arc<Memory> {
        static ALL: OnceLock<Mutex<HashMap<String, Arc<Memory>>>> = OnceLock::new();
        let all = ALL.get_or_init(Default::default);
        let mut all = match all.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        all.entry(plugin_id.to_string()).or_default().clone()
    }

    fn spaces(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<String, Entry>>> {
        match self.spaces.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The live entry `key` of namespace `ns`.
    pub fn exact(&self, ns: &str, key: &str, now_ms: u64) -> Option<Found> {
        let spaces = self.spaces();
        let e = spaces.get(ns)?.get(key)?;
        (e.expires_ms > now_ms).then(|| found(e, 0.0))
    }

    /// The live entry of `ns` whose vector is nearest `v`, if within `threshold`.
    pub fn nearest(
        &self,
        ns: &str,
        v: &[f32],
        metric: Metric,
        threshold: f64,
        now_ms: u64,
    ) -> Option<Found> {
        let spaces = self.spaces();
        let best = spaces
            .get(ns)?
            .values()
            .filter(|e| e.expires_ms > now_ms)
            .filter_map(|e| Some((e, metric.distance(e.vector.as_deref()?, v)?)))
            .min_by(|a, b| a.1.total_cmp(&b.1))?;
        (best.1 <= threshold).then(|| found(best.0, best.1))
    }

    /// Stores `e` in `ns`, dropping expired entries and, past the capacity, the entry that
    /// would expire first.
    pub fn put(&self, ns: &str, e: Entry, now_ms: u64) {
        let mut spaces = self.spaces();
        let space = spaces.entry(ns.to_string()).or_default();
        if space.len() >= MEMORY_CAPACITY && !space.contains_key(&e.key) {
            space.retain(|_, x| x.expires_ms > now_ms);
            if space.len() >= MEMORY_CAPACITY {
                if let Some(k) = space
                    .values()
                    .min_by_key(|x| x.expires_ms)
                    .map(|x| x.key.clone())
                {
                    space.remove(&k);
                }
            }
        }
        space.insert(e.key.clone(), e);
    }

    /// Forgets every entry (Admin API purge); how many there were.
    pub fn purge(&self) -> usize {
        let mut spaces = self.spaces();
        let n = spaces.values().map(HashMap::len).sum();
        spaces.clear();
        n
    }

    /// Forgets the entry `key` in any namespace; whether there was one.
    pub fn forget(&self, key: &str) -> bool {
        let mut spaces = self.spaces();
        let mut gone = false;
        for s in spaces.values_mut() {
            gone |= s.remove(key).is_some();
        }
        gone
    }

    /// The live entry `key` in any namespace.
    pub fn find(&self, key: &str, now_ms: u64) -> Option<Found> {
        let spaces = self.spaces();
        spaces
            .values()
            .find_map(|s| s.get(key))
            .filter(|e| e.expires_ms > now_ms)
            .map(|e| found(e, 0.0))
    }
}

/// Entries in Redis, shared by every node: each answer under its own key with the entry's
/// TTL, its vector beside it, and a log of the namespace's keys in the order they were
/// stored. Each node mirrors the vectors it has read and, per lookup, reads only the keys
/// stored since (one round trip), so the search needs no Redis module (RediSearch): it runs
/// exactly on the node, and the answer is read back by key.
pub struct RedisCache {
    store: crate::store::redis::RedisStore,
    conn: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
    mirrors: Mutex<HashMap<String, Mirror>>,
    put: redis::Script,
}

/// One namespace's vectors as this node has read them.
#[derive(Debug, Default)]
struct Mirror {
    /// The highest log sequence read.
    seq: f64,
    vectors: HashMap<String, (Arc<[f32]>, u64)>,
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache")
            .field("address", &self.store.address())
            .finish()
    }
}

/// KEYS: the answer's key, the vector's key, the log, the log's sequence. ARGV: the
/// entry's key, the answer, the vector, the TTL (ms), the log's capacity.
const PUT: &str = r#"
redis.call("SET", KEYS[1], ARGV[2], "PX", ARGV[4])
redis.call("SET", KEYS[2], ARGV[3], "PX", ARGV[4])
local seq = redis.call("INCR", KEYS[4])
redis.call("ZADD", KEYS[3], seq, ARGV[1])
redis.call("ZREMRANGEBYRANK", KEYS[3], 0, -(tonumber(ARGV[5]) + 1))
redis.call("PEXPIRE", KEYS[3], 86400000)
redis.call("PEXPIRE", KEYS[4], 86400000)
return seq
"#;

/// A stored answer with its times, as kept in Redis and PostgreSQL.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    a: String,
    s: u64,
    e: u64,
}

impl RedisCache {
    /// Entries in the Redis `store` points at.
    pub fn new(store: crate::store::redis::RedisStore) -> RedisCache {
        RedisCache {
            store,
            conn: tokio::sync::Mutex::new(None),
            mirrors: Mutex::new(HashMap::new()),
            put: redis::Script::new(PUT),
        }
    }

    /// `host:port/db`, for logs.
    pub fn address(&self) -> &str {
        self.store.address()
    }

    fn key(ns: &str, kind: &str, key: &str) -> String {
        format!("tollgate:semcache:{ns}:{kind}:{key}")
    }

    /// The open connection (one is opened when none is, or the last one failed).
    async fn conn(&self) -> Result<redis::aio::MultiplexedConnection, String> {
        let mut c = self.conn.lock().await;
        if let Some(open) = c.as_ref() {
            return Ok(open.clone());
        }
        let open = self.store.connect().await?;
        *c = Some(open.clone());
        Ok(open)
    }

    async fn failed(&self, e: redis::RedisError) -> String {
        *self.conn.lock().await = None;
        format!("redis {}: {e}", self.address())
    }

    /// The live entry `key` of `ns`.
    pub async fn exact(&self, ns: &str, key: &str, now_ms: u64) -> Result<Option<Found>, String> {
        let mut con = self.conn().await?;
        let v: Option<String> = match redis::cmd("GET")
            .arg(Self::key(ns, "a", key))
            .query_async(&mut con)
            .await
        {
            Ok(v) => v,
            Err(e) => return Err(self.failed(e).await),
        };
        Ok(v.and_then(|v| serde_json::from_str::<Stored>(&v).ok())
            .filter(|s| s.e > now_ms)
            .map(|s| Found {
                key: key.to_string(),
                answer: s.a.into(),
                stored_ms: s.s,
                expires_ms: s.e,
                distance: 0.0,
            }))
    }

    /// Reads the keys `ns` stored since this node last looked into its mirror.
    async fn catch_up(&self, ns: &str, now_ms: u64) -> Result<(), String> {
        let mut con = self.conn().await?;
        let since = self.mirror(ns, |m| m.seq);
        let log = format!("tollgate:semcache:{ns}:log");
        let (latest, fresh): (Option<f64>, Vec<(String, f64)>) = match redis::pipe()
            .cmd("GET")
            .arg(format!("tollgate:semcache:{ns}:seq"))
            .cmd("ZRANGEBYSCORE")
            .arg(&log)
            .arg(format!("({since}"))
            .arg("+inf")
            .arg("WITHSCORES")
            .query_async(&mut con)
            .await
        {
            Ok(v) => v,
            Err(e) => return Err(self.failed(e).await),
        };
        // The log was dropped and started again: read it whole.
        if latest.unwrap_or(0.0) < since {
            self.mirror(ns, |m| *m = Mirror::default());
            return Box::pin(self.catch_up(ns, now_ms)).await;
        }
        if fresh.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = fresh.iter().map(|(k, _)| Self::key(ns, "v", k)).collect();
        let vectors: Vec<Option<String>> =
            match redis::cmd("MGET").arg(&keys).query_async(&mut con).await {
                Ok(v) => v,
                Err(e) => return Err(self.failed(e).await),
            };
        let top = fresh.iter().map(|(_, s)| *s).fold(since, f64::max);
        self.mirror(ns, |m| {
            for ((key, _), v) in fresh.iter().zip(vectors) {
                let parsed = v.and_then(|v| serde_json::from_str::<(Vec<f32>, u64)>(&v).ok());
                if let Some((vector, expires)) = parsed.filter(|(_, e)| *e > now_ms) {
                    m.vectors.insert(key.clone(), (vector.into(), expires));
                }
            }
            m.vectors.retain(|_, (_, e)| *e > now_ms);
            m.seq = top;
        });
        Ok(())
    }

    fn mirror<T>(&self, ns: &str, f: impl FnOnce(&mut Mirror) -> T) -> T {
        let mut all = match self.mirrors.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        f(all.entry(ns.to_string()).or_default())
    }

    /// The live entry of `ns` nearest `v` within `threshold`.
    pub async fn nearest(
        &self,
        ns: &str,
        v: &[f32],
        metric: Metric,
        threshold: f64,
        now_ms: u64,
    ) -> Result<Option<Found>, String> {
        self.catch_up(ns, now_ms).await?;
        let mut near: Vec<(String, f64)> = self.mirror(ns, |m| {
            m.vectors
                .iter()
                .filter(|(_, (_, e))| *e > now_ms)
                .filter_map(|(k, (x, _))| Some((k.clone(), metric.distance(x, v)?)))
                .filter(|(_, d)| *d <= threshold)
                .collect()
        });
        near.sort_by(|a, b| a.1.total_cmp(&b.1));
        // The nearest whose answer is still there (another node's TTL may have ended it).
        for (key, d) in near.into_iter().take(3) {
            if let Some(mut f) = self.exact(ns, &key, now_ms).await? {
                f.distance = d;
                return Ok(Some(f));
            }
            self.mirror(ns, |m| m.vectors.remove(&key));
        }
        Ok(None)
    }

    /// Stores `e` in `ns` for every node.
    pub async fn put(&self, ns: &str, e: &Entry) -> Result<(), String> {
        let ttl = e.expires_ms.saturating_sub(e.stored_ms).max(1);
        let stored = Stored {
            a: e.answer.to_string(),
            s: e.stored_ms,
            e: e.expires_ms,
        };
        let vector = e.vector.as_deref().unwrap_or(&[]);
        let mut con = self.conn().await?;
        let r: Result<i64, _> = self
            .put
            .key(Self::key(ns, "a", &e.key))
            .key(Self::key(ns, "v", &e.key))
            .key(format!("tollgate:semcache:{ns}:log"))
            .key(format!("tollgate:semcache:{ns}:seq"))
            .arg(&e.key)
            .arg(serde_json::to_string(&stored).unwrap_or_default())
            .arg(serde_json::to_string(&(vector, e.expires_ms)).unwrap_or_default())
            .arg(ttl)
            .arg(MEMORY_CAPACITY)
            .invoke_async(&mut con)
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(err) => Err(self.failed(err).await),
        }
    }
}

fn found(e: &Entry, distance: f64) -> Found {
    Found {
        key: e.key.clone(),
        answer: e.answer.clone(),
        stored_ms: e.stored_ms,
        expires_ms: e.expires_ms,
        distance,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn entry(key: &str, v: &[f32], expires_ms: u64) -> Entry {
        Entry {
            key: key.into(),
            vector: Some(v.into()),
            answer: format!("answer {key}").into(),
            stored_ms: 0,
            expires_ms,
        }
    }

    #[test]
    fn exact_nearest_expiry_and_namespaces() {
        let m = Memory::default();
        m.put("a", entry("k1", &[1.0, 0.0], 1000), 0);
        m.put("a", entry("k2", &[0.0, 1.0], 500), 0);
        assert_eq!(m.exact("a", "k1", 10).unwrap().answer.as_ref(), "answer k1");
        assert!(m.exact("b", "k1", 10).is_none(), "another namespace");
        let near = m
            .nearest("a", &[0.9, 0.1], Metric::Cosine, 0.1, 10)
            .unwrap();
        assert_eq!(near.key, "k1");
        assert!(near.distance > 0.0 && near.distance < 0.1);
        assert!(m
            .nearest("a", &[0.7, 0.7], Metric::Cosine, 0.1, 10)
            .is_none());
        // k2 expired at 500.
        assert!(m
            .nearest("a", &[0.0, 1.0], Metric::Cosine, 0.1, 600)
            .is_none());
        assert!(m.exact("a", "k1", 1000).is_none(), "expired at 1000");
        assert_eq!(m.find("k1", 10).unwrap().key, "k1");
        assert!(m.forget("k1"));
        assert!(!m.forget("k1"));
        assert_eq!(m.purge(), 1);
    }

    #[test]
    fn capacity_drops_the_soonest_to_expire() {
        let m = Memory::default();
        for i in 0..MEMORY_CAPACITY {
            m.put("a", entry(&format!("k{i}"), &[1.0], 10_000 + i as u64), 0);
        }
        m.put("a", entry("new", &[1.0], 99_999), 0);
        assert!(m.exact("a", "k0", 1).is_none());
        assert!(m.exact("a", "k1", 1).is_some());
        assert!(m.exact("a", "new", 1).is_some());
    }
}
