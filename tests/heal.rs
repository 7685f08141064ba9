//! End-to-end tests of `agency heal` (fix, verify, keep or roll back) on copies of
//! `fixtures/heal`, with the real ruff, mypy, bandit and pytest from `agency setup`.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::util::{agency, git, git_fixture, home, run, tree, user_files};

/// `agency heal --json ARGS` in `dir`: (exit code, document, stderr).
fn heal_json(dir: &Path, args: &[&str]) -> (i32, Value, String) {
    let (code, stdout, stderr) = run(agency()
        .current_dir(dir)
        .args(["heal", "--json"])
        .args(args));
    let doc: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\nstderr: {stderr}"));
    (code, doc, stderr)
}

/// The heal of the finding in `file`.
fn heal_of<'a>(doc: &'a Value, file: &str) -> &'a Value {
    doc["heals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["finding"]["file"] == file)
        .unwrap_or_else(|| panic!("no heal for {file}: {doc:#}"))
}

fn audit_records(dir: &Path) -> Vec<Value> {
    let Ok(entries) = std::fs::read_dir(dir.join("logs/autonomous_healing")) else {
        return Vec::new();
    };
    entries
        .map(|e| serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap())
        .collect()
}

const CART_HEALED: &str = "\"\"\"Shopping cart totals.\"\"\"\n\n\n\ndef total(prices: list[float]) -> float:\n    \"\"\"The sum of the prices.\"\"\"\n    return sum(prices)\n";

#[test]
fn heal_keeps_a_verified_fix_rolls_back_a_breaking_one_and_preserves_user_edits() {
    let repo = git_fixture("fixtures/heal");
    let root = repo.path();
    // Uncommitted work: an edit to a tracked file and a new untracked file.
    let registry = root.join("shop/registry.py");
    let mut text = std::fs::read_to_string(&registry).unwrap();
    text.push_str("# work in progress\n");
    std::fs::write(&registry, &text).unwrap();
    std::fs::write(root.join("notes.txt"), "todo\n").unwrap();
    let before = user_files(root);

    let (code, doc, stderr) = heal_json(root, &["--yes"]);
    // The side-effect import stays, so an F401 (P1) remains.
    assert_eq!(code, 1, "{doc:#}\n{stderr}");

    let cart = heal_of(&doc, "shop/cart.py");
    assert_eq!(cart["status"], "healed", "{cart:#}");
    assert_eq!(cart["strategy"], "rule");
    assert_eq!(cart["verification"]["tests"], "passed");
    assert!(
        cart["diff"].as_str().unwrap().contains("-import os\n"),
        "{cart:#}"
    );
    let app = heal_of(&doc, "shop/app.py");
    assert_eq!(app["status"], "rolled_back", "{app:#}");
    assert_eq!(app["verification"]["tests"], "failed");
    assert!(
        app["reason"]
            .as_str()
            .unwrap()
            .contains("tests/test_app.py::test_discount_is_registered"),
        "{app:#}"
    );
    assert_eq!(doc["summary"]["healed"], 1);
    assert_eq!(doc["summary"]["rolled_back"], 1);

    // Only the healed file changed; the rolled-back one and the user's work are untouched.
    let after = user_files(root);
    assert_eq!(
        std::fs::read_to_string(root.join("shop/cart.py")).unwrap(),
        CART_HEALED
    );
    let changed: Vec<&PathBuf> = before
        .iter()
        .filter(|(p, bytes)| after.get(*p) != Some(*bytes))
        .map(|(p, _)| p)
        .collect();
    assert_eq!(changed, [Path::new("shop/cart.py")]);
    assert_eq!(before.len(), after.len());

    // The suite is green on the healed tree.
    let pytest = home().join("venv/bin/pytest");
    let (code, stdout, stderr) = run(std::process::Command::new(pytest)
        .arg("-q")
        .current_dir(root));
    assert_eq!(code, 0, "{stdout}{stderr}");

    // One audit record per heal, matching the report.
    let records = audit_records(root);
    assert_eq!(records.len(), doc["heals"].as_array().unwrap().len());
    for heal in doc["heals"].as_array().unwrap() {
        let record = records
            .iter()
            .find(|r| r["finding"]["id"] == heal["finding"]["id"])
            .unwrap_or_else(|| panic!("no record for {heal:#}"));
        assert_eq!(record["status"], heal["status"]);
        assert_eq!(record["diff"], heal["diff"]);
        assert_eq!(record["version"], 1);
    }
    let rolled = records
        .iter()
        .find(|r| r["status"] == "rolled_back")
        .unwrap();
    assert!(
        rolled["verification"]["output"]
            .as_str()
            .unwrap()
            .contains("FAILED tests/test_app.py::test_discount_is_registered"),
        "{rolled:#}"
    );
}

