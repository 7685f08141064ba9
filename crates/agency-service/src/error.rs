//! Errors: the library's own [`Error`] (token file, binding) and [`ApiError`], the one shape of
//! every HTTP error response, `{"error": {"code", "message"}}`, rejections included.

use std::path::PathBuf;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Errors of the service outside a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read or write the service token {path}: {source}")]
    Token {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the service token {path} is empty or damaged; delete it and restart agency serve to create a new one"
    )]
    BadToken { path: PathBuf },
    #[error("cannot write the service token: {0}")]
    Write(#[from] agency_fs::Error),
    #[error(
        "refusing to listen on {addr}: it is not a loopback address; pass the explicit flag to expose the service"
    )]
    NotLoopback { addr: std::net::SocketAddr },
}

/// The service's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An HTTP error: a status, a stable machine-readable code and a message for people.
///
/// 5xx errors are logged in full where they are made and reach the client as a generic message.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// A 500 whose cause is logged with its whole chain and hidden from the client.
    pub fn internal(error: &(dyn std::error::Error + 'static)) -> Self {
        tracing::error!(error = %chain(error), "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the service log",
        )
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this request needs `Authorization: Bearer <token>`; the token is in service.token in the data directory (agency serve --print-token)",
        )
    }

    pub fn overloaded() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the service is at its concurrency limit; retry with backoff",
        )
    }

    pub fn timeout() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "the request did not finish within the service's time limit; retry with backoff",
        )
    }
}

/// `error: cause: cause` on one line, for the log.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: Detail {
                code: self.code,
                message: &self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        // These refusals can leave the request body unread (the token is checked before the
        // body, a body over the limit is not read to its end, a stalled upload times out).
        // hyper then closes the connection; saying so lets a keep-alive client open a new one
        // for its next request instead of sending it into a closed socket.
        if matches!(self.status.as_u16(), 401 | 413) || self.code == "timeout" {
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        response
    }
}

impl From<agency_patterns::Error> for ApiError {
    fn from(e: agency_patterns::Error) -> Self {
        use agency_patterns::Error as E;
        match &e {
            E::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "not_found", e.to_string()),
            E::Retired { .. } => Self::new(StatusCode::CONFLICT, "retired", e.to_string()),
            E::IdTaken(_) => Self::new(StatusCode::CONFLICT, "id_taken", e.to_string()),
            E::Invalid { .. } | E::Template { .. } => {
                Self::unprocessable("invalid_pattern", e.to_string())
            }
            E::EmptyQuery => Self::unprocessable("empty_query", "the query text is empty"),
            E::Locked { .. } => {
                tracing::warn!(error = %chain(&e), "store busy");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    "the store is busy; retry with backoff",
                )
            }
            _ => Self::internal(&e),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let code = match &r {
            JsonRejection::JsonDataError(_) => "invalid_body",
            JsonRejection::JsonSyntaxError(_) => "malformed_json",
            JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
            _ if r.status() == StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
            _ => "bad_body",
        };
        Self::new(r.status(), code, r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        Self::new(r.status(), "bad_path", r.body_text())
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        Self::internal(&e)
    }
}
