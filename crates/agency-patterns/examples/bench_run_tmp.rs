//! Throwaway: one real run of `bench::run` (deleted after use).
use agency_patterns::bench::{BenchOptions, run};
use agency_patterns::embed::{Embedder, EmbedderConfig};
use std::sync::Arc;

fn main() {
    let home = std::path::Path::new("/work/main/.agency-home");
    let n: usize = std::env::args().nth(1).map_or(1000, |s| s.parse().unwrap());
    let threads: usize = std::env::args().nth(2).map_or(2, |s| s.parse().unwrap());
    let embedder = Arc::new(
        Embedder::load(&EmbedderConfig {
            onnxruntime_lib: home.join("lib/libonnxruntime.so.1.31.1"),
            model: home.join("models/all-minilm-l6-v2-int8/model.onnx"),
            tokenizer: home.join("models/all-minilm-l6-v2-int8/tokenizer.json"),
            model_id: "all-minilm-l6-v2-int8".into(),
            intra_threads: threads,
        })
        .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut opts = BenchOptions::new(dir.path().join("store"));
    opts.n = n;
    let mut last = String::new();
    let t = std::time::Instant::now();
    let report = run(embedder, &opts, &mut |stage, done, total| {
        if stage != last || done == total || done % 10_000 == 0 {
            eprintln!("[{:.1}s] {stage} {done}/{total}", t.elapsed().as_secs_f64());
            last = stage.to_string();
        }
    })
    .unwrap();
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    eprintln!("total {:.1}s", t.elapsed().as_secs_f64());
}
