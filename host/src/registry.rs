//! An async client of the MLflow tracking server's REST API.
//!
//! It uses only endpoints that MLflow 2.x (including DagsHub's hosted MLflow) and 3.x both
//! serve under `/api/2.0/mlflow/...`, plus the artifact proxy under
//! `/api/2.0/mlflow-artifacts/artifacts/...` (a server started with `--serve-artifacts`).
//! There is no use of MLflow 3's `logged-models`: a model is logged as run artifacts and
//! registered from `runs:/<run_id>/<path>`.
//!
//! Every request gets a `tracing` debug span named `mlflow_request` with the method and the
//! endpoint (never headers), and is counted ([`MlflowClient::requests_made`]).
//!
//! Transient failures ([`RegistryError::is_transient`]) are retried as [`RetryPolicy`] says; a
//! write is repeated only when repeating it cannot apply it twice (the table is on
//! [`RetryPolicy`]): otherwise the failure is [`RegistryError::Ambiguous`] and the caller
//! checks before repeating. Every attempt is a counted request; each retry is logged at warn.

mod error;
mod retry;
mod types;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use reqwest::{Method, RequestBuilder, Response, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tracing::Instrument;

use crate::credentials::Auth;

pub use error::RegistryError;
pub use retry::RetryPolicy;
pub use types::{
    Experiment, FileInfo, KeyValue, Metric, ModelAlias, ModelVersion, ModelVersionStatus,
    RegisteredModel, Run, RunData, RunInfo, RunStatus, Stage, UnknownStage, parse_metric_value,
};

/// Result of a registry call.
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

const API: [&str; 3] = ["api", "2.0", "mlflow"];
const ARTIFACTS_API: [&str; 3] = ["api", "2.0", "mlflow-artifacts"];
const ARTIFACTS_ENDPOINT: &str = "/api/2.0/mlflow-artifacts/artifacts";
/// MLflow's log-batch limits per request.
const BATCH_MAX_PARAMS: usize = 100;
const BATCH_MAX_TAGS: usize = 100;
const BATCH_MAX_TOTAL: usize = 1000;
/// The longest body excerpt kept in an error.
const EXCERPT_CHARS: usize = 300;
/// Page size of searches.
const SEARCH_PAGE: usize = 1000;

/// A client of one MLflow tracking server with one set of credentials.
#[derive(Debug)]
pub struct MlflowClient {
    http: reqwest::Client,
    base: Url,
    server: String,
    auth: Auth,
    request_timeout: Duration,
    retry: RetryPolicy,
    requests: AtomicUsize,
}

/// What to search model versions for.
#[derive(Clone, Debug, Default)]
pub struct VersionQuery {
    /// An MLflow filter, e.g. `name = 'churn' and tag.candidate = 'true'`.
    pub filter: String,
    /// Orderings, e.g. `version_number DESC`; empty for the server's default.
    pub order_by: Vec<String>,
    /// The most versions to return; 0 means 1000.
    pub limit: usize,
}

/// What to search runs for.
#[derive(Clone, Debug, Default)]
pub struct RunQuery {
    /// The experiments to search in.
    pub experiment_ids: Vec<String>,
    /// An MLflow filter, e.g. `tags.git_sha = 'abc'`.
    pub filter: String,
    /// Orderings, e.g. `attributes.start_time DESC`.
    pub order_by: Vec<String>,
    /// The most runs to return; 0 means 1000.
    pub limit: usize,
}

/// Told the bytes of an upload sent so far; see [`MlflowClient::upload_artifact_with_progress`].
pub type Progress = std::sync::Arc<dyn Fn(u64) + Send + Sync>;

impl MlflowClient {
    /// A client of the server at `server` (e.g. `http://127.0.0.1:5000` or
    /// `https://dagshub.com/<owner>/<repo>.mlflow`) authenticating with `auth`.
    pub fn new(server: Url, auth: Auth) -> Result<Self> {
        if server.cannot_be_a_base() {
            return Err(RegistryError::InvalidServer {
                server: server.to_string(),
            });
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("model-pusher/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(15))
            .build()
            .map_err(RegistryError::Client)?;
        let display = server.as_str().trim_end_matches('/').to_owned();
        Ok(Self {
            http,
            base: server,
            server: display,
            auth,
            request_timeout: Duration::from_secs(60),
            retry: RetryPolicy::default(),
            requests: AtomicUsize::new(0),
        })
    }

    /// Sets how transient failures are retried (default [`RetryPolicy::default`]; use
    /// [`RetryPolicy::none`] to make one request per call).
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        tracing::debug!(server = %self.server, policy = %policy, "retry policy");
        self.retry = policy;
        self
    }

    /// How transient failures are retried.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// Sets the timeout of each API call (default 60 s). Artifact uploads have no overall
    /// timeout, only the connect timeout, since their duration grows with the file.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The server's base URL as shown in messages.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Who requests authenticate as, for messages.
    pub fn principal(&self) -> &str {
        self.auth.principal()
    }

    /// How many HTTP requests this client has sent so far, every retry included.
    pub fn requests_made(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }

    // ----- experiments -----

    /// The experiment of this name, or `None` when there is none.
    pub async fn get_experiment_by_name(&self, name: &str) -> Result<Option<Experiment>> {
        let answer: Value = match self
            .get("experiments/get-by-name", &[("experiment_name", name)])
            .await
        {
            Ok(answer) => answer,
            Err(err) if err.is_not_found() => return Ok(None),
            Err(err) => return Err(err),
        };
        self.field(answer, "experiment", "experiments/get-by-name")
            .map(Some)
    }

    /// Creates an experiment and returns its id.
    pub async fn create_experiment(&self, name: &str) -> Result<String> {
        let answer: Value = self
            .post("experiments/create", &json!({ "name": name }))
            .await?;
        self.field(answer, "experiment_id", "experiments/create")
    }

    /// The experiment of this name, created when missing. Tolerates a concurrent creation.
    /// An experiment created here is returned without reading it back: only its id and name
    /// are filled in.
    pub async fn get_or_create_experiment(&self, name: &str) -> Result<Experiment> {
        if let Some(experiment) = self.get_experiment_by_name(name).await? {
            return Ok(experiment);
        }
        match self.create_experiment(name).await {
            Ok(experiment_id) => {
                return Ok(Experiment {
                    experiment_id,
                    name: name.to_owned(),
                    artifact_location: None,
                    lifecycle_stage: None,
                });
            }
            Err(err) if err.error_code() == Some("RESOURCE_ALREADY_EXISTS") => {}
            Err(err) => return Err(err),
        }
        self.get_experiment_by_name(name)
            .await?
            .ok_or_else(|| RegistryError::Decode {
                server: self.server.clone(),
                endpoint: endpoint("experiments/get-by-name"),
                detail: format!("experiment {name:?} was created but cannot be found"),
            })
    }

    // ----- runs -----

    /// Starts a run in an experiment, with a display name and tags.
    pub async fn create_run(
        &self,
        experiment_id: &str,
        run_name: Option<&str>,
        tags: &[KeyValue],
    ) -> Result<Run> {
        let mut body = json!({
            "experiment_id": experiment_id,
            "start_time": now_millis(),
            "tags": tags,
        });
        if let Some(run_name) = run_name {
            body["run_name"] = json!(run_name);
        }
        let answer: Value = self.post("runs/create", &body).await?;
        self.field(answer, "run", "runs/create")
    }

    /// Sets a run's status; a terminal status also sets its end time to now.
    pub async fn update_run(&self, run_id: &str, status: RunStatus) -> Result<RunInfo> {
        let mut body = json!({ "run_id": run_id, "status": status });
        if !matches!(status, RunStatus::Running | RunStatus::Scheduled) {
            body["end_time"] = json!(now_millis());
        }
        let answer: Value = self.post("runs/update", &body).await?;
        self.field(answer, "run_info", "runs/update")
    }

    /// A run with its data.
    pub async fn get_run(&self, run_id: &str) -> Result<Run> {
        let answer: Value = self.get("runs/get", &[("run_id", run_id)]).await?;
        self.field(answer, "run", "runs/get")
    }

    /// Logs metrics, params and tags to a run, split into as many `runs/log-batch` requests as
    /// MLflow's per-request limits need.
    pub async fn log_batch(
        &self,
        run_id: &str,
        metrics: &[Metric],
        params: &[KeyValue],
        tags: &[KeyValue],
    ) -> Result<()> {
        let (mut metrics, mut params, mut tags) = (metrics, params, tags);
        loop {
            let (p, rest_p) = params.split_at(params.len().min(BATCH_MAX_PARAMS));
            let (t, rest_t) = tags.split_at(tags.len().min(BATCH_MAX_TAGS));
            let room = BATCH_MAX_TOTAL - p.len() - t.len();
            let (m, rest_m) = metrics.split_at(metrics.len().min(room));
            if !(p.is_empty() && t.is_empty() && m.is_empty()) {
                let body = json!({ "run_id": run_id, "metrics": m, "params": p, "tags": t });
                let _: Value = self.post("runs/log-batch", &body).await?;
            }
            (metrics, params, tags) = (rest_m, rest_p, rest_t);
            if metrics.is_empty() && params.is_empty() && tags.is_empty() {
                return Ok(());
            }
        }
    }

    /// Sets one tag on a run.
    pub async fn set_run_tag(&self, run_id: &str, key: &str, value: &str) -> Result<()> {
        let body = json!({ "run_id": run_id, "key": key, "value": value });
        let _: Value = self.post("runs/set-tag", &body).await?;
        Ok(())
    }

    /// Runs matching a query, following pages up to `query.limit`.
    pub async fn search_runs(&self, query: &RunQuery) -> Result<Vec<Run>> {
        let limit = effective_limit(query.limit);
        let mut runs: Vec<Run> = Vec::new();
        let mut page_token: Option<String> = None;
        loop {
            let mut body = json!({
                "experiment_ids": query.experiment_ids,
                "filter": query.filter,
                "max_results": (limit - runs.len()).min(SEARCH_PAGE),
            });
            if !query.order_by.is_empty() {
                body["order_by"] = json!(query.order_by);
            }
            if let Some(token) = &page_token {
                body["page_token"] = json!(token);
            }
            let answer: Value = self.post("runs/search", &body).await?;
            let (page, next): (Vec<Run>, _) = self.page(answer, "runs", "runs/search")?;
            runs.extend(page);
            match next {
                Some(token) if runs.len() < limit => page_token = Some(token),
                _ => return Ok(runs),
            }
        }
    }

    // ----- artifacts -----

    /// Uploads one local file as the run artifact `artifact_path` (e.g. `model/MLmodel`),
    /// streaming it from disk.
    pub async fn upload_artifact(
        &self,
        run: &RunInfo,
        local: &Path,
        artifact_path: &str,
    ) -> Result<()> {
        self.upload_artifact_with_progress(run, local, artifact_path, None)
            .await
    }

    /// Uploads one file as [`MlflowClient::upload_artifact`] does, telling `progress` how many
    /// bytes of it have been handed to the connection so far, chunk by chunk. A retried upload
    /// starts again from 0.
    pub async fn upload_artifact_with_progress(
        &self,
        run: &RunInfo,
        local: &Path,
        artifact_path: &str,
        progress: Option<Progress>,
    ) -> Result<()> {
        let url = self.artifact_url(run, artifact_path)?;
        // A stream cannot be replayed: each attempt opens the file again and sends all of it.
        self.retrying(&Method::PUT, ARTIFACTS_ENDPOINT, true, async || {
            let file = tokio::fs::File::open(local)
                .await
                .map_err(|source| local_error(local, source))?;
            let metadata = file
                .metadata()
                .await
                .map_err(|source| local_error(local, source))?;
            let stream = tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024);
            let body = match progress.clone() {
                None => reqwest::Body::wrap_stream(stream),
                Some(progress) => {
                    progress(0);
                    let mut sent = 0u64;
                    reqwest::Body::wrap_stream(futures_util::StreamExt::map(stream, move |chunk| {
                        if let Ok(bytes) = &chunk {
                            sent += bytes.len() as u64;
                            progress(sent);
                        }
                        chunk
                    }))
                }
            };
            let request = self
                .http
                .put(url.clone())
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_LENGTH, HeaderValue::from(metadata.len()))
                .body(body);
            let response = self.send(Method::PUT, ARTIFACTS_ENDPOINT, request).await?;
            self.check(response, ARTIFACTS_ENDPOINT).await.map(drop)
        })
        .await
    }

