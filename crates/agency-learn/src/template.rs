//! Templates: SmPL-like Python fragments with `?name` holes, parsed into syntax trees.
//!
//! A template is parsed by replacing every hole with a unique placeholder identifier
//! (`__agency_hole_<n>__`), parsing the result with ruff's parser, and mapping placeholders back
//! to holes. A placeholder can sit where an expression, a name, an attribute name, a parameter, an
//! import name or a statement goes, or inside a string literal.

use std::collections::BTreeMap;
use std::fmt;

use agency_core::pattern::Rewrite;
use ruff_python_ast::token::TokenKind;
use ruff_python_ast::{NodeKind, OperatorPrecedence};

use crate::Error;
use crate::tree::{self, Grammar, Item, Tree};

/// What a hole stands for, as LEARNING.md §1 names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HoleKind {
    /// A name: a binding target, a function or parameter name, an imported name or module.
    Ident,
    /// The name after a dot in an attribute access.
    Attr,
    /// Any expression (or, for `?args`/`?params` in an argument or parameter list, a run of
    /// them).
    Expr,
    /// Part of the text of a string literal.
    Literal,
    /// One or more statements of a block.
    Stmts,
}

impl HoleKind {
    /// The kind's name as written in a typed hole (`?x:Expr`).
    pub fn as_str(self) -> &'static str {
        match self {
            HoleKind::Ident => "Ident",
            HoleKind::Attr => "Attr",
            HoleKind::Expr => "Expr",
            HoleKind::Literal => "Literal",
            HoleKind::Stmts => "Stmts",
        }
    }

    fn from_name(name: &str) -> Option<HoleKind> {
        Some(match name {
            "Ident" => HoleKind::Ident,
            "Attr" => HoleKind::Attr,
            "Expr" => HoleKind::Expr,
            "Literal" => HoleKind::Literal,
            "Stmts" => HoleKind::Stmts,
            _ => return None,
        })
    }
}

impl fmt::Display for HoleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A named hole and the kind inferred from where it first appears (or declared as `?x:Kind`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hole {
    /// The name without `?`.
    pub name: String,
    pub kind: HoleKind,
}

/// A piece of template text: verbatim text or a hole (an index into the rewrite's hole table)
/// with the syntactic slot it fills.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    Text(String),
    Hole {
        hole: usize,
        /// Byte offset of the placeholder in the parsed text.
        at: usize,
        slot: Slot,
    },
}

/// Where an expression hole sits in its template, which decides whether code substituted
/// there needs parentheses to keep its meaning (`?v is not None` with `?v` bound to
/// `a or b` must become `(a or b) is not None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// The only argument of a call: anything fits, a bare generator too.
    SoleArgument,
    /// Inside brackets (an argument, a list element, a subscript index): anything but a bare
    /// generator fits.
    Bracketed,
    /// A whole clause of a statement (an assigned value, an `if` test): any one-line
    /// expression fits.
    Clause,
    /// An operand of an expression binding with `precedence` (an operator, an attribute
    /// access, a call), on its `left` or right: only tighter-binding code fits.
    Operand {
        precedence: OperatorPrecedence,
        left: bool,
    },
    /// Not an expression position (a name, a string part, statements).
    Other,
}

/// One side of a rewrite, parsed.
#[derive(Debug, Clone)]
pub struct Template {
    /// The template as written.
    text: String,
    /// The dedented template split at holes.
    pub(crate) pieces: Vec<Piece>,
    /// The parse of the dedented template with placeholders.
    pub(crate) tree: Tree,
    pub(crate) grammar: Grammar,
    /// For each tree node, the hole it stands for (set on every node of a pass-through chain
    /// such as `StmtExpr -> ExprName`).
    pub(crate) node_hole: Vec<Option<usize>>,
}

impl Template {
    /// The template text as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// True when the template is one expression; false when it is statements.
    pub fn is_expression(&self) -> bool {
        self.grammar == Grammar::Expression
    }
}

/// A before/after pair, parsed and checked, ready to match and apply.
#[derive(Debug, Clone)]
pub struct CompiledRewrite {
    pub(crate) before: Template,
    pub(crate) after: Template,
    /// Every hole of the pair, by index; before's holes come first.
    pub(crate) holes: Vec<Hole>,
    /// Holes that may bind a run of arguments, parameters or statements.
    pub(crate) sequence: Vec<bool>,
    /// Holes that must bind a plain name, as some occurrence allows nothing else.
    pub(crate) name_only: Vec<bool>,
    /// Holes that occur only as items of argument, parameter or statement lists, so that a
    /// keyword argument (`json=data`) or a starred one may fill them.
    pub(crate) in_lists: Vec<bool>,
}

