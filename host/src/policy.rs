//! The policy runtime: loads a promotion policy from a WebAssembly file and asks it for a
//! decision inside a sandbox.
//!
//! A policy gets no filesystem, network, environment or clock. Each call runs in a fresh store
//! with a wall-clock deadline (epoch interruption), a memory cap, a bounded native stack and a cap
//! on the size of the decision it returns; each breach is an error of its own, and no error is
//! ever read as a verdict.

mod bindings;
mod cache;
mod limits;
mod load;
mod store;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, Store, Trap};

use crate::decision::{Check, Decision, PolicyRef, Verdict};
use crate::inputs::{Metrics, Settings};
use bindings::v0_1 as wit;
use store::State;

pub use cache::{CacheError, CacheOutcome, CompiledCache};
pub use limits::{Allocation, Limits, POOLED_INSTANCES};
pub use load::{RULES, WORLD, componentize};

use limits::{Bytes, Seconds};

/// How often the deadline clock ticks. A deadline is enforced to within one tick.
const TICK: Duration = Duration::from_millis(10);

/// Why a policy could not be loaded or could not decide. None of these is a verdict: a caller
/// that gets one promotes nothing.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "policy {path} is not a WebAssembly file: build it with `cargo xtask policies` or componentize-py"
    )]
    NotWasm { path: PathBuf },
    #[error("policy {path} is a core module that cannot be made a component: {message}")]
    Componentize { path: PathBuf, message: String },
    #[error("policy {path} does not compile: {message}")]
    Compile { path: PathBuf, message: String },
    #[error("policy {path} does not implement the world `{WORLD}`: {problem}")]
    WrongWorld { path: PathBuf, problem: String },
    #[error("policy exceeded its {} deadline", Seconds(*.deadline))]
    Deadline { deadline: Duration },
    #[error("policy exceeded its {} memory limit", Bytes(*.limit))]
    Memory { limit: usize },
    #[error(
        "policy exceeded its {} stack limit (unbounded recursion?)",
        Bytes(*.limit)
    )]
    Stack { limit: usize },
    #[error("policy returned {} of text, over its {} output limit", Bytes(*.size), Bytes(*.limit))]
    Output { size: usize, limit: usize },
    #[error("policy trapped: {trap}{}", last_error.as_ref().map(|m| format!(" (its last error: {m})")).unwrap_or_default())]
    Trap {
        trap: String,
        last_error: Option<String>,
    },
    #[error("policy could not decide: {0}")]
    Refused(String),
    #[error("policy runtime: {0}")]
    Runtime(String),
}

/// The engine, the compiled-policy cache and the deadline clock, shared by every policy loaded
/// through it.
pub struct PolicyRuntime {
    engine: Engine,
    engine_hash: String,
    limits: Limits,
    cache: Option<CompiledCache>,
    plain: Linker<State>,
    with_wasi: OnceLock<Result<Linker<State>, String>>,
    clock: Arc<DeadlineClock>,
}

impl PolicyRuntime {
    /// Creates a runtime with the given limits and, optionally, a compiled-policy cache, that
    /// allocates instances the default way ([`Allocation::OnDemand`]).
    ///
    /// # Errors
    ///
    /// When the engine cannot be configured with these limits.
    pub fn new(limits: Limits, cache: Option<CompiledCache>) -> Result<Self, PolicyError> {
        Self::with_allocation(limits, cache, Allocation::default())
    }

    /// Creates a runtime as [`PolicyRuntime::new`] does, with the instance allocator of choice.
    ///
    /// # Errors
    ///
    /// When the engine cannot be configured with these limits, or cannot reserve a pool.
    pub fn with_allocation(
        limits: Limits,
        cache: Option<CompiledCache>,
        allocation: Allocation,
    ) -> Result<Self, PolicyError> {
        let mut config = Config::new();
        allocation.configure(&mut config, &limits);
        config.epoch_interruption(true);
        config.max_wasm_stack(limits.wasm_stack);
        // Component-model concurrency makes every call several times slower and no policy needs
        // it: a decision is one synchronous call.
        config.concurrency_support(false);
        let engine = Engine::new(&config).map_err(runtime_error)?;
        let engine_hash = engine_hash(&engine);

        let mut plain = Linker::new(&engine);
        wit::Policy::add_to_linker::<_, HasSelf<_>>(&mut plain, |state| state)
            .map_err(runtime_error)?;

        let clock = DeadlineClock::start(&engine);
        Ok(Self {
            engine,
            engine_hash,
            limits,
            cache,
            plain,
            with_wasi: OnceLock::new(),
            clock,
        })
    }

