//! The settings a policy is given: the `model_comparison` section of `params.yaml`, as JSON.
//!
//! Every getter names the key and what it found when the value has the wrong type, because
//! the operator who reads the error has only `params.yaml` to fix.

use serde_json::{Map, Value};

use crate::compare::{Direction, ImprovementMode};
use crate::format;

/// The settings of one policy call, with typed getters.
///
/// A key whose value is `null` counts as absent, because YAML writes a key left empty
/// (`primary_metric:`) as null.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    root: Map<String, Value>,
}

impl Settings {
    /// Parses the settings JSON; empty text and `null` are no settings at all.
    ///
    /// # Errors
    ///
    /// When the text is not JSON, or is JSON but not an object.
    pub fn parse(json: &str) -> Result<Self, String> {
        if json.trim().is_empty() {
            return Ok(Self::default());
        }
        let value: Value = serde_json::from_str(json).map_err(|err| {
            format!("settings are not valid json ({err}); pass the model_comparison section as a json object")
        })?;
        match value {
            Value::Null => Ok(Self::default()),
            Value::Object(root) => Ok(Self { root }),
            other => Err(format!(
                "settings must be a json object of model_comparison keys, got {}",
                shown(&other)
            )),
        }
    }

    /// The raw value of `key`, `None` when absent or null.
    pub fn get(&self, key: &str) -> Option<&Value> {
        present(self.root.get(key))
    }

    /// The text at `key`, or `None` when absent.
    ///
    /// # Errors
    ///
    /// When the value is not text.
    pub fn string(&self, key: &str) -> Result<Option<&str>, String> {
        self.get(key).map(|value| as_str(key, value)).transpose()
    }

    /// The text at `key`, or `default` when absent.
    ///
    /// # Errors
    ///
    /// When the value is not text.
    pub fn string_or<'a>(&'a self, key: &str, default: &'a str) -> Result<&'a str, String> {
        Ok(self.string(key)?.unwrap_or(default))
    }

    /// The number at `key`, or `None` when absent.
    ///
    /// # Errors
    ///
    /// When the value is not a number.
    pub fn number(&self, key: &str) -> Result<Option<f64>, String> {
        self.get(key).map(|value| as_number(key, value)).transpose()
    }

    /// The number at `key`, or `default` when absent.
    ///
    /// # Errors
    ///
    /// When the value is not a number.
    pub fn number_or(&self, key: &str, default: f64) -> Result<f64, String> {
        Ok(self.number(key)?.unwrap_or(default))
    }

    /// The list of metric names at `key`, empty when absent; repeated names are kept once.
    ///
    /// # Errors
    ///
    /// When the value is not a list of text.
    pub fn metric_list(&self, key: &str) -> Result<Vec<String>, String> {
        let Some(value) = self.get(key) else {
            return Ok(Vec::new());
        };
        let wrong = || {
            format!(
                "setting {key} must be a list of metric names, got {}",
                shown(value)
            )
        };
        let items = value.as_array().ok_or_else(wrong)?;
        let mut names: Vec<String> = Vec::with_capacity(items.len());
        for item in items {
            let name = item.as_str().ok_or_else(wrong)?;
            if !names.iter().any(|known| known == name) {
                names.push(name.to_string());
            }
        }
        Ok(names)
    }

    /// The global `direction`, higher-is-better when absent.
    ///
    /// # Errors
    ///
    /// When the value is neither `higher_is_better` nor `lower_is_better`.
    pub fn direction(&self) -> Result<Direction, String> {
        match self.get("direction") {
            None => Ok(Direction::default()),
            Some(value) => as_direction("direction", value),
        }
    }

    /// `improvement_mode`: relative when absent.
    ///
    /// # Errors
    ///
    /// When the value is neither `relative` nor `absolute`.
    pub fn improvement_mode(&self) -> Result<ImprovementMode, String> {
        let key = "improvement_mode";
        let Some(value) = self.get(key) else {
            return Ok(ImprovementMode::default());
        };
        as_str(key, value)
            .ok()
            .and_then(ImprovementMode::from_key)
            .ok_or_else(|| {
                format!(
                    "setting {key} must be \"relative\" or \"absolute\", got {}",
                    shown(value)
                )
            })
    }

