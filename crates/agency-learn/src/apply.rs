//! Matching a template at a finding's site and applying the rewrite as byte edits.
//!
//! From the deepest node at the site, up to four ancestors are tried against the template's
//! root (for statement templates, the runs of sibling statements that hold the candidate). A
//! template node matches a source node of the same kind whose items (tokens and children) match
//! one by one; a hole matches a node of a fitting kind, a run of arguments, parameters or
//! statements where its every occurrence allows one, or part of a string token. A hole seen
//! twice must bind the same token stream. Only the syntax tree is consulted, so nothing inside a
//! string or comment ever matches code.

use ruff_python_ast::token::TokenKind;
use ruff_python_ast::{NodeKind, OperatorPrecedence};
use ruff_text_size::{Ranged, TextRange, TextSize};

use crate::Error;
use crate::template::{CompiledRewrite, HoleKind, Piece, Segment, Slot, segments};
use crate::tree::{self, Grammar, Item, Tree};

/// A finding's location: 1-based line and, when the tool gives one, 1-based column (counted in
/// characters, as ruff and mypy count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Site {
    /// 1-based line.
    pub line: u32,
    /// 1-based column in characters, if known.
    pub column: Option<u32>,
}

impl Site {
    /// A site known by its line only.
    pub fn line(line: u32) -> Site {
        Site { line, column: None }
    }

    /// A site known by line and column.
    pub fn at(line: u32, column: u32) -> Site {
        Site {
            line,
            column: Some(column),
        }
    }
}

/// One replacement: bytes `start..end` of the source become `content`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    /// First byte replaced.
    pub start: usize,
    /// One past the last byte replaced (`start` for an insertion).
    pub end: usize,
    /// The replacement (empty for a deletion).
    pub content: String,
}

/// The edits of one fix: sorted by `start`, non-overlapping, byte offsets into the source.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fix {
    /// Sorted by `start`, non-overlapping.
    pub edits: Vec<Edit>,
}

impl Fix {
    /// The source with the edits applied. Fails if the edits are unsorted, overlap or fall
    /// outside the source or off a character boundary.
    pub fn apply_to(&self, source: &str) -> Result<String, Error> {
        let mut out = String::with_capacity(source.len());
        let mut at = 0;
        for edit in &self.edits {
            if edit.start < at
                || edit.end < edit.start
                || !source.is_char_boundary(edit.start)
                || !source.is_char_boundary(edit.end)
                || edit.end > source.len()
            {
                return Err(Error::Edits { at: edit.start });
            }
            out.push_str(&source[at..edit.start]);
            out.push_str(&edit.content);
            at = edit.end;
        }
        out.push_str(&source[at..]);
        Ok(out)
    }
}

/// A Python file parsed once, to match many rewrites against.
#[derive(Debug, Clone)]
pub struct ParsedSource {
    pub(crate) tree: Tree,
}

impl ParsedSource {
    /// The text that was parsed.
    pub fn source(&self) -> &str {
        &self.tree.source
    }
}

/// Parses a Python module. A syntax error is [`Error::Source`]: rewrites only apply to code
/// that parses, so that a match is a match on the real syntax tree.
pub fn parse_source(source: &str) -> Result<ParsedSource, Error> {
    let tree = tree::parse(source, Grammar::Module)
        .map_err(|(cause, offset)| Error::Source { cause, offset })?;
    Ok(ParsedSource { tree })
}

/// A hole's binding: a byte range of the source; `literal` for part of a string token.
#[derive(Debug, Clone, Copy)]
struct Binding {
    hole: usize,
    range: TextRange,
    literal: bool,
    /// The source node bound, for a hole bound to one node.
    node: Option<usize>,
}

/// A successful match: the matched range of the source and the holes' bindings.
struct Found {
    range: TextRange,
    bindings: Vec<Binding>,
}

struct Matcher<'a> {
    rewrite: &'a CompiledRewrite,
    t: &'a Tree,
    s: &'a Tree,
    bindings: Vec<Binding>,
}

