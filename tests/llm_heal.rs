//! The LLM tier end to end: the real binary, tools and store, and the local OpenAI-compatible
//! test server (`agency_llm::test_server`, the only fake: no model is reachable here). Three
//! tiers in order: a finding no pattern and no fixer knows goes to the model; the verified
//! generated fix is learned, and the next identical finding is answered by the pattern without
//! a call. With a budget of almost nothing the call is not made and the finding says why.

use std::path::Path;

use agency_llm::test_server::{Scripted, TestServer};
use serde_json::Value;

use crate::util::{agency_at, git, private_home, run};

const FILE: &str = "shop/greet.py";

/// A planted secret sits in the function the model is shown.
const SECRET: &str = "AKIAIOSFODNN7EXAMPLE";

const SOURCE: &str = "\"\"\"Greetings.\"\"\"\n\n\ndef greet(name: str) -> str:\n    \"\"\"A greeting for name.\"\"\"\n    return f\"Hello, {name}!\"\n\n\ndef welcome() -> str:\n    \"\"\"The welcome line.\"\"\"\n    audit_key = \"AKIAIOSFODNN7EXAMPLE\"\n    assert audit_key\n    return greet(nam=\"guest\")\n";

const ANSWER: &str = r#"{"edits": [{"find": "greet(nam=\"guest\")", "replace": "greet(name=\"guest\")"}], "explanation": "the parameter is called name"}"#;

/// A repository with a call-arg error (mypy) that nothing but the model knows how to fix.
fn repo(llm: &str) -> tempfile::TempDir {
    repo_with(llm, 1)
}

/// The same with the defect in `modules` files (`shop/greet.py`, `shop/greet2.py`, ...).
fn repo_with(llm: &str, modules: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("shop")).unwrap();
    std::fs::create_dir_all(root.join("tests")).unwrap();
    std::fs::write(
        root.join("pyproject.toml"),
        "[project]\nname = \"shop\"\nversion = \"0.1.0\"\n\n[tool.pytest.ini_options]\ntestpaths = [\"tests\"]\npythonpath = [\".\"]\n",
    )
    .unwrap();
    std::fs::write(root.join("shop/__init__.py"), "").unwrap();
    std::fs::write(root.join(FILE), SOURCE).unwrap();
    for i in 2..=modules {
        std::fs::write(root.join(format!("shop/greet{i}.py")), SOURCE).unwrap();
    }
    std::fs::write(
        root.join("tests/test_greet.py"),
        "from shop.greet import greet, welcome\n\n\ndef test_greet() -> None:\n    assert greet(\"ada\") == \"Hello, ada!\"\n\n\ndef test_welcome() -> None:\n    assert welcome() == \"Hello, guest!\"\n",
    )
    .unwrap();
    std::fs::write(root.join("agency.toml"), llm).unwrap();
    git(root, &["init", "-q", "-b", "main"]);
    git(root, &["add", "-A"]);
    git(root, &["commit", "-q", "-m", "greet"]);
    dir
}

fn heal(home: &Path, root: &Path) -> Value {
    let (code, stdout, stderr) = run(agency_at(home)
        .current_dir(root)
        .args(["heal", "--yes", "--json", "--tools", "mypy"]));
    assert!(code == 0 || code == 1, "{code}\n{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"))
}

