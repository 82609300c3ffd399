//! The threshold policy, model-pusher's default: promote when the primary metric improves on
//! the champion by at least `improvement_threshold`.
//!
//! The rule itself lives in [`policy_kit::PrimaryRule`] so that other policies apply exactly
//! the same one; this crate adds the informational `comparison_metrics` checks and the glue.

use policy_kit::compare::{Reading, read_metric};
use policy_kit::report::{check, setting};
use policy_kit::{Check, Decision, DecisionInput, Policy, PolicyInfo, PrimaryRule, Settings};

/// The threshold policy.
pub struct Threshold;

impl Policy for Threshold {
    fn describe() -> PolicyInfo {
        let mut settings = PrimaryRule::described_settings();
        settings.push(setting(
            "metrics",
            "per-metric settings by metric name; this policy reads metrics.<name>.direction, which wins over direction",
            Some("{}"),
        ));
        settings.push(setting(
            "comparison_metrics",
            "metrics reported beside the primary one for information only; they never change the verdict, and a missing one is reported as missing",
            Some("[]"),
        ));
        PolicyInfo {
            name: "threshold".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            description: "Promotes the candidate when its primary metric improves on the champion's by at least improvement_threshold (a gain within 1e-9 of the threshold counts, so 0.9 -> 0.945 at 5% promotes despite f64 rounding); holds it when not, or when the champion has no usable value; rejects a candidate whose primary metric is missing or not finite; promotes when there is no champion.".to_string(),
            settings,
        }
    }

    fn decide(input: &DecisionInput, settings: &Settings) -> Result<Decision, String> {
        let rule = PrimaryRule::from_settings(settings)?;
        let reported = settings.metric_list("comparison_metrics")?;
        let judged = rule.judge(input);
        let mut checks = vec![judged.check];
        checks.extend(
            reported
                .iter()
                .filter(|name| **name != rule.metric)
                .map(|name| reported_only(input, name)),
        );
        Ok(Decision {
            verdict: judged.verdict,
            reason: judged.reason,
            checks,
        })
    }
}

/// An informational check of a comparison metric: it always passes, because this policy
/// judges the primary metric alone.
fn reported_only(input: &DecisionInput, metric: &str) -> Check {
    let champion = input
        .champion
        .as_ref()
        .and_then(|champion| read_metric(&champion.metrics, metric).reported());
    match read_metric(&input.candidate.metrics, metric) {
        Reading::Missing => check(
            metric,
            None,
            champion,
            "reported only; the candidate has no such metric",
            true,
        ),
        reading => check(metric, reading.reported(), champion, "reported only", true),
    }
}

policy_kit::export_policy!(Threshold);

#[cfg(test)]
mod tests {
    use super::*;
    use policy_kit::fixtures::{candidate, champion, input};
    use policy_kit::{Verdict, decide_with};

    fn decide(input: &DecisionInput) -> Decision {
        match decide_with::<Threshold>(input) {
            Ok(decision) => decision,
            Err(err) => panic!("the policy should decide: {err}"),
        }
    }

    fn accuracy(candidate_value: f64, champion_value: f64) -> Decision {
        decide(&input(
            candidate(&[("accuracy", candidate_value)]),
            Some(champion("3", &[("accuracy", champion_value)])),
            "{}",
        ))
    }

    #[test]
    fn promotes_when_accuracy_improves_by_more_than_the_threshold() {
        let decision = accuracy(0.95, 0.90);
        assert_eq!(decision.verdict, Verdict::Promote);
        assert_eq!(
            decision.reason,
            "accuracy improved 5.56% over champion version 3 (required 5%)"
        );
    }

    #[test]
    fn promotes_when_the_gain_is_the_threshold_but_f64_puts_it_a_hair_below() {
        // 0.945 / 0.9 - 1 is 0.04999999999999993 in f64; on paper it is exactly 5%.
        let decision = accuracy(0.945, 0.90);
        assert_eq!(decision.verdict, Verdict::Promote);
    }

    #[test]
    fn holds_when_the_gain_falls_short_of_the_threshold() {
        let decision = accuracy(0.94, 0.90);
        assert_eq!(decision.verdict, Verdict::Hold);
        assert_eq!(
            decision.reason,
            "accuracy improved 4.44% over champion version 3; a gain of 5% is required"
        );
        assert!(!decision.checks[0].passed);
    }

    #[test]
    fn holds_when_the_candidate_is_worse() {
        assert_eq!(accuracy(0.85, 0.90).verdict, Verdict::Hold);
    }

