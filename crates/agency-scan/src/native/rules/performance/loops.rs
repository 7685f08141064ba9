//! The loop walk every performance rule shares: one pass over a file that knows, at each
//! statement and expression, which loops of the current function enclose it, which function or
//! module body its names resolve in, and whether the code runs at most once per iteration.
//! Plus the name questions the rules ask of those bodies: where is a name bound, is it
//! rebound or mutated inside a loop.
//!
//! Performance rules only matter where code repeats, so the walk hands a rule nothing outside
//! loops; loops that run at most once (their body ends in `return`/`break`/`raise`) or over a
//! handful of literal items do not count as loops.

use ruff_python_ast::visitor::{self, Visitor};
use ruff_python_ast::{
    Comprehension, ExceptHandler, Expr, ExprContext, Number, Parameters, Pattern, Stmt, StmtFor,
    StmtWhile,
};

/// A loop enclosing the visited code.
#[derive(Clone, Copy)]
pub enum Loop<'a> {
    For(&'a StmtFor),
    While(&'a StmtWhile),
    /// The generators of a comprehension: its element and conditions run once per item.
    Comprehension(&'a [Comprehension]),
}

/// The function (or class or module) body whose names the visited code reads.
#[derive(Clone, Copy)]
pub struct Scope<'a> {
    pub body: &'a [Stmt],
    /// `None` for the module and class bodies.
    pub parameters: Option<&'a Parameters>,
}

/// Where the walk is.
pub struct Context<'a> {
    pub module: &'a [Stmt],
    pub scope: Scope<'a>,
    /// Enclosing loops of the current scope, outermost first; never empty when a rule is called.
    pub loops: Vec<Loop<'a>>,
    /// A later statement of an enclosing block inside the innermost loop leaves it (`break`,
    /// `return`, `raise`): the visited code runs at most once per entry into that loop.
    pub runs_once: bool,
    /// The visited code sits in a branch inside the innermost loop (`if`/`elif`/`else`, an
    /// `except` handler, a `match` case, a conditional expression's branch): it may run on
    /// few iterations, which static analysis cannot tell.
    pub conditional: bool,
}

impl<'a> Context<'a> {
    /// The innermost enclosing loop.
    pub fn innermost(&self) -> Loop<'a> {
        *self
            .loops
            .last()
            .expect("rules are only called inside a loop")
    }

    /// The outermost enclosing loop of the current scope.
    pub fn outermost(&self) -> Loop<'a> {
        *self
            .loops
            .first()
            .expect("rules are only called inside a loop")
    }

    /// Every binding of `name` that the current scope reads: the scope's own, or the module's
    /// when a function does not bind it. `None` when the value is unknowable here: a parameter,
    /// or a `global`/`nonlocal` name rebound elsewhere.
    pub fn bindings(&self, name: &str) -> Option<Vec<Binding<'a>>> {
        if let Some(parameters) = self.scope.parameters
            && parameters.iter().any(|p| p.name().as_str() == name)
        {
            return None;
        }
        let mut found = Vec::new();
        collect_bindings(self.scope.body, name, &mut found);
        if found.iter().any(|b| matches!(b, Binding::Other)) {
            return None;
        }
        if found.is_empty() && self.scope.parameters.is_some() {
            collect_bindings(self.module, name, &mut found);
            if found.iter().any(|b| matches!(b, Binding::Other)) {
                return None;
            }
        }
        Some(found)
    }
}

/// One place a name gets a value.
#[derive(Clone, Copy)]
pub enum Binding<'a> {
    /// `name = value` or `name: T = value`.
    Assign(&'a Expr),
    /// `name += value` and the other augmented assignments.
    AugAssign(&'a Expr),
    /// A loop target, `with ... as`, import, `def`, `global`, ...: a value we cannot see.
    Other,
}

/// Walks `module`, calling `on_node` for every statement and expression inside a loop.
pub fn walk<'a>(module: &'a [Stmt], on_node: &mut dyn FnMut(&Context<'a>, Node<'a>)) {
    let mut walker = Walker {
        context: Context {
            module,
            scope: Scope {
                body: module,
                parameters: None,
            },
            loops: Vec::new(),
            runs_once: false,
            conditional: false,
        },
        on_node,
    };
    walker.visit_body(module);
}

