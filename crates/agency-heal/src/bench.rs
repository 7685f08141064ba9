//! `agency bench heal`: the heal engine's speed on a repository, measured on private copies
//! (the repository itself is never written). The same run twice, in the same process: with
//! batching (one test run for many fixes, bisected when it fails) and with one test run per
//! fix, so the ratio of suite runs compares like with like.

use std::time::{Duration, Instant};

use agency_core::latency::Latency;
use serde::Serialize;

use crate::{HealSettings, Progress, Result, Status, Workspace};

/// One way of running the heal.
#[derive(Debug, Clone, Serialize)]
pub struct ModeReport {
    /// `batched` or `one_run_per_fix`.
    pub mode: &'static str,
    pub findings: usize,
    /// Findings a fix was tried for.
    pub attempted: usize,
    pub healed: usize,
    pub rolled_back: usize,
    pub pending_approval: usize,
    /// Runs of the verify command, the one before any fix included.
    pub suite_runs: usize,
    /// Suite runs per healed finding (`None` when nothing was healed).
    pub suite_runs_per_healed: Option<f64>,
    /// Per healed finding: from the start of its attempt to its verified fix (its share of a
    /// batch's suite runs included).
    pub heal_latency: Latency,
    /// Per healed finding, detection included: the scan's time shared out over the findings,
    /// plus the test run before any fix shared out, plus its own latency.
    pub detection_to_fix: Latency,
    pub scan_ms: u64,
    pub baseline_ms: u64,
    /// Scan, copy, baseline, every attempt and the writes (to the bench's copy).
    pub wall_ms: u64,
}

/// Both modes on one repository.
#[derive(Debug, Clone, Serialize)]
pub struct HealBench {
    pub version: u32,
    pub files: usize,
    pub cores: usize,
    pub modes: Vec<ModeReport>,
    /// Suite runs without batching ÷ with it (`None` without a verify command or heals).
    pub suite_run_ratio: Option<f64>,
}

/// Runs the heal of `settings.scan.root` on a private copy, once per mode.
pub fn run(settings: &HealSettings, step: &(dyn Fn(&str) + Sync)) -> Result<HealBench> {
    let mut modes = Vec::new();
    let mut files = 0;
    for batch in [true, false] {
        let name = if batch { "batched" } else { "one_run_per_fix" };
        step(&format!("{name}: copying the repository"));
        let scratch = Workspace::create(&settings.scan.root)?;
        files = scratch.len();
        let mut mode_settings = settings.clone();
        mode_settings.batch = batch;
        mode_settings.scan.root = scratch.root().to_path_buf();
        mode_settings.scan.paths = Vec::new();
        mode_settings.scan.changes = None;
        // As a real heal: the scan keeps its cache (in the scratch copy), which seeds the
        // re-scans' mypy cache.
        mode_settings.scan.cache = true;
        mode_settings.scan.log = None;
        modes.push(run_mode(name, &mode_settings, step)?);
    }
    let suite_run_ratio = match (modes.first(), modes.get(1)) {
        (Some(b), Some(o)) if b.suite_runs > 0 && b.healed > 0 => {
            Some(o.suite_runs as f64 / b.suite_runs as f64)
        }
        _ => None,
    };
    Ok(HealBench {
        version: 1,
        files,
        cores: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        modes,
        suite_run_ratio,
    })
}

fn run_mode(
    name: &'static str,
    settings: &HealSettings,
    step: &(dyn Fn(&str) + Sync),
) -> Result<ModeReport> {
    let wall = Instant::now();
    step(&format!("{name}: scanning"));
    let scanned = agency_scan::scan(&settings.scan, &|_| {})?;
    let scan_ms = wall.elapsed().as_millis() as u64;
    let baseline_started = Instant::now();
    let progress = |event: Progress| {
        if let Progress::Attempt {
            index, total, rule, ..
        } = event
        {
            step(&format!("{name}: [{index}/{total}] {rule}"));
        }
    };
    let mut session = crate::start(settings, &progress)?;
    let baseline_ms = baseline_started.elapsed().as_millis() as u64;
    // Deterministic fixers only: the bench asks no pattern store (its answers depend on the
    // machine's history).
    let mut attempts = crate::attempt_all(
        &mut session,
        settings,
        &scanned.findings,
        &crate::Tiers::default(),
        &progress,
    );
    let writes = crate::apply::plan(&session, &attempts);
    let outcomes = crate::apply::execute(&settings.scan.root, &writes, &mut |_, _| {});
    crate::apply::settle(&mut attempts, &outcomes);
    let findings = attempts.len().max(1);
    let shared = Duration::from_millis((scan_ms + baseline_ms) / findings as u64);
    let healed: Vec<&crate::Attempt> = attempts
        .iter()
        .filter(|a| a.status == Status::Healed && a.fixed_by.is_none())
        .collect();
    let own: Vec<Duration> = healed
        .iter()
        .map(|a| Duration::from_millis(a.duration_ms))
        .collect();
    let count = |s: Status| attempts.iter().filter(|a| a.status == s).count();
    Ok(ModeReport {
        mode: name,
        findings: attempts.len(),
        attempted: attempts.iter().filter(|a| a.strategy.is_some()).count(),
        healed: count(Status::Healed),
        rolled_back: count(Status::RolledBack),
        pending_approval: count(Status::PendingApproval),
        suite_runs: session.suite_runs,
        suite_runs_per_healed: (count(Status::Healed) > 0)
            .then(|| session.suite_runs as f64 / count(Status::Healed) as f64),
        heal_latency: Latency::from_samples(&own),
        detection_to_fix: Latency::from_samples(
            &own.iter().map(|d| *d + shared).collect::<Vec<_>>(),
        ),
        scan_ms,
        baseline_ms,
        wall_ms: wall.elapsed().as_millis() as u64,
    })
}
