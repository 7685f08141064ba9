//! The HTTP implementation of [`PatternClient`]: blocking `ureq` with connect and read
//! timeouts, bounded retries with exponential backoff, and the bearer token on every request.
//!
//! A request is retried only when retrying cannot apply it twice: reads always; writes only
//! when the service certainly did not process the first attempt (the connection was never
//! made, or the service shed it with `503 overloaded` / `busy`), except an outcome with an
//! idempotency key, which the service counts once however often it arrives.

use std::time::{Duration, Instant};

use agency_core::contract::{PatternList, PatternView, PruneReport, QueryResponse};
use agency_patterns::OutcomeResult;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::PatternClient;
use crate::error::{Error, Result};
use crate::wire::{
    HealsRequest, HealsResponse, Health, LearnRequest, LearnResponse, OutcomeRequest, QueryRequest,
    RetireRequest, Stats,
};

/// Largest response body read, in bytes: a full list of a large store is a few tens of MB.
const MAX_RESPONSE_BYTES: u64 = 256 << 20;

/// Timeouts and retries of an [`HttpClient`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpOptions {
    /// Time to open the TCP connection.
    pub connect_timeout: Duration,
    /// Time from sending the request to the end of the response; above the service's own
    /// request limit (10 s), so that the service's `503 timeout` arrives before ours.
    pub read_timeout: Duration,
    /// Attempts per request, the first included (1 disables retries).
    pub max_attempts: u32,
    /// Wait before the first retry; doubled for each further one.
    pub backoff_base: Duration,
    /// Longest wait between two attempts.
    pub backoff_max: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(15),
            max_attempts: 4,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
        }
    }
}

impl HttpOptions {
    /// The wait before attempt `attempt` (2 for the first retry): the base doubled per retry,
    /// capped, plus up to a quarter of jitter so that many clients shed together do not come
    /// back in lockstep.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(2).min(16);
        let wait = self
            .backoff_base
            .saturating_mul(1 << doublings)
            .min(self.backoff_max);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        wait + wait.mul_f64(f64::from(nanos % 1000) / 4000.0)
    }
}

/// Whether a request may be sent again after a failure that may have reached the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Reads, and writes that the service applies once however often they arrive.
    Always,
    /// Writes that would apply twice: only retried when the first attempt was not processed.
    IfNotProcessed,
}

/// A client of a running `agency serve`.
#[derive(Clone)]
pub struct HttpClient {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
    options: HttpOptions,
}

