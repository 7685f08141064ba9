//! Extraction: a rewrite learned from one verified fix (LEARNING.md §2).
//!
//! The changed region is found by a line diff refined to characters (a pure deletion slides to
//! its leftmost place). The minimal subtree that covers it and reaches the finding's line (an
//! expression, else a run of sibling statements; a pure insertion is anchored on the line it
//! follows or precedes) is the template. An expression carried whole from before to after
//! becomes one hole (`not str(p) in tuple(q)` -> `not ?a in ?b`), unless part of it is used in
//! after on its own; otherwise names carried from before to after become holes: variables,
//! binding targets, call receivers, arguments, parameters, function names, imported names,
//! carried strings and blocks of statements that survive as blocks. Operators, keywords,
//! attribute names, keyword-argument names, constants (unless the operator next to one survives
//! the fix: `not p is None` -> `not ?a is ?b`, but `?a == None`), inserted code, moved
//! statements and the names of the changed call (`yaml.load`, `super`) stay concrete; comments
//! are left out. A subtree whose whole-operand holes are refused is retried with holes for
//! names only before the next larger subtree.
//!
//! A candidate is refused, and the next larger subtree tried, when either side would be a bare
//! hole, an expression template keeps fewer than two concrete nodes, a hole of before is
//! dropped although its code is still in after (the template would write a concrete copy), or
//! the rewrite does not reproduce its own example byte for byte.

use std::collections::{BTreeMap, HashMap, HashSet};

use agency_core::pattern::Rewrite;
use ruff_python_ast::NodeKind;
use ruff_python_ast::token::TokenKind;
use ruff_text_size::TextRange;

use crate::template::{Hole, compile, dedent};
use crate::tree::{self, Grammar, Item, Tree};
use crate::{Error, Result};

/// Rules whose fix is the deletion of the flagged code: unused imports (F401), a duplicate
/// import (F811), an unused variable (F841), unreachable code (AGY401).
pub const DELETION_RULES: &[&str] = &["F401", "F811", "F841", "AGY401"];

/// A rewrite extracted from one example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    /// The templates, in the seed library's `?hole` syntax.
    pub rewrite: Rewrite,
    /// The holes with their kinds, in order of first appearance in `before`.
    pub holes: Vec<Hole>,
    /// The concrete code the templates were cut from (before and after, dedented).
    pub example: Rewrite,
}

/// What the template is cut from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Candidate {
    Expr(usize),
    /// Statements `start..end` of the items of `parent`.
    Stmts {
        parent: usize,
        start: usize,
        end: usize,
    },
}

/// Learns a rewrite from a verified fix: the whole file `before_source` and `after_source`,
/// and the finding's 1-based line in `before_source`.
///
/// Guarantees: every hole of the after template is bound in the before template; the before
/// template is never a bare hole and the after template never one either (`?x -> ?y`); the
/// pair compiles. Refuses ([`Error::Suppression`]) a fix that only adds `# noqa` or
/// `# type: ignore`, and ([`Error::Deletion`]) one that deletes the flagged line unless `rule`
/// is in [`DELETION_RULES`].
pub fn extract(
    rule: &str,
    before_source: &str,
    after_source: &str,
    site_line: u32,
) -> Result<Extracted> {
    if before_source == after_source {
        return Err(Error::NoChange);
    }
    if strip_suppressions(before_source) == strip_suppressions(after_source) {
        return Err(Error::Suppression);
    }
    let bt = tree::parse(before_source, Grammar::Module)
        .map_err(|(cause, offset)| Error::Source { cause, offset })?;
    let at = tree::parse(after_source, Grammar::Module)
        .map_err(|(cause, offset)| Error::Source { cause, offset })?;
    let (p, before_end, after_end) = changed_region(before_source, after_source);
    let site = line_content(before_source, site_line)?;

    let deleted = !before_source[p..before_end].trim().is_empty()
        && after_source[p..after_end].trim().is_empty();
    if deleted && site.0 >= p && site.1 <= before_end && !DELETION_RULES.contains(&rule) {
        return Err(Error::Deletion {
            rule: rule.to_string(),
            line: site_line,
        });
    }

    // The region to cover: the change (without trailing blanks), and for a pure insertion
    // the line it is inserted before (its anchor).
    let mut start = p;
    let mut end = p + before_source[p..before_end].trim_end().len();
    if before_end == p {
        // Code inserted right after the finding's line (an import after the flagged import)
        // is anchored on that line; otherwise on the code it is inserted before.
        let after_site = site.1 <= p && before_source[site.1..p].trim().is_empty();
        let anchor = if after_site {
            site
        } else {
            anchor_line(before_source, p)
        };
        if after_site {
            start = anchor.0;
            end = anchor.1;
        } else {
            start = start.min(anchor.0);
            end = end.max(anchor.1);
        }
    }
    let mut region = TextRange::new(size(start), size(end.max(start)));
    let Some(mut deepest) = deepest_covering(&bt, region) else {
        return Err(Error::NotExtractable {
            reason: "no syntax node covers the change".into(),
        });
    };
    // The template must also reach the finding's line.
    let site_range = TextRange::new(size(site.0), size(site.1));
    let touches =
        |range: TextRange| range.start() <= site_range.end() && site_range.start() <= range.end();
    if !touches(bt.nodes[deepest].outer) {
        region = region.cover(site_range);
        deepest = deepest_covering(&bt, region).unwrap_or(deepest);
    }
    let mut candidate = candidate_for(&bt, deepest, region);
    loop {
        if let Some(extracted) =
            try_candidate(&bt, &at, candidate, (p, before_end, after_end), site_line)
        {
            return Ok(extracted);
        }
        candidate = widen(&bt, candidate).ok_or_else(|| Error::NotExtractable {
            reason: "no subtree of the change gives a rewrite that keeps the carried code in holes, is more than a hole on either side and reproduces the fix".into(),
        })?;
    }
}

fn size(offset: usize) -> ruff_text_size::TextSize {
    ruff_text_size::TextSize::try_from(offset).unwrap_or_default()
}

/// Removes `# noqa...` and `# type: ignore...` comments and trailing blanks from each line.
fn strip_suppressions(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut kept = line;
        let mut search = 0;
        while let Some(hash) = line[search..].find('#') {
            let at = search + hash;
            let comment = line[at + 1..].trim_start();
            if comment.starts_with("noqa") || comment.starts_with("type: ignore") {
                kept = &line[..at];
                break;
            }
            search = at + 1;
        }
        out.push_str(kept.trim_end());
        out.push('\n');
    }
    out
}

