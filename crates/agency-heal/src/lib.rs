//! The heal engine: takes a scan's findings, produces a fix for each one it can (for now, the
//! edits ruff proposes), applies and verifies every fix in a private copy of the working tree,
//! and writes a verified fix to the user's tree only when the file still has the bytes it had
//! when the run started. Every attempt is recorded in the repository's audit trail.
//!
//! The order of a run: [`start`] (copy the tree, run the suite once on the untouched copy) →
//! [`attempt_all`] (one fix at a time: apply in the copy, check that it parses and re-scans
//! clean; then the suite once for all of them, bisecting when it fails ([`batch`]), or once per
//! fix without batching; fixes that need a human are verified one by one afterwards and end
//! `PendingApproval`, kept by [`approvals`]) → [`apply::plan`], journaled ([`journal`]) →
//! [`apply::execute`] (write the verified files to the user's tree, each outcome journaled) →
//! [`apply::settle`] → the audit records ([`audit`]) → the journal is removed.
//! [`propose`] is the dry run: the fixes as diffs, nothing written anywhere.

pub mod apply;
pub mod approvals;
pub mod audit;
pub mod batch;
pub mod bench;
pub mod control;
pub mod diff;
pub mod generate;
pub mod history;
pub mod journal;
pub mod learn_bench;
mod none_heal;
pub mod patterns;
pub mod runtime;
pub mod schedule;
pub mod strategy;
pub mod verify;
pub mod workspace;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use agency_core::contract::Finding;
use agency_scan::ScanSettings;
use agency_scan::finding::ScannedFinding;

pub use strategy::Strategy;
pub use verify::{SuiteRun, VerifyCommand};
pub use workspace::Workspace;

/// Everything that can stop a heal run. A fix that fails verification is an outcome, not an
/// error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot copy the working tree to {}", path.display())]
    Copy {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot list the repository's files with git in {}: {message}", root.display())]
    Git { root: PathBuf, message: String },
    #[error(
        "cannot run the verify command `{command}`: set `[verify] command` in agency.toml, or run agency setup for the pinned pytest"
    )]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("invalid verify command `{command}`: {message}; fix `[verify] command` in agency.toml")]
    Command { command: String, message: String },
    #[error(
        "the test suite already fails before any fix ({failures}); --require-green refuses to heal: fix the tests first, or run without --require-green to accept only fixes that add no failure"
    )]
    NotGreen { failures: String },
    #[error("cannot write the audit record {}", path.display())]
    Audit {
        path: PathBuf,
        source: agency_fs::Error,
    },
    #[error(transparent)]
    Scan(#[from] agency_scan::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A resolved heal configuration.
#[derive(Debug, Clone)]
pub struct HealSettings {
    /// The settings of the scan that produced the findings (its root is the user's
    /// repository). Verification re-scans the touched files with the same tools.
    pub scan: ScanSettings,
    /// `None`: the repository has no tests and no configured command; tests are `skipped`.
    pub verify: Option<VerifyCommand>,
    /// Apply ruff's `unsafe` fixes too.
    pub unsafe_fixes: bool,
    /// Refuse to heal when the suite fails before any fix.
    pub require_green: bool,
    /// Verify the fixes that pass their cheap checks with one suite run, bisecting when it
    /// fails; `false`: one suite run per fix.
    pub batch: bool,
    /// How many files' fixes are made and checked at once (with batching; without it, one).
    pub max_concurrent: usize,
}

/// Where a heal stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Passed verification in the copy; not written to the user's tree yet. [`apply::settle`]
    /// turns it into `Healed` or `Skipped` (conflict); a declined run turns it into `Skipped`.
    Verified,
    Healed,
    RolledBack,
    /// Verified in the copy, waiting for a human (`agency approvals`): never written by the
    /// run itself. The fix is in [`Attempt::proposal`].
    PendingApproval,
    Flagged,
    Skipped,
    Failed,
}

impl Status {
    /// The contract's spelling. `Verified` never reaches a report: it is resolved first.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Verified => "verified",
            Status::Healed => "healed",
            Status::RolledBack => "rolled_back",
            Status::PendingApproval => "pending_approval",
            Status::Flagged => "flagged",
            Status::Skipped => "skipped",
            Status::Failed => "failed",
        }
    }
}

