//! The healer's client (`agency_client`) against the real `agency serve` on an ephemeral
//! loopback port: every endpoint, the error statuses, idempotency, the fallback to the local
//! store, `--url` output equal to the in-process output, and acknowledged writes from several
//! concurrent clients surviving a kill -9 of the server.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;

use agency_client::{
    HttpClient, HttpOptions, LearnRequest, OutcomeRequest, PatternClient, QueryRequest,
};
use serde_json::Value;

use crate::util::{Server, agency, run, token};

const E711: &str = "style-e711-comparison-to-none";
const E711_TEXT: &str = "Comparison to `None` should be `cond is None`";

fn http_client(server: &Server, token: Option<String>) -> HttpClient {
    HttpClient::new(&server.url, token, HttpOptions::default()).expect("a valid URL")
}

/// `agency` run from `cwd` with no service configured from the environment, so that only the
/// flags and files of the test decide.
fn agency_in(cwd: &Path) -> Command {
    let mut cmd = agency();
    cmd.current_dir(cwd)
        .env_remove("AGENCY_PATTERNS_URL")
        .env_remove("AGENCY_PATTERNS_TOKEN");
    cmd
}

/// A URL where nothing listens: a port that was just bound and released.
fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

fn learn_request(id: &str) -> LearnRequest {
    LearnRequest {
        version: None,
        id: id.into(),
        category: "runtime".into(),
        rule: "none-attribute".into(),
        title: "Guard a regex match before calling group".into(),
        message: "AttributeError: 'NoneType' object has no attribute 'group'".into(),
        explanation: String::new(),
        applicability: "safe".into(),
        before: "?m.group(?n)".into(),
        after: "?m.group(?n) if ?m else None".into(),
        examples: vec![agency_client::wire::ExampleRequest {
            before: "name = match.group(1)\n".into(),
            after: "name = match.group(1) if match else None\n".into(),
            source: "heal".into(),
        }],
        source: "heal".into(),
    }
}

#[test]
fn every_endpoint_through_the_http_client() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("s"));
    let client = http_client(&server, Some(token()));

    let health = client.health().unwrap();
    assert!(health.ready);
    let seeded = health.patterns;
    assert!(seeded > 0);

    let found = client
        .query(&QueryRequest {
            category: Some("style".into()),
            k: Some(3),
            ..QueryRequest::new(E711_TEXT)
        })
        .unwrap();
    assert_eq!(found.matches[0].id, E711);
    assert_eq!(found.query.k, 3);

    let learned = client.learn(&learn_request("regex-group-guard")).unwrap();
    assert_eq!(
        (learned.id.as_str(), learned.learned.as_str()),
        ("regex-group-guard", "inserted")
    );
    // The same rewrite under another id merges into the existing pattern.
    let merged = client.learn(&learn_request("another-id")).unwrap();
    assert_eq!(
        (merged.id.as_str(), merged.learned.as_str()),
        ("regex-group-guard", "merged")
    );

    // The same outcome twice (a retry after a timeout) counts once.
    let mut outcome = OutcomeRequest::new(E711, true);
    outcome.idempotency_key = Some("client-e2e-1".into());
    outcome.finding = Some(serde_json::json!({"rule": "E711", "file": "app.py", "line": 3}));
    outcome.duration_ms = Some(840);
    let first = client.record_outcome(&outcome).unwrap();
    let again = client.record_outcome(&outcome).unwrap();
    assert!(first.recorded);
    assert!(!again.recorded);
    assert_eq!((first.successes, again.successes), (1, 1));
    assert_eq!(again.confidence.to_bits(), first.confidence.to_bits());

    let view = client.show(E711).unwrap();
    assert_eq!(view.successes, 1);
    let list = client.list().unwrap();
    assert_eq!(list.patterns.len(), seeded + 1);
    assert!(list.patterns.iter().any(|p| p.id == "regex-group-guard"));

    let stats = client.stats().unwrap();
    assert_eq!(stats.patterns.live, seeded + 1);
    // Two verified heals learned (insert, merge) and one outcome.
    assert_eq!(stats.outcomes["1h"].total, 3);

    let report = client.prune().unwrap();
    assert_eq!(report.checked, seeded + 1);
    assert!(report.retired.is_empty());

    let retired = client
        .retire("regex-group-guard", "  breaks our re wrapper ")
        .unwrap();
    let retirement = retired.retired.expect("retired");
    assert_eq!(retirement.reason, "breaks our re wrapper");
    assert!(!retired.auto_apply);
    assert_eq!(client.health().unwrap().patterns, seeded);
    // A retired rewrite is never learned again.
    let err = client.learn(&learn_request("third-id")).unwrap_err();
    assert_eq!((err.status(), err.code()), (Some(409), Some("retired")));
}

