//! The MLflow client against real MLflow servers: 3.17.2, 2.22.2 (what DagsHub runs) and
//! 3.17.2 with basic auth.
//!
//! Every behaviour runs against both versions: `against_both!(behaviour)` makes the tests
//! `behaviour::mlflow3` and `behaviour::mlflow2`.
#![allow(
    clippy::unwrap_used,
    reason = "the behaviours are async fns called from #[test]s, which clippy's allow-unwrap-in-tests does not see"
)]

use std::time::{Duration, Instant};

use model_pusher::credentials::{Auth, Secret};
use model_pusher::registry::{
    KeyValue, Metric, MlflowClient, ModelVersionStatus, RegistryError, RetryPolicy, Run, RunQuery,
    RunStatus, Stage, VersionQuery,
};

use crate::support::mlflow::{self, ADMIN_PASSWORD, ADMIN_USER, Flavor};
use crate::support::proxy::{At, Fault, FaultKind, FaultProxy};

macro_rules! against_both {
    ($($behaviour:ident),* $(,)?) => {$(
        mod $behaviour {
            use super::*;

            #[tokio::test]
            async fn mlflow3() {
                super::$behaviour(Flavor::Mlflow3).await;
            }

            #[tokio::test]
            async fn mlflow2() {
                super::$behaviour(Flavor::Mlflow2).await;
            }
        }
    )*};
}

against_both!(
    experiment_is_created_once_then_found_by_name,
    missing_experiment_is_none,
    params_metrics_and_tags_read_back_from_the_run,
    nan_metric_reads_back_as_nan,
    log_batch_splits_over_mlflow_limits,
    finished_run_has_status_and_end_time,
    runs_are_found_by_tag_filter,
    streamed_artifact_reports_progress_is_listed_and_downloads_identically,
    artifact_directory_upload_keeps_the_tree,
    version_registered_from_run_source_becomes_ready,
    missing_registered_model_is_none,
    missing_model_version_is_not_found,
    transition_to_production_shows_in_latest_versions,
    alias_points_at_the_version_it_was_set_to,
    missing_alias_is_none,
    deleted_alias_is_gone,
    versions_are_searched_by_name_and_tag_filter,
    unknown_route_is_reported_as_non_json_404,
    requests_are_counted,
    get_is_retried_after_two_503s_and_succeeds,
    html_502_from_a_gateway_is_retried,
    timed_out_get_is_retried,
    answer_cut_off_mid_body_is_retried,
    run_create_answer_cut_off_mid_body_is_ambiguous,
    run_create_reset_after_forwarding_is_ambiguous_and_leaves_one_run,
    run_create_refused_with_503_is_retried_and_creates_one_run,
    version_create_reset_after_forwarding_is_ambiguous_and_leaves_one_version,
    idempotent_tag_write_is_repeated_after_a_reset,
    rate_limited_request_waits_for_retry_after,
    retry_after_beyond_the_budget_gives_up_at_once,
    server_error_500_is_not_retried,
    non_json_success_is_not_retried,
    attempts_stop_at_max_attempts,
    retry_budget_bounds_the_attempts,
    upload_cut_off_twice_is_resent_whole,
);

const MLMODEL: &str =
    "artifact_path: model\nflavors:\n  python_function:\n    loader_module: mlflow.sklearn\n";

fn client(flavor: Flavor) -> MlflowClient {
    mlflow::shared(flavor).client()
}

async fn new_run(client: &MlflowClient) -> Run {
    let experiment = client
        .get_or_create_experiment(&mlflow::unique_name("exp"))
        .await
        .unwrap();
    client
        .create_run(
            &experiment.experiment_id,
            Some("candidate"),
            &[KeyValue::new("origin", "model-pusher-tests")],
        )
        .await
        .unwrap()
}

fn metric(key: &str, value: f64) -> Metric {
    Metric {
        key: key.into(),
        value,
        timestamp: 1_700_000_000_000,
        step: 0,
    }
}

