//! An OpenAI-compatible fake of `POST /v1/chat/completions` for tests (feature `test-server`):
//! an axum app on `127.0.0.1:0` in its own tokio runtime, answering from a script.
//!
//! Each request takes the next [`Scripted`] answer from the queue (or the default answer when
//! the queue is empty; with neither, HTTP 500). The server counts calls, keeps every request
//! body (so a test can assert that a planted secret never arrived) and `Authorization` header,
//! and the highest number of requests it had in flight at once.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

/// One scripted answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scripted {
    /// HTTP status (200 for a completion).
    pub status: u16,
    /// The assistant message's content of a 200 answer; `None` sends `"content": null`.
    pub content: Option<String>,
    /// `usage.prompt_tokens` and `usage.completion_tokens`; `None` leaves `usage` out.
    pub usage: Option<(u64, u64)>,
    /// How long the server waits before answering.
    pub delay: Duration,
    /// A `Retry-After` header value.
    pub retry_after: Option<String>,
    /// A body sent verbatim instead of the JSON completion (a malformed answer).
    pub raw_body: Option<String>,
}

impl Scripted {
    /// A 200 completion whose message content is `content`, with 100 tokens in and 20 out.
    pub fn answer(content: &str) -> Self {
        Self {
            status: 200,
            content: Some(content.to_string()),
            usage: Some((100, 20)),
            delay: Duration::ZERO,
            retry_after: None,
            raw_body: None,
        }
    }

    /// An error status with a small OpenAI-style error body.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            content: None,
            usage: None,
            delay: Duration::ZERO,
            retry_after: None,
            raw_body: None,
        }
    }

    /// A 200 answer whose body is `body` verbatim.
    pub fn malformed(body: &str) -> Self {
        Self {
            raw_body: Some(body.to_string()),
            ..Self::status(200)
        }
    }

    /// The same answer with these token counts (`None`: no `usage` field).
    #[must_use]
    pub fn with_usage(mut self, usage: Option<(u64, u64)>) -> Self {
        self.usage = usage;
        self
    }

    /// The same answer, sent after `delay`.
    #[must_use]
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// The same answer with a `Retry-After` header.
    #[must_use]
    pub fn with_retry_after(mut self, value: &str) -> Self {
        self.retry_after = Some(value.to_string());
        self
    }
}

#[derive(Default)]
struct Shared {
    queue: Mutex<VecDeque<Scripted>>,
    default: Mutex<Option<Scripted>>,
    requests: Mutex<Vec<String>>,
    authorizations: Mutex<Vec<Option<String>>>,
    calls: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// Test-only state: a panic elsewhere must not hide the record.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The running fake server; stopped when dropped.
pub struct TestServer {
    base_url: String,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl TestServer {
    /// Starts a server on `127.0.0.1:0` with an empty script.
    pub fn start() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .with_state(Arc::clone(&shared));
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        runtime.spawn(async move {
            let server = axum::serve(listener, app).with_graceful_shutdown(async {
                // Either a send or the sender's drop ends the wait.
                let _ = stopped.await;
            });
            // The server only ends on shutdown; an accept error has nowhere to go in a test.
            let _ = server.await;
        });
        Ok(Self {
            base_url: format!("http://{addr}/v1"),
            shared,
            shutdown: Some(shutdown),
            runtime: Some(runtime),
        })
    }

    /// The API root to configure as `base_url` (`http://127.0.0.1:<port>/v1`).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Queues an answer for the next request that finds the queue non-empty.
    pub fn push(&self, answer: Scripted) {
        lock(&self.shared.queue).push_back(answer);
    }

    /// The answer given whenever the queue is empty.
    pub fn set_default(&self, answer: Scripted) {
        *lock(&self.shared.default) = Some(answer);
    }

    /// Requests received so far.
    pub fn calls(&self) -> usize {
        self.shared.calls.load(Ordering::SeqCst)
    }

    /// Every request body received, in order of arrival.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.shared.requests).clone()
    }

    /// The `Authorization` header of every request, in order of arrival.
    pub fn authorizations(&self) -> Vec<Option<String>> {
        lock(&self.shared.authorizations).clone()
    }

    /// The most requests that were in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            // The server task may already be gone; then there is nothing to stop.
            let _ = shutdown.send(());
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Counts a request in flight until dropped, so that a request the client abandons (a
/// timeout) is counted out too.
struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared) -> Self {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn chat(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: String) -> Response {
    let _in_flight = InFlight::enter(&shared);
    shared.calls.fetch_add(1, Ordering::SeqCst);
    lock(&shared.authorizations).push(
        headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    );
    let model = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("model").and_then(|m| m.as_str()).map(str::to_string))
        .unwrap_or_default();
    lock(&shared.requests).push(body);
    let scripted = lock(&shared.queue)
        .pop_front()
        .or_else(|| lock(&shared.default).clone());
    let Some(scripted) = scripted else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "test server: no scripted answer left",
        )
            .into_response();
    };
    if !scripted.delay.is_zero() {
        tokio::time::sleep(scripted.delay).await;
    }
    let status = StatusCode::from_u16(scripted.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = match (&scripted.raw_body, status.is_success()) {
        (Some(raw), _) => raw.clone(),
        (None, true) => {
            let mut doc = serde_json::json!({
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "model": model,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": scripted.content},
                    "finish_reason": "stop"
                }]
            });
            if let Some((prompt, completion)) = scripted.usage {
                doc["usage"] = serde_json::json!({
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion
                });
            }
            doc.to_string()
        }
        (None, false) => serde_json::json!({
            "error": {"message": format!("scripted status {}", scripted.status), "type": "test"}
        })
        .to_string(),
    };
    let mut response = (status, [("content-type", "application/json")], body).into_response();
    if let Some(value) = scripted
        .retry_after
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        response.headers_mut().insert("retry-after", value);
    }
    response
}
