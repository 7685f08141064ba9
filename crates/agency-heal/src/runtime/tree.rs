//! The parsed module as an arena of nodes with their parents, and the line arithmetic of the
//! source: the fixers ask "what encloses this expression" and "where does this line start"
//! far more often than they walk the tree, so both are computed once.

use ruff_python_ast::visitor::source_order::{
    SourceOrderVisitor, TraversalSignal, walk_expr, walk_stmt,
};
use std::collections::HashMap;

use ruff_python_ast::{AnyNodeRef, Expr, ModModule, NodeKind, Stmt, StmtClassDef, StmtFunctionDef};
use ruff_text_size::{Ranged, TextRange, TextSize};

/// Every node of one module, in source order, with its parent.
pub(super) struct Tree<'a> {
    pub source: &'a str,
    pub module: &'a ModModule,
    nodes: Vec<AnyNodeRef<'a>>,
    parents: Vec<Option<usize>>,
    exprs: Vec<Option<&'a Expr>>,
    stmts: Vec<Option<&'a Stmt>>,
    /// Arena index by node identity (address and kind: a node and its first field may share
    /// an address).
    index: HashMap<(usize, NodeKind), usize>,
    /// Byte offset of the start of each line (line 1 at index 0).
    line_starts: Vec<usize>,
}

#[derive(Default)]
struct Builder<'a> {
    nodes: Vec<AnyNodeRef<'a>>,
    parents: Vec<Option<usize>>,
    exprs: Vec<Option<&'a Expr>>,
    stmts: Vec<Option<&'a Stmt>>,
    stack: Vec<usize>,
    /// The `Expr` or `Stmt` whose node is entered next: `AnyNodeRef` holds the concrete node
    /// (`&ExprName`), from which the enum that owns it cannot be reached.
    pending_expr: Option<&'a Expr>,
    pending_stmt: Option<&'a Stmt>,
}

impl<'a> SourceOrderVisitor<'a> for Builder<'a> {
    fn enter_node(&mut self, node: AnyNodeRef<'a>) -> TraversalSignal {
        let idx = self.nodes.len();
        self.nodes.push(node);
        self.parents.push(self.stack.last().copied());
        self.exprs.push(
            self.pending_expr
                .take()
                .filter(|e| AnyNodeRef::from(*e).ptr_eq(node)),
        );
        self.stmts.push(
            self.pending_stmt
                .take()
                .filter(|s| AnyNodeRef::from(*s).ptr_eq(node)),
        );
        self.stack.push(idx);
        TraversalSignal::Traverse
    }

    fn visit_expr(&mut self, expr: &'a Expr) {
        self.pending_expr = Some(expr);
        walk_expr(self, expr);
    }

    fn visit_stmt(&mut self, stmt: &'a Stmt) {
        self.pending_stmt = Some(stmt);
        walk_stmt(self, stmt);
    }

    fn leave_node(&mut self, _node: AnyNodeRef<'a>) {
        self.stack.pop();
    }
}

