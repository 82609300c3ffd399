//! `model-pusher push` end to end against real MLflow servers: 3.17.2, 2.22.2 (what DagsHub
//! runs) and 3.17.2 with basic auth. Every registry assertion reads the server back.

use model_pusher::registry::{ModelVersion, Stage, VersionQuery};

use crate::support::block_on;
use crate::support::fixture::{self, Fixture};
use crate::support::mlflow::{self, ADMIN_PASSWORD, ADMIN_USER, Flavor, MlflowServer};

/// Every version of `model`, by version number.
fn versions(server: &MlflowServer, model: &str) -> Vec<ModelVersion> {
    let mut versions = block_on(server.client().search_model_versions(&VersionQuery {
        filter: format!("name = '{model}'"),
        ..VersionQuery::default()
    }))
    .unwrap();
    versions.sort_by_key(|version| version.version.parse::<u64>().unwrap_or(0));
    versions
}

fn stages(server: &MlflowServer, model: &str) -> Vec<Stage> {
    versions(server, model)
        .iter()
        .map(|version| version.current_stage)
        .collect()
}

fn alias(server: &MlflowServer, model: &str, alias: &str) -> Option<String> {
    block_on(server.client().get_model_version_by_alias(model, alias))
        .unwrap()
        .map(|version| version.version)
}

macro_rules! against_both {
    ($($behaviour:ident),* $(,)?) => {$(
        mod $behaviour {
            use super::*;

            #[test]
            fn mlflow3() {
                super::$behaviour(mlflow::shared(Flavor::Mlflow3));
            }

            #[test]
            fn mlflow2() {
                super::$behaviour(mlflow::shared(Flavor::Mlflow2));
            }
        }
    )*};
}

against_both!(
    first_push_promotes_and_a_small_gain_holds,
    better_candidate_promotes_and_archives_the_old_champion,
    rejected_candidate_is_registered_but_never_served,
    aliases_mode_moves_the_champion_alias,
    lower_is_better_primary_metric_promotes_a_smaller_loss,
    dry_run_decides_and_writes_nothing,
);

fn first_push_promotes_and_a_small_gain_holds(server: &MlflowServer) {
    let model = mlflow::unique_name("spam");
    let url = server.url().to_string();

    let first = Fixture::accuracy(0.90).push(&url, &model, &[]);
    assert_eq!(first.verdict(), "promote");
    assert_eq!(first.ok()["champion"], "1");

    let second = Fixture::accuracy(0.91).push(&url, &model, &[]);
    assert_eq!(second.verdict(), "hold");
    assert_eq!(second.ok()["previous_champion"], "1");
    assert_eq!(stages(server, &model), [Stage::Production, Stage::Staging]);
}

fn better_candidate_promotes_and_archives_the_old_champion(server: &MlflowServer) {
    let model = mlflow::unique_name("spam");
    let url = server.url().to_string();
    Fixture::accuracy(0.80).push(&url, &model, &[]).ok();

    let better = Fixture::accuracy(0.90).push(&url, &model, &[]);

    assert_eq!(better.verdict(), "promote");
    assert_eq!(stages(server, &model), [Stage::Archived, Stage::Production]);
    let promoted = &versions(server, &model)[1];
    assert_eq!(promoted.tag("model_pusher.verdict"), Some("promote"));
    assert_eq!(promoted.tag("model_pusher.previous_champion"), Some("1"));
    assert_eq!(promoted.tag("model_pusher.policy"), Some("threshold"));
}

fn rejected_candidate_is_registered_but_never_served(server: &MlflowServer) {
    let model = mlflow::unique_name("spam");
    let url = server.url().to_string();
    Fixture::accuracy(0.80).push(&url, &model, &[]).ok();
    let params = "model_comparison:
  policy: multi-metric
  primary_metric: accuracy
  improvement_threshold: 0.05
  metrics:
    recall: {min: 0.9}
";

    let rejected = Fixture::with_params(
        params,
        r#"{"accuracy": 0.99, "precision": 0.9, "recall": 0.5, "auc": 0.9}"#,
    )
    .push(&url, &model, &[]);

    assert_eq!(rejected.verdict(), "reject", "{}", rejected.stderr());
    assert_eq!(stages(server, &model), [Stage::Production, Stage::None]);
    let version = &versions(server, &model)[1];
    assert_eq!(version.tag("model_pusher.status"), Some("rejected"));
    assert_eq!(version.tag("model_pusher.policy"), Some("multi-metric"));
}

