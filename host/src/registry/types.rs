//! The MLflow entities the client sends and receives, as they appear in the REST API's JSON.
//!
//! MLflow's JSON is looser than its protobuf schema: metric values that are not finite come
//! back as the strings `"NaN"`, `"Infinity"` and `"-Infinity"`, and 64-bit integers may come
//! back as strings. The deserializers here accept both forms.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// An MLflow experiment.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Experiment {
    /// The experiment id (a string, even when it looks like a number).
    #[serde(deserialize_with = "de_string_or_number")]
    pub experiment_id: String,
    /// The experiment's unique name.
    pub name: String,
    /// Where the experiment's run artifacts live, e.g. `mlflow-artifacts:/1`.
    #[serde(default)]
    pub artifact_location: Option<String>,
    /// `active` or `deleted`.
    #[serde(default)]
    pub lifecycle_stage: Option<String>,
}

/// The lifecycle status of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunStatus {
    /// The run is in progress.
    Running,
    /// The run is scheduled but has not started.
    Scheduled,
    /// The run ended successfully.
    Finished,
    /// The run ended with an error.
    Failed,
    /// The run was killed.
    Killed,
    /// A status this client does not know.
    #[serde(other)]
    Unknown,
}

/// A run: its metadata and the data logged to it.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Run {
    /// Metadata of the run.
    pub info: RunInfo,
    /// Metrics, params and tags logged to the run.
    #[serde(default)]
    pub data: RunData,
}

impl Run {
    /// The latest logged value of a metric, if it was logged.
    pub fn metric(&self, key: &str) -> Option<f64> {
        self.data
            .metrics
            .iter()
            .find(|m| m.key == key)
            .map(|m| m.value)
    }

    /// The value of a param, if it was logged.
    pub fn param(&self, key: &str) -> Option<&str> {
        find_value(&self.data.params, key)
    }

    /// The value of a tag, if it is set.
    pub fn tag(&self, key: &str) -> Option<&str> {
        find_value(&self.data.tags, key)
    }
}

/// Metadata of a run.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct RunInfo {
    /// The run id.
    pub run_id: String,
    /// The experiment the run belongs to.
    #[serde(deserialize_with = "de_string_or_number")]
    pub experiment_id: String,
    /// The run's display name.
    #[serde(default)]
    pub run_name: Option<String>,
    /// The run's status.
    pub status: RunStatus,
    /// Start time in milliseconds since the epoch.
    #[serde(default, deserialize_with = "de_opt_i64")]
    pub start_time: Option<i64>,
    /// End time in milliseconds since the epoch, once ended.
    #[serde(default, deserialize_with = "de_opt_i64")]
    pub end_time: Option<i64>,
    /// Root of the run's artifacts, e.g. `mlflow-artifacts:/1/<run_id>/artifacts`.
    pub artifact_uri: String,
    /// `active` or `deleted`.
    #[serde(default)]
    pub lifecycle_stage: Option<String>,
}

/// Metrics, params and tags of a run.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct RunData {
    /// The latest value of each metric.
    #[serde(default)]
    pub metrics: Vec<Metric>,
    /// The run's params.
    #[serde(default)]
    pub params: Vec<KeyValue>,
    /// The run's tags.
    #[serde(default)]
    pub tags: Vec<KeyValue>,
}

/// One metric value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// The metric name.
    pub key: String,
    /// The value; NaN and infinities travel as the strings MLflow uses for them.
    #[serde(serialize_with = "ser_f64", deserialize_with = "de_f64")]
    pub value: f64,
    /// When it was logged, in milliseconds since the epoch.
    #[serde(deserialize_with = "de_i64")]
    pub timestamp: i64,
    /// The training step it belongs to.
    #[serde(default, deserialize_with = "de_i64")]
    pub step: i64,
}

/// A param or tag: a key and a string value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value.
    #[serde(default)]
    pub value: String,
}

impl KeyValue {
    /// A key and value.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// The legacy registry stage of a model version (deprecated in MLflow 3 but still served).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Stage {
    /// No stage.
    #[default]
    None,
    /// `Staging`.
    Staging,
    /// `Production`.
    Production,
    /// `Archived`.
    Archived,
}

