//! A uniform view of a ruff syntax tree: every node (identifiers included) with its kind, its
//! range, and its items in source order, where an item is a child node or a significant token
//! that no child covers (operators, keywords, punctuation, string parts). Matching, extraction
//! and generalisation all compare these item lists, so the fixed fields of every node kind
//! (`==` against `is`, `load` against `safe_load`) are compared without a per-kind comparator.
//!
//! Parentheses that only wrap a child expression are folded into that child's `outer` range:
//! `(a or b) == None` has the same items as `x == None`, and a hole bound to `(a or b)` keeps
//! its parentheses, so substituting it elsewhere keeps its precedence.

use ruff_python_ast::token::TokenKind;
use ruff_python_ast::visitor::source_order::{SourceOrderVisitor, TraversalSignal, walk_module};
use ruff_python_ast::{AnyNodeRef, ExprContext, Mod, NodeKind, OperatorPrecedence};
use ruff_python_parser::{Mode, ParseOptions, Parsed};
use ruff_text_size::{Ranged, TextRange, TextSize};

/// One significant token.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tok {
    pub kind: TokenKind,
    pub range: TextRange,
}

/// A child node or a token, in source order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Item {
    Node(usize),
    Token(usize),
}

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub kind: NodeKind,
    /// The node's own range.
    pub range: TextRange,
    /// The range with the parentheses that wrap only this node.
    pub outer: TextRange,
    pub parent: Option<usize>,
    pub depth: u32,
    pub items: Vec<Item>,
    /// `Some(true)` for a name in store context, `Some(false)` for load; `None` otherwise.
    pub store: Option<bool>,
    pub is_stmt: bool,
    pub is_expr: bool,
    /// How tightly an expression binds (`a or b` is looser than `a * b`).
    pub precedence: Option<OperatorPrecedence>,
}

/// The uniform tree of one parsed text.
#[derive(Debug, Clone)]
pub(crate) struct Tree {
    pub source: String,
    pub nodes: Vec<Node>,
    pub tokens: Vec<Tok>,
    /// The ranges of the comments, in order.
    pub comments: Vec<TextRange>,
}

/// Which grammar to parse with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Grammar {
    Expression,
    Module,
}

/// Parses `source`; `Err` carries the first syntax error's message and byte offset.
pub(crate) fn parse(source: &str, grammar: Grammar) -> Result<Tree, (String, usize)> {
    let mode = match grammar {
        Grammar::Expression => Mode::Expression,
        Grammar::Module => Mode::Module,
    };
    let options =
        ParseOptions::from(mode).with_target_version(ruff_python_ast::PythonVersion::PY313);
    let parsed: Parsed<Mod> = ruff_python_parser::parse_unchecked(source, options);
    if let Some(error) = parsed.errors().first() {
        return Err((error.error.to_string(), error.location.start().to_usize()));
    }
    let tokens: Vec<Tok> = parsed
        .tokens()
        .iter()
        .filter(|t| !is_trivia(t.kind()))
        .map(|t| Tok {
            kind: t.kind(),
            range: t.range(),
        })
        .collect();
    let comments: Vec<TextRange> = parsed
        .tokens()
        .iter()
        .filter(|t| t.kind() == TokenKind::Comment)
        .map(Ranged::range)
        .collect();
    let mut builder = Builder {
        nodes: Vec::new(),
        stack: Vec::new(),
    };
    walk_module(&mut builder, parsed.syntax());
    let mut tree = Tree {
        source: source.to_string(),
        nodes: builder.nodes,
        tokens,
        comments,
    };
    tree.fill_items();
    Ok(tree)
}

