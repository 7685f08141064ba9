//! Producer fixes: the None is stopped where it is made.
//!
//! - A lookup whose None means "not found" (`d.get(k)`, `re.match(p, s)`, `os.environ.get(v)`,
//!   `.find_one(...)`, `.first()`, `getattr(o, name, None)`) bound to a name and used
//!   unchecked: the name is checked right after the assignment, raising the exception the
//!   lookup stands for (`KeyError(k)` as `d[k]` would), or returning the function's natural
//!   empty value when its contract has one.
//! - The same lookup written inline (`re.match(p, s).group(1)`): named first, then checked,
//!   when it is the first thing its statement evaluates.
//! - A function of the same file that can fall off its end while its other paths return a
//!   value (an implicit None no caller expects): it ends with its natural empty value, else
//!   with a `LookupError`. Not when any code of the file tests its result for None, which
//!   makes None part of its contract.

use ruff_python_ast::{AnyNodeRef, Expr, ExprCall, Stmt, StmtFunctionDef};
use ruff_text_size::{Ranged, TextRange};

use super::contract::{Empty, annotation_empty, natural_empty, own_returns};
use super::flow::{
    always_reaches, bindings, caught, dotted, evaluated_first, in_finally, in_loop, is, is_local,
    is_tested, name_tested_within, parameter_names, reaching_assignment, scope_of,
    single_module_binding, terminates,
};
use super::locate::Site;
use super::snippet::{self, Edit, Part, block, message, short};
use super::tree::Tree;
use super::{Behaviour, FixKind, NoneFix};

/// A call whose None result means "not found".
enum Lookup<'a> {
    /// `mapping.get(key)`.
    Get { key: &'a Expr },
    /// `re.match(pattern, subject)` or `COMPILED.match(subject)`.
    Regex {
        pattern: Vec<Part>,
        subject: &'a Expr,
    },
    /// `os.environ.get(var)`, `os.getenv(var)`.
    Env { var: &'a Expr },
    /// `.find_one(...)`, `.first()`, `.one_or_none()`, ...
    Find,
    /// `getattr(object, name, None)`.
    Getattr { object: &'a Expr, name: &'a Expr },
}

impl Lookup<'_> {
    fn exception(&self) -> &'static str {
        match self {
            Lookup::Get { .. } => "KeyError",
            Lookup::Regex { .. } => "ValueError",
            Lookup::Env { .. } => "RuntimeError",
            Lookup::Find => "LookupError",
            Lookup::Getattr { .. } => "AttributeError",
        }
    }

    /// Names for a hoisted value, first choice first.
    fn names(&self) -> &'static [&'static str] {
        match self {
            Lookup::Get { .. } => &["value", "found"],
            Lookup::Regex { .. } => &["match", "matched"],
            Lookup::Env { .. } => &["value", "env_value"],
            Lookup::Find => &["found", "result"],
            Lookup::Getattr { .. } => &["attribute", "attribute_value"],
        }
    }
}

/// Every producer fix for the site, best first.
pub(super) fn producers(tree: &Tree, site: &Site) -> Vec<NoneFix> {
    let mut out = named_lookup(tree, site);
    out.extend(inline_lookup(tree, site));
    out.extend(callee(tree, site));
    out
}

/// The call of an expression, through one `await`.
fn call_of(expr: &Expr) -> Option<&ExprCall> {
    match expr {
        Expr::Call(c) => Some(c),
        Expr::Await(a) => match &*a.value {
            Expr::Call(c) => Some(c),
            _ => None,
        },
        _ => None,
    }
}

