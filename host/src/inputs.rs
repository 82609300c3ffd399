//! The files a push starts from: the seed's `params.yaml`, the evaluation step's `metrics.json`
//! and the model directory.
//!
//! Each reader names the file and the field in its errors, so that a pipeline author can fix the
//! input without reading this code.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The file name the evaluation step writes inside its metrics directory.
pub const METRICS_FILE: &str = "metrics.json";

/// The file name the training step writes inside its model directory.
pub const MODEL_FILE: &str = "model.pkl";

/// The `params.yaml` section that holds the policy's settings.
pub const SETTINGS_SECTION: &str = "model_comparison";

/// An input file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid YAML: {message}")]
    Yaml { path: PathBuf, message: String },
    #[error("{path} has no `{section}` section: it holds the promotion policy's settings")]
    MissingSection { path: PathBuf, section: String },
    #[error("{path}: field `{field}` {problem}")]
    Field {
        path: PathBuf,
        field: String,
        problem: String,
    },
    #[error("{path} is not a JSON object of metric names to numbers: {message}")]
    Metrics { path: PathBuf, message: String },
    #[error("model path {path} does not exist: point it at the training step's model directory")]
    MissingModel { path: PathBuf },
    #[error("model directory {path} is empty: the training step writes {MODEL_FILE} there")]
    EmptyModel { path: PathBuf },
}

/// The settings a policy receives: the `model_comparison` section of `params.yaml`, whole.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The file the settings came from, for error messages.
    pub source: PathBuf,
    /// The section as JSON, which is what the policy contract carries.
    pub value: serde_json::Value,
}

impl Settings {
    /// Reads the `model_comparison` section of a `params.yaml` file.
    ///
    /// # Errors
    ///
    /// When the file cannot be read, is not YAML, lacks the section, or holds a value that JSON
    /// cannot carry (a non-string key, for example); each error names the file and field.
    pub fn read(path: &Path) -> Result<Self, InputError> {
        let text = fs::read_to_string(path).map_err(|source| InputError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses the text of a `params.yaml` file; `path` is only used in errors.
    ///
    /// # Errors
    ///
    /// As [`Settings::read`], minus the read.
    pub fn parse(path: &Path, text: &str) -> Result<Self, InputError> {
        let document: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|error| InputError::Yaml {
                path: path.to_owned(),
                message: error.to_string(),
            })?;
        let section = document
            .get(SETTINGS_SECTION)
            .ok_or_else(|| InputError::MissingSection {
                path: path.to_owned(),
                section: SETTINGS_SECTION.to_owned(),
            })?;
        if !section.is_mapping() {
            return Err(InputError::Field {
                path: path.to_owned(),
                field: SETTINGS_SECTION.to_owned(),
                problem: format!("must be a mapping of settings, found {}", kind(section)),
            });
        }
        let value = yaml_to_json(path, SETTINGS_SECTION, section)?;
        Ok(Self {
            source: path.to_owned(),
            value,
        })
    }

    /// Builds settings from a JSON value already in memory, such as a test case's.
    pub fn from_json(source: impl Into<PathBuf>, value: serde_json::Value) -> Self {
        Self {
            source: source.into(),
            value,
        }
    }

    /// The settings as the JSON text the policy contract carries.
    pub fn to_json(&self) -> String {
        self.value.to_string()
    }

    /// A string setting the host itself reads, such as `policy`.
    ///
    /// # Errors
    ///
    /// When the key holds something other than a string.
    pub fn host_string(&self, key: &str) -> Result<Option<&str>, InputError> {
        match self.value.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(text)) => Ok(Some(text)),
            Some(other) => Err(InputError::Field {
                path: self.source.clone(),
                field: format!("{SETTINGS_SECTION}.{key}"),
                problem: format!("must be a string, found {other}"),
            }),
        }
    }
}

fn kind(value: &serde_yaml::Value) -> &'static str {
    match value {
        serde_yaml::Value::Null => "nothing",
        serde_yaml::Value::Bool(_) => "a boolean",
        serde_yaml::Value::Number(_) => "a number",
        serde_yaml::Value::String(_) => "a string",
        serde_yaml::Value::Sequence(_) => "a list",
        serde_yaml::Value::Mapping(_) => "a mapping",
        serde_yaml::Value::Tagged(_) => "a tagged value",
    }
}

