//! The rule the bundled policies apply to the primary metric: the candidate must beat the
//! champion by a threshold.

use crate::compare::{
    Direction, ImprovementMode, Reading, improvement, reaches_threshold, read_metric,
};
use crate::report::{check, setting};
use crate::{Check, DecisionInput, Setting, Settings, Verdict, format};

/// The primary metric when `primary_metric` is absent.
pub const DEFAULT_PRIMARY_METRIC: &str = "accuracy";

/// The required improvement when `improvement_threshold` is absent.
pub const DEFAULT_IMPROVEMENT_THRESHOLD: f64 = 0.05;

/// The primary-metric rule, as the settings configure it.
#[derive(Debug, Clone, PartialEq)]
pub struct PrimaryRule {
    /// `primary_metric`: the metric the candidate is judged on.
    pub metric: String,
    /// `improvement_threshold`: the gain the candidate must reach, a fraction in relative mode
    /// or the metric's units in absolute mode.
    pub threshold: f64,
    /// `improvement_mode`: how the gain is measured.
    pub mode: ImprovementMode,
    /// The primary metric's direction: `metrics.<primary>.direction`, else `direction`.
    pub direction: Direction,
}

/// One verdict on one aspect of the candidate, the check that shows it and the reason for it.
#[derive(Debug, Clone)]
pub struct Judgement {
    /// What this aspect alone would make of the candidate.
    pub verdict: Verdict,
    /// One line an operator can act on.
    pub reason: String,
    /// The check to report.
    pub check: Check,
}

impl PrimaryRule {
    /// Reads `primary_metric`, `improvement_threshold`, `improvement_mode`, `direction` and
    /// `metrics.<primary>.direction`.
    ///
    /// # Errors
    ///
    /// When any of them has the wrong type or an unknown value, or `primary_metric` is empty.
    pub fn from_settings(settings: &Settings) -> Result<Self, String> {
        let metric = settings
            .string_or("primary_metric", DEFAULT_PRIMARY_METRIC)?
            .to_string();
        if metric.is_empty() {
            return Err("setting primary_metric must name a metric, got \"\"".to_string());
        }
        let threshold =
            settings.number_or("improvement_threshold", DEFAULT_IMPROVEMENT_THRESHOLD)?;
        let mode = settings.improvement_mode()?;
        let direction = settings.metric(&metric)?.direction()?;
        Ok(Self {
            metric,
            threshold,
            mode,
            direction,
        })
    }

    /// The settings this rule reads, for a policy's `describe`.
    pub fn described_settings() -> Vec<Setting> {
        vec![
            setting(
                "primary_metric",
                "the metric the candidate must improve on the champion",
                Some("\"accuracy\""),
            ),
            setting(
                "improvement_threshold",
                "the gain over the champion required to promote: a fraction of the champion's value in relative mode (0.05 = 5%), the metric's units in absolute mode; a gain within 1e-9 of it counts as reaching it",
                Some("0.05"),
            ),
            setting(
                "improvement_mode",
                "\"relative\": gain = (candidate - champion) / |champion|, and over a champion of 0 any gain is +inf; \"absolute\": gain = candidate - champion",
                Some("\"relative\""),
            ),
            setting(
                "direction",
                "\"higher_is_better\" or \"lower_is_better\", for every metric without its own",
                Some("\"higher_is_better\""),
            ),
        ]
    }

    /// The threshold in words: `5%` in relative mode, `0.01` in absolute mode.
    pub fn threshold_words(&self) -> String {
        match self.mode {
            ImprovementMode::Relative => format::percent(self.threshold),
            ImprovementMode::Absolute => format::number(self.threshold),
        }
    }

    /// The requirement in words: `relative gain >= 5% over champion (higher is better)`.
    pub fn requirement(&self) -> String {
        format!(
            "{} gain >= {} over champion ({})",
            self.mode.key(),
            self.threshold_words(),
            self.direction.words()
        )
    }

    /// Judges the candidate's primary metric against the champion's.
    ///
    /// A candidate without a finite primary metric is rejected; with no champion it is
    /// promoted; a champion without a finite primary metric cannot be compared, so the
    /// candidate is held; otherwise it is promoted when its gain reaches the threshold, within
    /// [`THRESHOLD_SLACK`](crate::compare::THRESHOLD_SLACK), and held when not.
    pub fn judge(&self, input: &DecisionInput) -> Judgement {
        let metric = self.metric.as_str();
        let champion_reading = input
            .champion
            .as_ref()
            .map(|champion| read_metric(&champion.metrics, metric));
        let champion_reported = champion_reading.and_then(Reading::reported);

        let candidate = match read_metric(&input.candidate.metrics, metric) {
            Reading::Finite(value) => value,
            unusable => {
                let reason = match unusable {
                    Reading::NotFinite(value) => format!(
                        "candidate {metric} is {}; a model whose primary metric is not finite must not be served",
                        format::number(value)
                    ),
                    _ => format!(
                        "candidate has no {metric} metric; a model without its primary metric must not be served"
                    ),
                };
                return Judgement {
                    verdict: Verdict::Reject,
                    reason,
                    check: check(
                        metric,
                        unusable.reported(),
                        champion_reported,
                        format!("candidate reports a finite {metric}"),
                        false,
                    ),
                };
            }
        };

        let (Some(champion), Some(champion_reading)) = (&input.champion, champion_reading) else {
            return Judgement {
                verdict: Verdict::Promote,
                reason: format!(
                    "no champion exists for {}; the candidate becomes the first champion ({metric} {})",
                    input.model_name,
                    format::number(candidate)
                ),
                check: check(
                    metric,
                    Some(candidate),
                    None,
                    "finite value; no champion to compare against",
                    true,
                ),
            };
        };

        let Some(champion_value) = champion_reading.finite() else {
            return Judgement {
                verdict: Verdict::Hold,
                reason: format!(
                    "champion version {} has no usable {metric}; cannot compare",
                    champion.version
                ),
                check: check(
                    metric,
                    Some(candidate),
                    champion_reported,
                    format!("{}; the champion has no usable value", self.requirement()),
                    false,
                ),
            };
        };

        let gain = improvement(candidate, champion_value, self.direction, self.mode);
        let passed = reaches_threshold(gain, self.threshold);
        let mut requirement = self.requirement();
        if self.mode == ImprovementMode::Relative && champion_value == 0.0 {
            requirement.push_str(
                "; the champion is 0, so any gain counts as +inf, no change as 0 and any loss as -inf",
            );
        }
        Judgement {
            verdict: if passed {
                Verdict::Promote
            } else {
                Verdict::Hold
            },
            reason: self.gain_reason(gain, candidate, &champion.version, passed),
            check: check(
                metric,
                Some(candidate),
                Some(champion_value),
                requirement,
                passed,
            ),
        }
    }

