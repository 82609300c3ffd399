//! A deliberately misbehaving policy, for the host's sandbox tests only; it is never bundled.
//!
//! The settings key `attack` chooses the misbehaviour (see [`Attack`]); without it the policy
//! promotes, which proves the component itself loads and runs.

use std::hint::black_box;

use policy_kit::report::setting;
use policy_kit::{Decision, DecisionInput, Level, Policy, PolicyInfo, Settings, Verdict, log};

/// The hostile policy.
pub struct Hostile;

/// The misbehaviours the `attack` setting can choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attack {
    /// `loop`: spins forever; the host must interrupt it (fuel or epoch deadline).
    Loop,
    /// `memory`: allocates 1 MiB blocks without bound, touching every byte.
    Memory,
    /// `recursion`: recurses without bound until the stack runs out.
    Recursion,
    /// `huge-reason`: returns a promote decision with a 16 MiB reason.
    HugeReason,
    /// `trap`: executes `unreachable`.
    Trap,
    /// `panic`: panics, which the kit's hook reports to the host's log before trapping.
    Panic,
    /// `error`: returns an error instead of a decision.
    Error,
    /// `log-flood`: calls the host's log 1,000,000 times.
    LogFlood,
}

impl Attack {
    /// Reads `attack`; `None` when absent.
    ///
    /// # Errors
    ///
    /// When `attack` is not text or names no known attack.
    pub fn from_settings(settings: &Settings) -> Result<Option<Self>, String> {
        let Some(name) = settings.string("attack")? else {
            return Ok(None);
        };
        let attack = match name {
            "loop" => Attack::Loop,
            "memory" => Attack::Memory,
            "recursion" => Attack::Recursion,
            "huge-reason" => Attack::HugeReason,
            "trap" => Attack::Trap,
            "panic" => Attack::Panic,
            "error" => Attack::Error,
            "log-flood" => Attack::LogFlood,
            other => {
                return Err(format!(
                    "setting attack must be one of loop, memory, recursion, huge-reason, trap, panic, error, log-flood, got \"{other}\""
                ));
            }
        };
        Ok(Some(attack))
    }
}

/// The number of log calls `log-flood` makes.
pub const LOG_FLOOD_CALLS: u32 = 1_000_000;

/// The length in bytes of the reason `huge-reason` returns.
pub const HUGE_REASON_BYTES: usize = 16 * 1024 * 1024;

impl Policy for Hostile {
    fn describe() -> PolicyInfo {
        PolicyInfo {
            name: "hostile".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            description: "Misbehaves on purpose, as the attack setting says, to test the host's sandbox. Never use it to decide a promotion.".to_string(),
            settings: vec![setting(
                "attack",
                "one of loop, memory, recursion, huge-reason, trap, panic, error, log-flood; absent promotes",
                None,
            )],
        }
    }

    fn decide(_input: &DecisionInput, settings: &Settings) -> Result<Decision, String> {
        let promote = |reason: String| Decision {
            verdict: Verdict::Promote,
            reason,
            checks: Vec::new(),
        };
        match Attack::from_settings(settings)? {
            None => Ok(promote(
                "hostile policy promotes when no attack is set".to_string(),
            )),
            Some(Attack::Loop) => spin_forever(),
            Some(Attack::Memory) => exhaust_memory(),
            Some(Attack::Recursion) => Ok(promote(format!("recursed {}", recurse(0)))),
            Some(Attack::HugeReason) => Ok(promote("x".repeat(HUGE_REASON_BYTES))),
            Some(Attack::Trap) => trap(),
            Some(Attack::Panic) => panic!("hostile policy panicked on purpose"),
            Some(Attack::Error) => Err("hostile policy refuses to decide on purpose".to_string()),
            Some(Attack::LogFlood) => {
                // One fixed line, so that the flood costs the guest little fuel and the
                // host's handling of the calls is what gets tested.
                for _ in 0..LOG_FLOOD_CALLS {
                    log(Level::Info, "hostile policy floods the log on purpose");
                }
                Ok(promote(format!("logged {LOG_FLOOD_CALLS} lines")))
            }
        }
    }
}

fn spin_forever() -> ! {
    let mut turns: u64 = 0;
    loop {
        // black_box keeps the loop observable so that it is not folded away.
        turns = black_box(turns.wrapping_add(1));
    }
}

fn exhaust_memory() -> ! {
    const BLOCK: usize = 1024 * 1024;
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut block = vec![0u8; BLOCK];
        // Writing every page makes the memory real, not merely reserved.
        for byte in block.iter_mut().step_by(4096) {
            *byte = 1;
        }
        hoard.push(black_box(block));
        black_box(&hoard);
    }
}

/// Recurses until the stack runs out: the exit is behind `black_box`, so the compiler cannot
/// see that it is never taken, and the frame's buffer and the addition after the call keep the
/// recursion from becoming a loop or a tail call.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    if black_box(false) {
        return depth;
    }
    let frame = black_box([depth as u8; 256]);
    let deeper = recurse(black_box(depth + 1));
    deeper.wrapping_add(u64::from(frame[(depth % 256) as usize]))
}

fn trap() -> ! {
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    std::process::abort();
}

policy_kit::export_policy!(Hostile);

#[cfg(test)]
mod tests {
    use super::*;
    use policy_kit::decide_with;
    use policy_kit::fixtures::{candidate, input};

    fn attack(settings: &str) -> Result<Option<Attack>, String> {
        Settings::parse(settings).and_then(|settings| Attack::from_settings(&settings))
    }

    #[test]
    fn promotes_when_no_attack_is_set() {
        let decided = decide_with::<Hostile>(&input(candidate(&[]), None, "{}"));
        assert!(decided.is_ok_and(|decision| decision.verdict == Verdict::Promote));
    }

    #[test]
    fn the_error_attack_returns_an_error() {
        let decided =
            decide_with::<Hostile>(&input(candidate(&[]), None, r#"{"attack": "error"}"#));
        assert_eq!(
            decided.err().as_deref(),
            Some("hostile policy refuses to decide on purpose")
        );
    }

    #[test]
    fn the_huge_reason_attack_returns_sixteen_mebibytes() {
        let decided =
            decide_with::<Hostile>(&input(candidate(&[]), None, r#"{"attack": "huge-reason"}"#));
        assert!(decided.is_ok_and(|decision| decision.reason.len() == HUGE_REASON_BYTES));
    }

    #[test]
    fn reads_every_attack_by_name() {
        assert_eq!(attack(r#"{"attack": "loop"}"#), Ok(Some(Attack::Loop)));
        assert_eq!(attack(r#"{"attack": "memory"}"#), Ok(Some(Attack::Memory)));
        assert_eq!(
            attack(r#"{"attack": "recursion"}"#),
            Ok(Some(Attack::Recursion))
        );
        assert_eq!(attack(r#"{"attack": "trap"}"#), Ok(Some(Attack::Trap)));
        assert_eq!(attack(r#"{"attack": "panic"}"#), Ok(Some(Attack::Panic)));
        assert_eq!(
            attack(r#"{"attack": "log-flood"}"#),
            Ok(Some(Attack::LogFlood))
        );
    }

    #[test]
    fn an_unknown_attack_is_an_error_naming_the_key() {
        assert!(
            attack(r#"{"attack": "nope"}"#).is_err_and(|err| err.starts_with("setting attack "))
        );
    }

    #[test]
    fn describes_itself_as_hostile() {
        assert_eq!(Hostile::describe().name, "hostile");
    }
}