/// A run holding a `model/MLmodel` artifact, and a registered model with one READY version
/// registered from it.
async fn registered_version(client: &MlflowClient) -> (String, String, Run) {
    let run = new_run(client).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("MLmodel"), MLMODEL).unwrap();
    client
        .upload_artifact_dir(&run.info, dir.path(), "model")
        .await
        .unwrap();
    let name = mlflow::unique_name("model");
    client.create_registered_model(&name, None).await.unwrap();
    let version = client
        .create_model_version(
            &name,
            &format!("runs:/{}/model", run.info.run_id),
            Some(&run.info.run_id),
            &[],
            None,
        )
        .await
        .unwrap();
    let ready = client
        .wait_until_ready(&name, &version.version, Duration::from_secs(30))
        .await
        .unwrap();
    (name, ready.version, run)
}

async fn experiment_is_created_once_then_found_by_name(flavor: Flavor) {
    let client = client(flavor);
    let name = mlflow::unique_name("exp");
    let created = client.get_or_create_experiment(&name).await.unwrap();
    let again = client.get_or_create_experiment(&name).await.unwrap();
    assert_eq!(created.experiment_id, again.experiment_id);
    assert_eq!(again.name, name);
}

async fn missing_experiment_is_none(flavor: Flavor) {
    let client = client(flavor);
    let found = client
        .get_experiment_by_name(&mlflow::unique_name("never-created"))
        .await
        .unwrap();
    assert_eq!(found, None);
}

async fn params_metrics_and_tags_read_back_from_the_run(flavor: Flavor) {
    let client = client(flavor);
    let run = new_run(&client).await;
    client
        .log_batch(
            &run.info.run_id,
            &[metric("accuracy", 0.91), metric("rows", 1200.0)],
            &[KeyValue::new("max_depth", "8")],
            &[KeyValue::new("git_sha", "abc123")],
        )
        .await
        .unwrap();
    client
        .set_run_tag(&run.info.run_id, "decision", "promote")
        .await
        .unwrap();

    let back = client.get_run(&run.info.run_id).await.unwrap();
    assert_eq!(back.metric("accuracy"), Some(0.91));
    assert_eq!(back.metric("rows"), Some(1200.0));
    assert_eq!(back.param("max_depth"), Some("8"));
    assert_eq!(back.tag("git_sha"), Some("abc123"));
    assert_eq!(back.tag("decision"), Some("promote"));
    assert_eq!(back.tag("origin"), Some("model-pusher-tests"));
    assert_eq!(back.info.run_name.as_deref(), Some("candidate"));
}

async fn nan_metric_reads_back_as_nan(flavor: Flavor) {
    let client = client(flavor);
    let run = new_run(&client).await;
    client
        .log_batch(&run.info.run_id, &[metric("auc", f64::NAN)], &[], &[])
        .await
        .unwrap();
    let back = client.get_run(&run.info.run_id).await.unwrap();
    let auc = back.metric("auc").expect("the metric was logged");
    assert!(auc.is_nan(), "auc read back as {auc}");
}

async fn log_batch_splits_over_mlflow_limits(flavor: Flavor) {
    let client = client(flavor);
    let run = new_run(&client).await;
    let params: Vec<KeyValue> = (0..250)
        .map(|i| KeyValue::new(format!("p{i}"), i.to_string()))
        .collect();
    let before = client.requests_made();
    client
        .log_batch(&run.info.run_id, &[], &params, &[])
        .await
        .unwrap();
    assert_eq!(client.requests_made() - before, 3, "100 params per request");
    let back = client.get_run(&run.info.run_id).await.unwrap();
    assert_eq!(back.data.params.len(), 250);
    assert_eq!(back.param("p249"), Some("249"));
}

async fn finished_run_has_status_and_end_time(flavor: Flavor) {
    let client = client(flavor);
    let run = new_run(&client).await;
    let info = client
        .update_run(&run.info.run_id, RunStatus::Finished)
        .await
        .unwrap();
    assert_eq!(info.status, RunStatus::Finished);
    assert!(info.end_time.is_some());
}