#[test]
fn a_rolled_back_heal_leaves_every_file_byte_identical() {
    let repo = git_fixture("fixtures/heal");
    let root = repo.path();
    // Only the fix that breaks a test is left to try.
    std::fs::write(root.join("shop/cart.py"), CART_HEALED).unwrap();
    git(root, &["commit", "-q", "-am", "no unused import"]);
    let before = user_files(root);
    let (code, doc, stderr) = heal_json(root, &["--yes"]);
    assert_eq!(code, 1, "{doc:#}\n{stderr}");
    assert_eq!(doc["summary"]["rolled_back"], 1, "{doc:#}");
    assert_eq!(doc["summary"]["healed"], 0, "{doc:#}");
    assert_eq!(user_files(root), before);
    assert_eq!(
        audit_records(root).len(),
        doc["heals"].as_array().unwrap().len()
    );
}

#[test]
fn dry_run_writes_nothing_and_prints_the_diff() {
    let repo = git_fixture("fixtures/heal");
    let root = repo.path();
    let before = tree(root);
    let (code, stdout, stderr) = run(agency().current_dir(root).args(["heal", "--dry-run"]));
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(stdout.contains("--- a/shop/cart.py\n"), "{stdout}");
    assert!(stdout.contains("-import os\n"), "{stdout}");
    assert!(stdout.contains("strategy: rule"), "{stdout}");
    assert!(stdout.contains("nothing written"), "{stdout}");
    assert_eq!(tree(root), before, "a dry run wrote to the repository");

    // Off a terminal and without --yes, heal previews as --dry-run does, and says so.
    let (code, doc, stderr) = heal_json(root, &[]);
    assert_eq!(code, 1);
    assert!(stderr.contains("not on a terminal"), "{stderr}");
    assert_eq!(doc["summary"]["dry_run"], true);
    assert_eq!(doc["summary"]["healed"], 0);
    assert!(
        heal_of(&doc, "shop/cart.py")["diff"]
            .as_str()
            .unwrap()
            .contains("-import os\n")
    );
    assert_eq!(tree(root), before, "a preview wrote to the repository");
}

#[test]
fn a_file_edited_during_the_run_is_a_conflict_not_overwritten() {
    let repo = git_fixture("fixtures/heal");
    let root = std::fs::canonicalize(repo.path()).unwrap();
    let cart = root.join("shop/cart.py");
    let pytest = home().join("venv/bin/pytest");
    // The verify command plays the user: it edits the real file while the heal runs.
    let command = format!(
        "sh -c \"echo '# user edit' >> {} && {} -q\"",
        cart.display(),
        pytest.display()
    );
    std::fs::write(
        root.join("agency.toml"),
        format!("[verify]\ncommand = {}\n", Value::String(command)),
    )
    .unwrap();
    let (code, doc, stderr) = heal_json(&root, &["--yes"]);
    assert_eq!(code, 1, "{doc:#}\n{stderr}");
    let heal = heal_of(&doc, "shop/cart.py");
    assert_eq!(heal["status"], "skipped", "{heal:#}");
    assert_eq!(heal["verification"]["tests"], "passed", "{heal:#}");
    assert!(
        heal["reason"]
            .as_str()
            .unwrap()
            .contains("conflict: shop/cart.py changed during the run"),
        "{heal:#}"
    );
    let text = std::fs::read_to_string(&cart).unwrap();
    assert!(
        text.contains("import os\n"),
        "the fix overwrote the user's edit:\n{text}"
    );
    assert!(text.ends_with("# user edit\n"), "{text}");
}

