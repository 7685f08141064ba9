//! Vector search over unit-length embeddings: exact (a flat scan) below a size threshold, where
//! it is both faster and exact, and an HNSW graph (`hnsw_rs`) above it.
//!
//! `hnsw_rs` cannot delete. Retired patterns stay in the graph as tombstones and are filtered out
//! at query time by the caller's predicate; the store rebuilds the graph when tombstones pass a
//! fraction of it. Ids are the database's primary keys, which are never reused.

use std::collections::HashSet;
use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use hnsw_rs::prelude::{AnnT, DistDot, Hnsw, HnswIo};

use crate::embed::{DIM, dot};
use crate::error::{Error, Result};

/// Tuning of the vector index; the defaults are the measured choices (`docs/benchmarks.md`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VectorParams {
    /// At or below this many vectors, search is an exact scan.
    pub exact_threshold: usize,
    /// HNSW neighbours per node.
    pub max_connections: usize,
    pub ef_construction: usize,
    pub ef_search: usize,
}

impl Default for VectorParams {
    fn default() -> Self {
        Self {
            exact_threshold: 20_000,
            // Measured on 100k clustered patterns (docs/benchmarks.md): M = 16 gave recall@10
            // 0.85-0.92 at any beam width we could afford; M = 32 with ef 384 gives 0.98 at
            // about 1.5 ms (graph builds vary: 0.977-0.99 over several builds).
            max_connections: 32,
            ef_construction: 200,
            ef_search: 384,
        }
    }
}

/// How a search was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Exact,
    Hnsw,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Exact => "exact",
            Method::Hnsw => "hnsw",
        }
    }
}

/// `hnsw_rs` requires this many layers for its dump format.
const HNSW_LAYERS: usize = 16;
const DUMP_BASENAME: &str = "vectors";

/// A flat matrix of vectors with their ids.
#[derive(Debug, Default)]
pub struct Flat {
    ids: Vec<u64>,
    data: Vec<f32>,
}

impl Flat {
    /// Adds a vector.
    pub fn push(&mut self, id: u64, v: &[f32]) {
        debug_assert_eq!(v.len(), DIM);
        self.ids.push(id);
        self.data.extend_from_slice(v);
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The vector stored for `id`.
    pub fn get(&self, id: u64) -> Option<&[f32]> {
        let idx = self.ids.iter().position(|&x| x == id)?;
        Some(&self.data[idx * DIM..(idx + 1) * DIM])
    }

    /// Exact top `k` by cosine similarity among ids the filter allows (all without one).
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        allow: Option<&dyn Fn(u64) -> bool>,
    ) -> Vec<(u64, f32)> {
        let mut scored: Vec<(u64, f32)> = self
            .ids
            .iter()
            .zip(self.data.chunks_exact(DIM))
            .filter(|(id, _)| allow.is_none_or(|allow| allow(**id)))
            .map(|(&id, v)| (id, dot(query, v)))
            .collect();
        top_k(&mut scored, k);
        scored
    }

    fn iter(&self) -> impl Iterator<Item = (u64, &[f32])> {
        self.ids.iter().copied().zip(self.data.chunks_exact(DIM))
    }
}

/// Keeps the `k` best by similarity, best first, ties by id.
fn top_k(scored: &mut Vec<(u64, f32)>, k: usize) {
    let by_score = |a: &(u64, f32), b: &(u64, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if scored.len() > k && k > 0 {
        scored.select_nth_unstable_by(k - 1, by_score);
        scored.truncate(k);
    }
    scored.sort_by(by_score);
}

/// An HNSW graph over vectors.
pub struct Graph {
    hnsw: Hnsw<'static, f32, DistDot>,
    params: VectorParams,
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph")
            .field("points", &self.hnsw.get_nb_point())
            .finish_non_exhaustive()
    }
}

impl Graph {
    /// Builds a graph from vectors, inserting in parallel.
    pub fn build<'a>(
        vectors: impl Iterator<Item = (u64, &'a [f32])>,
        capacity: usize,
        params: VectorParams,
    ) -> Self {
        let hnsw = Hnsw::new(
            params.max_connections,
            capacity.max(10_000),
            HNSW_LAYERS,
            params.ef_construction,
            DistDot,
        );
        let batch: Vec<(&[f32], usize)> = vectors.map(|(id, v)| (v, id as usize)).collect();
        hnsw.parallel_insert_slice(&batch);
        Self { hnsw, params }
    }

