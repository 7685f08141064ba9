//! The pattern service: the pattern store behind a versioned JSON API over HTTP (axum on tokio).
//!
//! [`router`] builds the whole application, layers included, so tests drive it in-process;
//! [`serve`] runs it on a listener until a shutdown signal, then drains in-flight requests within
//! a deadline and flushes the store. Handlers are thin and run every store call on the blocking
//! pool. This is the only crate that runs tokio (Architecture Invariant 6).

pub mod api;
pub mod error;
pub mod metrics;
pub mod token;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use agency_patterns::PatternStore;
use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower::ServiceBuilder;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::{DefaultOnResponse, TraceLayer};

pub use error::{ApiError, Error, Result};
pub use metrics::Metrics;
pub use token::{TOKEN_FILE, load_or_create_token};

/// Default address: loopback only.
pub const DEFAULT_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
/// Extra time after the request timeout that shutdown waits for in-flight requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How to run the service.
#[derive(Clone)]
pub struct ServiceConfig {
    pub addr: SocketAddr,
    /// The bearer token that writes must present.
    pub token: String,
    /// Largest request body, in bytes (1 MiB by default).
    pub body_limit_bytes: usize,
    /// Per-request time limit (10 s by default); past it the client gets a 503.
    pub request_timeout: Duration,
    /// Requests in flight at once (256 by default); more are refused with a 503 at once.
    pub max_concurrency: usize,
}

impl ServiceConfig {
    /// Defaults on [`DEFAULT_ADDR`] with `token`.
    pub fn new(token: impl Into<String>) -> Self {
        Self {
            addr: DEFAULT_ADDR,
            token: token.into(),
            body_limit_bytes: 1 << 20,
            request_timeout: Duration::from_secs(10),
            max_concurrency: 256,
        }
    }
}

/// The token is secret: it never reaches a log through `{:?}`.
impl std::fmt::Debug for ServiceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceConfig")
            .field("addr", &self.addr)
            .field("token", &"<redacted>")
            .field("body_limit_bytes", &self.body_limit_bytes)
            .field("request_timeout", &self.request_timeout)
            .field("max_concurrency", &self.max_concurrency)
            .finish()
    }
}

/// Refuses a non-loopback address unless the caller passed the explicit flag.
pub fn check_addr(addr: SocketAddr, allow_non_loopback: bool) -> Result<()> {
    if addr.ip().is_loopback() || allow_non_loopback {
        Ok(())
    } else {
        Err(Error::NotLoopback { addr })
    }
}

/// What every handler shares: the store, the token, the metrics and readiness.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<PatternStore>,
    token: String,
    metrics: Metrics,
    ready: AtomicBool,
    body_limit_bytes: usize,
    request_timeout: Duration,
    max_concurrency: usize,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("store", &self.store)
            .field("token", &"<redacted>")
            .field("ready", &self.ready)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// State for an open store: ready, since opening loaded the model and the indexes.
    pub fn new(store: Arc<PatternStore>, config: &ServiceConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                token: config.token.clone(),
                metrics: Metrics::default(),
                ready: AtomicBool::new(true),
                body_limit_bytes: config.body_limit_bytes,
                request_timeout: config.request_timeout,
                max_concurrency: config.max_concurrency.max(1),
            }),
        }
    }

    /// The store this service serves.
    pub fn store(&self) -> &Arc<PatternStore> {
        &self.inner.store
    }

    /// Whether `/health` reports the service ready.
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Relaxed)
    }

    /// Sets readiness (cleared while shutting down, so balancers stop sending work).
    pub fn set_ready(&self, ready: bool) {
        self.inner.ready.store(ready, Ordering::Relaxed);
    }
}

