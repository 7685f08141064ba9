//! The `/v1` request and response bodies that are not already in `agency_core::contract`, and
//! the checks and conversions both sides share: the service decodes these types and the
//! in-process client builds them, so a request is judged the same way (same error codes) and
//! answered with the same document whichever way it travels.

use std::collections::BTreeMap;

use agency_core::contract::SCHEMA_VERSION;
use agency_core::pattern::{Example, PatternSpec, Rewrite};
use agency_core::{Applicability, Category, Source};
use agency_patterns::{OutcomeInput, PatternStore};
use serde::{Deserialize, Serialize};

/// Default number of matches a query returns.
pub const DEFAULT_K: usize = 5;
/// Longest idempotency key accepted, in bytes.
pub const MAX_IDEMPOTENCY_KEY: usize = 200;

/// A request the service refuses before touching the store (HTTP 422): a stable code and a
/// message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub code: &'static str,
    pub message: String,
}

impl Invalid {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

fn parse_category(s: &str) -> Result<Category, Invalid> {
    s.parse()
        .map_err(|e: agency_core::category::UnknownCategory| {
            Invalid::new("invalid_category", e.to_string())
        })
}

fn parse_source(s: &str) -> Result<Source, Invalid> {
    s.parse().map_err(|e: agency_core::pattern::PatternError| {
        Invalid::new("invalid_source", e.to_string())
    })
}

/// `POST /v1/patterns/query`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_confidence: Option<f64>,
}

impl QueryRequest {
    /// A query for `text` with the defaults.
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            ..Self::default()
        }
    }

    /// Checks the fields the store does not check itself; returns the parsed category and `k`.
    /// (An empty text is refused by the store as `empty_query`.)
    pub fn check(&self) -> Result<(Option<Category>, usize), Invalid> {
        let category = self.category.as_deref().map(parse_category).transpose()?;
        if let Some(c) = self.min_confidence
            && !(0.0..=1.0).contains(&c)
        {
            return Err(Invalid::new(
                "invalid_min_confidence",
                format!("min_confidence {c} is outside 0..=1"),
            ));
        }
        if self.k == Some(0) {
            return Err(Invalid::new("invalid_k", "k must be at least 1"));
        }
        Ok((category, self.k.unwrap_or(DEFAULT_K)))
    }
}

/// A worked example in a learn request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExampleRequest {
    pub before: String,
    pub after: String,
    pub source: String,
}

/// `POST /v1/patterns`: a new pattern, the fields of an export record without its track record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearnRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    pub id: String,
    pub category: String,
    pub rule: String,
    pub title: String,
    pub message: String,
    #[serde(default)]
    pub explanation: String,
    pub applicability: String,
    pub before: String,
    pub after: String,
    pub examples: Vec<ExampleRequest>,
    pub source: String,
}

impl LearnRequest {
    /// The pattern to learn. A learned pattern starts without a prior: it earns its confidence
    /// from outcomes (priors are for the curated library only).
    pub fn into_spec(self) -> Result<PatternSpec, Invalid> {
        if let Some(v) = self.version.filter(|v| *v > SCHEMA_VERSION) {
            return Err(Invalid::new(
                "unsupported_version",
                format!("version {v} is newer than this service supports ({SCHEMA_VERSION})"),
            ));
        }
        let examples = self
            .examples
            .into_iter()
            .map(|e| {
                Ok(Example {
                    before: e.before,
                    after: e.after,
                    source: parse_source(&e.source)?,
                })
            })
            .collect::<Result<Vec<_>, Invalid>>()?;
        let applicability: Applicability =
            self.applicability
                .parse()
                .map_err(|e: agency_core::pattern::PatternError| {
                    Invalid::new("invalid_applicability", e.to_string())
                })?;
        Ok(PatternSpec {
            id: self.id,
            category: parse_category(&self.category)?,
            rule: self.rule,
            title: self.title,
            message: self.message,
            explanation: self.explanation,
            applicability,
            rewrite: Rewrite {
                before: self.before,
                after: self.after,
            },
            examples,
            source: parse_source(&self.source)?,
            prior: (0.0, 0.0),
        })
    }
}

