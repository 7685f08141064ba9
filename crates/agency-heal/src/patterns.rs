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

/// Held, shared, while the pattern store's embedding model loads or embeds; taken exclusively
/// by whoever ends the process early (an emergency stop, Ctrl-C): ONNX Runtime crashes if the
/// process exits while it works.
static STORE_BUSY: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// A shared hold on the store's model (see [`quiesce`]).
pub fn busy() -> std::sync::RwLockReadGuard<'static, ()> {
    STORE_BUSY
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Waits until no model work is in flight and keeps new work out: call before ending the
/// process early.
pub fn quiesce() -> std::sync::RwLockWriteGuard<'static, ()> {
    STORE_BUSY
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A pattern that may fix a finding.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: String,
    pub category: String,
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
            let answer = {
                let _busy = busy();
                self.client.query(&request)
            };
            let response = match answer {
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
                    category: m.category,
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

impl Patterns {
    /// Reports what the run did with each finding, for the store's reuse and hit-rate
    /// statistics (`GET /v1/stats`). Keys `<run>-<n>` make a repeated report count once.
    pub fn record_heals(&self, run_id: &str, attempts: &[crate::Attempt]) {
        let heals = attempts
            .iter()
            .enumerate()
            .map(|(i, a)| agency_client::wire::HealEventDoc {
                category: a.finding.category.clone(),
                rule: a.finding.rule.clone(),
                strategy: a.strategy.map_or("none", |s| s.as_str()).to_string(),
                status: a.status.as_str().to_string(),
                pattern_id: a.pattern.as_ref().map(|p| p.id.clone()),
                lookup_hit: a.lookup_hit,
                idempotency_key: Some(format!("{run_id}-{}", i + 1)),
            })
            .collect();
        let request = agency_client::wire::HealsRequest { heals };
        if let Err(e) = self.client.record_heals(&request) {
            self.errors
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(format!(
                    "cannot record this run's heals in {}: {e}",
                    self.describe()
                ));
        }
    }
}

/// What learning from one verified heal came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Learned {
    /// A new pattern.
    Inserted(String),
    /// The rewrite was known (the same template up to holes): a success for that pattern.
    Merged(String),
    /// A more general pattern, from a known one (`from`) and this fix.
    Generalised { id: String, from: String },
    /// Nothing to learn (why: a suppression, a deletion, no syntax-level rewrite, a refused
    /// or retired rewrite, the store unreachable).
    Skipped(String),
}

/// A learned template longer than this is the fix's surroundings more than the fix: it would
/// match almost nowhere else.
pub const MAX_TEMPLATE_LINES: usize = 6;

/// Rules whose fixes are not worth a pattern: a deterministic tool does them whole.
const NOT_LEARNED: &[&str] = &[agency_scan::tools::ruff::FORMAT_RULE, "I001"];

impl Patterns {
    /// Learns a pattern from a verified heal: the rewrite `agency_learn::extract` finds in the
    /// file's text before and after the fix, stored with its example (source `heal`, which the
    /// store counts as a first success; an equal rewrite merges).
    pub fn learn_from(&self, attempt: &crate::Attempt) -> Learned {
        let finding = &attempt.finding;
        if NOT_LEARNED.contains(&finding.rule.as_str()) {
            return Learned::Skipped(format!("{} fixes are not learned", finding.rule));
        }
        let Some((before, after)) = &attempt.texts else {
            return Learned::Skipped("no verified texts".into());
        };
        let extracted = match agency_learn::extract(&finding.rule, before, after, finding.line) {
            Ok(extracted) => extracted,
            Err(e) => return Learned::Skipped(e.to_string()),
        };
        let rewrite = extracted.rewrite;
        if let Some(why) = crate::history::unusable(&rewrite) {
            return Learned::Skipped(why);
        }
        // Patterns of this rule (and category) already known: one that makes this very fix
        // is the same template up to its holes, so the fix refines it; one that generalises
        // with it gives a more general pattern.
        let known: Vec<Candidate> = self
            .candidates(finding)
            .into_iter()
            .filter(|c| c.category == finding.category)
            .collect();
        if let Some(learned) = self.refine(attempt, before, after, &known) {
            return learned;
        }
        if let Some(learned) = self.generalise(attempt, &rewrite, &extracted.example, &known) {
            return learned;
        }
        let fingerprint = rewrite.fingerprint(&finding.rule);
        let rule_slug = rule_slug(&finding.rule);
        let request = agency_client::wire::LearnRequest {
            version: None,
            id: format!(
                "{}-{rule_slug}-heal-{}",
                finding.category,
                &fingerprint[..12]
            ),
            category: finding.category.clone(),
            rule: finding.rule.clone(),
            title: format!("{}: {}", finding.rule, first_words(&finding.message, 60)),
            message: finding.message.clone(),
            explanation: format!(
                "Learned from a verified heal of {} at {}:{} (strategy {}).",
                finding.rule,
                finding.file,
                finding.line,
                attempt.strategy.map_or("none", |s| s.as_str())
            ),
            // Only a fix the tool called safe may ever be applied unattended.
            applicability: if finding.fix.approval_required {
                "unsafe".into()
            } else {
                "safe".into()
            },
            before: rewrite.before.clone(),
            after: rewrite.after.clone(),
            examples: vec![agency_client::wire::ExampleRequest {
                before: extracted.example.before,
                after: extracted.example.after,
                source: "heal".into(),
            }],
            source: "heal".into(),
        };
        let learned = {
            let _busy = busy();
            self.client.learn(&request)
        };
        match learned {
            Ok(response) if response.learned == "merged" => Learned::Merged(response.id),
            Ok(response) => {
                // The new pattern may itself be more general than known ones.
                if let (Ok(compiled), Some(first)) =
                    (agency_learn::compile(&rewrite), known.first())
                {
                    let new = Candidate {
                        id: response.id.clone(),
                        rewrite: compiled,
                        ..first.clone()
                    };
                    self.retire_subsumed(&new, &known);
                }
                Learned::Inserted(response.id)
            }
            Err(e) => Learned::Skipped(format!("the store refused it: {e}")),
        }
    }
}

