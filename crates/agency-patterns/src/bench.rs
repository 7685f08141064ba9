//! The synthetic-store benchmark behind `agency patterns bench`: build a store of N patterns on
//! disk through the real [`PatternStore`] API, reopen it, and measure lookups with the real model.
//!
//! Embedding 100k texts would take longer than the benchmark itself, so only a few hundred real
//! texts are embedded: the seed library plus error messages generated from templates (other
//! attribute, module and type names, other rule codes). Each of the N stored patterns is a variant
//! of one of those texts: its ids, title, code and (where the template has one) message slots
//! vary, and its vector is the real embedding plus seeded gaussian noise, renormalised. Queries
//! are reworded messages that never appear in the store, embedded for real on every lookup.
//!
//! Every reported number is measured in the run that reports it; percentiles are nearest-rank
//! over the measured samples. [`Corpus`] and [`fill_store`] are public so that the criterion
//! benches (`benches/patterns.rs`) build the same data.

use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use agency_core::context::{ErrorContext, normalize};
use agency_core::contract::SCHEMA_VERSION;
pub use agency_core::latency::{Latency, percentile};
use agency_core::pattern::{Example, PatternSpec, Rewrite};
use agency_core::{Applicability, Category, Source};
use serde::{Deserialize, Serialize};

use crate::db::Db;
use crate::embed::{DIM, Embedder, normalize as normalize_vector};
use crate::error::{Error, Result};
use crate::seed;
use crate::store::{PatternStore, Query, StoreConfig, signature};
use crate::vector::{self, Graph, SavedFiles, VectorParams};

/// Patterns handed to one `insert_many` call: one transaction and one text-index commit each,
/// and a bound on the specs held in memory at once.
const INSERT_CHUNK: usize = 10_000;
/// Real texts generated from the templates, on top of the seed library.
const TEMPLATE_BASES: usize = 300;
/// Standard deviation of the noise added to each of the [`DIM`] components of a unit vector.
/// The noise has norm about `0.025 * sqrt(384) = 0.49`, so a variant keeps a cosine of about 0.9
/// with its real embedding and about 0.8 with its siblings: close, as variants of one error are.
const NOISE_PER_DIM: f64 = 0.025;
/// Lookups run before measuring, so that ONNX Runtime's first-run allocations are not sampled.
const WARMUP_QUERIES: usize = 5;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Patterns in the synthetic store.
    pub n: usize,
    /// Query texts, each looked up once end to end and embedded once alone.
    pub queries: usize,
    /// Matches asked for, and the `k` of recall@k.
    pub k: usize,
    /// An empty directory for the store (it is filled, not cleaned up).
    pub dir: PathBuf,
    /// Seed of every random choice: the same seed builds the same store and queries.
    pub seed: u64,
}

impl BenchOptions {
    /// The defaults (`n` 100,000, 300 queries, `k` 10, seed 42) with the store in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            n: 100_000,
            queries: 300,
            k: 10,
            dir: dir.into(),
            seed: 42,
        }
    }
}

/// Vector search alone: one HNSW graph against an exact scan of the same vectors, for the same
/// real query embeddings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VectorReport {
    /// `store`: the graph the store persisted and queries use, loaded from its files; `built`:
    /// the store answers exactly (too few patterns), so a graph was built from the same vectors
    /// with the store's parameters to measure what HNSW would give.
    pub graph: String,
    pub vectors: usize,
    pub max_connections: usize,
    pub ef_construction: usize,
    pub ef_search: usize,
    /// Mean over the queries of |HNSW top k ∩ exact top k| / k.
    pub recall_at_k: f64,
    /// The worst single query's recall.
    pub recall_at_k_min: f64,
    /// Queries whose recall was below one half. On clustered data HNSW tends to miss whole
    /// queries (the search ends in the wrong region) rather than a neighbour here and there,
    /// which the mean hides.
    pub queries_recall_below_half: usize,
    /// `Graph::search` for the top k.
    pub hnsw: Latency,
    /// `vector::exact_top_k`: a dot product with every vector, the baseline.
    pub exact: Latency,
    /// Exact p50 over HNSW p50.
    pub exact_over_hnsw_p50: f64,
    /// The same graph and queries at other beam widths: what `ef_search` buys.
    pub ef_sweep: Vec<EfPoint>,
}

/// Recall and latency of one beam width.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EfPoint {
    pub ef_search: usize,
    pub recall_at_k: f64,
    pub queries_recall_below_half: usize,
    pub hnsw: Latency,
}

/// Beam widths of [`VectorReport::ef_sweep`].
const EF_SWEEP: [usize; 5] = [64, 128, 192, 256, 384];

/// Memory of this process, from `/proc/self/status` (absent off Linux).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Memory {
    /// Resident set right after the store was reopened: the store, the loaded model, and heap
    /// the allocator kept from building the store in this same process.
    pub rss_after_open_mb: Option<f64>,
    /// Peak resident set of the whole run up to that point, the build included.
    pub peak_rss_mb: Option<f64>,
}

/// Everything one benchmark run measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchReport {
    pub version: u32,
    /// Live patterns in the reopened store.
    pub patterns: usize,
    /// Real texts embedded to derive the synthetic vectors from (seed library + templates).
    pub base_texts: usize,
    pub k: usize,
    pub seed: u64,
    /// How `store.query` searched vectors: `exact` up to the store's threshold, `hnsw` above.
    pub method: String,
    /// `exact_threshold` of the store's vector parameters.
    pub exact_threshold: usize,
    /// Embedding the base texts with the model.
    pub embed_base_texts_s: f64,
    /// Creating the store, `insert_many` of every pattern with its vector, and `checkpoint`.
    pub build_s: f64,
    /// `PatternStore::open` of the built store from disk.
    pub open_s: f64,
    /// What the reopen repaired; empty when it loaded its indexes as saved.
    pub open_warnings: Vec<String>,
    pub memory: Memory,
    /// `store.query` end to end: normalise, embed, HNSW or exact, BM25, fuse, read the rows.
    pub query: Latency,
    /// `store.query` of the same texts filtered by their rule, as a healer asks.
    pub query_by_rule: Latency,
    /// How those searched vectors: a rule passes few patterns, so `exact` over them.
    pub method_by_rule: String,
    /// The model alone on the same normalised texts: the part of `query` that is embedding.
    pub embed: Latency,
    /// Mean tokens the model saw per query.
    pub query_tokens_mean: f64,
    pub vector: VectorReport,
}