/// What `POST /v1/patterns` did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LearnResponse {
    pub version: u32,
    pub id: String,
    /// `inserted` or `merged`.
    pub learned: String,
}

impl LearnResponse {
    /// The response for what the store did.
    pub fn of(learned: agency_patterns::Learned) -> Self {
        let (id, what) = match learned {
            agency_patterns::Learned::Inserted { id } => (id, "inserted"),
            agency_patterns::Learned::Merged { id } => (id, "merged"),
        };
        Self {
            version: SCHEMA_VERSION,
            id,
            learned: what.to_string(),
        }
    }

    /// Whether the pattern was new (the service answers 201 then, 200 for a merge).
    pub fn inserted(&self) -> bool {
        self.learned == "inserted"
    }
}

/// `POST /v1/outcomes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutcomeRequest {
    pub pattern_id: String,
    pub success: bool,
    /// The finding the pattern was applied to, any JSON; stored as its text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finding: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

impl OutcomeRequest {
    /// An outcome with no finding, duration or key.
    pub fn new(pattern_id: impl Into<String>, success: bool) -> Self {
        Self {
            pattern_id: pattern_id.into(),
            success,
            finding: None,
            duration_ms: None,
            idempotency_key: None,
        }
    }

    /// Checks the idempotency key's length and makes the store's input, recorded at `at`.
    pub fn into_input(self, at: i64) -> Result<OutcomeInput, Invalid> {
        if let Some(key) = &self.idempotency_key
            && (key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY)
        {
            return Err(Invalid::new(
                "invalid_idempotency_key",
                format!("idempotency_key must be 1-{MAX_IDEMPOTENCY_KEY} bytes"),
            ));
        }
        Ok(OutcomeInput {
            pattern_id: self.pattern_id,
            success: self.success,
            finding: self.finding.map(|f| f.to_string()),
            duration_ms: self.duration_ms,
            idempotency_key: self.idempotency_key,
            at,
        })
    }
}

/// `DELETE /v1/patterns/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetireRequest {
    pub reason: String,
}

impl RetireRequest {
    /// The reason, trimmed; a blank one is refused.
    pub fn reason(&self) -> Result<&str, Invalid> {
        let reason = self.reason.trim();
        if reason.is_empty() {
            return Err(Invalid::new(
                "invalid_reason",
                "reason is empty; say why the pattern is retired",
            ));
        }
        Ok(reason)
    }
}

/// `GET /v1/stats`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    pub version: u32,
    pub patterns: PatternCounts,
    /// Outcomes over the last `1h`, `24h` and `7d`.
    pub outcomes: BTreeMap<String, OutcomeWindow>,
    /// The fraction of live patterns applied again after they were learned: more outcomes than
    /// the verified heals they were learned from (learning from a heal records one success).
    pub reuse_rate: f64,
    /// Bytes of the store's database files (`patterns.db` and its WAL).
    pub store_bytes: u64,
    /// Heals reported by healers (`POST /v1/heals`) over the last `1h`, `24h` and `7d`: the
    /// reuse rate is heals made by a pattern ÷ all heals; the hit rate is lookups that found
    /// a pattern applying at the finding ÷ all lookups.
    #[serde(default)]
    pub heals: BTreeMap<String, HealWindow>,
    /// The same over the last 7 days, per category (categories with heals or lookups).
    #[serde(default)]
    pub heals_by_category: BTreeMap<String, HealWindow>,
    /// How well confidence predicted success, replaying every recorded outcome (LEARNING.md
    /// §8 check 7). Absent from a service older than this field.
    #[serde(default)]
    pub calibration: Option<CalibrationDoc>,
}

