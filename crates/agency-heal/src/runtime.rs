//! Deterministic fixes for NoneType crashes found in runtime logs (`agency heal --from-log`),
//! and the regression test that pins each one. Pure functions over the file's text: no IO, no
//! processes; the heal engine applies, verifies and writes.
//!
//! A crash is a finding of `agency_scan::traceback` (rules `none-attribute`, `none-subscript`,
//! `none-call`, `none-iteration`) at the innermost repository frame: a line and the column
//! range of the expression that was None. [`none_fixes`] proposes, in order of fit:
//!
//! 1. **Producer** fixes, where the None is made ([`producer`](self)): a lookup whose None
//!    result was used unchecked (`d.get(k)`, `re.match(...)`, `os.environ.get(v)`,
//!    `.find_one(...)`/`.first()`, `getattr(o, n, None)`) is checked right after it, raising
//!    the exception the lookup stands for or returning the function's natural empty value; a
//!    function of the same file that can fall off its end (an implicit None) ends with its
//!    natural empty value or a `LookupError`, unless some caller tests its result for None.
//! 2. **Guard** fixes at the use site: `if <expr> is None:` then the natural empty value of the
//!    function (`[]` for `-> list[...]`, `None` for `-> X | None`, ...), else a `ValueError`
//!    naming the expression.
//!
//! Every candidate is re-parsed; at most [`MAX_FIXES`] are returned. Nothing is proposed where
//! the fix could change the meaning of the code in a way the crash does not show (see each
//! module's documentation for what is refused).
//!
//! [`regression_test`] writes a pytest file that drives the crash through the crashing
//! function's parameters (None for a parameter, a missing key for a module-level dict lookup,
//! a non-matching text for a regex, an unset environment variable) and asserts the fixed
//! behaviour, so it fails before the fix and passes after.

mod contract;
mod flow;
mod guard;
mod locate;
mod producer;
mod regression;
mod snippet;
mod tree;

use serde::{Deserialize, Serialize};

pub use regression::{NoRegression, Regression, regression_test};

/// At most this many candidates per crash.
pub const MAX_FIXES: usize = 3;

/// One NoneType crash, as `agency_scan::traceback::findings` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crash<'a> {
    /// `none-attribute`, `none-subscript`, `none-call` or `none-iteration`.
    pub rule: &'a str,
    /// 1-based line of the crash in the source.
    pub line: u32,
    /// 1-based column, in characters (not bytes) of the line, where the None-valued expression
    /// (or the operation on it: `receiver.attr` for `none-attribute`) starts.
    pub column: u32,
    /// 1-based column, in characters, just past its end (exclusive): `column..end_column` is
    /// the expression. `traceback::findings` gives exactly this pair.
    pub end_column: u32,
}

/// Where a fix stops the None.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FixKind {
    /// Where the value is made: after the lookup, or at the end of the function that returned
    /// None implicitly.
    Producer,
    /// Where the value is used: a check before the statement that crashed.
    Guard,
}

/// What the changed function does when the None case happens.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Behaviour {
    /// It returns this Python expression (`[]`, `""`, `None`, ...).
    Returns(String),
    /// It raises this exception class (`KeyError`, `ValueError`, `LookupError`, ...).
    Raises(String),
}

/// One candidate fix for a NoneType crash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoneFix {
    pub kind: FixKind,
    /// One line for the report: "`user` from `USERS.get(uid)` is checked where it is made:
    /// KeyError".
    pub summary: String,
    /// The whole new text of the file.
    pub after: String,
    /// `__qualname__` of the function whose behaviour changes (`Class.method`, `func`,
    /// `outer.<locals>.inner`): the crashing function, or the callee for an implicit None.
    pub function: String,
    /// What that function now does in the None case.
    pub behaviour: Behaviour,
}

