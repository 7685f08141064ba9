//! The private copy of the working tree where every fix is applied and verified. It holds the
//! files git would show (tracked and untracked, not ignored), as they are on disk, uncommitted
//! changes included; without git, every file but `.git`, `.agency`, virtual environments and
//! `__pycache__`. Modes are kept; symlinks are copied as links, never followed.
//!
//! The sha256 of every regular file at the start of the run (the snapshot) decides later
//! whether a verified fix may be written to the user's tree: only onto unchanged bytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// The copy and the snapshot of the user's tree.
#[derive(Debug)]
pub struct Workspace {
    /// The user's repository.
    source: PathBuf,
    dir: tempfile::TempDir,
    /// Relative path → sha256 (hex) of each regular file at the start.
    snapshot: BTreeMap<String, String>,
}

impl Workspace {
    /// Copies the working tree of `root` to a new temporary directory.
    pub fn create(root: &Path) -> Result<Workspace> {
        let dir = tempfile::Builder::new()
            .prefix("agency-heal-")
            .tempdir()
            .map_err(|source| Error::Copy {
                path: std::env::temp_dir(),
                source,
            })?;
        let files = match git_files(root)? {
            Some(files) => files,
            None => walk_files(root)?,
        };
        let mut snapshot = BTreeMap::new();
        for rel in files {
            let from = root.join(&rel);
            let to = dir.path().join(&rel);
            let Ok(meta) = std::fs::symlink_metadata(&from) else {
                // Deleted in the working tree but still in the index: not on disk, not copied.
                continue;
            };
            let copy_err = |source| Error::Copy {
                path: to.clone(),
                source,
            };
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).map_err(copy_err)?;
            }
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&from).map_err(|source| Error::Read {
                    path: from.clone(),
                    source,
                })?;
                std::os::unix::fs::symlink(&target, &to).map_err(copy_err)?;
            } else if meta.is_file() {
                let bytes = std::fs::read(&from).map_err(|source| Error::Read {
                    path: from.clone(),
                    source,
                })?;
                std::fs::write(&to, &bytes).map_err(copy_err)?;
                std::fs::set_permissions(&to, meta.permissions()).map_err(copy_err)?;
                snapshot.insert(rel, sha256_hex(&bytes));
            }
            // A directory here is a submodule (git lists it as one entry): not copied.
        }
        Ok(Workspace {
            source: root.to_path_buf(),
            dir,
            snapshot,
        })
    }

    /// The copy's root.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The user's repository.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Regular files copied.
    pub fn len(&self) -> usize {
        self.snapshot.len()
    }

    pub fn is_empty(&self) -> bool {
        self.snapshot.is_empty()
    }

    /// The sha256 a file had at the start of the run (`None`: not a copied regular file).
    /// Every file of the copy, relative to the root, in path order.
    pub fn files(&self) -> impl Iterator<Item = &str> {
        self.snapshot.keys().map(String::as_str)
    }

    pub fn recorded_hash(&self, rel: &str) -> Option<&str> {
        self.snapshot.get(rel).map(String::as_str)
    }

    /// Whether `rel` is a regular file of the copy (not a symlink, which could lead out of it).
    pub fn is_regular(&self, rel: &str) -> bool {
        self.snapshot.contains_key(rel)
            && std::fs::symlink_metadata(self.root().join(rel)).is_ok_and(|m| m.is_file())
    }
}

/// The sha256 of `bytes` in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    agency_core::pattern::hex(&Sha256::digest(bytes))
}

/// The files git shows in the working tree, or `None` when `root` is not a git work tree.
fn git_files(root: &Path) -> Result<Option<Vec<String>>> {
    if !root.join(".git").exists() {
        return Ok(None);
    }
    let output = Command::new("git")
        .arg("-C")
        .arg(root)
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .output()
        .map_err(|e| Error::Git {
            root: root.to_path_buf(),
            message: format!("{e}; is git installed?"),
        })?;
    if !output.status.success() {
        return Err(Error::Git {
            root: root.to_path_buf(),
            message: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    let mut files: Vec<String> = output
        .stdout
        .split(|&b| b == 0)
        .filter(|p| !p.is_empty())
        .filter_map(|p| std::str::from_utf8(p).ok())
        .filter(|p| safe_relative(p))
        .map(ToString::to_string)
        .collect();
    files.sort();
    files.dedup();
    Ok(Some(files))
}

/// A path git printed stays inside the root: relative, no `..`.
fn safe_relative(path: &str) -> bool {
    let path = Path::new(path);
    path.is_relative()
        && path
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// Every file under `root` except `.git`, `.agency`, virtual environments and `__pycache__`.
/// Symlinks are listed, never followed.
fn walk_files(root: &Path) -> Result<Vec<String>> {
    let mut files = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel_dir) = stack.pop() {
        let dir = root.join(&rel_dir);
        let entries = std::fs::read_dir(&dir).map_err(|source| Error::Read {
            path: dir.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| Error::Read {
                path: dir.clone(),
                source,
            })?;
            let name = entry.file_name();
            let rel = rel_dir.join(&name);
            let file_type = entry.file_type().map_err(|source| Error::Read {
                path: entry.path(),
                source,
            })?;
            if file_type.is_dir() {
                let skip = matches!(name.to_str(), Some(".git" | ".agency" | "__pycache__"))
                    || entry.path().join("pyvenv.cfg").is_file();
                if !skip {
                    stack.push(rel);
                }
            } else if let Some(rel) = rel.to_str() {
                files.push(rel.to_string());
            }
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn copies_files_modes_and_links_but_not_environments() {
        let repo = tempfile::tempdir().unwrap();
        let root = repo.path();
        std::fs::create_dir_all(root.join("pkg/__pycache__")).unwrap();
        std::fs::create_dir_all(root.join(".venv")).unwrap();
        std::fs::write(root.join(".venv/pyvenv.cfg"), "home = /usr\n").unwrap();
        std::fs::write(root.join("pkg/mod.py"), "x = 1\n").unwrap();
        std::fs::write(root.join("pkg/__pycache__/mod.pyc"), "junk").unwrap();
        std::fs::write(root.join("run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::os::unix::fs::symlink("/etc/hostname", root.join("outside")).unwrap();
        let ws = Workspace::create(root).unwrap();
        let copy = ws.root();
        assert_eq!(
            std::fs::read_to_string(copy.join("pkg/mod.py")).unwrap(),
            "x = 1\n"
        );
        let mode = std::fs::metadata(copy.join("run.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(
            std::fs::read_link(copy.join("outside")).unwrap(),
            Path::new("/etc/hostname")
        );
        assert!(!copy.join(".venv").exists());
        assert!(!copy.join("pkg/__pycache__").exists());
        assert_eq!(ws.len(), 2, "symlinks are not in the snapshot");
        assert!(!ws.is_regular("outside"));
        assert_eq!(
            ws.recorded_hash("pkg/mod.py"),
            Some(sha256_hex(b"x = 1\n").as_str())
        );
    }
}
