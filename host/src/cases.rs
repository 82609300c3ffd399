//! Policy test cases: a YAML file of inputs and expected verdicts, run by `model-pusher policy
//! test`, so that a team tests its policy the way it tests code.
//!
//! ```yaml
//! settings:                      # shared by every case; a case's own settings override keys
//!   primary_metric: accuracy
//!   improvement_threshold: 0.05
//! cases:
//!   - name: promotes_on_a_gain_above_the_threshold
//!     candidate: {accuracy: 0.95}  # a list is a series: {accuracy_samples: [1, 0, 1]}
//!     champion: {accuracy: 0.90}  # or {version: "3", run_id: "...", metrics: {...}}; omit for none
//!     expect: promote             # promote | hold | reject | error
//!     reason_contains: "improved" # optional
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::decision::Verdict;
use crate::inputs::{InputError, Metrics, Settings};
use crate::policy::{ChampionInput, DecisionInput, Policy};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CasesFile {
    #[serde(default)]
    settings: serde_yaml::Value,
    #[serde(default = "default_model_name")]
    model_name: String,
    cases: Vec<Case>,
}

fn default_model_name() -> String {
    "model".to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default)]
    settings: serde_yaml::Value,
    candidate: BTreeMap<String, CaseMetric>,
    #[serde(default)]
    champion: Option<ChampionCase>,
    expect: Expected,
    #[serde(default)]
    reason_contains: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ChampionCase {
    Full {
        version: String,
        #[serde(default)]
        run_id: String,
        metrics: BTreeMap<String, CaseMetric>,
    },
    Metrics(BTreeMap<String, CaseMetric>),
}

/// A metric in a case: a number, or a list of numbers (a series), as in `metrics.json`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum CaseMetric {
    Value(f64),
    Series(Vec<f64>),
}

fn case_metrics(metrics: BTreeMap<String, CaseMetric>) -> Metrics {
    let mut built = Metrics::default();
    for (name, metric) in metrics {
        match metric {
            CaseMetric::Value(value) => {
                built.values.insert(name, value);
            }
            CaseMetric::Series(values) => {
                built.series.insert(name, values);
            }
        }
    }
    built
}

/// What a case expects of the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expected {
    Promote,
    Hold,
    Reject,
    /// The policy fails to decide (refuses, traps or breaks a limit).
    Error,
}

impl Expected {
    fn of(outcome: &Result<Verdict, String>) -> Self {
        match outcome {
            Ok(Verdict::Promote) => Expected::Promote,
            Ok(Verdict::Hold) => Expected::Hold,
            Ok(Verdict::Reject) => Expected::Reject,
            Err(_) => Expected::Error,
        }
    }
}

/// The result of one case.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseResult {
    pub name: String,
    pub expected: Expected,
    /// The verdict, or the error when the policy failed to decide.
    pub outcome: Result<Verdict, String>,
    /// The policy's reason (or error), for the report.
    pub reason: String,
    /// Why the case failed, or `None` when it passed.
    pub failure: Option<String>,
}

/// Runs every case of a cases file through a policy.
///
/// # Errors
///
/// When the file cannot be read or is not a valid cases file; a case that fails is a result,
/// not an error.
pub fn run(policy: &Policy, path: &Path) -> Result<Vec<CaseResult>, InputError> {
    let text = std::fs::read_to_string(path).map_err(|source| InputError::Read {
        path: path.to_owned(),
        source,
    })?;
    let file: CasesFile = serde_yaml::from_str(&text).map_err(|error| InputError::Yaml {
        path: path.to_owned(),
        message: error.to_string(),
    })?;

    let mut results = Vec::with_capacity(file.cases.len());
    for (index, case) in file.cases.into_iter().enumerate() {
        let settings = merged_settings(path, index, &file.settings, &case.settings)?;
        let input = DecisionInput {
            model_name: file.model_name.clone(),
            candidate_run_id: None,
            candidate: case_metrics(case.candidate),
            champion: case.champion.map(|champion| match champion {
                ChampionCase::Full {
                    version,
                    run_id,
                    metrics,
                } => ChampionInput {
                    version,
                    run_id,
                    metrics: case_metrics(metrics),
                },
                ChampionCase::Metrics(metrics) => ChampionInput {
                    version: "1".to_owned(),
                    run_id: String::new(),
                    metrics: case_metrics(metrics),
                },
            }),
            settings,
        };

        let decision = policy.decide(&input);
        let reason = match &decision {
            Ok(decision) => decision.reason.clone(),
            Err(error) => error.to_string(),
        };
        let outcome = decision
            .map(|decision| decision.verdict)
            .map_err(|error| error.to_string());
        let got = Expected::of(&outcome);
        let failure = if got != case.expect {
            Some(format!("expected {:?}, got {:?}", case.expect, got).to_lowercase())
        } else {
            case.reason_contains
                .filter(|needle| !reason.contains(needle.as_str()))
                .map(|needle| format!("reason does not contain {needle:?}"))
        };
        results.push(CaseResult {
            name: case.name,
            expected: case.expect,
            outcome,
            reason,
            failure,
        });
    }
    Ok(results)
}

/// The file's settings with the case's keys laid over them.
fn merged_settings(
    path: &Path,
    index: usize,
    shared: &serde_yaml::Value,
    own: &serde_yaml::Value,
) -> Result<Settings, InputError> {
    let as_object = |value: &serde_yaml::Value, field: String| {
        let json = serde_json::to_value(value).map_err(|error| InputError::Field {
            path: path.to_owned(),
            field: field.clone(),
            problem: error.to_string(),
        })?;
        match json {
            serde_json::Value::Null => Ok(serde_json::Map::new()),
            serde_json::Value::Object(map) => Ok(map),
            other => Err(InputError::Field {
                path: path.to_owned(),
                field,
                problem: format!("must be a mapping of settings, found {other}"),
            }),
        }
    };
    let mut settings = as_object(shared, "settings".to_owned())?;
    settings.extend(as_object(own, format!("cases[{index}].settings"))?);
    Ok(Settings::from_json(
        PathBuf::from(path),
        serde_json::Value::Object(settings),
    ))
}