/// The first index at or after `from` whose token starts at or after `at` (tokens are sorted):
/// a galloping search, since the answer is usually a few tokens ahead.
fn first_at_or_after(tokens: &[Tok], from: usize, at: TextSize) -> usize {
    // Every token in `from..lo` starts before `at`; the token at `hi`, if any, does not.
    let mut lo = from.min(tokens.len());
    let mut hi = lo;
    let mut step = 1;
    while hi < tokens.len() && tokens[hi].range.start() < at {
        lo = hi + 1;
        hi = hi.saturating_add(step).min(tokens.len());
        step *= 2;
    }
    lo + tokens[lo..hi.max(lo)].partition_point(|t| t.range.start() < at)
}

fn is_trivia(kind: TokenKind) -> bool {
    matches!(
        kind,
        TokenKind::Comment
            | TokenKind::Newline
            | TokenKind::NonLogicalNewline
            | TokenKind::Indent
            | TokenKind::Dedent
            | TokenKind::EndOfFile
    )
}

struct Builder {
    nodes: Vec<Node>,
    stack: Vec<usize>,
}

impl<'a> SourceOrderVisitor<'a> for Builder {
    fn enter_node(&mut self, node: AnyNodeRef<'a>) -> TraversalSignal {
        let parent = self.stack.last().copied();
        let depth = parent.map_or(0, |p| self.nodes[p].depth + 1);
        let store = match node {
            AnyNodeRef::ExprName(name) => Some(matches!(name.ctx, ExprContext::Store)),
            _ => None,
        };
        let id = self.nodes.len();
        self.nodes.push(Node {
            kind: node.kind(),
            range: node.range(),
            outer: node.range(),
            parent,
            depth,
            items: Vec::new(),
            store,
            is_stmt: node.is_statement(),
            is_expr: node.is_expression(),
            precedence: node.as_expr_ref().map(OperatorPrecedence::from_expr_ref),
        });
        self.stack.push(id);
        TraversalSignal::Traverse
    }

    fn leave_node(&mut self, _node: AnyNodeRef<'a>) {
        self.stack.pop();
    }
}

impl Tree {
    /// Computes every node's items and folds wrapping parentheses into children.
    fn fill_items(&mut self) {
        // Children as linked lists (first child, next sibling), in source order: nodes are
        // numbered in the visitor's pre-order. One allocation instead of one per node.
        const NONE: usize = usize::MAX;
        let n = self.nodes.len();
        let mut first_child = vec![NONE; n];
        let mut last_child = vec![NONE; n];
        let mut next_sibling = vec![NONE; n];
        for (id, node) in self.nodes.iter().enumerate() {
            if let Some(parent) = node.parent {
                if last_child[parent] == NONE {
                    first_child[parent] = id;
                } else {
                    next_sibling[last_child[parent]] = id;
                }
                last_child[parent] = id;
            }
        }
        // Node starts never decrease in pre-order, so each node's first token is found by
        // walking forward from the previous node's (a search only where a start goes back).
        let mut first = 0;
        let mut previous_start = TextSize::default();
        for (id, &first_kid) in first_child.iter().enumerate() {
            let range = self.nodes[id].range;
            if range.start() < previous_start {
                first = self
                    .tokens
                    .partition_point(|t| t.range.start() < range.start());
            } else {
                first = first_at_or_after(&self.tokens, first, range.start());
            }
            previous_start = range.start();
            let mut items = Vec::new();
            // The next child not yet pushed, and the last one pushed.
            let mut kid = first_kid;
            let mut pushed = NONE;
            let mut tok = first;
            while tok < self.tokens.len() && self.tokens[tok].range.end() <= range.end() {
                let t_range = self.tokens[tok].range;
                // Children (in source order) that start before this token come first.
                while kid != NONE && self.nodes[kid].range.start() <= t_range.start() {
                    items.push(Item::Node(kid));
                    pushed = kid;
                    kid = next_sibling[kid];
                }
                // Children do not overlap, so only the last one pushed can cover the token;
                // skip all of that child's tokens at once.
                if pushed != NONE {
                    let child_range = self.nodes[pushed].range;
                    if child_range.contains_range(t_range) {
                        let next = first_at_or_after(&self.tokens, tok, child_range.end());
                        tok = next.max(tok + 1);
                        continue;
                    }
                }
                items.push(Item::Token(tok));
                tok += 1;
            }
            while kid != NONE {
                items.push(Item::Node(kid));
                kid = next_sibling[kid];
            }
            self.nodes[id].items = items;
        }
        for id in 0..self.nodes.len() {
            self.fold_parens(id);
        }
    }

