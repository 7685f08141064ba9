//! Picking a fix for a finding and producing its edit. `Rule`: the edits the reporting tool
//! proposes (ruff's JSON carries them with their applicability, agency's own rules carry theirs).
//! `Pattern`: a fix from the pattern store ([`crate::patterns`]), tried first when confident.
//! Generated fixes come as a further variant.

use std::path::Path;

use agency_core::contract::Finding;
use agency_scan::finding::ScannedFinding;
use agency_scan::tools::{ToolEdit, ToolFix};

use crate::{Attempt, Status, Verification};

/// Where a fix comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// A fix that worked before: a pattern from the store, matched on the syntax tree.
    Pattern,
    /// A deterministic fixer: the edits the reporting tool (ruff) proposes.
    Rule,
    /// A generated fix from a language model (`[llm]`).
    Llm,
}

impl Strategy {
    /// The contract's spelling (`pattern|rule|llm|none`).
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Pattern => "pattern",
            Strategy::Rule => "rule",
            Strategy::Llm => "llm",
        }
    }

    /// The strategy a contract spelling names (`none` and unknown spellings: `None`).
    pub fn parse(name: &str) -> Option<Strategy> {
        match name {
            "pattern" => Some(Strategy::Pattern),
            "rule" => Some(Strategy::Rule),
            "llm" => Some(Strategy::Llm),
            _ => None,
        }
    }
}

/// What to do with a finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Try this strategy and keep the fix if it verifies.
    Fix(Strategy),
    /// Try this strategy and verify the fix, then leave it for a human to approve (the
    /// reason says why): it never applies on its own.
    Approve(Strategy, String),
    /// Report it for a human: no fix is known.
    Flag(String),
    /// A fix exists but is not allowed in this run.
    Skip(String),
}

impl Decision {
    /// The attempt for a finding that is not tried.
    pub(crate) fn into_attempt(self, finding: &Finding) -> Attempt {
        match self {
            Decision::Fix(_) | Decision::Approve(..) => {
                unreachable!("a fix is tried, not turned into an attempt here")
            }
            Decision::Flag(reason) => Attempt::without_fix(finding, Status::Flagged, reason),
            Decision::Skip(reason) => Attempt::without_fix(finding, Status::Skipped, reason),
        }
    }
}

pub use agency_core::contract::APPROVAL_IMPACT_PCT;

/// Picks the strategy for a finding. A fix that needs approval is verified whatever its
/// applicability (a human reads it before it applies), except ruff's display-only advice.
pub fn choose(scanned: &ScannedFinding, unsafe_fixes: bool) -> Decision {
    let finding = &scanned.finding;
    let approval = finding.approval_reason();
    let Some(fix) = scanned.tool_fix.as_ref().filter(|f| !f.edits.is_empty()) else {
        return Decision::Flag(match approval {
            Some(_) => format!(
                "no automatic fix is known; {} findings are for a human to judge",
                finding.category
            ),
            None => "no automatic fix is known for this finding".into(),
        });
    };
    match (fix.applicability.as_str(), approval) {
        ("safe" | "unsafe", Some(reason)) => Decision::Approve(Strategy::Rule, reason),
        ("safe", None) => Decision::Fix(Strategy::Rule),
        ("unsafe", None) if unsafe_fixes => Decision::Fix(Strategy::Rule),
        ("unsafe", None) => Decision::Skip(format!(
            "{}'s fix may change behaviour (unsafe): run with --unsafe-fixes to try it",
            finding.tool
        )),
        (other, _) => Decision::Skip(format!(
            "{}'s fix is {other}: shown, never applied",
            finding.tool
        )),
    }
}

/// Why edits could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    #[error("the fix's edit at {row}:{column} is outside the file")]
    OutOfRange { row: u32, column: u32 },
    #[error("the fix's edits overlap; refusing to guess their order")]
    Overlap,
    #[error("the fix's edit ends before it starts")]
    Reversed,
}

