//! Criterion benches of a pattern lookup and its parts: embedding one query with the real model
//! (the quantised model agency runs on one thread and, as the baseline in the same run, the
//! published model on two threads as agency ran it before; short queries and full error
//! contexts), HNSW search, exact search (the baseline), BM25 search, and the fused
//! `PatternStore::query`.
//!
//! The data is the synthetic corpus of `agency_patterns::bench` (real embeddings of the seed
//! library and templated error messages, perturbed with seeded noise), at 1k, 10k and 100k
//! patterns for the index benches and 1k and 10k for the store. Fixtures are built lazily, once
//! per process, only for the benches the filter selects: the 100k graph takes about half a
//! minute. The model comes from `AGENCY_HOME`, or `.agency-home` in the workspace when that is
//! unset.
//!
//! `cargo bench --bench patterns -- --quick '/1000$'` runs the 1k cases quickly.

use std::cell::OnceCell;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use agency_core::context::{ErrorContext, normalize};
use agency_patterns::bench::{Corpus, fill_store};
use agency_patterns::embed::{Embedder, EmbedderConfig, SessionOptions};
use agency_patterns::store::signature;
use agency_patterns::text::{TextDoc, TextIndex};
use agency_patterns::vector::{self, Graph, VectorParams};
use agency_patterns::{PatternStore, Query, StoreConfig};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

/// Seed of the corpus, its patterns and its queries.
const SEED: u64 = 42;
/// Pattern counts of the index benches.
const INDEX_SIZES: [usize; 3] = [1_000, 10_000, 100_000];
/// Pattern counts of the store bench (a store on disk is built with the model-free insert path).
const STORE_SIZES: [usize; 2] = [1_000, 10_000];
/// Distinct queries cycled through by each bench.
const N_QUERIES: usize = 64;
const K: usize = 10;
/// `PatternStore::query` itself takes `now`; any fixed time keeps runs comparable.
const NOW: i64 = 1_750_000_000;

fn agency_home() -> PathBuf {
    std::env::var_os("AGENCY_HOME").map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.agency-home")),
        PathBuf::from,
    )
}

fn load_embedder(model: &Path, threads: usize, options: SessionOptions) -> Arc<Embedder> {
    let layout = agency_setup::Layout::new(agency_home());
    let config = EmbedderConfig {
        onnxruntime_lib: layout.onnxruntime_lib(),
        model: model.to_path_buf(),
        tokenizer: layout.tokenizer(),
        model_id: agency_setup::MODEL_ID.into(),
        intra_threads: threads,
    };
    for path in [&config.onnxruntime_lib, &config.model, &config.tokenizer] {
        assert!(
            path.is_file(),
            "{} is missing: run scripts/test.sh or agency setup first (AGENCY_HOME={})",
            path.display(),
            layout.home().display()
        );
    }
    Arc::new(Embedder::load_with(&config, options).expect("the embedding model loads"))
}

/// Vectors and text of the first `n` synthetic patterns, keyed `1..=n` like store keys.
struct Data {
    vectors: Vec<(u64, Vec<f32>)>,
    graph: OnceCell<Graph>,
    text: OnceCell<TextIndex>,
}

/// Everything built once per process, each part on first use.
struct Fixtures {
    embedder: Arc<Embedder>,
    /// The embedding baseline: the published model (float compute) on two threads, without
    /// weight prepacking, as agency ran it before the quantised model.
    published: Arc<Embedder>,
    /// Full error contexts (message and code) of the seed library, as stored and as a healer
    /// asks: about 60 tokens, against about 14 for `normalized`.
    contexts: Vec<String>,
    corpus: Corpus,
    /// Query texts as a user types them.
    queries: Vec<String>,
    /// The same, normalised as `PatternStore::query` does before embedding and BM25.
    normalized: Vec<String>,
    query_vectors: Vec<Vec<f32>>,
    data: [(usize, OnceCell<Data>); 3],
    stores: [(usize, OnceCell<(tempfile::TempDir, PatternStore)>); 2],
}

impl Fixtures {
    fn new() -> Self {
        let layout = agency_setup::Layout::new(agency_home());
        let embedder = load_embedder(&layout.model(), 1, SessionOptions::default());
        let published = load_embedder(
            &layout.published_model(),
            2,
            SessionOptions {
                prepacking: false,
                ..SessionOptions::default()
            },
        );
        let contexts = agency_patterns::seed::library()
            .expect("the seed library parses")
            .iter()
            .map(|spec| signature(spec).text)
            .collect();
        let corpus = Corpus::embed(&embedder, SEED, &mut |_, _| {}).expect("base texts embed");
        let queries = corpus.queries(N_QUERIES);
        let normalized: Vec<String> = queries
            .iter()
            .map(|q| {
                normalize(&ErrorContext {
                    message: q.clone(),
                    ..ErrorContext::default()
                })
                .text
            })
            .collect();
        let query_vectors = normalized
            .iter()
            .map(|q| embedder.embed(q).expect("query embeds").vector)
            .collect();
        Self {
            embedder,
            published,
            contexts,
            corpus,
            queries,
            normalized,
            query_vectors,
            data: INDEX_SIZES.map(|n| (n, OnceCell::new())),
            stores: STORE_SIZES.map(|n| (n, OnceCell::new())),
        }
    }

