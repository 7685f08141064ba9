//! `agency heal --scan` (detect only: writes no source file) and `agency baseline`. Resolves
//! the repository root and its configuration, merges the flags, runs the scanner and renders
//! its report as text, the JSON contract or SARIF, and picks the exit code from `--fail-on`.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agency_core::contract::{Finding, Priority, ScanReport};
use agency_scan::git::Changes;
use agency_scan::tools::{Tool, ToolLocations};
use agency_scan::{Progress, ScanSettings, baseline};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

use crate::ExitStatus;
use crate::config;
use crate::output;

/// `agency heal`. Serialisable: a run journals its options so that `--resume` can run it
/// again the same way.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
#[allow(clippy::struct_excessive_bools)] // command-line flags
pub struct HealArgs {
    /// Detect only: report findings, change nothing.
    #[arg(long)]
    scan: bool,
    /// Print the contract's JSON document on stdout.
    #[arg(long, conflicts_with = "sarif")]
    pub(crate) json: bool,
    /// Print SARIF 2.1.0 (for GitHub code scanning) on stdout.
    #[arg(long)]
    sarif: bool,
    /// Exit 1 when findings at or above this priority remain (default P1, or `[scan] fail_on`).
    #[arg(long, value_name = "P0|P1|P2|P3")]
    fail_on: Option<Priority>,
    /// Do not report findings recorded in this baseline file.
    #[arg(long, value_name = "FILE")]
    baseline: Option<PathBuf>,
    /// Only files changed against HEAD (including untracked ones).
    #[arg(long, conflicts_with_all = ["staged", "since"])]
    changed: bool,
    /// Only files staged in the git index (what a pre-commit hook sees).
    #[arg(long, conflicts_with = "since")]
    staged: bool,
    /// Only files changed since this revision.
    #[arg(long, value_name = "REV")]
    since: Option<String>,
    /// Neither read nor write the cache in `.agency/cache/`.
    #[arg(long)]
    no_cache: bool,
    /// External tools to run (default: ruff,mypy,bandit); `none` runs only agency's analyzers.
    #[arg(long, value_delimiter = ',', value_name = "TOOLS")]
    tools: Option<Vec<String>>,
    /// Read Python tracebacks from this log (`-`: standard input) and report the runtime
    /// errors they show, mapped to the repository's files, instead of analysing the code.
    #[arg(long, value_name = "FILE|-", conflicts_with_all = ["changed", "staged", "since", "tools"])]
    pub(crate) from_log: Option<PathBuf>,
    /// Follow this growing log (rotation-safe) and heal each new traceback as it appears, at
    /// most one heal per signature at a time, until Ctrl-C. Reads from the END of the file:
    /// only tracebacks written from then on are healed (--from-start: those already in it too). Needs --yes (nobody answers a prompt);
    /// with --json, prints one heal report per heal run on stdout, one per line (NDJSON).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["scan", "sarif", "dry_run", "from_log", "resume", "changed", "staged", "since", "tools", "paths"])]
    #[serde(default)]
    pub(crate) watch_log: Option<PathBuf>,
    /// With --watch-log: heal the tracebacks already in the log too, then follow it as it
    /// grows (each crash signature is still healed at most once at a time).
    #[arg(long, requires = "watch_log")]
    #[serde(default)]
    pub(crate) from_start: bool,
    /// Show every proposed fix as a unified diff with its strategy; writes nothing to the
    /// repository (no fix, no audit record: it is a preview, and fixes are not verified).
    #[arg(long, conflicts_with_all = ["scan", "yes"])]
    dry_run: bool,
    /// Apply verified fixes without asking.
    #[arg(long, conflicts_with = "scan")]
    pub(crate) yes: bool,
    /// Also try the fixes ruff marks unsafe (they may change behaviour); each is still verified.
    #[arg(long, conflicts_with = "scan")]
    unsafe_fixes: bool,
    /// Refuse to heal when the test suite already fails before any fix.
    #[arg(long, conflicts_with = "scan")]
    require_green: bool,
    /// Run the tests once per fix instead of once for all the fixes that pass their cheap
    /// checks (parse, re-scan) with a bisection when that run fails.
    #[arg(long, conflicts_with = "scan")]
    no_batch: bool,
    /// Finish the interrupted heal run of this repository (after a crash, kill -9 or power
    /// cut): write its verified fixes that were not written yet, never one twice.
    #[arg(long, conflicts_with_all = ["scan", "dry_run", "from_log", "paths"])]
    #[serde(default)]
    resume: bool,
    /// Files or directories to scan (default: the whole repository).
    paths: Vec<PathBuf>,
}

/// `agency baseline`.
#[derive(Debug, Subcommand)]
pub enum BaselineCommand {
    /// Record today's findings (default file: .agency/baseline.json); fails if it exists.
    Create(BaselineArgs),
    /// Re-record the findings, dropping the fixed ones and adding the new ones.
    Update(BaselineArgs),
}

