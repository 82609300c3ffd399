//! Hostile policies end in bounded time, each with its own error, and never yield a verdict.

use std::path::Path;
use std::time::Duration;

use model_pusher::policy::{Limits, Policy, PolicyError, PolicyRuntime};
use serde_json::json;

use crate::support::policies;

/// Limits tighter than the defaults, so that the breaches come quickly.
fn tight_limits() -> Limits {
    Limits {
        deadline: Duration::from_millis(300),
        memory: 16 << 20,
        ..Limits::default()
    }
}

fn hostile() -> Policy {
    let runtime = PolicyRuntime::new(tight_limits(), Some(policies::cache())).unwrap();
    runtime
        .load(&policies::dir().join("testing/hostile.wasm"))
        .unwrap_or_else(|error| {
            panic!("{error}: build the test guests with `cargo xtask policies`")
        })
}

fn attack(name: &str) -> Result<model_pusher::decision::Decision, PolicyError> {
    hostile().decide(&policies::input(
        json!({ "attack": name }),
        &[("accuracy", 0.9)],
        None,
    ))
}

#[test]
fn hostile_policy_without_an_attack_promotes() {
    // The control: the errors below come from the attacks, not from a policy that never works.
    let decision = attack_free();
    assert_eq!(decision.verdict, model_pusher::decision::Verdict::Promote);
}

fn attack_free() -> model_pusher::decision::Decision {
    hostile()
        .decide(&policies::input(json!({}), &[("accuracy", 0.9)], None))
        .unwrap()
}

#[test]
fn infinite_loop_ends_at_the_deadline() {
    let error = attack("loop").unwrap_err();
    assert!(matches!(error, PolicyError::Deadline { .. }), "{error:?}");
    assert_eq!(error.to_string(), "policy exceeded its 300 ms deadline");
}

#[test]
fn memory_bomb_ends_at_the_memory_limit() {
    let error = attack("memory").unwrap_err();
    assert!(matches!(error, PolicyError::Memory { .. }), "{error:?}");
    assert_eq!(error.to_string(), "policy exceeded its 16 MiB memory limit");
}

#[test]
fn deep_recursion_in_rust_ends_when_its_stack_runs_into_address_zero() {
    let error = attack("recursion").unwrap_err();
    assert!(matches!(error, PolicyError::Trap { .. }), "{error:?}");
    assert!(error.to_string().contains("unbounded recursion"), "{error}");
}