/// Converts YAML to JSON, naming the dotted field of anything JSON cannot hold.
fn yaml_to_json(
    path: &Path,
    field: &str,
    value: &serde_yaml::Value,
) -> Result<serde_json::Value, InputError> {
    let problem = |problem: String| InputError::Field {
        path: path.to_owned(),
        field: field.to_owned(),
        problem,
    };
    Ok(match value {
        serde_yaml::Value::Null => serde_json::Value::Null,
        serde_yaml::Value::Bool(flag) => serde_json::Value::Bool(*flag),
        serde_yaml::Value::Number(number) => {
            if let Some(integer) = number.as_i64() {
                serde_json::Value::from(integer)
            } else if let Some(integer) = number.as_u64() {
                serde_json::Value::from(integer)
            } else {
                let float = number.as_f64().unwrap_or(f64::NAN);
                serde_json::Number::from_f64(float)
                    .map(serde_json::Value::Number)
                    .ok_or_else(|| problem(format!("must be a finite number, found {number}")))?
            }
        }
        serde_yaml::Value::String(text) => serde_json::Value::String(text.clone()),
        serde_yaml::Value::Sequence(items) => items
            .iter()
            .enumerate()
            .map(|(index, item)| yaml_to_json(path, &format!("{field}[{index}]"), item))
            .collect::<Result<_, _>>()?,
        serde_yaml::Value::Mapping(entries) => {
            let mut object = serde_json::Map::new();
            for (key, item) in entries {
                let key = match key {
                    serde_yaml::Value::String(text) => text.clone(),
                    serde_yaml::Value::Number(number) => number.to_string(),
                    serde_yaml::Value::Bool(flag) => flag.to_string(),
                    other => {
                        return Err(problem(format!(
                            "has a key that is {}, not a name",
                            kind(other)
                        )));
                    }
                };
                let item = yaml_to_json(path, &format!("{field}.{key}"), item)?;
                object.insert(key, item);
            }
            serde_json::Value::Object(object)
        }
        serde_yaml::Value::Tagged(tagged) => yaml_to_json(path, field, &tagged.value)?,
    })
}

/// Metrics as the evaluation step wrote them: scalars, and lists of per-sample values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    /// Scalar metrics by name. NaN and the infinities are kept for the policy to judge.
    pub values: BTreeMap<String, f64>,
    /// Per-sample, per-fold or bootstrap values by name.
    pub series: BTreeMap<String, Vec<f64>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawMetric {
    Number(f64),
    Series(Vec<f64>),
    Other(serde::de::IgnoredAny),
}

impl Metrics {
    /// Reads `metrics.json` from a metrics directory, or from a path to the file itself.
    ///
    /// Python's `json` module writes NaN and the infinities as bare `NaN`, `Infinity` and
    /// `-Infinity`, which strict JSON forbids; they are accepted here. Values that are neither
    /// numbers nor lists of numbers (a confusion matrix, a label) are skipped with a debug log.
    ///
    /// # Errors
    ///
    /// When the file cannot be read or is not an object of metrics.
    pub fn read(path: &Path) -> Result<Self, InputError> {
        let file = if path.is_dir() {
            path.join(METRICS_FILE)
        } else {
            path.to_owned()
        };
        let text = fs::read_to_string(&file).map_err(|source| InputError::Read {
            path: file.clone(),
            source,
        })?;
        Self::parse(&file, &text)
    }

    /// Parses the text of a metrics file; `path` is only used in errors.
    ///
    /// # Errors
    ///
    /// When the text is not an object of metrics.
    pub fn parse(path: &Path, text: &str) -> Result<Self, InputError> {
        let raw: BTreeMap<String, RawMetric> =
            json5::from_str(text).map_err(|error| InputError::Metrics {
                path: path.to_owned(),
                message: error.to_string(),
            })?;
        let mut metrics = Self::default();
        for (name, value) in raw {
            match value {
                RawMetric::Number(value) => {
                    metrics.values.insert(name, value);
                }
                RawMetric::Series(values) => {
                    metrics.series.insert(name, values);
                }
                RawMetric::Other(_) => {
                    tracing::debug!(file = %path.display(), metric = %name, "skipping a metric that is not a number");
                }
            }
        }
        Ok(metrics)
    }