/// What `walk` hands a rule.
#[derive(Clone, Copy)]
pub enum Node<'a> {
    Stmt(&'a Stmt),
    Expr(&'a Expr),
}

struct Walker<'a, 'f> {
    context: Context<'a>,
    on_node: &'f mut dyn FnMut(&Context<'a>, Node<'a>),
}

impl<'a> Walker<'a, '_> {
    /// Visits a nested scope (function, class, lambda) with no enclosing loops: its body runs
    /// when it is called, not once per iteration of the loop that defines it.
    fn in_scope(&mut self, scope: Option<Scope<'a>>, visit: impl FnOnce(&mut Self)) {
        let loops = std::mem::take(&mut self.context.loops);
        let runs_once = std::mem::replace(&mut self.context.runs_once, false);
        let conditional = std::mem::replace(&mut self.context.conditional, false);
        let saved = scope.map(|s| std::mem::replace(&mut self.context.scope, s));
        visit(self);
        if let Some(saved) = saved {
            self.context.scope = saved;
        }
        self.context.loops = loops;
        self.context.runs_once = runs_once;
        self.context.conditional = conditional;
    }

    /// Visits the body of a loop (or not, for loops that do not repeat).
    fn in_loop(&mut self, repeats: bool, lp: Loop<'a>, visit: impl FnOnce(&mut Self)) {
        if !repeats {
            visit(self);
            return;
        }
        let runs_once = std::mem::replace(&mut self.context.runs_once, false);
        let conditional = std::mem::replace(&mut self.context.conditional, false);
        self.context.loops.push(lp);
        visit(self);
        self.context.loops.pop();
        self.context.runs_once = runs_once;
        self.context.conditional = conditional;
    }

    /// Visits code that runs only on some iterations.
    fn in_branch(&mut self, visit: impl FnOnce(&mut Self)) {
        let conditional = std::mem::replace(&mut self.context.conditional, true);
        visit(self);
        self.context.conditional = conditional;
    }

    fn visit_comprehension_expr(
        &mut self,
        generators: &'a [Comprehension],
        elements: &[Option<&'a Expr>],
    ) {
        let Some((first, _)) = generators.split_first() else {
            return;
        };
        // The first iterable is evaluated once, in the enclosing scope.
        self.visit_expr(&first.iter);
        let repeats = !is_tiny_iterable(&first.iter);
        self.in_loop(repeats, Loop::Comprehension(generators), |this| {
            for (idx, generator) in generators.iter().enumerate() {
                if idx > 0 {
                    this.visit_expr(&generator.iter);
                }
                for condition in &generator.ifs {
                    this.visit_expr(condition);
                }
            }
            for element in elements.iter().flatten() {
                this.visit_expr(element);
            }
        });
    }
}

impl<'a> Visitor<'a> for Walker<'a, '_> {
    fn visit_body(&mut self, body: &'a [Stmt]) {
        let outer = self.context.runs_once;
        for (idx, stmt) in body.iter().enumerate() {
            self.context.runs_once = outer || body[idx + 1..].iter().any(leaves_loop);
            self.visit_stmt(stmt);
        }
        self.context.runs_once = outer;
    }

    fn visit_stmt(&mut self, stmt: &'a Stmt) {
        if !self.context.loops.is_empty() {
            (self.on_node)(&self.context, Node::Stmt(stmt));
        }
        match stmt {
            Stmt::FunctionDef(def) => {
                for decorator in &def.decorator_list {
                    self.visit_decorator(decorator);
                }
                self.visit_parameters(&def.parameters);
                let scope = Scope {
                    body: &def.body,
                    parameters: Some(&def.parameters),
                };
                self.in_scope(Some(scope), |this| this.visit_body(&def.body));
            }
            Stmt::ClassDef(class) => {
                for decorator in &class.decorator_list {
                    self.visit_decorator(decorator);
                }
                if let Some(arguments) = &class.arguments {
                    self.visit_arguments(arguments);
                }
                let scope = Scope {
                    body: &class.body,
                    parameters: None,
                };
                self.in_scope(Some(scope), |this| this.visit_body(&class.body));
            }
            Stmt::For(for_stmt) => {
                self.visit_expr(&for_stmt.iter);
                let repeats = !is_tiny_iterable(&for_stmt.iter) && !ends_loop(&for_stmt.body);
                self.in_loop(repeats, Loop::For(for_stmt), |this| {
                    this.visit_body(&for_stmt.body);
                });
                self.visit_body(&for_stmt.orelse);
            }
            Stmt::While(while_stmt) => {
                let repeats = !ends_loop(&while_stmt.body);
                self.in_loop(repeats, Loop::While(while_stmt), |this| {
                    this.visit_expr(&while_stmt.test);
                    this.visit_body(&while_stmt.body);
                });
                self.visit_body(&while_stmt.orelse);
            }
            Stmt::If(if_stmt) => {
                self.visit_expr(&if_stmt.test);
                self.in_branch(|this| {
                    this.visit_body(&if_stmt.body);
                    for clause in &if_stmt.elif_else_clauses {
                        if let Some(test) = &clause.test {
                            this.visit_expr(test);
                        }
                        this.visit_body(&clause.body);
                    }
                });
            }
            Stmt::Try(try_stmt) => {
                self.visit_body(&try_stmt.body);
                self.in_branch(|this| {
                    for handler in &try_stmt.handlers {
                        this.visit_except_handler(handler);
                    }
                });
                self.visit_body(&try_stmt.orelse);
                self.visit_body(&try_stmt.finalbody);
            }
            Stmt::Match(match_stmt) => {
                self.visit_expr(&match_stmt.subject);
                self.in_branch(|this| {
                    for case in &match_stmt.cases {
                        this.visit_match_case(case);
                    }
                });
            }
            _ => visitor::walk_stmt(self, stmt),
        }
    }

    fn visit_expr(&mut self, expr: &'a Expr) {
        if !self.context.loops.is_empty() {
            (self.on_node)(&self.context, Node::Expr(expr));
        }
        match expr {
            Expr::ListComp(comp) => {
                self.visit_comprehension_expr(&comp.generators, &[Some(&comp.elt)]);
            }
            Expr::SetComp(comp) => {
                self.visit_comprehension_expr(&comp.generators, &[Some(&comp.elt)]);
            }
            Expr::Generator(comp) => {
                self.visit_comprehension_expr(&comp.generators, &[Some(&comp.elt)]);
            }
            Expr::DictComp(comp) => {
                self.visit_comprehension_expr(
                    &comp.generators,
                    &[comp.key.as_deref(), Some(&comp.value)],
                );
            }
            Expr::Lambda(lambda) => {
                if let Some(parameters) = &lambda.parameters {
                    self.visit_parameters(parameters);
                }
                self.in_scope(None, |this| this.visit_expr(&lambda.body));
            }
            Expr::If(if_expr) => {
                self.visit_expr(&if_expr.test);
                self.in_branch(|this| {
                    this.visit_expr(&if_expr.body);
                    this.visit_expr(&if_expr.orelse);
                });
            }
            _ => visitor::walk_expr(self, expr),
        }
    }
}

/// `break`, `return` and `raise` leave the innermost loop (`continue` does not).
fn leaves_loop(stmt: &Stmt) -> bool {
    matches!(stmt, Stmt::Break(_) | Stmt::Return(_) | Stmt::Raise(_))
}

/// A loop body that always leaves at its end runs once.
fn ends_loop(body: &[Stmt]) -> bool {
    body.last().is_some_and(leaves_loop)
}

/// A literal collection of at most five items or `range(k)` with a literal k ≤ 5: repeating
/// the work a handful of times is not worth a finding.
fn is_tiny_iterable(iter: &Expr) -> bool {
    const TINY: usize = 5;
    match iter {
        Expr::List(l) => l.elts.len() <= TINY,
        Expr::Tuple(t) => t.elts.len() <= TINY,
        Expr::Set(s) => s.elts.len() <= TINY,
        Expr::StringLiteral(_) => true,
        Expr::Call(call) => {
            matches!(call.func.as_ref(), Expr::Name(n) if n.id.as_str() == "range")
                && call.arguments.keywords.is_empty()
                && call.arguments.args.last().is_some_and(|arg| match arg {
                    Expr::NumberLiteral(n) => {
                        matches!(&n.value, Number::Int(i) if i.as_u64().is_some_and(|v| v <= 5))
                    }
                    _ => false,
                })
        }
        _ => false,
    }
}

/// Collects every binding of `name` in `body`, not looking into nested functions and classes
/// (whose names are their own) but seeing their `def`/`class` names.
pub fn collect_bindings<'a>(body: &'a [Stmt], name: &str, out: &mut Vec<Binding<'a>>) {
    let mut finder = BindingFinder { name, out };
    finder.visit_body(body);
}