impl CompiledRewrite {
    /// The holes, in order of first appearance in `before`.
    pub fn holes(&self) -> &[Hole] {
        &self.holes
    }

    /// The before side.
    pub fn before(&self) -> &Template {
        &self.before
    }

    /// The after side.
    pub fn after(&self) -> &Template {
        &self.after
    }

    /// The pair as text, as the seed library and the store keep it.
    pub fn rewrite(&self) -> Rewrite {
        Rewrite {
            before: self.before.text.clone(),
            after: self.after.text.clone(),
        }
    }
}

pub(crate) const PLACEHOLDER_PREFIX: &str = "__agency_hole_";
const PLACEHOLDER_SUFFIX: &str = "__";

pub(crate) fn placeholder(index: usize) -> String {
    format!("{PLACEHOLDER_PREFIX}{index}{PLACEHOLDER_SUFFIX}")
}

/// A segment of a token's text: verbatim text or a hole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment<'a> {
    Text(&'a str),
    Hole(usize),
}

/// Splits `text` at placeholders; `None` when it holds none.
pub(crate) fn segments(text: &str) -> Option<Vec<Segment<'_>>> {
    if !text.contains(PLACEHOLDER_PREFIX) {
        return None;
    }
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(PLACEHOLDER_PREFIX) {
        let after = &rest[at + PLACEHOLDER_PREFIX.len()..];
        let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let index = after[..digits].parse::<usize>().ok();
        match index {
            Some(index) if after[digits..].starts_with(PLACEHOLDER_SUFFIX) => {
                if at > 0 {
                    out.push(Segment::Text(&rest[..at]));
                }
                out.push(Segment::Hole(index));
                rest = &after[digits + PLACEHOLDER_SUFFIX.len()..];
            }
            _ => {
                let end = at + PLACEHOLDER_PREFIX.len();
                out.push(Segment::Text(&rest[..end]));
                rest = &rest[end..];
            }
        }
    }
    if !rest.is_empty() {
        out.push(Segment::Text(rest));
    }
    Some(out)
}

/// The hole a whole token stands for (`__agency_hole_3__` and nothing else).
pub(crate) fn whole_placeholder(text: &str) -> Option<usize> {
    match segments(text)?.as_slice() {
        [Segment::Hole(i)] => Some(*i),
        _ => None,
    }
}

/// Removes the common indentation of the non-blank lines and the blank lines around the text.
pub(crate) fn dedent(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let first = lines.iter().position(|l| !l.trim().is_empty());
    let last = lines.iter().rposition(|l| !l.trim().is_empty());
    let (Some(first), Some(last)) = (first, last) else {
        return String::new();
    };
    let lines = &lines[first..=last];
    let indent = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start_matches([' ', '\t']).len())
        .min()
        .unwrap_or(0);
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        if line.trim().is_empty() {
            continue;
        }
        out.push_str(line.get(indent..).unwrap_or(line.trim_start()));
    }
    out
}

/// The holes written in a template, in order, with their declared kinds, and its pieces.
struct Scanned {
    pieces: Vec<Piece>,
    placeholder_text: String,
}

fn scan(text: &str, names: &mut Vec<String>, declared: &mut BTreeMap<usize, HoleKind>) -> Scanned {
    let mut pieces = Vec::new();
    let mut placeholder_text = String::new();
    let mut literal = String::new();
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let rest = &text[i + c.len_utf8()..];
        let starts_name = rest
            .chars()
            .next()
            .is_some_and(|n| n.is_alphabetic() || n == '_');
        if c != '?' || !starts_name {
            literal.push(c);
            placeholder_text.push(c);
            continue;
        }
        let name_len = rest.len()
            - rest
                .trim_start_matches(|n: char| n.is_alphanumeric() || n == '_')
                .len();
        let name = &rest[..name_len];
        let mut consumed = name_len;
        let mut kind = None;
        if let Some(tail) = rest[name_len..].strip_prefix(':') {
            let kind_len = tail.len() - tail.trim_start_matches(char::is_alphanumeric).len();
            if let Some(k) = HoleKind::from_name(&tail[..kind_len]) {
                kind = Some(k);
                consumed += 1 + kind_len;
            }
        }
        for _ in rest[..consumed].chars() {
            chars.next();
        }
        let index = names.iter().position(|n| n == name).unwrap_or_else(|| {
            names.push(name.to_string());
            names.len() - 1
        });
        if let Some(kind) = kind {
            declared.entry(index).or_insert(kind);
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut literal)));
        }
        pieces.push(Piece::Hole {
            hole: index,
            at: placeholder_text.len(),
            slot: Slot::Other,
        });
        placeholder_text.push_str(&placeholder(index));
    }
    if !literal.is_empty() {
        pieces.push(Piece::Text(literal));
    }
    Scanned {
        pieces,
        placeholder_text,
    }
}

