//! The pattern store: one database, one embedder, and the two derived indexes kept in step.
//!
//! Writes go to SQLite first (one transaction each); only after the commit are the in-memory
//! table and the indexes updated, so a crash between the two loses nothing: the next open
//! catches the indexes up from the database. Queries read the in-memory table and the indexes
//! under short read locks and never wait for IO or embedding done by a writer.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use agency_core::confidence::{ConfidenceParams, TrackRecord, auto_apply};
use agency_core::context::{ErrorContext, NormalizedContext, normalize};
use agency_core::contract::{
    self, ExampleDoc, ImportReport, Match, PatternRecord, PatternSummary, PatternView, Prior,
    PruneReport, QueryEcho, QueryResponse, QueryStats, RecordRetirement, RetiredPattern,
    Retirement, Retrieval, SCHEMA_VERSION, SkippedLine, Template,
};
use agency_core::fusion::{RRF_K, reciprocal_rank_fusion};
use agency_core::pattern::{Example, PatternSpec, Rewrite};
use agency_core::{Applicability, Category, Source};
use serde::{Deserialize, Serialize};

use crate::calibration::Calibration;
use crate::db::{Db, MetaRow, NewRow, OutcomeRow, PatternRow, TextFields};
use crate::embed::{DIM, Embedder, dot};
use crate::error::{Error, Result};
use crate::locks::{lock, read, write};
use crate::text::{TextDoc, TextIndex};
use crate::vector::{Graph, SavedFiles, VectorIndex, VectorParams};

/// Rebuild the graph when more than this fraction of its points are retired.
const TOMBSTONE_REBUILD_FRACTION: f64 = 0.2;
/// Candidates taken from each retriever per requested match.
const CANDIDATES_PER_MATCH: usize = 4;
const MIN_CANDIDATES: usize = 20;
/// Largest `k` a query may ask for.
pub const MAX_K: usize = 100;
/// Version 2: the graph is saved in agency's own format (`vector::Graph`); a version-1 manifest
/// points at an `hnsw_rs` dump, which is rebuilt.
const MANIFEST_VERSION: u32 = 2;

/// How to open a store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The directory holding `patterns.db` and `index/`.
    pub dir: PathBuf,
    pub confidence: ConfidenceParams,
    pub vector: VectorParams,
}

impl StoreConfig {
    /// Defaults for a store in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            confidence: ConfidenceParams::default(),
            vector: VectorParams::default(),
        }
    }
}

/// What a query asks.
#[derive(Debug, Clone)]
pub struct Query<'a> {
    pub text: &'a str,
    pub category: Option<Category>,
    pub rule: Option<&'a str>,
    pub k: usize,
    pub min_confidence: Option<f64>,
    /// Unix seconds; confidence is computed as of this time.
    pub now: i64,
}

/// An outcome reported for a pattern that was applied.
#[derive(Debug, Clone)]
pub struct OutcomeInput {
    pub pattern_id: String,
    pub success: bool,
    /// The finding it was applied to (JSON), kept for the record.
    pub finding: Option<String>,
    pub duration_ms: Option<u64>,
    /// Repeating a key does not count the outcome twice.
    pub idempotency_key: Option<String>,
    pub at: i64,
}

/// The pattern's state after an outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeResult {
    pub version: u32,
    pub pattern_id: String,
    /// False when the idempotency key had been seen before.
    pub recorded: bool,
    pub confidence: f64,
    pub auto_apply: bool,
    pub successes: u32,
    pub failures: u32,
    /// Set when this outcome retired the pattern.
    pub retired: Option<String>,
}

/// What learning a pattern did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Learned {
    /// A new pattern.
    Inserted { id: String },
    /// Merged into an existing pattern with the same rewrite.
    Merged { id: String },
}

/// A pattern to insert: its spec, its vector when already computed, its track record when
/// carried over (an import), and its retirement (time, reason) when it arrives retired.
pub type NewPattern = (
    PatternSpec,
    Option<Vec<f32>>,
    Option<TrackRecord>,
    Option<(i64, String)>,
);

/// An item of [`PatternStore::insert_many`] that was not inserted: (index, id, reason).
pub type SkippedItem = (usize, String, String);

type ParsedSpec = (PatternSpec, TrackRecord, Option<(i64, String)>);

/// Per-pattern facts kept in memory for filtering and ranking.
#[derive(Debug, Clone)]
struct Meta {
    id: String,
    category: Category,
    rule: String,
    applicability: Applicability,
    track: TrackRecord,
    retired: bool,
}

/// Per-pattern facts indexed by primary key. Keys are dense (SQLite AUTOINCREMENT from 1), so
/// a vector beats a hash map on the hot path: the vector filter calls `get` for every node the
/// graph search visits.
#[derive(Debug, Default)]
struct Metas {
    slots: Vec<Option<Meta>>,
    len: usize,
}

impl Metas {
    fn get(&self, pk: u64) -> Option<&Meta> {
        self.slots.get(usize::try_from(pk).ok()?)?.as_ref()
    }

    fn get_mut(&mut self, pk: u64) -> Option<&mut Meta> {
        self.slots.get_mut(usize::try_from(pk).ok()?)?.as_mut()
    }

    /// Stores `meta` under `pk`; true when the key was new.
    fn insert(&mut self, pk: u64, meta: Meta) -> bool {
        let idx = usize::try_from(pk).expect("primary keys fit in memory");
        if idx >= self.slots.len() {
            self.slots.resize_with(idx + 1, || None);
        }
        let fresh = self.slots[idx].replace(meta).is_none();
        self.len += usize::from(fresh);
        fresh
    }

    fn len(&self) -> usize {
        self.len
    }

    fn iter(&self) -> impl Iterator<Item = (u64, &Meta)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(pk, m)| m.as_ref().map(|m| (pk as u64, m)))
    }

    fn keys(&self) -> impl Iterator<Item = u64> + '_ {
        self.iter().map(|(pk, _)| pk)
    }
}

#[derive(Debug, Default)]
struct Table {
    metas: Metas,
    by_id: HashMap<String, u64>,
    /// Keys by rule and by category (retired ones too), for filtered queries: a rule passes a
    /// few thousand of 100k patterns, and walking them all to find those cost about 2 ms.
    by_rule: HashMap<String, Vec<u64>>,
    by_category: HashMap<Category, Vec<u64>>,
    live: usize,
}

impl Table {
    fn insert(&mut self, pk: u64, meta: Meta) {
        if !meta.retired {
            self.live += 1;
        }
        self.by_id.insert(meta.id.clone(), pk);
        let (rule, category) = (meta.rule.clone(), meta.category);
        if self.metas.insert(pk, meta) {
            self.by_rule.entry(rule).or_default().push(pk);
            self.by_category.entry(category).or_default().push(pk);
        }
    }

    /// The keys a filter on `category` and `rule` can pass: the shorter list of the two when
    /// one is given, else every key.
    fn keys_for(&self, category: Option<Category>, rule: Option<&str>) -> Vec<u64> {
        let by_rule = rule.map(|r| self.by_rule.get(r).map_or(&[][..], Vec::as_slice));
        let by_category = category.map(|c| self.by_category.get(&c).map_or(&[][..], Vec::as_slice));
        match (by_rule, by_category) {
            (Some(a), Some(b)) => (if a.len() <= b.len() { a } else { b }).to_vec(),
            (Some(keys), None) | (None, Some(keys)) => keys.to_vec(),
            (None, None) => self.metas.keys().collect(),
        }
    }

    fn from_rows(rows: Vec<MetaRow>) -> Self {
        let mut t = Table::default();
        for r in rows {
            t.insert(
                r.pk,
                Meta {
                    id: r.id,
                    category: r.category,
                    rule: r.rule,
                    applicability: r.applicability,
                    track: r.track,
                    retired: r.retired,
                },
            );
        }
        t
    }
}

/// Entries kept by each query cache (embeddings at about 1.6 KB each).
const QUERY_CACHE_ENTRIES: usize = 4096;

/// A bounded map of recent entries; the oldest goes first. Counts its hits.
#[derive(Debug)]
struct Recent<K, V> {
    entries: HashMap<K, V>,
    order: std::collections::VecDeque<K>,
    hits: u64,
}

impl<K, V> Default for Recent<K, V> {
    fn default() -> Self {
        Recent {
            entries: HashMap::new(),
            order: std::collections::VecDeque::new(),
            hits: 0,
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone, V: Clone> Recent<K, V> {
    /// The entry of `key` if `valid` accepts it.
    fn get_if<Q>(&mut self, key: &Q, valid: impl Fn(&V) -> bool) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        let hit = self.entries.get(key).filter(|v| valid(v)).cloned();
        self.hits += u64::from(hit.is_some());
        hit
    }

    /// Stores `value` under `key`, replacing an older value of the same key.
    fn put(&mut self, key: K, value: V) {
        if self.entries.insert(key.clone(), value).is_some() {
            return;
        }
        if self.order.len() >= QUERY_CACHE_ENTRIES
            && let Some(oldest) = self.order.pop_front()
        {
            self.entries.remove(&oldest);
        }
        self.order.push_back(key);
    }
}

/// The key of a cached candidate search: the normalised text and the static filters.
type CandidateKey = (String, Option<Category>, Option<String>, usize);

/// The candidates of one search, before fusion and row reads. They depend only on which
/// patterns are in the indexes, never on confidence, so outcomes do not void them.
#[derive(Clone)]
struct Candidates {
    /// `index_generation` when they were found; another value voids them.
    generation: u64,
    embedding: crate::embed::Embedding,
    vector_hits: Vec<(u64, f32)>,
    text_hits: Vec<(u64, f32)>,
    scores: HashMap<u64, f32>,
    method: crate::vector::Method,
    live: usize,
}

/// Where the persisted graph is; written atomically after each save.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Manifest {
    version: u32,
    /// The database the graph was built from (see `Db::store_id`).
    #[serde(default)]
    store_id: String,
    model_id: String,
    graph: Option<GraphManifest>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct GraphManifest {
    dir: String,
    basename: String,
    files: SavedFiles,
    /// Highest primary key in the graph.
    max_pk: u64,
}

/// The open store.
pub struct PatternStore {
    config: StoreConfig,
    embedder: Arc<Embedder>,
    writer: Mutex<Db>,
    readers: Mutex<Vec<Db>>,
    table: RwLock<Table>,
    vectors: RwLock<VectorIndex>,
    /// Highest primary key in the vector index, and whether it changed since the last save.
    vector_state: Mutex<(u64, bool)>,
    /// Serialises every change to the vector index (inserts, rebuilds, checkpoints). Graph
    /// inserts then need only the read lock of `vectors` (`Graph::insert` takes `&self`), so
    /// a query never queues behind a write, a rebuild or a dump of the graph.
    vector_writes: Mutex<()>,
    text: TextIndex,
    /// Recent query embeddings: the same error is looked up again and again (every healer,
    /// every run), and the model is two thirds of a lookup.
    query_cache: Mutex<Recent<String, crate::embed::Embedding>>,
    /// Recent candidate searches (vector and text hits) for queries without a confidence
    /// filter: a repeated error skips both indexes, not only the model.
    candidate_cache: Mutex<Recent<CandidateKey, Candidates>>,
    /// Bumped after every change of which patterns the indexes hold or which are live
    /// (insert, retirement, rebuild); cached candidates of another generation are void.
    index_generation: std::sync::atomic::AtomicU64,
    warnings: Vec<String>,
}

impl std::fmt::Debug for PatternStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PatternStore")
            .field("dir", &self.config.dir)
            .finish_non_exhaustive()
    }
}