    fn gain_reason(&self, gain: f64, candidate: f64, version: &str, passed: bool) -> String {
        let metric = &self.metric;
        let amount = if gain.is_infinite() {
            // Only a relative gain over a champion of 0 is infinite.
            format!("from 0 to {}", format::number(candidate))
        } else {
            match self.mode {
                ImprovementMode::Relative => format::percent_2dp(gain.abs()),
                ImprovementMode::Absolute => format::number(gain.abs()),
            }
        };
        let change = if gain > 0.0 {
            format!("improved {amount} over")
        } else if gain < 0.0 {
            format!("worsened {amount} against")
        } else {
            "did not change against".to_string()
        };
        let required = self.threshold_words();
        if passed {
            format!("{metric} {change} champion version {version} (required {required})")
        } else {
            format!(
                "{metric} {change} champion version {version}; a gain of {required} is required"
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Candidate, Champion, Metric};

    fn metrics(pairs: &[(&str, f64)]) -> Vec<Metric> {
        pairs
            .iter()
            .map(|&(name, value)| Metric {
                name: name.to_string(),
                value,
            })
            .collect()
    }

    fn input(candidate: &[(&str, f64)], champion: Option<&[(&str, f64)]>) -> DecisionInput {
        DecisionInput {
            model_name: "churn".to_string(),
            candidate: Candidate {
                run_id: None,
                metrics: metrics(candidate),
                series: Vec::new(),
            },
            champion: champion.map(|pairs| Champion {
                version: "3".to_string(),
                run_id: "r3".to_string(),
                metrics: metrics(pairs),
                series: Vec::new(),
            }),
            settings: "{}".to_string(),
        }
    }

    fn rule(json: &str) -> PrimaryRule {
        match Settings::parse(json).and_then(|s| PrimaryRule::from_settings(&s)) {
            Ok(rule) => rule,
            Err(err) => panic!("{json} should configure a rule: {err}"),
        }
    }

    #[test]
    fn defaults_are_accuracy_five_percent_relative_higher_is_better() {
        assert_eq!(
            rule("{}"),
            PrimaryRule {
                metric: "accuracy".to_string(),
                threshold: 0.05,
                mode: ImprovementMode::Relative,
                direction: Direction::HigherIsBetter,
            }
        );
    }

    #[test]
    fn the_requirement_reads_in_words() {
        assert_eq!(
            rule("{}").requirement(),
            "relative gain >= 5% over champion (higher is better)"
        );
        assert_eq!(
            rule(r#"{"improvement_mode": "absolute", "improvement_threshold": 0.01, "direction": "lower_is_better"}"#)
                .requirement(),
            "absolute gain >= 0.01 over champion (lower is better)"
        );
    }

    #[test]
    fn the_reason_for_a_promotion_gives_gain_champion_and_threshold() {
        let judged = rule("{}").judge(&input(&[("accuracy", 0.95)], Some(&[("accuracy", 0.9)])));
        assert_eq!(judged.verdict, Verdict::Promote);
        assert_eq!(
            judged.reason,
            "accuracy improved 5.56% over champion version 3 (required 5%)"
        );
    }

    #[test]
    fn the_reason_for_a_regression_says_it_worsened() {
        let judged = rule("{}").judge(&input(&[("accuracy", 0.8)], Some(&[("accuracy", 0.9)])));
        assert_eq!(judged.verdict, Verdict::Hold);
        assert_eq!(
            judged.reason,
            "accuracy worsened 11.11% against champion version 3; a gain of 5% is required"
        );
    }

    #[test]
    fn a_zero_champion_is_explained_in_the_requirement() {
        let judged = rule("{}").judge(&input(&[("accuracy", 0.3)], Some(&[("accuracy", 0.0)])));
        assert_eq!(judged.verdict, Verdict::Promote);
        assert!(judged.check.requirement.contains("the champion is 0"));
        assert_eq!(
            judged.reason,
            "accuracy improved from 0 to 0.3 over champion version 3 (required 5%)"
        );
    }
}