#[derive(Debug, Args)]
pub struct BaselineArgs {
    /// The baseline file (default: .agency/baseline.json in the repository).
    file: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// `agency bench scan`.
#[derive(Debug, Args)]
pub struct ScanBenchArgs {
    /// Times each scenario runs.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// External tools to include (default: ruff,mypy,bandit); `none` times only agency's own.
    #[arg(long, value_delimiter = ',', value_name = "TOOLS")]
    tools: Option<Vec<String>>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// The directory to measure (default: the repository around the working directory).
    paths: Vec<PathBuf>,
}

/// `agency bench heal`.
#[derive(Debug, Args)]
pub struct HealBenchArgs {
    /// External tools to include (default: ruff,mypy,bandit); `none` times only agency's own.
    #[arg(long, value_delimiter = ',', value_name = "TOOLS")]
    tools: Option<Vec<String>>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Heal the runtime errors of this log instead of the scan's findings (`-`: standard
    /// input): the latency from a log line to its verified fix.
    #[arg(long, value_name = "FILE|-", conflicts_with = "tools")]
    from_log: Option<PathBuf>,
    /// The repository to measure (default: the one around the working directory); it is
    /// copied, never written.
    path: Option<PathBuf>,
}

/// Flags of a plain full scan, for commands that scan on their own terms.
fn plain_scan_args(tools: Option<Vec<String>>, paths: Vec<PathBuf>) -> HealArgs {
    HealArgs {
        scan: true,
        json: false,
        sarif: false,
        fail_on: None,
        baseline: None,
        changed: false,
        staged: false,
        since: None,
        no_cache: false,
        tools,
        from_log: None,
        watch_log: None,
        from_start: false,
        dry_run: false,
        yes: false,
        unsafe_fixes: false,
        require_green: false,
        no_batch: false,
        resume: false,
        paths,
    }
}

pub fn run_bench(home: &Path, args: &ScanBenchArgs) -> Result<ExitStatus> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let root = config::find_root(&cwd);
    let loaded = config::load(&root)?;
    let scan_options = loaded.options.scan.clone().unwrap_or_default();
    let settings = settings(
        home,
        &root,
        &scan_options,
        &plain_scan_args(args.tools.clone(), args.paths.clone()),
    )?;
    let report = agency_scan::bench::run(&settings, args.runs, &mut |step| {
        output::progress_line(&format!("bench: {step}"));
    })?;
    if args.json {
        output::print_json(&report)?;
        return Ok(ExitStatus::Success);
    }
    let rows: Vec<Vec<String>> = report
        .scenarios
        .iter()
        .map(|s| {
            if let Some(note) = &s.note {
                return vec![
                    s.name.clone(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    note.clone(),
                ];
            }
            vec![
                s.name.clone(),
                format!("{:.0}", s.p50_ms),
                format!("{:.0}", s.p95_ms),
                format!("{:.0}", s.p99_ms),
                s.lines_per_s
                    .map_or_else(String::new, |l| format!("{l:.0} lines/s")),
            ]
        })
        .collect();
    let mut text = format!(
        "{} files, {} lines, {} cores, {} runs each\n\n",
        report.files, report.lines, report.cores, args.runs
    );
    text.push_str(&output::table(
        &["scenario", "p50 ms", "p95 ms", "p99 ms", "throughput"],
        &rows,
    ));
    if let Some(r) = report.native_vs_bandit {
        let _ = writeln!(text, "\nnative rules: {r:.1}x bandit's throughput");
    }
    if let Some(r) = report.full_vs_slowest_tool {
        let _ = writeln!(
            text,
            "full scan (cold): {r:.2}x the slowest tool run alone (bandit in one process)"
        );
    }
    if let Some(r) = report.full_vs_slowest_adapter {
        let _ = writeln!(
            text,
            "full scan (cold): {r:.2}x the slowest tool through agency (bandit sharded)"
        );
    }
    output::print_text(&text)?;
    Ok(ExitStatus::Success)
}

pub fn run(home: &Path, args: &HealArgs) -> Result<ExitStatus> {
    if let Some(log) = &args.watch_log {
        return crate::watch::run(home, args, log);
    }
    if !args.scan {
        return run_heal(home, args);
    }
    // The repository is the one the command runs in, as for git: paths outside it are refused.
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let root = config::find_root(&cwd);
    let (mut settings, fail_on, _) = scan_settings(home, &root, args)?;
    if let Some(log) = &args.from_log {
        let text = read_log(log)?;
        warn_without_tracebacks(&text, log);
        settings.log = Some(text);
    }
    let output = scan_with_progress(&settings)?;
    for note in &output.notes {
        output::warn(note);
    }
    for tool in &output.report.tools {
        if tool.status != "ok"
            && let Some(message) = &tool.message
        {
            output::warn(&format!("{} {}: {message}", tool.tool, tool.status));
        }
    }
    if args.json {
        output::print_json(&output.report)?;
    } else if args.sarif {
        output::print_json(&agency_scan::sarif::render(
            &output.report.findings,
            env!("CARGO_PKG_VERSION"),
        ))?;
    } else {
        output::print_text(&render_text(&output.report, fail_on))?;
    }
    Ok(exit_status(&output.report.findings, fail_on))
}

pub fn run_baseline(home: &Path, command: &BaselineCommand) -> Result<ExitStatus> {
    let (args, create) = match command {
        BaselineCommand::Create(args) => (args, true),
        BaselineCommand::Update(args) => (args, false),
    };
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let root = config::find_root(&cwd);
    let loaded = config::load(&root)?;
    let scan_options = loaded.options.scan.clone().unwrap_or_default();
    let path = args.file.as_ref().map_or_else(
        || {
            root.join(
                scan_options
                    .baseline
                    .as_deref()
                    .unwrap_or(baseline::DEFAULT_PATH),
            )
        },
        |f| cwd.join(f),
    );
    if create && path.exists() {
        bail!(
            "{} already exists: run `agency baseline update` to re-record it",
            path.display()
        );
    }
    let scan_args = plain_scan_args(None, Vec::new());
    let settings = settings(home, &root, &scan_options, &scan_args)?;
    let output = scan_with_progress(&settings)?;
    baseline::write(&path, &output.report.findings)
        .with_context(|| format!("cannot write the baseline {}", path.display()))?;
    if args.json {
        output::print_json(&serde_json::json!({
            "version": 1,
            "baseline": path.display().to_string(),
            "findings": output.report.findings.len(),
        }))?;
    } else {
        output::print_text(&format!(
            "Recorded {} findings in {}; scans with --baseline {} (or `[scan] baseline`) report only new ones.\n",
            output.report.findings.len(),
            path.display(),
            path.display()
        ))?;
    }
    Ok(ExitStatus::Success)
}

fn settings(
    home: &Path,
    root: &Path,
    options: &agency_core::config::ScanOptions,
    args: &HealArgs,
) -> Result<ScanSettings> {
    let mut settings = ScanSettings::new(root.to_path_buf());
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    settings.paths = args.paths.iter().map(|p| cwd.join(p)).collect();
    settings.changes = if args.changed {
        Some(Changes::Changed)
    } else if args.staged {
        Some(Changes::Staged)
    } else {
        args.since.clone().map(Changes::Since)
    };
    settings.exclude = options.exclude.clone().unwrap_or_default();
    settings.select = options.select.clone().unwrap_or_default();
    settings.ignore = options.ignore.clone().unwrap_or_default();
    settings.cache = !args.no_cache;
    settings.tool_timeout = Duration::from_mins(10);
    if let Some(tools) = &args.tools {
        settings.tools = Vec::new();
        for name in tools {
            match name.as_str() {
                "none" => {}
                "ruff" => settings.tools.push(Tool::Ruff),
                "mypy" => settings.tools.push(Tool::Mypy),
                "bandit" => settings.tools.push(Tool::Bandit),
                other => {
                    bail!("unknown tool `{other}` in --tools: expected ruff, mypy, bandit or none")
                }
            }
        }
    }
    let layout = agency_setup::Layout::new(home);
    let mut locations = ToolLocations {
        pinned_bin: Some(layout.venv().join("bin")),
        active_venv: std::env::var_os("VIRTUAL_ENV").map(PathBuf::from),
        configured: Vec::new(),
    };
    if let Some(paths) = &options.tools {
        for (tool, path) in [
            (Tool::Ruff, &paths.ruff),
            (Tool::Mypy, &paths.mypy),
            (Tool::Bandit, &paths.bandit),
        ] {
            if let Some(path) = path {
                locations.configured.push((tool, PathBuf::from(path)));
            }
        }
    }
    settings.locations = locations;
    Ok(settings)
}

/// The log's text: a file, or standard input for `-`. Bytes that are not UTF-8 (a log mixes
/// whatever programs print) are replaced, not refused.
/// Says so when a log holds no traceback (a wrong file, a binary one): nothing to heal.
fn warn_without_tracebacks(text: &str, path: &Path) {
    if agency_scan::traceback::parse_log(text).is_empty() {
        output::warn(&format!(
            "no Python traceback in {}: nothing to heal (is it the application's error log?)",
            if path == Path::new("-") {
                "standard input".to_string()
            } else {
                path.display().to_string()
            }
        ));
    }
}

fn read_log(path: &Path) -> Result<String> {
    let bytes = if path == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut bytes)
            .context("cannot read the log from standard input")?;
        bytes
    } else {
        std::fs::read(path).with_context(|| {
            format!(
                "cannot read the log {}: check the path (use `-` to read standard input)",
                path.display()
            )
        })?
    };
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn scan_with_progress(settings: &ScanSettings) -> Result<agency_scan::ScanOutput> {
    let bar = std::sync::Mutex::new(None::<indicatif::ProgressBar>);
    let plain = output::plain_progress();
    let progress = |event: Progress| match event {
        Progress::Discovered { files } => {
            if plain {
                eprintln!("agency: scanning {files} files");
            }
            if let Ok(mut bar) = bar.lock() {
                *bar = Some(output::bar(files, "analyzing"));
            }
        }
        Progress::Analyzed { done, .. } => {
            if let Ok(bar) = bar.lock()
                && let Some(bar) = bar.as_ref()
            {
                bar.set_position(done as u64);
            }
        }
        Progress::ToolFinished { tool } => {
            if plain {
                eprintln!("agency: {tool} finished");
            }
        }
    };
    let result = agency_scan::scan(settings, &progress);
    if let Ok(bar) = bar.lock()
        && let Some(bar) = bar.as_ref()
    {
        bar.finish_and_clear();
    }
    Ok(result?)
}

