//! Guard fixes: `if <expr> is None:` before the statement that crashed, then the function's
//! natural empty value (its contract says what "nothing" is) or a `ValueError` that names the
//! expression and the function. Never a silent `else: pass`.
//!
//! Only where the check means the same as the crash: `<expr>` is a name or a dotted name
//! (evaluating it again has no effect), the statement evaluates it unconditionally and before
//! anything that could change it, and the statement runs in a function (a module or class body
//! has nothing to return to). A return is not offered in a loop (it would end the loop, not
//! the iteration), in a `finally:` (it would swallow an exception), nor a raise that an
//! `except` around would catch. A parameter whose default is None admits None by contract:
//! raising on it would break the calls that leave it out, so only the return is offered.

use ruff_python_ast::{Expr, StmtFunctionDef};

use super::contract::natural_empty;
use super::flow::{caught, dotted, evaluated_first, in_finally, in_loop, is_local, root_name};
use super::locate::Site;
use super::snippet::{self, Edit, block};
use super::tree::Tree;
use super::{Behaviour, FixKind, NoneFix};

/// The guard fixes for the site: the natural empty value first, then the raise.
pub(super) fn guards(tree: &Tree, site: &Site) -> Vec<NoneFix> {
    guards_inner(tree, site).unwrap_or_default()
}

fn guards_inner(tree: &Tree, site: &Site) -> Option<Vec<NoneFix>> {
    let function = site.function?;
    let f = tree.function(function)?;
    let expr = tree.expr(site.expr)?;
    let text = dotted(expr)?;
    let root = root_name(expr)?;
    let local_name = matches!(expr, Expr::Name(_)) && is_local(tree, function, root);
    if !evaluated_first(tree, site.stmt, site.expr, !local_name) {
        return None;
    }
    let stmt_range = tree.range(site.stmt);
    let indent = tree.own_line_indent(stmt_range.start().to_usize())?;
    let unit = tree.indent_unit(site.stmt)?;
    let at = tree.insertion_before(stmt_range.start().to_usize(), indent);
    let newline = tree.newline();
    let qualname = tree.qualname(function);
    let header = format!("if {text} is None:");
    let mut out = Vec::new();
    let returns_allowed =
        !in_loop(tree, site.stmt, function) && !in_finally(tree, site.stmt, function);
    if returns_allowed && let Some(empty) = natural_empty(f) {
        let code = block(indent, unit, &header, &empty.statement(), newline);
        out.push(NoneFix {
            kind: FixKind::Guard,
            summary: format!(
                "`{text}` is checked for None before use in `{qualname}()`: it returns `{}`",
                empty.value()
            ),
            after: snippet::apply(tree.source, &[Edit::insert(at, code)])?,
            function: qualname.clone(),
            behaviour: empty.behaviour(),
        });
    }
    let admits_none = matches!(expr, Expr::Name(n) if defaults_to_none(f, n.id.as_str()));
    if !admits_none && !caught(tree, site.stmt, function, "ValueError") {
        let message = snippet::string_literal(&format!("{text} is None in {qualname}()"));
        let code = block(
            indent,
            unit,
            &header,
            &format!("raise ValueError({message})"),
            newline,
        );
        out.push(NoneFix {
            kind: FixKind::Guard,
            summary: format!(
                "`{text}` is checked for None before use in `{qualname}()`: ValueError"
            ),
            after: snippet::apply(tree.source, &[Edit::insert(at, code)])?,
            function: qualname,
            behaviour: Behaviour::Raises("ValueError".to_string()),
        });
    }
    Some(out)
}

/// Whether parameter `name` of `function` defaults to None.
fn defaults_to_none(function: &StmtFunctionDef, name: &str) -> bool {
    let p = &function.parameters;
    p.posonlyargs
        .iter()
        .chain(&p.args)
        .chain(&p.kwonlyargs)
        .any(|a| {
            a.parameter.name.as_str() == name
                && a.default.as_deref().is_some_and(Expr::is_none_literal_expr)
        })
}
