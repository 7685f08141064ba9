//! From raw tool reports to contract findings: duplicates across tools merged into one finding
//! that names every source, priorities from categories, and stable ids.
//!
//! An id must survive unrelated edits above the finding, so it has no line number: it hashes the
//! file, the rule's merge group, the offending line's text (whitespace-normalised) and the
//! occurrence count of that same (group, text) pair earlier in the file.

use std::collections::{BTreeMap, HashMap};

use agency_core::contract::{Finding, FindingSource, FixAvailability, Priority};
use sha2::{Digest, Sha256};

use crate::tools::{RawFinding, ToolFix};

/// Rules of different tools that report the same defect. The first name of a group is its
/// canonical name, used in ids so that an id does not depend on which tools were available.
const SAME_DEFECT: &[&[&str]] = &[
    &["AGY201", "B608", "S608"],
    &["AGY202", "B308", "B703", "S308"],
    &["AGY203", "B105", "B106", "B107", "S105", "S106", "S107"],
    &["AGY102", "F821", "name-defined"],
    &["syntax-error"],
];

/// The merge group of a rule: its canonical name.
pub fn defect_group(rule: &str) -> &str {
    SAME_DEFECT
        .iter()
        .find(|group| group.contains(&rule))
        .map_or(rule, |group| group[0])
}

/// The native rule that checks the same defect as a bandit pattern check (B608 string-built
/// SQL, B308/B703 `mark_safe`, B105-B107 hardcoded passwords) with data flow, if any.
pub fn native_counterpart(bandit_rule: &str) -> Option<&'static str> {
    SAME_DEFECT
        .iter()
        .find(|group| group[0].starts_with("AGY") && group.contains(&bandit_rule))
        .filter(|_| bandit_rule.starts_with('B'))
        .map(|group| group[0])
}

/// A hardcoded secret's line and message with every quoted literal replaced, so that the
/// secret does not travel on in reports (JSON, SARIF uploads, logs): `"<redacted>"`.
pub fn redact_quoted(text: &str) -> String {
    static QUOTED: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r#""(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'"#).expect("a valid regex")
    });
    QUOTED.replace_all(text, "\"<redacted>\"").into_owned()
}

/// A finding with what the heal engine needs beyond the contract.
#[derive(Debug, Clone, PartialEq)]
pub struct ScannedFinding {
    pub finding: Finding,
    /// ruff's proposed fix, if any.
    pub tool_fix: Option<ToolFix>,
}