fn exit_status(findings: &[Finding], fail_on: Priority) -> ExitStatus {
    if findings.iter().any(|f| f.priority <= fail_on) {
        ExitStatus::Failure
    } else {
        ExitStatus::Success
    }
}

/// The human view: findings grouped by file with the offending line, then a summary.
fn render_text(report: &ScanReport, fail_on: Priority) -> String {
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let paint = |code: &str, text: &str| {
        if color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    };
    let mut out = String::new();
    let mut current_file: Option<&str> = None;
    for f in &report.findings {
        if current_file != Some(f.file.as_str()) {
            if current_file.is_some() {
                out.push('\n');
            }
            let _ = writeln!(out, "{}", paint("1", &f.file));
            current_file = Some(&f.file);
        }
        let priority_color = match f.priority {
            Priority::P0 => "31;1",
            Priority::P1 => "31",
            Priority::P2 => "33",
            Priority::P3 => "36",
        };
        let sources: Vec<String> = f
            .sources
            .iter()
            .map(|s| format!("{} {}", s.tool, s.rule))
            .collect();
        let _ = writeln!(
            out,
            "  {}:{} {} {} {} ({})",
            f.line,
            f.column,
            paint(priority_color, f.priority.as_str()),
            paint("1", &f.rule),
            f.message,
            sources.join(", ")
        );
        if !f.snippet.trim().is_empty() {
            let _ = writeln!(out, "    {} | {}", f.line, f.snippet.trim_end());
        }
    }
    if !report.findings.is_empty() {
        out.push('\n');
    }
    let mut counts = [0usize; 4];
    for f in &report.findings {
        counts[f.priority as usize] += 1;
    }
    let failing: usize = report
        .findings
        .iter()
        .filter(|f| f.priority <= fail_on)
        .count();
    let _ = writeln!(
        out,
        "{} findings (P0 {}, P1 {}, P2 {}, P3 {}) in {} files, {} lines, {} ms; {} at or above {}",
        report.findings.len(),
        counts[0],
        counts[1],
        counts[2],
        counts[3],
        report.stats.files_scanned,
        report.stats.lines_scanned,
        report.stats.duration_ms,
        failing,
        fail_on.as_str()
    );
    let tools: Vec<String> = report
        .tools
        .iter()
        .map(|t| match &t.version {
            Some(v) => format!("{} {v} {}", t.tool, t.status),
            None => format!("{} {}", t.tool, t.status),
        })
        .collect();
    if !tools.is_empty() {
        let _ = writeln!(out, "tools: {}", tools.join(", "));
    }
    if report.stats.suppressed + report.stats.baselined > 0 {
        let _ = writeln!(
            out,
            "hidden: {} by suppression comments, {} by the baseline",
            report.stats.suppressed, report.stats.baselined
        );
    }
    for skipped in &report.skipped {
        let _ = writeln!(out, "skipped {}: {}", skipped.file, skipped.reason);
    }
    out
}

