//! The scan benchmark (`agency bench scan`): every cost of a scan measured side by side in one
//! run, on a copy of the repository (the benchmark edits a file and clears caches, so it never
//! touches the user's tree). Scenarios:
//!
//! - `native`: every per-file rule over every file, parallel, no cache (throughput in lines/s);
//! - `ruff`, `mypy (cold)`, `mypy (warm)`, `bandit`: each external tool alone, through the same
//!   adapter and file list a scan uses;
//! - `full scan (cold)`: everything, no native cache, no mypy cache;
//! - `full scan (warm)`: everything again, nothing changed;
//! - `one-file incremental`: one file edited, then the scan of that file (what `--changed` and
//!   a pre-commit hook run), with warm caches;
//! - `full scan after one edit`: one file edited, then the whole repository, warm caches.
//!
//! Ratios are taken against baselines measured in the same run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rayon::prelude::*;
use serde::Serialize;

use crate::cache::Cache;
use crate::discover::{self, Excludes};
use crate::scan::{ScanSettings, run_tool, scan};
use crate::tools::Tool;
use crate::{Error, Result};

/// Timings of one scenario, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub name: String,
    pub runs: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
    /// Lines per second at the median, where the scenario reads every file.
    pub lines_per_s: Option<f64>,
    /// Why the scenario has no timings (a tool is missing or failed).
    pub note: Option<String>,
}

/// The benchmark's report (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub version: u32,
    pub files: usize,
    pub lines: u64,
    pub cores: usize,
    pub scenarios: Vec<Scenario>,
    /// Native lines/s over bandit's lines/s (both at the median, bandit through the adapter).
    pub native_vs_bandit: Option<f64>,
    /// Cold full scan over the slowest external tool as a user runs it alone (cold mypy,
    /// bandit in one process): what the orchestration costs or saves.
    pub full_vs_slowest_tool: Option<f64>,
    /// The same over the slowest tool through agency's adapters (bandit sharded per core).
    pub full_vs_slowest_adapter: Option<f64>,
}

