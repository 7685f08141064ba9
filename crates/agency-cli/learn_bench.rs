//! `agency patterns bench --learning [--project DIR] [--json]`: the learning benchmark
//! (`agency_heal::learn_bench`). This side gives it what a real heal gets from the CLI: the
//! repository's heal settings, a pattern store, and what a heal does after writing its fixes
//! (outcomes, learning, heal events). The store is a private one in a temporary directory,
//! unseeded, so that every pattern used was learned in this run; the model, ONNX Runtime and
//! the pinned tools come from the data directory. Nothing of the user's is written: the project
//! is copied, the store and the copies are removed at the end.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use agency_client::{LocalClient, PatternClient};
use agency_heal::learn_bench::{Hooks, LearningReport};
use agency_patterns::{PatternStore, StoreConfig};
use anyhow::{Context, bail};

use crate::ExitStatus;
use crate::output;
use crate::patterns::BenchArgs;

/// The bundled demo repository, looked for from the working directory.
const DEFAULT_PROJECT: &str = "fixtures/demo-repo";

pub fn run(layout: &agency_setup::Layout, args: &BenchArgs) -> anyhow::Result<ExitStatus> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let project = if let Some(dir) = &args.project {
        std::fs::canonicalize(cwd.join(dir)).with_context(|| {
            format!(
                "cannot use {} as the project: check the path",
                dir.display()
            )
        })?
    } else {
        let default = cwd.join(DEFAULT_PROJECT);
        if !default.is_dir() {
            bail!(
                "no project given and no {DEFAULT_PROJECT} under {}: pass one with --project DIR (it is copied, never written)",
                cwd.display()
            );
        }
        std::fs::canonicalize(&default)
            .with_context(|| format!("cannot use {}", default.display()))?
    };

    // A private, unseeded store: the bench measures what is learned here, not the curated
    // library (which has patterns for some of the bench's rules).
    let store_dir = tempfile::Builder::new()
        .prefix("agency-learning-bench-store-")
        .tempdir()
        .context("cannot create a temporary directory for the benchmark's pattern store")?;
    let store = {
        let _busy = agency_heal::patterns::busy();
        let embedder = crate::patterns::load_embedder(layout)?;
        Arc::new(
            PatternStore::open(StoreConfig::new(store_dir.path()), embedder).with_context(
                || {
                    format!(
                        "cannot open the benchmark's pattern store in {}",
                        store_dir.path().display()
                    )
                },
            )?,
        )
    };
    let home = layout.home().to_path_buf();
    let settings = |root: &Path| {
        crate::heal::default_heal_settings(&home, root)
            .map_err(|e| -> agency_heal::learn_bench::HookError { format!("{e:#}").into() })
    };
    let client = || -> Box<dyn PatternClient> { Box::new(LocalClient::new(Arc::clone(&store))) };
    let after_heal = |patterns: &agency_heal::patterns::Patterns,
                      run_id: &str,
                      attempts: &[agency_heal::Attempt]| {
        crate::heal::report_outcomes(patterns, run_id, attempts);
        crate::heal::learn_from_heals(patterns, attempts);
        patterns.record_heals(run_id, attempts);
    };
    let hooks = Hooks {
        settings: &settings,
        client: &client,
        after_heal: &after_heal,
    };
    let plain = output::plain_progress();
    let step = |message: &str| {
        let line = format!("bench: {message}");
        if plain {
            eprintln!("{line}");
        } else {
            output::progress_line(&line);
        }
    };
    let report = agency_heal::learn_bench::run(&project, &hooks, &step)
        .with_context(|| format!("the learning benchmark on {} failed", project.display()))?;
    if args.json {
        output::print_json(&report)?;
    } else {
        output::print_text(&render(&report, &project))?;
    }
    Ok(ExitStatus::Success)
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

fn ms(x: f64) -> String {
    if x < 10.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.0}")
    }
}

