//! Building the checks and verdicts a decision is made of.

use crate::{Check, Setting, Verdict};

/// A check of `metric`: what the candidate and the champion reported, what was required of
/// the candidate in words, and whether it passed.
pub fn check(
    metric: &str,
    candidate: Option<f64>,
    champion: Option<f64>,
    requirement: impl Into<String>,
    passed: bool,
) -> Check {
    Check {
        metric: metric.to_string(),
        candidate,
        champion,
        requirement: requirement.into(),
        passed,
    }
}

/// How severe a verdict is: reject beats hold beats promote.
pub fn severity(verdict: Verdict) -> u8 {
    match verdict {
        Verdict::Promote => 0,
        Verdict::Hold => 1,
        Verdict::Reject => 2,
    }
}

/// The more severe of two verdicts.
pub fn stricter(a: Verdict, b: Verdict) -> Verdict {
    if severity(b) > severity(a) { b } else { a }
}

/// The verdict's name, as operators read it: `promote`, `hold` or `reject`.
pub fn verdict_name(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Promote => "promote",
        Verdict::Hold => "hold",
        Verdict::Reject => "reject",
    }
}

/// A setting a policy reads, for [`PolicyInfo`](crate::PolicyInfo); `default` is JSON, `None`
/// when the key is required.
pub fn setting(key: &str, description: &str, default: Option<&str>) -> Setting {
    Setting {
        key: key.to_string(),
        description: description.to_string(),
        default_value: default.map(str::to_string),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reject_beats_hold_beats_promote() {
        assert_eq!(stricter(Verdict::Promote, Verdict::Hold), Verdict::Hold);
        assert_eq!(stricter(Verdict::Reject, Verdict::Hold), Verdict::Reject);
        assert_eq!(stricter(Verdict::Hold, Verdict::Promote), Verdict::Hold);
        assert_eq!(
            stricter(Verdict::Promote, Verdict::Promote),
            Verdict::Promote
        );
    }
}
