//! The push: find the champion, ask the policy, log the candidate as a run, register it, and
//! apply the verdict in the registry.
//!
//! The order of the writes is what keeps serving safe. Nothing is written until the champion
//! has been read and the policy has decided; a registry error while reading the champion stops
//! the push instead of being taken for "no champion". On promotion the new version becomes the
//! champion before the old one is archived, so there is never a moment without one, and the
//! only versions the pusher moves are the one it registered and the one it replaced.

use std::path::Path;
use std::time::{Duration, SystemTime};

use rand::RngCore as _;
use serde::Serialize;

use crate::decision::{Decision, Verdict};
use crate::inputs::{Metrics, ModelDir, Settings};
use crate::mlmodel::{self, MLMODEL_FILE, MODEL_ARTIFACT_DIR};
use crate::policy::{ChampionInput, DecisionInput, Policy, PolicyError};
use crate::registry::{
    KeyValue, Metric, MlflowClient, ModelVersion, ModelVersionStatus, RegistryError, RunStatus,
    Stage,
};

/// Tags model-pusher writes on runs and model versions.
pub mod tags {
    pub const VERDICT: &str = "model_pusher.verdict";
    pub const REASON: &str = "model_pusher.reason";
    pub const POLICY: &str = "model_pusher.policy";
    pub const POLICY_VERSION: &str = "model_pusher.policy_version";
    pub const POLICY_SHA256: &str = "model_pusher.policy_sha256";
    pub const PREVIOUS_CHAMPION: &str = "model_pusher.previous_champion";
    pub const PIPELINE_RUN_ID: &str = "model_pusher.pipeline_run_id";
    /// On a version: `champion`, `challenger`, `rejected` or `archived`, as the pusher left it.
    pub const STATUS: &str = "model_pusher.status";
}

/// MLflow's limit on a param value in 2.x servers; longer values are cut.
const PARAM_VALUE_MAX: usize = 500;
/// A tag value is cut to this length.
const TAG_VALUE_MAX: usize = 5000;

/// How the registry marks the champion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// MLflow's stages: the champion is the version in the given stage (Production), a held
    /// candidate goes to Staging, a replaced champion to Archived.
    Stages { stage: Stage },
    /// MLflow's aliases: the champion holds `champion`, a held candidate `challenger`.
    Aliases {
        champion: String,
        challenger: String,
    },
}

/// What to push and how.
#[derive(Debug, Clone)]
pub struct PushOptions {
    pub model_name: String,
    pub mode: Mode,
    /// The experiment the candidate's run is logged in.
    pub experiment: String,
    /// The Kubeflow run this push belongs to, recorded as a tag.
    pub pipeline_run_id: Option<String>,
    /// Decide and report, writing nothing.
    pub dry_run: bool,
    /// How long to wait for a new model version to become READY.
    pub ready_timeout: Duration,
}

/// The files a push starts from, already read and checked.
#[derive(Debug, Clone)]
pub struct PushInputs {
    pub settings: Settings,
    pub candidate: Metrics,
    pub model: ModelDir,
}

/// The champion as read from the registry.
#[derive(Debug, Clone, PartialEq)]
pub struct Champion {
    pub version: String,
    pub run_id: Option<String>,
    pub metrics: Metrics,
}

/// What a push did, as written to `--decision-out`.
#[derive(Debug, Clone, Serialize)]
pub struct PushReport {
    #[serde(flatten)]
    pub decision: Decision,
    pub model_name: String,
    /// The version registered for the candidate; none in a dry run.
    pub model_version: Option<String>,
    /// The run that logged the candidate; none in a dry run.
    pub run_id: Option<String>,
    /// The champion before the push.
    pub previous_champion: Option<String>,
    /// The champion after the push (in a dry run, what it would be).
    pub champion: Option<String>,
    pub registry_url: String,
    pub mode: String,
    pub dry_run: bool,
    /// The registry writes made (or, in a dry run, that would be made), in order.
    pub actions: Vec<String>,
    /// HTTP requests sent to the registry.
    pub requests: usize,
}

