//! Which MLflow tracking server to talk to, and with which credentials.
//!
//! The server is, in order: an explicit URI, the `MLFLOW_TRACKING_URI` environment variable, or
//! the DagsHub MLflow endpoint of a repository (`https://dagshub.com/<owner>/<repo>.mlflow`).
//!
//! The credentials are, in order:
//! 1. a token file (a mounted Kubernetes secret), trailing newline trimmed;
//! 2. `DAGSHUB_USER_TOKEN`, then `MLFLOW_TRACKING_PASSWORD`, as the password of HTTP basic auth,
//!    for the user `MLFLOW_TRACKING_USERNAME` or else the given DagsHub username;
//! 3. `MLFLOW_TRACKING_TOKEN` as a bearer token;
//! 4. a token given on the command line, which the caller must warn about: it is visible to
//!    every user of the machine in the process list.
//!
//! A token from a file, `DAGSHUB_USER_TOKEN` or the command line is sent as the basic-auth
//! password when a user is known, and as a bearer token otherwise; DagsHub accepts both.
//! `MLFLOW_TRACKING_PASSWORD` without a user is an error, as it is for MLflow's own client.
//!
//! Every secret is held in a [`Secret`], whose `Debug` and `Display` print `***`.
//! The environment is passed in as a function so that resolution is a pure function of its
//! inputs.

use std::fmt;
use std::path::{Path, PathBuf};

use reqwest::Url;

/// Environment variable naming the tracking server.
pub const ENV_TRACKING_URI: &str = "MLFLOW_TRACKING_URI";
/// Environment variable holding a DagsHub access token (sent as the basic-auth password).
pub const ENV_DAGSHUB_USER_TOKEN: &str = "DAGSHUB_USER_TOKEN";
/// Environment variable holding the basic-auth password of the tracking server.
pub const ENV_TRACKING_PASSWORD: &str = "MLFLOW_TRACKING_PASSWORD";
/// Environment variable holding the basic-auth user of the tracking server.
pub const ENV_TRACKING_USERNAME: &str = "MLFLOW_TRACKING_USERNAME";
/// Environment variable holding a bearer token for the tracking server.
pub const ENV_TRACKING_TOKEN: &str = "MLFLOW_TRACKING_TOKEN";

/// A secret string (password or token) that never shows itself in logs, errors or `Debug`.
///
/// The only way to read it is [`Secret::expose`], which is meant for building the
/// `Authorization` header and nothing else.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value itself; only for putting it on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

/// How requests to the tracking server authenticate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    /// No `Authorization` header (a local or open server).
    Anonymous,
    /// HTTP basic auth.
    Basic {
        /// The user name, shown in errors.
        user: String,
        /// The password or access token.
        password: Secret,
    },
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// The token.
        token: Secret,
    },
}

impl Auth {
    /// Who the server is told we are, for messages: the basic-auth user, `bearer token` or
    /// `anonymous`. Never the secret.
    pub fn principal(&self) -> &str {
        match self {
            Auth::Anonymous => "anonymous",
            Auth::Basic { user, .. } => user,
            Auth::Bearer { .. } => "bearer token",
        }
    }
}

/// Where the credentials came from, for an info log line and for the caller's warning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialSource {
    /// The token file at this path.
    TokenFile(PathBuf),
    /// An environment variable of this name.
    Env(&'static str),
    /// The command line (visible in the process list).
    CommandLine,
    /// No credentials were found; requests go out anonymous.
    None,
}

impl fmt::Display for CredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialSource::TokenFile(path) => write!(f, "token file {}", path.display()),
            CredentialSource::Env(name) => write!(f, "environment variable {name}"),
            CredentialSource::CommandLine => f.write_str("command line"),
            CredentialSource::None => f.write_str("no credentials"),
        }
    }
}

/// What the caller knows from its flags; every field is optional.
#[derive(Clone, Debug, Default)]
pub struct CredentialRequest {
    /// An explicit tracking server URI (`--tracking-uri`); wins over everything.
    pub tracking_uri: Option<String>,
    /// Owner of the DagsHub repository, to derive the server from.
    pub repo_owner: Option<String>,
    /// Name of the DagsHub repository, to derive the server from.
    pub repo_name: Option<String>,
    /// DagsHub user name, the basic-auth user when `MLFLOW_TRACKING_USERNAME` is unset.
    pub dagshub_user: Option<String>,
    /// Path of a file holding the token (a mounted secret).
    pub token_file: Option<PathBuf>,
    /// A token given on the command line.
    pub cli_token: Option<Secret>,
}

