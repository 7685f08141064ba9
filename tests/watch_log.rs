//! `agency heal --watch-log` end to end: the real binary follows a log while the test writes
//! to it. Heals really write fixes: the LLM tier answers through the scripted local
//! OpenAI-compatible server (`agency_llm::test_server`) with `[llm] auto_apply = true`, as in
//! `llm_heal.rs`. Each test has its own data directory (the stop switch and the pattern store
//! are per data directory). Outcomes are awaited with a deadline, never assumed after a sleep.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use agency_llm::test_server::{Scripted, TestServer};
use serde_json::Value;

use crate::util::{agency_at, git_fixture, private_home, run};

/// A crash of `shop/orders.py` as the shop's logger writes it (fixtures/logs).
const CRASH: &str = r#"2026-11-25 10:05:13,410 ERROR shop.web: Exception on /orders/42/email [GET]
2026-11-25 10:05:13,410 ERROR shop.web: Traceback (most recent call last):
2026-11-25 10:05:13,410 ERROR shop.web:   File "/usr/local/lib/python3.12/site-packages/flask/app.py", line 880, in full_dispatch_request
2026-11-25 10:05:13,410 ERROR shop.web:     rv = self.dispatch_request()
2026-11-25 10:05:13,410 ERROR shop.web:   File "/app/shop/orders.py", line 14, in owner_email
2026-11-25 10:05:13,410 ERROR shop.web:     return customers.lookup(order["customer_id"]).upper()
2026-11-25 10:05:13,410 ERROR shop.web: AttributeError: 'NoneType' object has no attribute 'upper'
"#;

/// A line after a traceback: it completes the traceback at once (without it, the watcher
/// completes it after a second of quiet).
const NEXT: &str = "2026-11-25 10:05:14,000 INFO shop.web: GET /orders/43 200\n";

/// A crash already in the log before the watch starts: never healed.
const OLD_CRASH: &str = "Traceback (most recent call last):\n  File \"/app/shop/report.py\", line 9, in render\n    for customer in customers:\nTypeError: 'NoneType' object is not iterable\n";

/// The model's fix of the crash in `shop/orders.py` (refused for any other place).
const ANSWER: &str = r#"{"edits": [{"find": "    return customers.lookup(order[\"customer_id\"]).upper()", "replace": "    owner = customers.lookup(order[\"customer_id\"])\n    if owner is None:\n        raise LookupError(f\"no customer {order['customer_id']}\")\n    return owner.upper()"}], "explanation": "a missing customer is an error that says so"}"#;

const FIXED: &str = "    if owner is None:\n        raise LookupError(";

const DEADLINE: Duration = Duration::from_secs(90);

/// The demo shop with the model configured, and an empty log next to it.
struct Shop {
    repo: tempfile::TempDir,
    logs: tempfile::TempDir,
}

impl Shop {
    fn new(server: Option<&TestServer>) -> Self {
        let repo = git_fixture("fixtures/demo-repo");
        if let Some(server) = server {
            std::fs::write(
                repo.path().join("agency.toml"),
                format!(
                    "[llm]\nbase_url = \"{}\"\nmodel = \"test-model\"\nauto_apply = true\n",
                    server.base_url()
                ),
            )
            .unwrap();
        }
        let logs = tempfile::tempdir().unwrap();
        std::fs::write(logs.path().join("app.log"), "").unwrap();
        Shop { repo, logs }
    }

    fn root(&self) -> &Path {
        self.repo.path()
    }

    fn log(&self) -> PathBuf {
        self.logs.path().join("app.log")
    }

    fn orders(&self) -> String {
        std::fs::read_to_string(self.root().join("shop/orders.py")).unwrap()
    }
}

