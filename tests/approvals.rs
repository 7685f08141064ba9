//! The approval round trip with the real binary on copies of `fixtures/heal-approval`: a
//! logic fix is verified and left pending (the file untouched), listed with the contract's
//! JSON and in `healing status`; approving re-verifies and applies it, rejecting drops it and
//! writes nothing; a file changed since the proposal is a conflict, never overwritten. Each
//! test has its own data directory, so the pending approvals are its own.

use std::path::Path;

use serde_json::Value;

use crate::util::{agency_at, git_fixture, private_home, run};

fn json(home: &Path, dir: &Path, args: &[&str]) -> (i32, Value, String) {
    let (code, stdout, stderr) = run(agency_at(home).current_dir(dir).args(args));
    let doc = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\nstderr: {stderr}"));
    (code, doc, stderr)
}

fn approvals(home: &Path, dir: &Path) -> Vec<Value> {
    let (code, doc, stderr) = json(home, dir, &["approvals", "list", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(doc["version"], 1);
    doc["approvals"].as_array().unwrap().clone()
}

fn id_for(list: &[Value], file: &str) -> String {
    list.iter()
        .find(|a| a["finding"]["file"] == file)
        .unwrap_or_else(|| panic!("no approval for {file}: {list:#?}"))["id"]
        .as_str()
        .unwrap()
        .to_string()
}

const CONFIG: &str = "shop/config.py";
const NAMES: &str = "shop/names.py";

#[test]
fn logic_fixes_wait_for_a_human_then_approve_applies_and_reject_drops() {
    let home = private_home();
    let repo = git_fixture("fixtures/heal-approval");
    let root = repo.path();
    let config_before = std::fs::read(root.join(CONFIG)).unwrap();
    let names_before = std::fs::read(root.join(NAMES)).unwrap();

    let (code, doc, stderr) = json(home.path(), root, &["heal", "--yes", "--json"]);
    // B009 is P2: nothing at the default failing priority remains.
    assert_eq!(code, 0, "{doc:#}\n{stderr}");
    assert_eq!(doc["summary"]["pending_approval"], 2, "{doc:#}");
    assert_eq!(doc["summary"]["healed"], 0);
    for heal in doc["heals"].as_array().unwrap() {
        assert_eq!(heal["status"], "pending_approval", "{heal:#}");
        assert_eq!(heal["verification"]["tests"], "passed", "{heal:#}");
        assert!(
            heal["diff"].as_str().unwrap().contains("+    return"),
            "{heal:#}"
        );
        assert!(
            heal["reason"]
                .as_str()
                .unwrap()
                .contains("agency approvals approve"),
            "{heal:#}"
        );
    }
    // Nothing pending was written.
    assert_eq!(std::fs::read(root.join(CONFIG)).unwrap(), config_before);
    assert_eq!(std::fs::read(root.join(NAMES)).unwrap(), names_before);

    let list = approvals(home.path(), root);
    assert_eq!(list.len(), 2, "{list:#?}");
    for a in &list {
        for key in [
            "id",
            "finding",
            "diff",
            "verification",
            "reason",
            "created_at",
        ] {
            assert!(!a[key].is_null(), "{key} missing: {a:#}");
        }
        assert_eq!(a["verification"]["tests"], "passed");
        assert_eq!(a["finding"]["rule"], "B009");
        assert_eq!(a["finding"]["fix"]["approval_required"], true);
    }
    let (code, status, _) = json(home.path(), root, &["healing", "status", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(status["pending_approvals"].as_array().unwrap().len(), 2);

    // Approve one by a prefix of its id: re-verified, applied, gone from the list.
    let config_id = id_for(&list, CONFIG);
    let (code, doc, stderr) = json(
        home.path(),
        root,
        &["approvals", "approve", &config_id[..8], "--json"],
    );
    assert_eq!(code, 0, "{doc:#}\n{stderr}");
    assert_eq!(doc["result"], "applied");
    assert_eq!(doc["verification"]["tests"], "passed");
    let config_after = std::fs::read_to_string(root.join(CONFIG)).unwrap();
    assert!(
        config_after.contains("    return settings.debug\n"),
        "{config_after}"
    );

    // Reject the other: nothing written, gone from the list, on the record.
    let names_id = id_for(&list, NAMES);
    let (code, doc, stderr) = json(
        home.path(),
        root,
        &[
            "approvals",
            "reject",
            &names_id,
            "--reason",
            "keep getattr",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{doc:#}\n{stderr}");
    assert_eq!(doc["result"], "rejected");
    assert_eq!(std::fs::read(root.join(NAMES)).unwrap(), names_before);
    assert!(approvals(home.path(), root).is_empty());

    let records: Vec<Value> = std::fs::read_dir(root.join("logs/autonomous_healing"))
        .unwrap()
        .map(|e| serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap())
        .collect();
    // Two from the heal, one per decision.
    assert_eq!(records.len(), 4, "{records:#?}");
    assert!(
        records
            .iter()
            .any(|r| r["status"] == "healed" && r["finding"]["file"] == CONFIG),
        "{records:#?}"
    );
    assert!(
        records.iter().any(|r| r["finding"]["file"] == NAMES
            && r["reason"].as_str().unwrap_or("").contains("keep getattr")),
        "{records:#?}"
    );

    // An unknown id is a usage error that says what to do.
    let (code, _, stderr) =
        run(agency_at(home.path())
            .current_dir(root)
            .args(["approvals", "approve", "ffffffff"]));
    assert_eq!(code, 2);
    assert!(stderr.contains("agency approvals list"), "{stderr}");
}

#[test]
fn approving_after_the_file_changed_is_a_conflict_and_writes_nothing() {
    let home = private_home();
    let repo = git_fixture("fixtures/heal-approval");
    let root = repo.path();
    let (code, doc, stderr) = json(home.path(), root, &["heal", "--yes", "--json"]);
    assert_eq!(code, 0, "{doc:#}\n{stderr}");
    let list = approvals(home.path(), root);
    let id = id_for(&list, CONFIG);

    // The user edits the file after the proposal.
    let edited = format!(
        "{}# the user's edit\n",
        std::fs::read_to_string(root.join(CONFIG)).unwrap()
    );
    std::fs::write(root.join(CONFIG), &edited).unwrap();
    let (code, doc, stderr) = json(home.path(), root, &["approvals", "approve", &id, "--json"]);
    assert_eq!(code, 1, "{doc:#}\n{stderr}");
    assert_eq!(doc["result"], "conflict");
    assert!(
        doc["reason"].as_str().unwrap().contains("changed"),
        "{doc:#}"
    );
    assert_eq!(std::fs::read_to_string(root.join(CONFIG)).unwrap(), edited);
    // Still pending: the human decides what to do with it.
    assert_eq!(approvals(home.path(), root).len(), 2);
}

#[test]
fn a_fix_that_no_longer_passes_the_tests_is_not_applied_on_approval() {
    let home = private_home();
    let repo = git_fixture("fixtures/heal-approval");
    let root = repo.path();
    let (code, doc, stderr) = json(home.path(), root, &["heal", "--yes", "--json"]);
    assert_eq!(code, 0, "{doc:#}\n{stderr}");
    let id = id_for(&approvals(home.path(), root), NAMES);
    // A new test that the fix breaks (the attribute access differs from getattr only for a
    // test that checks the source), added after the proposal.
    std::fs::write(
        root.join("tests/test_source.py"),
        "import inspect\n\nfrom shop import names\n\n\ndef test_uses_getattr() -> None:\n    assert 'getattr' in inspect.getsource(names)\n",
    )
    .unwrap();
    let names_before = std::fs::read(root.join(NAMES)).unwrap();
    let (code, doc, stderr) = json(home.path(), root, &["approvals", "approve", &id, "--json"]);
    assert_eq!(code, 1, "{doc:#}\n{stderr}");
    assert_eq!(doc["result"], "failed_verification", "{doc:#}");
    assert_eq!(doc["verification"]["tests"], "failed", "{doc:#}");
    assert_eq!(std::fs::read(root.join(NAMES)).unwrap(), names_before);
}
