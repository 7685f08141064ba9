//! Vector search over unit-length embeddings: exact (a flat scan) below a size threshold, where
//! it is both faster and exact, and an HNSW graph above it ([`Graph`], our own compact one).
//!
//! The graph cannot delete. Retired patterns stay in it as tombstones and are filtered out at
//! query time by the caller's predicate; the store rebuilds the graph when tombstones pass a
//! fraction of it. Ids are the database's primary keys, which are never reused.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::fs;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::embed::{DIM, dot};
use crate::error::{Error, Result};
use crate::locks::{lock, read, write};

/// Tuning of the vector index; the defaults are the measured choices (`docs/benchmarks.md`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VectorParams {
    /// At or below this many vectors, search is an exact scan: at 10,000 the scan and the graph
    /// both take about 0.7 ms, at 20,000 the scan takes 1.6 ms and the graph 0.9 ms.
    pub exact_threshold: usize,
    /// A filtered search whose filter passes at most this many vectors scans them (int8, then
    /// the best on floats) instead of walking the graph: at 100k, 5,000 took 2.0 ms against
    /// 7.2 ms through the graph, 20,000 took 8.4 ms against 4.0 ms.
    pub filter_scan_max: usize,
    /// HNSW neighbours per node.
    pub max_connections: usize,
    pub ef_construction: usize,
    pub ef_search: usize,
}