async fn runs_are_found_by_tag_filter(flavor: Flavor) {
    let client = client(flavor);
    let run = new_run(&client).await;
    let marker = mlflow::unique_name("marker");
    client
        .set_run_tag(&run.info.run_id, "marker", &marker)
        .await
        .unwrap();
    let found = client
        .search_runs(&RunQuery {
            experiment_ids: vec![run.info.experiment_id.clone()],
            filter: format!("tags.marker = '{marker}'"),
            ..Default::default()
        })
        .await
        .unwrap();
    let ids: Vec<&str> = found.iter().map(|r| r.info.run_id.as_str()).collect();
    assert_eq!(ids, [run.info.run_id.as_str()]);
}

async fn streamed_artifact_reports_progress_is_listed_and_downloads_identically(flavor: Flavor) {
    let client = client(flavor);
    let run = new_run(&client).await;
    // Larger than one 64 KiB read so that the body goes out as several chunks.
    let contents: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &contents).unwrap();

    let reported = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let progress: model_pusher::registry::Progress = {
        let reported = std::sync::Arc::clone(&reported);
        std::sync::Arc::new(move |sent| reported.lock().unwrap().push(sent))
    };
    client
        .upload_artifact_with_progress(&run.info, file.path(), "model/model.pkl", Some(progress))
        .await
        .unwrap();
    // Progress climbs chunk by chunk from 0 to the whole file.
    let reported = reported.lock().unwrap().clone();
    assert!(reported.len() > 2, "{reported:?}");
    assert_eq!(reported.first(), Some(&0));
    assert_eq!(reported.last(), Some(&(contents.len() as u64)));
    assert!(
        reported.windows(2).all(|pair| pair[0] < pair[1]),
        "{reported:?}"
    );

    let listing = client.list_artifacts(&run.info, "model").await.unwrap();
    let entry = listing
        .iter()
        .find(|f| f.path.ends_with("model.pkl"))
        .unwrap_or_else(|| panic!("model.pkl not listed in {listing:?}"));
    assert_eq!(entry.file_size, Some(contents.len() as i64));
    let downloaded = client
        .download_artifact(&run.info, "model/model.pkl")
        .await
        .unwrap();
    assert!(downloaded == contents, "downloaded bytes differ");
}

async fn artifact_directory_upload_keeps_the_tree(flavor: Flavor) {
    let client = client(flavor);
    let run = new_run(&client).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("MLmodel"), MLMODEL).unwrap();
    std::fs::create_dir(dir.path().join("extra")).unwrap();
    std::fs::write(dir.path().join("extra").join("notes.txt"), "hello").unwrap();

    let mut uploaded = client
        .upload_artifact_dir(&run.info, dir.path(), "model")
        .await
        .unwrap();
    uploaded.sort();

    assert_eq!(uploaded, ["model/MLmodel", "model/extra/notes.txt"]);
    let notes = client
        .download_artifact(&run.info, "model/extra/notes.txt")
        .await
        .unwrap();
    assert_eq!(notes, b"hello");
    let root = client.list_artifacts(&run.info, "").await.unwrap();
    assert!(
        root.iter().any(|f| f.path == "model" && f.is_dir),
        "{root:?}"
    );
}

async fn version_registered_from_run_source_becomes_ready(flavor: Flavor) {
    let client = client(flavor);
    let (name, version, run) = registered_version(&client).await;
    let fetched = client.get_model_version(&name, &version).await.unwrap();
    assert_eq!(fetched.status, ModelVersionStatus::Ready);
    assert_eq!(fetched.version, "1");
    assert_eq!(fetched.run_id.as_deref(), Some(run.info.run_id.as_str()));
    assert_eq!(fetched.source, format!("runs:/{}/model", run.info.run_id));
    assert_eq!(fetched.current_stage, Stage::None);
}

async fn missing_registered_model_is_none(flavor: Flavor) {
    let client = client(flavor);
    let found = client
        .get_registered_model(&mlflow::unique_name("never-registered"))
        .await
        .unwrap();
    assert_eq!(found, None);
}

async fn missing_model_version_is_not_found(flavor: Flavor) {
    let client = client(flavor);
    let (name, _, _) = registered_version(&client).await;
    let err = client.get_model_version(&name, "99").await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("/api/2.0/mlflow/model-versions/get"),
        "{message}"
    );
    assert!(message.contains(client.server()), "{message}");
}