#[test]
fn require_green_refuses_to_heal_a_failing_suite() {
    let repo = git_fixture("fixtures/heal");
    let root = repo.path();
    std::fs::write(
        root.join("tests/test_cart.py"),
        "from shop.cart import total\n\n\ndef test_total() -> None:\n    assert total([1.0]) == 3.0\n",
    )
    .unwrap();
    let before = user_files(root);
    let (code, stdout, stderr) =
        run(agency()
            .current_dir(root)
            .args(["heal", "--yes", "--require-green"]));
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(stderr.contains("already fails"), "{stderr}");
    assert!(
        stderr.contains("tests/test_cart.py::test_total"),
        "{stderr}"
    );
    assert_eq!(user_files(root), before);
    assert!(audit_records(root).is_empty());
}

#[test]
fn fixes_in_one_file_build_on_each_other() {
    let repo = git_fixture("fixtures/heal");
    let root = repo.path();
    // E401's fix splits line 5, which gives its two F401s new ids; they must still be found
    // and fixed, with positions from the file as the earlier fixes left it.
    std::fs::write(
        root.join("shop/cart.py"),
        "\"\"\"Shopping cart totals.\"\"\"\n\nimport os\nimport sys\nimport json, re\n\n\ndef total(prices: list[float]) -> float:\n    \"\"\"The sum of the prices.\"\"\"\n    return sum(prices)\n",
    )
    .unwrap();
    git(root, &["commit", "-q", "-am", "more unused imports"]);
    let (code, doc, stderr) = heal_json(root, &["--yes", "--tools", "ruff"]);
    assert_eq!(code, 1, "{doc:#}\n{stderr}");
    let cart: Vec<&Value> = doc["heals"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["finding"]["file"] == "shop/cart.py")
        .collect();
    assert_eq!(cart.len(), 5, "{doc:#}");
    for heal in &cart {
        assert_eq!(heal["status"], "healed", "{heal:#}");
    }
    assert_eq!(
        std::fs::read_to_string(root.join("shop/cart.py")).unwrap(),
        CART_HEALED
    );
}

#[test]
fn a_verify_command_that_hangs_is_killed_and_nothing_is_kept() {
    let repo = git_fixture("fixtures/heal");
    let root = repo.path();
    std::fs::write(
        root.join("agency.toml"),
        "[verify]\ncommand = \"sh -c 'sleep 60 & sleep 60'\"\ntimeout_s = 1\n",
    )
    .unwrap();
    let before = user_files(root);
    let (code, doc, stderr) = heal_json(root, &["--yes", "--tools", "ruff"]);
    assert_eq!(code, 1, "{doc:#}\n{stderr}");
    assert!(stderr.contains("timed out"), "{stderr}");
    for heal in doc["heals"].as_array().unwrap() {
        assert_eq!(heal["status"], "rolled_back", "{heal:#}");
        assert!(
            heal["reason"].as_str().unwrap().contains("timed out"),
            "{heal:#}"
        );
    }
    assert_eq!(user_files(root), before);
    let records = audit_records(root);
    assert!(
        records
            .iter()
            .all(|r| r["verification"]["timed_out"] == true)
    );
}

#[test]
fn the_audit_trail_redacts_secrets() {
    // The demo repository hardcodes an AWS access key id (AGY203) in shop/settings.py.
    let repo = git_fixture("fixtures/demo-repo");
    let root = repo.path();
    let (code, _, stderr) = run(agency().current_dir(root).args(["heal", "--yes"]));
    assert_eq!(code, 1, "{stderr}");
    let records = audit_records(root);
    assert!(
        records.iter().any(|r| r["finding"]["rule"] == "AGY203"),
        "{records:#?}"
    );
    for record in &records {
        let text = record.to_string();
        assert!(!text.contains("AKIA"), "{text}");
    }
}

