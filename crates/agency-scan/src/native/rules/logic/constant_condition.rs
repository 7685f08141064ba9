//! AGY403 `constant-condition`: a condition whose outcome is fixed by how it is written, which
//! almost always means a typo or a misunderstanding:
//! - a value compared with itself (`x == x`, `x is x`, `x < x`, `x >= x`);
//! - two literals compared (`1 == 2`, `"a" != "b"`);
//! - a string literal as the condition, or as an operand of `or` in a condition
//!   (`if kind == "a" or "b":` is always true: the `"b"` is truthy);
//! - `assert (x, "message")`: a non-empty tuple is always true.
//!
//! Not flagged: `x != x` (the NaN test idiom), `if True:`/`if 0:`/`while 1:` and `if 1 == 1:`
//! (`if True:` spelled so that linters keep the code after an `if 1 == 1: raise` reachable):
//! deliberate toggles and loops; self-comparisons of calls (`f() == f()` may differ). In test
//! files, self-comparisons (tests of `__eq__`/`__lt__` compare an object with itself on
//! purpose) and literal comparisons passed as a call argument (`stmt.where(1 == 0)`: a
//! constant fed to the code under test). A literal comparison elsewhere in a test, as in
//! `assert res, [4, 16 == 64]`, is still a finding: that assertion can never fail.

use ruff_python_ast::comparable::ComparableExpr;
use ruff_python_ast::visitor::{self, Visitor};
use ruff_python_ast::{BoolOp, CmpOp, Expr, ExprCompare, Stmt};
use ruff_text_size::Ranged;

use crate::native::{Checker, Diagnostic};

pub fn constant_condition(checker: &Checker, out: &mut Vec<Diagnostic>) {
    let mut finder = ConditionFinder {
        checker,
        test_file: checker.is_test_file(),
        deliberate: Vec::new(),
        out,
    };
    finder.visit_body(&checker.module.body);
}

struct ConditionFinder<'c, 'o> {
    checker: &'c Checker<'c>,
    test_file: bool,
    /// Literal comparisons written on purpose: `if 1 == 1:` toggles, and call arguments in
    /// tests.
    deliberate: Vec<ruff_text_size::TextRange>,
    out: &'o mut Vec<Diagnostic>,
}

impl ConditionFinder<'_, '_> {
    /// Notes a statement's condition that compares a number with itself (`if 1 == 1:`), a
    /// switch written like `if True:`. `if 1 == 2:` stays a finding.
    fn note_toggle(&mut self, test: &Expr) {
        if let Expr::Compare(compare) = test
            && let ([CmpOp::Eq], [right], Expr::NumberLiteral(left)) =
                (&*compare.ops, &*compare.comparators, compare.left.as_ref())
            && matches!(right, Expr::NumberLiteral(right) if right.value == left.value)
        {
            self.deliberate.push(compare.range);
        }
    }

    /// In a test, notes the arguments of a call that compare two literals.
    fn note_arguments(&mut self, call: &ruff_python_ast::ExprCall) {
        let args = call.arguments.args.iter();
        let keywords = call.arguments.keywords.iter().map(|k| &k.value);
        for arg in args.chain(keywords) {
            if let Expr::Compare(compare) = arg
                && let [right] = &*compare.comparators
                && is_literal(&compare.left)
                && is_literal(right)
            {
                self.deliberate.push(compare.range);
            }
        }
    }

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
        if is_literal(left)
            && is_literal(right)
            && !matches!(op, CmpOp::In | CmpOp::NotIn)
            && !self.deliberate.contains(&compare.range)
        {
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
            // IEEE comparisons with NaN are false, so `==`, `<=` and `>=` of a value with
            // itself are true except for NaN.
            let nan = if matches!(op, CmpOp::Eq | CmpOp::LtE | CmpOp::GtE) {
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
                self.note_toggle(&if_stmt.test);
                self.check_test(&if_stmt.test);
                for clause in &if_stmt.elif_else_clauses {
                    if let Some(test) = &clause.test {
                        self.note_toggle(test);
                        self.check_test(test);
                    }
                }
            }
            Stmt::While(while_stmt) => {
                self.note_toggle(&while_stmt.test);
                self.check_test(&while_stmt.test);
            }
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
            Expr::Call(call) if self.test_file => self.note_arguments(call),
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

#[cfg(test)]
mod tests {
    use crate::native::analyze_source;

    /// Flagged lines of `source` analysed as the file `path`.
    fn flagged(path: &str, source: &str) -> Vec<usize> {
        let analysis = analyze_source(path, source, &|code| code == "AGY403");
        let index = ruff_source_file::LineIndex::from_source_text(source);
        analysis
            .diagnostics
            .iter()
            .map(|d| index.line_index(d.range.start()).get())
            .collect()
    }

    #[test]
    fn literal_arguments_in_tests() {
        // SQLAlchemy's tests pass `1 == 0` as a constant false clause; Celery's mangled
        // assertions compare literals in the message and can never fail.
        let source = "\
stmt = stmt.where(1 == 0)
c2 = relationship(C1, primaryjoin=\"x\" == \"y\")
assert res, [4, 16 == 64]
";
        assert_eq!(flagged("tests/test_query.py", source), vec![3]);
        assert_eq!(flagged("app/query.py", source), vec![1, 2, 3]);
    }
}
