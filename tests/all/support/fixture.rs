//! The seed's inputs to a push: `params.yaml`, `metrics/metrics.json` and `model/model.pkl`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use super::mlflow::workspace_root;

/// The seed's `model_comparison` section.
pub const SEED_PARAMS: &str = "model_comparison:
  improvement_threshold: 0.05
  primary_metric: \"accuracy\"
  comparison_metrics:
    - \"precision\"
    - \"recall\"
    - \"f1_score\"
";

/// The Python with mlflow and scikit-learn that `scripts/setup.sh` makes.
pub fn python() -> PathBuf {
    let python = workspace_root().join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/setup.sh from the workspace root",
        python.display()
    );
    python
}

/// A real pickled scikit-learn model, made once per test run by `scripts/make_fixture.py`.
fn model_pickle() -> &'static Path {
    static MODEL: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = MODEL.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new(python())
            .arg(workspace_root().join("scripts/make_fixture.py"))
            .arg(dir.path())
            .args(["--accuracy", "0.9"])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "make_fixture.py failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let path = dir.path().join("model/model.pkl");
        (dir, path)
    });
    path
}

/// One candidate's files in a temporary directory.
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    /// The seed's params, the given metrics.json text and the seed's model.
    pub fn new(metrics_json: &str) -> Self {
        Self::with_params(SEED_PARAMS, metrics_json)
    }

    pub fn with_params(params: &str, metrics_json: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("params.yaml"), params).unwrap();
        std::fs::create_dir(dir.path().join("metrics")).unwrap();
        std::fs::write(dir.path().join("metrics/metrics.json"), metrics_json).unwrap();
        std::fs::create_dir(dir.path().join("model")).unwrap();
        std::fs::copy(model_pickle(), dir.path().join("model/model.pkl")).unwrap();
        Self { dir }
    }

    /// Metrics as the seed's evaluation step writes them, with this accuracy.
    pub fn accuracy(accuracy: f64) -> Self {
        Self::new(&format!(
            r#"{{"accuracy": {accuracy}, "precision": 0.88, "recall": 0.85, "auc": 0.93}}"#
        ))
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `model-pusher push` of this fixture to `server` as `model`, with extra arguments.
    pub fn push(&self, server: &str, model: &str, extra: &[&str]) -> Pushed {
        let decision = self.path("decision.json");
        let log = self.path("logs/Model_Pusher.log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_model-pusher"));
        command
            .args(["push", "--tracking-uri", server, "--model-name", model])
            .arg("--param-path")
            .arg(self.path("params.yaml"))
            .arg("--model-path")
            .arg(self.path("model"))
            .arg("--metrics-path")
            .arg(self.path("metrics"))
            .arg("--decision-out")
            .arg(&decision)
            .arg("--log-file")
            .arg(&log)
            .args(extra)
            .env("MODEL_PUSHER_POLICY_DIR", super::policies::dir())
            .env_remove("MLFLOW_TRACKING_URI")
            .env_remove("MLFLOW_TRACKING_USERNAME")
            .env_remove("MLFLOW_TRACKING_PASSWORD")
            .env_remove("DAGSHUB_USER_TOKEN")
            .env_remove("MLFLOW_TRACKING_TOKEN");
        Pushed::run(command, decision, log)
    }
}

/// A finished push: its output, its decision file and its log file.
pub struct Pushed {
    pub output: Output,
    pub decision: Option<serde_json::Value>,
    pub log: String,
}

impl Pushed {
    pub fn run(mut command: Command, decision: PathBuf, log: PathBuf) -> Self {
        let output = command.output().unwrap();
        let decision = std::fs::read(&decision)
            .ok()
            .map(|bytes| serde_json::from_slice(&bytes).unwrap());
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        Self {
            output,
            decision,
            log,
        }
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    /// The decision, or a failure showing what the push printed.
    pub fn ok(&self) -> &serde_json::Value {
        assert_eq!(
            self.output.status.code(),
            Some(0),
            "push failed:\n{}",
            self.stderr()
        );
        self.decision.as_ref().unwrap()
    }

    pub fn verdict(&self) -> &str {
        self.ok()["verdict"].as_str().unwrap()
    }

    pub fn version(&self) -> String {
        self.ok()["model_version"].as_str().unwrap().to_owned()
    }
}
