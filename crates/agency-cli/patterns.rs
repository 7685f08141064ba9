//! `agency patterns ...`: query, list, show, prune, export, import, docs, bench and outcome.
//!
//! `query`, `list`, `show` and `prune` go through `agency_client`: a running service when a URL
//! is configured (`--url`, else `AGENCY_PATTERNS_URL`, else `[patterns] url` in the repository's
//! configuration), else the store opened in this process. Their JSON is the same either way.

use std::fs;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use agency_client::{PatternClient, QueryRequest};
use agency_core::Category;
use agency_core::contract::{QueryResponse, SCHEMA_VERSION};
use agency_patterns::embed::{Embedder, EmbedderConfig};
use agency_patterns::{OutcomeInput, PatternStore, StoreConfig};
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

use crate::ExitStatus;
use crate::output::{bar, print_json, print_text, progress_line, table, warn};

#[derive(Debug, Subcommand)]
pub enum PatternsCommand {
    /// Find the patterns that best match an error message.
    Query(QueryArgs),
    /// List the patterns in the store.
    List(ListArgs),
    /// Show one pattern with its examples and track record.
    Show(ShowArgs),
    /// Retire patterns whose track record fails the retirement rule, and report them.
    Prune(PruneArgs),
    /// Write every pattern as JSON lines.
    Export(ExportArgs),
    /// Read patterns from JSON lines written by export; all or nothing.
    Import(ImportArgs),
    /// Generate the pattern documentation pages.
    Docs(DocsArgs),
    /// Measure lookup latency, recall and memory on a synthetic store; with --http, load-test
    /// a running service.
    Bench(BenchArgs),
    /// Record the outcome of applying a pattern (or a batch of outcomes as JSON lines).
    Outcome(OutcomeArgs),
    /// Pattern reuse: heals made by patterns over all heals and lookup hit rate (last 1h, 24h,
    /// 7d and per category), outcomes, and pattern counts.
    Stats(StatsArgs),
    /// Learn patterns from the fixes in the repository's history (`--from-git [REV_RANGE]`).
    Learn(crate::learn::LearnArgs),
}

#[derive(Debug, Args)]
pub struct StoreArgs {
    /// The pattern store directory (default: <home>/store).
    #[arg(long, value_name = "DIR", global = true)]
    store: Option<PathBuf>,
}

/// Where a running pattern service is (docs/api.md#the-client).
#[derive(Debug, Args)]
pub struct ServiceArgs {
    /// A running `agency serve`, e.g. http://127.0.0.1:8080 (default: AGENCY_PATTERNS_URL,
    /// else [patterns] url in the repository's agency.toml; none: the local store).
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// Fail (exit 2) instead of falling back to the local store when the service is
    /// unreachable.
    #[arg(long)]
    require_service: bool,
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
    service: ServiceArgs,
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
    service: ServiceArgs,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    id: String,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    service: ServiceArgs,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    service: ServiceArgs,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    service: ServiceArgs,
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
    /// Query texts to time (with --http: distinct texts in the workload).
    #[arg(long, default_value_t = 300)]
    queries: usize,
    /// Load-test the service at URL instead (docs/benchmarks.md): 90% queries, 10% outcome
    /// writes; --store is the same store opened in-process for the baseline.
    #[arg(long, value_name = "URL")]
    http: Option<String>,
    /// Concurrent clients of the load (threads, one connection each).
    #[arg(long, default_value_t = 200, requires = "http")]
    clients: usize,
    /// How long the load runs: 30s, 2m, 500ms (a bare number is seconds).
    #[arg(long, default_value = "30s", value_parser = parse_duration, requires = "http")]
    duration: std::time::Duration,
    /// Requests per second over all clients; 0 sends each client's next request as soon as
    /// the previous one is answered (the service's capacity).
    #[arg(long, default_value_t = 1200.0, requires = "http")]
    rate: f64,
    /// The learning benchmark instead (docs/benchmarks.md): 100 recurring defects of ten kinds
    /// planted in a copy of a project; the first 10 healed by the deterministic fixers, the
    /// other 90 with those off, by the patterns learned from the first.
    #[arg(long, conflicts_with = "http")]
    pub(crate) learning: bool,
    /// With --learning: the project to plant the defects in (copied, never written; default:
    /// the bundled demo repository).
    #[arg(long, value_name = "DIR", requires = "learning")]
    pub(crate) project: Option<PathBuf>,
    #[arg(long)]
    pub(crate) json: bool,
    /// Without --http: build the synthetic store in DIR (which must be empty) and keep it.
    /// With --http: the store the service serves, opened here for the in-process baseline
    /// (default: <home>/store).
    #[command(flatten)]
    store: StoreArgs,
}

