//! Criterion benches of the native analyzers (parse once, run every per-file rule) on real
//! Python: every fixture of the rule suite and the demo repository (hand-written code with the
//! constructs the rules look at), and a generated literal-heavy module at two sizes to show the
//! cost stays linear. Throughput is reported in lines. The end-to-end scan with the external
//! tools is measured by `agency bench scan` (docs/benchmarks.md), since it is dominated by
//! processes, not by this code.
//!
//! `cargo bench --bench scan -- --quick` runs it quickly.

use std::hint::black_box;
use std::path::{Path, PathBuf};

use agency_scan::native::analyze_source;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// Every `.py` file below `dir`, as (relative path, text).
fn python_files(dir: &Path, out: &mut Vec<(String, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(std::fs::DirEntry::path);
    for entry in entries {
        let path = entry.path();
        if path.is_dir() {
            python_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "py")
            && let Ok(text) = std::fs::read_to_string(&path)
        {
            out.push((path.display().to_string(), text));
        }
    }
}

/// A module of `lines` dict entries with tuples, lists and nested dicts.
fn literal_module(lines: usize) -> String {
    let mut text = String::from("TABLE = {\n");
    for i in 0..lines {
        text.push_str(&format!(
            "    \"key_{i}\": ({i}, \"value {i}\", [{i}, {}, {}], {{\"nested\": {i}.5}}),\n",
            i + 1,
            i + 2
        ));
    }
    text.push_str("}\n");
    text
}

fn native(c: &mut Criterion) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let mut files = Vec::new();
    for dir in ["security", "performance", "logic", "import", "demo-repo"] {
        python_files(&root.join(dir), &mut files);
    }
    let lines: usize = files.iter().map(|(_, t)| t.lines().count()).sum();
    let mut group = c.benchmark_group("native");
    group.throughput(Throughput::Elements(lines as u64));
    group.bench_function(BenchmarkId::new("fixtures", lines), |b| {
        b.iter(|| {
            for (path, text) in &files {
                black_box(analyze_source(path, text, &|_| true));
            }
        });
    });
    for size in [10_000, 100_000] {
        let text = literal_module(size);
        group.throughput(Throughput::Elements(size as u64 + 2));
        group.sample_size(10);
        group.bench_function(BenchmarkId::new("literal-module", size), |b| {
            b.iter(|| black_box(analyze_source("data.py", &text, &|_| true)));
        });
    }
    group.finish();
}

criterion_group!(benches, native);
criterion_main!(benches);
