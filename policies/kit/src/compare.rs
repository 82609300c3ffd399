//! Finding metrics and measuring a candidate against a champion.

use crate::{Metric, MetricSeries};

/// How far below the threshold a gain may fall and still count as reaching it.
///
/// Gains are computed in f64, so a gain that is exactly the threshold on paper can land a few
/// ulps short: 0.9 -> 0.945 is a relative gain of 0.04999999999999993, not 0.05. Any gain within
/// 1e-9 of the threshold counts as reaching it; no real metric moves by that little.
pub const THRESHOLD_SLACK: f64 = 1e-9;

/// Which way a metric gets better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// Larger values are better, as with accuracy or F1. The default.
    #[default]
    HigherIsBetter,
    /// Smaller values are better, as with loss, error or latency.
    LowerIsBetter,
}

impl Direction {
    /// The setting's spelling: `higher_is_better` or `lower_is_better`.
    pub fn key(self) -> &'static str {
        match self {
            Direction::HigherIsBetter => "higher_is_better",
            Direction::LowerIsBetter => "lower_is_better",
        }
    }

    /// The direction in words, for requirements: `higher is better`.
    pub fn words(self) -> &'static str {
        match self {
            Direction::HigherIsBetter => "higher is better",
            Direction::LowerIsBetter => "lower is better",
        }
    }

    /// Parses the setting's spelling; `None` for anything else.
    pub fn from_key(key: &str) -> Option<Self> {
        match key {
            "higher_is_better" => Some(Direction::HigherIsBetter),
            "lower_is_better" => Some(Direction::LowerIsBetter),
            _ => None,
        }
    }
}

/// How an improvement is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImprovementMode {
    /// As a fraction of the champion's value: `(candidate - champion) / |champion|`. The default.
    #[default]
    Relative,
    /// In the metric's own units: `candidate - champion`.
    Absolute,
}

impl ImprovementMode {
    /// The setting's spelling: `relative` or `absolute`.
    pub fn key(self) -> &'static str {
        match self {
            ImprovementMode::Relative => "relative",
            ImprovementMode::Absolute => "absolute",
        }
    }

    /// Parses the setting's spelling; `None` for anything else.
    pub fn from_key(key: &str) -> Option<Self> {
        match key {
            "relative" => Some(ImprovementMode::Relative),
            "absolute" => Some(ImprovementMode::Absolute),
            _ => None,
        }
    }
}

/// What a model reported for one metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reading {
    /// The model has no metric of that name.
    Missing,
    /// The metric is NaN or infinite, which no comparison can use.
    NotFinite(f64),
    /// A usable value.
    Finite(f64),
}

impl Reading {
    /// The value to report in a check: `None` when missing, the raw value otherwise.
    pub fn reported(self) -> Option<f64> {
        match self {
            Reading::Missing => None,
            Reading::NotFinite(value) | Reading::Finite(value) => Some(value),
        }
    }

    /// The value when it is usable.
    pub fn finite(self) -> Option<f64> {
        match self {
            Reading::Finite(value) => Some(value),
            Reading::Missing | Reading::NotFinite(_) => None,
        }
    }
}

/// Finds the metric called `name`; when a model reports a name twice, the first one counts.
pub fn find_metric(metrics: &[Metric], name: &str) -> Option<f64> {
    metrics
        .iter()
        .find(|metric| metric.name == name)
        .map(|metric| metric.value)
}

/// Reads the metric called `name`, telling missing, non-finite and usable values apart.
pub fn read_metric(metrics: &[Metric], name: &str) -> Reading {
    match find_metric(metrics, name) {
        None => Reading::Missing,
        Some(value) if value.is_finite() => Reading::Finite(value),
        Some(value) => Reading::NotFinite(value),
    }
}

/// Finds the series called `name` (per-sample, per-fold or bootstrap values); when a model
/// reports a name twice, the first one counts.
pub fn find_series<'a>(series: &'a [MetricSeries], name: &str) -> Option<&'a [f64]> {
    series
        .iter()
        .find(|series| series.name == name)
        .map(|series| series.values.as_slice())
}

/// How much better the candidate is than the champion in the metric's own units: positive
/// when better, negative when worse, whichever the direction.
pub fn absolute_gain(candidate: f64, champion: f64, direction: Direction) -> f64 {
    match direction {
        Direction::HigherIsBetter => candidate - champion,
        Direction::LowerIsBetter => champion - candidate,
    }
}

/// How much better the candidate is than the champion, measured as `mode` says: positive when
/// better, negative when worse.
///
/// A relative gain over a champion of 0 has no finite value: it is `+inf` when the candidate is
/// better, 0 when equal and `-inf` when worse, so any improvement over 0 reaches any threshold.
pub fn improvement(
    candidate: f64,
    champion: f64,
    direction: Direction,
    mode: ImprovementMode,
) -> f64 {
    let gain = absolute_gain(candidate, champion, direction);
    match mode {
        ImprovementMode::Absolute => gain,
        ImprovementMode::Relative if champion == 0.0 => {
            if gain > 0.0 {
                f64::INFINITY
            } else if gain < 0.0 {
                f64::NEG_INFINITY
            } else {
                0.0
            }
        }
        ImprovementMode::Relative => gain / champion.abs(),
    }
}