fn build(text: &str, scanned: Scanned, grammar: Grammar) -> Result<Template, Error> {
    let tree = tree::parse(&scanned.placeholder_text, grammar).map_err(|(cause, offset)| {
        Error::Template {
            template: text.to_string(),
            cause: format!("{cause} (at byte {offset} of the template with holes replaced)"),
        }
    })?;
    let node_hole = node_holes(&tree);
    let pieces = scanned
        .pieces
        .into_iter()
        .map(|piece| match piece {
            Piece::Hole { hole, at, .. } => Piece::Hole {
                hole,
                at,
                slot: slot_at(&tree, &node_hole, at),
            },
            text @ Piece::Text(_) => text,
        })
        .collect();
    Ok(Template {
        text: text.to_string(),
        pieces,
        tree,
        grammar,
        node_hole,
    })
}

/// The slot of the expression hole whose placeholder starts at byte `at`.
fn slot_at(tree: &Tree, node_hole: &[Option<usize>], at: usize) -> Slot {
    let Some(mut top) = tree
        .nodes
        .iter()
        .position(|n| n.kind == NodeKind::ExprName && n.range.start().to_usize() == at)
    else {
        return Slot::Other;
    };
    while let Some(parent) = tree.nodes[top].parent
        && node_hole[parent].is_some()
        && node_hole[parent] == node_hole[top]
    {
        top = parent;
    }
    if tree.nodes[top].is_stmt {
        return Slot::Other;
    }
    let Some(parent) = tree.nodes[top].parent else {
        return Slot::Clause;
    };
    let p = &tree.nodes[parent];
    match p.kind {
        NodeKind::Arguments if p.items.len() == 3 => Slot::SoleArgument,
        NodeKind::Arguments
        | NodeKind::ExprList
        | NodeKind::ExprSet
        | NodeKind::ExprDict
        | NodeKind::Keyword
        | NodeKind::InterpolatedElement
        | NodeKind::Comprehension
        | NodeKind::ExprListComp
        | NodeKind::ExprSetComp
        | NodeKind::ExprDictComp
        | NodeKind::ExprGenerator => Slot::Bracketed,
        NodeKind::ExprTuple if tree.text(p.outer).starts_with('(') => Slot::Bracketed,
        NodeKind::ExprSubscript if p.items.first() != Some(&Item::Node(top)) => Slot::Bracketed,
        NodeKind::ExprTuple
        | NodeKind::ModExpression
        | NodeKind::ElifElseClause
        | NodeKind::WithItem
        | NodeKind::ExceptHandlerExceptHandler => Slot::Clause,
        _ if p.is_stmt => Slot::Clause,
        _ => Slot::Operand {
            precedence: p.precedence.unwrap_or(OperatorPrecedence::Atomic),
            left: p.items.iter().find_map(|item| match item {
                Item::Node(n) => Some(*n),
                Item::Token(_) => None,
            }) == Some(top),
        },
    }
}

/// Marks the nodes that are holes: a name, identifier or string part that is exactly a
/// placeholder, and every node that only wraps such a node (a statement `?body`, a parameter
/// `?params`, an imported `?name`).
fn node_holes(tree: &Tree) -> Vec<Option<usize>> {
    let mut out = vec![None; tree.nodes.len()];
    for id in (0..tree.nodes.len()).rev() {
        let node = &tree.nodes[id];
        if matches!(node.kind, NodeKind::ModModule | NodeKind::ModExpression) {
            continue;
        }
        out[id] = match node.items.as_slice() {
            [Item::Token(t)] if matches!(node.kind, NodeKind::ExprName | NodeKind::Identifier) => {
                whole_placeholder(tree.token_text(*t))
            }
            [Item::Node(child)] if tree.nodes[*child].outer == node.range => out[*child],
            _ => None,
        };
    }
    out
}

/// One place a hole occurs.
#[derive(Debug, Clone, Copy)]
struct Occurrence {
    /// The kind the position gives it.
    kind: HoleKind,
    /// A run of arguments, parameters or statements fits there.
    run: bool,
    /// Only a plain name fits there (a `def` or parameter name, an imported name, a string).
    name_only: bool,
}

