//! The multi-metric policy: the primary metric must improve as in the threshold policy, the
//! comparison metrics must not regress beyond their tolerance, and guardrails bound any
//! metric absolutely.
//!
//! Each rule yields a [`Judgement`]; the decision takes the most severe verdict (reject beats
//! hold beats promote) and reports every check, so an operator sees every metric looked at.

use policy_kit::compare::{Direction, Reading, THRESHOLD_SLACK, absolute_gain, read_metric};
use policy_kit::report::{check, setting, stricter};
use policy_kit::{
    Decision, DecisionInput, Judgement, Policy, PolicyInfo, PrimaryRule, Settings, Verdict, format,
};

/// The multi-metric policy.
pub struct MultiMetric;

impl Policy for MultiMetric {
    fn describe() -> PolicyInfo {
        let mut settings = PrimaryRule::described_settings();
        settings.push(setting(
            "comparison_metrics",
            "metrics that must not regress against the champion by more than their tolerance",
            Some("[]"),
        ));
        settings.push(setting(
            "missing_metric",
            "what a comparison metric that the candidate lacks, or reports as NaN or infinite, does to the verdict: \"hold\", \"reject\" or \"ignore\"",
            Some("\"hold\""),
        ));
        settings.push(setting(
            "metrics",
            "per-metric settings by metric name: direction (wins over the global one); tolerance, how far a comparison metric may regress in its own units (default 0); min and max, guardrails that reject a candidate outside them, checked even with no champion",
            Some("{}"),
        ));
        PolicyInfo {
            name: "multi-metric".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            description: "Promotes the candidate when its primary metric improves on the champion's by improvement_threshold (as the threshold policy does) and no comparison metric regresses by more than its tolerance; holds it when not; rejects it when its primary metric is missing or not finite or when a guarded metric is missing, not finite or outside its min/max. Reject beats hold beats promote.".to_string(),
            settings,
        }
    }

    fn decide(input: &DecisionInput, settings: &Settings) -> Result<Decision, String> {
        let primary = PrimaryRule::from_settings(settings)?;
        let missing = MissingMetric::from_settings(settings)?;
        let comparisons = settings
            .metric_list("comparison_metrics")?
            .into_iter()
            .filter(|name| *name != primary.metric)
            .map(|name| ComparisonRule::from_settings(settings, name))
            .collect::<Result<Vec<_>, String>>()?;
        let guardrails = Guardrail::all_from_settings(settings)?;

        let mut judgements = vec![primary.judge(input)];
        judgements.extend(comparisons.iter().map(|rule| rule.judge(input, missing)));
        judgements.extend(guardrails.iter().map(|guardrail| guardrail.judge(input)));
        Ok(combine(judgements))
    }
}

policy_kit::export_policy!(MultiMetric);

/// What a comparison metric that the candidate lacks, or reports as non-finite, does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MissingMetric {
    Hold,
    Reject,
    Ignore,
}

impl MissingMetric {
    fn from_settings(settings: &Settings) -> Result<Self, String> {
        let key = "missing_metric";
        let Some(value) = settings.get(key) else {
            return Ok(MissingMetric::Hold);
        };
        match value.as_str() {
            Some("hold") => Ok(MissingMetric::Hold),
            Some("reject") => Ok(MissingMetric::Reject),
            Some("ignore") => Ok(MissingMetric::Ignore),
            _ => Err(format!(
                "setting {key} must be \"hold\", \"reject\" or \"ignore\", got {value}"
            )),
        }
    }

    fn key(self) -> &'static str {
        match self {
            MissingMetric::Hold => "hold",
            MissingMetric::Reject => "reject",
            MissingMetric::Ignore => "ignore",
        }
    }
}

/// A comparison metric: it must not regress against the champion by more than `tolerance`.
struct ComparisonRule {
    metric: String,
    direction: Direction,
    tolerance: f64,
}

impl ComparisonRule {
    fn from_settings(settings: &Settings, metric: String) -> Result<Self, String> {
        let metric_settings = settings.metric(&metric)?;
        Ok(Self {
            direction: metric_settings.direction()?,
            tolerance: metric_settings.tolerance()?,
            metric,
        })
    }