/// Runs every scenario `runs` times on a copy of `settings.root`.
pub fn run(
    settings: &ScanSettings,
    runs: usize,
    progress: &mut dyn FnMut(&str),
) -> Result<BenchReport> {
    let runs = runs.max(1);
    let copy = tempfile::tempdir().map_err(|source| Error::Io {
        path: std::env::temp_dir(),
        source,
    })?;
    let excludes = Excludes::new(&settings.exclude)?;
    let files = discover::discover(&settings.root, &settings.paths, &excludes)?;
    progress(&format!("copying {} files", files.len()));
    copy_repository(&settings.root, copy.path(), &files)?;
    let root = copy.path().to_path_buf();
    let mut base = settings.clone();
    base.root.clone_from(&root);
    base.paths = Vec::new();
    base.changes = None;
    base.baseline.clear();
    base.log = None;

    let sources: Vec<(String, String)> = files
        .iter()
        .filter_map(|f| {
            let text = std::fs::read_to_string(root.join(f)).ok()?;
            Some((f.clone(), text))
        })
        .collect();
    let lines: u64 = sources.iter().map(|(_, t)| t.lines().count() as u64).sum();
    let mut scenarios = Vec::new();

    progress("native analyzers");
    let native = measure("native", runs, Some(lines), || {
        let analysed: usize = sources
            .par_iter()
            .map(|(rel, text)| {
                crate::native::analyze_source(rel, text, &|_| true)
                    .diagnostics
                    .len()
            })
            .sum();
        std::hint::black_box(analysed);
        Ok(())
    })?;
    scenarios.push(native);

    let tool_dir = |tool: Tool| Cache::dir(&root).join(tool.name());
    // No content hashes: each tool runs on every file, as it would alone (no agency cache).
    let no_hashes = HashMap::new();
    for tool in base.tools.clone() {
        let cold_name = if tool == Tool::Mypy {
            "mypy (cold)".to_string()
        } else {
            tool.name().to_string()
        };
        progress(&cold_name);
        scenarios.push(measure_tool(&cold_name, runs, lines, || {
            let _ = std::fs::remove_dir_all(tool_dir(tool));
            let started = Instant::now();
            let outcome = run_tool(tool, &base, &files, &no_hashes);
            (started.elapsed(), outcome.run.status, outcome.run.message)
        }));
        if tool == Tool::Bandit {
            // bandit as a user runs it alone: one process over every file.
            progress("bandit (one process)");
            let mut single = base.clone();
            single.bandit_shards = Some(1);
            scenarios.push(measure_tool("bandit (one process)", runs, lines, || {
                let started = Instant::now();
                let outcome = run_tool(tool, &single, &files, &no_hashes);
                (started.elapsed(), outcome.run.status, outcome.run.message)
            }));
        }
        if tool == Tool::Mypy {
            progress("mypy (warm)");
            let _ = run_tool(tool, &base, &files, &no_hashes);
            scenarios.push(measure_tool("mypy (warm)", runs, lines, || {
                let started = Instant::now();
                let outcome = run_tool(tool, &base, &files, &no_hashes);
                (started.elapsed(), outcome.run.status, outcome.run.message)
            }));
        }
    }

    let quiet = |_: crate::Progress| {};
    progress("full scan (cold)");
    scenarios.push(measure("full scan (cold)", runs, Some(lines), || {
        let _ = std::fs::remove_dir_all(Cache::dir(&root));
        scan(&base, &quiet).map(|_| ())
    })?);
    progress("full scan (warm)");
    scenarios.push(measure("full scan (warm)", runs, Some(lines), || {
        scan(&base, &quiet).map(|_| ())
    })?);

    // The edited file: the largest, the worst case for one-file work.
    if let Some((edited, _)) = sources.iter().max_by_key(|(_, t)| t.len()) {
        let path = root.join(edited);
        let original = std::fs::read_to_string(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let mut edits = 0u32;
        let mut edit = || -> Result<()> {
            edits += 1;
            std::fs::write(&path, format!("{original}\n# agency bench edit {edits}\n")).map_err(
                |source| Error::Io {
                    path: path.clone(),
                    source,
                },
            )
        };
        let mut one = base.clone();
        one.paths = vec![path.clone()];
        progress("one-file incremental");
        scenarios.push(measure("one-file incremental", runs, None, || {
            edit()?;
            scan(&one, &quiet).map(|_| ())
        })?);
        progress("full scan after one edit");
        scenarios.push(measure(
            "full scan after one edit",
            runs,
            Some(lines),
            || {
                edit()?;
                scan(&base, &quiet).map(|_| ())
            },
        )?);
    }

    let find = |name: &str| {
        scenarios
            .iter()
            .find(|s| s.name == name && s.note.is_none())
    };
    let native_vs_bandit = match (find("native"), find("bandit")) {
        (Some(n), Some(b)) => n.lines_per_s.zip(b.lines_per_s).map(|(n, b)| n / b),
        _ => None,
    };
    let slowest = |names: &[&str]| {
        scenarios
            .iter()
            .filter(|s| s.note.is_none() && names.contains(&s.name.as_str()))
            .map(|s| s.p50_ms)
            .fold(None, |acc: Option<f64>, v| {
                Some(acc.map_or(v, |a| a.max(v)))
            })
    };
    let ratio = |slowest: Option<f64>| match (find("full scan (cold)"), slowest) {
        (Some(full), Some(slowest)) if slowest > 0.0 => Some(full.p50_ms / slowest),
        _ => None,
    };
    // Each tool as a user runs it alone (bandit in one process), and against agency's faster
    // sharded bandit.
    let full_vs_slowest_tool = ratio(slowest(&["ruff", "mypy (cold)", "bandit (one process)"]));
    let full_vs_slowest_adapter = ratio(slowest(&["ruff", "mypy (cold)", "bandit"]));
    Ok(BenchReport {
        version: 1,
        files: files.len(),
        lines,
        cores: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        scenarios,
        native_vs_bandit,
        full_vs_slowest_tool,
        full_vs_slowest_adapter,
    })
}

/// Copies the files a scan reads, and the root's own files (tool configuration), into `to`.
fn copy_repository(from: &Path, to: &Path, files: &[String]) -> Result<()> {
    let io = |path: PathBuf| move |source| Error::Io { path, source };
    let mut top: Vec<PathBuf> = std::fs::read_dir(from)
        .map_err(io(from.to_path_buf()))?
        .filter_map(std::result::Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .collect();
    top.extend(files.iter().map(|f| from.join(f)));
    for source in top {
        let Ok(rel) = source.strip_prefix(from) else {
            continue;
        };
        let target = to.join(rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent.to_path_buf()))?;
        }
        std::fs::copy(&source, &target).map_err(io(source.clone()))?;
    }
    Ok(())
}

