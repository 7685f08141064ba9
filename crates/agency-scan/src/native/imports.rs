//! The imports a module executes when it is imported: the edges of the project's import graph.
//! Imports inside functions and lambdas run later, and imports under `if TYPE_CHECKING:` never
//! run, so neither can take part in an import-time cycle; imports in class bodies, `try` blocks
//! and ordinary `if` blocks do.

use ruff_python_ast::{self as ast, Expr, ModModule, Stmt};
use ruff_text_size::Ranged;
use ruff_text_size::TextRange;
use serde::{Deserialize, Serialize};

/// One import statement's target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Import {
    /// The dotted module as written (`a.b` in `import a.b` or `from a.b import c`; empty for
    /// `from . import c`).
    pub module: String,
    /// The leading dots of a relative import.
    pub level: u32,
    /// For `from m import x, y`: `x` and `y` (each may itself be a submodule).
    pub names: Vec<String>,
    /// Byte range of the statement.
    pub start: u32,
    pub end: u32,
    /// 1-based line and column of the statement (filled in by `analyze_source`).
    #[serde(default)]
    pub line: u32,
    #[serde(default)]
    pub column: u32,
}

impl Import {
    pub fn range(&self) -> TextRange {
        TextRange::new(self.start.into(), self.end.into())
    }
}

/// A module's import-time imports, in source order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleImports {
    pub imports: Vec<Import>,
    /// The module has a `from m import *` somewhere (its bound names are unknown).
    pub star_import: bool,
    /// Where a new import goes: the 1-based line after the last import at the top of the
    /// module, else after its docstring, else 1 (filled in by `analyze_source`).
    #[serde(default)]
    pub insert_line: u32,
}

/// The byte offset where a new top-level import goes: the end of the leading run of the
/// module's docstring and import statements (`from __future__` included).
pub fn insert_offset(module: &ModModule) -> u32 {
    let mut end = 0u32;
    for (i, stmt) in module.body.iter().enumerate() {
        let is_docstring = i == 0
            && matches!(stmt, Stmt::Expr(e) if matches!(e.value.as_ref(), Expr::StringLiteral(_)));
        if is_docstring || matches!(stmt, Stmt::Import(_) | Stmt::ImportFrom(_)) {
            end = stmt.range().end().into();
        } else {
            break;
        }
    }
    end
}

/// Collects the import-time imports of a module.
pub fn collect(module: &ModModule) -> ModuleImports {
    let mut out = ModuleImports::default();
    walk(&module.body, &mut out);
    out
}

fn walk(body: &[Stmt], out: &mut ModuleImports) {
    for stmt in body {
        match stmt {
            // `lazy import` (PEP 810) binds a proxy and runs the import on first use; function
            // bodies run when called, not at import time.
            Stmt::Import(ast::StmtImport { is_lazy: true, .. })
            | Stmt::ImportFrom(ast::StmtImportFrom { is_lazy: true, .. })
            | Stmt::FunctionDef(_) => {}
            Stmt::Import(import) => {
                for alias in &import.names {
                    out.imports.push(Import {
                        module: alias.name.to_string(),
                        level: 0,
                        names: Vec::new(),
                        start: import.range.start().into(),
                        end: import.range.end().into(),
                        line: 0,
                        column: 0,
                    });
                }
            }
            Stmt::ImportFrom(from) => {
                let names: Vec<String> = from.names.iter().map(|a| a.name.to_string()).collect();
                if names.iter().any(|n| n == "*") {
                    out.star_import = true;
                }
                out.imports.push(Import {
                    module: from
                        .module
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    level: from.level,
                    names,
                    start: from.range.start().into(),
                    end: from.range.end().into(),
                    line: 0,
                    column: 0,
                });
            }
            Stmt::ClassDef(class) => walk(&class.body, out),
            Stmt::If(stmt_if) => {
                if !is_type_checking(&stmt_if.test) {
                    walk(&stmt_if.body, out);
                }
                for clause in &stmt_if.elif_else_clauses {
                    if clause.test.as_ref().is_some_and(is_type_checking) {
                        continue;
                    }
                    walk(&clause.body, out);
                }
            }
            Stmt::Try(stmt_try) => {
                walk(&stmt_try.body, out);
                for handler in &stmt_try.handlers {
                    let ast::ExceptHandler::ExceptHandler(handler) = handler;
                    walk(&handler.body, out);
                }
                walk(&stmt_try.orelse, out);
                walk(&stmt_try.finalbody, out);
            }
            Stmt::With(with) => walk(&with.body, out),
            Stmt::For(stmt_for) => {
                walk(&stmt_for.body, out);
                walk(&stmt_for.orelse, out);
            }
            Stmt::While(stmt_while) => {
                walk(&stmt_while.body, out);
                walk(&stmt_while.orelse, out);
            }
            Stmt::Match(stmt_match) => {
                for case in &stmt_match.cases {
                    walk(&case.body, out);
                }
            }
            _ => {}
        }
    }
}

/// `TYPE_CHECKING` or `typing.TYPE_CHECKING` (also `typing_extensions.`, any alias module).
pub fn is_type_checking(test: &Expr) -> bool {
    match test {
        Expr::Name(name) => name.id.as_str() == "TYPE_CHECKING",
        Expr::Attribute(attr) => attr.attr.as_str() == "TYPE_CHECKING",
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn imports(src: &str) -> Vec<(String, u32, Vec<String>)> {
        let parsed = ruff_python_parser::parse_module(src).unwrap();
        collect(parsed.syntax())
            .imports
            .into_iter()
            .map(|i| (i.module, i.level, i.names))
            .collect()
    }

    #[test]
    fn import_time_only() {
        let src = "\
import os, a.b
from . import sibling
from ..pkg import x as y, z
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from heavy import Thing
elif typing.TYPE_CHECKING:
    import other
else:
    import runtime_only
def f():
    import lazy
class C:
    import in_class
try:
    import fast
except ImportError:
    import slow
";
        let got = imports(src);
        let modules: Vec<&str> = got.iter().map(|(m, _, _)| m.as_str()).collect();
        assert_eq!(
            modules,
            [
                "os",
                "a.b",
                "",
                "pkg",
                "typing",
                "runtime_only",
                "in_class",
                "fast",
                "slow"
            ]
        );
        assert_eq!(got[2], (String::new(), 1, vec!["sibling".to_string()]));
        assert_eq!(got[3].1, 2);
        assert_eq!(got[3].2, ["x", "z"]);
    }

    #[test]
    fn new_imports_go_after_the_leading_docstring_and_imports() {
        let line = |src: &str| {
            crate::native::analyze_source("m.py", src, &|_| false)
                .imports
                .insert_line
        };
        assert_eq!(
            line("\"\"\"Doc.\"\"\"\nimport os\nfrom x import (\n    a,\n)\n\nprint(os, a)\n"),
            6
        );
        assert_eq!(line("\"\"\"Doc.\"\"\"\n\nx = 1\n"), 2);
        assert_eq!(line("x = 1\nimport os\n"), 1);
        assert_eq!(line(""), 1);
    }
}
