//! The command-line contract: JSON shape, human output, exit codes and error messages.

use crate::util::{agency, run};

fn store_arg(dir: &tempfile::TempDir) -> [String; 2] {
    ["--store".into(), dir.path().display().to_string()]
}

#[test]
fn query_json_schema() {
    let store = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = run(agency()
        .args([
            "patterns",
            "query",
            "AttributeError: 'NoneType' object has no attribute 'group'",
            "--k",
            "2",
            "--json",
        ])
        .args(store_arg(&store)));
    assert_eq!(code, 0, "{stderr}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["matches"][0]["category"], "runtime", "{stdout}");
    insta::assert_json_snapshot!(doc, {
        ".stats.duration_ms" => "[duration]",
        ".matches[].score" => "[score]",
        ".matches[].retrieval.fused" => "[fused]",
    });
}

#[test]
fn query_human_output_is_a_table() {
    let store = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = run(agency()
        .args([
            "patterns",
            "query",
            "Possible SQL injection vector",
            "--category",
            "security",
        ])
        .args(store_arg(&store)));
    assert_eq!(code, 0, "{stderr}");
    let header = stdout.lines().next().unwrap();
    assert!(
        header.starts_with("#  score  confidence  auto  rule"),
        "{stdout}"
    );
    assert!(stdout.contains("best match: security-"), "{stdout}");
}

#[test]
fn errors_exit_2_with_a_clear_message() {
    let store = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&["patterns", "query", "  "], "the query is empty"),
        (
            &["patterns", "show", "no-such-pattern"],
            "no pattern with id `no-such-pattern`",
        ),
        (
            &["patterns", "query", "x", "--category", "bugs"],
            "unknown category `bugs`",
        ),
        (
            &["patterns", "query", "x", "--k", "0"],
            "--k must be between 1 and 100",
        ),
        (
            &["patterns", "import", "/nonexistent/file.jsonl"],
            "cannot open /nonexistent/file.jsonl",
        ),
    ];
    for (args, expected) in cases {
        let (code, stdout, stderr) = run(agency().args(args).args(store_arg(&store)));
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?} printed to stdout: {stdout}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[test]
fn missing_model_says_run_agency_setup() {
    let home = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run(agency()
        .env("AGENCY_HOME", home.path())
        .args(["patterns", "query", "x"]));
    assert_eq!(code, 2);
    assert!(stderr.contains("run agency setup"), "{stderr}");
}

#[test]
fn import_reports_the_bad_line_and_imports_nothing() {
    let store = tempfile::tempdir().unwrap();
    let file = store.path().join("in.jsonl");
    let mut lines: Vec<String> = (0..4).map(crate::util::record_line).collect();
    lines[2] = lines[2].replace("\"title\"", "\"titel\"");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let (code, _, stderr) = run(agency()
        .args(["patterns", "import", &file.display().to_string()])
        .args(store_arg(&store)));
    assert_eq!(code, 2);
    assert!(stderr.contains("in.jsonl:3"), "{stderr}");
    let (code, stdout, _) = run(agency()
        .args(["patterns", "list", "--json"])
        .args(store_arg(&store)));
    assert_eq!(code, 0);
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let imported = doc["patterns"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["source"] == "import")
        .count();
    assert_eq!(imported, 0);
}

/// Issue 7: a pattern whose template is not Python is refused on import, naming the line, the
/// pattern and the parse error, and nothing of the file is imported.
#[test]
fn import_refuses_a_template_that_does_not_parse() {
    let store = tempfile::tempdir().unwrap();
    let ids = |store: &tempfile::TempDir| -> Vec<String> {
        let (code, stdout, stderr) = run(agency()
            .args(["patterns", "list", "--json"])
            .args(store_arg(store)));
        assert_eq!(code, 0, "{stderr}");
        let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        doc["patterns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_string())
            .collect()
    };
    let before = ids(&store);
    let file = store.path().join("bad.jsonl");
    let mut lines: Vec<String> = (0..4).map(crate::util::record_line).collect();
    let mut broken: serde_json::Value = serde_json::from_str(&lines[2]).unwrap();
    broken["before"] = "def (?x == None".into();
    broken["after"] = "?x is None".into();
    lines[2] = broken.to_string();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let (code, _, stderr) = run(agency()
        .args(["patterns", "import", &file.display().to_string()])
        .args(store_arg(&store)));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("bad.jsonl:3")
            && stderr.contains("pattern `import-synthetic-2`")
            && stderr.contains("`def (?x == None` does not parse"),
        "{stderr}"
    );
    assert_eq!(ids(&store), before);
    // The other lines alone import: the refusal was the template's.
    lines.remove(2);
    std::fs::write(&file, lines.join("\n")).unwrap();
    let (code, _, stderr) = run(agency()
        .args(["patterns", "import", &file.display().to_string()])
        .args(store_arg(&store)));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(ids(&store).len(), before.len() + 3);
}

