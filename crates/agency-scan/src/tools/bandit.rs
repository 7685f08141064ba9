//! bandit: `bandit -f json`. bandit is single-threaded and the slowest of the three tools, so
//! the files are split into one shard per core and the shards run concurrently. Without a
//! bandit configuration in the repository, the run is kept selective: medium severity and
//! above, and `assert` (B101) is not reported, since it floods every test suite.

use std::process::Command;
use std::time::Instant;

use agency_core::Category;
use agency_core::contract::Severity;
use serde::Deserialize;

use super::{RawFinding, Tool, ToolOutcome, ToolRequest, exec, failure, tool_path};

/// bandit's own configuration files; with one of them the repository decides what is reported.
const CONFIG_FILES: &[&str] = &[".bandit", "bandit.yaml", "bandit.yml"];

pub(crate) fn run(request: &ToolRequest, started: Instant) -> ToolOutcome {
    let shards = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .clamp(1, 4)
        .min(request.files.len().max(1));
    let chunk = request.files.len().div_ceil(shards).max(1);
    let results: Vec<Result<Vec<RawFinding>, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = request
            .files
            .chunks(chunk)
            .map(|files| scope.spawn(move || run_shard(request, files)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("bandit shard panicked".to_string()))
            })
            .collect()
    });
    let mut findings = Vec::new();
    for result in results {
        match result {
            Ok(mut shard) => findings.append(&mut shard),
            Err(message) => {
                return ToolOutcome::failed(Tool::Bandit, &request.exe, started, message);
            }
        }
    }
    ToolOutcome::ok(Tool::Bandit, &request.exe, started, findings)
}

fn run_shard(request: &ToolRequest, files: &[String]) -> Result<Vec<RawFinding>, String> {
    let mut cmd = Command::new(&request.exe);
    cmd.args(["-f", "json", "-q"]);
    let configured = CONFIG_FILES
        .iter()
        .map(|f| request.root.join(f))
        .find(|p| p.is_file());
    match configured {
        Some(config) => {
            cmd.arg("-c").arg(config);
        }
        None => {
            cmd.args(["--severity-level", "medium", "--skip", "B101"]);
        }
    }
    cmd.arg("--").args(files);
    let output = exec(Tool::Bandit, &mut cmd, request)?;
    // Exit 0: nothing found; 1: issues found; anything else is a crash.
    if !matches!(output.status.code(), Some(0 | 1)) {
        return Err(failure(Tool::Bandit, &output, "crashed"));
    }
    parse(&output.stdout, request.root).map_err(|e| {
        format!(
            "bandit printed output that is not its JSON report ({e}); its output ends with:\n{}",
            output.tail(8)
        )
    })
}

#[derive(Deserialize)]
struct Report {
    results: Vec<BanditResult>,
}

#[derive(Deserialize)]
struct BanditResult {
    filename: String,
    test_id: String,
    issue_severity: String,
    issue_confidence: String,
    issue_text: String,
    line_number: u32,
    #[serde(default)]
    line_range: Vec<u32>,
    #[serde(default)]
    col_offset: u32,
    #[serde(default)]
    end_col_offset: Option<u32>,
}

/// Parses bandit's JSON report (only `results`; its `errors` are files it could not parse,
/// which the native parser reports as syntax errors).
pub fn parse(stdout: &str, root: &std::path::Path) -> Result<Vec<RawFinding>, serde_json::Error> {
    let report: Report = serde_json::from_str(stdout)?;
    Ok(report
        .results
        .into_iter()
        .map(|issue| {
            let severity = match issue.issue_severity.as_str() {
                "HIGH" => Severity::High,
                "MEDIUM" => Severity::Medium,
                _ => Severity::Low,
            };
            let line = issue.line_number.max(1);
            RawFinding {
                tool: "bandit",
                rule: issue.test_id,
                category: Category::Security,
                severity,
                file: tool_path(root, &issue.filename),
                line,
                column: issue.col_offset + 1,
                end_line: issue.line_range.last().copied().unwrap_or(line).max(line),
                end_column: issue.end_col_offset.map_or(issue.col_offset + 1, |c| c + 1),
                message: format!(
                    "{} (confidence {})",
                    issue.issue_text.trim_end_matches('.'),
                    issue.issue_confidence.to_ascii_lowercase()
                ),
                fix: None,
                impact_pct: None,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_recorded_output_of_the_pinned_bandit() {
        let text = include_str!("../../../../fixtures/tools/bandit-1.9.4.json");
        let findings = parse(text, std::path::Path::new("/tmp/sample")).unwrap();
        let first = &findings[0];
        assert_eq!(first.rule, "B404");
        assert_eq!(first.file, "pkg/app.py");
        assert_eq!((first.line, first.column), (3, 1));
        assert_eq!(first.severity, Severity::Low);
        assert!(findings.iter().any(|f| f.rule == "B608"));
        assert!(parse("{}", std::path::Path::new("/")).is_err());
    }
}
