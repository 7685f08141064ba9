//! The registry of per-file native rules, one rule per file, and their fixture tests.
//!
//! A rule is `fn(&Checker, &mut Vec<Diagnostic>)`. Its fixture `fixtures/<category>/<CODE>.py`
//! marks every line that must be flagged with a trailing `# expect: CODE` comment; every other
//! line is a trap that must not be flagged. The test checks both, then snapshots the messages.
//! Project-wide rules (import cycles) live in `crate::project`.

mod import;
mod logic;
mod performance;
mod security;

use super::FileRule;

/// Parse errors, reported under this code (mypy calls it `syntax` and counts it an error).
pub const SYNTAX_ERROR: &str = "syntax-error";

/// Every per-file rule, by code, one block per category.
pub const FILE_RULES: [&[(&str, FileRule)]; 4] = [
    import::RULES,
    security::RULES,
    performance::RULES,
    logic::RULES,
];

/// The fixture harness every rule family's tests use.
#[cfg(test)]
pub(crate) mod harness {
    use std::fmt::Write as _;
    use std::path::PathBuf;

    use crate::native::analyze_source;

    /// Runs one rule on its fixture: flagged lines must equal the `# expect: CODE` lines.
    pub(crate) fn check(code: &str, category: &str) {
        let rel = format!("fixtures/{category}/{code}.py");
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(&rel);
        let source = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let analysis = analyze_source(&rel, &source, &|c| c == code);
        let line_index = ruff_source_file::LineIndex::from_source_text(&source);
        let marker = format!("# expect: {code}");
        let expected: Vec<usize> = source
            .lines()
            .enumerate()
            .filter(|(_, l)| l.contains(&marker))
            .map(|(i, _)| i + 1)
            .collect();
        assert!(!expected.is_empty(), "{rel} has no `{marker}` line");
        let mut flagged: Vec<usize> = analysis
            .diagnostics
            .iter()
            .map(|d| line_index.line_index(d.range.start()).get())
            .collect();
        flagged.dedup();
        assert_eq!(
            flagged, expected,
            "{rel}: flagged lines vs `{marker}` lines"
        );
        let mut rendered = String::new();
        for d in &analysis.diagnostics {
            let loc = line_index.line_column(d.range.start(), &source);
            let _ = write!(
                rendered,
                "{}:{}:{} {} [{}] {}",
                rel,
                loc.line,
                loc.column,
                d.rule,
                d.severity.as_str(),
                d.message
            );
            if let Some(pct) = d.impact_pct {
                let _ = write!(rendered, " (impact {pct}%)");
            }
            rendered.push('\n');
        }
        insta::assert_snapshot!(code, rendered);
    }
}
