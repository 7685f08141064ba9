//! Suppression comments, as users of each tool expect them:
//! - `# noqa` hides every finding on its line, `# noqa: F401,AGY301` only those codes;
//! - `# nosec` hides security findings, `# nosec B608` only those codes;
//! - `# type: ignore` hides type findings, `# type: ignore[attr-defined]` only those codes;
//! - `# agency: ignore` hides every finding, `# agency: ignore[AGY201]` only those codes.
//!
//! A code matches any of a merged finding's sources, so `# nosec B608` also hides the native
//! SQL rule's report of the same line. A directive on the first or the last line of a
//! multi-line finding counts.

use std::collections::BTreeMap;

use agency_core::Category;

/// What one comment hides.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scope {
    All,
    Category(Category),
    Codes(Vec<String>),
    /// Codes, but only among findings of one category (`# nosec B608`).
    CategoryCodes(Category, Vec<String>),
}

/// The suppression comments of one file, by 1-based line.
#[derive(Debug, Clone, Default)]
pub struct Suppressions {
    lines: BTreeMap<usize, Vec<Scope>>,
}

impl Suppressions {
    /// Reads every directive in `source`.
    pub fn parse(source: &str) -> Self {
        let mut lines: BTreeMap<usize, Vec<Scope>> = BTreeMap::new();
        for (idx, line) in source.lines().enumerate() {
            // Cheap filter first: most lines have no comment at all.
            let Some(hash) = line.find('#') else {
                continue;
            };
            let mut scopes = Vec::new();
            let mut rest = &line[hash..];
            while let Some(pos) = rest.find('#') {
                let comment = rest[pos + 1..].trim_start();
                scopes.extend(directive(comment));
                rest = &rest[pos + 1..];
            }
            if !scopes.is_empty() {
                lines.insert(idx + 1, scopes);
            }
        }
        Suppressions { lines }
    }

    /// True when a finding spanning `first..=last` lines with these rule codes is hidden.
    pub fn hides(&self, first: usize, last: usize, category: Category, rules: &[&str]) -> bool {
        [first, last].iter().any(|line| {
            self.lines.get(line).is_some_and(|scopes| {
                scopes.iter().any(|scope| match scope {
                    Scope::All => true,
                    Scope::Category(c) => *c == category,
                    Scope::Codes(codes) => matches_any(codes, rules),
                    Scope::CategoryCodes(c, codes) => *c == category && matches_any(codes, rules),
                })
            })
        })
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

fn matches_any(codes: &[String], rules: &[&str]) -> bool {
    codes
        .iter()
        .any(|code| rules.iter().any(|rule| rule.eq_ignore_ascii_case(code)))
}

/// Parses the text after a `#`.
fn directive(comment: &str) -> Option<Scope> {
    let lower = comment.to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix("noqa") {
        let rest = rest.trim_start();
        if let Some(codes) = rest.strip_prefix(':') {
            let codes = split_codes(&comment[comment.len() - codes.len()..], |c| {
                c.is_ascii_alphanumeric() || c == '-'
            });
            return Some(if codes.is_empty() {
                Scope::All
            } else {
                Scope::Codes(codes)
            });
        }
        return Some(Scope::All);
    }
    if let Some(rest) = lower.strip_prefix("nosec") {
        let codes = split_codes(&comment[comment.len() - rest.len()..], |c| {
            c.is_ascii_alphanumeric()
        });
        return Some(if codes.is_empty() {
            Scope::Category(Category::Security)
        } else {
            Scope::CategoryCodes(Category::Security, codes)
        });
    }
    if let Some(rest) = lower.strip_prefix("type:") {
        let rest = rest.trim_start();
        if let Some(rest) = rest.strip_prefix("ignore") {
            return Some(match bracketed(rest) {
                Some(codes) if !codes.is_empty() => Scope::CategoryCodes(Category::Type, codes),
                _ => Scope::Category(Category::Type),
            });
        }
        return None;
    }
    if let Some(rest) = lower.strip_prefix("agency:") {
        let rest = rest.trim_start();
        if let Some(rest) = rest.strip_prefix("ignore") {
            let original = &comment[comment.len() - rest.len()..];
            return Some(match bracketed(original) {
                Some(codes) if !codes.is_empty() => Scope::Codes(codes),
                _ => Scope::All,
            });
        }
    }
    None
}

/// Codes in `[a, b]` directly after the directive.
fn bracketed(rest: &str) -> Option<Vec<String>> {
    let inner = rest.strip_prefix('[')?;
    let end = inner.find(']')?;
    Some(split_codes(&inner[..end], |c| {
        c.is_ascii_alphanumeric() || c == '-' || c == '_'
    }))
}

/// Leading comma- or space-separated codes; stops at the first word that is not a code.
fn split_codes(text: &str, is_code_char: impl Fn(char) -> bool) -> Vec<String> {
    let mut codes = Vec::new();
    for part in text.split([',', ' ', '\t']) {
        if part.is_empty() {
            continue;
        }
        if part.chars().all(&is_code_char) && part.chars().any(|c| c.is_ascii_digit()) {
            codes.push(part.to_string());
        } else if part.chars().all(&is_code_char) && part.contains('-') {
            // mypy's error codes (`attr-defined`) and our runtime names.
            codes.push(part.to_string());
        } else {
            break;
        }
    }
    codes
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Category = Category::Security;

    #[test]
    fn directives() {
        let src = "\
a = 1  # noqa
b = 2  # noqa: F401, AGY301 because reasons
c = 3  # nosec
d = 4  # nosec B608
e = 5  # type: ignore[attr-defined]
f = 6  # agency: ignore[AGY201]
g = 7  # agency: ignore
h = '#not a directive'
i = 8  # NOQA:E501
";
        let s = Suppressions::parse(src);
        assert!(s.hides(1, 1, Category::Style, &["E501"]));
        assert!(s.hides(2, 2, Category::Import, &["F401"]));
        assert!(s.hides(2, 2, Category::Performance, &["AGY301"]));
        assert!(!s.hides(2, 2, Category::Style, &["E501"]));
        assert!(s.hides(3, 3, SEC, &["B105"]));
        assert!(!s.hides(3, 3, Category::Style, &["E501"]));
        assert!(s.hides(4, 4, SEC, &["AGY201", "B608"]));
        assert!(!s.hides(4, 4, SEC, &["B105"]));
        assert!(s.hides(5, 5, Category::Type, &["attr-defined"]));
        assert!(!s.hides(5, 5, Category::Type, &["arg-type"]));
        assert!(s.hides(6, 6, SEC, &["AGY201"]));
        assert!(!s.hides(6, 6, SEC, &["AGY203"]));
        assert!(s.hides(7, 7, Category::Logic, &["AGY401"]));
        assert!(!s.hides(8, 8, Category::Style, &["E501"]));
        assert!(s.hides(9, 9, Category::Style, &["E501"]));
        // A multi-line finding is hidden by a directive on its last line.
        assert!(s.hides(8, 9, Category::Style, &["E501"]));
    }
}