/// The changed region: offset `p` where before and after first differ, and the ends of the
/// changed parts in before and after (whole lines first, then refined to characters without
/// splitting a name).
fn changed_region(before: &str, after: &str) -> (usize, usize, usize) {
    let b_lines: Vec<&str> = before.split_inclusive('\n').collect();
    let a_lines: Vec<&str> = after.split_inclusive('\n').collect();
    let common = b_lines
        .iter()
        .zip(&a_lines)
        .take_while(|(a, b)| a == b)
        .count();
    let max_suffix = b_lines.len().min(a_lines.len()) - common;
    let suffix = b_lines
        .iter()
        .rev()
        .zip(a_lines.iter().rev())
        .take(max_suffix)
        .take_while(|(a, b)| a == b)
        .count();
    let mut p: usize = b_lines[..common].iter().map(|l| l.len()).sum();
    let suffix_bytes: usize = b_lines[b_lines.len() - suffix..]
        .iter()
        .map(|l| l.len())
        .sum();
    let mut b_end = before.len() - suffix_bytes;
    let mut a_end = after.len() - suffix_bytes;
    if p < b_end && p < a_end {
        let is_name = |c: char| c.is_alphanumeric() || c == '_';
        let b_mid = &before[p..b_end];
        let a_mid = &after[p..a_end];
        let mut pre = b_mid
            .char_indices()
            .zip(a_mid.chars())
            .find(|((_, x), y)| x != y)
            .map_or(b_mid.len().min(a_mid.len()), |((i, _), _)| i);
        while pre > 0
            && (b_mid[..pre].chars().next_back().is_some_and(is_name)
                && (b_mid[pre..].chars().next().is_some_and(is_name)
                    || a_mid[pre..].chars().next().is_some_and(is_name)))
        {
            pre -= b_mid[..pre].chars().next_back().map_or(1, char::len_utf8);
        }
        let limit = b_mid.len().min(a_mid.len()) - pre;
        let mut suf = b_mid[pre..]
            .chars()
            .rev()
            .zip(a_mid[pre..].chars().rev())
            .take_while(|(x, y)| x == y)
            .map(|(x, _)| x.len_utf8())
            .sum::<usize>()
            .min(limit);
        while suf > 0
            && (!b_mid.is_char_boundary(b_mid.len() - suf)
                || !a_mid.is_char_boundary(a_mid.len() - suf))
        {
            suf -= 1;
        }
        while suf > 0 {
            let b_at = b_mid.len() - suf;
            let a_at = a_mid.len() - suf;
            let splits = b_mid[b_at..].chars().next().is_some_and(is_name)
                && (b_mid[..b_at].chars().next_back().is_some_and(is_name)
                    || a_mid[..a_at].chars().next_back().is_some_and(is_name));
            if !splits {
                break;
            }
            suf -= b_mid[b_at..].chars().next().map_or(1, char::len_utf8);
        }
        p += pre;
        b_end -= suf;
        a_end -= suf;
    }
    // A pure deletion can sit in several places (`x._d = x._f()` -> `x._f()` deletes
    // `x._d = ` or `_d = x.`); take the leftmost, which starts at a token.
    if a_end == p {
        let bytes = before.as_bytes();
        while p > 0 && b_end > p && bytes[p - 1] == bytes[b_end - 1] && bytes[p - 1].is_ascii() {
            p -= 1;
            b_end -= 1;
            a_end -= 1;
        }
    }
    (p, b_end, a_end)
}

/// The byte range of the non-blank content of a 1-based line.
fn line_content(source: &str, line: u32) -> Result<(usize, usize)> {
    let n_lines = source.lines().count();
    let index = line.checked_sub(1).map(|l| l as usize);
    let mut offset = 0;
    for (i, text) in source.split_inclusive('\n').enumerate() {
        if Some(i) == index {
            let body = text.trim_end();
            let lead = body.len() - body.trim_start().len();
            return Ok((offset + lead, offset + body.len().max(lead)));
        }
        offset += text.len();
    }
    Err(Error::Site {
        line,
        lines: n_lines,
    })
}

/// The content of the first non-blank line at or after `p`, else of the last one before it.
fn anchor_line(source: &str, p: usize) -> (usize, usize) {
    let rest = &source[p..];
    if let Some(skip) = rest.find(|c: char| !c.is_whitespace()) {
        let start = p + skip;
        let end = source[start..]
            .find('\n')
            .map_or(source.len(), |i| start + i);
        return (start, start + source[start..end].trim_end().len());
    }
    let body = source[..p].trim_end();
    let start = tree::line_start(source, body.len());
    let lead = body[start..].len() - body[start..].trim_start().len();
    (start + lead, body.len())
}

fn deepest_covering(t: &Tree, region: TextRange) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (id, node) in t.nodes.iter().enumerate() {
        if node.outer.contains_range(region) && best.is_none_or(|b| node.depth > t.nodes[b].depth) {
            best = Some(id);
        }
    }
    best
}

fn candidate_for(t: &Tree, mut id: usize, region: TextRange) -> Candidate {
    loop {
        let node = &t.nodes[id];
        let items = &node.items;
        let hit: Vec<usize> = items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| match item {
                Item::Node(n) if t.is_statement(*n) => {
                    let outer = t.nodes[*n].outer;
                    let from = size(tree::line_start(&t.source, outer.start().to_usize()));
                    let line_range = TextRange::new(from, outer.end());
                    // Touching counts: `x = ""` -> `x = "".join(...)` changes right at its end.
                    line_range.intersect(region).is_some().then_some(i)
                }
                _ => None,
            })
            .collect();
        if let (Some(&first), Some(&last)) = (hit.first(), hit.last()) {
            let contiguous = items[first..=last]
                .iter()
                .all(|item| matches!(item, Item::Node(n) if t.is_statement(*n)));
            let (Item::Node(a), Item::Node(b)) = (items[first], items[last]) else {
                unreachable!("statement items are nodes")
            };
            // Whole lines: a trailing comment belongs to its statement's line.
            let last_end = t.nodes[b].outer.end().to_usize();
            let line_end = t.source[last_end..]
                .find('\n')
                .map_or(t.source.len(), |i| last_end + i);
            let span = TextRange::new(
                size(tree::line_start(
                    &t.source,
                    t.nodes[a].outer.start().to_usize(),
                )),
                size(line_end),
            );
            if contiguous && span.contains_range(region) {
                return Candidate::Stmts {
                    parent: id,
                    start: first,
                    end: last + 1,
                };
            }
        }
        if node.is_stmt
            && let Some((parent, _, _, pos)) = t.body_run(id)
        {
            return Candidate::Stmts {
                parent,
                start: pos,
                end: pos + 1,
            };
        }
        if node.is_expr && node.kind != NodeKind::ExprStarred {
            return Candidate::Expr(id);
        }
        match node.parent {
            Some(parent) => id = parent,
            None => {
                return Candidate::Stmts {
                    parent: id,
                    start: 0,
                    end: items.len(),
                };
            }
        }
    }
}

