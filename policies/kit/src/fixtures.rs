//! Builders of policy inputs for unit tests; compiled only with the `fixtures` feature.

use crate::{Candidate, Champion, DecisionInput, Metric};

/// Metrics from `(name, value)` pairs.
pub fn metrics(pairs: &[(&str, f64)]) -> Vec<Metric> {
    pairs
        .iter()
        .map(|&(name, value)| Metric {
            name: name.to_string(),
            value,
        })
        .collect()
}

/// A candidate that reports `pairs` and has no run yet.
pub fn candidate(pairs: &[(&str, f64)]) -> Candidate {
    Candidate {
        run_id: None,
        metrics: metrics(pairs),
        series: Vec::new(),
    }
}

/// Champion version `version` reporting `pairs`.
pub fn champion(version: &str, pairs: &[(&str, f64)]) -> Champion {
    Champion {
        version: version.to_string(),
        run_id: format!("run-of-version-{version}"),
        metrics: metrics(pairs),
        series: Vec::new(),
    }
}

/// The input for model `churn`, with `settings` as the settings JSON.
pub fn input(candidate: Candidate, champion: Option<Champion>, settings: &str) -> DecisionInput {
    DecisionInput {
        model_name: "churn".to_string(),
        candidate,
        champion,
        settings: settings.to_string(),
    }
}