/// Parses `30s`, `2m`, `500ms` or a bare number of seconds.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (number, unit) = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or((s, ""), |i| s.split_at(i));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a duration; write e.g. 30s, 2m or 500ms"))?;
    let secs = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        _ => return Err(format!("unknown unit `{unit}` in `{s}`; use ms, s or m")),
    };
    std::time::Duration::try_from_secs_f64(secs).map_err(|e| format!("`{s}`: {e}"))
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
        PatternsCommand::Learn(args) => crate::learn::run(home, &args),
        PatternsCommand::Query(args) => query(&layout, &args),
        PatternsCommand::List(args) => {
            let client = connect(&layout, &args.service, &args.store)?;
            let mut list = client.list()?.patterns;
            // The service lists retired patterns too (after the live ones).
            if !args.all {
                list.retain(|p| !p.retired);
            }
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
            let client = connect(&layout, &args.service, &args.store)?;
            let view = client.show(&args.id)?;
            if args.json {
                print_json(&view)?;
            } else {
                print_text(&render_view(&view))?;
            }
            Ok(ExitStatus::Success)
        }
        PatternsCommand::Prune(args) => {
            let client = connect(&layout, &args.service, &args.store)?;
            let report = client.prune()?;
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
        PatternsCommand::Stats(args) => {
            let client = connect(&layout, &args.service, &args.store)?;
            let stats = client.stats()?;
            if args.json {
                print_json(&stats)?;
            } else {
                print_text(&render_stats(&stats))?;
            }
            Ok(ExitStatus::Success)
        }
    }
}

/// `agency patterns stats` as text: heals and reuse per window and category, then patterns.
fn render_stats(stats: &agency_client::Stats) -> String {
    use std::fmt::Write as _;
    let rate = |r: Option<f64>| r.map_or_else(|| "-".to_string(), |r| format!("{:.0}%", r * 100.0));
    let row = |name: &str, w: &agency_client::wire::HealWindow| {
        vec![
            name.to_string(),
            w.healed.to_string(),
            w.via_pattern.to_string(),
            rate(w.reuse_rate),
            w.lookups.to_string(),
            w.hits.to_string(),
            rate(w.hit_rate),
        ]
    };
    let header = [
        "",
        "healed",
        "by pattern",
        "reuse",
        "lookups",
        "hits",
        "hit rate",
    ];
    let windows: Vec<Vec<String>> = ["1h", "24h", "7d"]
        .iter()
        .filter_map(|w| stats.heals.get(*w).map(|h| row(w, h)))
        .collect();
    let mut out = String::from("heals (reuse: healed by a pattern / all healed)\n");
    out.push_str(&table(&header, &windows));
    if !stats.heals_by_category.is_empty() {
        let rows: Vec<Vec<String>> = stats
            .heals_by_category
            .iter()
            .map(|(c, h)| row(c, h))
            .collect();
        out.push_str("\nlast 7 days by category\n");
        out.push_str(&table(&header, &rows));
    }
    let _ = writeln!(
        out,
        "\npatterns: {} live, {} retired; {:.0}% of live patterns were applied again after they were learned",
        stats.patterns.live,
        stats.patterns.retired,
        stats.reuse_rate * 100.0
    );
    for (w, o) in &stats.outcomes {
        let _ = writeln!(
            out,
            "outcomes {w}: {} ({} successes, success rate {})",
            o.total,
            o.successes,
            rate(o.success_rate)
        );
    }
    if let Some(c) = &stats.calibration {
        out.push_str(&render_calibration(c));
    }
    out
}

