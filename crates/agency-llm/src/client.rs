//! [`LlmClient::propose_fix`]: refuse `never_send` files, redact, build the prompt, answer
//! identical requests from the cache, check the budget, wait for a machine-wide slot, call the
//! Chat Completions API with bounded retries, record the cost, then parse, restore and locate
//! the edits. A [`Proposal`] exists only when every edit was located; anything else is an
//! [`Error`].

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::GlobSet;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::answer::{ByteEdit, parse_answer, resolve_edits};
use crate::config::{LlmConfig, never_send_set};
use crate::prompt::{FixRequest, Message, build_messages};
use crate::redact::Redactor;
use crate::slots::acquire_slot;
use crate::usage::{CallStatus, UsageDb, UsageReport};
use crate::{Error, Rejection, Result};

/// The largest response body read.
const MAX_RESPONSE_BYTES: u64 = 4 * 1024 * 1024;

/// The longest wait a `Retry-After` may ask for; a server asking for more is given up on.
const MAX_RETRY_AFTER: Duration = Duration::from_mins(2);

/// The longest wait between attempts without a `Retry-After`.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A client of one configured model, tied to one data directory (usage, cache and slots live
/// under `<data_dir>/llm/`). Cheap to share between threads by reference.
pub struct LlmClient {
    config: LlmConfig,
    api_key: Option<String>,
    url: String,
    agent: ureq::Agent,
    never_send: GlobSet,
    usage: UsageDb,
    data_dir: PathBuf,
}

impl std::fmt::Debug for LlmClient {
    /// Everything but the API key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmClient")
            .field("url", &self.url)
            .field("model", &self.config.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .field("usage", &self.usage.path())
            .finish_non_exhaustive()
    }
}

/// A located fix from the model. Its edits are byte ranges of the file the request named,
/// sorted and non-overlapping, with secrets restored.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    pub edits: Vec<ByteEdit>,
    /// The model's explanation, secrets restored.
    pub explanation: String,
    pub model: String,
    /// Answered from the cache: no request was sent and nothing was spent.
    pub cached: bool,
    /// HTTP attempts this proposal took (0 when cached).
    pub attempts: u32,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub cost_usd: f64,
    /// sha256 of the model and the (redacted) messages: the cache key.
    pub request_hash: String,
}

/// The request body of `POST /chat/completions`.
#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: &'a [Message],
    temperature: f64,
    max_tokens: u32,
    stream: bool,
}

#[derive(Deserialize)]
struct ChatResponse {
    choices: Vec<Choice>,
    usage: Option<TokenUsage>,
}

#[derive(Deserialize)]
struct Choice {
    message: ChoiceMessage,
}

#[derive(Deserialize)]
struct ChoiceMessage {
    content: Option<String>,
}

#[derive(Deserialize)]
struct TokenUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
}

/// A completion as the client uses it.
struct Completion {
    content: String,
    tokens_in: u64,
    tokens_out: u64,
    attempts: u32,
}

/// Why one attempt failed, before deciding whether to retry.
enum Failure {
    /// Worth another attempt after the wait (`Retry-After` when the server gave one).
    Retry {
        error: Error,
        retry_after: Option<Duration>,
    },
    /// Final.
    Fatal(Error),
}

