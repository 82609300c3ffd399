//! The significance policy: promote only when the primary metric's gain over the champion is
//! significant, judged from per-sample results (a bootstrap confidence interval of the gain) or
//! from a confidence interval the evaluation step reported.
//!
//! A threshold on a single number cannot tell a better model from a lucky test split; this
//! policy asks whether the whole interval of plausible gains clears `min_improvement`.

mod bootstrap;

use bootstrap::{Interval, difference_interval, mean, mean_interval};
use policy_kit::compare::{Direction, Reading, absolute_gain, find_series, read_metric};
use policy_kit::report::{check, setting};
use policy_kit::{Decision, DecisionInput, Policy, PolicyInfo, Settings, Verdict, format};

/// The significance policy.
pub struct Significance;

/// Fewer samples than this say nothing about spread.
const MIN_SAMPLES: usize = 2;

/// The policy's settings.
#[derive(Debug, Clone, PartialEq)]
struct Config {
    metric: String,
    direction: Direction,
    min_improvement: f64,
    confidence: f64,
    resamples: usize,
    seed: u64,
    samples: String,
    interval_lower: String,
    interval_upper: String,
}

impl Config {
    fn from_settings(settings: &Settings) -> Result<Self, String> {
        let metric = settings
            .string_or("primary_metric", "accuracy")?
            .to_string();
        if metric.is_empty() {
            return Err("setting primary_metric must name a metric, got \"\"".to_string());
        }
        let min_improvement = settings.number_or("min_improvement", 0.0)?;
        if !min_improvement.is_finite() {
            return Err("setting min_improvement must be a finite number".to_string());
        }
        let confidence = settings.number_or("confidence", 0.95)?;
        if !(confidence > 0.0 && confidence < 1.0) {
            return Err(format!(
                "setting confidence must be between 0 and 1, such as 0.95, got {}",
                format::number(confidence)
            ));
        }
        let resamples = settings.number_or("resamples", 2000.0)?;
        if !(100.0..=20_000.0).contains(&resamples) || resamples.fract() != 0.0 {
            return Err(format!(
                "setting resamples must be a whole number from 100 to 20000, got {}",
                format::number(resamples)
            ));
        }
        let seed = settings.number_or("seed", 0.0)?;
        if !(0.0..=9_007_199_254_740_992.0).contains(&seed) || seed.fract() != 0.0 {
            return Err(format!(
                "setting seed must be a whole number >= 0, got {}",
                format::number(seed)
            ));
        }
        let named = |key: &str, suffix: &str| -> Result<String, String> {
            Ok(settings
                .string(key)?
                .map_or_else(|| format!("{metric}{suffix}"), str::to_string))
        };
        Ok(Self {
            direction: settings.metric(&metric)?.direction()?,
            min_improvement,
            confidence,
            resamples: resamples as usize,
            seed: seed as u64,
            samples: named("samples", "_samples")?,
            interval_lower: named("interval_lower", "_ci_lower")?,
            interval_upper: named("interval_upper", "_ci_upper")?,
            metric,
        })
    }

    fn requirement(&self, interval: &str) -> String {
        format!(
            "lower bound of the {interval} of the gain > {} ({})",
            format::number(self.min_improvement),
            self.direction.words()
        )
    }

    fn confidence_words(&self) -> String {
        format!("{} confidence interval", format::percent(self.confidence))
    }
}

/// How sure the evidence lets the policy be of the gain: the point estimate, the interval and
/// how it was obtained.
struct Evidence {
    gain: f64,
    interval: Interval,
    /// `95% confidence interval` or `reported interval`.
    interval_words: String,
    method: String,
}

