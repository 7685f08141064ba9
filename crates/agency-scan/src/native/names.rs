//! Names a module reads but never binds anywhere: the raw material of `missing-import`
//! (AGY102). Bindings are collected file-wide, whatever their function scope, which can only
//! miss an undefined name (a name bound in one function and read in another), never invent
//! one. The exception is a class body: its names are attributes, invisible to the functions
//! of the module, so `json = ...` in a class does not hide a missing `import json` elsewhere;
//! they are visible to the later statements of that class body itself (`delete.alters_data =
//! True` after `def delete`).

use std::collections::{HashMap, HashSet};

use ruff_python_ast::visitor::{self, Visitor};
use ruff_python_ast::{self as ast, Expr, ExprContext, ModModule, Pattern, Stmt};
use serde::{Deserialize, Serialize};

use super::names_table::is_builtin;

/// The first read of a name that nothing in the file binds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnboundName {
    pub name: String,
    pub start: u32,
    pub end: u32,
    /// 1-based line and column (filled in by `analyze_source`).
    #[serde(default)]
    pub line: u32,
    #[serde(default)]
    pub column: u32,
}

/// Every name read but never bound, first use only, in source order. Empty when the module
/// has a star import (its bindings are unknown).
pub fn unbound_names(module: &ModModule) -> Vec<UnboundName> {
    let mut collector = Collector::default();
    collector.visit_body(&module.body);
    if collector.star_import {
        return Vec::new();
    }
    let mut out: Vec<UnboundName> = collector
        .first_load
        .into_iter()
        .filter(|(name, _)| !collector.bound.contains(name) && !is_builtin(name))
        .map(|(name, (start, end))| UnboundName {
            name,
            start,
            end,
            line: 0,
            column: 0,
        })
        .collect();
    out.sort_by_key(|u| u.start);
    out
}

#[derive(Default)]
struct Collector {
    bound: HashSet<String>,
    first_load: HashMap<String, (u32, u32)>,
    star_import: bool,
    /// Directly in a class body (not in one of its methods).
    in_class_body: bool,
    /// The names bound so far in each enclosing class body, innermost last.
    class_scopes: Vec<HashSet<String>>,
}

impl Collector {
    fn bind(&mut self, name: &str) {
        if self.in_class_body {
            if let Some(scope) = self.class_scopes.last_mut() {
                scope.insert(name.to_string());
            }
        } else if !self.bound.contains(name) {
            self.bound.insert(name.to_string());
        }
    }

    /// A read directly in a class body of a name that class body already bound.
    fn bound_in_class(&self, name: &str) -> bool {
        self.in_class_body
            && self
                .class_scopes
                .last()
                .is_some_and(|scope| scope.contains(name))
    }
}

impl<'a> Visitor<'a> for Collector {
    fn visit_stmt(&mut self, stmt: &'a Stmt) {
        match stmt {
            Stmt::FunctionDef(def) => {
                self.bind(def.name.as_str());
                let outer = std::mem::replace(&mut self.in_class_body, false);
                visitor::walk_stmt(self, stmt);
                self.in_class_body = outer;
                return;
            }
            Stmt::ClassDef(class) => {
                self.bind(class.name.as_str());
                let outer = std::mem::replace(&mut self.in_class_body, true);
                self.class_scopes.push(HashSet::new());
                visitor::walk_stmt(self, stmt);
                self.class_scopes.pop();
                self.in_class_body = outer;
                return;
            }
            Stmt::Import(import) => {
                for alias in &import.names {
                    if let Some(asname) = &alias.asname {
                        self.bind(asname.as_str());
                    } else {
                        let first = alias.name.as_str().split('.').next().unwrap_or_default();
                        self.bind(first);
                    }
                }
            }
            Stmt::ImportFrom(from) => {
                for alias in &from.names {
                    if alias.name.as_str() == "*" {
                        self.star_import = true;
                    }
                    self.bind(alias.asname.as_ref().unwrap_or(&alias.name).as_str());
                }
            }
            Stmt::Global(global) => {
                for name in &global.names {
                    self.bind(name.as_str());
                }
            }
            Stmt::Nonlocal(nonlocal) => {
                for name in &nonlocal.names {
                    self.bind(name.as_str());
                }
            }
            Stmt::TypeAlias(alias) => {
                if let Expr::Name(name) = alias.name.as_ref() {
                    self.bind(name.id.as_str());
                }
            }
            _ => {}
        }
        visitor::walk_stmt(self, stmt);
    }

    fn visit_expr(&mut self, expr: &'a Expr) {
        if let Expr::Name(name) = expr {
            match name.ctx {
                ExprContext::Load => {
                    let id = name.id.as_str();
                    if !self.first_load.contains_key(id) && !self.bound_in_class(id) {
                        self.first_load.insert(
                            id.to_string(),
                            (name.range.start().into(), name.range.end().into()),
                        );
                    }
                }
                _ => self.bind(name.id.as_str()),
            }
        }
        visitor::walk_expr(self, expr);
    }

    fn visit_parameter(&mut self, parameter: &'a ast::Parameter) {
        self.bind(parameter.name.as_str());
        visitor::walk_parameter(self, parameter);
    }

    fn visit_except_handler(&mut self, handler: &'a ast::ExceptHandler) {
        let ast::ExceptHandler::ExceptHandler(h) = handler;
        if let Some(name) = &h.name {
            self.bind(name.as_str());
        }
        visitor::walk_except_handler(self, handler);
    }

    fn visit_pattern(&mut self, pattern: &'a Pattern) {
        match pattern {
            Pattern::MatchAs(p) => {
                if let Some(name) = &p.name {
                    self.bind(name.as_str());
                }
            }
            Pattern::MatchStar(p) => {
                if let Some(name) = &p.name {
                    self.bind(name.as_str());
                }
            }
            Pattern::MatchMapping(p) => {
                if let Some(rest) = &p.rest {
                    self.bind(rest.as_str());
                }
            }
            _ => {}
        }
        visitor::walk_pattern(self, pattern);
    }

    fn visit_type_param(&mut self, type_param: &'a ast::TypeParam) {
        self.bind(type_param.name().as_str());
        visitor::walk_type_param(self, type_param);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unbound(src: &str) -> Vec<String> {
        let parsed = ruff_python_parser::parse_module(src).unwrap();
        unbound_names(parsed.syntax())
            .into_iter()
            .map(|u| u.name)
            .collect()
    }

    #[test]
    fn reads_without_bindings() {
        let src = "\
import os.path
from x import y as z
def f(a, *args, b=1, **kw):
    global G
    return os.path.join(a, z, np.zeros(3), json.dumps(b), G, late)
late = 1
class C[T]:
    pass
try:
    pass
except ValueError as err:
    print(err)
match cmd:
    case {'k': v, **rest}:
        print(v, rest)
    case [first, *others]:
        print(first, others)
[q for q in range(3)]
(w := 5)
print(w, q, undefined_thing)
";
        assert_eq!(unbound(src), ["np", "json", "cmd", "undefined_thing"]);
        // A class body sees its own earlier names; functions and the module do not.
        let class_body = "\
class Q:
    def delete(self):
        pass
    delete.alters_data = True
    json = property(lambda self: 1)
    geojson = json
    def method(self):
        return json.dumps(geojson)
";
        assert_eq!(unbound(class_body), ["json", "geojson"]);
        assert!(unbound("from m import *\nprint(np)\n").is_empty());
    }
}