/// Merges duplicates, assigns ids and priorities. `line_text(file, line)` returns a source
/// line (without its ending). The output is sorted by file, line, column and rule.
pub fn finalize(
    raw: Vec<RawFinding>,
    line_text: &dyn Fn(&str, u32) -> Option<String>,
) -> Vec<ScannedFinding> {
    // A native finding names the line where its defect starts (a query built two lines above
    // the `execute`); another tool's report of that group on that line joins the native one.
    let moved_to: HashMap<(String, u32, String), u32> = raw
        .iter()
        .filter(|f| f.tool == "agency" && group_is_merged(defect_group(&f.rule)))
        .filter_map(|f| {
            f.related_line.map(|l| {
                (
                    (f.file.clone(), l, defect_group(&f.rule).to_string()),
                    f.line,
                )
            })
        })
        .collect();
    // Group by (file, line, defect group); the native report leads its group, then tool order.
    let mut groups: BTreeMap<(String, u32, String), Vec<RawFinding>> = BTreeMap::new();
    for finding in raw {
        let group = defect_group(&finding.rule).to_string();
        let mut key = (finding.file.clone(), finding.line, group);
        if finding.tool != "agency"
            && let Some(&line) = moved_to.get(&key)
        {
            key.1 = line;
        }
        groups.entry(key).or_default().push(finding);
    }
    let mut out = Vec::with_capacity(groups.len());
    let mut occurrences: HashMap<(String, String, String), u32> = HashMap::new();
    for ((file, line, group), mut members) in groups {
        members.sort_by_key(|m| (m.tool != "agency", tool_rank(m.tool), m.column));
        // Two reports of one tool on one line with the same rule are distinct findings only
        // when the group is a plain rule (e.g. two E501s cannot share a line, two F401s can).
        let mut distinct: Vec<Vec<RawFinding>> = Vec::new();
        for member in members {
            match distinct.iter_mut().find(|d| {
                d.iter()
                    .all(|m| m.tool != member.tool || m.rule != member.rule)
            }) {
                Some(bucket) if group_is_merged(&group) => bucket.push(member),
                _ => distinct.push(vec![member]),
            }
        }
        for bucket in distinct {
            let text = line_text(&file, line).unwrap_or_default();
            let normalized: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
            let occurrence_key = (file.clone(), group.clone(), normalized.clone());
            let occurrence = occurrences.entry(occurrence_key).or_insert(0);
            let id = stable_id(&file, &group, &normalized, *occurrence);
            *occurrence += 1;
            let primary = &bucket[0];
            let mut sources: Vec<FindingSource> = bucket
                .iter()
                .map(|m| FindingSource {
                    tool: m.tool.to_string(),
                    rule: m.rule.clone(),
                })
                .collect();
            sources.dedup();
            let tool_fix = bucket.iter().find_map(|m| m.fix.clone());
            let fix = FixAvailability {
                available: tool_fix
                    .as_ref()
                    .is_some_and(|f| f.applicability != "display-only" && !f.edits.is_empty()),
                approval_required: tool_fix.as_ref().is_some_and(|f| f.applicability != "safe"),
            };
            let severity = bucket
                .iter()
                .map(|m| m.severity)
                .min()
                .unwrap_or(primary.severity);
            let mut finding = Finding {
                id,
                category: primary.category.as_str().to_string(),
                rule: primary.rule.clone(),
                tool: primary.tool.to_string(),
                priority: Priority::of(primary.category),
                severity,
                file: file.clone(),
                line,
                column: primary.column,
                end_line: primary.end_line.max(line),
                end_column: primary.end_column,
                message: if group == "AGY203" {
                    redact_quoted(&primary.message)
                } else {
                    primary.message.clone()
                },
                fix,
                sources,
                snippet: if group == "AGY203" {
                    redact_quoted(&text)
                } else {
                    text
                },
                impact_pct: bucket.iter().find_map(|m| m.impact_pct),
            };
            // A fix a human must approve: ruff's unsafe ones, and whatever the policy says.
            finding.fix.approval_required |=
                finding.fix.available && finding.approval_reason().is_some();
            out.push(ScannedFinding { finding, tool_fix });
        }
    }
    out.sort_by(|a, b| {
        let (a, b) = (&a.finding, &b.finding);
        (&a.file, a.line, a.column, &a.rule).cmp(&(&b.file, b.line, b.column, &b.rule))
    });
    out
}

/// Cross-tool groups merge; a plain rule's group is just itself.
fn group_is_merged(group: &str) -> bool {
    SAME_DEFECT.iter().any(|g| g[0] == group)
}

fn tool_rank(tool: &str) -> u8 {
    match tool {
        "agency" => 0,
        "ruff" => 1,
        "mypy" => 2,
        "bandit" => 3,
        _ => 4,
    }
}