/// `agency heal` without `--scan`: scan, then fix in a private copy, verify, and keep the
/// verified fixes (after asking, unless `--yes`); `--dry-run` only shows the fixes.
/// The scan settings of the repository at `root` (its configuration merged with the flags,
/// the baseline loaded), the failing priority, and the configuration they came from.
fn scan_settings(
    home: &Path,
    root: &Path,
    args: &HealArgs,
) -> Result<(ScanSettings, Priority, config::Loaded)> {
    let loaded = config::load(root)?;
    let scan_options = loaded.options.scan.clone().unwrap_or_default();
    let mut settings = settings(home, root, &scan_options, args)?;
    let baseline_path = args
        .baseline
        .clone()
        .or_else(|| scan_options.baseline.as_ref().map(|b| root.join(b)));
    if let Some(path) = &baseline_path {
        settings.baseline = baseline::load(path)
            .with_context(|| format!("cannot use the baseline {}", path.display()))?;
    }
    let fail_on = args
        .fail_on
        .or(scan_options.fail_on)
        .unwrap_or(Priority::P1);
    Ok((settings, fail_on, loaded))
}

/// The heal settings of the repository at `root` (its configuration merged with the flags),
/// the failing priority, and the configuration they came from.
fn heal_settings(
    home: &Path,
    root: &Path,
    args: &HealArgs,
) -> Result<(agency_heal::HealSettings, Priority, config::Loaded)> {
    let (scan_settings, fail_on, loaded) = scan_settings(home, root, args)?;
    let pinned_venv = agency_setup::Layout::new(home).venv();
    let verify =
        agency_heal::verify::resolve(root, loaded.options.verify.as_ref(), &pinned_venv)
            .with_context(|| format!("cannot use the verify command of {}", loaded.source(root)))?;
    let heal_options = loaded.options.heal.clone().unwrap_or_default();
    let max_concurrent = heal_options.max_concurrent.unwrap_or(5);
    if max_concurrent == 0 {
        bail!(
            "`[heal] max_concurrent` is 0 in {}: set it to 1 or more (default 5)",
            loaded.source(root)
        );
    }
    let heal_settings = agency_heal::HealSettings {
        scan: scan_settings,
        verify,
        unsafe_fixes: args.unsafe_fixes,
        require_green: args.require_green,
        batch: !args.no_batch && heal_options.batch.unwrap_or(true),
        max_concurrent,
    };
    Ok((heal_settings, fail_on, loaded))
}

