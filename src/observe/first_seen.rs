//! Ids seen before, so a fact reported on every read of an object (a finished batch's
//! usage, returned by each retrieve) is counted once.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

/// The ids remembered; past the bound the oldest are forgotten first.
const CAPACITY: usize = 1 << 16;

/// A bounded set of ids, remembered in arrival order.
#[derive(Default)]
pub struct FirstSeen {
    inner: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    ids: HashSet<String>,
    order: VecDeque<String>,
}

impl FirstSeen {
    /// True the first time `id` is offered (and remembers it), false after.
    pub fn first(&self, id: &str) -> bool {
        let mut s = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if s.ids.contains(id) {
            return false;
        }
        if s.order.len() >= CAPACITY {
            if let Some(old) = s.order.pop_front() {
                s.ids.remove(&old);
            }
        }
        s.ids.insert(id.to_string());
        s.order.push_back(id.to_string());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_first_once_until_forgotten() {
        let s = FirstSeen::default();
        assert!(s.first("batch_1"));
        assert!(!s.first("batch_1"));
        assert!(s.first("batch_2"));
        for i in 0..CAPACITY {
            s.first(&format!("x{i}"));
        }
        assert!(
            s.first("batch_1"),
            "the oldest ids are forgotten past the bound"
        );
    }
}