    /// The settings of the metric called `name`, from `metrics.<name>`.
    ///
    /// # Errors
    ///
    /// When `metrics` is not a map, `metrics.<name>` is not a map, or `direction` is invalid
    /// (it is the metric's fallback direction).
    pub fn metric(&self, name: &str) -> Result<MetricSettings<'_>, String> {
        let entry = match self.metrics_map()?.and_then(|map| present(map.get(name))) {
            None => None,
            Some(Value::Object(entry)) => Some(entry),
            Some(other) => {
                return Err(format!(
                    "setting metrics.{name} must be a map of direction, tolerance, min and max, got {}",
                    shown(other)
                ));
            }
        };
        Ok(MetricSettings {
            name: name.to_string(),
            entry,
            fallback: self.direction()?,
        })
    }

    /// The names under `metrics`, in sorted order.
    ///
    /// # Errors
    ///
    /// When `metrics` is not a map.
    pub fn metric_names(&self) -> Result<Vec<&str>, String> {
        Ok(self
            .metrics_map()?
            .map(|map| map.keys().map(String::as_str).collect())
            .unwrap_or_default())
    }

    fn metrics_map(&self) -> Result<Option<&Map<String, Value>>, String> {
        match self.get("metrics") {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(map)),
            Some(other) => Err(format!(
                "setting metrics must be a map from metric name to its settings, got {}",
                shown(other)
            )),
        }
    }
}

/// The settings of one metric: `metrics.<name>.{direction, tolerance, min, max}`.
#[derive(Debug, Clone)]
pub struct MetricSettings<'a> {
    name: String,
    entry: Option<&'a Map<String, Value>>,
    fallback: Direction,
}

impl MetricSettings<'_> {
    /// The metric's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `metrics.<name>.direction`, or else the global `direction`, or else higher-is-better.
    ///
    /// # Errors
    ///
    /// When the value is neither `higher_is_better` nor `lower_is_better`.
    pub fn direction(&self) -> Result<Direction, String> {
        match self.field("direction") {
            None => Ok(self.fallback),
            Some(value) => as_direction(&self.key("direction"), value),
        }
    }

    /// `metrics.<name>.tolerance`: how far the metric may regress, in its own units; 0 when
    /// absent, and never negative.
    ///
    /// # Errors
    ///
    /// When the value is not a number, or is negative.
    pub fn tolerance(&self) -> Result<f64, String> {
        let Some(value) = self.field("tolerance") else {
            return Ok(0.0);
        };
        let key = self.key("tolerance");
        match value.as_f64() {
            Some(tolerance) if tolerance >= 0.0 => Ok(tolerance),
            _ => Err(format!(
                "setting {key} must be a number >= 0, got {}",
                shown(value)
            )),
        }
    }

    /// `metrics.<name>.min`: the lowest acceptable value, if any.
    ///
    /// # Errors
    ///
    /// When the value is not a number.
    pub fn min(&self) -> Result<Option<f64>, String> {
        self.number("min")
    }

    /// `metrics.<name>.max`: the highest acceptable value, if any.
    ///
    /// # Errors
    ///
    /// When the value is not a number.
    pub fn max(&self) -> Result<Option<f64>, String> {
        self.number("max")
    }

    /// `min` and `max` together, refusing a floor above the ceiling.
    ///
    /// # Errors
    ///
    /// When either is not a number, or `min` is greater than `max`.
    pub fn bounds(&self) -> Result<(Option<f64>, Option<f64>), String> {
        let (min, max) = (self.min()?, self.max()?);
        if let (Some(floor), Some(ceiling)) = (min, max)
            && floor > ceiling
        {
            return Err(format!(
                "setting {} ({}) is greater than {} ({}); swap them or fix one",
                self.key("min"),
                format::number(floor),
                self.key("max"),
                format::number(ceiling)
            ));
        }
        Ok((min, max))
    }

    fn number(&self, field: &str) -> Result<Option<f64>, String> {
        self.field(field)
            .map(|value| as_number(&self.key(field), value))
            .transpose()
    }

    fn field(&self, field: &str) -> Option<&Value> {
        present(self.entry.and_then(|entry| entry.get(field)))
    }

    fn key(&self, field: &str) -> String {
        format!("metrics.{}.{field}", self.name)
    }
}