/// A step of the push, named in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    FindChampion,
    ReadChampionMetrics,
    OpenExperiment,
    LogRun,
    UploadModel,
    Register,
    Promote,
    ArchivePrevious,
    Hold,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::FindChampion => "finding the champion",
            Step::ReadChampionMetrics => "reading the champion's metrics",
            Step::OpenExperiment => "opening the experiment",
            Step::LogRun => "logging the candidate's run",
            Step::UploadModel => "uploading the model",
            Step::Register => "registering the model version",
            Step::Promote => "promoting the new version",
            Step::ArchivePrevious => "archiving the previous champion",
            Step::Hold => "marking the new version as challenger",
        })
    }
}

/// Why a push stopped. Whatever the step, the champion it found is still the champion.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("{step}: {source}")]
    Registry {
        step: Step,
        #[source]
        source: RegistryError,
    },
    #[error("no decision, nothing written: {0}")]
    Policy(#[from] PolicyError),
}

impl PushError {
    /// Whether the server refused the credentials.
    pub fn is_unauthorized(&self) -> bool {
        matches!(
            self,
            PushError::Registry {
                source: RegistryError::Unauthorized { .. },
                ..
            }
        )
    }
}

fn at(step: Step) -> impl FnOnce(RegistryError) -> PushError {
    move |source| PushError::Registry { step, source }
}

/// Runs a push end to end.
///
/// # Errors
///
/// When the registry refuses or fails a call (the error names the step), or when the policy
/// cannot decide; in both cases the champion is left as it was.
pub async fn push(
    client: &MlflowClient,
    policy: &Policy,
    inputs: &PushInputs,
    options: &PushOptions,
) -> Result<PushReport, PushError> {
    let name = options.model_name.as_str();

    // The champion's lookup is the push's first request, so it also checks the credentials
    // before anything is written.
    let champion = find_champion(client, name, &options.mode).await?;
    tracing::info!(
        model = name,
        champion = champion
            .as_ref()
            .map(|c| c.version.as_str())
            .unwrap_or("none"),
        "found the champion"
    );

    let decision = policy.decide(&DecisionInput {
        model_name: name.to_owned(),
        candidate_run_id: None,
        candidate: inputs.candidate.clone(),
        champion: champion.as_ref().map(|champion| ChampionInput {
            version: champion.version.clone(),
            run_id: champion.run_id.clone().unwrap_or_default(),
            metrics: champion.metrics.clone(),
        }),
        settings: inputs.settings.clone(),
    })?;
    tracing::info!(
        model = name,
        policy = decision.policy.name.as_str(),
        verdict = %decision.verdict,
        "{}",
        decision.reason
    );

    let previous_champion = champion.as_ref().map(|champion| champion.version.clone());
    let mut report = PushReport {
        decision,
        model_name: name.to_owned(),
        model_version: None,
        run_id: None,
        previous_champion: previous_champion.clone(),
        champion: previous_champion,
        registry_url: client.server().to_owned(),
        mode: match &options.mode {
            Mode::Stages { .. } => "stages".to_owned(),
            Mode::Aliases { .. } => "aliases".to_owned(),
        },
        dry_run: options.dry_run,
        actions: Vec::new(),
        requests: 0,
    };

    if options.dry_run {
        report.actions = planned_actions(&report, inputs, options);
        if report.decision.verdict == Verdict::Promote {
            report.champion = Some("(the new version)".to_owned());
        }
        report.requests = client.requests_made();
        return Ok(report);
    }

    let run_id = log_run(client, inputs, options, &report.decision).await?;
    report.run_id = Some(run_id.clone());
    report.actions.push(format!(
        "logged run {run_id} with the model under {MODEL_ARTIFACT_DIR}/"
    ));

    let version = register(client, options, &run_id, &report).await?;
    tracing::info!(
        model = name,
        version = version.as_str(),
        run_id = run_id.as_str(),
        "registered the candidate"
    );
    report.model_version = Some(version.clone());
    report
        .actions
        .push(format!("registered {name} version {version}"));

    apply_verdict(client, options, &version, champion.as_ref(), &mut report).await?;
    report.requests = client.requests_made();
    Ok(report)
}

