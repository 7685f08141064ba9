//! AGY404 `duplicate-condition`: an `elif` whose condition is the same expression as an earlier
//! condition of its `if` chain never runs (the earlier branch took every case it would), and
//! `a or a` / `a and a` repeats an operand. Both are usually a copy-paste slip where another
//! value was meant.
//!
//! Conditions compare structurally (`ComparableExpr`: same tree, whatever the spacing). Repeated
//! boolean operands are only reported when they contain no call, since `read() or read()`
//! legitimately reads twice.

use ruff_python_ast::comparable::ComparableExpr;
use ruff_python_ast::visitor::{self, Visitor};
use ruff_python_ast::{Expr, Stmt};
use ruff_text_size::Ranged;

use crate::native::{Checker, Diagnostic};

pub fn duplicate_condition(checker: &Checker, out: &mut Vec<Diagnostic>) {
    let mut finder = DuplicateFinder { checker, out };
    finder.visit_body(&checker.module.body);
}

struct DuplicateFinder<'c, 'o> {
    checker: &'c Checker<'c>,
    out: &'o mut Vec<Diagnostic>,
}

impl<'a> Visitor<'a> for DuplicateFinder<'_, '_> {
    fn visit_stmt(&mut self, stmt: &'a Stmt) {
        if let Stmt::If(if_stmt) = stmt
            && if_stmt.elif_else_clauses.iter().any(|c| c.test.is_some())
        {
            let mut seen: Vec<ComparableExpr> = vec![ComparableExpr::from(&*if_stmt.test)];
            for test in if_stmt
                .elif_else_clauses
                .iter()
                .filter_map(|c| c.test.as_ref())
            {
                let comparable = ComparableExpr::from(test);
                if seen.contains(&comparable) {
                    self.out.push(Diagnostic::new(
                            "AGY404",
                            test.range(),
                            format!(
                                "`elif {}` repeats an earlier condition of this `if` chain, so its branch never runs; fix the condition or merge the branches",
                                short(self.checker.slice(test.range()))
                            ),
                        ));
                } else {
                    seen.push(comparable);
                }
            }
        }
        visitor::walk_stmt(self, stmt);
    }

    fn visit_expr(&mut self, expr: &'a Expr) {
        if let Expr::BoolOp(bool_op) = expr {
            for (idx, value) in bool_op.values.iter().enumerate().skip(1) {
                if has_call(value) {
                    continue;
                }
                let comparable = ComparableExpr::from(value);
                if bool_op.values[..idx]
                    .iter()
                    .any(|earlier| ComparableExpr::from(earlier) == comparable)
                {
                    let op = match bool_op.op {
                        ruff_python_ast::BoolOp::And => "and",
                        ruff_python_ast::BoolOp::Or => "or",
                    };
                    self.out.push(Diagnostic::new(
                        "AGY404",
                        value.range(),
                        format!(
                            "`{}` appears twice in this `{op}`; the repeat changes nothing, so another value was probably meant",
                            short(self.checker.slice(value.range()))
                        ),
                    ));
                    break;
                }
            }
        }
        visitor::walk_expr(self, expr);
    }
}

/// Long conditions are shortened in messages.
fn short(text: &str) -> String {
    let first_line = text.lines().next().unwrap_or(text);
    if first_line.len() <= 60 && first_line.len() == text.len() {
        text.to_string()
    } else {
        let mut end = first_line.len().min(57);
        while !first_line.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &first_line[..end])
    }
}

/// True when a call (or `await`/`yield`) sits anywhere in `expr`: evaluating it twice may differ.
fn has_call(expr: &Expr) -> bool {
    struct Finder {
        found: bool,
    }
    impl<'a> Visitor<'a> for Finder {
        fn visit_expr(&mut self, expr: &'a Expr) {
            if matches!(
                expr,
                Expr::Call(_)
                    | Expr::Await(_)
                    | Expr::Yield(_)
                    | Expr::YieldFrom(_)
                    | Expr::Named(_)
            ) {
                self.found = true;
                return;
            }
            visitor::walk_expr(self, expr);
        }
    }
    let mut finder = Finder { found: false };
    finder.visit_expr(expr);
    finder.found
}