impl Policy for Significance {
    fn describe() -> PolicyInfo {
        let settings = vec![
            setting(
                "primary_metric",
                "the metric whose gain must be significant; the candidate must report it as a number",
                Some("\"accuracy\""),
            ),
            setting(
                "direction",
                "\"higher_is_better\" or \"lower_is_better\"; metrics.<name>.direction wins over it",
                Some("\"higher_is_better\""),
            ),
            setting(
                "min_improvement",
                "the gain, in the metric's units, that the interval's lower bound must exceed; 0 asks for any real gain, a negative value for non-inferiority within that margin",
                Some("0"),
            ),
            setting(
                "confidence",
                "the bootstrap interval's confidence level, between 0 and 1",
                Some("0.95"),
            ),
            setting(
                "samples",
                "the per-sample (or per-fold) series of the primary metric, a list in metrics.json; paired with the champion's series of the same length, else compared with the champion's value",
                Some("\"<primary_metric>_samples\""),
            ),
            setting(
                "interval_lower",
                "the metric holding the lower bound of a confidence interval the evaluation reported, used when there is no series",
                Some("\"<primary_metric>_ci_lower\""),
            ),
            setting(
                "interval_upper",
                "the metric holding that interval's upper bound",
                Some("\"<primary_metric>_ci_upper\""),
            ),
            setting(
                "resamples",
                "bootstrap resamples, 100 to 20000; the time taken grows with resamples times samples",
                Some("2000"),
            ),
            setting(
                "seed",
                "the resampling seed; the same inputs and seed always give the same verdict",
                Some("0"),
            ),
        ];
        PolicyInfo {
            name: "significance".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            description: "Promotes the candidate only when the lower bound of a confidence interval of its primary metric's gain over the champion exceeds min_improvement: a percentile bootstrap over per-sample results (paired when both models report the same samples), or an interval the evaluation reported; holds it otherwise, or when there is no evidence of spread; rejects a candidate without a finite primary metric or with non-finite samples; promotes when there is no champion.".to_string(),
            settings,
        }
    }

    fn decide(input: &DecisionInput, settings: &Settings) -> Result<Decision, String> {
        let config = Config::from_settings(settings)?;
        let metric = config.metric.as_str();
        let champion_value = input
            .champion
            .as_ref()
            .and_then(|champion| read_metric(&champion.metrics, metric).reported());
        let decision = |verdict, reason: String, requirement: String, passed| {
            let candidate = read_metric(&input.candidate.metrics, metric).reported();
            Ok(Decision {
                verdict,
                reason,
                checks: vec![check(
                    metric,
                    candidate,
                    champion_value,
                    requirement,
                    passed,
                )],
            })
        };

        let candidate = match read_metric(&input.candidate.metrics, metric) {
            Reading::Finite(value) => value,
            Reading::NotFinite(value) => {
                return decision(
                    Verdict::Reject,
                    format!(
                        "candidate {metric} is {}; a model whose primary metric is not finite must not be served",
                        format::number(value)
                    ),
                    format!("candidate reports a finite {metric}"),
                    false,
                );
            }
            Reading::Missing => {
                return decision(
                    Verdict::Reject,
                    format!(
                        "candidate has no {metric} metric; a model without its primary metric must not be served"
                    ),
                    format!("candidate reports a finite {metric}"),
                    false,
                );
            }
        };
        let samples = find_series(&input.candidate.series, &config.samples);
        if samples.is_some_and(|values| values.iter().any(|value| !value.is_finite())) {
            return decision(
                Verdict::Reject,
                format!(
                    "candidate series {} holds a NaN or infinite value; its evaluation is broken",
                    config.samples
                ),
                format!("every value of {} is finite", config.samples),
                false,
            );
        }

        let Some(champion) = &input.champion else {
            return decision(
                Verdict::Promote,
                format!(
                    "no champion exists for {}; the candidate becomes the first champion ({metric} {})",
                    input.model_name,
                    format::number(candidate)
                ),
                "finite value; no champion to compare against".to_string(),
                true,
            );
        };

        let evidence = match evidence(&config, input, candidate) {
            Ok(evidence) => evidence,
            Err(missing) => {
                return decision(
                    Verdict::Hold,
                    format!(
                        "{missing}; cannot judge significance against champion version {}",
                        champion.version
                    ),
                    config.requirement(&config.confidence_words()),
                    false,
                );
            }
        };
        let significant = evidence.interval.lower > config.min_improvement;
        let bounds = format!(
            "{} [{}, {}] ({})",
            evidence.interval_words,
            format::number(evidence.interval.lower),
            format::number(evidence.interval.upper),
            evidence.method
        );
        let reason = format!(
            "{metric} gain {} over champion version {} is {}: its {bounds} {} above {}",
            format::number(evidence.gain),
            champion.version,
            if significant {
                "significant"
            } else {
                "not significant"
            },
            if significant { "lies" } else { "does not lie" },
            format::number(config.min_improvement)
        );
        decision(
            if significant {
                Verdict::Promote
            } else {
                Verdict::Hold
            },
            reason,
            config.requirement(&evidence.interval_words),
            significant,
        )
    }
}

