//! What the fixers need to know about the flow of one function, computed on the syntax tree
//! alone: where a name is bound, which assignment reaches a statement, whether a value is
//! tested for None, whether a body can fall off its end, and whether an expression is evaluated
//! unconditionally and first when its statement runs (so a check can be made before it).

use ruff_python_ast::{
    AnyNodeRef, CmpOp, ExceptHandler, Expr, ExprContext, Pattern, Stmt, StmtFunctionDef, UnaryOp,
};
use ruff_text_size::{Ranged, TextRange};

use super::tree::Tree;

/// Whether `node` is the very expression `expr` (by identity, not by equal text).
pub(super) fn is(node: AnyNodeRef<'_>, expr: &Expr) -> bool {
    node.ptr_eq(AnyNodeRef::from(expr))
}

/// The scope a node's names live in: the innermost function, lambda, class body or
/// comprehension that evaluates it, or `None` for the module. Decorators, defaults and
/// annotations of a `def` belong to the scope around it; the first `for ... in ITER` of a
/// comprehension too.
pub(super) fn scope_of(tree: &Tree, idx: usize) -> Option<usize> {
    let mut child = idx;
    let mut grandchild: Option<usize> = None;
    for ancestor in tree.ancestors(idx) {
        let child_range = tree.range(child);
        let inside = |body: &[Stmt]| {
            body.first()
                .is_some_and(|first| child_range.start() >= first.start())
        };
        match tree.node(ancestor) {
            AnyNodeRef::StmtFunctionDef(f) if inside(&f.body) => return Some(ancestor),
            AnyNodeRef::StmtClassDef(c) if inside(&c.body) => return Some(ancestor),
            AnyNodeRef::ExprLambda(l) if is(tree.node(child), &l.body) => return Some(ancestor),
            AnyNodeRef::ExprListComp(_)
            | AnyNodeRef::ExprSetComp(_)
            | AnyNodeRef::ExprDictComp(_)
            | AnyNodeRef::ExprGenerator(_)
                if !first_comprehension_iter(tree, ancestor, child, grandchild) =>
            {
                return Some(ancestor);
            }
            _ => {}
        }
        grandchild = Some(child);
        child = ancestor;
    }
    None
}

/// Whether `child` (then `grandchild`) is the first generator's iterable of comprehension
/// `comp`, the one part evaluated in the enclosing scope.
fn first_comprehension_iter(
    tree: &Tree,
    comp: usize,
    child: usize,
    grandchild: Option<usize>,
) -> bool {
    let generators = match tree.node(comp) {
        AnyNodeRef::ExprListComp(c) => &c.generators,
        AnyNodeRef::ExprSetComp(c) => &c.generators,
        AnyNodeRef::ExprDictComp(c) => &c.generators,
        AnyNodeRef::ExprGenerator(c) => &c.generators,
        _ => return false,
    };
    let Some(first) = generators.first() else {
        return false;
    };
    if !tree.node(child).ptr_eq(AnyNodeRef::from(first)) {
        return false;
    }
    grandchild.is_some_and(|g| is(tree.node(g), &first.iter))
}

/// Where a name is bound in one scope.
#[derive(Debug, Clone, Copy)]
pub(super) struct Binding {
    /// The binding node (a stored name, a `def`, an import alias, ...).
    pub idx: usize,
    pub range: TextRange,
}