impl Matcher<'_> {
    fn hole_of(&self, t_node: usize) -> Option<usize> {
        let hole = self.rewrite.before.node_hole[t_node]?;
        // Only the topmost node of a pass-through chain is the hole.
        let parent = self.t.nodes[t_node].parent?;
        (self.rewrite.before.node_hole[parent] != Some(hole)).then_some(hole)
    }

    fn bind(&mut self, hole: usize, range: TextRange, literal: bool, node: Option<usize>) -> bool {
        if let Some(previous) = self.bindings.iter().find(|b| b.hole == hole) {
            let equal = if literal || previous.literal {
                self.s.text(previous.range) == self.s.text(range)
            } else {
                self.s.key(previous.range) == self.s.key(range)
            };
            return equal;
        }
        self.bindings.push(Binding {
            hole,
            range,
            literal,
            node,
        });
        true
    }

    /// Whether source node `s_node` may fill hole `hole` standing at template node `t_node`.
    fn fits(&self, hole: usize, t_node: usize, s_node: usize) -> bool {
        let t = &self.t.nodes[t_node];
        let s = &self.s.nodes[s_node];
        match self.rewrite.holes[hole].kind {
            HoleKind::Stmts => s.is_stmt,
            HoleKind::Ident | HoleKind::Attr => {
                if !t.is_expr {
                    s.kind == t.kind
                } else if self.rewrite.name_only[hole] {
                    s.kind == NodeKind::ExprName
                } else {
                    // A binding target: a name, an attribute, a subscript or an unpacking.
                    matches!(
                        s.kind,
                        NodeKind::ExprName
                            | NodeKind::ExprAttribute
                            | NodeKind::ExprSubscript
                            | NodeKind::ExprTuple
                            | NodeKind::ExprList
                    )
                }
            }
            HoleKind::Expr | HoleKind::Literal => {
                if !t.is_expr {
                    s.kind == t.kind
                } else if self.rewrite.in_lists[hole] {
                    (s.is_expr && s.kind != NodeKind::ExprSlice) || s.kind == NodeKind::Keyword
                } else {
                    s.is_expr && !matches!(s.kind, NodeKind::ExprStarred | NodeKind::ExprSlice)
                }
            }
        }
    }

    fn node(&mut self, t_node: usize, s_node: usize) -> bool {
        if let Some(hole) = self.hole_of(t_node) {
            return self.fits(hole, t_node, s_node)
                && self.bind(hole, self.s.nodes[s_node].outer, false, Some(s_node));
        }
        let (t, s) = (&self.t.nodes[t_node], &self.s.nodes[s_node]);
        if t.kind != s.kind {
            return false;
        }
        let mark = self.bindings.len();
        let (t_items, s_items) = (t.items.as_slice(), s.items.as_slice());
        if self.seq(t_items, s_items, false) == Some(s_items.len()) {
            true
        } else {
            self.bindings.truncate(mark);
            false
        }
    }

    /// Matches template items against a prefix of source items (all of them unless
    /// `prefix`); returns how many source items matched.
    fn seq(&mut self, t_items: &[Item], s_items: &[Item], prefix: bool) -> Option<usize> {
        let Some((first, rest)) = t_items.split_first() else {
            return (prefix || s_items.is_empty()).then_some(0);
        };
        let mark = self.bindings.len();
        match *first {
            Item::Token(tt) => {
                let Some(Item::Token(st)) = s_items.first() else {
                    return None;
                };
                if self.token(tt, *st)
                    && let Some(n) = self.seq(rest, &s_items[1..], prefix)
                {
                    return Some(n + 1);
                }
                self.bindings.truncate(mark);
                None
            }
            Item::Node(tn) => {
                if let Some(hole) = self.hole_of(tn)
                    && self.rewrite.sequence[hole]
                {
                    let max = self.run_len(hole, s_items);
                    for len in (1..=max).rev() {
                        if !self.run_end_ok(s_items[len - 1]) {
                            continue;
                        }
                        let range = TextRange::new(
                            self.item_range(s_items[0]).start(),
                            self.item_range(s_items[len - 1]).end(),
                        );
                        if self.bind(hole, range, false, None)
                            && let Some(n) = self.seq(rest, &s_items[len..], prefix)
                        {
                            return Some(n + len);
                        }
                        self.bindings.truncate(mark);
                    }
                    return None;
                }
                let Some(Item::Node(sn)) = s_items.first() else {
                    return None;
                };
                if self.node(tn, *sn)
                    && let Some(n) = self.seq(rest, &s_items[1..], prefix)
                {
                    return Some(n + 1);
                }
                self.bindings.truncate(mark);
                None
            }
        }
    }

    fn item_range(&self, item: Item) -> TextRange {
        match item {
            Item::Node(n) => self.s.nodes[n].outer,
            Item::Token(t) => self.s.tokens[t].range,
        }
    }

    /// The longest run a sequence hole may take from the start of `s_items`: statements for a
    /// statement hole (never an `else` or `except` clause), else nodes, commas and the `*`,
    /// `**`, `/` markers of parameter lists.
    fn run_len(&self, hole: usize, s_items: &[Item]) -> usize {
        let statements = self.rewrite.holes[hole].kind == HoleKind::Stmts;
        let mut len = 0;
        for item in s_items {
            let ok = match item {
                Item::Node(n) => !statements || self.s.nodes[*n].is_stmt,
                Item::Token(_) if statements => false,
                Item::Token(t) => matches!(
                    self.s.tokens[*t].kind,
                    TokenKind::Comma | TokenKind::Star | TokenKind::DoubleStar | TokenKind::Slash
                ),
            };
            if !ok {
                break;
            }
            len += 1;
        }
        if matches!(s_items.first(), Some(Item::Token(t)) if self.s.tokens[*t].kind == TokenKind::Comma)
        {
            return 0;
        }
        len
    }

    fn run_end_ok(&self, item: Item) -> bool {
        match item {
            Item::Node(_) => true,
            Item::Token(t) => self.s.tokens[t].kind != TokenKind::Comma,
        }
    }

    fn token(&mut self, tt: usize, st: usize) -> bool {
        let (t_tok, s_tok) = (self.t.tokens[tt], self.s.tokens[st]);
        if t_tok.kind != s_tok.kind {
            return false;
        }
        let t_text = self.t.token_text(tt);
        let s_text = self.s.token_text(st);
        match segments(t_text) {
            None => t_text == s_text,
            Some(segs) => {
                let mark = self.bindings.len();
                let base = s_tok.range.start().to_usize();
                if self.literal(&segs, s_text, base, 0) {
                    true
                } else {
                    self.bindings.truncate(mark);
                    false
                }
            }
        }
    }

    /// Matches the segments of a template token against `text[at..]`, binding holes to parts.
    fn literal(&mut self, segs: &[Segment<'_>], text: &str, base: usize, at: usize) -> bool {
        let Some((first, rest)) = segs.split_first() else {
            return at == text.len();
        };
        match first {
            Segment::Text(lit) => {
                text[at..].starts_with(lit) && self.literal(rest, text, base, at + lit.len())
            }
            Segment::Hole(hole) => {
                let mark = self.bindings.len();
                for end in (at..=text.len()).filter(|e| text.is_char_boundary(*e)) {
                    let range = TextRange::new(
                        TextSize::try_from(base + at).unwrap_or_default(),
                        TextSize::try_from(base + end).unwrap_or_default(),
                    );
                    if self.bind(*hole, range, true, None) && self.literal(rest, text, base, end) {
                        return true;
                    }
                    self.bindings.truncate(mark);
                }
                false
            }
        }
    }
}

