//! A pattern is a fix that worked: which error it answers (category, rule, message), the rewrite
//! as a before/after template with named holes, worked examples, and where it came from.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::Category;

/// Whether a fix may be applied without a human, as ruff's `Applicability`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Applicability {
    /// Keeps behaviour; may apply unattended once confident.
    Safe,
    /// May change behaviour; applied only when the user opts in or approves.
    Unsafe,
    /// Advice only; never applied.
    DisplayOnly,
}

impl Applicability {
    pub fn as_str(self) -> &'static str {
        match self {
            Applicability::Safe => "safe",
            Applicability::Unsafe => "unsafe",
            Applicability::DisplayOnly => "display_only",
        }
    }
}

impl fmt::Display for Applicability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Applicability {
    type Err = PatternError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "safe" => Ok(Applicability::Safe),
            "unsafe" => Ok(Applicability::Unsafe),
            "display_only" => Ok(Applicability::DisplayOnly),
            other => Err(PatternError::Applicability(other.to_string())),
        }
    }
}

/// Where a pattern came from; the strings are part of the JSON contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// The curated library in `index/`.
    Seed,
    /// Extracted from a verified heal.
    Heal,
    /// Mined from a human fix in the repository's history.
    History,
    /// Brought in by `agency patterns import`.
    Import,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Seed => "seed",
            Source::Heal => "heal",
            Source::History => "history",
            Source::Import => "import",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Source {
    type Err = PatternError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "seed" => Ok(Source::Seed),
            "heal" => Ok(Source::Heal),
            "history" => Ok(Source::History),
            "import" => Ok(Source::Import),
            other => Err(PatternError::Source(other.to_string())),
        }
    }
}

/// Why a pattern definition is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("unknown applicability `{0}`: expected safe, unsafe or display_only")]
    Applicability(String),
    #[error("unknown source `{0}`: expected seed, heal, history or import")]
    Source(String),
    #[error("field `{0}` is empty")]
    Empty(&'static str),
    #[error("hole `?{0}` appears in the after template but not in the before template")]
    UnboundHole(String),
    #[error("the before template is a bare hole; it would match anything")]
    BareHoleRoot,
    #[error("the rewrite replaces one hole by another (`?x -> ?y`); it says nothing concrete")]
    HoleToHole,
    #[error("the before and after templates are the same")]
    NoChange,
    #[error("pattern id `{0}` must be 1-100 characters of a-z, 0-9, '-', '_' or '.'")]
    Id(String),
}

/// One worked example: the code before the fix and after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub before: String,
    pub after: String,
    pub source: Source,
}

/// A rewrite template pair. Holes are written `?name` (an identifier after `?`); a hole's name is
/// its identity, so every occurrence binds the same text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    pub before: String,
    pub after: String,
}

impl Rewrite {
    /// Checks the rules every stored rewrite obeys: both sides non-empty and different, every
    /// hole of `after` bound in `before`, `before` not a bare hole, and not hole-to-hole.
    pub fn validate(&self) -> Result<(), PatternError> {
        let before = self.before.trim();
        let after = self.after.trim();
        if before.is_empty() {
            return Err(PatternError::Empty("before"));
        }
        if collapse_ws(before) == collapse_ws(after) {
            return Err(PatternError::NoChange);
        }
        let bound = holes(before);
        if let Some(unbound) = holes(after).into_iter().find(|h| !bound.contains(h)) {
            return Err(PatternError::UnboundHole(unbound));
        }
        if is_bare_hole(before) {
            return Err(if is_bare_hole(after) {
                PatternError::HoleToHole
            } else {
                PatternError::BareHoleRoot
            });
        }
        Ok(())
    }

    /// The identity of a rewrite within a rule: a hash of the rule and both templates with
    /// whitespace collapsed. Equal fingerprints merge; a retired fingerprint is never re-learned.
    pub fn fingerprint(&self, rule: &str) -> String {
        let mut h = Sha256::new();
        h.update(rule.as_bytes());
        h.update([0]);
        h.update(collapse_ws(&self.before).as_bytes());
        h.update([0]);
        h.update(collapse_ws(&self.after).as_bytes());
        let digest = h.finalize();
        hex(&digest[..16])
    }
}

