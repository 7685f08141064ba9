//! The pattern store's error type. Every message names what failed, where, and what to do.

use std::path::{Path, PathBuf};

use agency_core::pattern::PatternError;

/// Errors of the pattern store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("pattern database {path}: {source}")]
    Db {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "pattern database {path} has schema version {found}, newer than this agency supports ({supported}); upgrade agency or use another --store"
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error(
        "pattern database {path} is damaged: {detail}; restore it from an export with agency patterns import"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error("embedding model {path}: {message}; run agency setup")]
    Model { path: PathBuf, message: String },
    #[error("embedding failed: {0}")]
    Embed(String),
    #[error("index {path} is being written by another agency process; wait for it to finish")]
    Locked { path: PathBuf },
    #[error("index {path}: {message}")]
    Index { path: PathBuf, message: String },
    #[error(
        "the query is empty; pass the error message to look up, e.g. agency patterns query \"'NoneType' object has no attribute 'x'\""
    )]
    EmptyQuery,
    #[error(
        "pattern id `{0}` is already taken by a pattern with another rewrite; choose another id"
    )]
    IdTaken(String),
    #[error("no pattern with id `{0}`; list the patterns with agency patterns list")]
    NotFound(String),
    #[error("pattern `{id}` is invalid: {source}")]
    Invalid { id: String, source: PatternError },
    /// The rewrite's template is not Python with `?name` holes: it would be stored but never
    /// match (the healer skips a template that does not compile).
    #[error("pattern `{id}` is invalid: {source}")]
    Template {
        id: String,
        source: agency_learn::Error,
    },
    #[error("pattern `{id}` is retired ({reason}); a retired rewrite is never re-learned")]
    Retired { id: String, reason: String },
    #[error("{path}:{line}: {message}")]
    Line {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Fs(#[from] agency_fs::Error),
}

/// The store's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn db(path: &Path, source: rusqlite::Error) -> Self {
        Error::Db {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn index(path: &Path, message: impl std::fmt::Display) -> Self {
        Error::Index {
            path: path.to_path_buf(),
            message: message.to_string(),
        }
    }
}