/// 16 hex digits of SHA-256 over the id's ingredients.
pub fn stable_id(file: &str, group: &str, line_text: &str, occurrence: u32) -> String {
    let mut hasher = Sha256::new();
    for part in [file, group, line_text] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hasher.update(occurrence.to_le_bytes());
    agency_core::pattern::hex(&hasher.finalize()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;
    use agency_core::Category;
    use agency_core::contract::Severity;

    fn raw(tool: &'static str, rule: &str, line: u32, category: Category) -> RawFinding {
        RawFinding {
            tool,
            rule: rule.to_string(),
            category,
            severity: Severity::Medium,
            file: "app.py".to_string(),
            line,
            column: 5,
            end_line: line,
            end_column: 9,
            message: format!("{tool} says {rule}"),
            fix: None,
            impact_pct: None,
            related_line: None,
        }
    }

    #[test]
    fn duplicates_across_tools_merge_and_ids_ignore_line_numbers() {
        let lines = |extra: u32| {
            move |_: &str, line: u32| {
                Some(match line - extra {
                    3 => "    cur.execute(q % name)".to_string(),
                    _ => "x = 1".to_string(),
                })
            }
        };
        let findings = vec![
            raw("bandit", "B608", 3, Category::Security),
            raw("agency", "AGY201", 3, Category::Security),
            raw("ruff", "E501", 3, Category::Style),
        ];
        let out = finalize(findings.clone(), &lines(0));
        assert_eq!(out.len(), 2);
        let sql = out
            .iter()
            .find(|f| f.finding.category == "security")
            .unwrap();
        assert_eq!(sql.finding.tool, "agency");
        assert_eq!(sql.finding.rule, "AGY201");
        assert_eq!(sql.finding.priority, Priority::P0);
        assert_eq!(
            sql.finding
                .sources
                .iter()
                .map(|s| s.tool.as_str())
                .collect::<Vec<_>>(),
            ["agency", "bandit"]
        );
        // The same code ten lines lower keeps its id.
        let moved: Vec<RawFinding> = findings
            .into_iter()
            .map(|mut f| {
                f.line += 10;
                f.end_line += 10;
                f
            })
            .collect();
        let out_moved = finalize(moved, &lines(10));
        let ids = |v: &[ScannedFinding]| v.iter().map(|f| f.finding.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&out), ids(&out_moved));
        // Bandit alone (the native rule disabled) gives the same id.
        let alone = finalize(
            vec![raw("bandit", "B608", 3, Category::Security)],
            &lines(0),
        );
        assert_eq!(alone[0].finding.id, sql.finding.id);
    }

    #[test]
    fn a_report_on_the_related_line_joins_the_native_finding() {
        let lines = |_: &str, line: u32| Some(format!("line {line}"));
        let mut native = raw("agency", "AGY201", 3, Category::Security);
        native.related_line = Some(2);
        let findings = vec![
            raw("bandit", "B608", 2, Category::Security),
            native,
            raw("bandit", "B608", 7, Category::Security),
            // Another group on the related line stays apart.
            raw("ruff", "E501", 2, Category::Style),
        ];
        let out = finalize(findings, &lines);
        let summary: Vec<(u32, &str, usize)> = out
            .iter()
            .map(|f| {
                (
                    f.finding.line,
                    f.finding.rule.as_str(),
                    f.finding.sources.len(),
                )
            })
            .collect();
        assert_eq!(summary, [(2, "E501", 1), (3, "AGY201", 2), (7, "B608", 1)]);
    }

    #[test]
    fn secrets_are_redacted_in_snippets_and_messages() {
        assert_eq!(
            redact_quoted(r#"KEY = "AKIAIOSFODNN7EXAMPL3"  # 'x'"#),
            r#"KEY = "<redacted>"  # "<redacted>""#
        );
        let lines = |_: &str, _: u32| Some(r#"password = "hunter2hunter2""#.to_string());
        let mut bandit = raw("bandit", "B105", 1, Category::Security);
        bandit.message = "Possible hardcoded password: 'hunter2hunter2'".into();
        let out = finalize(vec![bandit], &lines);
        assert_eq!(out[0].finding.snippet, r#"password = "<redacted>""#);
        assert_eq!(
            out[0].finding.message,
            r#"Possible hardcoded password: "<redacted>""#
        );
    }

    #[test]
    fn identical_lines_get_distinct_ids() {
        let text = |_: &str, _: u32| Some("import os".to_string());
        let out = finalize(
            vec![
                raw("ruff", "F401", 1, Category::Import),
                raw("ruff", "F401", 7, Category::Import),
            ],
            &text,
        );
        assert_eq!(out.len(), 2);
        assert_ne!(out[0].finding.id, out[1].finding.id);
    }
}
