//! The emergency stop: `agency healing stop | resume | status`, shared by every heal of this
//! user on the machine through agency's data directory.
//!
//! - `<home>/healing/stopped.json` exists while healing is stopped (who, when, why). A heal
//!   refuses to start while it exists, and a running heal checks it while its tests run (every
//!   20 ms) and before it writes anything: it kills its test processes, discards its in-flight
//!   fixes and ends with nothing written.
//! - `<home>/healing/runs/<pid>.json` exists while a heal runs (its repository, its start, and
//!   the process group of the tests it is running). `stop` kills those test groups itself, so
//!   tests stop within the 2 seconds even if the heal process is slow to notice; entries of
//!   processes that are gone are ignored and removed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// Why and since when healing is stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopState {
    /// Unix seconds.
    pub since: i64,
    pub reason: String,
    /// The process that stopped healing.
    pub by_pid: u32,
}

/// One running heal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInfo {
    pub pid: u32,
    pub repository: String,
    /// Unix seconds.
    pub started_at: i64,
    /// The process group of the tests it is running now, if any.
    pub test_group: Option<i32>,
}

/// What `stop` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StopReport {
    pub state: StopState,
    /// Heals that were running when the stop was requested.
    pub running: Vec<RunInfo>,
    /// Test process groups killed by the stop itself.
    pub killed_test_groups: usize,
    /// Heals still running after the grace period (their processes were told; they write
    /// nothing once they notice).
    pub still_running: Vec<RunInfo>,
}

/// The machine-wide healing switch and the registry of running heals.
#[derive(Debug, Clone)]
pub struct Control {
    dir: PathBuf,
}

/// How long `stop` waits for running heals to end.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

impl Control {
    /// The control files under `home` (agency's data directory).
    pub fn new(home: &Path) -> Self {
        Control {
            dir: home.join("healing"),
        }
    }

    fn stop_file(&self) -> PathBuf {
        self.dir.join("stopped.json")
    }

    fn runs_dir(&self) -> PathBuf {
        self.dir.join("runs")
    }

    /// The stop state, when healing is stopped. An unreadable stop file counts as stopped:
    /// the switch fails closed.
    pub fn state(&self) -> Option<StopState> {
        let bytes = std::fs::read(self.stop_file()).ok()?;
        Some(
            serde_json::from_slice(&bytes).unwrap_or_else(|_| StopState {
                since: 0,
                reason: "the stop file could not be read".to_string(),
                by_pid: 0,
            }),
        )
    }

    /// Healing is stopped (cheap: one `stat`).
    pub fn is_stopped(&self) -> bool {
        self.stop_file().exists()
    }

    /// Stops all healing: writes the switch, kills the test process groups of running heals,
    /// and waits up to [`STOP_GRACE`] for the heals to end.
    pub fn stop(&self, reason: &str) -> std::io::Result<StopReport> {
        std::fs::create_dir_all(&self.dir)?;
        let state = StopState {
            since: unix_now(),
            reason: reason.to_string(),
            by_pid: std::process::id(),
        };
        let bytes = serde_json::to_vec_pretty(&state).map_err(std::io::Error::other)?;
        agency_fs::atomic_write(&self.stop_file(), &bytes).map_err(std::io::Error::other)?;
        let running = self.running();
        let mut killed = 0;
        for run in &running {
            if let Some(group) = run.test_group
                && killpg(Pid::from_raw(group), Signal::SIGKILL).is_ok()
            {
                killed += 1;
            }
        }
        let deadline = Instant::now() + STOP_GRACE;
        let mut still_running = self.running();
        while !still_running.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            still_running = self.running();
        }
        Ok(StopReport {
            state,
            running,
            killed_test_groups: killed,
            still_running,
        })
    }

    /// Allows healing again; false when it was not stopped.
    pub fn resume(&self) -> std::io::Result<bool> {
        match std::fs::remove_file(self.stop_file()) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The heals running now (entries of processes that are gone are removed).
    pub fn running(&self) -> Vec<RunInfo> {
        let Ok(entries) = std::fs::read_dir(self.runs_dir()) else {
            return Vec::new();
        };
        let mut runs = Vec::new();
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            let Some(run) = std::fs::read(&path)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<RunInfo>(&bytes).ok())
            else {
                continue;
            };
            if process_alive(run.pid) {
                runs.push(run);
            } else {
                let _ = std::fs::remove_file(&path);
            }
        }
        runs.sort_by_key(|r| r.pid);
        runs
    }

    /// Registers this process as a running heal of `repository` until the guard is dropped.
    pub fn register(&self, repository: &Path) -> std::io::Result<RunGuard> {
        std::fs::create_dir_all(self.runs_dir())?;
        let info = RunInfo {
            pid: std::process::id(),
            repository: repository.display().to_string(),
            started_at: unix_now(),
            test_group: None,
        };
        let guard = RunGuard {
            path: self.runs_dir().join(format!("{}.json", info.pid)),
            info,
        };
        guard.write()?;
        Ok(guard)
    }
}