/// The token is secret: it never reaches a log through `{:?}`.
impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Checks a service URL and returns it without a trailing slash. Only plain `http://` is
/// supported: the service has no TLS.
pub fn normalize_url(url: &str) -> Result<String> {
    let bad = |reason: &str| Error::BadUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let trimmed = url.trim().trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("http://")
        .ok_or_else(|| bad("only http:// is supported (the service has no TLS)"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err(bad("it has no host"));
    }
    if authority.contains('@') || rest.contains(['?', '#']) {
        return Err(bad("credentials, queries and fragments are not allowed"));
    }
    trimmed
        .parse::<ureq::http::Uri>()
        .map_err(|e| bad(&e.to_string()))?;
    Ok(trimmed.to_string())
}

/// Whether `url`'s host is a loopback address (`127.0.0.0/8`, `::1` or `localhost`): the
/// local service's token file may then be used.
pub fn is_loopback(url: &str) -> bool {
    let Ok(url) = normalize_url(url) else {
        return false;
    };
    let authority = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default();
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Percent-encodes a path segment (everything but RFC 3986 unreserved characters).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether a transport error happened before the request could reach the service.
fn not_sent(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => true,
        ureq::Error::Timeout(t) => {
            matches!(t, ureq::Timeout::Connect | ureq::Timeout::Resolve)
        }
        ureq::Error::Io(io) => io.kind() == std::io::ErrorKind::ConnectionRefused,
        _ => false,
    }
}

/// Whether a transport error is worth another attempt at all (not a bad URL or a protocol
/// violation, which would fail the same way again).
fn transient(e: &ureq::Error) -> bool {
    matches!(
        e,
        ureq::Error::ConnectionFailed
            | ureq::Error::HostNotFound
            | ureq::Error::Timeout(_)
            | ureq::Error::Io(_)
    )
}

/// The error document of the service.
#[derive(serde::Deserialize)]
struct ErrorDoc {
    error: ErrorDetail,
}

#[derive(serde::Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

/// One attempt's failure, before deciding whether to retry.
enum Failure {
    Transport(ureq::Error),
    Answer(Error),
}

impl HttpClient {
    /// A client of the service at `url` (e.g. `http://127.0.0.1:8080`), sending `token` as
    /// `Authorization: Bearer` when given. Nothing is sent until the first call.
    pub fn new(url: &str, token: Option<String>, options: HttpOptions) -> Result<Self> {
        let base = normalize_url(url)?;
        let agent = ureq::Agent::config_builder()
            .timeout_connect(Some(options.connect_timeout))
            .timeout_recv_response(Some(options.read_timeout))
            .timeout_recv_body(Some(options.read_timeout))
            .timeout_send_body(Some(options.read_timeout))
            // Error statuses carry the service's error document: read it ourselves.
            .http_status_as_error(false)
            // A loopback service must not be sent through an HTTP proxy from the environment.
            .proxy(if is_loopback(&base) {
                None
            } else {
                ureq::Proxy::try_from_env()
            })
            .build()
            .into();
        Ok(Self {
            base,
            token: token.filter(|t| !t.trim().is_empty()),
            agent,
            options,
        })
    }

    /// The service's base URL, without a trailing slash.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// Sends a request, retrying per `retry` and the options, and decodes a 2xx body as `T`.
    fn call<T: DeserializeOwned>(
        &self,
        method: &'static str,
        path: &str,
        body: Option<&dyn ErasedJson>,
        retry: Retry,
    ) -> Result<T> {
        let url = format!("{}{path}", self.base);
        let started = Instant::now();
        let mut attempt = 1;
        loop {
            let failure = match self.attempt(method, &url, body) {
                Ok(value) => return Ok(value),
                Err(f) => f,
            };
            let retryable = match &failure {
                Failure::Transport(e) => transient(e) && (retry == Retry::Always || not_sent(e)),
                Failure::Answer(Error::Api {
                    status: 503, code, ..
                }) => retry == Retry::Always || code == "overloaded" || code == "busy",
                Failure::Answer(_) => false,
            };
            if !retryable || attempt >= self.options.max_attempts {
                return Err(match failure {
                    Failure::Transport(source) => Error::Unreachable {
                        url,
                        attempts: attempt,
                        source: Box::new(source),
                    },
                    Failure::Answer(e) => e,
                });
            }
            attempt += 1;
            let wait = self.options.backoff(attempt);
            tracing::debug!(
                %url,
                attempt,
                wait_ms = wait.as_millis(),
                elapsed_ms = started.elapsed().as_millis(),
                "retrying the pattern service"
            );
            std::thread::sleep(wait);
        }
    }

    fn attempt<T: DeserializeOwned>(
        &self,
        method: &'static str,
        url: &str,
        body: Option<&dyn ErasedJson>,
    ) -> Result<T, Failure> {
        let mut request = ureq::http::Request::builder().method(method).uri(url);
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let sent = if let Some(body) = body {
            let bytes = body.to_json().map_err(|e| {
                Failure::Answer(Error::BadResponse {
                    method,
                    url: url.to_string(),
                    status: 0,
                    detail: format!("cannot encode the request: {e}"),
                })
            })?;
            let request = request
                .header("content-type", "application/json")
                .body(bytes)
                .map_err(|e| Failure::Transport(e.into()))?;
            self.agent.run(request)
        } else {
            let request = request.body(()).map_err(|e| Failure::Transport(e.into()))?;
            self.agent.run(request)
        };
        let mut response = sent.map_err(Failure::Transport)?;
        let status = response.status().as_u16();
        let bytes = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_vec()
            .map_err(Failure::Transport)?;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&bytes).map_err(|e| {
                Failure::Answer(Error::BadResponse {
                    method,
                    url: url.to_string(),
                    status,
                    detail: format!("the body does not decode: {e}"),
                })
            });
        }
        let Ok(ErrorDoc { error }) = serde_json::from_slice(&bytes) else {
            return Err(Failure::Answer(Error::BadResponse {
                method,
                url: url.to_string(),
                status,
                detail: format!(
                    "not an agency error document: {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                ),
            }));
        };
        let hint = match (status, &self.token) {
            (401, None) => "; this client sent no token: set AGENCY_PATTERNS_TOKEN, or [patterns] token_env in agency.toml (agency serve --print-token shows it)".to_string(),
            (401, Some(_)) => "; the token this client sent was refused: compare it with agency serve --print-token on the service's machine".to_string(),
            (503, _) => format!(
                "; gave up after {} attempts",
                self.options.max_attempts
            ),
            _ => String::new(),
        };
        Err(Failure::Answer(Error::Api {
            method,
            url: url.to_string(),
            status,
            code: error.code,
            message: error.message,
            hint,
        }))
    }
}