/// The byte offset of a site, or the first non-blank character of its line without a column.
fn site_offset(source: &str, site: Site) -> Result<(usize, usize, usize), Error> {
    let n_lines = source.lines().count().max(1);
    let line_idx = site.line.checked_sub(1).ok_or(Error::Site {
        line: site.line,
        lines: n_lines,
    })? as usize;
    let mut start = 0;
    for _ in 0..line_idx {
        match source[start..].find('\n') {
            Some(nl) => start += nl + 1,
            None => {
                return Err(Error::Site {
                    line: site.line,
                    lines: n_lines,
                });
            }
        }
    }
    let end = source[start..]
        .find('\n')
        .map_or(source.len(), |nl| start + nl);
    let line = &source[start..end];
    let offset = match site.column {
        Some(column) => {
            let skip = column.saturating_sub(1) as usize;
            start + line.char_indices().nth(skip).map_or(line.len(), |(i, _)| i)
        }
        None => start + (line.len() - line.trim_start().len()),
    };
    Ok((offset, start, end))
}

fn find(rewrite: &CompiledRewrite, s: &Tree, site: Site) -> Result<Option<Found>, Error> {
    let (offset, line_start, line_end) = site_offset(&s.source, site)?;
    let offset = TextSize::try_from(offset).unwrap_or_default();
    // Without a column: the nodes that start on the finding's line, in source order. Then the
    // deepest node at the site and up to four of its ancestors.
    let mut candidates = Vec::new();
    if site.column.is_none() {
        candidates.extend(s.nodes.iter().enumerate().filter_map(|(id, n)| {
            let start = n.outer.start().to_usize();
            (start >= line_start && start < line_end.max(line_start + 1)).then_some(id)
        }));
    }
    let mut at = s.deepest_at(offset);
    for _ in 0..5 {
        let Some(id) = at else { break };
        if !candidates.contains(&id) {
            candidates.push(id);
        }
        at = s.nodes[id].parent;
    }
    let mut m = Matcher {
        rewrite,
        t: &rewrite.before.tree,
        s,
        bindings: Vec::new(),
    };
    let t_top = m.t.top_items();
    for candidate in candidates {
        m.bindings.clear();
        match rewrite.before.grammar {
            Grammar::Expression => {
                let [Item::Node(t_root)] = t_top else {
                    return Ok(None);
                };
                if m.node(*t_root, candidate) {
                    let range = s.nodes[candidate].range;
                    return Ok(Some(Found {
                        range,
                        bindings: std::mem::take(&mut m.bindings),
                    }));
                }
            }
            Grammar::Module => {
                if !s.is_statement(candidate) {
                    continue;
                }
                let Some((parent, run_start, run_end, pos)) = s.body_run(candidate) else {
                    continue;
                };
                let items = &s.nodes[parent].items[..run_end];
                for start in (run_start..=pos).rev() {
                    m.bindings.clear();
                    if let Some(n) = m.seq(t_top, &items[start..], true)
                        && n > 0
                        && start + n > pos
                    {
                        let (Item::Node(a), Item::Node(b)) = (items[start], items[start + n - 1])
                        else {
                            continue;
                        };
                        let range =
                            TextRange::new(s.nodes[a].range.start(), s.nodes[b].range.end());
                        // Statements sharing a line (`a; f(x)`, `if c: f(x)`) cannot take a
                        // rewrite that writes whole lines.
                        if !owns_lines(&s.source, range) {
                            continue;
                        }
                        return Ok(Some(Found {
                            range,
                            bindings: std::mem::take(&mut m.bindings),
                        }));
                    }
                }
            }
        }
    }
    Ok(None)
}