/// The calibration of the confidence estimate: every recorded outcome, put in the bucket of
/// the confidence its pattern had just before it (replayed from the pattern's prior and
/// earlier outcomes, with decay), and how often each bucket's outcomes succeeded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CalibrationDoc {
    /// Patterns with at least one outcome (retired ones included).
    pub patterns: usize,
    /// Outcomes replayed.
    pub outcomes: u64,
    /// Confidence buckets in increasing order: `[min, max)`, the last one `[0.9, 1]`.
    pub buckets: Vec<CalibrationBucket>,
    /// The success rate the top bucket must reach (0.9).
    pub target: f64,
    /// Whether outcomes at confidence ≥ 0.9 succeeded at least 90% of the time; null when
    /// none happened at that confidence.
    pub calibrated: Option<bool>,
}

/// Outcomes that happened while their pattern's confidence was in `[min, max)`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CalibrationBucket {
    pub min: f64,
    pub max: f64,
    pub outcomes: u64,
    pub successes: u64,
    /// Null without outcomes.
    pub success_rate: Option<f64>,
}

impl CalibrationDoc {
    /// The document of a replay.
    pub fn of(c: &agency_patterns::Calibration) -> Self {
        Self {
            patterns: c.patterns,
            outcomes: c.outcomes,
            buckets: c
                .buckets
                .iter()
                .map(|b| CalibrationBucket {
                    min: b.from,
                    max: b.to,
                    outcomes: b.outcomes,
                    successes: b.successes,
                    success_rate: b.success_rate(),
                })
                .collect(),
            target: agency_patterns::calibration::CALIBRATION_TARGET,
            calibrated: c.calibrated(),
        }
    }
}

/// Heals in one time window (or one category); rates are null without data.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct HealWindow {
    pub healed: u64,
    pub via_pattern: u64,
    pub reuse_rate: Option<f64>,
    pub lookups: u64,
    pub hits: u64,
    pub hit_rate: Option<f64>,
}

impl HealWindow {
    fn add(&mut self, c: agency_patterns::db::HealCounts) {
        self.healed += c.healed;
        self.via_pattern += c.via_pattern;
        self.lookups += c.lookups;
        self.hits += c.hits;
        self.reuse_rate = (self.healed > 0).then(|| self.via_pattern as f64 / self.healed as f64);
        self.hit_rate = (self.lookups > 0).then(|| self.hits as f64 / self.lookups as f64);
    }
}

/// One finding a heal handled, as reported to `POST /v1/heals`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealEventDoc {
    pub category: String,
    pub rule: String,
    /// `pattern`, `rule`, `llm` or `none`.
    pub strategy: String,
    /// The heal's final status (`healed`, `rolled_back`, `pending_approval`, ...).
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern_id: Option<String>,
    /// Whether a lookup found a pattern applying at the finding; absent: no lookup was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookup_hit: Option<bool>,
    /// The same key counts once (a retried report is not counted twice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// `POST /v1/heals`: what a heal run did with its findings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealsRequest {
    pub heals: Vec<HealEventDoc>,
}

/// The answer to `POST /v1/heals`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealsResponse {
    pub version: u32,
    /// Events recorded now (a repeated idempotency key is not recorded again).
    pub recorded: usize,
}

/// At most this many events per request.
pub const MAX_HEAL_EVENTS: usize = 10_000;