async fn transition_to_production_shows_in_latest_versions(flavor: Flavor) {
    let client = client(flavor);
    let (name, version, _) = registered_version(&client).await;
    let moved = client
        .transition_stage(&name, &version, Stage::Production, false)
        .await
        .unwrap();
    assert_eq!(moved.current_stage, Stage::Production);

    let latest = client
        .get_latest_versions(&name, &[Stage::Production])
        .await
        .unwrap();
    let versions: Vec<&str> = latest.iter().map(|v| v.version.as_str()).collect();
    assert_eq!(versions, [version.as_str()]);
    let staging = client
        .get_latest_versions(&name, &[Stage::Staging])
        .await
        .unwrap();
    assert!(staging.is_empty(), "{staging:?}");
    let either = client
        .get_latest_versions(&name, &[Stage::Staging, Stage::Production])
        .await
        .unwrap();
    assert_eq!(either.len(), 1, "{either:?}");
}

async fn alias_points_at_the_version_it_was_set_to(flavor: Flavor) {
    let client = client(flavor);
    let (name, version, _) = registered_version(&client).await;
    client.set_alias(&name, "champion", &version).await.unwrap();
    let champion = client
        .get_model_version_by_alias(&name, "champion")
        .await
        .unwrap()
        .expect("the alias was just set");
    assert_eq!(champion.version, version);
    let model = client.get_registered_model(&name).await.unwrap().unwrap();
    assert!(
        model
            .aliases
            .iter()
            .any(|a| a.alias == "champion" && a.version == version),
        "{:?}",
        model.aliases
    );
}

async fn missing_alias_is_none(flavor: Flavor) {
    let client = client(flavor);
    let (name, _, _) = registered_version(&client).await;
    let found = client
        .get_model_version_by_alias(&name, "champion")
        .await
        .unwrap();
    assert_eq!(found, None);
}

async fn deleted_alias_is_gone(flavor: Flavor) {
    let client = client(flavor);
    let (name, version, _) = registered_version(&client).await;
    client
        .set_alias(&name, "challenger", &version)
        .await
        .unwrap();
    client.delete_alias(&name, "challenger").await.unwrap();
    let found = client
        .get_model_version_by_alias(&name, "challenger")
        .await
        .unwrap();
    assert_eq!(found, None);
}