/// Every binding of `name` in `scope` (`None`: the module), `global`/`nonlocal` declarations
/// included. A walrus inside a comprehension binds in the scope around the comprehension.
pub(super) fn bindings(tree: &Tree, scope: Option<usize>, name: &str) -> Vec<Binding> {
    let mut out = Vec::new();
    let range = scope.map(|s| tree.range(s));
    for idx in 0..tree.len() {
        let node = tree.node(idx);
        if let Some(range) = range
            && !range.contains_range(node.range())
        {
            continue;
        }
        let binds = match node {
            AnyNodeRef::ExprName(n) => {
                n.id.as_str() == name && matches!(n.ctx, ExprContext::Store | ExprContext::Del)
            }
            AnyNodeRef::StmtFunctionDef(f) => f.name.as_str() == name,
            AnyNodeRef::StmtClassDef(c) => c.name.as_str() == name,
            AnyNodeRef::ExceptHandlerExceptHandler(h) => {
                h.name.as_ref().is_some_and(|n| n.as_str() == name)
            }
            AnyNodeRef::Alias(a) => match &a.asname {
                Some(asname) => asname.as_str() == name,
                None => a.name.as_str().split('.').next() == Some(name),
            },
            AnyNodeRef::StmtGlobal(g) => g.names.iter().any(|n| n.as_str() == name),
            AnyNodeRef::StmtNonlocal(g) => g.names.iter().any(|n| n.as_str() == name),
            AnyNodeRef::PatternMatchAs(p) => p.name.as_ref().is_some_and(|n| n.as_str() == name),
            AnyNodeRef::PatternMatchStar(p) => p.name.as_ref().is_some_and(|n| n.as_str() == name),
            AnyNodeRef::PatternMatchMapping(p) => {
                p.rest.as_ref().is_some_and(|n| n.as_str() == name)
            }
            _ => false,
        };
        if !binds {
            continue;
        }
        // A `def` binds its name in the scope around it, which is what `scope_of` gives (it
        // looks at ancestors only).
        let binding_scope = if walrus_target(tree, idx) {
            enclosing_non_comprehension(tree, idx)
        } else {
            scope_of(tree, idx)
        };
        if binding_scope == scope {
            out.push(Binding {
                idx,
                range: node.range(),
            });
        }
    }
    out
}

fn walrus_target(tree: &Tree, idx: usize) -> bool {
    tree.parent(idx).is_some_and(
        |p| matches!(tree.node(p), AnyNodeRef::ExprNamed(n) if is(tree.node(idx), &n.target)),
    )
}

fn enclosing_non_comprehension(tree: &Tree, idx: usize) -> Option<usize> {
    let mut current = scope_of(tree, idx);
    while let Some(s) = current {
        if matches!(
            tree.node(s),
            AnyNodeRef::ExprListComp(_)
                | AnyNodeRef::ExprSetComp(_)
                | AnyNodeRef::ExprDictComp(_)
                | AnyNodeRef::ExprGenerator(_)
        ) {
            current = scope_of(tree, s);
        } else {
            return Some(s);
        }
    }
    None
}

/// The one module-level binding of `name`, if there is exactly one.
pub(super) fn single_module_binding(tree: &Tree, name: &str) -> Option<usize> {
    match bindings(tree, None, name).as_slice() {
        [only] => Some(only.idx),
        _ => None,
    }
}

/// The names of a function's parameters, in order, `*args` and `**kwargs` included.
pub(super) fn parameter_names(function: &StmtFunctionDef) -> Vec<&str> {
    let p = &function.parameters;
    let mut out: Vec<&str> = Vec::new();
    out.extend(p.posonlyargs.iter().map(|a| a.parameter.name.as_str()));
    out.extend(p.args.iter().map(|a| a.parameter.name.as_str()));
    out.extend(p.vararg.iter().map(|a| a.name.as_str()));
    out.extend(p.kwonlyargs.iter().map(|a| a.parameter.name.as_str()));
    out.extend(p.kwarg.iter().map(|a| a.name.as_str()));
    out
}

/// Whether `name` is a local of `function`: a parameter or bound in its body, and not declared
/// `global` or `nonlocal` there (then a call could rebind it).
pub(super) fn is_local(tree: &Tree, function: usize, name: &str) -> bool {
    let Some(f) = tree.function(function) else {
        return false;
    };
    let found = bindings(tree, Some(function), name);
    let declared = found.iter().any(|b| {
        matches!(
            tree.node(b.idx),
            AnyNodeRef::StmtGlobal(_) | AnyNodeRef::StmtNonlocal(_)
        )
    });
    !declared && (parameter_names(f).contains(&name) || !found.is_empty())
}

/// Whether a nested function of `function` declares `name` nonlocal (so calls may rebind it).
fn nonlocal_inside(tree: &Tree, function: usize, name: &str) -> bool {
    let range = tree.range(function);
    (0..tree.len()).any(|i| {
        matches!(tree.node(i), AnyNodeRef::StmtNonlocal(n)
            if range.contains_range(n.range) && n.names.iter().any(|id| id.as_str() == name))
    })
}

