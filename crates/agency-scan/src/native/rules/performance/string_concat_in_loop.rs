//! AGY302 `string-concat-in-loop`: `text += piece` inside a loop, where `text` is a string,
//! copies the whole string built so far on every iteration: O(n²) in the final length.
//! CPython can sometimes resize in place, but only for a local with no other reference, and
//! PyPy and the other interpreters never do; `parts.append(piece)` plus `"".join(parts)` is
//! linear everywhere.
//!
//! Only names known to be strings are flagged: every assignment to the name in its function
//! (or the module) is a string literal, an f-string, `str(...)`, `"...".join(...)`,
//! `"...".format(...)` or `"..." % ...`. A string reset inside the loop (`line = ""` per row)
//! is built per iteration, not across the loop, and is left alone.

use ruff_python_ast::{Expr, Operator, Stmt};

use ruff_text_size::TextSize;

use super::loops::{self, Binding, Node};
use crate::native::{Checker, Diagnostic};

pub fn string_concat_in_loop(checker: &Checker, out: &mut Vec<Diagnostic>) {
    // Test code runs once per test run; its loops are not worth a finding.
    if checker.is_test_file() {
        return;
    }
    // One finding per string per loop: `+=` on two branches is one pattern.
    let mut reported: Vec<(TextSize, &str)> = Vec::new();
    loops::walk(&checker.module.body, &mut |context, node| {
        let Node::Stmt(Stmt::AugAssign(assign)) = node else {
            return;
        };
        if assign.op != Operator::Add || context.runs_once {
            return;
        }
        let Expr::Name(target) = assign.target.as_ref() else {
            return;
        };
        let name = target.id.as_str();
        let Some(bindings) = context.bindings(name) else {
            return;
        };
        let mut assigned = false;
        for binding in &bindings {
            match binding {
                Binding::Assign(value) if is_str(value) => assigned = true,
                Binding::AugAssign(_) => {}
                _ => return,
            }
        }
        let lp = context.innermost();
        if !assigned || resets_in_loop(lp, name) || reported.contains(&(loop_start(lp), name)) {
            return;
        }
        reported.push((loop_start(lp), name));
        out.push(
            Diagnostic::new(
                "AGY302",
                assign.range,
                format!(
                    "`{name} += ...` copies the whole string on every iteration of the loop; append the pieces to a list and `\"\".join(...)` it after the loop"
                ),
            )
            .impact(30),
        );
    });
}

fn loop_start(lp: loops::Loop<'_>) -> TextSize {
    match lp {
        loops::Loop::For(f) => f.range.start(),
        loops::Loop::While(w) => w.range.start(),
        loops::Loop::Comprehension(generators) => generators
            .first()
            .map_or(TextSize::default(), |g| g.range.start()),
    }
}

/// True when the loop assigns `name` afresh (not `+=`): the string restarts per iteration.
fn resets_in_loop(lp: loops::Loop<'_>, name: &str) -> bool {
    let body = match lp {
        loops::Loop::For(f) => &f.body,
        loops::Loop::While(w) => &w.body,
        // `+=` is a statement; it never sits directly in a comprehension.
        loops::Loop::Comprehension(_) => return true,
    };
    let mut bindings = Vec::new();
    loops::collect_bindings(body, name, &mut bindings);
    bindings.iter().any(|b| !matches!(b, Binding::AugAssign(_)))
}

/// True for expressions that evaluate to a `str`. `name` itself proves nothing (`n = n + 1`).
fn is_str(expr: &Expr) -> bool {
    match expr {
        Expr::StringLiteral(_) | Expr::FString(_) => true,
        Expr::Call(call) => match call.func.as_ref() {
            Expr::Name(f) => f.id.as_str() == "str",
            Expr::Attribute(attr) => {
                matches!(attr.value.as_ref(), Expr::StringLiteral(_))
                    && matches!(attr.attr.as_str(), "join" | "format")
            }
            _ => false,
        },
        Expr::BinOp(binop) => match binop.op {
            Operator::Add => is_str(&binop.left) || is_str(&binop.right),
            Operator::Mod => matches!(binop.left.as_ref(), Expr::StringLiteral(_)),
            _ => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn str_expressions() {
        let parse = |src: &str| {
            *ruff_python_parser::parse_expression(src)
                .unwrap()
                .into_syntax()
                .body
        };
        assert!(is_str(&parse("'a'")));
        assert!(is_str(&parse("s + 'x'")));
        assert!(!is_str(&parse("s + 1")));
        assert!(is_str(&parse("', '.join(xs)")));
        assert!(!is_str(&parse("[]")));
        assert!(!is_str(&parse("0")));
        assert!(!is_str(&parse("a + b")));
    }
}