/// Whether the verify command ran and how it ended, for the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tests {
    Passed,
    Failed,
    Skipped,
}

impl Tests {
    pub fn as_str(self) -> &'static str {
        match self {
            Tests::Passed => "passed",
            Tests::Failed => "failed",
            Tests::Skipped => "skipped",
        }
    }
}

/// What verification found for one fix.
#[derive(Debug, Clone)]
pub struct Verification {
    pub tests: Tests,
    /// The suite run, when the verify command ran.
    pub suite: Option<SuiteRun>,
    /// Verification time: parse, re-scan and suite.
    pub duration_ms: u64,
    /// How many fixes the suite run in `suite` verified together (1 without batching); `None`
    /// when no suite ran for this fix.
    pub batch: Option<usize>,
}

impl Verification {
    /// Records the fix's own suite run (a batch of one): passed when the fix was kept, failed
    /// when the run rejected it; without a run, the tests stay `skipped`.
    pub(crate) fn record(&mut self, suite: Option<SuiteRun>, kept: bool) {
        if suite.is_some() {
            self.tests = if kept { Tests::Passed } else { Tests::Failed };
        }
        self.batch = suite.as_ref().map(|_| 1);
        self.suite = suite;
    }

    fn skipped() -> Self {
        Verification {
            tests: Tests::Skipped,
            suite: None,
            duration_ms: 0,
            batch: None,
        }
    }
}

/// One finding's way through the engine.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub finding: Finding,
    /// `None`: no fix was tried.
    pub strategy: Option<Strategy>,
    pub status: Status,
    /// Why a heal was flagged, skipped, rolled back or failed (or how it was healed).
    pub reason: Option<String>,
    /// The fix as a unified diff against the file before it (empty without a fix).
    pub diff: String,
    pub verification: Verification,
    /// The file the fix changes, relative to the root.
    pub file: Option<String>,
    /// The index of an earlier attempt whose fix also removed this finding; this one's final
    /// status follows that one's.
    pub fixed_by: Option<usize>,
    /// Wall time of the whole attempt.
    pub duration_ms: u64,
    /// A verified fix that waits for a human (`PendingApproval`): the file's text before and
    /// after it.
    pub proposal: Option<Proposal>,
    /// The pattern that made the fix (strategy `Pattern`).
    pub pattern: Option<PatternUse>,
    /// The file's text before and after this fix alone, once it passed its checks: what a
    /// pattern is learned from.
    pub texts: Option<(String, String)>,
    /// Whether the pattern store had a pattern applying at the finding (`None`: not asked).
    pub lookup_hit: Option<bool>,
    /// Runtime errors: the regression test that goes with the fix, or why there is none.
    pub regression: Regression,
}

/// A regression test added with a runtime fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegressionTest {
    /// The new test file, relative to the root.
    pub path: String,
    pub text: String,
    /// The pytest node id of the test.
    pub node_id: String,
}

/// Whether a fix comes with a regression test.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Regression {
    /// Not a runtime error (or no fix was made).
    #[default]
    NotApplicable,
    /// A test that failed before the fix and passes with it.
    Added(RegressionTest),
    /// Why none could be made or kept.
    None(String),
}

impl Regression {
    pub fn test(&self) -> Option<&RegressionTest> {
        match self {
            Regression::Added(test) => Some(test),
            _ => None,
        }
    }

    pub fn note(&self) -> Option<&str> {
        match self {
            Regression::None(why) => Some(why),
            _ => None,
        }
    }
}

/// Which pattern a fix came from, and how sure the store was of it.
#[derive(Debug, Clone, PartialEq)]
pub struct PatternUse {
    pub id: String,
    pub confidence: f64,
}

/// A verified fix kept aside for approval instead of being written.
#[derive(Debug, Clone)]
pub struct Proposal {
    /// The file, relative to the root.
    pub file: String,
    /// The file's text the fix applies to: the user's file after this run's kept fixes.
    pub before: String,
    pub after: String,
    /// Why it needs a human.
    pub reason: String,
}

