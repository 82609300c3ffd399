//! Real `mlflow server` processes for integration tests.
//!
//! Each [`Flavor`] is one server on a free loopback port with a temporary sqlite backend store
//! and a temporary artifact directory served through the artifact proxy. [`shared`] starts
//! one server per flavor for the whole test binary; tests share it and keep out of each
//! other's way by using [`unique_name`]s.
//!
//! The server runs under a small `sh` supervisor in its own process group. The supervisor
//! holds the read end of a pipe whose write end only this process holds; when this process
//! exits — normally, by panic or by SIGKILL — the pipe closes and the supervisor kills the
//! whole group (the `mlflow` CLI, its uvicorn/gunicorn server and any helper processes).
//! `prctl(PR_SET_PDEATHSIG)` would not do: it fires when the spawning *thread* ends (each
//! test is a thread) and it is not inherited by the CLI's own children.
//!
//! The `mlflow` executables come from `MODEL_PUSHER_MLFLOW3` and `MODEL_PUSHER_MLFLOW2`,
//! defaulting to the virtualenvs `.venv` and `.venv-mlflow2` at the workspace root. A missing
//! executable is a panic that says how to create it.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use model_pusher::credentials::{Auth, Secret};
use model_pusher::registry::MlflowClient;
use reqwest::Url;

/// The admin user of the basic-auth server.
pub const ADMIN_USER: &str = "admin";
/// The admin password of the basic-auth server (MLflow wants 12 characters or more).
pub const ADMIN_PASSWORD: &str = "correct-horse-battery-staple";

/// How long a server may take to answer `/health`.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// Which server to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// MLflow 3.17.2, no authentication.
    Mlflow3,
    /// MLflow 2.22.2 (what DagsHub runs), no authentication.
    Mlflow2,
    /// MLflow 3.17.2 with `--app-name basic-auth`; the admin is [`ADMIN_USER`].
    BasicAuth,
}

impl Flavor {
    fn executable(self) -> PathBuf {
        let (var, venv, install) = match self {
            Flavor::Mlflow3 | Flavor::BasicAuth => (
                "MODEL_PUSHER_MLFLOW3",
                ".venv",
                "python3 -m venv .venv && .venv/bin/pip install 'mlflow[auth]==3.17.2' scikit-learn",
            ),
            Flavor::Mlflow2 => (
                "MODEL_PUSHER_MLFLOW2",
                ".venv-mlflow2",
                "python3 -m venv .venv-mlflow2 && .venv-mlflow2/bin/pip install 'mlflow[auth]==2.22.2' 'sqlalchemy<2.1'",
            ),
        };
        let path = std::env::var_os(var)
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join(venv).join("bin").join("mlflow"));
        if !path.is_file() {
            panic!(
                "the {self:?} tests need an mlflow executable at {} (set {var} to use another); \
                 create it from the workspace root with: {install}",
                path.display()
            );
        }
        path
    }
}

/// A running `mlflow server`, killed (with its whole process group) on drop.
pub struct MlflowServer {
    flavor: Flavor,
    url: Url,
    child: Child,
    /// Closing this makes the supervisor kill the process group.
    lifeline: Option<ChildStdin>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// The server of this flavor shared by all tests of the binary, started on first use.
pub fn shared(flavor: Flavor) -> &'static MlflowServer {
    static MLFLOW3: OnceLock<MlflowServer> = OnceLock::new();
    static MLFLOW2: OnceLock<MlflowServer> = OnceLock::new();
    static BASIC_AUTH: OnceLock<MlflowServer> = OnceLock::new();
    let cell = match flavor {
        Flavor::Mlflow3 => &MLFLOW3,
        Flavor::Mlflow2 => &MLFLOW2,
        Flavor::BasicAuth => &BASIC_AUTH,
    };
    cell.get_or_init(|| MlflowServer::start(flavor))
}

/// A name no other test in this run uses, e.g. `churn-41231-7`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    format!(
        "{prefix}-{}-{millis}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

