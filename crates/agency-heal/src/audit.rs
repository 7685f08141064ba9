//! The audit trail: one JSON record per heal under `logs/autonomous_healing/` in the
//! repository, written atomically, with secrets redacted from the diff and the verify output.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use agency_core::contract::{AuditRecord, AuditVerification, Finding, SCHEMA_VERSION};
use regex::Regex;

use crate::{Attempt, Error, Result, VerifyCommand};

/// Where the records go, relative to the repository root.
pub const DIR: &str = "logs/autonomous_healing";

/// Rules whose finding marks a line holding a secret (merged: ours and bandit's).
const SECRET_RULES: &[&str] = &["AGY203", "B105", "B106", "B107", "S105", "S106", "S107"];

/// A run id: UTC time and process id, so that two runs never share a file name.
pub fn run_id() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let stamp = agency_core::contract::format_rfc3339(now).replace([':', '-'], "");
    format!("{stamp}-{}", std::process::id())
}

/// Writes one record per attempt; returns their paths. `verify` is the run's verify command,
/// named in records of attempts whose own suite run did not happen.
pub fn write(
    root: &Path,
    run_id: &str,
    verify: Option<&VerifyCommand>,
    attempts: &[Attempt],
    all_findings: &[Finding],
) -> Result<Vec<PathBuf>> {
    write_records(root, &records(run_id, verify, attempts, all_findings))
}

/// The audit records of a run's attempts, secrets redacted, not written yet.
pub fn records(
    run_id: &str,
    verify: Option<&VerifyCommand>,
    attempts: &[Attempt],
    all_findings: &[Finding],
) -> Vec<AuditRecord> {
    let secrets = secret_lines(all_findings);
    let recorded_at = agency_core::contract::format_rfc3339(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
    );
    attempts
        .iter()
        .enumerate()
        .map(|(i, attempt)| {
            let suite = attempt.verification.suite.as_ref();
            AuditRecord {
                version: SCHEMA_VERSION,
                run_id: run_id.to_string(),
                attempt: i + 1,
                finding: redact_finding(&attempt.finding, &secrets),
                strategy: attempt.strategy.map_or("none", |s| s.as_str()).to_string(),
                pattern_id: attempt.pattern.as_ref().map(|p| p.id.clone()),
                confidence: attempt.pattern.as_ref().map(|p| p.confidence),
                diff: redact_diff(&attempt.diff, &secrets),
                verification: AuditVerification {
                    tests: attempt.verification.tests.as_str().to_string(),
                    command: suite
                        .map(|s| s.command.clone())
                        .or_else(|| verify.map(VerifyCommand::display)),
                    exit_code: suite.and_then(|s| s.exit_code),
                    timed_out: suite.is_some_and(|s| s.timed_out),
                    duration_ms: attempt.verification.duration_ms,
                    output: redact(suite.map_or("", |s| s.tail.as_str())),
                    batch: attempt.verification.batch,
                },
                status: attempt.status.as_str().to_string(),
                reason: attempt.reason.clone(),
                recorded_at: recorded_at.clone(),
                duration_ms: attempt.duration_ms,
                regression_test: attempt.regression.test().map(|t| t.path.clone()),
                regression_note: attempt.regression.note().map(ToString::to_string),
            }
        })
        .collect()
}

/// Writes records, each atomically to `<run_id>-<attempt>.json` (writing one again replaces
/// it); returns their paths.
pub fn write_records(root: &Path, records: &[AuditRecord]) -> Result<Vec<PathBuf>> {
    let dir = root.join(DIR);
    let mut paths = Vec::with_capacity(records.len());
    for record in records {
        let path = dir.join(format!("{}-{}.json", record.run_id, record.attempt));
        let mut bytes = serde_json::to_vec_pretty(record)
            .expect("an audit record always serialises: plain strings and numbers");
        bytes.push(b'\n');
        agency_fs::atomic_write(&path, &bytes).map_err(|source| Error::Audit {
            path: path.clone(),
            source,
        })?;
        paths.push(path);
    }
    Ok(paths)
}

/// Whether a finding reports a hardcoded secret.
fn is_secret(f: &Finding) -> bool {
    SECRET_RULES.contains(&f.rule.as_str())
        || f.sources
            .iter()
            .any(|s| SECRET_RULES.contains(&s.rule.as_str()))
}