/// Reads the champion and its metrics. A failed call is an error, never "no champion".
async fn find_champion(
    client: &MlflowClient,
    name: &str,
    mode: &Mode,
) -> Result<Option<Champion>, PushError> {
    let version: Option<ModelVersion> = match mode {
        Mode::Stages { stage } => match client.get_latest_versions(name, &[*stage]).await {
            Ok(versions) => versions
                .into_iter()
                .filter(|version| version.current_stage == *stage)
                .max_by_key(|version| version_number(&version.version)),
            // A model that was never registered has no champion; anything else is an error.
            Err(error) if error.is_not_found() => None,
            Err(error) => return Err(at(Step::FindChampion)(error)),
        },
        Mode::Aliases { champion, .. } => client
            .get_model_version_by_alias(name, champion)
            .await
            .map_err(at(Step::FindChampion))?,
    };
    let Some(version) = version else {
        return Ok(None);
    };

    let run_id = version.run_id.clone().filter(|run_id| !run_id.is_empty());
    let metrics = match &run_id {
        Some(run_id) => {
            let run = client
                .get_run(run_id)
                .await
                .map_err(at(Step::ReadChampionMetrics))?;
            Metrics::from_values(
                run.data
                    .metrics
                    .into_iter()
                    .map(|metric| (metric.key, metric.value)),
            )
        }
        None => {
            tracing::warn!(
                model = name,
                version = version.version.as_str(),
                "the champion has no run; the policy sees it without metrics"
            );
            Metrics::default()
        }
    };
    Ok(Some(Champion {
        version: version.version,
        run_id,
        metrics,
    }))
}

/// MLflow versions are decimal strings; one that is not sorts first.
fn version_number(version: &str) -> u64 {
    version.parse().unwrap_or(0)
}

/// Logs the candidate's run: settings as params, metrics, decision tags, and the model files
/// (with an `MLmodel` when the directory is the seed's bare `model.pkl`).
async fn log_run(
    client: &MlflowClient,
    inputs: &PushInputs,
    options: &PushOptions,
    decision: &Decision,
) -> Result<String, PushError> {
    let experiment = client
        .get_or_create_experiment(&options.experiment)
        .await
        .map_err(at(Step::OpenExperiment))?;
    let run = client
        .create_run(
            &experiment.experiment_id,
            Some(&format!("push-{}", options.model_name)),
            &run_tags(decision, options),
        )
        .await
        .map_err(at(Step::LogRun))?;
    let run_id = run.info.run_id.clone();

    let timestamp = now_millis();
    let metrics: Vec<Metric> = inputs
        .candidate
        .values
        .iter()
        .map(|(key, value)| Metric {
            key: key.clone(),
            value: *value,
            timestamp,
            step: 0,
        })
        .collect();
    let params = flatten_settings(&inputs.settings.value);
    client
        .log_batch(&run_id, &metrics, &params, &[])
        .await
        .map_err(at(Step::LogRun))?;

    upload_model(client, &run.info, &inputs.model).await?;
    client
        .update_run(&run_id, RunStatus::Finished)
        .await
        .map_err(at(Step::LogRun))?;
    Ok(run_id)
}

async fn upload_model(
    client: &MlflowClient,
    run: &crate::registry::RunInfo,
    model: &ModelDir,
) -> Result<(), PushError> {
    for file in &model.files {
        let artifact = format!(
            "{MODEL_ARTIFACT_DIR}/{}",
            file.to_string_lossy().replace('\\', "/")
        );
        tracing::debug!(
            run_id = run.run_id.as_str(),
            artifact = artifact.as_str(),
            "uploading"
        );
        client
            .upload_artifact(run, &model.dir.join(file), &artifact)
            .await
            .map_err(at(Step::UploadModel))?;
    }
    if mlmodel::needs_mlmodel(model) {
        let text = mlmodel::sklearn_pickle(&run.run_id, &random_hex(16), &utc_now());
        let staged = tempfile::NamedTempFile::new().map_err(|source| {
            at(Step::UploadModel)(RegistryError::LocalFile {
                path: std::env::temp_dir(),
                source,
            })
        })?;
        std::fs::write(staged.path(), text).map_err(|source| {
            at(Step::UploadModel)(RegistryError::LocalFile {
                path: staged.path().to_owned(),
                source,
            })
        })?;
        client
            .upload_artifact(
                run,
                staged.path(),
                &format!("{MODEL_ARTIFACT_DIR}/{MLMODEL_FILE}"),
            )
            .await
            .map_err(at(Step::UploadModel))?;
    }
    Ok(())
}

