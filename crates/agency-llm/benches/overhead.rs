//! Our own overhead per generated fix, the model excluded: redaction and prompt building, the
//! cache key, then parsing the answer, restoring secrets and locating the edits. Two fixed
//! inputs: a typical function (40 lines in a 300-line file) and a large class (2,000 lines).
//! Besides criterion's estimates, p50/p95/p99 over 500 timed runs of each are printed (the
//! target is p99 ≤ 20 ms).
//!
//! `cache_hit`: a whole `propose_fix` answered from the cache (redaction, prompt, the cache
//! lookup and the recorded hit in `usage.db`), after one real call to the local test server.
//!
//! `cargo bench -p agency-llm --bench overhead -- --quick` runs it quickly.

use std::hint::black_box;
use std::ops::Range;
use std::time::{Duration, Instant};

use agency_llm::client::request_hash;
use agency_llm::prompt::build_messages;
use agency_llm::test_server::{Scripted, TestServer};
use agency_llm::{
    Example, FindingRef, FixRequest, LlmClient, LlmConfig, Redactor, apply_edits, parse_answer,
    resolve_edits,
};
use criterion::{Criterion, criterion_group, criterion_main};

/// A module of `n_funcs` functions; function `target` holds a planted secret and the defect.
fn module(n_funcs: usize, lines_per_func: usize, target: usize) -> (String, Range<usize>) {
    let mut text = String::from("import os\nimport json\nfrom typing import Any\n\n");
    let mut region = 0..0;
    for f in 0..n_funcs {
        let start = text.len();
        text.push_str(&format!(
            "\ndef handler_{f}(request: Any, retries: int = 3) -> dict:\n"
        ));
        if f == target {
            text.push_str("    api_key = \"q8Zr2LmX0vT5nB7wK1pY\"\n");
            text.push_str("    if request == None:\n        return {}\n");
        }
        for line in 0..lines_per_func {
            text.push_str(&format!(
                "    value_{line} = json.dumps({{\"id\": {line}, \"name\": \"item {line}\", \"retries\": retries}})\n"
            ));
        }
        text.push_str("    return {\"ok\": True}\n");
        if f == target {
            region = start..text.len();
        }
    }
    (text, region)
}

const ANSWER: &str = r#"```json
{"edits": [{"find": "    if request == None:", "replace": "    if request is None:"}], "explanation": "compare to None with `is`"}
```"#;

/// The fix request of [`pass`], for a client.
fn request<'a>(
    file: &'a str,
    region: &Range<usize>,
    examples: &'a [Example],
    failure: &'a str,
) -> FixRequest<'a> {
    FixRequest {
        finding: FindingRef {
            rule: "E711",
            message: "comparison to None should be `if cond is None:`",
            file: "app/handlers.py",
            line: 10,
            category: "style",
        },
        file_text: file,
        region: region.clone(),
        imports: "import os\nimport json\nfrom typing import Any\n",
        examples,
        previous_failure: Some(failure),
    }
}

/// One whole pass of our overhead; returns the patched text's length so nothing is optimised
/// away.
fn pass(file: &str, region: &Range<usize>, examples: &[Example], failure: &str) -> usize {
    let request = request(file, region, examples, failure);
    let mut redactor = Redactor::new();
    let messages = build_messages(&request, &mut redactor);
    let hash = request_hash("gpt-4o-mini", &messages);
    let mut answer = parse_answer(ANSWER).expect("the fixed answer parses");
    for edit in &mut answer.edits {
        edit.find = redactor
            .restore(&edit.find)
            .expect("no unknown placeholder");
        edit.replace = redactor
            .restore(&edit.replace)
            .expect("no unknown placeholder");
    }
    let edits = resolve_edits(file, region, &answer).expect("the fixed answer locates");
    apply_edits(file, &edits).len() + hash.len()
}

fn inputs() -> Vec<(&'static str, String, Range<usize>)> {
    let (typical, typical_region) = module(8, 36, 3);
    let (large, large_region) = module(2, 2000, 1);
    vec![
        ("function-40-lines", typical, typical_region),
        ("class-2000-lines", large, large_region),
    ]
}

fn examples() -> Vec<Example> {
    (0..3)
        .map(|i| Example {
            before: format!("if ?x == None:\n    return ?y{i}"),
            after: format!("if ?x is None:\n    return ?y{i}"),
            confidence: 0.9 - f64::from(i) * 0.05,
        })
        .collect()
}

fn failure() -> String {
    let mut log = String::new();
    for i in 0..60 {
        log.push_str(&format!("tests/test_handlers.py::test_case_{i} PASSED\n"));
    }
    log + "FAILED tests/test_handlers.py::test_none - AssertionError: expected {} got None\n"
}

fn overhead(c: &mut Criterion) {
    let examples = examples();
    let failure = failure();
    let mut group = c.benchmark_group("overhead");
    for (name, file, region) in inputs() {
        group.bench_function(name, |b| {
            b.iter(|| black_box(pass(black_box(&file), &region, &examples, &failure)));
        });
    }
    group.finish();
    percentiles(&examples, &failure);
    cache_hits(&examples, &failure);
}

/// p50/p95/p99 of a `propose_fix` answered from the cache (the first call reaches the local
/// test server and fills the cache).
#[allow(clippy::print_stdout, reason = "a bench reports on stdout")]
fn cache_hits(examples: &[Example], failure: &str) {
    let server = TestServer::start().expect("the local test server starts");
    server.set_default(Scripted::answer(ANSWER));
    let dir = tempfile::tempdir().expect("a temporary directory");
    let client = LlmClient::new(
        LlmConfig::new(server.base_url(), "gpt-4o-mini"),
        dir.path(),
        None,
    )
    .expect("a client of the test server");
    for (name, file, region) in inputs() {
        let request = request(&file, &region, examples, failure);
        let first = client
            .propose_fix(&request)
            .expect("the test server answers");
        assert!(!first.cached);
        let mut times: Vec<Duration> = (0..200)
            .map(|_| {
                let started = Instant::now();
                let proposal = client.propose_fix(&request).expect("a cached answer");
                assert!(proposal.cached);
                started.elapsed()
            })
            .collect();
        times.sort();
        let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
        println!(
            "cache_hit/{name}: p50 {:?}  p95 {:?}  p99 {:?}  ({} calls to the server)",
            at(0.50),
            at(0.95),
            at(0.99),
            server.calls()
        );
    }
}

/// p50/p95/p99 of single passes; criterion reports means, the target is a p99.
#[allow(clippy::print_stdout, reason = "a bench reports on stdout")]
fn percentiles(examples: &[Example], failure: &str) {
    for (name, file, region) in inputs() {
        let mut times: Vec<Duration> = (0..500)
            .map(|_| {
                let started = Instant::now();
                black_box(pass(&file, &region, examples, failure));
                started.elapsed()
            })
            .collect();
        times.sort();
        let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
        println!(
            "overhead/{name}: p50 {:?}  p95 {:?}  p99 {:?}  (region {} bytes)",
            at(0.50),
            at(0.95),
            at(0.99),
            region.len()
        );
    }
}

criterion_group!(benches, overhead);
criterion_main!(benches);
