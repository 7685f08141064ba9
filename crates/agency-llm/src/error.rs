//! The crate's one error type. Every message says what failed, where, why and what to do next;
//! [`Error::skip_reason`] tells the healer which failures end a finding `skipped` rather than
//! `failed`.

use std::path::PathBuf;

/// Why a model's answer was not turned into edits. The message is written to be fed back to
/// the model as the previous attempt's failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("the answer is not the requested JSON object: {detail}")]
    NotJson { detail: String },
    #[error("the answer proposes no edit: {explanation}")]
    NoEdits { explanation: String },
    #[error("edit {index}: `find` is empty; it must quote code from the region")]
    EmptyFind { index: usize },
    #[error("edit {index}: `find` does not occur in the file: {find:?}")]
    FindAbsent { index: usize, find: String },
    #[error(
        "edit {index}: `find` occurs {count} times in the region; quote more surrounding code so that it occurs once: {find:?}"
    )]
    FindAmbiguous {
        index: usize,
        count: usize,
        find: String,
    },
    #[error("edit {index}: `find` is outside the region that may be edited: {find:?}")]
    OutsideRegion { index: usize, find: String },
    #[error("edits {first} and {second} overlap; each edit must change different code")]
    Overlap { first: usize, second: usize },
    #[error("the answer uses the placeholder {placeholder}, which stands for no redacted value")]
    UnknownPlaceholder { placeholder: String },
}

/// Errors of the generated-fix tier.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid [llm] configuration: `{key}` {message}")]
    Config { key: &'static str, message: String },
    #[error("cannot read the [llm] configuration in {path}: {message}; fix the file")]
    ConfigFile { path: PathBuf, message: String },
    #[error(
        "{file} matches the [llm] never_send glob `{glob}`: it is never sent to a model; remove the glob to allow it"
    )]
    NeverSend { file: String, glob: String },
    #[error(
        "the monthly LLM budget is exhausted: ${spent_usd:.4} of ${budget_usd:.2} spent this month, and this call may cost up to ${estimate_usd:.4}; raise [llm] monthly_budget_usd or wait for next month"
    )]
    BudgetExhausted {
        spent_usd: f64,
        budget_usd: f64,
        estimate_usd: f64,
    },
    #[error(
        "all {max_concurrent} LLM request slots under {dir} stayed busy for {waited_s} s: other agency processes are calling the model; wait for them, or raise [llm] slot_wait_s"
    )]
    SlotsBusy {
        dir: PathBuf,
        max_concurrent: usize,
        waited_s: u64,
    },
    #[error("cannot take an LLM request slot: {0}")]
    Slot(#[source] agency_fs::Error),
    #[error("cannot create {path}: {source}; check that the data directory is writable")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot use the LLM usage database {path}: {source}; check that the directory is writable, or move the file away to start a new record"
    )]
    Usage {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "the LLM usage database {path} has format version {found}, newer than this agency understands ({supported}); upgrade agency"
    )]
    UsageVersion {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error(
        "cannot reach the model server at {url} after {attempts} attempt(s): {detail}; check [llm] base_url and that the server is running"
    )]
    Unreachable {
        url: String,
        attempts: u32,
        detail: String,
    },
    #[error(
        "the model server at {url} did not answer within {timeout_s} s on any of {attempts} attempt(s); raise [llm] timeout_s or use a faster model"
    )]
    Timeout {
        url: String,
        timeout_s: u64,
        attempts: u32,
    },
    #[error(
        "the model server at {url} answered HTTP {status} after {attempts} attempt(s): {body}{hint}"
    )]
    Status {
        url: String,
        status: u16,
        attempts: u32,
        body: String,
        hint: String,
    },
    #[error(
        "the model server at {url} sent a body that is not a chat completion: {detail}; check that [llm] base_url points at an OpenAI-compatible /v1 endpoint"
    )]
    BadResponse { url: String, detail: String },
    #[error("the model's answer was rejected: {0}")]
    Rejected(#[source] Rejection),
    #[error(
        "the region {start}..{end} is not a range of {file} ({len} bytes) on character boundaries; the caller passed a wrong region"
    )]
    BadRegion {
        file: String,
        start: usize,
        end: usize,
        len: usize,
    },
}

impl Error {
    /// For failures that mean "this tier does not apply here" rather than "the fix failed":
    /// the reason the caller should give when it ends the finding `skipped`.
    pub fn skip_reason(&self) -> Option<String> {
        match self {
            Error::NeverSend { .. } | Error::BudgetExhausted { .. } => Some(self.to_string()),
            _ => None,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