fn classify<'a>(tree: &Tree<'a>, call: &'a ExprCall) -> Option<Lookup<'a>> {
    let args = &call.arguments;
    let one_arg =
        args.args.len() == 1 && args.keywords.is_empty() && !args.args[0].is_starred_expr();
    match &*call.func {
        Expr::Name(n) => match n.id.as_str() {
            "getenv" if one_arg && imported_from(tree, "os", "getenv") => {
                Some(Lookup::Env { var: &args.args[0] })
            }
            "getattr"
                if args.args.len() == 3
                    && args.keywords.is_empty()
                    && args.args[2].is_none_literal_expr() =>
            {
                Some(Lookup::Getattr {
                    object: &args.args[0],
                    name: &args.args[1],
                })
            }
            _ => None,
        },
        Expr::Attribute(a) => {
            let receiver = dotted(&a.value);
            match a.attr.as_str() {
                "get" if one_arg => {
                    let environ = receiver.as_deref() == Some("os.environ")
                        || (receiver.as_deref() == Some("environ")
                            && imported_from(tree, "os", "environ"));
                    Some(if environ {
                        Lookup::Env { var: &args.args[0] }
                    } else {
                        Lookup::Get { key: &args.args[0] }
                    })
                }
                "getenv" if one_arg && receiver.as_deref() == Some("os") => {
                    Some(Lookup::Env { var: &args.args[0] })
                }
                "match" | "search" | "fullmatch" => regex(tree, receiver.as_deref()?, call),
                "find_one" | "get_or_none" => Some(Lookup::Find),
                "first" | "one_or_none" | "scalar_one_or_none"
                    if args.args.is_empty() && args.keywords.is_empty() =>
                {
                    Some(Lookup::Find)
                }
                _ => None,
            }
        }
        _ => None,
    }
}

fn regex<'a>(tree: &Tree<'a>, receiver: &str, call: &'a ExprCall) -> Option<Lookup<'a>> {
    let args = &call.arguments.args;
    if args.iter().any(Expr::is_starred_expr) {
        return None;
    }
    if receiver == "re" {
        let pattern = match args.first()? {
            Expr::StringLiteral(s) => Part::Text(quoted(s.value.to_str())),
            other => match dotted(other) {
                Some(name) => Part::Repr(name),
                None => Part::Text("the pattern".to_string()),
            },
        };
        return Some(Lookup::Regex {
            pattern: vec![pattern],
            subject: args.get(1)?,
        });
    }
    // `PATTERN.match(s)` where the module binds `PATTERN = re.compile(...)`.
    if receiver.contains('.') {
        return None;
    }
    let binding = single_module_binding(tree, receiver)?;
    let stmt = tree.stmt(tree.statement_of(binding)?)?;
    let Stmt::Assign(assign) = stmt else {
        return None;
    };
    let compiled =
        matches!(&*assign.value, Expr::Call(c) if dotted(&c.func).as_deref() == Some("re.compile"));
    if !compiled {
        return None;
    }
    Some(Lookup::Regex {
        pattern: vec![Part::Text(receiver.to_string())],
        subject: args.first()?,
    })
}

/// Whether the module does `from <module> import <name>` (unaliased).
fn imported_from(tree: &Tree, module: &str, name: &str) -> bool {
    tree.module.body.iter().any(|s| {
        matches!(s, Stmt::ImportFrom(i)
            if i.level == 0
                && i.module.as_ref().is_some_and(|m| m.as_str() == module)
                && i.names.iter().any(|a| a.name.as_str() == name && a.asname.is_none()))
    })
}

/// The text of an expression that may be evaluated again for a message: a dotted name.
fn reevaluable(expr: &Expr) -> Option<String> {
    dotted(expr)
}