    fn fold_parens(&mut self, id: usize) {
        let own_parens = matches!(
            self.nodes[id].kind,
            NodeKind::Arguments | NodeKind::Parameters | NodeKind::PatternArguments
        );
        let mut items = std::mem::take(&mut self.nodes[id].items);
        let mut i = 0;
        while i < items.len() {
            if let Item::Node(child) = items[i] {
                while i >= 1
                    && i + 1 < items.len()
                    && self.is_token(items[i - 1], TokenKind::Lpar)
                    && self.is_token(items[i + 1], TokenKind::Rpar)
                    && !(own_parens && i == 1 && i + 2 == items.len())
                {
                    let (Item::Token(open), Item::Token(close)) = (items[i - 1], items[i + 1])
                    else {
                        break;
                    };
                    let outer = TextRange::new(
                        self.tokens[open].range.start(),
                        self.tokens[close].range.end(),
                    );
                    self.nodes[child].outer = outer;
                    items.remove(i + 1);
                    items.remove(i - 1);
                    i -= 1;
                }
            }
            i += 1;
        }
        self.nodes[id].items = items;
    }

    fn is_token(&self, item: Item, kind: TokenKind) -> bool {
        matches!(item, Item::Token(t) if self.tokens[t].kind == kind)
    }

    pub fn text(&self, range: TextRange) -> &str {
        &self.source[range]
    }

    pub fn token_text(&self, tok: usize) -> &str {
        self.text(self.tokens[tok].range)
    }

    /// The significant tokens inside `range`.
    pub fn tokens_in(&self, range: TextRange) -> &[Tok] {
        let start = self
            .tokens
            .partition_point(|t| t.range.start() < range.start());
        let end = self
            .tokens
            .partition_point(|t| t.range.end() <= range.end());
        if start >= end {
            &[]
        } else {
            &self.tokens[start..end]
        }
    }

    /// The token texts of `range` joined by single spaces: equal keys mean equal code up to
    /// whitespace and comments.
    pub fn key(&self, range: TextRange) -> String {
        let mut out = String::new();
        for (i, t) in self.tokens_in(range).iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(&self.source[t.range]);
        }
        out
    }

    /// The child nodes of `id`, in source order.
    #[cfg(test)]
    pub fn children(&self, id: usize) -> impl Iterator<Item = usize> + '_ {
        self.nodes[id].items.iter().filter_map(|item| match item {
            Item::Node(n) => Some(*n),
            Item::Token(_) => None,
        })
    }

    /// The top-level nodes: the statements of a module or the expression of an expression.
    pub fn top_items(&self) -> &[Item] {
        self.nodes.first().map_or(&[], |root| root.items.as_slice())
    }

    pub fn is_statement(&self, id: usize) -> bool {
        self.nodes[id].is_stmt
    }

    /// The maximal run of statements, without tokens between them, that holds `id`: the body
    /// (or `else`, or `finally` block) it belongs to. Returns the parent and the run's bounds in
    /// the parent's items.
    pub fn body_run(&self, id: usize) -> Option<(usize, usize, usize, usize)> {
        let parent = self.nodes[id].parent?;
        let items = &self.nodes[parent].items;
        let pos = items.iter().position(|item| *item == Item::Node(id))?;
        let is_stmt = |item: &Item| matches!(item, Item::Node(n) if self.is_statement(*n));
        let mut start = pos;
        while start > 0 && is_stmt(&items[start - 1]) {
            start -= 1;
        }
        let mut end = pos + 1;
        while end < items.len() && is_stmt(&items[end]) {
            end += 1;
        }
        Some((parent, start, end, pos))
    }

    /// The deepest node whose range contains `offset`.
    pub fn deepest_at(&self, offset: TextSize) -> Option<usize> {
        let mut best: Option<usize> = None;
        for (id, node) in self.nodes.iter().enumerate() {
            if node.outer.start() <= offset
                && offset < node.outer.end()
                && best.is_none_or(|b| node.depth > self.nodes[b].depth)
            {
                best = Some(id);
            }
        }
        best
    }
}