/// The statement lists directly owned by a node (a body, an `else:`, a `finally:`).
pub(super) fn blocks(node: AnyNodeRef<'_>) -> Vec<&[Stmt]> {
    match node {
        AnyNodeRef::StmtFunctionDef(s) => vec![&s.body],
        AnyNodeRef::StmtClassDef(s) => vec![&s.body],
        AnyNodeRef::StmtFor(s) => vec![&s.body, &s.orelse],
        AnyNodeRef::StmtWhile(s) => vec![&s.body, &s.orelse],
        AnyNodeRef::StmtIf(s) => vec![&s.body],
        AnyNodeRef::ElifElseClause(s) => vec![&s.body],
        AnyNodeRef::StmtWith(s) => vec![&s.body],
        AnyNodeRef::StmtTry(s) => vec![&s.body, &s.orelse, &s.finalbody],
        AnyNodeRef::ExceptHandlerExceptHandler(s) => vec![&s.body],
        AnyNodeRef::MatchCase(s) => vec![&s.body],
        _ => Vec::new(),
    }
}

/// The statement list that holds statement `stmt`, and its position there.
pub(super) fn block_of<'a>(tree: &Tree<'a>, stmt: usize) -> Option<(&'a [Stmt], usize)> {
    let parent = tree.parent(stmt)?;
    let node = tree.node(stmt);
    blocks(tree.node(parent)).into_iter().find_map(|block| {
        block
            .iter()
            .position(|s| AnyNodeRef::from(s).ptr_eq(node))
            .map(|pos| (block, pos))
    })
}

/// The single-name assignment (`name = value`, `name: T = value`) that certainly gives `name`
/// its value when statement `at` of `function` runs: it comes before `at` in a block that holds
/// `at`, nothing binds the name between them (nor anywhere in a loop around `at` that does not
/// hold the assignment), and `at` binds nothing itself. Returns the assignment statement and
/// its value.
pub(super) fn reaching_assignment<'a>(
    tree: &Tree<'a>,
    function: usize,
    at: usize,
    name: &str,
) -> Option<(usize, &'a Expr)> {
    if nonlocal_inside(tree, function, name) {
        return None;
    }
    let at_range = tree.range(at);
    let all = bindings(tree, Some(function), name);
    if all.iter().any(|b| at_range.contains_range(b.range)) {
        return None;
    }
    let last = all
        .iter()
        .filter(|b| b.range.end() <= at_range.start())
        .max_by_key(|b| b.range.start())?;
    let assignment = tree.statement_of(last.idx)?;
    let value: &Expr = match tree.stmt(assignment)? {
        Stmt::Assign(a) if a.targets.len() == 1 && is(tree.node(last.idx), &a.targets[0]) => {
            &a.value
        }
        Stmt::AnnAssign(a) if is(tree.node(last.idx), &a.target) => a.value.as_deref()?,
        _ => return None,
    };
    // The assignment dominates `at`: a later statement of its own block holds `at`.
    let (block, pos) = block_of(tree, assignment)?;
    let holds = block[pos + 1..].iter().any(|s| {
        tree.index_of_stmt(s)
            .is_some_and(|idx| tree.encloses(idx, at))
    });
    if !holds {
        return None;
    }
    for loop_idx in tree.ancestors(at) {
        if tree.encloses(loop_idx, assignment) {
            break;
        }
        if matches!(
            tree.node(loop_idx),
            AnyNodeRef::StmtFor(_) | AnyNodeRef::StmtWhile(_)
        ) {
            let loop_range = tree.range(loop_idx);
            if all.iter().any(|b| loop_range.contains_range(b.range)) {
                return None;
            }
        }
    }
    Some((assignment, value))
}

/// Whether every run of statement `from` goes on to run statement `to` (a later statement of
/// the same function), so a check placed right after `from` fires only on runs that reach
/// `to`: `to` lies in a later statement of `from`'s block, reached through `with` and `try`
/// bodies only (not branches or loop bodies), and no statement on the way can leave the block
/// (`return`, `raise`, `break`, `continue`).
pub(super) fn always_reaches(tree: &Tree, from: usize, to: usize) -> bool {
    let Some((block, pos)) = block_of(tree, from) else {
        return false;
    };
    let mut block = &block[pos + 1..];
    loop {
        let Some(next) = block.iter().position(|s| {
            tree.index_of_stmt(s)
                .is_some_and(|idx| tree.encloses(idx, to))
        }) else {
            return false;
        };
        if block[..next].iter().any(|s| exits(tree, s)) {
            return false;
        }
        let Some(current) = tree.index_of_stmt(&block[next]) else {
            return false;
        };
        if current == to {
            return true;
        }
        block = match tree.stmt(current) {
            Some(Stmt::With(w)) => &w.body,
            Some(Stmt::Try(t)) if t.body.iter().any(|s| holds(tree, s, to)) => &t.body,
            _ => return false,
        };
    }
}