/// The whole application: routes, auth, errors, and the trace, request-id, metrics, timeout,
/// concurrency and body-limit layers.
pub fn router(state: AppState) -> Router {
    let inner = &state.inner;
    let layers = ServiceBuilder::new()
        .layer(SetRequestIdLayer::x_request_id(RequestCounter::default()))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request| {
                let request_id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                tracing::info_span!("request", id = %request_id, method = %req.method(), uri = %req.uri())
            })
            // One line per request with its status and latency.
            .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .layer(HandleErrorLayer::new(|e: tower::BoxError| async move {
            if e.is::<tower::timeout::error::Elapsed>() {
                ApiError::timeout()
            } else if e.is::<tower::load_shed::error::Overloaded>() {
                ApiError::overloaded()
            } else {
                ApiError::internal(&*e)
            }
        }))
        .load_shed()
        // Global: `Router::layer` clones the layer per route, and the limit is for the service.
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            inner.max_concurrency,
        ))
        .timeout(inner.request_timeout);
    Router::new()
        .route("/health", get(api::health))
        .route("/metrics", get(api::metrics))
        .route("/v1/patterns/query", post(api::query))
        .route("/v1/patterns", get(api::list).post(api::learn))
        .route("/v1/patterns/{id}", get(api::show).delete(api::retire))
        .route("/v1/outcomes", post(api::outcome))
        .route("/v1/heals", post(api::heals))
        .route("/v1/prune", post(api::prune))
        .route("/v1/stats", get(api::stats))
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(DefaultBodyLimit::max(inner.body_limit_bytes))
        .layer(layers)
        .with_state(state)
}

/// Counts each request by its route template (never the raw path, which would let clients
/// create unbounded label sets).
async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().as_str().to_string();
    let response = next.run(req).await;
    state.inner.metrics.observe(
        &route,
        &method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response.into_response()
}

/// Request ids: a process-wide counter, short and unique within a run.
#[derive(Debug, Clone, Default)]
struct RequestCounter(Arc<AtomicU64>);

impl MakeRequestId for RequestCounter {
    fn make_request_id<B>(&mut self, _req: &axum::http::Request<B>) -> Option<RequestId> {
        let n = self.0.fetch_add(1, Ordering::Relaxed) + 1;
        HeaderValue::from_str(&n.to_string())
            .ok()
            .map(RequestId::new)
    }
}

/// Serves `state` on `listener` until `shutdown` completes; then stops accepting, lets in-flight
/// requests finish (for at most the request timeout plus a grace period), and flushes the store.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let deadline = state.inner.request_timeout + SHUTDOWN_GRACE;
    let app = router(state.clone());
    let started = Arc::new(tokio::sync::Notify::new());
    let signal = {
        let started = Arc::clone(&started);
        let state = state.clone();
        async move {
            shutdown.await;
            state.set_ready(false);
            tracing::info!("shutting down: draining in-flight requests");
            started.notify_one();
        }
    };
    let server = axum::serve(listener, app).with_graceful_shutdown(signal);
    let drained = tokio::select! {
        result = server => { result?; true }
        () = async { started.notified().await; tokio::time::sleep(deadline).await; } => false,
    };
    if !drained {
        tracing::warn!(
            deadline_s = deadline.as_secs(),
            "requests still in flight at the shutdown deadline; closing anyway"
        );
    }
    // Every write is durable when acknowledged; this saves the derived graph so the next start
    // does not have to catch it up.
    let store = Arc::clone(&state.inner.store);
    match tokio::task::spawn_blocking(move || store.checkpoint()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "could not save the index at shutdown"),
        Err(e) => tracing::warn!(error = %e, "could not save the index at shutdown"),
    }
    Ok(())
}

/// Completes on SIGINT or SIGTERM; pass it to [`serve`].
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

/// Runs the service until SIGINT or SIGTERM, for a synchronous caller (the CLI): builds the
/// runtime, binds `config.addr`, and calls `on_bound` with the bound address before serving.
pub fn run(
    store: Arc<PatternStore>,
    config: &ServiceConfig,
    on_bound: impl FnOnce(SocketAddr),
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let state = AppState::new(store, config);
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.addr).await?;
        on_bound(listener.local_addr()?);
        serve(listener, state, shutdown_signal()).await
    })
}

/// Bytes of the store's database files.
fn store_bytes(dir: &Path) -> u64 {
    agency_client::wire::store_bytes(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_without_the_flag() {
        assert!(check_addr(DEFAULT_ADDR, false).is_ok());
        assert!(check_addr("[::1]:0".parse().unwrap(), false).is_ok());
        let public: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert!(matches!(
            check_addr(public, false),
            Err(Error::NotLoopback { .. })
        ));
        assert!(check_addr(public, true).is_ok());
    }

    #[test]
    fn debug_output_hides_the_token() {
        let config = ServiceConfig::new("secret-token-value");
        assert!(!format!("{config:?}").contains("secret-token-value"));
    }
}