/// The readable report: kinds, phases, latency, rounds, misses.
fn render(r: &LearningReport, project: &Path) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "learning benchmark on {}: {} Python files, {} lines; {} defects of {} kinds planted in {} modules (seed {:#x})",
        project.display(),
        r.files,
        r.lines,
        r.instances,
        r.kinds.len(),
        r.modules.len(),
        r.seed
    );
    let _ = writeln!(
        out,
        "verify: {}; tests before planting {}, after the last round {}",
        r.verify_command.as_deref().unwrap_or("none"),
        r.suite_before_planting,
        r.suite_final
    );
    out.push('\n');
    let rows: Vec<Vec<String>> = r
        .kinds
        .iter()
        .map(|k| {
            let (template, confidence) = match k.patterns.first() {
                Some(p) => (
                    format!("{} -> {}", one_line(&p.before), one_line(&p.after)),
                    format!("{:.2} ({}/{})", p.confidence, p.successes, p.failures),
                ),
                None => (
                    format!("not learned: {}", k.not_learned.as_deref().unwrap_or("?")),
                    "-".into(),
                ),
            };
            vec![
                k.rule.to_string(),
                k.name.to_string(),
                k.healed_auto.to_string(),
                k.healed_approved.to_string(),
                k.not_matched.to_string(),
                k.failed_verification.to_string(),
                k.other.to_string(),
                confidence,
                template,
            ]
        })
        .collect();
    out.push_str(&output::table(
        &[
            "rule",
            "kind",
            "auto",
            "approved",
            "no match",
            "failed",
            "other",
            "confidence (s/f)",
            "learned template",
        ],
        &rows,
    ));
    let p = &r.phase2;
    let _ = writeln!(
        out,
        "\nphase 1: {}/{} healed by the deterministic fixers, patterns learned for {} kinds",
        r.phase1_healed,
        r.kinds.len(),
        r.phase1_learned
    );
    let _ = writeln!(
        out,
        "phase 2: {} findings with the fixers off: {} auto-applied, {} approved (simulated reviewer), {} not matched, {} failed verification, {} other",
        p.instances,
        p.healed_auto,
        p.healed_approved,
        p.not_matched,
        p.failed_verification,
        p.other
    );
    let _ = writeln!(
        out,
        "healed by patterns alone: {} (target ≥ 80%)",
        pct(p.share_healed_by_patterns)
    );
    let _ = writeln!(
        out,
        "verification success of pattern fixes: {}",
        p.verification_success.map_or_else(
            || "- (none tried)".into(),
            |v| format!("{} of {} tried", pct(v), p.pattern_fixes_tried)
        )
    );
    let _ = writeln!(out, "wrong fixes kept: {} (target 0)", p.wrong_fixes_kept);
    if !r.outside_changes.is_empty() {
        let _ = writeln!(
            out,
            "code outside the planted functions changed in: {}",
            r.outside_changes.join(", ")
        );
    }
    let l = &r.latency;
    let _ = writeln!(
        out,
        "\nlatency per finding (ms)       p50     p95     p99  samples"
    );
    for (name, lat) in [
        ("lookup + match + apply", &l.lookup_to_apply),
        ("  lookup", &l.lookup),
        ("  match + apply", &l.match_apply),
        ("  same, file ≥ 2,000 lines", &l.match_apply_padded),
        ("    parse of that file", &l.parse_padded),
        (
            "    match + apply, pre-parsed",
            &l.match_apply_parsed_padded,
        ),
    ] {
        let _ = writeln!(
            out,
            "{name:<30} {:>6} {:>7} {:>7} {:>8}",
            ms(lat.p50_ms),
            ms(lat.p95_ms),
            ms(lat.p99_ms),
            lat.samples
        );
    }
    let _ = writeln!(
        out,
        "(target: match + apply p99 ≤ 5 ms on a 2,000-line file)\n"
    );
    let rows: Vec<Vec<String>> = r
        .rounds
        .iter()
        .map(|x| {
            vec![
                x.round.to_string(),
                x.findings.to_string(),
                x.healed_by_fixer.to_string(),
                x.healed_auto.to_string(),
                x.healed_approved.to_string(),
                x.not_matched.to_string(),
                x.failed_verification.to_string(),
                x.other.to_string(),
                x.suite_runs.to_string(),
                x.suite_after.to_string(),
                format!("{:.1}", x.wall_ms as f64 / 1000.0),
            ]
        })
        .collect();
    out.push_str(&output::table(
        &[
            "round",
            "findings",
            "fixer",
            "auto",
            "approved",
            "no match",
            "failed",
            "other",
            "suite runs",
            "tests after",
            "wall s",
        ],
        &rows,
    ));
    let misses: Vec<String> = r
        .details
        .iter()
        .filter(|d| !d.outcome.kept() || d.as_expected == Some(false) || d.breaks_tests)
        .map(|d| {
            format!(
                "  {} {} ({}) {}:{}: {}{}",
                d.id,
                d.name,
                d.context,
                d.file,
                d.line.map_or_else(|| "?".into(), |l| l.to_string()),
                d.outcome.as_str(),
                d.reason
                    .as_deref()
                    .map_or_else(String::new, |r| format!(": {}", one_line(r)))
            )
        })
        .collect();
    if !misses.is_empty() {
        let _ = writeln!(out, "\nnot healed, or not as ruff fixes them:");
        for m in misses {
            let _ = writeln!(out, "{m}");
        }
    }
    if let Some(c) = &r.calibration {
        out.push_str(&crate::patterns::render_calibration(c));
    }
    if !r.generator_mismatches.is_empty() {
        let _ = writeln!(
            out,
            "\nruff fixes these differently from the generator's expectation (ruff's text is the yardstick): {}",
            r.generator_mismatches.join(", ")
        );
    }
    for note in &r.notes {
        let _ = writeln!(out, "note: {note}");
    }
    let _ = writeln!(
        out,
        "\n{} test runs, {:.1} s; targets {}",
        r.suite_runs,
        r.wall_ms as f64 / 1000.0,
        if r.targets_met { "met" } else { "NOT met" }
    );
    out
}

/// A template or message on one line.
fn one_line(text: &str) -> String {
    text.trim().replace('\n', "⏎ ")
}