    /// Changes the search beam width (for tuning and benchmarks).
    pub fn set_ef_search(&mut self, ef: usize) {
        self.params.ef_search = ef;
    }

    /// Adds one vector (safe while other threads search).
    pub fn insert(&self, id: u64, v: &[f32]) {
        self.hnsw.insert_slice((v, id as usize));
    }

    /// Adds many vectors, inserting in parallel.
    pub fn insert_batch(&self, vectors: &[(u64, &[f32])]) {
        let batch: Vec<(&[f32], usize)> =
            vectors.iter().map(|(id, v)| (*v, *id as usize)).collect();
        self.hnsw.parallel_insert_slice(&batch);
    }

    /// Points in the graph, tombstones included.
    pub fn len(&self) -> usize {
        self.hnsw.get_nb_point()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Approximate top `k` among ids the filter allows (all without one). `selectivity`
    /// (allowed / all, in (0, 1]) widens the beam for restrictive filters so that they still
    /// find `k` results.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        allow: Option<&dyn Fn(u64) -> bool>,
        selectivity: f64,
    ) -> Vec<(u64, f32)> {
        if self.is_empty() || k == 0 {
            return Vec::new();
        }
        let widen = (1.0 / selectivity.clamp(1e-3, 1.0)).min(16.0);
        let ef = ((self.params.ef_search as f64 * widen) as usize).max(k);
        let found = match allow {
            // Without a filter the search skips a check at every node it visits.
            None => self.hnsw.search_filter(query, k, ef, None),
            Some(allow) => {
                let filter = |id: &usize| allow(*id as u64);
                self.hnsw.search_filter(query, k, ef, Some(&filter))
            }
        };
        found
            .into_iter()
            .map(|n| (n.d_id as u64, 1.0 - n.distance))
            .collect()
    }

    /// Writes the graph into a new directory `dir` (which must not exist), durably. Returns the
    /// dump's basename.
    pub fn save(&self, dir: &Path) -> Result<String> {
        if self.is_empty() {
            return Err(Error::index(dir, "refusing to save an empty graph"));
        }
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        // `file_dump` panics when it cannot create its files; keep that inside our error type.
        let dumped = catch_unwind(AssertUnwindSafe(|| self.hnsw.file_dump(dir, DUMP_BASENAME)))
            .map_err(|_| Error::index(dir, "the HNSW dump panicked"))?
            .map_err(|e| Error::index(dir, e))?;
        for suffix in ["hnsw.graph", "hnsw.data"] {
            let path = dir.join(format!("{dumped}.{suffix}"));
            fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io(&path, e))?;
        }
        agency_fs::sync_dir(dir).map_err(|e| Error::io(dir, e))?;
        Ok(dumped)
    }

    /// Loads a graph saved by [`Graph::save`]. Damage (missing files, wrong sizes, a panic inside
    /// `hnsw_rs`) is an error; the caller rebuilds from the database.
    pub fn load(
        dir: &Path,
        basename: &str,
        expected: &SavedFiles,
        params: VectorParams,
    ) -> Result<Self> {
        let files = SavedFiles::measure(dir, basename)?;
        if &files != expected {
            return Err(Error::index(
                dir,
                format!(
                    "graph files changed since they were written (expected {expected:?}, found {files:?})"
                ),
            ));
        }
        // The loader must outlive the graph, which borrows it; it is a few bytes, so leaking it
        // once per load is the safe way to own both.
        let io: &'static HnswIo = Box::leak(Box::new(HnswIo::new(dir, basename)));
        let hnsw = catch_unwind(AssertUnwindSafe(|| io.load_hnsw_with_dist(DistDot)))
            .map_err(|_| Error::index(dir, "the HNSW graph is damaged (its loader panicked)"))?
            .map_err(|e| Error::index(dir, e))?;
        Ok(Self { hnsw, params })
    }
}

/// Sizes of a saved graph's files, recorded in the manifest so that a truncated file is caught
/// before `hnsw_rs` reads it (it exits the process on a short read).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedFiles {
    pub graph_bytes: u64,
    pub data_bytes: u64,
}