/// A registered running heal; dropping it deregisters.
#[derive(Debug)]
pub struct RunGuard {
    path: PathBuf,
    info: RunInfo,
}

impl RunGuard {
    fn write(&self) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(&self.info).map_err(std::io::Error::other)?;
        agency_fs::atomic_write(&self.path, &bytes).map_err(std::io::Error::other)
    }

    /// Records the process group of the tests this heal runs now (`None` when they ended), so
    /// that `stop` can kill them directly.
    pub fn set_test_group(&mut self, group: Option<i32>) {
        self.info.test_group = group;
        if let Err(e) = self.write() {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot record the running tests for `agency healing stop`");
        }
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The process groups led by children of this process: the test runs of this heal (each runs
/// as the leader of its own group).
pub fn child_test_groups() -> Vec<i32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut groups = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // After the parenthesised command name: state, ppid, pgrp.
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        let (Some(ppid), Some(pgrp)) = (
            fields.get(1).and_then(|f| f.parse::<u32>().ok()),
            fields.get(2).and_then(|f| f.parse::<u32>().ok()),
        ) else {
            continue;
        };
        if ppid == me && pgrp == pid {
            groups.push(pid as i32);
        }
    }
    groups.sort_unstable();
    groups
}

/// Kills process groups with SIGKILL; returns how many were still there.
pub fn kill_groups(groups: &[i32]) -> usize {
    groups
        .iter()
        .filter(|&&g| killpg(Pid::from_raw(g), Signal::SIGKILL).is_ok())
        .count()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The process exists (Linux `/proc`; a zombie counts as gone).
fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state is the field after the parenthesised command name.
        stat.rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::Command;

    #[test]
    fn stop_and_resume_flip_the_switch_and_say_why() {
        let home = tempfile::tempdir().unwrap();
        let control = Control::new(home.path());
        assert!(!control.is_stopped());
        assert_eq!(control.state(), None);
        let report = control.stop("tests are deleting files").unwrap();
        assert!(control.is_stopped());
        assert_eq!(report.state.reason, "tests are deleting files");
        assert_eq!(control.state(), Some(report.state));
        assert!(report.running.is_empty());
        assert!(control.resume().unwrap());
        assert!(!control.is_stopped());
        assert!(!control.resume().unwrap());
        // A damaged stop file still means stopped.
        std::fs::create_dir_all(home.path().join("healing")).unwrap();
        std::fs::write(home.path().join("healing/stopped.json"), "{").unwrap();
        assert!(control.is_stopped());
        assert_eq!(control.state().unwrap().since, 0);
    }

    #[test]
    fn running_heals_are_registered_until_dropped_and_dead_ones_are_forgotten() {
        let home = tempfile::tempdir().unwrap();
        let control = Control::new(home.path());
        let guard = control.register(Path::new("/repo")).unwrap();
        let running = control.running();
        assert_eq!(running.len(), 1);
        assert_eq!(running[0].pid, std::process::id());
        assert_eq!(running[0].repository, "/repo");
        drop(guard);
        assert!(control.running().is_empty());
        // An entry left by a process that died (kill -9) is ignored and removed.
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let stale = RunInfo {
            pid,
            repository: "/gone".into(),
            started_at: 0,
            test_group: None,
        };
        std::fs::write(
            home.path().join(format!("healing/runs/{pid}.json")),
            serde_json::to_vec(&stale).unwrap(),
        )
        .unwrap();
        assert!(control.running().is_empty());
        assert!(
            !home
                .path()
                .join(format!("healing/runs/{pid}.json"))
                .exists()
        );
    }

    #[test]
    fn finds_the_groups_its_children_lead() {
        let mut child = Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let group = child.id() as i32;
        assert!(child_test_groups().contains(&group));
        assert_eq!(kill_groups(&[group]), 1);
        assert_eq!(child.wait().unwrap().code(), None);
        assert!(!child_test_groups().contains(&group));
    }

    #[test]
    fn stop_kills_the_test_group_of_a_running_heal() {
        let home = tempfile::tempdir().unwrap();
        let control = Control::new(home.path());
        let mut guard = control.register(Path::new("/repo")).unwrap();
        // A long test run in its own process group, with a grandchild.
        let mut tests = Command::new("sh")
            .args(["-c", "sleep 30 & sleep 30"])
            .process_group(0)
            .spawn()
            .unwrap();
        let group = tests.id() as i32;
        guard.set_test_group(Some(group));
        let started = Instant::now();
        let report = control.stop("stop test").unwrap();
        assert_eq!(report.killed_test_groups, 1);
        // Killed by the signal, not ended on its own.
        assert_eq!(tests.wait().unwrap().code(), None);
        // The heal itself (this test) is still registered: it was told, and the report says so.
        assert_eq!(report.still_running.len(), 1);
        assert!(started.elapsed() < STOP_GRACE + Duration::from_secs(1));
        drop(guard);
    }
}
