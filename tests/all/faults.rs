//! A push that fails at any request, re-run as Kubeflow retries a failed step, ends where a push
//! that never failed ends: one run, one new version, the right champion, the same tags.
//!
//! Each scenario pushes a champion (accuracy 0.80) straight to the server, then pushes a
//! candidate that the threshold rule promotes (0.95) through a [`FaultProxy`] that breaks
//! request `i` and every request after it, so the push stops there whatever it retries. The
//! push must fail, naming the step, and leave a champion in place. The proxy is then cleared
//! and the same push run again; the registry's end state must equal that of a push that met no
//! fault, for every `i` up to the number of requests a fault-free push makes.

use std::time::Duration;

use model_pusher::registry::{MlflowClient, RunQuery, Stage, VersionQuery};
use serde_json::{Value, json};

use crate::support::block_on;
use crate::support::fixture::{Fixture, Pushed};
use crate::support::mlflow::{self, Flavor, MlflowServer};
use crate::support::proxy::{At, Fault, FaultKind, FaultProxy};

/// What a push says it was doing when it stopped.
const STEPS: [&str; 12] = [
    "finding the champion",
    "reading the champion's metrics",
    "opening the experiment",
    "logging the candidate's run",
    "uploading the model",
    "registering the model version",
    "looking for an earlier attempt of this push",
    "waiting for earlier pushes of the model",
    "promoting the new version",
    "archiving the previous champion",
    "marking the new version as challenger",
    "marking the push done",
];

/// Few, quick retries: a fault that persists ends the push within a second or two.
const QUICK_RETRIES: [&str; 4] = ["--retry-attempts", "2", "--retry-budget", "2"];

/// The registry as a push left it for `model`, with what differs between two equivalent pushes
/// (run ids, timestamps, the idempotency key) left out and the model's name, which reasons
/// quote, replaced by `MODEL`.
fn end_state(client: &MlflowClient, model: &str) -> Value {
    block_on(async {
        let experiment = client
            .get_experiment_by_name(model)
            .await
            .unwrap()
            .expect("the push's experiment exists");
        let mut runs = client
            .search_runs(&RunQuery {
                experiment_ids: vec![experiment.experiment_id],
                order_by: vec!["attributes.start_time ASC".to_owned()],
                ..RunQuery::default()
            })
            .await
            .unwrap();
        runs.sort_by_key(|run| run.info.start_time);
        let run_ids: Vec<String> = runs.iter().map(|run| run.info.run_id.clone()).collect();
        let mut run_states = Vec::new();
        for run in &runs {
            let mut metrics: Vec<(String, String)> = run
                .data
                .metrics
                .iter()
                .map(|metric| (metric.key.clone(), metric.value.to_string()))
                .collect();
            metrics.sort();
            let mut params: Vec<(String, String)> = run
                .data
                .params
                .iter()
                .map(|param| (param.key.clone(), param.value.clone()))
                .collect();
            params.sort();
            let mut artifacts: Vec<(String, Option<i64>)> = client
                .list_artifacts(&run.info, "model")
                .await
                .unwrap()
                .into_iter()
                .map(|file| (file.path, file.file_size))
                .collect();
            artifacts.sort();
            run_states.push(json!({
                "status": format!("{:?}", run.info.status),
                "metrics": metrics,
                "params": params,
                "tags": pusher_tags(run.data.tags.iter().map(|tag| (&tag.key, &tag.value))),
                "artifacts": artifacts,
            }));
        }
        let mut versions = client
            .search_model_versions(&VersionQuery {
                filter: format!("name = '{model}'"),
                ..VersionQuery::default()
            })
            .await
            .unwrap();
        versions.sort_by_key(|version| version.version.parse::<u64>().unwrap());
        let versions: Vec<Value> = versions
            .iter()
            .map(|version| {
                let mut aliases = version.aliases.clone();
                aliases.sort();
                json!({
                    "version": version.version,
                    "stage": version.current_stage.to_string(),
                    "status": format!("{:?}", version.status),
                    "aliases": aliases,
                    "run": version
                        .run_id
                        .as_ref()
                        .and_then(|id| run_ids.iter().position(|run| run == id)),
                    "tags": pusher_tags(version.tags.iter().map(|tag| (&tag.key, &tag.value))),
                })
            })
            .collect();
        let state = json!({ "runs": run_states, "versions": versions });
        serde_json::from_str(&state.to_string().replace(model, "MODEL")).unwrap()
    })
}

