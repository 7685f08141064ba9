//! AGY303 `loop-invariant-call`: a costly call whose arguments do not change inside a loop and
//! whose result depends only on them, so every iteration recomputes the same value.
//!
//! Deliberately a short list of calls known to be pure and not cheap, with every argument
//! loop-invariant (a constant, or a name or attribute chain the loop never assigns):
//! - `set(x)`, `frozenset(x)`, `list(x)`, `tuple(x)`, `sorted(x)` as the right side of `in`:
//!   a whole collection rebuilt for one lookup;
//! - `re.compile(...)` (the `re` cache makes it a dictionary lookup plus a call, still work);
//! - `json.loads(...)`;
//! - the string functions of `os.path` (`join`, `dirname`, `basename`, `split`, `splitext`,
//!   `normpath`, `normcase`).
//!
//! Cheap calls (`len(x)`) and impure ones (`datetime.now()`, `os.path.exists`, `time.time()`,
//! `random.random()`) are never flagged.

use ruff_python_ast::{CmpOp, Expr, ExprCall};
use ruff_text_size::Ranged;

use super::loops::{self, Loop, Node};
use crate::native::helpers::dotted_name;
use crate::native::{Checker, Diagnostic};

/// Pure string functions of `os.path` (no file system access, no working directory).
const OS_PATH_PURE: &[&str] = &[
    "join", "dirname", "basename", "split", "splitext", "normpath", "normcase",
];

pub fn loop_invariant_call(checker: &Checker, out: &mut Vec<Diagnostic>) {
    // Test code runs once per test run; its loops are not worth a finding.
    if checker.is_test_file() {
        return;
    }
    loops::walk(&checker.module.body, &mut |context, node| {
        // Only code that runs on every iteration: a call in a branch may run once in a
        // thousand iterations, which nothing here can tell.
        if context.runs_once || context.conditional {
            return;
        }
        let Node::Expr(expr) = node else {
            return;
        };
        let lp = context.innermost();
        match expr {
            Expr::Compare(compare) => {
                for (op, comparator) in compare.ops.iter().zip(compare.comparators.iter()) {
                    if !matches!(op, CmpOp::In | CmpOp::NotIn) {
                        continue;
                    }
                    if let Expr::Call(call) = comparator
                        && let Some(diagnostic) = check_membership(checker, call, lp)
                    {
                        out.push(diagnostic);
                    }
                }
            }
            Expr::Call(call) => {
                if let Some(diagnostic) = check_call(checker, call, lp) {
                    out.push(diagnostic);
                }
            }
            _ => {}
        }
    });
}

/// `x in set(names)`: the collection is rebuilt for every lookup.
fn check_membership(checker: &Checker, call: &ExprCall, lp: Loop) -> Option<Diagnostic> {
    let Expr::Name(func) = call.func.as_ref() else {
        return None;
    };
    let func = func.id.as_str();
    if !matches!(func, "set" | "frozenset" | "list" | "tuple" | "sorted") {
        return None;
    }
    let [arg] = &*call.arguments.args else {
        return None;
    };
    let mut root = arg;
    while let Expr::Attribute(attr) = root {
        root = &attr.value;
    }
    if !matches!(arg, Expr::Name(_) | Expr::Attribute(_))
        || !loops::is_invariant(arg, lp)
        || matches!(root, Expr::Name(n) if loops::loop_mutates_through(lp, n.id.as_str()))
        || !call
            .arguments
            .keywords
            .iter()
            .all(|k| loops::is_invariant(&k.value, lp))
    {
        return None;
    }
    let arg = checker.slice(arg.range());
    // `self.keys` suggests a local `keys_set`.
    let local = arg.rsplit('.').next().unwrap_or(arg);
    let advice = if matches!(func, "set" | "frozenset") {
        format!("build it once before the loop (`{local}_set = {func}({arg})`)")
    } else {
        format!("build a set once before the loop (`{local}_set = set({arg})`)")
    };
    Some(
        Diagnostic::new(
            "AGY303",
            call.range(),
            format!(
                "`{func}({arg})` rebuilds the same collection on every iteration for one membership test; {advice}"
            ),
        )
        .impact(80),
    )
}

fn check_call(checker: &Checker, call: &ExprCall, lp: Loop) -> Option<Diagnostic> {
    // Cheap pre-check: every flagged callee is an attribute of a module.
    let Expr::Attribute(attr) = call.func.as_ref() else {
        return None;
    };
    let method = attr.attr.as_str();
    if !matches!(method, "compile" | "loads") && !OS_PATH_PURE.contains(&method) {
        return None;
    }
    let callee = dotted_name(&call.func)?;
    let impact = match callee.as_str() {
        "re.compile" => 10,
        "json.loads" => 50,
        _ if callee
            .strip_prefix("os.path.")
            .is_some_and(|f| OS_PATH_PURE.contains(&f))
            || callee
                .strip_prefix("posixpath.")
                .is_some_and(|f| OS_PATH_PURE.contains(&f)) =>
        {
            20
        }
        _ => return None,
    };
    if call.arguments.args.is_empty()
        || !call
            .arguments
            .args
            .iter()
            .all(|a| loops::is_invariant(a, lp))
        || !call
            .arguments
            .keywords
            .iter()
            .all(|k| loops::is_invariant(&k.value, lp))
    {
        return None;
    }
    let source = checker.slice(call.range());
    let shown = if source.len() <= 60 && !source.contains('\n') {
        source.to_string()
    } else {
        format!("{callee}(...)")
    };
    let advice = if callee == "json.loads" {
        "parse it once before the loop (copy the result per iteration if the loop mutates it)"
    } else {
        "compute it once before the loop"
    };
    Some(
        Diagnostic::new(
            "AGY303",
            call.range(),
            format!("`{shown}` computes the same value on every iteration of the loop; {advice}"),
        )
        .impact(impact),
    )
}
