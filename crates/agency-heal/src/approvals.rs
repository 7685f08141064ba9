//! Fixes that wait for a human: `agency approvals list | show | approve | reject`.
//!
//! A heal run verifies a fix that needs approval (every logic fix, high-severity security
//! fixes, performance changes over 10%) in its private copy like any other, then keeps it
//! here instead of writing it: `<home>/healing/approvals/<id>.json`, one file per fix, with
//! the repository, the file's sha256 the fix applies to and the fixed text. Approving checks
//! that the file still has those bytes, verifies the fix again in a fresh copy (parse, re-scan,
//! the suite), and only then writes it, atomically. Rejecting removes it; the caller records a
//! failure for the pattern that proposed it. An id is a hash of the repository, the file and
//! both texts, so a re-run that proposes the same fix replaces its record instead of adding one.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use agency_core::contract::Finding;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::workspace::sha256_hex;
use crate::{Attempt, HealSettings, Progress, Session, Status};

/// Version of the record format on disk.
pub const FORMAT_VERSION: u32 = 1;

/// How a pending fix was verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalVerification {
    /// `passed|failed|skipped`, as in heal reports.
    pub tests: String,
    pub duration_ms: u64,
    /// The verify command, when one ran.
    pub command: Option<String>,
}

/// One fix waiting for a human.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    pub format: u32,
    pub id: String,
    /// The repository root, absolute.
    pub repository: PathBuf,
    pub finding: Finding,
    /// The file the fix changes, relative to the repository.
    pub file: String,
    pub strategy: String,
    pub pattern_id: Option<String>,
    pub confidence: Option<f64>,
    /// The fix as a unified diff.
    pub diff: String,
    pub verification: ApprovalVerification,
    /// Why it needs a human.
    pub reason: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// The heal run that proposed it.
    pub run_id: String,
    /// The sha256 the file must still have for the fix to apply.
    pub before_sha256: String,
    /// The file's text with the fix.
    pub after: String,
}

/// Why an approval could not be read, written or found.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("no pending approval {id}: run `agency approvals list` to see the pending ones")]
    NotFound { id: String },
    #[error(
        "the approval id `{prefix}` is ambiguous ({count} pending approvals start with it): give more of the id"
    )]
    Ambiguous { prefix: String, count: usize },
    #[error("cannot read the approval {}: {message}; delete the file if it is damaged", path.display())]
    Read { path: PathBuf, message: String },
    #[error("cannot write the approval {}", path.display())]
    Write {
        path: PathBuf,
        source: agency_fs::Error,
    },
    #[error("cannot remove the approval {}", path.display())]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The pending approvals of this user on the machine.
#[derive(Debug, Clone)]
pub struct Approvals {
    dir: PathBuf,
}

impl Approvals {
    /// The approvals under `home` (agency's data directory).
    pub fn new(home: &Path) -> Self {
        Approvals {
            dir: home.join("healing").join("approvals"),
        }
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Every pending approval, oldest first. Unreadable records are returned as errors beside
    /// the good ones, so that one damaged file never hides the others.
    pub fn list(&self) -> (Vec<Approval>, Vec<ApprovalError>) {
        let mut good = Vec::new();
        let mut bad = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return (good, bad);
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match read(&path) {
                Ok(approval) => good.push(approval),
                Err(e) => bad.push(e),
            }
        }
        good.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
        (good, bad)
    }

    /// The approval whose id is `id` or starts with it (at least 4 characters).
    pub fn get(&self, id: &str) -> Result<Approval, ApprovalError> {
        let exact = self.path(id);
        if is_id(id) && exact.is_file() {
            return read(&exact);
        }
        let (all, _) = self.list();
        let matches: Vec<Approval> = all
            .into_iter()
            .filter(|a| id.len() >= 4 && a.id.starts_with(id))
            .collect();
        match matches.len() {
            0 => Err(ApprovalError::NotFound { id: id.to_string() }),
            1 => Ok(matches.into_iter().next().expect("one match")),
            count => Err(ApprovalError::Ambiguous {
                prefix: id.to_string(),
                count,
            }),
        }
    }

    /// Stores an approval (replacing one with the same id).
    pub fn put(&self, approval: &Approval) -> Result<(), ApprovalError> {
        let path = self.path(&approval.id);
        let mut bytes = serde_json::to_vec_pretty(approval)
            .expect("an approval serialises: strings and numbers");
        bytes.push(b'\n');
        agency_fs::atomic_write(&path, &bytes)
            .map_err(|source| ApprovalError::Write { path, source })
    }