/// The candidate fixes for `crash` in `source`, best first, at most [`MAX_FIXES`]; empty when
/// the file does not parse, the range does not single out one expression, or nothing safe is
/// known (a crash at module or class level, an expression with effects such as a call, an
/// expression evaluated only under a condition).
pub fn none_fixes(source: &str, crash: &Crash) -> Vec<NoneFix> {
    let Ok(parsed) = ruff_python_parser::parse_module(source) else {
        return Vec::new();
    };
    let tree = tree::Tree::new(source, parsed.syntax());
    let Some(site) = locate::locate(&tree, crash) else {
        return Vec::new();
    };
    if site.function.is_none() {
        return Vec::new();
    }
    let producers = producer::producers(&tree, &site);
    let guards = guard::guards(&tree, &site);
    // A guard that returns what a producer fix already returns adds nothing but a position.
    let producer_returns: Vec<&Behaviour> = producers
        .iter()
        .filter(|f| matches!(f.behaviour, Behaviour::Returns(_)))
        .map(|f| &f.behaviour)
        .collect();
    let guards: Vec<NoneFix> = guards
        .into_iter()
        .filter(|g| !producer_returns.contains(&&g.behaviour))
        .collect();
    let mut out: Vec<NoneFix> = Vec::new();
    for fix in producers.into_iter().chain(guards) {
        if out.len() == MAX_FIXES {
            break;
        }
        if fix.after == source
            || out.iter().any(|f| f.after == fix.after)
            || ruff_python_parser::parse_module(&fix.after).is_err()
        {
            continue;
        }
        out.push(fix);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;
    use std::path::PathBuf;

    use super::*;

    /// A fixture's header: `# crash: RULE LINE:COL-END` (the columns as `traceback` gives
    /// them), `# expect: KIND, KIND` (the kinds of the candidates in order, or `none`), and
    /// optionally `# path: REPO/PATH.py` and `# files: OTHER FILES` for the regression test.
    struct Fixture {
        source: String,
        rule: String,
        line: u32,
        column: u32,
        end_column: u32,
        expect: Vec<String>,
        path: String,
        files: Vec<String>,
    }

    fn fixture(name: &str) -> Fixture {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/runtime")
            .join(format!("{name}.py"));
        let source = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let header = |key: &str| {
            source
                .lines()
                .take_while(|l| l.starts_with('#'))
                .find_map(|l| l.strip_prefix(&format!("# {key}: ")))
                .map(str::trim)
                .map(ToString::to_string)
        };
        let crash = header("crash").unwrap_or_else(|| panic!("{name}: no `# crash:` header"));
        let (rule, place) = crash.split_once(' ').expect("`# crash: RULE LINE:COL-END`");
        let (line, columns) = place.split_once(':').expect("LINE:COL-END");
        let (column, end_column) = columns.split_once('-').expect("COL-END");
        let expect = header("expect")
            .unwrap_or_else(|| panic!("{name}: no `# expect:` header"))
            .split(',')
            .map(|k| k.trim().to_string())
            .filter(|k| k != "none")
            .collect();
        let path = header("path").unwrap_or_else(|| format!("shop/{name}.py"));
        let mut files: Vec<String> = header("files").map_or_else(
            || {
                vec![
                    "shop/__init__.py".to_string(),
                    "tests/test_orders.py".to_string(),
                ]
            },
            |f| f.split_whitespace().map(ToString::to_string).collect(),
        );
        files.push(path.clone());
        Fixture {
            rule: rule.to_string(),
            line: line.parse().expect("line number"),
            column: column.parse().expect("column"),
            end_column: end_column.parse().expect("end column"),
            source,
            expect,
            path,
            files,
        }
    }

    /// Runs the fixers on one fixture: the kinds must be the expected ones, every candidate
    /// must parse and change the file, and the snapshot shows each diff and regression test.
    fn check(name: &str) {
        let fx = fixture(name);
        let crash = Crash {
            rule: &fx.rule,
            line: fx.line,
            column: fx.column,
            end_column: fx.end_column,
        };
        let fixes = none_fixes(&fx.source, &crash);
        let kinds: Vec<String> = fixes
            .iter()
            .map(|f| {
                match f.kind {
                    FixKind::Producer => "producer",
                    FixKind::Guard => "guard",
                }
                .to_string()
            })
            .collect();
        assert_eq!(kinds, fx.expect, "{name}: kinds of the candidates");
        let mut rendered = format!(
            "{} at {}:{}:{}-{}\n",
            fx.rule, fx.path, fx.line, fx.column, fx.end_column
        );
        if fixes.is_empty() {
            rendered.push_str("no fix\n");
        }
        for (i, fix) in fixes.iter().enumerate() {
            assert!(
                ruff_python_parser::parse_module(&fix.after).is_ok(),
                "{name}: candidate {i} does not parse:\n{}",
                fix.after
            );
            assert_ne!(
                fix.after, fx.source,
                "{name}: candidate {i} changes nothing"
            );
            let behaviour = match &fix.behaviour {
                Behaviour::Returns(v) => format!("returns {v}"),
                Behaviour::Raises(c) => format!("raises {c}"),
            };
            let _ = writeln!(
                rendered,
                "\n## {}: {:?} fix of `{}()`, which now {behaviour}\n{}\n",
                i + 1,
                fix.kind,
                fix.function,
                fix.summary
            );
            rendered.push_str(&crate::diff::unified(&fx.path, &fx.source, &fix.after));
            match regression_test(&fx.files, &fx.path, &fx.source, &crash, fix) {
                Ok(test) => {
                    assert!(
                        ruff_python_parser::parse_module(&test.text).is_ok(),
                        "{name}: the regression test does not parse:\n{}",
                        test.text
                    );
                    assert!(!fx.files.contains(&test.path), "{name}: test path is taken");
                    let _ = write!(
                        rendered,
                        "\nregression test {} ({}):\n{}",
                        test.path, test.node_id, test.text
                    );
                }
                Err(reason) => {
                    let _ = writeln!(rendered, "\nno regression test: {reason}");
                }
            }
        }
        insta::assert_snapshot!(name, rendered);
    }

    macro_rules! fixtures {
        ($($name:ident),* $(,)?) => {
            $(
                #[test]
                fn $name() {
                    check(stringify!($name));
                }
            )*
        };
    }

    /// The crash at the first occurrence of `mark` in `source`, with the columns `traceback`
    /// would give for a caret run under exactly `mark`.
    fn crash_at<'a>(source: &str, rule: &'a str, mark: &str) -> Crash<'a> {
        let at = source.find(mark).expect("mark in source");
        let line_start = source[..at].rfind('\n').map_or(0, |i| i + 1);
        let column = source[line_start..at].chars().count() as u32 + 1;
        Crash {
            rule,
            line: source[..at].matches('\n').count() as u32 + 1,
            column,
            end_column: column + mark.chars().count() as u32,
        }
    }

    /// The crash under the `«...»` of `marked`, and the source without the marks.
    fn marked<'a>(marked: &str, rule: &'a str) -> (String, Crash<'a>) {
        let source = marked.replace(['«', '»'], "");
        let start = marked.find('«').expect("« in source");
        let end = marked.find('»').expect("» in source");
        let mark = &marked[start + '«'.len_utf8()..end];
        let prefix = &marked[..start];
        let line_start = prefix.rfind('\n').map_or(0, |i| i + 1);
        let column = prefix[line_start..].chars().count() as u32 + 1;
        let crash = Crash {
            rule,
            line: prefix.matches('\n').count() as u32 + 1,
            column,
            end_column: column + mark.chars().count() as u32,
        };
        (source, crash)
    }

    fn kinds(source: &str, rule: &str, mark: &str) -> Vec<(FixKind, Behaviour)> {
        none_fixes(source, &crash_at(source, rule, mark))
            .into_iter()
            .map(|f| (f.kind, f.behaviour))
            .collect()
    }

    fn raises(class: &str) -> Behaviour {
        Behaviour::Raises(class.to_string())
    }

    fn returns(value: &str) -> Behaviour {
        Behaviour::Returns(value.to_string())
    }

    #[test]
    fn crlf_files_get_crlf_lines() {
        let source = "def f(user):\r\n    return user.name\r\n";
        let fixes = none_fixes(source, &crash_at(source, "none-attribute", "user.name"));
        assert_eq!(fixes.len(), 1);
        assert_eq!(
            fixes[0].after,
            "def f(user):\r\n    if user is None:\r\n        raise ValueError(\"user is None in f()\")\r\n    return user.name\r\n"
        );
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let source = "def f(café):\n    é = \"ü\" + café.name\n    return é\n";
        let fixes = none_fixes(source, &crash_at(source, "none-attribute", "café.name"));
        assert_eq!(fixes.len(), 1);
        assert!(
            fixes[0].after.contains("    if café is None:\n"),
            "{}",
            fixes[0].after
        );
    }

    #[test]
    fn nothing_for_unknown_rules_broken_files_and_stray_ranges() {
        let source = "def f(user):\n    return user.name\n";
        assert!(kinds(source, "none-frobnicate", "user.name").is_empty());
        assert!(
            kinds(
                "def f(:\n    return user.name\n",
                "none-attribute",
                "user.name"
            )
            .is_empty()
        );
        // A range on `return` singles out no None-valued expression.
        assert!(kinds(source, "none-attribute", "return").is_empty());
        // A range past the end of the file.
        let far = Crash {
            rule: "none-attribute",
            line: 40,
            column: 1,
            end_column: 3,
        };
        assert!(none_fixes(source, &far).is_empty());
    }

    #[test]
    fn a_value_checked_before_the_crash_gets_no_producer_fix() {
        let source = "\
def f(uid):
    user = USERS.get(uid)
    if user is None:
        log(uid)
    return user.name
";
        assert_eq!(
            kinds(source, "none-attribute", "user.name"),
            [(FixKind::Guard, raises("ValueError"))]
        );
    }

    #[test]
    fn a_name_bound_again_after_the_lookup_gets_no_producer_fix() {
        let rebound = "\
def f(uid, fallback):
    user = USERS.get(uid)
    if fallback:
        user = fallback
    return user.name
";
        assert_eq!(
            kinds(rebound, "none-attribute", "user.name"),
            [(FixKind::Guard, raises("ValueError"))]
        );
        // Bound again later in the loop: the next iteration sees that value.
        let in_loop = "\
def f(uids):
    user = USERS.get(uids[0])
    for uid in uids:
        print(user.name)
        user = USERS.get(uid)
";
        assert_eq!(
            kinds(in_loop, "none-attribute", "user.name"),
            [(FixKind::Guard, raises("ValueError"))]
        );
        // The lookup in one branch, the crash after the `if`: it does not always run.
        let branch = "\
def f(uid, user):
    if uid:
        user = USERS.get(uid)
    return user.name
";
        assert_eq!(
            kinds(branch, "none-attribute", "user.name"),
            [(FixKind::Guard, raises("ValueError"))]
        );
    }

    #[test]
    fn a_lookup_is_checked_where_it_is_made_only_when_every_run_reaches_the_crash() {
        let early_exit = "\
def f(uid, orders):
    user = USERS.get(uid)
    if not orders:
        return []
    return [user.email]
";
        assert_eq!(
            kinds(early_exit, "none-attribute", "user.email"),
            [
                (FixKind::Guard, returns("[]")),
                (FixKind::Guard, raises("ValueError")),
            ]
        );
        let branch = "\
def f(uid, flag):
    user = USERS.get(uid)
    if flag:
        return user.email
    return None
";
        assert_eq!(
            kinds(branch, "none-attribute", "user.email"),
            [
                (FixKind::Guard, returns("None")),
                (FixKind::Guard, raises("ValueError")),
            ]
        );
        let with_body = "\
def f(uid):
    user = USERS.get(uid)
    with LOCK:
        log(uid)
        return user.email
";
        assert_eq!(
            kinds(with_body, "none-attribute", "user.email"),
            [
                (FixKind::Producer, raises("KeyError")),
                (FixKind::Guard, raises("ValueError")),
            ]
        );
    }

    #[test]
    fn no_guard_where_the_check_would_not_mean_the_same() {
        // A walrus binds the name in the statement itself.
        let walrus = "def f(g):\n    return (user := g()).name + user.title\n";
        assert!(kinds(walrus, "none-attribute", "user.title").is_empty());
        // An `elif` test cannot have a statement before it.
        let elif = "def f(a, b):\n    if a:\n        return 1\n    elif b.ok:\n        return 2\n";
        assert!(kinds(elif, "none-attribute", "b.ok").is_empty());
        // A `while` test runs again on every iteration.
        let loop_test = "def f(node):\n    while node.next:\n        node = step(node)\n";
        assert!(kinds(loop_test, "none-attribute", "node.next").is_empty());
        // A call before the attribute chain could set it.
        let effect = "def f(self):\n    return self.connect() + self.conn.x\n";
        assert!(kinds(effect, "none-attribute", "self.conn.x").is_empty());
        // Two statements on one line.
        let semicolon = "def f(user):\n    a = 1; return user.name\n";
        assert!(kinds(semicolon, "none-attribute", "user.name").is_empty());
        // Inside a comprehension's body, the name is the comprehension's.
        let comp = "def f(rows):\n    return [r.name for r in rows]\n";
        assert!(kinds(comp, "none-attribute", "r.name").is_empty());
    }

    #[test]
    fn a_parameter_that_defaults_to_none_is_not_refused_by_raising() {
        let (source, crash) = marked(
            "def f(items=None) -> list[str]:\n    return [i.name for i in «items»]\n",
            "none-iteration",
        );
        let fixes: Vec<_> = none_fixes(&source, &crash)
            .into_iter()
            .map(|f| (f.kind, f.behaviour))
            .collect();
        assert_eq!(fixes, [(FixKind::Guard, returns("[]"))]);
        let (unknown, crash) = marked(
            "def f(items=None):\n    return sum(i.size for i in «items»)\n",
            "none-iteration",
        );
        assert!(none_fixes(&unknown, &crash).is_empty());
    }

    #[test]
    fn returns_are_not_offered_in_finally_and_raises_not_where_caught() {
        let finally = "\
def f(conn) -> list[str]:
    try:
        pass
    finally:
        return conn.rows()
";
        assert_eq!(
            kinds(finally, "none-attribute", "conn.rows"),
            [(FixKind::Guard, raises("ValueError"))]
        );
        let caught = "\
def f(conn) -> list[str]:
    try:
        return conn.rows()
    except (OSError, ValueError):
        return []
";
        assert_eq!(
            kinds(caught, "none-attribute", "conn.rows"),
            [(FixKind::Guard, returns("[]"))]
        );
    }

    #[test]
    fn a_method_of_the_same_class_is_fixed_at_its_end() {
        let source = "\
class Repo:
    def find(self, key):
        for row in self.rows:
            if row.key == key:
                return row

    def label(self, key) -> str:
        return self.find(key).label
";
        let fixes = none_fixes(
            source,
            &crash_at(source, "none-attribute", "self.find(key).label"),
        );
        assert_eq!(fixes.len(), 1);
        assert_eq!(fixes[0].function, "Repo.find");
        assert!(
            fixes[0].after.contains(
                "                return row\n        raise LookupError(f\"Repo.find() found nothing for key={key!r}\")\n"
            ),
            "{}",
            fixes[0].after
        );
    }

    #[test]
    fn a_callee_whose_contract_admits_none_is_left_alone() {
        let optional = "\
def find(key) -> Row | None:
    for row in ROWS:
        if row.key == key:
            return row


def label(key):
    return find(key).label
";
        assert!(kinds(optional, "none-attribute", "find(key).label").is_empty());
        let explicit = "\
def find(key):
    if not key:
        return None
    for row in ROWS:
        if row.key == key:
            return row


def label(key):
    return find(key).label
";
        assert!(kinds(explicit, "none-attribute", "find(key).label").is_empty());
        let walrus_checked = "\
def find(key):
    for row in ROWS:
        if row.key == key:
            return row


def first(keys):
    while (row := find(keys.pop())) is None:
        pass
    return row


def label(key):
    return find(key).label
";
        assert!(kinds(walrus_checked, "none-attribute", "find(key).label").is_empty());
    }

    #[test]
    fn a_file_without_a_final_newline_still_gets_whole_lines() {
        let source = "def f(uid):\n    user = USERS.get(uid)\n    return user.name";
        let fixes = none_fixes(source, &crash_at(source, "none-attribute", "user.name"));
        assert_eq!(fixes.len(), 2);
        assert!(
            fixes[0]
                .after
                .contains("        raise KeyError(uid)\n    return user.name")
        );
        let tail = "\
def g(k):
    return find(k).x

def find(k):
    for r in ROWS:
        if r == k:
            return r";
        let fixes = none_fixes(tail, &crash_at(tail, "none-attribute", "find(k).x"));
        assert_eq!(fixes.len(), 1);
        assert!(fixes[0].after.ends_with(
            "            return r\n    raise LookupError(f\"find() found nothing for k={k!r}\")\n"
        ));
    }

    #[test]
    fn at_most_three_candidates() {
        let source = "\
def f(invoice) -> list[str]:
    items = invoice.get(\"items\")
    return items[0]
";
        let fixes = none_fixes(source, &crash_at(source, "none-subscript", "items[0]"));
        // Producer returns [], producer raises KeyError, guard raises (the guard's return is
        // the producer's): three.
        assert_eq!(
            fixes
                .iter()
                .map(|f| (f.kind, f.behaviour.clone()))
                .collect::<Vec<_>>(),
            [
                (FixKind::Producer, returns("[]")),
                (FixKind::Producer, raises("KeyError")),
                (FixKind::Guard, raises("ValueError")),
            ]
        );
    }

    #[test]
    fn behaviours_serialise_in_snake_case() {
        assert_eq!(
            serde_json::to_string(&(FixKind::Producer, raises("KeyError"))).expect("serialises"),
            r#"["producer",{"raises":"KeyError"}]"#
        );
    }

    fixtures!(
        dict_get_producer,
        dict_get_inline,
        re_match_producer,
        re_search_inline,
        env_var_producer,
        callee_implicit_none,
        callee_empty_list,
        guard_annotation_empty,
        guard_returns_empty,
        guard_raise_unknown,
        none_iteration_attribute,
        loop_guard,
        none_subscript_caret,
        none_subscript_whole_line,
        method_self_attr,
        method_param,
        tabs,
        comments,
        generator_guard,
        getattr_producer,
        src_layout,
        no_fix_call_twice,
        no_fix_checked_callers,
        no_fix_module_level,
        no_fix_short_circuit,
        no_fix_caught_raise,
    );
}
