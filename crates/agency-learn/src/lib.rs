//! Rewrite templates on Python syntax trees: the structural half of the learning loop
//! (LEARNING.md §1–4). No IO, no printing; rewrites are exchanged as text
//! ([`agency_core::pattern::Rewrite`]), which is how the pattern store and the seed library in
//! `index/` keep them.
//!
//! - [`compile`] parses a before/after pair written in the seed library's SmPL-like syntax
//!   (`?x == None` -> `?x is None`) into syntax trees with typed holes ([`HoleKind`]): each hole
//!   is replaced by a placeholder name, the text parsed with ruff's parser (as expressions when
//!   both sides are one, else as statements), and placeholders mapped back to holes. A hole's
//!   kind follows from where it stands (a name, an attribute name, an expression, part of a
//!   string, or a statement on a line of its own standing for a block's statements) or is
//!   declared as `?x:Kind`. A hole in an argument or parameter list named `?args` or `?params`
//!   (or ending so) stands for a run of them. A template that does not parse is an
//!   [`Error::Template`] naming the template and the cause.
//! - [`apply`] matches the before template at a finding's [`Site`] on the syntax tree of a
//!   [`ParsedSource`] (never on text, so nothing in a string or comment matches) and returns a
//!   [`Fix`]: sorted, non-overlapping byte edits covering only the tokens the rewrite changes,
//!   hole text copied verbatim. [`check_fix`] applies a fix, checks that the result parses and
//!   tells whether the rewrite is idempotent; [`apply_checked`] also refuses it when it is not.
//! - [`extract`] learns a rewrite from one verified fix (whole file before and after): the
//!   minimal changed subtree, with the names and whole operands carried from before to after
//!   turned into holes and the rest concrete (`yaml.load(?a)` -> `yaml.safe_load(?a)`,
//!   `not ?a in ?b` -> `?a not in ?b`). It refuses suppressions and
//!   deletions of the flagged code, and only returns a rewrite that reproduces its example.
//! - [`generalise`] anti-unifies two rewrites of one rule into one, refusing
//!   over-generalisations; equal [`Rewrite::fingerprint`]s are for the caller to merge.
//!
//! [`Rewrite::fingerprint`]: agency_core::pattern::Rewrite::fingerprint

mod apply;
mod extract;
mod generalise;
mod template;
mod tree;

use agency_core::pattern::PatternError;

pub use apply::{
    Checked, Edit, Fix, ParsedSource, Site, apply, apply_checked, check_fix, parse_source,
};
pub use extract::{DELETION_RULES, Extracted, extract};
pub use generalise::generalise;
pub use template::{CompiledRewrite, Hole, HoleKind, Template, compile, parse_template};

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when compiling, applying, extracting or generalising.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A template is not Python once its holes are replaced by names.
    #[error(
        "template `{template}` does not parse: {cause}; write an expression or statements with `?name` holes"
    )]
    Template { template: String, cause: String },
    /// A rewrite breaks a rule every stored rewrite obeys.
    #[error("rewrite `{before}` -> `{after}` is not acceptable")]
    Rewrite {
        before: String,
        after: String,
        #[source]
        source: PatternError,
    },
    /// The Python source does not parse.
    #[error("the source does not parse: {cause} at byte {offset}; fix the syntax error first")]
    Source { cause: String, offset: usize },
    /// The finding's line is not in the source.
    #[error("line {line} is outside the source ({lines} lines)")]
    Site { line: u32, lines: usize },
    /// An after hole has no binding (a rewrite that skipped validation).
    #[error("hole `?{hole}` of the after template is not bound by the before template")]
    Unbound { hole: String },
    /// Edits that are unsorted, overlap or fall outside the source.
    #[error("edits overlap, are unsorted or fall outside the source at byte {at}")]
    Edits { at: usize },
    /// Applying the fix breaks the syntax.
    #[error(
        "the fixed source does not parse: {cause} at byte {offset}; the rewrite is unsafe here"
    )]
    Reparse { cause: String, offset: usize },
    /// Applying the rewrite again changes the code again.
    #[error(
        "the rewrite is not idempotent: applied again at byte {offset} it changes the code again"
    )]
    NotIdempotent { offset: usize },
    /// The before and after files of an example are the same.
    #[error("before and after are the same; there is no fix to learn from")]
    NoChange,
    /// The fix only adds a suppression comment.
    #[error(
        "the fix only adds a suppression comment (`# noqa` or `# type: ignore`); suppressions are not learned"
    )]
    Suppression,
    /// The fix deletes the flagged code for a rule where deletion is not the fix.
    #[error(
        "the fix deletes the flagged code on line {line}; for {rule} that hides the finding rather than fixing it"
    )]
    Deletion { rule: String, line: u32 },
    /// No subtree of the example gives a usable rewrite.
    #[error("no rewrite can be extracted from the example: {reason}")]
    NotExtractable { reason: String },
}