async fn versions_are_searched_by_name_and_tag_filter(flavor: Flavor) {
    let client = client(flavor);
    let (name, first, run) = registered_version(&client).await;
    let second = client
        .create_model_version(
            &name,
            &format!("runs:/{}/model", run.info.run_id),
            Some(&run.info.run_id),
            &[KeyValue::new("candidate", "true")],
            None,
        )
        .await
        .unwrap();
    client
        .set_model_version_tag(&name, &first, "candidate", "false")
        .await
        .unwrap();

    let all = client
        .search_model_versions(&VersionQuery {
            filter: format!("name = '{name}'"),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut versions: Vec<&str> = all.iter().map(|v| v.version.as_str()).collect();
    versions.sort();
    assert_eq!(versions, [first.as_str(), second.version.as_str()]);

    let candidates = client
        .search_model_versions(&VersionQuery {
            filter: format!("name = '{name}' and tag.candidate = 'true'"),
            ..Default::default()
        })
        .await
        .unwrap();
    let versions: Vec<&str> = candidates.iter().map(|v| v.version.as_str()).collect();
    assert_eq!(versions, [second.version.as_str()]);
}

async fn unknown_route_is_reported_as_non_json_404(flavor: Flavor) {
    let server = mlflow::shared(flavor);
    let base = server.url().join("not-mlflow/").unwrap();
    let client = MlflowClient::new(base, Auth::Anonymous).unwrap();
    let err = client.get_run("0123").await.unwrap_err();
    match &err {
        RegistryError::Server {
            status, error_code, ..
        } => assert_eq!((*status, error_code.as_deref()), (404, None)),
        other => panic!("expected a server error, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains("non-json"), "{message}");
    assert!(message.contains("/api/2.0/mlflow/runs/get"), "{message}");
}

async fn requests_are_counted(flavor: Flavor) {
    let client = client(flavor);
    assert_eq!(client.requests_made(), 0);
    let _ = client
        .get_experiment_by_name(&mlflow::unique_name("counted"))
        .await
        .unwrap();
    let _ = client
        .get_registered_model(&mlflow::unique_name("counted"))
        .await
        .unwrap();
    assert_eq!(client.requests_made(), 2);
}

// ----- basic auth -----

#[tokio::test]
async fn basic_auth_admin_can_create_and_register() {
    let client = client(Flavor::BasicAuth);
    let (name, version, _) = registered_version(&client).await;
    client.set_alias(&name, "champion", &version).await.unwrap();
    let champion = client
        .get_model_version_by_alias(&name, "champion")
        .await
        .unwrap();
    assert_eq!(champion.map(|v| v.version), Some(version));
}

#[tokio::test]
async fn basic_auth_wrong_password_is_unauthorized_and_never_shows_the_password() {
    let server = mlflow::shared(Flavor::BasicAuth);
    let wrong = "wrong-password-do-not-print";
    let client = server.client_with(Auth::Basic {
        user: ADMIN_USER.into(),
        password: Secret::new(wrong),
    });
    let err = client
        .get_or_create_experiment(&mlflow::unique_name("exp"))
        .await
        .unwrap_err();

    assert!(
        matches!(&err, RegistryError::Unauthorized { status: 401, user, .. } if user == ADMIN_USER),
        "{err:?}"
    );
    let display = err.to_string();
    let debug = format!("{err:?}");
    assert!(
        display.starts_with(&format!(
            "authentication to {} failed for user {ADMIN_USER}",
            client.server()
        )),
        "{display}"
    );
    for shown in [&display, &debug] {
        assert!(!shown.contains(wrong), "password leaked: {shown}");
        assert!(!shown.contains(ADMIN_PASSWORD), "password leaked: {shown}");
    }
}

#[tokio::test]
async fn basic_auth_anonymous_request_is_unauthorized() {
    let server = mlflow::shared(Flavor::BasicAuth);
    let client = server.client_with(Auth::Anonymous);
    let err = client
        .get_registered_model(&mlflow::unique_name("model"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RegistryError::Unauthorized { user, .. } if user == "anonymous"),
        "{err:?}"
    );
}

// ----- transport -----

#[tokio::test]
async fn unreachable_server_is_a_transport_error_naming_it() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = reqwest::Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
    let client = MlflowClient::new(url, Auth::Anonymous).unwrap();
    let err = client.get_run("0123").await.unwrap_err();
    assert!(matches!(err, RegistryError::Transport { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(message.contains("/api/2.0/mlflow/runs/get"), "{message}");
}

// ----- retries, through a fault-injecting proxy -----

/// Quick retries, so that the tests do not wait for the default backoff.
fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        budget: Duration::from_secs(30),
    }
}

/// A proxy in front of the shared server of `flavor` and a client talking through it.
fn proxied(flavor: Flavor, policy: RetryPolicy) -> (FaultProxy, MlflowClient) {
    let proxy = FaultProxy::start(&mlflow::shared(flavor).url());
    let client = MlflowClient::new(proxy.url(), Auth::Anonymous)
        .unwrap()
        .with_retry(policy);
    (proxy, client)
}

fn on(path: &str, kind: FaultKind) -> Fault {
    Fault::new(At::PathContains(path.into()), kind)
}

async fn runs_in(direct: &MlflowClient, experiment_id: &str) -> Vec<Run> {
    direct
        .search_runs(&RunQuery {
            experiment_ids: vec![experiment_id.to_owned()],
            ..Default::default()
        })
        .await
        .unwrap()
}

async fn get_is_retried_after_two_503s_and_succeeds(flavor: Flavor) {
    let name = mlflow::unique_name("exp");
    let created = client(flavor)
        .get_or_create_experiment(&name)
        .await
        .unwrap();
    let (proxy, client) = proxied(flavor, quick_retries());
    proxy.inject(on("experiments/get-by-name", FaultKind::Status(503)).times(2));

    let found = client.get_experiment_by_name(&name).await.unwrap();

    assert_eq!(found.map(|e| e.experiment_id), Some(created.experiment_id));
    assert_eq!(proxy.count("experiments/get-by-name"), 3);
    assert_eq!(client.requests_made(), 3);
}

async fn html_502_from_a_gateway_is_retried(flavor: Flavor) {
    let (proxy, client) = proxied(flavor, quick_retries());
    proxy.inject(on("registered-models/get", FaultKind::Html(502)));
    let found = client
        .get_registered_model(&mlflow::unique_name("never-registered"))
        .await
        .unwrap();
    assert_eq!(found, None);
    assert_eq!(proxy.count("registered-models/get"), 2);
}

async fn timed_out_get_is_retried(flavor: Flavor) {
    let (proxy, client) = proxied(flavor, quick_retries());
    let client = client.with_request_timeout(Duration::from_millis(500));
    proxy.inject(on(
        "registered-models/get",
        FaultKind::Delay(Duration::from_secs(3)),
    ));
    let started = Instant::now();
    let found = client
        .get_registered_model(&mlflow::unique_name("slow"))
        .await
        .unwrap();
    assert_eq!(found, None);
    assert_eq!(proxy.count("registered-models/get"), 2);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "waited for the delayed answer"
    );
}

async fn answer_cut_off_mid_body_is_retried(flavor: Flavor) {
    let direct = client(flavor);
    let run = new_run(&direct).await;
    let (proxy, client) = proxied(flavor, quick_retries());
    proxy.inject(on("runs/get", FaultKind::ResetMidAnswer));
    let back = client.get_run(&run.info.run_id).await.unwrap();
    assert_eq!(back.info.run_id, run.info.run_id);
    assert_eq!(proxy.count("runs/get"), 2);
}

async fn run_create_answer_cut_off_mid_body_is_ambiguous(flavor: Flavor) {
    let direct = client(flavor);
    let experiment = direct
        .get_or_create_experiment(&mlflow::unique_name("exp"))
        .await
        .unwrap();
    let (proxy, client) = proxied(flavor, quick_retries());
    proxy.inject(on("runs/create", FaultKind::ResetMidAnswer));
    let err = client
        .create_run(&experiment.experiment_id, None, &[])
        .await
        .unwrap_err();
    assert!(err.is_ambiguous(), "{err:?}");
    assert_eq!(proxy.count("runs/create"), 1);
    assert_eq!(runs_in(&direct, &experiment.experiment_id).await.len(), 1);
}

async fn run_create_reset_after_forwarding_is_ambiguous_and_leaves_one_run(flavor: Flavor) {
    let direct = client(flavor);
    let experiment = direct
        .get_or_create_experiment(&mlflow::unique_name("exp"))
        .await
        .unwrap();
    let (proxy, client) = proxied(flavor, quick_retries());
    proxy.inject(on("runs/create", FaultKind::ResetAfterForward));

    let err = client
        .create_run(&experiment.experiment_id, Some("candidate"), &[])
        .await
        .unwrap_err();

    assert!(err.is_ambiguous(), "{err:?}");
    assert!(
        !err.is_transient(),
        "an ambiguous write must not be repeated blindly"
    );
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "/api/2.0/mlflow/runs/create on {} may or may not have been applied: ",
            client.server()
        )),
        "{message}"
    );
    assert!(message.ends_with("; re-run to resume"), "{message}");
    assert_eq!(proxy.count("runs/create"), 1);
    assert_eq!(client.requests_made(), 1);
    assert_eq!(runs_in(&direct, &experiment.experiment_id).await.len(), 1);
}

