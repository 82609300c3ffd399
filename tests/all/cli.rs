//! The command line, end to end: the real binary on real files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::fixture::SEED_PARAMS;
use crate::support::policies;

fn model_pusher(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_model-pusher"))
        .args(args)
        .env("MODEL_PUSHER_POLICY_DIR", policies::dir())
        .env(
            "MODEL_PUSHER_CACHE_DIR",
            std::env::temp_dir().join("model-pusher-test-cache"),
        )
        .output()
        .unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn decide_prints_the_decision_as_json_and_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let params = write(dir.path(), "params.yaml", SEED_PARAMS);
    let candidate = write(
        dir.path(),
        "candidate.json",
        r#"{"accuracy": 0.95, "precision": 0.9}"#,
    );
    let champion = write(dir.path(), "champion.json", r#"{"accuracy": 0.90}"#);

    let output = model_pusher(&[
        "decide",
        "--params",
        params.to_str().unwrap(),
        "--candidate",
        candidate.to_str().unwrap(),
        "--champion",
        champion.to_str().unwrap(),
    ]);

    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let decision: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(decision["verdict"], "promote");
    assert_eq!(decision["policy"]["name"], "threshold");
    assert_eq!(decision["policy"]["sha256"].as_str().unwrap().len(), 64);
    assert!(text(&output.stderr).contains("verdict: promote"));
}

#[test]
fn decide_reads_the_seed_layout_with_python_nan() {
    let dir = tempfile::tempdir().unwrap();
    let params = write(dir.path(), "params.yaml", SEED_PARAMS);
    std::fs::create_dir(dir.path().join("metrics")).unwrap();
    write(
        &dir.path().join("metrics"),
        "metrics.json",
        r#"{"accuracy": NaN, "precision": 0.9, "recall": 0.8, "auc": Infinity}"#,
    );

    let output = model_pusher(&[
        "decide",
        "--params",
        params.to_str().unwrap(),
        "--candidate",
        dir.path().join("metrics").to_str().unwrap(),
    ]);

    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let decision: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(decision["verdict"], "reject");
    assert_eq!(decision["checks"][0]["candidate"], "NaN");
}

#[test]
fn decide_with_malformed_params_names_the_file_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let params = write(dir.path(), "params.yaml", "training:\n  epochs: 3\n");
    let candidate = write(dir.path(), "candidate.json", r#"{"accuracy": 0.95}"#);

    let output = model_pusher(&[
        "decide",
        "--params",
        params.to_str().unwrap(),
        "--candidate",
        candidate.to_str().unwrap(),
    ]);

    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(stderr.contains(params.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains("model_comparison"), "{stderr}");
    assert!(output.stdout.is_empty());
}

#[test]
fn decide_exits_5_without_a_decision_when_the_policy_breaks_a_limit() {
    let dir = tempfile::tempdir().unwrap();
    let params = write(
        dir.path(),
        "params.yaml",
        "model_comparison:\n  attack: loop\n",
    );
    let candidate = write(dir.path(), "candidate.json", r#"{"accuracy": 0.95}"#);
    let hostile = policies::dir().join("testing/hostile.wasm");

    let output = model_pusher(&[
        "decide",
        "--policy",
        hostile.to_str().unwrap(),
        "--policy-deadline-ms",
        "200",
        "--params",
        params.to_str().unwrap(),
        "--candidate",
        candidate.to_str().unwrap(),
    ]);

    assert_eq!(output.status.code(), Some(5));
    assert!(output.stdout.is_empty(), "{}", text(&output.stdout));
    assert!(
        text(&output.stderr).contains("policy exceeded its 200 ms deadline"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn policy_inspect_prints_name_settings_and_sha256() {
    let output = model_pusher(&["policy", "inspect", "threshold"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["info"]["name"], "threshold");
    assert_eq!(report["world"], "model-pusher:policy/policy@0.1.0");
    assert_eq!(report["sha256"].as_str().unwrap().len(), 64);
    assert!(report["info"]["settings"].as_array().unwrap().len() >= 4);
}

#[test]
fn policy_test_passes_the_bundled_cases() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (policy, cases) in [
        ("threshold", "policies/threshold/cases.yaml"),
        ("multi-metric", "policies/multi-metric/cases.yaml"),
    ] {
        let output = model_pusher(&["policy", "test", policy, root.join(cases).to_str().unwrap()]);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}{}",
            text(&output.stdout),
            text(&output.stderr)
        );
        assert!(
            text(&output.stdout).contains(" 0 failed"),
            "{}",
            text(&output.stdout)
        );
    }
}

#[test]
fn policy_test_fails_and_names_the_case_that_fails() {
    let dir = tempfile::tempdir().unwrap();
    let cases = write(
        dir.path(),
        "cases.yaml",
        "cases:
  - name: a_wrong_expectation
    candidate: {accuracy: 0.91}
    champion: {accuracy: 0.90}
    expect: promote
",
    );

    let output = model_pusher(&["policy", "test", "threshold", cases.to_str().unwrap()]);

    assert_eq!(output.status.code(), Some(6));
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("FAIL  a_wrong_expectation: expected promote, got hold"),
        "{stdout}"
    );
}
