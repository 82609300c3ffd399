//! The routes a team takes to its own policy, end to end: a crate made by `policy new` and built
//! the way xtask builds the bundled policies, the Python threshold policy against the Rust one,
//! and the significance policy, each through `policy test` cases and the real runtime.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use model_pusher::cases::{self, CaseResult};
use model_pusher::policy::Policy;

use crate::support::policies;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn model_pusher(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_model-pusher"))
        .args(args)
        .env("MODEL_PUSHER_CACHE_DIR", cache)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Builds the policy in `dir` with `cargo xtask build-policy`, the route `cargo xtask policies`
/// takes; a missing wasm toolchain fails here with xtask's message saying how to install it.
fn build_policy(dir: &Path) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(repository())
        .args(["xtask", "build-policy"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cargo xtask build-policy {} failed:\n{}",
        dir.display(),
        text(&output.stderr)
    );
    PathBuf::from(text(&output.stdout).trim())
}

/// The Python threshold policy built by `cargo xtask python-policies`, loaded once per test
/// binary (it is 18 MB of CPython to compile), or a loud failure that says how to build it.
fn python_threshold() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| {
        let path = policies::dir().join("python/threshold.wasm");
        assert!(
            path.is_file(),
            "{} is missing: build it with `cargo xtask python-policies`, which needs \
             componentize-py (`scripts/setup.sh` installs it into .venv), or run every test \
             with `cargo xtask test`",
            path.display()
        );
        policies::runtime().load(&path).unwrap()
    })
}

fn case_file(policy: &str) -> PathBuf {
    repository()
        .join("policies")
        .join(policy)
        .join("cases.yaml")
}

fn assert_all_passed(results: &[CaseResult]) {
    assert!(!results.is_empty());
    let failed: Vec<String> = results
        .iter()
        .filter_map(|result| {
            let failure = result.failure.as_ref()?;
            Some(format!("{}: {failure} ({})", result.name, result.reason))
        })
        .collect();
    assert!(failed.is_empty(), "failed cases:\n{}", failed.join("\n"));
}

#[test]
fn a_policy_made_by_policy_new_builds_and_passes_its_cases() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("churn-guard");
    let cache = scratch.path().join("cache");

    let made = model_pusher(
        &[
            "policy",
            "new",
            "churn-guard",
            "--dir",
            dir.to_str().unwrap(),
        ],
        &cache,
    );
    assert!(made.status.success(), "{}", text(&made.stderr));
    for file in [
        "Cargo.toml",
        "Cargo.lock",
        "src/lib.rs",
        "cases.yaml",
        "README.md",
    ] {
        assert!(dir.join(file).is_file(), "policy new did not write {file}");
    }

    let component = build_policy(&dir);
    assert_eq!(component, dir.join("target/churn-guard.wasm"));

    let cases = dir.join("cases.yaml");
    let tested = model_pusher(
        &[
            "policy",
            "test",
            component.to_str().unwrap(),
            cases.to_str().unwrap(),
        ],
        &cache,
    );
    let report = text(&tested.stdout);
    assert_eq!(
        tested.status.code(),
        Some(0),
        "{report}{}",
        text(&tested.stderr)
    );
    assert!(
        report.contains("7 passed, 0 failed (policy churn-guard 0.1.0"),
        "{report}"
    );

    let inspected = model_pusher(&["policy", "inspect", component.to_str().unwrap()], &cache);
    assert!(text(&inspected.stdout).contains("\"worst_acceptable\""));
}