    /// Builds metrics from scalar values.
    pub fn from_values(values: impl IntoIterator<Item = (String, f64)>) -> Self {
        Self {
            values: values.into_iter().collect(),
            series: BTreeMap::new(),
        }
    }
}

/// Checks that the candidate has a usable value for the seed's `primary_metric`, when the
/// settings name one: a push of a model whose evaluation produced no usable value is a broken
/// input, stopped before the registry is contacted. (`decide` leaves this judgement to the
/// policy, which rejects such a candidate.)
///
/// # Errors
///
/// When the metric is missing from `metrics_file` or is NaN or infinite.
pub fn check_primary_metric(
    settings: &Settings,
    metrics: &Metrics,
    metrics_file: &Path,
) -> Result<(), InputError> {
    let Some(primary) = settings.host_string("primary_metric")? else {
        return Ok(());
    };
    let file = if metrics_file.is_dir() {
        metrics_file.join(METRICS_FILE)
    } else {
        metrics_file.to_owned()
    };
    let problem = match metrics.values.get(primary) {
        None => format!(
            "is missing: {} names it as {SETTINGS_SECTION}.primary_metric; check the evaluation \
             step's output",
            settings.source.display()
        ),
        Some(value) if !value.is_finite() => format!(
            "is {value}: the evaluation step produced no usable value, so the candidate cannot \
             be judged"
        ),
        Some(_) => return Ok(()),
    };
    Err(InputError::Field {
        path: file,
        field: primary.to_owned(),
        problem,
    })
}

/// The model to push: a directory holding at least one file, normally the seed's `model.pkl`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelDir {
    /// The directory whose files are logged under the run's `model/` artifact path.
    pub dir: PathBuf,
    /// The files to upload, relative to `dir`, sorted.
    pub files: Vec<PathBuf>,
}

impl ModelDir {
    /// Finds the model: a directory (all its files are logged), or a path to a single file.
    ///
    /// # Errors
    ///
    /// When the path does not exist, cannot be listed, or holds no file.
    pub fn find(path: &Path) -> Result<Self, InputError> {
        if !path.exists() {
            return Err(InputError::MissingModel {
                path: path.to_owned(),
            });
        }
        if path.is_file() {
            let dir = path.parent().unwrap_or(Path::new(".")).to_owned();
            let name = path.file_name().map(PathBuf::from).unwrap_or_default();
            return Ok(Self {
                dir,
                files: vec![name],
            });
        }
        let mut files = Vec::new();
        collect_files(path, Path::new(""), &mut files)?;
        if files.is_empty() {
            return Err(InputError::EmptyModel {
                path: path.to_owned(),
            });
        }
        files.sort();
        Ok(Self {
            dir: path.to_owned(),
            files,
        })
    }
}