    /// Removes an approval once it was approved or rejected.
    pub fn remove(&self, id: &str) -> Result<(), ApprovalError> {
        let path = self.path(id);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(ApprovalError::Remove { path, source }),
        }
    }

    /// Records every `PendingApproval` attempt of a run; returns their ids in attempt order.
    pub fn record_run(
        &self,
        root: &Path,
        run_id: &str,
        session: &Session,
        attempts: &mut [Attempt],
    ) -> Result<Vec<String>, ApprovalError> {
        let created_at = now_rfc3339();
        let mut ids = Vec::new();
        for attempt in attempts.iter_mut() {
            if attempt.status != Status::PendingApproval {
                continue;
            }
            let Some(proposal) = &attempt.proposal else {
                continue;
            };
            let suite = attempt.verification.suite.as_ref();
            let approval = Approval {
                format: FORMAT_VERSION,
                id: approval_id(root, &proposal.file, &proposal.before, &proposal.after),
                repository: root.to_path_buf(),
                finding: attempt.finding.clone(),
                file: proposal.file.clone(),
                strategy: attempt.strategy.map_or("none", |s| s.as_str()).to_string(),
                pattern_id: attempt.pattern.as_ref().map(|p| p.id.clone()),
                confidence: attempt.pattern.as_ref().map(|p| p.confidence),
                diff: attempt.diff.clone(),
                verification: ApprovalVerification {
                    tests: attempt.verification.tests.as_str().to_string(),
                    duration_ms: attempt.verification.duration_ms,
                    command: suite
                        .map(|s| s.command.clone())
                        .or_else(|| session.verify.as_ref().map(crate::VerifyCommand::display)),
                },
                reason: proposal.reason.clone(),
                created_at: created_at.clone(),
                run_id: run_id.to_string(),
                before_sha256: sha256_hex(proposal.before.as_bytes()),
                after: proposal.after.clone(),
            };
            self.put(&approval)?;
            attempt.reason = Some(format!(
                "{}; approve with `agency approvals approve {}`",
                proposal.reason,
                short(&approval.id)
            ));
            ids.push(approval.id);
        }
        Ok(ids)
    }
}

/// The first 12 characters of an id: what people type.
pub fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn is_id(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit())
}

