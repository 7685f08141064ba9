//! `agency healing stop | resume | status`: the emergency stop of every heal this user runs on
//! the machine (`agency_heal::control`).

use std::fmt::Write as _;
use std::path::Path;

use agency_heal::control::{Control, RunInfo, StopState};
use anyhow::Context;
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::ExitStatus;
use crate::output;

#[derive(Debug, Subcommand)]
pub enum HealingCommand {
    /// Halt every running heal within 2 seconds (tests killed, nothing half-applied) and
    /// refuse new ones until `agency healing resume`.
    Stop(StopArgs),
    /// Allow heals again after a stop.
    Resume(JsonArgs),
    /// Whether healing is stopped, and the heals running now.
    Status(JsonArgs),
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Why, for the record and for whoever runs `agency healing status`.
    #[arg(long, default_value = "stopped by hand")]
    reason: String,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct JsonArgs {
    #[arg(long)]
    json: bool,
}

/// `agency healing status --json` (and the result of `stop` and `resume`).
#[derive(Debug, Serialize)]
struct StatusDoc {
    version: u32,
    stopped: bool,
    stop: Option<StopState>,
    running: Vec<RunInfo>,
    /// `stop` only: heals still running after the 2 s grace (they write nothing once they
    /// notice the stop).
    #[serde(skip_serializing_if = "Option::is_none")]
    still_running: Option<Vec<RunInfo>>,
    /// `stop` only: test process groups the stop killed itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    killed_test_groups: Option<usize>,
    /// Fixes waiting for a human (`agency approvals`).
    pending_approvals: Vec<crate::approvals::ApprovalDoc>,
}

pub fn run(home: &Path, command: &HealingCommand) -> anyhow::Result<ExitStatus> {
    let control = Control::new(home);
    let pending = crate::approvals::pending_docs(home);
    let (doc, json) = match command {
        HealingCommand::Stop(args) => {
            let report = control.stop(&args.reason).with_context(|| {
                format!(
                    "cannot write the stop switch under {}: check that the directory is writable",
                    home.join("healing").display()
                )
            })?;
            (
                StatusDoc {
                    version: 1,
                    stopped: true,
                    stop: Some(report.state),
                    running: report.running,
                    still_running: Some(report.still_running),
                    killed_test_groups: Some(report.killed_test_groups),
                    pending_approvals: pending,
                },
                args.json,
            )
        }
        HealingCommand::Resume(args) => {
            control.resume().with_context(|| {
                format!(
                    "cannot remove the stop switch {}",
                    home.join("healing/stopped.json").display()
                )
            })?;
            (status(&control, pending), args.json)
        }
        HealingCommand::Status(args) => (status(&control, pending), args.json),
    };
    if json {
        output::print_json(&doc)?;
    } else {
        output::print_text(&render(&doc))?;
    }
    Ok(ExitStatus::Success)
}

fn status(control: &Control, pending_approvals: Vec<crate::approvals::ApprovalDoc>) -> StatusDoc {
    let stop = control.state();
    StatusDoc {
        version: 1,
        stopped: stop.is_some(),
        stop,
        running: control.running(),
        still_running: None,
        killed_test_groups: None,
        pending_approvals,
    }
}

fn render(doc: &StatusDoc) -> String {
    let mut out = String::new();
    match &doc.stop {
        Some(stop) => {
            let _ = writeln!(
                out,
                "healing is STOPPED (since unix time {}, by pid {}): {}",
                stop.since, stop.by_pid, stop.reason
            );
            let _ = writeln!(
                out,
                "new heals refuse to start; run `agency healing resume` to allow them"
            );
        }
        None => {
            let _ = writeln!(out, "healing is allowed");
        }
    }
    if let Some(killed) = doc.killed_test_groups {
        let _ = writeln!(out, "killed {killed} running test run(s)");
    }
    if doc.running.is_empty() {
        let _ = writeln!(out, "no heal is running");
    } else {
        for run in &doc.running {
            let _ = writeln!(
                out,
                "running: pid {} on {} (since unix time {}){}",
                run.pid,
                run.repository,
                run.started_at,
                if run.test_group.is_some() {
                    ", tests running"
                } else {
                    ""
                }
            );
        }
    }
    if let Some(still) = doc.still_running.as_ref().filter(|s| !s.is_empty()) {
        let _ = writeln!(
            out,
            "{} heal(s) still ending after 2 s; they write nothing now that healing is stopped",
            still.len()
        );
    }
    if doc.pending_approvals.is_empty() {
        let _ = writeln!(out, "no fix is waiting for approval");
    } else {
        let _ = writeln!(
            out,
            "{} fix(es) waiting for approval (`agency approvals list`):",
            doc.pending_approvals.len()
        );
        for a in &doc.pending_approvals {
            let _ = writeln!(
                out,
                "  {} {} {}:{} in {}",
                agency_heal::approvals::short(&a.id),
                a.finding.rule,
                a.finding.file,
                a.finding.line,
                a.repository.display()
            );
        }
    }
    out
}

/// The stop switch around one heal run: refuses to start while healing is stopped, registers
/// the run, and watches the switch from a thread. On a stop it kills the run's test process
/// groups at once, waits for a write to the user's tree in progress (each file is written
/// atomically), removes the private copy and ends the process with exit 2: nothing more is
/// written, and nothing is half-written.
pub struct RunWatch {
    gate: std::sync::Arc<std::sync::Mutex<()>>,
    copy: std::sync::Arc<std::sync::Mutex<Option<std::path::PathBuf>>>,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl RunWatch {
    pub fn start(home: &Path, repository: &Path) -> anyhow::Result<Self> {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};

        let control = Control::new(home);
        if let Some(state) = control.state() {
            anyhow::bail!(
                "healing is stopped ({}; since unix time {}): run `agency healing resume` to allow heals again",
                state.reason,
                state.since
            );
        }
        let mut guard = control.register(repository).with_context(|| {
            format!(
                "cannot register this heal under {}",
                home.join("healing").display()
            )
        })?;
        let gate = Arc::new(Mutex::new(()));
        let copy: Arc<Mutex<Option<std::path::PathBuf>>> = Arc::new(Mutex::new(None));
        let done = Arc::new(AtomicBool::new(false));
        let watch = RunWatch {
            gate: Arc::clone(&gate),
            copy: Arc::clone(&copy),
            done: Arc::clone(&done),
        };
        let interrupted = interrupted_flag();
        std::thread::spawn(move || {
            let mut recorded: Option<i32> = None;
            while !done.load(Ordering::Acquire) {
                let groups = agency_heal::control::child_test_groups();
                if interrupted.load(Ordering::Acquire) {
                    // Ctrl-C or SIGTERM: the tests run in their own process groups, so the
                    // terminal's signal never reaches them; kill them, then end as a stop does.
                    agency_heal::control::kill_groups(&groups);
                    let _writing = gate.lock();
                    let _quiet = agency_heal::patterns::quiesce();
                    if let Ok(copy) = copy.lock()
                        && let Some(dir) = copy.as_ref()
                    {
                        let _ = std::fs::remove_dir_all(dir);
                    }
                    drop(guard);
                    eprintln!(
                        "agency: error: interrupted; the running tests were killed and nothing more was written (a run whose fixes were being written is finished by `agency heal --resume`)"
                    );
                    std::process::exit(130);
                }
                if control.is_stopped() {
                    agency_heal::control::kill_groups(&groups);
                    // A write to the user's tree in progress finishes first, and the pattern
                    // store's model (ONNX Runtime crashes if the process ends while it works).
                    let _writing = gate.lock();
                    let _quiet = agency_heal::patterns::quiesce();
                    let reason = control
                        .state()
                        .map_or_else(|| "stopped".to_string(), |s| s.reason);
                    if let Ok(copy) = copy.lock()
                        && let Some(dir) = copy.as_ref()
                    {
                        let _ = std::fs::remove_dir_all(dir);
                    }
                    drop(guard);
                    eprintln!(
                        "agency: error: healing was stopped by `agency healing stop` ({reason}); the running tests were killed and nothing more was written"
                    );
                    std::process::exit(2);
                }
                let current = groups.first().copied();
                if current != recorded {
                    guard.set_test_group(current);
                    recorded = current;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        });
        Ok(watch)
    }

    /// The private copy to remove if the run is stopped.
    pub fn set_copy(&self, dir: &Path) {
        if let Ok(mut copy) = self.copy.lock() {
            *copy = Some(dir.to_path_buf());
        }
    }

    /// Held while writing to the user's tree: a stop waits for it.
    pub fn writing(&self) -> std::sync::MutexGuard<'_, ()> {
        self.gate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The process's Ctrl-C/SIGTERM flag, its handlers installed on first use: once per process,
/// however many runs a `--watch-log` makes.
fn interrupted_flag() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    static FLAG: std::sync::OnceLock<std::sync::Arc<std::sync::atomic::AtomicBool>> =
        std::sync::OnceLock::new();
    std::sync::Arc::clone(FLAG.get_or_init(|| {
        let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        watch_signals(std::sync::Arc::clone(&flag));
        flag
    }))
}

/// Sets `flag` on SIGINT or SIGTERM. The handlers are registered before this returns (from
/// then on the signals no longer end the process at once: the watcher ends it after cleaning
/// up); a thread waits for them.
fn watch_signals(flag: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    else {
        return;
    };
    let streams = {
        let _context = runtime.enter();
        signal(SignalKind::interrupt()).and_then(|i| Ok((i, signal(SignalKind::terminate())?)))
    };
    let Ok((mut interrupt, mut terminate)) = streams else {
        return;
    };
    std::thread::spawn(move || {
        runtime.block_on(async {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            flag.store(true, std::sync::atomic::Ordering::Release);
        });
    });
}

impl Drop for RunWatch {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::Release);
    }
}
