//! Match + apply of a rewrite at one site of a ~2,000-line Python file, and extraction from a
//! fix in that file. Targets (LEARNING.md §8): match + apply ≤ 5 ms p99, extraction ≤ 50 ms p99.
//! The inputs are generated with fixed contents, so runs compare.

// A bench reports on stderr; the library itself never prints.
#![allow(clippy::print_stderr)]

use std::time::{Duration, Instant};

use agency_core::pattern::Rewrite;
use agency_learn::{Site, apply, compile, extract, parse_source};
use criterion::{Criterion, criterion_group, criterion_main};

/// About 2,000 lines: 200 functions of 10 lines, one `== None` per function.
fn generate() -> String {
    let mut out = String::from("import yaml\n\n\n");
    for i in 0..200 {
        out.push_str(&format!(
            "def handler_{i}(request, items):\n    total = 0\n    for item in items:\n        total += item.value * {i}\n    if request.user == None:\n        return None\n    data = yaml.load(request.body)\n    # comment {i}\n    return total, data\n\n"
        ));
    }
    out
}

fn bench(c: &mut Criterion) {
    let source = generate();
    let line = source.lines().count() / 2;
    // The `== None` line of the function in the middle of the file.
    let site_line = source
        .lines()
        .enumerate()
        .skip(line)
        .find(|(_, l)| l.contains("== None"))
        .map(|(i, _)| i + 1)
        .expect("generated");
    let site = Site::line(u32::try_from(site_line).expect("small"));
    let rewrite = compile(&Rewrite {
        before: "?x == None".into(),
        after: "?x is None".into(),
    })
    .expect("compiles");

    c.bench_function("parse + match + apply, 2k lines", |b| {
        b.iter(|| {
            let parsed = parse_source(&source).expect("parses");
            apply(&rewrite, &parsed, site)
                .expect("applies")
                .expect("matches")
        });
    });
    let parsed = parse_source(&source).expect("parses");
    c.bench_function("match + apply (parsed), 2k lines", |b| {
        b.iter(|| {
            apply(&rewrite, &parsed, site)
                .expect("applies")
                .expect("matches")
        });
    });
    let fixed = source.replacen("yaml.load(request.body)", "yaml.safe_load(request.body)", 1);
    let fix_line = source
        .lines()
        .position(|l| l.contains("yaml.load"))
        .expect("generated")
        + 1;
    c.bench_function("extract, 2k lines", |b| {
        b.iter(|| {
            extract(
                "B506",
                &source,
                &fixed,
                u32::try_from(fix_line).expect("small"),
            )
            .expect("extracts")
        });
    });
}

/// p50/p95/p99 of `n` timed runs, as STYLE.md asks `bench` output to show.
fn percentiles(name: &str, n: usize, mut run: impl FnMut()) {
    let mut times: Vec<Duration> = (0..n)
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed()
        })
        .collect();
    times.sort();
    let at = |q: f64| times[((n as f64 * q) as usize).min(n - 1)];
    eprintln!(
        "{name}: p50 {:?} p95 {:?} p99 {:?} ({n} runs)",
        at(0.50),
        at(0.95),
        at(0.99)
    );
}

fn tails(_: &mut Criterion) {
    let source = generate();
    let site_line = source
        .lines()
        .enumerate()
        .skip(source.lines().count() / 2)
        .find(|(_, l)| l.contains("== None"))
        .map(|(i, _)| i + 1)
        .expect("generated");
    let site = Site::line(u32::try_from(site_line).expect("small"));
    let rewrite = compile(&Rewrite {
        before: "?x == None".into(),
        after: "?x is None".into(),
    })
    .expect("compiles");
    percentiles("parse + match + apply, 2k lines", 500, || {
        let parsed = parse_source(&source).expect("parses");
        apply(&rewrite, &parsed, site)
            .expect("applies")
            .expect("matches");
    });
    let parsed = parse_source(&source).expect("parses");
    percentiles("match + apply (parsed), 2k lines", 2000, || {
        apply(&rewrite, &parsed, site)
            .expect("applies")
            .expect("matches");
    });
    let fixed = source.replacen("yaml.load(request.body)", "yaml.safe_load(request.body)", 1);
    let fix_line = source
        .lines()
        .position(|l| l.contains("yaml.load"))
        .expect("generated")
        + 1;
    percentiles("extract, 2k lines", 300, || {
        extract(
            "B506",
            &source,
            &fixed,
            u32::try_from(fix_line).expect("small"),
        )
        .expect("extracts");
    });
}

criterion_group!(benches, bench, tails);
criterion_main!(benches);