#[test]
fn deep_recursion_on_the_native_stack_ends_at_the_stack_limit() {
    // A core module without wit-bindgen's metadata, exporting the canonical ABI by hand: its
    // `describe` returns an all-empty record and its `decide` recurses on wasm's own stack.
    let module = wat::parse_str(
        r#"(module
            (memory (export "memory") 1)
            (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) i32.const 4096)
            (func (export "model-pusher:policy/rules@0.1.0#describe") (result i32) i32.const 1024)
            (func $deeper (param i32) (result i32)
                (i32.add (call $deeper (i32.add (local.get 0) (i32.const 1))) (i32.const 1)))
            (func (export "model-pusher:policy/rules@0.1.0#decide") (param i32) (result i32)
                (call $deeper (i32.const 0))))"#,
    )
    .unwrap();
    let runtime = PolicyRuntime::new(tight_limits(), None).unwrap();
    let policy = runtime
        .load_bytes(Path::new("recursive.wasm"), &module)
        .unwrap();
    let error = policy
        .decide(&policies::input(json!({}), &[("accuracy", 0.9)], None))
        .unwrap_err();
    assert!(matches!(error, PolicyError::Stack { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        "policy exceeded its 512 KiB stack limit (unbounded recursion?)"
    );
}

#[test]
fn huge_reason_is_refused_by_the_output_limit() {
    let runtime = PolicyRuntime::new(
        Limits {
            memory: 64 << 20,
            ..tight_limits()
        },
        Some(policies::cache()),
    )
    .unwrap();
    let policy = runtime
        .load(&policies::dir().join("testing/hostile.wasm"))
        .unwrap();
    let error = policy
        .decide(&policies::input(
            json!({ "attack": "huge-reason" }),
            &[("accuracy", 0.9)],
            None,
        ))
        .unwrap_err();
    assert!(matches!(error, PolicyError::Output { .. }), "{error:?}");
    assert!(error.to_string().contains("64 KiB output limit"), "{error}");
}

#[test]
fn trap_is_reported_as_a_trap() {
    let error = attack("trap").unwrap_err();
    assert!(matches!(error, PolicyError::Trap { .. }), "{error:?}");
    assert!(error.to_string().contains("unreachable"), "{error}");
}

#[test]
fn panic_message_reaches_the_error() {
    let error = attack("panic").unwrap_err();
    assert!(matches!(error, PolicyError::Trap { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .contains("hostile policy panicked on purpose"),
        "{error}"
    );
}

#[test]
fn refusal_is_an_error_not_a_verdict() {
    let error = attack("error").unwrap_err();
    assert!(matches!(error, PolicyError::Refused(_)), "{error:?}");
}

#[test]
fn log_flood_is_capped_and_ends_in_bounded_time() {
    // Either the policy finishes with its log cut at the cap, or the deadline stops it first;
    // both are bounded, and the flood never reaches the log whole.
    match attack("log-flood") {
        Ok(decision) => assert_eq!(decision.verdict, model_pusher::decision::Verdict::Promote),
        Err(error) => assert!(matches!(error, PolicyError::Deadline { .. }), "{error:?}"),
    }
}

#[test]
fn component_of_the_wrong_world_is_told_what_is_missing() {
    let component = wat::parse_str(
        r#"(component
            (core module $m (func (export "run")))
            (core instance $i (instantiate $m))
            (func $run (canon lift (core func $i "run")))
            (instance $api (export "run" (func $run)))
            (export "acme:other/api@1.0.0" (instance $api)))"#,
    )
    .unwrap();
    let error = policies::runtime()
        .load_bytes(Path::new("other.wasm"), &component)
        .unwrap_err();
    assert!(matches!(error, PolicyError::WrongWorld { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("does not export `model-pusher:policy/rules@0.1.0`"),
        "{message}"
    );
    assert!(message.contains("acme:other/api@1.0.0"), "{message}");
}

#[test]
fn component_with_an_unknown_import_is_told_what_it_cannot_have() {
    let component =
        wat::parse_str(r#"(component (import "acme:secrets/vault@1.0.0" (instance)))"#).unwrap();
    let error = policies::runtime()
        .load_bytes(Path::new("vault.wasm"), &component)
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("it imports acme:secrets/vault@1.0.0"),
        "{error}"
    );
}

#[test]
fn file_that_is_not_wasm_is_rejected() {
    let error = policies::runtime()
        .load_bytes(Path::new("policy.py"), b"def decide(): return 'promote'\n")
        .unwrap_err();
    assert!(matches!(error, PolicyError::NotWasm { .. }), "{error:?}");
    assert!(error.to_string().contains("policy.py"), "{error}");
}

#[test]
fn core_module_is_made_a_component_in_process() {
    let module = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/wasm/wasm32-unknown-unknown/release/threshold.wasm");
    let bytes = std::fs::read(&module).unwrap_or_else(|error| {
        panic!("{}: {error}; run `cargo xtask policies`", module.display())
    });
    let policy = policies::runtime().load_bytes(&module, &bytes).unwrap();
    assert_eq!(policy.info().name, "threshold");
}

#[test]
fn every_decision_names_the_policy_sha256() {
    let decision = attack_free();
    let bytes = std::fs::read(policies::dir().join("testing/hostile.wasm")).unwrap();
    use sha2::Digest as _;
    assert_eq!(
        decision.policy.sha256,
        hex::encode(sha2::Sha256::digest(bytes))
    );
}

/// The pooling allocator, which the decision benchmark offers for long-lived hosts, keeps every
/// limit: the memory cap is still the limiter's and is reported as such, the deadline still
/// holds, and the pool's slots are reused across decisions.
#[test]
fn pooling_runtime_keeps_the_limits() {
    use model_pusher::policy::{Allocation, POOLED_INSTANCES};

    let runtime = PolicyRuntime::with_allocation(
        tight_limits(),
        Some(policies::cache()),
        Allocation::Pooling,
    )
    .unwrap();
    let hostile = runtime
        .load(&policies::dir().join("testing/hostile.wasm"))
        .unwrap();
    let attack = |name: &str| {
        hostile.decide(&policies::input(
            json!({ "attack": name }),
            &[("accuracy", 0.9)],
            None,
        ))
    };
    let error = attack("memory").unwrap_err();
    assert_eq!(error.to_string(), "policy exceeded its 16 MiB memory limit");
    let error = attack("loop").unwrap_err();
    assert!(matches!(error, PolicyError::Deadline { .. }), "{error:?}");

    let threshold = runtime.load(&policies::path("threshold")).unwrap();
    let input = policies::input(
        json!({ "primary_metric": "accuracy", "improvement_threshold": 0.05 }),
        &[("accuracy", 0.95)],
        Some(&[("accuracy", 0.90)]),
    );
    // More decisions than the pool has slots: each one's slot comes back.
    for _ in 0..POOLED_INSTANCES * 2 {
        let decision = threshold.decide(&input).unwrap();
        assert_eq!(decision.verdict, model_pusher::decision::Verdict::Promote);
    }
}
