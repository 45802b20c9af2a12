//! Conversations behind `previous_response_id` for Responses requests the gateway answers
//! through a chat-only provider: in memory, bounded by bytes, expiring by age. Lost on
//! restart, like any cache; a client that needs durability sends the full input.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Default byte budget: a Codex conversation is tens of KB, so thousands of them fit.
pub const DEFAULT_MAX_BYTES: usize = 64 << 20;
/// Default age after which a response can no longer be continued.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);

struct Entry {
    messages: Arc<Vec<Value>>,
    size: usize,
    at: Instant,
}

#[derive(Default)]
struct Inner {
    map: HashMap<String, Entry>,
    /// Insertion order, oldest first, for eviction.
    order: VecDeque<String>,
    bytes: usize,
}

/// The store shared by every request of a gateway.
pub struct Conversations {
    inner: Mutex<Inner>,
    max_bytes: usize,
    ttl: Duration,
}

impl Default for Conversations {
    fn default() -> Self {
        Conversations::new(DEFAULT_MAX_BYTES, DEFAULT_TTL)
    }
}

impl Conversations {
    /// A store holding at most `max_bytes` of conversations, each for `ttl`.
    pub fn new(max_bytes: usize, ttl: Duration) -> Self {
        Conversations {
            inner: Mutex::new(Inner::default()),
            max_bytes,
            ttl,
        }
    }

    /// The conversation (chat messages, without instructions) a response id stands for.
    pub fn get(&self, id: &str) -> Option<Arc<Vec<Value>>> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let e = inner.map.get(id)?;
        (e.at.elapsed() < self.ttl).then(|| e.messages.clone())
    }

    /// Keeps `messages` under `id`, evicting the oldest entries past the budget. A single
    /// conversation larger than the whole budget is not kept.
    pub fn put(&self, id: String, messages: Vec<Value>) {
        let size: usize = messages.iter().map(approx_size).sum::<usize>() + id.len();
        if size > self.max_bytes {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        while let Some(oldest) = inner.order.front() {
            let expired = inner
                .map
                .get(oldest)
                .map(|e| now.duration_since(e.at) >= self.ttl)
                .unwrap_or(true);
            if !expired && inner.bytes + size <= self.max_bytes {
                break;
            }
            if let Some(k) = inner.order.pop_front() {
                if let Some(e) = inner.map.remove(&k) {
                    inner.bytes -= e.size;
                }
            }
        }
        inner.bytes += size;
        inner.order.push_back(id.clone());
        if let Some(old) = inner.map.insert(
            id,
            Entry {
                messages: Arc::new(messages),
                size,
                at: now,
            },
        ) {
            inner.bytes -= old.size;
        }
    }

    /// How many conversations are held.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Bytes a JSON value takes as text, near enough for a budget and without serializing.
fn approx_size(v: &Value) -> usize {
    match v {
        Value::Null | Value::Bool(_) | Value::Number(_) => 8,
        Value::String(s) => s.len() + 2,
        Value::Array(a) => a.iter().map(approx_size).sum::<usize>() + 2,
        Value::Object(o) => {
            o.iter()
                .map(|(k, v)| k.len() + 3 + approx_size(v))
                .sum::<usize>()
                + 2
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_evicts_oldest_and_expires() {
        let c = Conversations::new(200, Duration::from_secs(60));
        let msg = |t: &str| vec![json!({"role": "user", "content": t})];
        c.put("a".into(), msg(&"x".repeat(60)));
        c.put("b".into(), msg(&"y".repeat(60)));
        assert!(c.get("a").is_some() && c.get("b").is_some());
        c.put("c".into(), msg(&"z".repeat(60)));
        assert!(c.get("a").is_none(), "oldest evicted past the budget");
        assert_eq!(c.get("c").unwrap()[0]["content"], json!("z".repeat(60)));
        c.put("huge".into(), msg(&"h".repeat(500)));
        assert!(c.get("huge").is_none(), "larger than the whole budget");
        assert_eq!(c.len(), 2);

        let short = Conversations::new(1000, Duration::from_millis(0));
        short.put("a".into(), msg("hi"));
        assert!(short.get("a").is_none(), "expired");
    }
}