/// Applies ruff's edits (1-based rows and character columns, end exclusive) to `text`: each
/// position becomes a byte offset, the edits are sorted and must not overlap, and they are
/// applied from the end so that earlier offsets stay valid.
pub fn apply_edits(text: &str, edits: &[ToolEdit]) -> Result<String, EditError> {
    let starts = line_starts(text);
    let mut ranges: Vec<(usize, usize, &str)> = Vec::with_capacity(edits.len());
    for edit in edits {
        let start = offset(text, &starts, edit.start)?;
        let end = offset(text, &starts, edit.end)?;
        if end < start {
            return Err(EditError::Reversed);
        }
        ranges.push((start, end, edit.content.as_str()));
    }
    ranges.sort_by_key(|&(start, end, _)| (start, end));
    for pair in ranges.windows(2) {
        // Touching ranges are fine (one ends where the next starts); two insertions at one
        // point are not: their order would be a guess.
        if pair[1].0 < pair[0].1 || (pair[1].0 == pair[0].0 && pair[0].0 == pair[0].1) {
            return Err(EditError::Overlap);
        }
    }
    let mut out = text.to_string();
    for &(start, end, content) in ranges.iter().rev() {
        out.replace_range(start..end, content);
    }
    Ok(out)
}

/// Byte offsets where each line starts; `\n`, `\r\n` and a lone `\r` end a line, as in ruff.
fn line_starts(text: &str) -> Vec<usize> {
    let bytes = text.as_bytes();
    let mut starts = vec![0];
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\r' if bytes.get(i + 1) == Some(&b'\n') => {
                starts.push(i + 2);
                i += 1;
            }
            b'\n' | b'\r' => starts.push(i + 1),
            _ => {}
        }
        i += 1;
    }
    starts
}

/// The byte offset of a 1-based (row, character column) position.
fn offset(text: &str, starts: &[usize], (row, column): (u32, u32)) -> Result<usize, EditError> {
    let out_of_range = EditError::OutOfRange { row, column };
    let row_idx = (row as usize).checked_sub(1).ok_or(out_of_range.clone())?;
    let col_idx = (column as usize)
        .checked_sub(1)
        .ok_or(out_of_range.clone())?;
    let Some(&line_start) = starts.get(row_idx) else {
        // One past the last line: the end of the file.
        return if row_idx == starts.len() && col_idx == 0 {
            Ok(text.len())
        } else {
            Err(out_of_range)
        };
    };
    let line_end = starts.get(row_idx + 1).copied().unwrap_or(text.len());
    let line = &text[line_start..line_end];
    if col_idx == 0 {
        return Ok(line_start);
    }
    match line.char_indices().nth(col_idx) {
        Some((byte, _)) => Ok(line_start + byte),
        None if line.chars().count() == col_idx => Ok(line_end),
        None => Err(out_of_range),
    }
}

/// The fix of `scanned` as a dry-run attempt: its diff against the file as it is now.
pub(crate) fn preview(root: &Path, scanned: &ScannedFinding, strategy: Strategy) -> Attempt {
    let finding = &scanned.finding;
    let mut attempt = Attempt {
        finding: finding.clone(),
        strategy: Some(strategy),
        status: Status::Skipped,
        reason: Some("dry run: proposed, not verified, not applied".into()),
        diff: String::new(),
        verification: Verification::skipped(),
        file: Some(finding.file.clone()),
        fixed_by: None,
        duration_ms: 0,
        proposal: None,
        pattern: None,
        texts: None,
        lookup_hit: None,
        regression: crate::Regression::NotApplicable,
    };
    let text = match std::fs::read_to_string(root.join(&finding.file)) {
        Ok(text) => text,
        Err(e) => {
            attempt.status = Status::Failed;
            attempt.reason = Some(format!("cannot read {}: {e}", finding.file));
            return attempt;
        }
    };
    match fixed_text(&text, scanned.tool_fix.as_ref()) {
        Ok(after) => attempt.diff = crate::diff::unified(&finding.file, &text, &after),
        Err(e) => {
            attempt.status = Status::Skipped;
            attempt.reason = Some(e.to_string());
        }
    }
    attempt
}

