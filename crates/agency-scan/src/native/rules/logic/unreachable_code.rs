//! AGY401 `unreachable-code`: statements after `return`, `raise`, `continue` or `break` in the
//! same block (or after an `if`/`else` whose every branch ends so) never run. Usually a
//! leftover from debugging or a misplaced indent; reported once per block, at the first
//! unreachable statement.
//!
//! Not flagged: a `yield` right after `return`/`raise` (`return; yield` is the idiom for an
//! empty generator), and code after `sys.exit()`, `os._exit()` and other calls that never
//! return: they are calls, which tests monkeypatch and which a reader cannot be sure of.

use ruff_python_ast::visitor::{self, Visitor};
use ruff_python_ast::{Expr, Stmt};
use ruff_text_size::Ranged;

use crate::native::{Checker, Diagnostic};
use agency_core::contract::Severity;

pub fn unreachable_code(checker: &Checker, out: &mut Vec<Diagnostic>) {
    let mut finder = UnreachableFinder { out };
    finder.visit_body(&checker.module.body);
}

struct UnreachableFinder<'o> {
    out: &'o mut Vec<Diagnostic>,
}

impl<'a> Visitor<'a> for UnreachableFinder<'_> {
    fn visit_body(&mut self, body: &'a [Stmt]) {
        if let Some(idx) = body.iter().position(always_leaves)
            && let Some(next) = body.get(idx + 1)
            && !is_yield(next)
        {
            self.out.push(
                        Diagnostic::new(
                            "AGY401",
                            next.range(),
                            match leaving_keyword(&body[idx]) {
                                Some(keyword) => format!(
                                    "this code never runs: the block always leaves at the `{keyword}` before it; remove it or move it above"
                                ),
                                None => "this code never runs: every branch of the `if`/`else` before it leaves the block; remove it or move it above".to_string(),
                            },
                        )
                        .severity(Severity::Medium),
                    );
        }
        visitor::walk_body(self, body);
    }
}

/// True when control never falls through `stmt` to the next statement.
fn always_leaves(stmt: &Stmt) -> bool {
    match stmt {
        Stmt::Return(_) | Stmt::Raise(_) | Stmt::Continue(_) | Stmt::Break(_) => true,
        Stmt::If(if_stmt) => {
            // Only an `if` with a final `else` covers every case.
            if_stmt
                .elif_else_clauses
                .last()
                .is_some_and(|c| c.test.is_none())
                && ends_block(&if_stmt.body)
                && if_stmt
                    .elif_else_clauses
                    .iter()
                    .all(|c| ends_block(&c.body))
        }
        _ => false,
    }
}

fn ends_block(body: &[Stmt]) -> bool {
    body.iter().any(always_leaves)
}

/// The statement that leaves, for the message (`None` for an `if` whose branches all do).
fn leaving_keyword(stmt: &Stmt) -> Option<&'static str> {
    match stmt {
        Stmt::Return(_) => Some("return"),
        Stmt::Raise(_) => Some("raise"),
        Stmt::Continue(_) => Some("continue"),
        Stmt::Break(_) => Some("break"),
        _ => None,
    }
}

fn is_yield(stmt: &Stmt) -> bool {
    matches!(stmt, Stmt::Expr(e) if matches!(e.value.as_ref(), Expr::Yield(_) | Expr::YieldFrom(_)))
}