/// Registers `runs:/<run_id>/model`, creating the registered model on its first push, and
/// waits until the version is READY.
async fn register(
    client: &MlflowClient,
    options: &PushOptions,
    run_id: &str,
    report: &PushReport,
) -> Result<String, PushError> {
    let name = options.model_name.as_str();
    let source = format!("runs:/{run_id}/{MODEL_ARTIFACT_DIR}");
    let tags = version_tags(report);

    let created = match client
        .create_model_version(name, &source, Some(run_id), &tags, None)
        .await
    {
        Err(error) if error.is_not_found() => {
            client
                .get_or_create_registered_model(name)
                .await
                .map_err(at(Step::Register))?;
            client
                .create_model_version(name, &source, Some(run_id), &tags, None)
                .await
        }
        other => other,
    }
    .map_err(at(Step::Register))?;

    if created.status != ModelVersionStatus::Ready {
        client
            .wait_until_ready(name, &created.version, options.ready_timeout)
            .await
            .map_err(at(Step::Register))?;
    }
    Ok(created.version)
}

/// Makes the verdict so. Promotion moves the new version in before the old one out.
async fn apply_verdict(
    client: &MlflowClient,
    options: &PushOptions,
    version: &str,
    champion: Option<&Champion>,
    report: &mut PushReport,
) -> Result<(), PushError> {
    let name = options.model_name.as_str();
    let previous = champion.map(|champion| champion.version.as_str());
    match (report.decision.verdict, &options.mode) {
        (Verdict::Promote, Mode::Stages { stage }) => {
            client
                .transition_stage(name, version, *stage, false)
                .await
                .map_err(at(Step::Promote))?;
            report
                .actions
                .push(format!("moved version {version} to {stage}"));
            if let Some(previous) = previous.filter(|previous| *previous != version) {
                client
                    .transition_stage(name, previous, Stage::Archived, false)
                    .await
                    .map_err(at(Step::ArchivePrevious))?;
                report
                    .actions
                    .push(format!("moved version {previous} to Archived"));
            }
            report.champion = Some(version.to_owned());
        }
        (
            Verdict::Promote,
            Mode::Aliases {
                champion: alias, ..
            },
        ) => {
            // Moving an alias is one write, so the alias is never without a version.
            client
                .set_alias(name, alias, version)
                .await
                .map_err(at(Step::Promote))?;
            report
                .actions
                .push(format!("moved alias {alias} to version {version}"));
            if let Some(previous) = previous.filter(|previous| *previous != version) {
                client
                    .set_model_version_tag(name, previous, tags::STATUS, "archived")
                    .await
                    .map_err(at(Step::ArchivePrevious))?;
                report.actions.push(format!(
                    "tagged version {previous} {}=archived",
                    tags::STATUS
                ));
            }
            report.champion = Some(version.to_owned());
        }
        (Verdict::Hold, Mode::Stages { stage }) => {
            if *stage != Stage::Staging {
                client
                    .transition_stage(name, version, Stage::Staging, false)
                    .await
                    .map_err(at(Step::Hold))?;
                report
                    .actions
                    .push(format!("moved version {version} to Staging"));
            }
        }
        (Verdict::Hold, Mode::Aliases { challenger, .. }) => {
            client
                .set_alias(name, challenger, version)
                .await
                .map_err(at(Step::Hold))?;
            report
                .actions
                .push(format!("moved alias {challenger} to version {version}"));
        }
        (Verdict::Reject, _) => {
            report.actions.push(format!(
                "left version {version} unserved, tagged {}=rejected",
                tags::STATUS
            ));
        }
    }
    Ok(())
}

fn planned_actions(report: &PushReport, inputs: &PushInputs, options: &PushOptions) -> Vec<String> {
    let name = &options.model_name;
    let mut actions = vec![
        format!(
            "log a run in experiment {:?} with {} file(s) under {MODEL_ARTIFACT_DIR}/",
            options.experiment,
            inputs.model.files.len() + usize::from(mlmodel::needs_mlmodel(&inputs.model))
        ),
        format!("register a new version of {name} from that run"),
    ];
    let previous = report.previous_champion.as_deref();
    match (report.decision.verdict, &options.mode) {
        (Verdict::Promote, Mode::Stages { stage }) => {
            actions.push(format!("move the new version to {stage}"));
            if let Some(previous) = previous {
                actions.push(format!("move version {previous} to Archived"));
            }
        }
        (Verdict::Promote, Mode::Aliases { champion, .. }) => {
            actions.push(format!("move alias {champion} to the new version"));
            if let Some(previous) = previous {
                actions.push(format!("tag version {previous} {}=archived", tags::STATUS));
            }
        }
        (Verdict::Hold, Mode::Stages { .. }) => {
            actions.push("move the new version to Staging".to_owned())
        }
        (Verdict::Hold, Mode::Aliases { challenger, .. }) => {
            actions.push(format!("move alias {challenger} to the new version"));
        }
        (Verdict::Reject, _) => actions.push(format!(
            "leave the new version unserved, tagged {}=rejected",
            tags::STATUS
        )),
    }
    actions
}