/// The trimmed text of every line a secret finding points at.
fn secret_lines(findings: &[Finding]) -> Vec<String> {
    findings
        .iter()
        .filter(|f| is_secret(f))
        .map(|f| f.snippet.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The finding with its snippet redacted (it quotes the source line, secret included).
fn redact_finding(finding: &Finding, secret_lines: &[String]) -> Finding {
    let mut finding = finding.clone();
    if is_secret(&finding) {
        // bandit quotes the literal in its message too: "Possible hardcoded password: 'x'".
        finding.message = redact_literals(&finding.message);
    }
    if is_secret(&finding) || secret_lines.iter().any(|s| finding.snippet.trim() == s) {
        finding.snippet = redact_literals(&finding.snippet);
    }
    finding.snippet = redact(&finding.snippet);
    finding.message = redact(&finding.message);
    finding
}

/// Redacts a diff: quoted literals on the lines secret findings point at, then the patterns
/// [`redact`] knows everywhere.
pub fn redact_diff(diff: &str, secret_lines: &[String]) -> String {
    let mut out = String::with_capacity(diff.len());
    for line in diff.split_inclusive('\n') {
        let is_body = line.starts_with([' ', '+', '-'])
            && !line.starts_with("--- ")
            && !line.starts_with("+++ ");
        let content = if is_body { &line[1..] } else { line };
        if is_body && secret_lines.iter().any(|s| content.trim() == s) {
            out.push_str(&line[..1]);
            out.push_str(&redact_literals(content));
        } else {
            out.push_str(line);
        }
    }
    redact(&out)
}

static AWS_KEY: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"AKIA[0-9A-Z]{16}").expect("a valid regex"));
static PRIVATE_KEY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?s)-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(-----END [A-Z0-9 ]*PRIVATE KEY-----|\z)",
    )
    .expect("a valid regex")
});

/// Redacts AWS access key ids and private key blocks (an unterminated block to the end).
pub fn redact(text: &str) -> String {
    let text = AWS_KEY.replace_all(text, "<redacted>");
    PRIVATE_KEY
        .replace_all(
            &text,
            "-----BEGIN PRIVATE KEY-----<redacted>-----END PRIVATE KEY-----",
        )
        .into_owned()
}

/// Replaces every quoted string literal on a line with `"<redacted>"`.
fn redact_literals(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        if c != '"' && c != '\'' {
            out.push(c);
            continue;
        }
        // Skip to the matching unescaped quote, or to the end of the line (kept).
        let mut escaped = false;
        while let Some(&(_, inner)) = chars.peek() {
            if inner == '\n' {
                break;
            }
            chars.next();
            if escaped {
                escaped = false;
            } else if inner == '\\' {
                escaped = true;
            } else if inner == c {
                break;
            }
        }
        out.push_str("\"<redacted>\"");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_on_secret_lines_are_redacted_in_diffs() {
        let diff = "--- a/app.py\n+++ b/app.py\n@@ -1,3 +1,2 @@\n-import os\n password = \"hunter2\"  # don't\n name = \"ok\"\n";
        let out = redact_diff(diff, &["password = \"hunter2\"  # don't".to_string()]);
        // An unclosed quote is redacted to the end of its line, never past it.
        assert_eq!(
            out,
            "--- a/app.py\n+++ b/app.py\n@@ -1,3 +1,2 @@\n-import os\n password = \"<redacted>\"  # don\"<redacted>\"\n name = \"ok\"\n"
        );
        assert!(!out.contains("hunter2"));
    }

    #[test]
    fn keys_are_redacted_everywhere() {
        let text = "key = AKIAABCDEFGHIJKLMNOP\n-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----\nafter\n-----BEGIN PRIVATE KEY-----\ncut off";
        let out = redact(text);
        assert_eq!(
            out,
            "key = <redacted>\n-----BEGIN PRIVATE KEY-----<redacted>-----END PRIVATE KEY-----\nafter\n-----BEGIN PRIVATE KEY-----<redacted>-----END PRIVATE KEY-----"
        );
    }

    #[test]
    fn escaped_quotes_stay_inside_the_literal() {
        assert_eq!(
            redact_literals(r#"token = "a\"b" + 'c'"#),
            r#"token = "<redacted>" + "<redacted>""#
        );
    }

    #[test]
    fn run_ids_name_time_and_process() {
        let id = run_id();
        assert!(id.ends_with(&format!("-{}", std::process::id())), "{id}");
        assert!(!id.contains(':'), "{id}");
    }
}