fn widen(t: &Tree, candidate: Candidate) -> Option<Candidate> {
    let mut id = match candidate {
        Candidate::Expr(id) => t.nodes[id].parent?,
        Candidate::Stmts { parent, .. } => parent,
    };
    loop {
        let node = &t.nodes[id];
        if node.is_stmt {
            let (parent, _, _, pos) = t.body_run(id)?;
            return Some(Candidate::Stmts {
                parent,
                start: pos,
                end: pos + 1,
            });
        }
        if node.is_expr && node.kind != NodeKind::ExprStarred {
            return Some(Candidate::Expr(id));
        }
        id = node.parent?;
    }
}

/// The before span of a candidate (statements from the start of their first line).
fn span_of(t: &Tree, candidate: Candidate) -> (TextRange, Vec<usize>) {
    match candidate {
        Candidate::Expr(id) => (t.nodes[id].outer, vec![id]),
        Candidate::Stmts { parent, start, end } => {
            let ids: Vec<usize> = t.nodes[parent].items[start..end]
                .iter()
                .filter_map(|item| match item {
                    Item::Node(n) => Some(*n),
                    Item::Token(_) => None,
                })
                .collect();
            let first = ids
                .first()
                .map_or(t.nodes[parent].range, |n| t.nodes[*n].outer);
            let last = ids
                .last()
                .map_or(t.nodes[parent].range, |n| t.nodes[*n].outer);
            let from = size(tree::line_start(&t.source, first.start().to_usize()));
            // Whole lines: a deleted or inserted statement takes its newline with it.
            let end = last.end().to_usize();
            let to = t.source[end..]
                .find('\n')
                .map_or(t.source.len(), |i| end + i + 1);
            (TextRange::new(from, size(to)), ids)
        }
    }
}

fn try_candidate(
    bt: &Tree,
    at: &Tree,
    candidate: Candidate,
    (p, before_end, after_end): (usize, usize, usize),
    site_line: u32,
) -> Option<Extracted> {
    let delta = at.source.len() as isize - bt.source.len() as isize;
    let (b_span, roots) = span_of(bt, candidate);
    let b_start = b_span.start().to_usize();
    let b_end = b_span.end().to_usize();
    if b_start > p || b_end < before_end {
        return None;
    }
    let a_end = (b_end as isize + delta) as usize;
    if a_end < b_start || a_end > at.source.len() || !at.source.is_char_boundary(a_end) {
        return None;
    }
    let a_span = TextRange::new(size(b_start), size(a_end));
    if let Candidate::Expr(id) = candidate {
        // A callee alone (`yaml.load`) is not a rewrite: its call is.
        let is_callee = bt.nodes[id].parent.is_some_and(|p| {
            bt.nodes[p].kind == NodeKind::ExprCall
                && bt.nodes[p].items.first() == Some(&Item::Node(id))
        });
        // The after side must be one node too (`a % b` -> `a, (b,)` is two arguments).
        if is_callee || !at.nodes.iter().any(|n| n.outer == a_span) {
            return None;
        }
    }
    let grammar = match candidate {
        Candidate::Expr(_) => Grammar::Expression,
        Candidate::Stmts { .. } => Grammar::Module,
    };
    let after_text = &at.source[a_span];
    let concrete_after = match grammar {
        Grammar::Expression => after_text.to_string(),
        Grammar::Module => dedent(after_text),
    };
    if tree::parse(&concrete_after, grammar).is_err() {
        return None;
    }
    // Carried operands as whole holes first (the general template); when that rewrite is
    // refused, the same subtree with holes for names only, before a larger subtree is tried.
    [true, false].into_iter().find_map(|whole| {
        let abstraction =
            Abstraction::new(bt, at, b_span, a_span, (p, before_end, after_end), whole);
        abstraction.finish(
            &roots,
            grammar,
            concrete_after.clone(),
            (site_line, b_start),
        )
    })
}

impl Abstraction<'_> {
    /// Chooses the holes under `roots` and returns the rewrite, unless a guard refuses it.
    fn finish(
        mut self,
        roots: &[usize],
        grammar: Grammar,
        concrete_after: String,
        (site_line, b_start): (u32, usize),
    ) -> Option<Extracted> {
        let (bt, at, b_span) = (self.bt, self.at, self.b_span);
        for root in roots {
            self.visit_children(*root);
        }
        let before_template = self.render_before(grammar);
        let after_template = self.render_after(grammar);
        if self.drops_carried_code(&after_template) {
            return None;
        }
        let concrete_before = match grammar {
            Grammar::Expression => bt.source[b_span].to_string(),
            Grammar::Module => dedent(&bt.source[b_span]),
        };
        let is_bare = |text: &str| {
            let t = text.trim();
            t.strip_prefix('?').is_some_and(|rest| {
                !rest.is_empty() && rest.chars().all(|c| c.is_alphanumeric() || c == '_')
            })
        };
        if is_bare(&after_template) || is_bare(&before_template) {
            return None;
        }
        let rewrite = Rewrite {
            before: before_template,
            after: after_template,
        };
        let Ok(compiled) = compile(&rewrite) else {
            return None;
        };
        // Too small to say anything (`title` -> `(title or "")`): widen for context.
        if grammar == Grammar::Expression
            && crate::generalise::concrete_nodes(compiled.before()) < 2
        {
            return None;
        }
        // The rewrite must reproduce its own example, applied at the finding's line or at the
        // template's first line.
        let first_line = bt.source[..b_start].matches('\n').count() + 1;
        let first_line = u32::try_from(first_line).unwrap_or(u32::MAX);
        let reproduces = [site_line, first_line].into_iter().any(|line| {
            crate::apply::apply_tree(&compiled, bt, crate::Site::line(line))
                .ok()
                .flatten()
                .and_then(|fix| fix.apply_to(&bt.source).ok())
                .is_some_and(|fixed| fixed == at.source)
        });
        if !reproduces {
            return None;
        }
        Some(Extracted {
            holes: compiled.holes().to_vec(),
            rewrite,
            example: Rewrite {
                before: concrete_before,
                after: concrete_after,
            },
        })
    }
}