/// The leading whitespace of the line of `source` holding byte `offset`.
pub(crate) fn line_indent(source: &str, offset: usize) -> &str {
    let start = line_start(source, offset);
    let rest = &source[start..];
    let len = rest.len() - rest.trim_start_matches([' ', '\t']).len();
    &rest[..len]
}

/// The byte offset of the start of the line holding `offset`.
pub(crate) fn line_start(source: &str, offset: usize) -> usize {
    source[..offset].rfind('\n').map_or(0, |i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(tree: &Tree, id: usize) -> String {
        let node = &tree.nodes[id];
        let parts: Vec<String> = node
            .items
            .iter()
            .map(|item| match item {
                Item::Node(n) => shape(tree, *n),
                Item::Token(t) => tree.token_text(*t).to_string(),
            })
            .collect();
        format!("{:?}[{}]", node.kind, parts.join(" "))
    }

    #[test]
    fn galloping_search_agrees_with_a_binary_search() {
        // Tokens at 0, 3, 6, ... (two of them at each start, as a zero-width token would be).
        let tokens: Vec<Tok> = (0..40_u32)
            .map(|i| Tok {
                kind: TokenKind::Name,
                range: TextRange::new(TextSize::new(i / 2 * 3), TextSize::new(i / 2 * 3 + 2)),
            })
            .collect();
        for from in 0..=tokens.len() {
            for at in 0..70 {
                let at = TextSize::new(at);
                let expected = from + tokens[from..].partition_point(|t| t.range.start() < at);
                assert_eq!(
                    first_at_or_after(&tokens, from, at),
                    expected,
                    "{from} {at:?}"
                );
            }
        }
        assert_eq!(
            first_at_or_after(&tokens, 99, TextSize::new(5)),
            tokens.len()
        );
    }

    #[test]
    fn items_interleave_tokens_and_children() {
        let tree = parse("x == None", Grammar::Expression).expect("parses");
        assert_eq!(
            shape(&tree, 0),
            "ModExpression[ExprCompare[ExprName[x] == ExprNoneLiteral[None]]]"
        );
        let tree = parse("yaml.load(fh)", Grammar::Expression).expect("parses");
        assert_eq!(
            shape(&tree, 0),
            "ModExpression[ExprCall[ExprAttribute[ExprName[yaml] . Identifier[load]] \
             Arguments[( ExprName[fh] )]]]"
        );
    }

    #[test]
    fn wrapping_parentheses_fold_into_the_child() {
        let tree = parse("(a or b) == None", Grammar::Expression).expect("parses");
        assert_eq!(
            shape(&tree, 0),
            "ModExpression[ExprCompare[ExprBoolOp[ExprName[a] or ExprName[b]] == ExprNoneLiteral[None]]]"
        );
        let compare = tree.children(0).next().expect("compare");
        let left = tree.children(compare).next().expect("left");
        assert_eq!(tree.text(tree.nodes[left].outer), "(a or b)");
        // A call's own parentheses stay with its arguments.
        let tree = parse("f((x))", Grammar::Expression).expect("parses");
        assert_eq!(
            shape(&tree, 0),
            "ModExpression[ExprCall[ExprName[f] Arguments[( ExprName[x] )]]]"
        );
    }

    #[test]
    fn syntax_errors_are_reported() {
        let err = parse("x ==", Grammar::Expression).expect_err("does not parse");
        assert!(err.1 <= 4, "{err:?}");
    }
}