/// A request body, serialised once per attempt.
trait ErasedJson {
    fn to_json(&self) -> serde_json::Result<Vec<u8>>;
}

impl<T: Serialize> ErasedJson for T {
    fn to_json(&self) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(self)
    }
}

impl PatternClient for HttpClient {
    fn describe(&self) -> String {
        format!("the pattern service at {}", self.base)
    }

    fn health(&self) -> Result<Health> {
        self.call("GET", "/health", None, Retry::Always)
    }

    fn query(&self, req: &QueryRequest) -> Result<QueryResponse> {
        self.call("POST", "/v1/patterns/query", Some(req), Retry::Always)
    }

    fn learn(&self, req: &LearnRequest) -> Result<LearnResponse> {
        // A second learn of the same rewrite merges and raises its support: not idempotent.
        self.call("POST", "/v1/patterns", Some(req), Retry::IfNotProcessed)
    }

    fn record_outcome(&self, req: &OutcomeRequest) -> Result<OutcomeResult> {
        let retry = if req.idempotency_key.is_some() {
            Retry::Always
        } else {
            Retry::IfNotProcessed
        };
        self.call("POST", "/v1/outcomes", Some(req), retry)
    }

    fn list(&self) -> Result<PatternList> {
        self.call("GET", "/v1/patterns", None, Retry::Always)
    }

    fn show(&self, id: &str) -> Result<PatternView> {
        let path = format!("/v1/patterns/{}", encode_segment(id));
        self.call("GET", &path, None, Retry::Always)
    }

    fn retire(&self, id: &str, reason: &str) -> Result<PatternView> {
        // Retiring twice keeps the first time and reason: safe to repeat.
        let path = format!("/v1/patterns/{}", encode_segment(id));
        let body = RetireRequest {
            reason: reason.to_string(),
        };
        self.call("DELETE", &path, Some(&body), Retry::Always)
    }

    fn prune(&self) -> Result<PruneReport> {
        // A second prune finds nothing more to retire: safe to repeat.
        self.call("POST", "/v1/prune", None, Retry::Always)
    }

    fn stats(&self) -> Result<Stats> {
        self.call("GET", "/v1/stats", None, Retry::Always)
    }

    fn record_heals(&self, req: &HealsRequest) -> Result<HealsResponse> {
        // Every event carries its idempotency key from the healer: a retry counts once.
        let retry = if req.heals.iter().all(|h| h.idempotency_key.is_some()) {
            Retry::Always
        } else {
            Retry::IfNotProcessed
        };
        self.call("POST", "/v1/heals", Some(req), retry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_normalised() {
        assert_eq!(
            normalize_url("http://127.0.0.1:8080/").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            normalize_url(" http://svc.internal:80/agency ").unwrap(),
            "http://svc.internal:80/agency"
        );
        for bad in [
            "https://127.0.0.1:8080",
            "127.0.0.1:8080",
            "http://",
            "http://u:p@host",
            "http://host/?x=1",
        ] {
            let err = normalize_url(bad).unwrap_err();
            assert!(matches!(err, Error::BadUrl { .. }), "{bad}");
            assert!(err.to_string().contains(bad.trim()), "{err}");
        }
    }

    #[test]
    fn loopback_hosts() {
        for url in [
            "http://127.0.0.1:8080",
            "http://127.1.2.3",
            "http://localhost:1",
            "http://[::1]:8080",
        ] {
            assert!(is_loopback(url), "{url}");
        }
        for url in ["http://10.0.0.1:8080", "http://example.com", "nonsense"] {
            assert!(!is_loopback(url), "{url}");
        }
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode_segment("style-e711.x_y~"), "style-e711.x_y~");
        assert_eq!(encode_segment("a/b c?é"), "a%2Fb%20c%3F%C3%A9");
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let o = HttpOptions {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(300),
            ..HttpOptions::default()
        };
        let within = |attempt, lo: u64| {
            let d = o.backoff(attempt);
            assert!(
                d >= Duration::from_millis(lo) && d <= Duration::from_millis(lo * 5 / 4),
                "attempt {attempt}: {d:?}"
            );
        };
        within(2, 100);
        within(3, 200);
        within(4, 300);
        within(40, 300);
    }

    #[test]
    fn debug_output_hides_the_token() {
        let c = HttpClient::new(
            "http://127.0.0.1:1",
            Some("secret-token".into()),
            HttpOptions::default(),
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("secret-token"));
    }

    /// Nothing listens on a port we just bound and released: every attempt is refused, each
    /// is counted, and the error names the URL and the way out.
    #[test]
    fn a_refused_connection_is_retried_then_reported() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let options = HttpOptions {
            max_attempts: 3,
            backoff_base: Duration::from_millis(1),
            ..HttpOptions::default()
        };
        let c = HttpClient::new(&format!("http://127.0.0.1:{port}"), None, options).unwrap();
        let err = c.list().unwrap_err();
        match &err {
            Error::Unreachable { attempts, url, .. } => {
                assert_eq!(*attempts, 3);
                assert!(url.ends_with("/v1/patterns"), "{url}");
            }
            other => panic!("expected Unreachable, got {other:?}"),
        }
        assert!(err.to_string().contains("agency serve"), "{err}");
    }

