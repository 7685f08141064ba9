//! Runtime NoneType crashes from a log healed by agency's own fixers (no model configured):
//! each traceback at its own place, the fix verified by the project's tests, and a regression
//! test added beside them where the crash can be driven from a test. Bad logs change nothing.

use std::path::Path;

use serde_json::Value;

use crate::util::{agency_at, git, git_fixture, home, private_home, run, user_files};

/// A module whose lookup result is used unchecked: the None comes from `RATES.get(code)`.
const PRICING: &str = "\"\"\"Prices.\"\"\"\n\nRATES = {\"gold\": {\"percent\": 10}, \"silver\": {\"percent\": 5}}\n\n\ndef discount(code: str, price: float = 100.0) -> float:\n    \"\"\"The discount on price for a customer code.\"\"\"\n    rate = RATES.get(code)\n    return price * rate[\"percent\"] / 100\n";

/// The demo's production log (log prefixes, a chained exception, container paths), and a
/// traceback written on a Windows machine.
fn log(dir: &Path) -> std::path::PathBuf {
    let demo = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/logs/shop-production.log"),
    )
    .unwrap();
    let windows = "Traceback (most recent call last):\r\n  File \"C:\\deploy\\app\\shop\\pricing.py\", line 9, in discount\r\n    return price * rate[\"percent\"] / 100\r\nTypeError: 'NoneType' object is not subscriptable\r\n";
    let path = dir.join("app.log");
    std::fs::write(&path, format!("{demo}{windows}")).unwrap();
    path
}

fn demo_with_pricing() -> tempfile::TempDir {
    let repo = git_fixture("fixtures/demo-repo");
    std::fs::write(repo.path().join("shop/pricing.py"), PRICING).unwrap();
    git(repo.path(), &["add", "-A"]);
    git(repo.path(), &["commit", "-q", "-m", "pricing"]);
    repo
}

fn heal_of<'a>(doc: &'a Value, file: &str) -> &'a Value {
    doc["heals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["finding"]["file"] == file)
        .unwrap_or_else(|| panic!("no heal of {file}: {doc:#}"))
}

/// The project's tests with the pinned pytest; `(exit code, output)`.
fn pytest(root: &Path, args: &[&str]) -> (i32, String) {
    let (code, stdout, stderr) = run(std::process::Command::new(home().join("venv/bin/python"))
        .current_dir(root)
        .env("PYTHONPATH", root)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .args(args));
    (code, format!("{stdout}{stderr}"))
}

#[test]
fn none_crashes_in_a_log_are_healed_where_they_happen_with_a_regression_test() {
    let home = private_home();
    let repo = demo_with_pricing();
    let root = repo.path();
    let logs = tempfile::tempdir().unwrap();
    let log = log(logs.path());
    let (code, stdout, stderr) = run(agency_at(home.path())
        .current_dir(root)
        .args(["heal", "--yes", "--json", "--from-log"])
        .arg(&log));
    assert!(code == 0 || code == 1, "{code}\n{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));

    // The Windows traceback lands in shop/pricing.py, at its own line; the producer is fixed
    // where the None is made, and the regression test drives the missing key.
    let pricing = heal_of(&doc, "shop/pricing.py");
    assert_eq!(pricing["finding"]["line"], 9, "{pricing:#}");
    assert_eq!(pricing["finding"]["rule"], "none-subscript");
    assert_eq!(pricing["status"], "healed", "{pricing:#}");
    assert_eq!(pricing["strategy"], "rule");
    assert_eq!(pricing["verification"]["tests"], "passed");
    let fixed = std::fs::read_to_string(root.join("shop/pricing.py")).unwrap();
    assert!(
        fixed.contains("    rate = RATES.get(code)\n    if rate is None:\n"),
        "{fixed}"
    );
    let test_path = pricing["regression_test"]
        .as_str()
        .unwrap_or_else(|| panic!("no regression test: {pricing:#}"));
    assert!(test_path.starts_with("tests/"), "{test_path}");
    let test_text = std::fs::read_to_string(root.join(test_path)).unwrap();
    assert!(test_text.contains("discount"), "{test_text}");

    // The chained exception's inner traceback is shop/report.py:9, healed at its own place.
    let report = heal_of(&doc, "shop/report.py");
    assert_eq!(report["finding"]["line"], 9, "{report:#}");
    assert_eq!(report["finding"]["rule"], "none-iteration");
    assert_eq!(report["status"], "healed", "{report:#}");
    // shop/orders.py's crash is a call's result: no fix of agency's fits, and no model is
    // configured.
    let orders = heal_of(&doc, "shop/orders.py");
    assert_ne!(orders["status"], "healed", "{orders:#}");
    assert_eq!(
        std::fs::read_to_string(root.join("shop/orders.py")).unwrap(),
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/demo-repo/shop/orders.py")
        )
        .unwrap()
    );

    // The whole suite passes with the fixes and the new test.
    let (code, output) = pytest(root, &[]);
    assert_eq!(code, 0, "{output}");
    // The regression test fails on the code before the fix.
    let before = demo_with_pricing();
    std::fs::write(before.path().join(test_path), &test_text).unwrap();
    let (code, output) = pytest(before.path(), &[test_path]);
    assert_eq!(code, 1, "{output}");

    // The audit record names the test.
    let records: Vec<Value> = std::fs::read_dir(root.join("logs/autonomous_healing"))
        .unwrap()
        .map(|e| serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap())
        .collect();
    let record = records
        .iter()
        .find(|r| r["finding"]["file"] == "shop/pricing.py")
        .unwrap();
    assert_eq!(record["regression_test"], test_path);
}

#[test]
fn a_log_without_tracebacks_or_a_binary_log_changes_nothing() {
    let home = private_home();
    let repo = demo_with_pricing();
    let root = repo.path();
    let before = user_files(root);
    let logs = tempfile::tempdir().unwrap();
    let quiet = logs.path().join("quiet.log");
    std::fs::write(&quiet, "2026-11-25 10:00:00 INFO all good\n").unwrap();
    let binary = logs.path().join("core.bin");
    std::fs::write(&binary, [0u8, 159, 146, 150, 255, 0, 1, 2, 3]).unwrap();
    for log in [&quiet, &binary] {
        let (code, stdout, stderr) = run(agency_at(home.path())
            .current_dir(root)
            .args(["heal", "--yes", "--json", "--from-log"])
            .arg(log));
        assert_eq!(code, 0, "{stdout}\n{stderr}");
        let doc: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(doc["heals"].as_array().unwrap().len(), 0, "{doc:#}");
        assert!(stderr.contains("no Python traceback"), "{stderr}");
        assert!(user_files(root) == before, "the log changed the repository");
    }
    let (code, _, stderr) = run(agency_at(home.path()).current_dir(root).args([
        "heal",
        "--yes",
        "--from-log",
        "missing.log",
    ]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("missing.log"), "{stderr}");
    assert!(
        user_files(root) == before,
        "a missing log changed the repository"
    );
}
