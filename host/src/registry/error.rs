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
    },
    /// The request did not get an answer (connection refused, TLS, timeout, ...).
    #[error(
        "could not reach {server} ({endpoint}): {source}; check the tracking uri and the network"
    )]
    Transport {
        /// The tracking server.
        server: String,
        /// The endpoint called.
        endpoint: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
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
    #[error("cannot build the http client: {0}")]
    Client(#[source] reqwest::Error),
    /// A local file to upload could not be read.
    #[error("cannot read {}: {source}", path.display())]
    LocalFile {
        /// The local path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
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

    /// MLflow's `error_code`, when the server sent one.
    pub fn error_code(&self) -> Option<&str> {
        match self {
            RegistryError::NotFound { .. } => Some("RESOURCE_DOES_NOT_EXIST"),
            RegistryError::Server { error_code, .. } => error_code.as_deref(),
            _ => None,
        }
    }
}
