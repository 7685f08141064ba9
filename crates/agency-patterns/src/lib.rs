//! The pattern store: fixes that worked, found again in milliseconds.
//!
//! SQLite ([`db`]) is the source of truth. Each pattern's normalised error context is embedded
//! locally ([`embed`]) and indexed twice: by vector ([`vector`], exact below a size threshold,
//! HNSW above it) and by text ([`text`], BM25). A query runs both and fuses the rankings
//! ([`store`]). The indexes are derived: deleted or damaged, they are rebuilt from the database.

pub mod bench;
pub mod calibration;
pub mod db;
pub mod docs;
pub mod embed;
pub mod error;
mod locks;
pub mod seed;
pub mod store;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
pub mod text;
pub mod vector;

pub use calibration::Calibration;
pub use error::{Error, Result};
pub use store::{Learned, OutcomeInput, OutcomeResult, PatternStore, Query, StoreConfig};