    /// A one-shot HTTP server on a thread: answers each connection with the next canned
    /// response and records the request lines it saw.
    fn canned(responses: Vec<String>) -> (String, std::thread::JoinHandle<Vec<String>>) {
        use std::io::{BufRead as _, BufReader, Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for response in responses {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                seen.push(line.trim().to_string());
                let mut length = 0;
                loop {
                    let mut header = String::new();
                    reader.read_line(&mut header).unwrap();
                    if header.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let mut stream = stream;
                stream.write_all(response.as_bytes()).unwrap();
            }
            seen
        });
        (url, handle)
    }

    /// A complete HTTP/1.1 response with `body`.
    fn response(status: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    fn overloaded() -> String {
        response(
            "503 Service Unavailable",
            r#"{"error": {"code": "overloaded", "message": "retry please"}}"#,
        )
    }

    fn healthy() -> String {
        response(
            "200 OK",
            r#"{"status": "ok", "ready": true, "patterns": 3}"#,
        )
    }

    fn fast() -> HttpOptions {
        HttpOptions {
            backoff_base: Duration::from_millis(1),
            ..HttpOptions::default()
        }
    }

    #[test]
    fn a_503_is_retried_until_an_answer() {
        let (url, server) = canned(vec![overloaded(), overloaded(), healthy()]);
        let c = HttpClient::new(&url, None, fast()).unwrap();
        let health = c.health().unwrap();
        assert_eq!(health.patterns, 3);
        assert_eq!(server.join().unwrap().len(), 3);
    }

    #[test]
    fn a_learn_that_timed_out_is_not_sent_again() {
        let (url, server) = canned(vec![response(
            "503 Service Unavailable",
            r#"{"error": {"code": "timeout", "message": "too slow"}}"#,
        )]);
        let c = HttpClient::new(&url, Some("t".repeat(40)), fast()).unwrap();
        let req = LearnRequest {
            version: None,
            id: "p".into(),
            category: "style".into(),
            rule: "X".into(),
            title: "t".into(),
            message: "m".into(),
            explanation: String::new(),
            applicability: "safe".into(),
            before: "a".into(),
            after: "b".into(),
            examples: vec![],
            source: "heal".into(),
        };
        let err = c.learn(&req).unwrap_err();
        assert_eq!(err.code(), Some("timeout"));
        assert_eq!(err.status(), Some(503));
        assert_eq!(server.join().unwrap(), vec!["POST /v1/patterns HTTP/1.1"]);
    }

    #[test]
    fn an_answer_that_is_not_ours_is_reported_as_such() {
        let (url, server) = canned(vec![
            "HTTP/1.1 502 Bad Gateway\r\nconnection: close\r\ncontent-length: 7\r\n\r\nnginx!!"
                .to_string(),
        ]);
        let c = HttpClient::new(&url, None, fast()).unwrap();
        let err = c.show("a b").unwrap_err();
        assert!(
            matches!(err, Error::BadResponse { status: 502, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("nginx!!"), "{err}");
        assert_eq!(
            server.join().unwrap(),
            vec!["GET /v1/patterns/a%20b HTTP/1.1"]
        );
    }
}
