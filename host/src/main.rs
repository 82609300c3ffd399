//! The `model-pusher` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use model_pusher::cases;
use model_pusher::credentials::{self, CredentialRequest, Secret};
use model_pusher::inputs::{self, Metrics, ModelDir, Settings};
use model_pusher::policy::{
    self, ChampionInput, CompiledCache, DecisionInput, Limits, Policy, PolicyRuntime,
};
use model_pusher::push::{self, Mode, PushInputs, PushOptions};
use model_pusher::registry::{MlflowClient, RetryPolicy, Stage};
use model_pusher::scaffold;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Exit statuses, documented in the README.
#[derive(Debug, Clone, Copy)]
enum Exit {
    /// A decision was made (any verdict), or every policy test case passed.
    Ok = 0,
    /// Something unexpected; the message says what.
    Failure = 1,
    /// An input file or argument is wrong; the message names the file and field.
    BadInput = 2,
    /// The registry refused the credentials.
    Auth = 3,
    /// A registry call failed; the message names the step and the server's answer.
    Registry = 4,
    /// The policy could not decide: it refused, trapped or broke a limit.
    Policy = 5,
    /// `policy test`: at least one case did not give its expected verdict.
    CasesFailed = 6,
}

#[derive(Debug, Parser)]
#[command(
    name = "model-pusher",
    version,
    about = "Decides whether a newly trained model replaces the champion in an MLflow registry, and makes it so"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// More log detail (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Decides on a candidate and makes it so in an MLflow registry.
    Push(Box<PushArgs>),
    /// Asks a policy for a decision on local files, without touching any registry.
    Decide(DecideArgs),
    /// Inspects or tests a policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Prints what a policy says of itself, and its sha256.
    Inspect {
        /// A policy file, or the name of a bundled policy.
        policy: String,
        #[command(flatten)]
        runtime: RuntimeArgs,
    },
    /// Runs a YAML file of cases through a policy and reports each; fails if any case fails.
    Test {
        /// A policy file, or the name of a bundled policy.
        policy: String,
        /// The cases file.
        cases: PathBuf,
        #[command(flatten)]
        runtime: RuntimeArgs,
    },
    /// Makes a ready-to-build Rust policy crate, with a cases file for `policy test`.
    New {
        /// The policy's name: lowercase letters, digits and hyphens, such as `churn-guard`.
        name: String,
        /// The crate's directory, which must not exist or be empty [default: ./NAME].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The policy kit to depend on (a checkout's `policies/kit`) [default: the kit of the
        /// checkout DIR is in, else of the checkout this binary was built from].
        #[arg(long)]
        kit: Option<PathBuf>,
    },
}

/// The seed's positional arguments, in its order.
const SEED_ARGUMENTS: [&str; 9] = [
    "repo_owner_name",
    "repo_name",
    "model_name",
    "stage",
    "param_path",
    "model_path",
    "metrics_path",
    "dagshub_username",
    "dagshub_token",
];

