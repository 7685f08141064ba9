//! Small AST questions many rules ask: the dotted name of an expression, the method a call
//! invokes, whether an expression is a constant.

use ruff_python_ast::{Expr, ExprCall, Stmt};

/// `a.b.c` for a chain of names and attributes; `None` for anything else.
pub fn dotted_name(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Name(name) => Some(name.id.to_string()),
        Expr::Attribute(attr) => {
            let mut base = dotted_name(&attr.value)?;
            base.push('.');
            base.push_str(attr.attr.as_str());
            Some(base)
        }
        _ => None,
    }
}

/// The last segment of what a call invokes: `execute` for `cur.execute(...)`, `text` for
/// `text(...)`; `None` for calls of calls, subscripts and the like.
pub fn callee_name(call: &ExprCall) -> Option<&str> {
    match call.func.as_ref() {
        Expr::Name(name) => Some(name.id.as_str()),
        Expr::Attribute(attr) => Some(attr.attr.as_str()),
        _ => None,
    }
}

/// The object a method is called on: `cur` for `cur.execute(...)`.
pub fn callee_receiver(call: &ExprCall) -> Option<&Expr> {
    match call.func.as_ref() {
        Expr::Attribute(attr) => Some(&attr.value),
        _ => None,
    }
}

/// True for literals whose value is fixed at compile time (strings without interpolation,
/// numbers, booleans, None, `...`) and tuples, lists, sets of them.
pub fn is_constant(expr: &Expr) -> bool {
    match expr {
        Expr::StringLiteral(_)
        | Expr::BytesLiteral(_)
        | Expr::NumberLiteral(_)
        | Expr::BooleanLiteral(_)
        | Expr::NoneLiteral(_)
        | Expr::EllipsisLiteral(_) => true,
        Expr::Tuple(t) => t.elts.iter().all(is_constant),
        Expr::List(l) => l.elts.iter().all(is_constant),
        Expr::Set(s) => s.elts.iter().all(is_constant),
        _ => false,
    }
}

/// True for a string literal (or an implicit concatenation of them), not an f-string.
pub fn is_str_literal(expr: &Expr) -> bool {
    matches!(expr, Expr::StringLiteral(_))
}

/// True for statements that end the current block unconditionally.
pub fn is_terminal(stmt: &Stmt) -> bool {
    matches!(
        stmt,
        Stmt::Return(_) | Stmt::Raise(_) | Stmt::Continue(_) | Stmt::Break(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expr(src: &str) -> Expr {
        *ruff_python_parser::parse_expression(src)
            .unwrap()
            .into_syntax()
            .body
    }

    #[test]
    fn names_and_constants() {
        assert_eq!(dotted_name(&expr("a.b.c")).as_deref(), Some("a.b.c"));
        assert_eq!(dotted_name(&expr("a().b")), None);
        let Expr::Call(call) = expr("cur.execute(q)") else {
            panic!("not a call")
        };
        assert_eq!(callee_name(&call), Some("execute"));
        assert!(is_constant(&expr("('a', 1, None)")));
        assert!(!is_constant(&expr("f'{x}'")));
        assert!(!is_constant(&expr("[a, 1]")));
        assert!(is_str_literal(&expr("'a' 'b'")));
    }
}
