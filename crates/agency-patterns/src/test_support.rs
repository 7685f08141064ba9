//! Test support shared by this crate's tests and by crates built on the store: the real model,
//! loaded once per test process from the data directory that `scripts/test.sh` (or
//! `agency setup`) installs. Compiled only for tests and under the `test-support` feature.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use crate::embed::{Embedder, EmbedderConfig};

/// The embedder over the installed model (`AGENCY_HOME`, else the workspace's `.agency-home`);
/// panics with the remedy when the model is missing, so a test never skips silently.
pub fn embedder() -> Arc<Embedder> {
    static EMBEDDER: OnceLock<Arc<Embedder>> = OnceLock::new();
    EMBEDDER
        .get_or_init(|| {
            let home = std::env::var_os("AGENCY_HOME").map_or_else(
                || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.agency-home"),
                PathBuf::from,
            );
            let config = EmbedderConfig {
                onnxruntime_lib: home.join("lib/libonnxruntime.so.1.31.1"),
                model: home.join("models/all-minilm-l6-v2-int8/model.dynamic-int8.onnx"),
                tokenizer: home.join("models/all-minilm-l6-v2-int8/tokenizer.json"),
                model_id: "test-model".into(),
                intra_threads: 1,
            };
            let embedder = Embedder::load(&config).unwrap_or_else(|e| {
                panic!(
                    "the embedding model is required: {e} (run scripts/test.sh or agency setup with AGENCY_HOME={})",
                    home.display()
                )
            });
            Arc::new(embedder)
        })
        .clone()
}