/// Builds a store of `opts.n` synthetic patterns in `opts.dir`, reopens it, and measures it.
/// `progress` gets a stage name, units done and units in the stage.
pub fn run(
    embedder: Arc<Embedder>,
    opts: &BenchOptions,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<BenchReport> {
    check_options(opts)?;
    let now = unix_now();

    let started = Instant::now();
    let corpus = Corpus::embed(&embedder, opts.seed, &mut |done, total| {
        progress("embedding base texts", done, total);
    })?;
    let embed_base_texts_s = started.elapsed().as_secs_f64();

    let config = StoreConfig::new(&opts.dir);
    let started = Instant::now();
    {
        let store = PatternStore::open(config.clone(), Arc::clone(&embedder))?;
        fill_store(&store, &corpus, 0..opts.n, now, &mut |done, total| {
            progress("inserting patterns", done, total);
        })?;
        store.checkpoint()?;
    }
    let build_s = started.elapsed().as_secs_f64();

    progress("opening the store", 0, 1);
    let started = Instant::now();
    let store = PatternStore::open(config.clone(), embedder)?;
    let open_s = started.elapsed().as_secs_f64();
    let memory = Memory {
        rss_after_open_mb: status_mb("VmRSS"),
        peak_rss_mb: status_mb("VmHWM"),
    };
    progress("opening the store", 1, 1);

    let with_rules = corpus.queries_with_rules(opts.queries);
    let queries: Vec<String> = with_rules.iter().map(|(text, _)| text.clone()).collect();
    for text in queries.iter().take(WARMUP_QUERIES) {
        store.query(&lookup(text, opts.k, now))?;
    }
    let mut query_samples = Vec::with_capacity(queries.len());
    let mut embed_samples = Vec::with_capacity(queries.len());
    let mut query_vectors = Vec::with_capacity(queries.len());
    let mut tokens = 0;
    let mut methods: Vec<String> = Vec::new();
    for (idx, text) in queries.iter().enumerate() {
        let normalized = normalize(&ErrorContext {
            message: text.clone(),
            ..ErrorContext::default()
        });
        let started = Instant::now();
        let embedding = store.embedder().embed(&normalized.text)?;
        embed_samples.push(started.elapsed());
        tokens += embedding.tokens;
        query_vectors.push(embedding.vector);

        let started = Instant::now();
        let response = store.query(&lookup(text, opts.k, now))?;
        query_samples.push(started.elapsed());
        if !methods.contains(&response.stats.method) {
            methods.push(response.stats.method.clone());
        }
        progress("querying", idx + 1, queries.len());
    }
    // The same texts filtered by their rule: the rule is part of the embedded text, so each
    // is embedded again.
    let mut rule_samples = Vec::with_capacity(queries.len());
    let mut rule_methods: Vec<String> = Vec::new();
    for (idx, (text, rule)) in with_rules.iter().enumerate() {
        let started = Instant::now();
        let response = store.query(&Query {
            rule: Some(rule),
            ..lookup(text, opts.k, now)
        })?;
        rule_samples.push(started.elapsed());
        if !rule_methods.contains(&response.stats.method) {
            rule_methods.push(response.stats.method.clone());
        }
        progress("querying by rule", idx + 1, queries.len());
    }

    let stored = Db::open(&opts.dir.join("patterns.db"))?.embeddings_after(0, DIM)?;
    let vector = measure_vectors(
        &opts.dir,
        &stored,
        &query_vectors,
        opts.k,
        config.vector,
        progress,
    )?;

    Ok(BenchReport {
        version: SCHEMA_VERSION,
        patterns: store.live_count(),
        base_texts: corpus.len(),
        k: opts.k,
        seed: opts.seed,
        method: methods.join(","),
        exact_threshold: config.vector.exact_threshold,
        embed_base_texts_s,
        build_s,
        open_s,
        open_warnings: store.warnings().to_vec(),
        memory,
        query: Latency::from_samples(&query_samples),
        query_by_rule: Latency::from_samples(&rule_samples),
        method_by_rule: rule_methods.join(","),
        embed: Latency::from_samples(&embed_samples),
        query_tokens_mean: tokens as f64 / queries.len() as f64,
        vector,
    })
}

fn check_options(opts: &BenchOptions) -> Result<()> {
    let invalid = |message: String| Error::File {
        path: opts.dir.clone(),
        message,
    };
    for (name, value) in [("n", opts.n), ("queries", opts.queries), ("k", opts.k)] {
        if value == 0 {
            return Err(invalid(format!(
                "cannot benchmark with {name} = 0; pass a positive --{name}"
            )));
        }
    }
    match fs::read_dir(&opts.dir) {
        Ok(mut entries) => match entries.next() {
            Some(_) => Err(invalid(
                "the benchmark directory is not empty; pass a new empty directory".into(),
            )),
            None => Ok(()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(&opts.dir, e)),
    }
}

fn lookup(text: &str, k: usize, now: i64) -> Query<'_> {
    Query {
        text,
        category: None,
        rule: None,
        k,
        min_confidence: None,
        now,
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The part of the store's `index/manifest.json` that locates its graph.
#[derive(Debug, Deserialize)]
struct ManifestGraph {
    graph: Option<GraphFiles>,
}

#[derive(Debug, Deserialize)]
struct GraphFiles {
    dir: String,
    basename: String,
    files: SavedFiles,
}

/// Loads the graph the store saved (or, for an exact store, builds one from the same vectors)
/// and compares it to exact search for every query vector.
fn measure_vectors(
    dir: &Path,
    stored: &[(u64, Vec<f32>)],
    query_vectors: &[Vec<f32>],
    k: usize,
    params: VectorParams,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<VectorReport> {
    let index_dir = dir.join("index");
    let manifest_path = index_dir.join("manifest.json");
    let bytes = fs::read(&manifest_path).map_err(|e| Error::io(&manifest_path, e))?;
    let manifest: ManifestGraph = serde_json::from_slice(&bytes).map_err(|e| Error::File {
        path: manifest_path.clone(),
        message: format!("cannot read the graph's location: {e}"),
    })?;
    let (mut graph, label) = if let Some(g) = manifest.graph {
        let graph = Graph::load(&index_dir.join(&g.dir), &g.basename, &g.files, params)?;
        (graph, "store")
    } else {
        progress("building a graph to compare", 0, 1);
        let graph = Graph::build(stored.iter().map(|(id, v)| (*id, v.as_slice())), params);
        (graph, "built")
    };

    let mut hnsw_samples = Vec::with_capacity(query_vectors.len());
    let mut exact_samples = Vec::with_capacity(query_vectors.len());
    let mut recalls = Vec::with_capacity(query_vectors.len());
    for (idx, q) in query_vectors.iter().enumerate() {
        let started = Instant::now();
        let truth = vector::exact_top_k(stored, q, k);
        exact_samples.push(started.elapsed());
        let started = Instant::now();
        let found = graph.search(q, k, None);
        hnsw_samples.push(started.elapsed());
        recalls.push(vector::recall(&truth, &found));
        progress(
            "comparing HNSW with exact search",
            idx + 1,
            query_vectors.len(),
        );
    }
    let truths: Vec<Vec<(u64, f32)>> = query_vectors
        .iter()
        .map(|q| vector::exact_top_k(stored, q, k))
        .collect();
    let mut ef_sweep = Vec::with_capacity(EF_SWEEP.len());
    for (idx, ef) in EF_SWEEP.into_iter().enumerate() {
        progress("sweeping the beam width", idx, EF_SWEEP.len());
        graph.set_ef_search(ef);
        let mut samples = Vec::with_capacity(query_vectors.len());
        let mut recalls = Vec::with_capacity(query_vectors.len());
        for (q, truth) in query_vectors.iter().zip(&truths) {
            let started = Instant::now();
            let found = graph.search(q, k, None);
            samples.push(started.elapsed());
            recalls.push(vector::recall(truth, &found));
        }
        ef_sweep.push(EfPoint {
            ef_search: ef,
            recall_at_k: recalls.iter().sum::<f64>() / recalls.len().max(1) as f64,
            queries_recall_below_half: recalls.iter().filter(|r| **r < 0.5).count(),
            hnsw: Latency::from_samples(&samples),
        });
    }
    let hnsw = Latency::from_samples(&hnsw_samples);
    let exact = Latency::from_samples(&exact_samples);
    Ok(VectorReport {
        graph: label.to_string(),
        vectors: stored.len(),
        max_connections: params.max_connections,
        ef_construction: params.ef_construction,
        ef_search: params.ef_search,
        recall_at_k: recalls.iter().sum::<f64>() / recalls.len().max(1) as f64,
        recall_at_k_min: recalls.iter().copied().fold(1.0, f64::min),
        queries_recall_below_half: recalls.iter().filter(|r| **r < 0.5).count(),
        exact_over_hnsw_p50: if hnsw.p50_ms > 0.0 {
            exact.p50_ms / hnsw.p50_ms
        } else {
            0.0
        },
        hnsw,
        exact,
        ef_sweep,
    })
}

/// A value of `field` (`VmRSS`, `VmHWM`) of `/proc/self/status`, in MiB.
fn status_mb(field: &str) -> Option<f64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    parse_status_kb(&status, field).map(|kb| kb as f64 / 1024.0)
}

fn parse_status_kb(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// Inserts synthetic patterns `range` of `corpus` into `store` through `insert_many`, with their
/// vectors, in chunks; returns how many went in. A skipped pattern is an error: the numbers of a
/// store that is smaller than asked would mislead.
pub fn fill_store(
    store: &PatternStore,
    corpus: &Corpus,
    range: Range<usize>,
    now: i64,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<usize> {
    let total = range.len();
    let mut inserted = 0;
    let mut start = range.start;
    while start < range.end {
        let end = (start + INSERT_CHUNK).min(range.end);
        let items = (start..end)
            .map(|i| {
                let (spec, vector) = corpus.pattern(i);
                (spec, Some(vector), None, None)
            })
            .collect();
        let done = start - range.start;
        let (n, skipped) = store.insert_many(items, now, &mut |d, _| progress(done + d, total))?;
        if let Some((_, id, reason)) = skipped.first() {
            return Err(Error::Index {
                path: store.dir().to_path_buf(),
                message: format!(
                    "synthetic pattern `{id}` was not inserted: {reason}; the store was not empty"
                ),
            });
        }
        inserted += n;
        start = end;
    }
    Ok(inserted)
}

/// Real embeddings of the base texts, and the recipe for synthetic patterns derived from them.
#[derive(Debug)]
pub struct Corpus {
    bases: Vec<Base>,
    vectors: Vec<Vec<f32>>,
    seed: u64,
}

#[derive(Debug, Clone)]
enum Base {
    Seed(PatternSpec),
    Template {
        family: usize,
        rule: &'static str,
        keys: Keys,
    },
}

impl Corpus {
    /// Generates the base texts (seed library + templates) and embeds each with `embedder`.
    pub fn embed(
        embedder: &Embedder,
        seed: u64,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        let bases = bases(seed)?;
        let mut vectors = Vec::with_capacity(bases.len());
        for (idx, base) in bases.iter().enumerate() {
            let spec = base_spec(
                base,
                &Context::base(idx),
                &format!("bench-base-{idx:04}"),
                "",
            );
            vectors.push(embedder.embed(&signature(&spec).text)?.vector);
            progress(idx + 1, bases.len());
        }
        Ok(Self {
            bases,
            vectors,
            seed,
        })
    }

    /// Base texts.
    pub fn len(&self) -> usize {
        self.bases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bases.is_empty()
    }

    /// Synthetic pattern `i`: a variant of base `i % len` with a unique id and rewrite, and the
    /// base's real embedding plus noise, renormalised. Deterministic in the corpus seed and `i`.
    pub fn pattern(&self, i: usize) -> (PatternSpec, Vec<f32>) {
        let base_idx = i % self.bases.len();
        let mut rng = Rng::new(self.seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let ctx = Context::draw(&mut rng);
        let id = format!("bench-{base_idx:04}-{i:07}");
        let spec = base_spec(
            &self.bases[base_idx],
            &ctx,
            &id,
            &format!("  # variant {i}"),
        );
        let mut vector: Vec<f32> = self.vectors[base_idx]
            .iter()
            .map(|x| x + (NOISE_PER_DIM * rng.gaussian()) as f32)
            .collect();
        normalize_vector(&mut vector);
        (spec, vector)
    }

    /// `count` query texts: mostly template messages in other words, and seed patterns described
    /// by their titles. None equals a stored message.
    pub fn queries(&self, count: usize) -> Vec<String> {
        self.queries_with_rules(count)
            .into_iter()
            .map(|(text, _)| text)
            .collect()
    }

    /// [`Self::queries`] with the rule of the error each describes, as a healer asks (it always
    /// filters by the finding's rule).
    pub fn queries_with_rules(&self, count: usize) -> Vec<(String, String)> {
        let mut rng = Rng::new(self.seed ^ 0x5155_4552_5953);
        (0..count)
            .map(|_| {
                let base = &self.bases[rng.below(self.bases.len())];
                let ctx = Context::draw(&mut rng);
                match base {
                    Base::Seed(spec) => {
                        (format!("{} in {}", spec.title, ctx.func), spec.rule.clone())
                    }
                    Base::Template { family, rule, keys } => {
                        let f = &FAMILIES[*family];
                        let text = fill(f.queries[rng.below(f.queries.len())], keys, &ctx);
                        (text, (*rule).to_string())
                    }
                }
            })
            .collect()
    }
}

/// The seed library, then [`TEMPLATE_BASES`] template texts spread over the families.
fn bases(seed: u64) -> Result<Vec<Base>> {
    let mut out: Vec<Base> = seed::library()?.into_iter().map(Base::Seed).collect();
    let mut rng = Rng::new(seed ^ 0x4241_5345);
    for i in 0..TEMPLATE_BASES {
        let family = i % FAMILIES.len();
        let f = &FAMILIES[family];
        out.push(Base::Template {
            family,
            rule: f.rules[rng.below(f.rules.len())],
            keys: Keys::draw(&mut rng, f.words),
        });
    }
    Ok(out)
}

/// The spec of a variant of `base`; `suffix` is appended to the rewrite to make it unique.
fn base_spec(base: &Base, ctx: &Context, id: &str, suffix: &str) -> PatternSpec {
    match base {
        Base::Seed(seed) => PatternSpec {
            id: id.to_string(),
            title: format!("{} ({})", seed.title, ctx.func),
            rewrite: Rewrite {
                before: seed.rewrite.before.clone(),
                after: format!("{}{suffix}", seed.rewrite.after),
            },
            examples: seed.examples.iter().take(1).cloned().collect(),
            source: Source::Import,
            prior: (0.0, 0.0),
            ..seed.clone()
        },
        Base::Template { family, rule, keys } => {
            let f = &FAMILIES[*family];
            let fill = |t: &str| fill(t, keys, ctx);
            PatternSpec {
                id: id.to_string(),
                category: f.category,
                rule: (*rule).to_string(),
                title: fill(f.title),
                message: fill(f.message),
                explanation: format!("A synthetic benchmark pattern of the {} family.", f.name),
                applicability: f.applicability,
                rewrite: Rewrite {
                    before: fill(f.before),
                    after: format!("{}{suffix}", fill(f.after)),
                },
                examples: vec![Example {
                    before: fill(f.code),
                    after: fill(f.fixed),
                    source: Source::Import,
                }],
                source: Source::Import,
                prior: (0.0, 0.0),
            }
        }
    }
}

/// Slots that define a base text.
#[derive(Debug, Clone)]
struct Keys {
    attr: &'static str,
    ty: &'static str,
    ty2: &'static str,
    key: &'static str,
    module: &'static str,
    word: &'static str,
}

impl Keys {
    fn draw(rng: &mut Rng, words: &'static [&'static str]) -> Self {
        let ty = rng.pick(TYPES);
        let mut ty2 = rng.pick(TYPES);
        if ty2 == ty {
            ty2 = "None";
        }
        Self {
            attr: rng.pick(ATTRS),
            ty,
            ty2,
            key: rng.pick(KEYS),
            module: rng.pick(MODULES),
            word: if words.is_empty() {
                ""
            } else {
                rng.pick(words)
            },
        }
    }
}

/// Slots that vary between variants of one base.
#[derive(Debug, Clone)]
struct Context {
    func: &'static str,
    var: &'static str,
    line: usize,
}

impl Context {
    fn draw(rng: &mut Rng) -> Self {
        Self {
            func: rng.pick(FUNCS),
            var: rng.pick(VARS),
            line: 2 + rng.below(400),
        }
    }

    /// The context of base `idx`'s own embedded text.
    fn base(idx: usize) -> Self {
        Self {
            func: FUNCS[idx % FUNCS.len()],
            var: VARS[idx % VARS.len()],
            line: 10 + idx,
        }
    }
}

fn fill(template: &str, keys: &Keys, ctx: &Context) -> String {
    template
        .replace("{attr}", keys.attr)
        .replace("{type}", keys.ty)
        .replace("{type2}", keys.ty2)
        .replace("{key}", keys.key)
        .replace("{module}", keys.module)
        .replace("{word}", keys.word)
        .replace("{func}", ctx.func)
        .replace("{var}", ctx.var)
        .replace("{line}", &ctx.line.to_string())
}

/// A kind of error with a fix, written with slots: `{attr}`, `{type}`, `{type2}`, `{key}`,
/// `{module}` and `{word}` (the family's own vocabulary) pick a base text; `{func}`, `{var}`
/// and `{line}` vary between its variants.
struct Family {
    name: &'static str,
    category: Category,
    rules: &'static [&'static str],
    applicability: Applicability,
    message: &'static str,
    title: &'static str,
    before: &'static str,
    after: &'static str,
    code: &'static str,
    fixed: &'static str,
    words: &'static [&'static str],
    /// The same problem in other words, as someone would look it up.
    queries: &'static [&'static str],
}

const ATTRS: &[&str] = &[
    "group",
    "strip",
    "split",
    "lower",
    "items",
    "keys",
    "id",
    "name",
    "email",
    "user_id",
    "read",
    "json",
    "decode",
    "encode",
    "append",
    "get",
    "value",
    "text",
    "status_code",
    "headers",
    "content",
    "start",
    "total_seconds",
    "isoformat",
    "replace",
    "close",
    "cursor",
    "execute",
];
const MODULES: &[&str] = &[
    "app.models",
    "billing.invoices",
    "core.utils",
    "api.views",
    "auth.tokens",
    "reports.export",
    "search.indexer",
    "payments.gateway",
    "orders.service",
    "notifications.email",
    "inventory.sync",
    "analytics.events",
    "users.profile",
    "config.loader",
    "scheduler.jobs",
    "storage.buckets",
    "cache.backend",
    "http.client",
    "cli.commands",
    "etl.pipeline",
];
const FUNCS: &[&str] = &[
    "load_config",
    "parse_header",
    "get_user",
    "fetch_orders",
    "render_invoice",
    "sync_inventory",
    "send_welcome_email",
    "compute_total",
    "resolve_token",
    "build_report",
    "handle_webhook",
    "refresh_cache",
    "import_rows",
    "validate_payload",
    "find_customer",
    "schedule_job",
    "upload_file",
    "normalize_phone",
    "apply_discount",
    "export_csv",
];
const VARS: &[&str] = &[
    "user", "order", "match", "config", "result", "response", "row", "payload", "item", "account",
    "session", "record", "entry", "token", "profile", "invoice", "customer", "settings", "node",
    "job",
];
const TYPES: &[&str] = &[
    "str",
    "int",
    "bytes",
    "float",
    "User",
    "Order",
    "Path",
    "datetime",
    "dict[str, Any]",
    "list[int]",
    "Decimal",
    "Response",
    "Invoice",
    "Account",
];
const KEYS: &[&str] = &[
    "id",
    "email",
    "user_id",
    "created_at",
    "status",
    "items",
    "token",
    "name",
    "amount",
    "currency",
    "region",
    "sku",
];

const FAMILIES: &[Family] = &[
    Family {
        name: "none-attribute",
        category: Category::Runtime,
        rules: &["none-attribute"],
        applicability: Applicability::Unsafe,
        message: "AttributeError: 'NoneType' object has no attribute '{attr}'",
        title: "'{attr}' read from a value that may be None in {func}",
        before: "?obj.{attr}",
        after: "(?obj.{attr} if ?obj is not None else None)",
        code: "def {func}({var}_id):\n    {var} = lookup({var}_id)\n    return {var}.{attr}\n",
        fixed: "def {func}({var}_id):\n    {var} = lookup({var}_id)\n    if {var} is None:\n        return None\n    return {var}.{attr}\n",
        words: &[],
        queries: &[
            "{func} fails because NoneType has no attribute {attr}",
            "reading {var}.{attr} crashes, {var} turned out to be None",
            "got None back from lookup, so .{attr} raises AttributeError",
        ],
    },
    Family {
        name: "none-subscript",
        category: Category::Runtime,
        rules: &["none-subscript"],
        applicability: Applicability::Unsafe,
        message: "TypeError: 'NoneType' object is not subscriptable",
        title: "{var}['{key}'] read from an optional value in {func}",
        before: "?d['{key}']",
        after: "(?d or {}).get('{key}')",
        code: "def {func}(request):\n    {var} = request.json()\n    return {var}['{key}']\n",
        fixed: "def {func}(request):\n    {var} = request.json()\n    return ({var} or {}).get('{key}')\n",
        words: &[],
        queries: &[
            "cannot index None with '{key}' in {func}",
            "{var} is None so {var}['{key}'] is not subscriptable",
            "subscripting a None value while reading {key}",
        ],
    },
    Family {
        name: "key-error",
        category: Category::Runtime,
        rules: &["key-error"],
        applicability: Applicability::Unsafe,
        message: "KeyError: '{key}'",
        title: "missing key '{key}' read from {var} in {func}",
        before: "?d['{key}']",
        after: "?d.get('{key}')",
        code: "def {func}({var}):\n    total = 0\n    total += {var}['{key}']\n    return total\n",
        fixed: "def {func}({var}):\n    total = 0\n    total += {var}.get('{key}', 0)\n    return total\n",
        words: &[],
        queries: &[
            "dict has no entry for {key}, lookup raises",
            "{func} crashes: the {key} field is absent from {var}",
            "key {key} not present in the mapping",
        ],
    },
    Family {
        name: "operator",
        category: Category::Runtime,
        rules: &["operator"],
        applicability: Applicability::Unsafe,
        message: "TypeError: unsupported operand type(s) for +: '{word}' and 'str'",
        title: "{word} added to a str in {func}",
        before: "?a + ?b",
        after: "str(?a) + ?b",
        code: "def {func}({var}):\n    label = {var}.count + ' items'\n    return label\n",
        fixed: "def {func}({var}):\n    label = str({var}.count) + ' items'\n    return label\n",
        words: &["int", "float", "NoneType", "list", "dict", "Decimal"],
        queries: &[
            "can't concatenate a {word} with a string in {func}",
            "adding {word} and str is not supported",
            "plus between {word} value and text fails with TypeError",
        ],
    },
    Family {
        name: "value-error-int",
        category: Category::Runtime,
        rules: &["value-error"],
        applicability: Applicability::Unsafe,
        message: "ValueError: invalid literal for int() with base 10: '{word}'",
        title: "int() of unvalidated text in {func}",
        before: "int(?s)",
        after: "int(?s) if ?s.strip().isdigit() else None",
        code: "def {func}(form):\n    {var} = form.get('count')\n    return int({var})\n",
        fixed: "def {func}(form):\n    {var} = form.get('count')\n    return int({var}) if {var}.strip().isdigit() else None\n",
        words: &["abc", "12.5", "N/A", "none", "1,000", "-", "ten", "0x1f"],
        queries: &[
            "int() cannot parse the string '{word}'",
            "converting '{word}' to an integer fails in {func}",
            "parsing {word} as a number raises ValueError",
        ],
    },
    Family {
        name: "union-attr",
        category: Category::Type,
        rules: &["union-attr"],
        applicability: Applicability::Unsafe,
        message: "Item \"None\" of \"Optional[{type}]\" has no attribute \"{attr}\"",
        title: "'{attr}' on an Optional[{type}] in {func}",
        before: "?x.{attr}",
        after: "(?x.{attr} if ?x is not None else None)",
        code: "def {func}({var}: Optional[{type}]):\n    return {var}.{attr}\n",
        fixed: "def {func}({var}: Optional[{type}]):\n    if {var} is None:\n        return None\n    return {var}.{attr}\n",
        words: &[],
        queries: &[
            "mypy: the None member of Optional {type} lacks {attr}",
            "{var} may be None, so calling {attr} on it is flagged",
            "optional {type} used without a None check before .{attr}",
        ],
    },
    Family {
        name: "arg-type",
        category: Category::Type,
        rules: &["arg-type"],
        applicability: Applicability::DisplayOnly,
        message: "Argument 1 to \"{func}\" has incompatible type \"{type}\"; expected \"{type2}\"",
        title: "{type} passed where {func} expects {type2}",
        before: "?f(?arg)",
        after: "?f({type2}(?arg))",
        code: "def caller({var}: {type}):\n    return {func}({var})\n",
        fixed: "def caller({var}: {type}):\n    return {func}({type2}({var}))\n",
        words: &[],
        queries: &[
            "passing a {type} to {func} which wants {type2}",
            "{func} called with the wrong argument type, {type} instead of {type2}",
            "type checker rejects {type} argument for {func}",
        ],
    },
    Family {
        name: "attr-defined",
        category: Category::Type,
        rules: &["attr-defined"],
        applicability: Applicability::DisplayOnly,
        message: "Module \"{module}\" has no attribute \"{attr}\"",
        title: "{attr} imported from {module}, which does not define it",
        before: "from {module} import {attr}",
        after: "from {module}.compat import {attr}",
        code: "from {module} import {attr}\n\n\ndef {func}({var}):\n    return {attr}({var})\n",
        fixed: "from {module}.compat import {attr}\n\n\ndef {func}({var}):\n    return {attr}({var})\n",
        words: &[],
        queries: &[
            "{module} does not export a name called {attr}",
            "mypy cannot find {attr} in the {module} module",
            "attribute {attr} is missing from {module}",
        ],
    },
    Family {
        name: "return-value",
        category: Category::Type,
        rules: &["return-value"],
        applicability: Applicability::Unsafe,
        message: "Incompatible return value type (got \"{type} | None\", expected \"{type}\")",
        title: "{func} may return None but is annotated {type}",
        // The body hole makes each side a whole `def`: a header alone does not parse.
        before: "def ?f(?args) -> {type}:\n    ?body",
        after: "def ?f(?args) -> {type} | None:\n    ?body",
        code: "def {func}({var}) -> {type}:\n    return CACHE.get({var})\n",
        fixed: "def {func}({var}) -> {type} | None:\n    return CACHE.get({var})\n",
        words: &[],
        queries: &[
            "{func} can return None yet its annotation says {type}",
            "return annotation should be Optional[{type}]",
            "function typed as returning {type} returns None on a miss",
        ],
    },
    Family {
        name: "unused-import",
        category: Category::Import,
        rules: &["F401"],
        applicability: Applicability::Safe,
        message: "`{module}.{attr}` imported but unused",
        title: "unused import of {attr} from {module}",
        before: "from {module} import {attr}, ?rest",
        after: "from {module} import ?rest",
        code: "from {module} import {attr}, helper\n\n\ndef {func}({var}):\n    return helper({var})\n",
        fixed: "from {module} import helper\n\n\ndef {func}({var}):\n    return helper({var})\n",
        words: &[],
        queries: &[
            "{attr} from {module} is imported and never used",
            "ruff wants the unused {attr} import removed",
            "dead import of {module} {attr}",
        ],
    },
    Family {
        name: "missing-stubs",
        category: Category::Import,
        rules: &["import-not-found", "import-untyped"],
        applicability: Applicability::DisplayOnly,
        message: "Cannot find implementation or library stub for module named \"{module}\"",
        title: "no stubs for {module}",
        before: "import {module}",
        after: "import {module}  # type: ignore[import-untyped]",
        code: "import {module}\n\n\ndef {func}({var}):\n    return {module}.run({var})\n",
        fixed: "import {module}  # type: ignore[import-untyped]\n\n\ndef {func}({var}):\n    return {module}.run({var})\n",
        words: &[],
        queries: &[
            "mypy finds no type stubs for {module}",
            "library stub missing when importing {module}",
            "{module} has no type information for the checker",
        ],
    },
    Family {
        name: "module-not-found",
        category: Category::Import,
        rules: &["module-not-found"],
        applicability: Applicability::DisplayOnly,
        message: "ModuleNotFoundError: No module named '{module}'",
        title: "{module} cannot be imported in {func}",
        before: "import {module}",
        after: "from . import {attr}",
        code: "import {module}\n\n\ndef {func}({var}):\n    return {module}.load({var})\n",
        fixed: "from . import {attr}\n\n\ndef {func}({var}):\n    return {attr}.load({var})\n",
        words: &[],
        queries: &[
            "python cannot import {module}, module not found",
            "import of {module} fails when {func} runs",
            "there is no module called {module} on the path",
        ],
    },
    Family {
        name: "comparison-to-none",
        category: Category::Style,
        rules: &["E711"],
        applicability: Applicability::Safe,
        message: "Comparison to `None` should be `cond is None`",
        title: "{var} compared to None with == in {func}",
        before: "?x == None",
        after: "?x is None",
        code: "def {func}({var}):\n    if {var} == None:\n        return {line}\n    return {var}\n",
        fixed: "def {func}({var}):\n    if {var} is None:\n        return {line}\n    return {var}\n",
        words: &[],
        queries: &[
            "use 'is None' rather than '== None' for {var}",
            "equality test against None in {func}",
            "ruff flags {var} == None",
        ],
    },
    Family {
        name: "bare-except",
        category: Category::Style,
        rules: &["E722"],
        applicability: Applicability::Unsafe,
        message: "Do not use bare `except`",
        title: "bare except around {func}",
        before: "try:\n    ?body\nexcept:\n    ?handler",
        after: "try:\n    ?body\nexcept Exception:\n    ?handler",
        code: "def {func}({var}):\n    try:\n        return send({var})\n    except:\n        return None\n",
        fixed: "def {func}({var}):\n    try:\n        return send({var})\n    except Exception:\n        return None\n",
        words: &[],
        queries: &[
            "catch-all except clause without an exception type in {func}",
            "except: with nothing after it swallows KeyboardInterrupt",
            "a bare except hides errors around {var}",
        ],
    },
    Family {
        name: "sql-string",
        category: Category::Security,
        rules: &["B608"],
        applicability: Applicability::Unsafe,
        message: "Possible SQL injection vector through string-based query construction.",
        title: "SQL on {word} built from a string in {func}",
        before: "?cur.execute(\"SELECT * FROM {word} WHERE id = \" + ?value)",
        after: "?cur.execute(\"SELECT * FROM {word} WHERE id = %s\", (?value,))",
        code: "def {func}(cur, {var}_id):\n    cur.execute(\"SELECT * FROM {word} WHERE id = \" + {var}_id)\n    return cur.fetchone()\n",
        fixed: "def {func}(cur, {var}_id):\n    cur.execute(\"SELECT * FROM {word} WHERE id = %s\", ({var}_id,))\n    return cur.fetchone()\n",
        words: &[
            "users", "orders", "invoices", "accounts", "sessions", "payments", "products",
        ],
        queries: &[
            "query on {word} concatenates user input into SQL",
            "bandit warns of injection in the {word} SELECT of {func}",
            "string-built SQL statement against the {word} table",
        ],
    },
    Family {
        name: "weak-hash",
        category: Category::Security,
        rules: &["B324"],
        applicability: Applicability::Unsafe,
        message: "Use of weak {word} hash for security. Consider usedforsecurity=False",
        title: "{word} used to hash {var} in {func}",
        before: "hashlib.{word}(?data)",
        after: "hashlib.sha256(?data)",
        code: "import hashlib\n\n\ndef {func}({var}):\n    return hashlib.{word}({var}.encode()).hexdigest()\n",
        fixed: "import hashlib\n\n\ndef {func}({var}):\n    return hashlib.sha256({var}.encode()).hexdigest()\n",
        words: &["md5", "sha1"],
        queries: &[
            "{word} is too weak to hash {var} securely",
            "insecure {word} digest in {func}",
            "replace the {word} hash with sha256",
        ],
    },
    Family {
        name: "requests-timeout",
        category: Category::Security,
        rules: &["B113"],
        applicability: Applicability::Safe,
        message: "Call to requests without timeout",
        title: "requests.{word} without a timeout in {func}",
        before: "requests.{word}(?url)",
        after: "requests.{word}(?url, timeout=10)",
        code: "import requests\n\n\ndef {func}(url):\n    {var} = requests.{word}(url)\n    return {var}.json()\n",
        fixed: "import requests\n\n\ndef {func}(url):\n    {var} = requests.{word}(url, timeout=10)\n    return {var}.json()\n",
        words: &["get", "post", "put", "delete", "patch"],
        queries: &[
            "requests.{word} can hang forever, no timeout given",
            "http {word} call in {func} has no timeout",
            "missing timeout argument on requests {word}",
        ],
    },
    Family {
        name: "append-loop",
        category: Category::Performance,
        rules: &["PERF401"],
        applicability: Applicability::Safe,
        message: "Use a list comprehension to create a transformed list",
        title: "list of {var}s built with append in {func}",
        before: "for ?x in ?xs:\n    ?out.append(?f(?x))",
        after: "?out.extend(?f(?x) for ?x in ?xs)",
        code: "def {func}({var}s):\n    out = []\n    for {var} in {var}s:\n        out.append({var}.{attr})\n    return out\n",
        fixed: "def {func}({var}s):\n    out = []\n    out.extend({var}.{attr} for {var} in {var}s)\n    return out\n",
        words: &[],
        queries: &[
            "append inside a for loop could be a comprehension in {func}",
            "slow loop that appends each {var}",
            "building a list element by element instead of a comprehension",
        ],
    },
    Family {
        name: "mutable-default",
        category: Category::Logic,
        rules: &["B006"],
        applicability: Applicability::Unsafe,
        message: "Do not use mutable data structures for argument defaults",
        title: "mutable default {var}s in {func}",
        before: "def ?f(?a=[]):\n    ?body",
        after: "def ?f(?a=None):\n    ?body",
        code: "def {func}({var}s=[]):\n    {var}s.append({line})\n    return {var}s\n",
        fixed: "def {func}({var}s=None):\n    {var}s = [] if {var}s is None else {var}s\n    {var}s.append({line})\n    return {var}s\n",
        words: &[],
        queries: &[
            "default argument {var}s=[] is shared between calls",
            "{func} keeps state in a mutable default list",
            "list used as a default parameter value",
        ],
    },
];

/// xorshift64* seeded through splitmix64: small, fast and the same on every platform.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)).max(1))
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, n)`.
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1_u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    fn gaussian(&mut self) -> f64 {
        let u1 = 1.0 - self.unit();
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn status_fields_parse_in_kilobytes() {
        let status = "Name:\tagency\nVmHWM:\t  812344 kB\nVmRSS:\t  501200 kB\nThreads:\t3\n";
        assert_eq!(parse_status_kb(status, "VmRSS"), Some(501_200));
        assert_eq!(parse_status_kb(status, "VmHWM"), Some(812_344));
        assert_eq!(parse_status_kb(status, "VmSwap"), None);
        assert_eq!(parse_status_kb(status, "Threads"), None);
    }

    #[test]
    fn gaussian_noise_has_unit_variance() {
        let mut rng = Rng::new(7);
        let xs: Vec<f64> = (0..20_000).map(|_| rng.gaussian()).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "variance {var}");
        assert_eq!(Rng::new(3).next_u64(), Rng::new(3).next_u64());
        assert_ne!(Rng::new(3).next_u64(), Rng::new(4).next_u64());
    }

    /// A corpus with made-up base vectors, so that generation is tested without the model.
    fn corpus() -> Corpus {
        let bases = bases(42).unwrap();
        let vectors = (0..bases.len())
            .map(|i| {
                let mut rng = Rng::new(i as u64);
                let mut v: Vec<f32> = (0..DIM).map(|_| rng.gaussian() as f32).collect();
                normalize_vector(&mut v);
                v
            })
            .collect();
        Corpus {
            bases,
            vectors,
            seed: 42,
        }
    }

    #[test]
    fn synthetic_patterns_are_valid_unique_and_deterministic() {
        let corpus = corpus();
        assert!(corpus.len() > TEMPLATE_BASES);
        let n = 3 * corpus.len();
        let mut ids = HashSet::new();
        let mut fingerprints = HashSet::new();
        let mut messages = HashSet::new();
        for i in 0..n {
            let (spec, v) = corpus.pattern(i);
            // As the store checks them: `insert_many` refuses a template that does not compile.
            crate::store::validate_spec(&spec).unwrap_or_else(|e| panic!("{}: {e}", spec.id));
            assert!(ids.insert(spec.id.clone()));
            assert!(fingerprints.insert(spec.fingerprint()), "{}", spec.id);
            messages.insert(spec.message.clone());
            assert_eq!(v.len(), DIM);
            let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4);
            let base = &corpus.vectors[i % corpus.len()];
            let cos = crate::embed::dot(&v, base);
            assert!((0.8..0.97).contains(&cos), "cosine to its base {cos}");
        }
        assert_eq!(corpus.pattern(1234), corpus.pattern(1234));
        let queries = corpus.queries(200);
        assert_eq!(queries, corpus.queries(200));
        for text in &queries {
            assert!(
                !messages.contains(text),
                "query equals a stored message: {text}"
            );
            assert!(!text.contains('{'), "unfilled slot: {text}");
        }
        let distinct: HashSet<_> = queries.iter().collect();
        assert!(distinct.len() > 150, "{} distinct queries", distinct.len());
    }

    #[test]
    fn every_template_fills_every_slot() {
        let mut rng = Rng::new(1);
        for f in FAMILIES {
            let keys = Keys::draw(&mut rng, f.words);
            let ctx = Context::draw(&mut rng);
            for t in [f.message, f.title, f.before, f.after, f.code, f.fixed]
                .into_iter()
                .chain(f.queries.iter().copied())
            {
                let filled = fill(t, &keys, &ctx);
                for slot in [
                    "{attr", "{type", "{key", "{module", "{word", "{func", "{var", "{line",
                ] {
                    assert!(!filled.contains(slot), "{}: {filled}", f.name);
                }
            }
        }
    }

    #[test]
    fn options_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = BenchOptions::new(dir.path().join("store"));
        check_options(&opts).unwrap();
        opts.k = 0;
        assert!(
            check_options(&opts)
                .unwrap_err()
                .to_string()
                .contains("k = 0")
        );
        fs::write(dir.path().join("patterns.db"), b"").unwrap();
        let opts = BenchOptions::new(dir.path());
        assert!(
            check_options(&opts)
                .unwrap_err()
                .to_string()
                .contains("not empty")
        );
    }
}
