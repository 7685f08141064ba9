//! AGY301 `list-membership-in-loop`: `x in items` inside a loop where `items` is a list scans
//! the whole list on every iteration (O(n) each, O(n·m) in all); a set answers in O(1).
//!
//! Flagged: an inline list comprehension (rebuilt and scanned per iteration), an inline list
//! display of more than three items, and a name whose every binding in its function (or the
//! module) is a list display, list comprehension, `list(...)` or `sorted(...)` and that the loop
//! neither rebinds nor mutates. Not flagged: tuples, sets, dicts, strings, parameters (type
//! unknown), lists of at most three items, and lists the loop appends to: the `seen` list of an
//! order-keeping dedupe is the classic O(n²), but its items may be unhashable and the fix is not
//! a swap of brackets, so the rule stays silent there (see the docs page).

use ruff_python_ast::{CmpOp, Expr};
use ruff_text_size::Ranged;

use super::loops::{self, Binding, Context, Node};
use crate::native::{Checker, Diagnostic};

/// Lists with at most this many items are scanned about as fast as a set is hashed.
const MAX_SMALL_LIST: usize = 3;

pub fn list_membership_in_loop(checker: &Checker, out: &mut Vec<Diagnostic>) {
    // Test code runs once per test run; its loops are not worth a finding.
    if checker.is_test_file() {
        return;
    }
    loops::walk(&checker.module.body, &mut |context, node| {
        let Node::Expr(Expr::Compare(compare)) = node else {
            return;
        };
        if context.runs_once {
            return;
        }
        for (op, comparator) in compare.ops.iter().zip(compare.comparators.iter()) {
            if matches!(op, CmpOp::In | CmpOp::NotIn)
                && let Some(diagnostic) = check(checker, context, comparator)
            {
                out.push(diagnostic);
            }
        }
    });
}

/// What is known of the list's size.
enum Size {
    Known(usize),
    Unknown,
}

fn check(checker: &Checker, context: &Context, comparator: &Expr) -> Option<Diagnostic> {
    let (what, size, rebuilt) = match comparator {
        Expr::List(list) => ("this list".to_string(), literal_size(&list.elts), false),
        Expr::ListComp(_) => ("this list comprehension".to_string(), Size::Unknown, true),
        Expr::Name(name) => {
            let id = name.id.as_str();
            let size = list_binding_size(context, id)?;
            if loops::loop_changes(context.outermost(), id) {
                return None;
            }
            (format!("list `{id}`"), size, false)
        }
        _ => return None,
    };
    let (label, impact) = match size {
        Size::Known(n) if n <= MAX_SMALL_LIST => return None,
        // The loop's own work is modelled as about eight comparisons' worth; a set turns the
        // n comparisons of the scan into one hash.
        Size::Known(n) => (
            format!("{n} items"),
            u32::try_from(n * 100 / (n + 8)).unwrap_or(90),
        ),
        Size::Unknown if rebuilt => ("a list rebuilt on every iteration".to_string(), 80),
        Size::Unknown => ("a list of unknown size".to_string(), 50),
    };
    let advice = if rebuilt {
        "build a set once before the loop and test membership against it".to_string()
    } else if matches!(comparator, Expr::Name(_)) {
        format!(
            "build `{}` as a set (or a set copy before the loop) if its items are hashable",
            checker.slice(comparator.range())
        )
    } else {
        "use a set literal `{...}` (or a module-level frozenset)".to_string()
    };
    Some(
        Diagnostic::new(
            "AGY301",
            comparator.range(),
            format!(
                "membership test against {what} ({label}) scans it on every iteration of the loop; {advice}"
            ),
        )
        .impact(impact),
    )
}

/// The size of a list display, unknown when it holds a starred item.
fn literal_size(elts: &[Expr]) -> Size {
    if elts.iter().any(|e| matches!(e, Expr::Starred(_))) {
        return Size::Unknown;
    }
    Size::Known(elts.len())
}

/// When every binding of `name` makes a list: the largest known size, or unknown.
fn list_binding_size(context: &Context, name: &str) -> Option<Size> {
    let bindings = context.bindings(name)?;
    if bindings.is_empty() {
        return None;
    }
    let mut largest = 0;
    let mut unknown = false;
    for binding in bindings {
        match binding {
            Binding::Assign(Expr::List(list)) => match literal_size(&list.elts) {
                Size::Known(n) => largest = largest.max(n),
                Size::Unknown => unknown = true,
            },
            // `items += [...]` keeps a list a list, of unknown length.
            Binding::Assign(Expr::ListComp(_))
            | Binding::AugAssign(Expr::List(_) | Expr::ListComp(_)) => unknown = true,
            Binding::Assign(Expr::Call(call))
                if matches!(call.func.as_ref(), Expr::Name(f) if matches!(f.id.as_str(), "list" | "sorted"))
                    && !call.arguments.args.is_empty() =>
            {
                unknown = true;
            }
            _ => return None,
        }
    }
    Some(if unknown {
        Size::Unknown
    } else {
        Size::Known(largest)
    })
}
