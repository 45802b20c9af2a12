//! Target selection for ai-proxy-advanced. `pick` is synchronous and cheap.

use std::sync::Mutex;

// Semantic routing (`algorithm: semantic`): see `semantic_router`.
pub mod embed;
pub mod semantic;
pub mod semantic_router;
pub mod vectordb;

/// A balancer over a fixed list of targets.
#[derive(Debug)]
pub enum Balancer {
    /// Smooth weighted round-robin (nginx's algorithm): shares ∝ weight, interleaved.
    RoundRobin(Mutex<Vec<i64>>),
}

impl Balancer {
    /// A round-robin balancer for `n` targets.
    pub fn round_robin(n: usize) -> Balancer {
        Balancer::RoundRobin(Mutex::new(vec![0; n]))
    }

    /// Picks a target index among those not in `exclude`; `None` when all are excluded.
    pub fn pick(&self, weights: &[u32], exclude: &[usize]) -> Option<usize> {
        match self {
            Balancer::RoundRobin(current) => {
                let mut cur = match current.lock() {
                    Ok(c) => c,
                    Err(poisoned) => poisoned.into_inner(),
                };
                let mut total: i64 = 0;
                let mut best: Option<usize> = None;
                for (i, w) in weights.iter().enumerate() {
                    if exclude.contains(&i) || i >= cur.len() {
                        continue;
                    }
                    let w = i64::from(*w);
                    cur[i] += w;
                    total += w;
                    if best.map(|b| cur[i] > cur[b]).unwrap_or(true) {
                        best = Some(i);
                    }
                }
                if let Some(b) = best {
                    cur[b] -= total;
                }
                best
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_shares_are_exact_and_smooth() {
        let b = Balancer::round_robin(3);
        let weights = [5, 1, 1];
        let picks: Vec<usize> = (0..7).filter_map(|_| b.pick(&weights, &[])).collect();
        assert_eq!(picks.iter().filter(|p| **p == 0).count(), 5);
        assert_eq!(picks, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn exclusion_and_exhaustion() {
        let b = Balancer::round_robin(2);
        assert_eq!(b.pick(&[1, 1], &[0]), Some(1));
        assert_eq!(b.pick(&[1, 1], &[0, 1]), None);
    }
}
