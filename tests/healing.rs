//! `agency healing stop | resume | status` with the real binary: a stop halts a heal whose
//! tests are running, within the 2 seconds, with nothing written to the repository, and new
//! heals refuse to start until `resume`. Each test has its own data directory (the switch is
//! machine-wide for a data directory), with the model and tools linked from the shared one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{agency_at, git_fixture, private_home, run};

fn status(home: &Path) -> Value {
    let (code, stdout, stderr) = run(agency_at(home).args(["healing", "status", "--json"]));
    assert_eq!(code, 0, "{stderr}");
    serde_json::from_str(&stdout).unwrap()
}

/// Every file of the working tree with its bytes (not `.git`, nor `.agency/`, where the scan
/// keeps its cache).
fn files(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path
                .file_name()
                .is_some_and(|n| n == ".git" || n == ".agency")
            {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else {
                out.insert(
                    path.strip_prefix(root).unwrap().to_path_buf(),
                    std::fs::read(&path).unwrap(),
                );
            }
        }
    }
    out
}

#[test]
fn stop_halts_a_running_heal_within_two_seconds_and_blocks_new_ones() {
    let home = private_home();
    let repo = git_fixture("fixtures/heal");
    std::fs::write(
        repo.path().join("agency.toml"),
        "[verify]\ncommand = \"sh -c 'sleep 120'\"\ntimeout_s = 300\n",
    )
    .unwrap();
    let before = files(repo.path());
    assert_eq!(status(home.path())["stopped"], false);

    let mut heal = agency_at(home.path())
        .current_dir(repo.path())
        .args(["heal", "--yes", "--json", "--tools", "ruff"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until its tests run (the suite on the untouched copy comes first).
    let waited = Instant::now();
    loop {
        let doc = status(home.path());
        if doc["running"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| !r["test_group"].is_null())
        {
            break;
        }
        assert!(
            waited.elapsed() < Duration::from_mins(1),
            "the heal never started its tests: {doc:#}"
        );
        assert!(heal.try_wait().unwrap().is_none(), "the heal ended early");
        std::thread::sleep(Duration::from_millis(50));
    }

    let stopped_at = Instant::now();
    let (code, stdout, stderr) = run(agency_at(home.path()).args([
        "healing",
        "stop",
        "--reason",
        "tests are misbehaving",
        "--json",
    ]));
    assert_eq!(code, 0, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["stopped"], true);
    assert_eq!(report["killed_test_groups"], 1, "{report:#}");
    assert_eq!(
        report["still_running"],
        Value::Array(Vec::new()),
        "{report:#}"
    );
    assert!(stopped_at.elapsed() < Duration::from_millis(2_500));
    let out = heal.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("healing was stopped"), "{stderr}");
    // Nothing written: every file as it was.
    assert_eq!(files(repo.path()), before);

    // New heals refuse to start, and say how to resume.
    let (code, _, stderr) = run(agency_at(home.path())
        .current_dir(repo.path())
        .args(["heal", "--yes", "--tools", "ruff"]));
    assert_eq!(code, 2);
    assert!(stderr.contains("tests are misbehaving"), "{stderr}");
    assert!(stderr.contains("agency healing resume"), "{stderr}");
    let doc = status(home.path());
    assert_eq!(doc["stopped"], true);
    assert_eq!(doc["stop"]["reason"], "tests are misbehaving");
    assert_eq!(doc["running"], Value::Array(Vec::new()));

    let (code, _, stderr) = run(agency_at(home.path()).args(["healing", "resume"]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(status(home.path())["stopped"], false);
}