    #[test]
    fn the_check_shows_both_values_and_the_requirement() {
        let decision = accuracy(0.95, 0.90);
        let primary = &decision.checks[0];
        assert_eq!(primary.metric, "accuracy");
        assert_eq!(primary.candidate, Some(0.95));
        assert_eq!(primary.champion, Some(0.90));
        assert_eq!(
            primary.requirement,
            "relative gain >= 5% over champion (higher is better)"
        );
        assert!(primary.passed);
    }

    #[test]
    fn promotes_a_lower_loss_when_lower_is_better() {
        let settings = r#"{"primary_metric": "loss", "direction": "lower_is_better"}"#;
        let decision = decide(&input(
            candidate(&[("loss", 0.18)]),
            Some(champion("3", &[("loss", 0.20)])),
            settings,
        ));
        assert_eq!(decision.verdict, Verdict::Promote);
        assert_eq!(
            decision.checks[0].requirement,
            "relative gain >= 5% over champion (lower is better)"
        );
    }

    #[test]
    fn holds_a_higher_loss_when_lower_is_better() {
        let settings =
            r#"{"primary_metric": "loss", "metrics": {"loss": {"direction": "lower_is_better"}}}"#;
        let decision = decide(&input(
            candidate(&[("loss", 0.25)]),
            Some(champion("3", &[("loss", 0.20)])),
            settings,
        ));
        assert_eq!(decision.verdict, Verdict::Hold);
    }

    #[test]
    fn promotes_in_absolute_mode_when_the_difference_reaches_the_threshold() {
        let settings = r#"{"improvement_mode": "absolute", "improvement_threshold": 0.01}"#;
        let decision = decide(&input(
            candidate(&[("accuracy", 0.91)]),
            Some(champion("3", &[("accuracy", 0.90)])),
            settings,
        ));
        assert_eq!(decision.verdict, Verdict::Promote);
        assert_eq!(
            decision.reason,
            "accuracy improved 0.01 over champion version 3 (required 0.01)"
        );
    }

    #[test]
    fn promotes_any_gain_over_a_zero_champion_in_relative_mode() {
        assert_eq!(accuracy(0.01, 0.0).verdict, Verdict::Promote);
    }

    #[test]
    fn holds_an_equal_value_over_a_zero_champion_in_relative_mode() {
        let decision = accuracy(0.0, 0.0);
        assert_eq!(decision.verdict, Verdict::Hold);
        assert!(decision.checks[0].requirement.contains("the champion is 0"));
    }

    #[test]
    fn holds_a_loss_against_a_zero_champion_in_relative_mode() {
        assert_eq!(accuracy(-0.01, 0.0).verdict, Verdict::Hold);
    }

    #[test]
    fn rejects_a_candidate_without_the_primary_metric() {
        let decision = decide(&input(
            candidate(&[("f1_score", 0.9)]),
            Some(champion("3", &[("accuracy", 0.9)])),
            "{}",
        ));
        assert_eq!(decision.verdict, Verdict::Reject);
        assert_eq!(
            decision.reason,
            "candidate has no accuracy metric; a model without its primary metric must not be served"
        );
        assert_eq!(decision.checks[0].candidate, None);
        assert!(!decision.checks[0].passed);
    }

    #[test]
    fn rejects_a_candidate_whose_primary_metric_is_nan() {
        let decision = accuracy(f64::NAN, 0.9);
        assert_eq!(decision.verdict, Verdict::Reject);
        assert_eq!(
            decision.reason,
            "candidate accuracy is NaN; a model whose primary metric is not finite must not be served"
        );
    }

    #[test]
    fn rejects_a_candidate_whose_primary_metric_is_infinite() {
        assert_eq!(accuracy(f64::INFINITY, 0.9).verdict, Verdict::Reject);
        assert_eq!(accuracy(f64::NEG_INFINITY, 0.9).verdict, Verdict::Reject);
    }

    #[test]
    fn rejects_a_candidate_without_the_primary_metric_even_with_no_champion() {
        let decision = decide(&input(candidate(&[]), None, "{}"));
        assert_eq!(decision.verdict, Verdict::Reject);
    }

    #[test]
    fn promotes_when_no_champion_exists() {
        let decision = decide(&input(candidate(&[("accuracy", 0.5)]), None, "{}"));
        assert_eq!(decision.verdict, Verdict::Promote);
        assert_eq!(
            decision.reason,
            "no champion exists for churn; the candidate becomes the first champion (accuracy 0.5)"
        );
        assert_eq!(decision.checks[0].champion, None);
        assert!(decision.checks[0].passed);
    }

    #[test]
    fn holds_when_the_champion_lacks_the_primary_metric() {
        let decision = decide(&input(
            candidate(&[("accuracy", 0.95)]),
            Some(champion("7", &[("loss", 0.2)])),
            "{}",
        ));
        assert_eq!(decision.verdict, Verdict::Hold);
        assert_eq!(
            decision.reason,
            "champion version 7 has no usable accuracy; cannot compare"
        );
    }

