//! The content-hash cache of native analysis: a file whose bytes have not changed since the last
//! scan is not parsed again, and its imports feed the project's import graph without re-reading
//! it. Kept in `.agency/cache/native.json` (the directory ignores itself for git, as ruff's
//! cache does); a cache from another engine version, or an unreadable one, is discarded, never
//! trusted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use agency_core::contract::Severity;
use serde::{Deserialize, Serialize};

use crate::native::imports::ModuleImports;
use crate::native::names::UnboundName;

const FORMAT_VERSION: u32 = 3;

/// A native diagnostic with its position resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedDiagnostic {
    pub rule: String,
    pub line: u32,
    pub column: u32,
    pub end_line: u32,
    pub end_column: u32,
    pub message: String,
    pub severity: Severity,
    pub impact_pct: Option<u32>,
    #[serde(default)]
    pub related_line: Option<u32>,
}

/// What the native analysis found in one version of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// SHA-256 of the file's bytes, hex.
    pub hash: String,
    pub lines: u64,
    pub diagnostics: Vec<CachedDiagnostic>,
    pub imports: ModuleImports,
    pub unbound: Vec<UnboundName>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CacheFile {
    version: u32,
    engine: String,
    files: BTreeMap<String, FileEntry>,
}

/// The cache of one repository.
#[derive(Debug)]
pub struct Cache {
    path: PathBuf,
    engine: String,
    files: BTreeMap<String, FileEntry>,
    dirty: bool,
}

impl Cache {
    /// The cache directory of a repository.
    pub fn dir(root: &Path) -> PathBuf {
        root.join(".agency").join("cache")
    }

    /// Loads the cache, or starts an empty one when it is missing, corrupt or from another
    /// engine (`engine` names the analyzer version and rule set).
    pub fn load(root: &Path, engine: &str) -> Self {
        let path = Self::dir(root).join("native.json");
        let files = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<CacheFile>(&bytes).ok())
            .filter(|c| c.version == FORMAT_VERSION && c.engine == engine)
            .map(|c| c.files)
            .unwrap_or_default();
        Cache {
            path,
            engine: engine.to_string(),
            files,
            dirty: false,
        }
    }

    /// The entry for `file` if its content still hashes to `hash`.
    pub fn get(&self, file: &str, hash: &str) -> Option<&FileEntry> {
        self.files.get(file).filter(|e| e.hash == hash)
    }

    /// The entry for `file` whatever its hash (for files not re-read in an incremental scan).
    pub fn get_any(&self, file: &str) -> Option<&FileEntry> {
        self.files.get(file)
    }

    pub fn insert(&mut self, file: String, entry: FileEntry) {
        self.files.insert(file, entry);
        self.dirty = true;
    }

    /// Forgets files that no longer exist.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        let before = self.files.len();
        self.files.retain(|f, _| keep(f));
        self.dirty |= self.files.len() != before;
    }

    /// Writes the cache atomically if it changed. A failure (a read-only checkout) is returned
    /// for the caller to log; the scan's result does not depend on it.
    pub fn save(&mut self) -> std::io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let dir = self.path.parent().expect("the cache file has a directory");
        std::fs::create_dir_all(dir)?;
        let agency_dir = dir.parent().expect("the cache directory has a parent");
        let ignore = agency_dir.join(".gitignore");
        if !ignore.exists() {
            agency_fs::atomic_write(
                &ignore,
                b"# Created by agency: its caches are not source.\ncache/\n",
            )
            .map_err(std::io::Error::other)?;
        }
        let file = CacheFile {
            version: FORMAT_VERSION,
            engine: self.engine.clone(),
            files: std::mem::take(&mut self.files),
        };
        let bytes = serde_json::to_vec(&file).map_err(std::io::Error::other);
        self.files = file.files;
        agency_fs::atomic_write(&self.path, &bytes?).map_err(std::io::Error::other)?;
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(hash: &str) -> FileEntry {
        FileEntry {
            hash: hash.to_string(),
            lines: 3,
            diagnostics: Vec::new(),
            imports: ModuleImports::default(),
            unbound: Vec::new(),
        }
    }

    #[test]
    fn round_trip_and_invalidation() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = Cache::load(dir.path(), "e1");
        cache.insert("a.py".into(), entry("h1"));
        cache.save().unwrap();
        let cache = Cache::load(dir.path(), "e1");
        assert!(cache.get("a.py", "h1").is_some());
        assert!(cache.get("a.py", "h2").is_none());
        assert!(Cache::load(dir.path(), "e2").get("a.py", "h1").is_none());
        std::fs::write(Cache::dir(dir.path()).join("native.json"), b"{garbage").unwrap();
        assert!(Cache::load(dir.path(), "e1").get_any("a.py").is_none());
        assert!(dir.path().join(".agency/.gitignore").is_file());
    }
}
