//! From a crash (rule, line, column range) to the syntax node that was None.
//!
//! The range comes from `agency_scan::traceback`: Python 3.11+ carets when the log has them
//! (the `~` run under a subscripted or called value, else the `^` run under the failing
//! operation, `receiver.attr` for an attribute), else the receiver and `.attr` found in the
//! text of the line, the iterated expression of a `for` or an unpacking, or the whole line.
//! Every expression in a None-sensitive place (the value of `x.attr`, of `x[...]`, the callee
//! of `x(...)`, the iterable of a loop, unpacking, `in` test or `*x`) is a candidate; the range
//! picks the one whose own range or whose operation's range it is, or the only one it covers.

use ruff_python_ast::{AnyNodeRef, CmpOp, Expr, ExprContext};
use ruff_text_size::{Ranged, TextRange};

use super::Crash;
use super::flow::is;
use super::tree::{Tree, size};

/// Where the None was.
#[derive(Debug, Clone, Copy)]
pub(super) struct Site {
    /// The expression that was None.
    pub expr: usize,
    /// The statement that evaluated it.
    pub stmt: usize,
    /// The function whose body holds that statement; `None` at module or class level.
    pub function: Option<usize>,
}

/// The site of a crash, `None` when the range does not single out one expression.
pub(super) fn locate(tree: &Tree, crash: &Crash) -> Option<Site> {
    let start = tree.column_offset(crash.line, crash.column)?;
    let end = tree
        .column_offset(crash.line, crash.end_column)
        .or_else(|| tree.line_range(crash.line).map(|(_, end)| end))?;
    if end <= start {
        return None;
    }
    let range = TextRange::new(size(start), size(end));
    let candidates: Vec<(usize, TextRange)> = (0..tree.len())
        .filter_map(|idx| slot(tree, crash.rule, idx).map(|outer| (idx, outer)))
        .filter(|(idx, _)| tree.expr(*idx).is_some_and(could_be_none))
        .collect();
    let exact_value = candidates.iter().find(|(idx, _)| tree.range(*idx) == range);
    let exact_operation = candidates.iter().find(|(_, outer)| *outer == range);
    // `traceback` gives `receiver.attr` for an attribute (carets or not), and the `~` run under
    // the value for a subscript or a call: `a.b` is the operation on `a`, `a[0]` the value.
    let exact = if crash.rule == "none-attribute" {
        exact_operation.or(exact_value)
    } else {
        exact_value.or(exact_operation)
    };
    let expr = if let Some((idx, _)) = exact {
        *idx
    } else {
        // No exact range (the whole line, without carets): the one candidate it covers.
        let covered: Vec<usize> = candidates
            .iter()
            .filter(|(idx, outer)| {
                range.contains(outer.start()) && tree.range(*idx).end() <= range.end()
            })
            .map(|(idx, _)| *idx)
            .collect();
        match covered.as_slice() {
            [only] => *only,
            _ => return None,
        }
    };
    let stmt = tree.statement_of(expr)?;
    Some(Site {
        expr,
        stmt,
        function: tree.function_of_stmt(stmt),
    })
}

/// When node `idx` sits where a None raises `rule`, the range of the operation that raises.
fn slot(tree: &Tree, rule: &str, idx: usize) -> Option<TextRange> {
    let node = tree.node(idx);
    let parent_idx = tree.parent(idx)?;
    let parent = tree.node(parent_idx);
    match (rule, parent) {
        ("none-attribute", AnyNodeRef::ExprAttribute(a)) if is(node, &a.value) => Some(a.range),
        ("none-subscript", AnyNodeRef::ExprSubscript(s))
            if is(node, &s.value) && s.ctx == ExprContext::Load =>
        {
            Some(s.range)
        }
        ("none-call", AnyNodeRef::ExprCall(c)) if is(node, &c.func) => Some(c.range()),
        ("none-iteration", _) => iteration_slot(tree, idx, parent_idx),
        _ => None,
    }
}

/// Builtins that iterate their only argument.
const ITERATING: [&str; 12] = [
    "list",
    "tuple",
    "set",
    "frozenset",
    "sorted",
    "enumerate",
    "sum",
    "min",
    "max",
    "any",
    "all",
    "dict",
];