/// True when `name` is bound anywhere in `body` (including nested loops and blocks).
pub fn is_bound_in(body: &[Stmt], name: &str) -> bool {
    let mut found = Vec::new();
    collect_bindings(body, name, &mut found);
    !found.is_empty()
}

/// True when `name` gets a new value in each iteration of `lp`: it is the loop's target, or
/// is bound in its body or conditions.
pub fn loop_binds(lp: Loop<'_>, name: &str) -> bool {
    match lp {
        Loop::For(f) => target_binds(&f.target, name) || is_bound_in(&f.body, name),
        Loop::While(w) => is_bound_in(&w.body, name) || expr_binds(&w.test, name),
        Loop::Comprehension(generators) => generators
            .iter()
            .any(|g| target_binds(&g.target, name) || g.ifs.iter().any(|e| expr_binds(e, name))),
    }
}

/// True when `name` is bound or mutated in place inside `lp`: rebound, `name.append(...)` and
/// the other mutating methods, `name[i] = ...`, `del name[i]`.
pub fn loop_changes(lp: Loop<'_>, name: &str) -> bool {
    if loop_binds(lp, name) {
        return true;
    }
    mutates(lp, name, false)
}

fn target_binds(target: &Expr, name: &str) -> bool {
    match target {
        Expr::Name(n) => n.id.as_str() == name,
        Expr::Tuple(t) => t.elts.iter().any(|e| target_binds(e, name)),
        Expr::List(l) => l.elts.iter().any(|e| target_binds(e, name)),
        Expr::Starred(s) => target_binds(&s.value, name),
        _ => false,
    }
}

