//! A function's natural empty value: what it can return when the value it would work on is
//! missing, read from its return annotation, else from its other `return` statements. Unknown
//! is an answer: the fixers then raise, they never guess.
//!
//! `int` and `float` have none on purpose: `0` is a real count, price or id, and a caller
//! cannot tell it from a result, so a zero would hide the missing value where an empty
//! collection or a None the caller already handles would not.

use ruff_python_ast::helpers::ReturnStatementVisitor;
use ruff_python_ast::visitor::Visitor;
use ruff_python_ast::{Expr, Operator, StmtFunctionDef, StmtReturn, UnaryOp};

use super::Behaviour;

/// What a function returns when it has nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Empty {
    /// A bare `return`: a `-> None` function, or a generator (the iteration ends).
    Bare,
    /// `return None`: None is part of the contract (`Optional[X]`, `X | None`, an explicit
    /// `return None` among value returns).
    None,
    /// `return <value>`: `[]`, `{}`, `set()`, `frozenset()`, `()`, `""`, `b""`, `False`.
    Value(&'static str),
}

impl Empty {
    /// The statement that returns it.
    pub fn statement(self) -> String {
        match self {
            Empty::Bare => "return".to_string(),
            Empty::None => "return None".to_string(),
            Empty::Value(v) => format!("return {v}"),
        }
    }

    /// The value a caller sees.
    pub fn value(self) -> &'static str {
        match self {
            Empty::Bare | Empty::None => "None",
            Empty::Value(v) => v,
        }
    }

    pub fn behaviour(self) -> Behaviour {
        Behaviour::Returns(self.value().to_string())
    }
}

/// The `return` statements of a function's own body (not of nested functions) and whether it
/// is a generator.
pub(super) fn own_returns(function: &StmtFunctionDef) -> (Vec<&StmtReturn>, bool) {
    let mut visitor = ReturnStatementVisitor::default();
    visitor.visit_body(&function.body);
    (visitor.returns, visitor.is_generator)
}

/// The natural empty value of `function`, `None` when it is unknown.
pub(super) fn natural_empty(function: &StmtFunctionDef) -> Option<Empty> {
    let (returns, generator) = own_returns(function);
    if generator {
        return Some(Empty::Bare);
    }
    let empty = match &function.returns {
        Some(annotation) => annotation_empty(annotation),
        None => returns_empty(&returns),
    };
    // A bare return in `__init__` (or another protocol method) would leave the object half
    // made; it is the natural empty value of a plain `-> None` function only.
    let name = function.name.as_str();
    if empty == Some(Empty::Bare) && name.starts_with("__") && name.ends_with("__") {
        return None;
    }
    empty
}

/// The empty value an annotation promises.
pub(super) fn annotation_empty(annotation: &Expr) -> Option<Empty> {
    match annotation {
        Expr::NoneLiteral(_) => Some(Empty::Bare),
        Expr::StringLiteral(s) => {
            let parsed = ruff_python_parser::parse_expression(s.value.to_str()).ok()?;
            annotation_empty(parsed.expr())
        }
        Expr::BinOp(b) if b.op == Operator::BitOr => {
            if union_members(annotation)
                .iter()
                .any(|m| m.is_none_literal_expr())
            {
                Some(Empty::None)
            } else {
                None
            }
        }
        Expr::Name(_) | Expr::Attribute(_) => bare_empty(last_segment(annotation)?),
        Expr::Subscript(s) => {
            let base = last_segment(&s.value)?;
            let args: Vec<&Expr> = match &*s.slice {
                Expr::Tuple(t) => t.elts.iter().collect(),
                other => vec![other],
            };
            match base {
                "Optional" => Some(Empty::None),
                "Union" => args
                    .iter()
                    .any(|a| a.is_none_literal_expr())
                    .then_some(Empty::None),
                "Annotated" => annotation_empty(args.first()?),
                // Only a tuple of any length may be empty: `tuple[int, int]` may not.
                "tuple" | "Tuple" => (args.len() == 2 && args[1].is_ellipsis_literal_expr())
                    .then_some(Empty::Value("()")),
                other => generic_empty(other),
            }
        }
        _ => None,
    }
}

fn union_members(expr: &Expr) -> Vec<&Expr> {
    match expr {
        Expr::BinOp(b) if b.op == Operator::BitOr => {
            let mut out = union_members(&b.left);
            out.extend(union_members(&b.right));
            out
        }
        other => vec![other],
    }
}

fn last_segment(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Name(n) => Some(n.id.as_str()),
        Expr::Attribute(a) if ruff_python_ast::helpers::is_dotted_name(&a.value) => {
            Some(a.attr.as_str())
        }
        _ => None,
    }
}

/// A bare annotation (`list`, `typing.Dict`, `str`).
fn bare_empty(name: &str) -> Option<Empty> {
    match name {
        "str" => Some(Empty::Value("\"\"")),
        "bytes" => Some(Empty::Value("b\"\"")),
        "bool" => Some(Empty::Value("False")),
        "tuple" | "Tuple" => Some(Empty::Value("()")),
        other => generic_empty(other),
    }
}

/// A collection, bare or subscripted.
fn generic_empty(name: &str) -> Option<Empty> {
    match name {
        "list" | "List" | "Sequence" | "MutableSequence" | "Iterable" | "Collection" => {
            Some(Empty::Value("[]"))
        }
        "dict" | "Dict" | "Mapping" | "MutableMapping" => Some(Empty::Value("{}")),
        "set" | "Set" | "AbstractSet" | "MutableSet" => Some(Empty::Value("set()")),
        "frozenset" | "FrozenSet" => Some(Empty::Value("frozenset()")),
        _ => None,
    }
}

