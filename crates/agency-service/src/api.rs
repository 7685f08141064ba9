//! The `/v1` handlers. Each is thin: decode, authorise, run the store call on the blocking pool,
//! encode. Request types refuse unknown fields; responses are `agency_core::contract` types
//! where one exists.

use std::time::{SystemTime, UNIX_EPOCH};

use agency_core::contract::{PatternList, PatternView, PruneReport, QueryResponse, SCHEMA_VERSION};
use agency_patterns::{OutcomeResult, PatternStore, Query};
use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use std::sync::Arc;

// The bodies live in the client crate, so that its in-process implementation checks and
// answers exactly as these handlers do.
pub use agency_client::wire::{
    CategoryCounts, ExampleRequest, HealsRequest, HealsResponse, Health, LearnRequest,
    LearnResponse, OutcomeRequest, OutcomeWindow, PatternCounts, QueryRequest, RetireRequest,
    Stats,
};

use crate::AppState;
use crate::error::ApiError;

/// `axum::Json` whose rejections are [`ApiError`]s, so malformed bodies get our error shape.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let Json(value) = Json::<T>::from_request(req, state).await?;
        Ok(Self(value))
    }
}

/// `axum::extract::Path` with [`ApiError`] rejections.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(value) = Path::<T>::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

/// Proof that the request carries the service's bearer token; writes take it first, so an
/// unauthorised request is refused before its body is read.
pub struct Authorized;

impl FromRequestParts<AppState> for Authorized {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let presented = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match presented {
            Some(token) if constant_time_eq(token.as_bytes(), state.inner.token.as_bytes()) => {
                Ok(Self)
            }
            _ => Err(ApiError::unauthorized()),
        }
    }
}

/// Compares without an early exit, so the time taken says nothing about the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Unix seconds now.
fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Runs a store call on the blocking pool: the store does IO and embedding and must not stall
/// the async workers.
async fn blocking<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&PatternStore) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = Arc::clone(&state.inner.store);
    tokio::task::spawn_blocking(move || f(&store)).await?
}

impl From<agency_client::wire::Invalid> for ApiError {
    fn from(e: agency_client::wire::Invalid) -> Self {
        ApiError::unprocessable(e.code, e.message)
    }
}

/// `POST /v1/patterns/query`.
pub async fn query(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<QueryRequest>,
) -> Result<Json<QueryResponse>, ApiError> {
    let (category, k) = req.check()?;
    let response = blocking(&state, move |store| {
        Ok(store.query(&Query {
            text: &req.text,
            category,
            rule: req.rule.as_deref(),
            k,
            min_confidence: req.min_confidence,
            now: now(),
        })?)
    })
    .await?;
    Ok(Json(response))
}

/// `POST /v1/patterns`: 201 for a new pattern, 200 for a merge.
pub async fn learn(
    State(state): State<AppState>,
    _auth: Authorized,
    ApiJson(req): ApiJson<LearnRequest>,
) -> Result<(StatusCode, Json<LearnResponse>), ApiError> {
    let spec = req.into_spec()?;
    let learned = blocking(&state, move |store| Ok(store.learn(&spec, now())?)).await?;
    let response = LearnResponse::of(learned);
    let status = if response.inserted() {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(response)))
}

/// `POST /v1/outcomes`.
pub async fn outcome(
    State(state): State<AppState>,
    _auth: Authorized,
    ApiJson(req): ApiJson<OutcomeRequest>,
) -> Result<Json<OutcomeResult>, ApiError> {
    let input = req.into_input(now())?;
    let result = blocking(&state, move |store| Ok(store.record_outcome(&input)?)).await?;
    Ok(Json(result))
}

/// `POST /v1/heals`.
pub async fn heals(
    State(state): State<AppState>,
    _auth: Authorized,
    ApiJson(req): ApiJson<HealsRequest>,
) -> Result<Json<HealsResponse>, ApiError> {
    let events = req.into_events()?;
    let recorded = blocking(&state, move |store| Ok(store.record_heals(&events, now())?)).await?;
    Ok(Json(HealsResponse {
        version: SCHEMA_VERSION,
        recorded,
    }))
}

