//! The pattern strategy: fixes that worked before, from the pattern store (through its client,
//! a running `agency serve` or the local store), applied by structural matching
//! (`agency_learn`), never by text.
//!
//! For each finding the store is asked for the patterns of its rule (the finding's own rule
//! and the rules of the tools it merged), closest to its error context first. A pattern is
//! used only where its before template matches the syntax tree at the finding: a confident one
//! (the store's `auto_apply`: confidence ≥ 0.90 and `safe`) is tried before any deterministic
//! fixer; a less confident one only when no fixer has a fix, and then it waits for a human.
//! Every use is reported back as an outcome once verification decided it.

use std::collections::HashMap;
use std::sync::Mutex;

use agency_client::PatternClient;
use agency_client::wire::{OutcomeRequest, QueryRequest};
use agency_core::contract::Finding;
use agency_core::pattern::Rewrite;
use agency_learn::{CompiledRewrite, Site};

/// A pattern that may fix a finding.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: String,
    pub confidence: f64,
    /// The store's verdict: confident enough and `safe`, so no human needs to see it.
    pub auto_apply: bool,
    /// Similarity of the pattern's error context to the finding's.
    pub score: f64,
    pub rewrite: CompiledRewrite,
}

/// What the pattern store said about one finding, and what it was told back.
pub struct Patterns {
    client: Box<dyn PatternClient>,
    /// Candidates per (rule, message), so that one run asks once per kind of finding.
    cache: Mutex<HashMap<(String, String), Vec<Candidate>>>,
    /// Lookups that failed (the store is unreachable or refused): said once, then the run
    /// goes on with the deterministic fixers.
    errors: Mutex<Vec<String>>,
}

impl std::fmt::Debug for Patterns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Patterns")
            .field("store", &self.client.describe())
            .finish_non_exhaustive()
    }
}

/// How many patterns a lookup considers.
const K: usize = 5;

impl Patterns {
    pub fn new(client: Box<dyn PatternClient>) -> Self {
        Patterns {
            client,
            cache: Mutex::new(HashMap::new()),
            errors: Mutex::new(Vec::new()),
        }
    }

    /// Where the patterns come from, for messages.
    pub fn describe(&self) -> String {
        self.client.describe()
    }

    /// Lookup failures so far, each once.
    pub fn errors(&self) -> Vec<String> {
        self.errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The patterns for `finding`'s rule whose templates compile, most confident first.
    pub fn candidates(&self, finding: &Finding) -> Vec<Candidate> {
        let key = (finding.rule.clone(), finding.message.clone());
        if let Some(hit) = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
        {
            return hit.clone();
        }
        let mut rules: Vec<&str> = vec![finding.rule.as_str()];
        for source in &finding.sources {
            if !rules.contains(&source.rule.as_str()) {
                rules.push(&source.rule);
            }
        }
        let text = context_text(finding);
        let mut out: Vec<Candidate> = Vec::new();
        for rule in rules {
            let request = QueryRequest {
                text: text.clone(),
                category: None,
                rule: Some(rule.to_string()),
                k: Some(K),
                min_confidence: None,
            };
            let response = match self.client.query(&request) {
                Ok(response) => response,
                Err(e) => {
                    let message = format!("pattern lookup in {} failed: {e}", self.describe());
                    let mut errors = self
                        .errors
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if !errors.contains(&message) {
                        errors.push(message);
                    }
                    continue;
                }
            };
            for m in response.matches {
                if out.iter().any(|c| c.id == m.id) {
                    continue;
                }
                // A template that does not compile is skipped, never guessed at.
                let Ok(rewrite) = agency_learn::compile(&Rewrite {
                    before: m.template.before.clone(),
                    after: m.template.after.clone(),
                }) else {
                    continue;
                };
                out.push(Candidate {
                    id: m.id,
                    confidence: m.confidence,
                    auto_apply: m.auto_apply,
                    score: m.score,
                    rewrite,
                });
            }
        }
        out.sort_by(|a, b| {
            b.auto_apply
                .cmp(&a.auto_apply)
                .then(b.confidence.total_cmp(&a.confidence))
                .then(b.score.total_cmp(&a.score))
        });
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key, out.clone());
        out
    }

    /// Reports how a pattern's fix did; a failure to report is kept for the run's warnings.
    pub fn outcome(&self, pattern_id: &str, success: bool, finding: &Finding, key: &str) {
        let request = OutcomeRequest {
            pattern_id: pattern_id.to_string(),
            success,
            finding: serde_json::to_value(finding).ok(),
            duration_ms: None,
            idempotency_key: Some(key.to_string()),
        };
        if let Err(e) = self.client.record_outcome(&request) {
            self.errors
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(format!(
                    "cannot record the outcome of pattern {pattern_id} in {}: {e}",
                    self.describe()
                ));
        }
    }
}

/// The error context a lookup embeds: rule, message and the flagged line.
fn context_text(finding: &Finding) -> String {
    format!(
        "{} {}\n{}",
        finding.rule,
        finding.message,
        finding.snippet.trim()
    )
}

/// The first candidate (in their order) whose before template matches `text` at the finding,
/// with the fixed text; `want` picks which candidates may be used.
pub fn first_match(
    candidates: &[Candidate],
    text: &str,
    line: u32,
    column: u32,
    want: &dyn Fn(&Candidate) -> bool,
) -> Option<(Candidate, String)> {
    let parsed = agency_learn::parse_source(text).ok()?;
    for candidate in candidates.iter().filter(|c| want(c)) {
        let Ok(Some(fix)) =
            agency_learn::apply(&candidate.rewrite, &parsed, Site::at(line, column))
        else {
            continue;
        };
        if let Ok(after) = agency_learn::apply_checked(&candidate.rewrite, text, &fix) {
            return Some((candidate.clone(), after));
        }
    }
    None
}