impl Default for VectorParams {
    fn default() -> Self {
        Self {
            exact_threshold: 10_000,
            filter_scan_max: 10_000,
            // Measured on 100k clustered patterns (docs/benchmarks.md), recall@10 against exact
            // search: M = 16 reaches 0.977 only at ef 384; M = 32 gives 0.982 at ef 128,
            // 0.993 at ef 192 (about 0.7 ms), 0.997 at ef 256. Builds are deterministic.
            max_connections: 32,
            ef_construction: 200,
            ef_search: 192,
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

const DUMP_BASENAME: &str = "vectors";

/// A flat matrix of vectors with their ids.
#[derive(Debug, Default)]
pub struct Flat {
    ids: Vec<u64>,
    data: Vec<f32>,
    /// Id → row: a query looks up the vectors of its text hits and of a filter's ids.
    rows: HashMap<u64, usize>,
}

impl Flat {
    /// Adds a vector.
    pub fn push(&mut self, id: u64, v: &[f32]) {
        debug_assert_eq!(v.len(), DIM);
        // As the graph does: an id already held keeps its vector (a rebuild racing an insert
        // can hand the same row over twice).
        if self.rows.contains_key(&id) {
            return;
        }
        self.rows.insert(id, self.ids.len());
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
        let idx = *self.rows.get(&id)?;
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

/// Node number inside a [`Graph`] (insertion order); [`NO_NODE`] marks "none".
type Node = u32;
const NO_NODE: Node = Node::MAX;
/// Highest level a node can get (the level of a node is drawn from its id).
const MAX_LEVEL: u8 = 15;
/// An insert batch is cut into chunks of at most this many vectors: a chunk's vectors find
/// their neighbours in parallel against the graph as it was before the chunk (and by brute
/// force among each other), so a chunk is kept small next to the graph.
const MAX_CHUNK: usize = 1024;
/// A chunk is at most this fraction of the graph it is inserted into.
const CHUNK_DIVISOR: usize = 8;
/// Beam width of a search at level 1, whose results start the level-0 search.
const UPPER_BEAM: usize = 32;
/// Bytes converted at a time when saving and loading.
const IO_BLOCK: usize = 1 << 16;
/// File format of a saved graph: magic, version, then little-endian data and a sha256 footer.
const GRAPH_MAGIC: &[u8; 8] = b"AGYHNSW\0";
const GRAPH_FORMAT_VERSION: u32 = 1;
const GRAPH_SUFFIX: &str = "hnsw";
const DIGEST_BYTES: usize = 32;

/// A candidate node and its distance (`1 - cosine`) to the vector being searched for.
#[derive(Debug, Clone, Copy)]
struct Near {
    dist: f32,
    node: Node,
}

impl PartialEq for Near {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Near {}

impl Ord for Near {
    fn cmp(&self, other: &Self) -> Ordering {
        self.dist
            .total_cmp(&other.dist)
            .then(self.node.cmp(&other.node))
    }
}

impl PartialOrd for Near {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Nodes seen by one search: one bit per node.
struct Visited(Vec<u64>);

impl Visited {
    fn new(nodes: usize) -> Self {
        Self(vec![0; nodes.div_ceil(64)])
    }

    fn clear(&mut self) {
        self.0.fill(0);
    }

    /// Marks `node`; true when it was not marked yet.
    fn insert(&mut self, node: Node) -> bool {
        let (word, bit) = (node as usize / 64, 1_u64 << (node % 64));
        let fresh = self.0[word] & bit == 0;
        self.0[word] |= bit;
        fresh
    }
}

/// The graph's data. Levels above 0 hold a fraction `1/M` of the nodes of the level below.
#[derive(Debug)]
struct Layers {
    /// Neighbours per node above level 0; level 0 keeps `2 * m`.
    m: usize,
    /// Node → the caller's id (a primary key).
    ids: Vec<u64>,
    node_of: HashMap<u64, Node>,
    /// `DIM` floats per node, in node order.
    vectors: Vec<f32>,
    /// The same vectors in int8 (`DIM` codes per node, times `scales[node]`): what a scan of a
    /// filter's nodes reads first, a quarter of the bytes (derived, never saved).
    codes: Vec<i8>,
    scales: Vec<f32>,
    levels: Vec<u8>,
    /// Level-0 lists, `2m + 1` slots per node: the count, then the neighbours.
    base: Vec<Node>,
    /// Where a node's level-1 list is in `upper` (its higher levels follow), or [`NO_NODE`].
    upper_first: Vec<Node>,
    upper: Vec<Vec<Node>>,
    /// A node of the highest level, where every search starts.
    entry: Option<Node>,
}

impl Layers {
    fn new(m: usize) -> Self {
        Self {
            m,
            ids: Vec::new(),
            node_of: HashMap::new(),
            vectors: Vec::new(),
            codes: Vec::new(),
            scales: Vec::new(),
            levels: Vec::new(),
            base: Vec::new(),
            upper_first: Vec::new(),
            upper: Vec::new(),
            entry: None,
        }
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    fn stride(&self) -> usize {
        2 * self.m + 1
    }

    /// The most neighbours a node keeps at `level`.
    fn cap(&self, level: u8) -> usize {
        if level == 0 { 2 * self.m } else { self.m }
    }

    fn vector(&self, node: Node) -> &[f32] {
        let start = node as usize * DIM;
        &self.vectors[start..start + DIM]
    }

    /// A search result: the caller's id of `near` and its exact cosine similarity to `query`.
    fn scored(&self, query: &[f32], near: Near) -> (u64, f32) {
        (
            self.ids[near.node as usize],
            dot(query, self.vector(near.node)),
        )
    }

    /// The entry node and its level.
    fn top(&self) -> Option<(Node, u8)> {
        self.entry.map(|e| (e, self.levels[e as usize]))
    }

    /// Neighbours of `node` at `level` (which must not be above the node's own level).
    fn neighbours(&self, node: Node, level: u8) -> &[Node] {
        if level == 0 {
            let start = node as usize * self.stride();
            let count = self.base[start] as usize;
            &self.base[start + 1..start + 1 + count]
        } else {
            &self.upper[(self.upper_first[node as usize] + Node::from(level) - 1) as usize]
        }
    }

    fn set_neighbours(&mut self, node: Node, level: u8, list: &[Node]) {
        debug_assert!(list.len() <= self.cap(level));
        if level == 0 {
            let start = node as usize * self.stride();
            self.base[start] = list.len() as Node;
            self.base[start + 1..start + 1 + list.len()].copy_from_slice(list);
        } else {
            let idx = (self.upper_first[node as usize] + Node::from(level) - 1) as usize;
            self.upper[idx].clear();
            self.upper[idx].extend_from_slice(list);
        }
    }

    fn reserve(&mut self, extra: usize) {
        self.ids.reserve(extra);
        self.node_of.reserve(extra);
        self.vectors.reserve(extra * DIM);
        self.codes.reserve(extra * DIM);
        self.scales.reserve(extra);
        self.levels.reserve(extra);
        self.base.reserve(extra * self.stride());
        self.upper_first.reserve(extra);
    }

    /// Appends a node without neighbours.
    fn push(&mut self, id: u64, vector: &[f32], level: u8) {
        let node = self.len() as Node;
        self.ids.push(id);
        self.node_of.insert(id, node);
        self.vectors.extend_from_slice(vector);
        let start = self.codes.len();
        self.codes.resize(start + DIM, 0);
        let scale = quantize(vector, &mut self.codes[start..]);
        self.scales.push(scale);
        self.levels.push(level);
        self.base.resize(self.base.len() + self.stride(), 0);
        if level == 0 {
            self.upper_first.push(NO_NODE);
        } else {
            self.upper_first.push(self.upper.len() as Node);
            for _ in 0..level {
                self.upper.push(Vec::with_capacity(self.m));
            }
        }
        if self.top().is_none_or(|(_, top)| level > top) {
            self.entry = Some(node);
        }
    }

    fn code(&self, node: Node) -> &[i8] {
        let start = node as usize * DIM;
        &self.codes[start..start + DIM]
    }

    fn near(&self, probe: &impl Probe, node: Node) -> Near {
        Near {
            dist: probe.distance(self, node),
            node,
        }
    }

    /// Greedy walk from `at` through the levels `from` down to `to + 1`, one closest node kept.
    fn descend(&self, probe: &impl Probe, mut at: Near, from: u8, to: u8) -> Near {
        for level in (to + 1..=from).rev() {
            loop {
                let mut moved = false;
                for &n in self.neighbours(at.node, level) {
                    let near = self.near(probe, n);
                    if near < at {
                        at = near;
                        moved = true;
                    }
                }
                if !moved {
                    break;
                }
            }
        }
        at
    }

    /// Beam search of width `ef` at `level` from `entries`; the nodes `allow` accepts (all
    /// without it), closest first. Refused nodes are still walked through, so a filter costs
    /// only the extra nodes it takes to fill the beam.
    fn search_level(
        &self,
        probe: &impl Probe,
        entries: &[Near],
        ef: usize,
        level: u8,
        allow: Option<&dyn Fn(Node) -> bool>,
        visited: &mut Visited,
    ) -> Vec<Near> {
        let allowed = |node: Node| allow.is_none_or(|allow| allow(node));
        let mut candidates: BinaryHeap<Reverse<Near>> = BinaryHeap::with_capacity(ef * 2);
        let mut found: BinaryHeap<Near> = BinaryHeap::with_capacity(ef + 1);
        for &e in entries {
            if visited.insert(e.node) {
                candidates.push(Reverse(e));
                if allowed(e.node) {
                    found.push(e);
                }
            }
        }
        while found.len() > ef {
            found.pop();
        }
        let mut bound = found.peek().map_or(f32::INFINITY, |f| f.dist);
        while let Some(Reverse(current)) = candidates.pop() {
            // Unfiltered, the beam stops at its worst member; filtered, only once it is full.
            if current.dist > bound && (found.len() >= ef || allow.is_none()) {
                break;
            }
            for &n in self.neighbours(current.node, level) {
                if !visited.insert(n) {
                    continue;
                }
                let near = self.near(probe, n);
                if found.len() < ef || near.dist < bound {
                    candidates.push(Reverse(near));
                    if allowed(n) {
                        found.push(near);
                        if found.len() > ef {
                            found.pop();
                        }
                        bound = found.peek().map_or(f32::INFINITY, |f| f.dist);
                    }
                }
            }
        }
        found.into_sorted_vec()
    }

    /// The neighbours a new vector gets at each of its levels `0..=level`: a beam search of
    /// width `ef` per level, joined with the other new vectors of its chunk (`local`), then
    /// the diversity heuristic.
    fn plan(
        &self,
        query: &[f32],
        level: u8,
        local: &[(Near, u8)],
        ef: usize,
        source: &Source<'_>,
    ) -> Vec<Vec<Node>> {
        let mut lists = vec![Vec::new(); level as usize + 1];
        let local_at = |l: u8| {
            local
                .iter()
                .filter(move |(_, lv)| *lv >= l)
                .map(|(n, _)| *n)
        };
        let Some((entry, top)) = self.top() else {
            for l in 0..=level {
                let mut candidates: Vec<Near> = local_at(l).collect();
                candidates.sort_unstable();
                lists[l as usize] = select_neighbours(&candidates, self.m, source);
            }
            return lists;
        };
        let probe = Exact(query);
        let mut entries = vec![self.descend(&probe, self.near(&probe, entry), top, level)];
        let mut visited = Visited::new(self.len());
        for l in (0..=level).rev() {
            let mut candidates: Vec<Near> = local_at(l).collect();
            if l <= top {
                visited.clear();
                let found = self.search_level(&probe, &entries, ef, l, None, &mut visited);
                candidates.extend_from_slice(&found);
                entries = found;
            }
            candidates.sort_unstable();
            lists[l as usize] = select_neighbours(&candidates, self.m, source);
        }
        lists
    }
}

/// How a search measures the distance (`1 - cosine`) from what it looks for to a node.
trait Probe {
    fn distance(&self, layers: &Layers, node: Node) -> f32;
}

/// On the floats: building the graph and walking it.
struct Exact<'q>(&'q [f32]);

impl Probe for Exact<'_> {
    fn distance(&self, layers: &Layers, node: Node) -> f32 {
        1.0 - dot(self.0, layers.vector(node))
    }
}

/// On the int8 codes: a scan of the vectors a filter passes, scattered through memory, reads a
/// quarter of the bytes of each (5,000 of 100k: 1.6 ms against 2.8 ms on the floats).
struct Coded {
    codes: [i8; DIM],
    scale: f32,
}

impl Coded {
    fn new(query: &[f32]) -> Self {
        let mut codes = [0; DIM];
        let scale = quantize(query, &mut codes);
        Self { codes, scale }
    }
}

impl Probe for Coded {
    fn distance(&self, layers: &Layers, node: Node) -> f32 {
        let raw = dot_i8(&self.codes, layers.code(node));
        1.0 - raw as f32 * self.scale * layers.scales[node as usize]
    }
}

/// Writes `v` as int8 codes scaled by its largest magnitude; returns the scale (a code times
/// the scale is the float, to within half a scale).
fn quantize(v: &[f32], codes: &mut [i8]) -> f32 {
    let largest = v.iter().fold(0.0_f32, |m, x| m.max(x.abs()));
    if largest == 0.0 {
        codes.fill(0);
        return 0.0;
    }
    let scale = largest / 127.0;
    for (c, x) in codes.iter_mut().zip(v) {
        // Within [-127, 127] by the choice of scale.
        *c = (x / scale).round() as i8;
    }
    scale
}

/// [`quantize`] of every vector of a flat array, in parallel.
fn quantize_all(vectors: &[f32]) -> (Vec<i8>, Vec<f32>) {
    let mut codes = vec![0_i8; vectors.len()];
    let scales = codes
        .par_chunks_mut(DIM)
        .zip(vectors.par_chunks(DIM))
        .map(|(c, v)| quantize(v, c))
        .collect();
    (codes, scales)
}

/// Dot product of int8 codes. Products of two codes fit in `i16`, sums of 384 in `i32`;
/// independent lanes let the compiler vectorise it.
fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    const LANES: usize = 16;
    let mut acc = [0_i32; LANES];
    let chunks_a = a.chunks_exact(LANES);
    let chunks_b = b.chunks_exact(LANES);
    let tail: i32 = chunks_a
        .remainder()
        .iter()
        .zip(chunks_b.remainder())
        .map(|(x, y)| i32::from(*x) * i32::from(*y))
        .sum();
    for (ca, cb) in chunks_a.zip(chunks_b) {
        for lane in 0..LANES {
            acc[lane] += i32::from(ca[lane]) * i32::from(cb[lane]);
        }
    }
    acc.iter().sum::<i32>() + tail
}
/// Vectors by node number while a chunk is inserted: the graph's, then the chunk's.
struct Source<'a> {
    layers: &'a Layers,
    first: Node,
    chunk: &'a [(u64, &'a [f32])],
}

impl<'a> Source<'a> {
    fn vector(&self, node: Node) -> &'a [f32] {
        if node < self.first {
            self.layers.vector(node)
        } else {
            self.chunk[(node - self.first) as usize].1
        }
    }
}

/// The HNSW neighbour heuristic (Malkov and Yashunin, algorithm 4): from candidates sorted
/// closest first, keep one only if it is closer to the base than to every one kept, so links
/// spread in all directions instead of into one cluster; at most `m`.
fn select_neighbours(sorted: &[Near], m: usize, source: &Source<'_>) -> Vec<Node> {
    let mut chosen: Vec<Near> = Vec::with_capacity(m);
    for c in sorted {
        if chosen.len() >= m {
            break;
        }
        if chosen.last().is_some_and(|last| last.node == c.node) {
            continue;
        }
        let v = source.vector(c.node);
        if chosen
            .iter()
            .all(|s| 1.0 - dot(v, source.vector(s.node)) >= c.dist)
        {
            chosen.push(*c);
        }
    }
    chosen.into_iter().map(|c| c.node).collect()
}

/// The level of a new node, drawn from its id: the exponential distribution of the HNSW
/// paper with `mL = 1 / ln M`, seeded by the id so that a build is reproducible.
fn level_of(id: u64, m: usize) -> u8 {
    let mut z = id.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    // In (0, 1].
    let unit = ((z >> 11) as f64 + 1.0) / (1_u64 << 53) as f64;
    let level = (-unit.ln() / (m.max(2) as f64).ln()).floor();
    level.min(f64::from(MAX_LEVEL)) as u8
}

/// An HNSW graph over unit vectors (Malkov and Yashunin), stored compactly: the vectors in one
/// array, neighbour lists as node numbers in fixed slots. A point costs its vector (1.5 KB),
/// its int8 codes (384 bytes) and `4 (2M + 1)` bytes of level-0 links, about 2.2 KB at M = 32;
/// `hnsw_rs`, used before, kept a reference-counted allocation per link and took about 4 KB
/// (`docs/benchmarks.md`).
///
/// Builds are deterministic: levels come from the ids, and parallel work is merged in order.
/// Writers are serialised; an insert searches and prunes under the read lock, beside running
/// searches, and takes the write lock only to store its result.
pub struct Graph {
    /// Boxed: a `VectorIndex` is moved around whole.
    layers: RwLock<Box<Layers>>,
    writer: Mutex<()>,
    params: VectorParams,
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph")
            .field("points", &self.len())
            .finish_non_exhaustive()
    }
}