/// `raise <Exception>(<message>)` for a lookup that found nothing. `subject` names what was
/// looked up for the report (`user`), `call` is the lookup's text.
fn raise_statement(tree: &Tree, lookup: &Lookup, subject: &str, call: &str) -> Option<String> {
    let argument = match lookup {
        // `KeyError(key)`, as `mapping[key]` raises.
        Lookup::Get { key } => literal_key(tree, key).or_else(|| reevaluable(key))?,
        Lookup::Regex { pattern, subject } => {
            let mut parts = vec![match reevaluable(subject) {
                Some(name) => Part::Repr(name),
                None => Part::Text("the text".to_string()),
            }];
            parts.push(Part::Text(" does not match ".to_string()));
            parts.extend(pattern.iter().cloned());
            message(&parts)
        }
        Lookup::Env { var } => match var {
            Expr::StringLiteral(s) => snippet::string_literal(&format!(
                "environment variable {} is not set",
                s.value.to_str()
            )),
            other => message(&[
                Part::Text("environment variable ".to_string()),
                Part::Plain(reevaluable(other)?),
                Part::Text(" is not set".to_string()),
            ]),
        },
        Lookup::Find => {
            snippet::string_literal(&format!("{subject} not found: {call} returned None"))
        }
        Lookup::Getattr { object, name } => {
            let name_part = match name {
                Expr::StringLiteral(s) => Part::Text(quoted(s.value.to_str())),
                other => Part::Repr(reevaluable(other)?),
            };
            message(&[
                Part::Plain(format!("type({}).__name__", reevaluable(object)?)),
                Part::Text(" has no attribute ".to_string()),
                name_part,
            ])
        }
    };
    Some(format!("raise {}({argument})", lookup.exception()))
}

/// A literal's text between quotes, as a reader writes it in a message (`'(\d+)'`, not the
/// doubled backslashes of a repr).
fn quoted(text: &str) -> String {
    if text.contains('\'') && !text.contains('"') {
        format!("\"{text}\"")
    } else {
        format!("'{text}'")
    }
}

/// A literal key, written again: a string as a plain literal, a number as written.
fn literal_key(tree: &Tree, key: &Expr) -> Option<String> {
    match key {
        Expr::StringLiteral(s) => Some(snippet::string_literal(s.value.to_str())),
        Expr::NumberLiteral(n) => Some(tree.text(n.range).to_string()),
        _ => None,
    }
}

/// The two producer variants at one insertion point: return the function's natural empty
/// value (when its contract has one and a return is safe there), then raise.
struct Variants<'t, 'a> {
    tree: &'t Tree<'a>,
    function: usize,
    /// The statement after which (or before which) the check runs.
    anchor: usize,
}

impl Variants<'_, '_> {
    fn empty(&self) -> Option<Empty> {
        let f = self.tree.function(self.function)?;
        if in_loop(self.tree, self.anchor, self.function)
            || in_finally(self.tree, self.anchor, self.function)
        {
            return None;
        }
        natural_empty(f)
    }

    fn raise_allowed(&self, exception: &str) -> bool {
        !caught(self.tree, self.anchor, self.function, exception)
    }
}

/// `name = <lookup>` earlier in the function, `name` unchecked until the crash.
fn named_lookup(tree: &Tree, site: &Site) -> Vec<NoneFix> {
    named_lookup_inner(tree, site).unwrap_or_default()
}

fn named_lookup_inner(tree: &Tree, site: &Site) -> Option<Vec<NoneFix>> {
    let function = site.function?;
    let Expr::Name(name) = tree.expr(site.expr)? else {
        return None;
    };
    let name = name.id.as_str();
    let (assignment, value) = reaching_assignment(tree, function, site.stmt, name)?;
    let call = call_of(value)?;
    let lookup = classify(tree, call)?;
    // Checked where it is made, the None must be the one that crashed: every run of the
    // lookup goes on to the crash (else the check would fire on runs that never used it).
    if !always_reaches(tree, assignment, site.stmt) {
        return None;
    }
    let assignment_range = tree.range(assignment);
    let between = TextRange::new(assignment_range.end(), tree.range(site.stmt).end());
    if name_tested_within(tree, name, between) {
        return None;
    }
    let indent = tree.own_line_indent(assignment_range.start().to_usize())?;
    let unit = tree.indent_unit(assignment)?;
    let at = tree.after_line(assignment_range.end().to_usize())?;
    let newline = tree.newline();
    let lead = if at == tree.source.len() && !tree.source.ends_with('\n') {
        newline
    } else {
        ""
    };
    let call_text = short(tree.text(value.range()));
    let variants = Variants {
        tree,
        function,
        anchor: assignment,
    };
    let qualname = tree.qualname(function);
    let mut out = Vec::new();
    let header = format!("if {name} is None:");
    if let Some(empty) = variants.empty() {
        let text = format!(
            "{lead}{}",
            block(indent, unit, &header, &empty.statement(), newline)
        );
        out.push(NoneFix {
            kind: FixKind::Producer,
            summary: format!(
                "`{name}` from `{call_text}` is checked where it is made: `{qualname}()` returns `{}`",
                empty.value()
            ),
            after: snippet::apply(tree.source, &[Edit::insert(at, text)])?,
            function: qualname.clone(),
            behaviour: empty.behaviour(),
        });
    }
    if let Some(raise) = raise_statement(tree, &lookup, name, &call_text)
        && variants.raise_allowed(lookup.exception())
    {
        let text = format!("{lead}{}", block(indent, unit, &header, &raise, newline));
        out.push(NoneFix {
            kind: FixKind::Producer,
            summary: format!(
                "`{name}` from `{call_text}` is checked where it is made: {}",
                lookup.exception()
            ),
            after: snippet::apply(tree.source, &[Edit::insert(at, text)])?,
            function: qualname,
            behaviour: Behaviour::Raises(lookup.exception().to_string()),
        });
    }
    Some(out)
}

