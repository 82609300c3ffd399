//! The `MLmodel` file that makes a pickled scikit-learn model loadable with
//! `mlflow.pyfunc.load_model("models:/<name>/<version>")`.
//!
//! MLflow's Python client writes this file when it logs a model; model-pusher logs the model
//! directory as plain run artifacts (the only route MLflow 2.x servers such as DagsHub's offer),
//! so it writes the file itself, with the sklearn flavor and pickle serialization the seed's
//! training step uses.

use std::fmt::Write as _;

use crate::inputs::{MODEL_FILE, ModelDir};

/// The file name MLflow looks for in a model directory.
pub const MLMODEL_FILE: &str = "MLmodel";

/// The artifact directory the model is logged under, and registered from.
pub const MODEL_ARTIFACT_DIR: &str = "model";

/// Whether the pusher should write an `MLmodel` for this directory: it holds the seed's
/// `model.pkl` and no `MLmodel` of its own (one written by MLflow is kept as it is).
pub fn needs_mlmodel(model: &ModelDir) -> bool {
    let has = |name: &str| model.files.iter().any(|file| file.as_os_str() == name);
    has(MODEL_FILE) && !has(MLMODEL_FILE)
}

/// The `MLmodel` text for the seed's `model.pkl`, logged by `run_id` at `created` (RFC 3339).
pub fn sklearn_pickle(run_id: &str, model_uuid: &str, created: &str) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "artifact_path: {MODEL_ARTIFACT_DIR}");
    let _ = writeln!(text, "flavors:");
    let _ = writeln!(text, "  python_function:");
    let _ = writeln!(text, "    loader_module: mlflow.sklearn");
    let _ = writeln!(text, "    model_path: {MODEL_FILE}");
    let _ = writeln!(text, "    predict_fn: predict");
    let _ = writeln!(text, "  sklearn:");
    let _ = writeln!(text, "    code: null");
    let _ = writeln!(text, "    pickled_model: {MODEL_FILE}");
    let _ = writeln!(text, "    serialization_format: pickle");
    let _ = writeln!(text, "model_uuid: {model_uuid}");
    let _ = writeln!(text, "run_id: {run_id}");
    let _ = writeln!(text, "utc_time_created: '{created}'");
    text
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn model(files: &[&str]) -> ModelDir {
        ModelDir {
            dir: PathBuf::from("/m"),
            files: files.iter().map(PathBuf::from).collect(),
        }
    }

    #[test]
    fn writes_an_mlmodel_for_the_seed_layout_only() {
        assert!(needs_mlmodel(&model(&["model.pkl"])));
        assert!(!needs_mlmodel(&model(&["model.pkl", "MLmodel"])));
        assert!(!needs_mlmodel(&model(&["weights.onnx"])));
    }

    #[test]
    fn mlmodel_is_yaml_naming_the_pickle_and_the_run() {
        let text = sklearn_pickle("abc123", "u-1", "2026-12-03 18:00:00.000000");
        let yaml: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(yaml["run_id"], "abc123");
        assert_eq!(yaml["flavors"]["sklearn"]["pickled_model"], "model.pkl");
        assert_eq!(
            yaml["flavors"]["python_function"]["loader_module"],
            "mlflow.sklearn"
        );
    }
}