impl Attempt {
    pub(crate) fn without_fix(finding: &Finding, status: Status, reason: String) -> Self {
        Attempt {
            finding: finding.clone(),
            strategy: None,
            status,
            reason: Some(reason),
            diff: String::new(),
            verification: Verification::skipped(),
            file: None,
            fixed_by: None,
            duration_ms: 0,
            proposal: None,
            pattern: None,
            texts: None,
            lookup_hit: None,
            regression: Regression::NotApplicable,
        }
    }
}

/// Progress of a run, for the CLI to draw.
#[derive(Debug, Clone)]
pub enum Progress {
    /// The private copy is ready in `dir`.
    Copied { files: usize, dir: PathBuf },
    /// The suite runs on the untouched copy.
    Baseline,
    /// Fix `index` of `total` is being tried.
    Attempt {
        index: usize,
        total: usize,
        rule: String,
        file: String,
        line: u32,
    },
    /// The verify command runs for the current fix, or for a batch or part of one.
    Suite,
    /// The fixes that passed their cheap checks are verified together (bisected if the suite
    /// fails).
    Batch { fixes: usize },
}

/// A run in progress: the private copy and the suite's state before any fix.
#[derive(Debug)]
pub struct Session {
    pub workspace: Workspace,
    /// The suite on the untouched copy (`None` without a verify command).
    pub baseline: Option<SuiteRun>,
    /// The command actually used to verify (the detected default loses `-x` when the suite
    /// already fails, so that every failing test is known).
    pub verify: Option<VerifyCommand>,
    /// What the user should know (e.g. the suite already fails).
    pub notes: Vec<String>,
    /// Suite runs so far, the baseline included.
    pub suite_runs: usize,
    /// The verified text of each file with a kept fix: what [`apply::plan`] writes. Kept here,
    /// not read back from the copy, where a test could have changed the file.
    pub(crate) fixed: BTreeMap<String, String>,
}

/// What making and checking one fix needs of a run: the copy, the verify command and the
/// suite before any fix (shared), and the verified texts and suite-run count (the caller's:
/// a run's, or a worker's own while fixes of different files are made in parallel).
pub(crate) struct Ctx<'a> {
    pub workspace: &'a Workspace,
    pub verify: Option<&'a VerifyCommand>,
    pub baseline: Option<&'a SuiteRun>,
    pub fixed: &'a mut BTreeMap<String, String>,
    pub suite_runs: &'a mut usize,
    /// Where the re-scans' tools keep their caches: the worker's own directory in the copy.
    pub tool_cache: PathBuf,
}

/// The tools' cache directory of worker `worker` in the copy (`None`: the run's own thread).
/// On first use it is seeded with the repository's own mypy cache from the scan, if there is
/// one: mypy re-checks what changed (the copy's paths differ) but keeps the standard library's
/// analysis, which is most of a cold run (1.1 s against 0.25 s warm on a small file).
fn tool_cache(workspace: &Workspace, worker: Option<usize>) -> PathBuf {
    let name = worker.map_or_else(|| "main".to_string(), |w| format!("w{w}"));
    let dir = workspace
        .root()
        .join(".agency")
        .join("heal-cache")
        .join(name);
    let mypy = dir.join("mypy");
    let scanned = workspace
        .source()
        .join(".agency")
        .join("cache")
        .join("mypy");
    if !mypy.exists() && scanned.is_dir() {
        // A cache is an optimisation: a failed copy only means a cold first run.
        let _ = copy_tree(&scanned, &mypy);
    }
    dir
}

/// Copies a directory tree of regular files.
fn copy_tree(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

impl Session {
    pub(crate) fn ctx(&mut self) -> Ctx<'_> {
        Ctx {
            tool_cache: tool_cache(&self.workspace, None),
            workspace: &self.workspace,
            verify: self.verify.as_ref(),
            baseline: self.baseline.as_ref(),
            fixed: &mut self.fixed,
            suite_runs: &mut self.suite_runs,
        }
    }
}

