//! The run journal: what `agency heal --resume` continues from after a kill -9 or a power cut.
//!
//! `<repo>/.agency/heal/journal.jsonl`, one JSON object per line, each appended and synced
//! before the step it announces:
//! 1. `start`: the run id, its process and the options it ran with;
//! 2. `plan`: written after verification and consent, before the first write to the user's
//!    tree: every planned write (file, sha256 before and after, the verified text), and the
//!    report and audit records as they will be if every write lands;
//! 3. `applied`: one per file, after its write;
//! 4. the file is removed when the run has written its audit trail.
//!
//! A run that died before `plan` wrote nothing: resuming it starts it again. A run that died
//! after `plan` is finished from the journal: each planned write not yet `applied` is done if
//! the file still has its bytes from before the run (a file that already has the fixed bytes
//! counts as written, so no fix is ever applied twice), then the audit trail and the report
//! are completed. A torn last line (the kill landed mid-append) is ignored: the step it
//! announced had not started.
//!
//! `<repo>/.agency/heal/lock` is held for the whole run, so two heals of one repository never
//! overlap; the journal of a live run is never resumed.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use agency_core::contract::{AuditRecord, HealReport};
use serde::{Deserialize, Serialize};

use crate::apply::{PlannedWrite, WriteOutcome};

/// Why the journal or the lock could not be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(
        "another agency heal is running on {} (lock {}): wait for it to end, or stop it with `agency healing stop`",
        root.display(), lock.display()
    )]
    Busy { root: PathBuf, lock: PathBuf },
    #[error("cannot take the heal lock {}", path.display())]
    Lock {
        path: PathBuf,
        source: agency_fs::Error,
    },
    #[error("cannot write the heal journal {}: {source}; check that the directory is writable and has space", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the heal journal {}: {message}; if it is damaged, delete it (the run's written fixes stay)", path.display())]
    Read { path: PathBuf, message: String },
}

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Entry {
    Start {
        run_id: String,
        pid: u32,
        /// RFC 3339, UTC.
        started_at: String,
        /// The options of the run, as the CLI recorded them (to run it again the same way).
        options: serde_json::Value,
    },
    Plan {
        writes: Vec<PlannedWrite>,
        /// The report if every write lands.
        report: HealReport,
        /// The audit records if every write lands.
        audit: Vec<AuditRecord>,
    },
    Applied {
        file: String,
        outcome: WriteOutcome,
    },
}

/// The lock that keeps two heals of one repository apart.
#[derive(Debug)]
pub struct RepoLock {
    _lock: agency_fs::LockFile,
}

/// The heal state directory of a repository.
fn dir(root: &Path) -> PathBuf {
    root.join(".agency").join("heal")
}

/// The journal's path in a repository.
pub fn path(root: &Path) -> PathBuf {
    dir(root).join("journal.jsonl")
}

/// Takes the repository's heal lock, or says who holds it.
pub fn lock(root: &Path) -> Result<RepoLock, JournalError> {
    let path = dir(root).join("lock");
    match agency_fs::LockFile::try_acquire(&path) {
        Ok(lock) => Ok(RepoLock { _lock: lock }),
        Err(agency_fs::Error::Locked { .. }) => Err(JournalError::Busy {
            root: root.to_path_buf(),
            lock: path,
        }),
        Err(source) => Err(JournalError::Lock { path, source }),
    }
}

/// An open journal of a running heal.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
}

impl Journal {
    /// Starts a new journal (replacing an old one) with its `start` entry.
    pub fn create(root: &Path, start: &Entry) -> Result<Journal, JournalError> {
        let path = path(root);
        let wrap = |source| JournalError::Write {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir(root)).map_err(wrap)?;
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .map_err(wrap)?;
        agency_fs::sync_dir(&dir(root)).map_err(wrap)?;
        let mut journal = Journal { path, file };
        journal.append(start)?;
        Ok(journal)
    }

