//! Shared string-building analysis for the injection rules (AGY201 SQL, AGY202 HTML): which
//! calls are sinks, what text reaches them, and whether that text was built by formatting or
//! concatenation from a value that is neither constant nor sanitized.
//!
//! The analysis is deliberately small and local. It follows simple assignments within one
//! function in straight-line order (the last `=` before the use, then every `+=` after it) and
//! falls back to module-level assignments; anything else (parameters, attributes, call results,
//! unpacking) is opaque, except test parameters whose `pytest.mark.parametrize` values are all
//! literals. Opaque values are unsafe when they are interpolated, but an opaque
//! *template* is never evaluated, so `self.sql_template % args` is not reported: the rules
//! only speak when they can see both the literal text and the value formatted into it.
//!
//! Cost: the module is walked once to find sink calls by callee name; assignments are collected
//! only for the functions that contain a sink, and every evaluation has a step budget so long
//! `q = q + ...` chains cannot blow up.

use std::cell::{Cell, OnceCell, RefCell};

use ruff_python_ast::visitor::{self, Visitor};
use ruff_python_ast::{
    CmpOp, Comprehension, Decorator, Expr, ExprCall, FStringPart, InterpolatedStringElement,
    ModModule, Operator, Parameters, Stmt,
};
use ruff_text_size::{Ranged, TextRange, TextSize};

use crate::native::helpers::{callee_name, is_constant};

/// How an unsafe string was built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum How {
    FString,
    Percent,
    Format,
    Concat,
}

impl How {
    /// The words a message uses for this construction.
    pub(super) fn describe(self) -> &'static str {
        match self {
            How::FString => "an f-string",
            How::Percent => "%-formatting",
            How::Format => "`.format()`",
            How::Concat => "string concatenation",
        }
    }
}

/// What is known about the text an expression evaluates to.
#[derive(Debug, Default)]
pub(super) struct Built {
    /// The literal pieces, with ` ? ` standing for each interpolated value, so word checks on
    /// the text (does it look like SQL?) see word boundaries.
    pub text: String,
    /// The first unsafe formatting step and the range of the value it interpolated.
    pub tainted: Option<(How, TextRange)>,
}

/// What the target language treats as safe: sanitizing callees and names of values that are
/// themselves fragments of the language (SQL composed from SQL, HTML from HTML).
pub(super) struct Policy {
    /// True for a callee name (last segment) whose result is safe to interpolate.
    pub sanitizer: fn(&str) -> bool,
    /// True for an identifier (variable or attribute name) that holds a fragment of the target
    /// language rather than a value; composing fragments is how builders work, and a
    /// fragment's own construction is checked where it happens.
    pub fragment: fn(&str) -> bool,
    /// `value.replace("'", "''")` escapes an SQL string literal.
    pub quote_doubling_escapes: bool,
}

/// A function (or class, or module) body whose calls are analysed in one scope.
#[derive(Clone, Copy)]
struct ScopeSource<'a> {
    params: Option<&'a Parameters>,
    /// The function's decorators, for `pytest.mark.parametrize` values; empty elsewhere.
    decorators: &'a [Decorator],
    body: &'a [Stmt],
    /// The enclosing function scope whose names a closure reads (class bodies are skipped, as
    /// in Python); `None` for the module.
    parent: Option<usize>,
    is_class: bool,
}

/// Every scope of a module, collected on first use: most functions contain no sink.
pub(super) struct Scopes<'a> {
    sources: Vec<ScopeSource<'a>>,
    cells: Vec<OnceCell<Scope<'a>>>,
}

impl<'a> Scopes<'a> {
    fn get(&self, idx: usize) -> &Scope<'a> {
        self.cells[idx].get_or_init(|| Scope::collect(self.sources[idx]))
    }
}

/// A call whose callee name is a sink, and the scope it appears in.
pub(super) struct SinkCall<'a> {
    pub call: &'a ExprCall,
    pub scope: usize,
}

/// Walks the module once and returns the calls whose callee name `is_sink` accepts, with the
/// scopes they appear in.
pub(super) fn find_sink_calls(
    module: &ModModule,
    is_sink: fn(&str) -> bool,
) -> (Scopes<'_>, Vec<SinkCall<'_>>) {
    let mut finder = SinkFinder {
        is_sink,
        scopes: vec![ScopeSource {
            params: None,
            decorators: &[],
            body: &module.body,
            parent: None,
            is_class: false,
        }],
        current: 0,
        calls: Vec::new(),
    };
    finder.visit_body(&module.body);
    let cells = finder.scopes.iter().map(|_| OnceCell::new()).collect();
    let scopes = Scopes {
        sources: finder.scopes,
        cells,
    };
    (scopes, finder.calls)
}

struct SinkFinder<'a> {
    is_sink: fn(&str) -> bool,
    scopes: Vec<ScopeSource<'a>>,
    current: usize,
    calls: Vec<SinkCall<'a>>,
}

