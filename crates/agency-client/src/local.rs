//! The in-process implementation of [`PatternClient`]: the store opened in this process. It
//! checks requests with the same rules as the service ([`crate::wire`]) and returns the same
//! documents, so callers cannot tell the two apart except by speed.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use agency_core::contract::{PatternList, PatternView, PruneReport, QueryResponse, SCHEMA_VERSION};
use agency_patterns::{OutcomeResult, PatternStore, Query};

use crate::PatternClient;
use crate::error::Result;
use crate::wire::{
    self, HealsRequest, HealsResponse, Health, LearnRequest, LearnResponse, OutcomeRequest,
    QueryRequest, RetireRequest, Stats,
};

/// Unix seconds now.
fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A client of a store opened in this process.
#[derive(Debug, Clone)]
pub struct LocalClient {
    store: Arc<PatternStore>,
}

impl LocalClient {
    /// Wraps an open store.
    pub fn new(store: Arc<PatternStore>) -> Self {
        Self { store }
    }

    /// The store this client reads and writes.
    pub fn store(&self) -> &Arc<PatternStore> {
        &self.store
    }
}

impl PatternClient for LocalClient {
    fn describe(&self) -> String {
        format!("the local store in {}", self.store.dir().display())
    }

    fn health(&self) -> Result<Health> {
        Ok(Health {
            status: "ok".into(),
            ready: true,
            patterns: self.store.live_count(),
        })
    }

    fn query(&self, req: &QueryRequest) -> Result<QueryResponse> {
        let (category, k) = req.check()?;
        Ok(self.store.query(&Query {
            text: &req.text,
            category,
            rule: req.rule.as_deref(),
            k,
            min_confidence: req.min_confidence,
            now: now(),
        })?)
    }

    fn learn(&self, req: &LearnRequest) -> Result<LearnResponse> {
        let spec = req.clone().into_spec()?;
        Ok(LearnResponse::of(self.store.learn(&spec, now())?))
    }

    fn record_outcome(&self, req: &OutcomeRequest) -> Result<OutcomeResult> {
        let input = req.clone().into_input(now())?;
        Ok(self.store.record_outcome(&input)?)
    }

    fn list(&self) -> Result<PatternList> {
        Ok(PatternList {
            version: SCHEMA_VERSION,
            patterns: self.store.list(now(), true)?,
        })
    }

    fn show(&self, id: &str) -> Result<PatternView> {
        Ok(self.store.show(id, now())?)
    }

    fn retire(&self, id: &str, reason: &str) -> Result<PatternView> {
        let req = RetireRequest {
            reason: reason.to_string(),
        };
        let reason = req.reason()?;
        let at = now();
        self.store.retire(id, reason, at)?;
        Ok(self.store.show(id, at)?)
    }

    fn prune(&self) -> Result<PruneReport> {
        Ok(self.store.prune(now())?)
    }

    fn stats(&self) -> Result<Stats> {
        Ok(wire::stats(&self.store, now())?)
    }

    fn record_heals(&self, req: &HealsRequest) -> Result<HealsResponse> {
        let events = req.clone().into_events()?;
        Ok(HealsResponse {
            version: SCHEMA_VERSION,
            recorded: self.store.record_heals(&events, now())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agency_patterns::StoreConfig;
    use agency_patterns::test_support::embedder;

    fn client() -> (tempfile::TempDir, LocalClient) {
        let dir = tempfile::tempdir().unwrap();
        let store = PatternStore::open(StoreConfig::new(dir.path()), embedder()).unwrap();
        (dir, LocalClient::new(Arc::new(store)))
    }

    fn learn_request(id: &str) -> LearnRequest {
        LearnRequest {
            version: None,
            id: id.into(),
            category: "runtime".into(),
            rule: "none-attribute".into(),
            title: format!("title of {id}"),
            message: "AttributeError: 'NoneType' object has no attribute 'group'".into(),
            explanation: String::new(),
            applicability: "safe".into(),
            before: "?m.group(?n)".into(),
            after: "?m.group(?n) if ?m else None".into(),
            examples: vec![wire::ExampleRequest {
                before: "x = m.group(1)".into(),
                after: "x = m.group(1) if m else None".into(),
                source: "heal".into(),
            }],
            source: "heal".into(),
        }
    }

    #[test]
    fn every_operation_through_the_store() {
        let (_dir, c) = client();
        let learned = c.learn(&learn_request("none-group")).unwrap();
        assert!(learned.inserted());
        assert_eq!(c.learn(&learn_request("other")).unwrap().learned, "merged");

        let found = c
            .query(&QueryRequest {
                k: Some(3),
                ..QueryRequest::new("AttributeError: 'NoneType' object has no attribute 'group'")
            })
            .unwrap();
        assert_eq!(found.matches[0].id, "none-group");
        assert_eq!(found.query.k, 3);

        let mut outcome = OutcomeRequest::new("none-group", true);
        outcome.idempotency_key = Some("k1".into());
        assert!(c.record_outcome(&outcome).unwrap().recorded);
        assert!(!c.record_outcome(&outcome).unwrap().recorded);

        assert_eq!(c.list().unwrap().patterns.len(), 1);
        // Two verified heals learned (insert and merge) plus one outcome.
        assert_eq!(c.show("none-group").unwrap().successes, 3);
        assert_eq!(c.health().unwrap().patterns, 1);
        let stats = c.stats().unwrap();
        assert_eq!(stats.patterns.live, 1);
        assert_eq!(stats.outcomes["1h"].total, 3);
        // The same three outcomes, replayed for calibration: none happened at ≥ 0.90.
        let calibration = stats.calibration.unwrap();
        assert_eq!((calibration.patterns, calibration.outcomes), (1, 3));
        assert_eq!(
            calibration.buckets.iter().map(|b| b.outcomes).sum::<u64>(),
            3
        );
        assert_eq!(calibration.calibrated, None);
        assert_eq!(c.prune().unwrap().checked, 1);

        let view = c.retire("none-group", "  wrong fix ").unwrap();
        assert_eq!(view.retired.unwrap().reason, "wrong fix");
        assert_eq!(c.health().unwrap().patterns, 0);
    }

    #[test]
    fn refusals_carry_the_service_codes() {
        let (_dir, c) = client();
        let cases = [
            (c.show("nope").unwrap_err(), "not_found", 404),
            (
                c.record_outcome(&OutcomeRequest::new("nope", true))
                    .unwrap_err(),
                "not_found",
                404,
            ),
            (c.retire("nope", " ").unwrap_err(), "invalid_reason", 422),
            (
                c.query(&QueryRequest::new("   ")).unwrap_err(),
                "empty_query",
                422,
            ),
            (
                c.query(&QueryRequest {
                    k: Some(0),
                    ..QueryRequest::new("x")
                })
                .unwrap_err(),
                "invalid_k",
                422,
            ),
            (
                c.learn(&LearnRequest {
                    before: "def (?m.group(?n)".into(),
                    ..learn_request("bad-template")
                })
                .unwrap_err(),
                "invalid_pattern",
                422,
            ),
        ];
        for (err, code, status) in cases {
            assert_eq!(err.code(), Some(code), "{err}");
            assert_eq!(err.status(), Some(status), "{err}");
        }
    }
}
