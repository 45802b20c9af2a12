//! Target selection for ai-proxy-advanced (spec §4.2): round-robin, consistent-hashing,
//! least-connections, lowest-latency, lowest-usage, priority and (with the prompt's nearest
//! targets given as candidates) semantic, all behind the circuit breaker. `pick` is
//! synchronous and allocation-free; what it learns comes back through `begin`/`end`,
//! `failure` and `success`.

pub mod acl;
pub mod health;
mod ring;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::plugins::{Algorithm, LatencyStrategy, TokensCountStrategy};
use crate::llm::usage::Usage;
use health::{micros_since, Breaker, TargetState};

/// Every how many lowest-latency picks one goes to another healthy target, so a target
/// that was slow once is measured again (the best keeps ~95 % of the traffic).
const PROBE_EVERY: u64 = 20;

/// Why no target was picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoTarget {
    /// Every candidate is down (circuit breaker): Kong answers 500.
    Unhealthy,
    /// Every candidate was excluded (already tried).
    Exhausted,
}

/// What one pick may use and must avoid.
#[derive(Debug, Default, Clone, Copy)]
pub struct PickCtx<'a> {
    /// The value of `hash_on_header` (consistent-hashing); None falls back to round-robin.
    pub hash_key: Option<&'a [u8]>,
    /// Targets already tried for this request.
    pub exclude: &'a [usize],
    /// Only these targets (semantic match, model_alias); None = all.
    pub candidates: Option<&'a [usize]>,
}

/// The settings a balancer is built from.
#[derive(Debug, Clone)]
pub struct Settings {
    pub algorithm: Algorithm,
    pub weights: Vec<u32>,
    pub slots: u32,
    pub latency_strategy: LatencyStrategy,
    pub tokens_count_strategy: TokensCountStrategy,
    /// Per target (input, output) cost per 1M tokens, for `tokens_count_strategy: cost`.
    pub costs: Vec<(f64, f64)>,
    pub breaker: Breaker,
}

impl Settings {
    /// Round-robin over `weights`, breaker off (ai-proxy's single target).
    pub fn round_robin(weights: Vec<u32>) -> Settings {
        let n = weights.len();
        Settings {
            algorithm: Algorithm::RoundRobin,
            weights,
            slots: 10_000,
            latency_strategy: LatencyStrategy::Tpot,
            tokens_count_strategy: TokensCountStrategy::TotalTokens,
            costs: vec![(0.0, 0.0); n],
            breaker: Breaker {
                max_fails: 0,
                fail_timeout: Duration::from_secs(10),
            },
        }
    }
}

/// The algorithm and its own state.
#[derive(Debug)]
enum Algo {
    RoundRobin,
    ConsistentHashing(ring::Ring),
    LeastConnections,
    LowestLatency,
    LowestUsage,
    /// Target indices grouped by weight, highest first.
    Priority(Vec<Vec<usize>>),
    /// Round-robin among the candidates the semantic match gives.
    Semantic,
}

// Semantic routing (`algorithm: semantic`): see `semantic_router`.
pub mod embed;
pub mod provider_call;
pub mod semantic;
pub mod semantic_router;
pub mod vector_set;
pub mod vectordb;

/// A balancer over a fixed list of targets.
#[derive(Debug)]
pub struct Balancer {
    algo: Algo,
    weights: Vec<u32>,
    /// Smooth weighted round-robin counters (also the fallback of the other algorithms).
    rr: Mutex<Vec<i64>>,
    state: Vec<TargetState>,
    breaker: Breaker,
    latency_strategy: LatencyStrategy,
    tokens_count_strategy: TokensCountStrategy,
    costs: Vec<(f64, f64)>,
    epoch: Instant,
    picks: AtomicU64,
}

impl Balancer {
    /// A round-robin balancer for `n` equally weighted targets.
    pub fn round_robin(n: usize) -> Balancer {
        Balancer::new(Settings::round_robin(vec![100; n]))
    }

    /// A balancer for `s`.
    pub fn new(s: Settings) -> Balancer {
        let n = s.weights.len();
        let algo = match s.algorithm {
            Algorithm::RoundRobin => Algo::RoundRobin,
            Algorithm::ConsistentHashing => {
                Algo::ConsistentHashing(ring::Ring::new(&s.weights, s.slots))
            }
            Algorithm::LeastConnections => Algo::LeastConnections,
            Algorithm::LowestLatency => Algo::LowestLatency,
            Algorithm::LowestUsage => Algo::LowestUsage,
            Algorithm::Priority => {
                let mut levels: Vec<u32> = s.weights.clone();
                levels.sort_unstable_by(|a, b| b.cmp(a));
                levels.dedup();
                Algo::Priority(
                    levels
                        .iter()
                        .map(|l| (0..n).filter(|i| s.weights[*i] == *l).collect())
                        .collect(),
                )
            }
            Algorithm::Semantic => Algo::Semantic,
        };
        let mut costs = s.costs;
        costs.resize(n, (0.0, 0.0));
        Balancer {
            algo,
            weights: s.weights,
            rr: Mutex::new(vec![0; n]),
            state: (0..n).map(|_| TargetState::default()).collect(),
            breaker: s.breaker,
            latency_strategy: s.latency_strategy,
            tokens_count_strategy: s.tokens_count_strategy,
            costs,
            epoch: Instant::now(),
            picks: AtomicU64::new(0),
        }
    }

