//! The push: find the champion, ask the policy, log the candidate as a run, register it, and
//! apply the verdict in the registry.
//!
//! The order of the writes is what keeps serving safe. Nothing is written until the champion
//! has been read and the policy has decided; a registry error while reading the champion stops
//! the push instead of being taken for "no champion". On promotion the new version becomes the
//! champion before the old one is archived, so there is never a moment without one, and the
//! only versions the pusher moves are the one it registered and the one it replaced.
//!
//! A push can be re-run after a crash at any point. Its run carries an idempotency key, so a
//! re-run finds the run and the version the first attempt made and finishes them instead of
//! making new ones; a version that was already promoted is judged against the champion it
//! replaced, as the first attempt judged it.
//!
//! Concurrent pushes of one model take turns. A new version is registered `pending`; a push
//! applies its verdict only once no lower-numbered version of the model is pending, re-reads
//! the champion then (deciding again if it changed meanwhile), and marks its version `done`.
//! MLflow numbers versions atomically, so the turns form one order that every push agrees on.

use std::path::Path;
use std::time::{Duration, SystemTime};

use rand::RngCore as _;
use serde::Serialize;

use crate::decision::{Decision, Verdict};
use crate::inputs::{Metrics, ModelDir, Settings};
use crate::mlmodel::{self, MLMODEL_FILE, MODEL_ARTIFACT_DIR};
use crate::policy::{ChampionInput, DecisionInput, Policy, PolicyError};
use crate::registry::{
    KeyValue, Metric, MlflowClient, ModelVersion, ModelVersionStatus, RegistryError, RunQuery,
    RunStatus, Stage, VersionQuery,
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
    /// On runs and versions: what makes a re-run of the same push find its earlier attempt.
    pub const IDEMPOTENCY_KEY: &str = "model_pusher.idempotency_key";
    /// On a version: `pending` until its push has applied the verdict, then `done`.
    pub const STATE: &str = "model_pusher.state";
}

/// The `previous_champion` tag's value when there was none.
const NO_CHAMPION: &str = "none";

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
    /// Identifies this push across re-runs; see [`idempotency_key`].
    pub idempotency_key: String,
    /// How long a lower-numbered pending version may hold up this push before it is taken for
    /// abandoned (its push crashed and was not re-run).
    pub lease_timeout: Duration,
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
    /// Whether this push finished an earlier attempt with the same idempotency key.
    pub resumed: bool,
}

impl PushReport {
    fn new(
        decision: Decision,
        client: &MlflowClient,
        options: &PushOptions,
        previous_champion: Option<String>,
        resumed: bool,
    ) -> Self {
        Self {
            decision,
            model_name: options.model_name.clone(),
            model_version: None,
            run_id: None,
            champion: previous_champion.clone(),
            previous_champion,
            registry_url: client.server().to_owned(),
            mode: match &options.mode {
                Mode::Stages { .. } => "stages".to_owned(),
                Mode::Aliases { .. } => "aliases".to_owned(),
            },
            dry_run: options.dry_run,
            actions: Vec::new(),
            requests: 0,
            resumed,
        }
    }
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
    FindAttempt,
    WaitForTurn,
    Promote,
    ArchivePrevious,
    Hold,
    Release,
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
            Step::FindAttempt => "looking for an earlier attempt of this push",
            Step::WaitForTurn => "waiting for earlier pushes of the model",
            Step::Promote => "promoting the new version",
            Step::ArchivePrevious => "archiving the previous champion",
            Step::Hold => "marking the new version as challenger",
            Step::Release => "marking the push done",
        })
    }
}

/// Why a push stopped. Whatever the step, the champion it found is still the champion.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    // The messages include the underlying error, so it is not also reported as the source:
    // a chain printer would repeat it.
    #[error("{step}: {error}")]
    Registry { step: Step, error: RegistryError },
    #[error("no decision, nothing written: {0}")]
    Policy(PolicyError),
}

impl From<PolicyError> for PushError {
    fn from(error: PolicyError) -> Self {
        PushError::Policy(error)
    }
}