fn measure(
    name: &str,
    runs: usize,
    lines: Option<u64>,
    mut f: impl FnMut() -> Result<()>,
) -> Result<Scenario> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        f()?;
        times.push(started.elapsed());
    }
    Ok(summarise(name, &times, lines))
}

/// A tool scenario: a run that is not `ok` ends the scenario with its reason.
fn measure_tool(
    name: &str,
    runs: usize,
    lines: u64,
    mut f: impl FnMut() -> (Duration, String, Option<String>),
) -> Scenario {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let (elapsed, status, message) = f();
        if status != "ok" {
            let mut scenario = summarise(name, &[], None);
            scenario.note = Some(format!(
                "{status}: {}",
                message.unwrap_or_else(|| "no message".into())
            ));
            return scenario;
        }
        times.push(elapsed);
    }
    summarise(name, &times, Some(lines))
}

fn summarise(name: &str, times: &[Duration], lines: Option<u64>) -> Scenario {
    let latency = agency_core::latency::Latency::from_samples(times);
    Scenario {
        name: name.to_string(),
        runs: latency.samples,
        p50_ms: latency.p50_ms,
        p95_ms: latency.p95_ms,
        p99_ms: latency.p99_ms,
        mean_ms: latency.mean_ms,
        lines_per_s: lines
            .filter(|_| latency.p50_ms > 0.0)
            .map(|l| l as f64 / (latency.p50_ms / 1000.0)),
        note: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_benchmark_measures_a_copy_and_leaves_the_repository_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.py"), "import os\nx = [1, 2]\n").unwrap();
        std::fs::create_dir(dir.path().join("pkg")).unwrap();
        std::fs::write(dir.path().join("pkg/b.py"), "def f():\n    return 1\n").unwrap();
        let before_a = std::fs::read(dir.path().join("a.py")).unwrap();
        let mut settings = ScanSettings::new(dir.path().canonicalize().unwrap());
        settings.tools = Vec::new();
        let mut steps = Vec::new();
        let report = run(&settings, 2, &mut |s| steps.push(s.to_string())).unwrap();
        assert_eq!(report.files, 2);
        assert_eq!(report.lines, 4);
        let names: Vec<&str> = report.scenarios.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "native",
                "full scan (cold)",
                "full scan (warm)",
                "one-file incremental",
                "full scan after one edit"
            ]
        );
        assert!(
            report
                .scenarios
                .iter()
                .all(|s| s.runs == 2 && s.p50_ms > 0.0)
        );
        assert!(report.scenarios[0].lines_per_s.is_some());
        // The repository itself is untouched: no edit, no cache.
        assert_eq!(std::fs::read(dir.path().join("a.py")).unwrap(), before_a);
        assert!(!dir.path().join(".agency").exists());
    }
}