/// True when only blanks precede `range` on its first line and only blanks or a comment
/// follow it on its last.
fn owns_lines(source: &str, range: TextRange) -> bool {
    let (start, end) = (range.start().to_usize(), range.end().to_usize());
    let before = &source[tree::line_start(source, start)..start];
    let line_end = source[end..].find('\n').map_or(source.len(), |i| end + i);
    let after = source[end..line_end].trim_start();
    before.trim().is_empty() && (after.is_empty() || after.starts_with('#'))
}

/// Renders the after template with the bindings, new lines indented like the anchor line.
fn render(
    rewrite: &CompiledRewrite,
    s_tree: &Tree,
    found: &Found,
    anchor: &str,
) -> Result<String, Error> {
    let source = s_tree.source.as_str();
    let unit = indent_unit(source);
    // New lines end like the file's lines.
    let newline = if source.contains("\r\n") {
        "\r\n"
    } else {
        "\n"
    };
    let mut out = String::new();
    let mut pending_indent = false;
    for piece in &rewrite.after.pieces {
        match piece {
            Piece::Text(text) => {
                let mut spaces = 0;
                for c in text.chars() {
                    if c == '\n' {
                        out.push_str(newline);
                        pending_indent = true;
                        spaces = 0;
                    } else if pending_indent && c == ' ' {
                        spaces += 1;
                    } else {
                        if pending_indent {
                            out.push_str(anchor);
                            out.push_str(&indent_levels(spaces, unit));
                            pending_indent = false;
                        }
                        out.push(c);
                    }
                }
                if pending_indent && spaces > 0 {
                    out.push_str(anchor);
                    out.push_str(&indent_levels(spaces, unit));
                    pending_indent = false;
                }
            }
            Piece::Hole { hole, slot, .. } => {
                let binding = found
                    .bindings
                    .iter()
                    .find(|b| b.hole == *hole)
                    .ok_or_else(|| Error::Unbound {
                        hole: rewrite.holes[*hole].name.clone(),
                    })?;
                if pending_indent {
                    out.push_str(anchor);
                    pending_indent = false;
                }
                let text = &source[binding.range];
                let wrap = rewrite.holes[*hole].kind == HoleKind::Expr
                    && !rewrite.sequence[*hole]
                    && binding.node.is_some_and(|n| needs_parens(s_tree, n, *slot));
                if wrap {
                    out.push('(');
                }
                let line_begin = out.rfind('\n').map_or(0, |i| i + 1);
                let current = &out[line_begin..];
                let mut new_indent = current
                    [..current.len() - current.trim_start_matches([' ', '\t']).len()]
                    .to_string();
                // The first rendered line continues the source line of the matched code.
                if line_begin == 0 {
                    new_indent.insert_str(0, anchor);
                }
                let old_indent = tree::line_indent(source, binding.range.start().to_usize());
                for (i, line) in text.split('\n').enumerate() {
                    if i > 0 {
                        out.push('\n');
                        if line.trim().is_empty() {
                            continue;
                        }
                        match line.strip_prefix(old_indent) {
                            Some(rest) if old_indent != new_indent => {
                                out.push_str(&new_indent);
                                out.push_str(rest);
                            }
                            _ => out.push_str(line),
                        }
                    } else {
                        out.push_str(line);
                    }
                }
                if wrap {
                    out.push(')');
                }
            }
        }
    }
    Ok(out)
}

/// True when the code of `range` has a line break between two tokens outside any bracket.
fn breaks_outside_brackets(s: &Tree, range: TextRange) -> bool {
    let mut depth = 0usize;
    let mut previous_end: Option<TextSize> = None;
    for token in s.tokens_in(range) {
        if depth == 0
            && let Some(end) = previous_end
            && s.text(TextRange::new(end, token.range.start()))
                .contains('\n')
        {
            return true;
        }
        match token.kind {
            TokenKind::Lpar | TokenKind::Lsqb | TokenKind::Lbrace => depth += 1,
            TokenKind::Rpar | TokenKind::Rsqb | TokenKind::Rbrace => {
                depth = depth.saturating_sub(1);
            }
            _ => {}
        }
        previous_end = Some(token.range.end());
    }
    false
}

/// Whether the code of node `id` needs parentheses in `slot` to keep its meaning and syntax:
/// an operand that binds more loosely than its new operator (`?v is not None` with `a or b`),
/// a bare multi-line expression in a statement clause, a generator that only a call's
/// parentheses delimited.
fn needs_parens(s: &Tree, id: usize, slot: Slot) -> bool {
    let node = &s.nodes[id];
    if !node.is_expr || node.outer != node.range {
        // Not an expression, or already wrapped in its own parentheses.
        return false;
    }
    let text = s.text(node.range);
    let own_brackets = text.starts_with('(');
    if node.kind == NodeKind::ExprGenerator && !own_brackets {
        return !matches!(slot, Slot::Other | Slot::SoleArgument);
    }
    // A line break outside the node's own brackets (implicitly concatenated strings, an
    // operator or a method chain continued on the next line) holds only inside brackets.
    let bare_multiline = text.contains('\n') && breaks_outside_brackets(s, node.range);
    // A tuple without its own parentheses binds loosest of all (`a, b`).
    let own = if node.kind == NodeKind::ExprTuple && !own_brackets {
        OperatorPrecedence::None
    } else {
        node.precedence.unwrap_or(OperatorPrecedence::Atomic)
    };
    match slot {
        Slot::Operand { precedence, left } => {
            let comparison = OperatorPrecedence::ComparisonsMembershipIdentity;
            bare_multiline
                || own < precedence
                // Equal binding: the side decides (`a - (b - c)`, `(a ** b) ** c`), and
                // comparisons never nest without parentheses (`(a < b) == c`).
                || (own == precedence
                    && (own == comparison || left == precedence.is_right_associative()))
        }
        // `if (x := f()):`, `if (a, b):` and `if (yield x):` keep their parentheses.
        Slot::Clause => bare_multiline || own <= OperatorPrecedence::Assign,
        Slot::SoleArgument | Slot::Bracketed | Slot::Other => false,
    }
}