/// A walrus `(name := ...)` inside an expression.
fn expr_binds(expr: &Expr, name: &str) -> bool {
    struct Walrus<'n> {
        name: &'n str,
        found: bool,
    }
    impl<'a> Visitor<'a> for Walrus<'_> {
        fn visit_expr(&mut self, expr: &'a Expr) {
            if let Expr::Named(named) = expr {
                self.found |= target_binds(&named.target, self.name);
            }
            visitor::walk_expr(self, expr);
        }
    }
    let mut walrus = Walrus { name, found: false };
    walrus.visit_expr(expr);
    walrus.found
}

struct BindingFinder<'a, 'n, 'o> {
    name: &'n str,
    out: &'o mut Vec<Binding<'a>>,
}

impl<'a> Visitor<'a> for BindingFinder<'a, '_, '_> {
    fn visit_stmt(&mut self, stmt: &'a Stmt) {
        let name = self.name;
        match stmt {
            Stmt::FunctionDef(def) => {
                if def.name.as_str() == name {
                    self.out.push(Binding::Other);
                }
                return;
            }
            Stmt::ClassDef(class) => {
                if class.name.as_str() == name {
                    self.out.push(Binding::Other);
                }
                return;
            }
            Stmt::Assign(assign) => {
                for target in &assign.targets {
                    match target {
                        Expr::Name(n) if n.id.as_str() == name => {
                            self.out.push(Binding::Assign(&assign.value));
                        }
                        other if target_binds(other, name) => self.out.push(Binding::Other),
                        _ => {}
                    }
                }
            }
            Stmt::AnnAssign(assign) => {
                if let (Expr::Name(n), Some(value)) = (assign.target.as_ref(), &assign.value)
                    && n.id.as_str() == name
                {
                    self.out.push(Binding::Assign(value));
                }
            }
            Stmt::AugAssign(assign) => {
                if matches!(assign.target.as_ref(), Expr::Name(n) if n.id.as_str() == name) {
                    self.out.push(Binding::AugAssign(&assign.value));
                }
            }
            Stmt::For(f) if target_binds(&f.target, name) => {
                self.out.push(Binding::Other);
            }
            Stmt::With(with)
                if with
                    .items
                    .iter()
                    .filter_map(|item| item.optional_vars.as_deref())
                    .any(|v| target_binds(v, name)) =>
            {
                self.out.push(Binding::Other);
            }
            Stmt::Import(import)
                if import.names.iter().any(|alias| {
                    alias
                        .asname
                        .as_ref()
                        .unwrap_or(&alias.name)
                        .as_str()
                        .split('.')
                        .next()
                        == Some(name)
                }) =>
            {
                self.out.push(Binding::Other);
            }
            Stmt::ImportFrom(import)
                if import
                    .names
                    .iter()
                    .any(|alias| alias.asname.as_ref().unwrap_or(&alias.name).as_str() == name) =>
            {
                self.out.push(Binding::Other);
            }
            Stmt::Global(global) if global.names.iter().any(|n| n.as_str() == name) => {
                self.out.push(Binding::Other);
            }
            Stmt::Nonlocal(nonlocal) if nonlocal.names.iter().any(|n| n.as_str() == name) => {
                self.out.push(Binding::Other);
            }
            Stmt::Delete(delete) if delete.targets.iter().any(|t| target_binds(t, name)) => {
                self.out.push(Binding::Other);
            }
            _ => {}
        }
        visitor::walk_stmt(self, stmt);
    }

    fn visit_expr(&mut self, expr: &'a Expr) {
        match expr {
            Expr::Named(named) if target_binds(&named.target, self.name) => {
                self.out.push(Binding::Other);
            }
            // Lambdas have their own names; comprehension targets too (walrus aside, rare).
            Expr::Lambda(_)
            | Expr::ListComp(_)
            | Expr::SetComp(_)
            | Expr::DictComp(_)
            | Expr::Generator(_) => return,
            _ => {}
        }
        visitor::walk_expr(self, expr);
    }

    fn visit_except_handler(&mut self, handler: &'a ExceptHandler) {
        let ExceptHandler::ExceptHandler(h) = handler;
        if h.name.as_ref().is_some_and(|n| n.as_str() == self.name) {
            self.out.push(Binding::Other);
        }
        visitor::walk_except_handler(self, handler);
    }

    fn visit_pattern(&mut self, pattern: &'a Pattern) {
        let captured = match pattern {
            Pattern::MatchAs(p) => p.name.as_ref(),
            Pattern::MatchStar(p) => p.name.as_ref(),
            Pattern::MatchMapping(p) => p.rest.as_ref(),
            _ => None,
        };
        if captured.is_some_and(|n| n.as_str() == self.name) {
            self.out.push(Binding::Other);
        }
        visitor::walk_pattern(self, pattern);
    }
}

