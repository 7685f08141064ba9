//! The JSON documents that scripts and agents read (`--json` output, HTTP bodies) and the
//! pattern export format. These types change only additively: never rename or remove a field.
//! `docs/json.md` documents them; a snapshot test pins their shape.

use serde::{Deserialize, Serialize};

/// Version of every document in this module.
pub const SCHEMA_VERSION: u32 = 1;

/// `agency patterns query --json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QueryResponse {
    pub version: u32,
    pub query: QueryEcho,
    pub matches: Vec<Match>,
    pub stats: QueryStats,
}

/// The query as understood, including the normalised text that was embedded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QueryEcho {
    pub text: String,
    pub normalized: String,
    /// True when the query was cut to fit the model's window.
    pub truncated: bool,
    pub category: Option<String>,
    pub rule: Option<String>,
    pub k: usize,
    pub min_confidence: Option<f64>,
}

/// One ranked match.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Match {
    pub id: String,
    pub category: String,
    pub rule: String,
    pub title: String,
    /// Cosine similarity of the query and the pattern's error context, in [0, 1]; low for an
    /// unrelated error even when it is the best there is.
    pub score: f64,
    /// Estimated probability that the fix works (see `docs/confidence.md`).
    pub confidence: f64,
    /// True only when the fix may be applied without asking a human.
    pub auto_apply: bool,
    pub applicability: String,
    pub template: Template,
    pub example: Option<ExampleDoc>,
    pub support: u32,
    pub successes: u32,
    pub failures: u32,
    pub source: String,
    pub retrieval: Retrieval,
}

/// A rewrite template.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Template {
    pub before: String,
    pub after: String,
}

/// A worked example.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExampleDoc {
    pub before: String,
    pub after: String,
    pub source: String,
}

/// How a match was found: its rank in each retriever (1-based) and the fused score.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Retrieval {
    pub vector_rank: Option<u32>,
    pub text_rank: Option<u32>,
    pub fused: f64,
}

/// Facts about how a query was answered.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QueryStats {
    /// Live patterns searched.
    pub patterns: usize,
    /// `exact` or `hnsw`.
    pub method: String,
    pub duration_ms: f64,
}

/// `agency patterns list --json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PatternList {
    pub version: u32,
    pub patterns: Vec<PatternSummary>,
}

/// A pattern in a list.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PatternSummary {
    pub id: String,
    pub category: String,
    pub rule: String,
    pub title: String,
    pub confidence: f64,
    pub auto_apply: bool,
    pub support: u32,
    pub successes: u32,
    pub failures: u32,
    pub source: String,
    pub retired: bool,
}

/// `agency patterns show ID --json`: everything about one pattern.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PatternView {
    pub version: u32,
    pub id: String,
    pub category: String,
    pub rule: String,
    pub title: String,
    pub message: String,
    pub explanation: String,
    pub applicability: String,
    pub template: Template,
    pub examples: Vec<ExampleDoc>,
    pub source: String,
    pub confidence: f64,
    pub auto_apply: bool,
    pub support: u32,
    pub successes: u32,
    pub failures: u32,
    pub fingerprint: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub updated_at: String,
    pub retired: Option<Retirement>,
}

/// Why and when a pattern was retired.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Retirement {
    pub at: String,
    pub reason: String,
}

/// `agency patterns prune --json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PruneReport {
    pub version: u32,
    /// Live patterns examined.
    pub checked: usize,
    pub retired: Vec<RetiredPattern>,
}

/// One pattern retired by a prune.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RetiredPattern {
    pub id: String,
    pub rule: String,
    pub reason: String,
}

/// `agency patterns import --json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImportReport {
    pub version: u32,
    pub imported: usize,
    /// Patterns merged into an existing pattern with the same rewrite.
    pub merged: usize,
    pub skipped: Vec<SkippedLine>,
}

/// A line of an import that was valid but not added, and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SkippedLine {
    pub line: usize,
    pub id: String,
    pub reason: String,
}

/// One line of `agency patterns export` (JSON lines): a pattern with its track record, enough to
/// rebuild it in another store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PatternRecord {
    pub version: u32,
    pub id: String,
    pub category: String,
    pub rule: String,
    pub title: String,
    pub message: String,
    #[serde(default)]
    pub explanation: String,
    pub applicability: String,
    pub before: String,
    pub after: String,
    pub examples: Vec<ExampleDoc>,
    pub source: String,
    #[serde(default)]
    pub prior: Prior,
    #[serde(default)]
    pub successes: u32,
    #[serde(default)]
    pub failures: u32,
    #[serde(default)]
    pub decayed_successes: f64,
    #[serde(default)]
    pub decayed_failures: f64,
    /// Unix seconds the decayed counts refer to.
    #[serde(default)]
    pub as_of: i64,
    #[serde(default)]
    pub created_at: i64,
    #[serde(default)]
    pub retired: Option<RecordRetirement>,
}

