//! Helpers shared by the end-to-end tests.

use std::path::PathBuf;
use std::process::{Command, Output};

/// The data directory with the model and runtime library (installed by `scripts/test.sh`).
pub fn home() -> PathBuf {
    let home = std::env::var_os("AGENCY_HOME").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".agency-home"),
        PathBuf::from,
    );
    assert!(
        home.join("models/all-minilm-l6-v2-int8/model.onnx")
            .is_file(),
        "the model is missing under {}: run scripts/test.sh (or agency setup)",
        home.display()
    );
    home
}

/// `agency` with the test data directory and deterministic embedding.
pub fn agency() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agency"));
    cmd.env("AGENCY_HOME", home())
        .env("AGENCY_EMBED_THREADS", "1")
        .env_remove("AGENCY_LOG")
        .env_remove("AGENCY_PROGRESS");
    cmd
}

/// Runs and returns (exit code, stdout, stderr).
pub fn run(cmd: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("the agency binary runs");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// A JSON line of the export format, for a synthetic pattern number `i`.
pub fn record_line(i: usize) -> String {
    serde_json::json!({
        "version": 1,
        "id": format!("import-synthetic-{i}"),
        "category": "style",
        "rule": format!("X{i:04}"),
        "title": format!("synthetic pattern {i}"),
        "message": format!("synthetic message number {i} about attribute_{i}"),
        "applicability": "safe",
        "before": format!("?x.attribute_{i}"),
        "after": format!("?x.renamed_{i}"),
        "examples": [{"before": format!("y = a.attribute_{i}"), "after": format!("y = a.renamed_{i}"), "source": "import"}],
        "source": "import"
    })
    .to_string()
}