impl PushError {
    /// Whether the server refused the credentials.
    pub fn is_unauthorized(&self) -> bool {
        matches!(
            self,
            PushError::Registry {
                error: RegistryError::Unauthorized { .. },
                ..
            }
        )
    }
}

fn at(step: Step) -> impl FnOnce(RegistryError) -> PushError {
    move |error| PushError::Registry { step, error }
}

/// Runs a push end to end, or finishes an earlier attempt of it.
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
    let current = find_champion(client, name, &options.mode).await?;
    tracing::info!(
        model = name,
        champion = current
            .as_ref()
            .map(|c| c.version.as_str())
            .unwrap_or("none"),
        "found the champion"
    );

    if options.dry_run {
        let decision = decide(policy, inputs, name, current.as_ref())?;
        let previous = current.as_ref().map(|c| c.version.clone());
        let mut report = PushReport::new(decision, client, options, previous, false);
        report.actions = planned_actions(&report, inputs, options);
        if report.decision.verdict == Verdict::Promote {
            report.champion = Some("(the new version)".to_owned());
        }
        report.requests = client.requests_made();
        return Ok(report);
    }

    let experiment = client
        .get_or_create_experiment(&options.experiment)
        .await
        .map_err(at(Step::OpenExperiment))?;
    let attempt = find_attempt(client, name, &experiment.experiment_id, options).await?;

    // A version the earlier attempt registered was judged against the champion of that time,
    // which it recorded; judging it against itself, now that it may be the champion, would be
    // wrong.
    let judged_against = match attempt.recorded_champion() {
        Some(recorded) if recorded.as_deref() != current.as_ref().map(|c| c.version.as_str()) => {
            match recorded {
                Some(version) => Some(champion_at(client, name, &version).await?),
                None => None,
            }
        }
        _ => current.clone(),
    };
    let decision = decide(policy, inputs, name, judged_against.as_ref())?;
    let previous = judged_against.as_ref().map(|c| c.version.clone());
    let mut report = PushReport::new(decision, client, options, previous, attempt.run.is_some());
    report.champion = current.as_ref().map(|c| c.version.clone());
    if report.resumed {
        tracing::info!(
            model = name,
            run_id = attempt
                .run
                .as_ref()
                .map(|run| run.info.run_id.as_str())
                .unwrap_or("-"),
            version = attempt
                .version
                .as_ref()
                .map(|v| v.version.as_str())
                .unwrap_or("-"),
            "finishing an earlier attempt of this push"
        );
    }

    let run_id = ensure_run(
        client,
        &experiment.experiment_id,
        &attempt,
        inputs,
        options,
        &report.decision,
    )
    .await?;
    report.run_id = Some(run_id.clone());
    report.actions.push(format!(
        "logged run {run_id} with the model under {MODEL_ARTIFACT_DIR}/"
    ));

    let version = match &attempt.version {
        Some(version) => ready(client, options, version.clone()).await?,
        None => register(client, options, &run_id, &report, current.is_some()).await?,
    };
    tracing::info!(
        model = name,
        version = version.version.as_str(),
        run_id = run_id.as_str(),
        "registered the candidate"
    );
    report.model_version = Some(version.version.clone());
    report
        .actions
        .push(format!("registered {name} version {}", version.version));

    if version.tag(tags::STATE) != Some("done") {
        wait_for_turn(client, name, &version.version, options.lease_timeout).await?;
        settle_decision(
            client,
            policy,
            inputs,
            options,
            &version,
            &run_id,
            &mut report,
        )
        .await?;
        apply_verdict(client, options, &version, &mut report).await?;
        client
            .set_model_version_tag(name, &version.version, tags::STATE, "done")
            .await
            .map_err(at(Step::Release))?;
    } else {
        // The earlier attempt finished everything but reporting.
        report.champion = find_champion_version(client, name, &options.mode).await?;
    }
    report.requests = client.requests_made();
    Ok(report)
}

