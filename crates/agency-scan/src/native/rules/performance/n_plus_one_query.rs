//! AGY304 `n-plus-one-query`: a database round trip per item of a loop (one query for the list,
//! then N more), where one query for all items would do.
//!
//! Flagged, inside a `for` loop or comprehension, when the query depends on the item (it uses
//! a name the loop binds; a query that does not is loop-invariant, not N+1):
//! - Django: `Model.objects.<queryset method>(...)` chains (`_default_manager` too);
//! - Django related access: `item.fk.field` and `item.related.all()` in a loop over
//!   `Model.objects.all()`/`filter(...)` built without `select_related`/`prefetch_related`;
//! - SQLAlchemy: `session.query(...)...`, `session.get/execute/scalars/scalar(...)`;
//! - DB-API: `cursor.execute(SQL, params)` with the same SQL and per-item parameters
//!   (`executemany` sends them in one call).
//!
//! Not flagged: loops that run once, `while` loops (polling), loops over chunks
//! (`range(0, n, 1000)`), test files (fixture setup) and `migrations/` (data migrations run
//! once), batch lookups (`filter(pk__in=...)`), a model that changes with the item (a different
//! table each time), `item.data.get("key")` (a dict, not a manager), a lazy queryset the loop
//! only bulk-writes (`rows = Model.objects.filter(...)` then `rows.update(...)`),
//! `cursor.execute(sql)` over a list of different statements (migrations, DDL).

use ruff_python_ast::visitor::{self, Visitor};
use ruff_python_ast::{Expr, ExprAttribute, ExprCall, Number, Stmt, StmtFor};
use ruff_text_size::{Ranged, TextRange, TextSize};

use super::loops::{self, Loop, Node};
use crate::native::{Checker, Diagnostic};

/// Manager attributes of a Django model class.
const DJANGO_MANAGERS: &[&str] = &["objects", "_default_manager", "_base_manager"];

/// Queryset methods: a chain of them off a manager is a query.
const QUERYSET_METHODS: &[&str] = &[
    "all",
    "filter",
    "exclude",
    "get",
    "first",
    "last",
    "count",
    "exists",
    "aggregate",
    "annotate",
    "order_by",
    "values",
    "values_list",
    "select_related",
    "prefetch_related",
    "only",
    "defer",
    "distinct",
    "using",
    "latest",
    "earliest",
    "get_or_create",
    "update",
    "delete",
    "in_bulk",
    "iterator",
    "reverse",
    "contains",
];

/// Related-manager methods that run a query (`book.tags.all()`).
const RELATED_MANAGER_METHODS: &[&str] = &[
    "all",
    "filter",
    "exclude",
    "count",
    "exists",
    "first",
    "last",
    "get",
    "values_list",
];

/// Attributes of non-relational field values that look like `item.field.attr`: dates, files,
/// images. Reading them never queries.
const FIELD_VALUE_ATTRIBUTES: &[&str] = &[
    "year",
    "month",
    "day",
    "hour",
    "minute",
    "second",
    "microsecond",
    "tzinfo",
    "url",
    "path",
    "size",
    "width",
    "height",
    "file",
    "value",
    "label",
    "days",
    "seconds",
    "real",
    "imag",
];

/// Session methods that query (SQLAlchemy).
const SESSION_METHODS: &[&str] = &["query", "get", "execute", "scalars", "scalar"];