/// A lexeme of a code fragment: a token (a whole string or comment included) or the blank
/// text between two tokens. `comment` marks comments, `newline` lexemes holding a line break.
#[derive(Debug, Clone, Copy)]
struct Lexeme<'a> {
    text: &'a str,
    start: usize,
    comment: bool,
}

/// Splits `text` into lexemes with ruff's lexer; they cover `text` exactly.
fn lexemes(text: &str) -> Vec<Lexeme<'_>> {
    let parsed = ruff_python_parser::parse_unchecked(
        text,
        ruff_python_parser::ParseOptions::from(ruff_python_parser::Mode::Module),
    );
    let mut out = Vec::new();
    let mut at = 0;
    for token in parsed.tokens() {
        let (start, end) = (
            token.range().start().to_usize(),
            token.range().end().to_usize(),
        );
        if start >= end || start < at || end > text.len() {
            continue;
        }
        if start > at {
            out.push(Lexeme {
                text: &text[at..start],
                start: at,
                comment: false,
            });
        }
        out.push(Lexeme {
            text: &text[start..end],
            start,
            comment: token.kind() == TokenKind::Comment,
        });
        at = end;
    }
    if at < text.len() {
        out.push(Lexeme {
            text: &text[at..],
            start: at,
            comment: false,
        });
    }
    out
}

/// The edits that turn `old` (at byte `base` of the source) into `new`: a diff of lexemes, so
/// unchanged tokens between changes stay untouched. A comment the diff would delete is kept
/// when it still ends its line afterwards: templates carry no comments, so deleting one would
/// lose the user's text rather than apply the rewrite.
fn diff_edits(base: usize, old: &str, new: &str) -> Vec<Edit> {
    use similar::{Algorithm, DiffOp, capture_diff_slices};
    let old_lex = lexemes(old);
    let new_lex = lexemes(new);
    let old_texts: Vec<&str> = old_lex.iter().map(|l| l.text).collect();
    let new_texts: Vec<&str> = new_lex.iter().map(|l| l.text).collect();
    let ops = capture_diff_slices(Algorithm::Myers, &old_texts, &new_texts);
    let old_end = |i: usize| old_lex.get(i).map_or(old.len(), |l| l.start);
    let new_text = |from: usize, len: usize| -> String {
        new_lex[from..from + len].iter().map(|l| l.text).collect()
    };
    let mut edits: Vec<Edit> = Vec::new();
    for (n, op) in ops.iter().enumerate() {
        let (old_index, old_len, new_index, new_len) = match *op {
            DiffOp::Equal { .. } => continue,
            DiffOp::Delete {
                old_index,
                old_len,
                new_index,
            } => (old_index, old_len, new_index, 0),
            DiffOp::Insert {
                old_index,
                new_index,
                new_len,
            } => (old_index, 0, new_index, new_len),
            DiffOp::Replace {
                old_index,
                old_len,
                new_index,
                new_len,
            } => (old_index, old_len, new_index, new_len),
        };
        let mut kept_end = old_index + old_len;
        // Keep a trailing comment (and the blanks before it) whose line break survives.
        let next_is_newline = match ops.get(n + 1) {
            Some(DiffOp::Equal { old_index, .. }) => old_lex[*old_index].text.contains('\n'),
            None => true,
            _ => false,
        };
        if old_len > 0 && next_is_newline && old_lex[kept_end - 1].comment {
            kept_end -= 1;
            while kept_end > old_index && old_lex[kept_end - 1].text.trim().is_empty() {
                kept_end -= 1;
            }
        }
        let edit = Edit {
            start: base + old_end(old_index),
            end: base + old_end(kept_end),
            content: new_text(new_index, new_len),
        };
        if edit.start == edit.end && edit.content.is_empty() {
            continue;
        }
        match edits.last_mut() {
            Some(last) if last.end == edit.start => {
                last.end = edit.end;
                last.content.push_str(&edit.content);
            }
            _ => edits.push(edit),
        }
    }
    edits
}

/// Leading spaces of a template line in units of four, written in the file's indent unit.
fn indent_levels(spaces: usize, unit: &str) -> String {
    let mut out = unit.repeat(spaces / 4);
    out.push_str(&" ".repeat(spaces % 4));
    out
}