impl Graph {
    /// An empty graph.
    pub fn new(params: VectorParams) -> Self {
        Self {
            layers: RwLock::new(Box::new(Layers::new(params.max_connections.clamp(2, 255)))),
            writer: Mutex::new(()),
            params,
        }
    }

    /// Builds a graph from vectors, inserting in parallel.
    pub fn build<'a>(
        vectors: impl Iterator<Item = (u64, &'a [f32])>,
        params: VectorParams,
    ) -> Self {
        let graph = Self::new(params);
        let batch: Vec<(u64, &[f32])> = vectors.collect();
        graph.insert_batch(&batch);
        graph
    }

    /// Changes the search beam width (for tuning and benchmarks).
    pub fn set_ef_search(&mut self, ef: usize) {
        self.params.ef_search = ef;
    }

    /// Adds one vector (safe while other threads search).
    pub fn insert(&self, id: u64, v: &[f32]) {
        self.insert_batch(&[(id, v)]);
    }

    /// Adds many vectors, in parallel, in chunks that stay small next to the graph. Ids already
    /// in the graph are skipped.
    pub fn insert_batch(&self, vectors: &[(u64, &[f32])]) {
        let _serial = lock(&self.writer);
        let fresh: Vec<(u64, &[f32])> = {
            let layers = read(&self.layers);
            let mut seen = HashSet::new();
            vectors
                .iter()
                .filter(|(id, v)| {
                    debug_assert_eq!(v.len(), DIM);
                    !layers.node_of.contains_key(id) && seen.insert(*id)
                })
                .copied()
                .collect()
        };
        if fresh.is_empty() {
            return;
        }
        write(&self.layers).reserve(fresh.len());
        let mut start = 0;
        while start < fresh.len() {
            let size = (self.len() / CHUNK_DIVISOR)
                .clamp(1, MAX_CHUNK)
                .min(fresh.len() - start);
            self.insert_chunk(&fresh[start..start + size]);
            start += size;
        }
    }