    /// Whether answers must be reported back (`begin`/`end`/`success`): the algorithm
    /// learns from them, or the circuit breaker is on.
    pub fn learns(&self) -> bool {
        self.breaker.max_fails > 0
            || matches!(
                self.algo,
                Algo::LeastConnections | Algo::LowestLatency | Algo::LowestUsage
            )
    }

    /// The state of target `i` (tests and the Admin API read it).
    pub fn target(&self, i: usize) -> Option<&TargetState> {
        self.state.get(i)
    }

    /// Whether target `i` takes requests now (neither the breaker nor the active health
    /// check has it out), and, if not, which one took it out.
    pub fn availability(&self, i: usize) -> (bool, Option<&'static str>) {
        let Some(s) = self.state.get(i) else {
            return (false, None);
        };
        if !s.probe_healthy() {
            return (false, Some("healthcheck"));
        }
        if self.breaker.max_fails > 0 && !s.healthy(self.now_us()) {
            return (false, Some("circuit_breaker"));
        }
        (true, None)
    }

    fn now_us(&self) -> u64 {
        micros_since(self.epoch, Instant::now())
    }

    /// Picks a target for one attempt.
    pub fn pick(&self, ctx: &PickCtx<'_>) -> Result<usize, NoTarget> {
        let now = if self.breaker.max_fails > 0 {
            self.now_us()
        } else {
            0
        };
        let n = self.weights.len();
        let candidate = |i: usize| ctx.candidates.is_none_or(|c| c.contains(&i));
        let healthy = |i: usize| {
            self.state[i].probe_healthy()
                && (self.breaker.max_fails == 0 || self.state[i].healthy(now))
        };
        let allowed = |i: usize| candidate(i) && !ctx.exclude.contains(&i) && healthy(i);
        let picked = match &self.algo {
            Algo::RoundRobin | Algo::Semantic => self.pick_rr(&allowed),
            Algo::ConsistentHashing(ring) => match ctx.hash_key {
                Some(key) => ring.lookup(key, &allowed),
                None => self.pick_rr(&allowed),
            },
            Algo::LeastConnections => self.pick_min(&allowed, |i| {
                // In flight per unit of weight: spare capacity.
                f64::from(self.state[i].in_flight.load(Ordering::Relaxed))
                    / f64::from(self.weights[i].max(1))
            }),
            Algo::LowestLatency => self.pick_latency(&allowed),
            Algo::LowestUsage => self.pick_min(&allowed, |i| {
                self.state[i].usage.load(Ordering::Relaxed) as f64
                    / f64::from(self.weights[i].max(1))
            }),
            Algo::Priority(groups) => groups
                .iter()
                .find_map(|g| self.pick_rr(&|i| g.contains(&i) && allowed(i))),
        };
        picked.ok_or_else(|| {
            let any_healthy = (0..n).any(|i| candidate(i) && healthy(i));
            if any_healthy {
                NoTarget::Exhausted
            } else {
                NoTarget::Unhealthy
            }
        })
    }