/// The interval of the gain from the best evidence at hand: both models' samples, the
/// candidate's samples against the champion's value, or the candidate's reported interval.
/// `Err` says what is missing.
fn evidence(config: &Config, input: &DecisionInput, candidate: f64) -> Result<Evidence, String> {
    let metric = config.metric.as_str();
    let direction = config.direction;
    let champion = input
        .champion
        .as_ref()
        .ok_or_else(|| "there is no champion".to_string())?;
    let champion_value = read_metric(&champion.metrics, metric).finite();
    let champion_samples = find_series(&champion.series, &config.samples)
        .filter(|values| values.len() >= MIN_SAMPLES && values.iter().all(|v| v.is_finite()));
    let bootstrap = config.confidence_words();

    if let Some(samples) = find_series(&input.candidate.series, &config.samples) {
        let n = samples.len();
        if n < MIN_SAMPLES {
            return Err(format!(
                "candidate series {} has {n} value(s), and at least {MIN_SAMPLES} are needed",
                config.samples
            ));
        }
        if let Some(theirs) = champion_samples.filter(|theirs| theirs.len() == n) {
            let gains: Vec<f64> = samples
                .iter()
                .zip(theirs)
                .map(|(ours, theirs)| absolute_gain(*ours, *theirs, direction))
                .collect();
            return Ok(Evidence {
                gain: mean(&gains),
                interval: mean_interval(&gains, config.resamples, config.confidence, config.seed),
                interval_words: bootstrap,
                method: format!("paired bootstrap over {n} samples"),
            });
        }
        if let Some(theirs) = champion_samples {
            let raw = difference_interval(
                samples,
                theirs,
                config.resamples,
                config.confidence,
                config.seed,
            );
            return Ok(Evidence {
                gain: absolute_gain(mean(samples), mean(theirs), direction),
                interval: oriented(raw, direction),
                interval_words: bootstrap,
                method: format!(
                    "unpaired bootstrap over {n} candidate and {} champion samples",
                    theirs.len()
                ),
            });
        }
        let Some(reference) = champion_value else {
            return Err(format!(
                "champion version {} has no usable {metric} and no {} series",
                champion.version, config.samples
            ));
        };
        let raw = mean_interval(samples, config.resamples, config.confidence, config.seed);
        let shifted = Interval {
            lower: raw.lower - reference,
            upper: raw.upper - reference,
        };
        return Ok(Evidence {
            gain: absolute_gain(mean(samples), reference, direction),
            interval: oriented(shifted, direction),
            interval_words: bootstrap,
            method: format!("bootstrap over {n} candidate samples against the champion's value"),
        });
    }

    let lower = read_metric(&input.candidate.metrics, &config.interval_lower).finite();
    let upper = read_metric(&input.candidate.metrics, &config.interval_upper).finite();
    let (Some(lower), Some(upper)) = (lower, upper) else {
        return Err(format!(
            "candidate reports neither a {} series nor finite {} and {} metrics",
            config.samples, config.interval_lower, config.interval_upper
        ));
    };
    if lower > upper {
        return Err(format!(
            "candidate's {} ({}) is above its {} ({})",
            config.interval_lower,
            format::number(lower),
            config.interval_upper,
            format::number(upper)
        ));
    }
    let Some(reference) = champion_value else {
        return Err(format!(
            "champion version {} has no usable {metric}",
            champion.version
        ));
    };
    Ok(Evidence {
        gain: absolute_gain(candidate, reference, direction),
        interval: oriented(
            Interval {
                lower: lower - reference,
                upper: upper - reference,
            },
            direction,
        ),
        interval_words: "reported interval".to_string(),
        method: format!(
            "{} to {} against the champion's value",
            config.interval_lower, config.interval_upper
        ),
    })
}

/// An interval of `candidate - champion` as an interval of the gain: the same when higher is
/// better, negated and swapped when lower is better.
fn oriented(interval: Interval, direction: Direction) -> Interval {
    match direction {
        Direction::HigherIsBetter => interval,
        Direction::LowerIsBetter => Interval {
            lower: -interval.upper,
            upper: -interval.lower,
        },
    }
}

policy_kit::export_policy!(Significance);
