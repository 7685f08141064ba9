//! End-to-end tests of `LlmClient::propose_fix` over real HTTP on loopback against the
//! OpenAI-compatible test server: answers, rejections, retries, timeouts, the budget, the
//! cache, the machine-wide concurrency limit (threads and processes), redaction and
//! `never_send`.

use std::ops::Range;
use std::path::Path;
use std::time::{Duration, Instant};

use agency_llm::test_server::{Scripted, TestServer};
use agency_llm::{
    Error, Example, FindingRef, FixRequest, LlmClient, LlmConfig, ModelPrice, Rejection,
    apply_edits, current_month,
};

const FILE: &str = r#"import os

import boto3


def connect(host):
    key = "AKIAZ7Q3JX4PLM2W8RTV"
    password = "hunter2-Secret"
    if host == None:
        return None
    return boto3.client("s3", aws_access_key_id=key, password=password, host=host)


def other():
    if host == None:
        return 1
"#;

/// The body of `connect`: the region the model may edit.
fn region() -> Range<usize> {
    let start = FILE.find("def connect").unwrap();
    let end = FILE.find("\n\n\ndef other").unwrap() + 1;
    start..end
}

fn request<'a>(file: &'a str, failure: Option<&'a str>, examples: &'a [Example]) -> FixRequest<'a> {
    FixRequest {
        finding: FindingRef {
            rule: "E711",
            message: "comparison to None should be `if cond is None:`",
            file,
            line: 9,
            category: "style",
        },
        file_text: FILE,
        region: region(),
        imports: "import os\nimport boto3\n",
        examples,
        previous_failure: failure,
    }
}

fn config(server: &TestServer) -> LlmConfig {
    let mut config = LlmConfig::new(server.base_url(), "gpt-4o-mini");
    config.retry_backoff_ms = 10;
    config
}

fn client(server: &TestServer, dir: &Path, tweak: impl FnOnce(&mut LlmConfig)) -> LlmClient {
    let mut config = config(server);
    tweak(&mut config);
    LlmClient::new(config, dir, None).unwrap()
}

const GOOD: &str = r#"{"edits": [{"find": "    if host == None:", "replace": "    if host is None:"}], "explanation": "compare to None with is"}"#;

fn fixed() -> String {
    FILE.replacen(
        "    if host == None:\n        return None",
        "    if host is None:\n        return None",
        1,
    )
}

#[test]
fn a_good_answer_becomes_byte_edits() {
    let server = TestServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = client(&server, dir.path(), |_| {});
    server.push(Scripted::answer(&format!("```json\n{GOOD}\n```")));
    let examples = [Example {
        before: "if ?x == None:".into(),
        after: "if ?x is None:".into(),
        confidence: 0.91,
    }];
    let proposal = client
        .propose_fix(&request(
            "app/net.py",
            Some("FAILED test_connect"),
            &examples,
        ))
        .unwrap();
    assert_eq!(apply_edits(FILE, &proposal.edits), fixed());
    assert_eq!(proposal.explanation, "compare to None with is");
    assert!(!proposal.cached);
    assert_eq!(
        (proposal.attempts, proposal.tokens_in, proposal.tokens_out),
        (1, 100, 20)
    );
    let expected_cost = (100.0 * 0.15 + 20.0 * 0.60) / 1e6;
    assert!((proposal.cost_usd - expected_cost).abs() < 1e-12);
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let body: serde_json::Value = serde_json::from_str(&requests[0]).unwrap();
    assert_eq!(body["model"], "gpt-4o-mini");
    let user = body["messages"][1]["content"].as_str().unwrap();
    assert!(
        user.contains("if ?x is None:") && user.contains("confidence 0.91"),
        "{user}"
    );
    assert!(user.contains("FAILED test_connect"), "{user}");
    assert!(
        !user.contains("def other"),
        "only the region is sent: {user}"
    );
    assert_eq!(server.authorizations(), [None]);
}

#[test]
fn the_api_key_is_sent_as_a_bearer_token_and_never_shown() {
    let server = TestServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&server);
    config.api_key_env = Some("TEST_LLM_KEY".into());
    let key = config
        .api_key(|name| (name == "TEST_LLM_KEY").then(|| "k-test-123".to_string()))
        .unwrap();
    let client = LlmClient::new(config, dir.path(), key).unwrap();
    assert!(!format!("{client:?}").contains("k-test-123"));
    server.push(Scripted::answer(GOOD));
    client.propose_fix(&request("a.py", None, &[])).unwrap();
    assert_eq!(
        server.authorizations(),
        [Some("Bearer k-test-123".to_string())]
    );
}