#[test]
fn refusals_over_http_carry_status_code_and_url() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("s"));
    let writer = http_client(&server, Some(token()));

    // 401: no token, and a wrong token; the hint says how to pass one.
    let outcome = OutcomeRequest::new(E711, true);
    for client in [
        http_client(&server, None),
        http_client(&server, Some("f".repeat(64))),
    ] {
        let err = client.record_outcome(&outcome).unwrap_err();
        assert_eq!(
            (err.status(), err.code()),
            (Some(401), Some("unauthorized"))
        );
        let text = err.to_string();
        assert!(
            text.contains(&format!("{}/v1/outcomes", server.url)),
            "{text}"
        );
        assert!(text.contains("token"), "{text}");
        assert_eq!(client.prune().unwrap_err().status(), Some(401));
    }
    assert_eq!(
        writer.show(E711).unwrap().successes,
        0,
        "nothing was written"
    );

    let cases = [
        (
            writer.show("no-such-pattern").unwrap_err(),
            404,
            "not_found",
        ),
        (
            writer
                .record_outcome(&OutcomeRequest::new("no-such-pattern", true))
                .unwrap_err(),
            404,
            "not_found",
        ),
        (
            writer.retire("no-such-pattern", "x").unwrap_err(),
            404,
            "not_found",
        ),
        (
            writer
                .query(&QueryRequest {
                    k: Some(0),
                    ..QueryRequest::new("x")
                })
                .unwrap_err(),
            422,
            "invalid_k",
        ),
        (
            writer.query(&QueryRequest::new("   ")).unwrap_err(),
            422,
            "empty_query",
        ),
        (
            writer.retire(E711, "  ").unwrap_err(),
            422,
            "invalid_reason",
        ),
        (
            writer
                .query(&QueryRequest::new("x".repeat(2 << 20)))
                .unwrap_err(),
            413,
            "body_too_large",
        ),
        (
            {
                let mut bad = learn_request("Bad Id!");
                bad.before = "?x".into();
                writer.learn(&bad).unwrap_err()
            },
            422,
            "invalid_pattern",
        ),
    ];
    for (err, status, code) in cases {
        assert_eq!(err.status(), Some(status), "{err}");
        assert_eq!(err.code(), Some(code), "{err}");
        assert!(err.to_string().contains(&server.url), "{err}");
    }

    // 400: bytes the client never sends (invalid UTF-8 inside a JSON string), on the wire.
    let mut stream = TcpStream::connect(server.addr).unwrap();
    let body = b"{\"text\": \"\xff\xfe\"}";
    write!(
        stream,
        "POST /v1/patterns/query HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        server.addr,
        body.len()
    )
    .unwrap();
    stream.write_all(body).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(response.contains("malformed_json"), "{response}");
    // The service is still up for everyone else.
    assert!(writer.health().unwrap().ready);
}

/// A client that sends half of its body and stalls neither blocks nor breaks the others; it
/// gets a 503 `timeout` when the service's request time limit passes.
#[test]
fn a_stalled_upload_does_not_affect_other_clients() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("s"));
    let mut stalled = TcpStream::connect(server.addr).unwrap();
    write!(
        stalled,
        "POST /v1/patterns/query HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"text\": \"Comparison",
        server.addr
    )
    .unwrap();
    stalled.flush().unwrap();

    let client = http_client(&server, None);
    let found = client.query(&QueryRequest::new(E711_TEXT)).unwrap();
    assert_eq!(found.matches[0].id, E711);
    assert!(client.health().unwrap().ready);

    let mut response = String::new();
    stalled.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    assert!(response.contains("\"timeout\""), "{response}");
    assert!(client.health().unwrap().ready);
}

