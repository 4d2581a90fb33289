//! `Histogram`: a log-linear latency histogram in microseconds, for backend latency (INFO) and
//! command latency percentiles (`INFO latencystats`).
//!
//! ```text
//!  bucket:  0 1 2 ... 15 │ 16 17 18 19 │ 20 21 22 23 │ ...   (four per power of two from 16 µs)
//!  µs:      0 1 2 ... 15 │ 16  20  24  28 │ 32  40  48  56 │ ...
//! ```

/// A log-linear latency histogram in microseconds: exact below 16 µs, then four buckets per
/// power of two (≤ 25% error), up to about an hour.
#[derive(Debug, Clone)]
pub struct Histogram {
    buckets: Box<[u32; HIST_BUCKETS]>,
    count: u64,
}

const HIST_BUCKETS: usize = 128;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: Box::new([0; HIST_BUCKETS]),
            count: 0,
        }
    }
}

impl Histogram {
    fn bucket(us: u64) -> usize {
        if us < 16 {
            return us as usize;
        }
        let log = 63 - us.leading_zeros() as usize;
        let sub = ((us >> (log - 2)) & 3) as usize;
        (16 + (log - 4) * 4 + sub).min(HIST_BUCKETS - 1)
    }

    fn upper(i: usize) -> u64 {
        if i < 16 {
            return i as u64;
        }
        let log = (i - 16) / 4 + 4;
        let sub = ((i - 16) % 4) as u64;
        ((5 + sub) << (log - 2)) - 1
    }

    /// Records one duration.
    pub fn record(&mut self, us: u64) {
        self.record_n(us, 1);
    }

    /// Records `n` requests of the same duration.
    pub fn record_n(&mut self, us: u64, n: u32) {
        let b = &mut self.buckets[Self::bucket(us)];
        *b = b.saturating_add(n);
        self.count += u64::from(n);
    }

    /// The upper bound of the bucket holding quantile `q` (0 when empty).
    pub fn quantile(&self, q: f64) -> u64 {
        let target = ((self.count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += u64::from(n);
            if seen >= target {
                return Self::upper(i);
            }
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_a_quarter_of_the_truth() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile(0.5), 0);
        for us in 1..=1000 {
            h.record(us);
        }
        h.record_n(1_000_000, 10);
        let p50 = h.quantile(0.5);
        assert!((500..=625).contains(&p50), "p50 {p50}");
        assert!(
            h.quantile(0.999) >= 1_000_000 * 3 / 4,
            "{}",
            h.quantile(0.999)
        );
        assert_eq!(Histogram::upper(Histogram::bucket(7)), 7);
    }
}
