//! The import rules, one per file.

use crate::native::FileRule;

/// The import rules, by code.
pub const RULES: &[(&str, FileRule)] = &[];
