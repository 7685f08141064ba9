//! Local sentence embeddings: all-MiniLM-L6-v2 (int8 ONNX) through ONNX Runtime, loaded
//! dynamically from the library that `agency setup` installs.
//!
//! One [`Embedder`] is loaded per process and shared by all callers (`Arc<Embedder>`); its
//! session sits behind a mutex because `Session::run` takes `&mut self`. The vector of a text is
//! the mean of the model's `last_hidden_state` over the attention mask, L2-normalised, so the dot
//! product of two vectors is their cosine similarity.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ndarray::Array2;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::TensorRef;
use tokenizers::utils::truncation::{TruncationParams, TruncationStrategy};
use tokenizers::{Encoding, Tokenizer};

use crate::error::{Error, Result};

/// Dimension of the model's vectors.
pub const DIM: usize = 384;
/// The model's window in tokens (longer input is truncated, and the caller is told).
pub const MAX_TOKENS: usize = 128;

/// What to load.
#[derive(Debug, Clone)]
pub struct EmbedderConfig {
    /// `libonnxruntime.so` as installed by `agency setup`.
    pub onnxruntime_lib: PathBuf,
    pub model: PathBuf,
    pub tokenizer: PathBuf,
    /// A stable name of the model's weights, stored beside every vector so that a model change
    /// is noticed and the store re-embeds.
    pub model_id: String,
    /// ONNX Runtime intra-op threads (1 or 2 on a 2-core machine).
    pub intra_threads: usize,
}

/// How the ONNX Runtime session runs. The defaults are the measured choices
/// (`docs/benchmarks.md`); the other values exist to measure them (`benches/patterns.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionOptions {
    /// Pack the weights of the model's matrix products once at load. Without it every run
    /// repacks them: about a quarter of a short query's time, for no memory saved.
    pub prepacking: bool,
    pub optimization: Optimization,
    /// Plan the run's buffers from the previous run of the same shape.
    pub memory_pattern: bool,
    /// Keep freed buffers in ONNX Runtime's arena for the next run.
    pub cpu_arena: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            prepacking: true,
            // The fusions of the higher levels made a query about 8% slower on this model
            // (measured at 14 and 59 tokens, one and two threads).
            optimization: Optimization::Basic,
            memory_pattern: false,
            cpu_arena: true,
        }
    }
}

/// ONNX Runtime's graph optimisation level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Optimization {
    Disabled,
    /// Constant folding and redundant node removal: turns the int8 weights into float ones once.
    Basic,
    /// Basic and operator fusions (attention, layer norm, GELU).
    Extended,
    /// Extended and layout optimisations.
    All,
}

impl Optimization {
    fn level(self) -> GraphOptimizationLevel {
        match self {
            Optimization::Disabled => GraphOptimizationLevel::Disable,
            Optimization::Basic => GraphOptimizationLevel::Level1,
            Optimization::Extended => GraphOptimizationLevel::Level2,
            Optimization::All => GraphOptimizationLevel::Level3,
        }
    }
}

/// One embedded text.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding {
    /// Unit-length vector of [`DIM`] floats.
    pub vector: Vec<f32>,
    /// Tokens the model saw (at most [`MAX_TOKENS`]).
    pub tokens: usize,
    /// True when the text was longer than the model's window and was cut.
    pub truncated: bool,
}

/// The loaded model and tokenizer.
pub struct Embedder {
    session: Mutex<Session>,
    tokenizer: Tokenizer,
    model_id: String,
    takes_type_ids: bool,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("model_id", &self.model_id)
            .finish_non_exhaustive()
    }
}

/// ONNX Runtime allows one environment per process; it must outlive every session.
static ENVIRONMENT: OnceLock<
    std::result::Result<(PathBuf, ort::environment::Environment), String>,
> = OnceLock::new();