/// The holes chosen in before, and where they land in after.
struct Abstraction<'a> {
    bt: &'a Tree,
    at: &'a Tree,
    b_span: TextRange,
    a_span: TextRange,
    /// Callee ranges of calls whose callee the fix changed: kept concrete.
    protected: Vec<TextRange>,
    /// The same in after: names there are not replaced by holes.
    after_protected: Vec<TextRange>,
    /// How often each token key occurs as a node of after.
    after_keys: HashMap<String, usize>,
    /// Hole names by key, in order of creation.
    names: BTreeMap<String, String>,
    n_holes: usize,
    /// Replacements in before: range, hole name.
    before_holes: Vec<(TextRange, String)>,
    /// Keys of statement-run holes (matched against runs in after).
    run_keys: Vec<String>,
    /// Keys of parameter-list holes.
    list_keys: Vec<String>,
    /// Literal holes: body text -> name.
    literals: Vec<(String, String)>,
    /// The ranges of after that render as holes.
    after_replaced: Vec<TextRange>,
    /// Whether a carried operand becomes one hole (else only the names in it do).
    whole: bool,
    /// The tokens of before (indices into its token list) that a token diff keeps in after.
    kept_tokens: HashSet<usize>,
}

impl<'a> Abstraction<'a> {
    fn new(
        bt: &'a Tree,
        at: &'a Tree,
        b_span: TextRange,
        a_span: TextRange,
        (p, before_end, after_end): (usize, usize, usize),
        whole: bool,
    ) -> Self {
        let protected = protected_callees(bt, b_span, TextRange::new(size(p), size(before_end)));
        let after_protected =
            protected_callees(at, a_span, TextRange::new(size(p), size(after_end)));
        let mut after_keys = HashMap::new();
        for (id, node) in at.nodes.iter().enumerate() {
            // Names in a renamed callee stay concrete, so they do not count as carried.
            if a_span.contains_range(node.outer)
                && !is_concrete_identifier(at, id)
                && !after_protected.iter().any(|p| p.contains_range(node.outer))
            {
                *after_keys.entry(node_key(at, id)).or_insert(0) += 1;
            }
        }
        Abstraction {
            bt,
            at,
            b_span,
            a_span,
            protected,
            after_protected,
            after_keys,
            names: BTreeMap::new(),
            n_holes: 0,
            before_holes: Vec::new(),
            run_keys: Vec::new(),
            list_keys: Vec::new(),
            literals: Vec::new(),
            after_replaced: Vec::new(),
            whole,
            kept_tokens: if whole {
                kept_tokens(bt, b_span, at, a_span)
            } else {
                HashSet::new()
            },
        }
    }

    fn name_for(&mut self, key: String) -> String {
        if let Some(name) = self.names.get(&key) {
            return name.clone();
        }
        let index = self.n_holes;
        self.n_holes += 1;
        let letter = char::from(b'a' + (index % 26) as u8);
        let name = if index < 26 {
            letter.to_string()
        } else {
            format!("{letter}{}", index / 26)
        };
        self.names.insert(key, name.clone());
        name
    }

    fn carried(&self, id: usize) -> bool {
        self.after_keys.contains_key(&node_key(self.bt, id))
    }

    fn is_protected(&self, range: TextRange) -> bool {
        self.protected.iter().any(|p| p.contains_range(range))
    }

    fn hole(&mut self, id: usize) {
        let range = self.bt.nodes[id].outer;
        let key = node_key(self.bt, id);
        let name = self.name_for(key);
        self.before_holes.push((range, name));
    }

    #[allow(clippy::many_single_char_names)] // `i..j` is a run of items from `a` to `b`
    fn visit_children(&mut self, id: usize) {
        let items = self.bt.nodes[id].items.clone();
        let mut i = 0;
        while i < items.len() {
            match items[i] {
                Item::Token(tok) => {
                    self.visit_token(tok);
                    i += 1;
                }
                Item::Node(child) if self.bt.is_statement(child) => {
                    // A run of carried statements becomes one statement hole.
                    let mut j = i;
                    while j < items.len()
                        && matches!(items[j], Item::Node(n) if self.bt.is_statement(n)
                            && self.carried(n))
                    {
                        j += 1;
                    }
                    let stmt_ids: Vec<usize> = items[i..j]
                        .iter()
                        .filter_map(|item| match item {
                            Item::Node(n) => Some(*n),
                            Item::Token(_) => None,
                        })
                        .collect();
                    if j > i && self.find_after_run(&stmt_ids, None).is_some() {
                        self.run_hole(&stmt_ids);
                        i = j;
                    } else if j > i {
                        // The run does not survive as a block: a statement that stays in the
                        // same kind of block is a hole; one that moves is part of the change.
                        let parent_kind = self.bt.nodes[id].kind;
                        for n in stmt_ids {
                            if self.find_after_run(&[n], Some(parent_kind)).is_some() {
                                self.run_hole(&[n]);
                            } else {
                                self.visit(n);
                            }
                        }
                        i = j;
                    } else {
                        self.visit(child);
                        i += 1;
                    }
                }
                Item::Node(child) => {
                    self.visit(child);
                    i += 1;
                }
            }
        }
    }

