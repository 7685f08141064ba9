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
        Ok(mut findings) => {
            if uses_format(request.root) {
                match format_findings(request) {
                    Ok(more) => findings.extend(more),
                    Err(message) => {
                        return ToolOutcome::failed(Tool::Ruff, &request.exe, started, message);
                    }
                }
            }
            ToolOutcome::ok(Tool::Ruff, &request.exe, started, findings)
        }
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

/// The rule of a file that `ruff format` would change.
pub const FORMAT_RULE: &str = "format";

/// True when the repository formats with ruff: a `[tool.ruff.format]` table in
/// `pyproject.toml`, or a `[format]` table in `ruff.toml` / `.ruff.toml`. Only then is an
/// unformatted file a finding: agency never imposes a formatter a project does not use.
pub fn uses_format(root: &std::path::Path) -> bool {
    let has = |file: &str, table: &str| {
        std::fs::read_to_string(root.join(file))
            .is_ok_and(|text| text.lines().any(|l| l.trim() == table))
    };
    has("pyproject.toml", "[tool.ruff.format]")
        || has("ruff.toml", "[format]")
        || has(".ruff.toml", "[format]")
}

/// `ruff format --diff`: one finding per file it would change, whose fix is ruff's own
/// formatting as edits (one per hunk), safe.
fn format_findings(request: &ToolRequest) -> Result<Vec<RawFinding>, String> {
    let mut cmd = Command::new(&request.exe);
    cmd.args(["format", "--diff", "--force-exclude"]);
    if request.cache_dir.is_none() {
        cmd.arg("--no-cache");
    }
    cmd.arg("--").args(request.files);
    let output = exec(Tool::Ruff, &mut cmd, request)?;
    // 0: nothing to change; 1: the diff on stdout; 2: ruff failed (a file that does not
    // parse is reported, not formatted).
    if output.status.code() != Some(0) && output.status.code() != Some(1) {
        return Err(failure(Tool::Ruff, &output, "format --diff failed"));
    }
    Ok(parse_format_diff(&output.stdout, request.root))
}

/// One hunk of a unified diff: old lines `[old_start, old_start + old_len)` become `new`.
struct Hunk {
    old_start: u32,
    old_len: u32,
    /// The first old line that changes.
    first_change: u32,
    new: String,
}

/// Parses `ruff format --diff` output into one finding per file.
pub(crate) fn parse_format_diff(diff: &str, root: &std::path::Path) -> Vec<RawFinding> {
    let mut out = Vec::new();
    let mut file: Option<String> = None;
    let mut hunks: Vec<Hunk> = Vec::new();
    let mut old_line = 0;
    let mut last_kind = " ";
    // Lines of the current hunk still to come on each side; past them, lines are not hunk
    // body (ruff ends each file's diff with a blank line).
    let (mut old_left, mut new_left) = (0_u32, 0_u32);
    let flush = |file: &mut Option<String>, hunks: &mut Vec<Hunk>, out: &mut Vec<RawFinding>| {
        if let Some(name) = file.take()
            && !hunks.is_empty()
        {
            out.push(format_finding(
                tool_path(root, &name),
                std::mem::take(hunks),
            ));
        }
        hunks.clear();
    };
    for line in diff.lines() {
        if let Some(name) = line.strip_prefix("--- ") {
            flush(&mut file, &mut hunks, &mut out);
            file = Some(name.trim().to_string());
        } else if line.starts_with("+++ ") {
        } else if let Some(header) = line.strip_prefix("@@ -") {
            let mut sides = header.split(' ');
            let range = |side: Option<&str>| -> (u32, u32) {
                let side = side.unwrap_or("").trim_start_matches(['-', '+']);
                match side.split_once(',') {
                    Some((s, l)) => (s.parse().unwrap_or(0), l.parse().unwrap_or(0)),
                    None => (side.parse().unwrap_or(0), 1),
                }
            };
            let (start, len) = range(sides.next());
            let (_, new_len) = range(sides.next());
            old_left = len;
            new_left = new_len;
            // An empty old side ("-0,0") inserts before line 1.
            let start = if len == 0 { start + 1 } else { start };
            old_line = start;
            hunks.push(Hunk {
                old_start: start,
                old_len: len,
                first_change: 0,
                new: String::new(),
            });
        } else if let Some(hunk) = hunks.last_mut() {
            if line.starts_with("\\ ") {
                // "\ No newline at end of file": the line before has none. On the new side
                // (context or added), drop the newline given to it; a removed line is gone.
                if last_kind != "-" && hunk.new.ends_with('\n') {
                    hunk.new.pop();
                }
                continue;
            }
            if old_left == 0 && new_left == 0 {
                continue;
            }
            let (kind, text) = line.split_at(line.len().min(1));
            last_kind = kind;
            match kind {
                // An empty context line may have lost its space.
                " " | "" if old_left > 0 && new_left > 0 => {
                    hunk.new.push_str(text);
                    hunk.new.push('\n');
                    old_line += 1;
                    old_left -= 1;
                    new_left -= 1;
                }
                "-" if old_left > 0 => {
                    if hunk.first_change == 0 {
                        hunk.first_change = old_line;
                    }
                    old_line += 1;
                    old_left -= 1;
                }
                "+" if new_left > 0 => {
                    if hunk.first_change == 0 {
                        hunk.first_change = old_line;
                    }
                    hunk.new.push_str(text);
                    hunk.new.push('\n');
                    new_left -= 1;
                }
                _ => {}
            }
        }
    }
    flush(&mut file, &mut hunks, &mut out);
    out
}