fn collect_files(root: &Path, relative: &Path, files: &mut Vec<PathBuf>) -> Result<(), InputError> {
    let dir = root.join(relative);
    let entries = fs::read_dir(&dir).map_err(|source| InputError::Read {
        path: dir.clone(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| InputError::Read {
            path: dir.clone(),
            source,
        })?;
        let relative = relative.join(entry.file_name());
        let kind = entry.file_type().map_err(|source| InputError::Read {
            path: entry.path(),
            source,
        })?;
        if kind.is_dir() {
            collect_files(root, &relative, files)?;
        } else {
            files.push(relative);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED_PARAMS: &str = "\
model_comparison:
  improvement_threshold: 0.05
  primary_metric: \"accuracy\"
  comparison_metrics:
    - \"precision\"
    - \"recall\"
    - \"f1_score\"
";

    #[test]
    fn reads_the_seed_params_section_whole() {
        let settings = Settings::parse(Path::new("params.yaml"), SEED_PARAMS).unwrap();
        assert_eq!(
            settings.value,
            serde_json::json!({
                "improvement_threshold": 0.05,
                "primary_metric": "accuracy",
                "comparison_metrics": ["precision", "recall", "f1_score"],
            })
        );
    }

    #[test]
    fn missing_section_names_the_file_and_section() {
        let error = Settings::parse(Path::new("/p/params.yaml"), "train: {}\n").unwrap_err();
        let message = error.to_string();
        assert!(message.contains("/p/params.yaml"), "{message}");
        assert!(message.contains("model_comparison"), "{message}");
    }

    #[test]
    fn malformed_yaml_names_the_file() {
        let error =
            Settings::parse(Path::new("/p/params.yaml"), "model_comparison: [\n").unwrap_err();
        assert!(matches!(error, InputError::Yaml { .. }));
        assert!(error.to_string().contains("/p/params.yaml"));
    }

    #[test]
    fn nan_setting_names_the_field() {
        let text = "model_comparison:\n  improvement_threshold: .nan\n";
        let error = Settings::parse(Path::new("params.yaml"), text).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("model_comparison.improvement_threshold"),
            "{error}"
        );
    }

    #[test]
    fn reads_python_json_with_bare_nan_and_infinity() {
        let text = r#"{"accuracy": NaN, "precision": Infinity, "recall": -Infinity, "auc": 0.91}"#;
        let metrics = Metrics::parse(Path::new("metrics.json"), text).unwrap();
        assert!(metrics.values["accuracy"].is_nan());
        assert_eq!(metrics.values["precision"], f64::INFINITY);
        assert_eq!(metrics.values["recall"], f64::NEG_INFINITY);
        assert_eq!(metrics.values["auc"], 0.91);
    }

    #[test]
    fn keeps_series_and_skips_other_values() {
        let text =
            r#"{"accuracy": 0.9, "fold_accuracy": [0.8, 0.9], "label": "spam", "cm": [[1, 2]]}"#;
        let metrics = Metrics::parse(Path::new("metrics.json"), text).unwrap();
        assert_eq!(metrics.values.len(), 1);
        assert_eq!(metrics.series["fold_accuracy"], vec![0.8, 0.9]);
    }

    #[test]
    fn metrics_that_are_not_an_object_name_the_file() {
        let error = Metrics::parse(Path::new("/m/metrics.json"), "[0.9]").unwrap_err();
        assert!(error.to_string().contains("/m/metrics.json"), "{error}");
    }

    #[test]
    fn metrics_are_read_from_the_directory_or_the_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(METRICS_FILE), r#"{"accuracy": 0.9}"#).unwrap();
        let from_dir = Metrics::read(dir.path()).unwrap();
        let from_file = Metrics::read(&dir.path().join(METRICS_FILE)).unwrap();
        assert_eq!(from_dir, from_file);
    }

    #[test]
    fn nan_primary_metric_is_an_input_error_naming_the_metric() {
        let settings = Settings::parse(Path::new("params.yaml"), SEED_PARAMS).unwrap();
        let metrics = Metrics::parse(Path::new("m.json"), r#"{"accuracy": NaN}"#).unwrap();
        let error = check_primary_metric(&settings, &metrics, Path::new("/m/metrics.json"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("/m/metrics.json: field `accuracy` is NaN"),
            "{error}"
        );
    }

    #[test]
    fn missing_primary_metric_is_an_input_error() {
        let settings = Settings::parse(Path::new("params.yaml"), SEED_PARAMS).unwrap();
        let metrics = Metrics::parse(Path::new("m.json"), r#"{"auc": 0.9}"#).unwrap();
        let error = check_primary_metric(&settings, &metrics, Path::new("/m/metrics.json"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("field `accuracy` is missing"), "{error}");
    }

    #[test]
    fn missing_model_directory_is_an_error() {
        let error = ModelDir::find(Path::new("/nonexistent/model")).unwrap_err();
        assert!(matches!(error, InputError::MissingModel { .. }));
    }

    #[test]
    fn model_directory_lists_nested_files() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(MODEL_FILE), b"pickle").unwrap();
        fs::create_dir(dir.path().join("extra")).unwrap();
        fs::write(dir.path().join("extra/vocab.txt"), b"words").unwrap();
        let model = ModelDir::find(dir.path()).unwrap();
        assert_eq!(
            model.files,
            vec![PathBuf::from("extra/vocab.txt"), PathBuf::from(MODEL_FILE)]
        );
    }
}
