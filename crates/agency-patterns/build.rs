//! Embeds the curated seed library (`index/` at the workspace root) into the binary, so that a
//! store opened anywhere can be seeded without the source tree.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::{env, fs};

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let index = manifest_dir.join("../../index");
    println!("cargo:rerun-if-changed={}", index.display());
    let mut files = Vec::new();
    collect(&index, &mut files);
    files.sort();
    let mut out = String::from("/// The seed library: (path relative to `index/`, TOML text).\n");
    out.push_str("pub static SEED_FILES: &[(&str, &str)] = &[\n");
    for path in &files {
        println!("cargo:rerun-if-changed={}", path.display());
        let rel = path.strip_prefix(&index).expect("collected under index/");
        let canonical = fs::canonicalize(path).expect("seed file exists");
        writeln!(
            out,
            "    ({:?}, include_str!({:?})),",
            rel.to_string_lossy(),
            canonical.to_string_lossy()
        )
        .expect("writing to a String cannot fail");
    }
    out.push_str("];\n");
    let dest = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo")).join("seed_files.rs");
    fs::write(dest, out).expect("OUT_DIR is writable");
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            println!("cargo:rerun-if-changed={}", path.display());
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
}
