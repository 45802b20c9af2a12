//! The consistent-hashing ring: `slots` points shared among the targets by weight, so a key
//! (the `hash_on_header` value) keeps landing on the same target, and only the keys of a
//! target that is skipped move (to the next point's target).

/// Points sorted by position; each names its target.
#[derive(Debug)]
pub struct Ring {
    points: Vec<(u32, u16)>,
}

/// FNV-1a, then a splitmix64 finaliser: stable across builds and platforms (every gateway
/// node of a cluster puts a key on the same target), and well spread for short keys.
pub fn hash(bytes: &[u8]) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (h ^ (h >> 31)) as u32
}

impl Ring {
    /// A ring of about `slots` points, each target's share proportional to its weight
    /// (at least one point each).
    pub fn new(weights: &[u32], slots: u32) -> Ring {
        let total: u64 = weights.iter().map(|w| u64::from(*w)).sum::<u64>().max(1);
        let mut points = Vec::with_capacity(slots as usize + weights.len());
        for (i, w) in weights.iter().enumerate() {
            let n = (u64::from(slots) * u64::from(*w) / total).max(1);
            for k in 0..n {
                let label = format!("target-{i}-point-{k}");
                points.push((hash(label.as_bytes()), i as u16));
            }
        }
        points.sort_unstable();
        Ring { points }
    }

    /// The target of `key`: the first point at or after its hash whose target is allowed.
    pub fn lookup(&self, key: &[u8], allowed: &dyn Fn(usize) -> bool) -> Option<usize> {
        let n = self.points.len();
        if n == 0 {
            return None;
        }
        let h = hash(key);
        let start = self.points.partition_point(|p| p.0 < h);
        (0..n)
            .map(|k| usize::from(self.points[(start + k) % n].1))
            .find(|t| allowed(*t))
    }
}