fn iteration_slot(tree: &Tree, idx: usize, parent_idx: usize) -> Option<TextRange> {
    let node = tree.node(idx);
    let own = node.range();
    match tree.node(parent_idx) {
        AnyNodeRef::StmtFor(f) if is(node, &f.iter) => Some(own),
        AnyNodeRef::Comprehension(c) if is(node, &c.iter) => Some(own),
        AnyNodeRef::StmtAssign(a)
            if is(node, &a.value)
                && a.targets.len() == 1
                && matches!(a.targets[0], Expr::Tuple(_) | Expr::List(_)) =>
        {
            Some(own)
        }
        AnyNodeRef::ExprCompare(c) => {
            let position = c.comparators.iter().position(|v| is(node, v))?;
            matches!(c.ops[position], CmpOp::In | CmpOp::NotIn).then_some(c.range)
        }
        AnyNodeRef::ExprStarred(s) if is(node, &s.value) => Some(s.range),
        AnyNodeRef::ExprYieldFrom(y) if is(node, &y.value) => Some(y.range),
        AnyNodeRef::Arguments(arguments) => {
            let call = tree.node(tree.parent(parent_idx)?);
            let AnyNodeRef::ExprCall(call) = call else {
                return None;
            };
            let Expr::Name(func) = &*call.func else {
                return None;
            };
            (ITERATING.contains(&func.id.as_str())
                && arguments.args.len() == 1
                && arguments.keywords.is_empty()
                && is(node, &arguments.args[0]))
            .then(|| call.range())
        }
        _ => None,
    }
}

/// Literals and displays are never None.
fn could_be_none(expr: &Expr) -> bool {
    !matches!(
        expr,
        Expr::StringLiteral(_)
            | Expr::BytesLiteral(_)
            | Expr::NumberLiteral(_)
            | Expr::BooleanLiteral(_)
            | Expr::EllipsisLiteral(_)
            | Expr::FString(_)
            | Expr::TString(_)
            | Expr::List(_)
            | Expr::Tuple(_)
            | Expr::Dict(_)
            | Expr::Set(_)
            | Expr::ListComp(_)
            | Expr::SetComp(_)
            | Expr::DictComp(_)
            | Expr::Generator(_)
            | Expr::Lambda(_)
            | Expr::BinOp(_)
            | Expr::Compare(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text of the expression found under the `«...»` of `marked`, if any.
    fn found(marked: &str, rule: &str) -> Option<String> {
        let source = marked.replace(['«', '»'], "");
        let start = marked.find('«').expect("«");
        let end = marked.find('»').expect("»");
        let prefix = &marked[..start];
        let line_start = prefix.rfind('\n').map_or(0, |i| i + 1);
        let column = prefix[line_start..].chars().count() as u32 + 1;
        let crash = Crash {
            rule,
            line: prefix.matches('\n').count() as u32 + 1,
            column,
            end_column: column + marked[start + '«'.len_utf8()..end].chars().count() as u32,
        };
        let parsed = ruff_python_parser::parse_module(&source).expect("parses");
        let tree = Tree::new(&source, parsed.syntax());
        let site = locate(&tree, &crash)?;
        Some(tree.text(tree.range(site.expr)).to_string())
    }

    #[test]
    fn the_range_picks_the_none_valued_expression() {
        let cases = [
            // `receiver.attr`, as traceback gives it for an attribute.
            ("x = «a.b».c", "none-attribute", Some("a")),
            ("x = «a.b.c»", "none-attribute", Some("a.b")),
            // The `~` run under a subscripted or called value.
            ("x = «a»[0][1]", "none-subscript", Some("a")),
            ("x = «a[0]»[1]", "none-subscript", Some("a[0]")),
            ("x = «handler»(event)", "none-call", Some("handler")),
            ("x = «handler(event)»", "none-call", Some("handler")),
            // Iteration: a loop, an unpacking, `in`, `*x`, a builtin that iterates.
            (
                "for x in «items»:\n    pass",
                "none-iteration",
                Some("items"),
            ),
            ("a, b = «pair»", "none-iteration", Some("pair")),
            ("ok = «key in table»", "none-iteration", Some("table")),
            ("f(«*args»)", "none-iteration", Some("args")),
            ("n = «sorted(rows)»", "none-iteration", Some("rows")),
            // The whole line (no carets): the one candidate it holds, else nothing.
            ("«return row['sku'].upper()»", "none-subscript", Some("row")),
            ("«return a[0] + b[1]»", "none-subscript", None),
            // A literal is never None.
            ("«return 'abc'[0]»", "none-subscript", None),
            // The wrong rule for the range.
            ("x = «a.b»", "none-call", None),
        ];
        for (marked, rule, expected) in cases {
            let source = if marked.contains("return") {
                format!("def f():\n    {marked}\n")
            } else {
                marked.to_string()
            };
            assert_eq!(
                found(&source, rule).as_deref(),
                expected,
                "{marked} ({rule})"
            );
        }
    }
}