    /// Inserts vectors that see each other only through brute force (see [`MAX_CHUNK`]).
    fn insert_chunk(&self, chunk: &[(u64, &[f32])]) {
        let (levels, updates) = {
            let layers = read(&self.layers);
            let m = layers.m;
            let source = Source {
                layers: &layers,
                first: layers.len() as Node,
                chunk,
            };
            let first = source.first;
            let levels: Vec<u8> = chunk.iter().map(|(id, _)| level_of(*id, m)).collect();
            // Each new vector's closest chunk mates, by brute force.
            let keep = 2 * m;
            let local: Vec<Vec<(Near, u8)>> = (0..chunk.len())
                .into_par_iter()
                .map(|i| {
                    let mut near: Vec<(Near, u8)> = chunk
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| *j != i)
                        .map(|(j, (_, v))| {
                            let near = Near {
                                dist: 1.0 - dot(chunk[i].1, v),
                                node: first + j as Node,
                            };
                            (near, levels[j])
                        })
                        .collect();
                    if near.len() > keep {
                        near.select_nth_unstable_by(keep - 1, |a, b| a.0.cmp(&b.0));
                        near.truncate(keep);
                    }
                    near
                })
                .collect();
            let plans: Vec<Vec<Vec<Node>>> = (0..chunk.len())
                .into_par_iter()
                .map(|i| {
                    layers.plan(
                        chunk[i].1,
                        levels[i],
                        &local[i],
                        self.params.ef_construction,
                        &source,
                    )
                })
                .collect();
            // Every list that changes: the new nodes' own, and those they link back to.
            let mut incoming: BTreeMap<(Node, u8), Vec<Node>> = BTreeMap::new();
            for (i, lists) in plans.iter().enumerate() {
                let node = first + i as Node;
                for (level, list) in lists.iter().enumerate() {
                    incoming.entry((node, level as u8)).or_default();
                    for &other in list {
                        incoming.entry((other, level as u8)).or_default().push(node);
                    }
                }
            }
            let changed: Vec<((Node, u8), Vec<Node>)> = incoming.into_iter().collect();
            let updates: Vec<(Node, u8, Vec<Node>)> = changed
                .into_par_iter()
                .map(|((node, level), extra)| {
                    let mut list: Vec<Node> = if node < first {
                        layers.neighbours(node, level).to_vec()
                    } else {
                        plans[(node - first) as usize][level as usize].clone()
                    };
                    for x in extra {
                        if x != node && !list.contains(&x) {
                            list.push(x);
                        }
                    }
                    let cap = layers.cap(level);
                    if list.len() > cap {
                        let v = source.vector(node);
                        let mut candidates: Vec<Near> = list
                            .iter()
                            .map(|&n| Near {
                                dist: 1.0 - dot(v, source.vector(n)),
                                node: n,
                            })
                            .collect();
                        candidates.sort_unstable();
                        list = select_neighbours(&candidates, cap, &source);
                    }
                    (node, level, list)
                })
                .collect();
            (levels, updates)
        };
        let mut layers = write(&self.layers);
        for ((id, v), level) in chunk.iter().zip(levels) {
            layers.push(*id, v, level);
        }
        for (node, level, list) in &updates {
            layers.set_neighbours(*node, *level, list);
        }
    }

    /// Points in the graph, tombstones included.
    pub fn len(&self) -> usize {
        read(&self.layers).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the graph holds `id`.
    pub fn contains(&self, id: u64) -> bool {
        read(&self.layers).node_of.contains_key(&id)
    }

    /// The cosine similarity of `query` with the stored vector of `id`.
    pub fn similarity(&self, id: u64, query: &[f32]) -> Option<f32> {
        let layers = read(&self.layers);
        let node = *layers.node_of.get(&id)?;
        Some(dot(query, layers.vector(node)))
    }

    /// Exact top `k` among `ids` (ids not in the graph are left out): all of them compared on
    /// their int8 codes, the best `4k` (at least 64) then on their floats. An int8 similarity
    /// is within a few thousandths of the float one, far less than what separates rank `k`
    /// from rank `4k`.
    pub fn search_among(&self, query: &[f32], k: usize, ids: &[u64]) -> Vec<(u64, f32)> {
        let layers = read(&self.layers);
        let probe = Coded::new(query);
        let mut rough: Vec<Near> = ids
            .iter()
            .filter_map(|id| Some(layers.near(&probe, *layers.node_of.get(id)?)))
            .collect();
        let keep = (4 * k).max(64);
        if rough.len() > keep {
            rough.select_nth_unstable(keep - 1);
            rough.truncate(keep);
        }
        let mut hits: Vec<(u64, f32)> = rough.iter().map(|n| layers.scored(query, *n)).collect();
        top_k(&mut hits, k);
        hits
    }

    /// Approximate top `k` among ids the filter allows (all without one), with their cosine
    /// similarity. The beam holds allowed nodes only and walks through the others, so a filter
    /// needs no wider beam (at 100k, a filter passing 1 in 5 kept recall@10 at 0.999 in 4 ms;
    /// widening the beam by 1/selectivity, as before, took 11 ms). A filter that passes few is
    /// better served by [`Self::search_among`].
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        allow: Option<&dyn Fn(u64) -> bool>,
    ) -> Vec<(u64, f32)> {
        let layers = read(&self.layers);
        let Some((entry, top)) = layers.top() else {
            return Vec::new();
        };
        if k == 0 {
            return Vec::new();
        }
        let ef = self.params.ef_search.max(k);
        // On the floats: the int8 codes made the walk no faster (0.95 against 1.02 ms at 100k),
        // its reads being mostly of neighbour lists and nearby vectors.
        let probe = Exact(query);
        let mut visited = Visited::new(layers.len());
        // A beam rather than one greedy point at level 1: on clustered data a single point can
        // lead the level-0 search into the wrong cluster and miss a query's whole top k.
        let starts = if top >= 1 {
            let start = layers.descend(&probe, layers.near(&probe, entry), top, 1);
            let found = layers.search_level(&probe, &[start], UPPER_BEAM, 1, None, &mut visited);
            visited.clear();
            found
        } else {
            vec![layers.near(&probe, entry)]
        };
        let found = match allow {
            // Without a filter the search skips a check at every node it visits.
            None => layers.search_level(&probe, &starts, ef, 0, None, &mut visited),
            Some(allow) => {
                let by_node = |node: Node| allow(layers.ids[node as usize]);
                layers.search_level(&probe, &starts, ef, 0, Some(&by_node), &mut visited)
            }
        };
        // The beam is closest first; the scores are the dot products themselves, as an exact
        // search gives them.
        let mut hits: Vec<(u64, f32)> = found
            .iter()
            .take(k)
            .map(|n| layers.scored(query, *n))
            .collect();
        top_k(&mut hits, k);
        hits
    }

    /// Writes the graph into a new directory `dir`, durably. Returns the file's basename.
    pub fn save(&self, dir: &Path) -> Result<String> {
        let layers = read(&self.layers);
        if layers.len() == 0 {
            return Err(Error::index(dir, "refusing to save an empty graph"));
        }
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = graph_file(dir, DUMP_BASENAME);
        let file = fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
        let mut out = BufWriter::with_capacity(IO_BLOCK * 4, HashWriter::new(file));
        layers.write_to(&mut out).map_err(|e| Error::io(&path, e))?;
        let hashed = out
            .into_inner()
            .map_err(|e| Error::io(&path, e.into_error()))?;
        let (mut file, digest) = hashed.finish();
        file.write_all(&digest)
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io(&path, e))?;
        agency_fs::sync_dir(dir).map_err(|e| Error::io(dir, e))?;
        Ok(DUMP_BASENAME.to_string())
    }

    /// Loads a graph saved by [`Graph::save`]. Damage (a missing file, another size, a bad
    /// checksum, links out of range, other parameters) is an error; the caller rebuilds from
    /// the database.
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
                    "graph file changed since it was written (expected {expected:?}, found {files:?})"
                ),
            ));
        }
        let path = graph_file(dir, basename);
        let damaged = |message: String| Error::index(&path, message);
        if files.graph_bytes < DIGEST_BYTES as u64 {
            return Err(damaged("the graph file is truncated".into()));
        }
        let file = fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
        let body_bytes = files.graph_bytes - DIGEST_BYTES as u64;
        let mut input = BufReader::with_capacity(IO_BLOCK * 4, HashReader::new(file, body_bytes));
        let layers = Layers::read_from(&mut input, body_bytes).map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => {
                damaged(format!("the graph file is damaged: {e}"))
            }
            _ => Error::io(&path, e),
        })?;
        let mut rest = [0_u8; 1];
        if input.read(&mut rest).map_err(|e| Error::io(&path, e))? != 0 {
            return Err(damaged("the graph file has trailing bytes".into()));
        }
        let (mut file, digest) = input.into_inner().finish();
        let mut footer = [0_u8; DIGEST_BYTES];
        file.read_exact(&mut footer)
            .map_err(|e| Error::io(&path, e))?;
        if footer != digest {
            return Err(damaged("the graph file's checksum does not match".into()));
        }
        if layers.m != params.max_connections.clamp(2, 255) {
            return Err(damaged(format!(
                "the graph was built with {} neighbours per node, the store uses {}",
                layers.m, params.max_connections
            )));
        }
        Ok(Self {
            layers: RwLock::new(Box::new(layers)),
            writer: Mutex::new(()),
            params,
        })
    }
}

