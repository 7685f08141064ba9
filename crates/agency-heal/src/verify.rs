//! Proving a fix in the private copy: the file still parses, a re-scan of it shows the finding
//! gone and nothing new at P0–P2, and the verify command passes (or, when the suite already
//! failed before any fix, adds no failing test). The verify command runs without a shell, in its
//! own process group, killed as a whole when it outlives its timeout.

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agency_core::config::VerifyOptions;
use agency_core::contract::Priority;
use agency_scan::finding::ScannedFinding;
use agency_scan::native;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::strategy::{self, Strategy};
use crate::workspace::sha256_hex;
use crate::{
    Attempt, Ctx, Error, HealSettings, Progress, Proposal, Result, Session, Status, Verification,
};

/// How long a verify command may run when `[verify] timeout_s` is not set.
pub const DEFAULT_TIMEOUT_S: u64 = 300;

/// Lines of the verify command's output kept for the report and the audit trail.
pub const TAIL_LINES: usize = 40;

/// A resolved verify command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyCommand {
    pub argv: Vec<String>,
    pub timeout: Duration,
    /// Detected (pytest), not configured: agency may adjust its flags.
    pub detected: bool,
}

impl VerifyCommand {
    /// The command line as the user would type it.
    pub fn display(&self) -> String {
        self.argv
            .iter()
            .map(|a| {
                if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"\\$`".contains(c))
                {
                    format!("'{}'", a.replace('\'', "'\\''"))
                } else {
                    a.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The detected pytest command without `-x`, to learn every failing test; `None` for a
    /// configured command (used exactly as written) or one without `-x`.
    pub fn without_exit_first(&self) -> Option<VerifyCommand> {
        if !self.detected || !self.argv.iter().any(|a| a == "-x") {
            return None;
        }
        let mut full = self.clone();
        full.argv.retain(|a| a != "-x");
        Some(full)
    }
}

/// The verify command for `root`: `[verify] command` if set; else pytest when the repository
/// has tests (its own virtual environment's python when that has pytest, else the pinned
/// pytest in `pinned_venv`); else `None`.
pub fn resolve(
    root: &Path,
    options: Option<&VerifyOptions>,
    pinned_venv: &Path,
) -> Result<Option<VerifyCommand>> {
    let timeout = Duration::from_secs(
        options
            .and_then(|o| o.timeout_s)
            .unwrap_or(DEFAULT_TIMEOUT_S),
    );
    if let Some(command) = options.and_then(|o| o.command.as_deref()) {
        let argv = split_command(command).map_err(|message| Error::Command {
            command: command.to_string(),
            message,
        })?;
        return Ok(Some(VerifyCommand {
            argv,
            timeout,
            detected: false,
        }));
    }
    if !has_tests(root) {
        return Ok(None);
    }
    let argv: Vec<String> = match repository_python_with_pytest(root) {
        Some(python) => vec![
            python.display().to_string(),
            "-m".into(),
            "pytest".into(),
            "-q".into(),
            "-x".into(),
        ],
        None => vec![
            pinned_venv.join("bin/pytest").display().to_string(),
            "-q".into(),
            "-x".into(),
        ],
    };
    Ok(Some(VerifyCommand {
        argv,
        timeout,
        detected: true,
    }))
}

/// A `tests/` directory, a `test_*.py` or `*_test.py` file in the root or `tests`-less layouts
/// one level down, or a pytest configuration.
fn has_tests(root: &Path) -> bool {
    if root.join("tests").is_dir()
        || root.join("test").is_dir()
        || root.join("pytest.ini").is_file()
    {
        return true;
    }
    let configured = |file: &str, marker: &str| {
        std::fs::read_to_string(root.join(file)).is_ok_and(|t| t.contains(marker))
    };
    if configured("pyproject.toml", "[tool.pytest")
        || configured("setup.cfg", "[tool:pytest]")
        || configured("tox.ini", "[pytest]")
    {
        return true;
    }
    let is_test = |name: &str| {
        Path::new(name).extension().is_some_and(|e| e == "py")
            && (name.starts_with("test_") || name.ends_with("_test.py"))
    };
    let Ok(entries) = std::fs::read_dir(root) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if is_test(&name) {
            return true;
        }
        entry.file_type().is_ok_and(|t| t.is_dir())
            && !name.starts_with('.')
            && std::fs::read_dir(entry.path()).is_ok_and(|inner| {
                inner
                    .flatten()
                    .any(|e| is_test(&e.file_name().to_string_lossy()))
            })
    })
}

/// The python of the repository's own virtual environment (`.venv`, `venv`, `env`), if pytest
/// is installed in it.
fn repository_python_with_pytest(root: &Path) -> Option<PathBuf> {
    [".venv", "venv", "env"].iter().find_map(|name| {
        let venv = root.join(name);
        let python = venv.join("bin/python");
        if !venv.join("pyvenv.cfg").is_file() || !python.exists() {
            return None;
        }
        let lib = std::fs::read_dir(venv.join("lib")).ok()?;
        let has_pytest = lib.flatten().any(|entry| {
            entry
                .path()
                .join("site-packages/pytest/__init__.py")
                .is_file()
        });
        has_pytest.then_some(python)
    })
}

/// Splits a command line like a POSIX shell does words, without running one: whitespace
/// separates, `'...'` is literal, `"..."` keeps spaces and honours `\"`, `\\`, `\$` and
/// `` \` ``, and a backslash outside quotes escapes the next character. No expansion.
pub fn split_command(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("a single quote is not closed".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("a double quote is not closed".into()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("a double quote is not closed".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => word.push(c),
                    None => return Err("the line ends with a lone backslash".into()),
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    if words.is_empty() {
        return Err("the command is empty".into());
    }
    Ok(words)
}

/// One run of the verify command.
#[derive(Debug, Clone)]
pub struct SuiteRun {
    pub command: String,
    /// `None` when it was killed (timeout) or ended by a signal.
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub duration_ms: u64,
    /// The last [`TAIL_LINES`] lines of its output (stdout and stderr interleaved).
    pub tail: String,
    /// Failing tests, from pytest's `FAILED id` and `ERROR id` summary lines.
    pub failures: BTreeSet<String>,
}

impl SuiteRun {
    pub fn passed(&self) -> bool {
        self.exit_code == Some(0)
    }

    /// The failures for a message: the failing tests, or how the command ended.
    pub fn describe_failures(&self) -> String {
        if self.timed_out {
            return format!("`{}` timed out after {} ms", self.command, self.duration_ms);
        }
        if self.failures.is_empty() {
            return match self.exit_code {
                Some(code) => format!("`{}` exited with {code}", self.command),
                None => format!("`{}` was killed by a signal", self.command),
            };
        }
        let names: Vec<&str> = self.failures.iter().map(String::as_str).take(5).collect();
        let more = self.failures.len().saturating_sub(names.len());
        if more > 0 {
            format!("failing: {} and {more} more", names.join(", "))
        } else {
            format!("failing: {}", names.join(", "))
        }
    }

    /// Whether this run (after a fix) is acceptable against the run before any fix: it passes,
    /// or the suite already failed and every failing test now already failed then.
    pub fn acceptable_against(&self, baseline: Option<&SuiteRun>) -> bool {
        if self.passed() {
            return true;
        }
        let Some(baseline) = baseline.filter(|b| !b.passed()) else {
            return false;
        };
        if self.timed_out || self.exit_code.is_none() {
            return false;
        }
        if self.failures.is_empty() {
            // Nothing to compare by name: the same way of failing, with nothing named before.
            return baseline.failures.is_empty() && self.exit_code == baseline.exit_code;
        }
        self.failures.is_subset(&baseline.failures)
    }
}

/// pytest's short summary: `FAILED tests/test_a.py::test_b - AssertionError` → the test id.
fn parse_failures(output: &str) -> BTreeSet<String> {
    output
        .lines()
        .filter_map(|line| {
            let rest = line
                .strip_prefix("FAILED ")
                .or_else(|| line.strip_prefix("ERROR "))?;
            rest.split_whitespace().next().map(ToString::to_string)
        })
        .collect()
}

/// Runs `command` in `dir`, in its own process group, with the copy first on `PYTHONPATH` (so
/// that a project installed in editable mode is imported from the copy, not the user's tree).
pub fn run_suite(command: &VerifyCommand, dir: &Path) -> Result<SuiteRun> {
    let mut python_path = OsString::from(dir.as_os_str());
    if dir.join("src").is_dir() {
        python_path.push(":");
        python_path.push(dir.join("src").as_os_str());
    }
    if let Some(existing) = std::env::var_os("PYTHONPATH").filter(|p| !p.is_empty()) {
        python_path.push(":");
        python_path.push(existing);
    }
    let mut cmd = Command::new(&command.argv[0]);
    cmd.args(&command.argv[1..])
        .current_dir(dir)
        .env("PYTHONPATH", python_path)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let outcome = run_in_group(&mut cmd, command.timeout).map_err(|source| Error::Spawn {
        command: command.display(),
        source,
    })?;
    Ok(SuiteRun {
        command: command.display(),
        exit_code: outcome.exit_code,
        timed_out: outcome.timed_out,
        duration_ms: outcome.duration.as_millis() as u64,
        failures: parse_failures(&outcome.output),
        tail: tail(&outcome.output, TAIL_LINES),
    })
}

/// How a process group run ended.
#[derive(Debug)]
pub struct GroupOutcome {
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub duration: Duration,
    /// stdout and stderr, interleaved as written (lossy UTF-8).
    pub output: String,
}

/// Runs `cmd` as the leader of a new process group with its output in a temporary file (a
/// pipe would hang on a grandchild that keeps it open), and kills the whole group with
/// SIGKILL at `timeout`, and after a normal exit too, so that nothing it started lives on.
pub fn run_in_group(cmd: &mut Command, timeout: Duration) -> std::io::Result<GroupOutcome> {
    let started = Instant::now();
    let log = tempfile::tempfile()?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log.try_clone()?))
        .process_group(0);
    let mut child = cmd.spawn()?;
    let group = Pid::from_raw(child.id() as i32);
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() >= timeout {
            timed_out = true;
            // ESRCH: the group ended between the check and the kill.
            let _ = killpg(group, Signal::SIGKILL);
            break child.wait()?;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Stragglers the command left behind (background jobs, daemons) go with it; ESRCH when
    // there are none.
    let _ = killpg(group, Signal::SIGKILL);
    let duration = started.elapsed();
    let mut log = log;
    let mut bytes = Vec::new();
    std::io::Seek::seek(&mut log, std::io::SeekFrom::Start(0))?;
    std::io::Read::read_to_end(&mut log, &mut bytes)?;
    Ok(GroupOutcome {
        exit_code: if timed_out { None } else { status.code() },
        timed_out,
        duration,
        output: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The findings of one file of the copy, from a scan of that file alone with the run's tools
/// and no cache.
fn scan_file(
    settings: &HealSettings,
    copy: &Path,
    rel: &str,
    tool_cache: &Path,
) -> Result<Vec<ScannedFinding>> {
    let mut scan = settings.scan.clone();
    scan.root = copy.to_path_buf();
    scan.paths = vec![copy.join(rel)];
    scan.changes = None;
    scan.cache = false;
    scan.log = None;
    scan.tool_cache = Some(tool_cache.to_path_buf());
    let output = agency_scan::scan(&scan, &|_| {})?;
    Ok(output
        .findings
        .into_iter()
        .filter(|f| f.finding.file == rel)
        .collect())
}

/// Whether another line of `text` reads like line `line` (whitespace aside).
fn line_repeats(text: &str, line: u32) -> bool {
    let norm = |l: &str| l.split_whitespace().collect::<Vec<_>>().join(" ");
    let lines: Vec<&str> = text.lines().collect();
    let Some(target) = lines.get((line as usize).wrapping_sub(1)).map(|l| norm(l)) else {
        return false;
    };
    lines.iter().filter(|l| norm(l) == target).count() > 1
}

/// How often each (rule, message) occurs among `findings`.
fn defect_counts(findings: &[ScannedFinding]) -> HashMap<(&str, &str), usize> {
    let mut counts = HashMap::new();
    for f in findings {
        *counts
            .entry((f.finding.rule.as_str(), f.finding.message.as_str()))
            .or_insert(0) += 1;
    }
    counts
}

fn syntax_errors(rel: &str, text: &str) -> usize {
    native::analyze_source(rel, text, &|rule| rule == native::rules::SYNTAX_ERROR)
        .diagnostics
        .iter()
        .filter(|d| d.rule == native::rules::SYNTAX_ERROR)
        .count()
}

/// Tries one fix in the copy and verifies it; keeps it in the copy when verified, restores the
/// file's previous bytes otherwise. `current` holds the findings of each touched file as a
/// scan of that file alone reports them, updated when a fix is kept. With `suite` false only
/// the cheap checks run (parse, re-scan): the suite is left to a batch ([`crate::batch`]).
/// Returns the attempt, the yardstick scan of the file before the fix, and, when the fix is
/// kept, the file's text before it.
#[allow(clippy::too_many_arguments)] // the run's state, passed apart to borrow it apart
pub(crate) fn attempt(
    ctx: &mut Ctx<'_>,
    settings: &HealSettings,
    scanned: &ScannedFinding,
    current_id: &str,
    strategy: Strategy,
    fixers: &Fixers<'_>,
    current: &mut HashMap<String, Vec<ScannedFinding>>,
    suite: bool,
    progress: &dyn Fn(Progress),
) -> (Attempt, Vec<ScannedFinding>, Option<String>) {
    let finding = &scanned.finding;
    let rel = finding.file.clone();
    let mut attempt = Attempt {
        finding: finding.clone(),
        strategy: Some(strategy),
        status: Status::Failed,
        reason: None,
        diff: String::new(),
        verification: Verification::skipped(),
        file: Some(rel.clone()),
        fixed_by: None,
        duration_ms: 0,
        proposal: None,
        pattern: None,
        texts: None,
        lookup_hit: None,
        regression: crate::Regression::NotApplicable,
    };
    let copy = ctx.workspace.root().to_path_buf();
    let path = copy.join(&rel);
    if !ctx.workspace.is_regular(&rel) {
        attempt.status = Status::Skipped;
        attempt.reason = Some(format!(
            "{rel} is not a regular file of the working tree (a symlink or not copied)"
        ));
        return (attempt, Vec::new(), None);
    }
    // The file's text: as verified so far, else as copied (checked against the snapshot, since
    // the suite run before any fix could have changed the copy).
    let before = if let Some(text) = ctx.fixed.get(&rel) {
        text.clone()
    } else {
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) => {
                attempt.reason = Some(format!("cannot read {rel} in the private copy: {e}"));
                return (attempt, Vec::new(), None);
            }
        };
        if ctx.workspace.recorded_hash(&rel) != Some(sha256_hex(&bytes).as_str()) {
            attempt.reason = Some(format!(
                "the verify command changed {rel} in the private copy; not fixing it"
            ));
            return (attempt, Vec::new(), None);
        }
        let Ok(text) = String::from_utf8(bytes) else {
            attempt.status = Status::Skipped;
            attempt.reason = Some(format!("{rel} is not UTF-8 text"));
            return (attempt, Vec::new(), None);
        };
        text
    };
    // The file as scanned alone, once per file: the yardstick, and fixes whose positions match
    // the copy's current text (an earlier kept fix may have moved lines).
    if !current.contains_key(&rel) {
        match scan_file(settings, &copy, &rel, &ctx.tool_cache) {
            Ok(findings) => {
                current.insert(rel.clone(), findings);
            }
            Err(e) => {
                attempt.reason = Some(format!("cannot re-scan {rel} in the private copy: {e}"));
                return (attempt, Vec::new(), None);
            }
        }
    }
    let yardstick = current.get(&rel).cloned().unwrap_or_default();
    // A runtime error (from a log) is never reported by a static scan: it is its own
    // yardstick, at the place the traceback named.
    let runtime = finding.category == "runtime";
    let Some(fresh) = yardstick
        .iter()
        .find(|f| f.finding.id == current_id)
        .cloned()
        .or_else(|| runtime.then(|| scanned.clone()))
    else {
        attempt.status = Status::Skipped;
        attempt.strategy = None;
        attempt.reason = Some(format!(
            "a scan of {rel} alone does not report it (it depends on the whole-repository scan)"
        ));
        return (attempt, yardstick, None);
    };
    let after = if strategy == Strategy::Llm {
        let Some(llm) = fixers.llm else {
            attempt.status = Status::Skipped;
            attempt.reason = Some("no LLM is configured ([llm] in agency.toml)".into());
            return (attempt, yardstick, None);
        };
        match llm.generate(&fresh.finding, &before, fixers.examples) {
            Ok(after) => after,
            Err(crate::generate::NoFix::Skip(reason)) => {
                attempt.status = Status::Skipped;
                attempt.reason = Some(reason);
                return (attempt, yardstick, None);
            }
            Err(crate::generate::NoFix::Fail(reason)) => {
                attempt.status = Status::Failed;
                attempt.reason = Some(reason);
                return (attempt, yardstick, None);
            }
        }
    } else if let (Strategy::Pattern, Some(candidate)) = (strategy, fixers.candidate) {
        attempt.pattern = Some(crate::PatternUse {
            id: candidate.id.clone(),
            confidence: candidate.confidence,
        });
        let matched = crate::patterns::first_match(
            std::slice::from_ref(candidate),
            &before,
            fresh.finding.line,
            fresh.finding.column,
            &|_| true,
        );
        let Some((_, after)) = matched else {
            attempt.status = Status::Skipped;
            attempt.reason = Some(format!(
                "pattern {} no longer matches at {rel}:{}",
                candidate.id, fresh.finding.line
            ));
            return (attempt, yardstick, None);
        };
        after
    } else if fresh.tool_fix.is_none() && crate::none_heal::crash(&fresh.finding).is_some() {
        // A None crash from a log: agency's own fixers, with a regression test where one can
        // drive the crash.
        match crate::none_heal::make(ctx, &rel, &before, &fresh.finding) {
            Ok(made) => {
                attempt.regression = made.regression;
                attempt.reason = Some(made.summary);
                made.after
            }
            Err(reason) => {
                attempt.status = Status::Skipped;
                attempt.reason = Some(reason);
                return (attempt, yardstick, None);
            }
        }
    } else {
        if let strategy::Decision::Skip(reason) | strategy::Decision::Flag(reason) =
            strategy::choose(&fresh, settings.unsafe_fixes)
        {
            attempt.status = Status::Skipped;
            attempt.reason = Some(reason);
            return (attempt, yardstick, None);
        }
        match strategy::fixed_text(&before, fresh.tool_fix.as_ref()) {
            Ok(after) if after != before => after,
            Ok(_) => {
                attempt.status = Status::Skipped;
                attempt.reason = Some("the fix changes nothing".into());
                return (attempt, yardstick, None);
            }
            Err(e) => {
                attempt.status = Status::Skipped;
                attempt.reason = Some(e.to_string());
                return (attempt, yardstick, None);
            }
        }
    };
    attempt.diff = crate::diff::unified(&rel, &before, &after);
    let verify_started = Instant::now();
    if let Err(e) = std::fs::write(&path, after.as_bytes()) {
        attempt.reason = Some(format!("cannot write {rel} in the private copy: {e}"));
        return (attempt, yardstick, None);
    }
    let verdict = check(
        ctx,
        settings,
        &rel,
        &before,
        &after,
        &yardstick,
        &fresh.finding,
        suite,
        progress,
    );
    attempt.verification.duration_ms = verify_started.elapsed().as_millis() as u64;
    match verdict {
        Check::Kept { rescan, suite } => {
            attempt.verification.record(suite, true);
            attempt.status = Status::Verified;
            attempt.texts = Some((before.clone(), after.clone()));
            current.insert(rel.clone(), rescan);
            ctx.fixed.insert(rel, after);
            return (attempt, yardstick, Some(before));
        }
        Check::Rejected {
            reason,
            suite,
            failed,
        } => {
            attempt.verification.record(suite, false);
            attempt.status = if failed {
                Status::Failed
            } else {
                Status::RolledBack
            };
            attempt.reason = Some(reason);
            if let Err(e) = std::fs::write(&path, before.as_bytes()) {
                // The copy can no longer be trusted for later fixes of this file; the user's
                // tree was never touched.
                attempt.status = Status::Failed;
                attempt.reason = Some(format!(
                    "{}; and the private copy of {rel} could not be restored: {e}",
                    attempt.reason.unwrap_or_default()
                ));
                current.remove(&rel);
            }
        }
    }
    (attempt, yardstick, None)
}

/// Where a fix that is not the deterministic fixer's comes from.
pub(crate) struct Fixers<'a> {
    /// The pattern to apply (strategy `Pattern`).
    pub candidate: Option<&'a crate::patterns::Candidate>,
    /// The model (strategy `Llm`).
    pub llm: Option<&'a crate::generate::Generator>,
    /// Worked examples for the model.
    pub examples: &'a [agency_llm::Example],
}

/// Makes and verifies a fix that needs a human's approval, with its own suite run, on the
/// text the run's kept fixes leave; then takes it out of the copy again. A fix that passes ends
/// `PendingApproval` with its [`Proposal`]; the copy and the run's verified texts are as before.
pub(crate) fn propose_for_approval(
    session: &mut Session,
    settings: &HealSettings,
    scanned: &ScannedFinding,
    current_id: &str,
    strategy: Strategy,
    fixers: &Fixers<'_>,
    progress: &dyn Fn(Progress),
) -> Attempt {
    let rel = scanned.finding.file.clone();
    let kept = session.fixed.get(&rel).cloned();
    // A fresh scan of the file: the batch may have rolled back fixes since its last scan.
    let mut current = HashMap::new();
    let (mut attempt, _, before) = attempt(
        &mut session.ctx(),
        settings,
        scanned,
        current_id,
        strategy,
        fixers,
        &mut current,
        true,
        progress,
    );
    if attempt.status != Status::Verified {
        return attempt;
    }
    let after = session.fixed.get(&rel).cloned().unwrap_or_default();
    let before = before.unwrap_or_default();
    match kept {
        Some(text) => session.fixed.insert(rel.clone(), text),
        None => session.fixed.remove(&rel),
    };
    if let Err(e) = std::fs::write(session.workspace.root().join(&rel), before.as_bytes()) {
        // The copy can no longer be trusted for this file; nothing of the user's was touched.
        attempt.status = Status::Failed;
        attempt.reason = Some(format!(
            "verified, but the private copy of {rel} could not be restored: {e}"
        ));
        return attempt;
    }
    attempt.status = Status::PendingApproval;
    attempt.proposal = Some(Proposal {
        file: rel,
        before,
        after,
        reason: String::new(),
    });
    attempt
}

/// Verifies a fix made earlier (an approved one) again: `after` replaces `rel` in the fresh
/// copy of `session`, which must parse, re-scan without the finding and anything new at P0–P2,
/// and pass the suite against this session's baseline. `Verified` when it passes (the copy
/// keeps it), else `RolledBack` or `Failed` with the reason.
pub(crate) fn reverify(
    session: &mut Session,
    settings: &HealSettings,
    rel: &str,
    after: &str,
    finding: &agency_core::contract::Finding,
    progress: &dyn Fn(Progress),
) -> Attempt {
    let mut attempt = Attempt::without_fix(finding, Status::Failed, String::new());
    attempt.file = Some(rel.to_string());
    let path = session.workspace.root().join(rel);
    let before = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => {
            attempt.reason = Some(format!("cannot read {rel} in the private copy: {e}"));
            return attempt;
        }
    };
    attempt.diff = crate::diff::unified(rel, &before, after);
    let cache = session.ctx().tool_cache;
    let yardstick = match scan_file(settings, session.workspace.root(), rel, &cache) {
        Ok(findings) => findings,
        Err(e) => {
            attempt.reason = Some(format!("cannot scan {rel} in the private copy: {e}"));
            return attempt;
        }
    };
    let started = Instant::now();
    if let Err(e) = std::fs::write(&path, after.as_bytes()) {
        attempt.reason = Some(format!("cannot write {rel} in the private copy: {e}"));
        return attempt;
    }
    let verdict = check(
        &mut session.ctx(),
        settings,
        rel,
        &before,
        after,
        &yardstick,
        finding,
        true,
        progress,
    );
    attempt.verification.duration_ms = started.elapsed().as_millis() as u64;
    match verdict {
        Check::Kept { suite, .. } => {
            attempt.verification.record(suite, true);
            attempt.status = Status::Verified;
            attempt.reason = None;
        }
        Check::Rejected {
            reason,
            suite,
            failed,
        } => {
            attempt.verification.record(suite, false);
            attempt.status = if failed {
                Status::Failed
            } else {
                Status::RolledBack
            };
            attempt.reason = Some(reason);
        }
    }
    attempt
}

enum Check {
    Kept {
        rescan: Vec<ScannedFinding>,
        suite: Option<SuiteRun>,
    },
    Rejected {
        reason: String,
        suite: Option<SuiteRun>,
        /// An error of agency's, not a verdict on the fix.
        failed: bool,
    },
}

#[allow(clippy::too_many_arguments)]
fn check(
    ctx: &mut Ctx<'_>,
    settings: &HealSettings,
    rel: &str,
    before: &str,
    after: &str,
    yardstick: &[ScannedFinding],
    finding: &agency_core::contract::Finding,
    suite: bool,
    progress: &dyn Fn(Progress),
) -> Check {
    let reject = |reason: String| Check::Rejected {
        reason,
        suite: None,
        failed: false,
    };
    if syntax_errors(rel, after) > syntax_errors(rel, before) {
        return reject(format!("the fix leaves {rel} with a syntax error"));
    }
    let copy = ctx.workspace.root().to_path_buf();
    let rescan = match scan_file(settings, &copy, rel, &ctx.tool_cache) {
        Ok(findings) => findings,
        Err(e) => {
            return Check::Rejected {
                reason: format!("cannot re-scan {rel} after the fix: {e}"),
                suite: None,
                failed: true,
            };
        }
    };
    // Ids hash the line's text, so a fix that rewrites a line changes the ids of the other
    // findings on it. Findings are therefore compared by (rule, message) counts: the fixed one
    // must be gone by id and by count, and no (rule, message) at P0–P2 may become more frequent.
    let before_counts = defect_counts(yardstick);
    let after_counts = defect_counts(&rescan);
    let key = (finding.rule.as_str(), finding.message.as_str());
    let count = |counts: &HashMap<(&str, &str), usize>| counts.get(&key).copied().unwrap_or(0);
    // An id names a line's text and its occurrence among identical lines: when the file has
    // several lines like the finding's, fixing one hands its id to the next, so only the
    // count can tell.
    let still_there =
        !line_repeats(before, finding.line) && rescan.iter().any(|f| f.finding.id == finding.id);
    // A runtime error cannot be seen by a re-scan: the tests are its proof.
    if finding.category != "runtime"
        && (still_there || count(&after_counts) >= count(&before_counts))
    {
        return reject(format!("a re-scan of {rel} still reports {}", finding.rule));
    }
    if let Some(new) = rescan.iter().map(|f| &f.finding).find(|f| {
        f.priority <= Priority::P2 && {
            let key = (f.rule.as_str(), f.message.as_str());
            after_counts.get(&key) > before_counts.get(&key)
        }
    }) {
        return reject(format!(
            "the fix introduces {} at {}:{}: {}",
            new.rule, new.file, new.line, new.message
        ));
    }
    let Some(command) = ctx.verify.cloned().filter(|_| suite) else {
        return Check::Kept {
            rescan,
            suite: None,
        };
    };
    progress(Progress::Suite);
    let suite = match run_suite(&command, &copy) {
        Ok(suite) => suite,
        Err(e) => {
            return Check::Rejected {
                reason: e.to_string(),
                suite: None,
                failed: true,
            };
        }
    };
    *ctx.suite_runs += 1;
    if suite.acceptable_against(ctx.baseline) {
        Check::Kept {
            rescan,
            suite: Some(suite),
        }
    } else {
        Check::Rejected {
            reason: format!(
                "the tests fail with the fix ({})",
                suite.describe_failures()
            ),
            suite: Some(suite),
            failed: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_lines_are_told_apart_only_by_count() {
        let text =
            "try:\n    a()\nexcept IOError:\n    pass\ntry:\n    b()\nexcept  IOError:\n    pass\n";
        assert!(line_repeats(text, 3));
        assert!(line_repeats(text, 7));
        assert!(!line_repeats(text, 2));
        assert!(!line_repeats(text, 99));
    }

    #[test]
    fn splits_like_a_shell_without_one() {
        assert_eq!(
            split_command("python -m pytest -q -x").unwrap(),
            ["python", "-m", "pytest", "-q", "-x"]
        );
        assert_eq!(
            split_command(r#"sh -c "echo '# user edit' >> /r/a.py && python -m pytest -q""#)
                .unwrap(),
            [
                "sh",
                "-c",
                "echo '# user edit' >> /r/a.py && python -m pytest -q"
            ]
        );
        assert_eq!(
            split_command(r#"a 'b c' "d \"e\" \n" f\ g ''"#).unwrap(),
            ["a", "b c", "d \"e\" \\n", "f g", ""]
        );
        assert!(split_command("a 'b").is_err());
        assert!(split_command("a \"b").is_err());
        assert!(split_command("   ").is_err());
    }

    #[test]
    fn failing_tests_come_from_the_summary() {
        let output = "F.\n=== short test summary info ===\n\
            FAILED tests/test_app.py::test_registered - AssertionError: assert 'd' in []\n\
            ERROR tests/test_db.py::test_conn\n1 failed, 1 passed in 0.1s\n";
        let failures = parse_failures(output);
        assert_eq!(
            failures.into_iter().collect::<Vec<_>>(),
            [
                "tests/test_app.py::test_registered",
                "tests/test_db.py::test_conn"
            ]
        );
    }

    fn run(exit: Option<i32>, failures: &[&str]) -> SuiteRun {
        SuiteRun {
            command: "pytest".into(),
            exit_code: exit,
            timed_out: false,
            duration_ms: 1,
            tail: String::new(),
            failures: failures.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_red_suite_accepts_only_fixes_that_add_no_failure() {
        let green = run(Some(0), &[]);
        let red = run(Some(1), &["t::a", "t::b"]);
        assert!(green.acceptable_against(None));
        assert!(!red.acceptable_against(None));
        assert!(!red.acceptable_against(Some(&green)));
        assert!(run(Some(1), &["t::a"]).acceptable_against(Some(&red)));
        assert!(!run(Some(1), &["t::a", "t::c"]).acceptable_against(Some(&red)));
        assert!(!run(None, &[]).acceptable_against(Some(&red)));
    }

    #[test]
    fn a_timeout_kills_the_whole_process_group() {
        // The background sleep is the shell's child: killing only the shell would leave it.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 30 & echo $!; sleep 30"]);
        let outcome = run_in_group(&mut cmd, Duration::from_millis(300)).unwrap();
        assert!(outcome.timed_out);
        assert_eq!(outcome.exit_code, None);
        assert!(outcome.duration < Duration::from_secs(30), "{outcome:?}");
        let pid = outcome.output.trim();
        assert!(pid.parse::<u32>().is_ok(), "{outcome:?}");
        // SIGKILL is delivered asynchronously: wait (bounded) until the process is gone or a
        // zombie waiting for its new parent to reap it.
        let stat = format!("/proc/{pid}/stat");
        let dead = (0..200).any(|_| {
            let state = std::fs::read_to_string(&stat)
                .ok()
                .and_then(|s| s.rsplit(')').next().map(|r| r.trim().chars().next()))
                .flatten();
            let dead = matches!(state, None | Some('Z' | 'X'));
            if !dead {
                std::thread::sleep(Duration::from_millis(10));
            }
            dead
        });
        assert!(dead, "the background sleep {pid} survived the timeout");
    }

    #[test]
    fn a_normal_exit_keeps_its_exit_code_and_output() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; exit 3"]);
        let outcome = run_in_group(&mut cmd, Duration::from_mins(1)).unwrap();
        assert!(!outcome.timed_out);
        assert_eq!(outcome.exit_code, Some(3));
        assert!(outcome.output.contains("out") && outcome.output.contains("err"));
    }

    #[test]
    fn the_verify_command_is_configured_detected_or_absent() {
        let repo = tempfile::tempdir().unwrap();
        let root = repo.path();
        let pinned = Path::new("/pinned/venv");
        assert_eq!(resolve(root, None, pinned).unwrap(), None);
        std::fs::write(root.join("test_app.py"), "def test_a(): pass\n").unwrap();
        let detected = resolve(root, None, pinned).unwrap().unwrap();
        assert_eq!(detected.argv, ["/pinned/venv/bin/pytest", "-q", "-x"]);
        assert!(detected.detected);
        assert_eq!(detected.timeout, Duration::from_secs(DEFAULT_TIMEOUT_S));
        let options = VerifyOptions {
            command: Some("make 'check all'".into()),
            timeout_s: Some(7),
        };
        let configured = resolve(root, Some(&options), pinned).unwrap().unwrap();
        assert_eq!(configured.argv, ["make", "check all"]);
        assert_eq!(configured.timeout, Duration::from_secs(7));
        assert!(!configured.detected);
        let broken = VerifyOptions {
            command: Some("pytest 'unclosed".into()),
            timeout_s: None,
        };
        assert!(matches!(
            resolve(root, Some(&broken), pinned),
            Err(Error::Command { .. })
        ));
    }

    #[test]
    fn detected_pytest_drops_exit_first_only_when_detected() {
        let detected = VerifyCommand {
            argv: vec!["pytest".into(), "-q".into(), "-x".into()],
            timeout: Duration::from_secs(1),
            detected: true,
        };
        assert_eq!(
            detected.without_exit_first().unwrap().argv,
            ["pytest", "-q"]
        );
        let configured = VerifyCommand {
            detected: false,
            ..detected
        };
        assert!(configured.without_exit_first().is_none());
        assert_eq!(
            VerifyCommand {
                argv: vec!["sh".into(), "-c".into(), "echo 'a b'".into()],
                timeout: Duration::from_secs(1),
                detected: false
            }
            .display(),
            r"sh -c 'echo '\''a b'\'''"
        );
    }
}