fn aliases_mode_moves_the_champion_alias(server: &MlflowServer) {
    let model = mlflow::unique_name("spam");
    let url = server.url().to_string();
    let aliases = ["--mode", "aliases"];

    assert_eq!(
        Fixture::accuracy(0.80)
            .push(&url, &model, &aliases)
            .verdict(),
        "promote"
    );
    assert_eq!(alias(server, &model, "champion").as_deref(), Some("1"));

    assert_eq!(
        Fixture::accuracy(0.81)
            .push(&url, &model, &aliases)
            .verdict(),
        "hold"
    );
    assert_eq!(alias(server, &model, "champion").as_deref(), Some("1"));
    assert_eq!(alias(server, &model, "challenger").as_deref(), Some("2"));

    assert_eq!(
        Fixture::accuracy(0.95)
            .push(&url, &model, &aliases)
            .verdict(),
        "promote"
    );
    assert_eq!(alias(server, &model, "champion").as_deref(), Some("3"));
    let all = versions(server, &model);
    assert_eq!(all[0].tag("model_pusher.status"), Some("archived"));
    assert!(
        all.iter()
            .all(|version| version.current_stage == Stage::None)
    );
}

fn lower_is_better_primary_metric_promotes_a_smaller_loss(server: &MlflowServer) {
    let model = mlflow::unique_name("spam");
    let url = server.url().to_string();
    let params = "model_comparison:
  primary_metric: log_loss
  direction: lower_is_better
  improvement_threshold: 0.05
";
    let push = |loss: f64| {
        Fixture::with_params(
            params,
            &format!(r#"{{"log_loss": {loss}, "accuracy": 0.9}}"#),
        )
        .push(&url, &model, &[])
    };

    assert_eq!(push(0.40).verdict(), "promote");
    assert_eq!(push(0.45).verdict(), "hold");
    assert_eq!(push(0.30).verdict(), "promote");
    assert_eq!(
        stages(server, &model),
        [Stage::Archived, Stage::Staging, Stage::Production]
    );
}

fn dry_run_decides_and_writes_nothing(server: &MlflowServer) {
    let model = mlflow::unique_name("spam");
    let url = server.url().to_string();

    let dry = Fixture::accuracy(0.90).push(&url, &model, &["--dry-run"]);

    assert_eq!(dry.verdict(), "promote");
    assert_eq!(dry.ok()["dry_run"], true);
    assert!(versions(server, &model).is_empty());
}

#[test]
fn registered_model_loads_with_pyfunc_and_predicts() {
    let server = mlflow::shared(Flavor::Mlflow3);
    let model = mlflow::unique_name("spam");
    let version = Fixture::accuracy(0.90)
        .push(server.url().as_ref(), &model, &[])
        .version();

    let output = std::process::Command::new(fixture::python())
        .arg(mlflow::workspace_root().join("scripts/check_pyfunc.py"))
        .args([&model, &version])
        .env("MLFLOW_TRACKING_URI", server.url().to_string())
        .output()
        .unwrap();

    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn seed_positional_arguments_push_with_a_warning_about_the_token() {
    let server = mlflow::shared(Flavor::BasicAuth);
    let model = mlflow::unique_name("spam");
    let fixture = Fixture::accuracy(0.9);
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_model-pusher"));
    command
        .arg("push")
        .args(["--tracking-uri", server.url().as_str()])
        .arg("--no-log-file")
        .args(["owner", "repo", &model, "Production"])
        .args([
            fixture.path("params.yaml"),
            fixture.path("model"),
            fixture.path("metrics"),
        ])
        .args([ADMIN_USER, ADMIN_PASSWORD])
        .env("MODEL_PUSHER_POLICY_DIR", crate::support::policies::dir())
        .env_remove("MLFLOW_TRACKING_URI");

    let pushed = fixture::Pushed::run(command, fixture.path("none.json"), fixture.path("none.log"));

    assert_eq!(pushed.output.status.code(), Some(0), "{}", pushed.stderr());
    assert!(
        pushed.stderr().contains("process list"),
        "{}",
        pushed.stderr()
    );
    assert!(!pushed.stderr().contains(ADMIN_PASSWORD));
    assert_eq!(stages(server, &model), [Stage::Production]);
}

#[test]
fn wrong_token_fails_authentication_writes_nothing_and_never_shows_the_token() {
    let server = mlflow::shared(Flavor::BasicAuth);
    let model = mlflow::unique_name("spam");
    let fixture = Fixture::accuracy(0.9);
    let token = "wrong-token-0123456789abcdef";
    std::fs::write(fixture.path("token"), format!("{token}\n")).unwrap();

    let pushed = fixture.push(
        server.url().as_str(),
        &model,
        &[
            "--dagshub-username",
            ADMIN_USER,
            "--dagshub-token-file",
            fixture.path("token").to_str().unwrap(),
            "-vv",
        ],
    );

    assert_eq!(pushed.output.status.code(), Some(3), "{}", pushed.stderr());
    let expected = format!(
        "authentication to {} failed for user {ADMIN_USER}",
        server.url().as_str().trim_end_matches('/')
    );
    assert!(pushed.stderr().contains(&expected), "{}", pushed.stderr());
    assert!(pushed.log.contains(&expected), "{}", pushed.log);
    for output in [pushed.stderr(), pushed.stdout(), pushed.log.clone()] {
        assert!(!output.contains(token), "the token leaked: {output}");
    }
    assert!(pushed.decision.is_none());
    assert!(versions(server, &model).is_empty());
}

#[test]
fn right_credentials_from_the_environment_push() {
    let server = mlflow::shared(Flavor::BasicAuth);
    let model = mlflow::unique_name("spam");
    let fixture = Fixture::accuracy(0.9);
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_model-pusher"));
    command
        .args([
            "push",
            "--tracking-uri",
            server.url().as_str(),
            "--model-name",
            &model,
        ])
        .arg("--param-path")
        .arg(fixture.path("params.yaml"))
        .arg("--model-path")
        .arg(fixture.path("model"))
        .arg("--metrics-path")
        .arg(fixture.path("metrics"))
        .arg("--no-log-file")
        .env("MODEL_PUSHER_POLICY_DIR", crate::support::policies::dir())
        .env("MLFLOW_TRACKING_USERNAME", ADMIN_USER)
        .env("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD);

    let pushed = fixture::Pushed::run(command, fixture.path("none.json"), fixture.path("none.log"));

    assert_eq!(pushed.output.status.code(), Some(0), "{}", pushed.stderr());
    assert_eq!(stages(server, &model), [Stage::Production]);
}

/// Pushes a broken input and checks the error names the file and field, the exit status is
/// 2, and the registry has nothing of the model.
fn assert_bad_input(fixture: Fixture, names: &[&str]) {
    let server = mlflow::shared(Flavor::Mlflow3);
    let model = mlflow::unique_name("spam");

    let pushed = fixture.push(server.url().as_str(), &model, &[]);

    assert_eq!(pushed.output.status.code(), Some(2), "{}", pushed.stderr());
    for name in names {
        assert!(
            pushed.stderr().contains(name),
            "{name} not in: {}",
            pushed.stderr()
        );
    }
    assert!(versions(server, &model).is_empty());
}

#[test]
fn malformed_params_is_a_bad_input_and_writes_nothing() {
    let fixture = Fixture::with_params("model_comparison: [unclosed\n", r#"{"accuracy": 0.9}"#);
    let params = fixture.path("params.yaml");
    assert_bad_input(fixture, &[params.to_str().unwrap()]);
}

#[test]
fn nan_primary_metric_is_a_bad_input_and_writes_nothing() {
    let fixture = Fixture::new(r#"{"accuracy": NaN, "precision": 0.9}"#);
    let metrics = fixture.path("metrics/metrics.json");
    assert_bad_input(fixture, &[metrics.to_str().unwrap(), "accuracy", "NaN"]);
}

#[test]
fn missing_primary_metric_is_a_bad_input_and_writes_nothing() {
    let fixture = Fixture::new(r#"{"precision": 0.9}"#);
    assert_bad_input(fixture, &["metrics.json", "`accuracy` is missing"]);
}

#[test]
fn missing_model_directory_is_a_bad_input_and_writes_nothing() {
    let fixture = Fixture::accuracy(0.9);
    std::fs::remove_dir_all(fixture.path("model")).unwrap();
    let model = fixture.path("model");
    assert_bad_input(fixture, &[model.to_str().unwrap(), "does not exist"]);
}

#[test]
fn verdict_and_markdown_outputs_are_written_for_kubeflow() {
    let server = mlflow::shared(Flavor::Mlflow3);
    let model = mlflow::unique_name("spam");
    let fixture = Fixture::accuracy(0.9);
    // Kubeflow's output paths sit in directories that do not exist yet.
    let verdict = fixture.path("outputs/verdict/data");
    let markdown = fixture.path("outputs/report/data");

    let pushed = fixture.push(
        server.url().as_str(),
        &model,
        &[
            "--verdict-out",
            verdict.to_str().unwrap(),
            "--markdown-out",
            markdown.to_str().unwrap(),
        ],
    );

    assert_eq!(pushed.verdict(), "promote");
    assert_eq!(std::fs::read_to_string(&verdict).unwrap(), "promote");
    let report = std::fs::read_to_string(&markdown).unwrap();
    assert!(
        report.starts_with(&format!("# model-pusher: {model}\n")),
        "{report}"
    );
    assert!(report.contains("- version registered: 1\n"), "{report}");
    assert!(report.contains("**Verdict:** promote"), "{report}");
    assert!(report.contains("**Policy:** threshold "), "{report}");
    assert!(
        report.contains("| metric | candidate | champion | required | passed |"),
        "{report}"
    );
    assert!(report.contains("| accuracy | 0.9 | - |"), "{report}");
}