    #[test]
    fn holds_when_the_champion_primary_metric_is_nan() {
        let decision = accuracy(0.95, f64::NAN);
        assert_eq!(decision.verdict, Verdict::Hold);
        assert_eq!(
            decision.reason,
            "champion version 3 has no usable accuracy; cannot compare"
        );
    }

    #[test]
    fn comparison_metrics_are_reported_without_changing_the_verdict() {
        let decision = decide(&input(
            candidate(&[("accuracy", 0.95), ("f1_score", 0.5)]),
            Some(champion("3", &[("accuracy", 0.90), ("f1_score", 0.9)])),
            r#"{"comparison_metrics": ["f1_score"]}"#,
        ));
        assert_eq!(decision.verdict, Verdict::Promote);
        let f1 = &decision.checks[1];
        assert_eq!(f1.metric, "f1_score");
        assert_eq!((f1.candidate, f1.champion), (Some(0.5), Some(0.9)));
        assert_eq!(f1.requirement, "reported only");
        assert!(f1.passed);
    }

    #[test]
    fn a_missing_comparison_metric_is_reported_as_missing_not_as_an_error() {
        let decision = decide(&input(
            candidate(&[("accuracy", 0.95)]),
            Some(champion("3", &[("accuracy", 0.90)])),
            r#"{"comparison_metrics": ["recall"]}"#,
        ));
        assert_eq!(decision.verdict, Verdict::Promote);
        let recall = &decision.checks[1];
        assert_eq!(recall.candidate, None);
        assert_eq!(
            recall.requirement,
            "reported only; the candidate has no such metric"
        );
    }

    #[test]
    fn the_primary_metric_is_not_reported_twice() {
        let decision = accuracy(0.95, 0.90);
        assert_eq!(decision.checks.len(), 1);
        let listed = decide(&input(
            candidate(&[("accuracy", 0.95)]),
            None,
            r#"{"comparison_metrics": ["accuracy"]}"#,
        ));
        assert_eq!(listed.checks.len(), 1);
    }

    #[test]
    fn reads_the_seed_settings() {
        let settings = r#"{"improvement_threshold": 0.02, "primary_metric": "f1_score", "comparison_metrics": ["accuracy", "precision", "recall"]}"#;
        let decision = decide(&input(
            candidate(&[("f1_score", 0.93), ("accuracy", 0.9)]),
            Some(champion("2", &[("f1_score", 0.9)])),
            settings,
        ));
        assert_eq!(decision.verdict, Verdict::Promote);
        assert_eq!(decision.checks.len(), 4);
    }

    #[test]
    fn ignores_keys_it_does_not_read() {
        let decision = decide(&input(
            candidate(&[("accuracy", 0.95)]),
            None,
            r#"{"missing_metric": 12, "metrics": {"accuracy": {"tolerance": "x"}}}"#,
        ));
        assert_eq!(decision.verdict, Verdict::Promote);
    }

    #[test]
    fn a_threshold_of_the_wrong_type_is_an_error_naming_the_key() {
        let result = decide_with::<Threshold>(&input(
            candidate(&[("accuracy", 0.95)]),
            None,
            r#"{"improvement_threshold": "abc"}"#,
        ));
        assert_eq!(
            result.err().as_deref(),
            Some(r#"setting improvement_threshold must be a number, got "abc""#)
        );
    }

    #[test]
    fn an_unknown_improvement_mode_is_an_error_naming_the_key() {
        let result = decide_with::<Threshold>(&input(
            candidate(&[("accuracy", 0.95)]),
            None,
            r#"{"improvement_mode": "percent"}"#,
        ));
        assert!(result.is_err_and(|err| err.starts_with("setting improvement_mode ")));
    }

    #[test]
    fn comparison_metrics_of_the_wrong_type_are_an_error_naming_the_key() {
        let result = decide_with::<Threshold>(&input(
            candidate(&[("accuracy", 0.95)]),
            None,
            r#"{"comparison_metrics": "f1_score"}"#,
        ));
        assert!(result.is_err_and(|err| err.starts_with("setting comparison_metrics ")));
    }

    #[test]
    fn describes_itself_as_threshold_with_its_settings() {
        let info = Threshold::describe();
        assert_eq!(info.name, "threshold");
        let keys: Vec<&str> = info.settings.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "primary_metric",
                "improvement_threshold",
                "improvement_mode",
                "direction",
                "metrics",
                "comparison_metrics"
            ]
        );
    }
}