/// model-pusher's tags, without the idempotency key and pipeline run id, which are per push.
fn pusher_tags<'a>(tags: impl Iterator<Item = (&'a String, &'a String)>) -> Vec<(String, String)> {
    let mut kept: Vec<(String, String)> = tags
        .filter(|(key, _)| key.starts_with("model_pusher."))
        .filter(|(key, _)| {
            !matches!(
                key.as_str(),
                "model_pusher.idempotency_key" | "model_pusher.pipeline_run_id"
            )
        })
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    kept.sort();
    kept
}

/// The versions that hold the champion's place: the Production stage or the champion alias.
fn champions(client: &MlflowClient, model: &str, aliases: bool) -> Vec<String> {
    block_on(async {
        if aliases {
            client
                .get_model_version_by_alias(model, "champion")
                .await
                .unwrap()
                .map(|version| version.version)
                .into_iter()
                .collect()
        } else {
            client
                .search_model_versions(&VersionQuery {
                    filter: format!("name = '{model}'"),
                    ..VersionQuery::default()
                })
                .await
                .unwrap()
                .into_iter()
                .filter(|version| version.current_stage == Stage::Production)
                .map(|version| version.version)
                .collect()
        }
    })
}

/// One server, a proxy in front of it, and how every push of a scenario is made.
struct Scenario<'a> {
    server: &'a MlflowServer,
    proxy: FaultProxy,
    mode: &'static [&'static str],
    aliases: bool,
}

impl<'a> Scenario<'a> {
    fn new(server: &'a MlflowServer, aliases: bool) -> Self {
        Self {
            server,
            proxy: FaultProxy::start(&server.url()),
            mode: if aliases { &["--mode", "aliases"] } else { &[] },
            aliases,
        }
    }

    /// A model with a champion of accuracy 0.80, pushed without the proxy.
    fn model_with_champion(&self, prefix: &str) -> String {
        let model = mlflow::unique_name(prefix);
        let initial = Fixture::accuracy(0.80).push(self.server.url().as_str(), &model, self.mode);
        assert_eq!(initial.verdict(), "promote");
        model
    }

    /// The candidate's push through the proxy, as pipeline run `run_id`.
    fn push(&self, candidate: &Fixture, model: &str, run_id: &str) -> Pushed {
        let mut extra: Vec<&str> = self.mode.to_vec();
        extra.extend(QUICK_RETRIES);
        extra.extend(["--pipeline-run-id", run_id]);
        candidate.push(self.proxy.url().as_str(), model, &extra)
    }

    /// The end state of a fault-free promote push, and how many requests it made.
    fn reference(&self) -> (Value, usize) {
        let model = self.model_with_champion("fault-free");
        self.proxy.reset();
        let pushed = self.push(&Fixture::accuracy(0.95), &model, "kfp-fault-free");
        assert_eq!(pushed.verdict(), "promote");
        let requests = self.proxy.requests();
        let log = self.proxy.log();
        eprintln!("a fault-free promote push made {requests} requests:");
        for request in &log {
            eprintln!("  {} {} {}", request.index, request.method, request.path);
        }
        assert!(log.iter().all(|request| request.fault.is_none()), "{log:?}");
        (end_state(&self.server.client(), &model), requests)
    }

    /// For every request index of a promote push: break that request and all after it with
    /// `kind`, check the push failed closed, then re-run it and compare with the reference.
    fn every_request_index(&self, kind: FaultKind) {
        let (expected, requests) = self.reference();
        let client = self.server.client();
        for index in 0..requests {
            let model = self.model_with_champion("fault");
            let candidate = Fixture::accuracy(0.95);
            let run_id = format!("kfp-run-{index}");

            self.proxy.reset();
            self.proxy
                .inject(Fault::new(At::Nth(index), kind.clone()).times(usize::MAX));
            let failed = self.push(&candidate, &model, &run_id);
            let log = self.proxy.log();
            self.proxy.clear_faults();
            let context = format!("{kind:?} from request {index} ({:?})", log.get(index));
            assert_ne!(
                failed.output.status.code(),
                Some(0),
                "{context}: the push succeeded though its requests failed"
            );
            let stderr = failed.stderr();
            let error = stderr
                .lines()
                .find(|line| line.contains("ERROR"))
                .unwrap_or_else(|| panic!("{context}: no error reported:\n{stderr}"));
            assert!(
                STEPS.iter().any(|step| error.contains(step))
                    && error.contains(self.proxy.url().as_str().trim_end_matches('/')),
                "{context}: the error does not name the step and the server:\n{error}"
            );
            // Fail closed: a champion is always in place, and it is either the old one or the
            // candidate the policy promoted.
            let holders = champions(&client, &model, self.aliases);
            assert!(
                !holders.is_empty() && holders.iter().all(|v| v == "1" || v == "2"),
                "{context}: champions after the failed push: {holders:?}"
            );

            let rerun = self.push(&candidate, &model, &run_id);
            assert_eq!(rerun.verdict(), "promote", "{context}");
            assert_eq!(
                end_state(&client, &model),
                expected,
                "{context}: the re-run did not converge on the fault-free end state"
            );
        }
    }
}