fn init_runtime(lib: &Path) -> Result<&'static ort::environment::Environment> {
    let env = ENVIRONMENT.get_or_init(|| {
        ort::init_from(lib)
            .map_err(|e| e.to_string())?
            .with_name("agency")
            .with_telemetry(false)
            .build()
            .map(|env| (lib.to_path_buf(), env))
            .map_err(|e| e.to_string())
    });
    match env {
        Ok((_, env)) => Ok(env),
        Err(message) => Err(Error::Model {
            path: lib.to_path_buf(),
            message: format!("cannot load ONNX Runtime: {message}"),
        }),
    }
}

/// Builder errors are not `Send`; converting them inside an `ort::Result` function keeps them
/// out of our error type.
fn build_session(
    env: &ort::environment::Environment,
    model: &Path,
    intra_threads: usize,
    options: SessionOptions,
) -> ort::Result<Session> {
    Session::builder(env)?
        .with_optimization_level(options.optimization.level())?
        .with_intra_threads(intra_threads)?
        .with_inter_threads(1)?
        .with_memory_pattern(options.memory_pattern)?
        .with_prepacking(options.prepacking)?
        .with_execution_providers([ort::ep::CPU::default()
            .with_arena_allocator(options.cpu_arena)
            .build()])?
        // Spinning threads double latency on a shared 2-core machine.
        .with_intra_op_spinning(false)?
        .with_inter_op_spinning(false)?
        .commit_from_file(model)
}

impl Embedder {
    /// Loads the runtime library (once per process), the model and the tokenizer.
    pub fn load(config: &EmbedderConfig) -> Result<Self> {
        Self::load_with(config, SessionOptions::default())
    }