    /// The limits every call of a policy loaded here runs within.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn wasi_linker(&self) -> Result<&Linker<State>, PolicyError> {
        self.with_wasi
            .get_or_init(|| {
                let mut linker = self.plain.clone();
                wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
                    .map_err(|error| format!("{error:#}"))?;
                Ok(linker)
            })
            .as_ref()
            .map_err(|message| PolicyError::Runtime(message.clone()))
    }

    /// Loads a policy file: a component, or a core module that is made one here.
    ///
    /// # Errors
    ///
    /// When the file cannot be read, is not WebAssembly, does not compile, or does not implement
    /// the policy world (the error says what is missing), or when its `describe` fails.
    pub fn load(&self, path: &Path) -> Result<Policy, PolicyError> {
        let bytes = std::fs::read(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        self.load_bytes(path, &bytes)
    }

    /// Loads a policy from bytes in memory; `path` names it in errors.
    ///
    /// # Errors
    ///
    /// As [`PolicyRuntime::load`].
    pub fn load_bytes(&self, path: &Path, bytes: &[u8]) -> Result<Policy, PolicyError> {
        let sha256 = hex::encode(Sha256::digest(bytes));
        let component_bytes = match load::kind(bytes) {
            None => {
                return Err(PolicyError::NotWasm {
                    path: path.to_owned(),
                });
            }
            Some(load::Kind::Component) => std::borrow::Cow::Borrowed(bytes),
            Some(load::Kind::CoreModule) => {
                std::borrow::Cow::Owned(load::componentize(bytes).map_err(|message| {
                    PolicyError::Componentize {
                        path: path.to_owned(),
                        message,
                    }
                })?)
            }
        };

        let (component, cache) = self.compile(path, &sha256, &component_bytes)?;
        let shape = load::Shape::of(&self.engine, &component);
        if let Some(problem) = shape.mismatch() {
            return Err(PolicyError::WrongWorld {
                path: path.to_owned(),
                problem,
            });
        }
        let linker = if shape.needs_wasi() {
            self.wasi_linker()?
        } else {
            &self.plain
        };
        let wrong_world = |error: wasmtime::Error| PolicyError::WrongWorld {
            path: path.to_owned(),
            problem: format!("{error:#}"),
        };
        let instance_pre = linker.instantiate_pre(&component).map_err(wrong_world)?;
        let pre = wit::PolicyPre::new(instance_pre).map_err(wrong_world)?;

        let mut policy = Policy {
            engine: self.engine.clone(),
            pre,
            limits: self.limits.clone(),
            path: path.to_owned(),
            sha256,
            cache,
            info: PolicyInfo::default(),
            _clock: Arc::clone(&self.clock),
        };
        policy.info = policy.call_describe()?;
        tracing::debug!(
            policy = policy.info.name.as_str(),
            version = policy.info.version.as_str(),
            sha256 = policy.sha256.as_str(),
            cache = ?policy.cache,
            "loaded policy"
        );
        Ok(policy)
    }

    fn compile(
        &self,
        path: &Path,
        sha256: &str,
        bytes: &[u8],
    ) -> Result<(Component, CacheOutcome), PolicyError> {
        let compile = || {
            Component::new(&self.engine, bytes).map_err(|error| PolicyError::Compile {
                path: path.to_owned(),
                message: format!("{error:#}"),
            })
        };
        let Some(cache) = &self.cache else {
            return Ok((compile()?, CacheOutcome::Disabled));
        };

        let recompile_reason = match cache.read(sha256, &self.engine_hash) {
            Ok(Some(compiled)) => match deserialize(&self.engine, &compiled) {
                Ok(component) => return Ok((component, CacheOutcome::Hit)),
                Err(error) => Some(format!("cached entry does not load: {error:#}")),
            },
            Ok(None) => None,
            Err(reason) => Some(reason),
        };
        if let Some(reason) = &recompile_reason {
            tracing::warn!(sha256, "recompiling policy: {reason}");
        }

        let component = compile()?;
        let stored = match component.serialize() {
            Ok(compiled) => match cache.write(sha256, &self.engine_hash, &compiled) {
                Ok(()) => true,
                Err(error) => {
                    tracing::warn!(sha256, "cannot store compiled policy: {error}");
                    false
                }
            },
            Err(error) => {
                tracing::warn!(sha256, "cannot serialize compiled policy: {error:#}");
                false
            }
        };
        let outcome = match recompile_reason {
            Some(reason) => CacheOutcome::Recompiled { reason },
            None => CacheOutcome::Compiled { stored },
        };
        Ok((component, outcome))
    }
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, compiled: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `compiled` comes from a cache entry whose MAC verified under a key that this host
    // generated and that only its user can read, so it is the output of `Component::serialize`
    // on this host; wasmtime itself checks that it was made for this engine's configuration.
    unsafe { Component::deserialize(engine, compiled) }
}