impl MlflowServer {
    /// Starts a server of this flavor and waits until it answers `/health`.
    pub fn start(flavor: Flavor) -> Self {
        let mlflow = flavor.executable();
        let dir = tempfile::Builder::new()
            .prefix("mlflow-server-")
            .tempdir()
            .expect("create a temp dir for the mlflow server");
        let artifacts = dir.path().join("artifacts");
        fs::create_dir_all(&artifacts).expect("create the artifact dir");
        let port = free_port();
        let log = dir.path().join("server.log");
        let log_file = File::create(&log).expect("create the server log");

        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(SUPERVISOR)
            .arg("mlflow-supervisor")
            .arg(&mlflow)
            .arg("server")
            .arg("--backend-store-uri")
            .arg(format!(
                "sqlite:///{}",
                dir.path().join("mlflow.db").display()
            ))
            .arg("--serve-artifacts")
            .arg("--artifacts-destination")
            .arg(&artifacts)
            .arg("--host")
            .arg("127.0.0.1")
            .arg("--port")
            .arg(port.to_string())
            .arg("--workers")
            .arg("1")
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::from(
                log_file.try_clone().expect("clone the log handle"),
            ))
            .stderr(Stdio::from(log_file))
            .process_group(0);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("MLFLOW_") {
                command.env_remove(key);
            }
        }
        // MLflow 3 starts a pool of job-runner processes by default; the registry needs none.
        command.env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false");
        if flavor == Flavor::BasicAuth {
            let config = dir.path().join("basic_auth.ini");
            fs::write(
                &config,
                format!(
                    "[mlflow]\n\
                     default_permission = READ\n\
                     database_uri = sqlite:///{}\n\
                     admin_username = {ADMIN_USER}\n\
                     admin_password = {ADMIN_PASSWORD}\n\
                     authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n",
                    dir.path().join("auth.db").display()
                ),
            )
            .expect("write the auth config");
            command
                .arg("--app-name")
                .arg("basic-auth")
                .env("MLFLOW_AUTH_CONFIG_PATH", &config)
                .env(
                    "MLFLOW_FLASK_SERVER_SECRET_KEY",
                    "model-pusher-test-secret-key",
                );
        }

        let mut child = command
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", mlflow.display()));
        let lifeline = child.stdin.take();
        let url = Url::parse(&format!("http://127.0.0.1:{port}")).expect("a loopback url");
        let mut server = MlflowServer {
            flavor,
            url,
            child,
            lifeline,
            log,
            _dir: dir,
        };
        server.wait_healthy(port);
        server
    }

    /// The server's base URL.
    pub fn url(&self) -> Url {
        self.url.clone()
    }

    /// A client with the credentials this server accepts (the admin for basic auth).
    pub fn client(&self) -> MlflowClient {
        let auth = match self.flavor {
            Flavor::BasicAuth => Auth::Basic {
                user: ADMIN_USER.to_owned(),
                password: Secret::new(ADMIN_PASSWORD),
            },
            Flavor::Mlflow3 | Flavor::Mlflow2 => Auth::Anonymous,
        };
        self.client_with(auth)
    }

    /// A client of this server with the given credentials.
    pub fn client_with(&self, auth: Auth) -> MlflowClient {
        MlflowClient::new(self.url(), auth).expect("a client of a loopback url")
    }

    /// The last lines the server wrote.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn wait_healthy(&mut self, port: u16) {
        let started = Instant::now();
        loop {
            if health_ok(port) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "mlflow server ({:?}) exited with {status} before answering /health; \
                     its output ends with:\n{}",
                    self.flavor,
                    self.log_tail()
                );
            }
            if started.elapsed() > START_TIMEOUT {
                panic!(
                    "mlflow server ({:?}) on port {port} did not answer /health within {:?}; \
                     its output ends with:\n{}",
                    self.flavor,
                    START_TIMEOUT,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for MlflowServer {
    fn drop(&mut self) {
        // Closing the lifeline makes the supervisor SIGKILL the process group.
        drop(self.lifeline.take());
        let _ = self.child.wait();
    }
}

/// `sh -c` script: runs `"$@"` (the mlflow command) in the background and kills the whole
/// process group when its stdin (the lifeline) reaches end of file or when the server exits.
/// An asynchronous list gets /dev/null as stdin, hence the copy of stdin on fd 3.
const SUPERVISOR: &str = r#"
exec 3<&0
"$@" </dev/null 3<&- &
server=$!
{ read -r line <&3; kill -KILL 0; } &
wait "$server"
status=$?
echo "mlflow server exited with status $status" >&2
kill -KILL 0
"#;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a free loopback port")
}

fn health_ok(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET /health HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200")
}

pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the host crate lives in the workspace root")
}