pub fn n_plus_one_query(checker: &Checker, out: &mut Vec<Diagnostic>) {
    // Fixture setup in tests and data migrations (run once per deploy) loop over queries by
    // design.
    if checker.is_test_file() || checker.path.split('/').any(|part| part == "migrations") {
        return;
    }
    // The calls already flagged (outermost first) and the loops already reported for related
    // access, so that a chain or a loop yields one finding.
    let mut flagged_until = TextSize::default();
    let mut last_callee = TextRange::default();
    let mut reported_loops: Vec<TextSize> = Vec::new();
    loops::walk(&checker.module.body, &mut |context, node| {
        if context.runs_once {
            return;
        }
        let lp = context.innermost();
        if matches!(lp, Loop::While(_)) || is_chunked(lp) {
            return;
        }
        let expr = match node {
            Node::Expr(expr) => expr,
            Node::Stmt(stmt) => {
                // `rows = Model.objects.filter(...)` then only `rows.update(...)`: the lazy
                // queryset runs as one bulk write per item, not a read.
                if let Some(value) = bulk_written_queryset(stmt, lp) {
                    flagged_until = flagged_until.max(value.range().end());
                }
                return;
            }
        };
        if expr.range().start() < flagged_until {
            return;
        }
        match expr {
            Expr::Call(call) => {
                last_callee = call.func.range();
                match check_call(checker, call, lp) {
                    Verdict::Query(diagnostic) => {
                        flagged_until = call.range().end();
                        out.push(diagnostic);
                        return;
                    }
                    Verdict::NotNPlusOne => {
                        // The chain's inner calls are parts of the same query.
                        flagged_until = call.range().end();
                        return;
                    }
                    Verdict::NotAQuery => {}
                }
                if let Some(diagnostic) = check_related_manager(call, lp, &mut reported_loops) {
                    out.push(diagnostic);
                }
            }
            Expr::Attribute(attr) if attr.range != last_callee => {
                if let Some(diagnostic) = check_related_field(attr, lp, &mut reported_loops) {
                    out.push(diagnostic);
                }
            }
            _ => {}
        }
    });
}

/// What `check_call` makes of a call.
enum Verdict {
    Query(Diagnostic),
    /// A query, but not one per item.
    NotNPlusOne,
    NotAQuery,
}

fn check_call(checker: &Checker, call: &ExprCall, lp: Loop) -> Verdict {
    let Expr::Attribute(func) = call.func.as_ref() else {
        return Verdict::NotAQuery;
    };
    let method = func.attr.as_str();
    let message = if QUERYSET_METHODS.contains(&method) && is_django_query(call) {
        // A per-item bulk write (`update`, `delete`) is one statement per group, and a model
        // that changes with the item queries a different table each time: neither is N+1.
        let Some(manager_owner) = django_model(call) else {
            return Verdict::NotAQuery;
        };
        if matches!(method, "update" | "delete")
            || loops::depends_on_loop(manager_owner, lp)
            || has_in_lookup(call)
        {
            return Verdict::NotNPlusOne;
        }
        let model = checker.slice(manager_owner.range());
        format!(
            "`{model}` is queried once per item of the loop (N+1 queries); fetch all items in one query before the loop (`filter(pk__in=...)`, `in_bulk`, or a dict by key)"
        )
    } else if is_sqlalchemy_query(checker, call) {
        "the session runs a query once per item of the loop (N+1 queries); load all items in one query before the loop (`where(... .in_(...))`, `selectinload`)".to_string()
    } else if method == "execute" && is_cursor(&func.value) {
        let [sql, params, ..] = &*call.arguments.args else {
            return Verdict::NotAQuery;
        };
        if !loops::is_invariant(sql, lp) || !loops::depends_on_loop(params, lp) {
            return Verdict::NotNPlusOne;
        }
        let cursor = checker.slice(func.value.range());
        if is_select(sql) {
            format!(
                "`{cursor}.execute` runs the same query once per item of the loop (N+1 queries); fetch the rows for all items in one query (`WHERE ... IN (...)`) before the loop"
            )
        } else {
            format!(
                "`{cursor}.execute` runs the same statement once per item of the loop; pass all parameter rows to `executemany` in one call"
            )
        }
    } else {
        return Verdict::NotAQuery;
    };
    let depends = loops::depends_on_loop(&call.func, lp)
        || call
            .arguments
            .args
            .iter()
            .any(|a| loops::depends_on_loop(a, lp))
        || call
            .arguments
            .keywords
            .iter()
            .any(|k| loops::depends_on_loop(&k.value, lp));
    if !depends {
        return Verdict::NotNPlusOne;
    }
    Verdict::Query(Diagnostic::new("AGY304", call.range(), message).impact(90))
}

