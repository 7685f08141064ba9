//! `agency heal --watch-log FILE`: follows a growing log (`agency_scan::follow`, from its end,
//! rotation-safe) and heals new tracebacks as they appear. Each heal run is a complete heal of
//! the tracebacks queued since the last one (`heal::heal_once`, as `--from-log` runs it: lock,
//! journal, tests in a private copy, verified writes, audit trail), on a thread of its own
//! while the log is still read every [`POLL`].
//!
//! - **One heal per signature at a time.** A traceback is queued unless its signature
//!   (`follow::Signature`: exception and innermost frame) is queued or being healed already;
//!   then it is counted. Runs happen one after the other.
//! - **After a run** each signature is remembered with its outcome and a fingerprint of its
//!   file. A recurrence after a written fix means the running program may predate the fix: it
//!   is reported and not healed again; after a heal that wrote nothing it is not retried
//!   either (the same tests would fail the same way); in both cases until that file changes.
//!   A run that fails forgets its signatures (they are healed if they recur); one refused by a
//!   stop or by another heal's lock keeps them queued.
//! - A traceback with no frame in the repository is reported once and never healed (a run for
//!   it would only run the tests).
//! - **`agency healing stop`**: no run starts while healing is stopped (said once); the queue
//!   waits for `agency healing resume`. A stop during a run ends the process as it ends any
//!   heal (`healing::RunWatch`, exit 2).
//! - **Ctrl-C or SIGTERM** with no run going: "stopped watching", exit 0. During a run its
//!   `RunWatch` kills the tests and exits 130; should the run not be at that stage yet, it is
//!   let finish and the watch then stops.
//! - **Output**: one line on stderr per event (traceback seen, run started, outcome per
//!   traceback, rotation); with `--json`, the contract's heal report of each run on stdout, one
//!   per line (NDJSON).
//! - **Resume**: a run names `.agency/heal/watch-<pid>.log` (its tracebacks) as its
//!   `--from-log` in the journal, so `agency heal --resume` after a crash before the writes runs
//!   that same batch again, not the whole log.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use agency_core::contract::{Heal, HealReport, Priority};
use agency_scan::discover::Excludes;
use agency_scan::follow::{FollowEvent, FollowOptions, Followed, LogFollower, Signature};
use anyhow::{Context, Result, bail};

use crate::ExitStatus;
use crate::config;
use crate::heal::HealArgs;
use crate::output;

/// How often the log is read.
const POLL: Duration = Duration::from_millis(300);

/// How long a run refused by another heal's lock waits before it is tried again.
const BUSY_RETRY: Duration = Duration::from_secs(10);

pub fn run(home: &Path, args: &HealArgs, log: &Path) -> Result<ExitStatus> {
    if !args.yes {
        bail!(
            "--watch-log heals unattended and nobody is there to answer a prompt: add --yes to write verified fixes (to preview the fixes of a log instead, run `agency heal --dry-run --from-log {}`)",
            log.display()
        );
    }
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let root = config::find_root(&cwd);
    // A bad configuration fails now, not at the first crash.
    let loaded = config::load(&root)?;
    let globs = loaded
        .options
        .scan
        .as_ref()
        .and_then(|s| s.exclude.clone())
        .unwrap_or_default();
    let excludes = Excludes::new(&globs)
        .with_context(|| format!("invalid [scan] exclude in {}", loaded.source(&root)))?;
    let mut follower = LogFollower::open(
        log,
        FollowOptions {
            from_start: args.from_start,
            ..FollowOptions::default()
        },
    )?;
    let signals = signals();
    let mut watch = Watch::new(home, &root, args, excludes);
    note(&format!(
        "watching {} for new Python tracebacks ({}; rotation is followed) to heal in {}; Ctrl-C stops",
        log.display(),
        if args.from_start {
            "and those already in it, from its start"
        } else {
            "from its end"
        },
        root.display()
    ));
    let mut stopping = false;
    let mut last_error: Option<String> = None;
    loop {
        if wait(&signals, POLL) {
            if watch.running.is_none() {
                break;
            }
            if !stopping {
                note(
                    "stopping: the running heal is interrupted (or finishes first if it has not reached its tests yet)",
                );
            }
            stopping = true;
        }
        watch.conclude_run()?;
        if stopping {
            if watch.running.is_none() {
                break;
            }
            continue;
        }
        match follower.poll() {
            Ok(poll) => {
                last_error = None;
                for event in poll.events {
                    note(&describe_event(event, follower.path()));
                }
                for followed in poll.tracebacks {
                    watch.seen(followed);
                }
            }
            Err(e) => {
                // Said once while it lasts; the next poll tries again.
                let message = format!("{:#}", anyhow::Error::from(e));
                if last_error.as_ref() != Some(&message) {
                    output::warn(&format!("{message}; still trying"));
                    last_error = Some(message);
                }
            }
        }
        watch.start_run();
    }
    watch.remove_batch();
    let s = &watch.stats;
    let waiting = if watch.queue.is_empty() {
        String::new()
    } else {
        format!(", {} left unhealed in the queue", watch.queue.len())
    };
    note(&format!(
        "stopped watching {}: {} traceback(s) seen, {} heal run(s), {} healed{waiting}",
        log.display(),
        s.tracebacks,
        s.runs,
        s.healed
    ));
    Ok(ExitStatus::Success)
}