/// A hash of everything about the engine that makes compiled code incompatible with it.
fn engine_hash(engine: &Engine) -> String {
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = std::hash::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    env!("CARGO_PKG_VERSION").hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

fn runtime_error(error: wasmtime::Error) -> PolicyError {
    PolicyError::Runtime(format!("{error:#}"))
}

/// Advances the engine's epoch every [`TICK`] for as long as a runtime or a policy needs it.
struct DeadlineClock {
    stop: Arc<AtomicBool>,
}

impl DeadlineClock {
    fn start(engine: &Engine) -> Arc<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let engine = engine.weak();
        let stopped = Arc::clone(&stop);
        thread::Builder::new()
            .name("policy-deadline".to_owned())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    thread::sleep(TICK);
                    match engine.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map(|_| ())
            .unwrap_or_else(|error| {
                // Without the clock a looping policy would never be stopped, so every call's
                // deadline is made zero: policies then fail instead of hanging.
                tracing::error!("cannot start the policy deadline clock: {error}");
                stop.store(true, Ordering::Relaxed);
            });
        Arc::new(Self { stop })
    }

    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }
}

impl Drop for DeadlineClock {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What a policy says of itself.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct PolicyInfo {
    pub name: String,
    pub version: String,
    pub description: String,
    pub settings: Vec<SettingInfo>,
}

/// A setting a policy reads from `model_comparison`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SettingInfo {
    pub key: String,
    pub description: String,
    /// The default as JSON, or `None` when the setting is required.
    pub default: Option<String>,
}

/// The champion a candidate is compared with.
#[derive(Debug, Clone, PartialEq)]
pub struct ChampionInput {
    pub version: String,
    pub run_id: String,
    pub metrics: Metrics,
}

/// Everything a policy is asked to decide on.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionInput {
    pub model_name: String,
    pub candidate_run_id: Option<String>,
    pub candidate: Metrics,
    pub champion: Option<ChampionInput>,
    pub settings: Settings,
}