pub fn run_heal_bench(home: &Path, args: &HealBenchArgs) -> Result<ExitStatus> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    // A path names the repository itself; without one, the repository around the working
    // directory.
    let root = match &args.path {
        Some(path) => std::fs::canonicalize(cwd.join(path))
            .with_context(|| format!("cannot use {} as the repository", path.display()))?,
        None => config::find_root(&cwd),
    };
    let mut plain = plain_scan_args(args.tools.clone(), Vec::new());
    plain.scan = false;
    let (mut settings, _, _) = heal_settings(home, &root, &plain)?;
    if let Some(log) = &args.from_log {
        let text = read_log(log)?;
        warn_without_tracebacks(&text, log);
        settings.scan.log = Some(text);
    }
    let report = agency_heal::bench::run(&settings, &|step: &str| {
        output::progress_line(&format!("bench: {step}"));
    })?;
    if args.json {
        output::print_json(&report)?;
        return Ok(ExitStatus::Success);
    }
    let rows: Vec<Vec<String>> = report
        .modes
        .iter()
        .map(|m| {
            vec![
                m.mode.to_string(),
                format!("{}/{}", m.healed, m.attempted),
                m.suite_runs.to_string(),
                m.suite_runs_per_healed
                    .map_or_else(|| "-".into(), |r| format!("{r:.2}")),
                format!("{:.0}", m.heal_latency.p50_ms),
                format!("{:.0}", m.heal_latency.p95_ms),
                format!("{:.0}", m.heal_latency.p99_ms),
                format!("{:.0}", m.detection_to_fix.p50_ms),
                format!("{:.0}", m.detection_to_fix.p95_ms),
                format!("{:.1}", m.wall_ms as f64 / 1000.0),
            ]
        })
        .collect();
    let mut text = format!(
        "{}: {} files, {} cores\n\n",
        root.display(),
        report.files,
        report.cores
    );
    text.push_str(&output::table(
        &[
            "mode",
            "healed/tried",
            "suite runs",
            "runs/heal",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "detect→fix p50",
            "detect→fix p95",
            "wall s",
        ],
        &rows,
    ));
    if let Some(r) = report.suite_run_ratio {
        let _ = writeln!(
            text,
            "\nbatching: {r:.2}x fewer suite runs than one run per fix"
        );
    }
    output::print_text(&text)?;
    Ok(ExitStatus::Success)
}

/// The heal settings of the repository at `root` as a plain `agency heal` would use them:
/// what re-verifying an approved fix needs.
pub fn default_heal_settings(home: &Path, root: &Path) -> Result<agency_heal::HealSettings> {
    let mut args = plain_scan_args(None, Vec::new());
    args.scan = false;
    Ok(heal_settings(home, root, &args)?.0)
}

fn run_heal(home: &Path, args: &HealArgs) -> Result<ExitStatus> {
    if args.resume {
        return run_resume(home, args);
    }
    if args.sarif {
        bail!("--sarif describes findings, not heals: use it with --scan");
    }
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let root = config::find_root(&cwd);
    // Runtime errors: the tracebacks of a log, each at its own place in the repository, are
    // the findings; fixes are verified by parse, re-scan and the tests.
    let log = args.from_log.as_deref().map(read_log).transpose()?;
    if let (Some(text), Some(path)) = (&log, &args.from_log) {
        warn_without_tracebacks(text, path);
    }
    let (report, fail_on) = heal_once(home, &root, args, log)?;
    print_heal_report(&report, args.json)?;
    Ok(report_exit(&report, fail_on))
}

