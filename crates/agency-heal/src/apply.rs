//! Writing verified fixes to the user's tree. A file is written only when it still has the
//! bytes recorded when the run started; otherwise its heals are skipped as a conflict. Writes
//! are atomic and keep the file's mode. Nothing else ever touches the user's tree.
//!
//! The step is split so that it can be journaled and resumed ([`crate::journal`]): [`plan`]
//! lists the writes (file, sha256 before and after, the text), [`execute`] performs them one
//! file at a time, and [`settle`] turns the outcomes into statuses. A write whose file already
//! has the fixed bytes counts as done, so running a plan twice never applies a fix twice.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::workspace::sha256_hex;
use crate::{Attempt, Session, Status};

/// One file to write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedWrite {
    /// Relative to the repository root.
    pub file: String,
    /// The sha256 the file had when the run started: the only bytes the fix may replace.
    /// Empty for a file the run creates (a regression test): it must not exist yet.
    pub before_sha256: String,
    pub after_sha256: String,
    /// The verified text.
    pub after: String,
}

/// How one planned write ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", content = "reason", rename_all = "snake_case")]
pub enum WriteOutcome {
    /// Written now.
    Written,
    /// The file already had the fixed bytes (a resumed run whose write had landed).
    AlreadyWritten,
    /// Not written, with why (the file changed during the run, or the write failed).
    Skipped(String),
}

impl WriteOutcome {
    pub fn is_written(&self) -> bool {
        matches!(self, WriteOutcome::Written | WriteOutcome::AlreadyWritten)
    }
}

/// The writes for every file with a verified fix, in path order.
pub fn plan(session: &Session, attempts: &[Attempt]) -> Vec<PlannedWrite> {
    let mut files: BTreeSet<&str> = BTreeSet::new();
    for attempt in attempts {
        if attempt.status == Status::Verified
            && attempt.fixed_by.is_none()
            && let Some(file) = &attempt.file
        {
            files.insert(file);
        }
    }
    let mut writes: Vec<PlannedWrite> = files
        .into_iter()
        .filter_map(|file| {
            let before = session.workspace.recorded_hash(file)?;
            let after = session.fixed.get(file)?;
            Some(PlannedWrite {
                file: file.to_string(),
                before_sha256: before.to_string(),
                after_sha256: sha256_hex(after.as_bytes()),
                after: after.clone(),
            })
        })
        .collect();
    // The regression tests of kept runtime fixes: new files, after the fixes they test.
    for attempt in attempts {
        if attempt.status != Status::Verified || attempt.fixed_by.is_some() {
            continue;
        }
        let Some(test) = attempt.regression.test() else {
            continue;
        };
        let fixed = attempt
            .file
            .as_ref()
            .is_some_and(|f| writes.iter().any(|w| &w.file == f));
        if fixed && session.workspace.recorded_hash(&test.path).is_none() {
            writes.push(PlannedWrite {
                file: test.path.clone(),
                before_sha256: String::new(),
                after_sha256: sha256_hex(test.text.as_bytes()),
                after: test.text.clone(),
            });
        }
    }
    writes
}

/// Performs `writes` in `root`, calling `done` after each one (before the next starts).
pub fn execute(
    root: &Path,
    writes: &[PlannedWrite],
    done: &mut dyn FnMut(&PlannedWrite, &WriteOutcome),
) -> BTreeMap<String, WriteOutcome> {
    let mut outcomes = BTreeMap::new();
    for write in writes {
        let outcome = write_file(root, write);
        done(write, &outcome);
        outcomes.insert(write.file.clone(), outcome);
    }
    outcomes
}

/// Settles each verified attempt from the outcome of its file's write: `Healed`, or `Skipped`
/// with the reason (conflict, write error, or no write planned). Attempts removed by another
/// attempt's fix follow that attempt.
pub fn settle(attempts: &mut [Attempt], outcomes: &BTreeMap<String, WriteOutcome>) {
    for attempt in attempts.iter_mut() {
        if attempt.status != Status::Verified || attempt.fixed_by.is_some() {
            continue;
        }
        // A regression test not written is not claimed.
        if let Some(test) = attempt.regression.test() {
            match outcomes.get(&test.path) {
                Some(outcome) if outcome.is_written() => {}
                Some(WriteOutcome::Skipped(reason)) => {
                    attempt.regression = crate::Regression::None(format!(
                        "the regression test {} was not written: {reason}",
                        test.path
                    ));
                }
                _ => {
                    attempt.regression = crate::Regression::None(format!(
                        "the regression test {} was not written",
                        test.path
                    ));
                }
            }
        }
        match attempt.file.as_ref().and_then(|f| outcomes.get(f)) {
            Some(outcome) if outcome.is_written() => attempt.status = Status::Healed,
            Some(WriteOutcome::Skipped(reason)) => {
                attempt.status = Status::Skipped;
                attempt.reason = Some(reason.clone());
            }
            _ => {
                attempt.status = Status::Skipped;
                attempt.reason = Some("no verified text of its file was kept".into());
            }
        }
    }
    settle_followers(attempts);
}