    /// Uploads every file under a local directory as run artifacts under `artifact_dir`,
    /// one streamed request per file; returns the artifact paths uploaded, in upload order.
    pub async fn upload_artifact_dir(
        &self,
        run: &RunInfo,
        local_dir: &Path,
        artifact_dir: &str,
    ) -> Result<Vec<String>> {
        let mut uploaded = Vec::new();
        let mut pending: Vec<(PathBuf, String)> = vec![(
            local_dir.to_owned(),
            artifact_dir.trim_matches('/').to_owned(),
        )];
        while let Some((dir, prefix)) = pending.pop() {
            let mut entries = Vec::new();
            let mut reader = tokio::fs::read_dir(&dir)
                .await
                .map_err(|source| local_error(&dir, source))?;
            while let Some(entry) = reader
                .next_entry()
                .await
                .map_err(|source| local_error(&dir, source))?
            {
                entries.push(entry.path());
            }
            entries.sort();
            for path in entries {
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .ok_or_else(|| RegistryError::InvalidArtifactPath {
                        path: path.display().to_string(),
                    })?
                    .to_owned();
                let target = if prefix.is_empty() {
                    name
                } else {
                    format!("{prefix}/{name}")
                };
                let metadata = tokio::fs::metadata(&path)
                    .await
                    .map_err(|source| local_error(&path, source))?;
                if metadata.is_dir() {
                    pending.push((path, target));
                } else {
                    self.upload_artifact(run, &path, &target).await?;
                    uploaded.push(target);
                }
            }
        }
        Ok(uploaded)
    }