    /// The spans and keys of the item lists of after's nodes of `kind`.
    fn after_list_spans(&self, kind: NodeKind) -> impl Iterator<Item = (TextRange, String)> + '_ {
        self.at
            .nodes
            .iter()
            .enumerate()
            .filter_map(move |(id, node)| {
                if node.kind != kind || !self.a_span.contains_range(node.outer) {
                    return None;
                }
                let span = list_span(self.at, id)?;
                Some((span, format!("params {}", self.at.key(span))))
            })
    }

    /// Makes consecutive statements of before one statement hole.
    fn run_hole(&mut self, ids: &[usize]) {
        let (Some(first), Some(last)) = (ids.first(), ids.last()) else {
            return;
        };
        let range = TextRange::new(
            self.bt.nodes[*first].outer.start(),
            self.bt.nodes[*last].outer.end(),
        );
        let key = ids
            .iter()
            .map(|n| self.bt.key(self.bt.nodes[*n].outer))
            .collect::<Vec<_>>()
            .join("\n");
        let name = self.name_for(key.clone());
        self.before_holes.push((range, name));
        self.run_keys.push(key);
    }

    /// Where consecutive statements equal to before's `ids` occur in after (in a block of a
    /// node of kind `parent_kind`, when given).
    fn find_after_run(&self, ids: &[usize], parent_kind: Option<NodeKind>) -> Option<TextRange> {
        let wanted: Vec<String> = ids
            .iter()
            .map(|n| self.bt.key(self.bt.nodes[*n].outer))
            .collect();
        for (id, node) in self.at.nodes.iter().enumerate() {
            if !node.is_stmt || !self.a_span.contains_range(node.outer) {
                continue;
            }
            let Some((parent, _, run_end, pos)) = self.at.body_run(id) else {
                continue;
            };
            if parent_kind.is_some_and(|k| self.at.nodes[parent].kind != k)
                || pos + wanted.len() > run_end
            {
                continue;
            }
            let found: Vec<usize> = self.at.nodes[parent].items[pos..pos + wanted.len()]
                .iter()
                .filter_map(|item| match item {
                    Item::Node(n) => Some(*n),
                    Item::Token(_) => None,
                })
                .collect();
            if found.len() == wanted.len()
                && found
                    .iter()
                    .zip(&wanted)
                    .all(|(n, k)| self.at.key(self.at.nodes[*n].outer) == *k)
            {
                return Some(TextRange::new(
                    self.at.nodes[found[0]].outer.start(),
                    self.at.nodes[found[found.len() - 1]].outer.end(),
                ));
            }
        }
        None
    }

    /// True when a hole of before is missing from after although its code is still there: the
    /// template would lose track of carried code (and write a concrete copy instead).
    /// (Call after [`Self::render_after`].)
    fn drops_carried_code(&self, after_template: &str) -> bool {
        let used = agency_core::pattern::holes(after_template);
        let outside = |r: TextRange| !self.after_replaced.iter().any(|h| h.contains_range(r));
        // The keys of after's code that no hole replaced.
        let mut left: std::collections::HashSet<String> = std::collections::HashSet::new();
        for (id, node) in self.at.nodes.iter().enumerate() {
            if self.a_span.contains_range(node.outer)
                && outside(node.outer)
                && !is_concrete_identifier(self.at, id)
                && !self
                    .after_protected
                    .iter()
                    .any(|p| p.contains_range(node.outer))
            {
                left.insert(node_key(self.at, id));
            }
        }
        self.names.iter().any(|(key, name)| {
            if used.contains(name) {
                return false;
            }
            if let Some(text) = key.strip_prefix("literal ") {
                return self.at.tokens_in(self.a_span).iter().any(|t| {
                    matches!(t.kind, TokenKind::String | TokenKind::FStringMiddle)
                        && outside(t.range)
                        && self.at.text(t.range).contains(text)
                });
            }
            if self.run_keys.contains(key) {
                return key.split('\n').any(|k| left.contains(&format!("stmt {k}")));
            }
            left.contains(key)
        })
    }

    fn visit(&mut self, id: usize) {
        let node = &self.bt.nodes[id];
        let range = node.outer;
        if self.is_protected(range) {
            return;
        }
        // A parameter list carried whole is one run hole, `?params`, so that the rewrite
        // applies to functions with any parameters.
        if node.kind == NodeKind::Parameters
            && let Some(span) = list_span(self.bt, id)
        {
            let key = format!("params {}", self.bt.key(span));
            if self
                .after_list_spans(NodeKind::Parameters)
                .any(|(_, k)| k == key)
            {
                let name = self.names.get(&key).cloned().unwrap_or_else(|| {
                    let taken = self
                        .names
                        .values()
                        .filter(|n| n.starts_with("params"))
                        .count();
                    let name = if taken == 0 {
                        "params".to_string()
                    } else {
                        format!("params{}", taken + 1)
                    };
                    self.names.insert(key.clone(), name.clone());
                    name
                });
                self.before_holes.push((span, name));
                self.list_keys.push(key);
                return;
            }
        }
        if self.whole && self.is_carried_operand(id) {
            self.hole(id);
            return;
        }
        let parent_kind = node.parent.map(|p| self.bt.nodes[p].kind);
        let carried = self.carried(id);
        let abstract_it = match node.kind {
            NodeKind::ExprName => {
                node.store == Some(true)
                    || carried
                    || self.names.contains_key(&node_key(self.bt, id))
            }
            NodeKind::Identifier if self.bt.text(range) == "*" => false,
            NodeKind::Identifier => match parent_kind {
                Some(NodeKind::Alias | NodeKind::StmtImportFrom) => true,
                Some(NodeKind::ExprAttribute | NodeKind::Keyword) | None => false,
                Some(_) => carried,
            },
            NodeKind::ExprAttribute => {
                let is_callee = node.parent.is_some_and(|p| {
                    self.bt.nodes[p].kind == NodeKind::ExprCall
                        && self.bt.nodes[p].items.first() == Some(&Item::Node(id))
                });
                carried && !is_callee && self.chain_is_best(id)
            }
            NodeKind::ExprStringLiteral | NodeKind::ParameterWithDefault | NodeKind::Keyword => {
                carried
            }
            _ => carried && parent_kind == Some(NodeKind::Arguments) && node.is_expr,
        };
        if abstract_it {
            self.hole(id);
        } else {
            self.visit_children(id);
        }
    }

    /// An expression carried unchanged into after (`str(p)` in `not str(p) in q` ->
    /// `str(p) not in q`, an `if` condition kept by `else: if` -> `elif`) is one hole, so that
    /// the rewrite matches operands of any shape. Not a callee (the changed call's name stays
    /// concrete), nothing holding a protected callee, and not when part of it is used in after
    /// on its own (`obj` in `if obj is None` next to `obj.name`). A constant (`None`, `0`) is
    /// a hole only when the operator next to it survives the fix: `not p is None` ->
    /// `p is not None` keeps `is`, while in `x == None` -> `x is None` the `None` is what
    /// justifies the new operator and stays concrete.
    fn is_carried_operand(&self, id: usize) -> bool {
        let node = &self.bt.nodes[id];
        if !node.is_expr
            || matches!(node.kind, NodeKind::ExprStarred | NodeKind::ExprName)
            || !self.carried(id)
            || self.protected.iter().any(|p| node.outer.contains_range(*p))
        {
            return false;
        }
        let Some(parent) = node.parent else {
            return false;
        };
        let parent = &self.bt.nodes[parent];
        if parent.kind == NodeKind::ExprCall && parent.items.first() == Some(&Item::Node(id)) {
            return false;
        }
        if is_constant(node.kind) {
            return matches!(
                parent.kind,
                NodeKind::ExprCompare | NodeKind::ExprBinOp | NodeKind::ExprBoolOp
            ) && self.operator_kept(node.outer, parent.outer);
        }
        self.subtree_is_best(id)
    }

    /// Whether the operator token next to an operand at `operand` (before it, or after it for
    /// the first operand) inside the operation at `operation` is kept by the fix.
    fn operator_kept(&self, operand: TextRange, operation: TextRange) -> bool {
        let tokens = &self.bt.tokens;
        let next = tokens.partition_point(|t| t.range.start() < operand.end());
        let prev = tokens.partition_point(|t| t.range.start() < operand.start());
        let neighbour = prev
            .checked_sub(1)
            .filter(|i| {
                operation.contains_range(tokens[*i].range)
                    && !matches!(tokens[*i].kind, TokenKind::Lpar)
            })
            .or_else(|| {
                (next < tokens.len() && operation.contains_range(tokens[next].range))
                    .then_some(next)
            });
        neighbour.is_some_and(|i| self.kept_tokens.contains(&i))
    }

    /// True unless an expression inside `id` occurs in after outside the copies of `id`: then
    /// a hole for the whole would leave that use concrete.
    fn subtree_is_best(&self, id: usize) -> bool {
        let outer = self.bt.nodes[id].outer;
        let whole = node_key(self.bt, id);
        let copies: Vec<TextRange> = self
            .at
            .nodes
            .iter()
            .enumerate()
            .filter(|(n, node)| {
                self.a_span.contains_range(node.outer) && node_key(self.at, *n) == whole
            })
            .map(|(_, node)| node.outer)
            .collect();
        let inner: HashSet<String> = self
            .bt
            .nodes
            .iter()
            .enumerate()
            .filter(|(n, node)| {
                *n != id
                    && node.is_expr
                    && !is_constant(node.kind)
                    && outer.contains_range(node.outer)
                    && !is_concrete_identifier(self.bt, *n)
            })
            .map(|(n, _)| node_key(self.bt, n))
            .collect();
        !self.at.nodes.iter().enumerate().any(|(n, node)| {
            self.a_span.contains_range(node.outer)
                && !copies.iter().any(|c| c.contains_range(node.outer))
                && !self
                    .after_protected
                    .iter()
                    .any(|p| p.contains_range(node.outer))
                && inner.contains(&node_key(self.at, n))
        })
    }

    /// An attribute chain (`self.conn`) is one hole unless a shorter prefix of it occurs in
    /// after on its own (`obj` in `if obj is None` next to `obj.name`).
    fn chain_is_best(&self, id: usize) -> bool {
        let mut inner = id;
        loop {
            let node = &self.bt.nodes[inner];
            match node.kind {
                NodeKind::ExprAttribute => {
                    let Some(Item::Node(value)) = node.items.first() else {
                        return false;
                    };
                    inner = *value;
                    let own = self
                        .after_keys
                        .get(&node_key(self.bt, id))
                        .copied()
                        .unwrap_or(0);
                    let prefix = self
                        .after_keys
                        .get(&node_key(self.bt, inner))
                        .copied()
                        .unwrap_or(0);
                    if prefix > own {
                        return false;
                    }
                }
                NodeKind::ExprName => return true,
                _ => return false,
            }
        }
    }

    /// A string part whose text reappears in a string of after becomes a literal hole.
    fn visit_token(&mut self, tok: usize) {
        let t = self.bt.tokens[tok];
        if !matches!(t.kind, TokenKind::String | TokenKind::FStringMiddle)
            || self.is_protected(t.range)
        {
            return;
        }
        let Some(body) = string_body(self.bt, tok) else {
            return;
        };
        if body.is_empty() {
            return;
        }
        let text = self.bt.text(body).to_string();
        let in_after = self
            .at
            .tokens_in(self.a_span)
            .iter()
            .enumerate()
            .any(|(i, _)| {
                let index = self
                    .at
                    .tokens
                    .partition_point(|x| x.range.start() < self.a_span.start())
                    + i;
                string_body(self.at, index).is_some_and(|r| self.at.text(r) == text)
            });
        if in_after {
            let name = self.name_for(format!("literal {text}"));
            self.before_holes.push((body, name.clone()));
            self.literals.push((text, name));
        }
    }

    fn render_before(&self, grammar: Grammar) -> String {
        let mut holes = self.before_holes.clone();
        holes.extend(comments_in(self.bt, self.b_span, &holes));
        holes.sort_by_key(|(r, _)| r.start());
        let text = splice(&self.bt.source, self.b_span, &holes);
        match grammar {
            Grammar::Expression => text,
            Grammar::Module => dedent(&text),
        }
    }

    fn render_after(&mut self, grammar: Grammar) -> String {
        let mut holes: Vec<(TextRange, String)> = Vec::new();
        let taken = |holes: &[(TextRange, String)], r: TextRange| {
            holes
                .iter()
                .any(|(h, _)| h.intersect(r).is_some_and(|x| !x.is_empty()) || h.contains_range(r))
        };
        // Statement runs first: they are the largest units.
        for (id, node) in self.at.nodes.iter().enumerate() {
            if !self.a_span.contains_range(node.outer) || !node.is_stmt {
                continue;
            }
            let Some((parent, _, run_end, pos)) = self.at.body_run(id) else {
                continue;
            };
            let items = &self.at.nodes[parent].items;
            for key in &self.run_keys {
                let wanted: Vec<&str> = key.split('\n').collect();
                if pos + wanted.len() > run_end {
                    continue;
                }
                let ids: Vec<usize> = items[pos..pos + wanted.len()]
                    .iter()
                    .filter_map(|item| match item {
                        Item::Node(n) => Some(*n),
                        Item::Token(_) => None,
                    })
                    .collect();
                let equal = ids.len() == wanted.len()
                    && ids
                        .iter()
                        .zip(&wanted)
                        .all(|(n, k)| self.at.key(self.at.nodes[*n].outer) == *k);
                if equal {
                    let range = TextRange::new(
                        self.at.nodes[ids[0]].outer.start(),
                        self.at.nodes[ids[ids.len() - 1]].outer.end(),
                    );
                    if !taken(&holes, range) {
                        let name = self.names.get(key).cloned().unwrap_or_default();
                        holes.push((range, name));
                    }
                }
            }
        }
        let lists: Vec<(TextRange, String)> = self.after_list_spans(NodeKind::Parameters).collect();
        for (span, key) in lists {
            if self.list_keys.contains(&key)
                && !taken(&holes, span)
                && let Some(name) = self.names.get(&key)
            {
                holes.push((span, name.clone()));
            }
        }
        for (id, node) in self.at.nodes.iter().enumerate() {
            if !self.a_span.contains_range(node.outer)
                || is_concrete_identifier(self.at, id)
                || taken(&holes, node.outer)
                || self
                    .after_protected
                    .iter()
                    .any(|p| p.contains_range(node.outer))
            {
                continue;
            }
            if let Some(name) = self.names.get(&node_key(self.at, id))
                && self.before_holes.iter().any(|(_, n)| n == name)
                && !self.run_keys.contains(&self.at.key(node.outer))
            {
                holes.push((node.outer, name.clone()));
            }
        }
        for (i, tok) in self.at.tokens.iter().enumerate() {
            if !self.a_span.contains_range(tok.range) || taken(&holes, tok.range) {
                continue;
            }
            if let Some(body) = string_body(self.at, i)
                && let Some((_, name)) = self
                    .literals
                    .iter()
                    .find(|(text, _)| self.at.text(body) == text)
            {
                holes.push((body, name.clone()));
            }
        }
        self.after_replaced = holes.iter().map(|(r, _)| *r).collect();
        holes.extend(comments_in(self.at, self.a_span, &holes));
        holes.sort_by_key(|(r, _)| r.start());
        let text = splice(&self.at.source, self.a_span, &holes);
        match grammar {
            Grammar::Expression => text,
            Grammar::Module => dedent(&text),
        }
    }
}