impl SavedFiles {
    /// Measures the files of a dump.
    pub fn measure(dir: &Path, basename: &str) -> Result<Self> {
        let size = |suffix: &str| -> Result<u64> {
            let path: PathBuf = dir.join(format!("{basename}.{suffix}"));
            fs::metadata(&path)
                .map(|m| m.len())
                .map_err(|e| Error::io(&path, e))
        };
        Ok(Self {
            graph_bytes: size("hnsw.graph")?,
            data_bytes: size("hnsw.data")?,
        })
    }
}

/// The vector index: exact or graph, with the switch made by size.
#[derive(Debug)]
pub enum VectorIndex {
    Exact(Flat),
    Graph(Graph),
}

impl VectorIndex {
    /// Builds the right kind of index for these vectors.
    #[allow(clippy::needless_pass_by_value)] // the flat index copies; callers hand over their vectors
    pub fn build(vectors: Vec<(u64, Vec<f32>)>, params: VectorParams) -> Self {
        if vectors.len() <= params.exact_threshold {
            let mut flat = Flat::default();
            for (id, v) in &vectors {
                flat.push(*id, v);
            }
            VectorIndex::Exact(flat)
        } else {
            let n = vectors.len();
            VectorIndex::Graph(Graph::build(
                vectors.iter().map(|(id, v)| (*id, v.as_slice())),
                n,
                params,
            ))
        }
    }

    pub fn method(&self) -> Method {
        match self {
            VectorIndex::Exact(_) => Method::Exact,
            VectorIndex::Graph(_) => Method::Hnsw,
        }
    }