    /// Lists a run's artifact directory (`""` for the root) through the artifact proxy.
    pub async fn list_artifacts(&self, run: &RunInfo, dir: &str) -> Result<Vec<FileInfo>> {
        let mut segments = artifact_root(run, &self.server)?;
        segments.extend(split_artifact_path(dir, true)?);
        let path = segments.join("/");
        let url = self.url(&ARTIFACTS_API, &["artifacts"]);
        let answer: Value = self
            .json_call(Method::GET, ARTIFACTS_ENDPOINT, true, || {
                self.http
                    .get(url.clone())
                    .query(&[("path", path.as_str())])
                    .timeout(self.request_timeout)
            })
            .await?;
        match answer.get("files") {
            None => Ok(Vec::new()),
            Some(files) => self.decode(files.clone(), ARTIFACTS_ENDPOINT),
        }
    }

    /// Downloads one run artifact into memory; meant for small files such as `MLmodel`.
    pub async fn download_artifact(&self, run: &RunInfo, artifact_path: &str) -> Result<Vec<u8>> {
        let url = self.artifact_url(run, artifact_path)?;
        self.retrying(&Method::GET, ARTIFACTS_ENDPOINT, true, async || {
            let request = self.http.get(url.clone()).timeout(self.request_timeout);
            let response = self.send(Method::GET, ARTIFACTS_ENDPOINT, request).await?;
            let response = self.check(response, ARTIFACTS_ENDPOINT).await?;
            let bytes = response
                .bytes()
                .await
                .map_err(|source| self.transport(ARTIFACTS_ENDPOINT, source))?;
            Ok(bytes.to_vec())
        })
        .await
    }