/// A constant that is not a string: concrete unless its operator survives the fix.
fn is_constant(kind: NodeKind) -> bool {
    matches!(
        kind,
        NodeKind::ExprNoneLiteral
            | NodeKind::ExprBooleanLiteral
            | NodeKind::ExprNumberLiteral
            | NodeKind::ExprEllipsisLiteral
    )
}

/// The tokens of `b_span` in before that a longest common subsequence of token texts with
/// `a_span` in after keeps (empty when the spans are too long to compare).
fn kept_tokens(bt: &Tree, b_span: TextRange, at: &Tree, a_span: TextRange) -> HashSet<usize> {
    let first = bt
        .tokens
        .partition_point(|t| t.range.start() < b_span.start());
    let before: Vec<&str> = bt
        .tokens_in(b_span)
        .iter()
        .map(|t| bt.text(t.range))
        .collect();
    let after: Vec<&str> = at
        .tokens_in(a_span)
        .iter()
        .map(|t| at.text(t.range))
        .collect();
    let (n_before, n_after) = (before.len(), after.len());
    if n_before.saturating_mul(n_after) > 4_000_000 {
        return HashSet::new();
    }
    // lengths[i][j]: the longest common subsequence of before[i..] and after[j..].
    let mut lengths = vec![vec![0u32; n_after + 1]; n_before + 1];
    for i in (0..n_before).rev() {
        for j in (0..n_after).rev() {
            lengths[i][j] = if before[i] == after[j] {
                lengths[i + 1][j + 1] + 1
            } else {
                lengths[i + 1][j].max(lengths[i][j + 1])
            };
        }
    }
    let mut kept = HashSet::new();
    let (mut i, mut j) = (0, 0);
    while i < n_before && j < n_after {
        if before[i] == after[j] {
            kept.insert(first + i);
            i += 1;
            j += 1;
        } else if lengths[i + 1][j] >= lengths[i][j + 1] {
            i += 1;
        } else {
            j += 1;
        }
    }
    kept
}