fn decide(
    policy: &Policy,
    inputs: &PushInputs,
    name: &str,
    champion: Option<&Champion>,
) -> Result<Decision, PushError> {
    let decision = policy.decide(&DecisionInput {
        model_name: name.to_owned(),
        candidate_run_id: None,
        candidate: inputs.candidate.clone(),
        champion: champion.map(|champion| ChampionInput {
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
        champion = champion.map(|c| c.version.as_str()).unwrap_or("none"),
        "{}",
        decision.reason
    );
    Ok(decision)
}

/// What an earlier attempt of this push left: its run and, if it got that far, its version.
#[derive(Debug, Default)]
struct Attempt {
    run: Option<crate::registry::Run>,
    version: Option<ModelVersion>,
}

impl Attempt {
    /// The champion the earlier attempt's version was judged against: `Some(None)` when it
    /// found none, `None` when there is no such version.
    fn recorded_champion(&self) -> Option<Option<String>> {
        let recorded = self.version.as_ref()?.tag(tags::PREVIOUS_CHAMPION)?;
        Some((recorded != NO_CHAMPION).then(|| recorded.to_owned()))
    }
}

async fn find_attempt(
    client: &MlflowClient,
    name: &str,
    experiment_id: &str,
    options: &PushOptions,
) -> Result<Attempt, PushError> {
    let runs = client
        .search_runs(&RunQuery {
            experiment_ids: vec![experiment_id.to_owned()],
            filter: format!(
                "tags.`{}` = '{}'",
                tags::IDEMPOTENCY_KEY,
                options.idempotency_key
            ),
            order_by: vec!["attributes.start_time ASC".to_owned()],
            limit: 10,
        })
        .await
        .map_err(at(Step::FindAttempt))?;
    let Some(run) = runs.into_iter().next() else {
        return Ok(Attempt::default());
    };
    let versions = client
        .search_model_versions(&VersionQuery {
            filter: format!("run_id = '{}'", run.info.run_id),
            order_by: Vec::new(),
            limit: 100,
        })
        .await
        .map_err(at(Step::FindAttempt))?;
    let version = versions
        .into_iter()
        .filter(|version| version.name == name)
        .min_by_key(|version| version_number(&version.version));
    Ok(Attempt {
        run: Some(run),
        version,
    })
}

/// Waits until no lower-numbered version of the model is pending, so that pushes apply their
/// verdicts one at a time, in the order MLflow numbered their versions.
async fn wait_for_turn(
    client: &MlflowClient,
    name: &str,
    version: &str,
    lease: Duration,
) -> Result<(), PushError> {
    let ours = version_number(version);
    let mut first_seen: std::collections::HashMap<String, std::time::Instant> =
        std::collections::HashMap::new();
    let mut pause = Duration::from_millis(50);
    loop {
        let pending = client
            .search_model_versions(&VersionQuery {
                filter: format!("name = '{name}' and tags.`{}` = 'pending'", tags::STATE),
                order_by: Vec::new(),
                limit: 1000,
            })
            .await
            .map_err(at(Step::WaitForTurn))?;
        let now = std::time::Instant::now();
        let ahead: Vec<String> = pending
            .into_iter()
            .filter(|other| other.name == name && version_number(&other.version) < ours)
            .map(|other| other.version)
            .filter(|other| {
                let seen = *first_seen.entry(other.clone()).or_insert(now);
                now.duration_since(seen) < lease
            })
            .collect();
        if ahead.is_empty() {
            return Ok(());
        }
        tracing::info!(
            model = name,
            version,
            ahead = ahead.join(",").as_str(),
            "waiting for earlier pushes of the model to finish"
        );
        tokio::time::sleep(pause + jitter(pause)).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

fn jitter(pause: Duration) -> Duration {
    let millis = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX).max(1);
    Duration::from_millis(rand::random_range(0..millis))
}

/// Re-reads the champion once it is this push's turn. When another push changed it since
/// the decision, decides again against the new champion and records that decision instead.
async fn settle_decision(
    client: &MlflowClient,
    policy: &Policy,
    inputs: &PushInputs,
    options: &PushOptions,
    version: &ModelVersion,
    run_id: &str,
    report: &mut PushReport,
) -> Result<(), PushError> {
    let name = options.model_name.as_str();
    let now = find_champion_version(client, name, &options.mode).await?;
    report.champion = now.clone();
    if now.as_deref() == Some(version.version.as_str()) || now == report.previous_champion {
        // Either the earlier attempt already promoted this version, or nothing changed.
        return Ok(());
    }

    let champion = match &now {
        Some(champion) => Some(champion_at(client, name, champion).await?),
        None => None,
    };
    tracing::info!(
        model = name,
        version = version.version.as_str(),
        was = report.previous_champion.as_deref().unwrap_or("none"),
        champion = now.as_deref().unwrap_or("none"),
        "the champion changed while this push waited; deciding again"
    );
    report.decision = decide(policy, inputs, name, champion.as_ref())?;
    report.previous_champion = now;

    let mut retag = decision_tags(&report.decision);
    retag.push(KeyValue::new(
        tags::PREVIOUS_CHAMPION,
        report
            .previous_champion
            .clone()
            .unwrap_or_else(|| NO_CHAMPION.to_owned()),
    ));
    if report.decision.verdict == Verdict::Reject {
        retag.push(KeyValue::new(tags::STATUS, "rejected"));
    }
    for tag in &retag {
        client
            .set_model_version_tag(name, &version.version, &tag.key, &tag.value)
            .await
            .map_err(at(Step::Register))?;
    }
    client
        .log_batch(run_id, &[], &[], &decision_tags(&report.decision))
        .await
        .map_err(at(Step::LogRun))?;
    Ok(())
}

/// Reads the champion and its metrics. A failed call is an error, never "no champion".
async fn find_champion(
    client: &MlflowClient,
    name: &str,
    mode: &Mode,
) -> Result<Option<Champion>, PushError> {
    let Some(version) = champion_version(client, name, mode).await? else {
        return Ok(None);
    };
    Ok(Some(champion_from(client, name, version).await?))
}

/// The champion's version number alone.
async fn find_champion_version(
    client: &MlflowClient,
    name: &str,
    mode: &Mode,
) -> Result<Option<String>, PushError> {
    Ok(champion_version(client, name, mode)
        .await?
        .map(|version| version.version))
}

async fn champion_version(
    client: &MlflowClient,
    name: &str,
    mode: &Mode,
) -> Result<Option<ModelVersion>, PushError> {
    Ok(match mode {
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
    })
}

/// A champion by version number, with its metrics.
async fn champion_at(
    client: &MlflowClient,
    name: &str,
    version: &str,
) -> Result<Champion, PushError> {
    let version = client
        .get_model_version(name, version)
        .await
        .map_err(at(Step::FindChampion))?;
    champion_from(client, name, version).await
}

async fn champion_from(
    client: &MlflowClient,
    name: &str,
    version: ModelVersion,
) -> Result<Champion, PushError> {
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
    Ok(Champion {
        version: version.version,
        run_id,
        metrics,
    })
}

/// MLflow versions are decimal strings; one that is not sorts first.
fn version_number(version: &str) -> u64 {
    version.parse().unwrap_or(0)
}

/// Logs the candidate's run: settings as params, metrics, decision tags, and the model files
/// (with an `MLmodel` when the directory is the seed's bare `model.pkl`). A run an earlier
/// attempt left unfinished is completed: what it already holds is not logged twice, and the
/// model files are uploaded again, which overwrites them.
async fn ensure_run(
    client: &MlflowClient,
    experiment_id: &str,
    attempt: &Attempt,
    inputs: &PushInputs,
    options: &PushOptions,
    decision: &Decision,
) -> Result<String, PushError> {
    let run = match &attempt.run {
        Some(run) if run.info.status == RunStatus::Finished => return Ok(run.info.run_id.clone()),
        Some(run) => run.clone(),
        None => client
            .create_run(
                experiment_id,
                Some(&format!("push-{}", options.model_name)),
                &run_tags(decision, options),
            )
            .await
            .map_err(at(Step::LogRun))?,
    };
    let run_id = run.info.run_id.clone();

    let timestamp = now_millis();
    let metrics: Vec<Metric> = inputs
        .candidate
        .values
        .iter()
        .filter(|(key, _)| run.metric(key).is_none())
        .map(|(key, value)| Metric {
            key: key.clone(),
            value: *value,
            timestamp,
            step: 0,
        })
        .collect();
    let params: Vec<KeyValue> = flatten_settings(&inputs.settings.value)
        .into_iter()
        .filter(|param| run.param(&param.key).is_none())
        .collect();
    if !(metrics.is_empty() && params.is_empty()) {
        client
            .log_batch(&run_id, &metrics, &params, &[])
            .await
            .map_err(at(Step::LogRun))?;
    }

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
        let local = model.dir.join(file);
        let bar = upload_bar(&local, &artifact);
        client
            .upload_artifact_with_progress(
                run,
                &local,
                &artifact,
                bar.as_ref().map(|bar| {
                    let bar = bar.clone();
                    std::sync::Arc::new(move |sent| bar.set_position(sent))
                        as crate::registry::Progress
                }),
            )
            .await
            .map_err(at(Step::UploadModel))?;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
    }
    if mlmodel::needs_mlmodel(model) {
        let text = mlmodel::sklearn_pickle(&run.run_id, &random_hex(16), &utc_now());
        let staged = tempfile::NamedTempFile::new().map_err(|source| {
            at(Step::UploadModel)(RegistryError::LocalFile {
                path: std::env::temp_dir(),
                error: source,
            })
        })?;
        std::fs::write(staged.path(), text).map_err(|source| {
            at(Step::UploadModel)(RegistryError::LocalFile {
                path: staged.path().to_owned(),
                error: source,
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

/// A progress bar on stderr for the upload of `local`, when stderr is a terminal and the file
/// is big enough for the wait to be noticed; never in a pipeline's log.
fn upload_bar(local: &std::path::Path, artifact: &str) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    const NOTICEABLE: u64 = 16 << 20;
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let size = std::fs::metadata(local).ok()?.len();
    if size < NOTICEABLE {
        return None;
    }
    let bar = indicatif::ProgressBar::new(size);
    let style = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
    )
    .ok()?
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(format!("uploading {artifact}"));
    Some(bar)
}

/// Registers the run's model as a new version, creating the registered model first when
/// `has_champion` is false: then it is most likely new, and creating it up front saves a
/// failed `model-versions/create`.
async fn register(
    client: &MlflowClient,
    options: &PushOptions,
    run_id: &str,
    report: &PushReport,
    has_champion: bool,
) -> Result<ModelVersion, PushError> {
    let name = options.model_name.as_str();
    let source = format!("runs:/{run_id}/{MODEL_ARTIFACT_DIR}");
    let tags = version_tags(report, options);

    if !has_champion {
        client
            .ensure_registered_model(name)
            .await
            .map_err(at(Step::Register))?;
    }
    let created = match client
        .create_model_version(name, &source, Some(run_id), &tags, None)
        .await
    {
        // The model was deleted since the champion was found.
        Err(error) if error.is_not_found() => {
            client
                .ensure_registered_model(name)
                .await
                .map_err(at(Step::Register))?;
            client
                .create_model_version(name, &source, Some(run_id), &tags, None)
                .await
        }
        other => other,
    }
    .map_err(at(Step::Register))?;
    ready(client, options, created).await
}

/// The version once MLflow has finished registering it.
async fn ready(
    client: &MlflowClient,
    options: &PushOptions,
    version: ModelVersion,
) -> Result<ModelVersion, PushError> {
    if version.status == ModelVersionStatus::Ready {
        return Ok(version);
    }
    client
        .wait_until_ready(&options.model_name, &version.version, options.ready_timeout)
        .await
        .map_err(at(Step::Register))
}

/// Makes the verdict so. Promotion moves the new version in before the old one out. Every
/// write here can be repeated, so a re-run after a crash between two of them converges.
async fn apply_verdict(
    client: &MlflowClient,
    options: &PushOptions,
    version: &ModelVersion,
    report: &mut PushReport,
) -> Result<(), PushError> {
    let name = options.model_name.as_str();
    let stage_now = version.current_stage;
    let version = version.version.as_str();
    let previous = report.previous_champion.clone();
    let previous = previous.as_deref();
    match (report.decision.verdict, &options.mode) {
        (Verdict::Promote, Mode::Stages { stage }) => {
            if stage_now != *stage {
                client
                    .transition_stage(name, version, *stage, false)
                    .await
                    .map_err(at(Step::Promote))?;
                report
                    .actions
                    .push(format!("moved version {version} to {stage}"));
            }
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
            if *stage != Stage::Staging && stage_now != Stage::Staging {
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
    tags.push(KeyValue::new(
        tags::IDEMPOTENCY_KEY,
        options.idempotency_key.clone(),
    ));
    if let Some(run_id) = &options.pipeline_run_id {
        tags.push(KeyValue::new(
            tags::PIPELINE_RUN_ID,
            truncate(run_id, TAG_VALUE_MAX),
        ));
    }
    tags
}

fn version_tags(report: &PushReport, options: &PushOptions) -> Vec<KeyValue> {
    let mut tags = decision_tags(&report.decision);
    tags.push(KeyValue::new(
        tags::PREVIOUS_CHAMPION,
        report
            .previous_champion
            .clone()
            .unwrap_or_else(|| NO_CHAMPION.to_owned()),
    ));
    tags.push(KeyValue::new(
        tags::IDEMPOTENCY_KEY,
        options.idempotency_key.clone(),
    ));
    tags.push(KeyValue::new(tags::STATE, "pending"));
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

/// Files up to this size are hashed whole into the idempotency key; of larger ones, the size
/// and both ends, so that a multi-GiB model does not have to be read twice.
const WHOLE_HASH_MAX: u64 = 64 << 20;
const END_HASH_BYTES: u64 = 8 << 20;

/// The key that makes a re-run of the same push find its earlier attempt: from the Kubeflow
/// run when one is known (a retried step has the same run), else from what is pushed (the
/// model's files, the metrics, the settings and the policy).
///
/// # Errors
///
/// When a model file cannot be read.
pub fn idempotency_key(
    model_name: &str,
    pipeline_run_id: Option<&str>,
    inputs: &PushInputs,
    policy_sha256: &str,
) -> std::io::Result<String> {
    use sha2::{Digest as _, Sha256};
    use std::io::{Read as _, Seek as _, SeekFrom};

    let mut hasher = Sha256::new();
    hasher.update(b"model-pusher push\0");
    hasher.update(model_name.as_bytes());
    hasher.update(b"\0");
    if let Some(run) = pipeline_run_id.filter(|run| !run.is_empty()) {
        hasher.update(b"pipeline run\0");
        hasher.update(run.as_bytes());
    } else {
        hasher.update(inputs.settings.to_json().as_bytes());
        for (name, value) in &inputs.candidate.values {
            hasher.update(name.as_bytes());
            hasher.update(value.to_bits().to_le_bytes());
        }
        hasher.update(policy_sha256.as_bytes());
        for relative in &inputs.model.files {
            let path = inputs.model.dir.join(relative);
            let mut file = std::fs::File::open(&path)?;
            let size = file.metadata()?.len();
            hasher.update(relative.to_string_lossy().as_bytes());
            hasher.update(size.to_le_bytes());
            let mut buffer = vec![0; 1 << 16];
            let mut hash_range = |file: &mut std::fs::File, mut left: u64| -> std::io::Result<()> {
                while left > 0 {
                    let want =
                        usize::try_from(left.min(buffer.len() as u64)).unwrap_or(buffer.len());
                    let read = file.read(&mut buffer[..want])?;
                    if read == 0 {
                        break;
                    }
                    hasher.update(&buffer[..read]);
                    left -= read as u64;
                }
                Ok(())
            };
            if size <= WHOLE_HASH_MAX {
                hash_range(&mut file, size)?;
            } else {
                hash_range(&mut file, END_HASH_BYTES)?;
                file.seek(SeekFrom::Start(size - END_HASH_BYTES))?;
                hash_range(&mut file, END_HASH_BYTES)?;
            }
        }
    }
    Ok(hex::encode(&hasher.finalize()[..16]))
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