    fn requirement(&self) -> String {
        let bound = if self.tolerance == 0.0 {
            "no worse than champion".to_string()
        } else {
            let side = match self.direction {
                Direction::HigherIsBetter => "below",
                Direction::LowerIsBetter => "above",
            };
            format!("at most {} {side} champion", format::number(self.tolerance))
        };
        format!("{bound} ({})", self.direction.words())
    }

    fn judge(&self, input: &DecisionInput, missing: MissingMetric) -> Judgement {
        let metric = self.metric.as_str();
        let requirement = self.requirement();
        let champion_reading = input
            .champion
            .as_ref()
            .map(|champion| read_metric(&champion.metrics, metric));
        let champion_reported = champion_reading.and_then(Reading::reported);

        let candidate = match read_metric(&input.candidate.metrics, metric) {
            Reading::Finite(value) => value,
            unusable => {
                let what = match unusable {
                    Reading::NotFinite(value) => {
                        format!("candidate {metric} is {}", format::number(value))
                    }
                    _ => format!("candidate has no {metric} metric"),
                };
                let setting = format!("missing_metric: {}", missing.key());
                let (verdict, requirement, passed) = match missing {
                    MissingMetric::Ignore => (
                        Verdict::Promote,
                        format!(
                            "{requirement}; a missing or non-finite value is ignored ({setting})"
                        ),
                        true,
                    ),
                    MissingMetric::Hold => (
                        Verdict::Hold,
                        format!("candidate reports a finite {metric} ({setting})"),
                        false,
                    ),
                    MissingMetric::Reject => (
                        Verdict::Reject,
                        format!("candidate reports a finite {metric} ({setting})"),
                        false,
                    ),
                };
                return Judgement {
                    verdict,
                    reason: format!("{what}, a comparison metric ({setting})"),
                    check: check(
                        metric,
                        unusable.reported(),
                        champion_reported,
                        requirement,
                        passed,
                    ),
                };
            }
        };

        let (Some(champion), Some(champion_value)) = (
            input.champion.as_ref(),
            champion_reading.and_then(Reading::finite),
        ) else {
            let nothing = if input.champion.is_none() {
                "no champion, nothing to compare"
            } else {
                "the champion has no usable value, nothing to compare"
            };
            return Judgement {
                verdict: Verdict::Promote,
                reason: String::new(),
                check: check(
                    metric,
                    Some(candidate),
                    champion_reported,
                    format!("{requirement}; {nothing}"),
                    true,
                ),
            };
        };

        let change = absolute_gain(candidate, champion_value, self.direction);
        // The same slack as the threshold's: a regression of exactly the tolerance on paper
        // may come out a few ulps larger in f64.
        let passed = change >= -self.tolerance - THRESHOLD_SLACK;
        let reason = if passed {
            String::new()
        } else {
            format!(
                "{metric} regressed {} against champion version {} (tolerance {})",
                format::number(-change),
                champion.version,
                format::number(self.tolerance)
            )
        };
        Judgement {
            verdict: if passed {
                Verdict::Promote
            } else {
                Verdict::Hold
            },
            reason,
            check: check(
                metric,
                Some(candidate),
                Some(champion_value),
                requirement,
                passed,
            ),
        }
    }
}

/// An absolute floor and/or ceiling on a metric, from `metrics.<name>.min` and `.max`.
struct Guardrail {
    metric: String,
    min: Option<f64>,
    max: Option<f64>,
}

impl Guardrail {
    /// Every metric under `metrics` that has a `min` or a `max`, in name order.
    fn all_from_settings(settings: &Settings) -> Result<Vec<Self>, String> {
        let mut guardrails = Vec::new();
        for name in settings.metric_names()? {
            let (min, max) = settings.metric(name)?.bounds()?;
            if min.is_some() || max.is_some() {
                guardrails.push(Guardrail {
                    metric: name.to_string(),
                    min,
                    max,
                });
            }
        }
        Ok(guardrails)
    }

    fn requirement(&self) -> String {
        match (self.min, self.max) {
            (Some(min), Some(max)) => {
                format!(
                    "{} <= value <= {}",
                    format::number(min),
                    format::number(max)
                )
            }
            (Some(min), None) => format!("value >= {}", format::number(min)),
            (None, Some(max)) => format!("value <= {}", format::number(max)),
            (None, None) => "any value".to_string(),
        }
    }