impl<'a> Visitor<'a> for SinkFinder<'a> {
    fn visit_stmt(&mut self, stmt: &'a Stmt) {
        let (params, decorators, body, is_class) = match stmt {
            Stmt::FunctionDef(def) => (
                Some(&*def.parameters),
                &*def.decorator_list,
                &def.body,
                false,
            ),
            Stmt::ClassDef(class) => (None, &[][..], &class.body, true),
            _ => {
                visitor::walk_stmt(self, stmt);
                return;
            }
        };
        let mut parent = self.current;
        while self.scopes[parent].is_class {
            parent = self.scopes[parent].parent.unwrap_or(0);
        }
        let saved = self.current;
        self.current = self.scopes.len();
        self.scopes.push(ScopeSource {
            params,
            decorators,
            body,
            parent: Some(parent),
            is_class,
        });
        visitor::walk_stmt(self, stmt);
        self.current = saved;
    }

    fn visit_expr(&mut self, expr: &'a Expr) {
        if let Expr::Call(call) = expr
            && callee_name(call).is_some_and(self.is_sink)
        {
            self.calls.push(SinkCall {
                call,
                scope: self.current,
            });
        }
        visitor::walk_expr(self, expr);
    }
}

/// What a binding assigned.
#[derive(Clone, Copy)]
enum Value<'a> {
    /// `name = expr`.
    Assign(&'a Expr),
    /// `name += expr`.
    AddAssign(&'a Expr),
    /// `name[key] = expr`, `name.append(expr)`, `name.update(expr)`: an item put into a
    /// collection, which keeps its text but must be safe for the collection to be.
    Item(&'a Expr),
    /// A loop variable: safe when the iterable's items are.
    Loop(&'a Expr),
    /// A test parameter whose every value is a literal of a `pytest.mark.parametrize`
    /// decorator: text unknown here, but constant.
    Constant,
    /// A parameter, an unpacking target, an import, anything not followed.
    Opaque,
}

struct Binding<'a> {
    name: &'a str,
    at: TextSize,
    value: Value<'a>,
}

/// The bindings of one body, in source order.
#[derive(Default)]
struct Scope<'a> {
    bindings: Vec<Binding<'a>>,
    /// Names tested against a constant collection (`if order not in ("asc", "desc")`): a cheap
    /// recognition of whitelisting, trusted anywhere in the body.
    allowed: Vec<&'a str>,
}

impl<'a> Scope<'a> {
    /// Collects the bindings of a body without entering nested functions or classes.
    fn collect(source: ScopeSource<'a>) -> Self {
        let mut scope = Scope::default();
        if let Some(params) = source.params {
            let at = params.range.start();
            let constant = parametrized_constants(source.decorators);
            for param in params {
                let name = param.name().as_str();
                let value = if constant.contains(&name) {
                    Value::Constant
                } else {
                    Value::Opaque
                };
                scope.bind(name, at, value);
            }
        }
        scope.collect_body(source.body);
        scope
    }

    fn bind(&mut self, name: &'a str, at: TextSize, value: Value<'a>) {
        self.bindings.push(Binding { name, at, value });
    }

    fn collect_body(&mut self, body: &'a [Stmt]) {
        for stmt in body {
            self.collect_stmt(stmt);
        }
    }

    fn collect_stmt(&mut self, stmt: &'a Stmt) {
        let at = stmt.range().start();
        match stmt {
            Stmt::Assign(assign) => {
                for target in &assign.targets {
                    self.bind_target(target, at, Some(&assign.value));
                }
            }
            Stmt::AnnAssign(assign) => {
                self.bind_target(&assign.target, at, assign.value.as_deref());
            }
            Stmt::AugAssign(assign) => {
                if let Expr::Name(name) = assign.target.as_ref() {
                    let value = if assign.op == Operator::Add {
                        Value::AddAssign(&assign.value)
                    } else {
                        Value::Opaque
                    };
                    self.bind(name.id.as_str(), at, value);
                }
            }
            Stmt::For(for_stmt) => {
                self.bind_names(&for_stmt.target, at, Value::Loop(&for_stmt.iter));
                self.collect_body(&for_stmt.body);
                self.collect_body(&for_stmt.orelse);
            }
            Stmt::While(while_stmt) => {
                self.note_allowed(&while_stmt.test);
                self.collect_body(&while_stmt.body);
                self.collect_body(&while_stmt.orelse);
            }
            Stmt::If(if_stmt) => {
                self.note_allowed(&if_stmt.test);
                self.collect_body(&if_stmt.body);
                for clause in &if_stmt.elif_else_clauses {
                    if let Some(test) = &clause.test {
                        self.note_allowed(test);
                    }
                    self.collect_body(&clause.body);
                }
            }
            Stmt::With(with) => {
                for item in &with.items {
                    if let Some(vars) = &item.optional_vars {
                        self.bind_names(vars, at, Value::Opaque);
                    }
                }
                self.collect_body(&with.body);
            }
            Stmt::Try(try_stmt) => {
                self.collect_body(&try_stmt.body);
                for handler in &try_stmt.handlers {
                    let ruff_python_ast::ExceptHandler::ExceptHandler(handler) = handler;
                    if let Some(name) = &handler.name {
                        self.bind(name.as_str(), handler.range.start(), Value::Opaque);
                    }
                    self.collect_body(&handler.body);
                }
                self.collect_body(&try_stmt.orelse);
                self.collect_body(&try_stmt.finalbody);
            }
            Stmt::Match(match_stmt) => {
                for case in &match_stmt.cases {
                    self.collect_body(&case.body);
                }
            }
            Stmt::Assert(assert) => self.note_allowed(&assert.test),
            Stmt::Expr(expr) => {
                if let Expr::Call(call) = expr.value.as_ref()
                    && let (Expr::Attribute(attr), Some(item)) =
                        (call.func.as_ref(), call.arguments.args.last())
                    && let (
                        Expr::Name(name),
                        "append" | "add" | "insert" | "extend" | "update" | "setdefault",
                    ) = (attr.value.as_ref(), attr.attr.as_str())
                {
                    self.bind(name.id.as_str(), at, Value::Item(item));
                }
            }
            Stmt::FunctionDef(def) => self.bind(def.name.as_str(), at, Value::Opaque),
            Stmt::ClassDef(class) => self.bind(class.name.as_str(), at, Value::Opaque),
            Stmt::Import(import) => {
                for alias in &import.names {
                    let name = alias.asname.as_ref().unwrap_or(&alias.name).as_str();
                    let first = name.split('.').next().unwrap_or(name);
                    self.bind(first, at, Value::Opaque);
                }
            }
            Stmt::ImportFrom(import) => {
                for alias in &import.names {
                    let name = alias.asname.as_ref().unwrap_or(&alias.name);
                    self.bind(name.as_str(), at, Value::Opaque);
                }
            }
            _ => {}
        }
    }

    fn bind_target(&mut self, target: &'a Expr, at: TextSize, value: Option<&'a Expr>) {
        match (target, value) {
            (Expr::Name(name), Some(value)) => {
                self.bind(name.id.as_str(), at, Value::Assign(value));
            }
            (Expr::Subscript(subscript), Some(value)) => {
                if let Expr::Name(name) = subscript.value.as_ref() {
                    self.bind(name.id.as_str(), at, Value::Item(value));
                }
            }
            // `lead, trail = escape(lead), escape(trail)`: pairwise.
            (Expr::Tuple(targets), Some(Expr::Tuple(values)))
                if targets.elts.len() == values.elts.len()
                    && !values.elts.iter().any(Expr::is_starred_expr) =>
            {
                for (target, value) in targets.elts.iter().zip(&values.elts) {
                    self.bind_target(target, at, Some(value));
                }
            }
            _ => self.bind_names(target, at, Value::Opaque),
        }
    }

    fn bind_names(&mut self, target: &'a Expr, at: TextSize, value: Value<'a>) {
        match target {
            Expr::Name(name) => self.bind(name.id.as_str(), at, value),
            Expr::Tuple(tuple) => {
                for elt in &tuple.elts {
                    self.bind_names(elt, at, value);
                }
            }
            Expr::List(list) => {
                for elt in &list.elts {
                    self.bind_names(elt, at, value);
                }
            }
            Expr::Starred(starred) => self.bind_names(&starred.value, at, value),
            _ => {}
        }
    }

    /// Records names a condition checks against a constant collection.
    fn note_allowed(&mut self, test: &'a Expr) {
        match test {
            Expr::Compare(compare) => {
                if let (Expr::Name(name), [op], [against]) = (
                    compare.left.as_ref(),
                    compare.ops.as_ref(),
                    compare.comparators.as_ref(),
                ) && matches!(op, CmpOp::In | CmpOp::NotIn)
                    && is_constant_collection(against)
                {
                    self.allowed.push(name.id.as_str());
                }
            }
            Expr::BoolOp(bool_op) => {
                for value in &bool_op.values {
                    self.note_allowed(value);
                }
            }
            Expr::UnaryOp(unary) => self.note_allowed(&unary.operand),
            _ => {}
        }
    }

    /// The bindings of `name` that decide its value at `before`: the last plain binding and
    /// the `+=` after it, in order. Empty when the body never binds the name before that point.
    fn reaching(&self, name: &str, before: TextSize) -> &[Binding<'a>] {
        let end = self.bindings.partition_point(|b| b.at < before);
        let visible = &self.bindings[..end];
        let mut start = None;
        for (idx, binding) in visible.iter().enumerate() {
            if binding.name == name
                && !matches!(binding.value, Value::AddAssign(_) | Value::Item(_))
            {
                start = Some(idx);
            }
        }
        match start {
            Some(idx) => &visible[idx..],
            // Only `+=` (of a global, say): the additions still say how the text was built.
            None => visible
                .iter()
                .position(|b| b.name == name)
                .map_or(&[], |idx| &visible[idx..]),
        }
    }
}

/// True for `("a", "b")`, `{...}` of constants, or a constant-named collection (`ALLOWED`).
fn is_constant_collection(expr: &Expr) -> bool {
    match expr {
        Expr::Tuple(_) | Expr::List(_) | Expr::Set(_) => is_constant(expr),
        Expr::Dict(dict) => dict
            .items
            .iter()
            .all(|item| item.key.as_ref().is_some_and(is_constant)),
        Expr::Name(name) => is_constant_name(name.id.as_str()),
        Expr::Attribute(attr) => is_constant_name(attr.attr.as_str()),
        _ => false,
    }
}

/// True for the `UPPER_CASE` names Python code uses for constants.
pub(super) fn is_constant_name(name: &str) -> bool {
    // Django's request data is upper case and anything but constant.
    !matches!(
        name,
        "GET" | "POST" | "FILES" | "COOKIES" | "META" | "REQUEST" | "FORM"
    ) && name.len() > 1
        && name.bytes().any(|b| b.is_ascii_uppercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// Where an expression is evaluated: the scope and the offset its names are read at.
#[derive(Clone, Copy)]
struct At {
    scope: usize,
    before: TextSize,
}

/// Evaluates sink arguments against the module's scopes and a language policy.
pub(super) struct Analysis<'s, 'a> {
    scopes: &'s Scopes<'a>,
    policy: &'s Policy,
    budget: Cell<u32>,
    /// Comprehension variables over safe iterables, while their element is checked.
    safe_names: RefCell<Vec<&'a str>>,
}

/// Evaluation steps per sink argument: deep enough for real builders, bounded for adversarial
/// input (`a = b + b; b = c + c; ...`).
const BUDGET: u32 = 256;

impl<'s, 'a> Analysis<'s, 'a> {
    pub(super) fn new(scopes: &'s Scopes<'a>, policy: &'s Policy) -> Self {
        Analysis {
            scopes,
            policy,
            budget: Cell::new(BUDGET),
            safe_names: RefCell::new(Vec::new()),
        }
    }

    /// What text `expr` evaluates to when read at `before` in `scope`; `None` when no literal
    /// text is known.
    pub(super) fn eval(&self, expr: &'a Expr, scope: usize, before: TextSize) -> Option<Built> {
        self.budget.set(BUDGET);
        self.eval_at(expr, At { scope, before })
    }

    fn spend(&self) -> bool {
        let left = self.budget.get();
        if left == 0 {
            return false;
        }
        self.budget.set(left - 1);
        true
    }

    fn eval_at(&self, expr: &'a Expr, at: At) -> Option<Built> {
        if !self.spend() {
            return None;
        }
        match expr {
            Expr::StringLiteral(literal) => Some(Built {
                text: literal.value.to_str().to_owned(),
                tainted: None,
            }),
            Expr::FString(fstring) => Some(self.eval_fstring(fstring, at)),
            Expr::BinOp(binop) if binop.op == Operator::Mod => {
                let mut built = self.eval_at(&binop.left, at)?;
                if built.tainted.is_none() && !only_numeric_conversions(&built.text) {
                    let unsafe_value = match binop.right.as_ref() {
                        Expr::Tuple(tuple) => tuple.elts.iter().find(|e| !self.is_safe(e, at)),
                        Expr::Dict(dict) => dict
                            .items
                            .iter()
                            .map(|item| &item.value)
                            .find(|v| !self.is_safe(v, at)),
                        other => (!self.is_safe(other, at)).then_some(other),
                    };
                    built.tainted = unsafe_value.map(|v| (How::Percent, v.range()));
                }
                Some(built)
            }
            Expr::BinOp(binop) if binop.op == Operator::Add => {
                let left = self.eval_at(&binop.left, at);
                let right = self.eval_at(&binop.right, at);
                self.concat(left, &binop.left, right, &binop.right, at)
            }
            Expr::Call(call) => self.eval_call(call, at),
            Expr::Name(name) => self.eval_name(name.id.as_str(), at),
            Expr::If(if_expr) => {
                let body = self.eval_at(&if_expr.body, at);
                let orelse = self.eval_at(&if_expr.orelse, at);
                match (body, orelse) {
                    (Some(mut body), Some(orelse)) => {
                        body.text.push(' ');
                        body.text.push_str(&orelse.text);
                        body.tainted = body.tainted.or(orelse.tainted);
                        Some(body)
                    }
                    (one, other) => one.or(other),
                }
            }
            _ => None,
        }
    }

    fn eval_fstring(&self, fstring: &'a ruff_python_ast::ExprFString, at: At) -> Built {
        let mut built = Built::default();
        for part in &fstring.value {
            let fstring = match part {
                FStringPart::Literal(literal) => {
                    built.text.push_str(&literal.value);
                    continue;
                }
                FStringPart::FString(fstring) => fstring,
            };
            for element in &fstring.elements {
                match element {
                    InterpolatedStringElement::Literal(literal) => {
                        built.text.push_str(&literal.value);
                    }
                    InterpolatedStringElement::Interpolation(value) => {
                        built.text.push_str(" ? ");
                        // `{n:d}` and `{x:.2f}` format numbers, which cannot inject.
                        let numeric = value.format_spec.as_ref().is_some_and(|spec| {
                            spec.elements.literals().last().is_some_and(|l| {
                                l.value.ends_with(|c: char| "bdefgnoxX%".contains(c))
                            })
                        });
                        if built.tainted.is_none()
                            && !numeric
                            && !self.is_safe(&value.expression, at)
                        {
                            built.tainted = Some((How::FString, value.expression.range()));
                        }
                    }
                }
            }
        }
        built
    }

    /// `left + right` where at least one side is known text; an unknown side that is not safe
    /// taints the result.
    fn concat(
        &self,
        left: Option<Built>,
        left_expr: &'a Expr,
        right: Option<Built>,
        right_expr: &'a Expr,
        at: At,
    ) -> Option<Built> {
        if left.is_none() && right.is_none() {
            return None;
        }
        let mut built = Built::default();
        for (side, expr) in [(left, left_expr), (right, right_expr)] {
            if let Some(side) = side {
                built.text.push_str(&side.text);
                built.tainted = built.tainted.or(side.tainted);
            } else {
                built.text.push_str(" ? ");
                if built.tainted.is_none() && !self.is_safe(expr, at) {
                    built.tainted = Some((How::Concat, expr.range()));
                }
            }
        }
        Some(built)
    }

    fn eval_call(&self, call: &'a ExprCall, at: At) -> Option<Built> {
        let Expr::Attribute(attr) = call.func.as_ref() else {
            return None;
        };
        match attr.attr.as_str() {
            // `"... {} ...".format(x)`, also through a name bound to the template.
            "format" => {
                let mut built = self.eval_at(&attr.value, at)?;
                if built.tainted.is_none() {
                    let args = call.arguments.args.iter();
                    let keywords = call.arguments.keywords.iter().map(|k| &k.value);
                    built.tainted = args
                        .chain(keywords)
                        .find(|v| !self.is_safe(v, at))
                        .map(|v| (How::Format, v.range()));
                }
                Some(built)
            }
            // `" ".join(["SELECT ...", x])`: concatenation spelled as a join of a literal list.
            "join" if matches!(attr.value.as_ref(), Expr::StringLiteral(_)) => {
                let elts = match call.arguments.args.as_ref() {
                    [Expr::List(list)] => &list.elts,
                    [Expr::Tuple(tuple)] => &tuple.elts,
                    _ => return None,
                };
                let mut built = Built::default();
                let mut known = false;
                for elt in elts {
                    if let Some(part) = self.eval_at(elt, at) {
                        known = true;
                        built.text.push_str(&part.text);
                        built.text.push(' ');
                        built.tainted = built.tainted.or(part.tainted);
                    } else {
                        built.text.push_str(" ? ");
                        if built.tainted.is_none() && !self.is_safe(elt, at) {
                            built.tainted = Some((How::Concat, elt.range()));
                        }
                    }
                }
                known.then_some(built)
            }
            _ => None,
        }
    }

    fn eval_name(&self, name: &str, at: At) -> Option<Built> {
        let (scope, bindings) = self.resolve(name, at);
        let mut built: Option<Built> = None;
        for binding in bindings.iter().filter(|b| b.name == name) {
            let here = At {
                scope,
                before: binding.at,
            };
            built = match binding.value {
                Value::Assign(value) => self.eval_at(value, here),
                Value::AddAssign(value) => {
                    let right = self.eval_at(value, here);
                    match (built, right) {
                        (Some(mut left), Some(right)) => {
                            left.text.push_str(&right.text);
                            left.tainted = left.tainted.or(right.tainted);
                            Some(left)
                        }
                        (Some(mut left), None) => {
                            left.text.push_str(" ? ");
                            if left.tainted.is_none() && !self.is_safe(value, here) {
                                left.tainted = Some((How::Concat, value.range()));
                            }
                            Some(left)
                        }
                        // The start is unknown (a parameter): only the additions are known, and
                        // the unknown start is the caller's text, not a value.
                        (None, right) => right,
                    }
                }
                Value::Item(_) => continue,
                Value::Loop(_) | Value::Constant | Value::Opaque => None,
            };
        }
        built
    }

    /// The scope that binds `name` as seen from `at` and its reaching bindings: the local
    /// scope if it binds the name before `at`, else the enclosing functions and the module,
    /// where any binding counts (their bodies ran before the closure is called).
    fn resolve(&self, name: &str, at: At) -> (usize, &'s [Binding<'a>]) {
        let mut idx = at.scope;
        let mut before = at.before;
        loop {
            let bindings = self.scopes.get(idx).reaching(name, before);
            if !bindings.is_empty() {
                return (idx, bindings);
            }
            match self.scopes.sources[idx].parent {
                Some(parent) => {
                    idx = parent;
                    before = TextSize::from(u32::MAX);
                }
                None => return (idx, bindings),
            }
        }
    }

    /// True when interpolating `expr` cannot inject: constants, constant-named values,
    /// sanitizer calls, numbers, whitelisted names and fragments of the target language.
    fn is_safe(&self, expr: &'a Expr, at: At) -> bool {
        if !self.spend() {
            return false;
        }
        match expr {
            Expr::StringLiteral(_)
            | Expr::BytesLiteral(_)
            | Expr::NumberLiteral(_)
            | Expr::BooleanLiteral(_)
            | Expr::NoneLiteral(_)
            | Expr::EllipsisLiteral(_)
            | Expr::Compare(_) => true,
            Expr::Tuple(tuple) => tuple.elts.iter().all(|e| self.is_safe(e, at)),
            Expr::List(list) => list.elts.iter().all(|e| self.is_safe(e, at)),
            Expr::Dict(dict) => dict.items.iter().all(|item| {
                item.key.as_ref().is_none_or(|k| self.is_safe(k, at))
                    && self.is_safe(&item.value, at)
            }),
            Expr::Name(name) => self.is_safe_name(name.id.as_str(), at),
            Expr::Attribute(attr) => {
                let name = attr.attr.as_str();
                is_constant_name(name) || is_numeric_name(name) || (self.policy.fragment)(name)
            }
            Expr::Call(call) => self.is_safe_call(call, at),
            // `"field%d" % n` formats a number whatever `n` is.
            Expr::BinOp(binop)
                if binop.op == Operator::Mod
                    && matches!(binop.left.as_ref(), Expr::StringLiteral(template)
                        if only_numeric_conversions(template.value.to_str())) =>
            {
                true
            }
            Expr::BinOp(binop) => self.is_safe(&binop.left, at) && self.is_safe(&binop.right, at),
            Expr::UnaryOp(unary) => self.is_safe(&unary.operand, at),
            Expr::BoolOp(bool_op) => bool_op.values.iter().all(|v| self.is_safe(v, at)),
            Expr::If(if_expr) => {
                self.is_safe(&if_expr.body, at) && self.is_safe(&if_expr.orelse, at)
            }
            Expr::FString(fstring) => fstring
                .value
                .elements()
                .filter_map(InterpolatedStringElement::as_interpolation)
                .all(|value| self.is_safe(&value.expression, at)),
            Expr::Subscript(subscript) => is_lookup_table(&subscript.value),
            _ => false,
        }
    }

    fn is_safe_name(&self, name: &str, at: At) -> bool {
        if is_constant_name(name)
            || (self.policy.fragment)(name)
            || self.scopes.get(at.scope).allowed.contains(&name)
            || self.safe_names.borrow().contains(&name)
        {
            return true;
        }
        self.every_binding(name, at, &|value, here| match value {
            Value::Assign(value) | Value::AddAssign(value) | Value::Item(value) => {
                self.is_safe(value, here)
            }
            Value::Loop(iter) => self.is_safe_iter(iter, here),
            Value::Constant => true,
            Value::Opaque => false,
        })
    }

    /// True when `name` has a binding visible at `at` and `judge` accepts every one of them,
    /// each judged where it was made.
    fn every_binding(&self, name: &str, at: At, judge: &dyn Fn(Value<'a>, At) -> bool) -> bool {
        let (scope, bindings) = self.resolve(name, at);
        let mut any = false;
        for binding in bindings.iter().filter(|b| b.name == name) {
            any = true;
            let here = At {
                scope,
                before: binding.at,
            };
            if !judge(binding.value, here) {
                return false;
            }
        }
        any
    }

    /// True for an iterable whose items are safe: a safe collection, or the keys, values or
    /// items of one (`ALLOWED.items()`, a local dict of quoted names).
    fn is_safe_iter(&self, iter: &'a Expr, at: At) -> bool {
        if is_constant_collection(iter) {
            return true;
        }
        if let Expr::Call(call) = iter {
            if let Expr::Attribute(attr) = call.func.as_ref()
                && matches!(attr.attr.as_str(), "items" | "keys" | "values")
            {
                return self.is_safe(&attr.value, at);
            }
            // `range(n)` yields numbers; a sanitizer's or fragment's result yields safe text.
            return self.is_safe_call(call, at);
        }
        self.is_safe(iter, at)
    }

    fn is_safe_call(&self, call: &'a ExprCall, at: At) -> bool {
        let Some(name) = callee_name(call) else {
            return false;
        };
        let args = &call.arguments.args;
        match name {
            "int" | "float" | "len" | "bool" | "round" | "abs" | "ord" | "count" | "Decimal"
            | "token_hex" | "token_urlsafe" | "uuid4" | "uuid1" | "hexdigest" | "range"
            | "randint" | "randrange" => true,
            "replace" if self.policy.quote_doubling_escapes => {
                matches!(args.first(), Some(Expr::StringLiteral(quote)) if quote.value.to_str() == "'")
            }
            // Translations of literals come from the project's own catalogs.
            "_" | "gettext" | "gettext_lazy" | "ngettext" | "ngettext_lazy" | "pgettext"
            | "pgettext_lazy" | "ugettext" | "ugettext_lazy" | "lazy_gettext" => {
                args.iter().all(|a| self.is_safe(a, at))
            }
            "str" | "upper" | "lower" | "strip" | "title" => {
                let receiver = match call.func.as_ref() {
                    Expr::Attribute(attr) if name != "str" => Some(attr.value.as_ref()),
                    _ => args.first(),
                };
                receiver.is_some_and(|r| self.is_safe(r, at))
            }
            "format" => {
                let Expr::Attribute(attr) = call.func.as_ref() else {
                    return false;
                };
                self.is_safe(&attr.value, at)
                    && args.iter().all(|a| self.is_safe(a, at))
                    && call
                        .arguments
                        .keywords
                        .iter()
                        .all(|k| self.is_safe(&k.value, at))
            }
            "join" => args
                .first()
                .is_some_and(|items| self.is_safe_items(items, at)),
            // `mapping.values()` of a dict whose every stored value is safe (Django's sqlite
            // table rebuild maps columns to quoted names and quoted defaults).
            "values" if args.is_empty() => match call.func.as_ref() {
                Expr::Attribute(attr) => self.is_safe_values(&attr.value, at),
                _ => false,
            },
            // A call named like a fragment (`self.sql_table_creation_suffix()`) returns one.
            _ => {
                let name = name.trim_start_matches('_');
                (self.policy.sanitizer)(name) || (self.policy.fragment)(name)
            }
        }
    }

    /// True for a dict whose every value is safe: a display, a comprehension with a safe value,
    /// or a local name whose every binding and stored item (`d[k] = v`, `d.update(v)`) is.
    fn is_safe_values(&self, dict: &'a Expr, at: At) -> bool {
        if !self.spend() {
            return false;
        }
        match dict {
            Expr::Dict(dict) => dict.items.iter().all(|item| self.is_safe(&item.value, at)),
            Expr::DictComp(comp) => self.is_safe_generated(&comp.value, &comp.generators, at),
            Expr::Name(name) => {
                self.every_binding(name.id.as_str(), at, &|value, here| match value {
                    Value::Assign(value) => self.is_safe_values(value, here),
                    Value::Item(value) => self.is_safe(value, here),
                    Value::Constant => true,
                    Value::AddAssign(_) | Value::Loop(_) | Value::Opaque => false,
                })
            }
            _ => false,
        }
    }

    /// True for the argument of a `join` whose items are all safe: a safe collection,
    /// `["%s"] * len(ids)`, a comprehension over safe items or with a safe element,
    /// `map(quote_name, names)`.
    fn is_safe_items(&self, items: &'a Expr, at: At) -> bool {
        let (elt, generators) = match items {
            Expr::Generator(generator) => (&*generator.elt, &generator.generators),
            Expr::ListComp(comp) => (&*comp.elt, &comp.generators),
            Expr::SetComp(comp) => (&*comp.elt, &comp.generators),
            Expr::Call(call) if callee_name(call) == Some("map") => {
                return call.arguments.args.first().is_some_and(|func| {
                    let name = match func {
                        Expr::Name(f) => f.id.as_str(),
                        Expr::Attribute(f) => f.attr.as_str(),
                        _ => return false,
                    };
                    (self.policy.sanitizer)(name.trim_start_matches('_'))
                });
            }
            other => return self.is_safe(other, at),
        };
        self.is_safe_generated(elt, generators, at)
    }

    /// True when `elt` is safe with the targets of the generators over safe iterables taken
    /// as safe.
    fn is_safe_generated(&self, elt: &'a Expr, generators: &'a [Comprehension], at: At) -> bool {
        let mut names = Vec::new();
        for generator in generators {
            if self.is_safe_iter(&generator.iter, at) {
                collect_names(&generator.target, &mut names);
            }
        }
        let pushed = names.len();
        self.safe_names.borrow_mut().extend(names);
        let safe = self.is_safe(elt, at);
        let mut safe_names = self.safe_names.borrow_mut();
        let keep = safe_names.len() - pushed;
        safe_names.truncate(keep);
        safe
    }
}

/// The names a target binds.
fn collect_names<'a>(target: &'a Expr, names: &mut Vec<&'a str>) {
    match target {
        Expr::Name(name) => names.push(name.id.as_str()),
        Expr::Tuple(tuple) => tuple.elts.iter().for_each(|e| collect_names(e, names)),
        Expr::List(list) => list.elts.iter().for_each(|e| collect_names(e, names)),
        Expr::Starred(starred) => collect_names(&starred.value, names),
        _ => {}
    }
}

/// The parameters a `@pytest.mark.parametrize("a, b", [...])` decorator (or a bare
/// `@parametrize`) gives only literal values: `("a", "b")` names, rows of constants or
/// `pytest.param(...)` of constants. Not with `indirect=`, which hands the values to fixtures.
fn parametrized_constants(decorators: &[Decorator]) -> Vec<&str> {
    let mut names = Vec::new();
    for decorator in decorators {
        let Expr::Call(call) = &decorator.expression else {
            continue;
        };
        if callee_name(call) != Some("parametrize")
            || call
                .arguments
                .keywords
                .iter()
                .any(|k| k.arg.as_ref().is_some_and(|a| a.as_str() == "indirect"))
        {
            continue;
        }
        let [argnames, argvalues, ..] = &*call.arguments.args else {
            continue;
        };
        let rows = match argvalues {
            Expr::List(list) => &list.elts,
            Expr::Tuple(tuple) => &tuple.elts,
            _ => continue,
        };
        let constant_row = |row: &Expr| match row {
            Expr::Call(param) if callee_name(param) == Some("param") => {
                param.arguments.args.iter().all(is_constant)
            }
            other => is_constant(other),
        };
        if !rows.iter().all(constant_row) {
            continue;
        }
        match argnames {
            Expr::StringLiteral(literal) => names.extend(
                literal
                    .value
                    .to_str()
                    .split(',')
                    .map(str::trim)
                    .filter(|n| !n.is_empty()),
            ),
            Expr::List(ruff_python_ast::ExprList { elts, .. })
            | Expr::Tuple(ruff_python_ast::ExprTuple { elts, .. }) => {
                names.extend(elts.iter().filter_map(|e| match e {
                    Expr::StringLiteral(literal) => Some(literal.value.to_str()),
                    _ => None,
                }));
            }
            _ => {}
        }
    }
    names
}

/// True for a lookup table: a constant collection, or a mapping whose name says it maps
/// (`self._isolation_lookup[level]`, `self.operators[op]`). A value read from one is a
/// whitelisted choice made by the code.
fn is_lookup_table(expr: &Expr) -> bool {
    if is_constant_collection(expr) {
        return true;
    }
    let name = match expr {
        Expr::Name(name) => name.id.as_str(),
        Expr::Attribute(attr) => attr.attr.as_str(),
        _ => return false,
    };
    let lower = name.to_ascii_lowercase();
    ["lookup", "operators", "mapping", "_map", "types"]
        .iter()
        .any(|word| lower.contains(word))
}

/// True for attribute names that hold numbers (`self.cache_bust_counter`, `obj.max_length`):
/// numbers cannot inject. Only attributes: a local `limit` may still be request text.
fn is_numeric_name(name: &str) -> bool {
    let last = name.rsplit('_').next().unwrap_or(name);
    matches!(
        last,
        "count" | "counter" | "length" | "size" | "num" | "number" | "total" | "pk" | "id"
    )
}

/// True when every `%` conversion in a template is numeric (`%d`, `%.2f`, ...): numbers
/// cannot carry an injection. False when there is no conversion at all.
fn only_numeric_conversions(template: &str) -> bool {
    let bytes = template.as_bytes();
    let mut idx = 0;
    let mut any = false;
    while idx < bytes.len() {
        if bytes[idx] != b'%' {
            idx += 1;
            continue;
        }
        idx += 1;
        if bytes.get(idx) == Some(&b'%') {
            idx += 1;
            continue;
        }
        if bytes.get(idx) == Some(&b'(') {
            while idx < bytes.len() && bytes[idx] != b')' {
                idx += 1;
            }
            idx += 1;
        }
        while idx < bytes.len() && b"#0- +*.123456789hlL".contains(&bytes[idx]) {
            idx += 1;
        }
        match bytes.get(idx) {
            Some(
                b'd' | b'i' | b'u' | b'o' | b'x' | b'X' | b'e' | b'E' | b'f' | b'F' | b'g' | b'G',
            ) => {
                any = true;
                idx += 1;
            }
            _ => return false,
        }
    }
    any
}

/// Source text of `range` for a message: one line, at most 40 characters.
pub(super) fn snippet(source: &str, range: TextRange) -> String {
    let text = source
        .get(range.start().to_usize()..range.end().to_usize())
        .unwrap_or("");
    let mut out = String::new();
    for (n_chars, c) in text
        .split_whitespace()
        .flat_map(|w| w.chars().chain([' ']))
        .enumerate()
    {
        if n_chars == 40 {
            out.push('…');
            return out;
        }
        out.push(c);
    }
    out.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_conversions() {
        assert!(only_numeric_conversions("LIMIT %d OFFSET %(n)05d"));
        assert!(!only_numeric_conversions("WHERE a = %s"));
        assert!(!only_numeric_conversions("100%% done"));
        assert!(is_constant_name("ALLOWED_COLUMNS"));
        assert!(!is_constant_name("_"));
        assert!(!is_constant_name("order_by"));
    }
}
