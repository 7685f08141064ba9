//! `agency patterns learn --from-git` end to end: the real binary, tools and store, on git
//! repositories the tests build commit by commit. Fixes made by hand in the history become
//! `history` patterns with holes; formatting, merged branches and bad input teach nothing; the
//! working tree, the index and HEAD are never touched.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::util::{agency_at, git, private_home, run, tree};

/// Writes `files` (path, text) into `repo` and commits them with `subject`.
fn commit(repo: &Path, subject: &str, files: &[(&str, &[u8])]) {
    for (path, bytes) in files {
        let path = repo.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", subject]);
}

fn git_out(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?} failed");
    String::from_utf8(out.stdout).unwrap()
}

fn new_repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    git(dir.path(), &["init", "-q", "-b", "main"]);
    dir
}

const APP_BEFORE: &str = "\
import yaml


def find_user(users, name):
    user = users.get(name)
    if user == None:
        return \"missing\"
    return user


def load_config(path):
    with open(path) as fh:
        cfg = yaml.load(fh)
    return cfg


def first_item(items):
    head = items[0] if items else None
    if head == None:
        return 0
    return head
";

const FMT_BEFORE: &str = "\
def pick(a,b):
    if a: return b
    return [a,b,]
";

const FMT_AFTER: &str = "\
def pick(a, b):
    if a:
        return b
    return [a, b]
";

/// The repository of the main test: code with findings; a commit fixing them by hand; a file
/// with a one-line `if` (E701) and a commit that only reformats it; a branch fixing a `!= None`,
/// merged with a merge commit (not on the first-parent line).
fn history_repo() -> tempfile::TempDir {
    let dir = new_repo();
    let repo = dir.path();
    commit(repo, "initial code", &[("app.py", APP_BEFORE.as_bytes())]);
    let fixed = APP_BEFORE
        .replace("user == None", "user is None")
        .replace("head == None", "head is None")
        .replace("yaml.load(fh)", "yaml.safe_load(fh)");
    commit(
        repo,
        "fix None comparisons and unsafe yaml",
        &[("app.py", fixed.as_bytes())],
    );
    commit(repo, "add pick", &[("pkg/fmt.py", FMT_BEFORE.as_bytes())]);
    commit(
        repo,
        "reformat pick",
        &[("pkg/fmt.py", FMT_AFTER.as_bytes())],
    );
    commit(
        repo,
        "add check",
        &[("check.py", b"def ok(v):\n    return v != None\n")],
    );
    git(repo, &["checkout", "-q", "-b", "feature"]);
    commit(
        repo,
        "fix check on a branch",
        &[("check.py", b"def ok(v):\n    return v is not None\n")],
    );
    git(repo, &["checkout", "-q", "main"]);
    git(
        repo,
        &["merge", "-q", "--no-ff", "-m", "merge feature", "feature"],
    );
    dir
}

fn learn(home: &Path, repo: &Path, extra: &[&str]) -> (i32, String, String) {
    run(agency_at(home)
        .current_dir(repo)
        .args(["patterns", "learn", "--from-git", "--json"])
        .args(extra))
}

