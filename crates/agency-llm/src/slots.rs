//! The machine-wide limit on requests in flight: `max_concurrent` lock files under
//! `<data dir>/llm/slots/`, each held (an exclusive advisory lock, released by the kernel when
//! the holder exits) for the duration of one request. Locks are per open file, so threads of
//! one process contend exactly like processes do.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agency_fs::LockFile;

use crate::config::MAX_CONCURRENT_LIMIT;
use crate::{Error, Result};

/// The directory, relative to the data directory.
pub const SLOTS_DIR: &str = "llm/slots";

/// A held slot; dropping it (on success, error or unwinding) frees it.
#[derive(Debug)]
pub struct Slot {
    lock: LockFile,
}

impl Slot {
    /// The slot's lock file.
    pub fn path(&self) -> &Path {
        self.lock.path()
    }
}

/// Takes one of the first `max_concurrent` slots (at most [`MAX_CONCURRENT_LIMIT`]) under
/// `<data_dir>/llm/slots/`, polling while all are busy, for at most `wait`.
pub fn acquire_slot(data_dir: &Path, max_concurrent: usize, wait: Duration) -> Result<Slot> {
    let dir = data_dir.join(SLOTS_DIR);
    let n = max_concurrent.clamp(1, MAX_CONCURRENT_LIMIT);
    let paths: Vec<PathBuf> = (0..n).map(|i| dir.join(format!("slot-{i}.lock"))).collect();
    let started = Instant::now();
    // Start from a slot that depends on the process and thread, so that waiters do not all
    // hammer slot 0 first.
    let offset = (std::process::id() as usize).wrapping_add(thread_seed()) % n;
    let mut pause = Duration::from_millis(5);
    loop {
        for i in 0..n {
            match LockFile::try_acquire(&paths[(offset + i) % n]) {
                Ok(lock) => return Ok(Slot { lock }),
                Err(agency_fs::Error::Locked { .. }) => {}
                Err(e) => return Err(Error::Slot(e)),
            }
        }
        let waited = started.elapsed();
        if waited >= wait {
            return Err(Error::SlotsBusy {
                dir,
                max_concurrent: n,
                waited_s: waited.as_secs(),
            });
        }
        std::thread::sleep(pause.min(wait.saturating_sub(waited)));
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// A small number that differs between threads.
fn thread_seed() -> usize {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    std::thread::current().id().hash(&mut hasher);
    hasher.finish() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_n_slots_and_a_freed_one_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        let held: Vec<Slot> = (0..3)
            .map(|_| acquire_slot(dir.path(), 3, Duration::ZERO).unwrap())
            .collect();
        let mut paths: Vec<_> = held.iter().map(|s| s.path().to_path_buf()).collect();
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), 3, "three distinct slots");
        let err = acquire_slot(dir.path(), 3, Duration::from_millis(20)).unwrap_err();
        assert!(
            matches!(
                err,
                Error::SlotsBusy {
                    max_concurrent: 3,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("llm/slots"), "{err}");
        let freed = held[1].path().to_path_buf();
        drop(held);
        let again = acquire_slot(dir.path(), 3, Duration::ZERO).unwrap();
        assert!(again.path().starts_with(dir.path().join(SLOTS_DIR)));
        assert!(freed.exists());
    }

    #[test]
    fn the_limit_caps_a_larger_request() {
        let dir = tempfile::tempdir().unwrap();
        let held: Vec<Slot> = (0..MAX_CONCURRENT_LIMIT)
            .map(|_| acquire_slot(dir.path(), 50, Duration::ZERO).unwrap())
            .collect();
        assert!(acquire_slot(dir.path(), 50, Duration::ZERO).is_err());
        drop(held);
    }
}