fn graph_file(dir: &Path, basename: &str) -> PathBuf {
    dir.join(format!("{basename}.{GRAPH_SUFFIX}"))
}

impl Layers {
    /// The saved format: magic, version, `DIM`, `m`, node count, entry node, then the ids,
    /// levels, vectors, level-0 slots and, per node above level 0, its upper lists (count,
    /// nodes), all little-endian. The caller appends the sha256 of all of it.
    fn write_to(&self, out: &mut impl Write) -> std::io::Result<()> {
        out.write_all(GRAPH_MAGIC)?;
        out.write_all(&GRAPH_FORMAT_VERSION.to_le_bytes())?;
        out.write_all(&(DIM as u32).to_le_bytes())?;
        out.write_all(&(self.m as u32).to_le_bytes())?;
        out.write_all(&(self.len() as u64).to_le_bytes())?;
        out.write_all(&self.entry.unwrap_or(NO_NODE).to_le_bytes())?;
        write_all_le(out, &self.ids)?;
        out.write_all(&self.levels)?;
        write_all_le(out, &self.vectors)?;
        write_all_le(out, &self.base)?;
        for (node, &level) in self.levels.iter().enumerate() {
            for l in 1..=level {
                let list = self.neighbours(node as Node, l);
                out.write_all(&(list.len() as u32).to_le_bytes())?;
                write_all_le(out, list)?;
            }
        }
        Ok(())
    }