fn append(path: &Path, text: &str) {
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

/// A running `agency heal --watch-log`, its stdout lines on a channel and its stderr
/// collected; killed if still running when dropped.
struct Watcher {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Watcher {
    fn start(home: &Path, shop: &Shop, extra_env: &[(&str, &str)]) -> Self {
        Self::start_with(home, shop, extra_env, &[])
    }

    fn start_with(home: &Path, shop: &Shop, extra_env: &[(&str, &str)], args: &[&str]) -> Self {
        let mut cmd = agency_at(home);
        cmd.current_dir(shop.root())
            .args(["heal", "--watch-log"])
            .arg(shop.log())
            .args(["--yes", "--json"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("agency starts");
        let (lines, stdout) = mpsc::channel();
        let out = child.stdout.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().expect("piped");
        let collected = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                collected
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let watcher = Watcher {
            child,
            stdout,
            stderr,
        };
        // Appends made before the log is open would count as old content.
        watcher.wait_for("watching", |s| s.contains("for new Python tracebacks"));
        watcher
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until `done(stderr)` holds; fails with the stderr on the deadline or if the
    /// watcher ends first.
    fn wait_for(&self, what: &str, done: impl Fn(&str) -> bool) {
        let start = Instant::now();
        loop {
            if done(&self.stderr()) {
                return;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "no {what} after {DEADLINE:?}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The next heal report on stdout (one JSON document per line).
    fn next_report(&self) -> Value {
        let line = self
            .stdout
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|e| panic!("no heal report ({e}):\n{}", self.stderr()));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}\n{}", self.stderr()))
    }

    /// Sends `signal` (INT, TERM) and waits for the exit: (code, remaining stdout, stderr).
    fn signal(mut self, signal: &str) -> (Option<i32>, Vec<String>, String) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "still running after SIG{signal}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        // The readers end with the process's pipes.
        let mut rest = Vec::new();
        while let Ok(line) = self.stdout.recv_timeout(Duration::from_secs(5)) {
            rest.push(line);
        }
        (status.code(), rest, self.stderr())
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn orders_heal(report: &Value) -> &Value {
    report["heals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["finding"]["file"] == "shop/orders.py")
        .unwrap_or_else(|| panic!("no heal of shop/orders.py: {report:#}"))
}

fn server() -> TestServer {
    let server = TestServer::start().unwrap();
    server.set_default(Scripted::answer(ANSWER));
    server
}

#[test]
fn a_traceback_appended_to_the_watched_log_is_healed_and_audited() {
    let server = server();
    let home = private_home();
    let shop = Shop::new(Some(&server));
    append(
        &shop.log(),
        &format!("INFO earlier\n{OLD_CRASH}INFO later\n"),
    );
    let watcher = Watcher::start(home.path(), &shop, &[]);
    append(&shop.log(), &format!("{CRASH}{NEXT}"));

    let report = watcher.next_report();
    assert_eq!(report["version"], 1);
    let heals = report["heals"].as_array().unwrap();
    // Only the new crash: the one already in the log is not healed.
    assert_eq!(heals.len(), 1, "{report:#}");
    let heal = orders_heal(&report);
    assert_eq!(heal["status"], "healed", "{heal:#}");
    assert_eq!(heal["strategy"], "llm");
    assert_eq!(heal["finding"]["category"], "runtime");
    assert_eq!(heal["verification"]["tests"], "passed");
    assert!(shop.orders().contains(FIXED), "{}", shop.orders());
    // The audit trail of the run.
    let audit: Vec<String> = std::fs::read_dir(shop.root().join("logs/autonomous_healing"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(
        audit
            .iter()
            .any(|r| r.contains("shop/orders.py") && r.contains("healed")),
        "{audit:?}"
    );
    watcher.wait_for("the outcome line", |s| {
        s.contains("healed AttributeError in owner_email (orders.py) at shop/orders.py:14 by llm")
    });

    let (code, rest, stderr) = watcher.signal("INT");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(rest.is_empty(), "{rest:?}");
    assert!(
        stderr.contains("queued for healing") && stderr.contains("healing 1 traceback(s)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("1 traceback(s) seen, 1 heal run(s), 1 healed"),
        "{stderr}"
    );
    assert!(!stderr.contains("report.py"), "{stderr}");
    // The run's batch file is gone with the watcher.
    let batches = std::fs::read_dir(shop.root().join(".agency/heal")).map_or(0, |d| {
        d.filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("watch-")
        })
        .count()
    });
    assert_eq!(batches, 0);
    assert_eq!(server.calls(), 1);
}

#[test]
fn from_start_heals_the_tracebacks_already_in_the_log_then_follows_it() {
    let server = server();
    let home = private_home();
    let shop = Shop::new(Some(&server));
    append(&shop.log(), &format!("INFO earlier\n{CRASH}{NEXT}"));
    let watcher = Watcher::start_with(home.path(), &shop, &[], &["--from-start"]);
    let report = watcher.next_report();
    let heal = orders_heal(&report);
    assert_eq!(heal["status"], "healed", "{heal:#}");
    assert!(shop.orders().contains(FIXED), "{}", shop.orders());
    assert!(
        watcher
            .stderr()
            .contains("and those already in it, from its start"),
        "{}",
        watcher.stderr()
    );
    let (code, _, stderr) = watcher.signal("INT");
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(server.calls(), 1);
}

#[test]
fn the_same_traceback_again_while_it_is_healed_is_counted_not_healed_twice() {
    // The model takes its time, so the run is surely still going when the crash recurs.
    let server = TestServer::start().unwrap();
    server.set_default(Scripted::answer(ANSWER).with_delay(Duration::from_secs(4)));
    let home = private_home();
    let shop = Shop::new(Some(&server));
    let watcher = Watcher::start(home.path(), &shop, &[]);
    append(&shop.log(), &format!("{CRASH}{NEXT}"));
    let start = Instant::now();
    while server.calls() == 0 {
        assert!(
            start.elapsed() < DEADLINE,
            "the model was never asked:\n{}",
            watcher.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The run is inside the model call now: the crash comes back twice.
    append(&shop.log(), &format!("{CRASH}{CRASH}{NEXT}"));
    watcher.wait_for("two recurrences counted during the heal", |s| {
        s.contains("again while its heal runs: counted, not queued (2 time(s)")
    });
    let report = watcher.next_report();
    assert_eq!(orders_heal(&report)["status"], "healed", "{report:#}");
    watcher.wait_for("the outcome line", |s| {
        s.contains("(seen 2 more time(s) during the heal)")
    });

    let (code, rest, stderr) = watcher.signal("INT");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(rest.is_empty(), "a second heal run: {rest:?}\n{stderr}");
    assert!(
        stderr.contains("3 traceback(s) seen, 1 heal run(s), 1 healed"),
        "{stderr}"
    );
    assert_eq!(server.calls(), 1);
}

#[test]
fn a_rotated_log_is_followed_into_the_new_file() {
    let server = server();
    let home = private_home();
    let shop = Shop::new(Some(&server));
    let watcher = Watcher::start(home.path(), &shop, &[]);
    // logrotate's default: rename, then a new file.
    std::fs::rename(shop.log(), shop.logs.path().join("app.log.1")).unwrap();
    std::fs::write(shop.log(), "INFO new log\n").unwrap();
    // No line after it: complete once the writer has been quiet.
    append(&shop.log(), CRASH);

    let report = watcher.next_report();
    assert_eq!(orders_heal(&report)["status"], "healed", "{report:#}");
    assert!(shop.orders().contains(FIXED), "{}", shop.orders());
    let (code, _, stderr) = watcher.signal("TERM");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("was rotated"), "{stderr}");
    assert!(stderr.contains("stopped watching"), "{stderr}");
}

#[test]
fn a_traceback_written_in_two_chunks_is_healed_once() {
    let server = server();
    let home = private_home();
    let shop = Shop::new(Some(&server));
    // The follower's debug lines say when it read something.
    let watcher = Watcher::start(
        home.path(),
        &shop,
        &[
            ("AGENCY_LOG", "warn,agency_scan::follow=debug"),
            ("NO_COLOR", "1"),
        ],
    );
    let cut = CRASH.find("lookup(order").unwrap();
    append(&shop.log(), &CRASH[..cut]);
    watcher.wait_for("the first chunk read", |s| s.contains("read from the log"));
    append(&shop.log(), &format!("{}{NEXT}", &CRASH[cut..]));

    let report = watcher.next_report();
    assert_eq!(report["heals"].as_array().unwrap().len(), 1, "{report:#}");
    let heal = orders_heal(&report);
    assert_eq!(heal["status"], "healed", "{heal:#}");
    // The whole traceback: the failing expression comes from its last code line.
    assert!(
        heal["finding"]["message"]
            .as_str()
            .unwrap()
            .contains("customers.lookup(order[\"customer_id\"])"),
        "{heal:#}"
    );
    let (code, rest, stderr) = watcher.signal("INT");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(rest.is_empty(), "{rest:?}");
    assert!(
        stderr.contains("1 traceback(s) seen, 1 heal run(s), 1 healed"),
        "{stderr}"
    );
}

#[test]
fn no_heal_starts_while_healing_is_stopped_and_the_queue_waits_for_resume() {
    let server = server();
    let home = private_home();
    let shop = Shop::new(Some(&server));
    let (code, _, stderr) =
        run(agency_at(home.path()).args(["healing", "stop", "--reason", "deploy freeze"]));
    assert_eq!(code, 0, "{stderr}");
    let watcher = Watcher::start(home.path(), &shop, &[]);
    watcher.wait_for("the stop noticed", |s| {
        s.contains("healing is stopped by `agency healing stop` (deploy freeze)")
    });
    append(&shop.log(), &format!("{CRASH}{NEXT}"));
    watcher.wait_for("the crash queued", |s| s.contains("queued for healing"));
    assert_eq!(server.calls(), 0);
    assert!(!watcher.stderr().contains("healing 1 traceback(s)"));

    let (code, _, stderr) = run(agency_at(home.path()).args(["healing", "resume"]));
    assert_eq!(code, 0, "{stderr}");
    let report = watcher.next_report();
    assert_eq!(orders_heal(&report)["status"], "healed", "{report:#}");
    let (code, _, stderr) = watcher.signal("INT");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("healing resumed; 1 traceback(s) wait"),
        "{stderr}"
    );
    // Said once, not at every poll.
    assert_eq!(stderr.matches("healing is stopped").count(), 1, "{stderr}");
}

#[test]
fn ctrl_c_or_sigterm_while_idle_stops_watching_with_exit_0() {
    let home = private_home();
    for signal in ["INT", "TERM"] {
        let shop = Shop::new(None);
        let watcher = Watcher::start(home.path(), &shop, &[]);
        let (code, rest, stderr) = watcher.signal(signal);
        assert_eq!(code, Some(0), "SIG{signal}: {stderr}");
        assert!(rest.is_empty(), "{rest:?}");
        assert!(
            stderr.contains("stopped watching") && stderr.contains("0 heal run(s)"),
            "SIG{signal}: {stderr}"
        );
    }
}

#[test]
fn without_yes_or_without_the_log_it_refuses_with_what_to_do() {
    let home = private_home();
    let shop = Shop::new(None);
    let (code, stdout, stderr) = run(agency_at(home.path())
        .current_dir(shop.root())
        .args(["heal", "--watch-log"])
        .arg(shop.log()));
    assert_eq!(code, 2, "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("agency: error: --watch-log"), "{stderr}");
    assert!(stderr.contains("add --yes"), "{stderr}");

    let missing = shop.logs.path().join("missing.log");
    let (code, _, stderr) = run(agency_at(home.path())
        .current_dir(shop.root())
        .args(["heal", "--yes", "--watch-log"])
        .arg(&missing));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot follow the log {}: no such file",
            missing.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("touch"), "{stderr}");

    // Flags that make no sense for a watch are refused by the parser.
    let (code, _, stderr) = run(agency_at(home.path())
        .current_dir(shop.root())
        .args(["heal", "--yes", "--dry-run", "--watch-log"])
        .arg(shop.log()));
    assert_eq!(code, 2, "{stderr}");
}