/// `patterns stats` replays the recorded outcomes at the confidence each was recorded at
/// (LEARNING.md §8 check 7).
#[test]
fn stats_report_the_calibration_of_recorded_outcomes() {
    let store = tempfile::tempdir().unwrap();
    let id = "style-e711-comparison-to-none";
    let (code, stdout, stderr) = run(agency()
        .args(["patterns", "show", id, "--json"])
        .args(store_arg(&store)));
    assert_eq!(code, 0, "{stderr}");
    let view: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let first_confidence = view["confidence"].as_f64().unwrap();
    for i in 0..3 {
        let (code, _, stderr) = run(agency()
            .args(["patterns", "outcome", id, "--success", "--json"])
            .args(["--idempotency-key", &format!("k{i}")])
            .args(store_arg(&store)));
        assert_eq!(code, 0, "{stderr}");
    }
    let (code, stdout, stderr) = run(agency()
        .args(["patterns", "stats", "--json"])
        .args(store_arg(&store)));
    assert_eq!(code, 0, "{stderr}");
    let stats: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let calibration = &stats["calibration"];
    assert_eq!(calibration["outcomes"], 3, "{stats:#}");
    assert_eq!(calibration["patterns"], 1, "{stats:#}");
    let buckets = calibration["buckets"].as_array().unwrap();
    let total: u64 = buckets
        .iter()
        .map(|b| b["outcomes"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 3, "{stats:#}");
    // The first outcome was recorded at the confidence `show` reported just before it.
    let first = buckets
        .iter()
        .find(|b| b["outcomes"].as_u64().unwrap() > 0)
        .unwrap();
    assert!(
        first["min"].as_f64().unwrap() <= first_confidence
            && (first_confidence < first["max"].as_f64().unwrap()
                || first["max"].as_f64().unwrap() >= 1.0),
        "{first_confidence} {stats:#}"
    );
    // All three succeeded: a bucket with outcomes has a success rate of 1.
    assert!(
        buckets
            .iter()
            .filter(|b| b["outcomes"].as_u64().unwrap() > 0)
            .all(|b| b["success_rate"] == 1.0)
    );
    let top_outcomes = buckets[3]["outcomes"].as_u64().unwrap();
    assert_eq!(
        calibration["calibrated"].is_null(),
        top_outcomes == 0,
        "{stats:#}"
    );
    let (code, stdout, stderr) = run(agency().args(["patterns", "stats"]).args(store_arg(&store)));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("calibration (3 outcomes of 1 patterns"),
        "{stdout}"
    );
}

#[test]
fn outcomes_move_confidence_and_prune_retires() {
    let store = tempfile::tempdir().unwrap();
    let id = "style-e711-comparison-to-none";
    let mut last = serde_json::Value::Null;
    for i in 0..5 {
        let (code, stdout, stderr) = run(agency()
            .args(["patterns", "outcome", id, "--failure", "--json"])
            .args(["--idempotency-key", &format!("k{i}")])
            .args(store_arg(&store)));
        assert_eq!(code, 0, "{stderr}");
        last = serde_json::from_str(&stdout).unwrap();
    }
    assert!(last["retired"].is_string(), "{last}");
    let (_, stdout, _) = run(agency()
        .args(["patterns", "show", id, "--json"])
        .args(store_arg(&store)));
    let view: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(view["failures"], 5);
    assert!(
        view["retired"]["reason"]
            .as_str()
            .unwrap()
            .contains("5 of 5 attempts failed")
    );
    let (code, stdout, _) = run(agency()
        .args(["patterns", "prune", "--json"])
        .args(store_arg(&store)));
    assert_eq!(code, 0);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["retired"].as_array().unwrap().len(), 0);
}
