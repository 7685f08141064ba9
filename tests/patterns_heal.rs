//! The pattern strategy end to end, with the real binary, store, model and tools, each test in
//! its own data directory: a confident pattern from the store heals a finding no deterministic
//! fixer may fix, and its success is recorded; a wrong pattern breaks the tests, is rolled back
//! and its failure is recorded.

use std::path::Path;

use serde_json::Value;

use crate::util::{agency_at, git_fixture, private_home, run};

const FILE: &str = "shop/lookup.py";

/// Imports one pattern for E711 with a strong track record (Beta(21, 1): confidence 0.95).
fn import_pattern(home: &Path, id: &str, after: &str) {
    let record = serde_json::json!({
        "version": 1,
        "id": id,
        "category": "style",
        "rule": "E711",
        "title": "comparison to None with !=",
        "message": "Comparison to `None` should be `cond is not None`",
        "applicability": "safe",
        "before": "?x != None",
        "after": after,
        "examples": [{"before": "ok = a != None", "after": format!("ok = {}", after.replace("?x", "a")), "source": "import"}],
        "source": "import",
        "prior": {"successes": 20.0, "failures": 0.0}
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("patterns.jsonl");
    std::fs::write(&file, format!("{record}\n")).unwrap();
    let (code, stdout, stderr) = run(agency_at(home).args(["patterns", "import"]).arg(&file));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
}

fn heal(home: &Path, root: &Path) -> Value {
    let (code, stdout, stderr) = run(agency_at(home)
        .current_dir(root)
        .args(["heal", "--yes", "--json", "--tools", "ruff"]));
    assert!(code == 0 || code == 1, "{code}\n{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"))
}

fn e711(doc: &Value) -> &Value {
    doc["heals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["finding"]["rule"] == "E711")
        .unwrap_or_else(|| panic!("no E711 heal: {doc:#}"))
}

fn track(home: &Path, id: &str) -> (u64, u64) {
    let (code, stdout, stderr) = run(agency_at(home).args(["patterns", "show", id, "--json"]));
    assert_eq!(code, 0, "{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    let p = if doc["pattern"].is_object() {
        &doc["pattern"]
    } else {
        &doc
    };
    (
        p["successes"].as_u64().unwrap_or_else(|| panic!("{doc:#}")),
        p["failures"].as_u64().unwrap(),
    )
}

#[test]
fn a_confident_pattern_heals_first_and_its_success_is_recorded() {
    let home = private_home();
    import_pattern(home.path(), "style-e711-not-none-test", "?x is not None");
    let repo = git_fixture("fixtures/heal-pattern");
    let doc = heal(home.path(), repo.path());
    let heal = e711(&doc);
    assert_eq!(heal["status"], "healed", "{heal:#}");
    assert_eq!(heal["strategy"], "pattern");
    assert_eq!(heal["pattern_id"], "style-e711-not-none-test");
    assert_eq!(heal["verification"]["tests"], "passed");
    let text = std::fs::read_to_string(repo.path().join(FILE)).unwrap();
    assert!(
        text.contains("return record.get(\"owner\") is not None\n"),
        "{text}"
    );
    assert_eq!(track(home.path(), "style-e711-not-none-test"), (1, 0));
    // The audit record names the pattern and its confidence.
    let records: Vec<Value> = std::fs::read_dir(repo.path().join("logs/autonomous_healing"))
        .unwrap()
        .map(|e| serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap())
        .collect();
    let record = records
        .iter()
        .find(|r| r["finding"]["rule"] == "E711")
        .unwrap();
    assert_eq!(record["pattern_id"], "style-e711-not-none-test");
    assert!(record["confidence"].as_f64().unwrap() >= 0.9, "{record:#}");
}

#[test]
fn a_wrong_pattern_is_rolled_back_and_its_failure_is_recorded() {
    let home = private_home();
    import_pattern(home.path(), "style-e711-wrong-test", "?x is None");
    let repo = git_fixture("fixtures/heal-pattern");
    let before = std::fs::read(repo.path().join(FILE)).unwrap();
    let doc = heal(home.path(), repo.path());
    let heal = e711(&doc);
    assert_eq!(heal["status"], "rolled_back", "{heal:#}");
    assert_eq!(heal["strategy"], "pattern");
    assert_eq!(heal["verification"]["tests"], "failed");
    assert_eq!(std::fs::read(repo.path().join(FILE)).unwrap(), before);
    assert_eq!(track(home.path(), "style-e711-wrong-test"), (0, 1));
}