impl Stage {
    /// The name MLflow uses for the stage.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::None => "None",
            Stage::Staging => "Staging",
            Stage::Production => "Production",
            Stage::Archived => "Archived",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stage name that is not one of MLflow's four.
#[derive(Debug, thiserror::Error)]
#[error("unknown model stage {0:?}; use one of none, staging, production, archived")]
pub struct UnknownStage(pub String);

impl FromStr for Stage {
    type Err = UnknownStage;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "none" | "" => Ok(Stage::None),
            "staging" => Ok(Stage::Staging),
            "production" => Ok(Stage::Production),
            "archived" => Ok(Stage::Archived),
            _ => Err(UnknownStage(s.to_owned())),
        }
    }
}

impl Serialize for Stage {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Stage {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// Whether a model version is usable yet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ModelVersionStatus {
    /// The server is still copying or checking the version's files.
    #[default]
    PendingRegistration,
    /// Registration failed; see `status_message`.
    FailedRegistration,
    /// The version can be served.
    Ready,
    /// A status this client does not know.
    #[serde(other)]
    Unknown,
}

/// A version of a registered model.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct ModelVersion {
    /// The registered model's name.
    pub name: String,
    /// The version, a string such as `"3"` (never do arithmetic on it).
    #[serde(deserialize_with = "de_string_or_number")]
    pub version: String,
    /// The legacy stage.
    #[serde(default)]
    pub current_stage: Stage,
    /// Registration status.
    #[serde(default)]
    pub status: ModelVersionStatus,
    /// Why registration failed, when it did.
    #[serde(default)]
    pub status_message: Option<String>,
    /// Where the model's files are, e.g. `runs:/<run_id>/model`.
    #[serde(default)]
    pub source: String,
    /// The run that produced it, when known.
    #[serde(default)]
    pub run_id: Option<String>,
    /// The version's description.
    #[serde(default)]
    pub description: Option<String>,
    /// Aliases pointing at this version (only in some responses).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The version's tags (only in some responses).
    #[serde(default)]
    pub tags: Vec<KeyValue>,
    /// Creation time in milliseconds since the epoch.
    #[serde(default, deserialize_with = "de_opt_i64")]
    pub creation_timestamp: Option<i64>,
    /// Last update time in milliseconds since the epoch.
    #[serde(default, deserialize_with = "de_opt_i64")]
    pub last_updated_timestamp: Option<i64>,
}

impl ModelVersion {
    /// The value of a tag, if it is set and the response carried tags.
    pub fn tag(&self, key: &str) -> Option<&str> {
        find_value(&self.tags, key)
    }
}

/// An alias of a registered model and the version it points at.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ModelAlias {
    /// The alias, e.g. `champion`.
    pub alias: String,
    /// The version it points at.
    #[serde(deserialize_with = "de_string_or_number")]
    pub version: String,
}

/// A registered model.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct RegisteredModel {
    /// The model's unique name.
    pub name: String,
    /// The model's description.
    #[serde(default)]
    pub description: Option<String>,
    /// The latest version in each stage.
    #[serde(default)]
    pub latest_versions: Vec<ModelVersion>,
    /// Its aliases.
    #[serde(default)]
    pub aliases: Vec<ModelAlias>,
    /// Its tags.
    #[serde(default)]
    pub tags: Vec<KeyValue>,
}

/// One entry of an artifact directory listing.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct FileInfo {
    /// The path, relative to the listed directory.
    pub path: String,
    /// Whether it is a directory.
    #[serde(default)]
    pub is_dir: bool,
    /// Size in bytes, for files.
    #[serde(default, deserialize_with = "de_opt_i64")]
    pub file_size: Option<i64>,
}

fn find_value<'a>(pairs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|p| p.key == key)
        .map(|p| p.value.as_str())
}

/// Serializes an `f64` as a JSON number, or as MLflow's string for NaN and the infinities
/// (JSON has no representation for them; `serde_json` would write `null`).
pub(crate) fn ser_f64<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    if value.is_nan() {
        serializer.serialize_str("NaN")
    } else if value.is_infinite() && value.is_sign_positive() {
        serializer.serialize_str("Infinity")
    } else if value.is_infinite() {
        serializer.serialize_str("-Infinity")
    } else {
        serializer.serialize_f64(*value)
    }
}