/// Queryset methods that build a query without running it.
const LAZY_METHODS: &[&str] = &[
    "all",
    "filter",
    "exclude",
    "order_by",
    "select_related",
    "prefetch_related",
    "only",
    "defer",
    "distinct",
    "using",
    "annotate",
    "reverse",
];

/// The value of `name = Model.objects.filter(...)` (a lazy chain) when the loop uses `name`
/// only as the receiver of `update(...)`/`delete(...)`, which the rule does not count.
fn bulk_written_queryset<'a>(stmt: &'a Stmt, lp: Loop<'_>) -> Option<&'a Expr> {
    struct Uses<'n> {
        name: &'n str,
        bulk: usize,
        other: usize,
    }
    impl<'a> Visitor<'a> for Uses<'_> {
        fn visit_expr(&mut self, expr: &'a Expr) {
            if let Expr::Call(call) = expr
                && let Expr::Attribute(attr) = call.func.as_ref()
                && matches!(attr.value.as_ref(), Expr::Name(n) if n.id.as_str() == self.name)
                && matches!(attr.attr.as_str(), "update" | "delete")
            {
                self.bulk += 1;
                self.visit_arguments(&call.arguments);
                return;
            }
            if matches!(expr, Expr::Name(n) if n.id.as_str() == self.name && n.ctx.is_load()) {
                self.other += 1;
            }
            visitor::walk_expr(self, expr);
        }
    }
    let Stmt::Assign(assign) = stmt else {
        return None;
    };
    let ([Expr::Name(target)], Expr::Call(call), Loop::For(for_stmt)) =
        (&*assign.targets, assign.value.as_ref(), lp)
    else {
        return None;
    };
    let Expr::Attribute(func) = call.func.as_ref() else {
        return None;
    };
    if !LAZY_METHODS.contains(&func.attr.as_str()) || !is_django_query(call) {
        return None;
    }
    let mut uses = Uses {
        name: target.id.as_str(),
        bulk: 0,
        other: 0,
    };
    uses.visit_body(&for_stmt.body);
    (uses.bulk > 0 && uses.other == 0).then_some(assign.value.as_ref())
}

/// `for start in range(0, n, 1000)`: a loop over chunks, whose per-iteration query loads a
/// batch. A step literal below 10 (`range(0, n, 2)`) still walks items.
fn is_chunked(lp: Loop<'_>) -> bool {
    let Loop::For(for_stmt) = lp else {
        return false;
    };
    let Expr::Call(call) = for_stmt.iter.as_ref() else {
        return false;
    };
    if !matches!(call.func.as_ref(), Expr::Name(f) if f.id.as_str() == "range") {
        return false;
    }
    let [_, _, step] = &*call.arguments.args else {
        return false;
    };
    match step {
        Expr::NumberLiteral(n) => {
            matches!(&n.value, Number::Int(i) if i.as_u64().is_none_or(|v| v >= 10))
        }
        Expr::UnaryOp(_) => false,
        _ => true,
    }
}

/// A literal SQL string that reads (`SELECT`, `WITH`, `PRAGMA`): `executemany` does not apply.
fn is_select(sql: &Expr) -> bool {
    let Expr::StringLiteral(literal) = sql else {
        return false;
    };
    let text = literal.value.to_str().trim_start();
    let head = text.get(..6).unwrap_or(text);
    head.eq_ignore_ascii_case("select")
        || head
            .get(..4)
            .is_some_and(|h| h.eq_ignore_ascii_case("with"))
        || head.eq_ignore_ascii_case("pragma")
}