/// A line of the watch's event log on stderr (always shown: it is what the command does).
fn note(message: &str) {
    eprintln!("agency: {message}");
}

fn describe_event(event: FollowEvent, path: &Path) -> String {
    let path = path.display();
    match event {
        FollowEvent::Rotated => {
            format!("the log {path} was rotated: following the new file from its start")
        }
        FollowEvent::Truncated => {
            format!("the log {path} was truncated: reading it again from its start")
        }
        FollowEvent::Missing => format!(
            "the log {path} is gone: still reading the file that was open, and waiting for {path} to come back"
        ),
        FollowEvent::Back => format!("the log {path} is back"),
    }
}

/// Waits up to `timeout` for Ctrl-C or SIGTERM; true when one came.
fn wait(signals: &mpsc::Receiver<()>, timeout: Duration) -> bool {
    match signals.recv_timeout(timeout) {
        Ok(()) => true,
        Err(mpsc::RecvTimeoutError::Timeout) => false,
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // No handler could be installed: the signals keep their default (ending the
            // process at once, which is safe while no run writes).
            std::thread::sleep(timeout);
            false
        }
    }
}

/// A message on the channel for every SIGINT and SIGTERM, from a thread that waits for them.
/// Once installed, the signals no longer end the process by themselves.
fn signals() -> mpsc::Receiver<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let (sender, receiver) = mpsc::channel();
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    else {
        return receiver;
    };
    let streams = {
        let _context = runtime.enter();
        signal(SignalKind::interrupt()).and_then(|i| Ok((i, signal(SignalKind::terminate())?)))
    };
    let Ok((mut interrupt, mut terminate)) = streams else {
        return receiver;
    };
    std::thread::spawn(move || {
        runtime.block_on(async move {
            loop {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
                if sender.send(()).is_err() {
                    break;
                }
            }
        });
    });
    receiver
}

/// Where a traceback lands in the repository: the finding its heal reports.
#[derive(Debug, Clone)]
struct Site {
    file: String,
    line: u32,
    rule: String,
}

/// A traceback waiting for a run, or in one.
#[derive(Debug)]
struct Item {
    signature: Signature,
    text: String,
    site: Site,
}

/// What the watch knows of a signature.
#[derive(Debug)]
enum Known {
    /// No frame in the repository: never healed.
    Outside,
    /// Waiting for the next run; `again`: further occurrences.
    Queued { again: usize },
    /// In the running run; `again`: occurrences since it started.
    Healing { again: usize },
    /// Its run is over.
    Done(Done),
}

#[derive(Debug)]
struct Done {
    /// The heal's status (`healed`: its fix was written).
    status: String,
    reason: Option<String>,
    file: String,
    /// The file when the run ended; the signature is healed again only once it differs.
    fingerprint: Option<u64>,
    /// When the run ended.
    at: String,
    /// Occurrences since.
    again: usize,
}

#[derive(Debug, Default)]
struct Stats {
    tracebacks: usize,
    runs: usize,
    healed: usize,
}

struct Running {
    items: Vec<Item>,
    started: Instant,
    thread: std::thread::JoinHandle<Result<(HealReport, Priority)>>,
}

