//! Fault injection on `agency heal` with the real binary and tools: kill -9 during
//! verification and during the apply step (then `--resume`), a second heal of the same
//! repository, a read-only file, a tool that prints garbage or crashes, and no space to write.
//! In every case nothing of the user's is lost and the result says what happened.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{agency_at, git_fixture, private_home, run, user_files};

fn heal_json(home: &Path, dir: &Path, args: &[&str]) -> (i32, Value, String) {
    let (code, stdout, stderr) = run(agency_at(home).current_dir(dir).args(args));
    let doc = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\nstderr: {stderr}"));
    (code, doc, stderr)
}

fn statuses(doc: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = doc["heals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                format!(
                    "{}:{}",
                    h["finding"]["file"].as_str().unwrap(),
                    h["finding"]["line"]
                ),
                h["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn journal(root: &Path) -> std::path::PathBuf {
    root.join(".agency/heal/journal.jsonl")
}

fn audit_count(root: &Path) -> usize {
    std::fs::read_dir(root.join("logs/autonomous_healing")).map_or(0, Iterator::count)
}

#[test]
fn kill_9_during_the_apply_step_then_resume_writes_the_rest_and_nothing_twice() {
    let home = private_home();
    // The control: the same run, uninterrupted.
    let control = git_fixture("fixtures/heal-batch");
    let (_, control_doc, stderr) =
        heal_json(home.path(), control.path(), &["heal", "--yes", "--json"]);
    let healed = control_doc["summary"]["healed"].as_u64().unwrap();
    assert!(healed >= 4, "{control_doc:#}\n{stderr}");

    let repo = git_fixture("fixtures/heal-batch");
    let root = repo.path();
    let before = user_files(root);
    // The process aborts right after the second file is written, as a kill -9 would end it.
    let (code, stdout, _) = run(agency_at(home.path())
        .current_dir(root)
        .env("AGENCY_TEST_ABORT_AFTER_WRITES", "2")
        .args(["heal", "--yes", "--json"]));
    assert!(
        !(0..=2).contains(&code),
        "the run was not cut off: {code} {stdout}"
    );
    let cut = user_files(root);
    let expected = user_files(control.path());
    let changed: Vec<_> = before
        .iter()
        .filter(|(p, b)| cut.get(*p) != Some(*b))
        .map(|(p, _)| p.clone())
        .collect();
    assert_eq!(changed.len(), 2, "{changed:?}");
    // Each written file is whole: exactly what the uninterrupted run wrote.
    for p in &changed {
        assert_eq!(cut.get(p), expected.get(p), "{}", p.display());
    }
    assert!(journal(root).is_file());

    // A new run refuses until the interrupted one is finished.
    let (code, _, stderr) = run(agency_at(home.path())
        .current_dir(root)
        .args(["heal", "--yes", "--json"]));
    assert_eq!(code, 2);
    assert!(stderr.contains("agency heal --resume"), "{stderr}");

    let (_, doc, stderr) = heal_json(home.path(), root, &["heal", "--resume", "--json"]);
    assert_eq!(statuses(&doc), statuses(&control_doc), "{doc:#}\n{stderr}");
    assert_eq!(doc["summary"]["healed"], healed);
    // The tree is what one uninterrupted run leaves: no fix was applied twice.
    assert_eq!(user_files(root), expected);
    // One audit record per attempt, written once.
    assert_eq!(
        audit_count(root),
        control_doc["heals"].as_array().unwrap().len()
    );
    assert!(!journal(root).exists());

    let (code, doc, stderr) = heal_json(home.path(), root, &["heal", "--resume", "--json"]);
    assert_eq!(code, 0);
    assert!(stderr.contains("nothing to resume"), "{stderr}");
    assert_eq!(doc["heals"], Value::Array(Vec::new()));
}

#[test]
fn kill_9_during_verification_leaves_the_tree_untouched_and_resume_runs_it_again() {
    let home = private_home();
    let repo = git_fixture("fixtures/heal");
    let root = repo.path();
    let pytest = crate::util::home().join("venv/bin/pytest");
    // The suite hangs while `SLOW` exists in the copy.
    std::fs::write(
        root.join("agency.toml"),
        format!(
            "[verify]\ncommand = \"sh -c 'if test -e SLOW; then sleep 120; fi; exec {} -q -x'\"\ntimeout_s = 300\n",
            pytest.display()
        ),
    )
    .unwrap();
    std::fs::write(root.join("SLOW"), "").unwrap();
    let before = user_files(root);

    let mut heal = agency_at(home.path())
        .current_dir(root)
        .args(["heal", "--yes", "--json"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let group = wait_for_tests(home.path(), &mut heal);

    // A second heal of the same repository is refused while the first runs.
    let (code, _, stderr) = run(agency_at(home.path())
        .current_dir(root)
        .args(["heal", "--yes", "--json"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("another agency heal is running"),
        "{stderr}"
    );

    heal.kill().unwrap();
    heal.wait().unwrap();
    // The orphaned tests are the test's to clean up (a stop would kill them).
    let _ = std::process::Command::new("kill")
        .args(["-9", "--", &format!("-{group}")])
        .status();
    assert_eq!(user_files(root), before);

    std::fs::remove_file(root.join("SLOW")).unwrap();
    let (_, doc, stderr) = heal_json(home.path(), root, &["heal", "--resume", "--json"]);
    assert!(stderr.contains("had written nothing"), "{stderr}");
    let cart = doc["heals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["finding"]["file"] == "shop/cart.py")
        .unwrap();
    assert_eq!(cart["status"], "healed", "{doc:#}");
    assert!(!journal(root).exists());
}

/// Waits until the heal's tests run; returns their process group.
fn wait_for_tests(home: &Path, heal: &mut std::process::Child) -> i64 {
    let waited = Instant::now();
    loop {
        let (code, stdout, _) = run(agency_at(home).args(["healing", "status", "--json"]));
        assert_eq!(code, 0);
        let doc: Value = serde_json::from_str(&stdout).unwrap();
        if let Some(group) = doc["running"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|r| r["test_group"].as_i64())
        {
            return group;
        }
        assert!(
            waited.elapsed() < Duration::from_mins(1),
            "the heal never started its tests: {doc:#}"
        );
        assert!(heal.try_wait().unwrap().is_none(), "the heal ended early");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_read_only_file_is_not_written() {
    use std::os::unix::fs::PermissionsExt;
    let repo = git_fixture("fixtures/heal");
    let root = repo.path();
    let cart = root.join("shop/cart.py");
    std::fs::set_permissions(&cart, std::fs::Permissions::from_mode(0o444)).unwrap();
    let before = std::fs::read(&cart).unwrap();
    let (_, doc, stderr) = heal_json(crate::util::run_home(), root, &["heal", "--yes", "--json"]);
    let heal = doc["heals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["finding"]["file"] == "shop/cart.py")
        .unwrap_or_else(|| panic!("{doc:#}\n{stderr}"));
    assert_eq!(heal["status"], "skipped", "{heal:#}");
    assert!(
        heal["reason"].as_str().unwrap().contains("read-only"),
        "{heal:#}"
    );
    assert_eq!(std::fs::read(&cart).unwrap(), before);
    assert_eq!(
        std::fs::metadata(&cart).unwrap().permissions().mode() & 0o777,
        0o444
    );
}

#[test]
fn a_tool_that_prints_garbage_or_crashes_is_reported_and_nothing_is_written() {
    for (name, script) in [
        ("garbage", "#!/bin/sh\necho '{{{ not json'\nexit 1\n"),
        ("crash", "#!/bin/sh\nkill -SEGV $$\n"),
    ] {
        let repo = git_fixture("fixtures/heal");
        let root = repo.path();
        let tool = root.join(format!("fake-ruff-{name}"));
        std::fs::write(&tool, script).unwrap();
        std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        std::fs::write(
            root.join("agency.toml"),
            format!("[scan.tools]\nruff = \"{}\"\n", tool.display()),
        )
        .unwrap();
        let before = user_files(root);
        let (code, doc, stderr) = heal_json(
            crate::util::run_home(),
            root,
            &["heal", "--yes", "--json", "--tools", "ruff"],
        );
        assert!(code == 0 || code == 1, "{name}: {code}\n{stderr}");
        assert!(stderr.contains("ruff"), "{name}: {stderr}");
        assert_eq!(doc["summary"]["healed"], 0, "{name}: {doc:#}");
        assert_eq!(user_files(root), before, "{name}");
    }
}

#[test]
fn no_space_to_write_fails_with_a_message_and_loses_nothing() {
    let repo = git_fixture("fixtures/heal");
    let root = repo.path();
    let before = user_files(root);
    // No file may grow past 0 bytes (SIGXFSZ ignored, so writes fail with EFBIG, as on a
    // full disk): the private copy cannot be made.
    let agency = env!("CARGO_BIN_EXE_agency");
    let (code, stdout, stderr) = run(std::process::Command::new("sh")
        .current_dir(root)
        .env("AGENCY_HOME", crate::util::run_home())
        .env("AGENCY_EMBED_THREADS", "1")
        .args([
            "-c",
            &format!("trap '' XFSZ; ulimit -f 0; exec '{agency}' heal --yes --json --no-cache"),
        ]));
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(stderr.contains("agency: error:"), "{stderr}");
    assert_eq!(user_files(root), before);
}

#[test]
fn sigterm_or_ctrl_c_kills_the_tests_and_removes_the_copy() {
    let home = private_home();
    let repo = git_fixture("fixtures/heal");
    let root = repo.path();
    std::fs::write(
        root.join("agency.toml"),
        "[verify]\ncommand = \"sh -c 'sleep 120'\"\ntimeout_s = 300\n",
    )
    .unwrap();
    let before = user_files(root);
    let mut heal = agency_at(home.path())
        .current_dir(root)
        .args(["heal", "--yes", "--json", "--tools", "ruff"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let group = wait_for_tests(home.path(), &mut heal);
    let copy_dirs = |group: i64| -> Vec<String> {
        // The copy is the tests' working directory.
        std::fs::read_link(format!("/proc/{group}/cwd"))
            .map(|p| vec![p.display().to_string()])
            .unwrap_or_default()
    };
    let copy = copy_dirs(group);
    assert_eq!(copy.len(), 1, "the tests run in the private copy");
    let sent = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &heal.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = heal.wait_with_output().unwrap();
    assert!(
        sent.elapsed() < Duration::from_secs(2),
        "{:?}",
        sent.elapsed()
    );
    assert_eq!(
        out.status.code(),
        Some(130),
        "{:?} (signal {:?}): {}",
        out.status,
        std::os::unix::process::ExitStatusExt::signal(&out.status),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("interrupted"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The tests' process group is gone, and so is the copy.
    let alive = || {
        std::process::Command::new("kill")
            .args(["-0", "--", &format!("-{group}")])
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    // Killed processes linger a moment until they are reaped.
    let waited = Instant::now();
    while alive() && waited.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(), "the tests still run");
    assert!(!Path::new(&copy[0]).exists(), "{} is left", copy[0]);
    assert_eq!(user_files(root), before);
}