/// `Model.objects.filter(...).first()`: queryset methods down to a manager attribute. Not
/// `self.objects`: Django managers are not accessible via instances, so that is a plain
/// attribute (Sphinx's domains keep a dict there).
fn is_django_query(call: &ExprCall) -> bool {
    let mut current = call;
    loop {
        let Expr::Attribute(func) = current.func.as_ref() else {
            return false;
        };
        if !QUERYSET_METHODS.contains(&func.attr.as_str()) {
            return false;
        }
        match func.value.as_ref() {
            Expr::Attribute(manager) => {
                return DJANGO_MANAGERS.contains(&manager.attr.as_str())
                    && !matches!(manager.value.as_ref(), Expr::Name(n) if n.id.as_str() == "self");
            }
            Expr::Call(inner) => current = inner,
            _ => return false,
        }
    }
}

/// `filter(pk__in=ids)` anywhere in the chain: already one query per batch, not per item.
fn has_in_lookup(call: &ExprCall) -> bool {
    let mut current = call;
    loop {
        if current
            .arguments
            .keywords
            .iter()
            .any(|k| k.arg.as_ref().is_some_and(|a| a.as_str().ends_with("__in")))
        {
            return true;
        }
        let Expr::Attribute(func) = current.func.as_ref() else {
            return false;
        };
        match func.value.as_ref() {
            Expr::Call(inner) => current = inner,
            _ => return false,
        }
    }
}

/// The model of a Django chain, `Book` in `Book.objects.get(...)`.
fn django_model(call: &ExprCall) -> Option<&Expr> {
    let mut expr = call.func.as_ref();
    loop {
        match expr {
            Expr::Attribute(attr) if DJANGO_MANAGERS.contains(&attr.attr.as_str()) => {
                return Some(&attr.value);
            }
            Expr::Attribute(attr) => expr = &attr.value,
            Expr::Call(inner) => expr = &inner.func,
            _ => return None,
        }
    }
}

/// `session.query(...)...` or `session.get/execute/scalars/scalar(...)`, in a module that
/// uses SQLAlchemy (an HTTP `session` of `requests` or `aiohttp` is not a database).
fn is_sqlalchemy_query(checker: &Checker, call: &ExprCall) -> bool {
    if !uses_sqlalchemy(checker.source) {
        return false;
    }
    let mut current = call;
    loop {
        let Expr::Attribute(func) = current.func.as_ref() else {
            return false;
        };
        // `session.get(Model, key)`: one positional argument is `requests`' `session.get(url)`.
        let method = func.attr.as_str();
        if SESSION_METHODS.contains(&method)
            && is_session(&func.value)
            && (method != "get" || current.arguments.args.len() >= 2)
        {
            return true;
        }
        match func.value.as_ref() {
            Expr::Call(inner) => current = inner,
            _ => return false,
        }
    }
}

/// The module imports SQLAlchemy or a library built on it.
fn uses_sqlalchemy(source: &str) -> bool {
    ["sqlalchemy", "sqlmodel", "flask_sqlalchemy"]
        .iter()
        .any(|m| source.contains(&format!("import {m}")) || source.contains(&format!("from {m}")))
}

/// `session`, `db.session`, `self.session`, `db_session`.
fn is_session(expr: &Expr) -> bool {
    let name = match expr {
        Expr::Name(n) => n.id.as_str(),
        Expr::Attribute(a) => a.attr.as_str(),
        _ => return false,
    };
    name == "session" || name.ends_with("_session")
}

/// `cursor`, `cur`, `self.cursor`, `db_cursor`.
fn is_cursor(expr: &Expr) -> bool {
    let name = match expr {
        Expr::Name(n) => n.id.as_str(),
        Expr::Attribute(a) => a.attr.as_str(),
        _ => return false,
    };
    name == "cur" || name == "cursor" || name.ends_with("_cursor")
}

