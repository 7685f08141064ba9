//! The client's error type. Both implementations report failures with the service's stable
//! codes (`not_found`, `invalid_k`, …), so a caller handles a refused request the same way
//! whether it went over HTTP or straight to the store.

/// Errors of the pattern client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The service answered with its error document `{"error": {"code", "message"}}`.
    #[error("{method} {url}: HTTP {status} {code}: {message}{hint}")]
    Api {
        method: &'static str,
        url: String,
        status: u16,
        code: String,
        message: String,
        /// What to do, when the client knows more than the service (empty otherwise).
        hint: String,
    },
    /// No answer: connection refused, reset, or timed out, on every attempt.
    #[error(
        "cannot reach the pattern service at {url} ({attempts} attempts): {source}; start it with agency serve, or remove the URL ([patterns] url, AGENCY_PATTERNS_URL, --url) to use the local store"
    )]
    Unreachable {
        url: String,
        attempts: u32,
        #[source]
        source: Box<ureq::Error>,
    },
    /// An answer that is not the service's: a body that does not decode, or an error status
    /// without the error document (a proxy, another program on the port).
    #[error(
        "{method} {url}: unexpected answer (HTTP {status}): {detail}; is an agency pattern service of the same version listening there?"
    )]
    BadResponse {
        method: &'static str,
        url: String,
        status: u16,
        detail: String,
    },
    /// The service answered `/health` but is not ready (it is shutting down).
    #[error("the pattern service at {url} is not ready (shutting down); retry later")]
    NotReady { url: String },
    /// The configured address cannot be used.
    #[error(
        "invalid pattern service URL `{url}`: {reason}; write it as http://HOST:PORT, e.g. http://127.0.0.1:8080"
    )]
    BadUrl { url: String, reason: String },
    /// A request the in-process client refused before calling the store, with the code the
    /// service would have answered (HTTP 422).
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    /// The in-process store failed.
    #[error(transparent)]
    Store(#[from] agency_patterns::Error),
    /// The local store could not be opened (for the in-process client or the fallback).
    #[error("cannot open the local pattern store")]
    OpenLocal {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// `require_service` is set and the configured service is unreachable.
    #[error(
        "the pattern service at {url} is required (require_service / --require-service) but unreachable; start it with agency serve, or drop the requirement to fall back to the local store"
    )]
    ServiceRequired {
        url: String,
        #[source]
        source: Box<Error>,
    },
}

/// The client's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<crate::wire::Invalid> for Error {
    fn from(e: crate::wire::Invalid) -> Self {
        Error::Invalid {
            code: e.code,
            message: e.message,
        }
    }
}

impl Error {
    /// The service's error code for this failure (`not_found`, `unauthorized`, `overloaded`,
    /// …), from either implementation; `None` when there was no answer (unreachable, bad URL)
    /// or the store failed in a way the service reports as `internal`.
    pub fn code(&self) -> Option<&str> {
        use agency_patterns::Error as E;
        match self {
            Error::Api { code, .. } => Some(code),
            Error::Invalid { code, .. } => Some(code),
            Error::Store(e) => match e {
                E::NotFound(_) => Some("not_found"),
                E::Retired { .. } => Some("retired"),
                E::IdTaken(_) => Some("id_taken"),
                E::Invalid { .. } | E::Template { .. } => Some("invalid_pattern"),
                E::EmptyQuery => Some("empty_query"),
                E::Locked { .. } => Some("busy"),
                _ => None,
            },
            _ => None,
        }
    }

    /// The HTTP status the service answers (or would answer) for this failure.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } | Error::BadResponse { status, .. } => Some(*status),
            Error::Invalid { .. } => Some(422),
            Error::Store(_) => self.code().map(|code| match code {
                "not_found" => 404,
                "retired" | "id_taken" => 409,
                "busy" => 503,
                _ => 422,
            }),
            _ => None,
        }
    }

    /// Whether the service could not be reached at all, as opposed to refusing the request.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Unreachable { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_carry_the_service_codes() {
        let e = Error::from(agency_patterns::Error::NotFound("x".into()));
        assert_eq!(e.code(), Some("not_found"));
        assert_eq!(e.status(), Some(404));
        let e = Error::from(agency_patterns::Error::EmptyQuery);
        assert_eq!((e.code(), e.status()), (Some("empty_query"), Some(422)));
        let e = Error::from(crate::wire::Invalid {
            code: "invalid_k",
            message: "k must be at least 1".into(),
        });
        assert_eq!((e.code(), e.status()), (Some("invalid_k"), Some(422)));
    }

    #[test]
    fn api_errors_name_the_url_and_the_code() {
        let e = Error::Api {
            method: "GET",
            url: "http://127.0.0.1:1/v1/patterns/x".into(),
            status: 404,
            code: "not_found".into(),
            message: "no pattern with id `x`".into(),
            hint: String::new(),
        };
        let text = e.to_string();
        assert!(text.contains("http://127.0.0.1:1/v1/patterns/x"), "{text}");
        assert!(text.contains("404 not_found"), "{text}");
        assert_eq!(e.code(), Some("not_found"));
    }
}