    fn data(&self, n: usize) -> &Data {
        let (_, cell) = self
            .data
            .iter()
            .find(|(size, _)| *size == n)
            .expect("a benched size");
        cell.get_or_init(|| Data {
            vectors: (0..n)
                .map(|i| (i as u64 + 1, self.corpus.pattern(i).1))
                .collect(),
            graph: OnceCell::new(),
            text: OnceCell::new(),
        })
    }

    fn graph(&self, n: usize) -> &Graph {
        let data = self.data(n);
        data.graph.get_or_init(|| {
            Graph::build(
                data.vectors.iter().map(|(id, v)| (*id, v.as_slice())),
                VectorParams::default(),
            )
        })
    }

    fn text(&self, n: usize) -> &TextIndex {
        self.data(n).text.get_or_init(|| {
            let index = TextIndex::in_memory().expect("an in-memory index");
            let specs: Vec<_> = (0..n).map(|i| self.corpus.pattern(i).0).collect();
            let sigs: Vec<_> = specs.iter().map(signature).collect();
            let docs: Vec<TextDoc<'_>> = specs
                .iter()
                .zip(&sigs)
                .enumerate()
                .map(|(i, (spec, sig))| TextDoc {
                    pk: i as u64 + 1,
                    category: spec.category.as_str(),
                    rule: &spec.rule,
                    message: &sig.message,
                    code: &sig.code,
                })
                .collect();
            index.add(&docs).expect("documents index");
            index
        })
    }

    fn store(&self, n: usize) -> &PatternStore {
        let (_, cell) = self
            .stores
            .iter()
            .find(|(size, _)| *size == n)
            .expect("a benched size");
        &cell
            .get_or_init(|| {
                let dir = tempfile::tempdir().expect("a temporary directory");
                let store =
                    PatternStore::open(StoreConfig::new(dir.path()), Arc::clone(&self.embedder))
                        .expect("the store opens");
                fill_store(&store, &self.corpus, 0..n, NOW, &mut |_, _| {})
                    .expect("patterns insert");
                store.checkpoint().expect("the store saves");
                (dir, store)
            })
            .1
    }
}

/// Cycles through `items`, one per call.
fn cycle<'a, T>(items: &'a [T]) -> impl FnMut() -> &'a T + 'a {
    let mut idx = 0;
    move || {
        idx = (idx + 1) % items.len();
        &items[idx]
    }
}

fn patterns(c: &mut Criterion) {
    let fx = Fixtures::new();

    let mut group = c.benchmark_group("embed");
    for (name, embedder, texts) in [
        ("query", &fx.embedder, &fx.normalized),
        ("query-published", &fx.published, &fx.normalized),
        ("context", &fx.embedder, &fx.contexts),
        ("context-published", &fx.published, &fx.contexts),
    ] {
        group.bench_function(name, |b| {
            let mut next = cycle(texts);
            b.iter(|| embedder.embed(black_box(next())).expect("text embeds"));
        });
    }
    group.finish();

    let mut group = c.benchmark_group("exact");
    for n in INDEX_SIZES {
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            let data = fx.data(n);
            let mut next = cycle(&fx.query_vectors);
            b.iter(|| vector::exact_top_k(&data.vectors, black_box(next()), K));
        });
    }
    group.finish();

    let mut group = c.benchmark_group("hnsw");
    for n in INDEX_SIZES {
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            let graph = fx.graph(n);
            let mut next = cycle(&fx.query_vectors);
            b.iter(|| graph.search(black_box(next()), K, None));
        });
    }
    group.finish();

    let mut group = c.benchmark_group("bm25");
    for n in INDEX_SIZES {
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            let text = fx.text(n);
            let mut next = cycle(&fx.normalized);
            b.iter(|| {
                text.search(black_box(next()), None, None, K)
                    .expect("BM25 search")
            });
        });
    }
    group.finish();

    let mut group = c.benchmark_group("query");
    for n in STORE_SIZES {
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            let store = fx.store(n);
            let mut next = cycle(&fx.queries);
            b.iter(|| {
                store
                    .query(&Query {
                        text: black_box(next()),
                        category: None,
                        rule: None,
                        k: K,
                        min_confidence: None,
                        now: NOW,
                    })
                    .expect("the query runs")
            });
        });
    }
    group.finish();
}

criterion_group!(benches, patterns);
criterion_main!(benches);
