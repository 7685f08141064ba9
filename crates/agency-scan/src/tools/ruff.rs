//! ruff: `ruff check --output-format json`. Its findings keep their fix edits and applicability
//! for the heal engine. The repository's ruff configuration (rule selection included) applies
//! as is; without one, the selection is pinned to ruff's classic defaults (pyflakes and the
//! error subset of pycodestyle, `E4,E7,E9,F`), because ruff 0.17 enables some 800 rules by
//! default and a scan must stay selective: tens of findings per 100k lines, not thousands.

use std::process::Command;
use std::time::Instant;

use agency_core::Category;
use agency_core::contract::Severity;
use serde::Deserialize;

use super::{
    RawFinding, Tool, ToolEdit, ToolFix, ToolOutcome, ToolRequest, exec, failure, tool_path,
};

pub(crate) fn run(request: &ToolRequest, started: Instant) -> ToolOutcome {
    let mut cmd = Command::new(&request.exe);
    cmd.args([
        "check",
        "--output-format",
        "json",
        "--exit-zero",
        "--force-exclude",
    ]);
    if !has_config(request.root) {
        cmd.args(["--select", DEFAULT_SELECT]);
    }
    match &request.cache_dir {
        Some(dir) => {
            cmd.arg("--cache-dir").arg(dir);
        }
        None => {
            cmd.arg("--no-cache");
        }
    }
    cmd.arg("--").args(request.files);
    let output = match exec(Tool::Ruff, &mut cmd, request) {
        Ok(output) => output,
        Err(message) => return ToolOutcome::failed(Tool::Ruff, &request.exe, started, message),
    };
    if !output.status.success() {
        let message = failure(Tool::Ruff, &output, "exited with an error");
        return ToolOutcome::failed(Tool::Ruff, &request.exe, started, message);
    }
    match parse(&output.stdout, request.root) {
        Ok(findings) => ToolOutcome::ok(Tool::Ruff, &request.exe, started, findings),
        Err(e) => ToolOutcome::failed(
            Tool::Ruff,
            &request.exe,
            started,
            format!(
                "ruff printed output that is not its JSON format ({e}); is it ruff 0.5 or newer?"
            ),
        ),
    }
}

/// The rules checked in a repository without a ruff configuration.
pub const DEFAULT_SELECT: &str = "E4,E7,E9,F";

/// True when the repository configures ruff itself (`ruff.toml`, `.ruff.toml` or a
/// `[tool.ruff]` table in `pyproject.toml`).
pub fn has_config(root: &std::path::Path) -> bool {
    if root.join("ruff.toml").is_file() || root.join(".ruff.toml").is_file() {
        return true;
    }
    std::fs::read_to_string(root.join("pyproject.toml")).is_ok_and(|text| {
        text.lines()
            .any(|l| l.trim_start().starts_with("[tool.ruff"))
    })
}

#[derive(Deserialize)]
struct RuffDiagnostic {
    code: Option<String>,
    filename: String,
    message: String,
    location: Location,
    end_location: Location,
    fix: Option<Fix>,
}

#[derive(Deserialize, Clone, Copy)]
struct Location {
    row: u32,
    column: u32,
}

#[derive(Deserialize)]
struct Fix {
    applicability: String,
    message: Option<String>,
    edits: Vec<Edit>,
}

#[derive(Deserialize)]
struct Edit {
    content: Option<String>,
    location: Location,
    end_location: Location,
}