/// The file's indentation unit: the indentation of the first line that opens a block's body
/// (after a line ending in `:`), a tab or spaces; four spaces when there is none.
/// Continuation lines of brackets do not count.
fn indent_unit(source: &str) -> &str {
    let mut opens = false;
    for line in source.lines() {
        let body = line.trim_start_matches([' ', '\t']);
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        if opens && body.len() < line.len() {
            let indent = &line[..line.len() - body.len()];
            return if indent.starts_with('\t') {
                "\t"
            } else {
                indent
            };
        }
        opens = body.trim_end().ends_with(':') && body.len() == line.len();
    }
    "    "
}

/// Matches `rewrite`'s before template at `site` and returns the fix that turns the matched
/// code into the after template.
///
/// The template's root is tried at the deepest node covering the site and up to four of its
/// ancestors; without a column, first at the nodes starting on the site's line. A statement
/// template is tried at every start in the block that keeps the candidate covered.
/// `Ok(None)` when nothing there matches, or when the rewrite would change nothing; there is
/// no fuzzy fallback. The edits cover only the tokens the rewrite changes (a diff of the
/// matched code against its rewrite, token by token); hole text is copied from the source
/// verbatim, so comments and formatting inside holes survive, and so does a comment at the end
/// of a rewritten line. New lines take the indentation of the matched code's line, with the
/// template's own indentation written in the file's indent unit (tabs respected). A statement
/// template whose after is empty deletes whole lines.
pub fn apply(
    rewrite: &CompiledRewrite,
    source: &ParsedSource,
    site: Site,
) -> Result<Option<Fix>, Error> {
    apply_tree(rewrite, &source.tree, site)
}

/// [`apply`] on a tree.
pub(crate) fn apply_tree(
    rewrite: &CompiledRewrite,
    tree: &Tree,
    site: Site,
) -> Result<Option<Fix>, Error> {
    let Some(found) = find(rewrite, tree, site)? else {
        return Ok(None);
    };
    let text = &tree.source;
    let mut start = found.range.start().to_usize();
    let mut end = found.range.end().to_usize();
    let anchor = tree::line_indent(text, start).to_string();
    let mut rendered = render(rewrite, tree, &found, &anchor)?;
    if rendered.trim().is_empty() && rewrite.after.grammar == Grammar::Module {
        rendered.clear();
        let line_begin = tree::line_start(text, start);
        let rest_end = text[end..].find('\n').map_or(text.len(), |i| end + i + 1);
        if text[line_begin..start].trim().is_empty() && text[end..rest_end].trim().is_empty() {
            start = line_begin;
            end = rest_end;
        }
    }
    let old = &text[start..end];
    if old == rendered {
        return Ok(None);
    }
    let edits = diff_edits(start, old, &rendered);
    if edits.is_empty() {
        return Ok(None);
    }
    Ok(Some(Fix { edits }))
}

/// A fix applied and checked by [`check_fix`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The source with the fix applied; it parses.
    pub fixed: String,
    /// Applying the rewrite again where the fix wrote new code changes nothing. False for
    /// templates whose after side matches their before side (`?t + ?n` -> `?t + str(?n)`):
    /// safe once, since the finding is gone, but they must not be applied in a loop.
    pub idempotent: bool,
}

/// Applies `fix` to `source` and checks the result: it must parse ([`Error::Reparse`]
/// otherwise), and it says whether applying `rewrite` again where the fix wrote new code would
/// change nothing (a fix that only deletes is idempotent).
pub fn check_fix(rewrite: &CompiledRewrite, source: &str, fix: &Fix) -> Result<Checked, Error> {
    let fixed = fix.apply_to(source)?;
    let parsed = parse_source(&fixed).map_err(|err| match err {
        Error::Source { cause, offset } => Error::Reparse { cause, offset },
        other => other,
    })?;
    // Re-apply where new code was written; a fix that only deletes leaves nothing to re-match.
    let mut shift: isize = 0;
    let mut written = None;
    for edit in &fix.edits {
        if !edit.content.is_empty() {
            written = Some(edit.start.saturating_add_signed(shift));
            break;
        }
        shift -= (edit.end - edit.start) as isize;
    }
    let Some(at) = written else {
        return Ok(Checked {
            fixed,
            idempotent: true,
        });
    };
    let before = &fixed[..at];
    let line = before.matches('\n').count() + 1;
    let column = before[tree::line_start(&fixed, at)..].chars().count() + 1;
    let site = Site::at(
        u32::try_from(line).unwrap_or(u32::MAX),
        u32::try_from(column).unwrap_or(u32::MAX),
    );
    let idempotent = match apply(rewrite, &parsed, site)? {
        Some(again) => again.apply_to(&fixed)? == fixed,
        None => true,
    };
    Ok(Checked { fixed, idempotent })
}