/// Copies the working tree and runs the suite once on the untouched copy.
pub fn start(settings: &HealSettings, progress: &dyn Fn(Progress)) -> Result<Session> {
    let workspace = Workspace::create(&settings.scan.root)?;
    progress(Progress::Copied {
        files: workspace.len(),
        dir: workspace.root().to_path_buf(),
    });
    let mut session = Session {
        workspace,
        baseline: None,
        verify: settings.verify.clone(),
        notes: Vec::new(),
        suite_runs: 0,
        fixed: BTreeMap::new(),
    };
    let Some(command) = settings.verify.clone() else {
        return Ok(session);
    };
    progress(Progress::Baseline);
    let mut run = verify::run_suite(&command, session.workspace.root())?;
    session.suite_runs += 1;
    if !run.passed() {
        if settings.require_green {
            return Err(Error::NotGreen {
                failures: run.describe_failures(),
            });
        }
        if let Some(full) = command.without_exit_first() {
            // `-x` stops at the first failure; the full list is the yardstick for every fix.
            progress(Progress::Baseline);
            run = verify::run_suite(&full, session.workspace.root())?;
            session.suite_runs += 1;
            session.verify = Some(full);
        }
        session.notes.push(format!(
            "the test suite already fails before any fix ({}); only fixes that add no failing test are kept",
            run.describe_failures()
        ));
    }
    session.baseline = Some(run);
    Ok(session)
}

/// Tries every finding in the private copy. Each file's findings are a chain made one after
/// the other on one worker, and chains run on up to `max_concurrent` workers in import order
/// ([`schedule`]). Fixes that pass their cheap checks stay in the copy (later fixes of their
/// file build on them); failed ones are restored there. The suite then runs once for all the
/// kept fixes, bisecting to the ones that break it ([`batch::settle`]), or, without batching,
/// once per fix as it is made (then on one worker: the suite runs in the one copy). Fixes that
/// need a human are made last, one by one, on what the kept fixes left. Nothing is written to
/// the user's tree.
pub fn attempt_all(
    session: &mut Session,
    settings: &HealSettings,
    findings: &[ScannedFinding],
    tiers: &Tiers<'_>,
    progress: &(dyn Fn(Progress) + Sync),
) -> Vec<Attempt> {
    let total = findings.len();
    let batching = settings.batch && session.verify.is_some();
    let chains = schedule::chains(findings);
    let files: Vec<String> = chains.keys().cloned().collect();
    let file_refs: Vec<&str> = files.iter().map(String::as_str).collect();
    let deps = schedule::dependencies(session.workspace.root(), &file_refs);
    let workers = if batching {
        settings.max_concurrent.max(1)
    } else {
        1
    };
    let started = AtomicUsize::new(0);
    let outcomes = {
        let shared = Shared {
            workspace: &session.workspace,
            verify: session.verify.as_ref(),
            baseline: session.baseline.as_ref(),
        };
        schedule::run(&files, &deps, workers, &|worker: usize, file: &str| {
            run_chain(
                &shared,
                worker,
                settings,
                tiers,
                findings,
                &chains[file],
                batching,
                &started,
                total,
                progress,
            )
        })
    };
    let mut slots: Vec<Option<Attempt>> = vec![None; total];
    let mut pending: Vec<batch::Pending> = Vec::new();
    let mut deferred: Vec<Deferred> = Vec::new();
    let mut alias: HashMap<String, String> = HashMap::new();
    let mut fixed_by: HashMap<String, usize> = HashMap::new();
    for outcome in outcomes {
        for (index, attempt) in outcome.attempts {
            slots[index] = Some(attempt);
        }
        pending.extend(outcome.pending);
        deferred.extend(outcome.deferred);
        alias.extend(outcome.alias);
        fixed_by.extend(outcome.fixed_by);
        session.suite_runs += outcome.suite_runs;
        if let Some(text) = outcome.fixed {
            session.fixed.insert(outcome.file, text);
        }
    }
    let mut attempts: Vec<Attempt> = slots
        .into_iter()
        .zip(findings)
        .map(|(slot, scanned)| {
            slot.unwrap_or_else(|| {
                Attempt::without_fix(
                    &scanned.finding,
                    Status::Failed,
                    "agency lost this attempt (an internal error): nothing was written".into(),
                )
            })
        })
        .collect();
    // By file, for a run that does not depend on which worker finished first; within a file,
    // in the order its fixes were made (each built on the one before), as `batch::settle`
    // expects: a stable sort keeps it.
    pending.sort_by(|a, b| a.file.cmp(&b.file));
    if !pending.is_empty() {
        let started = Instant::now();
        batch::settle(session, &mut attempts, &pending, progress);
        // The batch's suite runs are shared: each fix's wall time gets its share.
        let share = started.elapsed().as_millis() as u64 / pending.len() as u64;
        for p in &pending {
            attempts[p.attempt].duration_ms += share;
        }
    }
    deferred.sort_by_key(|d| d.index);
    for Deferred {
        index,
        strategy,
        candidate,
        reason,
        hit,
    } in deferred
    {
        let scanned = &findings[index];
        if let Some(&by) = fixed_by.get(&scanned.finding.id) {
            attempts[index] = removed_by(&scanned.finding, &attempts[by], by);
            continue;
        }
        progress(Progress::Attempt {
            index: started.fetch_add(1, Ordering::Relaxed) + 1,
            total,
            rule: scanned.finding.rule.clone(),
            file: scanned.finding.file.clone(),
            line: scanned.finding.line,
        });
        let started = Instant::now();
        let current_id = alias
            .get(&scanned.finding.id)
            .unwrap_or(&scanned.finding.id)
            .clone();
        let examples = examples_for(tiers, &scanned.finding);
        let mut attempt = verify::propose_for_approval(
            session,
            settings,
            scanned,
            &current_id,
            strategy,
            &verify::Fixers {
                candidate: candidate.as_ref(),
                llm: tiers.llm,
                examples: &examples,
            },
            progress,
        );
        if let Some(proposal) = attempt.proposal.as_mut() {
            proposal.reason.clone_from(&reason);
        }
        if attempt.status == Status::PendingApproval {
            attempt.reason = Some(reason);
        }
        attempt.duration_ms = started.elapsed().as_millis() as u64;
        attempt.lookup_hit = hit;
        attempts[index] = attempt;
    }
    attempts
}