#[derive(Debug, Args)]
struct PushArgs {
    /// The seed's nine arguments, in its order, for a drop-in replacement of its Kubeflow step:
    /// REPO_OWNER_NAME REPO_NAME MODEL_NAME STAGE PARAM_PATH MODEL_PATH METRICS_PATH
    /// DAGSHUB_USERNAME DAGSHUB_TOKEN. Flags win over them.
    #[arg(value_name = "SEED_ARGUMENTS", num_args = 0..=9)]
    seed: Vec<String>,
    /// Owner of the DagsHub repository whose MLflow server is used when no tracking uri is set.
    #[arg(long, alias = "repo_owner_name")]
    repo_owner_name: Option<String>,
    /// Name of that DagsHub repository.
    #[arg(long, alias = "repo_name")]
    repo_name: Option<String>,
    /// The registered model's name.
    #[arg(long, alias = "model_name")]
    model_name: Option<String>,
    /// The stage a promoted model goes to, where the champion is looked up [default: Production].
    #[arg(long)]
    stage: Option<String>,
    /// The `params.yaml` holding `model_comparison`.
    #[arg(long, alias = "param_path")]
    param_path: Option<PathBuf>,
    /// The training step's model directory (holding `model.pkl`), or the model file.
    #[arg(long, alias = "model_path")]
    model_path: Option<PathBuf>,
    /// The evaluation step's metrics directory (holding `metrics.json`), or the file.
    #[arg(long, alias = "metrics_path")]
    metrics_path: Option<PathBuf>,
    /// DagsHub user name: the basic-auth user when MLFLOW_TRACKING_USERNAME is unset.
    #[arg(long, alias = "dagshub_username")]
    dagshub_username: Option<String>,
    /// The access token, on the command line: visible in the process list and the pipeline
    /// spec. Prefer --dagshub-token-file or DAGSHUB_USER_TOKEN.
    #[arg(long, alias = "dagshub_token", hide_env_values = true)]
    dagshub_token: Option<String>,
    /// A file holding the access token, such as a mounted Kubernetes secret.
    #[arg(long, alias = "dagshub_token_file")]
    dagshub_token_file: Option<PathBuf>,
    /// The MLflow tracking server [default: $MLFLOW_TRACKING_URI, else the DagsHub repository's].
    #[arg(long)]
    tracking_uri: Option<String>,
    /// The policy: a file or a bundled name [default: model_comparison.policy, else threshold].
    #[arg(long)]
    policy: Option<String>,
    /// How the registry marks the champion.
    #[arg(long, value_enum, default_value_t = ModeArg::Stages)]
    mode: ModeArg,
    /// In aliases mode, the champion's alias.
    #[arg(long, default_value = "champion")]
    champion_alias: String,
    /// In aliases mode, a held candidate's alias.
    #[arg(long, default_value = "challenger")]
    challenger_alias: String,
    /// The experiment the candidate's run is logged in [default: the model name].
    #[arg(long)]
    experiment: Option<String>,
    /// The Kubeflow run this push belongs to, recorded as a tag.
    #[arg(long, env = "KFP_RUN_ID")]
    pipeline_run_id: Option<String>,
    /// Where to write the decision and what was done, as JSON.
    #[arg(long)]
    decision_out: Option<PathBuf>,
    /// Where to write the verdict alone (`promote`, `hold` or `reject`, no newline): a
    /// Kubeflow output parameter.
    #[arg(long)]
    verdict_out: Option<PathBuf>,
    /// Where to write the decision as a Markdown report: a Kubeflow `system.Markdown` output
    /// artifact, which the Kubeflow UI renders.
    #[arg(long)]
    markdown_out: Option<PathBuf>,
    /// Read, find the champion and decide; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// The log file, as the seed wrote it.
    #[arg(long, default_value = "logs/Model_Pusher.log")]
    log_file: PathBuf,
    /// Do not write a log file.
    #[arg(long)]
    no_log_file: bool,
    /// How long to wait for a new model version to become READY, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    ready_timeout: u64,
    /// What makes a re-run of this push find its earlier attempt [default: from the pipeline
    /// run id, else a digest of the model, metrics, settings and policy].
    #[arg(long)]
    idempotency_key: Option<String>,
    /// How long an earlier, unfinished push of the same model may hold this one up before it is
    /// taken for abandoned, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    lease_timeout: u64,
    /// Attempts of a registry request that fails transiently (connection refused or reset,
    /// timeout, 429, 502, 503, 504), the first included.
    #[arg(long, value_name = "N", default_value_t = 5)]
    retry_attempts: u32,
    /// Time within which a request's retries must start, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    retry_budget: u64,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModeArg {
    /// Production / Staging / Archived stages (MLflow 2.x style, DagsHub's UI).
    Stages,
    /// `champion` / `challenger` aliases (MLflow's recommendation since 2.9).
    Aliases,
}

