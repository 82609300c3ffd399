//! Errors of the MLflow client. Their messages name the endpoint and the server and never
//! contain a credential.

use std::path::PathBuf;
use std::time::Duration;

/// Why a call to the MLflow tracking server failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The server answered 401 or 403.
    #[error(
        "authentication to {server} failed for user {user}: {endpoint} answered http {status}; check the token or password and the user's permissions"
    )]
    Unauthorized {
        /// The tracking server.
        server: String,
        /// Who we said we were (never the secret).
        user: String,
        /// The endpoint that refused.
        endpoint: String,
        /// 401 or 403.
        status: u16,
    },
    /// The server says the thing asked for does not exist (`RESOURCE_DOES_NOT_EXIST`).
    #[error("not found: {endpoint} on {server} answered: {message}")]
    NotFound {
        /// The tracking server.
        server: String,
        /// The endpoint called.
        endpoint: String,
        /// MLflow's message.
        message: String,
    },
    /// Any other non-success answer; `body_excerpt` says when the body was not JSON, as for
    /// a route the server does not know (MLflow answers those with an HTML 404 page).
    #[error("{endpoint} on {server} failed with http {status}: {body_excerpt}")]
    Server {
        /// The tracking server.
        server: String,
        /// The endpoint called.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// MLflow's `error_code`, when the body was MLflow's JSON error.
        error_code: Option<String>,
        /// MLflow's message, or the start of a non-JSON body with a hint.
        body_excerpt: String,
        /// How long the server asked us to wait (`Retry-After` in seconds), when it said.
        retry_after: Option<Duration>,
    },
    /// The request did not get an answer (connection refused, TLS, timeout, ...).
    #[error(
        "could not reach {server} ({endpoint}): {}; check the tracking uri and the network",
        describe(error)
    )]
    Transport {
        /// The tracking server.
        server: String,
        /// The endpoint called.
        endpoint: String,
        /// The client's error. Its causes are in the message, so it is not reported as the
        /// error's source: a chain printer would repeat them.
        error: reqwest::Error,
    },
    /// A write that is not idempotent (`runs/create`, `model-versions/create`) failed in a way
    /// that does not say whether the server applied it (a reset after the request was sent, a
    /// timeout, a 502 or 504 from a gateway). It is not repeated blindly: check whether the
    /// write happened (e.g. search for the run or version by its tags) before repeating it.
    #[error("{endpoint} on {server} may or may not have been applied: {cause}; re-run to resume")]
    Ambiguous {
        /// The tracking server.
        server: String,
        /// The endpoint called.
        endpoint: String,
        /// The failure of the last attempt, which the message includes.
        cause: Box<RegistryError>,
    },
    /// A success answer that is not the JSON expected.
    #[error(
        "unexpected answer from {endpoint} on {server}: {detail}; check that the tracking uri points at an mlflow 2.x or 3.x server"
    )]
    Decode {
        /// The tracking server.
        server: String,
        /// The endpoint called.
        endpoint: String,
        /// What was wrong.
        detail: String,
    },
    /// The tracking URI cannot be used as a base for API paths.
    #[error("tracking uri {server} cannot be used as a base url; give an http(s) url")]
    InvalidServer {
        /// The tracking server.
        server: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the http client: {}", describe(.0))]
    Client(reqwest::Error),
    /// A local file to upload could not be read.
    #[error("cannot read {}: {error}", path.display())]
    LocalFile {
        /// The local path.
        path: PathBuf,
        /// The underlying error, which the message includes.
        error: std::io::Error,
    },
    /// An artifact path is empty, absolute or climbs out with `..`.
    #[error(
        "invalid artifact path {path:?}: use a relative path of plain segments separated by '/'"
    )]
    InvalidArtifactPath {
        /// The offending path.
        path: String,
    },
    /// The run's artifacts are not served through the tracking server's artifact proxy.
    #[error(
        "run {run_id} stores artifacts at {artifact_uri}, which {server} does not proxy; start the server with --serve-artifacts (artifact uri mlflow-artifacts:/...)"
    )]
    UnsupportedArtifactUri {
        /// The tracking server.
        server: String,
        /// The run.
        run_id: String,
        /// The run's artifact URI.
        artifact_uri: String,
    },
    /// A model version's registration failed on the server.
    #[error("model version {name} v{version} failed to register on {server}: {message}")]
    RegistrationFailed {
        /// The tracking server.
        server: String,
        /// The registered model.
        name: String,
        /// The version.
        version: String,
        /// The server's status message.
        message: String,
    },
    /// A model version did not become READY in time.
    #[error(
        "model version {name} v{version} on {server} was not ready after {waited:?} (status {status}); retry later or raise the timeout"
    )]
    NotReady {
        /// The tracking server.
        server: String,
        /// The registered model.
        name: String,
        /// The version.
        version: String,
        /// How long we waited.
        waited: Duration,
        /// The last status seen.
        status: String,
    },
}

impl RegistryError {
    /// Whether this is a [`RegistryError::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, RegistryError::NotFound { .. })
    }

    /// Whether the failure is transient: asking again later may succeed. True for a request
    /// that got no (complete) answer — connect errors, timeouts, a connection reset or closed
    /// before or during the answer — and for http 429, 502, 503 and 504 (also when a proxy
    /// answered them with html). False for everything else, including http 500 (an mlflow
    /// error, often deterministic), a success answer that is not json, and
    /// [`RegistryError::Ambiguous`], whose write must be checked before it is repeated.
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Transport { error, .. } => !(error.is_builder() || error.is_redirect()),
            RegistryError::Server { status, .. } => matches!(status, 429 | 502 | 503 | 504),
            _ => false,
        }
    }

    /// Whether this is a [`RegistryError::Ambiguous`]: a write that may have been applied.
    pub fn is_ambiguous(&self) -> bool {
        matches!(self, RegistryError::Ambiguous { .. })
    }

    /// Whether the failure proves that the server did not apply the request: the connection
    /// could not be made (so nothing was sent), or the server refused it with http 429 or 503.
    /// Only such failures are retried for writes that are not idempotent.
    pub(crate) fn proves_not_applied(&self) -> bool {
        match self {
            RegistryError::Transport { error, .. } => error.is_connect(),
            RegistryError::Server { status, .. } => matches!(status, 429 | 503),
            _ => false,
        }
    }

    /// The wait the server asked for with `Retry-After`, when it did.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            RegistryError::Server { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// MLflow's `error_code`, when the server sent one.
    pub fn error_code(&self) -> Option<&str> {
        match self {
            RegistryError::NotFound { .. } => Some("RESOURCE_DOES_NOT_EXIST"),
            RegistryError::Server { error_code, .. } => error_code.as_deref(),
            _ => None,
        }
    }
}

/// A client error with its causes, most general first: reqwest's own message ("error sending
/// request for url ...") says nothing of why, which its causes do ("connection refused").
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(inner) = cause {
        let inner_text = inner.to_string();
        if !text.contains(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        cause = inner.source();
    }
    text
}