/// [`check_fix`], strict: a fix that is not idempotent is [`Error::NotIdempotent`]. Returns the
/// fixed source.
pub fn apply_checked(rewrite: &CompiledRewrite, source: &str, fix: &Fix) -> Result<String, Error> {
    let checked = check_fix(rewrite, source, fix)?;
    if !checked.idempotent {
        let offset = fix
            .edits
            .iter()
            .find(|e| !e.content.is_empty())
            .map_or(0, |e| e.start);
        return Err(Error::NotIdempotent { offset });
    }
    Ok(checked.fixed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile;
    use agency_core::pattern::Rewrite;

    /// Applies `before -> after` at `site` of `source`; the fixed source, or `None` for no match.
    fn check(before: &str, after: &str, source: &str, site: Site) -> Option<String> {
        let rewrite = compile(&Rewrite {
            before: before.into(),
            after: after.into(),
        })
        .expect("compiles");
        let parsed = parse_source(source).expect("parses");
        let fix = apply(&rewrite, &parsed, site).expect("site is valid")?;
        for pair in fix.edits.windows(2) {
            assert!(
                pair[0].end <= pair[1].start,
                "sorted, non-overlapping: {fix:?}"
            );
        }
        let fixed = fix.apply_to(source).expect("edits fit");
        parse_source(&fixed).expect("fixed source parses");
        if let Err(err) = apply_checked(&rewrite, source, &fix) {
            return Some(format!("{fixed}{err}"));
        }
        Some(fixed)
    }

    #[test]
    fn edits_touch_only_what_changes() {
        let rewrite = compile(&Rewrite {
            before: "?x == None".into(),
            after: "?x is None".into(),
        })
        .expect("compiles");
        let source = "if (a or b) == None:  # why\n    pass\n";
        let parsed = parse_source(source).expect("parses");
        let fix = apply(&rewrite, &parsed, Site::line(1))
            .expect("valid")
            .expect("matches");
        assert_eq!(
            fix.edits,
            [Edit {
                start: 12,
                end: 14,
                content: "is".into()
            }]
        );
    }

    #[test]
    fn rewrites() {
        let cases: &[(&str, &str, &str, Site, Option<&str>)] = &[
            // Column of the finding picks the node.
            (
                "?x == None",
                "?x is None",
                "y = a == None or b == None\n",
                Site::at(1, 19),
                Some("y = a == None or b is None\n"),
            ),
            // Comments inside holes survive; so does the comment ending a rewritten line.
            (
                "if ?c == True:\n    ?body",
                "if ?c:\n    ?body",
                "def f():\n    if ok(1,  # one\n          2) == True:  # note\n        run()\n",
                Site::line(2),
                Some("def f():\n    if ok(1,  # one\n          2):  # note\n        run()\n"),
            ),
            // New statements take the anchor's indentation; tabs are respected.
            (
                "?f(?v)",
                "if ?v is not None:\n    ?f(?v)",
                "def f(x):\n\tsend(x)\n",
                Site::line(2),
                Some("def f(x):\n\tif x is not None:\n\t\tsend(x)\n"),
            ),
            // A block hole moves with its statements, re-indented.
            (
                "for ?i in ?xs:\n    try:\n        ?body\n    except ?e:\n        ?h",
                "try:\n    for ?i in ?xs:\n        ?body\nexcept ?e:\n    ?h",
                "for x in xs:\n    try:\n        a(x)\n        b(x)\n    except E:\n        pass\n",
                Site::line(1),
                Some("try:\n    for x in xs:\n        a(x)\n        b(x)\nexcept E:\n    pass\n"),
            ),
            // Argument and parameter runs.
            (
                "requests.?m(?args)",
                "requests.?m(?args, timeout=10)",
                "r = requests.get(url, headers={\"a\": 1})\n",
                Site::line(1),
                // The seed template matches its own output: the check catches it.
                Some(
                    "r = requests.get(url, headers={\"a\": 1}, timeout=10)\nthe rewrite is not \
                 idempotent: applied again at byte 38 it changes the code again",
                ),
            ),
            (
                "def ?f(?params, ?p=[]):\n    ?body",
                "def ?f(?params, ?p=None):\n    if ?p is None:\n        ?p = []\n    ?body",
                "def f(a, *, b=[]):\n    return b\n",
                Site::line(1),
                Some("def f(a, *, b=None):\n    if b is None:\n        b = []\n    return b\n"),
            ),
            // Holes inside strings.
            (
                "?c.execute(f\"?sql'{?v}'\")",
                "?c.execute(\"?sql%s\", (?v,))",
                "cur.execute(f\"SELECT * FROM t WHERE n = '{name}'\")\n",
                Site::line(1),
                Some("cur.execute(\"SELECT * FROM t WHERE n = %s\", (name,))\n"),
            ),
            // Deleting statements deletes their lines.
            (
                "import ?m",
                "",
                "import os\nimport sys\nprint(sys)\n",
                Site::line(1),
                Some("import sys\nprint(sys)\n"),
            ),
            // A sequence anchored on its second statement.
            (
                "?n = ?v\nimport ?m",
                "import ?m\n\n?n = ?v",
                "x = 1\nimport os\n",
                Site::line(2),
                Some("import os\n\nx = 1\n"),
            ),
            // Substituted code keeps its meaning: parentheses where precedence or line
            // structure needs them, none where the slot is bracketed.
            (
                "?f(?v)",
                "if ?v is not None:\n    ?f(?v)",
                "send(a or b)\nsend(x for x in y)\nsend('a'\n     'b')\n",
                Site::line(1),
                Some(
                    "if (a or b) is not None:\n    send(a or b)\nsend(x for x in y)\nsend('a'\n     'b')\n",
                ),
            ),
            (
                "?f(?v)",
                "if ?v is not None:\n    ?f(?v)",
                "send(x for x in y)\n",
                Site::line(1),
                Some("if (x for x in y) is not None:\n    send(x for x in y)\n"),
            ),
            (
                "?f(?v)",
                "if ?v is not None:\n    ?f(?v)",
                "send('a'\n     'b')\n",
                Site::line(1),
                // The call moves into a block: its continuation line moves with it.
                Some("if ('a'\n     'b') is not None:\n    send('a'\n         'b')\n"),
            ),
            // Equal precedence on the left needs no parentheses; on the right it does.
            (
                "double(?v)",
                "?v * 2",
                "v = double(a + b)\n",
                Site::line(1),
                Some("v = (a + b) * 2\n"),
            ),
            (
                "?x * 2",
                "2 * ?x",
                "v = a * b * 2\n",
                Site::line(1),
                Some("v = 2 * (a * b)\n"),
            ),
            (
                "?x + 1",
                "?x * 2",
                "v = a * b + 1\n",
                Site::line(1),
                Some("v = a * b * 2\n"),
            ),
            // Line endings follow the file.
            (
                "?f(?v)",
                "if ?v is not None:\n    ?f(?v)",
                "def f(x):\r\n    send(x)\r\n",
                Site::line(2),
                Some("def f(x):\r\n    if x is not None:\r\n        send(x)\r\n"),
            ),
            // A binding target may be an unpacking.
            (
                "for ?item in ?d.iteritems():\n    ?body",
                "for ?item in ?d.items():\n    ?body",
                "for k, v in d.iteritems():\n    use(k, v)\n",
                Site::line(1),
                Some("for k, v in d.items():\n    use(k, v)\n"),
            ),
            // Statements sharing a line cannot take a rewrite that writes lines.
            (
                "?f(?v)",
                "if ?v is not None:\n    ?f(?v)",
                "if c: send(x)\n",
                Site::line(1),
                None,
            ),
            // A block hole never swallows an `else` clause.
            (
                "for ?i in ?xs:\n    ?body",
                "for ?i in ?xs or ():\n    ?body",
                "for i in xs:\n    a(i)\nelse:\n    b()\n",
                Site::line(1),
                None,
            ),
            // Slices are not expressions on their own.
            ("?m[?k]", "?m[str(?k)]", "v = s[:3]\n", Site::line(1), None),
            // Kinds must agree: a statement template never matches inside an expression.
            (
                "?x != ?x",
                "math.isnan(?x)",
                "y = a != b\n",
                Site::line(1),
                None,
            ),
            (
                "?x is ?lit",
                "?x == ?lit",
                "y = (x  # c\n) is 1\n",
                Site::line(1),
                Some("y = (x  # c\n) == 1\n"),
            ),
        ];
        for (before, after, source, site, expected) in cases {
            let got = check(before, after, source, *site);
            assert_eq!(
                got.as_deref(),
                *expected,
                "{before} -> {after} on {source:?}"
            );
        }
    }

    #[test]
    fn check_fix_reports_idempotence_and_refuses_broken_syntax() {
        let rewrite = compile(&Rewrite {
            before: "?t + ?n".into(),
            after: "?t + str(?n)".into(),
        })
        .expect("compiles");
        let source = "s = a + n\n";
        let parsed = parse_source(source).expect("parses");
        let fix = apply(&rewrite, &parsed, Site::line(1))
            .expect("valid")
            .expect("matches");
        let checked = check_fix(&rewrite, source, &fix).expect("parses");
        assert_eq!(checked.fixed, "s = a + str(n)\n");
        assert!(!checked.idempotent, "`?t + ?n` matches its own output");
        assert!(matches!(
            apply_checked(&rewrite, source, &fix),
            Err(Error::NotIdempotent { .. })
        ));
        let broken = Fix {
            edits: vec![Edit {
                start: 4,
                end: 4,
                content: "(".into(),
            }],
        };
        assert!(matches!(
            check_fix(&rewrite, source, &broken),
            Err(Error::Reparse { .. })
        ));
    }

    #[test]
    fn sites_outside_the_source_are_errors() {
        let rewrite = compile(&Rewrite {
            before: "?x == None".into(),
            after: "?x is None".into(),
        })
        .expect("compiles");
        let parsed = parse_source("x\n").expect("parses");
        assert!(matches!(
            apply(&rewrite, &parsed, Site::line(3)),
            Err(Error::Site { .. })
        ));
        assert_eq!(
            apply(&rewrite, &parsed, Site::at(1, 99)).expect("valid"),
            None
        );
    }

    #[test]
    fn overlapping_edits_are_rejected() {
        let fix = Fix {
            edits: vec![
                Edit {
                    start: 2,
                    end: 4,
                    content: String::new(),
                },
                Edit {
                    start: 3,
                    end: 5,
                    content: String::new(),
                },
            ],
        };
        assert!(matches!(
            fix.apply_to("abcdef"),
            Err(Error::Edits { at: 3 })
        ));
    }
}
