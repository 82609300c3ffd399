//! The decision a policy makes about a candidate, as the host records and prints it.

use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize, Serializer};

/// What happens to the candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The candidate becomes the champion.
    Promote,
    /// The candidate is registered as a challenger; the champion stays.
    Hold,
    /// The candidate must not be served; it is registered for lineage only.
    Reject,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Promote => "promote",
            Verdict::Hold => "hold",
            Verdict::Reject => "reject",
        })
    }
}

/// One metric the policy looked at and what it required of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    pub metric: String,
    #[serde(serialize_with = "metric_value")]
    pub candidate: Option<f64>,
    #[serde(serialize_with = "metric_value")]
    pub champion: Option<f64>,
    pub requirement: String,
    pub passed: bool,
}

/// The policy that made a decision, pinned by the sha256 of its file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyRef {
    pub name: String,
    pub version: String,
    pub sha256: String,
}

/// A policy's decision about one candidate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub verdict: Verdict,
    pub reason: String,
    pub checks: Vec<Check>,
    pub policy: PolicyRef,
}

/// Writes a metric value as a JSON number when finite, else as MLflow spells it ("NaN",
/// "Infinity", "-Infinity"), so that a NaN the policy judged is not silently turned into null.
fn metric_value<S: Serializer>(value: &Option<f64>, serializer: S) -> Result<S::Ok, S::Error> {
    match value {
        None => serializer.serialize_none(),
        Some(value) if value.is_finite() => serializer.serialize_f64(*value),
        Some(value) => serializer.serialize_str(&format_value(Some(*value))),
    }
}

fn format_value(value: Option<f64>) -> String {
    match value {
        None => "-".to_owned(),
        Some(value) if value.is_nan() => "NaN".to_owned(),
        Some(value) if value == f64::INFINITY => "Infinity".to_owned(),
        Some(value) if value == f64::NEG_INFINITY => "-Infinity".to_owned(),
        Some(value) => format!("{value}"),
    }
}

impl Decision {
    /// The decision as a readable table: the verdict, the reason, then one row per check.
    pub fn table(&self) -> String {
        let headers = ["metric", "candidate", "champion", "required", "passed"];
        let rows: Vec<[String; 5]> = self
            .checks
            .iter()
            .map(|check| {
                [
                    check.metric.clone(),
                    format_value(check.candidate),
                    format_value(check.champion),
                    check.requirement.clone(),
                    if check.passed { "yes" } else { "NO" }.to_owned(),
                ]
            })
            .collect();
        let mut widths = headers.map(str::len);
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }

        let mut out = String::new();
        let _ = writeln!(
            out,
            "verdict: {}  (policy {} {}, sha256 {})",
            self.verdict,
            self.policy.name,
            self.policy.version,
            short_sha(&self.policy.sha256)
        );
        let _ = writeln!(out, "reason:  {}", self.reason);
        if rows.is_empty() {
            return out;
        }
        let line = |out: &mut String, cells: &[&str]| {
            let padded: Vec<String> = cells
                .iter()
                .zip(widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            let _ = writeln!(out, "  {}", padded.join("  ").trim_end());
        };
        line(&mut out, &headers);
        for row in &rows {
            line(&mut out, &row.each_ref().map(String::as_str));
        }
        out
    }

    /// The decision as Markdown, for a report a browser renders (Kubeflow's UI shows a
    /// `system.Markdown` artifact): the verdict, the reason, the policy pinned by its full
    /// sha256, then a table of the checks. Values that are not finite are spelled as MLflow
    /// spells them (`NaN`), never left blank.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "**Verdict:** {}\n", self.verdict);
        let _ = writeln!(out, "**Reason:** {}\n", inline(&self.reason));
        let _ = writeln!(
            out,
            "**Policy:** {} {} (sha256 `{}`)",
            inline(&self.policy.name),
            inline(&self.policy.version),
            self.policy.sha256
        );
        if self.checks.is_empty() {
            let _ = writeln!(out, "\nThe policy reported no checks.");
            return out;
        }
        let _ = writeln!(
            out,
            "\n| metric | candidate | champion | required | passed |"
        );
        let _ = writeln!(out, "| --- | ---: | ---: | --- | --- |");
        for check in &self.checks {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                cell(&check.metric),
                format_value(check.candidate),
                format_value(check.champion),
                cell(&check.requirement),
                if check.passed { "yes" } else { "**no**" }
            );
        }
        out
    }
}

/// Text a policy wrote, made safe for one line of Markdown: a newline would end the line (or
/// the table row) early, and raw HTML is not what the policy meant to show.
fn inline(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Text for a Markdown table cell: one line, with its pipes escaped so that they do not split
/// the cell.
fn cell(text: &str) -> String {
    inline(text).replace('|', "\\|")
}

fn short_sha(sha256: &str) -> &str {
    sha256.get(..12).unwrap_or(sha256)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision() -> Decision {
        Decision {
            verdict: Verdict::Reject,
            reason: "accuracy is NaN".to_owned(),
            checks: vec![Check {
                metric: "accuracy".to_owned(),
                candidate: Some(f64::NAN),
                champion: Some(0.9),
                requirement: "a finite value".to_owned(),
                passed: false,
            }],
            policy: PolicyRef {
                name: "threshold".to_owned(),
                version: "0.1.0".to_owned(),
                sha256: "ab".repeat(32),
            },
        }
    }

    #[test]
    fn json_keeps_nan_as_mlflow_spells_it() {
        let json = serde_json::to_value(decision()).unwrap();
        assert_eq!(json["verdict"], "reject");
        assert_eq!(json["checks"][0]["candidate"], "NaN");
        assert_eq!(json["checks"][0]["champion"], 0.9);
    }

    #[test]
    fn markdown_shows_verdict_policy_and_a_table_of_checks_with_nan() {
        let markdown = decision().markdown();
        assert!(markdown.starts_with("**Verdict:** reject\n"), "{markdown}");
        assert!(
            markdown.contains("**Reason:** accuracy is NaN"),
            "{markdown}"
        );
        assert!(
            markdown.contains(&format!("threshold 0.1.0 (sha256 `{}`)", "ab".repeat(32))),
            "{markdown}"
        );
        assert!(
            markdown.contains("| metric | candidate | champion | required | passed |"),
            "{markdown}"
        );
        assert!(
            markdown.contains("| accuracy | NaN | 0.9 | a finite value | **no** |"),
            "{markdown}"
        );
    }

    #[test]
    fn markdown_keeps_each_check_on_one_row_whatever_the_policy_wrote() {
        let mut decision = decision();
        decision.checks[0].requirement = "a | b\nc <script>".to_owned();
        decision.checks[0].champion = None;

        let markdown = decision.markdown();

        assert!(
            markdown.contains("| accuracy | NaN | - | a \\| b c &lt;script&gt; | **no** |"),
            "{markdown}"
        );
    }

    #[test]
    fn markdown_without_checks_says_so() {
        let mut decision = decision();
        decision.checks.clear();
        assert!(decision.markdown().contains("no checks"));
    }

    #[test]
    fn table_shows_verdict_reason_and_failed_checks() {
        let table = decision().table();
        assert!(table.starts_with("verdict: reject"), "{table}");
        assert!(table.contains("accuracy is NaN"), "{table}");
        assert!(table.contains("NO"), "{table}");
    }
}
