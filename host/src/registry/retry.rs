//! Retries of transient failures: the policy (bounded exponential backoff with full jitter and
//! a total time budget), which requests may be repeated, and the retry loop.

use std::fmt;
use std::time::{Duration, Instant};

use reqwest::Method;

use super::{MlflowClient, RegistryError, Result};

/// How transient failures ([`RegistryError::is_transient`]) are retried.
///
/// Which requests are repeated after which failures:
///
/// | request | repeated after |
/// | --- | --- |
/// | any `GET`, artifact `PUT` (overwrites), alias `DELETE` | any transient failure |
/// | `POST` `runs/update`, `runs/log-batch`, `runs/set-tag`, `runs/search`, `model-versions/set-tag`, `model-versions/transition-stage`, `registered-models/alias`, `registered-models/create`, `experiments/create` | any transient failure |
/// | `POST` `runs/create`, `model-versions/create`, and any other `POST` | only a failure that proves the request was not applied (connect error, 429, 503); any other transient failure is [`RegistryError::Ambiguous`] |
///
/// The wait before retry `n` (1 for the first retry) is drawn uniformly from
/// `[0, min(max_backoff, initial_backoff * 2^(n-1))]` ("full jitter"), or is at least the
/// server's `Retry-After` when it sent one. No retry starts once `max_attempts` requests were
/// made, or when its wait would end after `budget` has passed since the first attempt began:
/// a `Retry-After` longer than what is left of the budget ends the retries at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The most requests made for one call, the first included (at least 1).
    pub max_attempts: u32,
    /// The ceiling of the first wait.
    pub initial_backoff: Duration,
    /// The largest ceiling of any wait.
    pub max_backoff: Duration,
    /// The time after which no retry starts, counted from the start of the first attempt.
    pub budget: Duration,
}

impl Default for RetryPolicy {
    /// 5 attempts, backoff from 200 ms up to 5 s, a budget of 60 s.
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            budget: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// No retries: every call makes one request.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The ceiling of the wait before retry `retry` (1 for the first retry).
    pub fn backoff_ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32
            .checked_shl(retry.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }

    /// The wait before retry `retry` (1 for the first retry): uniform in
    /// `[0, backoff_ceiling(retry)]`, and at least `retry_after` when the server sent one.
    pub fn wait_before(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let jittered = self.backoff_ceiling(retry).mul_f64(rand::random::<f64>());
        match retry_after {
            Some(asked) => asked.max(jittered),
            None => jittered,
        }
    }

    fn attempts(&self) -> u32 {
        self.max_attempts.max(1)
    }
}

impl fmt::Display for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "up to {} attempts, backoff {:?} to {:?} with full jitter, budget {:?}",
            self.attempts(),
            self.initial_backoff,
            self.max_backoff,
            self.budget
        )
    }
}

/// Whether repeating `method` on `path` (below `/api/2.0/mlflow/`, or the artifact proxy
/// endpoint) cannot apply a write twice. Unknown `POST`s are taken as not idempotent.
pub(super) fn is_idempotent(method: &Method, path: &str) -> bool {
    if *method == Method::GET || *method == Method::PUT || *method == Method::DELETE {
        return true;
    }
    matches!(
        path,
        "runs/update"
            | "runs/log-batch"
            | "runs/set-tag"
            | "runs/search"
            | "model-versions/set-tag"
            | "model-versions/transition-stage"
            | "registered-models/alias"
            | "registered-models/create"
            | "experiments/create"
    )
}

/// Parses `Retry-After` given in seconds; the HTTP-date form is ignored.
pub(super) fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

impl MlflowClient {
    /// Runs `attempt` until it succeeds, fails in a way that is not transient, or the policy
    /// says stop. A write that is not `idempotent` is repeated only after a failure that
    /// proves it was not applied; any other transient failure becomes
    /// [`RegistryError::Ambiguous`].
    pub(super) async fn retrying<T>(
        &self,
        method: &Method,
        endpoint: &str,
        idempotent: bool,
        mut attempt: impl AsyncFnMut() -> Result<T>,
    ) -> Result<T> {
        let started = Instant::now();
        let max_attempts = self.retry.attempts();
        let mut made = 0u32;
        loop {
            made += 1;
            let err = match attempt().await {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            if !err.is_transient() {
                return Err(err);
            }
            if !idempotent && !err.proves_not_applied() {
                return Err(RegistryError::Ambiguous {
                    server: self.server.clone(),
                    endpoint: endpoint.to_owned(),
                    cause: Box::new(err),
                });
            }
            if made >= max_attempts {
                if max_attempts > 1 {
                    tracing::warn!(
                        %method,
                        endpoint,
                        attempts = made,
                        error = %err,
                        "giving up: the retry limit of {max_attempts} attempts is reached"
                    );
                }
                return Err(err);
            }
            let wait = self.retry.wait_before(made, err.retry_after());
            let elapsed = started.elapsed();
            if elapsed.saturating_add(wait) > self.retry.budget {
                tracing::warn!(
                    %method,
                    endpoint,
                    attempts = made,
                    elapsed_ms = millis(elapsed),
                    wait_ms = millis(wait),
                    error = %err,
                    "giving up: waiting would overrun the retry budget of {:?}",
                    self.retry.budget
                );
                return Err(err);
            }
            tracing::warn!(
                %method,
                endpoint,
                attempt = made,
                max_attempts,
                wait_ms = millis(wait),
                error = %err,
                "transient failure; retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_ceiling_doubles_up_to_the_maximum() {
        let policy = RetryPolicy::default();
        let ceilings: Vec<u128> = (1..=7)
            .map(|n| policy.backoff_ceiling(n).as_millis())
            .collect();
        assert_eq!(ceilings, [200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(policy.backoff_ceiling(200), Duration::from_secs(5));
    }

    #[test]
    fn waits_are_jittered_within_the_ceiling() {
        let policy = RetryPolicy::default();
        let waits: Vec<Duration> = (0..200).map(|_| policy.wait_before(3, None)).collect();
        assert!(waits.iter().all(|w| *w <= Duration::from_millis(800)));
        let distinct: std::collections::HashSet<_> = waits.iter().collect();
        assert!(distinct.len() > 100, "waits are not jittered: {waits:?}");
    }

    #[test]
    fn retry_after_is_a_lower_bound_of_the_wait() {
        let policy = RetryPolicy::default();
        for _ in 0..50 {
            let wait = policy.wait_before(1, Some(Duration::from_secs(2)));
            assert_eq!(wait, Duration::from_secs(2));
        }
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn none_makes_one_attempt() {
        assert_eq!(RetryPolicy::none().attempts(), 1);
        let zero = RetryPolicy {
            max_attempts: 0,
            ..RetryPolicy::default()
        };
        assert_eq!(zero.attempts(), 1);
    }

    #[test]
    fn only_creations_of_runs_and_versions_are_not_idempotent() {
        for path in ["runs/create", "model-versions/create", "something/new"] {
            assert!(!is_idempotent(&Method::POST, path), "{path}");
        }
        for path in [
            "runs/update",
            "runs/log-batch",
            "runs/set-tag",
            "model-versions/set-tag",
            "model-versions/transition-stage",
            "registered-models/alias",
            "registered-models/create",
            "experiments/create",
        ] {
            assert!(is_idempotent(&Method::POST, path), "{path}");
        }
        assert!(is_idempotent(&Method::GET, "runs/get"));
        assert!(is_idempotent(&Method::PUT, "artifacts"));
        assert!(is_idempotent(&Method::DELETE, "registered-models/alias"));
    }
}