async fn run_create_refused_with_503_is_retried_and_creates_one_run(flavor: Flavor) {
    let direct = client(flavor);
    let experiment = direct
        .get_or_create_experiment(&mlflow::unique_name("exp"))
        .await
        .unwrap();
    let (proxy, client) = proxied(flavor, quick_retries());
    proxy.inject(on("runs/create", FaultKind::Status(503)));

    let run = client
        .create_run(&experiment.experiment_id, Some("candidate"), &[])
        .await
        .unwrap();

    assert_eq!(proxy.count("runs/create"), 2);
    let runs = runs_in(&direct, &experiment.experiment_id).await;
    let ids: Vec<&str> = runs.iter().map(|r| r.info.run_id.as_str()).collect();
    assert_eq!(ids, [run.info.run_id.as_str()]);
}

async fn version_create_reset_after_forwarding_is_ambiguous_and_leaves_one_version(flavor: Flavor) {
    let direct = client(flavor);
    let run = new_run(&direct).await;
    let name = mlflow::unique_name("model");
    direct.create_registered_model(&name, None).await.unwrap();
    let (proxy, client) = proxied(flavor, quick_retries());
    proxy.inject(on("model-versions/create", FaultKind::ResetAfterForward));

    let err = client
        .create_model_version(
            &name,
            &format!("runs:/{}/model", run.info.run_id),
            Some(&run.info.run_id),
            &[],
            None,
        )
        .await
        .unwrap_err();

    assert!(err.is_ambiguous(), "{err:?}");
    assert_eq!(proxy.count("model-versions/create"), 1);
    let versions = direct
        .search_model_versions(&VersionQuery {
            filter: format!("name = '{name}'"),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(versions.len(), 1, "{versions:?}");
}

async fn idempotent_tag_write_is_repeated_after_a_reset(flavor: Flavor) {
    let direct = client(flavor);
    let run = new_run(&direct).await;
    let (proxy, client) = proxied(flavor, quick_retries());
    proxy.inject(on("runs/set-tag", FaultKind::ResetAfterForward));
    proxy.inject(on("runs/set-tag", FaultKind::ResetBeforeForward));

    client
        .set_run_tag(&run.info.run_id, "decision", "promote")
        .await
        .unwrap();

    assert_eq!(proxy.count("runs/set-tag"), 3);
    let back = direct.get_run(&run.info.run_id).await.unwrap();
    assert_eq!(back.tag("decision"), Some("promote"));
}

async fn rate_limited_request_waits_for_retry_after(flavor: Flavor) {
    let (proxy, client) = proxied(flavor, quick_retries());
    proxy.inject(on(
        "registered-models/get",
        FaultKind::TooManyRequests {
            retry_after_secs: 1,
        },
    ));
    let started = Instant::now();
    let found = client
        .get_registered_model(&mlflow::unique_name("limited"))
        .await
        .unwrap();
    assert_eq!(found, None);
    assert_eq!(proxy.count("registered-models/get"), 2);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "retried after {:?}, before the server's Retry-After",
        started.elapsed()
    );
}

async fn retry_after_beyond_the_budget_gives_up_at_once(flavor: Flavor) {
    let policy = RetryPolicy {
        budget: Duration::from_secs(5),
        ..quick_retries()
    };
    let (proxy, client) = proxied(flavor, policy);
    proxy.inject(on(
        "registered-models/get",
        FaultKind::TooManyRequests {
            retry_after_secs: 3600,
        },
    ));
    let started = Instant::now();
    let err = client
        .get_registered_model(&mlflow::unique_name("limited"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::Server { status: 429, .. }),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert_eq!(proxy.count("registered-models/get"), 1);
    assert!(started.elapsed() < Duration::from_secs(5));
}

async fn server_error_500_is_not_retried(flavor: Flavor) {
    let (proxy, client) = proxied(flavor, quick_retries());
    proxy.inject(on("registered-models/get", FaultKind::Status(500)));
    let err = client
        .get_registered_model(&mlflow::unique_name("model"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::Server { status: 500, .. }),
        "{err:?}"
    );
    assert!(!err.is_transient());
    assert_eq!(proxy.count("registered-models/get"), 1);
    assert_eq!(client.requests_made(), 1);
}

async fn non_json_success_is_not_retried(flavor: Flavor) {
    let (proxy, client) = proxied(flavor, quick_retries());
    proxy.inject(on("registered-models/get", FaultKind::Html(200)));
    let err = client
        .get_registered_model(&mlflow::unique_name("model"))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Decode { .. }), "{err:?}");
    assert!(!err.is_transient());
    assert_eq!(proxy.count("registered-models/get"), 1);
}