/// Lower-case hexadecimal of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// The hole names (without `?`) in a template, sorted.
pub fn holes(template: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut chars = template.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '?' {
            continue;
        }
        let rest = &template[i + 1..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() && !name.starts_with(|c: char| c.is_ascii_digit()) {
            for _ in 0..name.chars().count() {
                chars.next();
            }
            out.insert(name);
        }
    }
    out
}

fn is_bare_hole(template: &str) -> bool {
    let t = template.trim();
    // `?name` or `?name:Kind`, nothing else.
    let Some(rest) = t.strip_prefix('?') else {
        return false;
    };
    let name_end = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    let tail = &rest[name_end..];
    name_end > 0
        && (tail.is_empty()
            || tail
                .strip_prefix(':')
                .is_some_and(|k| k.chars().all(char::is_alphanumeric)))
}

/// Collapses every run of whitespace to one space and trims the ends.
pub fn collapse_ws(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Checks a pattern id: stable, readable, safe in a URL path and a file name.
pub fn validate_id(id: &str) -> Result<(), PatternError> {
    let ok = !id.is_empty()
        && id.len() <= 100
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        && !id.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(PatternError::Id(id.to_string()))
    }
}

/// A complete pattern definition as it is learned, imported or loaded from the seed library.
#[derive(Debug, Clone, PartialEq)]
pub struct PatternSpec {
    pub id: String,
    pub category: Category,
    pub rule: String,
    pub title: String,
    /// A representative error message as the tool prints it.
    pub message: String,
    pub explanation: String,
    pub applicability: Applicability,
    pub rewrite: Rewrite,
    pub examples: Vec<Example>,
    pub source: Source,
    /// Curated prior `(successes, failures)`; zero for learned patterns.
    pub prior: (f64, f64),
}

impl PatternSpec {
    /// Validates every field that the store relies on.
    pub fn validate(&self) -> Result<(), PatternError> {
        validate_id(&self.id)?;
        if self.rule.trim().is_empty() {
            return Err(PatternError::Empty("rule"));
        }
        if self.title.trim().is_empty() {
            return Err(PatternError::Empty("title"));
        }
        if self.message.trim().is_empty() {
            return Err(PatternError::Empty("message"));
        }
        if self.examples.is_empty() {
            return Err(PatternError::Empty("examples"));
        }
        self.rewrite.validate()
    }

    /// See [`Rewrite::fingerprint`].
    pub fn fingerprint(&self) -> String {
        self.rewrite.fingerprint(&self.rule)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(before: &str, after: &str) -> Rewrite {
        Rewrite {
            before: before.into(),
            after: after.into(),
        }
    }

    #[test]
    fn holes_are_found_by_name() {
        let h = holes("?d[?k] if ?k in ?d else None");
        assert_eq!(h.into_iter().collect::<Vec<_>>(), ["d", "k"]);
        assert!(holes("x == None  # what?").is_empty());
        assert!(holes("a ?1").is_empty());
    }

    #[test]
    fn rewrite_rules() {
        let cases = [
            (rw("?x == None", "?x is None"), Ok(())),
            (
                rw("?x == None", "?y is None"),
                Err(PatternError::UnboundHole("y".into())),
            ),
            (rw("?x", "?x.strip()"), Err(PatternError::BareHoleRoot)),
            (rw("?x:Expr", "?x"), Err(PatternError::HoleToHole)),
            (rw("a  ==  b", "a == b"), Err(PatternError::NoChange)),
            (rw("", "x"), Err(PatternError::Empty("before"))),
            (rw("import ?m", ""), Ok(())),
        ];
        for (r, expected) in cases {
            assert_eq!(r.validate(), expected, "{r:?}");
        }
    }

    #[test]
    fn fingerprint_ignores_whitespace_but_not_rule() {
        let a = rw("?x == None", "?x is None");
        let b = rw("?x  ==   None", "?x is None\n");
        assert_eq!(a.fingerprint("E711"), b.fingerprint("E711"));
        assert_ne!(a.fingerprint("E711"), a.fingerprint("E712"));
        assert_eq!(a.fingerprint("E711").len(), 32);
    }

    #[test]
    fn ids() {
        assert!(validate_id("style-e711-comparison-to-none").is_ok());
        assert!(validate_id("Style").is_err());
        assert!(validate_id("../x").is_err());
        assert!(validate_id("").is_err());
    }
}
