//! Making and checking fixes in parallel, in dependency order (issue 6, "Parallelism").
//!
//! The unit of work is a file's **chain**: every finding of one file, import fixes first, then
//! in line order, `ruff format` last. A chain runs on one worker from start to end, so the fixes of one file are
//! made one after the other on the text the previous one left: overlapping edits are never
//! applied together, and a file is never written by two workers. Every fix changes one file
//! today; a fix that changes several would hold all their chains.
//!
//! Chains run on up to `max_concurrent` workers, in the order of the import graph among the
//! files being fixed: a file starts only after the files it imports are done (their import
//! fixes included), so a re-scan of a file sees the modules it uses as they will be. Files in
//! an import cycle run one after the other. One chain's failure never stops another.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Condvar, Mutex};

use agency_scan::finding::ScannedFinding;
use agency_scan::project::{FileFacts, ImportGraph, module_name};

/// The chains of a run: file → indices into `findings`, import findings first, then in the
/// order of `findings`.
pub fn chains(findings: &[ScannedFinding]) -> BTreeMap<String, Vec<usize>> {
    let mut chains: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, f) in findings.iter().enumerate() {
        chains.entry(f.finding.file.clone()).or_default().push(i);
    }
    for chain in chains.values_mut() {
        // Stable: within each group the scan's order stays. Formatting comes last: its edits
        // span the file, and it formats what the other fixes leave.
        chain.sort_by_key(|&i| {
            let f = &findings[i].finding;
            (
                f.rule == agency_scan::tools::ruff::FORMAT_RULE,
                f.category != "import",
            )
        });
    }
    chains
}

/// Among `files` (relative to `root`), the ones each file imports at import time.
pub fn dependencies(root: &Path, files: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
    let mut analyses = Vec::with_capacity(files.len());
    for &file in files {
        // A file that cannot be read has no edges; its own attempt reports the problem.
        let Ok(source) = std::fs::read_to_string(root.join(file)) else {
            continue;
        };
        let analysis = agency_scan::native::analyze_source(file, &source, &|_| false);
        analyses.push((file, analysis));
    }
    let facts: Vec<FileFacts> = analyses
        .iter()
        .map(|(file, a)| FileFacts {
            file,
            imports: &a.imports,
            unbound: &a.unbound,
        })
        .collect();
    let mut is_package = |dir: &Path| dir.join("__init__.py").is_file();
    let names: HashMap<&str, String> = analyses
        .iter()
        .map(|(file, _)| (*file, module_name(root, file, &mut is_package)))
        .collect();
    ImportGraph::build(&facts, &names).file_edges()
}