/// Where a hole occurs: the kind that position gives it and whether a run fits there.
fn occurrences(template: &Template, into: &mut BTreeMap<usize, Vec<Occurrence>>) {
    let tree = &template.tree;
    for (id, node) in tree.nodes.iter().enumerate() {
        let Some(hole) = template.node_hole[id] else {
            // Holes inside string literals.
            for item in &node.items {
                if let Item::Token(t) = item {
                    if tree.tokens[*t].kind == TokenKind::Name {
                        continue;
                    }
                    let text = tree.token_text(*t);
                    for seg in segments(text).unwrap_or_default() {
                        if let Segment::Hole(h) = seg {
                            into.entry(h).or_default().push(Occurrence {
                                kind: HoleKind::Literal,
                                run: false,
                                name_only: true,
                            });
                        }
                    }
                }
            }
            continue;
        };
        let parent = node.parent.and_then(|p| {
            if template.node_hole[p] == Some(hole) {
                None
            } else {
                Some(p)
            }
        });
        // Only the topmost node of a pass-through chain counts.
        let Some(parent) = parent else { continue };
        let parent_kind = tree.nodes[parent].kind;
        let leaf = innermost(template, id);
        let kind = if node.is_stmt {
            HoleKind::Stmts
        } else if tree.nodes[leaf].kind == NodeKind::Identifier {
            let leaf_parent = tree.nodes[leaf].parent.map(|p| tree.nodes[p].kind);
            if leaf_parent == Some(NodeKind::ExprAttribute) {
                HoleKind::Attr
            } else {
                HoleKind::Ident
            }
        } else if tree.nodes[leaf].store == Some(true) {
            HoleKind::Ident
        } else {
            HoleKind::Expr
        };
        let run = node.is_stmt || matches!(parent_kind, NodeKind::Arguments | NodeKind::Parameters);
        let name_only = tree.nodes[leaf].kind == NodeKind::Identifier;
        into.entry(hole).or_default().push(Occurrence {
            kind,
            run,
            name_only,
        });
    }
}

fn innermost(template: &Template, mut id: usize) -> usize {
    while let [Item::Node(child)] = template.tree.nodes[id].items.as_slice() {
        id = *child;
    }
    id
}

/// Parses one template on its own: as an expression if it is one, else as statements. Use
/// [`compile`] for a pair: only it decides the grammar for both sides and the holes' kinds.
pub fn parse_template(text: &str) -> Result<Template, Error> {
    let mut names = Vec::new();
    let mut declared = BTreeMap::new();
    let dedented = dedent(text);
    let scanned = scan(&dedented, &mut names, &mut declared);
    let expression = tree::parse(&scanned.placeholder_text, Grammar::Expression).is_ok();
    let grammar = if expression {
        Grammar::Expression
    } else {
        Grammar::Module
    };
    build(text, scanned, grammar)
}