#[derive(Debug, Args)]
struct DecideArgs {
    /// A policy file, or the name of a bundled policy.
    #[arg(long, default_value = policy::DEFAULT_POLICY)]
    policy: String,
    /// The `params.yaml` whose `model_comparison` section holds the policy's settings.
    #[arg(long)]
    params: PathBuf,
    /// The candidate's metrics: a `metrics.json` file or the directory holding it.
    #[arg(long)]
    candidate: PathBuf,
    /// The champion's metrics; omit when there is no champion.
    #[arg(long)]
    champion: Option<PathBuf>,
    /// The champion's model version, as the decision should name it.
    #[arg(long, default_value = "1", requires = "champion")]
    champion_version: String,
    /// The registered model's name, as the policy is told it.
    #[arg(long, default_value = "model")]
    model_name: String,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

/// The sandbox's limits and the compiled-policy cache.
#[derive(Debug, Args)]
struct RuntimeArgs {
    /// Wall-clock time a policy call may take, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    policy_deadline_ms: u64,
    /// Memory a policy may use, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    policy_memory_mib: usize,
    /// Size of the decision text a policy may return, in KiB.
    #[arg(long, value_name = "KIB", default_value_t = 64)]
    policy_output_kib: usize,
    /// Where compiled policies are cached [default: $MODEL_PUSHER_CACHE_DIR, else
    /// $XDG_CACHE_HOME/model-pusher, else ~/.cache/model-pusher].
    #[arg(long, value_name = "DIR")]
    policy_cache_dir: Option<PathBuf>,
    /// Compile the policy on every run instead of caching it.
    #[arg(long)]
    no_policy_cache: bool,
}

impl RuntimeArgs {
    fn runtime(&self) -> anyhow::Result<PolicyRuntime> {
        let limits = Limits {
            deadline: Duration::from_millis(self.policy_deadline_ms),
            memory: self.policy_memory_mib << 20,
            output: self.policy_output_kib << 10,
            ..Limits::default()
        };
        let cache_dir = match (&self.policy_cache_dir, self.no_policy_cache) {
            (_, true) => None,
            (Some(dir), false) => Some(dir.clone()),
            (None, false) => CompiledCache::default_dir(),
        };
        let cache = cache_dir.and_then(|dir| match CompiledCache::open(&dir) {
            Ok(cache) => Some(cache),
            Err(error) => {
                tracing::warn!("{error}; compiling the policy without a cache");
                None
            }
        });
        Ok(PolicyRuntime::new(limits, cache)?)
    }

    fn load(&self, name_or_path: &str) -> anyhow::Result<Policy> {
        let path = policy::locate(name_or_path)?;
        Ok(self.runtime()?.load(&path)?)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_file = match &cli.command {
        Command::Push(args) if !args.no_log_file => Some(args.log_file.clone()),
        _ => None,
    };
    init_logging(cli.log_format, cli.verbose, log_file.as_deref());
    let result = match cli.command {
        Command::Push(args) => push_command(*args),
        Command::Decide(args) => decide(&args),
        Command::Policy(PolicyCommand::Inspect { policy, runtime }) => inspect(&policy, &runtime),
        Command::Policy(PolicyCommand::Test {
            policy,
            cases,
            runtime,
        }) => test(&policy, &cases, &runtime),
        Command::Policy(PolicyCommand::New { name, dir, kit }) => new_policy(name, dir, kit),
    };
    match result {
        Ok(exit) => ExitCode::from(exit as u8),
        Err(error) => {
            // The one place errors are reported: everything below returns them.
            tracing::error!("{error:#}");
            ExitCode::from(exit_for(&error) as u8)
        }
    }
}

fn exit_for(error: &anyhow::Error) -> Exit {
    for cause in error.chain() {
        if cause.is::<model_pusher::inputs::InputError>()
            || cause.is::<credentials::CredentialsError>()
            || cause.is::<UsageError>()
        {
            return Exit::BadInput;
        }
        if let Some(error) = cause.downcast_ref::<push::PushError>() {
            return match error {
                push::PushError::Policy(_) => Exit::Policy,
                error if error.is_unauthorized() => Exit::Auth,
                push::PushError::Registry { .. } => Exit::Registry,
            };
        }
        if let Some(error) = cause.downcast_ref::<policy::PolicyError>() {
            return match error {
                policy::PolicyError::Read { .. }
                | policy::PolicyError::NotWasm { .. }
                | policy::PolicyError::Componentize { .. }
                | policy::PolicyError::WrongWorld { .. } => Exit::BadInput,
                _ => Exit::Policy,
            };
        }
    }
    Exit::Failure
}

type BoxedLayer = Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>;

/// Logs to stderr and, for a push, to a file as the seed did; `--log-format json` is for
/// cluster log collectors. The HTTP client's own logs stay at warn: they would add nothing
/// an operator acts on.
fn init_logging(format: LogFormat, verbose: u8, file: Option<&Path>) {
    let default = match verbose {
        0 => "info,hyper=warn,reqwest=warn",
        1 => "debug,hyper=warn,reqwest=warn,h2=warn,rustls=warn",
        _ => "trace,hyper=warn,reqwest=warn,h2=warn,rustls=warn",
    };
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_env("MODEL_PUSHER_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default))
    };
    let layer =
        |writer: tracing_subscriber::fmt::writer::BoxMakeWriter, ansi: bool| -> BoxedLayer {
            let fmt = tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_ansi(ansi)
                .with_target(false);
            match format {
                LogFormat::Text => fmt.with_filter(filter()).boxed(),
                LogFormat::Json => fmt.json().with_filter(filter()).boxed(),
            }
        };

    let mut layers = vec![layer(
        tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr),
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
    )];
    let mut file_error = None;
    if let Some(path) = file {
        let opened = path
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
            });
        match opened {
            Ok(file) => layers.push(layer(
                tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::sync::Mutex::new(file)),
                false,
            )),
            Err(error) => {
                file_error = Some(format!("cannot write log file {}: {error}", path.display()))
            }
        }
    }
    tracing_subscriber::registry().with(layers).init();
    if let Some(message) = file_error {
        tracing::warn!("{message}; logging to stderr only");
    }
}