#[test]
fn a_case_the_new_policy_decides_otherwise_fails_policy_test() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("strict");
    let cache = scratch.path().join("cache");
    let made = model_pusher(
        &["policy", "new", "strict", "--dir", dir.to_str().unwrap()],
        &cache,
    );
    assert!(made.status.success(), "{}", text(&made.stderr));
    let component = build_policy(&dir);

    let wrong = scratch.path().join("wrong.yaml");
    std::fs::write(
        &wrong,
        "settings: {worst_acceptable: 0.7}\ncases:\n  - name: a_first_model_below_the_floor\n    \
         candidate: {accuracy: 0.6}\n    expect: promote\n",
    )
    .unwrap();
    let tested = model_pusher(
        &[
            "policy",
            "test",
            component.to_str().unwrap(),
            wrong.to_str().unwrap(),
        ],
        &cache,
    );
    assert_eq!(tested.status.code(), Some(6), "{}", text(&tested.stdout));
    assert!(
        text(&tested.stdout)
            .contains("FAIL  a_first_model_below_the_floor: expected promote, got reject")
    );
}

#[test]
fn policy_new_refuses_a_name_that_cannot_be_a_crate() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("x");
    let made = model_pusher(
        &[
            "policy",
            "new",
            "Churn_Guard",
            "--dir",
            dir.to_str().unwrap(),
        ],
        scratch.path(),
    );
    assert_eq!(made.status.code(), Some(2));
    assert!(text(&made.stderr).contains("policy name \"Churn_Guard\""));
    assert!(!dir.exists(), "a refused crate leaves nothing behind");
}

#[test]
fn the_python_threshold_policy_decides_every_threshold_case_as_the_rust_one() {
    let python = python_threshold();
    let rust = policies::bundled("threshold");
    let cases = case_file("threshold");

    let from_python = cases::run(python, &cases).unwrap();
    let from_rust = cases::run(rust, &cases).unwrap();
    assert_all_passed(&from_python);
    assert_all_passed(&from_rust);
    assert_eq!(from_python.len(), from_rust.len());
    for (python, rust) in from_python.iter().zip(&from_rust) {
        assert_eq!(python.name, rust.name);
        let verdict = |result: &CaseResult| result.outcome.as_ref().ok().copied();
        assert_eq!(verdict(python), verdict(rust), "case {}", python.name);
        assert_eq!(
            python.outcome.is_err(),
            rust.outcome.is_err(),
            "case {}",
            python.name
        );
        // The Python port writes the Rust policy's reasons word for word.
        if rust.outcome.is_ok() {
            assert_eq!(python.reason, rust.reason, "case {}", python.name);
        }
    }
}

#[test]
fn the_python_threshold_policy_describes_itself() {
    let info = python_threshold().info();
    assert_eq!(info.name, "python-threshold");
    assert!(
        info.settings
            .iter()
            .any(|s| s.key == "improvement_threshold")
    );
}

#[test]
fn the_significance_policy_passes_its_cases() {
    let policy = policies::runtime()
        .load(&policies::path("significance"))
        .unwrap();
    assert_all_passed(&cases::run(&policy, &case_file("significance")).unwrap());
}

#[test]
fn a_decision_that_outgrows_the_kits_arena_still_decides() {
    // 40,000 paired samples are 640 KB of lists, past the kit's 256 KiB allocation arena: the
    // policy must carry on with the standard allocator and reach the same kind of verdict.
    const SAMPLES: usize = 40_000;
    let correct = |right: usize| -> Vec<f64> {
        (0..SAMPLES)
            .map(|sample| if sample < right { 1.0 } else { 0.0 })
            .collect()
    };
    let mut input = policies::input(
        serde_json::json!({"primary_metric": "accuracy"}),
        &[("accuracy", 0.9)],
        Some(&[("accuracy", 0.75)]),
    );
    input
        .candidate
        .series
        .insert("accuracy_samples".to_owned(), correct(SAMPLES * 9 / 10));
    let champion = input.champion.as_mut().unwrap();
    champion
        .metrics
        .series
        .insert("accuracy_samples".to_owned(), correct(SAMPLES * 3 / 4));

    let policy = policies::runtime()
        .load(&policies::path("significance"))
        .unwrap();
    let decision = policy.decide(&input).unwrap();
    assert_eq!(
        decision.verdict,
        model_pusher::decision::Verdict::Promote,
        "{}",
        decision.reason
    );
    assert!(
        decision.reason.contains("40000 samples"),
        "{}",
        decision.reason
    );
}