/// Parses and checks a rewrite. Both sides are parsed as expressions when both are one, else
/// both as statements (`?f(?a)` -> `if ?a is not None: ?f(?a)` matches the call's statement).
///
/// Fails with [`Error::Rewrite`] when the pair breaks a rule every stored rewrite obeys (see
/// [`Rewrite::validate`]) and with [`Error::Template`] when a side does not parse.
pub fn compile(rewrite: &Rewrite) -> Result<CompiledRewrite, Error> {
    rewrite.validate().map_err(|source| Error::Rewrite {
        before: rewrite.before.clone(),
        after: rewrite.after.clone(),
        source,
    })?;
    let mut names = Vec::new();
    let mut declared = BTreeMap::new();
    let before_text = dedent(&rewrite.before);
    let after_text = dedent(&rewrite.after);
    let before_scan = scan(&before_text, &mut names, &mut declared);
    let after_scan = scan(&after_text, &mut names, &mut declared);
    let both_expressions = tree::parse(&before_scan.placeholder_text, Grammar::Expression).is_ok()
        && tree::parse(&after_scan.placeholder_text, Grammar::Expression).is_ok();
    let grammar = if both_expressions {
        Grammar::Expression
    } else {
        Grammar::Module
    };
    let before = build(&rewrite.before, before_scan, grammar)?;
    let after = build(&rewrite.after, after_scan, grammar)?;
    let mut seen = BTreeMap::new();
    occurrences(&before, &mut seen);
    let mut after_seen = BTreeMap::new();
    occurrences(&after, &mut after_seen);
    let mut holes = Vec::with_capacity(names.len());
    let mut sequence = Vec::with_capacity(names.len());
    let mut name_only = Vec::with_capacity(names.len());
    let mut in_lists = Vec::with_capacity(names.len());
    for (index, name) in names.iter().enumerate() {
        let before_occ = seen.get(&index).cloned().unwrap_or_default();
        let after_occ = after_seen.get(&index).cloned().unwrap_or_default();
        let kind = declared
            .get(&index)
            .copied()
            .or_else(|| before_occ.first().map(|o| o.kind))
            .unwrap_or(HoleKind::Expr);
        // Statement holes take runs; an argument or parameter hole takes a run only when its
        // name says so (`?args`, `?params`), as `?key` in `?m.get(?key)` means one argument.
        let collective =
            kind == HoleKind::Stmts || name.ends_with("args") || name.ends_with("params");
        let is_run = collective
            && !before_occ.is_empty()
            && before_occ.iter().chain(after_occ.iter()).all(|o| o.run);
        name_only.push(
            before_occ
                .iter()
                .chain(after_occ.iter())
                .any(|o| o.name_only),
        );
        in_lists.push(
            !before_occ.is_empty() && before_occ.iter().chain(after_occ.iter()).all(|o| o.run),
        );
        holes.push(Hole {
            name: name.clone(),
            kind,
        });
        sequence.push(is_run);
    }
    Ok(CompiledRewrite {
        before,
        after,
        holes,
        sequence,
        name_only,
        in_lists,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(before: &str, after: &str) -> Rewrite {
        Rewrite {
            before: before.into(),
            after: after.into(),
        }
    }

    fn kinds(c: &CompiledRewrite) -> Vec<String> {
        c.holes()
            .iter()
            .zip(&c.sequence)
            .map(|(h, run)| format!("{}:{}{}", h.name, h.kind, if *run { "*" } else { "" }))
            .collect()
    }

    #[test]
    fn hole_kinds_follow_their_position() {
        let c = compile(&rw("?x == None", "?x is None")).expect("compiles");
        assert!(c.before().is_expression());
        assert_eq!(kinds(&c), ["x:Expr"]);
        let c = compile(&rw(
            "def ?func(?params) -> ?ret:\n    ?body\n",
            "def ?func(?params) -> ?ret | None:\n    ?body\n",
        ))
        .expect("compiles");
        assert!(!c.before().is_expression());
        assert_eq!(
            kinds(&c),
            ["func:Ident", "params:Ident*", "ret:Expr", "body:Stmts*"]
        );
        let c = compile(&rw("?obj.?attr(f\"?text\")", "?obj.?attr(\"?text\")")).expect("compiles");
        assert_eq!(kinds(&c), ["obj:Expr", "attr:Attr", "text:Literal"]);
        let c =
            compile(&rw("?f(?args)", "if ?args is not None:\n    ?f(?args)")).expect("compiles");
        assert_eq!(kinds(&c), ["f:Expr", "args:Expr"]);
        let c = compile(&rw("?x:Expr == None", "?x is None")).expect("compiles");
        assert_eq!(kinds(&c), ["x:Expr"]);
    }

    #[test]
    fn bad_templates_are_errors_naming_the_template() {
        let err = compile(&rw("?x ==", "?x is None")).expect_err("does not parse");
        let message = err.to_string();
        assert!(message.contains("`?x ==`"), "{message}");
        let err = compile(&rw("?x", "?x.strip()")).expect_err("bare hole");
        assert!(matches!(err, Error::Rewrite { .. }), "{err}");
        let err = compile(&rw("?x == None", "?y is None")).expect_err("unbound");
        assert!(err.to_string().contains("?y"), "{err}");
    }

    #[test]
    fn placeholders_split_strings() {
        let text = format!("\"{} = %s\"", placeholder(2));
        assert_eq!(
            segments(&text),
            Some(vec![
                Segment::Text("\""),
                Segment::Hole(2),
                Segment::Text(" = %s\"")
            ])
        );
        assert_eq!(whole_placeholder(&placeholder(7)), Some(7));
        assert_eq!(segments("plain"), None);
    }

    #[test]
    fn single_templates_parse_as_expression_or_statements() {
        let t = parse_template("?x == None").expect("parses");
        assert!(t.is_expression());
        assert_eq!(t.text(), "?x == None");
        let t = parse_template("    for ?i in ?xs:\n        ?body\n").expect("parses");
        assert!(!t.is_expression());
        let err = parse_template("for ?i in").expect_err("does not parse");
        assert!(err.to_string().contains("`for ?i in`"), "{err}");
    }

    #[test]
    fn dedent_keeps_relative_indentation() {
        assert_eq!(dedent("\n    if x:\n        y\n\n"), "if x:\n    y");
    }
}