/// One heal of the repository at `root`: of its findings, or of the tracebacks in `log` when
/// given (the text of a log). Returns the report and the priority that fails the run.
pub fn heal_once(
    home: &Path,
    root: &Path,
    args: &HealArgs,
    log: Option<String>,
) -> Result<(agency_core::contract::HealReport, Priority)> {
    let root = root.to_path_buf();
    let (mut heal_settings, fail_on, loaded) = heal_settings(home, &root, args)?;
    heal_settings.scan.log = log;
    let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    let preview = args.dry_run || (!args.yes && !interactive);
    if preview && !args.dry_run {
        output::warn(
            "not on a terminal and no --yes: showing the fixes as with --dry-run; run with --yes to apply verified fixes",
        );
    }

    // A preview writes nothing to the repository, not even the scan cache.
    let mut scan_settings = heal_settings.scan.clone();
    scan_settings.cache &= !preview;
    let scanned = scan_with_progress(&scan_settings)?;
    for note in &scanned.notes {
        output::warn(note);
    }
    for tool in &scanned.report.tools {
        if tool.status != "ok"
            && let Some(message) = &tool.message
        {
            output::warn(&format!("{} {}: {message}", tool.tool, tool.status));
        }
    }
    let all_findings = &scanned.report.findings;

    if preview {
        let attempts = agency_heal::propose(&heal_settings, &scanned.findings);
        return Ok((heal_report(&attempts, 0, true), fail_on));
    }

    // The emergency stop: refuse while healing is stopped; once running, a stop kills the
    // tests, lets a write in progress finish and ends the process (healing.rs).
    let watch = crate::healing::RunWatch::start(home, &root)?;
    // One heal per repository at a time; an interrupted one is finished first.
    let lock = agency_heal::journal::lock(&root)?;
    if let Some(old) = agency_heal::journal::interrupted(&root)? {
        if old.plan.is_some() {
            bail!(
                "an interrupted heal run ({}, started {}) has verified fixes that may not all be written: run `agency heal --resume` to finish it first",
                old.run_id,
                old.started_at
            );
        }
        output::warn(&format!(
            "an interrupted heal run ({}, started {}) had written nothing; starting afresh",
            old.run_id, old.started_at
        ));
    }
    let run_id = agency_heal::audit::run_id();
    let mut journal = agency_heal::journal::Journal::create(
        &root,
        &agency_heal::journal::Entry::Start {
            run_id: run_id.clone(),
            pid: std::process::id(),
            started_at: agency_core::contract::format_rfc3339(unix_now()),
            options: serde_json::to_value(args).context("cannot record the run's options")?,
        },
    )?;
    let progress = heal_progress(&watch);
    // The pattern store opens (the embedding model loads) while the tests run on the copy.
    let opening = (!scanned.findings.is_empty()).then(|| {
        let home = home.to_path_buf();
        JoinOnDrop(Some(std::thread::spawn(move || {
            crate::patterns::heal_client(&home)
        })))
    });
    let mut session = agency_heal::start(&heal_settings, &progress)?;
    for note in &session.notes {
        output::warn(note);
    }
    let patterns = opening.and_then(|mut opening| match opening.join() {
        Some(Ok(client)) => Some(agency_heal::patterns::Patterns::new(client)),
        Some(Err(e)) => {
            output::warn(&format!(
                "the pattern store is unavailable ({e:#}); healing with the deterministic fixers only"
            ));
            None
        }
        None => None,
    });
    let generator = llm_tier(home, &root, &loaded)?;
    let tiers = agency_heal::Tiers {
        patterns: patterns.as_ref(),
        llm: generator.as_ref(),
        no_rules: false,
    };
    let mut attempts = agency_heal::attempt_all(
        &mut session,
        &heal_settings,
        &scanned.findings,
        &tiers,
        &progress,
    );
    let verified = attempts
        .iter()
        .filter(|a| a.status == agency_heal::Status::Verified && a.fixed_by.is_none())
        .filter_map(|a| a.file.clone())
        .count();
    let confirmed = args.yes || verified == 0 || ask(verified)?;
    let approvals = agency_heal::approvals::Approvals::new(home);
    let report = if confirmed {
        let _writing = watch.writing();
        if let Some(state) = agency_heal::control::Control::new(home).state() {
            bail!(
                "healing was stopped by `agency healing stop` ({}); nothing was written",
                state.reason
            );
        }
        approvals
            .record_run(&root, &run_id, &session, &mut attempts)
            .context("cannot keep the fixes that wait for approval; nothing was written")?;
        // The journal's plan: the writes, and the report and audit trail if they all land.
        let writes = agency_heal::apply::plan(&session, &attempts);
        let all_written = writes
            .iter()
            .map(|w| (w.file.clone(), agency_heal::apply::WriteOutcome::Written))
            .collect();
        let mut planned = attempts.clone();
        agency_heal::apply::settle(&mut planned, &all_written);
        let audit =
            agency_heal::audit::records(&run_id, session.verify.as_ref(), &planned, all_findings);
        journal.append(&agency_heal::journal::Entry::Plan {
            writes: writes.clone(),
            report: heal_report(&planned, session.suite_runs, false),
            audit: audit.clone(),
        })?;
        let outcomes = execute_journaled(&root, &writes, &mut journal);
        agency_heal::apply::settle(&mut attempts, &outcomes);
        if let Some(patterns) = &patterns {
            report_outcomes(patterns, &run_id, &attempts);
            learn_from_heals(patterns, &attempts);
            patterns.record_heals(&run_id, &attempts);
        }
        let (report, audit) = agency_heal::journal::conclude(
            heal_report(&planned, session.suite_runs, false),
            audit,
            &outcomes,
        );
        agency_heal::audit::write_records(&root, &audit)
            .context("cannot write the audit trail; the fixes above were applied")?;
        report
    } else {
        agency_heal::apply::decline(
            &mut attempts,
            "verified, not applied: declined at the prompt",
        );
        approvals
            .record_run(&root, &run_id, &session, &mut attempts)
            .context("cannot keep the fixes that wait for approval")?;
        agency_heal::audit::write(
            &root,
            &run_id,
            session.verify.as_ref(),
            &attempts,
            all_findings,
        )
        .context("cannot write the audit trail")?;
        heal_report(&attempts, session.suite_runs, false)
    };
    journal.finish()?;
    drop(lock);
    if let Some(patterns) = &patterns {
        for e in patterns.errors() {
            output::warn(&e);
        }
    }
    Ok((report, fail_on))
}

/// A thread joined when dropped: the store's model must not be loading when the process ends
/// (an early return after it started), or ONNX Runtime crashes on the way out.
struct JoinOnDrop<T>(Option<std::thread::JoinHandle<T>>);

impl<T> JoinOnDrop<T> {
    /// The thread's result; `None` if it panicked.
    fn join(&mut self) -> Option<T> {
        self.0.take().and_then(|t| t.join().ok())
    }
}

impl<T> Drop for JoinOnDrop<T> {
    fn drop(&mut self) {
        if let Some(thread) = self.0.take() {
            let _ = thread.join();
        }
    }
}

/// The LLM tier of the repository at `root`: `None` without `[llm]` (the tier is skipped).
fn llm_tier(
    home: &Path,
    root: &Path,
    loaded: &config::Loaded,
) -> Result<Option<agency_heal::generate::Generator>> {
    let file = || loaded.source(root);
    let Some(config) = agency_llm::LlmConfig::from_table(loaded.options.llm.as_ref())
        .with_context(|| format!("invalid [llm] in {}", file()))?
    else {
        return Ok(None);
    };
    let key = config
        .api_key(|name| std::env::var(name).ok())
        .with_context(|| format!("cannot use the [llm] api_key_env of {}", file()))?;
    let client = agency_llm::LlmClient::new(config, home, key)
        .with_context(|| format!("cannot use the [llm] of {}", file()))?;
    Ok(Some(agency_heal::generate::Generator::new(client)))
}