    /// Reads what [`Self::write_to`] wrote (`body_bytes` long) and checks that every link is
    /// in range, before anything is allocated from a count in the file.
    fn read_from(input: &mut impl Read, body_bytes: u64) -> std::io::Result<Self> {
        let bad = |message: String| std::io::Error::new(std::io::ErrorKind::InvalidData, message);
        let mut magic = [0_u8; 8];
        input.read_exact(&mut magic)?;
        if &magic != GRAPH_MAGIC {
            return Err(bad("not an agency graph file".into()));
        }
        let version: u32 = read_one(input)?;
        if version != GRAPH_FORMAT_VERSION {
            return Err(bad(format!(
                "format version {version}, this agency reads {GRAPH_FORMAT_VERSION}"
            )));
        }
        let dim: u32 = read_one(input)?;
        let m: u32 = read_one(input)?;
        let n: u64 = read_one(input)?;
        let entry: u32 = read_one(input)?;
        if dim as usize != DIM || !(2..=255).contains(&m) {
            return Err(bad(format!("dimension {dim} and {m} links per node")));
        }
        let stride = 2 * u64::from(m) + 1;
        let fixed = n
            .checked_mul(8 + 1 + DIM as u64 * 4 + stride * 4)
            .and_then(|b| b.checked_add(28));
        if fixed.is_none_or(|b| b > body_bytes) || n >= u64::from(NO_NODE) {
            return Err(bad(format!("{n} nodes do not fit in {body_bytes} bytes")));
        }
        let n = n as usize;
        let m = m as usize;
        let ids: Vec<u64> = read_all_le(input, n)?;
        let mut levels = vec![0_u8; n];
        input.read_exact(&mut levels)?;
        let vectors: Vec<f32> = read_all_le(input, n * DIM)?;
        if !vectors.iter().all(|x| x.is_finite()) {
            return Err(bad(
                "the graph file holds a vector that is not finite".into()
            ));
        }
        let base: Vec<Node> = read_all_le(input, n * (2 * m + 1))?;
        let mut upper_first = Vec::with_capacity(n);
        let mut upper = Vec::new();
        for &level in &levels {
            if level > MAX_LEVEL {
                return Err(bad(format!("a node at level {level}")));
            }
            if level == 0 {
                upper_first.push(NO_NODE);
                continue;
            }
            upper_first.push(upper.len() as Node);
            for _ in 0..level {
                let count: u32 = read_one(input)?;
                if count as usize > m {
                    return Err(bad(format!("an upper list of {count} links")));
                }
                upper.push(read_all_le(input, count as usize)?);
            }
        }
        let node_of: HashMap<u64, Node> = ids
            .iter()
            .enumerate()
            .map(|(node, &id)| (id, node as Node))
            .collect();
        if node_of.len() != n {
            return Err(bad("an id appears twice".into()));
        }
        let entry = match (entry, n) {
            (NO_NODE, 0) => None,
            (e, _) if (e as usize) < n => Some(e),
            _ => return Err(bad(format!("entry node {entry} of {n}"))),
        };
        let (codes, scales) = quantize_all(&vectors);
        let layers = Self {
            m,
            ids,
            node_of,
            vectors,
            codes,
            scales,
            levels,
            base,
            upper_first,
            upper,
            entry,
        };
        layers.check_links().map_err(bad)?;
        Ok(layers)
    }