async fn attempts_stop_at_max_attempts(flavor: Flavor) {
    let policy = RetryPolicy {
        max_attempts: 3,
        ..quick_retries()
    };
    let (proxy, client) = proxied(flavor, policy);
    proxy.inject(on("registered-models/get", FaultKind::Status(503)).times(100));
    let err = client
        .get_registered_model(&mlflow::unique_name("model"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::Server { status: 503, .. }),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert_eq!(proxy.count("registered-models/get"), 3);
    assert_eq!(client.requests_made(), 3);
}

async fn retry_budget_bounds_the_attempts(flavor: Flavor) {
    let policy = RetryPolicy {
        max_attempts: 1000,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(100),
        budget: Duration::from_millis(600),
    };
    let (proxy, client) = proxied(flavor, policy);
    proxy.inject(on("registered-models/get", FaultKind::Status(503)).times(usize::MAX));
    let started = Instant::now();
    let err = client
        .get_registered_model(&mlflow::unique_name("model"))
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(err.is_transient(), "{err:?}");
    let attempts = proxy.count("registered-models/get");
    assert!((2..1000).contains(&attempts), "{attempts} attempts");
    assert!(
        elapsed < Duration::from_millis(600) + Duration::from_secs(1),
        "gave up after {elapsed:?}"
    );
}

async fn upload_cut_off_twice_is_resent_whole(flavor: Flavor) {
    let direct = client(flavor);
    let run = new_run(&direct).await;
    let contents: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &contents).unwrap();
    let (proxy, client) = proxied(flavor, quick_retries());
    // Cut off while the body streams, then after the server stored the whole file.
    proxy.inject(on("model.pkl", FaultKind::Refuse));
    proxy.inject(on("model.pkl", FaultKind::ResetAfterForward));

    client
        .upload_artifact(&run.info, file.path(), "model/model.pkl")
        .await
        .unwrap();

    let puts: Vec<_> = proxy
        .log()
        .into_iter()
        .filter(|r| r.method == "PUT")
        .collect();
    assert_eq!(puts.len(), 3, "{puts:?}");
    let downloaded = direct
        .download_artifact(&run.info, "model/model.pkl")
        .await
        .unwrap();
    assert!(downloaded == contents, "downloaded bytes differ");
}