/// Where fixes come from besides the deterministic fixers: the pattern store and the model.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tiers<'a> {
    pub patterns: Option<&'a patterns::Patterns>,
    pub llm: Option<&'a generate::Generator>,
    /// Leave the deterministic fixers out (the learning benchmark heals with patterns alone).
    pub no_rules: bool,
}

/// What every worker shares: the copy, the verify command and the suite before any fix.
struct Shared<'a> {
    workspace: &'a Workspace,
    verify: Option<&'a VerifyCommand>,
    baseline: Option<&'a SuiteRun>,
}

/// A fix that needs a human, made after the batch.
struct Deferred {
    index: usize,
    strategy: Strategy,
    candidate: Option<patterns::Candidate>,
    reason: String,
    hit: Option<bool>,
}

/// What one file's chain produced.
struct ChainOutcome {
    file: String,
    attempts: Vec<(usize, Attempt)>,
    pending: Vec<batch::Pending>,
    deferred: Vec<Deferred>,
    alias: HashMap<String, String>,
    fixed_by: HashMap<String, usize>,
    /// The file's verified text after the chain's kept fixes.
    fixed: Option<String>,
    suite_runs: usize,
}

/// The attempt of a finding that an earlier fix removed: it ends as that fix does.
fn removed_by(finding: &Finding, earlier: &Attempt, by: usize) -> Attempt {
    let mut attempt = Attempt::without_fix(
        finding,
        Status::Verified,
        format!(
            "removed by the fix of {} at {}:{}",
            earlier.finding.rule, earlier.finding.file, earlier.finding.line
        ),
    );
    attempt.strategy = earlier.strategy;
    attempt.file = Some(finding.file.clone());
    attempt.fixed_by = Some(by);
    attempt
}