/// `<lookup>.attr` in the crashing statement: named, checked, then used.
fn inline_lookup(tree: &Tree, site: &Site) -> Vec<NoneFix> {
    inline_lookup_inner(tree, site).unwrap_or_default()
}

fn inline_lookup_inner(tree: &Tree, site: &Site) -> Option<Vec<NoneFix>> {
    let function = site.function?;
    let expr = tree.expr(site.expr)?;
    let call = call_of(expr)?;
    let lookup = classify(tree, call)?;
    if !evaluated_first(tree, site.stmt, site.expr, true) {
        return None;
    }
    let stmt_range = tree.range(site.stmt);
    let indent = tree.own_line_indent(stmt_range.start().to_usize())?;
    let unit = tree.indent_unit(site.stmt)?;
    let var = lookup.names().iter().find(|n| !uses_word(tree.source, n))?;
    let newline = tree.newline();
    let expr_range = expr.range();
    let call_text = tree.text(expr_range);
    let line_start = tree.insertion_before(stmt_range.start().to_usize(), indent);
    let hoist = format!("{indent}{var} = {call_text}{newline}");
    let replace = Edit {
        start: expr_range.start().to_usize(),
        end: expr_range.end().to_usize(),
        text: (*var).to_string(),
    };
    let shown = short(call_text);
    let variants = Variants {
        tree,
        function,
        anchor: site.stmt,
    };
    let qualname = tree.qualname(function);
    let header = format!("if {var} is None:");
    let mut out = Vec::new();
    if let Some(empty) = variants.empty() {
        let text = format!(
            "{hoist}{}",
            block(indent, unit, &header, &empty.statement(), newline)
        );
        out.push(NoneFix {
            kind: FixKind::Producer,
            summary: format!(
                "`{shown}` is named `{var}` and checked where it is made: `{qualname}()` returns `{}`",
                empty.value()
            ),
            after: snippet::apply(
                tree.source,
                &[Edit::insert(line_start, text), replace.clone()],
            )?,
            function: qualname.clone(),
            behaviour: empty.behaviour(),
        });
    }
    if let Some(raise) = raise_statement(tree, &lookup, var, &shown)
        && variants.raise_allowed(lookup.exception())
    {
        let text = format!("{hoist}{}", block(indent, unit, &header, &raise, newline));
        out.push(NoneFix {
            kind: FixKind::Producer,
            summary: format!(
                "`{shown}` is named `{var}` and checked where it is made: {}",
                lookup.exception()
            ),
            after: snippet::apply(tree.source, &[Edit::insert(line_start, text), replace])?,
            function: qualname,
            behaviour: Behaviour::Raises(lookup.exception().to_string()),
        });
    }
    Some(out)
}

