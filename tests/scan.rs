//! End-to-end tests of `agency heal --scan` and `agency baseline` on a copy of the bundled demo
//! repository, with the real ruff, mypy and bandit from `agency setup`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::util::{agency, git, git_fixture, run};

/// A git repository holding a copy of `fixtures/demo-repo`, committed.
fn demo_repo() -> tempfile::TempDir {
    git_fixture("fixtures/demo-repo")
}

/// `agency heal --scan --json ARGS` in `dir`: (exit code, document, stderr).
fn scan_json(dir: &Path, args: &[&str]) -> (i32, Value, String) {
    let (code, stdout, stderr) = run(agency()
        .current_dir(dir)
        .args(["heal", "--scan", "--json"])
        .args(args));
    let doc: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\nstderr: {stderr}"));
    (code, doc, stderr)
}

fn findings(doc: &Value) -> Vec<(String, String, u64)> {
    doc["findings"]
        .as_array()
        .expect("findings array")
        .iter()
        .map(|f| {
            (
                f["rule"].as_str().unwrap().to_string(),
                f["file"].as_str().unwrap().to_string(),
                f["line"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Every file under `dir` (but `.git` and `.agency`) with its bytes.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name();
            if name == ".git" || name == ".agency" {
                continue;
            }
            let ty = entry.file_type().unwrap();
            if ty.is_dir() {
                stack.push(entry.path());
            } else if ty.is_file() {
                out.insert(entry.path(), std::fs::read(entry.path()).unwrap());
            }
        }
    }
    out
}

#[test]
fn scan_reports_every_category_in_the_contract_and_writes_no_source() {
    let repo = demo_repo();
    let before = tree(repo.path());
    let (code, doc, stderr) = scan_json(repo.path(), &[]);
    assert_eq!(
        code, 1,
        "P0/P1 findings remain, so exit 1; stderr: {stderr}"
    );
    assert_eq!(doc["version"], 1);
    assert_eq!(
        tree(repo.path()),
        before,
        "a scan must not write source files"
    );
    let got = findings(&doc);
    for (rule, file) in [
        ("AGY201", "shop/db.py"),
        ("AGY304", "shop/db.py"),
        ("AGY203", "shop/settings.py"),
        ("AGY102", "shop/util.py"),
        ("AGY305", "shop/util.py"),
        ("F401", "shop/util.py"),
        ("AGY301", "shop/report.py"),
        ("AGY302", "shop/report.py"),
        ("AGY401", "shop/report.py"),
        ("AGY101", "shop/customers.py"),
        ("union-attr", "shop/orders.py"),
    ] {
        assert!(
            got.iter().any(|(r, f, _)| r == rule && f == file),
            "missing {rule} in {file}: {got:?}"
        );
    }
    let categories: std::collections::BTreeSet<&str> = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["category"].as_str().unwrap())
        .collect();
    for category in ["type", "import", "security", "performance", "logic"] {
        assert!(categories.contains(category), "no {category} finding");
    }
    for f in doc["findings"].as_array().unwrap() {
        for key in [
            "id", "category", "rule", "tool", "priority", "severity", "file", "line", "column",
            "message", "fix",
        ] {
            assert!(!f[key].is_null(), "finding without {key}: {f}");
        }
        assert!(f["fix"]["available"].is_boolean());
        assert!(f["fix"]["approval_required"].is_boolean());
        let expected_priority = match f["category"].as_str().unwrap() {
            "security" => "P0",
            "type" | "import" | "runtime" => "P1",
            "performance" | "logic" => "P2",
            _ => "P3",
        };
        assert_eq!(f["priority"], expected_priority, "{f}");
    }
    // The F401 from ruff carries ruff's safe fix.
    let f401 = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == "F401")
        .unwrap();
    assert_eq!(f401["fix"]["available"], true);
    assert_eq!(f401["fix"]["approval_required"], false);
    assert!(doc["stats"]["files_scanned"].as_u64().unwrap() >= 9);
    assert!(doc["stats"]["duration_ms"].is_u64());
    let tools: Vec<(&str, &str)> = doc["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["tool"].as_str().unwrap(), t["status"].as_str().unwrap()))
        .collect();
    assert_eq!(tools, [("ruff", "ok"), ("mypy", "ok"), ("bandit", "ok")]);
    // Merged across tools: bandit reports the SQL injection where the f-string is built, agency
    // at the `execute` it reaches (naming the build line): one finding, both sources, no B608
    // left on its own. The missing `json` import is ruff's F821 too.
    let sources_of = |rule: &str| -> Vec<String> {
        doc["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["rule"] == rule)
            .unwrap_or_else(|| panic!("no {rule} finding"))["sources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                format!(
                    "{} {}",
                    s["tool"].as_str().unwrap(),
                    s["rule"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert_eq!(sources_of("AGY201"), ["agency AGY201", "bandit B608"]);
    assert!(
        !doc["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["rule"] == "B608")
    );
    assert_eq!(sources_of("AGY102"), ["agency AGY102", "ruff F821"]);
}

#[test]
fn ids_survive_edits_above_and_fail_on_sets_the_exit_code() {
    let repo = demo_repo();
    let (_, first, _) = scan_json(repo.path(), &["--tools", "none"]);
    let util = repo.path().join("shop/util.py");
    let text = std::fs::read_to_string(&util).unwrap();
    std::fs::write(&util, format!("# a comment\n\n\n{text}")).unwrap();
    let (_, second, _) = scan_json(repo.path(), &["--tools", "none"]);
    let ids = |doc: &Value, file: &str| -> Vec<String> {
        doc["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["file"] == file)
            .map(|f| f["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&first, "shop/util.py"), ids(&second, "shop/util.py"));
    let lines = |doc: &Value| -> Vec<u64> {
        doc["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["file"] == "shop/util.py")
            .map(|f| f["line"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(
        lines(&first).iter().map(|l| l + 3).collect::<Vec<_>>(),
        lines(&second)
    );
    // Only P2 findings in report.py: P1 passes, P2 fails.
    let (code, _, _) = scan_json(repo.path(), &["--tools", "none", "shop/report.py"]);
    assert_eq!(code, 0);
    let (code, _, _) = scan_json(
        repo.path(),
        &["--tools", "none", "--fail-on", "P2", "shop/report.py"],
    );
    assert_eq!(code, 1);
}

#[test]
fn baseline_hides_known_findings_and_reports_new_ones() {
    let repo = demo_repo();
    let (code, stdout, stderr) = run(agency()
        .current_dir(repo.path())
        .args(["baseline", "create", "--json"]));
    assert_eq!(code, 0, "{stderr}");
    let created: Value = serde_json::from_str(&stdout).unwrap();
    assert!(created["findings"].as_u64().unwrap() > 5);
    let baseline = repo.path().join(".agency/baseline.json");
    assert!(baseline.is_file());
    let (code, _, stderr) = run(agency()
        .current_dir(repo.path())
        .args(["baseline", "create"]));
    assert_eq!(code, 2, "create refuses to overwrite");
    assert!(stderr.contains("agency baseline update"), "{stderr}");

    let (code, doc, _) = scan_json(repo.path(), &["--baseline", ".agency/baseline.json"]);
    assert_eq!(code, 0, "{doc}");
    assert!(findings(&doc).is_empty(), "{doc}");
    assert!(doc["stats"]["baselined"].as_u64().unwrap() > 5);

    let report = repo.path().join("shop/report.py");
    let mut text = std::fs::read_to_string(&report).unwrap();
    text.push_str("\n\ndef first(values):\n    return sorted(values)[-1]\n");
    std::fs::write(&report, text).unwrap();
    let (_, doc, _) = scan_json(repo.path(), &["--baseline", ".agency/baseline.json"]);
    assert_eq!(
        findings(&doc),
        [("AGY305".to_string(), "shop/report.py".to_string(), 26)]
    );
}

#[test]
fn incremental_scans_cover_only_changed_staged_or_since_files() {
    let repo = demo_repo();
    let report = repo.path().join("shop/report.py");
    let text = std::fs::read_to_string(&report).unwrap();
    std::fs::write(&report, format!("{text}\n# touched\n")).unwrap();
    let (_, doc, stderr) = scan_json(repo.path(), &["--changed", "--tools", "none"]);
    assert_eq!(doc["stats"]["files_scanned"], 1, "{stderr}");
    assert!(findings(&doc).iter().all(|(_, f, _)| f == "shop/report.py"));
    assert!(!findings(&doc).is_empty());

    let (_, doc, _) = scan_json(repo.path(), &["--staged", "--tools", "none"]);
    assert_eq!(doc["stats"]["files_scanned"], 0);
    git(repo.path(), &["add", "shop/report.py"]);
    let (_, doc, _) = scan_json(repo.path(), &["--staged", "--tools", "none"]);
    assert_eq!(doc["stats"]["files_scanned"], 1);

    git(repo.path(), &["commit", "-q", "-m", "touch"]);
    let (_, doc, _) = scan_json(repo.path(), &["--since", "HEAD~1", "--tools", "none"]);
    assert_eq!(doc["stats"]["files_scanned"], 1);
    // The import cycle through an unchanged file is still known from the whole graph.
    let customers = repo.path().join("shop/customers.py");
    let text = std::fs::read_to_string(&customers).unwrap();
    std::fs::write(&customers, format!("{text}\n")).unwrap();
    let (_, doc, _) = scan_json(repo.path(), &["--changed", "--tools", "none"]);
    assert!(
        findings(&doc).iter().any(|(r, _, _)| r == "AGY101"),
        "{doc}"
    );
    let (code, _, stderr) =
        run(agency()
            .current_dir(repo.path())
            .args(["heal", "--scan", "--since", "no-such-rev"]));
    assert_eq!(code, 2);
    assert!(stderr.contains("unknown revision"), "{stderr}");
}

#[test]
fn bad_input_is_reported_and_the_scan_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("ok.py"), "import os\n").unwrap();
    std::fs::write(root.join("broken.py"), "def broken(:\n    pass\n").unwrap();
    std::fs::write(root.join("latin1.py"), b"name = '\xe9t\xe9'\n").unwrap();
    std::fs::write(root.join("binary.py"), b"\x00\x01\x02").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(root, root.join("loop")).unwrap();
    let (code, doc, stderr) = scan_json(root, &["--tools", "ruff"]);
    assert_eq!(code, 1, "{stderr}");
    let got = findings(&doc);
    assert!(got.contains(&("syntax-error".to_string(), "broken.py".to_string(), 1)));
    assert!(got.contains(&("F401".to_string(), "ok.py".to_string(), 1)));
    let skipped: Vec<&str> = doc["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["file"].as_str().unwrap())
        .collect();
    assert_eq!(skipped, ["binary.py", "latin1.py"]);

    let (code, _, stderr) = run(agency()
        .current_dir(root)
        .args(["heal", "--scan", "--changed"]));
    assert_eq!(code, 2);
    assert!(stderr.contains("not a git repository"), "{stderr}");

    let outside = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run(agency()
        .current_dir(root)
        .args(["heal", "--scan"])
        .arg(outside.path()));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("outside the repository"), "{stderr}");
}

#[test]
fn missing_tools_are_reported_and_never_invent_findings() {
    let repo = demo_repo();
    let empty_home = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = run(agency()
        .current_dir(repo.path())
        .env("AGENCY_HOME", empty_home.path())
        .env_remove("VIRTUAL_ENV")
        .args(["heal", "--scan", "--json"]));
    assert_eq!(code, 1, "{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    for tool in doc["tools"].as_array().unwrap() {
        assert_eq!(tool["status"], "missing", "{tool}");
        assert!(tool["message"].as_str().unwrap().contains("agency setup"));
    }
    assert!(stderr.contains("ruff missing"), "{stderr}");
    assert!(
        doc["findings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["tool"] == "agency")
    );
    assert!(!doc["findings"].as_array().unwrap().is_empty());

    // A tool that prints garbage is `failed`, with no findings from it.
    let fake = repo.path().join("fake-ruff");
    std::fs::write(&fake, "#!/bin/sh\necho 'this is not json'\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::write(
        repo.path().join("agency.toml"),
        format!("[scan.tools]\nruff = \"{}\"\n", fake.display()),
    )
    .unwrap();
    let (_, doc, _) = scan_json(repo.path(), &["--tools", "ruff"]);
    assert_eq!(doc["tools"][0]["status"], "failed");
    assert!(
        doc["findings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["tool"] == "agency")
    );
}

#[test]
fn suppression_comments_hide_findings() {
    let repo = demo_repo();
    let util = repo.path().join("shop/util.py");
    let text = std::fs::read_to_string(&util)
        .unwrap()
        .replace("import os\n", "import os  # noqa: F401\n")
        .replace(
            "return sorted(prices)[0]",
            "return sorted(prices)[0]  # agency: ignore[AGY305]",
        );
    std::fs::write(&util, text).unwrap();
    let settings = repo.path().join("shop/settings.py");
    let text = std::fs::read_to_string(&settings)
        .unwrap()
        .replace("EXAMPL3\"", "EXAMPL3\"  # nosec");
    std::fs::write(&settings, text).unwrap();
    let (_, doc, _) = scan_json(repo.path(), &["--tools", "ruff"]);
    let got = findings(&doc);
    assert!(
        !got.iter()
            .any(|(r, _, _)| r == "F401" || r == "AGY305" || r == "AGY203"),
        "{got:?}"
    );
    assert!(
        got.iter().any(|(r, _, _)| r == "AGY102"),
        "other findings stay"
    );
    // ruff honours `# noqa` itself and never reports the F401; agency hides the other two.
    assert_eq!(doc["stats"]["suppressed"], 2);
}

#[test]
fn sarif_output_names_rules_locations_and_fingerprints() {
    let repo = demo_repo();
    let (code, stdout, stderr) = run(agency()
        .current_dir(repo.path())
        .args(["heal", "--scan", "--sarif", "--tools", "none"]));
    assert_eq!(code, 1, "{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["version"], "2.1.0");
    let run = &doc["runs"][0];
    let rules: Vec<&str> = run["tool"]["driver"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    let results = run["results"].as_array().unwrap();
    assert!(!results.is_empty());
    for result in results {
        assert!(rules.contains(&result["ruleId"].as_str().unwrap()));
        assert!(result["partialFingerprints"]["agencyFindingId/v1"].is_string());
        let location = &result["locations"][0]["physicalLocation"];
        assert!(
            !location["artifactLocation"]["uri"]
                .as_str()
                .unwrap()
                .starts_with('/')
        );
        assert!(location["region"]["startLine"].as_u64().unwrap() >= 1);
    }
}

#[test]
fn from_log_maps_container_tracebacks_to_repository_findings() {
    let repo = demo_repo();
    let log = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/logs/shop-production.log");
    let (code, doc, stderr) = scan_json(repo.path(), &["--from-log", log.to_str().unwrap()]);
    // Runtime errors are P1: the default threshold fails.
    assert_eq!(code, 1, "{stderr}");
    let got: Vec<(String, String, u64, String, String)> = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            assert_eq!(f["category"], "runtime", "{f}");
            assert_eq!(f["tool"], "agency", "{f}");
            (
                f["rule"].as_str().unwrap().to_string(),
                f["file"].as_str().unwrap().to_string(),
                f["line"].as_u64().unwrap(),
                f["priority"].as_str().unwrap().to_string(),
                f["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let summary: Vec<(&str, &str, u64, &str)> = got
        .iter()
        .map(|(r, f, l, p, _)| (r.as_str(), f.as_str(), *l, p.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("none-attribute", "shop/orders.py", 14, "P1"),
            ("none-iteration", "shop/report.py", 9, "P1"),
            ("KeyError", "shop/report.py", 20, "P1"),
        ],
        "{doc:#}"
    );
    assert!(
        got[0].4.starts_with(
            "`customers.lookup(order[\"customer_id\"])` was None when `.upper` was read"
        ),
        "{}",
        got[0].4
    );
    assert!(
        got[0].4.ends_with("(seen 2 times in the log)"),
        "{}",
        got[0].4
    );
    assert!(
        got[1]
            .4
            .starts_with("`customers` was None when it was iterated"),
        "{}",
        got[1].4
    );
    // The traceback from the standard library alone is said, not invented into a finding.
    assert!(
        stderr.contains("1 of 5 tracebacks have no frame in this repository"),
        "{stderr}"
    );

    // The same log on standard input gives the same document (timings aside).
    let text = std::fs::read(&log).unwrap();
    let mut child = agency()
        .current_dir(repo.path())
        .args(["heal", "--scan", "--json", "--from-log", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &text).unwrap();
    let out = child.wait_with_output().unwrap();
    let piped: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(piped["findings"], doc["findings"]);

    // A suppression comment on the failing line hides the runtime finding like any other.
    let orders = repo.path().join("shop/orders.py");
    let source = std::fs::read_to_string(&orders)
        .unwrap()
        .replace(".upper()\n", ".upper()  # agency: ignore[none-attribute]\n");
    std::fs::write(&orders, source).unwrap();
    let (_, doc, _) = scan_json(repo.path(), &["--from-log", log.to_str().unwrap()]);
    assert_eq!(doc["findings"].as_array().unwrap().len(), 2, "{doc:#}");
    assert_eq!(doc["stats"]["suppressed"], 1);

    let (code, _, stderr) = run(agency().current_dir(repo.path()).args([
        "heal",
        "--scan",
        "--from-log",
        "missing.log",
    ]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("cannot read the log missing.log"),
        "{stderr}"
    );
}

#[test]
fn bandit_results_are_cached_per_file_and_redone_for_changed_files() {
    let repo = demo_repo();
    let bandit_run = |doc: &Value| {
        doc["tools"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["tool"] == "bandit")
            .cloned()
            .unwrap()
    };
    let bandit_findings = |doc: &Value| -> Vec<(String, String, u64)> {
        findings(doc)
            .into_iter()
            .filter(|(rule, _, _)| rule.starts_with('B') || rule.starts_with("AGY2"))
            .collect()
    };
    let (_, first, stderr) = scan_json(repo.path(), &["--tools", "bandit"]);
    let run = bandit_run(&first);
    assert_eq!(run["status"], "ok", "{stderr}");
    assert_eq!(run["cached_files"], 0);
    let (_, second, _) = scan_json(repo.path(), &["--tools", "bandit"]);
    let files = second["stats"]["files_scanned"].as_u64().unwrap();
    assert_eq!(bandit_run(&second)["cached_files"], files);
    assert_eq!(bandit_findings(&second), bandit_findings(&first));

    // One changed file goes to bandit again; its new finding appears, the others stay.
    let util = repo.path().join("shop/util.py");
    let mut text = std::fs::read_to_string(&util).unwrap();
    text.push_str("\n\ndef load(blob):\n    import pickle\n\n    return pickle.loads(blob)\n");
    std::fs::write(&util, text).unwrap();
    let (_, third, _) = scan_json(repo.path(), &["--tools", "bandit"]);
    assert_eq!(bandit_run(&third)["cached_files"], files - 1);
    let after = bandit_findings(&third);
    assert!(
        after
            .iter()
            .any(|(rule, file, _)| rule == "B301" && file == "shop/util.py"),
        "{after:?}"
    );
    assert_eq!(after.len(), bandit_findings(&first).len() + 1, "{after:?}");

    // --no-cache runs bandit on everything and reports no cache use.
    let (_, fourth, _) = scan_json(repo.path(), &["--tools", "bandit", "--no-cache"]);
    assert!(
        bandit_run(&fourth).get("cached_files").is_none()
            || bandit_run(&fourth)["cached_files"].is_null()
    );
    assert_eq!(bandit_findings(&fourth), after);
}

#[test]
fn bandit_sql_patterns_yield_to_the_data_flow_rule_unless_bandit_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(
        root.join("report.py"),
        "TABLE = \"orders\"\n\n\ndef count(cursor):\n    cursor.execute(\"SELECT COUNT(*) FROM %s\" % TABLE)\n    return cursor.fetchone()\n",
    )
    .unwrap();
    let rules = |doc: &Value| -> Vec<String> {
        findings(doc).into_iter().map(|(rule, _, _)| rule).collect()
    };
    // The table name is a module constant: AGY201 does not flag it, so bandit's pattern match
    // on the same line is left out (and counted).
    let (_, doc, stderr) = scan_json(root, &["--tools", "bandit"]);
    assert!(!rules(&doc).iter().any(|r| r == "B608"), "{doc:#} {stderr}");
    assert_eq!(doc["stats"]["superseded"], 1, "{doc:#}");
    // A repository that configures bandit gets all of bandit's findings.
    std::fs::write(root.join(".bandit"), "skips: []\n").unwrap();
    let (_, doc, stderr) = scan_json(root, &["--tools", "bandit", "--no-cache"]);
    assert!(rules(&doc).iter().any(|r| r == "B608"), "{doc:#} {stderr}");
    assert_eq!(doc["stats"]["superseded"], 0);
}
