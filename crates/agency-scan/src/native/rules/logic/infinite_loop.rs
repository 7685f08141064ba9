//! AGY402 `infinite-loop`: a `while True:` (or `while 1:`) whose body has no way out: no
//! `break` of this loop, no `return`, no `raise`, and nothing that could raise or exit on
//! purpose. Such a loop hangs the program (or spins a core) forever.
//!
//! Kept precise by treating every call other than a few builtins as a possible exit: a call can
//! raise, `sys.exit()`, or be a server's `serve_forever()` / an event loop's `run()` that is
//! meant to run until the process is stopped. So are `yield` and `await` (generators and async
//! tasks that run until cancelled), `assert`, and a loop inside a `try` with a handler in the
//! same function (an exception from the body is the intended exit).

use ruff_python_ast::visitor::{self, Visitor};
use ruff_python_ast::{Expr, Number, Stmt, StmtWhile};
use ruff_text_size::{Ranged, TextRange};

use crate::native::{Checker, Diagnostic};
use agency_core::contract::Severity;

/// Builtins that neither raise on well-typed input in a way code relies on nor exit.
const HARMLESS_BUILTINS: &[&str] = &[
    "len",
    "abs",
    "min",
    "max",
    "int",
    "float",
    "str",
    "bool",
    "repr",
    "isinstance",
    "range",
    "print",
    "round",
    "hash",
    "id",
    "type",
];

pub fn infinite_loop(checker: &Checker, out: &mut Vec<Diagnostic>) {
    let mut finder = LoopFinder { in_try: 0, out };
    finder.visit_body(&checker.module.body);
}

struct LoopFinder<'o> {
    /// Depth of enclosing `try` bodies with handlers, in the current function.
    in_try: usize,
    out: &'o mut Vec<Diagnostic>,
}

impl<'a> Visitor<'a> for LoopFinder<'_> {
    fn visit_stmt(&mut self, stmt: &'a Stmt) {
        match stmt {
            Stmt::FunctionDef(_) | Stmt::ClassDef(_) => {
                let saved = std::mem::take(&mut self.in_try);
                visitor::walk_stmt(self, stmt);
                self.in_try = saved;
            }
            Stmt::Try(try_stmt) if !try_stmt.handlers.is_empty() => {
                self.in_try += 1;
                self.visit_body(&try_stmt.body);
                self.in_try -= 1;
                for handler in &try_stmt.handlers {
                    self.visit_except_handler(handler);
                }
                self.visit_body(&try_stmt.orelse);
                self.visit_body(&try_stmt.finalbody);
            }
            Stmt::While(while_stmt) => {
                if self.in_try == 0 && is_always_true(&while_stmt.test) && !has_exit(while_stmt) {
                    self.out.push(
                        Diagnostic::new(
                            "AGY402",
                            header_range(while_stmt),
                            "this `while` loop never ends: its body has no `break`, `return`, `raise` or call that could leave it; add the missing exit condition",
                        )
                        .severity(Severity::High),
                    );
                }
                visitor::walk_stmt(self, stmt);
            }
            _ => visitor::walk_stmt(self, stmt),
        }
    }
}

/// From `while` to the end of the condition: the loop's header, not its whole body.
fn header_range(while_stmt: &StmtWhile) -> TextRange {
    TextRange::new(while_stmt.range.start(), while_stmt.test.range().end())
}

/// `True`, or a non-zero integer literal.
fn is_always_true(test: &Expr) -> bool {
    match test {
        Expr::BooleanLiteral(b) => b.value,
        Expr::NumberLiteral(n) => matches!(&n.value, Number::Int(i) if i.as_u64() != Some(0)),
        _ => false,
    }
}

/// True when the loop's body (or its condition) has anything that could leave it.
fn has_exit(while_stmt: &StmtWhile) -> bool {
    let mut finder = ExitFinder {
        loop_depth: 0,
        found: false,
    };
    finder.visit_body(&while_stmt.body);
    finder.found
}

struct ExitFinder {
    /// Depth of nested loops: a `break` inside them leaves them, not ours.
    loop_depth: usize,
    found: bool,
}

impl<'a> Visitor<'a> for ExitFinder {
    fn visit_stmt(&mut self, stmt: &'a Stmt) {
        if self.found {
            return;
        }
        match stmt {
            // A nested function's body does not run here (calling it is a call, seen anyway).
            Stmt::FunctionDef(_) | Stmt::ClassDef(_) => {}
            Stmt::Break(_) => self.found |= self.loop_depth == 0,
            Stmt::Return(_) | Stmt::Raise(_) | Stmt::Assert(_) => self.found = true,
            Stmt::For(for_stmt) => {
                // Iterating calls `__iter__`/`__next__`: treat any loop over a non-literal as a
                // call that could raise.
                self.visit_expr(&for_stmt.iter);
                self.loop_depth += 1;
                self.visit_body(&for_stmt.body);
                self.loop_depth -= 1;
                // `else` runs after the nested loop: its `break` is ours.
                self.visit_body(&for_stmt.orelse);
                self.found |= !matches!(
                    for_stmt.iter.as_ref(),
                    Expr::List(_) | Expr::Tuple(_) | Expr::Set(_) | Expr::StringLiteral(_)
                );
            }
            Stmt::While(inner) => {
                self.visit_expr(&inner.test);
                self.loop_depth += 1;
                self.visit_body(&inner.body);
                self.loop_depth -= 1;
                self.visit_body(&inner.orelse);
            }
            // `with` calls `__enter__`/`__exit__`, `import` runs a module, `del` a `__del__`.
            Stmt::With(_) | Stmt::Import(_) | Stmt::ImportFrom(_) | Stmt::Delete(_) => {
                self.found = true;
            }
            _ => visitor::walk_stmt(self, stmt),
        }
    }

    fn visit_expr(&mut self, expr: &'a Expr) {
        if self.found {
            return;
        }
        match expr {
            Expr::Yield(_) | Expr::YieldFrom(_) | Expr::Await(_) => self.found = true,
            Expr::Call(call) => {
                let harmless = matches!(
                    call.func.as_ref(),
                    Expr::Name(n) if HARMLESS_BUILTINS.contains(&n.id.as_str())
                );
                if harmless {
                    visitor::walk_expr(self, expr);
                } else {
                    self.found = true;
                }
            }
            // Lambdas are not called here.
            Expr::Lambda(_) => {}
            _ => visitor::walk_expr(self, expr),
        }
    }
}