    /// Opens the journal of an interrupted run to continue it.
    pub fn reopen(root: &Path) -> Result<Journal, JournalError> {
        let path = path(root);
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|source| JournalError::Write {
                path: path.clone(),
                source,
            })?;
        Ok(Journal { path, file })
    }

    /// Appends one entry and syncs it to disk.
    pub fn append(&mut self, entry: &Entry) -> Result<(), JournalError> {
        let mut line = serde_json::to_vec(entry).expect("journal entries serialise");
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|()| self.file.sync_data())
            .map_err(|source| JournalError::Write {
                path: self.path.clone(),
                source,
            })
    }

    /// Ends the run: the journal is removed.
    pub fn finish(self) -> Result<(), JournalError> {
        drop(self.file);
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(JournalError::Write {
                path: self.path,
                source,
            }),
        }
    }
}

/// The state of an interrupted run, from its journal.
#[derive(Debug, Clone)]
pub struct Interrupted {
    pub run_id: String,
    pub pid: u32,
    pub started_at: String,
    pub options: serde_json::Value,
    /// `None`: it died before writing anything.
    pub plan: Option<Plan>,
    /// Files whose write finished, with how.
    pub applied: BTreeMap<String, WriteOutcome>,
}

/// The `plan` entry of an interrupted run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub writes: Vec<PlannedWrite>,
    pub report: HealReport,
    pub audit: Vec<AuditRecord>,
}

/// The interrupted run of a repository, if its journal is there. Call it with the lock held,
/// so that the journal cannot belong to a live run.
pub fn interrupted(root: &Path) -> Result<Option<Interrupted>, JournalError> {
    let path = path(root);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(JournalError::Read {
                path,
                message: e.to_string(),
            });
        }
    };
    let mut lines = text.split_inclusive('\n').peekable();
    let mut entries = Vec::new();
    while let Some(line) = lines.next() {
        match serde_json::from_str::<Entry>(line) {
            Ok(entry) => entries.push(entry),
            // A torn last line: its step never started.
            Err(_) if lines.peek().is_none() && !line.ends_with('\n') => break,
            Err(e) => {
                return Err(JournalError::Read {
                    path,
                    message: format!("line {}: {e}", entries.len() + 1),
                });
            }
        }
    }
    let mut entries = entries.into_iter();
    let Some(Entry::Start {
        run_id,
        pid,
        started_at,
        options,
    }) = entries.next()
    else {
        // Torn before its first entry was complete: the run had not started.
        return Ok(None);
    };
    let mut run = Interrupted {
        run_id,
        pid,
        started_at,
        options,
        plan: None,
        applied: BTreeMap::new(),
    };
    for entry in entries {
        match entry {
            Entry::Plan {
                writes,
                report,
                audit,
            } => {
                run.plan = Some(Plan {
                    writes,
                    report,
                    audit,
                });
            }
            Entry::Applied { file, outcome } => {
                run.applied.insert(file, outcome);
            }
            Entry::Start { .. } => {
                return Err(JournalError::Read {
                    path,
                    message: "a second start entry".into(),
                });
            }
        }
    }
    Ok(Some(run))
}