impl LlmClient {
    /// A client for `config` (validated again here), keeping its usage record and slots under
    /// `data_dir`. `api_key` is the value of the variable `api_key_env` names (see
    /// [`LlmConfig::api_key`]); `None` sends no `Authorization` header.
    pub fn new(config: LlmConfig, data_dir: &Path, api_key: Option<String>) -> Result<Self> {
        config.validate()?;
        let never_send = never_send_set(&config.never_send)?;
        let url = format!(
            "{}/chat/completions",
            config.base_url.trim().trim_end_matches('/')
        );
        let loopback = is_loopback(&url);
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(config.timeout_s)))
            .http_status_as_error(false)
            // A loopback server must not be reached through a proxy from the environment.
            .proxy(if loopback {
                None
            } else {
                ureq::Proxy::try_from_env()
            })
            .build()
            .into();
        Ok(Self {
            usage: UsageDb::open(data_dir)?,
            config,
            api_key: api_key.filter(|k| !k.trim().is_empty()),
            url,
            agent,
            never_send,
            data_dir: data_dir.to_path_buf(),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &LlmConfig {
        &self.config
    }

    /// [`Error::NeverSend`] when `file` (relative to the repository root) matches a
    /// `never_send` glob.
    pub fn check_sendable(&self, file: &str) -> Result<()> {
        let file = file.trim_start_matches("./");
        if !self.never_send.is_match(file) {
            return Ok(());
        }
        // Globs expand to one or two patterns each; name the configured one in the message.
        let glob = self
            .config
            .never_send
            .iter()
            .find(|g| never_send_set(std::slice::from_ref(g)).is_ok_and(|s| s.is_match(file)))
            .cloned()
            .unwrap_or_default();
        Err(Error::NeverSend {
            file: file.to_string(),
            glob,
        })
    }

    /// This month's usage of the data directory against the configured budget.
    pub fn usage(&self, month: &str) -> Result<UsageReport> {
        self.usage.report(month, self.config.monthly_budget_usd)
    }

    /// The worst-case cost of sending `messages`: prompt tokens estimated at 4 bytes each,
    /// plus `max_tokens` of output, at the model's price.
    pub fn estimate_cost(&self, messages: &[Message]) -> f64 {
        let bytes: usize = messages.iter().map(|m| m.content.len() + 16).sum();
        self.config
            .price()
            .cost_usd(bytes.div_ceil(4) as u64, u64::from(self.config.max_tokens))
    }

    /// Asks the model for a fix of `request` (see the module doc for the steps).
    ///
    /// Errors the caller should end the finding `skipped` with ([`Error::skip_reason`]):
    /// [`Error::NeverSend`], [`Error::BudgetExhausted`]. [`Error::Rejected`] carries a message
    /// meant to be passed back as `previous_failure` on the next attempt.
    pub fn propose_fix(&self, request: &FixRequest<'_>) -> Result<Proposal> {
        let _span = tracing::debug_span!(
            "llm_fix",
            file = request.finding.file,
            rule = request.finding.rule
        )
        .entered();
        self.check_sendable(request.finding.file)?;
        check_region(request.finding.file, request.file_text, &request.region)?;
        let mut redactor = Redactor::new();
        let messages = build_messages(request, &mut redactor);
        if !redactor.is_empty() {
            tracing::debug!(secrets = redactor.len(), "secrets redacted from the prompt");
        }
        let hash = request_hash(&self.config.model, &messages);
        let model = self.config.model.as_str();
        let category = request.finding.category;

        if let Some(content) = self.usage.cached(&hash)? {
            self.usage.record_cache_hit(model, category, &hash)?;
            let (edits, explanation) =
                locate(&content, &redactor, request.file_text, &request.region)?;
            return Ok(Proposal {
                edits,
                explanation,
                model: model.to_string(),
                cached: true,
                attempts: 0,
                tokens_in: 0,
                tokens_out: 0,
                cost_usd: 0.0,
                request_hash: hash,
            });
        }

        let budget = self.config.monthly_budget_usd;
        let estimate = self.estimate_cost(&messages);
        // A cheap check before waiting for a slot; the reservation below is the binding one.
        let spent = self.usage.spent(&crate::usage::current_month())?;
        if spent + estimate > budget {
            return Err(Error::BudgetExhausted {
                spent_usd: spent,
                budget_usd: budget,
                estimate_usd: estimate,
            });
        }
        let slot = acquire_slot(
            &self.data_dir,
            self.config.max_concurrent,
            Duration::from_secs(self.config.slot_wait_s),
        )?;
        let reservation = self
            .usage
            .reserve(model, category, &hash, estimate, budget)?;
        let outcome = self.chat(&messages);
        drop(slot);
        let completion = match outcome {
            Ok(completion) => completion,
            Err(error) => {
                let (cost, status) =
                    if matches!(error, Error::BadResponse { .. } | Error::Timeout { .. }) {
                        // The server answered 2xx, or may still be generating the answer we gave
                        // up on: it may charge for it, so the estimate stays spent.
                        (estimate, CallStatus::Unknown)
                    } else {
                        (0.0, CallStatus::Failed)
                    };
                self.usage.finish(reservation, 0, 0, cost, status)?;
                return Err(error);
            }
        };
        let cost = self
            .config
            .price()
            .cost_usd(completion.tokens_in, completion.tokens_out);
        self.usage.finish(
            reservation,
            completion.tokens_in,
            completion.tokens_out,
            cost,
            CallStatus::Answered,
        )?;
        self.usage.store_answer(&hash, model, &completion.content)?;
        let (edits, explanation) = locate(
            &completion.content,
            &redactor,
            request.file_text,
            &request.region,
        )?;
        Ok(Proposal {
            edits,
            explanation,
            model: model.to_string(),
            cached: false,
            attempts: completion.attempts,
            tokens_in: completion.tokens_in,
            tokens_out: completion.tokens_out,
            cost_usd: cost,
            request_hash: hash,
        })
    }

    /// Sends the messages, retrying 408, 429, 5xx, timeouts and connection failures up to
    /// `max_attempts` times.
    fn chat(&self, messages: &[Message]) -> Result<Completion> {
        let body = serde_json::to_vec(&ChatRequest {
            model: &self.config.model,
            messages,
            temperature: 0.0,
            max_tokens: self.config.max_tokens,
            stream: false,
        })
        .expect("a chat request always serialises: strings and numbers");
        let max_attempts = self.config.max_attempts;
        let mut attempt = 1;
        loop {
            let failure = match self.attempt(&body, attempt, messages) {
                Ok(completion) => return Ok(completion),
                Err(failure) => failure,
            };
            let (error, retry_after) = match failure {
                Failure::Fatal(error) => return Err(error),
                Failure::Retry { error, .. } if attempt >= max_attempts => return Err(error),
                Failure::Retry { error, retry_after } => (error, retry_after),
            };
            let wait = match retry_after {
                Some(wait) if wait > MAX_RETRY_AFTER => {
                    tracing::debug!(wait_s = wait.as_secs(), "Retry-After too long, giving up");
                    return Err(error);
                }
                Some(wait) => wait,
                None => backoff(self.config.retry_backoff_ms, attempt),
            };
            tracing::debug!(
                url = %self.url,
                attempt,
                wait_ms = wait.as_millis(),
                error = %error,
                "retrying the model server"
            );
            std::thread::sleep(wait);
            attempt += 1;
        }
    }

    fn attempt(
        &self,
        body: &[u8],
        attempt: u32,
        messages: &[Message],
    ) -> std::result::Result<Completion, Failure> {
        let mut request = ureq::http::Request::builder()
            .method("POST")
            .uri(&self.url)
            .header("content-type", "application/json");
        if let Some(key) = &self.api_key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        let request = request.body(body.to_vec()).map_err(|e| {
            Failure::Fatal(Error::Unreachable {
                url: self.url.clone(),
                attempts: attempt,
                detail: e.to_string(),
            })
        })?;
        let mut response = match self.agent.run(request) {
            Ok(response) => response,
            Err(e) => return Err(self.transport_failure(&e, attempt)),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let bytes = match response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_vec()
        {
            Ok(bytes) => bytes,
            Err(e) => return Err(self.transport_failure(&e, attempt)),
        };
        if (200..300).contains(&status) {
            return self
                .completion(&bytes, attempt, messages)
                .map_err(Failure::Fatal);
        }
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned();
        let hint = match status {
            401 | 403 if self.api_key.is_none() => {
                "; no API key was sent: set [llm] api_key_env to the name of the variable holding it"
            }
            401 | 403 => {
                "; the API key was refused: check the variable [llm] api_key_env names"
            }
            404 => "; check [llm] base_url (the API root, ending in /v1) and [llm] model",
            429 => "; the provider is rate-limiting: lower [llm] max_concurrent or wait",
            _ => "",
        }
        .to_string();
        let error = Error::Status {
            url: self.url.clone(),
            status,
            attempts: attempt,
            body: text.trim().to_string(),
            hint,
        };
        if status == 408 || status == 429 || (500..600).contains(&status) {
            Err(Failure::Retry { error, retry_after })
        } else {
            Err(Failure::Fatal(error))
        }
    }

    fn transport_failure(&self, e: &ureq::Error, attempt: u32) -> Failure {
        let error = match e {
            ureq::Error::Timeout(_) => Error::Timeout {
                url: self.url.clone(),
                timeout_s: self.config.timeout_s,
                attempts: attempt,
            },
            other => Error::Unreachable {
                url: self.url.clone(),
                attempts: attempt,
                detail: other.to_string(),
            },
        };
        let transient = matches!(
            e,
            ureq::Error::Timeout(_)
                | ureq::Error::ConnectionFailed
                | ureq::Error::HostNotFound
                | ureq::Error::Io(_)
        );
        if transient {
            Failure::Retry {
                error,
                retry_after: None,
            }
        } else {
            Failure::Fatal(error)
        }
    }

    /// Decodes a 2xx body. Without `usage`, tokens are estimated at 4 bytes each.
    fn completion(&self, bytes: &[u8], attempt: u32, messages: &[Message]) -> Result<Completion> {
        let bad = |detail: String| Error::BadResponse {
            url: self.url.clone(),
            detail,
        };
        let response: ChatResponse = serde_json::from_slice(bytes).map_err(|e| {
            bad(format!(
                "{e} in {:?}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            ))
        })?;
        let content = response
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| bad("no choices".to_string()))?
            .message
            .content
            .ok_or_else(|| bad("the first choice has no content".to_string()))?;
        let (tokens_in, tokens_out) = if let Some(usage) = response.usage {
            (usage.prompt_tokens, usage.completion_tokens)
        } else {
            let bytes: usize = messages.iter().map(|m| m.content.len() + 16).sum();
            (bytes.div_ceil(4) as u64, content.len().div_ceil(4) as u64)
        };
        Ok(Completion {
            content,
            tokens_in,
            tokens_out,
            attempts: attempt,
        })
    }
}

/// Parses the answer, puts the secrets back and locates the edits.
fn locate(
    content: &str,
    redactor: &Redactor,
    file_text: &str,
    region: &Range<usize>,
) -> Result<(Vec<ByteEdit>, String)> {
    let mut answer = parse_answer(content).map_err(Error::Rejected)?;
    for edit in &mut answer.edits {
        edit.find = redactor.restore(&edit.find).map_err(Error::Rejected)?;
        edit.replace = redactor.restore(&edit.replace).map_err(Error::Rejected)?;
    }
    answer.explanation = redactor
        .restore(&answer.explanation)
        .map_err(Error::Rejected)?;
    let edits = resolve_edits(file_text, region, &answer).map_err(Error::Rejected)?;
    Ok((edits, answer.explanation))
}

/// The region must lie in the file on character boundaries.
fn check_region(file: &str, text: &str, region: &Range<usize>) -> Result<()> {
    if region.start <= region.end
        && region.end <= text.len()
        && text.is_char_boundary(region.start)
        && text.is_char_boundary(region.end)
    {
        Ok(())
    } else {
        Err(Error::BadRegion {
            file: file.to_string(),
            start: region.start,
            end: region.end,
            len: text.len(),
        })
    }
}

/// The cache key: sha256 over the model and the messages as sent.
pub fn request_hash(model: &str, messages: &[Message]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(model.as_bytes());
    hasher.update([0]);
    for message in messages {
        hasher.update(message.role.as_bytes());
        hasher.update([0]);
        hasher.update((message.content.len() as u64).to_le_bytes());
        hasher.update(message.content.as_bytes());
    }
    hasher
        .finalize()
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            use std::fmt::Write as _;
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Exponential backoff: `base_ms`, doubled per retry, capped.
fn backoff(base_ms: u64, attempt: u32) -> Duration {
    let factor = 1u64 << (attempt.saturating_sub(1)).min(16);
    Duration::from_millis(base_ms.saturating_mul(factor)).min(MAX_BACKOFF)
}

/// A `Retry-After` value: delay seconds, or an HTTP date (IMF-fixdate) turned into a delay from
/// now (a date in the past means no wait).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = parse_http_date(value)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs() as i64;
    Some(Duration::from_secs((at - now).max(0) as u64))
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` → unix seconds.
fn parse_http_date(value: &str) -> Option<i64> {
    let (_, rest) = value.split_once(", ")?;
    let parts: Vec<&str> = rest.split_whitespace().collect();
    let [day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| m == month)? as i64 + 1;
    let day: i64 = day.parse().ok()?;
    let year: i64 = year.parse().ok()?;
    let hms: Vec<i64> = time
        .split(':')
        .map(str::parse)
        .collect::<std::result::Result<_, _>>()
        .ok()?;
    let [h, m, s] = hms.as_slice() else {
        return None;
    };
    if !(1..=31).contains(&day) || *h > 23 || *m > 59 || *s > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s)
}

/// Howard Hinnant's `days_from_civil`: (year, month, day) to days since 1970-01-01.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Whether the URL's host is a loopback address or `localhost`.
fn is_loopback(url: &str) -> bool {
    let Ok(uri) = url.parse::<ureq::http::Uri>() else {
        return false;
    };
    uri.host().is_some_and(|host| {
        host == "localhost"
            || host
                .trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    })
}

/// Rejections are a kind of error for the caller; this lets `?` lift them.
impl From<Rejection> for Error {
    fn from(rejection: Rejection) -> Self {
        Error::Rejected(rejection)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO),
            "a past date means now"
        );
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("Sun, 06 Foo 1994 08:49:37 GMT"), None);
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(500, 1), Duration::from_millis(500));
        assert_eq!(backoff(500, 3), Duration::from_secs(2));
        assert_eq!(backoff(500, 40), MAX_BACKOFF);
    }

    #[test]
    fn hash_depends_on_model_and_messages() {
        let m = |c: &str| {
            vec![Message {
                role: "user",
                content: c.to_string(),
            }]
        };
        assert_eq!(request_hash("a", &m("x")), request_hash("a", &m("x")));
        assert_ne!(request_hash("a", &m("x")), request_hash("b", &m("x")));
        assert_ne!(request_hash("a", &m("x")), request_hash("a", &m("y")));
        assert_eq!(request_hash("a", &m("x")).len(), 64);
    }

    #[test]
    fn loopback_hosts() {
        assert!(is_loopback("http://127.0.0.1:8080/v1/chat/completions"));
        assert!(is_loopback("http://localhost/v1"));
        assert!(is_loopback("http://[::1]:1/v1"));
        assert!(!is_loopback("https://api.openai.com/v1"));
    }
}
