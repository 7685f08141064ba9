//! The healer's client of the pattern store (issue 4): one trait, [`PatternClient`], with two
//! implementations, [`HttpClient`] (a running `agency serve`) and [`LocalClient`] (the store
//! opened in this process), and [`connect`], which picks one from [`Settings`].
//!
//! Both implementations speak the same request and response types (`agency_core::contract`
//! plus [`wire`]) and report refusals with the service's error codes, so a caller's output
//! does not depend on where the store lives. The library never prints: the fallback warning
//! of [`connect`] is returned for the caller to show once.

pub mod error;
pub mod http;
pub mod load;
pub mod local;
pub mod wire;

use agency_core::contract::{PatternList, PatternView, PruneReport, QueryResponse};
use agency_patterns::{OutcomeResult, PatternStore};

pub use error::{Error, Result};
pub use http::{HttpClient, HttpOptions, is_loopback};
pub use local::LocalClient;
pub use wire::{
    HealsRequest, HealsResponse, Health, LearnRequest, LearnResponse, OutcomeRequest, QueryRequest,
    RetireRequest, Stats,
};

/// The pattern store's operations, one per `/v1` endpoint (docs/api.md).
pub trait PatternClient: Send + Sync + std::fmt::Debug {
    /// Where the store is, for messages: `the pattern service at URL` or `the local store in DIR`.
    fn describe(&self) -> String;
    /// `GET /health`.
    fn health(&self) -> Result<Health>;
    /// `POST /v1/patterns/query`: the patterns closest to an error.
    fn query(&self, req: &QueryRequest) -> Result<QueryResponse>;
    /// `POST /v1/patterns`: learn a pattern from a verified heal (token required over HTTP).
    fn learn(&self, req: &LearnRequest) -> Result<LearnResponse>;
    /// `POST /v1/outcomes`: report an outcome; the same idempotency key counts once.
    fn record_outcome(&self, req: &OutcomeRequest) -> Result<OutcomeResult>;
    /// `GET /v1/patterns`: every pattern, live first, retired included.
    fn list(&self) -> Result<PatternList>;
    /// `GET /v1/patterns/{id}`.
    fn show(&self, id: &str) -> Result<PatternView>;
    /// `DELETE /v1/patterns/{id}`: retire a pattern with a reason.
    fn retire(&self, id: &str, reason: &str) -> Result<PatternView>;
    /// `POST /v1/prune`: apply the retirement rule to every live pattern.
    fn prune(&self) -> Result<PruneReport>;
    /// `GET /v1/stats`.
    fn stats(&self) -> Result<Stats>;
    /// `POST /v1/heals`: what a heal run did with its findings (token required over HTTP).
    fn record_heals(&self, req: &HealsRequest) -> Result<HealsResponse>;
}

/// Resolved client settings (the CLI merges flags, environment and `[patterns]` into these).
#[derive(Clone, Default)]
pub struct Settings {
    /// A running service; `None` opens the store in-process.
    pub url: Option<String>,
    /// The bearer token for writes.
    pub token: Option<String>,
    /// Fail instead of falling back to the local store when the service is unreachable.
    pub require_service: bool,
    /// Timeouts and retries of the HTTP client.
    pub http: HttpOptions,
}

/// The token is secret: it never reaches a log through `{:?}`.
impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("require_service", &self.require_service)
            .field("http", &self.http)
            .finish()
    }
}

/// What [`connect`] chose.
#[derive(Debug)]
pub struct Connected {
    pub client: Box<dyn PatternClient>,
    /// Set when a configured service was unreachable and the local store is used instead;
    /// the caller shows it once.
    pub warning: Option<String>,
}

/// The way to open the local store, called only when it is needed.
pub type OpenLocal<'a> = dyn FnOnce() -> std::result::Result<PatternStore, Box<dyn std::error::Error + Send + Sync>>
    + 'a;