/// Every fix a deterministic fixer made and the tests verified becomes a pattern (or one more
/// example and success of a known one). Fixes made by patterns were reported as outcomes.
pub(crate) fn learn_from_heals(
    patterns: &agency_heal::patterns::Patterns,
    attempts: &[agency_heal::Attempt],
) {
    let (mut inserted, mut merged, mut generalised) = (0, 0, 0);
    for a in attempts {
        if a.status != agency_heal::Status::Healed
            || a.fixed_by.is_some()
            || !matches!(
                a.strategy,
                Some(agency_heal::Strategy::Rule | agency_heal::Strategy::Llm)
            )
        {
            continue;
        }
        match patterns.learn_from(a) {
            agency_heal::patterns::Learned::Inserted(_) => inserted += 1,
            agency_heal::patterns::Learned::Merged(_) => merged += 1,
            agency_heal::patterns::Learned::Generalised { .. } => generalised += 1,
            agency_heal::patterns::Learned::Skipped(why) => {
                tracing::debug!(rule = %a.finding.rule, file = %a.finding.file, "not learned: {why}");
            }
        }
    }
    if inserted + merged + generalised > 0 {
        output::progress_line(&format!(
            "agency: learned {inserted} new pattern(s), {generalised} more general one(s) and {merged} more example(s) of known ones in {}",
            patterns.describe()
        ));
    }
}

/// Tells the pattern store how each pattern-made fix did: healed is a success; rolled back
/// (the tests failed, or the finding stayed) is a failure. Conflicts, skips and agency's own
/// errors say nothing about the pattern; pending approvals are reported when a human decides.
pub(crate) fn report_outcomes(
    patterns: &agency_heal::patterns::Patterns,
    run_id: &str,
    attempts: &[agency_heal::Attempt],
) {
    for (i, a) in attempts.iter().enumerate() {
        let Some(pattern) = &a.pattern else {
            continue;
        };
        if a.fixed_by.is_some() {
            continue;
        }
        let success = match a.status {
            agency_heal::Status::Healed => true,
            agency_heal::Status::RolledBack => false,
            _ => continue,
        };
        patterns.outcome(
            &pattern.id,
            success,
            &a.finding,
            &format!("{run_id}-{}", i + 1),
        );
    }
}

/// `agency heal --resume`: finishes the interrupted run of this repository from its journal.
fn run_resume(home: &Path, args: &HealArgs) -> Result<ExitStatus> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let root = config::find_root(&cwd);
    let lock = agency_heal::journal::lock(&root)?;
    let Some(run) = agency_heal::journal::interrupted(&root)? else {
        output::warn(&format!(
            "nothing to resume: no interrupted heal run in {}",
            root.display()
        ));
        let report = heal_report(&[], 0, false);
        print_heal_report(&report, args.json)?;
        return Ok(ExitStatus::Success);
    };
    let mut options: HealArgs = serde_json::from_value(run.options.clone()).with_context(|| {
        format!(
            "cannot read the options of the interrupted run in {}; delete it to start afresh",
            agency_heal::journal::path(&root).display()
        )
    })?;
    options.json = args.json;
    options.resume = false;
    let Some(plan) = run.plan else {
        // It died before writing anything: run it again, the same way.
        output::warn(&format!(
            "the interrupted run {} had written nothing; running it again",
            run.run_id
        ));
        drop(lock);
        return run_heal(home, &options);
    };
    let watch = crate::healing::RunWatch::start(home, &root)?;
    let mut journal = agency_heal::journal::Journal::reopen(&root)?;
    let remaining: Vec<agency_heal::apply::PlannedWrite> = plan
        .writes
        .iter()
        .filter(|w| !run.applied.contains_key(&w.file))
        .cloned()
        .collect();
    output::warn(&format!(
        "finishing the interrupted run {}: {} of {} verified files left to write",
        run.run_id,
        remaining.len(),
        plan.writes.len()
    ));
    let mut outcomes = run.applied.clone();
    {
        let _writing = watch.writing();
        if let Some(state) = agency_heal::control::Control::new(home).state() {
            bail!(
                "healing was stopped by `agency healing stop` ({}); nothing was written",
                state.reason
            );
        }
        outcomes.extend(execute_journaled(&root, &remaining, &mut journal));
    }
    let (report, audit) = agency_heal::journal::conclude(plan.report, plan.audit, &outcomes);
    agency_heal::audit::write_records(&root, &audit)
        .context("cannot write the audit trail; the fixes above were applied")?;
    journal.finish()?;
    drop(lock);
    let fail_on = options
        .fail_on
        .or(config::load(&root)?.options.scan.and_then(|s| s.fail_on))
        .unwrap_or(Priority::P1);
    print_heal_report(&report, args.json)?;
    Ok(report_exit(&report, fail_on))
}