fn holds(tree: &Tree, stmt: &Stmt, idx: usize) -> bool {
    tree.index_of_stmt(stmt)
        .is_some_and(|s| tree.encloses(s, idx))
}

/// Whether a statement can leave its block early: it holds a `return`, `raise`, `break` or
/// `continue` (nested functions and classes aside).
fn exits(tree: &Tree, stmt: &Stmt) -> bool {
    let range = stmt.range();
    (0..tree.len()).any(|i| {
        let node = tree.node(i);
        matches!(
            node,
            AnyNodeRef::StmtReturn(_)
                | AnyNodeRef::StmtRaise(_)
                | AnyNodeRef::StmtBreak(_)
                | AnyNodeRef::StmtContinue(_)
        ) && range.contains_range(node.range())
            && !tree.ancestors(i).any(|a| {
                range.contains_range(tree.range(a))
                    && matches!(
                        tree.node(a),
                        AnyNodeRef::StmtFunctionDef(_) | AnyNodeRef::StmtClassDef(_)
                    )
            })
    })
}

/// Whether expression `idx` is tested as it is used: compared with `is`/`==` None, negated,
/// an operand of `and`/`or`, the test of an `if`/`while`/`assert`/conditional expression or of
/// a comprehension, passed to `bool()`/`isinstance()`, or a `match` subject. A walrus around it
/// is looked through.
pub(super) fn is_tested(tree: &Tree, idx: usize) -> bool {
    let mut child = idx;
    let Some(mut parent) = tree.parent(child) else {
        return false;
    };
    while let AnyNodeRef::ExprNamed(n) = tree.node(parent) {
        if !is(tree.node(child), &n.value) {
            return false;
        }
        child = parent;
        let Some(p) = tree.parent(parent) else {
            return false;
        };
        parent = p;
    }
    let node = tree.node(child);
    match tree.node(parent) {
        AnyNodeRef::ExprCompare(c) => {
            c.ops
                .iter()
                .any(|op| matches!(op, CmpOp::Is | CmpOp::IsNot))
                || std::iter::once(&*c.left)
                    .chain(c.comparators.iter())
                    .any(Expr::is_none_literal_expr)
        }
        AnyNodeRef::ExprUnaryOp(u) => u.op == UnaryOp::Not,
        AnyNodeRef::ExprBoolOp(_) => true,
        AnyNodeRef::StmtIf(s) => is(node, &s.test),
        AnyNodeRef::ElifElseClause(s) => s.test.as_ref().is_some_and(|t| is(node, t)),
        AnyNodeRef::StmtWhile(s) => is(node, &s.test),
        AnyNodeRef::StmtAssert(s) => is(node, &s.test),
        AnyNodeRef::ExprIf(e) => is(node, &e.test),
        AnyNodeRef::Comprehension(c) => c.ifs.iter().any(|t| is(node, t)),
        AnyNodeRef::StmtMatch(m) => is(node, &m.subject),
        AnyNodeRef::Arguments(_) => tree.parent(parent).is_some_and(|call| {
            matches!(tree.node(call), AnyNodeRef::ExprCall(c)
                if matches!(&*c.func, Expr::Name(n) if matches!(n.id.as_str(), "bool" | "isinstance")))
        }),
        _ => false,
    }
}

/// Whether `name` (loaded) is tested for None anywhere within `range`.
pub(super) fn name_tested_within(tree: &Tree, name: &str, range: TextRange) -> bool {
    (0..tree.len()).any(|i| {
        matches!(tree.node(i), AnyNodeRef::ExprName(n)
            if n.id.as_str() == name
                && n.ctx == ExprContext::Load
                && range.contains_range(n.range)
                && is_tested(tree, i))
    })
}

/// Whether running `body` can never reach its end: it returns, raises, exits or loops forever
/// on every path.
pub(super) fn terminates(body: &[Stmt]) -> bool {
    body.iter().any(stmt_terminates)
}