/// Picks the client: the service at `settings.url` if it answers `/health` as ready, else the
/// local store (opened by `open_local`) with a warning, or [`Error::ServiceRequired`] when
/// `require_service` is set. Without a URL the local store is used, silently.
///
/// A malformed URL is an error either way: it is a configuration mistake, not an outage.
pub fn connect(settings: &Settings, open_local: Box<OpenLocal<'_>>) -> Result<Connected> {
    let local = |open: Box<OpenLocal<'_>>| -> Result<LocalClient> {
        let store = open().map_err(|source| Error::OpenLocal { source })?;
        Ok(LocalClient::new(std::sync::Arc::new(store)))
    };
    let Some(url) = settings.url.as_deref().filter(|u| !u.trim().is_empty()) else {
        return Ok(Connected {
            client: Box::new(local(open_local)?),
            warning: None,
        });
    };
    let http = HttpClient::new(url, settings.token.clone(), settings.http)?;
    // The probe retries once: a service that is down should not delay every command by the
    // whole backoff schedule before the fallback.
    let probe = HttpClient::new(
        url,
        None,
        HttpOptions {
            max_attempts: settings.http.max_attempts.min(2),
            ..settings.http
        },
    )?;
    let problem = match probe.health() {
        Ok(health) if health.ready => {
            tracing::debug!(url = http.url(), "using the pattern service");
            return Ok(Connected {
                client: Box::new(http),
                warning: None,
            });
        }
        Ok(_) => Error::NotReady {
            url: http.url().to_string(),
        },
        Err(e) => e,
    };
    if settings.require_service {
        return Err(Error::ServiceRequired {
            url: http.url().to_string(),
            source: Box::new(problem),
        });
    }
    let client = local(open_local)?;
    // The root cause is enough here: the full error repeats the URL and the remedies.
    let cause = match &problem {
        Error::Unreachable { source, .. } => source.to_string(),
        other => other.to_string(),
    };
    let warning = format!(
        "the pattern service at {} is unavailable ({cause}); using {} instead",
        http.url(),
        client.describe()
    );
    tracing::debug!("{warning}");
    Ok(Connected {
        client: Box::new(client),
        warning: Some(warning),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use agency_patterns::StoreConfig;
    use agency_patterns::test_support::embedder;
    use std::time::Duration;

    fn closed_port_url() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    }

    fn quick() -> HttpOptions {
        HttpOptions {
            max_attempts: 2,
            backoff_base: Duration::from_millis(1),
            ..HttpOptions::default()
        }
    }

    #[test]
    fn no_url_is_the_local_store_without_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let connected = connect(
            &Settings::default(),
            Box::new(move || Ok(PatternStore::open(StoreConfig::new(&path), embedder())?)),
        )
        .unwrap();
        assert!(connected.warning.is_none());
        assert!(connected.client.describe().starts_with("the local store"));
    }

    #[test]
    fn an_unreachable_service_falls_back_with_one_warning() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let url = closed_port_url();
        let settings = Settings {
            url: Some(url.clone()),
            http: quick(),
            ..Settings::default()
        };
        let connected = connect(
            &settings,
            Box::new(move || Ok(PatternStore::open(StoreConfig::new(&path), embedder())?)),
        )
        .unwrap();
        let warning = connected.warning.unwrap();
        assert!(warning.contains(&url), "{warning}");
        assert!(warning.contains("using the local store in"), "{warning}");
        assert_eq!(connected.client.health().unwrap().patterns, 0);
    }

    #[test]
    fn require_service_makes_it_an_error_and_never_opens_the_store() {
        let url = closed_port_url();
        let settings = Settings {
            url: Some(url.clone()),
            require_service: true,
            http: quick(),
            ..Settings::default()
        };
        let err = connect(
            &settings,
            Box::new(|| panic!("the local store must not be opened")),
        )
        .unwrap_err();
        assert!(matches!(err, Error::ServiceRequired { .. }), "{err:?}");
        assert!(err.to_string().contains(&url), "{err}");
    }

    #[test]
    fn a_malformed_url_is_an_error_not_a_fallback() {
        let settings = Settings {
            url: Some("https://example.com".into()),
            ..Settings::default()
        };
        let err = connect(&settings, Box::new(|| panic!("not opened"))).unwrap_err();
        assert!(matches!(err, Error::BadUrl { .. }), "{err:?}");
    }

    #[test]
    fn debug_output_hides_the_token() {
        let s = Settings {
            token: Some("secret-token".into()),
            ..Settings::default()
        };
        assert!(!format!("{s:?}").contains("secret-token"));
    }
}