#[test]
fn malformed_output_is_rejected() {
    let server = TestServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = client(&server, dir.path(), |_| {});
    server.push(Scripted::answer(&format!("Sure! Here is the fix:\n{GOOD}")));
    let err = client
        .propose_fix(&request("app/net.py", None, &[]))
        .unwrap_err();
    assert!(
        matches!(err, Error::Rejected(Rejection::NotJson { .. })),
        "{err}"
    );
    // A body that is no completion at all: an error, and the estimate stays spent, since the
    // server may have charged for it.
    server.push(Scripted::malformed("<html>gateway</html>"));
    let err = client
        .propose_fix(&request("app/net.py", Some("retry"), &[]))
        .unwrap_err();
    assert!(matches!(err, Error::BadResponse { .. }), "{err}");
    let report = client.usage(&current_month()).unwrap();
    assert_eq!(report.calls, 2);
    assert!(report.spent_usd > 0.0);
    // No content in the completion.
    server.push(Scripted {
        content: None,
        ..Scripted::answer("")
    });
    let err = client
        .propose_fix(&request("app/net.py", Some("again"), &[]))
        .unwrap_err();
    assert!(err.to_string().contains("no content"), "{err}");
}

#[test]
fn ambiguous_and_outside_finds_are_rejected() {
    let server = TestServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = client(&server, dir.path(), |_| {});
    server.push(Scripted::answer(
        r#"{"edits": [{"find": "host", "replace": "h"}], "explanation": "x"}"#,
    ));
    let err = client.propose_fix(&request("a.py", None, &[])).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Rejected(Rejection::FindAmbiguous { index: 1, .. })
        ),
        "{err}"
    );
    server.push(Scripted::answer(
        r#"{"edits": [{"find": "def other():", "replace": "def other2():"}], "explanation": "x"}"#,
    ));
    let err = client
        .propose_fix(&request("a.py", Some("1"), &[]))
        .unwrap_err();
    assert!(
        matches!(err, Error::Rejected(Rejection::OutsideRegion { .. })),
        "{err}"
    );
    server.push(Scripted::answer(
        r#"{"edits": [{"find": "if host is None:", "replace": "x"}], "explanation": "x"}"#,
    ));
    let err = client
        .propose_fix(&request("a.py", Some("2"), &[]))
        .unwrap_err();
    assert!(
        matches!(err, Error::Rejected(Rejection::FindAbsent { .. })),
        "{err}"
    );
    server.push(Scripted::answer(
        r#"{"edits": [{"find": "__AGENCY_SECRET_7__", "replace": "x"}], "explanation": "x"}"#,
    ));
    let err = client
        .propose_fix(&request("a.py", Some("3"), &[]))
        .unwrap_err();
    assert!(
        matches!(err, Error::Rejected(Rejection::UnknownPlaceholder { .. })),
        "{err}"
    );
}

#[test]
fn retries_429_with_retry_after_and_500_then_succeeds() {
    let server = TestServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = client(&server, dir.path(), |c| c.max_attempts = 3);
    server.push(Scripted::status(429).with_retry_after("1"));
    server.push(Scripted::status(500));
    server.push(Scripted::answer(GOOD));
    let started = Instant::now();
    let proposal = client.propose_fix(&request("a.py", None, &[])).unwrap();
    // A lower bound, not a speed claim: the client waited as long as the server asked.
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(proposal.attempts, 3);
    assert_eq!(server.calls(), 3);
    assert_eq!(apply_edits(FILE, &proposal.edits), fixed());
    // One call in the record: the failed attempts cost nothing.
    let report = client.usage(&current_month()).unwrap();
    assert_eq!((report.calls, report.by_model[0].tokens_in), (1, 100));
}