/// The kind of value one `return` gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    None,
    Known(&'static str),
    Unknown,
}

fn return_kind(value: Option<&Expr>) -> Kind {
    let Some(value) = value else {
        return Kind::None;
    };
    let call_name = |e: &Expr| match e {
        Expr::Call(c) => match &*c.func {
            Expr::Name(n) => Some(n.id.as_str().to_string()),
            Expr::Attribute(a) if a.value.is_string_literal_expr() => {
                Some(format!("str.{}", a.attr.as_str()))
            }
            _ => None,
        },
        _ => None,
    };
    match value {
        Expr::NoneLiteral(_) => Kind::None,
        Expr::List(_) | Expr::ListComp(_) => Kind::Known("[]"),
        Expr::Dict(_) | Expr::DictComp(_) => Kind::Known("{}"),
        Expr::Set(_) | Expr::SetComp(_) => Kind::Known("set()"),
        Expr::StringLiteral(_) | Expr::FString(_) => Kind::Known("\"\""),
        Expr::BytesLiteral(_) => Kind::Known("b\"\""),
        Expr::BooleanLiteral(_) | Expr::Compare(_) => Kind::Known("False"),
        Expr::UnaryOp(u) if u.op == UnaryOp::Not => Kind::Known("False"),
        Expr::Call(_) => match call_name(value).as_deref() {
            Some("list" | "sorted") => Kind::Known("[]"),
            Some("dict") => Kind::Known("{}"),
            Some("set") => Kind::Known("set()"),
            Some("str" | "str.join" | "str.format") => Kind::Known("\"\""),
            Some("bool" | "isinstance" | "issubclass" | "hasattr" | "callable" | "any" | "all") => {
                Kind::Known("False")
            }
            _ => Kind::Unknown,
        },
        _ => Kind::Unknown,
    }
}

/// The empty value the `return` statements agree on: every value return of one known kind
/// (`return []`, `return [x for ...]`, `return sorted(...)`), or None when an explicit
/// `return None` stands among value returns. A function without value returns has no
/// contract to read (a bare `return` there would only skip the work).
fn returns_empty(returns: &[&StmtReturn]) -> Option<Empty> {
    let kinds: Vec<Kind> = returns
        .iter()
        .map(|r| return_kind(r.value.as_deref()))
        .collect();
    let has_value = kinds.iter().any(|k| *k != Kind::None);
    if !has_value {
        return None;
    }
    if kinds.contains(&Kind::None) {
        return Some(Empty::None);
    }
    let mut known = kinds.iter().map(|k| match k {
        Kind::Known(v) => Some(*v),
        _ => None,
    });
    let first = known.next()??;
    known
        .all(|k| k == Some(first))
        .then_some(Empty::Value(first))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty_of(source: &str) -> Option<Empty> {
        let parsed = ruff_python_parser::parse_module(source).expect("test source parses");
        let Some(ruff_python_ast::Stmt::FunctionDef(f)) = parsed.syntax().body.first() else {
            panic!("test source starts with a def");
        };
        natural_empty(f)
    }

    #[test]
    fn annotations_give_the_empty_value() {
        let cases = [
            ("def f() -> list[int]: ...", Some(Empty::Value("[]"))),
            ("def f() -> typing.List[int]: ...", Some(Empty::Value("[]"))),
            (
                "def f() -> Mapping[str, int]: ...",
                Some(Empty::Value("{}")),
            ),
            ("def f() -> set: ...", Some(Empty::Value("set()"))),
            ("def f() -> tuple[int, ...]: ...", Some(Empty::Value("()"))),
            ("def f() -> tuple[int, int]: ...", None),
            ("def f() -> str: ...", Some(Empty::Value("\"\""))),
            ("def f() -> bool: ...", Some(Empty::Value("False"))),
            ("def f() -> int: ...", None),
            ("def f() -> float: ...", None),
            ("def f() -> User | None: ...", Some(Empty::None)),
            ("def f() -> Optional[User]: ...", Some(Empty::None)),
            ("def f() -> Union[User, None]: ...", Some(Empty::None)),
            ("def f() -> 'list[User]': ...", Some(Empty::Value("[]"))),
            ("def f() -> None: ...", Some(Empty::Bare)),
            ("def f() -> User: ...", None),
            ("def f() -> int:\n    yield 1", Some(Empty::Bare)),
            ("def __init__(self) -> None: ...", None),
        ];
        for (source, expected) in cases {
            assert_eq!(empty_of(source), expected, "{source}");
        }
    }

    #[test]
    fn returns_give_the_empty_value_when_they_agree() {
        let cases = [
            (
                "def f(x):\n    if x:\n        return []\n    return [y for y in x]",
                Some(Empty::Value("[]")),
            ),
            (
                "def f(x):\n    if x:\n        return {}\n    return [1]",
                None,
            ),
            (
                "def f(x):\n    if x:\n        return None\n    return x.y",
                Some(Empty::None),
            ),
            ("def f(x):\n    return x.y", None),
            ("def f(x):\n    x.save()", None),
            ("def f(x):\n    if x:\n        return\n    x.save()", None),
            (
                "def f(x):\n    return \", \".join(x)",
                Some(Empty::Value("\"\"")),
            ),
        ];
        for (source, expected) in cases {
            assert_eq!(empty_of(source), expected, "{source}");
        }
    }
}