/// Whether `word` occurs in `source` as a whole identifier that could be a variable
/// (comments and strings included, to stay on the safe side; `re.match` is an attribute and
/// does not count).
fn uses_word(source: &str, word: &str) -> bool {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    source.match_indices(word).any(|(at, _)| {
        let before = source[..at].chars().next_back();
        let after = source[at + word.len()..].chars().next();
        !before.is_some_and(|c| is_ident(c) || c == '.') && !after.is_some_and(is_ident)
    })
}

/// Decorators that keep a function's calls and results as they are.
const TRANSPARENT_DECORATORS: [&str; 6] = [
    "staticmethod",
    "classmethod",
    "cache",
    "lru_cache",
    "functools.cache",
    "functools.lru_cache",
];

pub(super) fn transparent_decorators(function: &StmtFunctionDef) -> bool {
    function.decorator_list.iter().all(|d| {
        let expr = match &d.expression {
            Expr::Call(c) => &*c.func,
            other => other,
        };
        dotted(expr).is_some_and(|name| TRANSPARENT_DECORATORS.contains(&name.as_str()))
    })
}

/// The function of this file that a call runs: `f(...)` for the module's only `def f` (not
/// shadowed by a local), `self.m(...)` for the only `def m` of the class around the caller.
fn resolve_callee(tree: &Tree, caller: usize, call: &ExprCall) -> Option<usize> {
    match &*call.func {
        Expr::Name(n) => {
            let name = n.id.as_str();
            let enclosing: Vec<usize> = std::iter::once(caller)
                .chain(tree.ancestors(caller))
                .filter(|&a| tree.function(a).is_some())
                .collect();
            if enclosing.iter().any(|&f| is_local(tree, f, name)) {
                return None;
            }
            let def = single_module_binding(tree, name)?;
            tree.function(def).map(|_| def)
        }
        Expr::Attribute(a) => {
            let Expr::Name(receiver) = &*a.value else {
                return None;
            };
            let caller_def = tree.function(caller)?;
            let first = *parameter_names(caller_def).first()?;
            if receiver.id.as_str() != first || !matches!(first, "self" | "cls") {
                return None;
            }
            let class = tree.scope_of_stmt(caller)?;
            tree.class(class)?;
            match bindings(tree, Some(class), a.attr.as_str()).as_slice() {
                [only] if tree.function(only.idx).is_some() => Some(only.idx),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Whether any code of the file tests the result of calls to `name` for None (directly, or
/// through the name it is assigned to, anywhere in that name's scope).
fn result_tested(tree: &Tree, name: &str, method: bool) -> bool {
    (0..tree.len()).any(|idx| {
        let AnyNodeRef::ExprCall(call) = tree.node(idx) else {
            return false;
        };
        let calls_it = match &*call.func {
            Expr::Name(n) => !method && n.id.as_str() == name,
            Expr::Attribute(a) => method && a.attr.as_str() == name,
            _ => false,
        };
        if !calls_it {
            return false;
        }
        let mut result = idx;
        if let Some(p) = tree.parent(idx)
            && matches!(tree.node(p), AnyNodeRef::ExprAwait(_))
        {
            result = p;
        }
        if is_tested(tree, result) {
            return true;
        }
        let Some(parent) = tree.parent(result) else {
            return false;
        };
        let node = tree.node(result);
        let target: Option<&Expr> = match tree.node(parent) {
            AnyNodeRef::StmtAssign(a) if a.targets.len() == 1 && is(node, &a.value) => {
                Some(&a.targets[0])
            }
            AnyNodeRef::StmtAnnAssign(a) if a.value.as_deref().is_some_and(|v| is(node, v)) => {
                Some(&a.target)
            }
            AnyNodeRef::ExprNamed(n) if is(node, &n.value) => Some(&n.target),
            _ => None,
        };
        let Some(Expr::Name(target)) = target else {
            return false;
        };
        let range = scope_of(tree, parent).map_or_else(
            || TextRange::up_to(ruff_text_size::TextSize::of(tree.source)),
            |s| tree.range(s),
        );
        name_tested_within(tree, target.id.as_str(), range)
    })
}

/// The callee of the same file returned None by falling off its end.
fn callee(tree: &Tree, site: &Site) -> Option<NoneFix> {
    let function = site.function?;
    let expr = tree.expr(site.expr)?;
    let call = match expr {
        Expr::Name(n) => {
            let (_, value) = reaching_assignment(tree, function, site.stmt, n.id.as_str())?;
            call_of(value)?
        }
        other => call_of(other)?,
    };
    let callee_idx = resolve_callee(tree, function, call)?;
    let callee = tree.function(callee_idx)?;
    let method = matches!(&*call.func, Expr::Attribute(_));
    if !transparent_decorators(callee) || terminates(&callee.body) {
        return None;
    }
    let (returns, generator) = own_returns(callee);
    if generator
        || returns
            .iter()
            .any(|r| r.value.as_deref().is_none_or(Expr::is_none_literal_expr))
        || returns.is_empty()
    {
        return None;
    }
    if let Some(annotation) = &callee.returns
        && matches!(
            annotation_empty(annotation),
            Some(Empty::None | Empty::Bare)
        )
    {
        return None;
    }
    if result_tested(tree, callee.name.as_str(), method) {
        return None;
    }
    let qualname = tree.qualname(callee_idx);
    let (statement, behaviour) = match natural_empty(callee) {
        Some(Empty::Value(v)) => (format!("return {v}"), Behaviour::Returns(v.to_string())),
        Some(Empty::None | Empty::Bare) => return None,
        None => (
            format!("raise LookupError({})", lookup_message(callee, &qualname)),
            Behaviour::Raises("LookupError".to_string()),
        ),
    };
    let first = callee.body.first()?;
    let last = callee.body.last()?;
    let indent = tree.own_line_indent(first.start().to_usize())?;
    let mut at = tree.after_line(last.end().to_usize())?;
    // Comments right after the last statement, indented as the body or deeper, belong to it or
    // to the end of the function (`# nothing found`): the new last line goes after them.
    while at < tree.source.len() {
        let line = tree.line_of(at);
        let (start, end) = tree.line_range(line)?;
        let text = &tree.source[start..end];
        let trimmed = text.trim_start_matches([' ', '\t']);
        if trimmed.starts_with('#') && text.len() - trimmed.len() >= indent.len() {
            at = tree.line_start(line + 1).unwrap_or(tree.source.len());
        } else {
            break;
        }
    }
    let newline = tree.newline();
    let lead = if at == tree.source.len() && !tree.source.ends_with('\n') {
        newline
    } else {
        ""
    };
    let text = format!("{lead}{indent}{statement}{newline}");
    let shown = if statement.starts_with("raise") {
        "raise LookupError(...)".to_string()
    } else {
        statement.clone()
    };
    Some(NoneFix {
        kind: FixKind::Producer,
        summary: format!(
            "`{qualname}()` could fall off its end and return None; it now ends with `{shown}`"
        ),
        after: snippet::apply(tree.source, &[Edit::insert(at, text)])?,
        function: qualname,
        behaviour,
    })
}

/// `f"find_user() found nothing for uid={uid!r}"`: the function and its simple parameters.
fn lookup_message(function: &StmtFunctionDef, qualname: &str) -> String {
    let p = &function.parameters;
    let mut names: Vec<&str> = p
        .posonlyargs
        .iter()
        .chain(&p.args)
        .chain(&p.kwonlyargs)
        .map(|a| a.parameter.name.as_str())
        .collect();
    if matches!(names.first(), Some(&("self" | "cls")))
        && !function
            .decorator_list
            .iter()
            .any(|d| dotted(&d.expression).as_deref() == Some("staticmethod"))
    {
        names.remove(0);
    }
    if names.is_empty() {
        return snippet::string_literal(&format!("{qualname}() found nothing"));
    }
    let mut parts = vec![Part::Text(format!("{qualname}() found nothing for "))];
    for (i, name) in names.iter().take(3).enumerate() {
        if i > 0 {
            parts.push(Part::Text(", ".to_string()));
        }
        parts.push(Part::Text(format!("{name}=")));
        parts.push(Part::Repr((*name).to_string()));
    }
    message(&parts)
}