#[test]
fn a_push_cut_off_after_any_request_converges_when_re_run() {
    Scenario::new(mlflow::shared(Flavor::Mlflow3), false)
        .every_request_index(FaultKind::ResetAfterForward);
}

#[test]
fn a_push_whose_server_errors_from_any_request_converges_when_re_run() {
    Scenario::new(mlflow::shared(Flavor::Mlflow3), false).every_request_index(FaultKind::Html(500));
}

#[test]
fn a_push_answered_503_from_any_request_converges_when_re_run() {
    Scenario::new(mlflow::shared(Flavor::Mlflow3), false)
        .every_request_index(FaultKind::Status(503));
}

#[test]
fn an_aliases_push_cut_off_after_any_request_converges_when_re_run() {
    Scenario::new(mlflow::shared(Flavor::Mlflow3), true)
        .every_request_index(FaultKind::ResetAfterForward);
}

#[test]
fn a_push_cut_off_after_any_request_converges_with_a_postgres_store() {
    Scenario::new(mlflow::shared(Flavor::Postgres), false)
        .every_request_index(FaultKind::ResetAfterForward);
}

/// A single transient fault at any request is absorbed by the retries: the push succeeds
/// first time and ends as a fault-free push does, with no second run, version or promotion.
#[test]
fn one_transient_fault_at_any_request_is_retried_without_duplicates() {
    let scenario = Scenario::new(mlflow::shared(Flavor::Mlflow3), false);
    let (expected, requests) = scenario.reference();
    let client = scenario.server.client();
    for index in 0..requests {
        let model = scenario.model_with_champion("transient");
        scenario.proxy.reset();
        scenario
            .proxy
            .inject(Fault::new(At::Nth(index), FaultKind::Status(503)));
        let pushed = scenario.push(&Fixture::accuracy(0.95), &model, "kfp-transient");
        assert_eq!(pushed.verdict(), "promote", "503 at request {index}");
        assert_eq!(
            end_state(&client, &model),
            expected,
            "503 at request {index}"
        );
    }
}

/// The server is killed while a push waits on a request, and comes back; the re-run completes
/// and ends as a fault-free push does.
#[test]
fn a_push_survives_the_server_dying_and_coming_back() {
    let mut server = MlflowServer::start(Flavor::Mlflow3);
    let (expected, _) = Scenario::new(&server, false).reference();
    for step in [
        "model-versions/create",
        "transition-stage",
        "model-versions/set-tag",
    ] {
        let model = mlflow::unique_name("dies");
        let initial = Fixture::accuracy(0.80).push(server.url().as_str(), &model, &[]);
        assert_eq!(initial.verdict(), "promote");
        let candidate = Fixture::accuracy(0.95);
        let run_id = format!("kfp-dies-{}", step.replace('/', "-"));
        // Hold the push at its first request to `step`, and kill the server meanwhile: the
        // held request then finds no server.
        let proxy = FaultProxy::start(&server.url());
        proxy.inject(Fault::new(
            At::PathContains(step.to_owned()),
            FaultKind::Delay(Duration::from_secs(2)),
        ));
        let pushing = {
            let (url, model, run_id) = (proxy.url(), model.clone(), run_id.clone());
            std::thread::spawn(move || {
                let mut extra = QUICK_RETRIES.to_vec();
                extra.extend(["--pipeline-run-id", &run_id]);
                let pushed = candidate.push(url.as_str(), &model, &extra);
                (candidate, pushed)
            })
        };
        while proxy.count(step) == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
        server.kill();
        let (candidate, failed) = pushing.join().unwrap();
        assert_ne!(
            failed.output.status.code(),
            Some(0),
            "server killed at {step}: the push succeeded:\n{}",
            failed.stderr()
        );
        server.restart();

        let rerun = candidate.push(
            server.url().as_str(),
            &model,
            &["--pipeline-run-id", &run_id],
        );
        assert_eq!(rerun.verdict(), "promote", "server killed at {step}");
        assert_eq!(
            end_state(&server.client(), &model),
            expected,
            "server killed at {step}"
        );
    }
}