pub async fn list(State(state): State<AppState>) -> Result<Json<PatternList>, ApiError> {
    let patterns = blocking(&state, |store| Ok(store.list(now(), true)?)).await?;
    Ok(Json(PatternList {
        version: SCHEMA_VERSION,
        patterns,
    }))
}

pub async fn show(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<PatternView>, ApiError> {
    let view = blocking(&state, move |store| Ok(store.show(&id, now())?)).await?;
    Ok(Json(view))
}

/// `DELETE /v1/patterns/{id}`.
pub async fn retire(
    State(state): State<AppState>,
    _auth: Authorized,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<RetireRequest>,
) -> Result<Json<PatternView>, ApiError> {
    let reason = req.reason()?.to_string();
    let view = blocking(&state, move |store| {
        let now = now();
        store.retire(&id, &reason, now)?;
        Ok(store.show(&id, now)?)
    })
    .await?;
    Ok(Json(view))
}

pub async fn prune(
    State(state): State<AppState>,
    _auth: Authorized,
) -> Result<Json<PruneReport>, ApiError> {
    let report = blocking(&state, |store| Ok(store.prune(now())?)).await?;
    Ok(Json(report))
}

/// `GET /v1/stats`.
pub async fn stats(State(state): State<AppState>) -> Result<Json<Stats>, ApiError> {
    let stats = blocking(&state, |store| {
        Ok(agency_client::wire::stats(store, now())?)
    })
    .await?;
    Ok(Json(stats))
}

/// `GET /health`.
pub async fn health(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    let patterns = blocking(&state, |store| Ok(store.live_count())).await?;
    Ok(Json(Health {
        status: "ok".into(),
        ready: state.is_ready(),
        patterns,
    }))
}

pub async fn metrics(
    State(state): State<AppState>,
) -> Result<([(axum::http::HeaderName, &'static str); 1], String), ApiError> {
    let metrics_state = state.clone();
    let text = blocking(&state, move |store| {
        Ok(metrics_state
            .inner
            .metrics
            .render(store.live_count(), crate::store_bytes(store.dir())))
    })
    .await?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    ))
}

pub async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_route",
        "no such endpoint; the API is documented in docs/api.md",
    )
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method; see docs/api.md",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AppState, ServiceConfig, router};
    use agency_patterns::StoreConfig;
    use axum::body::Body;
    use axum::http::{Method, Request as HttpRequest};
    use serde_json::{Value, json};
    use std::future::Future as _;
    use std::time::Duration;
    use tower::ServiceExt as _;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef-test-token";

    use agency_patterns::test_support::embedder;

    struct App {
        _dir: tempfile::TempDir,
        state: AppState,
    }

    fn pattern(id: &str, before: &str, after: &str) -> Value {
        json!({
            "id": id,
            "category": "runtime",
            "rule": "none-attribute",
            "title": format!("title of {id}"),
            "message": "AttributeError: 'NoneType' object has no attribute 'group'",
            "applicability": "safe",
            "before": before,
            "after": after,
            "examples": [{"before": format!("x = {before}"), "after": format!("x = {after}"), "source": "heal"}],
            "source": "heal",
        })
    }

    /// A store in a temp dir with one learned pattern, `none-group`.
    fn app() -> App {
        app_with(&ServiceConfig::new(TOKEN))
    }

    fn app_with(config: &ServiceConfig) -> App {
        let dir = tempfile::tempdir().unwrap();
        let store = PatternStore::open(StoreConfig::new(dir.path()), embedder()).unwrap();
        let state = AppState::new(Arc::new(store), config);
        App { _dir: dir, state }
    }

    impl App {
        async fn send(&self, req: HttpRequest<Body>) -> (StatusCode, Value) {
            let response = router(self.state.clone()).oneshot(req).await.unwrap();
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            let body = serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
            (status, body)
        }

        async fn call(
            &self,
            method: Method,
            uri: &str,
            token: Option<&str>,
            body: Option<&str>,
        ) -> (StatusCode, Value) {
            let mut req = HttpRequest::builder().method(method).uri(uri);
            if let Some(token) = token {
                req = req.header("authorization", format!("Bearer {token}"));
            }
            let req = match body {
                Some(b) => req
                    .header("content-type", "application/json")
                    .body(Body::from(b.to_string())),
                None => req.body(Body::empty()),
            };
            self.send(req.unwrap()).await
        }

        async fn get(&self, uri: &str) -> (StatusCode, Value) {
            self.call(Method::GET, uri, None, None).await
        }

        async fn post(&self, uri: &str, body: &Value) -> (StatusCode, Value) {
            self.call(Method::POST, uri, Some(TOKEN), Some(&body.to_string()))
                .await
        }

        async fn seed(&self) {
            let (status, body) = self
                .post(
                    "/v1/patterns",
                    &pattern("none-group", "?m.group(?n)", "?m.group(?n) if ?m else None"),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
    }

    fn error_code(body: &Value) -> &str {
        body["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("not an error body: {body}"))
    }

    #[tokio::test]
    async fn learn_inserts_then_merges() {
        let app = app();
        let p = pattern("none-group", "?m.group(?n)", "?m.group(?n) if ?m else None");
        let (status, body) = app.post("/v1/patterns", &p).await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(
            body,
            json!({"version": 1, "id": "none-group", "learned": "inserted"})
        );
        let (status, body) = app.post("/v1/patterns", &p).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["learned"], "merged");
    }

    #[tokio::test]
    async fn query_finds_the_pattern_without_a_token() {
        let app = app();
        app.seed().await;
        let (status, body) = app
            .call(
                Method::POST,
                "/v1/patterns/query",
                None,
                Some(r#"{"text": "AttributeError: 'NoneType' object has no attribute 'group'", "k": 3, "category": "runtime"}"#),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["version"], 1);
        assert_eq!(body["matches"][0]["id"], "none-group");
        assert_eq!(body["query"]["k"], 3);
    }

    #[tokio::test]
    async fn query_rejects_bad_values() {
        let app = app();
        let (status, body) = app.post("/v1/patterns/query", &json!({"text": "  "})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(error_code(&body), "empty_query");
        let (status, body) = app
            .post(
                "/v1/patterns/query",
                &json!({"text": "x", "category": "nope"}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(error_code(&body), "invalid_category");
        let (status, _) = app
            .post(
                "/v1/patterns/query",
                &json!({"text": "x", "min_confidence": 2.0}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[tokio::test]
    async fn heals_feed_the_reuse_and_hit_rates_and_count_once_per_key() {
        let app = app();
        let event = |strategy: &str, status: &str, hit: bool, key: &str| {
            json!({"category": "style", "rule": "E711", "strategy": strategy,
                "status": status, "lookup_hit": hit, "idempotency_key": key})
        };
        let body = json!({"heals": [
            event("pattern", "healed", true, "r1-1"),
            event("rule", "healed", false, "r1-2"),
            event("rule", "healed", true, "r1-3"),
            event("none", "flagged", false, "r1-4"),
        ]});
        let (status, first) = app.post("/v1/heals", &body).await;
        assert_eq!(status, StatusCode::OK, "{first}");
        assert_eq!(first["recorded"], 4);
        let (_, again) = app.post("/v1/heals", &body).await;
        assert_eq!(again["recorded"], 0);
        let (status, bad) = app
            .post(
                "/v1/heals",
                &json!({"heals": [event("magic", "healed", true, "x")]}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(error_code(&bad), "invalid_strategy");

        let (_, stats) = app.get("/v1/stats").await;
        let week = &stats["heals"]["7d"];
        assert_eq!(week["healed"], 3, "{stats:#}");
        assert_eq!(week["via_pattern"], 1);
        assert!((week["reuse_rate"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(week["lookups"], 4);
        assert_eq!(week["hit_rate"], 0.5);
        assert_eq!(stats["heals_by_category"]["style"]["via_pattern"], 1);
    }

    #[tokio::test]
    async fn outcomes_update_confidence_and_count_once_per_key() {
        let app = app();
        app.seed().await;
        let outcome = json!({"pattern_id": "none-group", "success": true,
            "finding": {"rule": "none-attribute", "file": "a.py"}, "duration_ms": 12,
            "idempotency_key": "heal-1"});
        let (status, first) = app.post("/v1/outcomes", &outcome).await;
        assert_eq!(status, StatusCode::OK, "{first}");
        assert_eq!(first["recorded"], true);
        // Learning from a verified heal was the first success; this is the second.
        assert_eq!(first["successes"], 2);
        let (status, again) = app.post("/v1/outcomes", &outcome).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(again["recorded"], false);
        assert_eq!(again["successes"], 2);
        assert_eq!(again["confidence"], first["confidence"]);
        let (_, stats) = app.get("/v1/stats").await;
        assert_eq!(stats["outcomes"]["1h"]["total"], 2);
        assert_eq!(stats["reuse_rate"], 1.0);
        assert_eq!(stats["outcomes"]["7d"]["success_rate"], 1.0);
        // The calibration replays the same two outcomes: both before the pattern reached 0.90.
        let calibration = &stats["calibration"];
        assert_eq!(calibration["outcomes"], 2, "{stats}");
        assert_eq!(calibration["patterns"], 1, "{stats}");
        assert_eq!(calibration["target"], 0.9, "{stats}");
        assert!(calibration["calibrated"].is_null(), "{stats}");
        let buckets = calibration["buckets"].as_array().unwrap();
        assert_eq!(buckets.len(), 4, "{stats}");
        assert_eq!(buckets[3]["min"], 0.9, "{stats}");
        assert_eq!(buckets[3]["outcomes"], 0, "{stats}");
        assert!(buckets[3]["success_rate"].is_null(), "{stats}");
    }

    #[tokio::test]
    async fn list_show_retire_and_relearn() {
        let app = app();
        app.seed().await;
        let (status, list) = app.get("/v1/patterns").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list["patterns"][0]["id"], "none-group");
        let (status, view) = app.get("/v1/patterns/none-group").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(view["template"]["before"], "?m.group(?n)");
        assert!(view["retired"].is_null());

        let (status, view) = app
            .call(
                Method::DELETE,
                "/v1/patterns/none-group",
                Some(TOKEN),
                Some(r#"{"reason": "wrong fix"}"#),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{view}");
        assert_eq!(view["retired"]["reason"], "wrong fix");

        // The same rewrite under a new id is still refused: a retired rewrite is never re-learned.
        let p = pattern(
            "none-group-2",
            "?m.group(?n)",
            "?m.group(?n) if ?m else None",
        );
        let (status, body) = app.post("/v1/patterns", &p).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(error_code(&body), "retired");

        let (_, health) = app.get("/health").await;
        assert_eq!(
            health,
            json!({"status": "ok", "ready": true, "patterns": 0})
        );
    }

    #[tokio::test]
    async fn a_taken_id_is_a_conflict() {
        let app = app();
        app.seed().await;
        let p = pattern("none-group", "?d[?k]", "?d.get(?k)");
        let (status, body) = app.post("/v1/patterns", &p).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(error_code(&body), "id_taken");
    }

    #[tokio::test]
    async fn unknown_ids_are_404() {
        let app = app();
        let (status, body) = app.get("/v1/patterns/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(error_code(&body), "not_found");
        let (status, _) = app
            .post(
                "/v1/outcomes",
                &json!({"pattern_id": "nope", "success": true}),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = app
            .call(
                Method::DELETE,
                "/v1/patterns/nope",
                Some(TOKEN),
                Some(r#"{"reason": "x"}"#),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, body) = app.get("/v2/nothing").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(error_code(&body), "no_route");
    }

    #[tokio::test]
    async fn writes_need_the_token() {
        let app = app();
        let body =
            pattern("none-group", "?m.group(?n)", "?m.group(?n) if ?m else None").to_string();
        for token in [None, Some("wrong"), Some("")] {
            for (method, uri, body) in [
                (Method::POST, "/v1/patterns", Some(body.as_str())),
                (
                    Method::POST,
                    "/v1/outcomes",
                    Some(r#"{"pattern_id": "x", "success": true}"#),
                ),
                (Method::DELETE, "/v1/patterns/x", Some(r#"{"reason": "x"}"#)),
                (Method::POST, "/v1/prune", None),
                (Method::POST, "/v1/heals", Some(r#"{"heals": []}"#)),
            ] {
                let (status, response) = app.call(method, uri, token, body).await;
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri} {token:?}");
                assert_eq!(error_code(&response), "unauthorized");
            }
        }
        let (_, list) = app.get("/v1/patterns").await;
        assert_eq!(list["patterns"], json!([]));
    }

    #[tokio::test]
    async fn bad_bodies_get_structured_errors() {
        let app = app();
        let cases = [
            ("{not json", StatusCode::BAD_REQUEST, "malformed_json"),
            ("", StatusCode::BAD_REQUEST, "malformed_json"),
            (
                r#"{"pattern_id": 5, "success": true}"#,
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
            ),
            (
                r#"{"pattern_id": "x", "success": "yes"}"#,
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
            ),
            (
                r#"{"pattern_id": "x"}"#,
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
            ),
            (
                r#"{"pattern_id": "x", "success": true, "extra": 1}"#,
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
            ),
            ("[1, 2]", StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        ];
        for (body, status, code) in cases {
            let (got, response) = app
                .call(Method::POST, "/v1/outcomes", Some(TOKEN), Some(body))
                .await;
            assert_eq!(got, status, "{body}: {response}");
            assert_eq!(error_code(&response), code, "{body}");
        }
        // Invalid UTF-8 inside a JSON string.
        let req = HttpRequest::post("/v1/patterns/query")
            .header("content-type", "application/json")
            .body(Body::from(b"{\"text\": \"\xff\xfe\"}".to_vec()))
            .unwrap();
        let (status, response) = app.send(req).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{response}");
        // No content type.
        let req = HttpRequest::post("/v1/patterns/query")
            .body(Body::from(r#"{"text": "x"}"#))
            .unwrap();
        let (status, response) = app.send(req).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(error_code(&response), "unsupported_media_type");
        // An invalid pattern.
        let (status, response) = app
            .post(
                "/v1/patterns",
                &pattern("Bad Id!", "?m.group(?n)", "?m.group(?n) if ?m else None"),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(error_code(&response), "invalid_pattern");
        // A pattern whose template does not parse (issue 7): refused the same way, naming it.
        let (status, response) = app
            .post(
                "/v1/patterns",
                &pattern(
                    "bad-template",
                    "def (?m.group(?n)",
                    "?m.group(?n) if ?m else None",
                ),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{response}");
        assert_eq!(error_code(&response), "invalid_pattern");
        assert!(
            response.to_string().contains("bad-template")
                && response.to_string().contains("does not parse"),
            "{response}"
        );
        let (status, _) = app
            .call(Method::PUT, "/v1/patterns", Some(TOKEN), None)
            .await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[tokio::test]
    async fn a_huge_body_is_413() {
        let app = app();
        let text = "x".repeat(2 << 20);
        let body = json!({"text": text}).to_string();
        let (status, response) = app
            .call(Method::POST, "/v1/patterns/query", None, Some(&body))
            .await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(error_code(&response), "body_too_large");
    }

    #[tokio::test]
    async fn prune_and_stats() {
        let app = app();
        app.seed().await;
        let (status, report) = app.call(Method::POST, "/v1/prune", Some(TOKEN), None).await;
        assert_eq!(status, StatusCode::OK, "{report}");
        assert_eq!(report["version"], 1);
        assert_eq!(report["retired"], json!([]));
        let (status, stats) = app.get("/v1/stats").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(stats["patterns"]["live"], 1);
        assert_eq!(stats["patterns"]["by_category"]["runtime"]["live"], 1);
        assert_eq!(stats["patterns"]["by_category"]["style"]["live"], 0);
        // Learning from a verified heal records its first success.
        assert_eq!(stats["outcomes"]["24h"]["total"], 1);
        assert_eq!(stats["outcomes"]["24h"]["success_rate"], 1.0);
        assert_eq!(stats["reuse_rate"], 0.0);
        assert!(stats["store_bytes"].as_u64().unwrap() > 0);
    }

    #[tokio::test]
    async fn metrics_count_routes() {
        let app = app();
        app.get("/health").await;
        app.get("/v1/patterns/nope").await;
        let req = HttpRequest::get("/metrics").body(Body::empty()).unwrap();
        let response = router(app.state.clone()).oneshot(req).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        assert!(
            text.contains(
                r#"agency_http_requests_total{route="/health",method="GET",status="200"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"agency_http_requests_total{route="/v1/patterns/{id}",method="GET",status="404"} 1"#), "{text}");
        assert!(text.contains(
            r#"agency_http_request_duration_seconds_count{route="/health",method="GET"} 1"#
        ));
        assert!(text.contains("agency_patterns_live 0\n"));
    }

    #[tokio::test]
    async fn responses_carry_a_request_id() {
        let app = app();
        let req = HttpRequest::get("/health").body(Body::empty()).unwrap();
        let response = router(app.state.clone()).oneshot(req).await.unwrap();
        assert!(response.headers().contains_key("x-request-id"));
    }

    /// A request body that never arrives: a client that stalls mid-upload.
    struct Stalled;

    impl http_body::Body for Stalled {
        type Data = axum::body::Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
            std::task::Poll::Pending
        }
    }

    fn stalled_query() -> HttpRequest<Body> {
        HttpRequest::post("/v1/patterns/query")
            .header("content-type", "application/json")
            .body(Body::new(Stalled))
            .unwrap()
    }

    #[tokio::test]
    async fn a_stalled_body_times_out_with_503() {
        let mut config = ServiceConfig::new(TOKEN);
        config.request_timeout = Duration::from_millis(50);
        let app = app_with(&config);
        let (status, body) = app.send(stalled_query()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error_code(&body), "timeout");
        let (status, _) = app.get("/health").await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn past_the_concurrency_limit_requests_get_503() {
        let mut config = ServiceConfig::new(TOKEN);
        config.max_concurrency = 1;
        let app = app_with(&config);
        let service = router(app.state.clone());
        let mut stalled = Box::pin(service.clone().oneshot(stalled_query()));
        // One poll takes the only permit and parks on the body.
        std::future::poll_fn(|cx| {
            assert!(stalled.as_mut().poll(cx).is_pending());
            std::task::Poll::Ready(())
        })
        .await;
        let req = HttpRequest::get("/health").body(Body::empty()).unwrap();
        let response = service.clone().oneshot(req).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        drop(stalled);
        let req = HttpRequest::get("/health").body(Body::empty()).unwrap();
        let response = service.oneshot(req).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    /// Arbitrary bytes to every endpoint that takes a body: never a panic or a 5xx, always our
    /// error shape.
    #[test]
    fn arbitrary_bodies_never_panic() {
        use proptest::prelude::any;
        use proptest::test_runner::{Config, TestRunner};
        let app = app();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut runner = TestRunner::new(Config::with_cases(64));
        let bodies = proptest::collection::vec(any::<u8>(), 0..256);
        runner
            .run(&bodies, |body| {
                for (method, uri) in [
                    (Method::POST, "/v1/outcomes"),
                    (Method::POST, "/v1/patterns"),
                    (Method::DELETE, "/v1/patterns/x"),
                ] {
                    let req = HttpRequest::builder()
                        .method(method)
                        .uri(uri)
                        .header("authorization", format!("Bearer {TOKEN}"))
                        .header("content-type", "application/json")
                        .body(Body::from(body.clone()))
                        .unwrap();
                    let (status, response) = runtime.block_on(app.send(req));
                    proptest::prop_assert!(status.is_client_error(), "{uri}: {status} {response}");
                    proptest::prop_assert!(response["error"]["code"].is_string());
                }
                Ok(())
            })
            .unwrap();
    }

    #[tokio::test]
    async fn serve_answers_on_a_loopback_socket() {
        let app = app();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(crate::serve(listener, app.state.clone(), async move {
            let _ = rx.await;
        }));
        // A plain blocking client, off the runtime's workers.
        let response = tokio::task::spawn_blocking(move || {
            use std::io::{Read as _, Write as _};
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            stream
                .write_all(b"GET /health HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
                .unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).unwrap();
            response
        })
        .await
        .unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.contains(r#""ready":true"#), "{response}");
        tx.send(()).unwrap();
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn serve_shuts_down_gracefully() {
        let app = app();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(crate::serve(listener, app.state.clone(), async move {
            let _ = rx.await;
        }));
        tx.send(()).unwrap();
        server.await.unwrap().unwrap();
        assert!(!app.state.is_ready());
    }
}
