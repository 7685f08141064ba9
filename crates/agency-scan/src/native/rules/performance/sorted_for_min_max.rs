//! AGY305 `sorted-for-min-max`: `sorted(xs)[0]` sorts a whole sequence (O(n log n) time, O(n)
//! memory) to take one item that `min(xs)` or `max(xs)` finds in one pass.

use ruff_python_ast::visitor::{self, Visitor};
use ruff_python_ast::{Expr, ExprSubscript, Number, UnaryOp};

use crate::native::{Checker, Diagnostic};

pub fn sorted_for_min_max(checker: &Checker, out: &mut Vec<Diagnostic>) {
    let mut visitor = SortedVisitor { out: Vec::new() };
    visitor.visit_body(&checker.module.body);
    out.extend(visitor.out);
}

struct SortedVisitor {
    out: Vec<Diagnostic>,
}

impl<'a> Visitor<'a> for SortedVisitor {
    fn visit_expr(&mut self, expr: &'a Expr) {
        if let Expr::Subscript(subscript) = expr
            && let Some(diagnostic) = check(subscript)
        {
            self.out.push(diagnostic);
        }
        visitor::walk_expr(self, expr);
    }
}

fn check(subscript: &ExprSubscript) -> Option<Diagnostic> {
    let Expr::Call(call) = subscript.value.as_ref() else {
        return None;
    };
    let Expr::Name(func) = call.func.as_ref() else {
        return None;
    };
    if func.id.as_str() != "sorted" || call.arguments.args.len() != 1 {
        return None;
    }
    // Only `key=` and `reverse=` keep the meaning of min/max; `**kwargs` hides what is passed.
    let mut reverse = false;
    for keyword in &call.arguments.keywords {
        match keyword
            .arg
            .as_ref()
            .map(ruff_python_ast::Identifier::as_str)
        {
            Some("key") => {}
            Some("reverse") => match &keyword.value {
                Expr::BooleanLiteral(b) => reverse = b.value,
                _ => return None,
            },
            _ => return None,
        }
    }
    let last = match subscript.slice.as_ref() {
        Expr::NumberLiteral(n) if is_int(&n.value, 0) => false,
        Expr::UnaryOp(u) if u.op == UnaryOp::USub => match u.operand.as_ref() {
            Expr::NumberLiteral(n) if is_int(&n.value, 1) => true,
            _ => return None,
        },
        _ => return None,
    };
    let wanted = if last == reverse { "min" } else { "max" };
    let index = if last { "[-1]" } else { "[0]" };
    Some(
        Diagnostic::new(
            "AGY305",
            subscript.range,
            format!(
                "`sorted(...){index}` sorts the whole sequence to take one item; `{wanted}(...)` finds it in one pass"
            ),
        )
        .impact(50),
    )
}

fn is_int(number: &Number, value: u64) -> bool {
    matches!(number, Number::Int(i) if i.as_u64() == Some(value))
}
