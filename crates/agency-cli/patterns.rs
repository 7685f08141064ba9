//! `agency patterns ...`: query, list, show, prune, export, import, docs, bench and outcome.

use std::fs;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use agency_core::Category;
use agency_core::contract::{QueryResponse, SCHEMA_VERSION};
use agency_patterns::embed::{Embedder, EmbedderConfig};
use agency_patterns::{OutcomeInput, PatternStore, Query, StoreConfig};
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

use crate::ExitStatus;
use crate::output::{bar, print_json, print_text, table, warn};

#[derive(Debug, Subcommand)]
pub enum PatternsCommand {
    /// Find the patterns that best match an error message.
    Query(QueryArgs),
    /// List the patterns in the store.
    List(ListArgs),
    /// Show one pattern with its examples and track record.
    Show(ShowArgs),
    /// Retire patterns whose track record fails the retirement rule, and report them.
    Prune(JsonArgs),
    /// Write every pattern as JSON lines.
    Export(ExportArgs),
    /// Read patterns from JSON lines written by export; all or nothing.
    Import(ImportArgs),
    /// Generate the pattern documentation pages.
    Docs(DocsArgs),
    /// Measure lookup latency, recall and memory on a synthetic store.
    Bench(BenchArgs),
    /// Record the outcome of applying a pattern (or a batch of outcomes as JSON lines).
    Outcome(OutcomeArgs),
}