    // ----- registered models -----

    /// The registered model of this name, or `None` when there is none.
    pub async fn get_registered_model(&self, name: &str) -> Result<Option<RegisteredModel>> {
        match self.get("registered-models/get", &[("name", name)]).await {
            Ok(answer) => self
                .field(answer, "registered_model", "registered-models/get")
                .map(Some),
            Err(err) if err.is_not_found() => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Creates a registered model.
    pub async fn create_registered_model(
        &self,
        name: &str,
        description: Option<&str>,
    ) -> Result<RegisteredModel> {
        let mut body = json!({ "name": name });
        if let Some(description) = description {
            body["description"] = json!(description);
        }
        let answer: Value = self.post("registered-models/create", &body).await?;
        self.field(answer, "registered_model", "registered-models/create")
    }

    /// Creates a registered model unless one of this name exists; whether it did is not told.
    /// One request either way, where [`MlflowClient::get_or_create_registered_model`] makes two
    /// for a new model.
    pub async fn ensure_registered_model(&self, name: &str) -> Result<()> {
        match self.create_registered_model(name, None).await {
            Ok(_) => Ok(()),
            Err(err) if err.error_code() == Some("RESOURCE_ALREADY_EXISTS") => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// The registered model of this name, created when missing. Tolerates a concurrent
    /// creation.
    pub async fn get_or_create_registered_model(&self, name: &str) -> Result<RegisteredModel> {
        if let Some(model) = self.get_registered_model(name).await? {
            return Ok(model);
        }
        match self.create_registered_model(name, None).await {
            Ok(model) => Ok(model),
            Err(err) if err.error_code() == Some("RESOURCE_ALREADY_EXISTS") => self
                .get_registered_model(name)
                .await?
                .ok_or_else(|| RegistryError::Decode {
                    server: self.server.clone(),
                    endpoint: endpoint("registered-models/get"),
                    detail: format!("registered model {name:?} exists but cannot be read"),
                }),
            Err(err) => Err(err),
        }
    }

    /// The latest version of a model in each of `stages` (all stages when empty).
    pub async fn get_latest_versions(
        &self,
        name: &str,
        stages: &[Stage],
    ) -> Result<Vec<ModelVersion>> {
        let mut query = vec![("name", name)];
        query.extend(stages.iter().map(|s| ("stages", s.as_str())));
        let answer = self
            .get("registered-models/get-latest-versions", &query)
            .await?;
        self.optional_list(
            answer,
            "model_versions",
            "registered-models/get-latest-versions",
        )
    }

    // ----- model versions -----

    /// Registers a new version of a model from `source` (e.g. `runs:/<run_id>/model`).
    /// The version may start as `PENDING_REGISTRATION`: see [`MlflowClient::wait_until_ready`].
    pub async fn create_model_version(
        &self,
        name: &str,
        source: &str,
        run_id: Option<&str>,
        tags: &[KeyValue],
        description: Option<&str>,
    ) -> Result<ModelVersion> {
        let mut body = json!({ "name": name, "source": source, "tags": tags });
        if let Some(run_id) = run_id {
            body["run_id"] = json!(run_id);
        }
        if let Some(description) = description {
            body["description"] = json!(description);
        }
        let answer: Value = self.post("model-versions/create", &body).await?;
        self.field(answer, "model_version", "model-versions/create")
    }

    /// One model version.
    pub async fn get_model_version(&self, name: &str, version: &str) -> Result<ModelVersion> {
        let answer = self
            .get(
                "model-versions/get",
                &[("name", name), ("version", version)],
            )
            .await?;
        self.field(answer, "model_version", "model-versions/get")
    }

    /// Polls a model version until it is `READY`; fails when its registration failed or when
    /// `timeout` passes first.
    pub async fn wait_until_ready(
        &self,
        name: &str,
        version: &str,
        timeout: Duration,
    ) -> Result<ModelVersion> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(200);
        loop {
            let current = self.get_model_version(name, version).await?;
            match current.status {
                ModelVersionStatus::Ready => return Ok(current),
                ModelVersionStatus::FailedRegistration => {
                    return Err(RegistryError::RegistrationFailed {
                        server: self.server.clone(),
                        name: name.to_owned(),
                        version: version.to_owned(),
                        message: current.status_message.unwrap_or_default(),
                    });
                }
                status if started.elapsed() >= timeout => {
                    return Err(RegistryError::NotReady {
                        server: self.server.clone(),
                        name: name.to_owned(),
                        version: version.to_owned(),
                        waited: started.elapsed(),
                        status: format!("{status:?}"),
                    });
                }
                _ => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Model versions matching a query, following pages up to `query.limit`.
    pub async fn search_model_versions(&self, query: &VersionQuery) -> Result<Vec<ModelVersion>> {
        let limit = effective_limit(query.limit);
        let mut versions: Vec<ModelVersion> = Vec::new();
        let mut page_token: Option<String> = None;
        loop {
            let max_results = (limit - versions.len()).min(SEARCH_PAGE).to_string();
            let mut params: Vec<(&str, &str)> =
                vec![("filter", &query.filter), ("max_results", &max_results)];
            params.extend(query.order_by.iter().map(|o| ("order_by", o.as_str())));
            if let Some(token) = &page_token {
                params.push(("page_token", token));
            }
            let answer = self.get("model-versions/search", &params).await?;
            let (page, next): (Vec<ModelVersion>, _) =
                self.page(answer, "model_versions", "model-versions/search")?;
            versions.extend(page);
            match next {
                Some(token) if versions.len() < limit => page_token = Some(token),
                _ => return Ok(versions),
            }
        }
    }

    /// Moves a version to a legacy stage. With `archive_existing_versions` the server archives
    /// the other versions in that stage, which is not safe when two pushes race.
    pub async fn transition_stage(
        &self,
        name: &str,
        version: &str,
        stage: Stage,
        archive_existing_versions: bool,
    ) -> Result<ModelVersion> {
        let body = json!({
            "name": name,
            "version": version,
            "stage": stage,
            "archive_existing_versions": archive_existing_versions,
        });
        let answer: Value = self.post("model-versions/transition-stage", &body).await?;
        self.field(answer, "model_version", "model-versions/transition-stage")
    }

    /// Sets one tag on a model version.
    pub async fn set_model_version_tag(
        &self,
        name: &str,
        version: &str,
        key: &str,
        value: &str,
    ) -> Result<()> {
        let body = json!({ "name": name, "version": version, "key": key, "value": value });
        let _: Value = self.post("model-versions/set-tag", &body).await?;
        Ok(())
    }

    // ----- aliases -----

    /// Points an alias at a version (last writer wins; the server does no compare-and-set).
    pub async fn set_alias(&self, name: &str, alias: &str, version: &str) -> Result<()> {
        let body = json!({ "name": name, "alias": alias, "version": version });
        let _: Value = self.post("registered-models/alias", &body).await?;
        Ok(())
    }

    /// Removes an alias; removing an alias that is not set succeeds.
    pub async fn delete_alias(&self, name: &str, alias: &str) -> Result<()> {
        // The server reads DELETE parameters from a JSON body, not from the query string.
        let url = self.url(&API, &["registered-models", "alias"]);
        let body = json!({ "name": name, "alias": alias });
        let _: Value = self
            .json_call(
                Method::DELETE,
                &endpoint("registered-models/alias"),
                true,
                || {
                    self.http
                        .delete(url.clone())
                        .json(&body)
                        .timeout(self.request_timeout)
                },
            )
            .await?;
        Ok(())
    }

    /// The version an alias points at, or `None` when the alias (or the model) does not exist.
    pub async fn get_model_version_by_alias(
        &self,
        name: &str,
        alias: &str,
    ) -> Result<Option<ModelVersion>> {
        match self
            .get(
                "registered-models/alias",
                &[("name", name), ("alias", alias)],
            )
            .await
        {
            Ok(answer) => self
                .field(answer, "model_version", "registered-models/alias")
                .map(Some),
            Err(err) if err.is_not_found() || is_missing_alias(&err) => Ok(None),
            Err(err) => Err(err),
        }
    }

    // ----- plumbing -----

    fn url(&self, prefix: &[&str], segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        // `new` refused URLs that cannot be a base, so this always yields the segments.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(prefix).extend(segments);
        }
        url
    }

    fn artifact_url(&self, run: &RunInfo, artifact_path: &str) -> Result<Url> {
        let mut segments = artifact_root(run, &self.server)?;
        segments.extend(split_artifact_path(artifact_path, false)?);
        let mut all = vec!["artifacts".to_owned()];
        all.extend(segments);
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        Ok(self.url(&ARTIFACTS_API, &refs))
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Value> {
        let segments: Vec<&str> = path.split('/').collect();
        let url = self.url(&API, &segments);
        let idempotent = retry::is_idempotent(&Method::GET, path);
        self.json_call(Method::GET, &endpoint(path), idempotent, || {
            self.http
                .get(url.clone())
                .query(query)
                .timeout(self.request_timeout)
        })
        .await
    }

    async fn post<B: Serialize + ?Sized>(&self, path: &str, body: &B) -> Result<Value> {
        let segments: Vec<&str> = path.split('/').collect();
        let url = self.url(&API, &segments);
        let idempotent = retry::is_idempotent(&Method::POST, path);
        self.json_call(Method::POST, &endpoint(path), idempotent, || {
            self.http
                .post(url.clone())
                .json(body)
                .timeout(self.request_timeout)
        })
        .await
    }

    /// Sends the request `build` makes, retrying as the policy says, and reads the answer as
    /// JSON; each attempt builds the request anew.
    async fn json_call(
        &self,
        method: Method,
        endpoint: &str,
        idempotent: bool,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Value> {
        self.retrying(&method, endpoint, idempotent, async || {
            let response = self.send(method.clone(), endpoint, build()).await?;
            let response = self.check(response, endpoint).await?;
            let content_type = content_type(&response);
            let text = response
                .text()
                .await
                .map_err(|source| self.transport(endpoint, source))?;
            if text.trim().is_empty() {
                return Ok(Value::Object(Default::default()));
            }
            serde_json::from_str(&text).map_err(|err| RegistryError::Decode {
                server: self.server.clone(),
                endpoint: endpoint.to_owned(),
                detail: format!(
                    "expected json but got {}: {err}: {}",
                    content_type.as_deref().unwrap_or("no content type"),
                    excerpt(&text)
                ),
            })
        })
        .await
    }

    /// Sends one request (one attempt), counted and traced.
    async fn send(
        &self,
        method: Method,
        endpoint: &str,
        request: RequestBuilder,
    ) -> Result<Response> {
        let request = match &self.auth {
            Auth::Anonymous => request,
            Auth::Basic { user, password } => request.basic_auth(user, Some(password.expose())),
            Auth::Bearer { token } => request.bearer_auth(token.expose()),
        };
        self.requests.fetch_add(1, Ordering::Relaxed);
        let span = tracing::debug_span!(
            "mlflow_request",
            method = %method,
            endpoint = %endpoint,
            status = tracing::field::Empty,
        );
        let started = Instant::now();
        async {
            let result = request.send().await;
            match &result {
                Ok(response) => {
                    tracing::Span::current().record("status", response.status().as_u16());
                    tracing::debug!(
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "answered"
                    );
                }
                Err(err) => tracing::debug!(error = %err, "no answer"),
            }
            result.map_err(|source| self.transport(endpoint, source))
        }
        .instrument(span)
        .await
    }

    /// Turns a non-success answer into the matching error.
    async fn check(&self, response: Response, endpoint: &str) -> Result<Response> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        if status.as_u16() == 401 || status.as_u16() == 403 {
            return Err(RegistryError::Unauthorized {
                server: self.server.clone(),
                user: self.auth.principal().to_owned(),
                endpoint: endpoint.to_owned(),
                status: status.as_u16(),
            });
        }
        let content_type = content_type(&response);
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(retry::parse_retry_after);
        let text = response.text().await.unwrap_or_default();
        let mlflow_error = serde_json::from_str::<Value>(&text).ok().and_then(|body| {
            let code = body.get("error_code")?.as_str()?.to_owned();
            let message = body
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            Some((code, message))
        });
        match mlflow_error {
            Some((code, message)) if code == "RESOURCE_DOES_NOT_EXIST" => {
                Err(RegistryError::NotFound {
                    server: self.server.clone(),
                    endpoint: endpoint.to_owned(),
                    message: excerpt(&message),
                })
            }
            Some((code, message)) => Err(RegistryError::Server {
                server: self.server.clone(),
                endpoint: endpoint.to_owned(),
                status: status.as_u16(),
                body_excerpt: format!("{code}: {}", excerpt(&message)),
                error_code: Some(code),
                retry_after,
            }),
            None => {
                let kind = content_type.as_deref().unwrap_or("no content type");
                let hint = if status.as_u16() == 404 {
                    "the server does not know this route; check that the tracking uri points at an mlflow 2.x or 3.x server"
                } else {
                    "not an mlflow error; check the tracking uri and any proxy in front of the server"
                };
                Err(RegistryError::Server {
                    server: self.server.clone(),
                    endpoint: endpoint.to_owned(),
                    status: status.as_u16(),
                    error_code: None,
                    body_excerpt: format!("non-json answer ({kind}), {hint}: {}", excerpt(&text)),
                    retry_after,
                })
            }
        }
    }

    fn transport(&self, endpoint: &str, error: reqwest::Error) -> RegistryError {
        RegistryError::Transport {
            server: self.server.clone(),
            endpoint: endpoint.to_owned(),
            error,
        }
    }

    fn decode<T: DeserializeOwned>(&self, value: Value, path: &str) -> Result<T> {
        serde_json::from_value(value).map_err(|err| RegistryError::Decode {
            server: self.server.clone(),
            endpoint: if path.starts_with('/') {
                path.to_owned()
            } else {
                endpoint(path)
            },
            detail: err.to_string(),
        })
    }

    fn field<T: DeserializeOwned>(&self, mut answer: Value, key: &str, path: &str) -> Result<T> {
        match answer.get_mut(key) {
            Some(value) => self.decode(value.take(), path),
            None => Err(RegistryError::Decode {
                server: self.server.clone(),
                endpoint: endpoint(path),
                detail: format!("the answer has no {key:?} field"),
            }),
        }
    }

    fn optional_list<T: DeserializeOwned>(
        &self,
        mut answer: Value,
        key: &str,
        path: &str,
    ) -> Result<Vec<T>> {
        match answer.get_mut(key) {
            Some(value) => self.decode(value.take(), path),
            None => Ok(Vec::new()),
        }
    }

    fn page<T: DeserializeOwned>(
        &self,
        mut answer: Value,
        key: &str,
        path: &str,
    ) -> Result<(Vec<T>, Option<String>)> {
        let next = answer
            .get("next_page_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        let items = match answer.get_mut(key) {
            Some(value) => self.decode(value.take(), path)?,
            None => Vec::new(),
        };
        Ok((items, next))
    }
}

fn endpoint(path: &str) -> String {
    format!("/api/2.0/mlflow/{path}")
}

fn effective_limit(limit: usize) -> usize {
    if limit == 0 { SEARCH_PAGE } else { limit }
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn content_type(response: &Response) -> Option<String> {
    response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn excerpt(text: &str) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}...", &flat[..cut]),
        None => flat,
    }
}

fn local_error(path: &Path, source: std::io::Error) -> RegistryError {
    RegistryError::LocalFile {
        path: path.to_owned(),
        error: source,
    }
}

/// MLflow answers a missing alias with 400 INVALID_PARAMETER_VALUE "... alias ... not found".
fn is_missing_alias(err: &RegistryError) -> bool {
    match err {
        RegistryError::Server {
            error_code: Some(code),
            body_excerpt,
            ..
        } => {
            let text = body_excerpt.to_ascii_lowercase();
            code == "INVALID_PARAMETER_VALUE"
                && text.contains("alias")
                && text.contains("not found")
        }
        _ => false,
    }
}

/// The path segments of a run's artifact root below the proxy's `artifacts/` route: the
/// run's `artifact_uri` `mlflow-artifacts:/<exp>/<run>/artifacts` (or with a
/// `//host:port` authority) gives `[<exp>, <run>, "artifacts"]`.
fn artifact_root(run: &RunInfo, server: &str) -> Result<Vec<String>> {
    let unsupported = || RegistryError::UnsupportedArtifactUri {
        server: server.to_owned(),
        run_id: run.run_id.clone(),
        artifact_uri: run.artifact_uri.clone(),
    };
    let url = Url::parse(&run.artifact_uri).map_err(|_| unsupported())?;
    if url.scheme() != "mlflow-artifacts" {
        return Err(unsupported());
    }
    let segments: Vec<String> = url
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if segments.is_empty() {
        return Err(unsupported());
    }
    Ok(segments)
}

fn split_artifact_path(path: &str, allow_empty: bool) -> Result<Vec<String>> {
    let invalid = || RegistryError::InvalidArtifactPath {
        path: path.to_owned(),
    };
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return if allow_empty {
            Ok(Vec::new())
        } else {
            Err(invalid())
        };
    }
    if trimmed.starts_with('/') || trimmed.contains('\\') {
        return Err(invalid());
    }
    trimmed
        .split('/')
        .map(|segment| match segment {
            "" | "." | ".." => Err(invalid()),
            s => Ok(s.to_owned()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_with(artifact_uri: &str) -> RunInfo {
        RunInfo {
            run_id: "abc".into(),
            experiment_id: "1".into(),
            run_name: None,
            status: RunStatus::Running,
            start_time: None,
            end_time: None,
            artifact_uri: artifact_uri.into(),
            lifecycle_stage: None,
        }
    }

    fn client(base: &str) -> MlflowClient {
        MlflowClient::new(Url::parse(base).unwrap(), Auth::Anonymous).unwrap()
    }

    #[test]
    fn artifact_url_maps_the_run_artifact_uri_onto_the_proxy_route() {
        let url = client("http://127.0.0.1:5000")
            .artifact_url(
                &run_with("mlflow-artifacts:/1/abc/artifacts"),
                "model/MLmodel",
            )
            .unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:5000/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/model/MLmodel"
        );
    }

    #[test]
    fn artifact_url_keeps_a_base_path_and_drops_an_artifact_uri_authority() {
        let url = client("https://dagshub.com/acme/churn.mlflow")
            .artifact_url(
                &run_with("mlflow-artifacts://host:80/1/abc/artifacts"),
                "a b.txt",
            )
            .unwrap();
        assert_eq!(
            url.as_str(),
            "https://dagshub.com/acme/churn.mlflow/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/a%20b.txt"
        );
    }

    #[test]
    fn artifact_paths_that_climb_out_are_rejected() {
        let c = client("http://127.0.0.1:5000");
        let run = run_with("mlflow-artifacts:/1/abc/artifacts");
        for bad in ["../x", "a/../../x", "/etc/passwd", "", "a//b"] {
            assert!(
                matches!(
                    c.artifact_url(&run, bad),
                    Err(RegistryError::InvalidArtifactPath { .. })
                ),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn artifact_stores_not_behind_the_proxy_are_rejected_with_a_hint() {
        let err = client("http://127.0.0.1:5000")
            .artifact_url(&run_with("s3://bucket/1/abc/artifacts"), "x")
            .unwrap_err();
        assert!(err.to_string().contains("--serve-artifacts"), "{err}");
    }

    #[test]
    fn api_urls_append_to_the_base_path() {
        let url = client("https://dagshub.com/acme/churn.mlflow/").url(&API, &["runs", "get"]);
        assert_eq!(
            url.as_str(),
            "https://dagshub.com/acme/churn.mlflow/api/2.0/mlflow/runs/get"
        );
    }

    #[test]
    fn excerpt_flattens_and_truncates() {
        let long = "x ".repeat(1000);
        let cut = excerpt(&long);
        assert!(
            cut.ends_with("...") && cut.len() <= EXCERPT_CHARS + 3,
            "{cut}"
        );
        assert_eq!(excerpt("<p>\n  hi\n</p>"), "<p> hi </p>");
    }
}