impl HealsRequest {
    /// The events to store, checked: known strategies, non-empty category, rule and status.
    pub fn into_events(self) -> Result<Vec<agency_patterns::db::HealEvent>, Invalid> {
        if self.heals.len() > MAX_HEAL_EVENTS {
            return Err(Invalid::new(
                "too_many",
                format!("at most {MAX_HEAL_EVENTS} heal events per request; send them in parts"),
            ));
        }
        self.heals
            .into_iter()
            .map(|h| {
                if !matches!(h.strategy.as_str(), "pattern" | "rule" | "llm" | "none") {
                    return Err(Invalid::new(
                        "invalid_strategy",
                        format!(
                            "strategy `{}` is not one of pattern, rule, llm, none",
                            h.strategy
                        ),
                    ));
                }
                if h.category.trim().is_empty()
                    || h.rule.trim().is_empty()
                    || h.status.trim().is_empty()
                {
                    return Err(Invalid::new(
                        "invalid_heal",
                        "a heal event needs a category, a rule and a status",
                    ));
                }
                Ok(agency_patterns::db::HealEvent {
                    category: h.category,
                    rule: h.rule,
                    strategy: h.strategy,
                    status: h.status,
                    pattern_id: h.pattern_id,
                    lookup_hit: h.lookup_hit,
                    idempotency_key: h.idempotency_key,
                })
            })
            .collect()
    }
}

/// Pattern counts, in total and by category (every category listed).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PatternCounts {
    pub live: usize,
    pub retired: usize,
    pub by_category: BTreeMap<String, CategoryCounts>,
}

/// Live and retired patterns of one category.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CategoryCounts {
    pub live: usize,
    pub retired: usize,
}

/// Outcomes in one time window; `success_rate` is null when there were none.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OutcomeWindow {
    pub total: u64,
    pub successes: u64,
    pub success_rate: Option<f64>,
}

/// The windows of [`Stats::outcomes`]: name and span in seconds.
const WINDOWS: [(&str, i64); 3] = [("1h", 3_600), ("24h", 86_400), ("7d", 7 * 86_400)];

/// Computes `GET /v1/stats` for `store` as of `now` (unix seconds). The service and the
/// in-process client both call this, so the document is the same either way.
pub fn stats(store: &PatternStore, now: i64) -> agency_patterns::Result<Stats> {
    let summaries = store.list(now, true)?;
    let mut by_category: BTreeMap<String, CategoryCounts> = Category::ALL
        .iter()
        .map(|c| (c.as_str().to_string(), CategoryCounts::default()))
        .collect();
    let (mut live, mut retired, mut reused) = (0, 0, 0_u32);
    for p in &summaries {
        let counts = by_category.entry(p.category.clone()).or_default();
        if p.retired {
            retired += 1;
            counts.retired += 1;
        } else {
            live += 1;
            counts.live += 1;
            let learned_outcomes = if p.source == Source::Heal.as_str() {
                p.support
            } else {
                0
            };
            if p.successes + p.failures > learned_outcomes {
                reused += 1;
            }
        }
    }
    let mut outcomes = BTreeMap::new();
    for (name, span_s) in WINDOWS {
        let (total, successes) = store.outcome_totals_since(now - span_s)?;
        outcomes.insert(
            name.to_string(),
            OutcomeWindow {
                total,
                successes,
                success_rate: (total > 0).then(|| successes as f64 / total as f64),
            },
        );
    }
    let mut heals = BTreeMap::new();
    let mut heals_by_category: BTreeMap<String, HealWindow> = BTreeMap::new();
    for (name, span_s) in WINDOWS {
        let mut window = HealWindow::default();
        for (category, counts) in store.heal_counts_since(now - span_s)? {
            window.add(counts);
            if name == "7d" {
                heals_by_category.entry(category).or_default().add(counts);
            }
        }
        heals.insert(name.to_string(), window);
    }
    Ok(Stats {
        version: SCHEMA_VERSION,
        patterns: PatternCounts {
            live,
            retired,
            by_category,
        },
        outcomes,
        reuse_rate: if live == 0 {
            0.0
        } else {
            f64::from(reused) / live as f64
        },
        store_bytes: store_bytes(store.dir()),
        heals,
        heals_by_category,
        calibration: Some(CalibrationDoc::of(&store.calibration()?)),
    })
}

/// Bytes of the store's database files (`patterns.db` plus its WAL).
pub fn store_bytes(dir: &std::path::Path) -> u64 {
    ["patterns.db", "patterns.db-wal"]
        .iter()
        .filter_map(|name| std::fs::metadata(dir.join(name)).ok())
        .map(|m| m.len())
        .sum()
}