/// The strategy for a finding, in the order: a confident pattern that matches the
/// syntax tree at the finding (waiting for a human if the finding's kind needs one); else the
/// deterministic fixer's decision when it has a fix; else a less confident pattern that
/// matches, for a human to approve; else the fixer's flag or skip.
fn decide(
    scanned: &ScannedFinding,
    settings: &HealSettings,
    tiers: &Tiers<'_>,
    text: &dyn Fn() -> Option<String>,
) -> Decided {
    let decided = decide_known(scanned, settings, tiers, text);
    // The model, last: only where nothing else knows a fix, never for style.
    if let (strategy::Decision::Flag(_), Some(llm)) = (&decided.decision, tiers.llm)
        && scanned.finding.category != "style"
        && decided.candidate.is_none()
    {
        let decision = match scanned.finding.approval_reason() {
            Some(reason) => strategy::Decision::Approve(Strategy::Llm, reason),
            None if llm.auto_apply() => strategy::Decision::Fix(Strategy::Llm),
            None => strategy::Decision::Approve(
                Strategy::Llm,
                "a generated fix waits for a human ([llm] auto_apply = false)".into(),
            ),
        };
        return Decided {
            decision,
            candidate: None,
            hit: decided.hit,
        };
    }
    decided
}

/// The closest patterns as worked examples for the model, whatever their confidence.
fn examples_for(tiers: &Tiers<'_>, finding: &Finding) -> Vec<agency_llm::Example> {
    tiers.patterns.map_or_else(Vec::new, |p| {
        p.candidates(finding)
            .into_iter()
            .take(3)
            .map(|c| {
                let rewrite = c.rewrite.rewrite();
                agency_llm::Example {
                    before: rewrite.before,
                    after: rewrite.after,
                    confidence: c.confidence,
                }
            })
            .collect()
    })
}

/// [`decide`] without the model: a pattern or a deterministic fixer.
fn decide_known(
    scanned: &ScannedFinding,
    settings: &HealSettings,
    tiers: &Tiers<'_>,
    text: &dyn Fn() -> Option<String>,
) -> Decided {
    use strategy::Decision;
    let finding = &scanned.finding;
    let rule = if tiers.no_rules {
        Decision::Flag("the deterministic fixers are off in this run".into())
    } else {
        match strategy::choose(scanned, settings.unsafe_fixes) {
            // A None crash from a log: agency's own fixers, when one fits the code.
            Decision::Flag(_)
                if none_heal::crash(finding).is_some()
                    && text().is_some_and(|t| none_heal::has_fix(finding, &t)) =>
            {
                match finding.approval_reason() {
                    Some(reason) => Decision::Approve(Strategy::Rule, reason),
                    None => Decision::Fix(Strategy::Rule),
                }
            }
            other => other,
        }
    };
    let Some(patterns) = tiers.patterns else {
        return Decided::plain(rule, None);
    };
    let candidates = patterns.candidates(finding);
    let Some(text) = (!candidates.is_empty()).then(text).flatten() else {
        return Decided::plain(rule, Some(false));
    };
    // Candidates come auto-applied first: one pass (one parse of the file) finds the first
    // confident one that matches, else the first other one.
    let matched =
        patterns::first_match(&candidates, &text, finding.line, finding.column, &|_| true)
            .map(|(c, _)| c);
    if let Some(c) = matched.clone().filter(|c| c.auto_apply) {
        let decision = match finding.approval_reason() {
            Some(reason) => Decision::Approve(Strategy::Pattern, reason),
            None => Decision::Fix(Strategy::Pattern),
        };
        return Decided {
            decision,
            candidate: Some(c),
            hit: Some(true),
        };
    }
    let other = matched.filter(|c| !c.auto_apply);
    let hit = Some(other.is_some());
    if matches!(rule, Decision::Fix(_) | Decision::Approve(..)) {
        return Decided::plain(rule, hit);
    }
    if let Some(c) = other {
        let reason = format!(
            "pattern {} matches at confidence {:.2}, below the 0.90 that applies a fix unattended: a human decides",
            c.id, c.confidence
        );
        return Decided {
            decision: Decision::Approve(Strategy::Pattern, reason),
            candidate: Some(c),
            hit,
        };
    }
    Decided::plain(rule, hit)
}