impl Patterns {
    /// The most general known pattern that makes this very fix (same template up to holes):
    /// the fix counts as its success. A pattern it subsumes that has done no better is then
    /// retired in its favour.
    fn refine(
        &self,
        attempt: &crate::Attempt,
        before: &str,
        after: &str,
        known: &[Candidate],
    ) -> Option<Learned> {
        let finding = &attempt.finding;
        let mut makes_it: Vec<&Candidate> = known
            .iter()
            .filter(|c| reproduces(c, before, after, finding))
            .collect();
        makes_it.sort_by(|a, b| {
            b.rewrite
                .holes()
                .len()
                .cmp(&a.rewrite.holes().len())
                .then(b.confidence.total_cmp(&a.confidence))
        });
        let general = makes_it.first()?;
        // Each verified fix is its own evidence, also when a later run makes the same one.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let key = format!(
            "refine-{}-{nanos}-{}-{}",
            std::process::id(),
            finding.id,
            &crate::workspace::sha256_hex(after.as_bytes())[..16]
        );
        self.outcome(&general.id, true, finding, &key);
        self.retire_subsumed(general, known);
        Some(Learned::Merged(general.id.clone()))
    }

    /// A more general pattern from a known one and this fix (anti-unification), stored with
    /// the examples of both; curated seeds are never generalised away. `None`: no known
    /// pattern generalises with it.
    fn generalise(
        &self,
        attempt: &crate::Attempt,
        rewrite: &Rewrite,
        example: &Rewrite,
        known: &[Candidate],
    ) -> Option<Learned> {
        let finding = &attempt.finding;
        let (before, after) = attempt.texts.as_ref()?;
        for c in known {
            let specific = c.rewrite.rewrite();
            let Some(general) = agency_learn::generalise(&specific, rewrite) else {
                continue;
            };
            if general == specific || general == *rewrite {
                continue;
            }
            if crate::history::unusable(&general).is_some() {
                continue;
            }
            let Ok(compiled) = agency_learn::compile(&general) else {
                continue;
            };
            let probe = Candidate {
                rewrite: compiled,
                ..c.clone()
            };
            // The general pattern must still make this very fix.
            if !reproduces(&probe, before, after, finding) {
                continue;
            }
            let view = {
                let _busy = busy();
                self.client.show(&c.id)
            };
            let Ok(view) = view else { continue };
            if view.source == "seed" || view.category != finding.category {
                continue;
            }
            let fingerprint = general.fingerprint(&finding.rule);
            let mut examples: Vec<agency_client::wire::ExampleRequest> = view
                .examples
                .iter()
                .map(|e| agency_client::wire::ExampleRequest {
                    before: e.before.clone(),
                    after: e.after.clone(),
                    source: e.source.clone(),
                })
                .collect();
            examples.push(agency_client::wire::ExampleRequest {
                before: example.before.clone(),
                after: example.after.clone(),
                source: "heal".into(),
            });
            let request = agency_client::wire::LearnRequest {
                version: None,
                id: format!(
                    "{}-{}-general-{}",
                    finding.category,
                    rule_slug(&finding.rule),
                    &fingerprint[..12]
                ),
                category: finding.category.clone(),
                rule: finding.rule.clone(),
                title: format!("{}: {}", finding.rule, first_words(&finding.message, 60)),
                message: finding.message.clone(),
                explanation: format!(
                    "Generalised from pattern {} and a verified heal of {} at {}:{} (strategy {}).",
                    c.id,
                    finding.rule,
                    finding.file,
                    finding.line,
                    attempt.strategy.map_or("none", |s| s.as_str())
                ),
                // Unattended only if both fixes were safe.
                applicability: if finding.fix.approval_required || view.applicability != "safe" {
                    "unsafe".into()
                } else {
                    "safe".into()
                },
                before: general.before.clone(),
                after: general.after.clone(),
                examples,
                source: "heal".into(),
            };
            let learned = {
                let _busy = busy();
                self.client.learn(&request)
            };
            let Ok(response) = learned else { continue };
            let general_candidate = Candidate {
                id: response.id.clone(),
                ..probe
            };
            self.retire_subsumed(&general_candidate, known);
            return Some(Learned::Generalised {
                id: response.id,
                from: c.id.clone(),
            });
        }
        None
    }

    /// Retires the known patterns that `general` subsumes (generalising the two gives
    /// `general` back) when `general` has done at least as well: as many successes, no more
    /// failures. Seeds are kept.
    fn retire_subsumed(&self, general: &Candidate, known: &[Candidate]) {
        let general_rewrite = general.rewrite.rewrite();
        let subsumed: Vec<&Candidate> = known
            .iter()
            .filter(|c| c.id != general.id)
            .filter(|c| {
                agency_learn::generalise(&general_rewrite, &c.rewrite.rewrite())
                    .is_some_and(|g| canonical(&g) == canonical(&general_rewrite))
            })
            .collect();
        if subsumed.is_empty() {
            return;
        }
        let _busy = busy();
        let Ok(record) = self.client.show(&general.id) else {
            return;
        };
        for c in subsumed {
            let Ok(view) = self.client.show(&c.id) else {
                continue;
            };
            if view.source == "seed" || view.retired.is_some() {
                continue;
            }
            if record.successes >= view.successes && record.failures <= view.failures {
                let reason = format!(
                    "subsumed by the more general pattern {} ({} successes, {} failures against {} and {})",
                    general.id, record.successes, record.failures, view.successes, view.failures
                );
                if let Err(e) = self.client.retire(&c.id, &reason) {
                    self.errors
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(format!("cannot retire pattern {}: {e}", c.id));
                }
            }
        }
    }
}