fn call_arg(doc: &Value) -> &Value {
    doc["heals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["finding"]["rule"] == "call-arg")
        .unwrap_or_else(|| panic!("no call-arg heal: {doc:#}"))
}

#[test]
fn the_model_fixes_what_nothing_else_knows_and_the_fix_is_learned() {
    let server = TestServer::start().unwrap();
    server.set_default(Scripted::answer(ANSWER));
    let home = private_home();
    let config = format!(
        "[llm]\nbase_url = \"{}\"\nmodel = \"test-model\"\nauto_apply = true\n",
        server.base_url()
    );
    let a = repo(&config);
    let doc = heal(home.path(), a.path());
    let heal_a = call_arg(&doc);
    assert_eq!(heal_a["status"], "healed", "{heal_a:#}");
    assert_eq!(heal_a["strategy"], "llm");
    assert_eq!(heal_a["verification"]["tests"], "passed");
    let text = std::fs::read_to_string(a.path().join(FILE)).unwrap();
    assert!(text.contains("return greet(name=\"guest\")"), "{text}");
    assert_eq!(server.calls(), 1);
    // The prompt carried the enclosing function and the finding, but not the secret in it,
    // which is still in the healed file.
    let request = &server.requests()[0];
    assert!(request.contains("def welcome()"), "{request}");
    assert!(request.contains("call-arg"), "{request}");
    assert!(
        !request.contains(SECRET),
        "the secret reached the server: {request}"
    );
    assert!(text.contains(SECRET), "{text}");

    // The same defect elsewhere: the pattern learned from the generated fix answers it, and
    // the model is not asked again (one success so far: offered for approval).
    let b = repo(&config);
    let doc = heal(home.path(), b.path());
    let heal_b = call_arg(&doc);
    assert_eq!(heal_b["strategy"], "pattern", "{heal_b:#}");
    assert_eq!(heal_b["status"], "pending_approval", "{heal_b:#}");
    assert_eq!(server.calls(), 1);

    let (_, stdout, _) = run(agency_at(home.path()).args(["llm", "usage", "--json"]));
    let usage: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(usage["calls"], 1, "{usage:#}");
}

#[test]
fn over_budget_the_model_is_not_called_and_the_finding_says_why() {
    let server = TestServer::start().unwrap();
    server.set_default(Scripted::answer(ANSWER));
    let home = private_home();
    let config = format!(
        "[llm]\nbase_url = \"{}\"\nmodel = \"test-model\"\nauto_apply = true\nmonthly_budget_usd = 0.000001\n",
        server.base_url()
    );
    let a = repo(&config);
    let doc = heal(home.path(), a.path());
    let heal = call_arg(&doc);
    assert_eq!(heal["status"], "skipped", "{heal:#}");
    assert!(
        heal["reason"].as_str().unwrap().contains("budget"),
        "{heal:#}"
    );
    assert_eq!(server.calls(), 0);
    assert_eq!(
        std::fs::read_to_string(a.path().join(FILE)).unwrap(),
        SOURCE
    );
}

#[test]
fn runtime_errors_from_a_log_are_healed_each_at_its_own_place() {
    let server = TestServer::start().unwrap();
    // The model is asked about the first NoneType crash it gets; this answer fits the one in
    // shop/orders.py and is refused for any other (its `find` is not in their region).
    server.set_default(Scripted::answer(
        r#"{"edits": [{"find": "    return customers.lookup(order[\"customer_id\"]).upper()", "replace": "    owner = customers.lookup(order[\"customer_id\"])\n    if owner is None:\n        raise LookupError(f\"no customer {order['customer_id']}\")\n    return owner.upper()"}], "explanation": "a missing customer is an error that says so"}"#,
    ));
    let home = private_home();
    let repo = crate::util::git_fixture("fixtures/demo-repo");
    let root = repo.path();
    std::fs::write(
        root.join("agency.toml"),
        format!(
            "[llm]\nbase_url = \"{}\"\nmodel = \"test-model\"\nauto_apply = true\n",
            server.base_url()
        ),
    )
    .unwrap();
    let log = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/logs/shop-production.log");
    let (code, stdout, stderr) = run(agency_at(home.path())
        .current_dir(root)
        .args(["heal", "--yes", "--json", "--from-log"])
        .arg(&log));
    assert!(code == 0 || code == 1, "{code}\n{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let heals = doc["heals"].as_array().unwrap();
    // Every traceback is its own finding at its own place.
    let places: Vec<String> = heals
        .iter()
        .map(|h| {
            format!(
                "{}:{}",
                h["finding"]["file"].as_str().unwrap(),
                h["finding"]["line"]
            )
        })
        .collect();
    assert!(
        places.contains(&"shop/orders.py:14".to_string()),
        "{places:?}"
    );
    assert!(
        places.contains(&"shop/report.py:9".to_string()),
        "{places:?}"
    );
    let orders = heals
        .iter()
        .find(|h| h["finding"]["file"] == "shop/orders.py")
        .unwrap();
    assert_eq!(orders["finding"]["category"], "runtime");
    assert_eq!(orders["status"], "healed", "{orders:#}");
    assert_eq!(orders["strategy"], "llm");
    let text = std::fs::read_to_string(root.join("shop/orders.py")).unwrap();
    assert!(
        text.contains("    if owner is None:\n        raise LookupError("),
        "{text}"
    );
}

#[test]
fn a_confident_pattern_means_no_call_and_ten_findings_never_have_more_than_five_in_flight() {
    let server = TestServer::start().unwrap();
    server.set_default(Scripted::answer(ANSWER).with_delay(std::time::Duration::from_millis(400)));
    let home = private_home();
    let config = format!(
        "[llm]\nbase_url = \"{}\"\nmodel = \"test-model\"\nauto_apply = true\n",
        server.base_url()
    );
    // Ten files with the defect, made in parallel: at most five requests at once.
    let many = repo_with(&config, 10);
    let doc = heal(home.path(), many.path());
    let by_llm = doc["heals"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["finding"]["rule"] == "call-arg" && h["strategy"] == "llm")
        .count();
    assert_eq!(by_llm, 10, "{doc:#}");
    assert_eq!(server.calls(), 10);
    assert!(server.max_in_flight() <= 5, "{}", server.max_in_flight());
    assert!(
        server.max_in_flight() >= 2,
        "the heals did not run in parallel"
    );

    // A confident pattern for the defect: the model is not asked at all.
    let record = serde_json::json!({
        "version": 1, "id": "type-call-arg-nam-test", "category": "type", "rule": "call-arg",
        "title": "greet's parameter is name", "message": "Unexpected keyword argument",
        "applicability": "safe", "before": "greet(nam=?v)", "after": "greet(name=?v)",
        "examples": [{"before": "greet(nam=x)", "after": "greet(name=x)", "source": "import"}],
        "source": "import", "prior": {"successes": 20.0, "failures": 0.0}
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.jsonl");
    std::fs::write(&file, format!("{record}\n")).unwrap();
    let (code, _, stderr) = run(agency_at(home.path())
        .args(["patterns", "import"])
        .arg(&file));
    assert_eq!(code, 0, "{stderr}");
    let calls = server.calls();
    let one = repo(&config);
    let doc = heal(home.path(), one.path());
    let heal = call_arg(&doc);
    assert_eq!(heal["status"], "healed", "{heal:#}");
    assert_eq!(heal["strategy"], "pattern");
    assert_eq!(server.calls(), calls);
}

#[test]
fn a_generated_fix_waits_for_approval_and_is_learned_once_approved() {
    let server = TestServer::start().unwrap();
    server.set_default(Scripted::answer(ANSWER));
    let home = private_home();
    let config = format!(
        "[llm]\nbase_url = \"{}\"\nmodel = \"test-model\"\n",
        server.base_url()
    );
    let a = repo(&config);
    let doc = heal(home.path(), a.path());
    let proposed = call_arg(&doc);
    assert_eq!(proposed["status"], "pending_approval", "{proposed:#}");
    assert_eq!(proposed["strategy"], "llm");
    assert_eq!(
        std::fs::read_to_string(a.path().join(FILE)).unwrap(),
        SOURCE
    );
    let (_, stdout, _) = run(agency_at(home.path()).args(["approvals", "list", "--json"]));
    let list: Value = serde_json::from_str(&stdout).unwrap();
    let id = list["approvals"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(list["approvals"][0]["verification"]["tests"], "passed");
    let (code, stdout, stderr) = run(agency_at(home.path()).current_dir(a.path()).args([
        "approvals",
        "approve",
        &id,
        "--json",
    ]));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        std::fs::read_to_string(a.path().join(FILE))
            .unwrap()
            .contains("greet(name=\"guest\")")
    );
    let (_, stdout, _) = run(agency_at(home.path()).args(["patterns", "list", "--json"]));
    let patterns: Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        patterns["patterns"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["rule"] == "call-arg" && p["source"] == "heal"),
        "{patterns:#}"
    );
    assert_eq!(server.calls(), 1);
}

#[test]
fn a_bad_answer_is_never_applied_and_says_why() {
    // Each answer fails in its own way: code that does not parse, an edit of another function
    // (outside the region the finding allows), and an answer slower than the timeout.
    let cases: [(&str, Scripted, &str); 3] = [
        (
            "not valid code",
            Scripted::answer(
                r#"{"edits": [{"find": "greet(nam=\"guest\")", "replace": "greet(name=\"guest\""}], "explanation": "oops"}"#,
            ),
            "syntax error",
        ),
        (
            "the wrong function",
            Scripted::answer(
                r#"{"edits": [{"find": "return f\"Hello, {name}!\"", "replace": "return f\"Hi, {name}!\""}], "explanation": "elsewhere"}"#,
            ),
            "outside",
        ),
        (
            "too slow",
            Scripted::answer(ANSWER).with_delay(std::time::Duration::from_secs(5)),
            "did not answer within",
        ),
    ];
    for (what, answer, why) in cases {
        let server = TestServer::start().unwrap();
        server.set_default(answer);
        let home = private_home();
        let config = format!(
            "[llm]\nbase_url = \"{}\"\nmodel = \"test-model\"\nauto_apply = true\ntimeout_s = 1\nmax_attempts = 1\n",
            server.base_url()
        );
        let a = repo(&config);
        let doc = heal(home.path(), a.path());
        let heal = call_arg(&doc);
        assert_ne!(heal["status"], "healed", "{what}: {heal:#}");
        assert_ne!(heal["status"], "pending_approval", "{what}: {heal:#}");
        let reason = heal["reason"].as_str().unwrap_or_default().to_lowercase();
        assert!(reason.contains(why), "{what}: {heal:#}");
        assert_eq!(
            std::fs::read_to_string(a.path().join(FILE)).unwrap(),
            SOURCE,
            "{what}"
        );
    }
}