/// The heals' (file, line, rule, status), sorted.
fn statuses(doc: &Value) -> Vec<(String, u64, String, String)> {
    let mut out: Vec<_> = doc["heals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["finding"]["file"].as_str().unwrap().to_string(),
                h["finding"]["line"].as_u64().unwrap(),
                h["finding"]["rule"].as_str().unwrap().to_string(),
                h["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn batching_verifies_many_fixes_with_fewer_suite_runs_and_the_same_outcome() {
    // Twelve F401 fixes; the one in shop/app.py breaks tests/test_app.py.
    let batched = git_fixture("fixtures/heal-batch");
    let single = git_fixture("fixtures/heal-batch");
    let (code, doc_batched, stderr) = heal_json(batched.path(), &["--yes", "--tools", "ruff"]);
    assert_eq!(code, 1, "{doc_batched:#}\n{stderr}");
    let (code, doc_single, stderr) =
        heal_json(single.path(), &["--yes", "--tools", "ruff", "--no-batch"]);
    assert_eq!(code, 1, "{doc_single:#}\n{stderr}");

    // Batched, fixes of different files are made on five workers; one by one, on one.
    let outcome = statuses(&doc_batched);
    assert_eq!(outcome, statuses(&doc_single));
    assert_eq!(user_files(batched.path()), user_files(single.path()));
    let rolled_back: Vec<_> = outcome.iter().filter(|h| h.3 == "rolled_back").collect();
    assert_eq!(
        rolled_back,
        [&(
            "shop/app.py".to_string(),
            3,
            "F401".to_string(),
            "rolled_back".to_string()
        )]
    );
    assert_eq!(
        outcome.iter().filter(|h| h.3 == "healed").count(),
        11,
        "{outcome:?}"
    );
    let app = heal_of(&doc_batched, "shop/app.py");
    assert!(
        app["reason"]
            .as_str()
            .unwrap()
            .contains("tests/test_app.py::test_discount_is_registered"),
        "{app:#}"
    );
    assert_eq!(user_files(batched.path()), user_files(single.path()));

    let runs_batched = doc_batched["summary"]["suite_runs"].as_u64().unwrap();
    let runs_single = doc_single["summary"]["suite_runs"].as_u64().unwrap();
    // Without batching: the run before any fix, then one per fix.
    assert_eq!(runs_single, 13);
    assert!(
        runs_batched < runs_single,
        "suite runs: {runs_batched} batched, {runs_single} one per fix"
    );

    // The audit trail says how many fixes the verifying run covered.
    let records = audit_records(batched.path());
    let sizes: Vec<u64> = records
        .iter()
        .filter(|r| r["status"] == "healed")
        .map(|r| r["verification"]["batch"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes.len(), 11);
    assert!(sizes.iter().any(|&n| n > 1), "{sizes:?}");
    let rolled = records
        .iter()
        .find(|r| r["status"] == "rolled_back")
        .unwrap();
    assert!(
        rolled["verification"]["output"]
            .as_str()
            .unwrap()
            .contains("FAILED tests/test_app.py::test_discount_is_registered"),
        "{rolled:#}"
    );
    for record in audit_records(single.path()) {
        assert_eq!(record["verification"]["batch"], 1, "{record:#}");
    }
}

#[test]
fn a_fix_made_on_top_of_a_breaking_one_is_rolled_back_with_it_when_batched() {
    let repo = git_fixture("fixtures/heal");
    let root = repo.path();
    // Two F401s in shop/app.py: the first fix breaks test_app; the second one's edits are
    // computed on the text without the first import.
    std::fs::write(
        root.join("shop/app.py"),
        "\"\"\"The application: importing it loads every handler.\"\"\"\n\nimport shop.discounts\nimport os\n\n\ndef handler_names() -> list[str]:\n    \"\"\"The names of the registered handlers.\"\"\"\n    from shop.registry import HANDLERS\n\n    return sorted(HANDLERS)\n",
    )
    .unwrap();
    git(root, &["commit", "-q", "-am", "one more unused import"]);
    let before = std::fs::read(root.join("shop/app.py")).unwrap();
    let (code, doc, stderr) = heal_json(root, &["--yes", "--tools", "ruff"]);
    assert_eq!(code, 1, "{doc:#}\n{stderr}");
    let app: Vec<&Value> = doc["heals"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["finding"]["file"] == "shop/app.py")
        .collect();
    assert_eq!(app.len(), 2, "{doc:#}");
    for heal in &app {
        assert_eq!(heal["status"], "rolled_back", "{heal:#}");
    }
    let os = app.iter().find(|h| h["finding"]["line"] == 4).unwrap();
    assert!(
        os["reason"]
            .as_str()
            .unwrap()
            .starts_with("built on a fix that broke the tests (F401 at shop/app.py:3)"),
        "{os:#}"
    );
    assert_eq!(heal_of(&doc, "shop/cart.py")["status"], "healed");
    assert_eq!(std::fs::read(root.join("shop/app.py")).unwrap(), before);
    assert_eq!(
        std::fs::read_to_string(root.join("shop/cart.py")).unwrap(),
        CART_HEALED
    );
}

#[test]
fn ruff_format_formats_last_what_the_other_fixes_leave() {
    let repo = git_fixture("fixtures/heal-format");
    let root = repo.path();
    let (code, doc, stderr) = heal_json(root, &["--yes", "--tools", "ruff"]);
    assert_eq!(code, 0, "{doc:#}\n{stderr}");
    let heals = doc["heals"].as_array().unwrap();
    let rules: Vec<(&str, &str)> = heals
        .iter()
        .map(|h| {
            (
                h["finding"]["rule"].as_str().unwrap(),
                h["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(rules.contains(&("F401", "healed")), "{doc:#}");
    assert!(rules.contains(&("format", "healed")), "{doc:#}");
    // What is left is exactly ruff's formatting of the file without the import.
    let healed = std::fs::read_to_string(root.join("shop/prices.py")).unwrap();
    assert!(!healed.contains("import os"), "{healed}");
    let (code, stdout, stderr) = run(std::process::Command::new(home().join("venv/bin/ruff"))
        .current_dir(root)
        .args(["format", "--diff", "shop/prices.py"]));
    assert_eq!(code, 0, "ruff would still format it:\n{stdout}{stderr}");
    assert_eq!(
        healed,
        "\"\"\"Prices with tax.\"\"\"\n\nRATES = {\"standard\": 0.2, \"reduced\": 0.05}\n\n\ndef with_tax(price: float, kind: str = \"standard\") -> float:\n    \"\"\"The price with the kind's tax rate.\"\"\"\n    return round(price * (1 + RATES[kind]), 2)\n"
    );
}

#[test]
fn bench_heal_measures_both_modes_on_copies_and_writes_nothing() {
    let repo = git_fixture("fixtures/heal-batch");
    let root = repo.path();
    let before = user_files(root);
    let (code, stdout, stderr) = run(agency()
        .args(["bench", "heal", "--json", "--tools", "ruff"])
        .arg(root));
    assert_eq!(code, 0, "{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    let modes = doc["modes"].as_array().unwrap();
    assert_eq!(modes[0]["mode"], "batched");
    assert_eq!(modes[1]["mode"], "one_run_per_fix");
    for m in modes {
        assert_eq!(m["healed"], 11, "{m:#}");
        assert_eq!(m["rolled_back"], 1, "{m:#}");
        assert_eq!(m["heal_latency"]["samples"], 11, "{m:#}");
    }
    // One run before any fix plus one per fix, against the batch and its bisection.
    assert_eq!(modes[1]["suite_runs"], 13);
    assert!(
        modes[0]["suite_runs"].as_u64().unwrap() < 13,
        "{:#}",
        modes[0]
    );
    assert!(doc["suite_run_ratio"].as_f64().unwrap() > 1.0);
    assert_eq!(user_files(root), before);
}

#[test]
fn a_relative_agency_home_is_the_same_directory_in_the_copy_a_heal_verifies_in() {
    // The repository two levels below a temporary directory, so that the relative path to the
    // home means another directory from the copy a heal verifies in.
    let outer = tempfile::tempdir().unwrap();
    let root = outer.path().join("work/shop");
    crate::util::copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/heal"),
        &root,
    );
    git(&root, &["init", "-q", "-b", "main"]);
    git(&root, &["add", "-A"]);
    git(&root, &["commit", "-q", "-m", "fixture"]);
    let home = crate::util::private_home();
    assert_eq!(home.path().parent(), outer.path().parent());
    let relative = Path::new("../../..").join(home.path().file_name().unwrap());
    assert!(root.join(&relative).join("venv/bin/pytest").exists());
    let (code, stdout, stderr) = run(crate::util::agency_at(&relative)
        .current_dir(&root)
        .args(["heal", "--json", "--yes", "--tools", "ruff"]));
    let doc: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\nstderr: {stderr}"));
    assert_eq!(code, 1, "{doc:#}\n{stderr}");
    let heals = doc["heals"].as_array().unwrap();
    assert!(
        heals.iter().any(|h| h["status"] == "healed"),
        "the suite must run in the copy with the relative home's pytest: {doc:#}\n{stderr}"
    );
}
