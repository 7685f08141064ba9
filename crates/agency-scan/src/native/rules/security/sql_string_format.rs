//! AGY201 `sql-string-format`: SQL text built by %-formatting, `.format()`, concatenation or an
//! f-string from a value that is neither constant nor escaped, and passed to a query call
//! (`execute`, `raw`, `text`, `extra`, `RawSQL`, `read_sql`, ...). The value becomes SQL, so a
//! quote in it changes the statement; query parameters keep values out of the SQL text.
//!
//! Precision: the rule reports only when it sees both the literal text (and that text looks
//! like SQL) and the value formatted into it. Constants, `UPPER_CASE` names, numbers,
//! `quote_name`-style escaping, names checked against a constant whitelist and other SQL
//! fragments (`where_sql`, `self.query`) are safe to interpolate.

use agency_core::contract::Severity;
use ruff_python_ast::{Expr, ExprCall};
use ruff_text_size::Ranged;

use super::taint::{Analysis, Built, Policy, find_sink_calls, snippet};
use crate::native::helpers::callee_name;
use crate::native::{Checker, Diagnostic};

/// Callee names that run or wrap SQL text. Generic ones (`text`, `raw`, `query`) are kept
/// precise by the SQL-likeness check on the text that reaches them.
fn is_sink(name: &str) -> bool {
    matches!(
        name,
        "execute"
            | "executemany"
            | "executescript"
            | "exec_driver_sql"
            | "raw"
            | "text"
            | "extra"
            | "RawSQL"
            | "read_sql"
            | "read_sql_query"
            | "query"
            | "fetch"
            | "fetchrow"
            | "fetchval"
    )
}

/// Callees whose result is safe inside SQL: identifier and literal quoting, escaping.
fn is_sanitizer(name: &str) -> bool {
    name.starts_with("quote")
        || name.starts_with("escape")
        || name.ends_with("quote_name")
        || name.ends_with("_escape")
        // SQLAlchemy's `IdentifierPreparer.format_table` / `format_column` quote identifiers.
        || name.starts_with("format_")
        || matches!(
            name,
            "qn" | "qn2" | "literal" | "Identifier" | "Literal" | "sql_flush" | "adapt"
            // Django's schema editors quote a column default as an SQL literal.
            | "prepare_default"
        )
}

/// Names that hold SQL fragments (`where_sql`, `self.query`, `placeholders`): composing them
/// is how query builders work, and their own construction is checked where it happens.
fn is_fragment(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    [
        "sql",
        "query",
        "stmt",
        "statement",
        "clause",
        "placeholder",
        "where",
        "select",
        "template",
        "db_table",
        "tablename",
    ]
    .iter()
    .any(|word| lower.contains(word))
}

const POLICY: Policy = Policy {
    sanitizer: is_sanitizer,
    fragment: is_fragment,
    quote_doubling_escapes: true,
};

pub fn sql_string_format(checker: &Checker, out: &mut Vec<Diagnostic>) {
    let (scopes, calls) = find_sink_calls(checker.module, is_sink);
    if calls.is_empty() {
        return;
    }
    let analysis = Analysis::new(&scopes, &POLICY);
    for sink in &calls {
        let scope = sink.scope;
        let call = sink.call;
        let before = call.range().start();
        let Some(name) = callee_name(call) else {
            continue;
        };
        if name == "extra" {
            // Django's `QuerySet.extra(where=[...], select={...})` takes SQL fragments, not
            // statements, so no SQL-likeness is required.
            for keyword in &call.arguments.keywords {
                let Some(arg) = keyword
                    .arg
                    .as_ref()
                    .map(ruff_python_ast::Identifier::as_str)
                else {
                    continue;
                };
                if !matches!(arg, "where" | "select" | "tables" | "order_by") {
                    continue;
                }
                for fragment in fragments(&keyword.value) {
                    if let Some(built) = analysis.eval(fragment, scope, before) {
                        report(checker, call, fragment, &built, out);
                    }
                }
            }
            continue;
        }
        let Some(arg) = sql_argument(call) else {
            continue;
        };
        let Some(built) = analysis.eval(arg, scope, before) else {
            continue;
        };
        if built.tainted.is_some() && (name == "RawSQL" || looks_like_sql(&built.text)) {
            report(checker, call, arg, &built, out);
        }
    }
}

