//! AGY403 `constant-condition`: a condition whose outcome is fixed by how it is written, which
//! almost always means a typo or a misunderstanding:
//! - a value compared with itself (`x == x`, `x is x`, `x < x`, `x >= x`);
//! - two literals compared (`1 == 2`, `"a" != "b"`);
//! - a string literal as the condition, or as an operand of `or` in a condition
//!   (`if kind == "a" or "b":` is always true: the `"b"` is truthy);
//! - `assert (x, "message")`: a non-empty tuple is always true.
//!
//! Not flagged: `x != x` (the NaN test idiom), `if True:`/`if 0:`/`while 1:` (deliberate
//! toggles and loops), self-comparisons of calls (`f() == f()` may differ), self-comparisons in
//! test files (tests of `__eq__`/`__lt__` compare an object with itself on purpose).

use ruff_python_ast::comparable::ComparableExpr;
use ruff_python_ast::visitor::{self, Visitor};
use ruff_python_ast::{BoolOp, CmpOp, Expr, ExprCompare, Stmt};
use ruff_text_size::Ranged;

use crate::native::{Checker, Diagnostic};

pub fn constant_condition(checker: &Checker, out: &mut Vec<Diagnostic>) {
    let mut finder = ConditionFinder {
        checker,
        test_file: checker.is_test_file(),
        out,
    };
    finder.visit_body(&checker.module.body);
}

struct ConditionFinder<'c, 'o> {
    checker: &'c Checker<'c>,
    test_file: bool,
    out: &'o mut Vec<Diagnostic>,
}

impl ConditionFinder<'_, '_> {
    /// Checks an expression used as a truth value.
    fn check_test(&mut self, test: &Expr) {
        match test {
            Expr::StringLiteral(s) if !s.value.is_empty() => {
                self.push(test, "this condition is a non-empty string literal, which is always true; compare the string with a value".to_string());
            }
            Expr::BoolOp(bool_op) if bool_op.op == BoolOp::Or => {
                for value in &bool_op.values {
                    if matches!(value, Expr::StringLiteral(s) if !s.value.is_empty()) {
                        self.push(
                            value,
                            format!(
                                "`or {}` makes this condition always true (a non-empty string is truthy); compare with it too (`x == a or x == b`, or `x in (a, b)`)",
                                self.checker.slice(value.range())
                            ),
                        );
                        break;
                    }
                }
            }
            _ => {}
        }
    }

    fn check_compare(&mut self, compare: &ExprCompare) {
        let [op] = &*compare.ops else {
            return;
        };
        let [right] = &*compare.comparators else {
            return;
        };
        let left = compare.left.as_ref();
        // `"a" in "abc"` is constant too, but reads like a deliberate example; only ordering
        // and equality of two literals are flagged.
        if is_literal(left) && is_literal(right) && !matches!(op, CmpOp::In | CmpOp::NotIn) {
            self.push_range(
                compare.range,
                format!(
                    "`{}` compares two literals, so its result never changes; compare a variable instead",
                    self.checker.slice(compare.range)
                ),
            );
            return;
        }
        if self.test_file || *op == CmpOp::NotEq || !is_plain_value(left) {
            return;
        }
        if ComparableExpr::from(left) == ComparableExpr::from(right) {
            let outcome = match op {
                CmpOp::Eq | CmpOp::Is | CmpOp::LtE | CmpOp::GtE => "always true",
                CmpOp::IsNot | CmpOp::Lt | CmpOp::Gt => "always false",
                // `in`/`not in` of a value in itself is not constant (`"a" in "a"` is, but
                // `[1] in [1]` is not).
                _ => return,
            };
            let nan = if *op == CmpOp::Eq {
                " (false only for NaN: use `math.isnan` if that is the intent)"
            } else {
                ""
            };
            self.push_range(
                compare.range,
                format!(
                    "`{}` compares a value with itself and is {outcome}{nan}; one side is probably meant to be another variable",
                    self.checker.slice(compare.range)
                ),
            );
        }
    }

    fn push(&mut self, expr: &Expr, message: String) {
        self.push_range(expr.range(), message);
    }

    fn push_range(&mut self, range: ruff_text_size::TextRange, message: String) {
        self.out.push(Diagnostic::new("AGY403", range, message));
    }
}

impl<'a> Visitor<'a> for ConditionFinder<'_, '_> {
    fn visit_stmt(&mut self, stmt: &'a Stmt) {
        match stmt {
            Stmt::If(if_stmt) => {
                self.check_test(&if_stmt.test);
                for clause in &if_stmt.elif_else_clauses {
                    if let Some(test) = &clause.test {
                        self.check_test(test);
                    }
                }
            }
            Stmt::While(while_stmt) => self.check_test(&while_stmt.test),
            Stmt::Assert(assert) => match assert.test.as_ref() {
                Expr::Tuple(tuple) if !tuple.elts.is_empty() => {
                    self.push(
                        &assert.test,
                        "this `assert` tests a non-empty tuple, which is always true; write `assert condition, \"message\"` without the parentheses".to_string(),
                    );
                }
                test => self.check_test(test),
            },
            _ => {}
        }
        visitor::walk_stmt(self, stmt);
    }

    fn visit_expr(&mut self, expr: &'a Expr) {
        match expr {
            Expr::Compare(compare) => self.check_compare(compare),
            Expr::If(if_expr) => self.check_test(&if_expr.test),
            _ => {}
        }
        visitor::walk_expr(self, expr);
    }

    fn visit_comprehension(&mut self, comprehension: &'a ruff_python_ast::Comprehension) {
        for condition in &comprehension.ifs {
            self.check_test(condition);
        }
        visitor::walk_comprehension(self, comprehension);
    }
}

/// Number, string, bytes, boolean and `None` literals.
fn is_literal(expr: &Expr) -> bool {
    matches!(
        expr,
        Expr::NumberLiteral(_)
            | Expr::StringLiteral(_)
            | Expr::BytesLiteral(_)
            | Expr::BooleanLiteral(_)
            | Expr::NoneLiteral(_)
    )
}

/// A name, an attribute chain of one, or a subscript of one by a literal: reading it twice
/// gives the same object (no call in between).
fn is_plain_value(expr: &Expr) -> bool {
    match expr {
        Expr::Name(_) => true,
        Expr::Attribute(attr) => is_plain_value(&attr.value),
        Expr::Subscript(sub) => is_plain_value(&sub.value) && is_literal(&sub.slice),
        _ => false,
    }
}