/// The report and audit records of a run once its writes ended: every heal planned as
/// `healed` in a file whose write did not land becomes `skipped` with the reason.
pub fn conclude(
    mut report: HealReport,
    mut audit: Vec<AuditRecord>,
    outcomes: &BTreeMap<String, WriteOutcome>,
) -> (HealReport, Vec<AuditRecord>) {
    let failed = |file: &str| match outcomes.get(file) {
        Some(WriteOutcome::Skipped(reason)) => Some(reason.clone()),
        Some(_) => None,
        None => Some("not written: the run ended before its write".to_string()),
    };
    for heal in &mut report.heals {
        if heal.status == "healed"
            && let Some(reason) = failed(&heal.finding.file)
        {
            heal.status = "skipped".into();
            heal.reason = Some(reason);
            report.summary.healed -= 1;
            report.summary.skipped += 1;
        }
    }
    for record in &mut audit {
        if record.status == "healed"
            && let Some(reason) = failed(&record.finding.file)
        {
            record.status = "skipped".into();
            record.reason = Some(reason);
        }
    }
    (report, audit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start() -> Entry {
        Entry::Start {
            run_id: "r1".into(),
            pid: 7,
            started_at: "2026-01-01T00:00:00Z".into(),
            options: serde_json::json!({"yes": true}),
        }
    }

    fn write(file: &str) -> PlannedWrite {
        PlannedWrite {
            file: file.into(),
            before_sha256: "b".into(),
            after_sha256: "a".into(),
            after: "x = 1\n".into(),
        }
    }

    fn plan() -> Entry {
        Entry::Plan {
            writes: vec![write("a.py"), write("b.py")],
            report: HealReport {
                version: 1,
                heals: Vec::new(),
                summary: agency_core::contract::HealSummary::default(),
            },
            audit: Vec::new(),
        }
    }

    #[test]
    fn a_journal_round_trips_and_is_removed_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        assert!(interrupted(dir.path()).unwrap().is_none());
        let mut journal = Journal::create(dir.path(), &start()).unwrap();
        let run = interrupted(dir.path()).unwrap().unwrap();
        assert_eq!(run.run_id, "r1");
        assert!(run.plan.is_none());
        journal.append(&plan()).unwrap();
        journal
            .append(&Entry::Applied {
                file: "a.py".into(),
                outcome: WriteOutcome::Written,
            })
            .unwrap();
        let run = interrupted(dir.path()).unwrap().unwrap();
        assert_eq!(run.plan.unwrap().writes.len(), 2);
        assert_eq!(run.applied.get("a.py"), Some(&WriteOutcome::Written));
        journal.finish().unwrap();
        assert!(interrupted(dir.path()).unwrap().is_none());
    }

    #[test]
    fn a_torn_last_line_is_ignored_and_a_torn_middle_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::create(dir.path(), &start()).unwrap();
        journal.append(&plan()).unwrap();
        drop(journal);
        let mut text = std::fs::read_to_string(path(dir.path())).unwrap();
        text.push_str("{\"event\":\"applied\",\"fi");
        std::fs::write(path(dir.path()), &text).unwrap();
        let run = interrupted(dir.path()).unwrap().unwrap();
        assert!(run.plan.is_some());
        assert!(run.applied.is_empty());

        text.push_str(
            "\n{\"event\":\"applied\",\"file\":\"a.py\",\"outcome\":{\"result\":\"written\"}}\n",
        );
        std::fs::write(path(dir.path()), &text).unwrap();
        let err = interrupted(dir.path()).unwrap_err();
        assert!(err.to_string().contains("line 3"), "{err}");
    }

    #[test]
    fn the_lock_keeps_a_second_heal_out() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock(dir.path()).unwrap();
        let err = lock(dir.path()).unwrap_err();
        assert!(matches!(err, JournalError::Busy { .. }), "{err}");
        drop(held);
        lock(dir.path()).unwrap();
    }

    #[test]
    fn heals_of_files_not_written_end_skipped() {
        let heal = |file: &str| agency_core::contract::Heal {
            finding: serde_json::from_value(serde_json::json!({
                "id": file, "category": "import", "rule": "F401", "tool": "ruff",
                "priority": "P1", "severity": "medium", "file": file, "line": 1, "column": 1,
                "end_line": 1, "end_column": 2, "message": "m", "sources": [], "snippet": "",
                "fix": {"available": true, "approval_required": false}
            }))
            .unwrap(),
            status: "healed".into(),
            strategy: "rule".into(),
            pattern_id: None,
            diff: String::new(),
            verification: agency_core::contract::HealVerification {
                tests: "passed".into(),
                duration_ms: 1,
            },
            reason: None,
            regression_test: None,
        };
        let report = HealReport {
            version: 1,
            heals: vec![heal("a.py"), heal("b.py"), heal("c.py")],
            summary: agency_core::contract::HealSummary {
                healed: 3,
                ..Default::default()
            },
        };
        let outcomes = BTreeMap::from([
            ("a.py".to_string(), WriteOutcome::AlreadyWritten),
            (
                "b.py".to_string(),
                WriteOutcome::Skipped("conflict: b.py changed during the run".into()),
            ),
        ]);
        let (report, _) = conclude(report, Vec::new(), &outcomes);
        let statuses: Vec<&str> = report.heals.iter().map(|h| h.status.as_str()).collect();
        assert_eq!(statuses, ["healed", "skipped", "skipped"]);
        assert_eq!(report.summary.healed, 1);
        assert_eq!(report.summary.skipped, 2);
    }
}