impl PatternStore {
    /// Opens (creating if needed) the store in `config.dir` and brings its indexes up to date
    /// with the database, rebuilding any that are missing or damaged.
    pub fn open(config: StoreConfig, embedder: Arc<Embedder>) -> Result<Self> {
        let _span = tracing::debug_span!("open store", dir = %config.dir.display()).entered();
        let started = Instant::now();
        fs::create_dir_all(&config.dir).map_err(|e| Error::io(&config.dir, e))?;
        let db_path = config.dir.join("patterns.db");
        let mut db = Db::open(&db_path)?;
        let mut warnings = Vec::new();

        reembed_if_model_changed(&mut db, &embedder, &mut warnings)?;
        let table = Table::from_rows(db.meta_rows()?);
        tracing::debug!(
            patterns = table.metas.len(),
            elapsed_ms = started.elapsed().as_millis(),
            "table loaded"
        );

        let index_dir = config.dir.join("index");
        let text = open_text_index(&db, &index_dir.join("text"), &mut warnings)?;
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis(),
            "text index open"
        );
        let manifest = read_manifest(&index_dir, &mut warnings);
        let (vectors, max_pk, dirty) = open_vector_index(
            &db,
            &config,
            &table,
            manifest.as_ref(),
            embedder.model_id(),
            &mut warnings,
        )?;

        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis(),
            method = vectors.method().as_str(),
            "vector index open"
        );
        let store = Self {
            config,
            embedder,
            writer: Mutex::new(db),
            readers: Mutex::new(Vec::new()),
            table: RwLock::new(table),
            vectors: RwLock::new(vectors),
            vector_state: Mutex::new((max_pk, dirty)),
            vector_writes: Mutex::new(()),
            text,
            query_cache: Mutex::new(Recent::default()),
            candidate_cache: Mutex::new(Recent::default()),
            index_generation: std::sync::atomic::AtomicU64::new(0),
            warnings,
        };
        if dirty {
            store.checkpoint()?;
        }
        Ok(store)
    }

    /// Problems found and repaired while opening (a rebuilt index, a re-embedded model).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.config.dir
    }

    /// The embedder this store uses.
    pub fn embedder(&self) -> &Arc<Embedder> {
        &self.embedder
    }

    /// Live (not retired) patterns.
    pub fn live_count(&self) -> usize {
        read(&self.table).live
    }

    /// The confidence parameters in force.
    pub fn confidence_params(&self) -> &ConfidenceParams {
        &self.config.confidence
    }

    /// Finds the patterns closest to an error: vector and BM25 rankings fused by RRF.
    pub fn query(&self, q: &Query<'_>) -> Result<QueryResponse> {
        let started = Instant::now();
        if q.text.trim().is_empty() {
            return Err(Error::EmptyQuery);
        }
        let k = q.k.clamp(1, MAX_K);
        let normalized = normalize(&ErrorContext {
            category: q.category,
            rule: q.rule.map(str::to_string),
            message: q.text.to_string(),
            code: None,
            fault_line: None,
        });
        let candidates = (k * CANDIDATES_PER_MATCH).max(MIN_CANDIDATES);
        let params = self.config.confidence;
        let allow_in = |table: &Table, pk: u64| {
            table.metas.get(pk).is_some_and(|m| {
                !m.retired
                    && q.category.is_none_or(|c| c == m.category)
                    && q.rule.is_none_or(|r| r == m.rule)
                    && q.min_confidence
                        .is_none_or(|min| m.track.confidence(q.now, &params) >= min)
            })
        };
        // Read before searching: a change that lands during the search leaves the entry void.
        let generation = self.generation();
        let cache_key: Option<CandidateKey> = q.min_confidence.is_none().then(|| {
            (
                normalized.text.clone(),
                q.category,
                q.rule.map(str::to_string),
                candidates,
            )
        });
        let cached = cache_key.as_ref().and_then(|key| {
            lock(&self.candidate_cache).get_if(key, |c| c.generation == generation)
        });
        let found = if let Some(hit) = cached {
            hit
        } else {
            let found =
                self.search_candidates(q, &normalized.text, candidates, generation, &allow_in)?;
            if let Some(key) = cache_key {
                lock(&self.candidate_cache).put(key, found.clone());
            }
            found
        };
        let Candidates {
            embedding,
            vector_hits,
            text_hits,
            scores,
            method,
            live,
            ..
        } = found;

        let vector_ids: Vec<u64> = vector_hits.iter().map(|h| h.0).collect();
        let text_ids: Vec<u64> = text_hits.iter().map(|h| h.0).collect();
        let fused = reciprocal_rank_fusion(&[&vector_ids, &text_ids], RRF_K);
        let mut matches = Vec::with_capacity(k);
        self.with_reader(|db| {
            for f in fused.iter().take(k) {
                // The in-memory filter is a snapshot; another process may have retired it since.
                let Some(row) = db.row_by_pk(f.id)?.filter(|r| r.retired.is_none()) else {
                    continue;
                };
                let score = match scores.get(&f.id) {
                    Some(s) => *s,
                    None => db
                        .embedding(f.id, DIM)?
                        .map_or(0.0, |v| dot(&embedding.vector, &v)),
                };
                let example = db.examples(f.id)?.into_iter().next();
                matches.push(self.match_of(&row, example, score, f, q.now));
            }
            Ok(())
        })?;

        Ok(QueryResponse {
            version: SCHEMA_VERSION,
            query: QueryEcho {
                text: q.text.to_string(),
                normalized: normalized.text.clone(),
                truncated: normalized.truncated || embedding.truncated,
                category: q.category.map(|c| c.as_str().to_string()),
                rule: q.rule.map(str::to_string),
                k,
                min_confidence: q.min_confidence,
            },
            matches,
            stats: QueryStats {
                patterns: live,
                method: method.as_str().to_string(),
                duration_ms: started.elapsed().as_secs_f64() * 1000.0,
            },
        })
    }

    fn match_of(
        &self,
        row: &PatternRow,
        example: Option<Example>,
        score: f32,
        fused: &agency_core::fusion::Fused,
        now: i64,
    ) -> Match {
        let params = &self.config.confidence;
        let confidence = row.track.confidence(now, params);
        Match {
            id: row.id.clone(),
            category: row.category.as_str().to_string(),
            rule: row.rule.clone(),
            title: row.title.clone(),
            score: f64::from(score.clamp(0.0, 1.0)),
            confidence,
            auto_apply: auto_apply(confidence, row.applicability, params),
            applicability: row.applicability.as_str().to_string(),
            template: Template {
                before: row.rewrite.before.clone(),
                after: row.rewrite.after.clone(),
            },
            example: example.map(example_doc),
            support: row.support,
            successes: row.track.successes,
            failures: row.track.failures,
            source: row.source.as_str().to_string(),
            retrieval: Retrieval {
                vector_rank: fused.ranks[0],
                text_rank: fused.ranks[1],
                fused: fused.score,
            },
        }
    }

    /// Embeds a normalised query, from the cache when the same text was embedded recently.
    /// Embeds the query (BM25 runs beside the model) and searches both indexes under the
    /// query's filter: the candidates before fusion.
    fn search_candidates(
        &self,
        q: &Query<'_>,
        normalized: &str,
        candidates: usize,
        generation: u64,
        allow_in: &dyn Fn(&Table, u64) -> bool,
    ) -> Result<Candidates> {
        // BM25 needs no embedding: run it while the model works, so that the critical path is
        // the embedding plus the vector search only.
        let (embedding, text_hits) = std::thread::scope(|scope| {
            let text = scope.spawn(|| {
                self.text.search(
                    normalized,
                    q.category.map(Category::as_str),
                    q.rule,
                    candidates * 2,
                )
            });
            let embedding = self.embed_query(normalized);
            let text_hits = text
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (embedding, text_hits)
        });
        let embedding = embedding?;
        let text_hits = text_hits?;

        let (vector_hits, text_hits, method, live, scores) = {
            let table = read(&self.table);
            let allow = |pk: u64| allow_in(&table, pk);
            let filtered = q.category.is_some() || q.rule.is_some() || q.min_confidence.is_some();
            let allowed: Option<Vec<u64>> = filtered.then(|| {
                let mut keys = table.keys_for(q.category, q.rule);
                keys.retain(|pk| allow(*pk));
                keys
            });
            let vectors = read(&self.vectors);
            // With no filter and no tombstones every point qualifies: skip the per-node check.
            let everything = !filtered && table.live == vectors.len();
            let filter: Option<&dyn Fn(u64) -> bool> = if everything { None } else { Some(&allow) };
            // A filter that passes few (a rule, as every healer asks) is answered by scanning
            // the patterns it passes, as a small store is.
            let scan = allowed
                .as_deref()
                .filter(|ids| ids.len() <= self.config.vector.filter_scan_max);
            let (vector_hits, method) = match scan {
                Some(ids) => (
                    vectors.search_among(&embedding.vector, candidates, ids),
                    crate::vector::Method::Exact,
                ),
                None => (
                    vectors.search(&embedding.vector, candidates, filter),
                    vectors.method(),
                ),
            };
            let text_hits: Vec<(u64, f32)> = text_hits
                .into_iter()
                .filter(|(pk, _)| allow(*pk))
                .take(candidates)
                .collect();
            let mut scores: HashMap<u64, f32> = vector_hits.iter().copied().collect();
            for (pk, _) in &text_hits {
                if let Some(score) = vectors.similarity(*pk, &embedding.vector) {
                    scores.insert(*pk, score);
                }
            }
            (vector_hits, text_hits, method, table.live, scores)
        };

        Ok(Candidates {
            generation,
            embedding,
            vector_hits,
            text_hits,
            scores,
            method,
            live,
        })
    }

    /// The current index generation (see `index_generation`).
    fn generation(&self) -> u64 {
        self.index_generation
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Voids every cached candidate search: the indexes' membership changed.
    fn bump_generation(&self) {
        self.index_generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    fn embed_query(&self, text: &str) -> Result<crate::embed::Embedding> {
        if let Some(hit) = lock(&self.query_cache).get_if(text, |_| true) {
            return Ok(hit);
        }
        let embedding = self.embedder.embed(text)?;
        lock(&self.query_cache).put(text.to_string(), embedding.clone());
        Ok(embedding)
    }

    /// Query embeddings served from the cache so far.
    pub fn query_cache_hits(&self) -> u64 {
        lock(&self.query_cache).hits
    }

    /// Queries whose candidates were served from the cache so far.
    pub fn candidate_cache_hits(&self) -> u64 {
        lock(&self.candidate_cache).hits
    }

    /// Learns a pattern. A pattern whose rewrite (fingerprint) is already known is merged into
    /// the existing one: support +1 and the new examples; when it comes from a verified heal it
    /// also counts as a success. A retired rewrite is refused.
    pub fn learn(&self, spec: &PatternSpec, now: i64) -> Result<Learned> {
        validate_spec(spec)?;
        let fingerprint = spec.fingerprint();
        let existing = self.with_reader(|db| db.row_by_fingerprint(&fingerprint))?;
        if let Some(row) = existing {
            return self.merge(&row, spec, now);
        }
        let sig = signature(spec);
        let embedding = self.embedder.embed(&sig.text)?;
        let mut track = TrackRecord::with_prior(spec.prior.0, spec.prior.1, now);
        // The heal a pattern is learned from was verified: that is its first success, recorded
        // in the same transaction as the pattern.
        let healed = spec.source == Source::Heal;
        if healed {
            track.record(true, now, &self.config.confidence);
        }
        let (pk, row) = {
            let mut db = lock(&self.writer);
            db.write(|w| {
                if let Some(row) = w.row_by_fingerprint(&fingerprint)? {
                    // Learned by another process since we looked.
                    return Ok(Err(row));
                }
                if w.id_exists(&spec.id)? {
                    return Err(Error::IdTaken(spec.id.clone()));
                }
                let pk = w.insert(&NewRow {
                    spec,
                    signature: &sig.text,
                    sig_message: &sig.message,
                    sig_code: &sig.code,
                    embedding: &embedding.vector,
                    model: self.embedder.model_id(),
                    track,
                    support: 1,
                    created_at: now,
                    retired: None,
                })?;
                if healed {
                    w.insert_outcome(&OutcomeRow {
                        pattern_pk: pk,
                        success: true,
                        finding: None,
                        duration_ms: None,
                        idempotency_key: None,
                        at: now,
                    })?;
                }
                Ok(Ok(pk))
            })?
            .map_or_else(|row| (None, Some(row)), |pk| (Some(pk), None))
        };
        if let Some(row) = row {
            return self.merge(&row, spec, now);
        }
        let pk = pk.expect("either inserted or merged");
        self.index_new(&[(pk, spec, &sig, embedding.vector, track)]);
        Ok(Learned::Inserted {
            id: spec.id.clone(),
        })
    }

    fn merge(&self, row: &PatternRow, spec: &PatternSpec, now: i64) -> Result<Learned> {
        let params = self.config.confidence;
        let pk = row.pk;
        let track = {
            let mut db = lock(&self.writer);
            db.write(|w| {
                // The row as it is now: an outcome or a retirement may have landed since it
                // was looked up.
                let row = w
                    .row_by_pk(pk)?
                    .ok_or_else(|| Error::NotFound(row.id.clone()))?;
                if let Some((_, reason)) = &row.retired {
                    return Err(Error::Retired {
                        id: row.id.clone(),
                        reason: reason.clone(),
                    });
                }
                let mut track = row.track;
                if spec.source == Source::Heal {
                    track.record(true, now, &params);
                    w.insert_outcome(&OutcomeRow {
                        pattern_pk: pk,
                        success: true,
                        finding: None,
                        duration_ms: None,
                        idempotency_key: None,
                        at: now,
                    })?;
                }
                let existing = w.examples(pk)?;
                for ex in &spec.examples {
                    if !existing
                        .iter()
                        .any(|(before, after)| *before == ex.before && *after == ex.after)
                    {
                        w.add_example(pk, ex, now)?;
                    }
                }
                w.update_track(pk, &track, row.support + 1, now)?;
                Ok(track)
            })?
        };
        if let Some(meta) = write(&self.table).metas.get_mut(pk) {
            meta.track = track;
        }
        Ok(Learned::Merged { id: row.id.clone() })
    }

    /// Adds freshly committed rows to the in-memory table and both indexes.
    fn index_new(&self, rows: &[(u64, &PatternSpec, &NormalizedContext, Vec<f32>, TrackRecord)]) {
        {
            let mut table = write(&self.table);
            for (pk, spec, _, _, track) in rows {
                table.insert(
                    *pk,
                    Meta {
                        id: spec.id.clone(),
                        category: spec.category,
                        rule: spec.rule.clone(),
                        applicability: spec.applicability,
                        track: *track,
                        retired: false,
                    },
                );
            }
        }
        {
            let batch: Vec<(u64, &[f32])> = rows.iter().map(|r| (r.0, r.3.as_slice())).collect();
            let _serial = lock(&self.vector_writes);
            // A graph takes the insert beside running queries; the exact index (small, a push
            // per vector) takes the write lock for microseconds. An exact index the batch takes
            // past the threshold becomes a graph built beside running queries too (the index
            // cannot change meanwhile: changes hold `vector_writes`), then swapped in.
            let params = self.config.vector;
            if !read(&self.vectors).insert_shared(&batch) {
                let grown = read(&self.vectors).outgrown(&batch, params);
                match grown {
                    Some(graph) => *write(&self.vectors) = VectorIndex::Graph(graph),
                    None => write(&self.vectors).insert_batch(&batch, params),
                }
            }
            if let Some(max) = rows.iter().map(|r| r.0).max() {
                let mut state = lock(&self.vector_state);
                *state = (state.0.max(max), true);
            }
        }
        let docs: Vec<TextDoc<'_>> = rows
            .iter()
            .map(|(pk, spec, sig, _, _)| TextDoc {
                pk: *pk,
                category: spec.category.as_str(),
                rule: &spec.rule,
                message: &sig.message,
                code: &sig.code,
            })
            .collect();
        self.add_text(&docs);
        self.bump_generation();
    }

    /// Adds committed rows to the text index. The rows are already durable, so a failure here
    /// is not the caller's failure: it is logged, and the next open catches the index up.
    fn add_text(&self, docs: &[TextDoc<'_>]) {
        if let Err(e) = self.text.add(docs) {
            tracing::warn!(error = %e, rows = docs.len(), "text index not updated; it catches up at the next open");
        }
    }

    /// Inserts many new patterns in one transaction (all or nothing), embedding those without a
    /// vector. Patterns whose rewrite is already known are reported, not inserted.
    pub fn insert_many(
        &self,
        items: Vec<NewPattern>,
        now: i64,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<(usize, Vec<SkippedItem>)> {
        let total = items.len();
        let mut prepared = Vec::with_capacity(total);
        let mut skipped = Vec::new();
        for (idx, (spec, vector, track, retired)) in items.into_iter().enumerate() {
            validate_spec(&spec)?;
            let sig = signature(&spec);
            let vector = match vector {
                Some(v) if v.len() == DIM && v.iter().all(|x| x.is_finite()) => v,
                _ => self.embedder.embed(&sig.text)?.vector,
            };
            let track =
                track.unwrap_or_else(|| TrackRecord::with_prior(spec.prior.0, spec.prior.1, now));
            prepared.push((idx, spec, sig, vector, track, retired));
            progress(idx + 1, total);
        }
        let inserted: Vec<(u64, usize)> = {
            let mut db = lock(&self.writer);
            db.write(|w| {
                let mut out = Vec::new();
                for (idx, spec, sig, vector, track, retired) in &prepared {
                    if w.id_exists(&spec.id)? {
                        skipped.push((*idx, spec.id.clone(), "id already in the store".into()));
                        continue;
                    }
                    if let Some(row) = w.row_by_fingerprint(&spec.fingerprint())? {
                        skipped.push((
                            *idx,
                            spec.id.clone(),
                            format!("same rewrite as pattern `{}`", row.id),
                        ));
                        continue;
                    }
                    let pk = w.insert(&NewRow {
                        spec,
                        signature: &sig.text,
                        sig_message: &sig.message,
                        sig_code: &sig.code,
                        embedding: vector,
                        model: self.embedder.model_id(),
                        track: *track,
                        support: 1,
                        created_at: now,
                        retired: retired.clone(),
                    })?;
                    out.push((pk, *idx));
                }
                Ok(out)
            })?
        };
        let by_idx: HashMap<usize, u64> = inserted.iter().map(|(pk, idx)| (*idx, *pk)).collect();
        let mut live_rows = Vec::new();
        let mut retired_pks = Vec::new();
        for (idx, spec, sig, vector, track, retired) in prepared {
            if let Some(&pk) = by_idx.get(&idx) {
                if retired.is_some() {
                    retired_pks.push((pk, spec.clone(), sig, track));
                } else {
                    live_rows.push((pk, spec, sig, vector, track));
                }
            }
        }
        let refs: Vec<_> = live_rows
            .iter()
            .map(|(pk, spec, sig, v, t)| (*pk, spec, sig, v.clone(), *t))
            .collect();
        self.index_new(&refs);
        {
            let mut table = write(&self.table);
            for (pk, spec, _, track) in &retired_pks {
                table.insert(
                    *pk,
                    Meta {
                        id: spec.id.clone(),
                        category: spec.category,
                        rule: spec.rule.clone(),
                        applicability: spec.applicability,
                        track: *track,
                        retired: true,
                    },
                );
            }
        }
        // Retired imports still need text docs so that the text index covers every key.
        let docs: Vec<TextDoc<'_>> = retired_pks
            .iter()
            .map(|(pk, spec, sig, _)| TextDoc {
                pk: *pk,
                category: spec.category.as_str(),
                rule: &spec.rule,
                message: &sig.message,
                code: &sig.code,
            })
            .collect();
        self.add_text(&docs);
        Ok((inserted.len(), skipped))
    }

    /// Records an outcome of applying a pattern and returns its updated confidence. A failure
    /// that leaves the pattern below the retirement bar retires it at once.
    pub fn record_outcome(&self, o: &OutcomeInput) -> Result<OutcomeResult> {
        let pk = self.pk_of(&o.pattern_id)?;
        let params = self.config.confidence;
        let (recorded, track, retired_now) = {
            let mut db = lock(&self.writer);
            db.write(|w| {
                let row = w
                    .row_by_pk(pk)?
                    .ok_or_else(|| Error::NotFound(o.pattern_id.clone()))?;
                let inserted = w.insert_outcome(&OutcomeRow {
                    pattern_pk: pk,
                    success: o.success,
                    finding: o.finding.as_deref(),
                    duration_ms: o.duration_ms,
                    idempotency_key: o.idempotency_key.as_deref(),
                    at: o.at,
                })?;
                let mut track = row.track;
                if !inserted {
                    return Ok((false, track, None));
                }
                track.record(o.success, o.at, &params);
                w.update_track(pk, &track, row.support, o.at)?;
                let mut retired_now = None;
                let reason = (row.retired.is_none() && !o.success)
                    .then(|| track.retirement(o.at, &params))
                    .flatten();
                if let Some(reason) = reason {
                    w.retire(pk, o.at, &reason)?;
                    retired_now = Some(reason);
                }
                Ok((true, track, retired_now))
            })?
        };
        let retired = {
            let mut table = write(&self.table);
            let was_live = table.metas.get(pk).is_some_and(|m| !m.retired);
            if let Some(meta) = table.metas.get_mut(pk) {
                meta.track = track;
                if retired_now.is_some() {
                    meta.retired = true;
                }
            }
            if was_live && retired_now.is_some() {
                table.live -= 1;
            }
            table.metas.get(pk).is_some_and(|m| m.retired)
        };
        if retired_now.is_some() {
            self.bump_generation();
        }
        let confidence = track.confidence(o.at, &params);
        let applicability = read(&self.table)
            .metas
            .get(pk)
            .map_or(Applicability::DisplayOnly, |m| m.applicability);
        Ok(OutcomeResult {
            version: SCHEMA_VERSION,
            pattern_id: o.pattern_id.clone(),
            recorded,
            confidence,
            auto_apply: !retired && auto_apply(confidence, applicability, &params),
            successes: track.successes,
            failures: track.failures,
            retired: retired_now,
        })
    }

    fn pk_of(&self, id: &str) -> Result<u64> {
        if let Some(pk) = read(&self.table).by_id.get(id) {
            return Ok(*pk);
        }
        // Added by another process since we opened.
        self.with_reader(|db| db.row_by_id(id))?
            .map(|r| r.pk)
            .ok_or_else(|| Error::NotFound(id.to_string()))
    }

    /// Retires a pattern by hand: it is excluded from lookups and its rewrite is never
    /// re-learned; the record and reason are kept.
    pub fn retire(&self, id: &str, reason: &str, now: i64) -> Result<()> {
        let pk = self.pk_of(id)?;
        lock(&self.writer).write(|w| w.retire(pk, now, reason))?;
        self.mark_retired(&[pk]);
        self.maybe_rebuild_graph()
    }

    fn mark_retired(&self, pks: &[u64]) {
        {
            let mut table = write(&self.table);
            for pk in pks {
                if let Some(meta) = table.metas.get_mut(*pk).filter(|m| !m.retired) {
                    meta.retired = true;
                    table.live -= 1;
                }
            }
        }
        self.bump_generation();
    }

    /// Retires every live pattern whose record fails the retirement rule, and reports them.
    pub fn prune(&self, now: i64) -> Result<PruneReport> {
        let params = self.config.confidence;
        let candidates: Vec<(u64, String, String, String)> = {
            let table = read(&self.table);
            let mut c: Vec<_> = table
                .metas
                .iter()
                .filter(|(_, m)| !m.retired)
                .filter_map(|(pk, m)| {
                    m.track
                        .retirement(now, &params)
                        .map(|reason| (pk, m.id.clone(), m.rule.clone(), reason))
                })
                .collect();
            c.sort_by(|a, b| a.1.cmp(&b.1));
            c
        };
        let checked = self.live_count();
        lock(&self.writer).write(|w| {
            for (pk, _, _, reason) in &candidates {
                w.retire(*pk, now, reason)?;
            }
            Ok(())
        })?;
        let pks: Vec<u64> = candidates.iter().map(|c| c.0).collect();
        self.mark_retired(&pks);
        self.maybe_rebuild_graph()?;
        Ok(PruneReport {
            version: SCHEMA_VERSION,
            checked,
            retired: candidates
                .into_iter()
                .map(|(_, id, rule, reason)| RetiredPattern { id, rule, reason })
                .collect(),
        })
    }

    /// Rebuilds the graph without its tombstones once they pass a fraction of it.
    fn maybe_rebuild_graph(&self) -> Result<()> {
        // One lock at a time: taking the table while holding the vectors would invert the
        // order `query` uses.
        let live = self.live_count();
        let (points, is_graph) = {
            let vectors = read(&self.vectors);
            (vectors.len(), matches!(*vectors, VectorIndex::Graph(_)))
        };
        if !is_graph || points == 0 {
            return Ok(());
        }
        let tombstones = points.saturating_sub(live);
        if (tombstones as f64) / (points as f64) <= TOMBSTONE_REBUILD_FRACTION {
            return Ok(());
        }
        // Inserts wait for the rebuild (they would be lost in the swap); queries go on with the
        // old graph until the swap.
        let serial = lock(&self.vector_writes);
        let (ids, data) = {
            let table = read(&self.table);
            let live = |pk: u64| table.metas.get(pk).is_some_and(|m| !m.retired);
            self.with_reader(|db| db.embeddings_flat_after(0, DIM, &live))?
        };
        let max_pk = ids.iter().copied().max().unwrap_or(0);
        let rebuilt = VectorIndex::build_flat(&ids, &data, self.config.vector);
        drop(data);
        *write(&self.vectors) = rebuilt;
        self.bump_generation();
        *lock(&self.vector_state) = (max_pk, true);
        self.checkpoint_serialised(&serial)
    }

    /// Persists the vector graph (when there is one and it changed), so that the next open
    /// loads it instead of rebuilding. Safe to call any time; cheap when nothing changed.
    pub fn checkpoint(&self) -> Result<()> {
        let serial = lock(&self.vector_writes);
        self.checkpoint_serialised(&serial)
    }

    /// [`Self::checkpoint`] with `vector_writes` held: the dump and the recorded `max_pk` agree,
    /// and queries run beside the dump (they share the read lock).
    fn checkpoint_serialised(&self, _serial: &std::sync::MutexGuard<'_, ()>) -> Result<()> {
        let (max_pk, dirty) = *lock(&self.vector_state);
        if !dirty {
            return Ok(());
        }
        let index_dir = self.config.dir.join("index");
        // One checkpoint at a time across processes: two would delete each other's generation.
        let _guard = match agency_fs::LockFile::try_acquire(&index_dir.join("checkpoint.lock")) {
            Ok(guard) => guard,
            Err(agency_fs::Error::Locked { .. }) => {
                tracing::debug!(
                    "another process is saving the vector index; skipping this checkpoint"
                );
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let vectors = read(&self.vectors);
        let graph_manifest = match &*vectors {
            VectorIndex::Graph(graph) if !graph.is_empty() => {
                let name = format!("graph-{}", unique_suffix());
                let dir = index_dir.join(&name);
                let basename = graph.save(&dir)?;
                let files = SavedFiles::measure(&dir, &basename)?;
                Some(GraphManifest {
                    dir: name,
                    basename,
                    files,
                    max_pk,
                })
            }
            _ => None,
        };
        drop(vectors);
        let store_id = lock(&self.writer).store_id()?;
        let manifest = Manifest {
            version: MANIFEST_VERSION,
            store_id,
            model_id: self.embedder.model_id().to_string(),
            graph: graph_manifest.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
        agency_fs::atomic_write(&index_dir.join("manifest.json"), &bytes)?;
        remove_stale_graphs(&index_dir, graph_manifest.as_ref().map(|g| g.dir.as_str()));
        lock(&self.vector_state).1 = false;
        Ok(())
    }

    /// Every pattern, live first then retired, each sorted by id.
    pub fn list(&self, now: i64, include_retired: bool) -> Result<Vec<PatternSummary>> {
        let params = self.config.confidence;
        let rows = self.with_reader(Db::rows)?;
        let mut out: Vec<PatternSummary> = rows
            .iter()
            .filter(|r| include_retired || r.retired.is_none())
            .map(|r| {
                let confidence = r.track.confidence(now, &params);
                PatternSummary {
                    id: r.id.clone(),
                    category: r.category.as_str().to_string(),
                    rule: r.rule.clone(),
                    title: r.title.clone(),
                    confidence,
                    auto_apply: r.retired.is_none()
                        && auto_apply(confidence, r.applicability, &params),
                    support: r.support,
                    successes: r.track.successes,
                    failures: r.track.failures,
                    source: r.source.as_str().to_string(),
                    retired: r.retired.is_some(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.retired.cmp(&b.retired).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Everything about one pattern.
    pub fn show(&self, id: &str, now: i64) -> Result<PatternView> {
        let params = self.config.confidence;
        let (row, examples) = self.with_reader(|db| {
            let row = db
                .row_by_id(id)?
                .ok_or_else(|| Error::NotFound(id.to_string()))?;
            let examples = db.examples(row.pk)?;
            Ok((row, examples))
        })?;
        let confidence = row.track.confidence(now, &params);
        Ok(PatternView {
            version: SCHEMA_VERSION,
            id: row.id.clone(),
            category: row.category.as_str().to_string(),
            rule: row.rule.clone(),
            title: row.title.clone(),
            message: row.message.clone(),
            explanation: row.explanation.clone(),
            applicability: row.applicability.as_str().to_string(),
            template: Template {
                before: row.rewrite.before.clone(),
                after: row.rewrite.after.clone(),
            },
            examples: examples.into_iter().map(example_doc).collect(),
            source: row.source.as_str().to_string(),
            confidence,
            auto_apply: row.retired.is_none() && auto_apply(confidence, row.applicability, &params),
            support: row.support,
            successes: row.track.successes,
            failures: row.track.failures,
            fingerprint: row.fingerprint.clone(),
            created_at: contract::format_rfc3339(row.created_at),
            updated_at: contract::format_rfc3339(row.updated_at),
            retired: row.retired.as_ref().map(|(at, reason)| Retirement {
                at: contract::format_rfc3339(*at),
                reason: reason.clone(),
            }),
        })
    }

    /// Writes every pattern (retired ones too, so that a retirement travels) as JSON lines.
    pub fn export(&self, out: &mut dyn Write, path: &Path) -> Result<usize> {
        let (rows, examples) = self.with_reader(|db| {
            let rows = db.rows()?;
            let mut examples = Vec::with_capacity(rows.len());
            for r in &rows {
                examples.push(db.examples(r.pk)?);
            }
            Ok((rows, examples))
        })?;
        let mut sorted: Vec<_> = rows.iter().zip(examples).collect();
        sorted.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        for (row, examples) in &sorted {
            let record = record_of(row, examples);
            let line = serde_json::to_string(&record).expect("records serialise");
            writeln!(out, "{line}").map_err(|e| Error::io(path, e))?;
        }
        out.flush().map_err(|e| Error::io(path, e))?;
        Ok(sorted.len())
    }

    /// Imports JSON lines written by [`Self::export`]. Every line is validated before anything
    /// is written; the first bad line is an error naming its number, and then nothing is
    /// imported. The valid lines go in as one transaction.
    pub fn import(
        &self,
        input: &mut dyn BufRead,
        path: &Path,
        now: i64,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<ImportReport> {
        let specs = parse_records(input, path)?;
        let lines: Vec<usize> = specs.iter().map(|s| s.0).collect();
        let items = specs
            .into_iter()
            .map(|(_, spec, track, retired)| (spec, None, Some(track), retired))
            .collect();
        let (imported, skipped) = self.insert_many(items, now, progress)?;
        self.checkpoint()?;
        Ok(ImportReport {
            version: SCHEMA_VERSION,
            imported,
            merged: 0,
            skipped: skipped
                .into_iter()
                .map(|(idx, id, reason)| SkippedLine {
                    line: lines[idx],
                    id,
                    reason,
                })
                .collect(),
        })
    }

    /// Reads a store metadata value.
    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        self.with_reader(|db| db.meta(key))
    }

    /// Sets a store metadata value.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        lock(&self.writer).write(|w| w.set_meta(key, value))
    }

    fn with_reader<T>(&self, f: impl FnOnce(&Db) -> Result<T>) -> Result<T> {
        let db = lock(&self.readers).pop();
        let db = match db {
            Some(db) => db,
            None => Db::open(&self.config.dir.join("patterns.db"))?,
        };
        let result = f(&db);
        lock(&self.readers).push(db);
        result
    }
}

/// Checks a pattern before it is stored: every field the store relies on
/// ([`PatternSpec::validate`]), and its rewrite compiled as the healer compiles it
/// ([`agency_learn::compile`]). A template that does not parse would be stored but never match;
/// every stored pattern's template is structural (there is no other kind), so every one must
/// compile.
pub fn validate_spec(spec: &PatternSpec) -> Result<()> {
    spec.validate().map_err(|source| Error::Invalid {
        id: spec.id.clone(),
        source,
    })?;
    agency_learn::compile(&spec.rewrite).map_err(|source| Error::Template {
        id: spec.id.clone(),
        source,
    })?;
    Ok(())
}

/// The normalised error context of a pattern: category, rule, message and its first example's
/// before-code.
pub fn signature(spec: &PatternSpec) -> NormalizedContext {
    let example = spec.examples.first();
    // The fault is where the fix changed the code: the first line that differs.
    let fault_line = example.and_then(|e| {
        e.before
            .lines()
            .zip(e.after.lines().chain(std::iter::repeat("")))
            .position(|(b, a)| b != a)
    });
    normalize(&ErrorContext {
        category: Some(spec.category),
        rule: Some(spec.rule.clone()),
        message: spec.message.clone(),
        code: example.map(|e| e.before.clone()),
        fault_line,
    })
}

fn example_doc(e: Example) -> ExampleDoc {
    ExampleDoc {
        before: e.before,
        after: e.after,
        source: e.source.as_str().to_string(),
    }
}

fn record_of(row: &PatternRow, examples: &[Example]) -> PatternRecord {
    PatternRecord {
        version: SCHEMA_VERSION,
        id: row.id.clone(),
        category: row.category.as_str().to_string(),
        rule: row.rule.clone(),
        title: row.title.clone(),
        message: row.message.clone(),
        explanation: row.explanation.clone(),
        applicability: row.applicability.as_str().to_string(),
        before: row.rewrite.before.clone(),
        after: row.rewrite.after.clone(),
        examples: examples.iter().cloned().map(example_doc).collect(),
        source: row.source.as_str().to_string(),
        prior: Prior {
            successes: row.track.prior_successes,
            failures: row.track.prior_failures,
        },
        successes: row.track.successes,
        failures: row.track.failures,
        decayed_successes: row.track.decayed_successes,
        decayed_failures: row.track.decayed_failures,
        as_of: row.track.as_of,
        created_at: row.created_at,
        retired: row.retired.as_ref().map(|(at, reason)| RecordRetirement {
            at: *at,
            reason: reason.clone(),
        }),
    }
}

type ParsedRecord = (usize, PatternSpec, TrackRecord, Option<(i64, String)>);

/// Parses and validates every line of an export; the first problem is an error with its line.
fn parse_records(input: &mut dyn BufRead, path: &Path) -> Result<Vec<ParsedRecord>> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut line_no = 0;
    loop {
        buf.clear();
        let n = input
            .read_until(b'\n', &mut buf)
            .map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let line_err = |message: String| Error::Line {
            path: path.to_path_buf(),
            line: line_no,
            message,
        };
        let text = std::str::from_utf8(&buf).map_err(|e| {
            line_err(format!(
                "not valid UTF-8 ({e}); export files are UTF-8 JSON lines"
            ))
        })?;
        if text.trim().is_empty() {
            continue;
        }
        let record: PatternRecord = serde_json::from_str(text)
            .map_err(|e| line_err(format!("invalid pattern record: {e}")))?;
        if record.version > SCHEMA_VERSION {
            return Err(line_err(format!(
                "record version {} is newer than this agency supports ({SCHEMA_VERSION}); upgrade agency",
                record.version
            )));
        }
        let parsed = spec_of(&record).map_err(line_err)?;
        out.push((line_no, parsed.0, parsed.1, parsed.2));
    }
    Ok(out)
}

fn spec_of(r: &PatternRecord) -> std::result::Result<ParsedSpec, String> {
    let category: Category = r
        .category
        .parse()
        .map_err(|e: agency_core::category::UnknownCategory| e.to_string())?;
    let applicability: Applicability = r
        .applicability
        .parse()
        .map_err(|e: agency_core::pattern::PatternError| e.to_string())?;
    let source: Source = r
        .source
        .parse()
        .map_err(|e: agency_core::pattern::PatternError| e.to_string())?;
    let mut examples = Vec::new();
    for e in &r.examples {
        examples.push(Example {
            before: e.before.clone(),
            after: e.after.clone(),
            source: e
                .source
                .parse()
                .map_err(|e: agency_core::pattern::PatternError| e.to_string())?,
        });
    }
    let spec = PatternSpec {
        id: r.id.clone(),
        category,
        rule: r.rule.clone(),
        title: r.title.clone(),
        message: r.message.clone(),
        explanation: r.explanation.clone(),
        applicability,
        rewrite: Rewrite {
            before: r.before.clone(),
            after: r.after.clone(),
        },
        examples,
        source,
        prior: (r.prior.successes, r.prior.failures),
    };
    spec.validate()
        .map_err(|e| format!("pattern `{}`: {e}", r.id))?;
    agency_learn::compile(&spec.rewrite).map_err(|e| format!("pattern `{}`: {e}", r.id))?;
    const MAX_COUNT: u32 = 1_000_000_000;
    const MAX_UNIX_S: i64 = 253_402_300_799; // 9999-12-31
    if r.successes > MAX_COUNT || r.failures > MAX_COUNT {
        return Err(format!(
            "pattern `{}`: outcome counts above {MAX_COUNT}",
            r.id
        ));
    }
    if !(0..=MAX_UNIX_S).contains(&r.as_of) || !(0..=MAX_UNIX_S).contains(&r.created_at) {
        return Err(format!(
            "pattern `{}`: as_of and created_at must be unix seconds",
            r.id
        ));
    }
    let finite = [
        r.prior.successes,
        r.prior.failures,
        r.decayed_successes,
        r.decayed_failures,
    ];
    if finite.iter().any(|x| !x.is_finite() || *x < 0.0) {
        return Err(format!(
            "pattern `{}`: counts must be finite and not negative",
            r.id
        ));
    }
    let track = TrackRecord {
        prior_successes: r.prior.successes,
        prior_failures: r.prior.failures,
        successes: r.successes,
        failures: r.failures,
        decayed_successes: r.decayed_successes,
        decayed_failures: r.decayed_failures,
        as_of: r.as_of,
    };
    let retired = r.retired.as_ref().map(|x| (x.at, x.reason.clone()));
    Ok((spec, track, retired))
}

/// From this many patterns on, re-embedding after a model change says so as it goes.
const REEMBED_NOTICE: usize = 2_000;

fn reembed_if_model_changed(
    db: &mut Db,
    embedder: &Embedder,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let models = db.embedding_models()?;
    if models.iter().all(|m| m == embedder.model_id()) {
        return Ok(());
    }
    let stale: Vec<PatternRow> = db.rows()?.into_iter().collect();
    warnings.push(format!(
        "the embedding model changed ({} -> {}); re-embedding {} patterns",
        models.join(", "),
        embedder.model_id(),
        stale.len()
    ));
    // Said now, not only among the open's warnings: a large store takes minutes (about 2.5 ms
    // a pattern), once.
    if stale.len() >= REEMBED_NOTICE {
        tracing::warn!(
            "the embedding model changed: re-embedding {} patterns once before the store opens",
            stale.len()
        );
    }
    let mut vectors = Vec::with_capacity(stale.len());
    let step = (stale.len() / 10).max(1);
    for (done, row) in stale.iter().enumerate() {
        vectors.push((row.pk, embedder.embed(&row.signature)?.vector));
        if stale.len() >= REEMBED_NOTICE && (done + 1) % step == 0 {
            tracing::warn!("re-embedded {} of {} patterns", done + 1, stale.len());
        }
    }
    db.write(|w| {
        for (pk, v) in &vectors {
            w.set_embedding(*pk, v, embedder.model_id())?;
        }
        Ok(())
    })?;
    // The graph on disk holds old vectors; drop it so it is rebuilt.
    Ok(())
}

fn open_text_index(db: &Db, dir: &Path, warnings: &mut Vec<String>) -> Result<TextIndex> {
    let store_id = db.store_id()?;
    let max_pk = db.max_pk()?;
    let opened = TextIndex::open(dir).and_then(|t| {
        // An index of another database (a restored or replaced file) is as good as damaged.
        let owner = t.recorded_owner()?;
        let covered = t.indexed_up_to()?;
        if owner.as_deref().is_some_and(|o| o != store_id) || covered > max_pk {
            return Err(Error::index(dir, "it was built from another database"));
        }
        Ok(t)
    });
    let text = match opened {
        Ok(t) => t,
        Err(e) => {
            if dir.exists() {
                warnings.push(format!(
                    "text index is damaged ({e}); rebuilding it from the database"
                ));
            }
            TextIndex::create(dir)?
        }
    }
    .with_owner(&store_id);
    let after = text.indexed_up_to()?;
    let missing: Vec<TextFields> = db.text_fields_after(after)?;
    if !missing.is_empty() {
        let docs: Vec<TextDoc<'_>> = missing
            .iter()
            .map(|f| TextDoc {
                pk: f.pk,
                category: &f.category,
                rule: &f.rule,
                message: &f.message,
                code: &f.code,
            })
            .collect();
        match text.add(&docs) {
            Ok(()) => {}
            Err(e @ Error::Locked { .. }) => warnings.push(format!(
                "{e}; {} new patterns are found by vector search only until it catches up",
                docs.len()
            )),
            Err(e) => return Err(e),
        }
    }
    Ok(text)
}

fn read_manifest(index_dir: &Path, warnings: &mut Vec<String>) -> Option<Manifest> {
    let path = index_dir.join("manifest.json");
    let bytes = fs::read(&path).ok()?;
    match serde_json::from_slice::<Manifest>(&bytes) {
        Ok(m) if m.version == MANIFEST_VERSION => Some(m),
        Ok(m) => {
            warnings.push(format!(
                "{} has version {}, expected {MANIFEST_VERSION}; rebuilding the vector index",
                path.display(),
                m.version
            ));
            None
        }
        Err(e) => {
            warnings.push(format!(
                "{} is damaged ({e}); rebuilding the vector index from the database",
                path.display()
            ));
            None
        }
    }
}

/// Loads or rebuilds the vector index; returns it, its highest key, and whether it differs from
/// what is saved on disk.
fn open_vector_index(
    db: &Db,
    config: &StoreConfig,
    table: &Table,
    manifest: Option<&Manifest>,
    model_id: &str,
    warnings: &mut Vec<String>,
) -> Result<(VectorIndex, u64, bool)> {
    let live = |pk: &u64| table.metas.get(*pk).is_some_and(|m| !m.retired);
    let max_pk = table.metas.keys().max().unwrap_or(0);
    if table.live <= config.vector.exact_threshold {
        // Small: an exact scan is faster than a graph, and loading it is cheap.
        let (ids, data) = db.embeddings_flat_after(0, DIM, &|pk| live(&pk))?;
        let had_graph = manifest.is_some_and(|m| m.graph.is_some());
        return Ok((
            VectorIndex::build_flat(&ids, &data, config.vector),
            max_pk,
            had_graph,
        ));
    }
    let index_dir = config.dir.join("index");
    let store_id = db.store_id()?;
    let loaded = manifest
        .filter(|m| m.model_id == model_id && m.store_id == store_id)
        .and_then(|m| m.graph.as_ref())
        .filter(|g| g.max_pk <= max_pk)
        .map(|g| {
            Graph::load(
                &index_dir.join(&g.dir),
                &g.basename,
                &g.files,
                config.vector,
            )
            .map(|graph| (graph, g.max_pk))
        });
    match loaded {
        Some(Ok((graph, _))) => {
            // Every live pattern the saved graph lacks, whatever its key: the highest key a
            // graph holds does not mean it holds every key below (concurrent learns index out
            // of order, and another process may have added rows before this one saved).
            let mut missing = Vec::new();
            for pk in table.metas.keys() {
                if live(&pk)
                    && !graph.contains(pk)
                    && let Some(v) = db.embedding(pk, DIM)?
                {
                    missing.push((pk, v));
                }
            }
            let n_missing = missing.len();
            let batch: Vec<(u64, &[f32])> =
                missing.iter().map(|(pk, v)| (*pk, v.as_slice())).collect();
            graph.insert_batch(&batch);
            let index = VectorIndex::Graph(graph);
            let tombstones = index.len().saturating_sub(table.live);
            if tombstones as f64 / index.len().max(1) as f64 > TOMBSTONE_REBUILD_FRACTION {
                return rebuild_vectors(db, config, &live, max_pk);
            }
            Ok((index, max_pk, n_missing > 0))
        }
        Some(Err(e)) => {
            warnings.push(format!(
                "vector index is damaged ({e}); rebuilding it from the database"
            ));
            rebuild_vectors(db, config, &live, max_pk)
        }
        None => {
            if manifest.is_some() || index_dir.exists() {
                warnings.push(
                    "vector index is missing or stale; rebuilding it from the database".into(),
                );
            }
            rebuild_vectors(db, config, &live, max_pk)
        }
    }
}

fn rebuild_vectors(
    db: &Db,
    config: &StoreConfig,
    live: &dyn Fn(&u64) -> bool,
    max_pk: u64,
) -> Result<(VectorIndex, u64, bool)> {
    let (ids, data) = db.embeddings_flat_after(0, DIM, &|pk| live(&pk))?;
    Ok((
        VectorIndex::build_flat(&ids, &data, config.vector),
        max_pk,
        true,
    ))
}

fn remove_stale_graphs(index_dir: &Path, keep: Option<&str>) {
    let Ok(entries) = fs::read_dir(index_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("graph-") && Some(name.as_ref()) != keep {
            // A stale generation only costs disk; failing to delete it is not an error.
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}-{nanos}", std::process::id())
}

impl PatternStore {
    /// Records what heals did with their findings (one transaction); returns how many were
    /// new (a repeated idempotency key counts once).
    pub fn record_heals(&self, heals: &[crate::db::HealEvent], at: i64) -> Result<usize> {
        let mut db = lock(&self.writer);
        db.write(|w| {
            let mut added = 0;
            for h in heals {
                if w.insert_heal(h, at)? {
                    added += 1;
                }
            }
            Ok(added)
        })
    }

    /// Heal counts per category since `since`, read from the database (heals recorded by
    /// other processes count too).
    pub fn heal_counts_since(&self, since: i64) -> Result<Vec<(String, crate::db::HealCounts)>> {
        self.with_reader(|db| db.heal_counts_since(since))
    }

    /// How well confidence predicted success: every recorded outcome replayed with this store's
    /// confidence parameters ([`crate::calibration::replay`]), read from the database so that
    /// outcomes written by other processes count too.
    pub fn calibration(&self) -> Result<Calibration> {
        let histories = self.with_reader(Db::outcome_histories)?;
        Ok(crate::calibration::replay(
            &histories,
            &self.config.confidence,
        ))
    }

    /// Outcomes recorded at or after `since` (unix seconds): `(total, successes)`, read from
    /// the database so that outcomes written by other processes count too.
    pub fn outcome_totals_since(&self, since: i64) -> Result<(u64, u64)> {
        self.with_reader(|db| db.outcome_totals_since(since))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    use crate::test_support::embedder;

    const NOW: i64 = 1_795_000_000;

    fn spec(
        id: &str,
        category: Category,
        rule: &str,
        message: &str,
        before: &str,
        after: &str,
    ) -> PatternSpec {
        PatternSpec {
            id: id.into(),
            category,
            rule: rule.into(),
            title: format!("title of {id}"),
            message: message.into(),
            explanation: String::new(),
            applicability: Applicability::Safe,
            rewrite: Rewrite {
                before: before.into(),
                after: after.into(),
            },
            examples: vec![Example {
                before: format!("x = {before}"),
                after: format!("x = {after}"),
                source: Source::Seed,
            }],
            source: Source::Seed,
            prior: (0.0, 0.0),
        }
    }

    fn open(dir: &Path) -> PatternStore {
        PatternStore::open(StoreConfig::new(dir), embedder()).unwrap()
    }

    fn q(text: &str) -> Query<'_> {
        Query {
            text,
            category: None,
            rule: None,
            k: 5,
            min_confidence: None,
            now: NOW,
        }
    }

    fn ids(r: &QueryResponse) -> Vec<&str> {
        r.matches.iter().map(|m| m.id.as_str()).collect()
    }

    fn small_store(dir: &Path) -> PatternStore {
        let store = open(dir);
        let specs = [
            spec(
                "runtime-none-group",
                Category::Runtime,
                "none-attribute",
                "AttributeError: 'NoneType' object has no attribute 'group'",
                "re.match(?p, ?s).group(?n)",
                "(m.group(?n) if (m := re.match(?p, ?s)) else None)",
            ),
            spec(
                "type-optional-strip",
                Category::Type,
                "union-attr",
                "Item \"None\" of \"Optional[str]\" has no attribute \"strip\"",
                "?x.strip()",
                "(?x or \"\").strip()",
            ),
            spec(
                "security-sql-format",
                Category::Security,
                "B608",
                "Possible SQL injection vector through string-based query construction.",
                "?c.execute(f\"SELECT * FROM t WHERE id = {?v}\")",
                "?c.execute(\"SELECT * FROM t WHERE id = %s\", (?v,))",
            ),
            spec(
                "style-none-comparison",
                Category::Style,
                "E711",
                "Comparison to `None` should be `cond is None`",
                "?x == None",
                "?x is None",
            ),
        ];
        for s in &specs {
            store.learn(s, NOW).unwrap();
        }
        store
    }

    #[test]
    fn differently_worded_none_errors_find_each_other_above_unrelated_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = small_store(dir.path());
        let a = store
            .query(&q(
                "'NoneType' object has no attribute 'lower' when the config key is missing",
            ))
            .unwrap();
        let pos = |r: &QueryResponse, id: &str| ids(r).iter().position(|x| *x == id).unwrap();
        assert!(
            pos(&a, "runtime-none-group") < pos(&a, "security-sql-format"),
            "{:?}",
            ids(&a)
        );
        assert!(
            pos(&a, "type-optional-strip") < pos(&a, "security-sql-format"),
            "{:?}",
            ids(&a)
        );
        let b = store
            .query(&q(
                "mypy: Item None of Optional[Match[str]] has no attribute group",
            ))
            .unwrap();
        assert!(
            pos(&b, "runtime-none-group") < pos(&b, "security-sql-format"),
            "{:?}",
            ids(&b)
        );
        let sql = store
            .query(&q("SQL injection: query built with an f-string"))
            .unwrap();
        assert_eq!(ids(&sql)[0], "security-sql-format");
    }

    #[test]
    fn a_repeated_query_is_embedded_once_and_answered_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let store = small_store(dir.path());
        let text = "AttributeError: 'NoneType' object has no attribute 'group'";
        let first = store.query(&q(text)).unwrap();
        assert_eq!(store.query_cache_hits(), 0);
        // With a confidence filter the candidates are searched again, the embedding reused.
        let filtered = store
            .query(&Query {
                min_confidence: Some(0.0),
                ..q(text)
            })
            .unwrap();
        assert_eq!(store.query_cache_hits(), 1);
        assert_eq!(ids(&filtered), ids(&first));
        let second = store.query(&q(text)).unwrap();
        assert_eq!(store.candidate_cache_hits(), 1);
        assert_eq!(first.matches, second.matches);
    }

    #[test]
    fn cached_candidates_follow_learning_and_retirement_but_not_outcomes() {
        let dir = tempfile::tempdir().unwrap();
        let store = small_store(dir.path());
        let text = "TypeError: 'NoneType' object is not subscriptable";
        let first = store.query(&q(text)).unwrap();
        assert!(!ids(&first).contains(&"runtime-none-subscript"));

        // An outcome changes confidence, not the candidates: still a hit, new confidence shown.
        let outcome = store
            .record_outcome(&OutcomeInput {
                pattern_id: ids(&first)[0].to_string(),
                success: false,
                finding: None,
                duration_ms: None,
                idempotency_key: None,
                at: NOW,
            })
            .unwrap();
        let after_outcome = store.query(&q(text)).unwrap();
        assert_eq!(store.candidate_cache_hits(), 1);
        assert_eq!(ids(&after_outcome), ids(&first));
        assert!((after_outcome.matches[0].confidence - outcome.confidence).abs() < 1e-9);

        // A new pattern voids the cache and is found at once.
        store
            .learn(
                &spec(
                    "runtime-none-subscript",
                    Category::Runtime,
                    "none-subscript",
                    "TypeError: 'NoneType' object is not subscriptable",
                    "?d.get(?k)[?i]",
                    "(?d.get(?k) or {})[?i]",
                ),
                NOW,
            )
            .unwrap();
        let learned = store.query(&q(text)).unwrap();
        assert_eq!(store.candidate_cache_hits(), 1);
        assert_eq!(ids(&learned)[0], "runtime-none-subscript");

        // A retired pattern disappears from the next answer.
        store.retire("runtime-none-subscript", "test", NOW).unwrap();
        let retired = store.query(&q(text)).unwrap();
        assert!(!ids(&retired).contains(&"runtime-none-subscript"));
        assert_eq!(store.candidate_cache_hits(), 1);
    }

    #[test]
    fn the_query_cache_is_bounded() {
        let mut cache: Recent<String, crate::embed::Embedding> = Recent::default();
        let e = crate::embed::Embedding {
            vector: vec![0.0; 2],
            tokens: 1,
            truncated: false,
        };
        for i in 0..QUERY_CACHE_ENTRIES + 10 {
            cache.put(format!("q{i}"), e.clone());
        }
        assert_eq!(cache.entries.len(), QUERY_CACHE_ENTRIES);
        assert!(cache.get_if("q0", |_| true).is_none());
        assert!(
            cache
                .get_if(format!("q{}", QUERY_CACHE_ENTRIES + 9).as_str(), |_| true)
                .is_some()
        );
    }

    #[test]
    fn unknown_errors_score_low_and_known_ones_high() {
        let dir = tempfile::tempdir().unwrap();
        let store = small_store(dir.path());
        let unknown = store
            .query(&q(
                "the coffee machine on the third floor has run out of beans",
            ))
            .unwrap();
        let best_unknown = unknown.matches.iter().map(|m| m.score).fold(0.0, f64::max);
        let known = store
            .query(&q(
                "AttributeError: 'NoneType' object has no attribute 'group'",
            ))
            .unwrap();
        assert_eq!(known.matches[0].id, "runtime-none-group");
        assert!(best_unknown < 0.35, "unrelated text scored {best_unknown}");
        assert!(known.matches[0].score > 0.6, "{}", known.matches[0].score);
    }

    #[test]
    fn filters_hold() {
        let dir = tempfile::tempdir().unwrap();
        let store = small_store(dir.path());
        let by_category = store
            .query(&Query {
                category: Some(Category::Security),
                ..q("NoneType has no attribute")
            })
            .unwrap();
        assert_eq!(ids(&by_category), ["security-sql-format"]);
        let by_rule = store
            .query(&Query {
                rule: Some("E711"),
                ..q("anything at all")
            })
            .unwrap();
        assert_eq!(ids(&by_rule), ["style-none-comparison"]);
        let confident = store
            .query(&Query {
                min_confidence: Some(0.6),
                ..q("NoneType has no attribute")
            })
            .unwrap();
        assert!(confident.matches.is_empty());
        for _ in 0..3 {
            store
                .record_outcome(&OutcomeInput {
                    pattern_id: "style-none-comparison".into(),
                    success: true,
                    finding: None,
                    duration_ms: None,
                    idempotency_key: None,
                    at: NOW,
                })
                .unwrap();
        }
        let confident = store
            .query(&Query {
                min_confidence: Some(0.6),
                ..q("NoneType has no attribute")
            })
            .unwrap();
        assert_eq!(ids(&confident), ["style-none-comparison"]);
    }

    #[test]
    fn refinement_merges_the_same_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let store = small_store(dir.path());
        let mut healed = spec(
            "style-e711-learned",
            Category::Style,
            "E711",
            "Comparison to `None` should be `cond is None`",
            "?x  ==  None",
            "?x is None",
        );
        healed.source = Source::Heal;
        healed.examples[0].before = "if user == None:\n    pass".into();
        healed.examples[0].after = "if user is None:\n    pass".into();
        let learned = store.learn(&healed, NOW).unwrap();
        assert_eq!(
            learned,
            Learned::Merged {
                id: "style-none-comparison".into()
            }
        );
        let view = store.show("style-none-comparison", NOW).unwrap();
        assert_eq!(view.support, 2);
        assert_eq!(view.examples.len(), 2);
        assert_eq!(view.successes, 1);
        assert_eq!(store.live_count(), 4);
    }

    #[test]
    fn a_pattern_learned_from_a_heal_starts_with_its_success() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let mut healed = spec(
            "style-f541-learned",
            Category::Style,
            "F541",
            "f-string without any placeholders",
            "f?s",
            "?s",
        );
        healed.source = Source::Heal;
        assert_eq!(
            store.learn(&healed, NOW).unwrap(),
            Learned::Inserted {
                id: "style-f541-learned".into()
            }
        );
        let view = store.show("style-f541-learned", NOW).unwrap();
        assert_eq!((view.successes, view.failures, view.support), (1, 0, 1));
        assert!((view.confidence - 2.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn failing_patterns_are_retired_and_never_relearned() {
        let dir = tempfile::tempdir().unwrap();
        let store = small_store(dir.path());
        let mut last = None;
        for i in 0..5 {
            last = Some(
                store
                    .record_outcome(&OutcomeInput {
                        pattern_id: "type-optional-strip".into(),
                        success: false,
                        finding: Some("{\"rule\":\"union-attr\"}".into()),
                        duration_ms: Some(10),
                        idempotency_key: Some(format!("k{i}")),
                        at: NOW,
                    })
                    .unwrap(),
            );
        }
        let last = last.unwrap();
        assert!(last.retired.is_some());
        assert!(!last.auto_apply);
        let r = store
            .query(&q("Item None of Optional[str] has no attribute strip"))
            .unwrap();
        assert!(!ids(&r).contains(&"type-optional-strip"));
        let again = spec(
            "type-optional-strip-again",
            Category::Type,
            "union-attr",
            "Item \"None\" of \"Optional[str]\" has no attribute \"strip\"",
            "?x.strip()",
            "(?x or \"\").strip()",
        );
        assert!(matches!(
            store.learn(&again, NOW),
            Err(Error::Retired { .. })
        ));
        let view = store.show("type-optional-strip", NOW).unwrap();
        assert!(view.retired.is_some());
        assert_eq!(view.failures, 5);
    }

    #[test]
    fn prune_reports_what_it_retired_and_why() {
        let dir = tempfile::tempdir().unwrap();
        {
            // Mixed results stay above the default bar, so nothing retires on the way.
            let store = open(dir.path());
            store
                .learn(
                    &spec(
                        "style-x",
                        Category::Style,
                        "E712",
                        "Avoid equality comparisons to `True`",
                        "?x == True",
                        "?x",
                    ),
                    NOW,
                )
                .unwrap();
            for (i, ok) in [true, false, true, false, false].into_iter().enumerate() {
                let r = store
                    .record_outcome(&OutcomeInput {
                        pattern_id: "style-x".into(),
                        success: ok,
                        finding: None,
                        duration_ms: None,
                        idempotency_key: Some(format!("o{i}")),
                        at: NOW,
                    })
                    .unwrap();
                assert!(r.retired.is_none());
            }
            assert!(store.prune(NOW).unwrap().retired.is_empty());
        }
        // A stricter policy applied on demand retires it, and says why.
        let params = ConfidenceParams {
            retire_below_upper: 0.9,
            ..ConfidenceParams::default()
        };
        let store = PatternStore::open(
            StoreConfig {
                confidence: params,
                ..StoreConfig::new(dir.path())
            },
            embedder(),
        )
        .unwrap();
        let report = store.prune(NOW).unwrap();
        assert_eq!(report.checked, 1);
        let retired: Vec<_> = report.retired.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(retired, ["style-x"]);
        assert!(
            report.retired[0].reason.contains("3 of 5 attempts failed"),
            "{}",
            report.retired[0].reason
        );
        assert_eq!(store.live_count(), 0);
        assert!(store.prune(NOW).unwrap().retired.is_empty());
    }

    #[test]
    fn idempotency_keys_count_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = small_store(dir.path());
        let o = OutcomeInput {
            pattern_id: "style-none-comparison".into(),
            success: true,
            finding: None,
            duration_ms: None,
            idempotency_key: Some("same".into()),
            at: NOW,
        };
        assert!(store.record_outcome(&o).unwrap().recorded);
        let second = store.record_outcome(&o).unwrap();
        assert!(!second.recorded);
        assert_eq!(second.successes, 1);
    }

    #[test]
    fn idempotency_keys_are_per_pattern() {
        let dir = tempfile::tempdir().unwrap();
        let store = small_store(dir.path());
        for id in ["style-none-comparison", "security-sql-format"] {
            let r = store
                .record_outcome(&OutcomeInput {
                    pattern_id: id.into(),
                    success: true,
                    finding: None,
                    duration_ms: None,
                    idempotency_key: Some("finding-42".into()),
                    at: NOW,
                })
                .unwrap();
            assert!(r.recorded, "{id}");
            assert_eq!(r.successes, 1);
        }
    }

    #[test]
    fn indexes_of_a_replaced_database_are_rebuilt() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        drop(small_store(a.path()));
        {
            // Another database whose first key holds a different pattern.
            let other = open(b.path());
            other
                .learn(
                    &spec(
                        "perf-sorted-min",
                        Category::Performance,
                        "AGY305",
                        "sorted() is used to take the smallest item",
                        "sorted(?x)[0]",
                        "min(?x)",
                    ),
                    NOW,
                )
                .unwrap();
        }
        for suffix in ["", "-wal", "-shm"] {
            let name = format!("patterns.db{suffix}");
            let _ = fs::remove_file(a.path().join(&name));
            if b.path().join(&name).exists() {
                fs::copy(b.path().join(&name), a.path().join(&name)).unwrap();
            }
        }
        let store = open(a.path());
        assert!(
            store
                .warnings()
                .iter()
                .any(|w| w.contains("another database")),
            "{:?}",
            store.warnings()
        );
        let r = store
            .query(&q(
                "AttributeError: 'NoneType' object has no attribute 'group'",
            ))
            .unwrap();
        assert_eq!(ids(&r), ["perf-sorted-min"]);
    }

    #[test]
    fn deleted_or_damaged_indexes_are_rebuilt_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        drop(small_store(dir.path()));
        fs::remove_dir_all(dir.path().join("index")).unwrap();
        let store = open(dir.path());
        assert_eq!(store.live_count(), 4);
        assert_eq!(
            ids(&store.query(&q("sql injection")).unwrap())[0],
            "security-sql-format"
        );
        drop(store);
        fs::write(dir.path().join("index/text/meta.json"), b"garbage").unwrap();
        let store = open(dir.path());
        assert!(
            store
                .warnings()
                .iter()
                .any(|w| w.contains("text index is damaged")),
            "{:?}",
            store.warnings()
        );
        assert_eq!(
            ids(&store.query(&q("sql injection")).unwrap())[0],
            "security-sql-format"
        );
    }

    #[test]
    fn rows_committed_before_a_crash_reach_the_indexes_at_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        drop(small_store(dir.path()));
        // A process that died right after its commit, before updating any index.
        let extra = spec(
            "security-yaml-load",
            Category::Security,
            "B506",
            "Use of unsafe yaml load. Allows instantiation of arbitrary objects.",
            "yaml.load(?f)",
            "yaml.safe_load(?f)",
        );
        let sig = signature(&extra);
        let vector = embedder().embed(&sig.text).unwrap().vector;
        let mut db = Db::open(&dir.path().join("patterns.db")).unwrap();
        db.write(|w| {
            w.insert(&NewRow {
                spec: &extra,
                signature: &sig.text,
                sig_message: &sig.message,
                sig_code: &sig.code,
                embedding: &vector,
                model: "test-model",
                track: TrackRecord::with_prior(0.0, 0.0, NOW),
                support: 1,
                created_at: NOW,
                retired: None,
            })
        })
        .unwrap();
        drop(db);
        let store = open(dir.path());
        assert_eq!(store.live_count(), 5);
        let by_text = store
            .text
            .search("unsafe yaml load arbitrary objects", None, None, 5)
            .unwrap();
        assert!(!by_text.is_empty(), "the text index caught up");
        let r = store
            .query(&q("yaml.load allows arbitrary objects"))
            .unwrap();
        assert_eq!(r.matches[0].id, "security-yaml-load");
        assert_eq!(r.matches[0].retrieval.vector_rank, Some(1));
    }

    #[test]
    fn graph_mode_persists_catches_up_and_drops_tombstones() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            vector: VectorParams {
                exact_threshold: 3,
                ..VectorParams::default()
            },
            ..StoreConfig::new(dir.path())
        };
        {
            let store = PatternStore::open(config.clone(), embedder()).unwrap();
            let specs = crate::seed::library().unwrap();
            let items = specs.into_iter().map(|s| (s, None, None, None)).collect();
            store.insert_many(items, NOW, &mut |_, _| {}).unwrap();
            store.checkpoint().unwrap();
            assert_eq!(store.query(&q("x")).unwrap().stats.method, "hnsw");
        }
        let manifest = fs::read_to_string(dir.path().join("index/manifest.json")).unwrap();
        assert!(manifest.contains("graph-"), "{manifest}");
        let store = PatternStore::open(config.clone(), embedder()).unwrap();
        assert!(store.warnings().is_empty(), "{:?}", store.warnings());
        let r = store
            .query(&q(
                "AttributeError: 'NoneType' object has no attribute 'group'",
            ))
            .unwrap();
        assert_eq!(r.matches[0].category, "runtime", "{:?}", ids(&r));
        // A rule filter passes few patterns: they are scanned, not searched through the graph.
        let by_rule = store
            .query(&Query {
                rule: Some("E711"),
                ..q("comparison to None should use is")
            })
            .unwrap();
        assert_eq!(by_rule.stats.method, "exact");
        assert!(!by_rule.matches.is_empty());
        assert!(
            by_rule.matches.iter().all(|m| m.rule == "E711"),
            "{:?}",
            ids(&by_rule)
        );
        // Retire most patterns: the graph is rebuilt without them, and they never come back.
        let all = store.list(NOW, false).unwrap();
        for p in all.iter().skip(3) {
            store.retire(&p.id, "test", NOW).unwrap();
        }
        assert_eq!(store.live_count(), 3);
        let r = store
            .query(&Query {
                k: 10,
                ..q("NoneType")
            })
            .unwrap();
        assert_eq!(r.matches.len(), 3);
        assert_eq!(r.stats.method, "exact");
    }

    #[test]
    fn a_graph_saved_by_one_process_gains_the_rows_another_added_below_its_highest_key() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            vector: VectorParams {
                exact_threshold: 3,
                ..VectorParams::default()
            },
            ..StoreConfig::new(dir.path())
        };
        let specs = crate::seed::library().unwrap();
        let items = |range: std::ops::Range<usize>| {
            specs[range]
                .iter()
                .map(|s| (s.clone(), None, None, None))
                .collect::<Vec<_>>()
        };
        let a = PatternStore::open(config.clone(), embedder()).unwrap();
        a.insert_many(items(0..10), NOW, &mut |_, _| {}).unwrap();
        a.checkpoint().unwrap();
        // Another process adds rows 11-20 while this one runs, then this one adds row 21 and
        // saves its graph, which lacks 11-20, as covering everything up to 21.
        {
            let b = PatternStore::open(config.clone(), embedder()).unwrap();
            b.insert_many(items(10..20), NOW, &mut |_, _| {}).unwrap();
            b.checkpoint().unwrap();
        }
        a.insert_many(items(20..21), NOW, &mut |_, _| {}).unwrap();
        a.checkpoint().unwrap();
        assert_eq!(read(&a.vectors).len(), 11);
        drop(a);

        let c = PatternStore::open(config, embedder()).unwrap();
        assert_eq!(c.live_count(), 21);
        assert_eq!(read(&c.vectors).method(), crate::vector::Method::Hnsw);
        assert_eq!(
            read(&c.vectors).len(),
            21,
            "every live row is searchable by vector"
        );
        let added_by_b = &specs[15];
        let found = read(&c.vectors).search(
            &c.embedder
                .embed(&signature(added_by_b).text)
                .unwrap()
                .vector,
            1,
            None,
        );
        let pk = c
            .with_reader(|db| db.row_by_fingerprint(&added_by_b.fingerprint()))
            .unwrap()
            .unwrap()
            .pk;
        assert_eq!(found[0].0, pk);
    }

    #[test]
    fn bad_queries_are_clear_errors_or_notes() {
        let dir = tempfile::tempdir().unwrap();
        let store = small_store(dir.path());
        assert!(matches!(store.query(&q("   ")), Err(Error::EmptyQuery)));
        let huge = "AttributeError: 'NoneType' object has no attribute 'group' ".repeat(400);
        let r = store.query(&q(&huge)).unwrap();
        assert!(r.query.truncated);
        assert_eq!(r.matches[0].id, "runtime-none-group");
    }

    #[test]
    fn a_template_that_does_not_parse_is_refused_wherever_patterns_are_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = small_store(dir.path());
        let mut exported = Vec::new();
        store.export(&mut exported, Path::new("x.jsonl")).unwrap();
        let text = String::from_utf8(exported).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        // The third line (export order is by id) is `?x == None` -> `?x is None`.
        let mut broken: serde_json::Value = serde_json::from_str(&lines[2]).unwrap();
        let id = broken["id"].as_str().unwrap().to_string();
        assert_eq!(broken["before"], "?x == None");
        broken["before"] = "def (?x == None".into();
        lines[2] = broken.to_string();
        let input = lines.join("\n");

        // Import: the line, the pattern and the parse error are named; nothing is imported.
        let other = tempfile::tempdir().unwrap();
        let fresh = open(other.path());
        let err = fresh
            .import(
                &mut input.as_bytes(),
                Path::new("in.jsonl"),
                NOW,
                &mut |_, _| {},
            )
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("in.jsonl:3: ")
                && err.contains(&format!("pattern `{id}`"))
                && err.contains("`def (?x == None` does not parse"),
            "{err}"
        );
        assert_eq!(fresh.live_count(), 0);
        assert!(fresh.list(NOW, true).unwrap().is_empty());

        // Learning and bulk inserts refuse it too, with the template's error as the source.
        let mut bad = spec(
            "style-broken",
            Category::Style,
            "E711",
            "Comparison to `None` should be `cond is None`",
            "def (?x == None",
            "?x is None",
        );
        let err = fresh.learn(&bad, NOW).unwrap_err();
        assert!(
            matches!(&err, Error::Template { id, source: agency_learn::Error::Template { .. } } if id == "style-broken"),
            "{err:?}"
        );
        let err = fresh
            .insert_many(vec![(bad.clone(), None, None, None)], NOW, &mut |_, _| {})
            .unwrap_err();
        assert!(matches!(err, Error::Template { .. }), "{err:?}");
        assert_eq!(fresh.live_count(), 0);

        // The same pattern with a template that parses is stored.
        bad.rewrite.before = "?x == None".into();
        validate_spec(&bad).unwrap();
        fresh.learn(&bad, NOW).unwrap();
        assert_eq!(fresh.live_count(), 1);
    }

    #[test]
    fn calibration_replays_the_confidence_each_outcome_was_recorded_at() {
        use crate::calibration::BUCKET_EDGES;
        let dir = tempfile::tempdir().unwrap();
        let store = small_store(dir.path());
        assert_eq!(store.calibration().unwrap().outcomes, 0);
        assert_eq!(store.calibration().unwrap().calibrated(), None);
        // 12 successes, then failures: what the store itself said before each outcome is the
        // bucket the replay must put it in.
        let mut expected = vec![(0_u64, 0_u64); BUCKET_EDGES.len()];
        for idx in 0..18_i64 {
            let at = NOW + idx * 3_600;
            let success = idx < 12;
            let confidence = store.show("style-none-comparison", at).unwrap().confidence;
            let bucket = BUCKET_EDGES
                .iter()
                .rposition(|edge| confidence >= *edge)
                .unwrap();
            expected[bucket].0 += 1;
            expected[bucket].1 += u64::from(success);
            let outcome = OutcomeInput {
                pattern_id: "style-none-comparison".into(),
                success,
                finding: None,
                duration_ms: None,
                idempotency_key: Some(format!("k{idx}")),
                at,
            };
            assert!(store.record_outcome(&outcome).unwrap().recorded);
            // A repeated key is not an outcome, for the replay either.
            assert!(!store.record_outcome(&outcome).unwrap().recorded);
        }
        let c = store.calibration().unwrap();
        let got: Vec<(u64, u64)> = c
            .buckets
            .iter()
            .map(|b| (b.outcomes, b.successes))
            .collect();
        assert_eq!(got, expected);
        assert_eq!((c.patterns, c.outcomes), (1, 18));
        assert_eq!(
            c.calibrated(),
            Some(expected[BUCKET_EDGES.len() - 1].1 * 10 >= expected[BUCKET_EDGES.len() - 1].0 * 9)
        );
        assert!(expected[BUCKET_EDGES.len() - 1].0 > 0, "{expected:?}");
    }

    #[test]
    fn import_validates_every_line_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let store = small_store(dir.path());
        let mut exported = Vec::new();
        store.export(&mut exported, Path::new("x.jsonl")).unwrap();
        let text = String::from_utf8(exported.clone()).unwrap();
        assert_eq!(text.lines().count(), 4);

        let other = tempfile::tempdir().unwrap();
        let fresh = open(other.path());
        // A line with a missing field: error names the line, and nothing is imported.
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        let mut broken: serde_json::Value = serde_json::from_str(&lines[2]).unwrap();
        broken.as_object_mut().unwrap().remove("rule");
        lines[2] = broken.to_string();
        let input = lines.join("\n");
        let err = fresh
            .import(
                &mut input.as_bytes(),
                Path::new("in.jsonl"),
                NOW,
                &mut |_, _| {},
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("in.jsonl:3") && err.contains("rule"), "{err}");
        assert_eq!(fresh.live_count(), 0);
        // Invalid UTF-8.
        let mut bad = exported.clone();
        bad.extend_from_slice(b"\xff\xfe not utf8\n");
        let err = fresh
            .import(
                &mut bad.as_slice(),
                Path::new("in.jsonl"),
                NOW,
                &mut |_, _| {},
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("in.jsonl:5") && err.contains("UTF-8"), "{err}");
        assert_eq!(fresh.live_count(), 0);
        // The clean file imports whole, and a second import skips everything.
        let report = fresh
            .import(
                &mut exported.as_slice(),
                Path::new("in.jsonl"),
                NOW,
                &mut |_, _| {},
            )
            .unwrap();
        assert_eq!(report.imported, 4);
        let again = fresh
            .import(
                &mut exported.as_slice(),
                Path::new("in.jsonl"),
                NOW,
                &mut |_, _| {},
            )
            .unwrap();
        assert_eq!(again.imported, 0);
        assert_eq!(again.skipped.len(), 4);
        assert_eq!(again.skipped[0].line, 1);
    }
}