/// The callees to keep concrete: those the fix renamed (`yaml.load` -> `yaml.safe_load`,
/// `eval` -> `ast.literal_eval`) and the plain-name callee of the innermost call the change
/// is in (`super(X, self)` -> `super()`): "the names of the changed call". A call inserted or
/// deleted whole, or changed only in its receiver (`title` in `title.strip()`), protects
/// nothing.
fn protected_callees(t: &Tree, span: TextRange, change: TextRange) -> Vec<TextRange> {
    let inside = |range: TextRange| {
        if change.is_empty() {
            range.start() < change.start() && change.start() < range.end()
        } else {
            range.contains_range(change)
        }
    };
    let mut out = Vec::new();
    let mut innermost: Option<usize> = None;
    for (id, call) in t.nodes.iter().enumerate() {
        if call.kind != NodeKind::ExprCall || !span.contains_range(call.outer) {
            continue;
        }
        let Some(Item::Node(func)) = call.items.first() else {
            continue;
        };
        let callee = &t.nodes[*func];
        let touched = if change.is_empty() {
            inside(callee.outer)
        } else {
            callee
                .outer
                .intersect(change)
                .is_some_and(|r| !r.is_empty())
        };
        let in_receiver = callee.kind == NodeKind::ExprAttribute
            && callee.items.first().is_some_and(|item| match item {
                Item::Node(value) => t.nodes[*value].outer.contains_range(change),
                Item::Token(_) => false,
            });
        let whole = !change.is_empty() && change.contains_range(call.outer);
        if touched && !in_receiver && !whole {
            out.push(callee.outer);
        }
        if inside(call.outer) && innermost.is_none_or(|i| t.nodes[i].depth < call.depth) {
            innermost = Some(id);
        }
    }
    if let Some(call) = innermost
        && let Some(Item::Node(func)) = t.nodes[call].items.first()
        && t.nodes[*func].kind == NodeKind::ExprName
    {
        out.push(t.nodes[*func].outer);
    }
    out
}

/// A node's token key prefixed by its category, so that code carried from before to after is
/// recognised only as the same sort of thing: a name (a variable or an identifier), an
/// expression, a statement, or a node of one other kind (`tags=[]` the parameter is not
/// `tags = []` the statement).
fn node_key(t: &Tree, id: usize) -> String {
    let node = &t.nodes[id];
    let category = if matches!(node.kind, NodeKind::ExprName | NodeKind::Identifier) {
        "name".to_string()
    } else if node.is_expr {
        "expr".to_string()
    } else if node.is_stmt {
        "stmt".to_string()
    } else {
        format!("{:?}", node.kind)
    };
    format!("{category} {}", t.key(node.outer))
}

/// The span from the first to the last child of a list node (`a, b=1, *c` of a parameter
/// list), without its brackets; `None` when it has no children.
fn list_span(t: &Tree, id: usize) -> Option<TextRange> {
    let mut kids = t.nodes[id].items.iter().filter_map(|item| match item {
        Item::Node(n) => Some(*n),
        Item::Token(_) => None,
    });
    let first = kids.next()?;
    let last = kids.next_back().unwrap_or(first);
    Some(TextRange::new(
        t.nodes[first].outer.start(),
        t.nodes[last].outer.end(),
    ))
}

/// Attribute names and keyword-argument names are part of the code's meaning: never holes.
fn is_concrete_identifier(t: &Tree, id: usize) -> bool {
    t.nodes[id].kind == NodeKind::Identifier
        && t.nodes[id]
            .parent
            .is_some_and(|p| matches!(t.nodes[p].kind, NodeKind::ExprAttribute | NodeKind::Keyword))
}

/// The text between the quotes of a string token, or all of an f-string middle.
fn string_body(t: &Tree, tok: usize) -> Option<TextRange> {
    let token = t.tokens.get(tok)?;
    match token.kind {
        TokenKind::FStringMiddle => Some(token.range),
        TokenKind::String => {
            let text = t.token_text(tok);
            let prefix = text.find(['"', '\'']).unwrap_or(0);
            let quote = &text[prefix..];
            let q = if quote.starts_with("\"\"\"") || quote.starts_with("'''") {
                3
            } else {
                1
            };
            if text.len() < prefix + 2 * q {
                return None;
            }
            let start = token.range.start().to_usize() + prefix + q;
            let end = token.range.end().to_usize() - q;
            Some(TextRange::new(size(start), size(end)))
        }
        _ => None,
    }
}

