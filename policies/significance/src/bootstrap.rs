//! Percentile-bootstrap confidence intervals of a mean gain, with a seeded generator so that
//! the same inputs always give the same interval, and so the same verdict.

/// A confidence interval: `lower <= upper`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub lower: f64,
    pub upper: f64,
}

/// SplitMix64: small, fast and well mixed, which is all resampling indices needs.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// An index below `len`; the modulo bias is below 2^-40 for any series a policy is handed.
    fn index(&mut self, len: usize) -> usize {
        (self.next_u64() % len as u64) as usize
    }
}

/// The mean of `values`; 0 for none.
pub fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.iter().sum::<f64>() / values.len() as f64
}

/// The mean of one resample with replacement of `values`.
fn resampled_mean(values: &[f64], rng: &mut Rng) -> f64 {
    let sum: f64 = (0..values.len())
        .map(|_| values[rng.index(values.len())])
        .sum();
    sum / values.len() as f64
}

/// The central `confidence` interval of `draws`, by the percentile method.
fn percentile_interval(mut draws: Vec<f64>, confidence: f64) -> Interval {
    draws.sort_by(f64::total_cmp);
    let tail = (1.0 - confidence) / 2.0;
    let last = draws.len().saturating_sub(1);
    let at = |quantile: f64| {
        let rank = (quantile * last as f64).round() as usize;
        draws.get(rank.min(last)).copied().unwrap_or(f64::NAN)
    };
    Interval {
        lower: at(tail),
        upper: at(1.0 - tail),
    }
}

/// The interval of the mean of `values`: per-sample gains of a paired comparison, or the
/// candidate's samples when the champion has a single value.
pub fn mean_interval(values: &[f64], resamples: usize, confidence: f64, seed: u64) -> Interval {
    let mut rng = Rng::new(seed);
    let draws = (0..resamples)
        .map(|_| resampled_mean(values, &mut rng))
        .collect();
    percentile_interval(draws, confidence)
}

/// The interval of `mean(candidate) - mean(champion)` for two independent samples, each
/// resampled on its own.
pub fn difference_interval(
    candidate: &[f64],
    champion: &[f64],
    resamples: usize,
    confidence: f64,
    seed: u64,
) -> Interval {
    let mut rng = Rng::new(seed);
    let draws = (0..resamples)
        .map(|_| resampled_mean(candidate, &mut rng) - resampled_mean(champion, &mut rng))
        .collect();
    percentile_interval(draws, confidence)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_interval() {
        let values: Vec<f64> = (0..50).map(|i| f64::from(i % 7) / 10.0).collect();
        assert_eq!(
            mean_interval(&values, 500, 0.95, 7),
            mean_interval(&values, 500, 0.95, 7)
        );
    }

    #[test]
    fn the_interval_holds_the_mean() {
        let values: Vec<f64> = (0..200).map(|i| f64::from(i % 2)).collect();
        let interval = mean_interval(&values, 2000, 0.95, 0);
        assert!(interval.lower < 0.5 && 0.5 < interval.upper, "{interval:?}");
        // The standard error of 200 fair coin flips is 0.035; the interval spans about 4 of it.
        assert!(interval.upper - interval.lower > 0.08, "{interval:?}");
        assert!(interval.upper - interval.lower < 0.2, "{interval:?}");
    }

    #[test]
    fn a_constant_sample_has_a_point_interval() {
        let interval = mean_interval(&[0.3; 10], 100, 0.95, 0);
        assert!((interval.lower - 0.3).abs() < 1e-12);
        assert!((interval.upper - 0.3).abs() < 1e-12);
    }

    #[test]
    fn a_higher_confidence_widens_the_interval() {
        let values: Vec<f64> = (0..100).map(|i| f64::from(i % 3)).collect();
        let narrow = mean_interval(&values, 2000, 0.8, 1);
        let wide = mean_interval(&values, 2000, 0.99, 1);
        assert!(wide.lower < narrow.lower && narrow.upper < wide.upper);
    }

    #[test]
    fn the_difference_of_two_samples_is_centred_on_the_difference_of_means() {
        let candidate: Vec<f64> = (0..100).map(|i| 0.8 + f64::from(i % 5) / 100.0).collect();
        let champion: Vec<f64> = (0..80).map(|i| 0.7 + f64::from(i % 5) / 100.0).collect();
        let interval = difference_interval(&candidate, &champion, 1000, 0.95, 0);
        assert!(interval.lower < 0.1 && 0.1 < interval.upper, "{interval:?}");
        assert!(interval.lower > 0.09, "{interval:?}");
    }
}
