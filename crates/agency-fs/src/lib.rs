//! Durable file primitives shared by every crate that writes: atomic replacement of a file and
//! advisory locks on a directory.
//!
//! Nothing here knows about patterns or heals; it only guarantees that a reader sees either the
//! old bytes or the new bytes of a file, never a mix, even after a crash.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use fs4::fs_std::FileExt;

#[cfg(feature = "sqlite")]
pub mod sqlite;

/// Errors from file primitives. Each variant names the path it concerns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot lock {path}: {source}")]
    Lock { path: PathBuf, source: io::Error },
    #[error("{path} is locked by another agency process; wait for it to finish")]
    Locked { path: PathBuf },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Replaces `path` with `bytes` atomically: a temporary file in the same directory is written,
/// flushed to disk, given the original file's permissions, renamed over `path`, and the directory
/// is synced so that the rename itself survives a crash.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let wrap = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = parent_dir(path);
    fs::create_dir_all(dir).map_err(wrap)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".agency-tmp-")
        .tempfile_in(dir)
        .map_err(wrap)?;
    tmp.write_all(bytes).map_err(wrap)?;
    // Temp files start 0600; keep the mode the user gave the original file.
    if let Ok(meta) = fs::metadata(path) {
        fs::set_permissions(tmp.path(), meta.permissions()).map_err(wrap)?;
    }
    tmp.as_file().sync_all().map_err(wrap)?;
    tmp.persist(path).map_err(|e| wrap(e.error))?;
    sync_dir(dir).map_err(wrap)?;
    Ok(())
}

/// Flushes a directory entry list to disk, so that a rename or a new file in it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// An exclusive advisory lock held on a file for as long as the value lives.
#[derive(Debug)]
pub struct LockFile {
    file: File,
    path: PathBuf,
}

impl LockFile {
    /// Takes the lock without waiting; [`Error::Locked`] if another process holds it.
    pub fn try_acquire(path: &Path) -> Result<Self> {
        let wrap = |source| Error::Lock {
            path: path.to_path_buf(),
            source,
        };
        fs::create_dir_all(parent_dir(path)).map_err(wrap)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(wrap)?;
        match FileExt::try_lock_exclusive(&file) {
            Ok(true) => Ok(Self {
                file,
                path: path.to_path_buf(),
            }),
            Ok(false) => Err(Error::Locked {
                path: path.to_path_buf(),
            }),
            Err(source) => Err(wrap(source)),
        }
    }

    /// The locked file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        // Closing the descriptor releases the lock too; unlocking first only makes it prompt.
        let _ = FileExt::unlock(&self.file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn atomic_write_replaces_content_and_keeps_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.py");
        fs::write(&path, b"old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        atomic_write(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o755
        );
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(".agency-tmp-"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn atomic_write_creates_missing_directories() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x/y/z.txt");
        atomic_write(&path, b"hi").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"hi");
    }

    #[test]
    fn second_lock_is_refused_until_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.lock");
        let first = LockFile::try_acquire(&path).unwrap();
        assert!(matches!(
            LockFile::try_acquire(&path),
            Err(Error::Locked { .. })
        ));
        drop(first);
        LockFile::try_acquire(&path).unwrap();
    }
}