/// The comments of `span` outside holes, as deletions for [`splice`]: templates are code
/// only, and comments inside holes travel with the hole's text anyway.
fn comments_in(
    t: &Tree,
    span: TextRange,
    holes: &[(TextRange, String)],
) -> Vec<(TextRange, String)> {
    t.comments
        .iter()
        .filter(|c| span.contains_range(**c) && !holes.iter().any(|(h, _)| h.contains_range(**c)))
        .map(|c| {
            // Take the blanks before the comment with it.
            let line =
                &t.source[tree::line_start(&t.source, c.start().to_usize())..c.start().to_usize()];
            let blanks = line.len() - line.trim_end().len();
            let start = c.start() - size(blanks);
            (
                TextRange::new(start.max(span.start()), c.end()),
                String::new(),
            )
        })
        .collect()
}

/// `source[span]` with each range replaced by `?name`, or removed for an empty name (ranges
/// sorted, inside `span`).
fn splice(source: &str, span: TextRange, holes: &[(TextRange, String)]) -> String {
    let mut out = String::new();
    let mut at = span.start().to_usize();
    for (range, name) in holes {
        let start = range.start().to_usize();
        if start < at {
            continue;
        }
        out.push_str(&source[at..start]);
        if !name.is_empty() {
            out.push('?');
            out.push_str(name);
        }
        at = range.end().to_usize();
    }
    out.push_str(&source[at..span.end().to_usize()]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_refines_to_characters_without_splitting_names() {
        let (p, b, a) = changed_region("x = yaml.load(f)\n", "x = yaml.safe_load(f)\n");
        assert_eq!((p, b, a), (9, 13, 18));
        let (p, b, a) = changed_region("a\nb\n", "a\nz\nb\n");
        assert_eq!((p, b, a), (2, 2, 4));
        // A deletion slides to its leftmost place.
        let (p, b, a) = changed_region("x._d = x._f()\n", "x._f()\n");
        assert_eq!((p, b, a), (0, 7, 0));
    }

    /// Learns from one fix, checks the templates, and applies the rewrite (checked: it parses
    /// and is idempotent) to other code, expecting the given result.
    fn check(
        (rule, before, after, line): (&str, &str, &str, u32),
        (want_before, want_after): (&str, &str),
        transfers: &[(&str, u32, &str)],
    ) {
        let extracted = extract(rule, before, after, line).expect("extracts");
        assert_eq!(
            (
                extracted.rewrite.before.as_str(),
                extracted.rewrite.after.as_str()
            ),
            (want_before, want_after),
            "{rule}"
        );
        extracted.rewrite.validate().expect("valid rewrite");
        let compiled = compile(&extracted.rewrite).expect("compiles");
        let examples = std::iter::once((before, line, after)).chain(transfers.iter().copied());
        for (source, line, expected) in examples {
            let parsed = crate::parse_source(source).expect("parses");
            let fix = crate::apply(&compiled, &parsed, crate::Site::line(line))
                .expect("valid site")
                .unwrap_or_else(|| panic!("{rule}: no match in {source:?}"));
            assert_eq!(fix.apply_to(source).expect("edits fit"), expected, "{rule}");
            crate::apply_checked(&compiled, source, &fix)
                .unwrap_or_else(|e| panic!("{rule}: {e} in {source:?}"));
        }
    }

    #[test]
    fn carried_operands_become_whole_holes() {
        check(
            (
                "E713",
                "def f(p, q):\n    if not str(p) in tuple(q):\n        return 1\n",
                "def f(p, q):\n    if str(p) not in tuple(q):\n        return 1\n",
                2,
            ),
            ("not ?a in ?b", "?a not in ?b"),
            &[
                (
                    "for key in keys:\n    if not key.lower() in seen:\n        seen.add(key)\n",
                    2,
                    "for key in keys:\n    if key.lower() not in seen:\n        seen.add(key)\n",
                ),
                ("ok = not x in items\n", 1, "ok = x not in items\n"),
            ],
        );
        check(
            (
                "E714",
                "def f(p):\n    if not p is None:\n        return 1\n",
                "def f(p):\n    if p is not None:\n        return 1\n",
                2,
            ),
            ("not ?a is ?b", "?a is not ?b"),
            &[("assert not f(x) is y\n", 1, "assert f(x) is not y\n")],
        );
    }

    #[test]
    fn carried_conditions_become_holes_and_the_structure_stays() {
        check(
            (
                "PLR5501",
                "def f(a, b):\n    if len(a) > 1:\n        return 1\n    else:\n        if b == 0:\n            return 2\n    return 3\n",
                "def f(a, b):\n    if len(a) > 1:\n        return 1\n    elif b == 0:\n        return 2\n    return 3\n",
                5,
            ),
            (
                "if ?a:\n    ?b\nelse:\n    if ?c:\n        ?d",
                "if ?a:\n    ?b\nelif ?c:\n    ?d",
            ),
            &[(
                "if user.is_admin():\n    grant()\nelse:\n    if not user.banned:\n        log(user)\n        ask()\n",
                4,
                "if user.is_admin():\n    grant()\nelif not user.banned:\n    log(user)\n    ask()\n",
            )],
        );
    }

    /// The changed call's name, a constant that justifies the new operator and a literal the fix
    /// removes stay concrete; the carried argument is one hole whatever its shape.
    #[test]
    fn what_the_fix_changes_stays_concrete() {
        check(
            (
                "B506",
                "import yaml\ncfg = yaml.load(open(path).read())\n",
                "import yaml\ncfg = yaml.safe_load(open(path).read())\n",
                2,
            ),
            ("yaml.load(?a)", "yaml.safe_load(?a)"),
            &[("data = yaml.load(fh)\n", 1, "data = yaml.safe_load(fh)\n")],
        );
        check(
            (
                "E711",
                "if x.y == None:\n    pass\n",
                "if x.y is None:\n    pass\n",
                1,
            ),
            ("?a == None", "?a is None"),
            &[("ok = f(z)[0] == None\n", 1, "ok = f(z)[0] is None\n")],
        );
        check(
            (
                "UP015",
                "with open(p, \"r\") as f:\n    pass\n",
                "with open(p) as f:\n    pass\n",
                1,
            ),
            ("open(?a, \"r\")", "open(?a)"),
            &[(
                "text = open(base / name, \"r\").read()\n",
                1,
                "text = open(base / name).read()\n",
            )],
        );
        // Not `?a(?b)`: neither the callee of the changed call nor anything holding it.
        let extracted = extract("B506", "x = yaml.load(fh)\n", "x = yaml.safe_load(fh)\n", 1)
            .expect("extracts");
        assert!(
            extracted.rewrite.before.starts_with("yaml.load("),
            "{extracted:?}"
        );
    }

    #[test]
    fn suppressions_are_stripped() {
        assert_eq!(
            strip_suppressions("import x  # type: ignore[import]\n"),
            strip_suppressions("import x\n")
        );
        assert_ne!(
            strip_suppressions("x = 1  # note\n"),
            strip_suppressions("x = 1\n")
        );
    }
}