struct Watch {
    home: PathBuf,
    root: PathBuf,
    /// The options of every run: `--from-log` is the batch file, for `--resume`.
    args: HealArgs,
    json: bool,
    excludes: Excludes,
    /// `.agency/heal/watch-<pid>.log`: the tracebacks of the current run.
    batch: PathBuf,
    known: BTreeMap<Signature, Known>,
    queue: Vec<Item>,
    running: Option<Running>,
    /// Healing is stopped (and that was said).
    stopped: bool,
    /// A run refused by another heal's lock waits until then.
    retry_at: Option<Instant>,
    /// The repository's Python files, and when they were listed.
    files: Option<(Instant, Vec<String>)>,
    stats: Stats,
}

impl Watch {
    fn new(home: &Path, root: &Path, args: &HealArgs, excludes: Excludes) -> Self {
        let batch = root
            .join(".agency")
            .join("heal")
            .join(format!("watch-{}.log", std::process::id()));
        let mut run_args = args.clone();
        run_args.watch_log = None;
        run_args.from_start = false;
        run_args.from_log = Some(batch.clone());
        Watch {
            home: home.to_path_buf(),
            root: root.to_path_buf(),
            args: run_args,
            json: args.json,
            excludes,
            batch,
            known: BTreeMap::new(),
            queue: Vec::new(),
            running: None,
            stopped: false,
            retry_at: None,
            files: None,
            stats: Stats::default(),
        }
    }

    /// A new traceback: queued, counted, or said why not.
    fn seen(&mut self, followed: Followed) {
        self.stats.tracebacks += 1;
        let signature = followed.signature.clone();
        match self.known.get_mut(&signature) {
            Some(Known::Outside) => return,
            Some(Known::Queued { again }) => {
                *again += 1;
                note(&format!(
                    "traceback {signature} again: already queued (seen {} times)",
                    *again + 1
                ));
                return;
            }
            Some(Known::Healing { again }) => {
                *again += 1;
                note(&format!(
                    "traceback {signature} again while its heal runs: counted, not queued ({} time(s) since the heal started)",
                    *again
                ));
                return;
            }
            Some(Known::Done(done)) => {
                if fingerprint(&self.root.join(&done.file)) == done.fingerprint {
                    done.again += 1;
                    // Said once: a crashing program repeats itself.
                    if done.again == 1 {
                        note(&recurrence(&signature, done));
                    }
                    return;
                }
                note(&format!(
                    "traceback {signature} again, and {} changed since its heal at {}: healing it again",
                    done.file, done.at
                ));
            }
            None => {}
        }
        let Some(site) = self.locate(&followed) else {
            note(&format!(
                "traceback {signature}: no frame in the repository {}; not healed",
                self.root.display()
            ));
            self.known.insert(signature, Known::Outside);
            return;
        };
        note(&format!(
            "traceback {signature} at {}:{}: queued for healing",
            site.file, site.line
        ));
        self.known
            .insert(signature.clone(), Known::Queued { again: 0 });
        self.queue.push(Item {
            signature,
            text: followed.text,
            site,
        });
    }