/// The resolved server and credentials.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// Base URL of the tracking server, without credentials and without a trailing slash.
    pub server: Url,
    /// How to authenticate.
    pub auth: Auth,
    /// Where `auth` came from.
    pub source: CredentialSource,
    /// True when the secret came from the command line: the caller must warn that it is
    /// visible in the process list and suggest a token file or environment variable.
    pub token_visible_in_process_list: bool,
}

/// Why the server or the credentials could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// Neither a URI nor a repository was given.
    #[error(
        "no mlflow tracking server: pass a tracking uri, set {ENV_TRACKING_URI}, or give the dagshub repository owner and name"
    )]
    NoServer,
    /// The tracking URI is not an http(s) URL.
    #[error(
        "tracking uri {uri:?} is not usable: {reason}; give the http(s) url of an mlflow tracking server"
    )]
    InvalidServer {
        /// The offending URI (with any embedded credentials removed).
        uri: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The tracking URI carries a user name or password.
    #[error(
        "tracking uri {uri} embeds credentials; remove them and pass the password through a token file or {ENV_TRACKING_PASSWORD}"
    )]
    CredentialsInUri {
        /// The URI with the credentials removed.
        uri: String,
    },
    /// The token file could not be read.
    #[error("cannot read token file {}: {error}; check that the secret is mounted there", path.display())]
    TokenFile {
        /// The path of the token file.
        path: PathBuf,
        /// The underlying error, which the message includes.
        error: std::io::Error,
    },
    /// The token file or an environment variable is empty.
    #[error("{origin} is empty; put the access token there or unset it")]
    EmptySecret {
        /// Where the empty secret came from.
        origin: CredentialSource,
    },
    /// A basic-auth password was found but no user to go with it.
    #[error(
        "{ENV_TRACKING_PASSWORD} is set but no user is known; set {ENV_TRACKING_USERNAME} or give the dagshub username"
    )]
    MissingUser,
}

/// Resolves the server and credentials from the caller's flags and an environment lookup.
///
/// `env` returns the value of an environment variable, or `None` when it is unset; an
/// environment variable set to the empty string counts as unset, except that an empty secret
/// variable is an error rather than a silent fall-through to weaker credentials.
pub fn resolve(
    request: &CredentialRequest,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Credentials, CredentialsError> {
    let server = resolve_server(request, &env)?;
    let (auth, source) = resolve_auth(request, &env)?;
    let token_visible_in_process_list = source == CredentialSource::CommandLine;
    Ok(Credentials {
        server,
        auth,
        source,
        token_visible_in_process_list,
    })
}

/// Resolves only the tracking server: explicit URI, `MLFLOW_TRACKING_URI`, or the DagsHub
/// repository.
pub fn resolve_server(
    request: &CredentialRequest,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Url, CredentialsError> {
    let explicit =
        non_empty(request.tracking_uri.clone()).or_else(|| non_empty(env(ENV_TRACKING_URI)));
    let uri = match explicit {
        Some(uri) => uri,
        None => match (
            non_empty(request.repo_owner.clone()),
            non_empty(request.repo_name.clone()),
        ) {
            (Some(owner), Some(repo)) => format!("https://dagshub.com/{owner}/{repo}.mlflow"),
            _ => return Err(CredentialsError::NoServer),
        },
    };
    parse_server(&uri)
}

fn parse_server(uri: &str) -> Result<Url, CredentialsError> {
    let mut url = Url::parse(uri.trim()).map_err(|err| CredentialsError::InvalidServer {
        uri: uri.to_owned(),
        reason: err.to_string(),
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        // Neither setter can fail on an http(s) URL with a host, which `parse` just gave us
        // when it found credentials in it.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        return Err(CredentialsError::CredentialsInUri {
            uri: url.to_string(),
        });
    }
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(CredentialsError::InvalidServer {
            uri: url.to_string(),
            reason: format!("scheme {:?} is not http or https", url.scheme()),
        });
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(CredentialsError::InvalidServer {
            uri: url.to_string(),
            reason: "it has a query or fragment".to_owned(),
        });
    }
    let trimmed = url.path().trim_end_matches('/').to_owned();
    url.set_path(&trimmed);
    Ok(url)
}

