//! Throwaway end-to-end run; deleted after use.
#![allow(clippy::print_stderr)]
use std::time::Instant;
fn main() {
    let home = std::env::args().nth(1).expect("home");
    let layout = agency_setup::Layout::new(home);
    let opts = agency_setup::SetupOptions { python: "python3".into(), skip_tools: false };
    let t0 = Instant::now();
    let result = agency_setup::install(&layout, &opts, &mut |p| eprintln!("[{:>7.2}s] {p:?}", t0.elapsed().as_secs_f64()));
    eprintln!("install: {:.2}s -> {result:#?}", t0.elapsed().as_secs_f64());
    if let Err(e) = &result { let mut s: Option<&dyn std::error::Error> = Some(e); while let Some(x) = s { eprintln!("  cause: {x}"); s = x.source(); } }
    for _ in 0..3 {
        let t = Instant::now();
        let r = agency_setup::verify_assets(&layout);
        eprintln!("verify_assets: {:.4}s -> {r:?}", t.elapsed().as_secs_f64());
    }
    let t = Instant::now();
    let r = agency_setup::verify_tools(&layout);
    eprintln!("verify_tools: {:.2}s -> {r:?}", t.elapsed().as_secs_f64());
}