/// Whether `candidate` applied to `before` at the finding gives exactly `after`.
fn reproduces(candidate: &Candidate, before: &str, after: &str, finding: &Finding) -> bool {
    first_match(
        std::slice::from_ref(candidate),
        before,
        finding.line,
        finding.column,
        &|_| true,
    )
    .is_some_and(|(_, text)| text == after)
}

/// The rewrite with its holes renamed in order of first appearance (`?h0`, `?h1`, ...), so
/// that two rewrites equal up to hole names compare equal.
fn canonical(rewrite: &Rewrite) -> (String, String) {
    static HOLE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(r"\?([A-Za-z_][A-Za-z0-9_]*)").expect("a valid pattern")
    });
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut rename = |text: &str| {
        HOLE.replace_all(text, |caps: &regex::Captures<'_>| {
            let next = names.len();
            let n = *names.entry(caps[1].to_string()).or_insert(next);
            format!("?h{n}")
        })
        .into_owned()
    };
    let before = rename(&rewrite.before);
    let after = rename(&rewrite.after);
    (before, after)
}

/// A rule's code as an id part: `E711` → `e711`.
fn rule_slug(rule: &str) -> String {
    rule.to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// At most `n` characters of `text`, cut at a word.
pub fn first_words(text: &str, n: usize) -> String {
    if text.chars().count() <= n {
        return text.to_string();
    }
    let cut: String = text.chars().take(n).collect();
    match cut.rfind(' ') {
        Some(i) => format!("{}…", &cut[..i]),
        None => format!("{cut}…"),
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

#[cfg(test)]
mod tests {
    use agency_core::pattern::Rewrite;

    fn rw(before: &str, after: &str) -> Rewrite {
        Rewrite {
            before: before.into(),
            after: after.into(),
        }
    }

    #[test]
    fn rewrites_equal_up_to_hole_names_are_canonically_equal() {
        assert_eq!(
            super::canonical(&rw("?x != None", "?x is not None")),
            super::canonical(&rw("?a != None", "?a is not None"))
        );
        assert_ne!(
            super::canonical(&rw("?x == ?y", "?y == ?x")),
            super::canonical(&rw("?x == ?y", "?x == ?y"))
        );
    }

    #[test]
    fn a_general_rewrite_subsumes_a_specific_one_whatever_its_hole_names() {
        let general = rw("?x != None", "?x is not None");
        let specific = rw("?a.get(?b) != None", "?a.get(?b) is not None");
        let g = agency_learn::generalise(&general, &specific).expect("they generalise");
        assert_eq!(super::canonical(&g), super::canonical(&general));
    }
}