    /// Every link points to a node that exists at that level; the entry is on the top level.
    fn check_links(&self) -> std::result::Result<(), String> {
        let top = self.top().map_or(0, |(_, level)| level);
        for node in 0..self.len() as Node {
            let level = self.levels[node as usize];
            if level > top {
                return Err(format!("node {node} is above the entry's level {top}"));
            }
            if self.base[node as usize * self.stride()] as usize > self.cap(0) {
                return Err(format!("node {node} has too many links"));
            }
            for l in 0..=level {
                for &n in self.neighbours(node, l) {
                    if n as usize >= self.len() || self.levels[n as usize] < l {
                        return Err(format!("node {node} links to {n} at level {l}"));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Numbers stored little-endian in a saved graph.
trait Le: Sized + Copy {
    const BYTES: usize;
    fn put(self, out: &mut Vec<u8>);
    fn get(bytes: &[u8]) -> Self;
}

macro_rules! le {
    ($($t:ty),*) => {$(
        impl Le for $t {
            const BYTES: usize = std::mem::size_of::<$t>();
            fn put(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn get(bytes: &[u8]) -> Self {
                <$t>::from_le_bytes(bytes.try_into().expect("chunks of the type's size"))
            }
        }
    )*};
}
le!(u32, u64, f32);

fn write_all_le<T: Le>(out: &mut impl Write, values: &[T]) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(IO_BLOCK);
    for chunk in values.chunks(IO_BLOCK / T::BYTES) {
        buf.clear();
        for v in chunk {
            v.put(&mut buf);
        }
        out.write_all(&buf)?;
    }
    Ok(())
}

fn read_all_le<T: Le>(input: &mut impl Read, count: usize) -> std::io::Result<Vec<T>> {
    let mut out = Vec::with_capacity(count);
    let mut buf = vec![0_u8; IO_BLOCK];
    let mut left = count;
    while left > 0 {
        let take = left.min(IO_BLOCK / T::BYTES);
        let bytes = &mut buf[..take * T::BYTES];
        input.read_exact(bytes)?;
        out.extend(bytes.chunks_exact(T::BYTES).map(T::get));
        left -= take;
    }
    Ok(out)
}

fn read_one<T: Le>(input: &mut impl Read) -> std::io::Result<T> {
    let mut buf = [0_u8; 8];
    input.read_exact(&mut buf[..T::BYTES])?;
    Ok(T::get(&buf[..T::BYTES]))
}

/// A writer that hashes what passes through it.
struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> HashWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
        }
    }

    fn finish(self) -> (W, [u8; DIGEST_BYTES]) {
        (self.inner, self.hasher.finalize().into())
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes what it reads and ends after `limit` bytes (before the footer).
struct HashReader<R> {
    inner: R,
    left: u64,
    hasher: Sha256,
}

impl<R: Read> HashReader<R> {
    fn new(inner: R, limit: u64) -> Self {
        Self {
            inner,
            left: limit,
            hasher: Sha256::new(),
        }
    }

    fn finish(self) -> (R, [u8; DIGEST_BYTES]) {
        (self.inner, self.hasher.finalize().into())
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let max = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        if max == 0 {
            return Ok(0);
        }
        let n = self.inner.read(&mut buf[..max])?;
        self.hasher.update(&buf[..n]);
        self.left -= n as u64;
        Ok(n)
    }
}

/// The size of a saved graph's file, recorded in the manifest so that a truncated or replaced
/// file is caught before it is read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedFiles {
    pub graph_bytes: u64,
}

impl SavedFiles {
    /// Measures the file of a saved graph.
    pub fn measure(dir: &Path, basename: &str) -> Result<Self> {
        let path = graph_file(dir, basename);
        let graph_bytes = fs::metadata(&path)
            .map(|m| m.len())
            .map_err(|e| Error::io(&path, e))?;
        Ok(Self { graph_bytes })
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
            VectorIndex::Graph(Graph::build(
                vectors.iter().map(|(id, v)| (*id, v.as_slice())),
                params,
            ))
        }
    }

    /// [`Self::build`] from keys and one flat array of their vectors.
    pub fn build_flat(ids: &[u64], data: &[f32], params: VectorParams) -> Self {
        let vectors = ids.iter().copied().zip(data.chunks_exact(DIM));
        if ids.len() <= params.exact_threshold {
            let mut flat = Flat::default();
            for (id, v) in vectors {
                flat.push(id, v);
            }
            VectorIndex::Exact(flat)
        } else {
            VectorIndex::Graph(Graph::build(vectors, params))
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
                    let graph = Graph::build(flat.iter(), params);
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

    /// Adds many vectors; a graph inserts them in parallel, and an exact index that grows past
    /// the threshold becomes a graph built from all of them at once.
    pub fn insert_batch(&mut self, vectors: &[(u64, &[f32])], params: VectorParams) {
        match self {
            VectorIndex::Graph(graph) => graph.insert_batch(vectors),
            VectorIndex::Exact(flat) => {
                for (id, v) in vectors {
                    flat.push(*id, v);
                }
                if flat.len() > params.exact_threshold {
                    *self = VectorIndex::Graph(Graph::build(flat.iter(), params));
                }
            }
        }
    }

    /// The graph an exact index becomes when `vectors` take it past the threshold, built
    /// from a shared reference so that queries go on while it is built; `None` for a graph,
    /// or when the exact index stays exact (then [`Self::insert_batch`] pushes them).
    pub fn outgrown(&self, vectors: &[(u64, &[f32])], params: VectorParams) -> Option<Graph> {
        let VectorIndex::Exact(flat) = self else {
            return None;
        };
        let fresh: Vec<(u64, &[f32])> = vectors
            .iter()
            .filter(|(id, _)| flat.get(*id).is_none())
            .copied()
            .collect();
        (flat.len() + fresh.len() > params.exact_threshold)
            .then(|| Graph::build(flat.iter().chain(fresh), params))
    }

    /// Top `k` (id, cosine similarity) among ids the filter allows (all without one).
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        allow: Option<&dyn Fn(u64) -> bool>,
    ) -> Vec<(u64, f32)> {
        match self {
            VectorIndex::Exact(flat) => flat.search(query, k, allow),
            VectorIndex::Graph(graph) => graph.search(query, k, allow),
        }
    }

    /// Exact top `k` among `ids`, for a filter that passes few: scanning them is exact and
    /// faster than a graph beam wide enough to find them among all the others (at 100k
    /// patterns a rule filter took 26-125 ms through the graph, `docs/benchmarks.md`).
    pub fn search_among(&self, query: &[f32], k: usize, ids: &[u64]) -> Vec<(u64, f32)> {
        match self {
            VectorIndex::Exact(flat) => {
                let mut scored: Vec<(u64, f32)> = ids
                    .iter()
                    .filter_map(|id| Some((*id, dot(query, flat.get(*id)?))))
                    .collect();
                top_k(&mut scored, k);
                scored
            }
            VectorIndex::Graph(graph) => graph.search_among(query, k, ids),
        }
    }

    /// The cosine similarity of `query` with the stored vector of `id`.
    pub fn similarity(&self, id: u64, query: &[f32]) -> Option<f32> {
        match self {
            VectorIndex::Exact(flat) => flat.get(id).map(|v| dot(query, v)),
            VectorIndex::Graph(graph) => graph.similarity(id, query),
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
    fn an_id_pushed_twice_is_held_once() {
        let mut flat = Flat::default();
        let v = vec![1.0 / (DIM as f32).sqrt(); DIM];
        flat.push(7, &v);
        flat.push(7, &v);
        assert_eq!(flat.len(), 1);
        assert_eq!(flat.search(&v, 5, None).len(), 1);
    }

    #[test]
    fn exact_search_finds_itself_first_and_respects_filter() {
        let data = vectors(200, 7);
        let index = VectorIndex::build(data.clone(), VectorParams::default());
        assert_eq!(index.method(), Method::Exact);
        let (id, v) = &data[17];
        let hits = index.search(v, 5, None);
        assert_eq!(hits[0].0, *id);
        assert!((hits[0].1 - 1.0).abs() < 1e-4);
        let odd_only = index.search(v, 5, Some(&|x| x % 2 == 1));
        assert!(odd_only.iter().all(|(x, _)| x % 2 == 1));
        assert_eq!(odd_only.len(), 5);
    }

    #[test]
    fn graph_recall_against_exact_search() {
        // Small: the crate's own code runs unoptimised in tests.
        let data = vectors(1_500, 11);
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
            let found = index.search(q, 10, None);
            total += recall(&truth, &found);
        }
        let mean = total / queries.len() as f64;
        assert!(mean >= 0.98, "recall@10 {mean}");
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
        let hits = index.search(&data[55].1, 1, None);
        assert_eq!(hits[0].0, data[55].0);
    }

    #[test]
    fn graph_save_load_round_trip_and_damage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let data = vectors(500, 5);
        let graph = Graph::build(
            data.iter().map(|(id, v)| (*id, v.as_slice())),
            VectorParams::default(),
        );
        let gen_dir = dir.path().join("gen-1");
        let base = graph.save(&gen_dir).unwrap();
        let files = SavedFiles::measure(&gen_dir, &base).unwrap();
        let loaded = Graph::load(&gen_dir, &base, &files, VectorParams::default()).unwrap();
        assert_eq!(loaded.len(), 500);
        for (_, q) in vectors(20, 77) {
            assert_eq!(loaded.search(&q, 10, None), graph.search(&q, 10, None));
        }
        let hits = loaded.search(&data[3].1, 1, None);
        assert_eq!(hits[0].0, data[3].0);

        let graph_file = graph_file(&gen_dir, &base);
        let good = fs::read(&graph_file).unwrap();
        // Same size, one byte changed: the checksum catches it.
        let mut flipped = good.clone();
        flipped[good.len() / 2] ^= 0x40;
        fs::write(&graph_file, &flipped).unwrap();
        let err = Graph::load(&gen_dir, &base, &files, VectorParams::default()).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
        // Same size, garbage: refused before any count in it is believed.
        fs::write(&graph_file, vec![0xAB; good.len()]).unwrap();
        assert!(Graph::load(&gen_dir, &base, &files, VectorParams::default()).is_err());
        // Truncated: caught by the recorded size.
        fs::write(&graph_file, b"short").unwrap();
        assert!(Graph::load(&gen_dir, &base, &files, VectorParams::default()).is_err());
        // Built with other parameters: refused, so that the store rebuilds it.
        fs::write(&graph_file, &good).unwrap();
        let other = VectorParams {
            max_connections: 16,
            ..VectorParams::default()
        };
        assert!(Graph::load(&gen_dir, &base, &files, other).is_err());
        assert!(Graph::load(&gen_dir, &base, &files, VectorParams::default()).is_ok());
    }

    #[test]
    fn builds_are_deterministic_and_inserts_match_batches() {
        let data = vectors(600, 13);
        let params = VectorParams {
            exact_threshold: 100,
            ..VectorParams::default()
        };
        let one = Graph::build(data.iter().map(|(id, v)| (*id, v.as_slice())), params);
        let two = Graph::build(data.iter().map(|(id, v)| (*id, v.as_slice())), params);
        // Same links, vectors and entry: the dumps are byte-identical.
        let dir = tempfile::tempdir().unwrap();
        let a = one.save(&dir.path().join("a")).unwrap();
        let b = two.save(&dir.path().join("b")).unwrap();
        assert_eq!(
            fs::read(graph_file(&dir.path().join("a"), &a)).unwrap(),
            fs::read(graph_file(&dir.path().join("b"), &b)).unwrap()
        );
        // Inserting one at a time and again (a repeated id is skipped) gives a working graph.
        let single = Graph::new(params);
        for (id, v) in data.iter().take(150) {
            single.insert(*id, v);
            single.insert(*id, v);
        }
        assert_eq!(single.len(), 150);
        for (id, v) in data.iter().take(150).step_by(17) {
            assert_eq!(single.search(v, 1, None)[0].0, *id);
            assert!((single.similarity(*id, v).unwrap() - 1.0).abs() < 1e-4);
        }
        assert_eq!(single.similarity(99_999, &data[0].1), None);
    }

    #[test]
    fn filtered_graph_search_returns_only_allowed_ids() {
        let data = vectors(1_500, 17);
        let params = VectorParams {
            exact_threshold: 100,
            ..VectorParams::default()
        };
        let graph = Graph::build(data.iter().map(|(id, v)| (*id, v.as_slice())), params);
        let allow = |id: u64| id.is_multiple_of(50);
        for (_, q) in vectors(10, 23) {
            let found = graph.search(&q, 10, Some(&allow));
            assert_eq!(found.len(), 10);
            assert!(found.iter().all(|(id, _)| allow(*id)));
            let truth: Vec<(u64, Vec<f32>)> =
                data.iter().filter(|(id, _)| allow(*id)).cloned().collect();
            let exact = exact_top_k(&truth, &q, 10);
            assert!(recall(&exact, &found) >= 0.9);
        }
    }

    #[test]
    fn a_filter_that_passes_few_is_answered_exactly_among_its_ids() {
        let data = vectors(1_000, 29);
        let params = VectorParams {
            exact_threshold: 100,
            ..VectorParams::default()
        };
        let small = VectorIndex::build(data[..90].to_vec(), params);
        let index = VectorIndex::build(data.clone(), params);
        assert_eq!(index.method(), Method::Hnsw);
        let allow = |id: u64| id.is_multiple_of(20);
        let allowed: Vec<(u64, Vec<f32>)> =
            data.iter().filter(|(id, _)| allow(*id)).cloned().collect();
        let mut ids: Vec<u64> = allowed.iter().map(|(id, _)| *id).collect();
        // An id the index does not hold is left out.
        ids.push(5_000);
        for (_, q) in vectors(5, 31) {
            assert_eq!(
                index.search_among(&q, 10, &ids),
                exact_top_k(&allowed, &q, 10)
            );
            assert_eq!(
                small.search_among(&q, 3, &ids),
                exact_top_k(&allowed[..4], &q, 3)
            );
        }
    }

    #[test]
    fn int8_codes_keep_the_similarity_within_a_few_thousandths() {
        let data = vectors(200, 37);
        let mut worst = 0.0_f32;
        for (_, a) in &data {
            let probe = Coded::new(a);
            for (_, b) in data.iter().take(50) {
                let mut codes = vec![0; DIM];
                let scale = quantize(b, &mut codes);
                let rough = dot_i8(&probe.codes, &codes) as f32 * probe.scale * scale;
                worst = worst.max((rough - dot(a, b)).abs());
            }
        }
        assert!(worst < 0.005, "{worst}");
        let mut zero = vec![1_i8; DIM];
        assert!(quantize(&[0.0; DIM], &mut zero).abs() < f32::EPSILON);
        assert!(zero.iter().all(|c| *c == 0));
        assert_eq!(
            dot_i8(&[127, -128, 3], &[127, -128, 5]),
            127 * 127 + 128 * 128 + 15
        );
    }

    #[test]
    fn graph_levels_follow_the_exponential_law() {
        let levels: Vec<u8> = (1..=100_000).map(|id| level_of(id, 32)).collect();
        let above = levels.iter().filter(|l| **l > 0).count();
        // P(level > 0) = 1/M.
        assert!((2_700..3_600).contains(&above), "{above}");
        assert!(levels.iter().all(|l| *l <= MAX_LEVEL));
    }
}