    /// Vectors held (tombstones included).
    pub fn len(&self) -> usize {
        match self {
            VectorIndex::Exact(f) => f.len(),
            VectorIndex::Graph(g) => g.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a vector. An exact index that grows past the threshold becomes a graph.
    pub fn insert(&mut self, id: u64, v: &[f32], params: VectorParams) {
        match self {
            VectorIndex::Exact(flat) => {
                flat.push(id, v);
                if flat.len() > params.exact_threshold {
                    let graph = Graph::build(flat.iter(), flat.len() * 2, params);
                    *self = VectorIndex::Graph(graph);
                }
            }
            VectorIndex::Graph(graph) => graph.insert(id, v),
        }
    }

    /// Adds the vectors when the index takes inserts through a shared reference (a graph), and
    /// says whether it did; the caller then uses [`Self::insert_batch`] under a write lock.
    pub fn insert_shared(&self, vectors: &[(u64, &[f32])]) -> bool {
        match self {
            VectorIndex::Graph(graph) => {
                if let [(id, v)] = vectors {
                    graph.insert(*id, v);
                } else {
                    graph.insert_batch(vectors);
                }
                true
            }
            VectorIndex::Exact(_) => false,
        }
    }

    /// Adds many vectors; a graph inserts them in parallel.
    pub fn insert_batch(&mut self, vectors: &[(u64, &[f32])], params: VectorParams) {
        match self {
            VectorIndex::Graph(graph) if vectors.len() > 1 => graph.insert_batch(vectors),
            _ => {
                for (id, v) in vectors {
                    self.insert(*id, v, params);
                }
            }
        }
    }

    /// Top `k` (id, cosine similarity) among ids the filter allows (all without one).
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        allow: Option<&dyn Fn(u64) -> bool>,
        selectivity: f64,
    ) -> Vec<(u64, f32)> {
        match self {
            VectorIndex::Exact(flat) => flat.search(query, k, allow),
            VectorIndex::Graph(graph) => graph.search(query, k, allow, selectivity),
        }
    }

    /// The stored vector of `id`, where the index can give it cheaply (exact index only).
    pub fn vector(&self, id: u64) -> Option<&[f32]> {
        match self {
            VectorIndex::Exact(flat) => flat.get(id),
            VectorIndex::Graph(_) => None,
        }
    }
}

/// Exact top-k over a set of vectors: the ground truth for recall measurements.
pub fn exact_top_k(vectors: &[(u64, Vec<f32>)], query: &[f32], k: usize) -> Vec<(u64, f32)> {
    let mut scored: Vec<(u64, f32)> = vectors.iter().map(|(id, v)| (*id, dot(query, v))).collect();
    top_k(&mut scored, k);
    scored
}

/// Ids of `a` found in `b`, as a fraction of `a`'s length (recall@k of `b` against truth `a`).
pub fn recall(truth: &[(u64, f32)], found: &[(u64, f32)]) -> f64 {
    if truth.is_empty() {
        return 1.0;
    }
    let found: HashSet<u64> = found.iter().map(|(id, _)| *id).collect();
    truth.iter().filter(|(id, _)| found.contains(id)).count() as f64 / truth.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::normalize;

    /// Deterministic pseudo-random unit vectors (xorshift), clustered like real embeddings.
    pub(crate) fn vectors(n: usize, seed: u64) -> Vec<(u64, Vec<f32>)> {
        let mut state = seed.max(1);
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 10_000) as f32 / 5_000.0 - 1.0
        };
        let centres: Vec<Vec<f32>> = (0..20)
            .map(|_| (0..DIM).map(|_| next()).collect())
            .collect();
        (0..n)
            .map(|i| {
                let c = &centres[i % centres.len()];
                let mut v: Vec<f32> = c.iter().map(|x| x + 0.6 * next()).collect();
                normalize(&mut v);
                (i as u64 + 1, v)
            })
            .collect()
    }

    #[test]
    fn exact_search_finds_itself_first_and_respects_filter() {
        let data = vectors(200, 7);
        let index = VectorIndex::build(data.clone(), VectorParams::default());
        assert_eq!(index.method(), Method::Exact);
        let (id, v) = &data[17];
        let hits = index.search(v, 5, None, 1.0);
        assert_eq!(hits[0].0, *id);
        assert!((hits[0].1 - 1.0).abs() < 1e-4);
        let odd_only = index.search(v, 5, Some(&|x| x % 2 == 1), 0.5);
        assert!(odd_only.iter().all(|(x, _)| x % 2 == 1));
        assert_eq!(odd_only.len(), 5);
    }

    #[test]
    fn graph_recall_against_exact_search() {
        let data = vectors(3_000, 11);
        let params = VectorParams {
            exact_threshold: 100,
            ..VectorParams::default()
        };
        let index = VectorIndex::build(data.clone(), params);
        assert_eq!(index.method(), Method::Hnsw);
        let queries = vectors(50, 99);
        let mut total = 0.0;
        for (_, q) in &queries {
            let truth = exact_top_k(&data, q, 10);
            let found = index.search(q, 10, None, 1.0);
            total += recall(&truth, &found);
        }
        let mean = total / queries.len() as f64;
        assert!(mean >= 0.95, "recall@10 {mean}");
    }

    #[test]
    fn exact_index_becomes_a_graph_past_the_threshold() {
        let params = VectorParams {
            exact_threshold: 50,
            ..VectorParams::default()
        };
        let data = vectors(60, 3);
        let mut index = VectorIndex::build(data[..50].to_vec(), params);
        assert_eq!(index.method(), Method::Exact);
        for (id, v) in &data[50..] {
            index.insert(*id, v, params);
        }
        assert_eq!(index.method(), Method::Hnsw);
        assert_eq!(index.len(), 60);
        let hits = index.search(&data[55].1, 1, None, 1.0);
        assert_eq!(hits[0].0, data[55].0);
    }

    #[test]
    fn graph_save_load_round_trip_and_damage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let data = vectors(500, 5);
        let graph = Graph::build(
            data.iter().map(|(id, v)| (*id, v.as_slice())),
            500,
            VectorParams::default(),
        );
        let gen_dir = dir.path().join("gen-1");
        let base = graph.save(&gen_dir).unwrap();
        let files = SavedFiles::measure(&gen_dir, &base).unwrap();
        let loaded = Graph::load(&gen_dir, &base, &files, VectorParams::default()).unwrap();
        assert_eq!(loaded.len(), 500);
        let hits = loaded.search(&data[3].1, 1, None, 1.0);
        assert_eq!(hits[0].0, data[3].0);

        // Same size, garbage content: the loader panics inside hnsw_rs; we get an error.
        let graph_file = gen_dir.join(format!("{base}.hnsw.graph"));
        let len = fs::metadata(&graph_file).unwrap().len() as usize;
        fs::write(&graph_file, vec![0xAB; len]).unwrap();
        assert!(Graph::load(&gen_dir, &base, &files, VectorParams::default()).is_err());
        // Truncated: caught by the recorded sizes before hnsw_rs reads it.
        fs::write(&graph_file, b"short").unwrap();
        assert!(Graph::load(&gen_dir, &base, &files, VectorParams::default()).is_err());
    }
}