/// A curated prior, in pseudo-outcomes.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Prior {
    pub successes: f64,
    pub failures: f64,
}

/// Retirement in an export record (unix seconds).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RecordRetirement {
    pub at: i64,
    pub reason: String,
}

/// A finding's priority: P0 security, P1 errors (type, import, runtime), P2 warnings
/// (performance, logic), P3 style. Ordered so that `P0 < P1`: "at or above P1" is `<= P1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Priority {
    P0,
    P1,
    P2,
    P3,
}

impl Priority {
    /// The priority of a category, as CONTRACT.md assigns it.
    pub fn of(category: crate::Category) -> Priority {
        use crate::Category;
        match category {
            Category::Security => Priority::P0,
            Category::Type | Category::Import | Category::Runtime => Priority::P1,
            Category::Performance | Category::Logic => Priority::P2,
            Category::Style => Priority::P3,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::P0 => "P0",
            Priority::P1 => "P1",
            Priority::P2 => "P2",
            Priority::P3 => "P3",
        }
    }
}

impl std::str::FromStr for Priority {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "P0" => Ok(Priority::P0),
            "P1" => Ok(Priority::P1),
            "P2" => Ok(Priority::P2),
            "P3" => Ok(Priority::P3),
            _ => Err(format!("unknown priority `{s}`: expected P0, P1, P2 or P3")),
        }
    }
}

/// A finding's severity, from the tool that reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    High,
    Medium,
    Low,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::High => "high",
            Severity::Medium => "medium",
            Severity::Low => "low",
        }
    }
}

/// `agency heal --scan --json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScanReport {
    pub version: u32,
    pub findings: Vec<Finding>,
    pub stats: ScanStats,
    /// External tools: which ran, their versions, and which were missing or failed.
    #[serde(default)]
    pub tools: Vec<ToolRun>,
    /// Files that could not be analysed (unreadable, not UTF-8) with the reason.
    #[serde(default)]
    pub skipped: Vec<SkippedFile>,
}

/// One problem found in the repository.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Finding {
    /// Stable across unrelated edits: no line numbers (see `docs/json.md`).
    pub id: String,
    pub category: String,
    pub rule: String,
    /// The primary source: `ruff`, `mypy`, `bandit` or `agency`.
    pub tool: String,
    pub priority: Priority,
    pub severity: Severity,
    /// Relative to the repository root, `/`-separated.
    pub file: String,
    /// 1-based.
    pub line: u32,
    /// 1-based, in characters.
    pub column: u32,
    pub end_line: u32,
    pub end_column: u32,
    pub message: String,
    pub fix: FixAvailability,
    /// Every tool that reported this finding (more than one after merging duplicates).
    pub sources: Vec<FindingSource>,
    /// The offending source line, without its line ending.
    pub snippet: String,
    /// Estimated share of the enclosing work a performance fix saves, in percent.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub impact_pct: Option<u32>,
}

/// A performance change estimated to save more than this share of the work waits for a
/// human's approval: it changes what the code does at scale.
pub const APPROVAL_IMPACT_PCT: u32 = 10;

impl Finding {
    /// Why a fix of this finding never applies on its own, if it does not: every logic fix,
    /// high-severity security fixes, and performance changes over [`APPROVAL_IMPACT_PCT`].
    pub fn approval_reason(&self) -> Option<String> {
        if self.category == "logic" {
            return Some("a logic fix changes what the code means: a human decides".into());
        }
        if self.category == "security" && self.severity == Severity::High {
            return Some("a high-severity security fix: a human decides".into());
        }
        if self.category == "performance"
            && let Some(impact) = self.impact_pct.filter(|&pct| pct > APPROVAL_IMPACT_PCT)
        {
            return Some(format!(
                "a performance change estimated at {impact}% of the work (over {APPROVAL_IMPACT_PCT}%): a human decides"
            ));
        }
        None
    }
}

/// Whether a fix is known for a finding.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct FixAvailability {
    pub available: bool,
    pub approval_required: bool,
}

/// One tool's report of a finding.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FindingSource {
    pub tool: String,
    pub rule: String,
}

