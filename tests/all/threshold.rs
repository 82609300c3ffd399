//! The threshold policy, the seed's rule, through the real runtime.

use model_pusher::decision::{Decision, Verdict};
use serde_json::{Value, json};

use crate::support::policies;

fn seed_settings() -> Value {
    json!({
        "improvement_threshold": 0.05,
        "primary_metric": "accuracy",
        "comparison_metrics": ["precision", "recall", "f1_score"],
    })
}

fn decide(
    settings: Value,
    candidate: &[(&str, f64)],
    champion: Option<&[(&str, f64)]>,
) -> Decision {
    policies::bundled("threshold")
        .decide(&policies::input(settings, candidate, champion))
        .unwrap()
}

#[test]
fn promotes_when_no_champion_exists() {
    let decision = decide(seed_settings(), &[("accuracy", 0.7)], None);
    assert_eq!(decision.verdict, Verdict::Promote, "{}", decision.reason);
}

#[test]
fn promotes_a_gain_above_the_threshold() {
    // 0.90 -> 0.95 is a relative gain of 5.56%.
    let decision = decide(
        seed_settings(),
        &[("accuracy", 0.95)],
        Some(&[("accuracy", 0.90)]),
    );
    assert_eq!(decision.verdict, Verdict::Promote, "{}", decision.reason);
}

#[test]
fn promotes_a_gain_on_the_threshold_despite_float_rounding() {
    // (0.945 - 0.9) / 0.9 is 0.04999999999999993 in f64: a gain of exactly 5% on paper. The
    // policy counts a gain within 1e-9 of the threshold as reaching it.
    let (candidate, champion) = std::hint::black_box((0.945_f64, 0.9_f64));
    assert!((candidate - champion) / champion < 0.05);
    let decision = decide(
        seed_settings(),
        &[("accuracy", 0.945)],
        Some(&[("accuracy", 0.9)]),
    );
    assert_eq!(decision.verdict, Verdict::Promote, "{}", decision.reason);
}

#[test]
fn holds_a_gain_below_the_threshold() {
    let decision = decide(
        seed_settings(),
        &[("accuracy", 0.94)],
        Some(&[("accuracy", 0.90)]),
    );
    assert_eq!(decision.verdict, Verdict::Hold, "{}", decision.reason);
    let check = &decision.checks[0];
    assert_eq!(check.metric, "accuracy");
    assert_eq!(check.candidate, Some(0.94));
    assert_eq!(check.champion, Some(0.90));
    assert!(!check.passed);
}

#[test]
fn lower_is_better_promotes_a_smaller_loss() {
    let settings = json!({
        "primary_metric": "log_loss",
        "improvement_threshold": 0.05,
        "direction": "lower_is_better",
    });
    let decision = decide(
        settings.clone(),
        &[("log_loss", 0.30)],
        Some(&[("log_loss", 0.40)]),
    );
    assert_eq!(decision.verdict, Verdict::Promote, "{}", decision.reason);
    let worse = decide(settings, &[("log_loss", 0.45)], Some(&[("log_loss", 0.40)]));
    assert_eq!(worse.verdict, Verdict::Hold, "{}", worse.reason);
}

#[test]
fn per_metric_direction_wins_over_the_global_one() {
    let settings = json!({
        "primary_metric": "rmse",
        "direction": "higher_is_better",
        "metrics": {"rmse": {"direction": "lower_is_better"}},
    });
    let decision = decide(settings, &[("rmse", 1.0)], Some(&[("rmse", 2.0)]));
    assert_eq!(decision.verdict, Verdict::Promote, "{}", decision.reason);
}

#[test]
fn absolute_mode_compares_differences() {
    let settings = json!({
        "primary_metric": "accuracy",
        "improvement_threshold": 0.02,
        "improvement_mode": "absolute",
    });
    let promoted = decide(
        settings.clone(),
        &[("accuracy", 0.93)],
        Some(&[("accuracy", 0.90)]),
    );
    assert_eq!(promoted.verdict, Verdict::Promote, "{}", promoted.reason);
    let held = decide(settings, &[("accuracy", 0.91)], Some(&[("accuracy", 0.90)]));
    assert_eq!(held.verdict, Verdict::Hold, "{}", held.reason);
}

#[test]
fn zero_champion_is_a_defined_result_not_a_division_by_zero() {
    let better = decide(
        seed_settings(),
        &[("accuracy", 0.1)],
        Some(&[("accuracy", 0.0)]),
    );
    assert_eq!(better.verdict, Verdict::Promote, "{}", better.reason);
    let equal = decide(
        seed_settings(),
        &[("accuracy", 0.0)],
        Some(&[("accuracy", 0.0)]),
    );
    assert_eq!(equal.verdict, Verdict::Hold, "{}", equal.reason);
}

#[test]
fn rejects_a_candidate_without_the_primary_metric() {
    let decision = decide(
        seed_settings(),
        &[("precision", 0.9)],
        Some(&[("accuracy", 0.9)]),
    );
    assert_eq!(decision.verdict, Verdict::Reject);
    assert!(decision.reason.contains("accuracy"), "{}", decision.reason);
}

#[test]
fn rejects_a_nan_or_infinite_primary_metric() {
    for value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let decision = decide(seed_settings(), &[("accuracy", value)], None);
        assert_eq!(
            decision.verdict,
            Verdict::Reject,
            "{value}: {}",
            decision.reason
        );
    }
}

#[test]
fn holds_when_the_champion_lacks_the_primary_metric() {
    let decision = decide(
        seed_settings(),
        &[("accuracy", 0.99)],
        Some(&[("auc", 0.9)]),
    );
    assert_eq!(decision.verdict, Verdict::Hold, "{}", decision.reason);
}

#[test]
fn missing_comparison_metric_is_a_check_not_a_crash() {
    // The seed lists f1_score, which its evaluation step never writes.
    let decision = decide(
        seed_settings(),
        &[("accuracy", 0.95), ("precision", 0.9), ("recall", 0.9)],
        Some(&[("accuracy", 0.90)]),
    );
    assert_eq!(decision.verdict, Verdict::Promote);
    let f1 = decision
        .checks
        .iter()
        .find(|check| check.metric == "f1_score")
        .unwrap();
    assert_eq!(f1.candidate, None);
}

#[test]
fn setting_of_the_wrong_type_is_an_error_naming_it() {
    let error = policies::bundled("threshold")
        .decide(&policies::input(
            json!({"improvement_threshold": "five percent"}),
            &[("accuracy", 0.95)],
            Some(&[("accuracy", 0.90)]),
        ))
        .unwrap_err();
    assert!(
        error.to_string().contains("improvement_threshold"),
        "{error}"
    );
}

#[test]
fn describes_itself_with_its_settings() {
    let info = policies::bundled("threshold").info();
    assert_eq!(info.name, "threshold");
    let keys: Vec<&str> = info
        .settings
        .iter()
        .map(|setting| setting.key.as_str())
        .collect();
    for key in [
        "primary_metric",
        "improvement_threshold",
        "improvement_mode",
        "direction",
    ] {
        assert!(keys.contains(&key), "{key} missing from {keys:?}");
    }
}
