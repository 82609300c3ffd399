//! Real `mlflow server` processes for integration tests.
//!
//! Each [`Flavor`] is one server on a free loopback port with a fresh backend store (a temporary
//! sqlite file, or a new database in the PostgreSQL cluster that `scripts/postgres.sh` runs) and
//! a temporary artifact directory served through the artifact proxy. [`shared`] starts
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

use std::fs;
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
    /// MLflow 3.17.2, no authentication, with a PostgreSQL backend store: a new database in the
    /// cluster at [`postgres_url`].
    Postgres,
}

impl Flavor {
    fn executable(self) -> PathBuf {
        let (var, venv, install) = match self {
            Flavor::Mlflow3 | Flavor::BasicAuth | Flavor::Postgres => (
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
    port: u16,
    backend: String,
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
    static POSTGRES: OnceLock<MlflowServer> = OnceLock::new();
    let cell = match flavor {
        Flavor::Mlflow3 => &MLFLOW3,
        Flavor::Mlflow2 => &MLFLOW2,
        Flavor::BasicAuth => &BASIC_AUTH,
        Flavor::Postgres => &POSTGRES,
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
        let dir = tempfile::Builder::new()
            .prefix("mlflow-server-")
            .tempdir()
            .expect("create a temp dir for the mlflow server");
        fs::create_dir_all(dir.path().join("artifacts")).expect("create the artifact dir");
        let backend = match flavor {
            Flavor::Postgres => create_database(),
            Flavor::Mlflow3 | Flavor::Mlflow2 | Flavor::BasicAuth => {
                format!("sqlite:///{}", dir.path().join("mlflow.db").display())
            }
        };
        let port = free_port();
        let log = dir.path().join("server.log");
        let (child, lifeline) = spawn(flavor, dir.path(), &backend, port, &log);
        let url = Url::parse(&format!("http://127.0.0.1:{port}")).expect("a loopback url");
        let mut server = MlflowServer {
            flavor,
            url,
            port,
            backend,
            child,
            lifeline,
            log,
            _dir: dir,
        };
        server.wait_healthy();
        server
    }

    /// Kills the server, as a crash would, and leaves it down: requests are refused until
    /// [`MlflowServer::restart`].
    pub fn kill(&mut self) {
        drop(self.lifeline.take());
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port, store and artifacts, and waits until it
    /// answers `/health`.
    pub fn restart(&mut self) {
        self.kill();
        let (child, lifeline) = spawn(
            self.flavor,
            self._dir.path(),
            &self.backend,
            self.port,
            &self.log,
        );
        self.child = child;
        self.lifeline = lifeline;
        self.wait_healthy();
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
            Flavor::Mlflow3 | Flavor::Mlflow2 | Flavor::Postgres => Auth::Anonymous,
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

    fn wait_healthy(&mut self) {
        let port = self.port;
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
        self.kill();
    }
}

/// Starts `mlflow server` for `flavor` under the supervisor, with its state in `dir`, and
/// returns the supervisor and the write end of its lifeline.
fn spawn(
    flavor: Flavor,
    dir: &Path,
    backend: &str,
    port: u16,
    log: &Path,
) -> (Child, Option<ChildStdin>) {
    let mlflow = flavor.executable();
    let log_file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("open the server log");
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(SUPERVISOR)
        .arg("mlflow-supervisor")
        .arg(&mlflow)
        .arg("server")
        .arg("--backend-store-uri")
        .arg(backend)
        .arg("--serve-artifacts")
        .arg("--artifacts-destination")
        .arg(dir.join("artifacts"))
        .arg("--host")
        .arg("127.0.0.1")
        .arg("--port")
        .arg(port.to_string())
        .arg("--workers")
        .arg("1")
        .current_dir(dir)
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
        let config = dir.join("basic_auth.ini");
        fs::write(
            &config,
            format!(
                "[mlflow]\n\
                 default_permission = READ\n\
                 database_uri = sqlite:///{}\n\
                 admin_username = {ADMIN_USER}\n\
                 admin_password = {ADMIN_PASSWORD}\n\
                 authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n",
                dir.join("auth.db").display()
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
    (child, lifeline)
}

/// The PostgreSQL cluster the [`Flavor::Postgres`] servers keep their stores in:
/// `MODEL_PUSHER_POSTGRES_URL`, else the one `scripts/postgres.sh` runs.
pub fn postgres_url() -> String {
    std::env::var("MODEL_PUSHER_POSTGRES_URL")
        .unwrap_or_else(|_| "postgresql://mlflow@127.0.0.1:54329".to_owned())
}

/// Creates an empty database in the cluster at [`postgres_url`] and returns its URL.
fn create_database() -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "mlflow_{}_{}_{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let cluster = postgres_url();
    let output = Command::new("psql")
        .arg(format!("{cluster}/postgres"))
        .args(["--no-psqlrc", "--quiet", "--command"])
        .arg(format!("CREATE DATABASE {name}"))
        .output();
    match output {
        // SQLAlchemy's default driver for `postgresql://` is psycopg 3; MLflow's documented
        // one, installed by scripts/setup.sh, is psycopg2.
        Ok(output) if output.status.success() => format!(
            "{}/{name}",
            cluster.replacen("postgresql://", "postgresql+psycopg2://", 1)
        ),
        Ok(output) => panic!(
            "the Postgres tests need the PostgreSQL cluster at {cluster}, which refused to \
             create a database: {}\nstart it with: scripts/postgres.sh start \
             (scripts/setup.sh installs PostgreSQL), or set MODEL_PUSHER_POSTGRES_URL",
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        Err(err) => panic!(
            "the Postgres tests need psql ({err}): install PostgreSQL with scripts/setup.sh, \
             then start the cluster with scripts/postgres.sh start"
        ),
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