impl<'a> Tree<'a> {
    pub fn new(source: &'a str, module: &'a ModModule) -> Self {
        let mut builder = Builder::default();
        builder.visit_body(&module.body);
        let mut line_starts = vec![0];
        line_starts.extend(
            source
                .bytes()
                .enumerate()
                .filter(|(_, b)| *b == b'\n')
                .map(|(i, _)| i + 1),
        );
        let index = builder
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (identity(*n), i))
            .collect();
        Tree {
            source,
            module,
            index,
            nodes: builder.nodes,
            parents: builder.parents,
            exprs: builder.exprs,
            stmts: builder.stmts,
            line_starts,
        }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn node(&self, idx: usize) -> AnyNodeRef<'a> {
        self.nodes[idx]
    }

    pub fn parent(&self, idx: usize) -> Option<usize> {
        self.parents[idx]
    }

    /// The ancestors of `idx`, innermost first (`idx` itself excluded).
    pub fn ancestors(&self, idx: usize) -> impl Iterator<Item = usize> + '_ {
        std::iter::successors(self.parents[idx], |&i| self.parents[i])
    }

    /// Whether `ancestor` is `idx` or one of its ancestors.
    pub fn encloses(&self, ancestor: usize, idx: usize) -> bool {
        ancestor == idx || self.ancestors(idx).any(|a| a == ancestor)
    }

    /// The arena index of a node of this tree.
    pub fn index_of(&self, node: AnyNodeRef<'_>) -> Option<usize> {
        self.index.get(&identity(node)).copied()
    }

    pub fn index_of_stmt(&self, stmt: &Stmt) -> Option<usize> {
        self.index_of(AnyNodeRef::from(stmt))
    }

    pub fn expr(&self, idx: usize) -> Option<&'a Expr> {
        self.exprs[idx]
    }

    pub fn stmt(&self, idx: usize) -> Option<&'a Stmt> {
        self.stmts[idx]
    }

    pub fn function(&self, idx: usize) -> Option<&'a StmtFunctionDef> {
        match self.nodes[idx] {
            AnyNodeRef::StmtFunctionDef(f) => Some(f),
            _ => None,
        }
    }

    pub fn class(&self, idx: usize) -> Option<&'a StmtClassDef> {
        match self.nodes[idx] {
            AnyNodeRef::StmtClassDef(c) => Some(c),
            _ => None,
        }
    }

    pub fn range(&self, idx: usize) -> TextRange {
        self.nodes[idx].range()
    }

    pub fn text(&self, range: TextRange) -> &'a str {
        &self.source[range.start().to_usize()..range.end().to_usize()]
    }

    /// The innermost statement that is `idx` or encloses it.
    pub fn statement_of(&self, idx: usize) -> Option<usize> {
        std::iter::once(idx)
            .chain(self.ancestors(idx))
            .find(|&i| self.nodes[i].is_statement())
    }

    /// The scope a statement runs in: the innermost function or class whose body holds it, or
    /// `None` at module level.
    pub fn scope_of_stmt(&self, stmt: usize) -> Option<usize> {
        self.ancestors(stmt).find(|&i| {
            matches!(
                self.nodes[i],
                AnyNodeRef::StmtFunctionDef(_) | AnyNodeRef::StmtClassDef(_)
            )
        })
    }

    /// The function whose body runs `stmt` directly (not through a class body).
    pub fn function_of_stmt(&self, stmt: usize) -> Option<usize> {
        self.scope_of_stmt(stmt)
            .filter(|&s| matches!(self.nodes[s], AnyNodeRef::StmtFunctionDef(_)))
    }

    /// Python's `__qualname__` of a function or class: `Class.method`, `outer.<locals>.inner`.
    pub fn qualname(&self, idx: usize) -> String {
        let mut parts: Vec<String> = Vec::new();
        let mut current = Some(idx);
        let mut first = true;
        while let Some(i) = current {
            match self.nodes[i] {
                AnyNodeRef::StmtFunctionDef(f) => {
                    if !first {
                        parts.push("<locals>".to_string());
                    }
                    parts.push(f.name.as_str().to_string());
                }
                AnyNodeRef::StmtClassDef(c) => parts.push(c.name.as_str().to_string()),
                _ => {}
            }
            first = false;
            current = self.scope_of_stmt(i);
        }
        parts.reverse();
        parts.join(".")
    }

    /// The byte offset where 1-based `line` starts, if the source has that line.
    pub fn line_start(&self, line: u32) -> Option<usize> {
        self.line_starts
            .get((line as usize).checked_sub(1)?)
            .copied()
    }

    /// The 1-based line holding byte `offset`.
    pub fn line_of(&self, offset: usize) -> u32 {
        match self.line_starts.binary_search(&offset) {
            Ok(i) => i as u32 + 1,
            Err(i) => i as u32,
        }
    }

    /// The byte range of 1-based `line` without its line ending.
    pub fn line_range(&self, line: u32) -> Option<(usize, usize)> {
        let start = self.line_start(line)?;
        let end = self
            .line_starts
            .get(line as usize)
            .copied()
            .unwrap_or(self.source.len());
        let text = &self.source[start..end];
        let trimmed = text.trim_end_matches(['\n', '\r']);
        Some((start, start + trimmed.len()))
    }

    /// The byte offset of a 1-based character column of `line` (the column just past the last
    /// character is the end of the line).
    pub fn column_offset(&self, line: u32, column: u32) -> Option<usize> {
        let (start, end) = self.line_range(line)?;
        let index = (column as usize).checked_sub(1)?;
        let text = &self.source[start..end];
        if index == text.chars().count() {
            return Some(end);
        }
        text.char_indices().nth(index).map(|(b, _)| start + b)
    }

    /// The whitespace before the first token of the line holding `offset`, when `offset` is that
    /// first token (the statement starts its own line); `None` when something precedes it.
    pub fn own_line_indent(&self, offset: usize) -> Option<&'a str> {
        let start = self.line_start(self.line_of(offset))?;
        let prefix = &self.source[start..offset];
        prefix
            .chars()
            .all(|c| c == ' ' || c == '\t')
            .then_some(prefix)
    }

    /// The offset of the line after the one that holds `offset` when nothing but whitespace
    /// and a comment follows `offset` on its line; the end of the source when that line is the
    /// last one. `None` when code follows (`a = 1; b = 2`).
    pub fn after_line(&self, offset: usize) -> Option<usize> {
        let line = self.line_of(offset);
        let (_, end) = self.line_range(line)?;
        let rest = self.source[offset..end].trim_start_matches([' ', '\t']);
        if !(rest.is_empty() || rest.starts_with('#')) {
            return None;
        }
        Some(self.line_start(line + 1).unwrap_or(self.source.len()))
    }

    /// Where to insert lines that must run just before the statement starting its own line at
    /// `stmt_start` (after `indent`): the start of its line, or of the comment lines with the
    /// same indentation right above it, which describe the statement and stay with it.
    pub fn insertion_before(&self, stmt_start: usize, indent: &str) -> usize {
        let mut line = self.line_of(stmt_start);
        let mut at = stmt_start - indent.len();
        while line > 1 {
            let Some((start, end)) = self.line_range(line - 1) else {
                break;
            };
            let text = &self.source[start..end];
            match text.strip_prefix(indent) {
                Some(rest) if rest.starts_with('#') => {
                    at = start;
                    line -= 1;
                }
                _ => break,
            }
        }
        at
    }

    /// The line ending the file uses (that of its first line), `\n` for a one-line file.
    pub fn newline(&self) -> &'static str {
        match self.source.find('\n') {
            Some(i) if i > 0 && self.source.as_bytes()[i - 1] == b'\r' => "\r\n",
            _ => "\n",
        }
    }

    /// One level of indentation as this block writes it: the indentation of the first statement
    /// of a body minus that of its header, for the innermost compound statement around `stmt`
    /// whose body starts on its own line.
    pub fn indent_unit(&self, stmt: usize) -> Option<&'a str> {
        for ancestor in self.ancestors(stmt) {
            let Some(first) = first_body_stmt(self.nodes[ancestor]) else {
                continue;
            };
            let header = self.line_indent(self.range(ancestor).start().to_usize());
            let Some(body) = self.own_line_indent(first.start().to_usize()) else {
                continue;
            };
            if let Some(unit) = body.strip_prefix(header)
                && !unit.is_empty()
            {
                return Some(unit);
            }
        }
        None
    }

    /// The whitespace that starts the line holding `offset`.
    pub fn line_indent(&self, offset: usize) -> &'a str {
        let start = self
            .line_start(self.line_of(offset))
            .unwrap_or(self.source.len());
        let text = &self.source[start..];
        let len = text.len() - text.trim_start_matches([' ', '\t']).len();
        &text[..len]
    }
}

fn first_body_stmt(node: AnyNodeRef<'_>) -> Option<TextRange> {
    let body: &[Stmt] = match node {
        AnyNodeRef::StmtFunctionDef(s) => &s.body,
        AnyNodeRef::StmtClassDef(s) => &s.body,
        AnyNodeRef::StmtFor(s) => &s.body,
        AnyNodeRef::StmtWhile(s) => &s.body,
        AnyNodeRef::StmtIf(s) => &s.body,
        AnyNodeRef::StmtWith(s) => &s.body,
        AnyNodeRef::StmtTry(s) => &s.body,
        _ => return None,
    };
    body.first().map(Ranged::range)
}

fn identity(node: AnyNodeRef<'_>) -> (usize, NodeKind) {
    (node.as_ptr().as_ptr() as usize, node.kind())
}

/// A byte offset as a `TextSize`.
pub(super) fn size(offset: usize) -> TextSize {
    TextSize::try_from(offset).unwrap_or_default()
}
