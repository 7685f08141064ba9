//! The scanner: finds problems in a Python repository. Native analyzers (ruff's parser, our own
//! rules), adapters for ruff, mypy and bandit, and the traceback reader, all producing one
//! finding model (`agency_core::contract::Finding`).

pub mod baseline;
pub mod bench;
pub mod cache;
pub mod discover;
pub mod finding;
pub mod follow;
pub mod git;
pub mod native;
pub mod project;
pub mod sarif;
pub mod scan;
pub mod suppress;
pub mod tools;
pub mod traceback;

pub use scan::{Progress, ScanOutput, ScanSettings, scan};

use std::path::PathBuf;

/// Everything that can stop a scan. Problems in the scanned code are findings, not errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{} is outside the repository {}: scan paths inside it, or run agency from the other repository",
        path.display(),
        root.display()
    )]
    OutsideRoot { path: PathBuf, root: PathBuf },
    #[error("invalid configuration: {message}")]
    Config { message: String },
    #[error("{message}")]
    Git { message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
