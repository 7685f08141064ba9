//! The registry of `agency`'s own rule codes, one block per category, as ruff keeps `codes.rs`.
//!
//! Codes are `AGY` plus three digits: 1xx import, 2xx security, 3xx performance, 4xx logic.
//! Runtime errors use the failure's name (`none-attribute`, ...). A code is never reused: a
//! removed rule keeps its row with `removed: true`.

use crate::Category;

/// One native rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleCode {
    /// The code shown to users and used in `# agency: ignore[CODE]`.
    pub code: &'static str,
    /// The defect's name in kebab case ("allow <name>" must read right).
    pub name: &'static str,
    pub category: Category,
    /// One line on what the rule finds.
    pub summary: &'static str,
    pub removed: bool,
}

const fn rule(
    code: &'static str,
    name: &'static str,
    category: Category,
    summary: &'static str,
) -> RuleCode {
    RuleCode {
        code,
        name,
        category,
        summary,
        removed: false,
    }
}

/// Every native rule code, sorted by code.
pub const RULES: &[RuleCode] = &[
    // Import.
    rule(
        "AGY101",
        "import-cycle",
        Category::Import,
        "modules import each other at import time",
    ),
    rule(
        "AGY102",
        "missing-import",
        Category::Import,
        "a name is used but never bound, and an importable module provides it",
    ),
    // Security.
    rule(
        "AGY201",
        "sql-string-format",
        Category::Security,
        "SQL built from non-constant values by formatting or concatenation reaches a query call",
    ),
    rule(
        "AGY202",
        "xss-unescaped-markup",
        Category::Security,
        "formatted user input is marked safe for HTML",
    ),
    rule(
        "AGY203",
        "hardcoded-secret",
        Category::Security,
        "a credential is written in the source",
    ),
    // Performance.
    rule(
        "AGY301",
        "list-membership-in-loop",
        Category::Performance,
        "membership test against a list inside a loop",
    ),
    rule(
        "AGY302",
        "string-concat-in-loop",
        Category::Performance,
        "a string is built with += inside a loop",
    ),
    rule(
        "AGY303",
        "loop-invariant-call",
        Category::Performance,
        "a call whose result does not change is repeated in every iteration",
    ),
    rule(
        "AGY304",
        "n-plus-one-query",
        Category::Performance,
        "a database query runs once per item of a loop",
    ),
    rule(
        "AGY305",
        "sorted-for-min-max",
        Category::Performance,
        "a whole sequence is sorted to take its smallest or largest item",
    ),
    // Logic.
    rule(
        "AGY401",
        "unreachable-code",
        Category::Logic,
        "statements after return, raise, continue or break never run",
    ),
    rule(
        "AGY402",
        "infinite-loop",
        Category::Logic,
        "a `while True` loop has no reachable exit",
    ),
    rule(
        "AGY403",
        "constant-condition",
        Category::Logic,
        "a comparison of a value with itself or a condition that is always the same",
    ),
    rule(
        "AGY404",
        "duplicate-condition",
        Category::Logic,
        "an `elif` repeats an earlier condition of the same `if` chain",
    ),
    // Runtime (from tracebacks).
    rule(
        "none-attribute",
        "none-attribute",
        Category::Runtime,
        "an attribute was read on None",
    ),
    rule(
        "none-call",
        "none-call",
        Category::Runtime,
        "None was called",
    ),
    rule(
        "none-iteration",
        "none-iteration",
        Category::Runtime,
        "None was iterated or unpacked",
    ),
    rule(
        "none-subscript",
        "none-subscript",
        Category::Runtime,
        "None was subscripted",
    ),
];

/// Looks a native rule up by its code.
pub fn lookup(code: &str) -> Option<&'static RuleCode> {
    RULES.iter().find(|r| r.code == code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_and_names_are_unique_and_sorted() {
        let codes: HashSet<_> = RULES.iter().map(|r| r.code).collect();
        let names: HashSet<_> = RULES.iter().map(|r| r.name).collect();
        assert_eq!(codes.len(), RULES.len());
        assert_eq!(names.len(), RULES.len());
        let mut sorted: Vec<_> = RULES.iter().map(|r| r.code).collect();
        sorted.sort_unstable();
        assert_eq!(sorted, RULES.iter().map(|r| r.code).collect::<Vec<_>>());
    }

    #[test]
    fn code_blocks_match_categories() {
        for r in RULES.iter().filter(|r| r.code.starts_with("AGY")) {
            let block = match r.code.as_bytes()[3] {
                b'1' => Category::Import,
                b'2' => Category::Security,
                b'3' => Category::Performance,
                b'4' => Category::Logic,
                other => panic!("unexpected block {other} in {}", r.code),
            };
            assert_eq!(block, r.category, "{}", r.code);
        }
        assert_eq!(lookup("AGY201").map(|r| r.name), Some("sql-string-format"));
        assert!(lookup("AGY999").is_none());
    }
}