/// Whether `gain` reaches `threshold`, allowing for [`THRESHOLD_SLACK`].
pub fn reaches_threshold(gain: f64, threshold: f64) -> bool {
    gain >= threshold - THRESHOLD_SLACK
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(pairs: &[(&str, f64)]) -> Vec<Metric> {
        pairs
            .iter()
            .map(|&(name, value)| Metric {
                name: name.to_string(),
                value,
            })
            .collect()
    }

    #[test]
    fn finds_a_metric_by_name() {
        let reported = metrics(&[("loss", 0.3), ("accuracy", 0.9)]);
        assert_eq!(find_metric(&reported, "accuracy"), Some(0.9));
        assert_eq!(find_metric(&reported, "f1_score"), None);
    }

    #[test]
    fn the_first_of_two_metrics_with_one_name_counts() {
        let reported = metrics(&[("accuracy", 0.9), ("accuracy", 0.1)]);
        assert_eq!(find_metric(&reported, "accuracy"), Some(0.9));
    }

    #[test]
    fn finds_a_series_by_name() {
        let reported = vec![MetricSeries {
            name: "accuracy_samples".to_string(),
            values: vec![1.0, 0.0],
        }];
        assert_eq!(
            find_series(&reported, "accuracy_samples"),
            Some(&[1.0, 0.0][..])
        );
        assert_eq!(find_series(&reported, "accuracy"), None);
    }

    #[test]
    fn reading_tells_missing_non_finite_and_usable_apart() {
        let reported = metrics(&[("a", 1.0), ("b", f64::NAN), ("c", f64::NEG_INFINITY)]);
        assert_eq!(read_metric(&reported, "a"), Reading::Finite(1.0));
        assert!(matches!(read_metric(&reported, "b"), Reading::NotFinite(v) if v.is_nan()));
        assert_eq!(
            read_metric(&reported, "c"),
            Reading::NotFinite(f64::NEG_INFINITY)
        );
        assert_eq!(read_metric(&reported, "d"), Reading::Missing);
    }

    #[test]
    fn relative_gain_is_a_fraction_of_the_champion() {
        let gain = improvement(
            0.95,
            0.9,
            Direction::HigherIsBetter,
            ImprovementMode::Relative,
        );
        assert!((gain - 0.055_555_555).abs() < 1e-6);
    }

    #[test]
    fn absolute_gain_is_in_the_metric_units() {
        let gain = improvement(
            0.95,
            0.9,
            Direction::HigherIsBetter,
            ImprovementMode::Absolute,
        );
        assert!((gain - 0.05).abs() < 1e-12);
    }

    #[test]
    fn a_lower_value_is_a_gain_when_lower_is_better() {
        let gain = improvement(
            0.8,
            1.0,
            Direction::LowerIsBetter,
            ImprovementMode::Relative,
        );
        assert!((gain - 0.2).abs() < 1e-12);
        let loss = improvement(
            1.2,
            1.0,
            Direction::LowerIsBetter,
            ImprovementMode::Relative,
        );
        assert!((loss + 0.2).abs() < 1e-12);
    }

    #[test]
    fn relative_gain_divides_by_the_champion_magnitude_when_it_is_negative() {
        // -2 -> -1 is better when higher is better, so the gain must be positive.
        let gain = improvement(
            -1.0,
            -2.0,
            Direction::HigherIsBetter,
            ImprovementMode::Relative,
        );
        assert!((gain - 0.5).abs() < 1e-12);
    }

    #[test]
    fn relative_gain_over_a_zero_champion_is_infinite_or_zero() {
        let mode = ImprovementMode::Relative;
        let higher = Direction::HigherIsBetter;
        assert_eq!(improvement(0.1, 0.0, higher, mode), f64::INFINITY);
        assert_eq!(improvement(0.0, 0.0, higher, mode), 0.0);
        assert_eq!(improvement(-0.1, 0.0, higher, mode), f64::NEG_INFINITY);
        let lower = Direction::LowerIsBetter;
        assert_eq!(improvement(0.1, 0.0, lower, mode), f64::NEG_INFINITY);
    }

    #[test]
    fn a_gain_a_few_ulps_short_of_the_threshold_reaches_it() {
        let gain = improvement(
            0.945,
            0.9,
            Direction::HigherIsBetter,
            ImprovementMode::Relative,
        );
        assert!(gain < 0.05, "f64 puts this gain just below 0.05");
        assert!(reaches_threshold(gain, 0.05));
    }

    #[test]
    fn a_gain_clearly_short_of_the_threshold_does_not_reach_it() {
        assert!(!reaches_threshold(0.0499, 0.05));
        assert!(reaches_threshold(0.05, 0.05));
        assert!(reaches_threshold(0.06, 0.05));
    }
}