/// A finding's strategy, the pattern it uses, and whether a lookup found one that applies.
struct Decided {
    decision: strategy::Decision,
    candidate: Option<patterns::Candidate>,
    hit: Option<bool>,
}

impl Decided {
    fn plain(decision: strategy::Decision, hit: Option<bool>) -> Self {
        Decided {
            decision,
            candidate: None,
            hit,
        }
    }
}

/// Makes and checks the fixes of one file, one after the other (see [`attempt_all`]).
#[allow(clippy::too_many_arguments)]
fn run_chain(
    shared: &Shared<'_>,
    worker: usize,
    settings: &HealSettings,
    tiers: &Tiers<'_>,
    findings: &[ScannedFinding],
    chain: &[usize],
    batching: bool,
    started_count: &AtomicUsize,
    total: usize,
    progress: &(dyn Fn(Progress) + Sync),
) -> ChainOutcome {
    let file = findings[chain[0]].finding.file.clone();
    let mut fixed: BTreeMap<String, String> = BTreeMap::new();
    let mut suite_runs = 0;
    // The current findings of the file in the copy, from a scan of that file alone (the
    // yardstick a re-scan after a fix is compared with), and their fresh fixes.
    let mut current: HashMap<String, Vec<ScannedFinding>> = HashMap::new();
    let mut fixed_by: HashMap<String, usize> = HashMap::new();
    // Ids hash a line's text: when a kept fix rewrites a line, the other findings on it get
    // new ids. Original id → id in the copy now.
    let mut alias: HashMap<String, String> = HashMap::new();
    let mut attempts: Vec<(usize, Attempt)> = Vec::with_capacity(chain.len());
    let mut pending = Vec::new();
    let mut deferred = Vec::new();
    for (pos, &index) in chain.iter().enumerate() {
        let scanned = &findings[index];
        let finding = &scanned.finding;
        let started = Instant::now();
        if let Some(&by) = fixed_by.get(&finding.id) {
            let earlier = attempts
                .iter()
                .find(|(i, _)| *i == by)
                .map(|(_, a)| a)
                .expect("a finding is removed by an earlier attempt of its own chain");
            let attempt = removed_by(finding, earlier, by);
            attempts.push((index, attempt));
            continue;
        }
        let current_text = || -> Option<String> {
            fixed
                .get(&file)
                .cloned()
                .or_else(|| std::fs::read_to_string(shared.workspace.root().join(&file)).ok())
        };
        let Decided {
            decision,
            candidate,
            hit,
        } = decide(scanned, settings, tiers, &current_text);
        let strategy = match decision {
            strategy::Decision::Fix(strategy) => strategy,
            strategy::Decision::Approve(strategy, reason) => {
                // Made after the batch, on the text the run's kept fixes leave, and never
                // kept in the copy.
                deferred.push(Deferred {
                    index,
                    strategy,
                    candidate,
                    reason,
                    hit,
                });
                attempts.push((
                    index,
                    Attempt::without_fix(
                        finding,
                        Status::Skipped,
                        "waits for the run's other fixes".into(),
                    ),
                ));
                continue;
            }
            other => {
                let mut attempt = other.into_attempt(finding);
                attempt.lookup_hit = hit;
                attempts.push((index, attempt));
                continue;
            }
        };
        progress(Progress::Attempt {
            index: started_count.fetch_add(1, Ordering::Relaxed) + 1,
            total,
            rule: finding.rule.clone(),
            file: finding.file.clone(),
            line: finding.line,
        });
        let current_id = alias.get(&finding.id).unwrap_or(&finding.id).clone();
        let examples = if strategy == Strategy::Llm {
            examples_for(tiers, finding)
        } else {
            Vec::new()
        };
        let mut ctx = Ctx {
            tool_cache: tool_cache(shared.workspace, Some(worker)),
            workspace: shared.workspace,
            verify: shared.verify,
            baseline: shared.baseline,
            fixed: &mut fixed,
            suite_runs: &mut suite_runs,
        };
        let (mut attempt, yardstick, before) = verify::attempt(
            &mut ctx,
            settings,
            scanned,
            &current_id,
            strategy,
            &verify::Fixers {
                candidate: candidate.as_ref(),
                llm: tiers.llm,
                examples: &examples,
            },
            &mut current,
            !batching,
            progress,
        );
        if batching
            && let Some(before) = before
            && let Some(after) = fixed.get(&finding.file)
        {
            pending.push(batch::Pending {
                attempt: index,
                file: finding.file.clone(),
                before,
                after: after.clone(),
            });
        }
        if attempt.status == Status::Verified
            && let Some(after) = current.get(&finding.file)
        {
            let later: Vec<&ScannedFinding> =
                chain[pos + 1..].iter().map(|&i| &findings[i]).collect();
            follow(
                &later,
                &finding.file,
                &yardstick,
                after,
                index,
                &mut alias,
                &mut fixed_by,
            );
        }
        attempt.duration_ms = started.elapsed().as_millis() as u64;
        attempt.lookup_hit = hit;
        attempts.push((index, attempt));
    }
    ChainOutcome {
        fixed: fixed.remove(&file),
        file,
        attempts,
        pending,
        deferred,
        alias,
        fixed_by,
        suite_runs,
    }
}