/// Runs `work(worker, file)` for every file on up to `workers` threads (`worker` is the
/// thread's index, from 0), each file after the files it depends on (`deps`, restricted to
/// `files`); a dependency cycle is broken at its first file in path order. Returns the results
/// in the order the files finished.
pub fn run<T: Send>(
    files: &[String],
    deps: &BTreeMap<String, BTreeSet<String>>,
    workers: usize,
    work: &(dyn Fn(usize, &str) -> T + Sync),
) -> Vec<T> {
    let known: BTreeSet<&str> = files.iter().map(String::as_str).collect();
    let waits: BTreeMap<&str, BTreeSet<&str>> = files
        .iter()
        .map(|f| {
            let on = deps
                .get(f)
                .into_iter()
                .flatten()
                .map(String::as_str)
                .filter(|d| known.contains(d) && *d != f.as_str())
                .collect();
            (f.as_str(), on)
        })
        .collect();
    let state = Mutex::new(State {
        waiting: known.clone(),
        running: BTreeSet::new(),
        done: BTreeSet::new(),
    });
    let changed = Condvar::new();
    let results = Mutex::new(Vec::with_capacity(files.len()));
    std::thread::scope(|scope| {
        for worker in 0..workers.clamp(1, files.len().max(1)) {
            let (state, changed, waits, results) = (&state, &changed, &waits, &results);
            scope.spawn(move || {
                while let Some(file) = next(state, changed, waits) {
                    let result = work(worker, file);
                    results
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(result);
                    let mut s = state
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    s.running.remove(file);
                    s.done.insert(file);
                    changed.notify_all();
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct State<'a> {
    waiting: BTreeSet<&'a str>,
    running: BTreeSet<&'a str>,
    done: BTreeSet<&'a str>,
}

/// The next file whose dependencies are done; waits while the only candidates depend on
/// running files; `None` when nothing is left.
fn next<'a>(
    state: &Mutex<State<'a>>,
    changed: &Condvar,
    waits: &BTreeMap<&'a str, BTreeSet<&'a str>>,
) -> Option<&'a str> {
    let mut s = state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    loop {
        if s.waiting.is_empty() {
            return None;
        }
        let ready = s.waiting.iter().copied().find(|f| {
            waits
                .get(f)
                .is_none_or(|on| on.iter().all(|d| s.done.contains(d)))
        });
        // Nothing ready and nothing running: the rest wait on each other (a cycle).
        let pick = ready.or_else(|| {
            if s.running.is_empty() {
                s.waiting.first().copied()
            } else {
                None
            }
        });
        if let Some(file) = pick {
            s.waiting.remove(file);
            s.running.insert(file);
            return Some(file);
        }
        s = changed
            .wait(s)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn deps(pairs: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
        pairs
            .iter()
            .map(|(f, on)| (f.to_string(), on.iter().map(ToString::to_string).collect()))
            .collect()
    }

    #[test]
    fn a_file_starts_only_after_the_files_it_imports() {
        let files: Vec<String> = ["a.py", "b.py", "c.py", "d.py"].map(String::from).to_vec();
        // a imports b, b imports c; d is free. c, then b, then a.
        let deps = deps(&[("a.py", &["b.py"]), ("b.py", &["c.py", "outside.py"])]);
        let order = run(&files, &deps, 4, &|_, f: &str| {
            std::thread::sleep(Duration::from_millis(20));
            f.to_string()
        });
        let pos = |f: &str| order.iter().position(|x| x == f).unwrap();
        assert!(
            pos("c.py") < pos("b.py") && pos("b.py") < pos("a.py"),
            "{order:?}"
        );
        assert_eq!(order.len(), 4);
    }

    #[test]
    fn independent_files_run_at_once_up_to_the_limit() {
        let files: Vec<String> = (0..6).map(|i| format!("f{i}.py")).collect();
        let now = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        run(&files, &BTreeMap::new(), 3, &|_, _: &str| {
            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(n, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(50));
            now.fetch_sub(1, Ordering::SeqCst);
        });
        assert_eq!(most.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_cycle_runs_one_file_after_the_other() {
        let files: Vec<String> = ["a.py", "b.py"].map(String::from).to_vec();
        let deps = deps(&[("a.py", &["b.py"]), ("b.py", &["a.py"])]);
        let now = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let order = run(&files, &deps, 2, &|_, f: &str| {
            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(n, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(20));
            now.fetch_sub(1, Ordering::SeqCst);
            f.to_string()
        });
        assert_eq!(order, ["a.py", "b.py"]);
        assert_eq!(most.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn dependencies_come_from_the_import_graph() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("pkg")).unwrap();
        std::fs::write(root.join("pkg/__init__.py"), "").unwrap();
        std::fs::write(root.join("pkg/a.py"), "from pkg import b\nimport os\n").unwrap();
        std::fs::write(root.join("pkg/b.py"), "from . import c\n").unwrap();
        std::fs::write(root.join("pkg/c.py"), "x = 1\n").unwrap();
        let deps = dependencies(root, &["pkg/a.py", "pkg/b.py", "pkg/c.py"]);
        assert_eq!(
            deps.get("pkg/a.py").unwrap(),
            &BTreeSet::from(["pkg/b.py".to_string()])
        );
        assert_eq!(
            deps.get("pkg/b.py").unwrap(),
            &BTreeSet::from(["pkg/c.py".to_string()])
        );
    }

    #[test]
    fn import_findings_lead_their_chain() {
        let finding = |file: &str, category: &str, line: u32| {
            let mut f: ScannedFinding = ScannedFinding {
                finding: serde_json::from_value(serde_json::json!({
                    "id": format!("{file}{line}"), "category": category, "rule": "R",
                    "tool": "agency", "priority": "P2", "severity": "low", "file": file,
                    "line": line, "column": 1, "end_line": line, "end_column": 2,
                    "message": "m", "sources": [], "snippet": "",
                    "fix": {"available": true, "approval_required": false}
                }))
                .unwrap(),
                tool_fix: None,
            };
            f.finding.line = line;
            f
        };
        let mut format = finding("a.py", "style", 1);
        format.finding.rule = "format".into();
        let findings = vec![
            format,
            finding("a.py", "style", 1),
            finding("b.py", "style", 1),
            finding("a.py", "import", 9),
            finding("a.py", "style", 5),
        ];
        let chains = chains(&findings);
        assert_eq!(chains["a.py"], [3, 1, 4, 0]);
        assert_eq!(chains["b.py"], [2]);
    }
}
