//! Core types of `agency`: categories, rule codes, patterns, error contexts, confidence and the
//! JSON contract. This crate does no IO (no files, processes, environment, clock or sockets), so
//! every other crate can share it and every function here is a pure, testable computation.

pub mod category;
pub mod codes;
pub mod confidence;
pub mod config;
pub mod context;
pub mod contract;
pub mod fusion;
pub mod latency;
pub mod pattern;
pub mod secrets;

pub use category::Category;
pub use pattern::{Applicability, Source};

#[cfg(test)]
mod tidy {
    /// `agency-core` must stay free of IO; its dependencies are the first line of defence, so a
    /// new one has to be added here deliberately (the second is `clippy.toml`).
    #[test]
    fn dependencies_do_no_io() {
        let manifest = include_str!("../Cargo.toml");
        let deps = manifest
            .split("[dependencies]")
            .nth(1)
            .expect("agency-core has a [dependencies] table")
            .split("\n[")
            .next()
            .unwrap_or_default();
        let names: Vec<&str> = deps
            .lines()
            .filter_map(|l| l.split(['.', ' ', '=']).next())
            .filter(|n| !n.is_empty())
            .collect();
        let allowed = ["serde", "serde_json", "sha2", "thiserror", "toml"];
        for name in &names {
            assert!(
                allowed.contains(name),
                "agency-core may not depend on `{name}`"
            );
        }
    }
}