fn read(path: &Path) -> Result<Approval, ApprovalError> {
    let bytes = std::fs::read(path).map_err(|e| ApprovalError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let approval: Approval = serde_json::from_slice(&bytes).map_err(|e| ApprovalError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    if approval.format != FORMAT_VERSION {
        return Err(ApprovalError::Read {
            path: path.to_path_buf(),
            message: format!(
                "format {} is not the supported {FORMAT_VERSION}",
                approval.format
            ),
        });
    }
    Ok(approval)
}

fn approval_id(root: &Path, file: &str, before: &str, after: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [
        root.to_string_lossy().as_bytes(),
        file.as_bytes(),
        before.as_bytes(),
        after.as_bytes(),
    ] {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    agency_core::pattern::hex(&hasher.finalize()[..16])
}

fn now_rfc3339() -> String {
    agency_core::contract::format_rfc3339(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
    )
}

/// What approving a fix came to.
#[derive(Debug)]
pub enum Approved {
    /// Re-verified and written.
    Applied { attempt: Attempt, suite_runs: usize },
    /// The file changed since the fix was proposed: nothing written.
    Conflict { reason: String },
    /// Verification failed this time: nothing written.
    Rejected { attempt: Attempt, suite_runs: usize },
}

/// Re-verifies `approval` in a fresh private copy of its repository and writes it if it
/// passes and the file is still unchanged. `settings` are the repository's heal settings.
pub fn approve(
    settings: &HealSettings,
    approval: &Approval,
    progress: &dyn Fn(Progress),
) -> crate::Result<Approved> {
    let real = approval.repository.join(&approval.file);
    let unchanged = |what: &str| -> Option<String> {
        match std::fs::read(&real) {
            Ok(bytes) if sha256_hex(&bytes) == approval.before_sha256 => None,
            Ok(_) => Some(format!(
                "conflict: {} changed {what}; nothing written. Run `agency heal` again for a fresh proposal",
                approval.file
            )),
            Err(e) => Some(format!(
                "conflict: cannot read {} ({e}); nothing written",
                approval.file
            )),
        }
    };
    if let Some(reason) = unchanged("since the fix was proposed") {
        return Ok(Approved::Conflict { reason });
    }
    let mut session = crate::start(settings, progress)?;
    let mut attempt = crate::verify::reverify(
        &mut session,
        settings,
        &approval.file,
        &approval.after,
        &approval.finding,
        progress,
    );
    let suite_runs = session.suite_runs;
    if attempt.status != Status::Verified {
        return Ok(Approved::Rejected {
            attempt,
            suite_runs,
        });
    }
    if let Some(reason) = unchanged("while the fix was verified again") {
        return Ok(Approved::Conflict { reason });
    }
    match agency_fs::atomic_write(&real, approval.after.as_bytes()) {
        Ok(()) => {
            attempt.status = Status::Healed;
            attempt.reason = Some(format!("approved: {}", approval.reason));
            Ok(Approved::Applied {
                attempt,
                suite_runs,
            })
        }
        Err(e) => {
            attempt.status = Status::Failed;
            attempt.reason = Some(format!("cannot write {}: {e}", approval.file));
            Ok(Approved::Rejected {
                attempt,
                suite_runs,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(id: &str, created_at: &str) -> Approval {
        Approval {
            format: FORMAT_VERSION,
            id: id.into(),
            repository: PathBuf::from("/repo"),
            finding: serde_json::from_value(serde_json::json!({
                "id": "f1", "category": "logic", "rule": "AGY401", "tool": "agency",
                "priority": "P2", "severity": "medium", "file": "a.py", "line": 1, "column": 1,
                "end_line": 1, "end_column": 2, "message": "m", "sources": [], "snippet": "",
                "fix": {"available": true, "approval_required": true}
            }))
            .unwrap(),
            file: "a.py".into(),
            strategy: "rule".into(),
            pattern_id: None,
            confidence: None,
            diff: "-a\n+b\n".into(),
            verification: ApprovalVerification {
                tests: "passed".into(),
                duration_ms: 5,
                command: None,
            },
            reason: "r".into(),
            created_at: created_at.into(),
            run_id: "run".into(),
            before_sha256: sha256_hex(b"a\n"),
            after: "b\n".into(),
        }
    }

    #[test]
    fn put_list_get_by_prefix_and_remove() {
        let home = tempfile::tempdir().unwrap();
        let store = Approvals::new(home.path());
        assert!(store.list().0.is_empty());
        store
            .put(&sample("abcdef01", "2026-01-02T00:00:00Z"))
            .unwrap();
        store
            .put(&sample("abcd9999", "2026-01-01T00:00:00Z"))
            .unwrap();
        let (all, bad) = store.list();
        assert!(bad.is_empty());
        assert_eq!(
            all.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
            ["abcd9999", "abcdef01"]
        );
        assert_eq!(store.get("abcdef").unwrap().id, "abcdef01");
        assert!(matches!(
            store.get("abcd"),
            Err(ApprovalError::Ambiguous { count: 2, .. })
        ));
        assert!(matches!(
            store.get("abc"),
            Err(ApprovalError::NotFound { .. })
        ));
        store.remove("abcdef01").unwrap();
        store.remove("abcdef01").unwrap();
        assert_eq!(store.list().0.len(), 1);
    }

    #[test]
    fn a_damaged_record_is_reported_and_hides_nothing() {
        let home = tempfile::tempdir().unwrap();
        let store = Approvals::new(home.path());
        store
            .put(&sample("aaaa1111", "2026-01-01T00:00:00Z"))
            .unwrap();
        std::fs::write(store.dir.join("bbbb2222.json"), b"{ not json").unwrap();
        let (good, bad) = store.list();
        assert_eq!(good.len(), 1);
        assert_eq!(bad.len(), 1);
        assert!(bad[0].to_string().contains("bbbb2222.json"), "{}", bad[0]);
    }

    #[test]
    fn ids_depend_on_every_part() {
        let a = approval_id(Path::new("/r"), "a.py", "x", "y");
        assert_eq!(a.len(), 32);
        assert_ne!(a, approval_id(Path::new("/r"), "a.py", "x", "z"));
        assert_ne!(a, approval_id(Path::new("/s"), "a.py", "x", "y"));
        // Length-prefixed: moving a byte between parts changes the id.
        assert_ne!(
            approval_id(Path::new("/r"), "ab", "c", "d"),
            approval_id(Path::new("/r"), "a", "bc", "d")
        );
    }
}