/// Runs `agency patterns ARGS --json` from `cwd` and returns the document.
fn json_of(cmd: &mut Command) -> Value {
    let (code, stdout, stderr) = run(cmd);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        !stderr.contains("warning"),
        "no fallback expected: {stderr}"
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn url_output_equals_in_process_output() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s");
    let server = Server::start(&store);
    let store_arg = store.display().to_string();
    let query = [
        "patterns",
        "query",
        "AttributeError: 'NoneType' object has no attribute 'group'",
        "--k",
        "4",
        "--min-confidence",
        "0.5",
        "--json",
    ];
    let commands: [&[&str]; 4] = [
        &query,
        &["patterns", "list", "--all", "--json"],
        &["patterns", "show", E711, "--json"],
        &["patterns", "list", "--json"],
    ];
    for args in commands {
        let mut over_http = json_of(
            agency_in(dir.path())
                .args(args)
                .args(["--url", &server.url]),
        );
        let mut in_process = json_of(
            agency_in(dir.path())
                .args(args)
                .args(["--store", &store_arg]),
        );
        // Timing is the only field allowed to differ.
        for doc in [&mut over_http, &mut in_process] {
            if let Some(stats) = doc.get_mut("stats") {
                stats["duration_ms"] = Value::Null;
            }
        }
        assert_eq!(over_http, in_process, "{args:?}");
    }
    // The query really found something, so the comparison compared matches.
    let doc = json_of(
        agency_in(dir.path())
            .args(query)
            .args(["--url", &server.url]),
    );
    assert_eq!(doc["matches"][0]["category"], "runtime", "{doc}");
}

#[test]
fn prune_over_http_uses_the_local_token_file_and_reports_a_bad_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("s"));
    // A loopback URL and no token in the environment: the token file of the local service.
    let (code, stdout, stderr) =
        run(agency_in(dir.path()).args(["patterns", "prune", "--json", "--url", &server.url]));
    assert_eq!(code, 0, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert!(report["checked"].as_u64().unwrap() > 0, "{stdout}");

    let (code, stdout, stderr) = run(agency_in(dir.path())
        .env("AGENCY_PATTERNS_TOKEN", "0".repeat(64))
        .args(["patterns", "prune", "--url", &server.url]));
    assert_eq!(code, 2, "{stdout}");
    assert!(stderr.starts_with("agency: error: POST "), "{stderr}");
    assert!(stderr.contains("HTTP 401 unauthorized"), "{stderr}");
    assert!(
        stderr.contains(&format!("{}/v1/prune", server.url)),
        "{stderr}"
    );
}

#[test]
fn an_unreachable_service_falls_back_once_or_fails_when_required() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(repo.join(".git")).unwrap();
    std::fs::create_dir_all(repo.join("pkg")).unwrap();
    let store = dir.path().join("s").display().to_string();
    let (from_file, from_env, from_flag) = (dead_url(), dead_url(), dead_url());
    std::fs::write(
        repo.join("agency.toml"),
        format!("[patterns]\nurl = \"{from_file}\"\n"),
    )
    .unwrap();
    let query = [
        "patterns", "query", E711_TEXT, "--k", "1", "--json", "--store", &store,
    ];

    // Precedence: --url over AGENCY_PATTERNS_URL over [patterns] url. Each falls back to the
    // local store with exactly one warning naming the URL that was tried.
    let cases = [
        (Some(&from_flag), Some(&from_env), &from_flag),
        (None, Some(&from_env), &from_env),
        (None, None, &from_file),
    ];
    for (flag, env, tried) in cases {
        // From a subdirectory: the configuration is found at the repository root.
        let mut cmd = agency_in(&repo.join("pkg"));
        cmd.args(query);
        if let Some(url) = flag {
            cmd.args(["--url", url]);
        }
        if let Some(url) = env {
            cmd.env("AGENCY_PATTERNS_URL", url);
        }
        let (code, stdout, stderr) = run(&mut cmd);
        assert_eq!(code, 0, "{stderr}");
        let warnings: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("agency: warning: the pattern service"))
            .collect();
        assert_eq!(warnings.len(), 1, "{stderr}");
        assert!(warnings[0].contains(tried.as_str()), "{stderr}");
        assert!(warnings[0].contains("using the local store in"), "{stderr}");
        let doc: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(doc["matches"][0]["id"], E711, "{stdout}");
    }

    // --require-service, or require_service in the configuration: exit 2, a clear message,
    // nothing on stdout.
    let (code, stdout, stderr) = run(agency_in(&repo).args(query).arg("--require-service"));
    assert_eq!(code, 2, "{stdout}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains(&format!(
            "agency: error: the pattern service at {from_file} is required"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("cause: cannot reach the pattern service"),
        "{stderr}"
    );
    std::fs::write(
        repo.join("agency.toml"),
        format!("[patterns]\nurl = \"{from_file}\"\nrequire_service = true\n"),
    )
    .unwrap();
    let (code, _, stderr) = run(agency_in(&repo).args(query));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("is required"), "{stderr}");
}

/// One write a client thread sent, and whether the service acknowledged it.
#[derive(Debug, Clone)]
struct Sent {
    request: OutcomeRequest,
    acknowledged: bool,
}