    /// The finding a traceback becomes, as the heal's scan maps it.
    fn locate(&mut self, followed: &Followed) -> Option<Site> {
        // Listed once per burst of tracebacks, not once per traceback.
        let fresh = self
            .files
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() < Duration::from_secs(2));
        if !fresh {
            match agency_scan::discover::discover(&self.root, &[], &self.excludes) {
                Ok(files) => self.files = Some((Instant::now(), files)),
                Err(e) => {
                    output::warn(&format!(
                        "cannot list the Python files of {}: {e}",
                        self.root.display()
                    ));
                    return None;
                }
            }
        }
        let files = self.files.as_ref().map(|(_, f)| f.as_slice())?;
        let root = &self.root;
        let read_lines = |file: &str| -> Option<Vec<String>> {
            let bytes = std::fs::read(root.join(file)).ok()?;
            Some(
                String::from_utf8_lossy(&bytes)
                    .lines()
                    .map(ToString::to_string)
                    .collect(),
            )
        };
        agency_scan::traceback::findings(
            std::slice::from_ref(&followed.traceback),
            files,
            &read_lines,
        )
        .into_iter()
        .next()
        .map(|f| Site {
            file: f.file,
            line: f.line,
            rule: f.rule,
        })
    }

    /// Starts a run of the queue, unless one runs, healing is stopped or the queue is empty.
    fn start_run(&mut self) {
        let control = agency_heal::control::Control::new(&self.home);
        if control.is_stopped() {
            if !self.stopped {
                let reason = control
                    .state()
                    .map_or_else(|| "stopped".to_string(), |s| s.reason);
                note(&format!(
                    "healing is stopped by `agency healing stop` ({reason}): no heal starts until `agency healing resume`; still watching"
                ));
                self.stopped = true;
            }
            return;
        }
        if self.stopped {
            self.stopped = false;
            note(&format!(
                "healing resumed; {} traceback(s) wait",
                self.queue.len()
            ));
        }
        if self.running.is_some()
            || self.queue.is_empty()
            || self.retry_at.is_some_and(|at| Instant::now() < at)
        {
            return;
        }
        self.retry_at = None;
        let items = std::mem::take(&mut self.queue);
        let text: String = items.iter().map(|i| i.text.as_str()).collect();
        if let Err(e) = self.write_batch(&text) {
            output::warn(&format!(
                "{e:#}; the run goes on, but `agency heal --resume` could not run it again"
            ));
        }
        let places: Vec<String> = items
            .iter()
            .map(|i| format!("{} at {}:{}", i.signature, i.site.file, i.site.line))
            .collect();
        note(&format!(
            "healing {} traceback(s): {}",
            items.len(),
            places.join("; ")
        ));
        for item in &items {
            let again = match self.known.get(&item.signature) {
                Some(Known::Queued { again }) => *again,
                _ => 0,
            };
            self.known
                .insert(item.signature.clone(), Known::Healing { again });
        }
        let (home, root, args) = (self.home.clone(), self.root.clone(), self.args.clone());
        let thread = std::thread::Builder::new()
            .name("heal".to_string())
            .spawn(move || crate::heal::heal_once(&home, &root, &args, Some(text)));
        match thread {
            Ok(thread) => {
                self.stats.runs += 1;
                self.running = Some(Running {
                    items,
                    started: Instant::now(),
                    thread,
                });
            }
            Err(e) => {
                output::warn(&format!(
                    "cannot start a heal run ({e}); its tracebacks are healed if they recur"
                ));
                for item in &items {
                    self.known.remove(&item.signature);
                }
            }
        }
    }

    fn write_batch(&self, text: &str) -> Result<()> {
        if let Some(dir) = self.batch.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        agency_fs::atomic_write(&self.batch, text.as_bytes())
            .with_context(|| format!("cannot write {}", self.batch.display()))
    }

    /// Removes the batch file, unless a run that failed left a journal naming it (for
    /// `agency heal --resume`).
    fn remove_batch(&self) {
        if !matches!(agency_heal::journal::interrupted(&self.root), Ok(None)) {
            return;
        }
        // Absent when no run happened; a leftover is harmless.
        let _ = std::fs::remove_file(&self.batch);
    }

    /// When the running run has ended: its report, its outcome per traceback.
    fn conclude_run(&mut self) -> Result<()> {
        if !self
            .running
            .as_ref()
            .is_some_and(|r| r.thread.is_finished())
        {
            return Ok(());
        }
        let Some(running) = self.running.take() else {
            return Ok(());
        };
        let seconds = running.started.elapsed().as_secs_f64();
        let result = running
            .thread
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the heal run panicked")));
        let error = match result {
            Ok((report, _)) => {
                if self.json {
                    // One report per line (NDJSON).
                    let line = serde_json::to_string(&report)?;
                    output::print_text(&format!("{line}\n"))?;
                }
                self.settle(running.items, &report, seconds);
                self.remove_batch();
                return Ok(());
            }
            Err(e) => e,
        };
        let busy = error
            .downcast_ref::<agency_heal::journal::JournalError>()
            .is_some_and(|e| matches!(e, agency_heal::journal::JournalError::Busy { .. }));
        let stopped = agency_heal::control::Control::new(&self.home).is_stopped();
        if busy || stopped {
            // Refused before it started: the tracebacks wait for the next run.
            output::warn(&format!(
                "{error:#}; {} traceback(s) wait{}",
                running.items.len(),
                if busy {
                    format!(" and are tried again in {} s", BUSY_RETRY.as_secs())
                } else {
                    String::new()
                }
            ));
            if busy {
                self.retry_at = Some(Instant::now() + BUSY_RETRY);
            }
            for item in &running.items {
                let again = match self.known.get(&item.signature) {
                    Some(Known::Healing { again }) => *again,
                    _ => 0,
                };
                self.known
                    .insert(item.signature.clone(), Known::Queued { again });
            }
            let mut items = running.items;
            items.append(&mut self.queue);
            self.queue = items;
            return Ok(());
        }
        output::warn(&format!(
            "the heal of {} traceback(s) failed: {error:#}; they are healed again if they recur",
            running.items.len()
        ));
        for item in &running.items {
            self.known.remove(&item.signature);
        }
        Ok(())
    }

    /// Says and remembers what the run did with each of its tracebacks.
    fn settle(&mut self, items: Vec<Item>, report: &HealReport, seconds: f64) {
        let at = agency_core::contract::format_rfc3339(unix_now());
        for item in items {
            let again = match self.known.get(&item.signature) {
                Some(Known::Healing { again }) => *again,
                _ => 0,
            };
            let during = if again > 0 {
                format!(" (seen {again} more time(s) during the heal)")
            } else {
                String::new()
            };
            let done = if let Some(heal) = find_heal(report, &item.site) {
                let f = &heal.finding;
                let how = if heal.strategy == "none" {
                    String::new()
                } else {
                    format!(" by {}", heal.strategy)
                };
                let why = heal
                    .reason
                    .as_ref()
                    .filter(|_| heal.status != "healed")
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default();
                note(&format!(
                    "{} {} at {}:{}{how}{why}{during}",
                    heal.status, item.signature, f.file, f.line
                ));
                if heal.status == "healed" {
                    self.stats.healed += 1;
                }
                Done {
                    status: heal.status.clone(),
                    reason: heal.reason.clone(),
                    file: f.file.clone(),
                    fingerprint: None,
                    at: at.clone(),
                    again: 0,
                }
            } else {
                note(&format!(
                    "skipped {} at {}:{}: the heal did not report it (left out by [scan] select/ignore, a suppression comment or the baseline){during}",
                    item.signature, item.site.file, item.site.line
                ));
                Done {
                    status: "skipped".to_string(),
                    reason: Some("left out by the scan's filters".to_string()),
                    file: item.site.file.clone(),
                    fingerprint: None,
                    at: at.clone(),
                    again: 0,
                }
            };
            let done = Done {
                fingerprint: fingerprint(&self.root.join(&done.file)),
                ..done
            };
            self.known.insert(item.signature, Known::Done(done));
        }
        let s = &report.summary;
        note(&format!(
            "heal run done in {seconds:.1} s: {} healed, {} rolled back, {} pending approval, {} flagged, {} skipped, {} failed",
            s.healed, s.rolled_back, s.pending_approval, s.flagged, s.skipped, s.failed
        ));
    }
}