/// A command-line argument that cannot be used; the message names it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

/// The push's arguments with the seed's positional ones merged in; flags win.
struct Resolved {
    owner: Option<String>,
    repo: Option<String>,
    model_name: String,
    stage: Stage,
    params: PathBuf,
    model: PathBuf,
    metrics: PathBuf,
    user: Option<String>,
    cli_token: Option<Secret>,
}

fn resolve_push_args(args: &PushArgs) -> anyhow::Result<Resolved> {
    let seed: Option<&[String]> = match args.seed.len() {
        0 => None,
        9 => Some(&args.seed),
        n => {
            return Err(UsageError(format!(
                "expected the seed's nine positional arguments ({}), got {n}; or use the flags",
                SEED_ARGUMENTS.join(" ")
            ))
            .into());
        }
    };
    let positional = |index: usize| seed.and_then(|seed| seed.get(index)).cloned();
    let required = |flag: Option<String>, index: usize| {
        flag.or_else(|| positional(index)).ok_or_else(|| {
            UsageError(format!(
                "missing --{}",
                SEED_ARGUMENTS[index].replace('_', "-")
            ))
        })
    };
    let path = |flag: &Option<PathBuf>, index: usize| {
        required(flag.as_ref().map(|path| path.display().to_string()), index).map(PathBuf::from)
    };
    let stage_text = args
        .stage
        .clone()
        .or_else(|| positional(3))
        .unwrap_or_else(|| "Production".to_owned());
    let stage: Stage = stage_text
        .parse()
        .map_err(|error| UsageError(format!("--stage: {error}")))?;
    if matches!(stage, Stage::None | Stage::Archived) {
        return Err(UsageError(format!(
            "--stage {stage} cannot hold a champion; use Production (or Staging)"
        ))
        .into());
    }
    Ok(Resolved {
        owner: args.repo_owner_name.clone().or_else(|| positional(0)),
        repo: args.repo_name.clone().or_else(|| positional(1)),
        model_name: required(args.model_name.clone(), 2)?,
        stage,
        params: path(&args.param_path, 4)?,
        model: path(&args.model_path, 5)?,
        metrics: path(&args.metrics_path, 6)?,
        user: args.dagshub_username.clone().or_else(|| positional(7)),
        cli_token: args
            .dagshub_token
            .clone()
            .or_else(|| positional(8))
            .filter(|token| !token.is_empty())
            .map(Secret::new),
    })
}