/// Marks every verified attempt as not applied, with `reason` (the user declined, or the run
/// only previews).
pub fn decline(attempts: &mut [Attempt], reason: &str) {
    for attempt in attempts.iter_mut() {
        if attempt.status == Status::Verified {
            attempt.status = Status::Skipped;
            attempt.reason = Some(reason.to_string());
        }
    }
}

/// A finding removed by another attempt's fix ends as that attempt did.
fn settle_followers(attempts: &mut [Attempt]) {
    for i in 0..attempts.len() {
        let Some(by) = attempts[i].fixed_by else {
            continue;
        };
        if attempts[i].status != Status::Verified {
            continue;
        }
        let (status, reason) = (attempts[by].status, attempts[by].reason.clone());
        attempts[i].status = status;
        if status != Status::Healed {
            attempts[i].reason = reason;
        }
    }
}

/// Test hook for fault injection: with `AGENCY_TEST_ABORT_AFTER_WRITES=N`, the process aborts
/// (as a crash or kill -9 would end it) right after the N-th file of a heal is written.
const ABORT_AFTER_WRITES: &str = "AGENCY_TEST_ABORT_AFTER_WRITES";

/// Writes one file if the user's file still has the bytes recorded at the start.
fn write_file(root: &Path, write: &PlannedWrite) -> WriteOutcome {
    let rel = &write.file;
    let real = root.join(rel);
    let now = match std::fs::read(&real) {
        Ok(bytes) => sha256_hex(&bytes),
        // A new file (a regression test): created only where nothing is.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && write.before_sha256.is_empty() => {
            return match agency_fs::atomic_write(&real, write.after.as_bytes()) {
                Ok(()) => {
                    abort_if_asked();
                    WriteOutcome::Written
                }
                Err(e) => WriteOutcome::Skipped(format!("cannot create {rel}: {e}")),
            };
        }
        Err(e) => {
            return WriteOutcome::Skipped(format!("conflict: {rel} changed during the run ({e})"));
        }
    };
    if now == write.after_sha256 {
        return WriteOutcome::AlreadyWritten;
    }
    if write.before_sha256.is_empty() {
        return WriteOutcome::Skipped(format!(
            "conflict: {rel} appeared during the run; the new file was not written"
        ));
    }
    if now != write.before_sha256 {
        return WriteOutcome::Skipped(format!("conflict: {rel} changed during the run"));
    }
    // A read-only file says "do not change me": an atomic rename could replace it anyway.
    if std::fs::metadata(&real).is_ok_and(|m| m.permissions().readonly()) {
        return WriteOutcome::Skipped(format!(
            "{rel} is read-only: not written (make it writable and run agency heal again)"
        ));
    }
    match agency_fs::atomic_write(&real, write.after.as_bytes()) {
        Ok(()) => {
            abort_if_asked();
            WriteOutcome::Written
        }
        Err(e) => WriteOutcome::Skipped(format!("cannot write {rel}: {e}")),
    }
}

fn abort_if_asked() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static WRITES: AtomicUsize = AtomicUsize::new(0);
    let Some(limit) = std::env::var(ABORT_AFTER_WRITES)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    else {
        return;
    };
    if WRITES.fetch_add(1, Ordering::SeqCst) + 1 >= limit {
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_file(rel: &str, text: &str) -> PlannedWrite {
        PlannedWrite {
            file: rel.into(),
            before_sha256: String::new(),
            after_sha256: sha256_hex(text.as_bytes()),
            after: text.into(),
        }
    }

    #[test]
    fn a_new_file_is_created_once_and_never_over_a_file_that_appeared() {
        let dir = tempfile::tempdir().unwrap();
        let write = new_file("test_new.py", "def test_x():\n    pass\n");
        assert_eq!(write_file(dir.path(), &write), WriteOutcome::Written);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("test_new.py")).unwrap(),
            write.after
        );
        // Resumed: the file already has the bytes.
        assert_eq!(write_file(dir.path(), &write), WriteOutcome::AlreadyWritten);
        // Someone else's file at that path is never replaced.
        std::fs::write(dir.path().join("test_new.py"), "mine\n").unwrap();
        assert!(matches!(
            write_file(dir.path(), &write),
            WriteOutcome::Skipped(reason) if reason.contains("appeared during the run")
        ));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("test_new.py")).unwrap(),
            "mine\n"
        );
    }
}
