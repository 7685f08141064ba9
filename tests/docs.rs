//! The committed pattern pages in docs/patterns/healing are what `agency patterns docs` writes
//! for the seed library. Regenerate them with `agency patterns docs` on a fresh store.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::util::{agency, run};

fn read_tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, fs::read_to_string(&path).unwrap());
            }
        }
    }
    out
}

#[test]
fn committed_pattern_docs_are_current() {
    let store = tempfile::tempdir().unwrap();
    let out = store.path().join("healing");
    let (code, _, stderr) = run(agency().args([
        "patterns",
        "docs",
        "--out",
        &out.display().to_string(),
        "--store",
        &store.path().join("s").display().to_string(),
    ]));
    assert_eq!(code, 0, "{stderr}");
    let generated = read_tree(&out);
    let committed_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/patterns/healing");
    let committed = read_tree(&committed_dir);
    if std::env::var_os("AGENCY_UPDATE_DOCS").is_some() {
        fs::remove_dir_all(&committed_dir).ok();
        for (rel, text) in &generated {
            let path = committed_dir.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
        return;
    }
    assert_eq!(
        generated.keys().collect::<Vec<_>>(),
        committed.keys().collect::<Vec<_>>(),
        "docs/patterns/healing is stale: rerun with AGENCY_UPDATE_DOCS=1 cargo test committed_pattern_docs_are_current"
    );
    for (rel, text) in &generated {
        assert_eq!(
            Some(text),
            committed.get(rel),
            "docs/patterns/healing/{rel} is stale: rerun with AGENCY_UPDATE_DOCS=1 cargo test committed_pattern_docs_are_current"
        );
    }
    assert!(generated.len() > 40);
}