    /// Smooth weighted round-robin (nginx's algorithm) over the allowed targets.
    fn pick_rr(&self, allowed: &dyn Fn(usize) -> bool) -> Option<usize> {
        let mut cur = match self.rr.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut total: i64 = 0;
        let mut best: Option<usize> = None;
        for (i, w) in self.weights.iter().enumerate() {
            if !allowed(i) {
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

    /// The allowed target with the lowest score; ties go round the targets in turn.
    fn pick_min(
        &self,
        allowed: &dyn Fn(usize) -> bool,
        score: impl Fn(usize) -> f64,
    ) -> Option<usize> {
        let n = self.weights.len();
        if n == 0 {
            return None;
        }
        let start = (self.picks.fetch_add(1, Ordering::Relaxed) % n as u64) as usize;
        let mut best: Option<(usize, f64)> = None;
        for k in 0..n {
            let i = (start + k) % n;
            if !allowed(i) {
                continue;
            }
            let s = score(i);
            if best.is_none_or(|(_, b)| s < b) {
                best = Some((i, s));
            }
        }
        best.map(|(i, _)| i)
    }

    /// Lowest peak-EWMA latency (weighted by requests in flight, as Finagle's), with one pick
    /// in `PROBE_EVERY` going round-robin to the others so none is starved of measurements.
    fn pick_latency(&self, allowed: &dyn Fn(usize) -> bool) -> Option<usize> {
        let now = self.now_us();
        let best = self.pick_min(allowed, |i| {
            let s = &self.state[i];
            s.latency(now) * f64::from(s.in_flight.load(Ordering::Relaxed) + 1)
        })?;
        if self.picks.load(Ordering::Relaxed) % PROBE_EVERY == 0 {
            if let Some(other) = self.pick_rr(&|i| i != best && allowed(i)) {
                return Some(other);
            }
        }
        Some(best)
    }

    /// A request goes to target `i` (counted until `end`).
    pub fn begin(&self, i: usize) {
        if let Some(s) = self.state.get(i) {
            s.in_flight.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The request to target `i` is over (its body ended, or the attempt failed).
    pub fn end(&self, i: usize) {
        if let Some(s) = self.state.get(i) {
            let _ = s
                .in_flight
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
        }
    }

    /// An attempt on target `i` failed in a way the breaker counts.
    pub fn failure(&self, i: usize) {
        if let Some(s) = self.state.get(i) {
            s.failed(&self.breaker, self.now_us());
        }
    }

    /// Target `i` answered: `elapsed` from sending to the end of the body, `usage` when known.
    pub fn success(&self, i: usize, elapsed: Duration, usage: Option<&Usage>) {
        let Some(s) = self.state.get(i) else {
            return;
        };
        let now = self.now_us();
        s.succeeded(&self.breaker, now);
        let ms = elapsed.as_secs_f64() * 1000.0;
        match self.algo {
            Algo::LowestLatency => {
                let sample = match (self.latency_strategy, usage) {
                    (LatencyStrategy::Tpot, Some(u)) if u.completion_tokens > 0 => {
                        ms / u.completion_tokens as f64
                    }
                    _ => ms,
                };
                s.observe_latency(sample, now);
            }
            Algo::LowestUsage => {
                if let Some(u) = usage {
                    let add = match self.tokens_count_strategy {
                        TokensCountStrategy::PromptTokens => u.prompt_tokens,
                        TokensCountStrategy::CompletionTokens => u.completion_tokens,
                        TokensCountStrategy::Cost => {
                            let (inp, out) = self.costs.get(i).copied().unwrap_or_default();
                            // Cost per 1M tokens; kept in millionths of the cost unit.
                            (u.prompt_tokens as f64 * inp + u.completion_tokens as f64 * out)
                                .round() as u64
                        }
                        _ => u.total_tokens,
                    };
                    s.usage.fetch_add(add, Ordering::Relaxed);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn with(algorithm: Algorithm, weights: &[u32]) -> Balancer {
        let mut s = Settings::round_robin(weights.to_vec());
        s.algorithm = algorithm;
        Balancer::new(s)
    }

    fn shares(b: &Balancer, n: usize, picks: usize, ctx: &PickCtx<'_>) -> Vec<usize> {
        let mut counts = vec![0; n];
        for _ in 0..picks {
            counts[b.pick(ctx).unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn weighted_round_robin_is_exact_and_smooth() {
        let b = with(Algorithm::RoundRobin, &[5, 1, 1]);
        let picks: Vec<usize> = (0..7)
            .map(|_| b.pick(&PickCtx::default()).unwrap())
            .collect();
        assert_eq!(picks, vec![0, 0, 1, 0, 2, 0, 0]);
        let ctx = PickCtx {
            exclude: &[0],
            ..PickCtx::default()
        };
        assert_eq!(shares(&b, 3, 100, &ctx), vec![0, 50, 50]);
        let all = PickCtx {
            exclude: &[0, 1, 2],
            ..PickCtx::default()
        };
        assert_eq!(b.pick(&all), Err(NoTarget::Exhausted));
    }

    #[test]
    fn consistent_hashing_is_sticky_spreads_and_falls_back() {
        let b = with(Algorithm::ConsistentHashing, &[100, 100, 100]);
        let key = |s: &'static str| PickCtx {
            hash_key: Some(s.as_bytes()),
            ..PickCtx::default()
        };
        let first = b.pick(&key("user-42")).unwrap();
        for _ in 0..50 {
            assert_eq!(b.pick(&key("user-42")).unwrap(), first, "sticky");
        }
        // Many keys spread over all targets, roughly evenly.
        let mut counts = [0usize; 3];
        for k in 0..3000 {
            let s = format!("key-{k}");
            counts[b
                .pick(&PickCtx {
                    hash_key: Some(s.as_bytes()),
                    ..PickCtx::default()
                })
                .unwrap()] += 1;
        }
        assert!(counts.iter().all(|c| *c > 700), "{counts:?}");
        // A tried target moves the key to the next one on the ring, the same each time.
        let ex = [first];
        let next = b
            .pick(&PickCtx {
                hash_key: Some(b"user-42"),
                exclude: &ex,
                ..PickCtx::default()
            })
            .unwrap();
        assert_ne!(next, first);
        // No header: round-robin.
        assert_eq!(shares(&b, 3, 300, &PickCtx::default()), vec![100, 100, 100]);
    }

    #[test]
    fn least_connections_prefers_spare_capacity() {
        let b = with(Algorithm::LeastConnections, &[100, 200]);
        b.begin(0);
        b.begin(1);
        b.begin(1);
        // 1/100 vs 2/200: a tie, broken in turn.
        let picks = shares(&b, 2, 10, &PickCtx::default());
        assert_eq!(picks, vec![5, 5]);
        b.begin(1);
        assert_eq!(b.pick(&PickCtx::default()), Ok(0), "3/200 > 1/100");
        b.end(1);
        b.end(1);
        assert_eq!(b.pick(&PickCtx::default()), Ok(1), "1/200 < 1/100");
    }

    #[test]
    fn lowest_latency_prefers_the_fastest_but_probes_the_others() {
        let b = with(Algorithm::LowestLatency, &[100, 100, 100]);
        let u = Usage {
            completion_tokens: 10,
            ..Usage::default()
        };
        b.success(0, Duration::from_millis(500), Some(&u));
        b.success(1, Duration::from_millis(50), Some(&u));
        b.success(2, Duration::from_millis(900), Some(&u));
        let counts = shares(&b, 3, 1000, &PickCtx::default());
        assert!(counts[1] >= 930, "{counts:?}");
        assert!(counts[0] > 0 && counts[2] > 0, "never starved: {counts:?}");
        // The fast one slows down (a peak takes over at once): traffic moves.
        b.success(1, Duration::from_millis(5000), Some(&u));
        let counts = shares(&b, 3, 100, &PickCtx::default());
        assert!(counts[0] >= 90, "{counts:?}");
    }

    #[test]
    fn lowest_usage_balances_tokens_or_cost() {
        let b = with(Algorithm::LowestUsage, &[100, 100]);
        let big = Usage {
            prompt_tokens: 900,
            completion_tokens: 100,
            total_tokens: 1000,
            ..Usage::default()
        };
        b.success(0, Duration::from_millis(1), Some(&big));
        for _ in 0..5 {
            assert_eq!(b.pick(&PickCtx::default()), Ok(1));
        }
        let mut s = Settings::round_robin(vec![100, 100]);
        s.algorithm = Algorithm::LowestUsage;
        s.tokens_count_strategy = TokensCountStrategy::Cost;
        s.costs = vec![(1.0, 1.0), (100.0, 100.0)];
        let b = Balancer::new(s);
        b.success(0, Duration::from_millis(1), Some(&big));
        b.success(1, Duration::from_millis(1), Some(&big));
        assert_eq!(b.pick(&PickCtx::default()), Ok(0), "cheaper so far");
    }

    #[test]
    fn priority_uses_the_highest_group_until_it_is_all_down() {
        let mut s = Settings::round_robin(vec![10, 10, 5]);
        s.algorithm = Algorithm::Priority;
        s.breaker = Breaker {
            max_fails: 1,
            fail_timeout: Duration::from_secs(60),
        };
        let b = Balancer::new(s);
        assert_eq!(shares(&b, 3, 100, &PickCtx::default()), vec![50, 50, 0]);
        b.failure(0);
        assert_eq!(shares(&b, 3, 10, &PickCtx::default()), vec![0, 10, 0]);
        b.failure(1);
        assert_eq!(shares(&b, 3, 10, &PickCtx::default()), vec![0, 0, 10]);
        b.failure(2);
        assert_eq!(b.pick(&PickCtx::default()), Err(NoTarget::Unhealthy));
        // Excluded (tried) is not the same as down: the next group serves the retry.
        let b = with(Algorithm::Priority, &[10, 10, 5]);
        let ctx = PickCtx {
            exclude: &[0, 1],
            ..PickCtx::default()
        };
        assert_eq!(b.pick(&ctx), Ok(2));
    }

    #[test]
    fn candidates_restrict_any_algorithm() {
        let b = with(Algorithm::Semantic, &[100, 300, 100]);
        let ctx = PickCtx {
            candidates: Some(&[1, 2]),
            ..PickCtx::default()
        };
        assert_eq!(shares(&b, 3, 400, &ctx), vec![0, 300, 100]);
    }
}
