//! The picker: chooses a healthy backend for a client that has nothing in flight.
//!
//! Round-robin walks the list from where it last stopped, skipping unhealthy backends; random
//! draws uniformly among the healthy ones from a seedable RNG (so tests can fix the sequence).
//! Both return `None` at once when nothing is healthy: callers answer `-ERR no backend available`.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Which strategy the picker uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PickerKind {
    /// Each pick takes the next healthy backend in list order.
    RoundRobin,
    /// Each pick takes a uniformly random healthy backend.
    Random,
}

impl std::str::FromStr for PickerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "round-robin" | "rr" => Ok(PickerKind::RoundRobin),
            "random" => Ok(PickerKind::Random),
            other => Err(format!(
                "unknown picker '{other}' (expected round-robin or random)"
            )),
        }
    }
}

/// Picks among backends given as a health predicate over indices `0..n`.
#[derive(Debug)]
pub struct Picker {
    kind: PickerKind,
    next: usize,
    rng: SmallRng,
}

impl Picker {
    /// A picker of `kind`; `seed` fixes the random sequence.
    pub fn new(kind: PickerKind, seed: Option<u64>) -> Self {
        let rng = match seed {
            Some(s) => SmallRng::seed_from_u64(s),
            None => SmallRng::from_os_rng(),
        };
        Picker { kind, next: 0, rng }
    }

    /// A healthy index in `0..n`, or `None` when `healthy` is false for all.
    pub fn pick(&mut self, n: usize, healthy: impl Fn(usize) -> bool) -> Option<usize> {
        match self.kind {
            PickerKind::RoundRobin => {
                // Wraps by comparison: a division per pick costs more than the rest of it.
                let mut i = if self.next < n { self.next } else { 0 };
                for _ in 0..n {
                    let next = if i + 1 == n { 0 } else { i + 1 };
                    if healthy(i) {
                        self.next = next;
                        return Some(i);
                    }
                    i = next;
                }
                None
            }
            PickerKind::Random => {
                let count = (0..n).filter(|&i| healthy(i)).count();
                if count == 0 {
                    return None;
                }
                let k = self.rng.random_range(0..count);
                (0..n).filter(|&i| healthy(i)).nth(k)
            }
        }
    }

    /// A random number in `0..n` from the picker's RNG (for jitter and random choices).
    pub fn random_below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.rng.random_range(0..n)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_alternates_and_skips_unhealthy() {
        let mut p = Picker::new(PickerKind::RoundRobin, None);
        let picks: Vec<_> = (0..6).map(|_| p.pick(3, |_| true).unwrap()).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
        let picks: Vec<_> = (0..4).map(|_| p.pick(3, |i| i != 1).unwrap()).collect();
        assert_eq!(picks, vec![0, 2, 0, 2]);
        assert_eq!(p.pick(3, |_| false), None);
    }

    #[test]
    fn random_is_seeded_and_spreads() {
        let mut a = Picker::new(PickerKind::Random, Some(7));
        let mut b = Picker::new(PickerKind::Random, Some(7));
        let xs: Vec<_> = (0..1000).map(|_| a.pick(2, |_| true).unwrap()).collect();
        let ys: Vec<_> = (0..1000).map(|_| b.pick(2, |_| true).unwrap()).collect();
        assert_eq!(xs, ys);
        let ones = xs.iter().filter(|&&x| x == 1).count();
        assert!((400..600).contains(&ones), "{ones}");
        assert!((0..100).all(|_| a.pick(3, |i| i == 2) == Some(2)));
    }
}