/// `GET /health`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Health {
    pub status: String,
    /// True once the model and indexes are loaded and the service accepts queries.
    pub ready: bool,
    pub patterns: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_checks_match_the_service_codes() {
        let ok = QueryRequest {
            category: Some("Style".into()),
            k: Some(3),
            ..QueryRequest::new("x")
        };
        assert_eq!(ok.check().unwrap(), (Some(Category::Style), 3));
        assert_eq!(QueryRequest::new("x").check().unwrap().1, DEFAULT_K);
        let cases = [
            (
                QueryRequest {
                    k: Some(0),
                    ..QueryRequest::new("x")
                },
                "invalid_k",
            ),
            (
                QueryRequest {
                    min_confidence: Some(1.5),
                    ..QueryRequest::new("x")
                },
                "invalid_min_confidence",
            ),
            (
                QueryRequest {
                    category: Some("nope".into()),
                    ..QueryRequest::new("x")
                },
                "invalid_category",
            ),
        ];
        for (req, code) in cases {
            assert_eq!(req.check().unwrap_err().code, code, "{req:?}");
        }
    }

    #[test]
    fn optional_fields_are_left_out_on_the_wire() {
        let json = serde_json::to_value(QueryRequest::new("x")).unwrap();
        assert_eq!(json, serde_json::json!({"text": "x"}));
        let json = serde_json::to_value(OutcomeRequest::new("p", true)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"pattern_id": "p", "success": true})
        );
    }

    #[test]
    fn idempotency_keys_are_bounded() {
        let mut req = OutcomeRequest::new("p", true);
        req.idempotency_key = Some(String::new());
        assert_eq!(
            req.clone().into_input(0).unwrap_err().code,
            "invalid_idempotency_key"
        );
        req.idempotency_key = Some("k".repeat(MAX_IDEMPOTENCY_KEY + 1));
        assert!(req.clone().into_input(0).is_err());
        req.idempotency_key = Some("k".repeat(MAX_IDEMPOTENCY_KEY));
        let input = req.into_input(7).unwrap();
        assert_eq!(input.at, 7);
    }

    #[test]
    fn learn_requests_become_specs_without_a_prior() {
        let req = LearnRequest {
            version: None,
            id: "p".into(),
            category: "runtime".into(),
            rule: "none-attribute".into(),
            title: "t".into(),
            message: "m".into(),
            explanation: String::new(),
            applicability: "safe".into(),
            before: "?m.group(?n)".into(),
            after: "?m.group(?n) if ?m else None".into(),
            examples: vec![ExampleRequest {
                before: "a".into(),
                after: "b".into(),
                source: "heal".into(),
            }],
            source: "heal".into(),
        };
        let spec = req.clone().into_spec().unwrap();
        assert_eq!(spec.prior, (0.0, 0.0));
        assert_eq!(spec.category, Category::Runtime);
        let bad = |f: fn(&mut LearnRequest)| {
            let mut r = req.clone();
            f(&mut r);
            r.into_spec().unwrap_err().code
        };
        assert_eq!(bad(|r| r.version = Some(2)), "unsupported_version");
        assert_eq!(bad(|r| r.source = "x".into()), "invalid_source");
        assert_eq!(
            bad(|r| r.applicability = "x".into()),
            "invalid_applicability"
        );
        assert_eq!(bad(|r| r.category = "x".into()), "invalid_category");
    }

    #[test]
    fn a_blank_reason_is_refused_and_a_reason_is_trimmed() {
        let r = RetireRequest {
            reason: "  wrong fix \n".into(),
        };
        assert_eq!(r.reason().unwrap(), "wrong fix");
        let r = RetireRequest { reason: " ".into() };
        assert_eq!(r.reason().unwrap_err().code, "invalid_reason");
    }
}