fn present(value: Option<&Value>) -> Option<&Value> {
    value.filter(|value| !value.is_null())
}

fn as_str<'a>(key: &str, value: &'a Value) -> Result<&'a str, String> {
    value
        .as_str()
        .ok_or_else(|| format!("setting {key} must be text, got {}", shown(value)))
}

fn as_number(key: &str, value: &Value) -> Result<f64, String> {
    value
        .as_f64()
        .ok_or_else(|| format!("setting {key} must be a number, got {}", shown(value)))
}

fn as_direction(key: &str, value: &Value) -> Result<Direction, String> {
    value.as_str().and_then(Direction::from_key).ok_or_else(|| {
        format!(
            "setting {key} must be \"higher_is_better\" or \"lower_is_better\", got {}",
            shown(value)
        )
    })
}

/// A value as JSON, cut short so that a huge value cannot swamp the message.
fn shown(value: &Value) -> String {
    const LIMIT: usize = 60;
    let text = value.to_string();
    match text.char_indices().nth(LIMIT) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(json: &str) -> Settings {
        match Settings::parse(json) {
            Ok(settings) => settings,
            Err(err) => panic!("{json} should parse: {err}"),
        }
    }

    #[test]
    fn empty_text_and_null_are_no_settings() {
        assert_eq!(
            parsed("").number_or("improvement_threshold", 0.05),
            Ok(0.05)
        );
        assert_eq!(
            parsed("null").number_or("improvement_threshold", 0.05),
            Ok(0.05)
        );
    }

    #[test]
    fn settings_that_are_not_an_object_are_refused() {
        let err = Settings::parse("[1, 2]").err();
        assert_eq!(
            err.as_deref(),
            Some("settings must be a json object of model_comparison keys, got [1,2]")
        );
    }

    #[test]
    fn settings_that_are_not_json_are_refused() {
        let err = Settings::parse("{nope").err().unwrap_or_default();
        assert!(err.starts_with("settings are not valid json"), "{err}");
    }

    #[test]
    fn a_null_value_counts_as_absent() {
        let settings = parsed(r#"{"primary_metric": null}"#);
        assert_eq!(
            settings.string_or("primary_metric", "accuracy"),
            Ok("accuracy")
        );
    }

    #[test]
    fn a_number_of_the_wrong_type_names_the_key_and_the_value() {
        let settings = parsed(r#"{"improvement_threshold": "abc"}"#);
        assert_eq!(
            settings.number_or("improvement_threshold", 0.05),
            Err(r#"setting improvement_threshold must be a number, got "abc""#.to_string())
        );
    }

    #[test]
    fn text_of_the_wrong_type_names_the_key_and_the_value() {
        let settings = parsed(r#"{"primary_metric": 3}"#);
        assert_eq!(
            settings.string("primary_metric"),
            Err("setting primary_metric must be text, got 3".to_string())
        );
    }

    #[test]
    fn a_metric_list_keeps_each_name_once() {
        let settings = parsed(r#"{"comparison_metrics": ["f1", "recall", "f1"]}"#);
        assert_eq!(
            settings.metric_list("comparison_metrics"),
            Ok(vec!["f1".to_string(), "recall".to_string()])
        );
    }

    #[test]
    fn a_metric_list_of_the_wrong_type_is_refused() {
        let settings = parsed(r#"{"comparison_metrics": "f1"}"#);
        assert_eq!(
            settings.metric_list("comparison_metrics"),
            Err(
                r#"setting comparison_metrics must be a list of metric names, got "f1""#
                    .to_string()
            )
        );
    }

    #[test]
    fn direction_defaults_to_higher_is_better() {
        assert_eq!(parsed("{}").direction(), Ok(Direction::HigherIsBetter));
    }

    #[test]
    fn an_unknown_direction_is_refused() {
        let settings = parsed(r#"{"direction": "down"}"#);
        assert_eq!(
            settings.direction(),
            Err(
                r#"setting direction must be "higher_is_better" or "lower_is_better", got "down""#
                    .to_string()
            )
        );
    }

    #[test]
    fn a_metric_direction_wins_over_the_global_one() {
        let settings = parsed(
            r#"{"direction": "lower_is_better", "metrics": {"accuracy": {"direction": "higher_is_better"}}}"#,
        );
        assert_eq!(
            settings.metric("accuracy").and_then(|m| m.direction()),
            Ok(Direction::HigherIsBetter)
        );
        assert_eq!(
            settings.metric("loss").and_then(|m| m.direction()),
            Ok(Direction::LowerIsBetter)
        );
    }

    #[test]
    fn improvement_mode_defaults_to_relative_and_refuses_other_words() {
        assert_eq!(
            parsed("{}").improvement_mode(),
            Ok(ImprovementMode::Relative)
        );
        assert_eq!(
            parsed(r#"{"improvement_mode": "absolute"}"#).improvement_mode(),
            Ok(ImprovementMode::Absolute)
        );
        assert_eq!(
            parsed(r#"{"improvement_mode": "percent"}"#).improvement_mode(),
            Err(
                r#"setting improvement_mode must be "relative" or "absolute", got "percent""#
                    .to_string()
            )
        );
    }

    #[test]
    fn tolerance_defaults_to_zero_and_must_not_be_negative() {
        let settings = parsed(r#"{"metrics": {"f1": {"tolerance": -0.1}}}"#);
        assert_eq!(
            settings.metric("recall").and_then(|m| m.tolerance()),
            Ok(0.0)
        );
        assert_eq!(
            settings.metric("f1").and_then(|m| m.tolerance()),
            Err("setting metrics.f1.tolerance must be a number >= 0, got -0.1".to_string())
        );
    }

    #[test]
    fn a_metric_entry_that_is_not_a_map_is_refused() {
        let settings = parsed(r#"{"metrics": {"f1": 0.1}}"#);
        assert_eq!(
            settings.metric("f1").err().as_deref(),
            Some("setting metrics.f1 must be a map of direction, tolerance, min and max, got 0.1")
        );
    }

    #[test]
    fn a_floor_above_the_ceiling_is_refused() {
        let settings = parsed(r#"{"metrics": {"f1": {"min": 0.9, "max": 0.8}}}"#);
        assert_eq!(
            settings.metric("f1").and_then(|m| m.bounds()),
            Err("setting metrics.f1.min (0.9) is greater than metrics.f1.max (0.8); swap them or fix one".to_string())
        );
    }

    #[test]
    fn a_guardrail_of_the_wrong_type_names_its_full_key() {
        let settings = parsed(r#"{"metrics": {"latency": {"max": "fast"}}}"#);
        assert_eq!(
            settings.metric("latency").and_then(|m| m.max()),
            Err(r#"setting metrics.latency.max must be a number, got "fast""#.to_string())
        );
    }

    #[test]
    fn long_values_are_cut_short_in_messages() {
        let long = "x".repeat(500);
        let settings = parsed(&format!(r#"{{"improvement_threshold": "{long}"}}"#));
        let err = settings
            .number("improvement_threshold")
            .err()
            .unwrap_or_default();
        assert!(err.len() < 120, "{err}");
        assert!(err.ends_with("..."), "{err}");
    }
}