#[test]
fn max_attempts_is_respected_and_client_errors_are_not_retried() {
    let server = TestServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = client(&server, dir.path(), |c| c.max_attempts = 3);
    for _ in 0..5 {
        server.push(Scripted::status(503));
    }
    let err = client.propose_fix(&request("a.py", None, &[])).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Status {
                status: 503,
                attempts: 3,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(server.calls(), 3);
    let report = client.usage(&current_month()).unwrap();
    assert_eq!(report.calls, 1);
    assert!(
        report.spent_usd.abs() < 1e-12,
        "a refused call costs nothing"
    );
    // A refused key is final at once, with a hint.
    let server = TestServer::start().unwrap();
    let client = self::client(&server, dir.path(), |c| c.max_attempts = 3);
    server.push(Scripted::status(401));
    let err = client.propose_fix(&request("a.py", None, &[])).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Status {
                status: 401,
                attempts: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("api_key_env"), "{err}");
    assert_eq!(server.calls(), 1);
    // A Retry-After beyond the client's patience ends the retries.
    server.push(Scripted::status(429).with_retry_after("3600"));
    let err = client
        .propose_fix(&request("a.py", Some("x"), &[]))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Status {
                status: 429,
                attempts: 1,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn an_unreachable_server_is_retried_then_reported() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let mut config = LlmConfig::new(&format!("http://127.0.0.1:{port}/v1"), "gpt-4o-mini");
    config.retry_backoff_ms = 10;
    config.max_attempts = 2;
    let client = LlmClient::new(config, dir.path(), None).unwrap();
    let err = client.propose_fix(&request("a.py", None, &[])).unwrap_err();
    assert!(
        matches!(err, Error::Unreachable { attempts: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("base_url"), "{err}");
}

#[test]
fn a_slow_answer_times_out_on_every_attempt() {
    let server = TestServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = client(&server, dir.path(), |c| {
        c.timeout_s = 1;
        c.max_attempts = 2;
    });
    server.set_default(Scripted::answer(GOOD).with_delay(Duration::from_secs(4)));
    let err = client.propose_fix(&request("a.py", None, &[])).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Timeout {
                attempts: 2,
                timeout_s: 1,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(server.calls(), 2);
    // The server may still bill the answer it was generating: the estimate stays spent.
    let report = client.usage(&current_month()).unwrap();
    assert_eq!(report.calls, 1);
    assert!(report.spent_usd > 0.0);
    assert_eq!(report.by_model[0].tokens_in, 0);
}

#[test]
fn the_budget_stops_calls_at_the_limit() {
    let server = TestServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = client(&server, dir.path(), |c| {
        c.model = "priced".into();
        c.max_tokens = 100;
        c.monthly_budget_usd = 0.05;
        c.prices.insert(
            "priced".into(),
            ModelPrice {
                input_per_mtok_usd: 10.0,
                output_per_mtok_usd: 100.0,
            },
        );
    });
    // Each answer costs (100 * 10 + 20 * 100) / 1e6 = $0.003.
    server.set_default(Scripted::answer(GOOD));
    let mut answered = 0;
    let failures: Vec<String> = (0..40).map(|i| format!("attempt {i}")).collect();
    let err = loop {
        match client.propose_fix(&request("a.py", Some(&failures[answered]), &[])) {
            Ok(_) => answered += 1,
            Err(e) => break e,
        }
        assert!(answered < 40, "the budget never stopped the calls");
    };
    let Error::BudgetExhausted {
        spent_usd,
        budget_usd,
        estimate_usd,
    } = err
    else {
        panic!("expected BudgetExhausted, got {err}");
    };
    assert!(answered >= 2, "{answered}");
    assert!(
        (spent_usd - 0.003 * answered as f64).abs() < 1e-9,
        "{spent_usd}"
    );
    assert!(spent_usd + estimate_usd > budget_usd);
    assert!(spent_usd <= budget_usd);
    assert!(err_reason_mentions_budget(&client, &failures[answered]));
    assert_eq!(server.calls(), answered, "no request after the limit");
    let report = client.usage(&current_month()).unwrap();
    assert!((report.spent_usd - spent_usd).abs() < 1e-12);
    assert!((report.remaining_usd - (0.05 - spent_usd)).abs() < 1e-12);
}

/// The skip reason of the refusal names the budget and the key to raise.
fn err_reason_mentions_budget(client: &LlmClient, failure: &str) -> bool {
    let err = client
        .propose_fix(&request("a.py", Some(failure), &[]))
        .unwrap_err();
    err.skip_reason()
        .is_some_and(|r| r.contains("budget") && r.contains("monthly_budget_usd"))
}

#[test]
fn an_identical_request_is_answered_from_the_cache() {
    let server = TestServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = client(&server, dir.path(), |_| {});
    server.set_default(Scripted::answer(GOOD));
    let first = client.propose_fix(&request("a.py", None, &[])).unwrap();
    // A second client on the same data directory (another process, say) hits it too.
    let other = self::client(&server, dir.path(), |_| {});
    let second = other.propose_fix(&request("a.py", None, &[])).unwrap();
    assert_eq!(server.calls(), 1);
    assert!(second.cached && !first.cached);
    assert_eq!(second.edits, first.edits);
    assert_eq!(second.request_hash, first.request_hash);
    assert!(second.cost_usd.abs() < f64::EPSILON);
    let report = client.usage(&current_month()).unwrap();
    assert_eq!((report.calls, report.cache_hits), (1, 1));
    // A different retry context is a different request.
    client
        .propose_fix(&request("a.py", Some("tests failed"), &[]))
        .unwrap();
    assert_eq!(server.calls(), 2);
}

#[test]
fn ten_threads_never_exceed_five_in_flight() {
    let server = TestServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    server.set_default(Scripted::answer(GOOD).with_delay(Duration::from_millis(300)));
    let failures: Vec<String> = (0..10).map(|i| format!("thread {i}")).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = failures
            .iter()
            .map(|failure| {
                let server = &server;
                let dir = dir.path();
                scope.spawn(move || {
                    // Each thread has its own client: only the slot files are shared.
                    let client = client(server, dir, |_| {});
                    client.propose_fix(&request("a.py", Some(failure), &[]))
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap().unwrap();
        }
    });
    assert_eq!(server.calls(), 10);
    assert!(server.max_in_flight() <= 5, "{}", server.max_in_flight());
    assert!(server.max_in_flight() >= 2, "the requests did overlap");
}

/// Helper run by `two_processes_share_the_limit` in child processes.
#[test]
#[ignore = "run by two_processes_share_the_limit as a child process"]
fn child_process_requests() {
    let url = std::env::var("AGENCY_LLM_TEST_URL")
        .expect("AGENCY_LLM_TEST_URL is set by the parent test");
    let dir = std::env::var("AGENCY_LLM_TEST_DIR")
        .expect("AGENCY_LLM_TEST_DIR is set by the parent test");
    let tag = std::env::var("AGENCY_LLM_TEST_TAG")
        .expect("AGENCY_LLM_TEST_TAG is set by the parent test");
    let failures: Vec<String> = (0..5).map(|i| format!("{tag} {i}")).collect();
    std::thread::scope(|scope| {
        for failure in &failures {
            let (url, dir) = (&url, &dir);
            scope.spawn(move || {
                let mut config = LlmConfig::new(url, "gpt-4o-mini");
                config.retry_backoff_ms = 10;
                let client = LlmClient::new(config, Path::new(dir), None).unwrap();
                client
                    .propose_fix(&request("a.py", Some(failure), &[]))
                    .unwrap();
            });
        }
    });
}

#[test]
fn two_processes_share_the_limit() {
    let server = TestServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    server.set_default(Scripted::answer(GOOD).with_delay(Duration::from_millis(300)));
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = ["first", "second"]
        .iter()
        .map(|tag| {
            std::process::Command::new(&exe)
                .args(["--exact", "child_process_requests", "--ignored", "--quiet"])
                .env("AGENCY_LLM_TEST_URL", server.base_url())
                .env("AGENCY_LLM_TEST_DIR", dir.path())
                .env("AGENCY_LLM_TEST_TAG", tag)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "child failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert_eq!(server.calls(), 10);
    assert!(server.max_in_flight() <= 5, "{}", server.max_in_flight());
}

#[test]
fn planted_secrets_never_reach_the_server_and_are_restored() {
    let server = TestServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = client(&server, dir.path(), |_| {});
    // The model sees placeholders, quotes them in `find` and keeps them in `replace`.
    server.push(Scripted::answer(
        r#"{"edits": [{"find": "    key = \"__AGENCY_SECRET_1__\"\n    password = \"__AGENCY_SECRET_2__\"\n", "replace": "    key = os.environ.get(\"AWS_KEY\", \"__AGENCY_SECRET_1__\")\n    password = os.environ[\"DB_PASSWORD\"]\n"}], "explanation": "read __AGENCY_SECRET_2__ from the environment"}"#,
    ));
    let mut req = request(
        "app/net.py",
        Some("leaked AKIAZ7Q3JX4PLM2W8RTV in log"),
        &[],
    );
    req.finding.rule = "AGY203";
    let proposal = client.propose_fix(&req).unwrap();
    for body in server.requests() {
        assert!(!body.contains("AKIAZ7Q3JX4PLM2W8RTV"), "{body}");
        assert!(!body.contains("hunter2-Secret"), "{body}");
        assert!(body.contains("__AGENCY_SECRET_1__"), "{body}");
    }
    let fixed = apply_edits(FILE, &proposal.edits);
    assert!(
        fixed.contains("    key = os.environ.get(\"AWS_KEY\", \"AKIAZ7Q3JX4PLM2W8RTV\")\n    password = os.environ[\"DB_PASSWORD\"]\n"),
        "{fixed}"
    );
    assert_eq!(
        proposal.explanation,
        "read hunter2-Secret from the environment"
    );
}

#[test]
fn never_send_files_are_refused_before_any_prompt() {
    let server = TestServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = client(&server, dir.path(), |c| {
        c.never_send.push("config/prod/*.py".into());
    });
    for file in [
        ".env.production",
        "deploy/certs/site.pem",
        "secrets/db.py",
        "config/prod/db.py",
    ] {
        let err = client.propose_fix(&request(file, None, &[])).unwrap_err();
        assert!(matches!(err, Error::NeverSend { .. }), "{file}: {err}");
        assert!(err.skip_reason().is_some());
        assert!(err.to_string().contains(file), "{err}");
    }
    assert_eq!(server.calls(), 0);
    assert!(client.check_sendable("app/config/prod/db.py").is_ok());
}

#[test]
fn usage_report_numbers() {
    let server = TestServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = client(&server, dir.path(), |c| c.monthly_budget_usd = 2.0);
    server.push(Scripted::answer(GOOD).with_usage(Some((1000, 200))));
    server.push(Scripted::answer(GOOD).with_usage(Some((3000, 400))));
    // No usage in the answer: tokens are estimated from the bytes.
    server.push(Scripted::answer(GOOD).with_usage(None));
    let mut security = request("a.py", None, &[]);
    security.finding.category = "security";
    client.propose_fix(&security).unwrap();
    client.propose_fix(&security).unwrap(); // cache hit
    // The category is not part of the request: this one differs by its retry context.
    client
        .propose_fix(&request("a.py", Some("y"), &[]))
        .unwrap();
    let estimated = client
        .propose_fix(&request("a.py", Some("x"), &[]))
        .unwrap();
    assert!(estimated.tokens_in > 100 && estimated.tokens_out == GOOD.len().div_ceil(4) as u64);
    let report = agency_llm::usage_report(dir.path(), &current_month(), 2.0).unwrap();
    assert_eq!(report, client.usage(&current_month()).unwrap());
    assert_eq!((report.calls, report.cache_hits), (3, 1));
    assert_eq!(report.by_model.len(), 1);
    let model = &report.by_model[0];
    assert_eq!(model.name, "gpt-4o-mini");
    assert_eq!(model.tokens_in, 4000 + estimated.tokens_in);
    assert_eq!(model.tokens_out, 600 + estimated.tokens_out);
    let cost = |i: f64, o: f64| (i * 0.15 + o * 0.60) / 1e6;
    let total = cost(1000.0, 200.0) + cost(3000.0, 400.0) + estimated.cost_usd;
    assert!((report.spent_usd - total).abs() < 1e-12);
    assert!((report.remaining_usd - (2.0 - total)).abs() < 1e-12);
    let names: Vec<_> = report
        .by_category
        .iter()
        .map(|r| (r.name.as_str(), r.calls, r.cache_hits))
        .collect();
    assert_eq!(names, [("security", 1, 1), ("style", 2, 0)]);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["by_category"][0]["category"], "security");
    assert_eq!(json["calls"], 3);
}