    fn judge(&self, input: &DecisionInput) -> Judgement {
        let metric = self.metric.as_str();
        let requirement = self.requirement();
        let champion_reported = input
            .champion
            .as_ref()
            .and_then(|champion| read_metric(&champion.metrics, metric).reported());
        let reading = read_metric(&input.candidate.metrics, metric);
        let breach = match reading {
            Reading::Missing => Some(format!(
                "candidate has no {metric} metric, which is guarded ({requirement})"
            )),
            Reading::NotFinite(value) => Some(format!(
                "candidate {metric} is {}, which is guarded ({requirement})",
                format::number(value)
            )),
            Reading::Finite(value) => match (self.min, self.max) {
                (Some(min), _) if value < min => Some(format!(
                    "candidate {metric} {} is below its floor {}",
                    format::number(value),
                    format::number(min)
                )),
                (_, Some(max)) if value > max => Some(format!(
                    "candidate {metric} {} is above its ceiling {}",
                    format::number(value),
                    format::number(max)
                )),
                _ => None,
            },
        };
        Judgement {
            verdict: if breach.is_some() {
                Verdict::Reject
            } else {
                Verdict::Promote
            },
            check: check(
                metric,
                reading.reported(),
                champion_reported,
                requirement,
                breach.is_none(),
            ),
            reason: breach.unwrap_or_default(),
        }
    }
}