/// A loaded policy, ready to decide. Each call gets a fresh instance in a fresh store, so no
/// state survives from one decision to the next.
pub struct Policy {
    engine: Engine,
    pre: wit::PolicyPre<State>,
    limits: Limits,
    path: PathBuf,
    sha256: String,
    cache: CacheOutcome,
    info: PolicyInfo,
    _clock: Arc<DeadlineClock>,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("path", &self.path)
            .field("sha256", &self.sha256)
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Policy {
    /// What the policy said of itself when it was loaded.
    pub fn info(&self) -> &PolicyInfo {
        &self.info
    }

    /// The sha256 of the policy file, which pins every decision to the exact policy that made it.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The file the policy was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How the policy's compiled code was obtained.
    pub fn cache_outcome(&self) -> &CacheOutcome {
        &self.cache
    }

    /// A reference to this policy, as recorded with its decisions.
    pub fn reference(&self) -> PolicyRef {
        PolicyRef {
            name: self.info.name.clone(),
            version: self.info.version.clone(),
            sha256: self.sha256.clone(),
        }
    }

    /// Asks the policy for a decision.
    ///
    /// # Errors
    ///
    /// When the policy refuses to decide, traps, or breaks one of its limits; never a verdict.
    pub fn decide(&self, input: &DecisionInput) -> Result<Decision, PolicyError> {
        let input = to_wit(input);
        let decision = self
            .call(|bindings, store| {
                bindings
                    .model_pusher_policy_rules()
                    .call_decide(store, &input)
            })?
            .map_err(PolicyError::Refused)?;
        self.check_output_size(
            decision.reason.len()
                + decision
                    .checks
                    .iter()
                    .map(|check| check.metric.len() + check.requirement.len())
                    .sum::<usize>(),
        )?;

        let verdict = match decision.verdict {
            wit::model_pusher::policy::types::Verdict::Promote => Verdict::Promote,
            wit::model_pusher::policy::types::Verdict::Hold => Verdict::Hold,
            wit::model_pusher::policy::types::Verdict::Reject => Verdict::Reject,
        };
        Ok(Decision {
            verdict,
            reason: first_line(&decision.reason),
            checks: decision
                .checks
                .into_iter()
                .map(|check| Check {
                    metric: check.metric,
                    candidate: check.candidate,
                    champion: check.champion,
                    requirement: check.requirement,
                    passed: check.passed,
                })
                .collect(),
            policy: self.reference(),
        })
    }

    fn call_describe(&self) -> Result<PolicyInfo, PolicyError> {
        let info =
            self.call(|bindings, store| bindings.model_pusher_policy_rules().call_describe(store))?;
        self.check_output_size(
            info.name.len()
                + info.version.len()
                + info.description.len()
                + info
                    .settings
                    .iter()
                    .map(|setting| {
                        setting.key.len()
                            + setting.description.len()
                            + setting.default_value.as_ref().map_or(0, String::len)
                    })
                    .sum::<usize>(),
        )?;
        Ok(PolicyInfo {
            name: info.name,
            version: info.version,
            description: info.description,
            settings: info
                .settings
                .into_iter()
                .map(|setting| SettingInfo {
                    key: setting.key,
                    description: setting.description,
                    default: setting.default_value,
                })
                .collect(),
        })
    }

    fn check_output_size(&self, size: usize) -> Result<(), PolicyError> {
        if size > self.limits.output {
            return Err(PolicyError::Output {
                size,
                limit: self.limits.output,
            });
        }
        Ok(())
    }

    /// Instantiates the policy in a fresh, limited store and runs one export.
    fn call<R>(
        &self,
        run: impl FnOnce(&wit::Policy, &mut Store<State>) -> wasmtime::Result<R>,
    ) -> Result<R, PolicyError> {
        let name = if self.info.name.is_empty() {
            self.path.display().to_string()
        } else {
            self.info.name.clone()
        };
        let mut store = Store::new(&self.engine, State::new(&name, &self.limits));
        store.limiter(|state| &mut state.limiter);
        let ticks = if self._clock.running() {
            self.limits.deadline.as_nanos().div_ceil(TICK.as_nanos()) as u64
        } else {
            0
        };
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();

        let result = self
            .pre
            .instantiate(&mut store)
            .and_then(|bindings| run(&bindings, &mut store));
        store.data_mut().flush_output();
        store.data_mut().log.finish();
        result.map_err(|error| self.classify(error, store.data()))
    }

    /// Names the limit a failed call broke, or the trap it hit.
    fn classify(&self, error: wasmtime::Error, state: &State) -> PolicyError {
        if state.limiter.memory_breached {
            return PolicyError::Memory {
                limit: self.limits.memory,
            };
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => PolicyError::Deadline {
                deadline: self.limits.deadline,
            },
            Some(Trap::StackOverflow) => PolicyError::Stack {
                limit: self.limits.wasm_stack,
            },
            // Rust puts its stack at the bottom of linear memory, so unbounded recursion in a
            // Rust policy runs off address zero before it exhausts the native stack.
            Some(Trap::MemoryOutOfBounds) => PolicyError::Trap {
                trap: format!(
                    "{} (a policy whose own stack overflows ends this way: look for unbounded \
                     recursion)",
                    Trap::MemoryOutOfBounds
                ),
                last_error: state.log.last_error.clone(),
            },
            Some(trap) => PolicyError::Trap {
                trap: trap.to_string(),
                last_error: state.log.last_error.clone(),
            },
            None => PolicyError::Trap {
                trap: format!("{error:#}"),
                last_error: state.log.last_error.clone(),
            },
        }
    }
}

/// A reason is one line: anything after the first line break is dropped.
fn first_line(reason: &str) -> String {
    reason.lines().next().unwrap_or_default().trim().to_owned()
}

fn to_wit(input: &DecisionInput) -> wit::model_pusher::policy::types::DecisionInput {
    use wit::model_pusher::policy::types as t;
    let metrics = |metrics: &Metrics| -> Vec<t::Metric> {
        metrics
            .values
            .iter()
            .map(|(name, value)| t::Metric {
                name: name.clone(),
                value: *value,
            })
            .collect()
    };
    let series = |metrics: &Metrics| -> Vec<t::MetricSeries> {
        metrics
            .series
            .iter()
            .map(|(name, values)| t::MetricSeries {
                name: name.clone(),
                values: values.clone(),
            })
            .collect()
    };
    t::DecisionInput {
        model_name: input.model_name.clone(),
        candidate: t::Candidate {
            run_id: input.candidate_run_id.clone(),
            metrics: metrics(&input.candidate),
            series: series(&input.candidate),
        },
        champion: input.champion.as_ref().map(|champion| t::Champion {
            version: champion.version.clone(),
            run_id: champion.run_id.clone(),
            metrics: metrics(&champion.metrics),
            series: series(&champion.metrics),
        }),
        settings: input.settings.to_json(),
    }
}

/// The policy used when none is named.
pub const DEFAULT_POLICY: &str = "threshold";

/// Finds a policy file: an existing path as it is, or the name of a bundled policy, looked up
/// as `<name>.wasm` in `$MODEL_PUSHER_POLICY_DIR`, then beside the binary (`policies/`,
/// `../share/model-pusher/policies/`, and `../policies/`, where `cargo xtask policies` puts them
/// for a binary in `target/<profile>/`).
///
/// # Errors
///
/// When the path does not exist and no bundled policy has that name; the error lists where it
/// looked.
pub fn locate(name_or_path: &str) -> Result<PathBuf, PolicyError> {
    let path = Path::new(name_or_path);
    if path.exists() {
        return Ok(path.to_owned());
    }
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::var_os("MODEL_PUSHER_POLICY_DIR") {
        dirs.push(PathBuf::from(dir));
    }
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_owned))
    {
        dirs.push(exe_dir.join("policies"));
        dirs.push(exe_dir.join("../share/model-pusher/policies"));
        dirs.push(exe_dir.join("../policies"));
    }
    let is_name = !name_or_path.contains('/') && !name_or_path.ends_with(".wasm");
    if is_name {
        let file = format!("{name_or_path}.wasm");
        if let Some(found) = dirs
            .iter()
            .map(|dir| dir.join(&file))
            .find(|path| path.is_file())
        {
            return Ok(found);
        }
    }
    Err(PolicyError::Read {
        path: path.to_owned(),
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "no such file{}; build the bundled policies with `cargo xtask policies`",
                if is_name {
                    format!(
                        ", nor a bundled policy of that name in {}",
                        dirs.iter()
                            .map(|dir| dir.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                } else {
                    String::new()
                }
            ),
        ),
    })
}