#[tokio::test]
async fn unreachable_server_run_create_is_retried_and_not_ambiguous() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = reqwest::Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
    let policy = RetryPolicy {
        max_attempts: 3,
        ..quick_retries()
    };
    let client = MlflowClient::new(url, Auth::Anonymous)
        .unwrap()
        .with_retry(policy);
    let err = client.create_run("0", None, &[]).await.unwrap_err();
    assert!(matches!(err, RegistryError::Transport { .. }), "{err:?}");
    assert!(err.is_transient());
    assert_eq!(client.requests_made(), 3);
}

#[tokio::test]
async fn proxy_logs_requests_and_reset_restarts_the_count() {
    let (proxy, client) = proxied(Flavor::Mlflow3, RetryPolicy::none());
    proxy.inject(Fault::new(At::Nth(1), FaultKind::Status(503)));
    let name = mlflow::unique_name("model");
    client.get_registered_model(&name).await.unwrap();
    let err = client.get_registered_model(&name).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    client.get_registered_model(&name).await.unwrap();

    let log = proxy.log();
    let faults: Vec<_> = log.iter().map(|r| (r.index, r.fault.clone())).collect();
    assert_eq!(
        faults,
        [(0, None), (1, Some(FaultKind::Status(503))), (2, None)]
    );
    assert!(log.iter().all(|r| {
        r.method == "GET"
            && r.path
                .starts_with("/api/2.0/mlflow/registered-models/get?name=")
    }));

    proxy.inject(Fault::new(At::Nth(0), FaultKind::Status(503)).times(usize::MAX));
    proxy.clear_faults();
    client.get_registered_model(&name).await.unwrap();
    assert_eq!(proxy.requests(), 4, "clearing the faults keeps the log");

    proxy.reset();
    assert_eq!(proxy.requests(), 0);
    proxy.inject(Fault::new(At::Nth(0), FaultKind::Status(503)));
    assert!(client.get_registered_model(&name).await.is_err());
    assert_eq!(proxy.log()[0].index, 0);
}