#[derive(Debug, Args)]
pub struct StoreArgs {
    /// The pattern store directory (default: <home>/store).
    #[arg(long, value_name = "DIR", global = true)]
    store: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The error to look up: a message, a traceback line or a description.
    text: String,
    /// Only patterns of this category (type, import, style, security, performance, logic, runtime).
    #[arg(long)]
    category: Option<Category>,
    /// Only patterns for this rule code (e.g. E711, B608, union-attr).
    #[arg(long)]
    rule: Option<String>,
    /// How many matches to return (1-100).
    #[arg(long, default_value_t = 5)]
    k: usize,
    /// Only patterns at least this confident (0-1).
    #[arg(long, value_name = "X")]
    min_confidence: Option<f64>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Include retired patterns.
    #[arg(long)]
    all: bool,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    id: String,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct JsonArgs {
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Where to write the JSON lines (replaced atomically).
    file: PathBuf,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// JSON lines written by `agency patterns export`.
    file: PathBuf,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct DocsArgs {
    /// Output directory.
    #[arg(long, default_value = "docs/patterns/healing", value_name = "DIR")]
    out: PathBuf,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Patterns in the synthetic store.
    #[arg(long, default_value_t = 100_000)]
    n: usize,
    /// Query texts to time.
    #[arg(long, default_value_t = 300)]
    queries: usize,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct OutcomeArgs {
    /// The pattern that was applied.
    #[arg(required_unless_present = "batch", conflicts_with = "batch")]
    id: Option<String>,
    /// The fix was verified.
    #[arg(long, conflicts_with_all = ["failure", "batch"], required_unless_present_any = ["failure", "batch"])]
    success: bool,
    /// The fix failed verification or was rejected.
    #[arg(long, conflicts_with = "batch")]
    failure: bool,
    /// Repeating a key does not count the outcome twice.
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
    /// JSON lines of {"pattern_id", "success", "idempotency_key"?}; each is acknowledged on
    /// stdout once it is durable.
    #[arg(long, value_name = "FILE")]
    batch: Option<PathBuf>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchOutcome {
    pattern_id: String,
    success: bool,
    #[serde(default)]
    idempotency_key: Option<String>,
    #[serde(default)]
    duration_ms: Option<u64>,
}

pub fn run(home: &Path, cmd: PatternsCommand) -> anyhow::Result<ExitStatus> {
    let layout = agency_setup::Layout::new(home);
    match cmd {
        PatternsCommand::Query(args) => query(&layout, &args),
        PatternsCommand::List(args) => {
            let store = open_store(&layout, &args.store)?;
            let list = store.list(now(), args.all)?;
            if args.json {
                print_json(&agency_core::contract::PatternList {
                    version: SCHEMA_VERSION,
                    patterns: list,
                })?;
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|p| {
                        vec![
                            p.id.clone(),
                            p.category.clone(),
                            p.rule.clone(),
                            format!("{:.2}", p.confidence),
                            yes_no(p.auto_apply),
                            (p.successes + p.failures).to_string(),
                            if p.retired {
                                "retired".into()
                            } else {
                                p.source.clone()
                            },
                        ]
                    })
                    .collect();
                print_text(&table(
                    &[
                        "id",
                        "category",
                        "rule",
                        "confidence",
                        "auto",
                        "uses",
                        "source",
                    ],
                    &rows,
                ))?;
            }
            Ok(ExitStatus::Success)
        }
        PatternsCommand::Show(args) => {
            let store = open_store(&layout, &args.store)?;
            let view = store.show(&args.id, now())?;
            if args.json {
                print_json(&view)?;
            } else {
                print_text(&render_view(&view))?;
            }
            Ok(ExitStatus::Success)
        }
        PatternsCommand::Prune(args) => {
            let store = open_store(&layout, &args.store)?;
            let report = store.prune(now())?;
            if args.json {
                print_json(&report)?;
            } else {
                let mut out = format!(
                    "checked {} live patterns, retired {}\n",
                    report.checked,
                    report.retired.len()
                );
                for r in &report.retired {
                    out.push_str(&format!("  {} ({}): {}\n", r.id, r.rule, r.reason));
                }
                print_text(&out)?;
            }
            Ok(ExitStatus::Success)
        }
        PatternsCommand::Export(args) => {
            let store = open_store(&layout, &args.store)?;
            let mut buf = Vec::new();
            let n = store.export(&mut buf, &args.file)?;
            agency_fs::atomic_write(&args.file, &buf)
                .with_context(|| format!("cannot write {}", args.file.display()))?;
            crate::output::progress_line(&format!(
                "exported {n} patterns to {}",
                args.file.display()
            ));
            Ok(ExitStatus::Success)
        }
        PatternsCommand::Import(args) => import(&layout, &args),
        PatternsCommand::Docs(args) => docs(&layout, &args),
        PatternsCommand::Bench(args) => bench(&layout, &args),
        PatternsCommand::Outcome(args) => outcome(&layout, &args),
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

/// The model id stored beside every vector: the model's name and the start of its sha256.
fn model_id() -> String {
    let sha = agency_setup::ASSETS
        .iter()
        .find(|a| a.path.ends_with("model.onnx"))
        .map_or("unknown", |a| &a.sha256[..16]);
    format!("all-minilm-l6-v2-int8:{sha}")
}

fn embed_threads() -> usize {
    std::env::var("AGENCY_EMBED_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(1, std::num::NonZero::get)
                .min(2)
        })
}

fn load_embedder(layout: &agency_setup::Layout) -> anyhow::Result<Arc<Embedder>> {
    agency_setup::verify_assets(layout)?;
    let embedder = Embedder::load(&EmbedderConfig {
        onnxruntime_lib: layout.onnxruntime_lib(),
        model: layout.model(),
        tokenizer: layout.tokenizer(),
        model_id: model_id(),
        intra_threads: embed_threads(),
    })?;
    Ok(Arc::new(embedder))
}

fn open_store(layout: &agency_setup::Layout, args: &StoreArgs) -> anyhow::Result<PatternStore> {
    open_store_at(layout, args.store.clone())
}

/// Opens (and seeds on first use) the store in `dir`, default `<home>/store`.
pub(crate) fn open_store_at(
    layout: &agency_setup::Layout,
    dir: Option<PathBuf>,
) -> anyhow::Result<PatternStore> {
    let embedder = load_embedder(layout)?;
    let dir = dir.unwrap_or_else(|| layout.default_store());
    let store = PatternStore::open(StoreConfig::new(&dir), embedder)
        .with_context(|| format!("cannot open the pattern store in {}", dir.display()))?;
    for w in store.warnings() {
        warn(w);
    }
    let bar = bar(0, "seeding");
    let seeded = agency_patterns::seed::ensure_seeded(&store, now(), &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    if let Some(report) = seeded.filter(|r| r.added > 0) {
        crate::output::progress_line(&format!(
            "loaded {} seed patterns into {}",
            report.added,
            dir.display()
        ));
    }
    Ok(store)
}

fn query(layout: &agency_setup::Layout, args: &QueryArgs) -> anyhow::Result<ExitStatus> {
    if !(1..=agency_patterns::store::MAX_K).contains(&args.k) {
        bail!(
            "--k must be between 1 and {}",
            agency_patterns::store::MAX_K
        );
    }
    if let Some(min) = args.min_confidence.filter(|m| !(0.0..=1.0).contains(m)) {
        bail!("--min-confidence must be between 0 and 1, got {min}");
    }
    let store = open_store(layout, &args.store)?;
    let response = store.query(&Query {
        text: &args.text,
        category: args.category,
        rule: args.rule.as_deref(),
        k: args.k,
        min_confidence: args.min_confidence,
        now: now(),
    })?;
    if response.query.truncated {
        warn("the query was longer than the model's window and was truncated");
    }
    if args.json {
        print_json(&response)?;
    } else {
        print_text(&render_query(&response))?;
    }
    Ok(ExitStatus::Success)
}

fn render_query(r: &QueryResponse) -> String {
    if r.matches.is_empty() {
        return format!(
            "no pattern matches (searched {} patterns)\n",
            r.stats.patterns
        );
    }
    let rows: Vec<Vec<String>> = r
        .matches
        .iter()
        .enumerate()
        .map(|(i, m)| {
            vec![
                (i + 1).to_string(),
                format!("{:.2}", m.score),
                format!("{:.2}", m.confidence),
                yes_no(m.auto_apply),
                m.rule.clone(),
                m.id.clone(),
                m.title.clone(),
            ]
        })
        .collect();
    let mut out = table(
        &["#", "score", "confidence", "auto", "rule", "id", "title"],
        &rows,
    );
    let best = &r.matches[0];
    out.push_str(&format!(
        "\nbest match: {}\n  before: {}\n  after:  {}\n",
        best.id,
        best.template.before.trim().replace('\n', "\n          "),
        best.template.after.trim().replace('\n', "\n          ")
    ));
    out.push_str(&format!(
        "\n{} patterns searched ({}) in {:.1} ms\n",
        r.stats.patterns, r.stats.method, r.stats.duration_ms
    ));
    out
}

fn render_view(v: &agency_core::contract::PatternView) -> String {
    let mut out = format!("{}  {}\n", v.id, v.title);
    out.push_str(&format!(
        "  category {}  rule {}  applicability {}  source {}\n",
        v.category, v.rule, v.applicability, v.source
    ));
    out.push_str(&format!(
        "  confidence {:.2}  auto-apply {}  successes {}  failures {}  support {}\n",
        v.confidence,
        yes_no(v.auto_apply),
        v.successes,
        v.failures,
        v.support
    ));
    if let Some(r) = &v.retired {
        out.push_str(&format!("  retired {}: {}\n", r.at, r.reason));
    }
    out.push_str(&format!("\nmessage: {}\n", v.message));
    if !v.explanation.is_empty() {
        out.push_str(&format!("\n{}\n", v.explanation));
    }
    out.push_str(&format!(
        "\nrewrite:\n  - {}\n  + {}\n",
        v.template.before.trim(),
        v.template.after.trim()
    ));
    for (i, e) in v.examples.iter().enumerate() {
        out.push_str(&format!(
            "\nexample {} ({}):\n--- before\n{}\n+++ after\n{}\n",
            i + 1,
            e.source,
            e.before.trim_end(),
            e.after.trim_end()
        ));
    }
    out
}

fn import(layout: &agency_setup::Layout, args: &ImportArgs) -> anyhow::Result<ExitStatus> {
    let file = fs::File::open(&args.file)
        .with_context(|| format!("cannot open {}", args.file.display()))?;
    let store = open_store(layout, &args.store)?;
    let bar = bar(0, "importing");
    let plain = crate::output::plain_progress();
    let report = store.import(
        &mut BufReader::new(file),
        &args.file,
        now(),
        &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            if plain {
                eprintln!("importing {done}/{total}");
            }
        },
    )?;
    bar.finish_and_clear();
    if args.json {
        print_json(&report)?;
    } else {
        let mut out = format!(
            "imported {} patterns, skipped {}\n",
            report.imported,
            report.skipped.len()
        );
        for s in &report.skipped {
            out.push_str(&format!("  line {}: {}: {}\n", s.line, s.id, s.reason));
        }
        print_text(&out)?;
    }
    Ok(ExitStatus::Success)
}

fn docs(layout: &agency_setup::Layout, args: &DocsArgs) -> anyhow::Result<ExitStatus> {
    let store = open_store(layout, &args.store)?;
    let at = now();
    let mut views = Vec::new();
    for summary in store.list(at, true)? {
        views.push(store.show(&summary.id, at)?);
    }
    let pages = agency_patterns::docs::render(&views);
    write_pages(&args.out, &pages)?;
    crate::output::progress_line(&format!(
        "wrote {} pages to {}",
        pages.len(),
        args.out.display()
    ));
    Ok(ExitStatus::Success)
}

/// Writes generated pages and removes generated pages that no longer exist.
fn write_pages(
    out: &Path,
    pages: &std::collections::BTreeMap<String, String>,
) -> anyhow::Result<()> {
    for (rel, text) in pages {
        let path = out.join(rel);
        agency_fs::atomic_write(&path, text.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    for category in Category::ALL {
        let dir = out.join(category.as_str());
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = format!("{}/{name}", category.as_str());
            let markdown = Path::new(&name)
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("md"));
            // Only pages this command wrote (they link back to the index) are removed.
            let generated = markdown
                && fs::read_to_string(entry.path())
                    .is_ok_and(|t| t.contains("[Back to all patterns](../README.md)"));
            if generated && !pages.contains_key(&rel) {
                fs::remove_file(entry.path()).with_context(|| {
                    format!("cannot remove stale page {}", entry.path().display())
                })?;
            }
        }
    }
    Ok(())
}

fn bench(layout: &agency_setup::Layout, args: &BenchArgs) -> anyhow::Result<ExitStatus> {
    let embedder = load_embedder(layout)?;
    let dir =
        tempfile::tempdir().context("cannot create a temporary directory for the bench store")?;
    let bar = bar(0, "bench");
    let report = agency_patterns::bench::run(
        embedder,
        &agency_patterns::bench::BenchOptions {
            n: args.n,
            queries: args.queries,
            k: 10,
            dir: dir.path().to_path_buf(),
            seed: 42,
        },
        &mut |what, done, total| {
            bar.set_message(what.to_string());
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    )?;
    bar.finish_and_clear();
    if args.json {
        print_json(&report)?;
    } else {
        print_text(&render_bench(&report))?;
    }
    Ok(ExitStatus::Success)
}

fn render_bench(r: &agency_patterns::bench::BenchReport) -> String {
    let lat = |name: &str, l: &agency_patterns::bench::Latency| {
        vec![
            name.to_string(),
            format!("{:.2}", l.p50_ms),
            format!("{:.2}", l.p95_ms),
            format!("{:.2}", l.p99_ms),
            l.samples.to_string(),
        ]
    };
    let mut out = format!(
        "{} patterns ({}, exact below {}), built in {:.1} s, opened in {:.2} s\n\n",
        r.patterns, r.method, r.exact_threshold, r.build_s, r.open_s
    );
    out.push_str(&table(
        &["latency (ms)", "p50", "p95", "p99", "samples"],
        &[
            lat("query end to end", &r.query),
            lat("embedding only", &r.embed),
            lat("hnsw search", &r.vector.hnsw),
            lat("exact search", &r.vector.exact),
        ],
    ));
    out.push_str(&format!(
        "\nrecall@{} of HNSW against exact search: {:.3} (worst query {:.2}); exact/HNSW p50 {:.1}x\n",
        r.k, r.vector.recall_at_k, r.vector.recall_at_k_min, r.vector.exact_over_hnsw_p50
    ));
    if let Some(rss) = r.memory.rss_after_open_mb {
        out.push_str(&format!("resident memory after open: {rss:.0} MB\n"));
    }
    for w in &r.open_warnings {
        out.push_str(&format!("open warning: {w}\n"));
    }
    out
}

#[derive(Serialize)]
struct Ack<'a> {
    line: usize,
    pattern_id: &'a str,
    recorded: bool,
    confidence: f64,
}

fn outcome(layout: &agency_setup::Layout, args: &OutcomeArgs) -> anyhow::Result<ExitStatus> {
    let store = open_store(layout, &args.store)?;
    if let Some(batch) = &args.batch {
        let text = fs::read(batch).with_context(|| format!("cannot read {}", batch.display()))?;
        let text = String::from_utf8(text)
            .with_context(|| format!("{} is not UTF-8 JSON lines", batch.display()))?;
        let mut parsed = Vec::new();
        for (idx, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let o: BatchOutcome = serde_json::from_str(line)
                .with_context(|| format!("{}:{}: invalid outcome", batch.display(), idx + 1))?;
            parsed.push((idx + 1, o));
        }
        let mut stdout = io::stdout().lock();
        for (line, o) in parsed {
            let result = store.record_outcome(&OutcomeInput {
                pattern_id: o.pattern_id.clone(),
                success: o.success,
                finding: None,
                duration_ms: o.duration_ms,
                idempotency_key: o.idempotency_key.clone(),
                at: now(),
            })?;
            // Acknowledge only after the commit returned: the record is durable.
            serde_json::to_writer(
                &mut stdout,
                &Ack {
                    line,
                    pattern_id: &o.pattern_id,
                    recorded: result.recorded,
                    confidence: result.confidence,
                },
            )?;
            io::Write::write_all(&mut stdout, b"\n")?;
            io::Write::flush(&mut stdout)?;
        }
        return Ok(ExitStatus::Success);
    }
    let id = args.id.as_deref().context("a pattern id is required")?;
    let result = store.record_outcome(&OutcomeInput {
        pattern_id: id.to_string(),
        success: args.success,
        finding: None,
        duration_ms: None,
        idempotency_key: args.idempotency_key.clone(),
        at: now(),
    })?;
    if args.json {
        print_json(&result)?;
    } else {
        let mut out = format!(
            "{}: {} (confidence {:.2}, auto-apply {}, {} successes, {} failures)\n",
            result.pattern_id,
            if result.recorded {
                "recorded"
            } else {
                "already recorded (same idempotency key)"
            },
            result.confidence,
            yes_no(result.auto_apply),
            result.successes,
            result.failures
        );
        if let Some(reason) = &result.retired {
            out.push_str(&format!("retired: {reason}\n"));
        }
        print_text(&out)?;
    }
    Ok(ExitStatus::Success)
}