    /// [`Self::load`] with other session options (to measure them).
    pub fn load_with(config: &EmbedderConfig, options: SessionOptions) -> Result<Self> {
        for path in [&config.onnxruntime_lib, &config.model, &config.tokenizer] {
            if !path.is_file() {
                return Err(Error::Model {
                    path: path.clone(),
                    message: "file is missing".into(),
                });
            }
        }
        let env = init_runtime(&config.onnxruntime_lib)?;
        let model_err = |message: String| Error::Model {
            path: config.model.clone(),
            message,
        };
        let session = build_session(env, &config.model, config.intra_threads.max(1), options)
            .map_err(|e| model_err(e.to_string()))?;
        let takes_type_ids = session
            .inputs()
            .iter()
            .any(|i| i.name() == "token_type_ids");

        let tok_err = |message: String| Error::Model {
            path: config.tokenizer.clone(),
            message,
        };
        let mut tokenizer =
            Tokenizer::from_file(&config.tokenizer).map_err(|e| tok_err(e.to_string()))?;
        // The file pads every input to 128 tokens; a query must pay only for its own length.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                ..TruncationParams::default()
            }))
            .map_err(|e| tok_err(e.to_string()))?;
        Ok(Self {
            session: Mutex::new(session),
            tokenizer,
            model_id: config.model_id.clone(),
            takes_type_ids,
        })
    }

    /// The model id recorded with every stored vector.
    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    /// Embeds one text.
    pub fn embed(&self, text: &str) -> Result<Embedding> {
        // `encode_batch` would hand a single text to the rayon pool and back.
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| Error::Embed(format!("cannot tokenize: {e}")))?;
        let mut out = self.run(&[encoding])?;
        Ok(out.pop().expect("one text in, one embedding out"))
    }

    /// Embeds several texts in one run of the model (padded to the longest).
    pub fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Embedding>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| Error::Embed(format!("cannot tokenize: {e}")))?;
        self.run(&encodings)
    }

    /// Runs the model on tokenised texts and mean-pools each.
    fn run(&self, encodings: &[Encoding]) -> Result<Vec<Embedding>> {
        let batch = encodings.len();
        let seq = encodings
            .iter()
            .map(|e| e.get_ids().len())
            .max()
            .unwrap_or(0)
            .max(1);
        let mut ids = Array2::<i64>::zeros((batch, seq));
        let mut mask = Array2::<i64>::zeros((batch, seq));
        let mut types = Array2::<i64>::zeros((batch, seq));
        for (row, enc) in encodings.iter().enumerate() {
            for (col, ((&id, &m), &t)) in enc
                .get_ids()
                .iter()
                .zip(enc.get_attention_mask())
                .zip(enc.get_type_ids())
                .enumerate()
            {
                ids[[row, col]] = i64::from(id);
                mask[[row, col]] = i64::from(m);
                types[[row, col]] = i64::from(t);
            }
        }
        let run_err = |e: ort::Error| Error::Embed(format!("model run failed: {e}"));
        let mut session = self
            .session
            .lock()
            .map_err(|_| Error::Embed("the model session was poisoned by a panic".into()))?;
        let ids_t = TensorRef::from_array_view(&ids).map_err(run_err)?;
        let mask_t = TensorRef::from_array_view(&mask).map_err(run_err)?;
        let outputs = if self.takes_type_ids {
            let types_t = TensorRef::from_array_view(&types).map_err(run_err)?;
            session.run(ort::inputs![
                "input_ids" => ids_t,
                "attention_mask" => mask_t,
                "token_type_ids" => types_t,
            ])
        } else {
            session.run(ort::inputs![
                "input_ids" => ids_t,
                "attention_mask" => mask_t,
            ])
        }
        .map_err(run_err)?;
        let hidden = outputs
            .get("last_hidden_state")
            .unwrap_or(&outputs[0])
            .try_extract_array::<f32>()
            .map_err(run_err)?;
        let shape = hidden.shape().to_vec();
        if shape.len() != 3 || shape[0] != batch || shape[1] != seq || shape[2] != DIM {
            return Err(Error::Embed(format!(
                "model output has shape {shape:?}, expected [{batch}, {seq}, {DIM}]"
            )));
        }
        let mut result = Vec::with_capacity(batch);
        for (row, enc) in encodings.iter().enumerate() {
            let mut vector = vec![0.0_f32; DIM];
            let mut count = 0.0_f32;
            for col in 0..seq {
                if mask[[row, col]] == 0 {
                    continue;
                }
                count += 1.0;
                for (d, v) in vector.iter_mut().enumerate() {
                    *v += hidden[[row, col, d]];
                }
            }
            if count > 0.0 {
                for v in &mut vector {
                    *v /= count;
                }
            }
            normalize(&mut vector);
            result.push(Embedding {
                vector,
                tokens: enc.get_ids().len(),
                truncated: !enc.get_overflowing().is_empty(),
            });
        }
        Ok(result)
    }
}

/// Scales `v` to unit length (a zero vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in v.iter_mut() {
            *x /= norm;
        }
    }
}

/// Dot product; the cosine similarity of two unit vectors.
///
/// Eight independent accumulators let the compiler vectorise the loop (a single running sum
/// cannot be reordered); this is what makes the exact scan fast (`docs/benchmarks.md`).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 8;
    let mut acc = [0.0_f32; LANES];
    let chunks_a = a.chunks_exact(LANES);
    let chunks_b = b.chunks_exact(LANES);
    let tail: f32 = chunks_a
        .remainder()
        .iter()
        .zip(chunks_b.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (ca, cb) in chunks_a.zip(chunks_b) {
        for lane in 0..LANES {
            acc[lane] += ca[lane] * cb[lane];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_the_plain_sum() {
        for len in [0, 1, 7, 8, 9, 384, 390] {
            let a: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..len).map(|i| (i as f32 * 0.11).cos()).collect();
            let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - plain).abs() < 1e-4, "{len}");
        }
    }

    #[test]
    fn normalize_gives_unit_length() {
        let mut v = vec![3.0_f32, 4.0];
        normalize(&mut v);
        assert!((dot(&v, &v) - 1.0).abs() < 1e-6);
        let mut zero = vec![0.0_f32; 3];
        normalize(&mut zero);
        assert_eq!(zero, [0.0; 3]);
    }
}