/// The text after a tool's fix.
pub(crate) fn fixed_text(text: &str, fix: Option<&ToolFix>) -> Result<String, EditError> {
    match fix {
        Some(fix) => apply_edits(text, &fix.edits),
        None => Ok(text.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edit(content: &str, start: (u32, u32), end: (u32, u32)) -> ToolEdit {
        ToolEdit {
            content: content.into(),
            start,
            end,
        }
    }

    use agency_core::contract::{Priority, Severity};

    fn scanned(category: &str, severity: Severity, impact: Option<u32>) -> ScannedFinding {
        ScannedFinding {
            finding: Finding {
                id: "0".into(),
                category: category.into(),
                rule: "R".into(),
                tool: "agency".into(),
                priority: Priority::P2,
                severity,
                file: "a.py".into(),
                line: 1,
                column: 1,
                end_line: 1,
                end_column: 2,
                message: "m".into(),
                fix: agency_core::contract::FixAvailability {
                    available: true,
                    approval_required: false,
                },
                sources: Vec::new(),
                snippet: String::new(),
                impact_pct: impact,
            },
            tool_fix: Some(ToolFix {
                applicability: "safe".into(),
                message: None,
                edits: vec![edit("y", (1, 1), (1, 2))],
            }),
        }
    }

    #[test]
    fn risky_findings_wait_for_a_human_and_the_rest_follow_the_fix() {
        let approve = |d: Decision| matches!(d, Decision::Approve(Strategy::Rule, _));
        assert!(approve(choose(
            &scanned("logic", Severity::Medium, None),
            false
        )));
        assert!(approve(choose(
            &scanned("security", Severity::High, None),
            false
        )));
        assert!(approve(choose(
            &scanned("performance", Severity::Medium, Some(50)),
            true
        )));
        let mut unfixable = scanned("logic", Severity::Medium, None);
        unfixable.tool_fix = None;
        assert!(matches!(choose(&unfixable, true), Decision::Flag(_)));
        assert_eq!(
            choose(&scanned("performance", Severity::Medium, Some(10)), false),
            Decision::Fix(Strategy::Rule)
        );
        assert_eq!(
            choose(&scanned("security", Severity::Medium, None), false),
            Decision::Fix(Strategy::Rule)
        );
    }

    #[test]
    fn deletes_a_whole_line() {
        let text = "import os\nimport sys\n\nprint(sys.argv)\n";
        let out = apply_edits(text, &[edit("", (1, 1), (2, 1))]).unwrap();
        assert_eq!(out, "import sys\n\nprint(sys.argv)\n");
    }

    #[test]
    fn columns_are_characters_not_bytes() {
        // "é" and "€" are 2 and 3 bytes; ruff counts characters.
        let text = "x = 'é€'; y == None\n";
        let out = apply_edits(text, &[edit("is", (1, 13), (1, 15))]).unwrap();
        assert_eq!(out, "x = 'é€'; y is None\n");
    }

    #[test]
    fn edits_apply_in_reverse_order() {
        let text = "a = 1\nb = 2\nc = 3\n";
        let out = apply_edits(
            text,
            &[edit("A", (1, 1), (1, 2)), edit("CC", (3, 1), (3, 2))],
        )
        .unwrap();
        assert_eq!(out, "A = 1\nb = 2\nCC = 3\n");
    }

    #[test]
    fn crlf_lines_and_end_of_file() {
        let text = "import os\r\nx = 1";
        let out = apply_edits(text, &[edit("", (1, 1), (2, 1))]).unwrap();
        assert_eq!(out, "x = 1");
        let out = apply_edits(text, &[edit("\n", (2, 6), (2, 6))]).unwrap();
        assert_eq!(out, "import os\r\nx = 1\n");
        let out = apply_edits("a\n", &[edit("b\n", (2, 1), (2, 1))]).unwrap();
        assert_eq!(out, "a\nb\n");
    }

    #[test]
    fn overlapping_edits_are_refused() {
        let text = "abcdef\n";
        assert_eq!(
            apply_edits(
                text,
                &[edit("x", (1, 1), (1, 4)), edit("y", (1, 3), (1, 5))]
            ),
            Err(EditError::Overlap)
        );
        assert_eq!(
            apply_edits(
                text,
                &[edit("x", (1, 2), (1, 2)), edit("y", (1, 2), (1, 2))]
            ),
            Err(EditError::Overlap)
        );
        // Adjacent edits do not overlap.
        assert_eq!(
            apply_edits(
                text,
                &[edit("x", (1, 1), (1, 3)), edit("y", (1, 3), (1, 4))]
            )
            .unwrap(),
            "xydef\n"
        );
    }

    #[test]
    fn positions_outside_the_file_are_refused() {
        assert!(matches!(
            apply_edits("a\n", &[edit("", (5, 1), (5, 2))]),
            Err(EditError::OutOfRange { .. })
        ));
        assert!(matches!(
            apply_edits("ab\n", &[edit("", (1, 9), (1, 10))]),
            Err(EditError::OutOfRange { .. })
        ));
        assert_eq!(
            apply_edits("ab\n", &[edit("", (1, 3), (1, 1))]),
            Err(EditError::Reversed)
        );
    }
}