/// Parses ruff's JSON array.
pub fn parse(stdout: &str, root: &std::path::Path) -> Result<Vec<RawFinding>, serde_json::Error> {
    let messages: Vec<RuffDiagnostic> = serde_json::from_str(stdout)?;
    Ok(messages
        .into_iter()
        .map(|m| {
            // Syntax errors come without a code (older ruff) or as `invalid-syntax`; they merge
            // with the native parser's report of the same line.
            let code = match m.code.as_deref() {
                None | Some("invalid-syntax" | "E999") => {
                    crate::native::rules::SYNTAX_ERROR.to_string()
                }
                Some(code) => code.to_string(),
            };
            let (category, severity) = classify(&code);
            RawFinding {
                tool: "ruff",
                category,
                severity,
                file: tool_path(root, &m.filename),
                line: m.location.row,
                column: m.location.column,
                end_line: m.end_location.row,
                end_column: m.end_location.column,
                message: m.message,
                fix: m.fix.map(|f| ToolFix {
                    applicability: f.applicability,
                    message: f.message,
                    edits: f
                        .edits
                        .into_iter()
                        .map(|e| ToolEdit {
                            content: e.content.unwrap_or_default(),
                            start: (e.location.row, e.location.column),
                            end: (e.end_location.row, e.end_location.column),
                        })
                        .collect(),
                }),
                rule: code,
                impact_pct: None,
                related_line: None,
            }
        })
        .collect())
}

/// The category and severity of a ruff code. Pyflakes' import and undefined-name checks are
/// import errors, flake8-bandit is security, PERF and the comprehension rules are performance,
/// bugbear and pyflakes' logic checks are logic; everything else is style.
pub fn classify(code: &str) -> (Category, Severity) {
    const IMPORT: &[&str] = &[
        "F401", "F402", "F403", "F404", "F405", "F406", "F407", "F811", "F821", "F822", "F823",
    ];
    const LOGIC: &[&str] = &[
        "F631", "F632", "F633", "F634", "F701", "F702", "F704", "F706", "F707", "F722",
    ];
    if code == crate::native::rules::SYNTAX_ERROR {
        return (Category::Type, Severity::High);
    }
    if IMPORT.contains(&code) {
        let severity = if code.starts_with("F82") {
            Severity::High
        } else {
            Severity::Medium
        };
        return (Category::Import, severity);
    }
    if LOGIC.contains(&code) || code.starts_with("PLE") {
        return (Category::Logic, Severity::Medium);
    }
    if code.starts_with("PERF") || code.starts_with("C4") {
        return (Category::Performance, Severity::Low);
    }
    let prefix: String = code.chars().take_while(char::is_ascii_alphabetic).collect();
    match prefix.as_str() {
        "S" => (Category::Security, Severity::Medium),
        "B" => (Category::Logic, Severity::Medium),
        _ => (Category::Style, Severity::Low),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_recorded_output_of_the_pinned_ruff() {
        let text = include_str!("../../../../fixtures/tools/ruff-0.17.5.json");
        let findings = parse(text, std::path::Path::new("/tmp/sample")).unwrap();
        let summary: Vec<(String, String, u32, u32)> = findings
            .iter()
            .map(|f| (f.rule.clone(), f.file.clone(), f.line, f.column))
            .collect();
        assert_eq!(summary[1], ("F401".into(), "pkg/app.py".into(), 1, 8));
        let f401 = &findings[1];
        assert_eq!(f401.category, Category::Import);
        let fix = f401.fix.as_ref().unwrap();
        assert_eq!(fix.applicability, "safe");
        assert_eq!(fix.edits[0].start, (1, 1));
        assert_eq!(fix.edits[0].end, (2, 1));
        let f821 = findings.iter().find(|f| f.rule == "F821").unwrap();
        assert_eq!(f821.category, Category::Import);
        assert!(f821.fix.is_none());
        assert!(parse("not json", std::path::Path::new("/")).is_err());
    }

    #[test]
    fn categories() {
        assert_eq!(classify("S608").0, Category::Security);
        assert_eq!(classify("PERF401").0, Category::Performance);
        assert_eq!(classify("C401").0, Category::Performance);
        assert_eq!(classify("CPY001").0, Category::Style);
        assert_eq!(classify("B006").0, Category::Logic);
        assert_eq!(classify("E501").0, Category::Style);
        assert_eq!(classify("F841").0, Category::Style);
        assert_eq!(classify("syntax-error").0, Category::Type);
    }
}