/// List methods that change the list in place.
const MUTATING_METHODS: &[&str] = &[
    // list
    "append",
    "extend",
    "insert",
    "remove",
    "pop",
    "clear",
    "sort",
    "reverse",
    // set and dict
    "add",
    "discard",
    "update",
    "difference_update",
    "intersection_update",
    "symmetric_difference_update",
    "setdefault",
    "popitem",
];

struct MutationFinder<'n> {
    name: &'n str,
    /// Also count mutations of attributes reached from `name` (`name.items.append(...)`).
    rooted: bool,
    found: bool,
}

impl MutationFinder<'_> {
    fn is_target(&self, expr: &Expr) -> bool {
        let mut expr = expr;
        if self.rooted {
            while let Expr::Attribute(attr) = expr {
                expr = &attr.value;
            }
        }
        matches!(expr, Expr::Name(n) if n.id.as_str() == self.name)
    }
}

/// True when the loop mutates in place anything reached from `name`: `name.append(...)`,
/// `name.items.add(...)`, `name.items[k] = ...` (conservative: any attribute path counts).
pub fn loop_mutates_through(lp: Loop<'_>, name: &str) -> bool {
    mutates(lp, name, true)
}

/// The loop's code mutates `name` in place (with `rooted`: anything reached from it).
fn mutates(lp: Loop<'_>, name: &str, rooted: bool) -> bool {
    let mut finder = MutationFinder {
        name,
        rooted,
        found: false,
    };
    match lp {
        Loop::For(f) => finder.visit_body(&f.body),
        Loop::While(w) => {
            finder.visit_expr(&w.test);
            finder.visit_body(&w.body);
        }
        Loop::Comprehension(generators) => {
            for generator in generators {
                for condition in &generator.ifs {
                    finder.visit_expr(condition);
                }
            }
        }
    }
    finder.found
}

