"""The threshold policy written in plain Python: the rule of the Rust `threshold` policy.

Promote when the primary metric improves on the champion's by at least
`improvement_threshold`; hold when it does not, or when the champion has no usable value;
reject a candidate whose primary metric is missing or not finite; promote when there is no
champion. It passes the same cases as the Rust policy (`policies/threshold/cases.yaml`).

Built into a component by `cargo xtask python-policies`, which runs
`componentize-py -d wit -w policy componentize app -p policies/python/threshold -o ...`.
"""

import json
import math
from decimal import Decimal

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host
from wit_world.imports.types import (
    Check,
    Decision,
    DecisionInput,
    PolicyInfo,
    Setting,
    Verdict,
)

# A gain this close below the threshold counts as reaching it: f64 puts 0.9 -> 0.945 at a
# relative gain of 0.04999999999999993, which is 5% on paper.
THRESHOLD_SLACK = 1e-9

DIRECTIONS = {"higher_is_better": "higher is better", "lower_is_better": "lower is better"}
MODES = ("relative", "absolute")


class SettingError(Exception):
    """A setting with the wrong type or an unknown value; the message names the key."""


def shown(value):
    return json.dumps(value)


def present(mapping, key):
    """The value at `key`; a key set to null counts as absent, as YAML writes an empty key."""
    return mapping.get(key)