fn stmt_terminates(stmt: &Stmt) -> bool {
    match stmt {
        Stmt::Return(_) | Stmt::Raise(_) => true,
        Stmt::If(s) => {
            terminates(&s.body)
                && s.elif_else_clauses.last().is_some_and(|c| c.test.is_none())
                && s.elif_else_clauses.iter().all(|c| terminates(&c.body))
        }
        Stmt::With(s) => terminates(&s.body),
        Stmt::Try(s) => {
            terminates(&s.finalbody)
                || ((terminates(&s.body) || terminates(&s.orelse))
                    && s.handlers.iter().all(|h| match h {
                        ExceptHandler::ExceptHandler(h) => terminates(&h.body),
                    }))
        }
        Stmt::While(s) => {
            (matches!(&*s.test, Expr::BooleanLiteral(b) if b.value) || terminates(&s.orelse))
                && !breaks(&s.body)
        }
        // The `else:` of a loop runs unless the loop breaks.
        Stmt::For(s) => terminates(&s.orelse) && !breaks(&s.body),
        Stmt::Match(s) => {
            s.cases.last().is_some_and(|c| {
                c.guard.is_none()
                    && matches!(&c.pattern, Pattern::MatchAs(p) if p.pattern.is_none())
            }) && s.cases.iter().all(|c| terminates(&c.body))
        }
        Stmt::Expr(s) => match &*s.value {
            Expr::Call(call) => {
                let name = dotted(&call.func).unwrap_or_default();
                matches!(
                    name.as_str(),
                    "sys.exit" | "exit" | "quit" | "os._exit" | "os.abort"
                )
            }
            _ => false,
        },
        Stmt::Assert(s) => matches!(&*s.test, Expr::BooleanLiteral(b) if !b.value),
        _ => false,
    }
}

/// Whether a `break` in `body` leaves the loop that owns `body`.
fn breaks(body: &[Stmt]) -> bool {
    body.iter().any(|stmt| match stmt {
        Stmt::Break(_) => true,
        Stmt::If(s) => breaks(&s.body) || s.elif_else_clauses.iter().any(|c| breaks(&c.body)),
        Stmt::With(s) => breaks(&s.body),
        Stmt::Try(s) => {
            breaks(&s.body)
                || breaks(&s.orelse)
                || breaks(&s.finalbody)
                || s.handlers.iter().any(|h| match h {
                    ExceptHandler::ExceptHandler(h) => breaks(&h.body),
                })
        }
        Stmt::Match(s) => s.cases.iter().any(|c| breaks(&c.body)),
        // A nested loop's `break` is its own; its `else:` is still ours.
        Stmt::For(s) => breaks(&s.orelse),
        Stmt::While(s) => breaks(&s.orelse),
        _ => false,
    })
}

/// `a.b.c` for a dotted name, `None` for anything else.
pub(super) fn dotted(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Name(n) => Some(n.id.as_str().to_string()),
        Expr::Attribute(a) => Some(format!("{}.{}", dotted(&a.value)?, a.attr.as_str())),
        _ => None,
    }
}

/// The leftmost name of a dotted name.
pub(super) fn root_name(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Name(n) => Some(n.id.as_str()),
        Expr::Attribute(a) => root_name(&a.value),
        _ => None,
    }
}