fn push_command(args: PushArgs) -> anyhow::Result<Exit> {
    let resolved = resolve_push_args(&args)?;

    // Every input is read and checked before the registry is contacted.
    let settings = Settings::read(&resolved.params)?;
    let candidate = Metrics::read(&resolved.metrics)?;
    inputs::check_primary_metric(&settings, &candidate, &resolved.metrics)?;
    let inputs = PushInputs {
        candidate,
        model: ModelDir::find(&resolved.model)?,
        settings,
    };
    let policy_name = match &args.policy {
        Some(policy) => policy.clone(),
        None => inputs
            .settings
            .host_string("policy")?
            .unwrap_or(policy::DEFAULT_POLICY)
            .to_owned(),
    };
    let policy = args.runtime.load(&policy_name)?;

    let credentials = credentials::resolve(
        &CredentialRequest {
            tracking_uri: args.tracking_uri.clone(),
            repo_owner: resolved.owner.clone(),
            repo_name: resolved.repo.clone(),
            dagshub_user: resolved.user.clone(),
            token_file: args.dagshub_token_file.clone(),
            cli_token: resolved.cli_token.clone(),
        },
        |name| std::env::var(name).ok(),
    )?;
    if credentials.token_visible_in_process_list {
        tracing::warn!(
            "the access token was given on the command line, where the process list and the \
             pipeline spec show it; mount it as a file (--dagshub-token-file) or set \
             DAGSHUB_USER_TOKEN instead"
        );
    }
    let retry = RetryPolicy {
        max_attempts: args.retry_attempts.max(1),
        budget: Duration::from_secs(args.retry_budget),
        ..RetryPolicy::default()
    };
    tracing::debug!("registry retries: {retry}");
    let client =
        MlflowClient::new(credentials.server.clone(), credentials.auth.clone())?.with_retry(retry);
    tracing::info!(
        server = client.server(),
        user = client.principal(),
        model = resolved.model_name.as_str(),
        policy = policy.info().name.as_str(),
        "pushing"
    );

    let idempotency_key = match &args.idempotency_key {
        Some(key) => key.clone(),
        None => push::idempotency_key(
            &resolved.model_name,
            args.pipeline_run_id.as_deref(),
            &inputs,
            policy.sha256(),
        )
        .with_context(|| format!("cannot read the model in {}", resolved.model.display()))?,
    };
    let options = PushOptions {
        model_name: resolved.model_name.clone(),
        mode: match args.mode {
            ModeArg::Stages => Mode::Stages {
                stage: resolved.stage,
            },
            ModeArg::Aliases => Mode::Aliases {
                champion: args.champion_alias.clone(),
                challenger: args.challenger_alias.clone(),
            },
        },
        experiment: args
            .experiment
            .clone()
            .unwrap_or_else(|| resolved.model_name.clone()),
        pipeline_run_id: args.pipeline_run_id.clone(),
        dry_run: args.dry_run,
        ready_timeout: Duration::from_secs(args.ready_timeout),
        idempotency_key,
        lease_timeout: Duration::from_secs(args.lease_timeout),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(push::push(&client, &policy, &inputs, &options))?;

    eprint!("{}", report.decision.table());
    for action in &report.actions {
        let prefix = if report.dry_run { "would " } else { "" };
        tracing::info!(model = report.model_name.as_str(), "{prefix}{action}");
    }
    tracing::info!(
        model = report.model_name.as_str(),
        version = report.model_version.as_deref().unwrap_or("-"),
        run_id = report.run_id.as_deref().unwrap_or("-"),
        verdict = %report.decision.verdict,
        champion = report.champion.as_deref().unwrap_or("none"),
        requests = report.requests,
        "{}",
        if report.dry_run { "dry run: nothing written" } else { "pushed" }
    );
    if let Some(path) = &args.decision_out {
        push::write_report(&report, path)
            .with_context(|| format!("cannot write the decision to {}", path.display()))?;
    }
    if let Some(path) = &args.verdict_out {
        // No newline: Kubeflow takes a string output parameter as the file's exact content.
        write_output(path, &report.decision.verdict.to_string())
            .with_context(|| format!("cannot write the verdict to {}", path.display()))?;
    }
    if let Some(path) = &args.markdown_out {
        write_output(path, &push_markdown(&report))
            .with_context(|| format!("cannot write the markdown report to {}", path.display()))?;
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(Exit::Ok)
}

/// Writes `text` to `path`, creating its directory: Kubeflow hands out output paths whose
/// directories may not exist yet.
fn write_output(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text)
}

/// The push as Markdown: what happened in the registry, then the decision and its checks.
fn push_markdown(report: &push::PushReport) -> String {
    let none = |value: &Option<String>| value.as_deref().unwrap_or("none").to_owned();
    let mut out = format!("# model-pusher: {}\n\n", report.model_name);
    if report.dry_run {
        out.push_str("Dry run: nothing was written to the registry.\n\n");
    }
    out.push_str(&format!(
        "- registry: {}\n- version registered: {}\n- champion before: {}\n- champion after: {}\n\n",
        report.registry_url,
        report.model_version.as_deref().unwrap_or("none (dry run)"),
        none(&report.previous_champion),
        none(&report.champion),
    ));
    out.push_str(&report.decision.markdown());
    out
}

fn decide(args: &DecideArgs) -> anyhow::Result<Exit> {
    let settings = Settings::read(&args.params)?;
    let candidate = Metrics::read(&args.candidate)?;
    let champion = args
        .champion
        .as_deref()
        .map(|path| {
            Ok::<_, anyhow::Error>(ChampionInput {
                version: args.champion_version.clone(),
                run_id: String::new(),
                metrics: Metrics::read(path)?,
            })
        })
        .transpose()?;
    let policy = args.runtime.load(&args.policy)?;

    let decision = policy.decide(&DecisionInput {
        model_name: args.model_name.clone(),
        candidate_run_id: None,
        candidate,
        champion,
        settings,
    })?;
    tracing::info!(
        policy = decision.policy.name.as_str(),
        verdict = %decision.verdict,
        "{}",
        decision.reason
    );
    eprint!("{}", decision.table());
    println!("{}", serde_json::to_string_pretty(&decision)?);
    Ok(Exit::Ok)
}

fn inspect(name_or_path: &str, runtime: &RuntimeArgs) -> anyhow::Result<Exit> {
    let policy = runtime.load(name_or_path)?;
    let report = serde_json::json!({
        "path": policy.path(),
        "sha256": policy.sha256(),
        "world": policy::WORLD,
        "info": policy.info(),
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(Exit::Ok)
}

fn test(name_or_path: &str, cases_path: &Path, runtime: &RuntimeArgs) -> anyhow::Result<Exit> {
    let policy = runtime.load(name_or_path)?;
    let results = cases::run(&policy, cases_path)
        .with_context(|| format!("cannot run the cases in {}", cases_path.display()))?;
    let failed = results
        .iter()
        .filter(|result| result.failure.is_some())
        .count();
    for result in &results {
        let got = match &result.outcome {
            Ok(verdict) => verdict.to_string(),
            Err(_) => "error".to_owned(),
        };
        match &result.failure {
            None => println!("ok    {}: {got}", result.name),
            Some(failure) => println!("FAIL  {}: {failure} ({})", result.name, result.reason),
        }
    }
    println!(
        "{} {}: {} passed, {failed} failed (policy {} {}, sha256 {})",
        if failed == 0 { "ok" } else { "FAILED" },
        cases_path.display(),
        results.len() - failed,
        policy.info().name,
        policy.info().version,
        policy.sha256()
    );
    Ok(if failed == 0 {
        Exit::Ok
    } else {
        Exit::CasesFailed
    })
}

fn new_policy(name: String, dir: Option<PathBuf>, kit: Option<PathBuf>) -> anyhow::Result<Exit> {
    let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
    let made = scaffold::create(&scaffold::NewPolicy {
        name: name.clone(),
        dir,
        kit,
    })
    .map_err(|error| {
        if error.is_usage() {
            anyhow::Error::new(UsageError(error.to_string()))
        } else {
            error.into()
        }
    })?;
    let dir = made.dir.display();
    println!(
        "created policy {name} in {dir} (policy kit: {})",
        made.kit_path
    );
    for file in &made.files {
        println!("  {}", file.display());
    }
    println!(
        "next: build it from the model-pusher checkout with `cargo xtask build-policy {dir}`, \
         then `model-pusher policy test {dir}/target/{name}.wasm {dir}/cases.yaml` (see {dir}/README.md)"
    );
    Ok(Exit::Ok)
}
