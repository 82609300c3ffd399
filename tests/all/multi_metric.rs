//! The multi-metric policy through the real runtime.

use model_pusher::decision::{Decision, Verdict};
use serde_json::{Value, json};

use crate::support::policies;

fn settings() -> Value {
    json!({
        "improvement_threshold": 0.05,
        "primary_metric": "accuracy",
        "comparison_metrics": ["precision", "recall"],
        "metrics": {
            "precision": {"tolerance": 0.01},
            "recall": {"min": 0.8},
        },
    })
}

fn decide(
    settings: Value,
    candidate: &[(&str, f64)],
    champion: Option<&[(&str, f64)]>,
) -> Decision {
    policies::bundled("multi-metric")
        .decide(&policies::input(settings, candidate, champion))
        .unwrap()
}

const CHAMPION: &[(&str, f64)] = &[("accuracy", 0.90), ("precision", 0.85), ("recall", 0.85)];

#[test]
fn promotes_when_the_primary_improves_and_nothing_regresses() {
    let decision = decide(
        settings(),
        &[("accuracy", 0.95), ("precision", 0.85), ("recall", 0.86)],
        Some(CHAMPION),
    );
    assert_eq!(decision.verdict, Verdict::Promote, "{}", decision.reason);
    let looked_at: Vec<&str> = decision
        .checks
        .iter()
        .map(|check| check.metric.as_str())
        .collect();
    for metric in ["accuracy", "precision", "recall"] {
        assert!(
            looked_at.contains(&metric),
            "{metric} missing from {looked_at:?}"
        );
    }
}

#[test]
fn holds_when_a_comparison_metric_regresses_beyond_its_tolerance() {
    let decision = decide(
        settings(),
        &[("accuracy", 0.95), ("precision", 0.80), ("recall", 0.86)],
        Some(CHAMPION),
    );
    assert_eq!(decision.verdict, Verdict::Hold, "{}", decision.reason);
    let precision = decision
        .checks
        .iter()
        .find(|check| check.metric == "precision")
        .unwrap();
    assert!(!precision.passed);
}

#[test]
fn promotes_a_regression_within_tolerance() {
    let decision = decide(
        settings(),
        &[("accuracy", 0.95), ("precision", 0.845), ("recall", 0.86)],
        Some(CHAMPION),
    );
    assert_eq!(decision.verdict, Verdict::Promote, "{}", decision.reason);
}

#[test]
fn rejects_a_guardrail_breach_even_with_a_better_primary() {
    let decision = decide(
        settings(),
        &[("accuracy", 0.99), ("precision", 0.90), ("recall", 0.5)],
        Some(CHAMPION),
    );
    assert_eq!(decision.verdict, Verdict::Reject, "{}", decision.reason);
    assert!(decision.reason.contains("recall"), "{}", decision.reason);
}

#[test]
fn rejects_a_guardrail_breach_when_there_is_no_champion() {
    let decision = decide(
        settings(),
        &[("accuracy", 0.99), ("precision", 0.9), ("recall", 0.5)],
        None,
    );
    assert_eq!(decision.verdict, Verdict::Reject, "{}", decision.reason);
}

#[test]
fn holds_when_a_comparison_metric_is_missing() {
    let decision = decide(
        settings(),
        &[("accuracy", 0.99), ("recall", 0.9)],
        Some(CHAMPION),
    );
    assert_eq!(decision.verdict, Verdict::Hold, "{}", decision.reason);
    let precision = decision
        .checks
        .iter()
        .find(|check| check.metric == "precision")
        .unwrap();
    assert_eq!(precision.candidate, None);
    assert!(!precision.passed);
}

#[test]
fn lower_is_better_comparison_metric_regresses_upward() {
    let settings = json!({
        "primary_metric": "accuracy",
        "comparison_metrics": ["latency_ms"],
        "metrics": {"latency_ms": {"direction": "lower_is_better", "tolerance": 5.0}},
    });
    let champion: &[(&str, f64)] = &[("accuracy", 0.90), ("latency_ms", 100.0)];
    let slower = decide(
        settings.clone(),
        &[("accuracy", 0.99), ("latency_ms", 120.0)],
        Some(champion),
    );
    assert_eq!(slower.verdict, Verdict::Hold, "{}", slower.reason);
    let faster = decide(
        settings,
        &[("accuracy", 0.99), ("latency_ms", 80.0)],
        Some(champion),
    );
    assert_eq!(faster.verdict, Verdict::Promote, "{}", faster.reason);
}

#[test]
fn rejects_a_nan_primary_metric() {
    let decision = decide(
        settings(),
        &[("accuracy", f64::NAN), ("precision", 0.9), ("recall", 0.9)],
        Some(CHAMPION),
    );
    assert_eq!(decision.verdict, Verdict::Reject, "{}", decision.reason);
}