/// The `for` loop's target when the loop iterates a Django queryset built without
/// `select_related`/`prefetch_related` (nor `values`, which yields dicts).
fn plain_queryset_loop(lp: Loop<'_>) -> Option<(&StmtFor, &str)> {
    let Loop::For(for_stmt) = lp else {
        return None;
    };
    let Expr::Name(target) = for_stmt.target.as_ref() else {
        return None;
    };
    let Expr::Call(call) = for_stmt.iter.as_ref() else {
        return None;
    };
    if !is_django_query(call) {
        return None;
    }
    // Walk the chain: any method that loads relations or yields plain rows ends the question.
    let mut expr = call.func.as_ref();
    loop {
        match expr {
            Expr::Attribute(attr) => {
                if matches!(
                    attr.attr.as_str(),
                    "select_related"
                        | "prefetch_related"
                        | "values"
                        | "values_list"
                        | "only"
                        | "defer"
                        | "get"
                        | "first"
                        | "last"
                        | "count"
                        | "exists"
                ) {
                    return None;
                }
                expr = &attr.value;
            }
            Expr::Call(inner) => expr = &inner.func,
            _ => break,
        }
    }
    Some((for_stmt, target.id.as_str()))
}

/// `book.tags.all()` in a loop over a plain queryset.
fn check_related_manager(
    call: &ExprCall,
    lp: Loop,
    reported_loops: &mut Vec<TextSize>,
) -> Option<Diagnostic> {
    let Expr::Attribute(func) = call.func.as_ref() else {
        return None;
    };
    if !RELATED_MANAGER_METHODS.contains(&func.attr.as_str()) {
        return None;
    }
    // `item.data.get("seed")`: a dict (a JSON field) read by key. A manager's `get` takes
    // lookups as keywords.
    if func.attr.as_str() == "get" && call.arguments.keywords.is_empty() {
        return None;
    }
    let Expr::Attribute(related) = func.value.as_ref() else {
        return None;
    };
    let (for_stmt, target) = plain_queryset_loop(lp)?;
    if !matches!(related.value.as_ref(), Expr::Name(n) if n.id.as_str() == target)
        || reported_loops.contains(&for_stmt.range.start())
    {
        return None;
    }
    reported_loops.push(for_stmt.range.start());
    let field = related.attr.as_str();
    Some(
        Diagnostic::new(
            "AGY304",
            call.range(),
            format!(
                "`{target}.{field}` queries the database once per item of the loop (N+1 queries); add `.prefetch_related(\"{field}\")` to the queryset the loop iterates"
            ),
        )
        .impact(90),
    )
}

/// `book.author.name` in a loop over a plain queryset: a foreign key loaded per item.
fn check_related_field(
    attr: &ExprAttribute,
    lp: Loop,
    reported_loops: &mut Vec<TextSize>,
) -> Option<Diagnostic> {
    let Expr::Attribute(related) = attr.value.as_ref() else {
        return None;
    };
    let Expr::Name(base) = related.value.as_ref() else {
        return None;
    };
    let field = related.attr.as_str();
    // `page.specific_class.DoesNotExist`: a class attribute, not a field of a related row.
    if FIELD_VALUE_ATTRIBUTES.contains(&attr.attr.as_str())
        || attr.attr.as_str().starts_with(char::is_uppercase)
        || field.starts_with('_')
        || field.ends_with("_id")
        || field == "pk"
        || field == "id"
    {
        return None;
    }
    let (for_stmt, target) = plain_queryset_loop(lp)?;
    if base.id.as_str() != target || reported_loops.contains(&for_stmt.range.start()) {
        return None;
    }
    reported_loops.push(for_stmt.range.start());
    Some(
        Diagnostic::new(
            "AGY304",
            attr.range,
            format!(
                "`{target}.{field}` is loaded with a query per item of the loop if `{field}` is a foreign key (N+1 queries); add `.select_related(\"{field}\")` to the queryset the loop iterates"
            ),
        )
        .impact(90),
    )
}
