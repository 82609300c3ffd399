//! What one promotion decision costs, from compiling the policy to the verdict, against the
//! project's budgets: a cached load under 2 ms, and instantiate + decide under 20 us.
//!
//! Every benchmark runs the bundled threshold policy with the seed's settings; build it first
//! with `cargo xtask policies`. `plain_rust` is the same rule written as an ordinary function:
//! the floor that no sandbox can beat, which shows what the sandbox itself costs.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{Criterion, criterion_group, criterion_main};
use model_pusher::inputs::{Metrics, Settings};
use model_pusher::policy::{
    Allocation, CacheOutcome, ChampionInput, CompiledCache, DecisionInput, Limits, PolicyRuntime,
};
use serde_json::json;

/// The allocators every runtime-level benchmark is run with, by the name it reports under.
const ALLOCATIONS: [(&str, Allocation); 2] = [
    ("on_demand", Allocation::OnDemand),
    ("pooling", Allocation::Pooling),
];

fn threshold_path() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/policies/threshold.wasm");
    assert!(
        path.is_file(),
        "{} is missing: build the policies with `cargo xtask policies`",
        path.display()
    );
    path
}

fn metrics(pairs: &[(&str, f64)]) -> Metrics {
    Metrics::from_values(pairs.iter().map(|(name, value)| (name.to_string(), *value)))
}

const CANDIDATE: [(&str, f64); 4] = [
    ("accuracy", 0.95),
    ("precision", 0.93),
    ("recall", 0.91),
    ("auc", 0.97),
];

const CHAMPION: [(&str, f64); 4] = [
    ("accuracy", 0.90),
    ("precision", 0.89),
    ("recall", 0.88),
    ("auc", 0.94),
];

/// The seed's `model_comparison` settings and a candidate that beats the champion by 5.6%.
fn seed_input() -> DecisionInput {
    DecisionInput {
        model_name: "spam_detection_model".to_owned(),
        candidate_run_id: Some("candidate-run".to_owned()),
        candidate: metrics(&CANDIDATE),
        champion: Some(ChampionInput {
            version: "3".to_owned(),
            run_id: "champion-run".to_owned(),
            metrics: metrics(&CHAMPION),
        }),
        settings: Settings::from_json(
            "params.yaml",
            json!({
                "improvement_threshold": 0.05,
                "primary_metric": "accuracy",
                "comparison_metrics": ["precision", "recall", "f1_score"],
            }),
        ),
    }
}

fn runtime(allocation: Allocation, cache: Option<CompiledCache>) -> PolicyRuntime {
    PolicyRuntime::with_allocation(Limits::default(), cache, allocation)
        .expect("the runtime configures")
}

/// (a) Compiling the component from its bytes, as a load without a cache does.
fn compile(c: &mut Criterion) {
    let path = threshold_path();
    let bytes = std::fs::read(&path).expect("the policy reads");
    let mut group = c.benchmark_group("compile");
    // A compile takes tens of milliseconds: fewer samples keep the run short and still steady.
    group.sample_size(20);
    for (name, allocation) in ALLOCATIONS {
        let runtime = runtime(allocation, None);
        group.bench_function(name, |b| {
            b.iter(|| runtime.load_bytes(&path, black_box(&bytes)).expect("loads"));
        });
    }
    group.finish();
}

/// (b) Loading from a warm on-disk cache: read, MAC check, deserialize, pre-instantiate and
/// `describe`.
fn cached_load(c: &mut Criterion) {
    let path = threshold_path();
    let mut group = c.benchmark_group("cached_load");
    for (name, allocation) in ALLOCATIONS {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let runtime = runtime(
            allocation,
            Some(CompiledCache::open(dir.path()).expect("the cache opens")),
        );
        runtime.load(&path).expect("the first load compiles");
        // A benchmark of a miss would pass for one of a hit: make sure it is one.
        assert_eq!(
            runtime.load(&path).expect("loads").cache_outcome(),
            &CacheOutcome::Hit
        );
        group.bench_function(name, |b| {
            b.iter(|| runtime.load(black_box(&path)).expect("loads"));
        });
    }
    group.finish();
}

/// (c) One decision with the engine and the policy already loaded: a fresh store, an instance
/// from the pre-instantiated component, the call, and the conversion back.
fn instantiate_and_decide(c: &mut Criterion) {
    let path = threshold_path();
    let input = seed_input();
    let mut group = c.benchmark_group("instantiate_and_decide");
    for (name, allocation) in ALLOCATIONS {
        let runtime = runtime(allocation, None);
        let policy = runtime.load(&path).expect("loads");
        let decision = policy.decide(&input).expect("decides");
        assert_eq!(decision.verdict, model_pusher::decision::Verdict::Promote);
        group.bench_function(name, |b| {
            b.iter(|| policy.decide(black_box(&input)).expect("decides"));
        });
    }
    group.finish();
}

/// A policy engine's verdict, as far as the floor needs one.
#[derive(Debug, PartialEq)]
enum Verdict {
    Promote,
    Hold,
    Reject,
}

/// The threshold rule as plain Rust: promote when accuracy gains at least 5% relative to the
/// champion (within 1e-9), hold when it does not or the champion's value is unusable, reject a
/// candidate without a finite accuracy, promote when there is no champion.
fn threshold_rule(
    candidate: &BTreeMap<String, f64>,
    champion: Option<&BTreeMap<String, f64>>,
) -> Verdict {
    const METRIC: &str = "accuracy";
    const THRESHOLD: f64 = 0.05;
    let Some(&cand) = candidate.get(METRIC).filter(|value| value.is_finite()) else {
        return Verdict::Reject;
    };
    let Some(champion) = champion else {
        return Verdict::Promote;
    };
    let Some(&champ) = champion.get(METRIC).filter(|value| value.is_finite()) else {
        return Verdict::Hold;
    };
    // A champion of 0 gives +inf for a gain and NaN for no change, which fails the comparison,
    // as the policy has it.
    if (cand - champ) / champ.abs() >= THRESHOLD - 1e-9 {
        Verdict::Promote
    } else {
        Verdict::Hold
    }
}

/// (d) The floor: the same rule with no sandbox, no copy of the input and no report.
fn plain_rust(c: &mut Criterion) {
    let input = seed_input();
    let candidate = &input.candidate.values;
    let champion = input
        .champion
        .as_ref()
        .map(|champion| &champion.metrics.values);
    assert_eq!(threshold_rule(candidate, champion), Verdict::Promote);
    c.bench_function("plain_rust", |b| {
        b.iter(|| threshold_rule(black_box(candidate), black_box(champion)));
    });
}

criterion_group!(
    benches,
    compile,
    cached_load,
    instantiate_and_decide,
    plain_rust
);
criterion_main!(benches);