/// The calibration section of `patterns stats` and `patterns bench --learning`.
pub(crate) fn render_calibration(c: &agency_client::wire::CalibrationDoc) -> String {
    let rows: Vec<Vec<String>> = c
        .buckets
        .iter()
        .map(|b| {
            let range = if b.max >= 1.0 {
                format!("≥ {:.2}", b.min)
            } else {
                format!("{:.2}–{:.2}", b.min, b.max)
            };
            vec![
                range,
                b.outcomes.to_string(),
                b.successes.to_string(),
                b.success_rate
                    .map_or_else(|| "-".to_string(), |r| format!("{:.1}%", r * 100.0)),
            ]
        })
        .collect();
    let verdict = match c.calibrated {
        Some(true) => format!(
            "calibrated: patterns at ≥ {:.2} succeeded at least {:.0}% of the time",
            c.target,
            c.target * 100.0
        ),
        Some(false) => format!(
            "not calibrated: patterns at ≥ {:.2} succeeded less than {:.0}% of the time",
            c.target,
            c.target * 100.0
        ),
        None => format!(
            "calibration unknown: no outcome at confidence ≥ {:.2} yet",
            c.target
        ),
    };
    let mut out = format!(
        "\ncalibration ({} outcomes of {} patterns, replayed at the confidence each was recorded at)\n",
        c.outcomes, c.patterns
    );
    out.push_str(&table(
        &["confidence", "outcomes", "successes", "success rate"],
        &rows,
    ));
    out.push_str(&verdict);
    out.push('\n');
    out
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

/// The model id stored beside every vector: a change of model makes the store re-embed.
fn model_id() -> String {
    agency_setup::MODEL_ID.to_owned()
}

fn embed_threads() -> usize {
    std::env::var("AGENCY_EMBED_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        // One intra-op thread: the int8 model runs a query faster on one thread than on two
        // (2.1 against 3.3 ms at 14 tokens, 5.5 against 6.1 at 60; docs/benchmarks.md), and
        // the other core stays free for the text search and other requests.
        .unwrap_or(1)
}

pub(crate) fn load_embedder(layout: &agency_setup::Layout) -> anyhow::Result<Arc<Embedder>> {
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
    // ONNX Runtime must not be working when a heal ends early (it crashes on the way out): the
    // model is held busy while it loads and while each seed pattern is embedded, and let go
    // between patterns, where a stop can take over.
    let mut busy = Some(agency_heal::patterns::busy());
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
        drop(busy.take());
        busy = Some(agency_heal::patterns::busy());
    })?;
    drop(busy);
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

/// The environment variable that overrides `[patterns] url`.
const URL_ENV: &str = "AGENCY_PATTERNS_URL";
/// The environment variable that holds the service's bearer token.
const TOKEN_ENV: &str = "AGENCY_PATTERNS_TOKEN";

/// Resolves the client settings: the URL from `--url`, else `AGENCY_PATTERNS_URL`, else
/// `[patterns] url` in the configuration of the repository around the working directory; the
/// token from `AGENCY_PATTERNS_TOKEN`, else the variable named by `[patterns] token_env`, else
/// (for a loopback URL) the token file the local `agency serve` wrote.
fn client_settings(
    layout: &agency_setup::Layout,
    service: &ServiceArgs,
) -> anyhow::Result<agency_client::Settings> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let cwd = std::env::current_dir().context("cannot read the working directory")?;
    let root = crate::config::find_root(&cwd);
    let loaded = crate::config::load(&root)?;
    if let Some(file) = &loaded.file {
        tracing::debug!(file = %file.display(), "repository configuration");
    }
    let options = loaded.options.patterns.unwrap_or_default();
    let url = service
        .url
        .clone()
        .or_else(|| env(URL_ENV))
        .or_else(|| options.url.clone().filter(|u| !u.trim().is_empty()));
    let mut token = env(TOKEN_ENV).or_else(|| options.token_env.as_deref().and_then(env));
    if token.is_none()
        && let Some(url) = url.as_deref()
        && agency_client::is_loopback(url)
    {
        // The local service's token file, read without creating it (only `agency serve`
        // creates it); missing or unreadable means no token, and a write then gets a 401
        // that says how to pass one.
        let path = layout.home().join(agency_service::TOKEN_FILE);
        token = fs::read_to_string(&path)
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
    }
    Ok(agency_client::Settings {
        url,
        token,
        require_service: service.require_service || options.require_service.unwrap_or(false),
        http: agency_client::HttpOptions::default(),
    })
}

