//! bandit: `bandit -f json`. bandit is single-threaded and the slowest of the three tools, so
//! the files are split into one shard per core and the shards run concurrently. Without a
//! bandit configuration in the repository, the run is kept selective: medium severity and
//! above, and `assert` (B101) is not reported, since it floods every test suite.
//!
//! bandit judges each file alone and keeps no cache, so agency keeps one: its results per file
//! content hash in `.agency/cache/bandit/results.json`, keyed by bandit's version and the
//! configuration; only files whose bytes changed are given to bandit again.

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::time::Instant;

use agency_core::Category;
use agency_core::contract::Severity;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{RawFinding, Tool, ToolOutcome, ToolRequest, exec, failure, tool_path};

/// bandit's own configuration files; with one of them the repository decides what is reported.
const CONFIG_FILES: &[&str] = &[".bandit", "bandit.yaml", "bandit.yml"];
/// The arguments used without a repository configuration.
const DEFAULT_ARGS: &[&str] = &["--severity-level", "medium", "--skip", "B101"];
const CACHE_FORMAT: u32 = 1;

/// The per-file result cache.
#[derive(Debug, Default, Serialize, Deserialize)]
struct ResultCache {
    format: u32,
    /// bandit's version and configuration: another key voids every entry.
    key: String,
    files: BTreeMap<String, CachedFile>,
}

#[derive(Debug, Serialize, Deserialize)]
struct CachedFile {
    hash: String,
    findings: Vec<CachedFinding>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CachedFinding {
    rule: String,
    severity: Severity,
    line: u32,
    column: u32,
    end_line: u32,
    end_column: u32,
    message: String,
}

impl CachedFinding {
    fn from_raw(f: &RawFinding) -> Self {
        CachedFinding {
            rule: f.rule.clone(),
            severity: f.severity,
            line: f.line,
            column: f.column,
            end_line: f.end_line,
            end_column: f.end_column,
            message: f.message.clone(),
        }
    }

    fn into_raw(self, file: &str) -> RawFinding {
        RawFinding {
            tool: "bandit",
            rule: self.rule,
            category: Category::Security,
            severity: self.severity,
            file: file.to_string(),
            line: self.line,
            column: self.column,
            end_line: self.end_line,
            end_column: self.end_column,
            message: self.message,
            fix: None,
            impact_pct: None,
            related_line: None,
        }
    }
}

/// What the results depend on besides the file: bandit's version and its configuration.
fn cache_key(request: &ToolRequest) -> String {
    let mut hasher = Sha256::new();
    hasher.update(request.exe.to_string_lossy().as_bytes());
    hasher.update(super::version(Tool::Bandit, &request.exe).unwrap_or_default());
    match config_file(request) {
        Some(path) => hasher.update(std::fs::read(path).unwrap_or_default()),
        None => hasher.update(DEFAULT_ARGS.join(" ")),
    }
    format!("{:x}", hasher.finalize())
}

fn config_file(request: &ToolRequest) -> Option<std::path::PathBuf> {
    config_path(request.root)
}

/// bandit's configuration in the repository: one of its own files, else `pyproject.toml` when
/// it has a `[tool.bandit]` table (bandit reads it only when given with `-c`).
fn config_path(root: &std::path::Path) -> Option<std::path::PathBuf> {
    CONFIG_FILES
        .iter()
        .map(|f| root.join(f))
        .find(|p| p.is_file())
        .or_else(|| {
            let pyproject = root.join("pyproject.toml");
            std::fs::read_to_string(&pyproject)
                .is_ok_and(|text| text.contains("[tool.bandit"))
                .then_some(pyproject)
        })
}

/// The repository configures bandit (then its configuration decides what is reported).
pub fn configured(root: &std::path::Path) -> bool {
    config_path(root).is_some()
}

pub(crate) fn run(request: &ToolRequest, started: Instant) -> ToolOutcome {
    let cache_path = request
        .cache_dir
        .as_ref()
        .filter(|_| !request.hashes.is_empty())
        .map(|dir| dir.join("results.json"));
    let Some(cache_path) = cache_path else {
        return match run_files(request, request.files) {
            Ok(findings) => ToolOutcome::ok(Tool::Bandit, &request.exe, started, findings),
            Err(message) => ToolOutcome::failed(Tool::Bandit, &request.exe, started, message),
        };
    };
    let key = cache_key(request);
    let mut cache: ResultCache = std::fs::read(&cache_path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .filter(|c: &ResultCache| c.format == CACHE_FORMAT && c.key == key)
        .unwrap_or_default();
    let stale: Vec<String> = request
        .files
        .iter()
        .filter(|f| {
            let current = request.hashes.get(*f);
            current.is_none() || cache.files.get(*f).map(|c| &c.hash) != current
        })
        .cloned()
        .collect();
    let fresh = match run_files(request, &stale) {
        Ok(findings) => findings,
        Err(message) => return ToolOutcome::failed(Tool::Bandit, &request.exe, started, message),
    };
    let mut by_file: HashMap<&str, Vec<CachedFinding>> = HashMap::new();
    for f in &fresh {
        by_file
            .entry(f.file.as_str())
            .or_default()
            .push(CachedFinding::from_raw(f));
    }
    let mut findings: Vec<RawFinding> = Vec::new();
    for file in &stale {
        if let Some(hash) = request.hashes.get(file) {
            cache.files.insert(
                file.clone(),
                CachedFile {
                    hash: hash.clone(),
                    findings: by_file.remove(file.as_str()).unwrap_or_default(),
                },
            );
        }
    }
    drop(by_file);
    let stale_set: std::collections::HashSet<&str> = stale.iter().map(String::as_str).collect();
    for file in request.files {
        if stale_set.contains(file.as_str()) {
            continue;
        }
        if let Some(cached) = cache.files.get(file) {
            findings.extend(cached.findings.iter().map(|c| c.clone().into_raw(file)));
        }
    }
    findings.extend(fresh);
    let cached = (request.files.len() - stale.len()) as u64;
    cache.format = CACHE_FORMAT;
    cache.key = key;
    if !stale.is_empty() {
        let written = std::fs::create_dir_all(request.cache_dir.as_deref().unwrap_or(request.root))
            .and_then(|()| {
                let bytes = serde_json::to_vec(&cache).map_err(std::io::Error::other)?;
                agency_fs::atomic_write(&cache_path, &bytes).map_err(std::io::Error::other)
            });
        if let Err(e) = written {
            tracing::warn!(path = %cache_path.display(), error = %e, "cannot write bandit's result cache");
        }
    }
    let mut outcome = ToolOutcome::ok(Tool::Bandit, &request.exe, started, findings);
    outcome.run.cached_files = Some(cached);
    outcome
}

/// Runs bandit on `files`, one shard per core.
fn run_files(request: &ToolRequest, files: &[String]) -> Result<Vec<RawFinding>, String> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let shards = request
        .shards
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(1, std::num::NonZero::get)
                .clamp(1, 4)
        })
        .clamp(1, files.len());
    let chunk = files.len().div_ceil(shards).max(1);
    let results: Vec<Result<Vec<RawFinding>, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = files
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
        findings.append(&mut result?);
    }
    Ok(findings)
}

fn run_shard(request: &ToolRequest, files: &[String]) -> Result<Vec<RawFinding>, String> {
    let mut cmd = Command::new(&request.exe);
    cmd.args(["-f", "json", "-q"]);
    match config_file(request) {
        Some(config) => {
            cmd.arg("-c").arg(config);
        }
        None => {
            cmd.args(DEFAULT_ARGS);
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
                related_line: None,
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
