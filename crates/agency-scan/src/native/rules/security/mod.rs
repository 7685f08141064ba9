//! The security rules, one per file: SQL built by formatting (AGY201), unescaped markup
//! (AGY202) and hardcoded secrets (AGY203). The injection rules share `taint`, a small
//! within-function analysis of how the text reaching a sink was built.

mod hardcoded_secret;
mod sql_string_format;
mod taint;
mod xss_unescaped_markup;

use crate::native::FileRule;

/// The security rules, by code.
pub const RULES: &[(&str, FileRule)] = &[
    ("AGY201", sql_string_format::sql_string_format),
    ("AGY202", xss_unescaped_markup::xss_unescaped_markup),
    ("AGY203", hardcoded_secret::hardcoded_secret),
];

#[cfg(test)]
mod tests {
    use crate::native::rules::harness::check;

    #[test]
    fn agy201_sql_string_format() {
        check("AGY201", "security");
    }

    #[test]
    fn agy202_xss_unescaped_markup() {
        check("AGY202", "security");
    }

    #[test]
    fn agy203_hardcoded_secret() {
        check("AGY203", "security");
    }
}