/// After a kept fix in `file`, the later findings of the run in that file that the scan of the
/// file before the fix reported: one whose id is still reported is unchanged; one whose id
/// vanished but whose (rule, message) shows up under a new id moved (its line was rewritten)
/// and is followed under that id; any other was removed by the fix (`fixed_by`).
fn follow(
    later: &[&ScannedFinding],
    file: &str,
    before: &[ScannedFinding],
    after: &[ScannedFinding],
    index: usize,
    alias: &mut HashMap<String, String>,
    fixed_by: &mut HashMap<String, usize>,
) {
    let before_ids: HashSet<&str> = before.iter().map(|f| f.finding.id.as_str()).collect();
    let after_ids: HashSet<&str> = after.iter().map(|f| f.finding.id.as_str()).collect();
    let mut claimed: HashSet<&str> = HashSet::new();
    for f in later.iter().map(|s| &s.finding).filter(|f| f.file == file) {
        let id = alias.get(&f.id).unwrap_or(&f.id);
        // Unchanged, or never seen by a scan of this file alone (its own turn says so).
        if after_ids.contains(id.as_str()) || !before_ids.contains(id.as_str()) {
            continue;
        }
        let moved = after.iter().map(|a| &a.finding).find(|a| {
            !before_ids.contains(a.id.as_str())
                && !claimed.contains(a.id.as_str())
                && a.rule == f.rule
                && a.message == f.message
        });
        match moved {
            Some(a) => {
                claimed.insert(a.id.as_str());
                alias.insert(f.id.clone(), a.id.clone());
            }
            None => {
                fixed_by.insert(f.id.clone(), index);
            }
        }
    }
}

/// The dry run: every fix that would be tried, as a diff against the file as it is now, with
/// no copy, no verification and nothing written.
pub fn propose(settings: &HealSettings, findings: &[ScannedFinding]) -> Vec<Attempt> {
    findings
        .iter()
        .map(|scanned| {
            let finding = &scanned.finding;
            match strategy::choose(scanned, settings.unsafe_fixes) {
                strategy::Decision::Fix(strategy) => {
                    strategy::preview(&settings.scan.root, scanned, strategy)
                }
                strategy::Decision::Approve(strategy, reason) => {
                    let mut attempt = strategy::preview(&settings.scan.root, scanned, strategy);
                    if attempt.status == Status::Skipped && !attempt.diff.is_empty() {
                        attempt.reason = Some(format!(
                            "dry run: proposed, not verified; would wait for approval ({reason})"
                        ));
                    }
                    attempt
                }
                flag @ strategy::Decision::Flag(_) => {
                    none_heal::preview(&settings.scan.root, finding)
                        .unwrap_or_else(|| flag.into_attempt(finding))
                }
                other => other.into_attempt(finding),
            }
        })
        .collect()
}