/// The heal of a traceback's finding: same file, rule and line, or same file and rule (the
/// line moved under the heal's scan).
fn find_heal<'a>(report: &'a HealReport, site: &Site) -> Option<&'a Heal> {
    let same = |h: &&Heal| h.finding.file == site.file && h.finding.rule == site.rule;
    report
        .heals
        .iter()
        .filter(same)
        .find(|h| h.finding.line == site.line)
        .or_else(|| report.heals.iter().find(same))
}

/// What to say when a handled crash comes back while its file is unchanged.
fn recurrence(signature: &Signature, done: &Done) -> String {
    match done.status.as_str() {
        "healed" => format!(
            "traceback {signature} again, but its fix was written to {} at {}: the running program may predate the fix (restart it); not healing it again unless {} changes",
            done.file, done.at, done.file
        ),
        "pending_approval" => format!(
            "traceback {signature} again; its fix waits for approval since {} (`agency approvals list`); not healing it again unless {} changes",
            done.at, done.file
        ),
        status => format!(
            "traceback {signature} again; its heal at {} ended {status}{}; not healing it again unless {} changes",
            done.at,
            done.reason
                .as_ref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default(),
            done.file
        ),
    }
}

/// A cheap fingerprint of a file's bytes (it only has to tell a change), `None` when it cannot
/// be read.
fn fingerprint(path: &Path) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    Some(hasher.finish())
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