/// The SQL argument of a sink: the first positional one or a keyword naming SQL.
fn sql_argument(call: &ExprCall) -> Option<&Expr> {
    match call.arguments.args.first() {
        Some(Expr::Starred(_)) => None,
        Some(first) => Some(first),
        None => call
            .arguments
            .keywords
            .iter()
            .find(|k| {
                k.arg.as_ref().is_some_and(|arg| {
                    matches!(
                        arg.as_str(),
                        "sql" | "query" | "statement" | "operation" | "text"
                    )
                })
            })
            .map(|k| &k.value),
    }
}

/// The items of an `extra()` argument: list or tuple elements, dict values, else itself.
fn fragments(value: &Expr) -> Vec<&Expr> {
    match value {
        Expr::List(list) => list.elts.iter().collect(),
        Expr::Tuple(tuple) => tuple.elts.iter().collect(),
        Expr::Dict(dict) => dict.items.iter().map(|item| &item.value).collect(),
        other => vec![other],
    }
}

fn report(
    checker: &Checker,
    call: &ExprCall,
    arg: &Expr,
    built: &Built,
    out: &mut Vec<Diagnostic>,
) {
    let Some((how, culprit)) = built.tainted else {
        return;
    };
    let sink = sink_display(checker, call);
    let value = snippet(checker.source, culprit);
    let message = match arg {
        Expr::Name(name) => format!(
            "SQL in `{}` is built with {} from `{value}` and reaches `{sink}`; pass the values as query parameters",
            name.id,
            how.describe()
        ),
        _ => format!(
            "SQL built with {} from `{value}` reaches `{sink}`; pass the values as query parameters",
            how.describe()
        ),
    };
    // Tests build SQL from fixture names; the finding stays visible but does not gate.
    let severity = if checker.is_test_file() {
        Severity::Low
    } else {
        Severity::High
    };
    // Where the value enters the SQL: bandit (B608) and ruff (S608) report the string there.
    out.push(
        Diagnostic::new("AGY201", arg.range(), message)
            .severity(severity)
            .related(culprit),
    );
}

/// `cursor.execute` as written, or the bare callee name when the receiver is long or complex.
pub(super) fn sink_display(checker: &Checker, call: &ExprCall) -> String {
    let func = checker.slice(call.func.range());
    if func.len() <= 40 && !func.contains(['\n', '(', '[']) {
        func.to_owned()
    } else {
        callee_name(call).unwrap_or("call").to_owned()
    }
}

/// True for text that reads as SQL: a clause keyword written in upper case (the SQL
/// convention), or a statement keyword with its companion (`select ... from`, `insert into`,
/// `update ... set`, `delete from`, `create table`) in any case. Generic sink names
/// (`text`, `query`, `raw`) see user-facing text too; this keeps them precise.
pub(super) fn looks_like_sql(text: &str) -> bool {
    const UPPER: &[&str] = &[
        "SELECT", "INSERT", "UPDATE", "DELETE", "FROM", "WHERE", "VALUES", "JOIN", "PRAGMA",
        "TRUNCATE", "ALTER", "CREATE", "DROP", "GRANT", "HAVING",
    ];
    let words = || {
        text.split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .filter(|w| !w.is_empty())
    };
    if words().any(|w| UPPER.contains(&w)) {
        return true;
    }
    let has = |keyword: &str| words().any(|w| w.eq_ignore_ascii_case(keyword));
    let mut first_two = words();
    let first = first_two.next().unwrap_or("").to_ascii_lowercase();
    let second = first_two.next().unwrap_or("").to_ascii_lowercase();
    match first.as_str() {
        "select" | "delete" => has("from"),
        "insert" | "replace" => has("into"),
        "update" => has("set"),
        "create" | "drop" | "alter" => matches!(
            second.as_str(),
            "table"
                | "index"
                | "view"
                | "sequence"
                | "schema"
                | "database"
                | "trigger"
                | "unique"
                | "temporary"
                | "temp"
                | "or"
                | "if"
        ),
        "with" => has("select"),
        "pragma" | "truncate" => true,
        _ => {
            (has("select") && has("from") && has("where"))
                || (has("insert") && has("into") && has("values"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::looks_like_sql;

    #[test]
    fn sql_likeness() {
        assert!(looks_like_sql("SELECT * FROM t WHERE a = ?"));
        assert!(looks_like_sql("select a from t"));
        assert!(looks_like_sql(" WHERE name = '?'"));
        assert!(looks_like_sql("drop table if exists ?"));
        assert!(!looks_like_sql("Select ? items"));
        assert!(!looks_like_sql("Update your profile, ?"));
        assert!(!looks_like_sql("ls -la ?"));
    }
}
