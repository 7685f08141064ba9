//! mypy: `mypy --output json` (one JSON object per line, mypy 1.11 and newer), with its
//! incremental cache under `.agency/cache/mypy` so that a warm run costs a fraction of a cold
//! one. The repository's own mypy runs with the repository's configuration as is; agency's
//! pinned copy has none of the project's dependencies installed, so it is told to ignore
//! imports it cannot resolve instead of reporting every third-party import as missing.
//!
//! A repository with no mypy configuration has not opted into type checking: its code is
//! largely unannotated, and mypy's consistency codes (`assignment`, `var-annotated`, `misc`,
//! ...) then flood the report (618 `assignment` errors on Django's 159k lines). Without a
//! configuration, only the codes that point at likely runtime failures are kept.

use std::process::Command;
use std::time::Instant;

use agency_core::Category;
use agency_core::contract::Severity;
use serde::Deserialize;

use super::{RawFinding, Tool, ToolOutcome, ToolRequest, exec, failure, tool_path};

/// Codes turned off for a repository without a mypy configuration: type consistency of
/// unannotated code rather than likely crashes.
const UNCONFIGURED_DISABLED: &[&str] = &[
    "assignment",
    "var-annotated",
    "misc",
    "no-redef",
    "dict-item",
    "list-item",
    "override",
    "type-arg",
    "valid-type",
    "has-type",
    "type-var",
    "annotation-unchecked",
    "return-value",
    "method-assign",
];

/// The repository configures mypy (then its configuration decides what is reported).
fn configured(root: &std::path::Path) -> bool {
    let contains = |file: &str, needle: &str| {
        std::fs::read_to_string(root.join(file)).is_ok_and(|text| text.contains(needle))
    };
    root.join("mypy.ini").is_file()
        || root.join(".mypy.ini").is_file()
        || contains("setup.cfg", "[mypy")
        || contains("pyproject.toml", "[tool.mypy")
}

pub(crate) fn run(request: &ToolRequest, started: Instant) -> ToolOutcome {
    let mut cmd = Command::new(&request.exe);
    cmd.args([
        "--output",
        "json",
        "--no-error-summary",
        "--no-pretty",
        "--show-error-codes",
    ]);
    match &request.cache_dir {
        Some(dir) => {
            cmd.arg("--cache-dir").arg(dir);
        }
        // mypy cannot run without a cache directory; /dev/null is its documented way to keep none.
        None => {
            cmd.args(["--cache-dir", "/dev/null"]);
        }
    }
    if let Some(python) = &request.python {
        cmd.arg("--python-executable").arg(python);
    } else if !request.own {
        cmd.arg("--ignore-missing-imports");
    }
    if !request.own && !configured(request.root) {
        for code in UNCONFIGURED_DISABLED {
            cmd.args(["--disable-error-code", code]);
        }
    }
    cmd.arg("--").args(request.files);
    let output = match exec(Tool::Mypy, &mut cmd, request) {
        Ok(output) => output,
        Err(message) => return ToolOutcome::failed(Tool::Mypy, &request.exe, started, message),
    };
    // Exit 0: clean; 1: type errors found; 2: a blocking error (a syntax error is reported as
    // findings, anything else, like a bad configuration, is a failure).
    let code = output.status.code();
    let parsed = parse(&output.stdout, request.root);
    match (code, parsed) {
        (Some(0 | 1), Ok(findings)) => ToolOutcome::ok(Tool::Mypy, &request.exe, started, findings),
        (Some(2), Ok(findings)) if !findings.is_empty() => {
            ToolOutcome::ok(Tool::Mypy, &request.exe, started, findings)
        }
        (_, Err(e)) if code == Some(0) || code == Some(1) => ToolOutcome::failed(
            Tool::Mypy,
            &request.exe,
            started,
            format!(
                "mypy printed output that is not its JSON format ({e}); agency needs mypy 1.11 or newer"
            ),
        ),
        _ => {
            let message = failure(Tool::Mypy, &output, "stopped with an error");
            ToolOutcome::failed(Tool::Mypy, &request.exe, started, message)
        }
    }
}

#[derive(Deserialize)]
struct MypyError {
    file: String,
    line: i64,
    column: i64,
    end_line: Option<i64>,
    end_column: Option<i64>,
    message: String,
    hint: Option<String>,
    code: Option<String>,
    severity: String,
}

/// Parses mypy's JSON lines. Notes are folded into the error they explain.
pub fn parse(stdout: &str, root: &std::path::Path) -> Result<Vec<RawFinding>, serde_json::Error> {
    let mut findings: Vec<RawFinding> = Vec::new();
    for line in stdout.lines().filter(|l| l.trim_start().starts_with('{')) {
        let m: MypyError = serde_json::from_str(line)?;
        if m.severity == "note" {
            if let Some(last) = findings.last_mut()
                && last.file == tool_path(root, &m.file)
                && i64::from(last.line) == m.line
            {
                last.message.push_str("; ");
                last.message.push_str(&m.message);
            }
            continue;
        }
        let code = m.code.unwrap_or_else(|| "misc".to_string());
        let syntax = code == "syntax";
        // mypy's JSON columns are 0-based, except those of syntax errors, which come from its
        // parser already 1-based.
        let shift = i64::from(!syntax);
        let line = m.line.max(1) as u32;
        let column = (m.column + shift).max(1) as u32;
        let mut message = m.message;
        if let Some(hint) = m.hint.filter(|h| !h.is_empty()) {
            message.push_str("; ");
            message.push_str(&hint);
        }
        let (rule, category) = if syntax {
            (
                crate::native::rules::SYNTAX_ERROR.to_string(),
                Category::Type,
            )
        } else if matches!(
            code.as_str(),
            "import-not-found" | "import-untyped" | "import" | "name-defined"
        ) {
            (code, Category::Import)
        } else {
            (code, Category::Type)
        };
        findings.push(RawFinding {
            tool: "mypy",
            rule,
            category,
            severity: if m.severity == "error" {
                Severity::Medium
            } else {
                Severity::Low
            },
            file: tool_path(root, &m.file),
            line,
            column,
            end_line: m.end_line.map_or(line, |l| l.max(1) as u32),
            end_column: m.end_column.map_or(column, |c| (c + shift).max(1) as u32),
            message,
            fix: None,
            impact_pct: None,
            related_line: None,
        });
    }
    Ok(findings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_recorded_output_of_the_pinned_mypy() {
        let text = include_str!("../../../../fixtures/tools/mypy-2.4.1.jsonl");
        let findings = parse(text, std::path::Path::new("/tmp/sample")).unwrap();
        let summary: Vec<(&str, &str, u32, u32, Category)> = findings
            .iter()
            .map(|f| {
                (
                    f.rule.as_str(),
                    f.file.as_str(),
                    f.line,
                    f.column,
                    f.category,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("syntax-error", "pkg/broken.py", 1, 12, Category::Type),
                ("syntax-error", "pkg/broken.py", 1, 13, Category::Type),
                ("assignment", "pkg/app.py", 9, 14, Category::Type),
                ("name-defined", "pkg/app.py", 11, 28, Category::Import),
            ]
        );
        assert!(parse("{not json", std::path::Path::new("/")).is_err());
        assert!(
            parse("Success: no issues found\n", std::path::Path::new("/"))
                .unwrap()
                .is_empty()
        );
    }
}
