//! Writing verified fixes to the user's tree. A file is written only when it still has the
//! bytes recorded when the run started; otherwise its heals are skipped as a conflict. Writes
//! are atomic and keep the file's mode. Nothing else ever touches the user's tree.

use std::collections::BTreeMap;

use crate::workspace::sha256_hex;
use crate::{Attempt, Session, Status};

/// Writes every file with a verified fix from the copy to the user's tree and settles each
/// attempt's status: `Healed`, or `Skipped` with the reason (conflict, write error). Attempts
/// removed by another attempt's fix follow that attempt.
pub fn apply(session: &Session, attempts: &mut [Attempt]) {
    let mut files: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, attempt) in attempts.iter().enumerate() {
        if attempt.status == Status::Verified
            && attempt.fixed_by.is_none()
            && let Some(file) = &attempt.file
        {
            files.entry(file.clone()).or_default().push(i);
        }
    }
    for (file, indices) in files {
        let outcome = write_file(session, &file);
        for i in indices {
            match &outcome {
                Ok(()) => {
                    attempts[i].status = Status::Healed;
                }
                Err(reason) => {
                    attempts[i].status = Status::Skipped;
                    attempts[i].reason = Some(reason.clone());
                }
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

/// Copies one file from the copy to the user's tree if the user's file is unchanged.
fn write_file(session: &Session, rel: &str) -> Result<(), String> {
    let real = session.workspace.source().join(rel);
    let Some(recorded) = session.workspace.recorded_hash(rel) else {
        return Err(format!("{rel} was not in the working tree at the start"));
    };
    let now = std::fs::read(&real)
        .map_err(|e| format!("conflict: {rel} changed during the run ({e})"))?;
    if sha256_hex(&now) != recorded {
        return Err(format!("conflict: {rel} changed during the run"));
    }
    let Some(fixed) = session.fixed.get(rel) else {
        return Err(format!("no verified text of {rel} was kept"));
    };
    agency_fs::atomic_write(&real, fixed.as_bytes()).map_err(|e| e.to_string())
}