/// Scan totals.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ScanStats {
    pub files_scanned: u64,
    pub duration_ms: u64,
    #[serde(default)]
    pub lines_scanned: u64,
    /// Findings hidden by `# noqa`-style comments, configuration or the baseline.
    #[serde(default)]
    pub suppressed: u64,
    #[serde(default)]
    pub baselined: u64,
    /// Files answered from the content-hash cache.
    #[serde(default)]
    pub cached_files: u64,
    /// bandit pattern findings left out because agency's data-flow rule for the same defect
    /// looked at the code and did not agree (only without a bandit configuration).
    #[serde(default)]
    pub superseded: u64,
}

/// What happened to one external tool.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ToolRun {
    pub tool: String,
    /// `ok`, `missing`, `failed` (crashed or unparseable output) or `skipped`.
    pub status: String,
    pub version: Option<String>,
    pub path: Option<String>,
    pub duration_ms: u64,
    /// Why the tool is missing or failed, and what to do.
    pub message: Option<String>,
    /// Files answered from agency's per-file result cache instead of running the tool (tools
    /// without a cache of their own: bandit).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cached_files: Option<u64>,
}

/// A file the scan could not analyse.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SkippedFile {
    pub file: String,
    pub reason: String,
}

/// `agency heal --json` (and `--dry-run --json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HealReport {
    pub version: u32,
    pub heals: Vec<Heal>,
    pub summary: HealSummary,
}

/// What happened to one finding.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Heal {
    pub finding: Finding,
    /// `healed`, `rolled_back`, `pending_approval`, `flagged`, `skipped` or `failed`.
    pub status: String,
    /// `pattern`, `rule`, `llm` or `none`.
    pub strategy: String,
    pub pattern_id: Option<String>,
    /// The fix as a unified diff (empty without a fix).
    pub diff: String,
    pub verification: HealVerification,
    /// Why it was flagged, skipped, rolled back or failed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    /// Runtime errors: the regression test added beside the project's tests (repository
    /// path), which failed before the fix and passes after it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub regression_test: Option<String>,
}

/// How a fix was verified.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HealVerification {
    /// `passed`, `failed` or `skipped`.
    pub tests: String,
    pub duration_ms: u64,
}

/// Counts of heals by status.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct HealSummary {
    pub healed: usize,
    pub rolled_back: usize,
    pub pending_approval: usize,
    pub flagged: usize,
    pub failed: usize,
    #[serde(default)]
    pub skipped: usize,
    /// Runs of the verify command, the one before any fix included.
    #[serde(default)]
    pub suite_runs: usize,
    /// True for `--dry-run` (and runs that only previewed): nothing was written.
    #[serde(default)]
    pub dry_run: bool,
}

/// One record of the audit trail (`logs/autonomous_healing/<run-id>-<n>.json` in the repository).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditRecord {
    pub version: u32,
    pub run_id: String,
    /// Position of the attempt in the run, from 1.
    pub attempt: usize,
    pub finding: Finding,
    pub strategy: String,
    pub pattern_id: Option<String>,
    pub confidence: Option<f64>,
    /// Unified diff, secrets redacted.
    pub diff: String,
    pub verification: AuditVerification,
    pub status: String,
    pub reason: Option<String>,
    /// RFC 3339, UTC.
    pub recorded_at: String,
    pub duration_ms: u64,
    /// Runtime errors: the regression test added with the fix (repository path).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub regression_test: Option<String>,
    /// Runtime errors: why no regression test was added.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub regression_note: Option<String>,
}

/// The verification part of an audit record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditVerification {
    pub tests: String,
    pub command: Option<String>,
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub duration_ms: u64,
    /// The last 40 lines of the command's output, secrets redacted.
    pub output: String,
    /// How many fixes the test run that judged this one covered (1 without batching); absent
    /// when no test run judged it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub batch: Option<usize>,
}

/// Formats unix seconds as RFC 3339 in UTC (`2026-11-25T08:53:48Z`).
pub fn format_rfc3339(unix_s: i64) -> String {
    let days = unix_s.div_euclid(86_400);
    let secs = unix_s.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(1_795_596_828), "2026-11-25T08:53:48Z");
        assert_eq!(format_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn record_rejects_unknown_fields() {
        let line = r#"{"version":1,"id":"a","category":"style","rule":"E711","title":"t",
            "message":"m","applicability":"safe","before":"?x == None","after":"?x is None",
            "examples":[],"source":"seed","bogus":1}"#;
        let err = serde_json::from_str::<PatternRecord>(line).unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }
}
