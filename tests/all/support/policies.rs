//! The policies the tests load: built from `policies/` by `cargo xtask policies`, never checked in.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use model_pusher::inputs::{Metrics, Settings};
use model_pusher::policy::{
    ChampionInput, CompiledCache, DecisionInput, Limits, Policy, PolicyRuntime,
};

/// Where `cargo xtask policies` writes components.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/policies")
}

/// The path of a built policy, or a loud failure that says how to build it.
pub fn path(name: &str) -> PathBuf {
    let path = dir().join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: build the policies first with `cargo xtask policies` \
         (or run every test with `cargo xtask test`)",
        path.display()
    );
    path
}

/// A compiled-policy cache shared by the tests of one run, so that each policy compiles once.
pub fn cache() -> CompiledCache {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| tempfile::tempdir().expect("a temporary directory"));
    CompiledCache::open(dir.path()).expect("the test cache opens")
}

/// A runtime with default limits, shared by the tests that only decide.
pub fn runtime() -> &'static PolicyRuntime {
    static RUNTIME: OnceLock<PolicyRuntime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        PolicyRuntime::new(Limits::default(), Some(cache()))
            .expect("the default runtime configures")
    })
}

/// A bundled policy, loaded once per test binary.
pub fn bundled(name: &'static str) -> &'static Policy {
    static THRESHOLD: OnceLock<Policy> = OnceLock::new();
    static MULTI_METRIC: OnceLock<Policy> = OnceLock::new();
    let cell = match name {
        "threshold" => &THRESHOLD,
        "multi-metric" => &MULTI_METRIC,
        other => panic!("no bundled policy named {other}"),
    };
    cell.get_or_init(|| runtime().load(&path(name)).expect("bundled policy loads"))
}

/// A decision input built from JSON settings and `(metric, value)` pairs.
pub fn input(
    settings: serde_json::Value,
    candidate: &[(&str, f64)],
    champion: Option<&[(&str, f64)]>,
) -> DecisionInput {
    let metrics = |pairs: &[(&str, f64)]| {
        Metrics::from_values(pairs.iter().map(|(name, value)| (name.to_string(), *value)))
    };
    DecisionInput {
        model_name: "spam_detection_model".to_owned(),
        candidate_run_id: Some("candidate-run".to_owned()),
        candidate: metrics(candidate),
        champion: champion.map(|pairs| ChampionInput {
            version: "3".to_owned(),
            run_id: "champion-run".to_owned(),
            metrics: metrics(pairs),
        }),
        settings: Settings::from_json("params.yaml", settings),
    }
}