impl<'a> Visitor<'a> for MutationFinder<'_> {
    fn visit_expr(&mut self, expr: &'a Expr) {
        if self.found {
            return;
        }
        match expr {
            Expr::Call(call) => {
                if let Expr::Attribute(attr) = call.func.as_ref()
                    && self.is_target(&attr.value)
                    && MUTATING_METHODS.contains(&attr.attr.as_str())
                {
                    self.found = true;
                }
            }
            Expr::Subscript(sub)
                if !matches!(sub.ctx, ExprContext::Load) && self.is_target(&sub.value) =>
            {
                self.found = true;
            }
            _ => {}
        }
        visitor::walk_expr(self, expr);
    }
}

/// True when no name in `expr` is bound by `lp` (constants, module attributes, names the loop
/// does not assign): its value is the same in every iteration. Calls are not invariant.
pub fn is_invariant(expr: &Expr, lp: Loop<'_>) -> bool {
    match expr {
        Expr::StringLiteral(_)
        | Expr::BytesLiteral(_)
        | Expr::NumberLiteral(_)
        | Expr::BooleanLiteral(_)
        | Expr::NoneLiteral(_) => true,
        Expr::Name(n) => !loop_binds(lp, n.id.as_str()),
        Expr::Attribute(attr) => {
            // `self.items` is invariant when the loop never assigns an attribute of `self`.
            let mut root = attr.value.as_ref();
            while let Expr::Attribute(inner) = root {
                root = &inner.value;
            }
            match root {
                Expr::Name(n) => {
                    !loop_binds(lp, n.id.as_str()) && !stores_attribute_of(lp, n.id.as_str())
                }
                _ => false,
            }
        }
        Expr::Tuple(t) => t.elts.iter().all(|e| is_invariant(e, lp)),
        _ => false,
    }
}

fn stores_attribute_of(lp: Loop<'_>, root: &str) -> bool {
    struct Finder<'n> {
        root: &'n str,
        found: bool,
    }
    impl<'a> Visitor<'a> for Finder<'_> {
        fn visit_expr(&mut self, expr: &'a Expr) {
            if let Expr::Attribute(attr) = expr
                && !matches!(attr.ctx, ExprContext::Load)
            {
                let mut base = attr.value.as_ref();
                while let Expr::Attribute(inner) = base {
                    base = &inner.value;
                }
                self.found |= matches!(base, Expr::Name(n) if n.id.as_str() == self.root);
            }
            visitor::walk_expr(self, expr);
        }
    }
    let mut finder = Finder { root, found: false };
    match lp {
        Loop::For(f) => finder.visit_body(&f.body),
        Loop::While(w) => finder.visit_body(&w.body),
        Loop::Comprehension(_) => {}
    }
    finder.found
}

/// True when any name in `expr` is bound by `lp`: the expression depends on the item.
pub fn depends_on_loop(expr: &Expr, lp: Loop<'_>) -> bool {
    struct Finder<'l> {
        lp: Loop<'l>,
        found: bool,
    }
    impl<'a> Visitor<'a> for Finder<'_> {
        fn visit_expr(&mut self, expr: &'a Expr) {
            if self.found {
                return;
            }
            if let Expr::Name(n) = expr {
                self.found = loop_binds(self.lp, n.id.as_str());
                return;
            }
            visitor::walk_expr(self, expr);
        }
    }
    let mut finder = Finder { lp, found: false };
    finder.visit_expr(expr);
    finder.found
}
