//! Crash safety: SIGKILL the real binary in the middle of writes, then check that every
//! acknowledged record is there, nothing is half-written, and the indexes agree.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use crate::util::{agency, record_line, run};

/// SIGKILL, as `kill -9` does (`Child::kill` sends SIGKILL on Unix).
fn kill9(child: &mut std::process::Child) {
    child.kill().expect("kill -9 the child");
}

#[test]
fn kill_during_bulk_import_imports_nothing_and_the_store_still_works() {
    let store = tempfile::tempdir().unwrap();
    let store_arg = store.path().join("s").display().to_string();
    // Seed the store first so the import is the only write in flight.
    let (code, _, stderr) = run(agency().args(["patterns", "list", "--store", &store_arg]));
    assert_eq!(code, 0, "{stderr}");
    let file = store.path().join("bulk.jsonl");
    let lines: Vec<String> = (0..300).map(record_line).collect();
    std::fs::write(&file, lines.join("\n")).unwrap();

    let mut child = agency()
        .env("AGENCY_PROGRESS", "plain")
        .args([
            "patterns",
            "import",
            &file.display().to_string(),
            "--store",
            &store_arg,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    for line in stderr.lines() {
        if line.unwrap() == "importing 150/300" {
            break;
        }
    }
    kill9(&mut child);
    child.wait().unwrap();

    let (code, stdout, stderr) =
        run(agency().args(["patterns", "list", "--json", "--store", &store_arg]));
    assert_eq!(code, 0, "{stderr}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let imported = doc["patterns"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["source"] == "import")
        .count();
    assert_eq!(
        imported, 0,
        "a killed import must not leave part of its patterns"
    );

    // The import can simply be run again, and then every pattern is there and searchable.
    let (code, _, stderr) = run(agency().args([
        "patterns",
        "import",
        &file.display().to_string(),
        "--store",
        &store_arg,
    ]));
    assert_eq!(code, 0, "{stderr}");
    let (_, stdout, _) = run(agency().args([
        "patterns",
        "query",
        "synthetic message number 123 about attribute_123",
        "--rule",
        "X0123",
        "--json",
        "--store",
        &store_arg,
    ]));
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["matches"][0]["id"], "import-synthetic-123", "{stdout}");
}

#[test]
fn kill_during_outcome_burst_keeps_every_acknowledged_outcome() {
    let store = tempfile::tempdir().unwrap();
    let store_arg = store.path().join("s").display().to_string();
    let id = "style-e711-comparison-to-none";
    let file = store.path().join("outcomes.jsonl");
    let lines: Vec<String> = (0..400)
        .map(|i| serde_json::json!({"pattern_id": id, "success": true, "idempotency_key": format!("burst-{i}")}).to_string())
        .collect();
    std::fs::write(&file, lines.join("\n")).unwrap();

    let mut child = agency()
        .args([
            "patterns",
            "outcome",
            "--batch",
            &file.display().to_string(),
            "--store",
            &store_arg,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut acked = 0;
    for line in stdout.lines() {
        let ack: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        assert_eq!(ack["recorded"], true);
        acked += 1;
        if acked == 60 {
            break;
        }
    }
    kill9(&mut child);
    child.wait().unwrap();

    let (code, stdout, stderr) =
        run(agency().args(["patterns", "show", id, "--json", "--store", &store_arg]));
    assert_eq!(code, 0, "{stderr}");
    let view: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let successes = view["successes"].as_u64().unwrap();
    assert!(
        successes >= 60,
        "acknowledged 60 outcomes, found {successes}"
    );
    assert!(
        successes < 400,
        "the burst was not interrupted ({successes})"
    );

    // Replaying the whole batch counts each outcome once: the store holds exactly 400.
    let (code, _, stderr) = run(agency().args([
        "patterns",
        "outcome",
        "--batch",
        &file.display().to_string(),
        "--store",
        &store_arg,
    ]));
    assert_eq!(code, 0, "{stderr}");
    let (_, stdout, _) =
        run(agency().args(["patterns", "show", id, "--json", "--store", &store_arg]));
    let view: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(view["successes"], 400);
}