/// The pattern client for a command: the configured service, else the local store. A fallback
/// warning is printed here, once.
/// The pattern store a heal asks and reports to: the service configured for this repository
/// (`AGENCY_PATTERNS_URL`, `[patterns] url`), else the local store, as for `agency patterns`.
pub(crate) fn heal_client(home: &std::path::Path) -> anyhow::Result<Box<dyn PatternClient>> {
    let layout = agency_setup::Layout::new(home);
    connect(
        &layout,
        &ServiceArgs {
            url: None,
            require_service: false,
        },
        &StoreArgs { store: None },
    )
}

fn connect(
    layout: &agency_setup::Layout,
    service: &ServiceArgs,
    store: &StoreArgs,
) -> anyhow::Result<Box<dyn PatternClient>> {
    let settings = client_settings(layout, service)?;
    let dir = store.store.clone();
    let connected = agency_client::connect(
        &settings,
        Box::new(move || open_store_at(layout, dir).map_err(Into::into)),
    )?;
    if let Some(warning) = &connected.warning {
        warn(warning);
    }
    Ok(connected.client)
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
    let client = connect(layout, &args.service, &args.store)?;
    let response = client.query(&QueryRequest {
        text: args.text.clone(),
        category: args.category.map(|c| c.as_str().to_string()),
        rule: args.rule.clone(),
        k: Some(args.k),
        min_confidence: args.min_confidence,
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
    if args.learning {
        return crate::learn_bench::run(layout, args);
    }
    if let Some(url) = &args.http {
        return bench_http(layout, url, args);
    }
    let embedder = load_embedder(layout)?;
    // The store is a temporary directory unless --store asks to keep it (to serve it, for
    // the load benchmark).
    let temp;
    let dir = if let Some(dir) = &args.store.store {
        if fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
            bail!(
                "{} is not empty; the synthetic store is built in an empty or new directory",
                dir.display()
            );
        }
        dir.clone()
    } else {
        temp = tempfile::tempdir()
            .context("cannot create a temporary directory for the bench store")?;
        temp.path().to_path_buf()
    };
    let bar = bar(0, "bench");
    let report = agency_patterns::bench::run(
        embedder,
        &agency_patterns::bench::BenchOptions {
            n: args.n,
            queries: args.queries,
            k: 10,
            dir,
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

/// Patterns that the load's writes go to: spread over the live patterns.
const BENCH_WRITE_PATTERNS: usize = 50;

/// `agency patterns bench --http URL`: the load benchmark of a running service.
fn bench_http(
    layout: &agency_setup::Layout,
    url: &str,
    args: &BenchArgs,
) -> anyhow::Result<ExitStatus> {
    if !(args.rate >= 0.0 && args.rate.is_finite()) {
        bail!(
            "--rate must be 0 or more requests per second, got {}",
            args.rate
        );
    }
    let settings = client_settings(
        layout,
        &ServiceArgs {
            url: Some(url.to_string()),
            require_service: true,
        },
    )?;
    // The baseline: the same store, opened in this process (reads only; seeding finds the
    // seeds present and writes nothing).
    let store = open_store_at(layout, args.store.store.clone())?;
    progress_line("embedding the benchmark's query texts");
    let corpus = agency_patterns::bench::Corpus::embed(store.embedder(), 42, &mut |_, _| {})?;
    let queries = corpus.queries(args.queries);
    let local = agency_client::LocalClient::new(Arc::new(store));

    let service = agency_client::HttpClient::new(url, settings.token.clone(), settings.http)?;
    let live: Vec<String> = service
        .list()?
        .patterns
        .into_iter()
        .filter(|p| !p.retired)
        .map(|p| p.id)
        .collect();
    let step = (live.len() / BENCH_WRITE_PATTERNS).max(1);
    let write_patterns: Vec<String> = live
        .into_iter()
        .step_by(step)
        .take(BENCH_WRITE_PATTERNS)
        .collect();
    let options = agency_client::load::LoadOptions {
        url: url.to_string(),
        token: settings.token,
        clients: args.clients,
        duration: args.duration,
        rate: args.rate,
        write_fraction: 0.1,
        queries,
        write_patterns,
        k: 5,
        run_id: format!("bench-{}-{}", now(), std::process::id()),
        seed: 42,
        baseline_rounds: 3,
        // Every refusal counts: no retries under load.
        http: agency_client::HttpOptions {
            max_attempts: 1,
            ..agency_client::HttpOptions::default()
        },
    };
    let report = agency_client::load::run(&options, Some(&local), &mut |stage| {
        progress_line(stage);
    })?;
    if args.json {
        print_json(&report)?;
    } else {
        print_text(&render_load(&report))?;
    }
    Ok(ExitStatus::Success)
}

fn render_load(r: &agency_client::load::LoadReport) -> String {
    let lat = |name: &str, l: &agency_patterns::bench::Latency| {
        vec![
            name.to_string(),
            format!("{:.2}", l.p50_ms),
            format!("{:.2}", l.p95_ms),
            format!("{:.2}", l.p99_ms),
            format!("{:.2}", l.max_ms),
            l.samples.to_string(),
        ]
    };
    let mut out = format!(
        "{} clients on {} for {:.1} s, {} ({} distinct query texts, k {}, {:.0}% writes)\n",
        r.clients,
        r.url,
        r.duration_s,
        if r.target_rate > 0.0 {
            format!("paced at {:.0} requests/s", r.target_rate)
        } else {
            "closed loop".to_string()
        },
        r.query_texts,
        r.k,
        r.write_fraction * 100.0
    );
    out.push_str(&format!(
        "throughput {:.0} requests/s: {:.0} queries/s, {:.0} writes/s; {} requests sent, {} late\n\n",
        r.throughput_rps, r.queries.per_s, r.writes.per_s, r.requests, r.late_sends
    ));
    let mut rows = vec![
        lat("query under load", &r.queries.latency),
        lat("write under load", &r.writes.latency),
        lat("query, one client", &r.http_idle),
    ];
    if let Some(base) = &r.in_process {
        rows.push(lat("query in-process", base));
    }
    out.push_str(&table(
        &["latency (ms)", "p50", "p95", "p99", "max", "samples"],
        &rows,
    ));
    if let (Some(p50), Some(p99)) = (r.ratio_p50, r.ratio_p99) {
        out.push_str(&format!(
            "\nunder load / in-process: p50 {p50:.1}x, p99 {p99:.1}x\n"
        ));
    }
    out.push_str(&format!("\nerrors: {}", r.errors_total));
    for (kind, n) in &r.errors {
        out.push_str(&format!("  {kind} {n}"));
    }
    let c = &r.write_check;
    out.push_str(&format!(
        "\nwrites: {} acknowledged, {} present on {} patterns, {} missing, {} present but not acknowledged\n",
        c.acknowledged, c.present, c.patterns, c.missing, c.unacknowledged_present
    ));
    out
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
