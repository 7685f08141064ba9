//! Baselines: a file of today's finding ids, so that a scan of a legacy codebase reports only
//! what is new. Ids carry no line numbers, so edits elsewhere do not resurrect old findings.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use agency_core::contract::Finding;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The default baseline location, relative to the repository root.
pub const DEFAULT_PATH: &str = ".agency/baseline.json";

const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct BaselineFile {
    version: u32,
    findings: Vec<Entry>,
}

/// One baselined finding; rule, file and message are there for humans reviewing the file.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    id: String,
    rule: String,
    file: String,
    message: String,
}

/// Reads the ids of a baseline file.
pub fn load(path: &Path) -> Result<HashSet<String>> {
    let bytes = std::fs::read(path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let file: BaselineFile = serde_json::from_slice(&bytes).map_err(|e| Error::Config {
        message: format!(
            "{} is not an agency baseline ({e}); create one with agency baseline create",
            path.display()
        ),
    })?;
    if file.version > VERSION {
        return Err(Error::Config {
            message: format!(
                "{} is a version {} baseline, newer than this agency understands (version {VERSION}); upgrade agency",
                path.display(),
                file.version
            ),
        });
    }
    Ok(file.findings.into_iter().map(|e| e.id).collect())
}

/// Writes a baseline of `findings` atomically.
pub fn write(path: &Path, findings: &[Finding]) -> Result<PathBuf> {
    let mut entries: Vec<Entry> = findings
        .iter()
        .map(|f| Entry {
            id: f.id.clone(),
            rule: f.rule.clone(),
            file: f.file.clone(),
            message: f.message.clone(),
        })
        .collect();
    entries.sort_by(|a, b| (&a.file, &a.id).cmp(&(&b.file, &b.id)));
    entries.dedup_by(|a, b| a.id == b.id);
    let doc = BaselineFile {
        version: VERSION,
        findings: entries,
    };
    let mut bytes = serde_json::to_vec_pretty(&doc).expect("a baseline serialises");
    bytes.push(b'\n');
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io {
            path: dir.to_path_buf(),
            source: e,
        })?;
    }
    agency_fs::atomic_write(path, &bytes).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/baseline.json");
        write(&path, &[]).unwrap();
        assert!(load(&path).unwrap().is_empty());
        std::fs::write(&path, b"{\"version\": 9, \"findings\": []}").unwrap();
        assert!(load(&path).unwrap_err().to_string().contains("newer"));
        std::fs::write(&path, b"[]").unwrap();
        assert!(
            load(&path)
                .unwrap_err()
                .to_string()
                .contains("not an agency baseline")
        );
    }
}