#[test]
fn concurrent_acknowledged_writes_survive_kill_9_and_replay_to_the_same_confidence() {
    const THREADS: usize = 4;
    const ACKS_BEFORE_KILL: usize = 60;
    let patterns = [E711, "style-e712-comparison-to-true"];
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s");
    let token = token();
    let server = Server::start(&store);
    {
        let client = http_client(&server, None);
        for id in patterns {
            let view = client.show(id).unwrap();
            assert_eq!((view.successes, view.failures), (0, 0), "{id}");
        }
    }

    // Each thread streams outcomes until its connection fails; every acknowledgement is
    // reported on the channel, so the kill lands in the middle of the streams.
    let (acks, acked) = mpsc::channel::<()>();
    let mut threads = Vec::new();
    for t in 0..THREADS {
        let acks = acks.clone();
        // No retries: a write that fails is in doubt, not silently sent again.
        let client = HttpClient::new(
            &server.url,
            Some(token.clone()),
            HttpOptions {
                max_attempts: 1,
                ..HttpOptions::default()
            },
        )
        .unwrap();
        threads.push(std::thread::spawn(move || {
            let mut sent = Vec::new();
            for i in 0.. {
                let mut request = OutcomeRequest::new(patterns[(t + i) % 2], i % 4 != 3);
                request.idempotency_key = Some(format!("crash-{t}-{i}"));
                if let Ok(result) = client.record_outcome(&request) {
                    assert!(result.recorded);
                    sent.push(Sent {
                        request,
                        acknowledged: true,
                    });
                    let _ = acks.send(());
                } else {
                    sent.push(Sent {
                        request,
                        acknowledged: false,
                    });
                    return sent;
                }
            }
            unreachable!("the loop ends when the server is killed")
        }));
    }
    drop(acks);
    for _ in 0..ACKS_BEFORE_KILL {
        acked.recv().expect("the writers are running");
    }
    server.kill9();
    let sent: Vec<Sent> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("writer thread"))
        .collect();
    let acknowledged = sent.iter().filter(|s| s.acknowledged).count();
    assert!(acknowledged >= ACKS_BEFORE_KILL);

    let server = Server::start(&store);
    let client = http_client(&server, Some(token));
    // Every acknowledged write is there: sending it again with its key is not counted.
    for s in sent.iter().filter(|s| s.acknowledged) {
        let again = client.record_outcome(&s.request).unwrap();
        assert!(!again.recorded, "acknowledged write lost: {:?}", s.request);
    }
    // The writes in doubt (in flight at the kill) may or may not have landed; sending them
    // again makes every write present exactly once.
    for s in sent.iter().filter(|s| !s.acknowledged) {
        client.record_outcome(&s.request).unwrap();
    }

    // Replay the same outcomes into a fresh store, in-process, and compare.
    let batch = dir.path().join("replay.jsonl");
    let lines: Vec<String> = sent
        .iter()
        .map(|s| serde_json::to_string(&s.request).unwrap())
        .collect();
    std::fs::write(&batch, lines.join("\n")).unwrap();
    let replay = dir.path().join("replay");
    let (code, _, stderr) = run(agency_in(dir.path())
        .args(["patterns", "outcome", "--batch"])
        .arg(&batch)
        .arg("--store")
        .arg(&replay));
    assert_eq!(code, 0, "{stderr}");
    let mut expected_counts: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
    for s in &sent {
        let id = patterns
            .into_iter()
            .find(|p| *p == s.request.pattern_id)
            .expect("one of the patterns");
        let entry = expected_counts.entry(id).or_default();
        if s.request.success {
            entry.0 += 1;
        } else {
            entry.1 += 1;
        }
    }
    for id in patterns {
        let served = client.show(id).unwrap();
        let replayed = json_of(
            agency_in(dir.path())
                .args(["patterns", "show", id, "--json", "--store"])
                .arg(&replay),
        );
        assert_eq!(
            (served.successes, served.failures),
            expected_counts[id],
            "{id}"
        );
        assert_eq!(replayed["successes"], served.successes, "{id}");
        assert_eq!(replayed["failures"], served.failures, "{id}");
        // The two are computed a few seconds apart; with a 90-day half-life the decay between
        // them is far below this tolerance.
        let replayed_confidence = replayed["confidence"].as_f64().unwrap();
        assert!(
            (served.confidence - replayed_confidence).abs() < 1e-6,
            "{id}: served {} replayed {replayed_confidence}",
            served.confidence
        );
    }
}