def text_setting(settings, key, default):
    value = present(settings, key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise SettingError(f"setting {key} must be text, got {shown(value)}")
    return value


def number_setting(settings, key, default):
    value = present(settings, key)
    if value is None:
        return default
    # JSON's true and false are not numbers, though Python counts bool as an int.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SettingError(f"setting {key} must be a number, got {shown(value)}")
    return float(value)


def direction_setting(key, value):
    if value not in DIRECTIONS:
        raise SettingError(
            f'setting {key} must be "higher_is_better" or "lower_is_better", got {shown(value)}'
        )
    return value


def metric_direction(settings, metric):
    """`metrics.<metric>.direction`, else `direction`, else higher is better."""
    fallback = present(settings, "direction")
    fallback = "higher_is_better" if fallback is None else direction_setting("direction", fallback)
    per_metric = present(settings, "metrics")
    if per_metric is None:
        return fallback
    if not isinstance(per_metric, dict):
        raise SettingError(
            f"setting metrics must be a map from metric name to its settings, got {shown(per_metric)}"
        )
    entry = present(per_metric, metric)
    if entry is None:
        return fallback
    if not isinstance(entry, dict):
        raise SettingError(
            f"setting metrics.{metric} must be a map of direction, tolerance, min and max, got {shown(entry)}"
        )
    own = present(entry, "direction")
    return fallback if own is None else direction_setting(f"metrics.{metric}.direction", own)


def metric_list(settings, key):
    value = present(settings, key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise SettingError(f"setting {key} must be a list of metric names, got {shown(value)}")
    names = []
    for name in value:
        if name not in names:
            names.append(name)
    return names


def find_metric(metrics, name):
    """The first value reported under `name`, or None."""
    for metric in metrics:
        if metric.name == name:
            return metric.value
    return None


def gain(candidate, champion, direction, mode):
    """How much better the candidate is: positive when better, whichever the direction."""
    absolute = candidate - champion if direction == "higher_is_better" else champion - candidate
    if mode == "absolute":
        return absolute
    if champion == 0.0:
        if absolute > 0.0:
            return math.inf
        return -math.inf if absolute < 0.0 else 0.0
    return absolute / abs(champion)


def number(value):
    """A value as the Rust kit writes it in reasons: up to six decimals, no trailing zeros,
    scientific notation far from 1."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == 0.0:
        return "0"
    if not 1e-4 <= abs(value) < 1e12:
        # The shortest digits that round-trip, as Rust's `{:e}` writes them: 1e-7, 2.5e13.
        mantissa, exponent = f"{Decimal(repr(value)).normalize():e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    trimmed = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if trimmed in ("", "-0") else trimmed


class Rule:
    """The primary-metric rule, as the settings configure it."""

    def __init__(self, settings):
        self.metric = text_setting(settings, "primary_metric", "accuracy")
        if self.metric == "":
            raise SettingError('setting primary_metric must name a metric, got ""')
        self.threshold = number_setting(settings, "improvement_threshold", 0.05)
        mode = present(settings, "improvement_mode")
        if mode is not None and mode not in MODES:
            raise SettingError(
                f'setting improvement_mode must be "relative" or "absolute", got {shown(mode)}'
            )
        self.mode = mode or "relative"
        self.direction = metric_direction(settings, self.metric)

    def threshold_words(self):
        if self.mode == "relative":
            return f"{number(self.threshold * 100)}%"
        return number(self.threshold)

    def requirement(self):
        return (
            f"{self.mode} gain >= {self.threshold_words()} over champion "
            f"({DIRECTIONS[self.direction]})"
        )

    def judge(self, decision_input):
        """The verdict on the primary metric, the reason and its check."""
        metric = self.metric
        champion = decision_input.champion
        champion_value = None if champion is None else find_metric(champion.metrics, metric)
        candidate = find_metric(decision_input.candidate.metrics, metric)

        if candidate is None or not math.isfinite(candidate):
            if candidate is None:
                reason = (
                    f"candidate has no {metric} metric; a model without its primary metric "
                    "must not be served"
                )
            else:
                reason = (
                    f"candidate {metric} is {number(candidate)}; a model whose primary metric "
                    "is not finite must not be served"
                )
            requirement = f"candidate reports a finite {metric}"
            return Verdict.REJECT, reason, Check(metric, candidate, champion_value, requirement, False)

        if champion is None:
            reason = (
                f"no champion exists for {decision_input.model_name}; the candidate becomes "
                f"the first champion ({metric} {number(candidate)})"
            )
            requirement = "finite value; no champion to compare against"
            return Verdict.PROMOTE, reason, Check(metric, candidate, None, requirement, True)

        if champion_value is None or not math.isfinite(champion_value):
            reason = f"champion version {champion.version} has no usable {metric}; cannot compare"
            requirement = f"{self.requirement()}; the champion has no usable value"
            return Verdict.HOLD, reason, Check(metric, candidate, champion_value, requirement, False)

        measured = gain(candidate, champion_value, self.direction, self.mode)
        passed = measured >= self.threshold - THRESHOLD_SLACK
        if math.isinf(measured):
            amount = f"from 0 to {number(candidate)}"
        elif self.mode == "relative":
            amount = f"{abs(measured) * 100:.2f}%"
        else:
            amount = number(abs(measured))
        if measured > 0:
            change = f"improved {amount} over"
        elif measured < 0:
            change = f"worsened {amount} against"
        else:
            change = "did not change against"
        required = self.threshold_words()
        version = champion.version
        if passed:
            reason = f"{metric} {change} champion version {version} (required {required})"
        else:
            reason = f"{metric} {change} champion version {version}; a gain of {required} is required"
        check = Check(metric, candidate, champion_value, self.requirement(), passed)
        return (Verdict.PROMOTE if passed else Verdict.HOLD), reason, check


def reported_only(decision_input, metric):
    """A check of a comparison metric that always passes: this policy judges one metric."""
    champion = decision_input.champion
    champion_value = None if champion is None else find_metric(champion.metrics, metric)
    candidate = find_metric(decision_input.candidate.metrics, metric)
    requirement = "reported only"
    if candidate is None:
        requirement = "reported only; the candidate has no such metric"
    return Check(metric, candidate, champion_value, requirement, True)


def parse_settings(text):
    if text.strip() == "":
        return {}
    try:
        settings = json.loads(text)
    except ValueError as error:
        raise SettingError(
            f"settings are not valid json ({error}); pass the model_comparison section as a json object"
        ) from error
    if settings is None:
        return {}
    if not isinstance(settings, dict):
        raise SettingError(
            f"settings must be a json object of model_comparison keys, got {shown(settings)}"
        )
    return settings


class Rules(exports.Rules):
    """The `rules` interface of the `policy` world, as componentize-py expects it."""

    def describe(self) -> PolicyInfo:
        return PolicyInfo(
            name="python-threshold",
            version="0.1.0",
            description=(
                "The threshold rule in plain Python: promotes the candidate when its primary "
                "metric improves on the champion's by at least improvement_threshold; holds it "
                "when not, or when the champion has no usable value; rejects a candidate whose "
                "primary metric is missing or not finite; promotes when there is no champion."
            ),
            settings=[
                Setting("primary_metric", "the metric the candidate must improve", '"accuracy"'),
                Setting(
                    "improvement_threshold",
                    "the gain required to promote: a fraction in relative mode, the metric's "
                    "units in absolute mode",
                    "0.05",
                ),
                Setting("improvement_mode", '"relative" or "absolute"', '"relative"'),
                Setting("direction", '"higher_is_better" or "lower_is_better"', '"higher_is_better"'),
                Setting("metrics", "per-metric settings; metrics.<name>.direction is read", "{}"),
                Setting("comparison_metrics", "metrics reported for information only", "[]"),
            ],
        )

    def decide(self, input: DecisionInput) -> Decision:
        try:
            settings = parse_settings(input.settings)
            rule = Rule(settings)
            reported = metric_list(settings, "comparison_metrics")
        except SettingError as error:
            raise Err(str(error))
        verdict, reason, check = rule.judge(input)
        checks = [check] + [
            reported_only(input, name) for name in reported if name != rule.metric
        ]
        host.log(host.Level.DEBUG, f"{rule.metric}: {reason}")
        return Decision(verdict, reason, checks)