/// Whether expression `expr` of statement `stmt` is evaluated every time the statement runs,
/// before the statement does anything else that could change what it evaluates to, so the
/// same expression can be evaluated once more just before the statement.
///
/// Refused: a place evaluated only sometimes (right of `and`/`or`, branches of `x if c else
/// y`, later links of a comparison chain, comprehension bodies, lambdas, `elif` and `while`
/// tests, `assert` messages, annotations), a statement that binds a name the expression reads
/// (walrus, `with ... as`), and, when `effects` is set, any call, `await` or `yield` evaluated
/// before it in the statement (it could change an attribute or a global on the way).
pub(super) fn evaluated_first(tree: &Tree, stmt: usize, expr: usize, effects: bool) -> bool {
    let mut path = vec![expr];
    for a in tree.ancestors(expr) {
        path.push(a);
        if a == stmt {
            break;
        }
    }
    if path.last() != Some(&stmt) {
        return false;
    }
    for i in (1..path.len()).rev() {
        let parent = path[i];
        let child = path[i - 1];
        let grandchild = if i >= 2 { Some(path[i - 2]) } else { None };
        if !unconditional_child(tree, parent, child, grandchild, parent == stmt) {
            return false;
        }
    }
    let Some(expr_node) = tree.expr(expr) else {
        return false;
    };
    let expr_range = expr_node.range();
    let read: Vec<&str> = (0..tree.len())
        .filter_map(|i| match tree.node(i) {
            AnyNodeRef::ExprName(n) if expr_range.contains_range(n.range) => Some(n.id.as_str()),
            _ => None,
        })
        .collect();
    let header = header_range(tree, stmt);
    let in_target = assignment_target(tree, stmt, expr);
    for i in 0..tree.len() {
        let node = tree.node(i);
        let range = node.range();
        if !header.contains_range(range) || tree.encloses(i, expr) || tree.encloses(expr, i) {
            continue;
        }
        match node {
            AnyNodeRef::ExprNamed(n) => {
                if let Expr::Name(target) = &*n.target
                    && read.contains(&target.id.as_str())
                {
                    return false;
                }
            }
            AnyNodeRef::WithItem(item) if item.optional_vars.is_some() => return false,
            _ => {}
        }
        if !effects {
            continue;
        }
        let effect = matches!(
            node,
            AnyNodeRef::ExprCall(_)
                | AnyNodeRef::ExprAwait(_)
                | AnyNodeRef::ExprYield(_)
                | AnyNodeRef::ExprYieldFrom(_)
                | AnyNodeRef::ExprNamed(_)
        );
        if !effect || inside_lambda(tree, i, stmt) {
            continue;
        }
        let before = if in_target {
            // `target = value`: the value runs first.
            !assignment_target(tree, stmt, i) || range.start() < expr_range.start()
        } else {
            range.start() < expr_range.start()
        };
        if before {
            return false;
        }
    }
    true
}

fn inside_lambda(tree: &Tree, idx: usize, stmt: usize) -> bool {
    tree.ancestors(idx)
        .take_while(|&a| a != stmt)
        .any(|a| matches!(tree.node(a), AnyNodeRef::ExprLambda(_)))
}

/// Whether `idx` lies in the targets of an assignment statement `stmt` (evaluated after its
/// value).
fn assignment_target(tree: &Tree, stmt: usize, idx: usize) -> bool {
    let range = tree.range(idx);
    match tree.stmt(stmt) {
        Some(Stmt::Assign(a)) => a.targets.iter().any(|t| t.range().contains_range(range)),
        Some(Stmt::AnnAssign(a)) => a.target.range().contains_range(range),
        _ => false,
    }
}

/// The part of a statement evaluated before its body: the whole of a simple statement, the
/// header of a compound one.
fn header_range(tree: &Tree, stmt: usize) -> TextRange {
    let range = tree.range(stmt);
    let body_start = match tree.stmt(stmt) {
        Some(Stmt::If(s)) => s.body.first().map(Ranged::start),
        Some(Stmt::For(s)) => s.body.first().map(Ranged::start),
        Some(Stmt::While(s)) => s.body.first().map(Ranged::start),
        Some(Stmt::With(s)) => s.body.first().map(Ranged::start),
        Some(Stmt::Match(s)) => s.cases.first().map(Ranged::start),
        _ => None,
    };
    match body_start {
        Some(end) if end > range.start() => TextRange::new(range.start(), end),
        _ => range,
    }
}