fn history_patterns(home: &Path) -> Vec<Value> {
    let (code, stdout, stderr) = run(agency_at(home).args(["patterns", "list", "--json"]));
    assert_eq!(code, 0, "{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    doc["patterns"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["source"] == "history")
        .cloned()
        .collect()
}

/// Whether `before`/`after` are `<hole> <op> <rest>` and `<hole> <new op> <rest>` with the same
/// hole, e.g. `?a == None` -> `?a is None`.
fn hole_then(template: &str, rest: &str) -> Option<String> {
    let (hole, tail) = template.split_once(' ')?;
    (hole.starts_with('?') && hole.len() > 1 && tail == rest).then(|| hole.to_string())
}

#[test]
fn human_fixes_in_the_history_become_patterns_and_the_repository_is_untouched() {
    let home = private_home();
    let dir = history_repo();
    let repo = dir.path();
    let head = git_out(repo, &["rev-parse", "HEAD"]);
    let files = tree(repo);
    let index = std::fs::read(repo.join(".git/index")).unwrap();
    let fix = git_out(repo, &["rev-parse", "HEAD^1~3"]).trim().to_string();
    assert_eq!(
        git_out(repo, &["log", "-1", "--format=%s", &fix]).trim(),
        "fix None comparisons and unsafe yaml"
    );

    let (code, stdout, stderr) = learn(home.path(), repo, &[]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(doc["version"], 1);
    // initial, fix, add pick, reformat, add check; the merge and the branch are not walked.
    assert_eq!(doc["commits"], 5, "{doc:#}");
    assert_eq!(doc["merges"], 1, "{doc:#}");
    assert_eq!(doc["skipped"]["formatting_only"], 1, "{doc:#}");
    assert_eq!(doc["skipped"]["root_commit"], 1, "{doc:#}");
    assert_eq!(doc["removed"], 3, "{doc:#}");
    assert_eq!(doc["learned"], 2, "{doc:#}");
    assert_eq!(doc["merged"], 0, "{doc:#}");

    let patterns = doc["patterns"].as_array().unwrap();
    assert_eq!(patterns.len(), 2, "{doc:#}");
    let e711 = patterns.iter().find(|p| p["rule"] == "E711").unwrap();
    let hole = hole_then(e711["before"].as_str().unwrap(), "== None")
        .unwrap_or_else(|| panic!("E711 before: {e711:#}"));
    assert_eq!(e711["after"], format!("{hole} is None"), "{e711:#}");
    // Both fixes of one commit: one pattern, support one commit.
    assert_eq!(e711["support"], 1);
    assert_eq!(e711["commits"], serde_json::json!([fix]));
    let b506 = patterns.iter().find(|p| p["rule"] == "B506").unwrap();
    let before = b506["before"].as_str().unwrap();
    let hole = before
        .strip_prefix("yaml.load(")
        .and_then(|h| h.strip_suffix(')'))
        .filter(|h| h.starts_with('?'))
        .unwrap_or_else(|| panic!("B506 before: {b506:#}"));
    assert_eq!(b506["after"], format!("yaml.safe_load({hole})"));
    // Neither the reformat (E701) nor the branch's `!= None` fix taught anything.
    assert!(
        patterns
            .iter()
            .all(|p| !p["after"].as_str().unwrap().contains("is not None")),
        "{doc:#}"
    );

    // Stored as history patterns: unsafe, not yet trusted, with their examples.
    let stored = history_patterns(home.path());
    assert_eq!(stored.len(), 2, "{stored:#?}");
    let id = e711["id"].as_str().unwrap();
    assert!(id.starts_with("style-e711-history-"), "{id}");
    let (code, stdout, stderr) =
        run(agency_at(home.path()).args(["patterns", "show", id, "--json"]));
    assert_eq!(code, 0, "{stderr}");
    let view: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(view["source"], "history");
    assert_eq!(view["applicability"], "unsafe");
    assert_eq!(view["auto_apply"], false);
    assert_eq!(view["support"], 1);
    assert_eq!(view["successes"], 0);
    assert!(view["confidence"].as_f64().unwrap() < 0.9, "{view:#}");
    assert!(
        view["explanation"]
            .as_str()
            .unwrap()
            .contains("fix None comparisons and unsafe yaml"),
        "{view:#}"
    );
    let examples: Vec<(&str, &str)> = view["examples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["before"].as_str().unwrap(), e["after"].as_str().unwrap()))
        .collect();
    assert!(
        examples.contains(&("user == None", "user is None")),
        "{view:#}"
    );
    assert!(
        examples.contains(&("head == None", "head is None")),
        "{view:#}"
    );

    // Nothing in the repository changed: files, index, HEAD, status.
    assert_eq!(tree(repo), files);
    assert_eq!(std::fs::read(repo.join(".git/index")).unwrap(), index);
    assert_eq!(git_out(repo, &["rev-parse", "HEAD"]), head);
    assert_eq!(git_out(repo, &["status", "--porcelain"]), "");

    // Again: the commits are already examples, so nothing counts twice.
    let (code, stdout, stderr) = learn(home.path(), repo, &[]);
    assert_eq!(code, 0, "{stderr}");
    let again: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (&again["learned"], &again["merged"], &again["known"]),
        (
            &serde_json::json!(0),
            &serde_json::json!(0),
            &serde_json::json!(2)
        ),
        "{again:#}"
    );
    let (_, stdout, _) = run(agency_at(home.path()).args(["patterns", "show", id, "--json"]));
    let view: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(view["support"], 1);

    // A later commit with the same fix in another function: one more commit of support.
    commit(
        repo,
        "add lookup",
        &[(
            "lookup.py",
            b"def lookup(table, key):\n    value = table.get(key)\n    return value == None\n",
        )],
    );
    commit(
        repo,
        "fix lookup",
        &[(
            "lookup.py",
            b"def lookup(table, key):\n    value = table.get(key)\n    return value is None\n",
        )],
    );
    let (code, stdout, stderr) = learn(home.path(), repo, &["HEAD~2..HEAD"]);
    assert_eq!(code, 0, "{stderr}");
    let later: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(later["commits"], 2, "{later:#}");
    assert_eq!(later["merged"], 1, "{later:#}");
    assert_eq!(later["patterns"][0]["id"], id, "{later:#}");
    let (_, stdout, _) = run(agency_at(home.path()).args(["patterns", "show", id, "--json"]));
    let view: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(view["support"], 2, "{view:#}");
}

#[test]
fn a_range_git_does_not_know_is_a_clear_error_and_stores_nothing() {
    let home = private_home();
    let dir = history_repo();
    let (code, stdout, stderr) = learn(home.path(), dir.path(), &["no-such-branch..HEAD"]);
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("git does not know the revision range `no-such-branch..HEAD`"),
        "{stderr}"
    );
    assert!(stderr.contains("HEAD~20..HEAD"), "{stderr}");
    assert!(history_patterns(home.path()).is_empty());

    let plain = tempfile::tempdir().unwrap();
    let (code, _, stderr) = learn(home.path(), plain.path(), &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("is not inside a git repository"),
        "{stderr}"
    );
}

#[test]
fn binary_undecodable_and_unparsable_files_are_named_and_teach_nothing() {
    let home = private_home();
    let dir = new_repo();
    let repo = dir.path();
    let broken_before = "def f(x):\n    return x == None\n";
    let binary_before: &[u8] = b"x = 1\0\x01\n";
    let latin_before: &[u8] = b"# caf\xe9\ndef g(y):\n    return y == None\n";
    commit(
        repo,
        "initial",
        &[
            ("broken.py", broken_before.as_bytes()),
            ("blob.py", binary_before),
            ("latin.py", latin_before),
        ],
    );
    // Fixes the E711 but breaks the syntax elsewhere in the file.
    commit(
        repo,
        "fix and break",
        &[("broken.py", b"def f(x):\n    return x is None\n\ndef (:\n")],
    );
    commit(repo, "change blob", &[("blob.py", b"x = 2\0\x02\n")]);
    commit(
        repo,
        "fix latin",
        &[("latin.py", b"# caf\xe9\ndef g(y):\n    return y is None\n")],
    );

    let (code, stdout, stderr) = learn(home.path(), repo, &[]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["skipped"]["syntax_error"], 1, "{doc:#}");
    assert_eq!(doc["skipped"]["binary_file"], 1, "{doc:#}");
    assert_eq!(doc["skipped"]["not_utf8"], 1, "{doc:#}");
    assert_eq!(doc["learned"], 0, "{doc:#}");
    assert!(doc["patterns"].as_array().unwrap().is_empty(), "{doc:#}");
    let notes: Vec<(&str, &str)> = doc["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["file"].as_str().unwrap(), n["message"].as_str().unwrap()))
        .collect();
    let note = |file: &str| {
        notes
            .iter()
            .find(|(f, _)| *f == file)
            .map_or_else(|| panic!("no note for {file}: {doc:#}"), |(_, m)| *m)
    };
    assert!(note("broken.py").contains("does not parse"), "{doc:#}");
    assert!(note("blob.py").contains("binary"), "{doc:#}");
    assert!(note("latin.py").contains("not UTF-8"), "{doc:#}");
    assert!(history_patterns(home.path()).is_empty());

    // The text report names them too.
    let (code, stdout, stderr) =
        run(agency_at(home.path())
            .current_dir(repo)
            .args(["patterns", "learn", "--from-git"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("broken.py at "), "{stdout}");
    assert!(stdout.contains("0 learned"), "{stdout}");
}

#[test]
fn a_retired_rewrite_is_not_learned_again_from_later_commits() {
    let home = private_home();
    let dir = new_repo();
    let repo = dir.path();
    commit(
        repo,
        "add a",
        &[("a.py", b"def a(x):\n    return x == None\n")],
    );
    commit(
        repo,
        "fix a",
        &[("a.py", b"def a(x):\n    return x is None\n")],
    );
    let (code, stdout, stderr) = learn(home.path(), repo, &[]);
    assert_eq!(code, 0, "{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["learned"], 1, "{doc:#}");
    let id = doc["patterns"][0]["id"].as_str().unwrap().to_string();

    // The pattern fails every time it is used and is retired.
    for _ in 0..5 {
        let (code, _, stderr) =
            run(agency_at(home.path()).args(["patterns", "outcome", &id, "--failure"]));
        assert_eq!(code, 0, "{stderr}");
    }
    let (code, _, stderr) = run(agency_at(home.path()).args(["patterns", "prune"]));
    assert_eq!(code, 0, "{stderr}");
    let (_, stdout, _) = run(agency_at(home.path()).args(["patterns", "show", &id, "--json"]));
    let view: Value = serde_json::from_str(&stdout).unwrap();
    assert!(view["retired"].is_object(), "{view:#}");

    // A later commit makes the same fix: refused, not learned, not merged.
    commit(
        repo,
        "add b",
        &[("b.py", b"def b(y):\n    return y == None\n")],
    );
    commit(
        repo,
        "fix b",
        &[("b.py", b"def b(y):\n    return y is None\n")],
    );
    let (code, stdout, stderr) = learn(home.path(), repo, &["HEAD~2..HEAD"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (&doc["learned"], &doc["merged"]),
        (&serde_json::json!(0), &serde_json::json!(0)),
        "{doc:#}"
    );
    let refused = doc["refused"].as_array().unwrap();
    assert_eq!(refused.len(), 1, "{doc:#}");
    assert_eq!(refused[0]["id"], id.as_str());
    assert!(
        refused[0]["reason"].as_str().unwrap().contains("retired"),
        "{doc:#}"
    );
    let (_, stdout, _) = run(agency_at(home.path()).args(["patterns", "show", &id, "--json"]));
    let view: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(view["support"], 1, "{view:#}");
    assert!(view["retired"].is_object(), "{view:#}");
}