fn format_finding(file: String, hunks: Vec<Hunk>) -> RawFinding {
    let line = hunks
        .first()
        .map_or(1, |h| h.first_change.max(h.old_start).max(1));
    RawFinding {
        tool: "ruff",
        rule: FORMAT_RULE.to_string(),
        category: Category::Style,
        severity: Severity::Low,
        file,
        line,
        column: 1,
        end_line: line,
        end_column: 1,
        message: "not formatted as `ruff format` formats it".to_string(),
        fix: Some(ToolFix {
            applicability: "safe".to_string(),
            message: Some("Format with `ruff format`".to_string()),
            edits: hunks
                .into_iter()
                .map(|h| ToolEdit {
                    content: h.new,
                    start: (h.old_start, 1),
                    end: (h.old_start + h.old_len, 1),
                })
                .collect(),
        }),
        impact_pct: None,
        related_line: None,
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

    /// Applies edits as the heal engine does (rows from 1, end exclusive, from the end).
    fn apply(text: &str, edits: &[ToolEdit]) -> String {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        let offset =
            |(row, _): (u32, u32)| starts.get(row as usize - 1).copied().unwrap_or(text.len());
        let mut out = text.to_string();
        for e in edits.iter().rev() {
            out.replace_range(offset(e.start)..offset(e.end), &e.content);
        }
        out
    }

    #[test]
    fn format_diffs_become_edits_that_reproduce_ruffs_output() {
        let original = "x = {'a':1}\n\n\n\n\ndef f( a,b ):\n    return a+b\ny=2";
        let diff = "--- m.py\n+++ m.py\n@@ -1,8 +1,8 @@\n-x = {'a':1}\n+x = {\"a\": 1}\n \n \n+def f(a, b):\n+    return a + b\n \n \n-def f( a,b ):\n-    return a+b\n-y=2\n\\ No newline at end of file\n+y = 2\n\n--- ok.py\n+++ ok.py\n";
        let findings = parse_format_diff(diff, std::path::Path::new("/r"));
        assert_eq!(findings.len(), 1);
        let f = &findings[0];
        assert_eq!(
            (f.rule.as_str(), f.file.as_str(), f.line),
            ("format", "m.py", 1)
        );
        let fix = f.fix.as_ref().unwrap();
        assert_eq!(fix.applicability, "safe");
        assert_eq!(
            apply(original, &fix.edits),
            "x = {\"a\": 1}\n\n\ndef f(a, b):\n    return a + b\n\n\ny = 2\n"
        );
        // The new side without a final newline keeps it off.
        let diff = "--- a.py\n+++ a.py\n@@ -1 +1 @@\n-x=1\n\\ No newline at end of file\n+x = 1\n\\ No newline at end of file\n";
        let findings = parse_format_diff(diff, std::path::Path::new("/r"));
        assert_eq!(
            apply("x=1", &findings[0].fix.as_ref().unwrap().edits),
            "x = 1"
        );
    }

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