/// Writes the planned files, journaling each outcome before the next write starts. A journal
/// that cannot be appended to stops nothing (the writes stay safe to repeat); it is reported.
fn execute_journaled(
    root: &Path,
    writes: &[agency_heal::apply::PlannedWrite],
    journal: &mut agency_heal::journal::Journal,
) -> std::collections::BTreeMap<String, agency_heal::apply::WriteOutcome> {
    let mut journal_error = None;
    let outcomes = agency_heal::apply::execute(root, writes, &mut |write, outcome| {
        if let Err(e) = journal.append(&agency_heal::journal::Entry::Applied {
            file: write.file.clone(),
            outcome: outcome.clone(),
        }) {
            journal_error.get_or_insert(e);
        }
    });
    if let Some(e) = journal_error {
        output::warn(&format!("{e}; the writes went on (repeating them is safe)"));
    }
    outcomes
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Progress lines of a heal run on stderr (and the copy's path for the stop watcher).
fn heal_progress(watch: &crate::healing::RunWatch) -> impl Fn(agency_heal::Progress) + '_ {
    let plain = output::plain_progress();
    move |event: agency_heal::Progress| {
        let line = match event {
            agency_heal::Progress::Copied { files, dir } => {
                watch.set_copy(&dir);
                format!("agency: copied {files} files to a private workspace")
            }
            agency_heal::Progress::Baseline => {
                "agency: running the tests once before any fix".to_string()
            }
            agency_heal::Progress::Attempt {
                index,
                total,
                rule,
                file,
                line,
            } => format!("agency: [{index}/{total}] fixing {rule} at {file}:{line}"),
            agency_heal::Progress::Suite => "agency:   running the tests".to_string(),
            agency_heal::Progress::Batch { fixes } => {
                format!("agency: verifying {fixes} fixes with one test run (bisecting if it fails)")
            }
        };
        if plain {
            eprintln!("{line}");
        } else {
            output::progress_line(&line);
        }
    }
}

fn print_heal_report(report: &agency_core::contract::HealReport, json: bool) -> Result<()> {
    if json {
        output::print_json(report)
    } else {
        output::print_text(&render_heals(report))
    }
}

/// Failure when a finding at or above `fail_on` was not healed.
fn report_exit(report: &agency_core::contract::HealReport, fail_on: Priority) -> ExitStatus {
    if report
        .heals
        .iter()
        .any(|h| h.status != "healed" && h.finding.priority <= fail_on)
    {
        ExitStatus::Failure
    } else {
        ExitStatus::Success
    }
}

/// Asks once on the terminal whether to write the verified fixes.
fn ask(n: usize) -> Result<bool> {
    eprint!("apply {n} verified fixes? [y/N] ");
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .context("cannot read the answer from the terminal")?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "Yes"))
}

fn heal_report(
    attempts: &[agency_heal::Attempt],
    suite_runs: usize,
    dry_run: bool,
) -> agency_core::contract::HealReport {
    use agency_core::contract::{Heal, HealReport, HealSummary, HealVerification};
    use agency_heal::Status;
    let mut summary = HealSummary {
        suite_runs,
        dry_run,
        ..HealSummary::default()
    };
    for a in attempts {
        match a.status {
            Status::Healed => summary.healed += 1,
            Status::RolledBack => summary.rolled_back += 1,
            Status::PendingApproval => summary.pending_approval += 1,
            Status::Flagged => summary.flagged += 1,
            Status::Failed => summary.failed += 1,
            Status::Skipped | Status::Verified => summary.skipped += 1,
        }
    }
    HealReport {
        version: agency_core::contract::SCHEMA_VERSION,
        heals: attempts
            .iter()
            .map(|a| Heal {
                finding: a.finding.clone(),
                status: a.status.as_str().to_string(),
                strategy: a.strategy.map_or("none", |s| s.as_str()).to_string(),
                pattern_id: a.pattern.as_ref().map(|p| p.id.clone()),
                diff: a.diff.clone(),
                verification: HealVerification {
                    tests: a.verification.tests.as_str().to_string(),
                    duration_ms: a.verification.duration_ms,
                },
                reason: a.reason.clone(),
                regression_test: a
                    .regression
                    .test()
                    .filter(|_| a.status == agency_heal::Status::Healed)
                    .map(|t| t.path.clone()),
            })
            .collect(),
        summary,
    }
}

/// One line per heal (status, rule, file:line, message, and why), the diffs of a preview, and
/// a summary line.
fn render_heals(report: &agency_core::contract::HealReport) -> String {
    let preview = report.summary.dry_run;
    let mut out = String::new();
    for h in &report.heals {
        let f = &h.finding;
        let _ = writeln!(
            out,
            "{:<11} {} {}:{} {}",
            if preview && h.strategy != "none" && h.status == "skipped" {
                "proposed"
            } else {
                h.status.as_str()
            },
            f.rule,
            f.file,
            f.line,
            f.message
        );
        if preview && !h.diff.is_empty() {
            let _ = writeln!(out, "  strategy: {}", h.strategy);
            for line in h.diff.lines() {
                let _ = writeln!(out, "  {line}");
            }
        } else if let Some(reason) = &h.reason
            && h.status != "healed"
        {
            let _ = writeln!(out, "  {reason}");
        }
        if let Some(test) = &h.regression_test {
            let _ = writeln!(
                out,
                "  regression test added: {test} (fails before the fix, passes with it)"
            );
        }
    }
    let s = &report.summary;
    if preview {
        let proposed = report.heals.iter().filter(|h| !h.diff.is_empty()).count();
        let _ = writeln!(
            out,
            "dry run: {proposed} fixes proposed, {} flagged, nothing written",
            s.flagged
        );
    } else {
        let _ = writeln!(
            out,
            "{} healed, {} rolled back, {} pending approval, {} flagged, {} skipped, {} failed; {} test runs",
            s.healed,
            s.rolled_back,
            s.pending_approval,
            s.flagged,
            s.skipped,
            s.failed,
            s.suite_runs
        );
    }
    out
}