/// Whether `parent` always evaluates its child `child` when it is evaluated itself, before any
/// of its own branches (see [`evaluated_first`]).
fn unconditional_child(
    tree: &Tree,
    parent: usize,
    child: usize,
    grandchild: Option<usize>,
    is_stmt: bool,
) -> bool {
    let c = tree.node(child);
    let parent_node = tree.node(parent);
    if is_stmt {
        return match parent_node {
            AnyNodeRef::StmtReturn(_)
            | AnyNodeRef::StmtExpr(_)
            | AnyNodeRef::StmtAssign(_)
            | AnyNodeRef::StmtAugAssign(_)
            | AnyNodeRef::StmtRaise(_)
            | AnyNodeRef::StmtDelete(_) => true,
            AnyNodeRef::StmtAnnAssign(s) => !is(c, &s.annotation),
            AnyNodeRef::StmtAssert(s) => is(c, &s.test),
            AnyNodeRef::StmtIf(s) => is(c, &s.test),
            AnyNodeRef::StmtFor(s) => is(c, &s.iter),
            AnyNodeRef::StmtMatch(s) => is(c, &s.subject),
            AnyNodeRef::StmtWith(s) => s
                .items
                .first()
                .is_some_and(|first| c.ptr_eq(AnyNodeRef::from(first))),
            _ => false,
        };
    }
    match parent_node {
        AnyNodeRef::ExprBoolOp(b) => b.values.first().is_some_and(|v| is(c, v)),
        AnyNodeRef::ExprIf(e) => is(c, &e.test),
        AnyNodeRef::ExprCompare(cmp) => {
            is(c, &cmp.left) || cmp.comparators.first().is_some_and(|v| is(c, v))
        }
        AnyNodeRef::ExprLambda(_)
        | AnyNodeRef::ElifElseClause(_)
        | AnyNodeRef::MatchCase(_)
        | AnyNodeRef::Decorator(_)
        | AnyNodeRef::Parameters(_)
        | AnyNodeRef::ParameterWithDefault(_)
        | AnyNodeRef::Parameter(_) => false,
        AnyNodeRef::ExprListComp(_)
        | AnyNodeRef::ExprSetComp(_)
        | AnyNodeRef::ExprDictComp(_)
        | AnyNodeRef::ExprGenerator(_) => first_comprehension_iter(tree, parent, child, grandchild),
        // The first generator's iterable, checked one level up.
        AnyNodeRef::Comprehension(comp) => is(c, &comp.iter),
        AnyNodeRef::WithItem(item) => is(c, &item.context_expr),
        _ => true,
    }
}

/// Whether statement `stmt` runs in a loop of `function` (a return there would end the loop
/// early, not only this iteration).
pub(super) fn in_loop(tree: &Tree, stmt: usize, function: usize) -> bool {
    tree.ancestors(stmt)
        .take_while(|&a| a != function)
        .any(|a| {
            matches!(
                tree.node(a),
                AnyNodeRef::StmtFor(_) | AnyNodeRef::StmtWhile(_)
            )
        })
}

/// Whether statement `stmt` runs in a `finally:` of `function` (a return there would swallow
/// the exception in flight).
pub(super) fn in_finally(tree: &Tree, stmt: usize, function: usize) -> bool {
    let mut child = stmt;
    for a in tree.ancestors(stmt) {
        if a == function {
            break;
        }
        if let AnyNodeRef::StmtTry(t) = tree.node(a)
            && t.finalbody
                .iter()
                .any(|s| AnyNodeRef::from(s).ptr_eq(tree.node(child)))
        {
            return true;
        }
        child = a;
    }
    false
}

/// Builtin exception classes above the ones the fixers raise.
fn exception_bases(class: &str) -> &'static [&'static str] {
    match class {
        "KeyError" => &["LookupError", "Exception", "BaseException"],
        _ => &["Exception", "BaseException"],
    }
}

/// Whether an `except` of `function` around statement `stmt` (in a `try:` body) would catch
/// `class` raised there, so raising it would not leave the function as the fix says. A
/// handler whose type is not a name (a variable holding a tuple) counts as catching.
pub(super) fn caught(tree: &Tree, stmt: usize, function: usize, class: &str) -> bool {
    let mut child = stmt;
    for a in tree.ancestors(stmt) {
        if a == function {
            break;
        }
        if let AnyNodeRef::StmtTry(t) = tree.node(a)
            && t.body
                .iter()
                .any(|s| AnyNodeRef::from(s).ptr_eq(tree.node(child)))
            && t.handlers.iter().any(|h| {
                let ExceptHandler::ExceptHandler(h) = h;
                handler_catches(h.type_.as_deref(), class)
            })
        {
            return true;
        }
        child = a;
    }
    false
}

fn handler_catches(type_: Option<&Expr>, class: &str) -> bool {
    let Some(type_) = type_ else {
        return true;
    };
    let types: Vec<&Expr> = match type_ {
        Expr::Tuple(t) => t.elts.iter().collect(),
        other => vec![other],
    };
    types.iter().any(|t| match dotted(t) {
        Some(name) => {
            let last = name.rsplit('.').next().unwrap_or(&name);
            last == class || exception_bases(class).contains(&last)
        }
        None => true,
    })
}
