//! The generated-fix tier: an OpenAI-compatible Chat Completions client that proposes a fix
//! for one finding as byte-offset edits, for the healer to verify like any other fix.
//!
//! - [`config`]: `[llm]` of `agency.toml` ([`LlmConfig`]; no table means the tier is off).
//! - [`prompt`]: the finding, the editable region, the imports, worked examples from the
//!   pattern store and the previous failure, as chat messages.
//! - [`answer`]: the strict JSON answer, and each `find` located exactly once in the region.
//! - [`redact`]: secrets replaced by placeholders before sending and restored after.
//! - [`usage`]: the SQLite record of calls and spend, the monthly budget and the answer cache.
//! - [`slots`]: at most five requests in flight on the machine, across processes.
//! - [`client`]: [`LlmClient::propose_fix`], which ties them together with bounded retries.
//! - `test_server` (feature `test-server`): an OpenAI-compatible fake for tests.
//!
//! A generated fix is never `Safe` by itself: the caller verifies it and applies it unattended
//! only when [`LlmConfig::auto_apply`] allows.

pub mod answer;
pub mod client;
pub mod config;
mod error;
pub mod prompt;
pub mod redact;
pub mod slots;
#[cfg(feature = "test-server")]
pub mod test_server;
pub mod usage;

pub use answer::{AnchoredEdit, Answer, ByteEdit, apply_edits, parse_answer, resolve_edits};
pub use client::{LlmClient, Proposal};
pub use config::{LlmConfig, ModelPrice};
pub use error::{Error, Rejection, Result};
pub use prompt::{Example, FindingRef, FixRequest, Message};
pub use redact::Redactor;
pub use usage::{UsageLine, UsageReport, UsageRow, current_month, usage_report};
