//! The `model-pusher` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use model_pusher::cases;
use model_pusher::inputs::{Metrics, Settings};
use model_pusher::policy::{
    self, ChampionInput, CompiledCache, DecisionInput, Limits, Policy, PolicyRuntime,
};

/// Exit statuses, documented in the README.
#[derive(Debug, Clone, Copy)]
enum Exit {
    /// A decision was made (any verdict), or every policy test case passed.
    Ok = 0,
    /// Something unexpected; the message says what.
    Failure = 1,
    /// An input file or argument is wrong; the message names the file and field.
    BadInput = 2,
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
    init_logging(cli.log_format, cli.verbose);
    let result = match cli.command {
        Command::Decide(args) => decide(&args),
        Command::Policy(PolicyCommand::Inspect { policy, runtime }) => inspect(&policy, &runtime),
        Command::Policy(PolicyCommand::Test {
            policy,
            cases,
            runtime,
        }) => test(&policy, &cases, &runtime),
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
        if cause.is::<model_pusher::inputs::InputError>() {
            return Exit::BadInput;
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

fn init_logging(format: LogFormat, verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("MODEL_PUSHER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
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