fn run_tags(decision: &Decision, options: &PushOptions) -> Vec<KeyValue> {
    let mut tags = decision_tags(decision);
    tags.push(KeyValue::new("mlflow.source.name", "model-pusher"));
    if let Some(run_id) = &options.pipeline_run_id {
        tags.push(KeyValue::new(
            tags::PIPELINE_RUN_ID,
            truncate(run_id, TAG_VALUE_MAX),
        ));
    }
    tags
}

fn version_tags(report: &PushReport) -> Vec<KeyValue> {
    let mut tags = decision_tags(&report.decision);
    if let Some(previous) = &report.previous_champion {
        tags.push(KeyValue::new(tags::PREVIOUS_CHAMPION, previous.clone()));
    }
    if report.decision.verdict == Verdict::Reject {
        tags.push(KeyValue::new(tags::STATUS, "rejected"));
    }
    tags
}

fn decision_tags(decision: &Decision) -> Vec<KeyValue> {
    vec![
        KeyValue::new(tags::VERDICT, decision.verdict.to_string()),
        KeyValue::new(tags::REASON, truncate(&decision.reason, TAG_VALUE_MAX)),
        KeyValue::new(tags::POLICY, decision.policy.name.clone()),
        KeyValue::new(tags::POLICY_VERSION, decision.policy.version.clone()),
        KeyValue::new(tags::POLICY_SHA256, decision.policy.sha256.clone()),
    ]
}

/// The settings as MLflow params: one per leaf, keyed by its dotted path, lists as JSON.
pub fn flatten_settings(settings: &serde_json::Value) -> Vec<KeyValue> {
    fn walk(prefix: &str, value: &serde_json::Value, out: &mut Vec<KeyValue>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, item) in map {
                    let key = sanitize_key(key);
                    let path = if prefix.is_empty() {
                        key
                    } else {
                        format!("{prefix}.{key}")
                    };
                    walk(&path, item, out);
                }
            }
            serde_json::Value::String(text) => {
                out.push(KeyValue::new(prefix, truncate(text, PARAM_VALUE_MAX)));
            }
            other => out.push(KeyValue::new(
                prefix,
                truncate(&other.to_string(), PARAM_VALUE_MAX),
            )),
        }
    }
    let mut params = Vec::new();
    walk("", settings, &mut params);
    params
}

/// MLflow keys allow letters, digits, `_ - . / ` and spaces.
fn sanitize_key(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-./ ".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}

fn utc_now() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}

fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0; bytes];
    rand::rng().fill_bytes(&mut buffer);
    hex::encode(buffer)
}

/// Writes the report as JSON to `path`, creating its directory.
///
/// # Errors
///
/// When the file cannot be written.
pub fn write_report(report: &PushReport, path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let json = serde_json::to_string_pretty(report).map_err(std::io::Error::other)?;
    std::fs::write(path, json + "\n")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn settings_flatten_to_dotted_params() {
        let params = flatten_settings(&json!({
            "improvement_threshold": 0.05,
            "primary_metric": "accuracy",
            "comparison_metrics": ["precision", "recall"],
            "metrics": {"recall": {"min": 0.8}},
        }));
        let find = |key: &str| {
            params
                .iter()
                .find(|param| param.key == key)
                .map(|param| param.value.as_str())
        };
        assert_eq!(find("improvement_threshold"), Some("0.05"));
        assert_eq!(find("primary_metric"), Some("accuracy"));
        assert_eq!(
            find("comparison_metrics"),
            Some(r#"["precision","recall"]"#)
        );
        assert_eq!(find("metrics.recall.min"), Some("0.8"));
    }

    #[test]
    fn long_values_are_cut_to_mlflow_limits() {
        let params = flatten_settings(&json!({"note": "x".repeat(2000)}));
        assert_eq!(params[0].value.len(), PARAM_VALUE_MAX);
    }

    #[test]
    fn versions_compare_as_numbers() {
        assert!(version_number("10") > version_number("9"));
    }
}