fn resolve_auth(
    request: &CredentialRequest,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(Auth, CredentialSource), CredentialsError> {
    let user =
        non_empty(env(ENV_TRACKING_USERNAME)).or_else(|| non_empty(request.dagshub_user.clone()));

    if let Some(path) = &request.token_file {
        let source = CredentialSource::TokenFile(path.clone());
        let token = read_token_file(path)?;
        if token.is_empty() {
            return Err(CredentialsError::EmptySecret { origin: source });
        }
        return Ok((basic_or_bearer(user, token), source));
    }

    for name in [ENV_DAGSHUB_USER_TOKEN, ENV_TRACKING_PASSWORD] {
        if let Some(value) = env(name) {
            let source = CredentialSource::Env(name);
            if value.is_empty() {
                return Err(CredentialsError::EmptySecret { origin: source });
            }
            let password = Secret::new(value);
            return match (user, name) {
                (Some(user), _) => Ok((Auth::Basic { user, password }, source)),
                (None, ENV_DAGSHUB_USER_TOKEN) => Ok((Auth::Bearer { token: password }, source)),
                (None, _) => Err(CredentialsError::MissingUser),
            };
        }
    }

    if let Some(value) = env(ENV_TRACKING_TOKEN) {
        let source = CredentialSource::Env(ENV_TRACKING_TOKEN);
        if value.is_empty() {
            return Err(CredentialsError::EmptySecret { origin: source });
        }
        return Ok((
            Auth::Bearer {
                token: Secret::new(value),
            },
            source,
        ));
    }

    if let Some(token) = &request.cli_token {
        let source = CredentialSource::CommandLine;
        if token.is_empty() {
            return Err(CredentialsError::EmptySecret { origin: source });
        }
        return Ok((basic_or_bearer(user, token.clone()), source));
    }

    Ok((Auth::Anonymous, CredentialSource::None))
}

fn read_token_file(path: &Path) -> Result<Secret, CredentialsError> {
    let mut contents =
        std::fs::read_to_string(path).map_err(|source| CredentialsError::TokenFile {
            path: path.to_owned(),
            error: source,
        })?;
    let trimmed_len = contents.trim_end_matches(['\n', '\r']).len();
    contents.truncate(trimmed_len);
    Ok(Secret::new(contents))
}

fn basic_or_bearer(user: Option<String>, secret: Secret) -> Auth {
    match user {
        Some(user) => Auth::Basic {
            user,
            password: secret,
        },
        None => Auth::Bearer { token: secret },
    }
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io::Write;

    use super::*;

    const TOKEN: &str = "s3cr3t-token-value";

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn repo_request() -> CredentialRequest {
        CredentialRequest {
            repo_owner: Some("acme".into()),
            repo_name: Some("churn".into()),
            ..Default::default()
        }
    }

    fn token_file(contents: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(contents.as_bytes()).unwrap();
        file
    }

    #[test]
    fn explicit_uri_wins_over_env_and_repo() {
        let request = CredentialRequest {
            tracking_uri: Some("http://127.0.0.1:5000/".into()),
            ..repo_request()
        };
        let creds = resolve(&request, env_of(&[(ENV_TRACKING_URI, "http://env:1")])).unwrap();
        assert_eq!(creds.server.as_str(), "http://127.0.0.1:5000/");
    }

    #[test]
    fn env_uri_wins_over_repo() {
        let creds = resolve(
            &repo_request(),
            env_of(&[(ENV_TRACKING_URI, "https://mlflow.example.com/base/")]),
        )
        .unwrap();
        assert_eq!(creds.server.as_str(), "https://mlflow.example.com/base");
    }

    #[test]
    fn repo_gives_the_dagshub_endpoint() {
        let creds = resolve(&repo_request(), env_of(&[])).unwrap();
        assert_eq!(
            creds.server.as_str(),
            "https://dagshub.com/acme/churn.mlflow"
        );
    }

    #[test]
    fn no_uri_and_no_repo_is_an_error_that_says_what_to_do() {
        let err = resolve(&CredentialRequest::default(), env_of(&[])).unwrap_err();
        assert!(matches!(err, CredentialsError::NoServer));
        assert!(err.to_string().contains(ENV_TRACKING_URI));
    }

    #[test]
    fn non_http_uri_is_rejected() {
        let request = CredentialRequest {
            tracking_uri: Some("file:///tmp/mlruns".into()),
            ..Default::default()
        };
        let err = resolve(&request, env_of(&[])).unwrap_err();
        assert!(
            matches!(err, CredentialsError::InvalidServer { .. }),
            "{err}"
        );
    }

    #[test]
    fn uri_with_embedded_password_is_rejected_without_echoing_it() {
        let request = CredentialRequest {
            tracking_uri: Some(format!("https://bob:{TOKEN}@mlflow.example.com")),
            ..Default::default()
        };
        let err = resolve(&request, env_of(&[])).unwrap_err();
        assert!(matches!(err, CredentialsError::CredentialsInUri { .. }));
        assert!(!err.to_string().contains(TOKEN), "{err}");
        assert!(!format!("{err:?}").contains(TOKEN), "{err:?}");
    }

    #[test]
    fn token_file_wins_over_every_env_variable_and_loses_its_trailing_newline() {
        let file = token_file(&format!("{TOKEN}\n"));
        let request = CredentialRequest {
            token_file: Some(file.path().to_owned()),
            cli_token: Some(Secret::new("cli")),
            dagshub_user: Some("alice".into()),
            ..repo_request()
        };
        let env = env_of(&[
            (ENV_DAGSHUB_USER_TOKEN, "dagshub"),
            (ENV_TRACKING_PASSWORD, "password"),
            (ENV_TRACKING_TOKEN, "bearer"),
        ]);
        let creds = resolve(&request, env).unwrap();
        assert_eq!(
            creds.auth,
            Auth::Basic {
                user: "alice".into(),
                password: Secret::new(TOKEN)
            }
        );
        assert_eq!(
            creds.source,
            CredentialSource::TokenFile(file.path().to_owned())
        );
        assert!(!creds.token_visible_in_process_list);
    }

    #[test]
    fn token_file_without_a_user_is_a_bearer_token() {
        let file = token_file(TOKEN);
        let request = CredentialRequest {
            token_file: Some(file.path().to_owned()),
            ..repo_request()
        };
        let creds = resolve(&request, env_of(&[])).unwrap();
        assert_eq!(
            creds.auth,
            Auth::Bearer {
                token: Secret::new(TOKEN)
            }
        );
    }

    #[test]
    fn missing_token_file_is_an_error_naming_the_path() {
        let request = CredentialRequest {
            token_file: Some("/nonexistent/secret/token".into()),
            ..repo_request()
        };
        let err = resolve(&request, env_of(&[])).unwrap_err();
        assert!(matches!(err, CredentialsError::TokenFile { .. }));
        assert!(
            err.to_string().contains("/nonexistent/secret/token"),
            "{err}"
        );
    }

    #[test]
    fn empty_token_file_is_an_error() {
        let file = token_file("\n");
        let request = CredentialRequest {
            token_file: Some(file.path().to_owned()),
            ..repo_request()
        };
        let err = resolve(&request, env_of(&[])).unwrap_err();
        assert!(matches!(err, CredentialsError::EmptySecret { .. }), "{err}");
    }

    #[test]
    fn dagshub_token_wins_over_tracking_password_and_bearer_token() {
        let env = env_of(&[
            (ENV_DAGSHUB_USER_TOKEN, TOKEN),
            (ENV_TRACKING_PASSWORD, "password"),
            (ENV_TRACKING_TOKEN, "bearer"),
            (ENV_TRACKING_USERNAME, "bob"),
        ]);
        let creds = resolve(&repo_request(), env).unwrap();
        assert_eq!(
            creds.auth,
            Auth::Basic {
                user: "bob".into(),
                password: Secret::new(TOKEN)
            }
        );
        assert_eq!(creds.source, CredentialSource::Env(ENV_DAGSHUB_USER_TOKEN));
    }

    #[test]
    fn dagshub_token_without_a_user_is_a_bearer_token() {
        let creds = resolve(&repo_request(), env_of(&[(ENV_DAGSHUB_USER_TOKEN, TOKEN)])).unwrap();
        assert_eq!(
            creds.auth,
            Auth::Bearer {
                token: Secret::new(TOKEN)
            }
        );
    }

    #[test]
    fn tracking_username_wins_over_the_dagshub_user() {
        let request = CredentialRequest {
            dagshub_user: Some("alice".into()),
            ..repo_request()
        };
        let env = env_of(&[
            (ENV_TRACKING_PASSWORD, TOKEN),
            (ENV_TRACKING_USERNAME, "bob"),
        ]);
        let creds = resolve(&request, env).unwrap();
        assert_eq!(creds.auth.principal(), "bob");
    }

    #[test]
    fn tracking_password_uses_the_dagshub_user_when_no_username_is_set() {
        let request = CredentialRequest {
            dagshub_user: Some("alice".into()),
            ..repo_request()
        };
        let creds = resolve(&request, env_of(&[(ENV_TRACKING_PASSWORD, TOKEN)])).unwrap();
        assert_eq!(
            creds.auth,
            Auth::Basic {
                user: "alice".into(),
                password: Secret::new(TOKEN)
            }
        );
        assert_eq!(creds.source, CredentialSource::Env(ENV_TRACKING_PASSWORD));
    }

    #[test]
    fn tracking_password_without_any_user_is_an_error() {
        let err = resolve(&repo_request(), env_of(&[(ENV_TRACKING_PASSWORD, TOKEN)])).unwrap_err();
        assert!(matches!(err, CredentialsError::MissingUser));
        assert!(err.to_string().contains(ENV_TRACKING_USERNAME), "{err}");
    }

    #[test]
    fn empty_password_variable_is_an_error_not_a_fall_through() {
        let env = env_of(&[(ENV_TRACKING_PASSWORD, ""), (ENV_TRACKING_TOKEN, "bearer")]);
        let err = resolve(&repo_request(), env).unwrap_err();
        assert!(matches!(err, CredentialsError::EmptySecret { .. }), "{err}");
    }

    #[test]
    fn bearer_token_env_wins_over_the_command_line() {
        let request = CredentialRequest {
            cli_token: Some(Secret::new("cli")),
            ..repo_request()
        };
        let creds = resolve(&request, env_of(&[(ENV_TRACKING_TOKEN, TOKEN)])).unwrap();
        assert_eq!(
            creds.auth,
            Auth::Bearer {
                token: Secret::new(TOKEN)
            }
        );
        assert_eq!(creds.source, CredentialSource::Env(ENV_TRACKING_TOKEN));
        assert!(!creds.token_visible_in_process_list);
    }

    #[test]
    fn command_line_token_is_the_last_resort_and_is_flagged_as_visible() {
        let request = CredentialRequest {
            cli_token: Some(Secret::new(TOKEN)),
            dagshub_user: Some("alice".into()),
            ..repo_request()
        };
        let creds = resolve(&request, env_of(&[])).unwrap();
        assert_eq!(creds.source, CredentialSource::CommandLine);
        assert!(creds.token_visible_in_process_list);
        assert_eq!(creds.auth.principal(), "alice");
    }

    #[test]
    fn no_credentials_at_all_is_anonymous() {
        let creds = resolve(&repo_request(), env_of(&[])).unwrap();
        assert_eq!(creds.auth, Auth::Anonymous);
        assert_eq!(creds.source, CredentialSource::None);
    }

    #[test]
    fn secret_prints_stars_in_debug_and_display() {
        let secret = Secret::new(TOKEN);
        assert_eq!(format!("{secret}"), "***");
        assert_eq!(format!("{secret:?}"), "***");
        assert_eq!(secret.expose(), TOKEN);
    }

    #[test]
    fn resolved_credentials_debug_never_shows_the_secret() {
        let request = CredentialRequest {
            cli_token: Some(Secret::new(TOKEN)),
            dagshub_user: Some("alice".into()),
            ..repo_request()
        };
        let creds = resolve(&request, env_of(&[])).unwrap();
        let debug = format!("{creds:?}");
        assert!(!debug.contains(TOKEN), "{debug}");
        assert!(debug.contains("alice"), "{debug}");
    }
}