/// The decision from every judgement: the most severe verdict, the first reason for it and
/// every check, the primary metric's first.
fn combine(judgements: Vec<Judgement>) -> Decision {
    let verdict = judgements.iter().fold(Verdict::Promote, |verdict, judged| {
        stricter(verdict, judged.verdict)
    });
    let failed = judgements
        .iter()
        .filter(|judged| !judged.check.passed)
        .count();
    let others = judgements.len().saturating_sub(1);
    let reason = match judgements.iter().find(|judged| judged.verdict == verdict) {
        Some(deciding) if verdict != Verdict::Promote => match failed.saturating_sub(1) {
            0 => deciding.reason.clone(),
            1 => format!("{} (and 1 more failed check)", deciding.reason),
            more => format!("{} (and {more} more failed checks)", deciding.reason),
        },
        Some(deciding) => match others {
            0 => deciding.reason.clone(),
            1 => format!("{}; the 1 other check passed", deciding.reason),
            all => format!("{}; all {all} other checks passed", deciding.reason),
        },
        None => String::new(),
    };
    Decision {
        verdict,
        reason,
        checks: judgements.into_iter().map(|judged| judged.check).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use policy_kit::decide_with;
    use policy_kit::fixtures::{candidate, champion, input};

    fn decide(
        candidate_metrics: &[(&str, f64)],
        champion_metrics: Option<&[(&str, f64)]>,
        settings: &str,
    ) -> Decision {
        let input = input(
            candidate(candidate_metrics),
            champion_metrics.map(|metrics| champion("3", metrics)),
            settings,
        );
        match decide_with::<MultiMetric>(&input) {
            Ok(decision) => decision,
            Err(err) => panic!("the policy should decide: {err}"),
        }
    }

    fn check_of<'a>(decision: &'a Decision, metric: &str) -> &'a policy_kit::Check {
        match decision.checks.iter().find(|check| check.metric == metric) {
            Some(check) => check,
            None => panic!("no check of {metric} in {:?}", decision.checks),
        }
    }

    const F1_COMPARED: &str = r#"{"comparison_metrics": ["f1_score"]}"#;

    #[test]
    fn promotes_when_the_primary_improves_and_no_comparison_metric_regresses() {
        let decision = decide(
            &[("accuracy", 0.95), ("f1_score", 0.91)],
            Some(&[("accuracy", 0.90), ("f1_score", 0.90)]),
            F1_COMPARED,
        );
        assert_eq!(decision.verdict, Verdict::Promote);
        assert_eq!(
            decision.reason,
            "accuracy improved 5.56% over champion version 3 (required 5%); the 1 other check passed"
        );
    }

    #[test]
    fn applies_the_threshold_rule_to_the_primary_metric() {
        let short = decide(&[("accuracy", 0.94)], Some(&[("accuracy", 0.90)]), "{}");
        assert_eq!(short.verdict, Verdict::Hold);
        let edge = decide(&[("accuracy", 0.945)], Some(&[("accuracy", 0.90)]), "{}");
        assert_eq!(edge.verdict, Verdict::Promote);
    }

    #[test]
    fn holds_when_a_comparison_metric_regresses() {
        let decision = decide(
            &[("accuracy", 0.95), ("f1_score", 0.85)],
            Some(&[("accuracy", 0.90), ("f1_score", 0.90)]),
            F1_COMPARED,
        );
        assert_eq!(decision.verdict, Verdict::Hold);
        assert_eq!(
            decision.reason,
            "f1_score regressed 0.05 against champion version 3 (tolerance 0)"
        );
        let f1 = check_of(&decision, "f1_score");
        assert_eq!(f1.requirement, "no worse than champion (higher is better)");
        assert!(!f1.passed);
    }

    #[test]
    fn promotes_when_a_regression_stays_within_its_tolerance() {
        let settings =
            r#"{"comparison_metrics": ["f1_score"], "metrics": {"f1_score": {"tolerance": 0.02}}}"#;
        let decision = decide(
            &[("accuracy", 0.95), ("f1_score", 0.88)],
            Some(&[("accuracy", 0.90), ("f1_score", 0.90)]),
            settings,
        );
        assert_eq!(decision.verdict, Verdict::Promote);
        assert_eq!(
            check_of(&decision, "f1_score").requirement,
            "at most 0.02 below champion (higher is better)"
        );
    }

    #[test]
    fn holds_when_a_regression_exceeds_its_tolerance() {
        let settings =
            r#"{"comparison_metrics": ["f1_score"], "metrics": {"f1_score": {"tolerance": 0.02}}}"#;
        let decision = decide(
            &[("accuracy", 0.95), ("f1_score", 0.87)],
            Some(&[("accuracy", 0.90), ("f1_score", 0.90)]),
            settings,
        );
        assert_eq!(decision.verdict, Verdict::Hold);
    }

    #[test]
    fn tolerance_follows_the_metric_direction() {
        let settings = r#"{"comparison_metrics": ["latency_ms"],
            "metrics": {"latency_ms": {"direction": "lower_is_better", "tolerance": 5}}}"#;
        let within = decide(
            &[("accuracy", 0.95), ("latency_ms", 104.0)],
            Some(&[("accuracy", 0.90), ("latency_ms", 100.0)]),
            settings,
        );
        assert_eq!(within.verdict, Verdict::Promote);
        assert_eq!(
            check_of(&within, "latency_ms").requirement,
            "at most 5 above champion (lower is better)"
        );
        let beyond = decide(
            &[("accuracy", 0.95), ("latency_ms", 106.0)],
            Some(&[("accuracy", 0.90), ("latency_ms", 100.0)]),
            settings,
        );
        assert_eq!(beyond.verdict, Verdict::Hold);
    }

    #[test]
    fn holds_when_a_comparison_metric_is_missing_from_the_candidate() {
        let decision = decide(
            &[("accuracy", 0.95)],
            Some(&[("accuracy", 0.90), ("f1_score", 0.90)]),
            F1_COMPARED,
        );
        assert_eq!(decision.verdict, Verdict::Hold);
        assert_eq!(
            decision.reason,
            "candidate has no f1_score metric, a comparison metric (missing_metric: hold)"
        );
        let f1 = check_of(&decision, "f1_score");
        assert_eq!((f1.candidate, f1.champion), (None, Some(0.90)));
        assert!(!f1.passed);
    }

    #[test]
    fn holds_when_a_comparison_metric_is_not_finite() {
        let decision = decide(
            &[("accuracy", 0.95), ("f1_score", f64::NAN)],
            Some(&[("accuracy", 0.90), ("f1_score", 0.90)]),
            F1_COMPARED,
        );
        assert_eq!(decision.verdict, Verdict::Hold);
        assert!(!check_of(&decision, "f1_score").passed);
    }

    #[test]
    fn rejects_a_missing_comparison_metric_when_told_to() {
        let settings = r#"{"comparison_metrics": ["f1_score"], "missing_metric": "reject"}"#;
        let decision = decide(&[("accuracy", 0.95)], Some(&[("accuracy", 0.90)]), settings);
        assert_eq!(decision.verdict, Verdict::Reject);
    }

    #[test]
    fn ignores_a_missing_comparison_metric_when_told_to() {
        let settings = r#"{"comparison_metrics": ["f1_score"], "missing_metric": "ignore"}"#;
        let decision = decide(&[("accuracy", 0.95)], Some(&[("accuracy", 0.90)]), settings);
        assert_eq!(decision.verdict, Verdict::Promote);
        let f1 = check_of(&decision, "f1_score");
        assert_eq!(f1.candidate, None);
        assert!(f1.passed);
        assert!(f1.requirement.contains("ignored (missing_metric: ignore)"));
    }

    #[test]
    fn passes_a_comparison_metric_the_champion_lacks() {
        let decision = decide(
            &[("accuracy", 0.95), ("f1_score", 0.5)],
            Some(&[("accuracy", 0.90)]),
            F1_COMPARED,
        );
        assert_eq!(decision.verdict, Verdict::Promote);
        let f1 = check_of(&decision, "f1_score");
        assert!(f1.passed);
        assert_eq!(
            f1.requirement,
            "no worse than champion (higher is better); the champion has no usable value, nothing to compare"
        );
    }

    #[test]
    fn promotes_when_no_champion_exists_and_every_guardrail_holds() {
        let settings =
            r#"{"comparison_metrics": ["f1_score"], "metrics": {"accuracy": {"min": 0.8}}}"#;
        let decision = decide(&[("accuracy", 0.85), ("f1_score", 0.8)], None, settings);
        assert_eq!(decision.verdict, Verdict::Promote);
        assert_eq!(
            check_of(&decision, "f1_score").requirement,
            "no worse than champion (higher is better); no champion, nothing to compare"
        );
    }

    #[test]
    fn rejects_a_candidate_below_a_floor_even_with_no_champion() {
        let settings = r#"{"metrics": {"accuracy": {"min": 0.8}}}"#;
        let decision = decide(&[("accuracy", 0.75)], None, settings);
        assert_eq!(decision.verdict, Verdict::Reject);
        assert_eq!(
            decision.reason,
            "candidate accuracy 0.75 is below its floor 0.8"
        );
    }

    #[test]
    fn rejects_a_candidate_above_a_ceiling_on_a_metric_not_compared() {
        let settings = r#"{"metrics": {"latency_ms": {"max": 200}}}"#;
        let decision = decide(
            &[("accuracy", 0.95), ("latency_ms", 250.0)],
            Some(&[("accuracy", 0.90), ("latency_ms", 150.0)]),
            settings,
        );
        assert_eq!(decision.verdict, Verdict::Reject);
        assert_eq!(
            decision.reason,
            "candidate latency_ms 250 is above its ceiling 200"
        );
        let latency = check_of(&decision, "latency_ms");
        assert_eq!(latency.requirement, "value <= 200");
        assert_eq!(
            (latency.candidate, latency.champion),
            (Some(250.0), Some(150.0))
        );
    }

    #[test]
    fn a_value_on_the_guardrail_passes() {
        let settings = r#"{"metrics": {"accuracy": {"min": 0.8, "max": 0.99}}}"#;
        let decision = decide(&[("accuracy", 0.8)], None, settings);
        assert_eq!(decision.verdict, Verdict::Promote);
        assert_eq!(
            check_of(&decision, "accuracy").requirement,
            "finite value; no champion to compare against"
        );
        assert_eq!(decision.checks[1].requirement, "0.8 <= value <= 0.99");
    }

    #[test]
    fn rejects_a_candidate_missing_a_guarded_metric_whatever_missing_metric_says() {
        let settings = r#"{"missing_metric": "ignore", "metrics": {"recall": {"min": 0.5}}}"#;
        let decision = decide(&[("accuracy", 0.95)], Some(&[("accuracy", 0.90)]), settings);
        assert_eq!(decision.verdict, Verdict::Reject);
        assert_eq!(
            decision.reason,
            "candidate has no recall metric, which is guarded (value >= 0.5)"
        );
    }

    #[test]
    fn rejects_a_candidate_whose_guarded_metric_is_not_finite() {
        let settings = r#"{"metrics": {"recall": {"max": 1}}}"#;
        let decision = decide(
            &[("accuracy", 0.95), ("recall", f64::INFINITY)],
            None,
            settings,
        );
        assert_eq!(decision.verdict, Verdict::Reject);
    }

    #[test]
    fn rejects_a_candidate_without_the_primary_metric() {
        let decision = decide(&[("f1_score", 0.9)], None, F1_COMPARED);
        assert_eq!(decision.verdict, Verdict::Reject);
        assert_eq!(
            decision.reason,
            "candidate has no accuracy metric; a model without its primary metric must not be served"
        );
    }

    #[test]
    fn holds_when_the_champion_lacks_the_primary_metric() {
        let decision = decide(&[("accuracy", 0.95)], Some(&[("loss", 0.1)]), "{}");
        assert_eq!(decision.verdict, Verdict::Hold);
    }

    #[test]
    fn reject_beats_hold() {
        let settings =
            r#"{"comparison_metrics": ["f1_score"], "metrics": {"recall": {"min": 0.5}}}"#;
        let decision = decide(
            &[("accuracy", 0.91), ("f1_score", 0.5), ("recall", 0.4)],
            Some(&[("accuracy", 0.90), ("f1_score", 0.9)]),
            settings,
        );
        assert_eq!(decision.verdict, Verdict::Reject);
        assert_eq!(
            decision.reason,
            "candidate recall 0.4 is below its floor 0.5 (and 2 more failed checks)"
        );
    }

    #[test]
    fn hold_beats_promote() {
        let decision = decide(
            &[("accuracy", 0.99), ("f1_score", 0.5)],
            Some(&[("accuracy", 0.90), ("f1_score", 0.9)]),
            F1_COMPARED,
        );
        assert_eq!(decision.verdict, Verdict::Hold);
        assert!(decision.checks[0].passed);
    }

    #[test]
    fn every_metric_looked_at_appears_in_the_checks() {
        let settings = r#"{"comparison_metrics": ["f1_score", "accuracy", "recall"],
            "metrics": {"latency_ms": {"max": 200}, "recall": {"min": 0.1}}}"#;
        let decision = decide(
            &[
                ("accuracy", 0.95),
                ("f1_score", 0.9),
                ("recall", 0.9),
                ("latency_ms", 100.0),
            ],
            Some(&[("accuracy", 0.90), ("f1_score", 0.9), ("recall", 0.9)]),
            settings,
        );
        let metrics: Vec<&str> = decision.checks.iter().map(|c| c.metric.as_str()).collect();
        assert_eq!(
            metrics,
            ["accuracy", "f1_score", "recall", "latency_ms", "recall"]
        );
        assert_eq!(decision.verdict, Verdict::Promote);
    }

    #[test]
    fn an_unknown_missing_metric_setting_is_an_error_naming_the_key() {
        let input = input(
            candidate(&[("accuracy", 0.95)]),
            None,
            r#"{"missing_metric": "skip"}"#,
        );
        assert_eq!(
            decide_with::<MultiMetric>(&input).err().as_deref(),
            Some(r#"setting missing_metric must be "hold", "reject" or "ignore", got "skip""#)
        );
    }

    #[test]
    fn a_tolerance_of_the_wrong_type_is_an_error_naming_the_key() {
        let input = input(
            candidate(&[("accuracy", 0.95)]),
            None,
            r#"{"comparison_metrics": ["f1_score"], "metrics": {"f1_score": {"tolerance": "small"}}}"#,
        );
        assert_eq!(
            decide_with::<MultiMetric>(&input).err().as_deref(),
            Some(r#"setting metrics.f1_score.tolerance must be a number >= 0, got "small""#)
        );
    }

    #[test]
    fn describes_itself_as_multi_metric_with_its_settings() {
        let info = MultiMetric::describe();
        assert_eq!(info.name, "multi-metric");
        let keys: Vec<&str> = info.settings.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "primary_metric",
                "improvement_threshold",
                "improvement_mode",
                "direction",
                "comparison_metrics",
                "missing_metric",
                "metrics"
            ]
        );
    }
}