/// Parses MLflow's spelling of a float: a number, or a string such as `"NaN"`, `"Infinity"`,
/// `"-Infinity"` or `"0.5"`.
pub fn parse_metric_value(s: &str) -> Option<f64> {
    match s.trim() {
        "NaN" | "nan" | "-NaN" => Some(f64::NAN),
        "Infinity" | "inf" | "+Infinity" | "+inf" => Some(f64::INFINITY),
        "-Infinity" | "-inf" => Some(f64::NEG_INFINITY),
        other => other.parse().ok(),
    }
}

fn de_f64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    struct F64Visitor;
    impl Visitor<'_> for F64Visitor {
        type Value = f64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a number or one of \"NaN\", \"Infinity\", \"-Infinity\"")
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
            Ok(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
            parse_metric_value(v).ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
        }
    }
    deserializer.deserialize_any(F64Visitor)
}

struct I64Visitor;

impl Visitor<'_> for I64Visitor {
    type Value = i64;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer or a string holding one")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
        Ok(v)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
        i64::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
        if v.fract() == 0.0 && v.abs() < 9.0e15 {
            Ok(v as i64)
        } else {
            Err(E::invalid_value(de::Unexpected::Float(v), &self))
        }
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<i64, E> {
        v.trim()
            .parse()
            .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
    }
}

fn de_i64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    deserializer.deserialize_any(I64Visitor)
}

fn de_opt_i64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    struct OptVisitor;
    impl<'de> Visitor<'de> for OptVisitor {
        type Value = Option<i64>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an optional integer")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(I64Visitor).map(Some)
        }
    }
    deserializer.deserialize_option(OptVisitor)
}

fn de_string_or_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    struct StringVisitor;
    impl Visitor<'_> for StringVisitor {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or an integer")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
            Ok(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
    }
    deserializer.deserialize_any(StringVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(json: &str) -> Metric {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn metric_value_nan_string_parses_to_nan() {
        let m = metric(r#"{"key":"m","value":"NaN","timestamp":1,"step":0}"#);
        assert!(m.value.is_nan());
    }

    #[test]
    fn metric_value_infinity_strings_parse_to_infinities() {
        let pos = metric(r#"{"key":"m","value":"Infinity","timestamp":1}"#);
        let neg = metric(r#"{"key":"m","value":"-Infinity","timestamp":1}"#);
        assert_eq!(pos.value, f64::INFINITY);
        assert_eq!(neg.value, f64::NEG_INFINITY);
    }

    #[test]
    fn metric_value_number_and_string_timestamp_parse() {
        let m = metric(r#"{"key":"m","value":0.25,"timestamp":"1700000000000","step":"3"}"#);
        assert_eq!((m.value, m.timestamp, m.step), (0.25, 1_700_000_000_000, 3));
    }

    #[test]
    fn non_finite_metric_values_serialize_as_mlflow_strings() {
        let m = |v| Metric {
            key: "k".into(),
            value: v,
            timestamp: 0,
            step: 0,
        };
        let json = |v| serde_json::to_value(m(v)).unwrap()["value"].clone();
        assert_eq!(json(f64::NAN), "NaN");
        assert_eq!(json(f64::INFINITY), "Infinity");
        assert_eq!(json(f64::NEG_INFINITY), "-Infinity");
        assert_eq!(json(0.5), 0.5);
    }

    #[test]
    fn version_numbers_are_kept_as_strings() {
        let v: ModelVersion = serde_json::from_str(r#"{"name":"m","version":7}"#).unwrap();
        assert_eq!(v.version, "7");
        assert_eq!(v.current_stage, Stage::None);
        assert_eq!(v.status, ModelVersionStatus::PendingRegistration);
    }

    #[test]
    fn stage_parses_case_insensitively_and_prints_mlflow_names() {
        assert_eq!("production".parse::<Stage>().unwrap(), Stage::Production);
        assert_eq!(Stage::Staging.to_string(), "Staging");
        assert!("prod".parse::<Stage>().is_err());
    }

    #[test]
    fn unknown_status_does_not_fail_parsing() {
        let v: ModelVersion =
            serde_json::from_str(r#"{"name":"m","version":"1","status":"SOMETHING_NEW"}"#).unwrap();
        assert_eq!(v.status, ModelVersionStatus::Unknown);
    }
}
