//! Generalisation: the least general generalisation (anti-unification) of two rewrites of one
//! rule (LEARNING.md §3).
//!
//! The before templates are walked together: equal subtrees stay, subtrees of one shape are
//! walked into, and each other differing pair becomes a hole; the same pair always becomes the
//! same hole, in before and after alike, so the after side gets a difference only where before
//! has the same one. Differing text inside string literals becomes a literal hole.

use std::collections::BTreeMap;

use agency_core::pattern::Rewrite;
use ruff_python_ast::NodeKind;
use ruff_python_ast::token::TokenKind;
use ruff_text_size::TextRange;

use crate::template::{CompiledRewrite, Segment, Template, compile, segments};
use crate::tree::{Item, Tree};

/// Anti-unifies `a` and `b` (the before/after pairs together). `None` when they do not
/// generalise into an acceptable rewrite: either side fails to compile, the grammars or root
/// kinds differ, the before root would become a hole, the after would be a bare hole
/// (`?x -> ?y`), an after difference has no matching before difference (it would be an unbound
/// hole), or fewer than two concrete nodes remain in before. Equal inputs give `a` back.
pub fn generalise(a: &Rewrite, b: &Rewrite) -> Option<Rewrite> {
    let ca = compile(a).ok()?;
    let cb = compile(b).ok()?;
    if ca.before.grammar != cb.before.grammar {
        return None;
    }
    let used: Vec<String> = ca
        .holes()
        .iter()
        .chain(cb.holes())
        .map(|h| h.name.clone())
        .collect();
    let mut au = AntiUnifier {
        a: &ca,
        b: &cb,
        pairs: BTreeMap::new(),
        used,
        bind: true,
    };
    let before = au.sides(&ca.before, &cb.before)?;
    au.bind = false;
    let after = au.sides(&ca.after, &cb.after)?;
    let before_text = render(&ca, &ca.before, &before);
    let after_text = render(&ca, &ca.after, &after);
    let result = Rewrite {
        before: before_text,
        after: after_text,
    };
    let compiled = compile(&result).ok()?;
    if concrete_nodes(&compiled.before) < 2 {
        return None;
    }
    Some(result)
}

struct AntiUnifier<'a> {
    a: &'a CompiledRewrite,
    b: &'a CompiledRewrite,
    /// Differing pair (display keys) -> hole name.
    pairs: BTreeMap<(String, String), String>,
    used: Vec<String>,
    /// True while walking before (new pairs allowed); false for after.
    bind: bool,
}

/// A hole to splice into a side of `a`: a range of its placeholder text and a name.
type Splice = (TextRange, String);

impl AntiUnifier<'_> {
    fn sides(&mut self, ta: &Template, tb: &Template) -> Option<Vec<Splice>> {
        let (ia, ib) = (ta.tree.top_items(), tb.tree.top_items());
        if ia.len() != ib.len() {
            return None;
        }
        let mut out = Vec::new();
        for (x, y) in ia.iter().zip(ib) {
            match (x, y) {
                (Item::Node(na), Item::Node(nb)) => {
                    // The roots themselves never become holes.
                    if ta.tree.nodes[*na].kind != tb.tree.nodes[*nb].kind {
                        return None;
                    }
                    if key(self.a, ta, ta.tree.nodes[*na].outer)
                        == key(self.b, tb, tb.tree.nodes[*nb].outer)
                    {
                        continue;
                    }
                    self.items(ta, tb, *na, *nb, &mut out).ok()?;
                }
                _ => return None,
            }
        }
        Some(out)
    }

    fn fresh(&mut self) -> String {
        let mut i = 0;
        loop {
            let name = format!("g{i}");
            if !self.used.contains(&name) {
                self.used.push(name.clone());
                return name;
            }
            i += 1;
        }
    }

    /// Anti-unifies two nodes; `Err` when they differ and cannot be a hole here (the parent
    /// must be one), or when an after difference is unbound.
    fn node(
        &mut self,
        ta: &Template,
        tb: &Template,
        na: usize,
        nb: usize,
        out: &mut Vec<Splice>,
    ) -> Result<(), Unbound> {
        let ka = key(self.a, ta, ta.tree.nodes[na].outer);
        let kb = key(self.b, tb, tb.tree.nodes[nb].outer);
        if ka == kb {
            return Ok(());
        }
        if let Some(name) = self.pairs.get(&(ka.clone(), kb.clone())) {
            out.push((ta.tree.nodes[na].outer, name.clone()));
            return Ok(());
        }
        let mark = out.len();
        if ta.tree.nodes[na].kind == tb.tree.nodes[nb].kind
            && self.items(ta, tb, na, nb, out).is_ok()
        {
            return Ok(());
        }
        out.truncate(mark);
        if !self.bind || !can_be_hole(&ta.tree, na) || !can_be_hole(&tb.tree, nb) {
            return Err(Unbound);
        }
        let name = self.fresh();
        self.pairs.insert((ka, kb), name.clone());
        out.push((ta.tree.nodes[na].outer, name));
        Ok(())
    }

    fn items(
        &mut self,
        ta: &Template,
        tb: &Template,
        na: usize,
        nb: usize,
        out: &mut Vec<Splice>,
    ) -> Result<(), Unbound> {
        let ia = &ta.tree.nodes[na].items;
        let ib = &tb.tree.nodes[nb].items;
        if ia.len() != ib.len() {
            return Err(Unbound);
        }
        for (x, y) in ia.iter().zip(ib) {
            match (x, y) {
                (Item::Node(ca), Item::Node(cb)) => self.node(ta, tb, *ca, *cb, out)?,
                (Item::Token(xa), Item::Token(xb)) => self.token(ta, tb, *xa, *xb, out)?,
                _ => return Err(Unbound),
            }
        }
        Ok(())
    }

    fn token(
        &mut self,
        ta: &Template,
        tb: &Template,
        xa: usize,
        xb: usize,
        out: &mut Vec<Splice>,
    ) -> Result<(), Unbound> {
        let (tok_a, tok_b) = (ta.tree.tokens[xa], tb.tree.tokens[xb]);
        let text_a = translate(self.a, ta.tree.token_text(xa));
        let text_b = translate(self.b, tb.tree.token_text(xb));
        if tok_a.kind != tok_b.kind {
            return Err(Unbound);
        }
        if text_a == text_b {
            return Ok(());
        }
        let Some(body) = string_body(&ta.tree, xa, tok_a.kind) else {
            return Err(Unbound);
        };
        let Some(body_b) = string_body(&tb.tree, xb, tok_b.kind) else {
            return Err(Unbound);
        };
        let (ka, kb) = (
            translate(self.a, ta.tree.text(body)),
            translate(self.b, tb.tree.text(body_b)),
        );
        // Same quotes and prefix required: only the body generalises.
        let outside_a = text_a.replacen(&ka, "", 1);
        let outside_b = text_b.replacen(&kb, "", 1);
        if outside_a != outside_b {
            return Err(Unbound);
        }
        let pair = (format!("literal {ka}"), format!("literal {kb}"));
        if let Some(name) = self.pairs.get(&pair) {
            out.push((body, name.clone()));
            return Ok(());
        }
        if !self.bind {
            return Err(Unbound);
        }
        let name = self.fresh();
        self.pairs.insert(pair, name.clone());
        out.push((body, name));
        Ok(())
    }
}

#[derive(Debug)]
struct Unbound;

fn can_be_hole(tree: &Tree, id: usize) -> bool {
    let node = &tree.nodes[id];
    (node.is_expr && node.kind != NodeKind::ExprStarred)
        || node.is_stmt
        || matches!(
            node.kind,
            NodeKind::Identifier
                | NodeKind::ParameterWithDefault
                | NodeKind::Keyword
                | NodeKind::Alias
        )
}

fn string_body(tree: &Tree, tok: usize, kind: TokenKind) -> Option<TextRange> {
    let range = tree.tokens[tok].range;
    match kind {
        TokenKind::FStringMiddle => Some(range),
        TokenKind::String => {
            let text = tree.token_text(tok);
            let prefix = text.find(['"', '\''])?;
            let rest = &text[prefix..];
            let q = if rest.starts_with("\"\"\"") || rest.starts_with("'''") {
                3
            } else {
                1
            };
            if text.len() < prefix + 2 * q {
                return None;
            }
            let start = range.start() + ruff_text_size::TextSize::try_from(prefix + q).ok()?;
            let end = range.end() - ruff_text_size::TextSize::try_from(q).ok()?;
            Some(TextRange::new(start, end))
        }
        _ => None,
    }
}

/// Placeholder text with placeholders turned back into `?name`.
fn translate(rewrite: &CompiledRewrite, text: &str) -> String {
    match segments(text) {
        None => text.to_string(),
        Some(segs) => segs
            .iter()
            .map(|seg| match seg {
                Segment::Text(t) => (*t).to_string(),
                Segment::Hole(i) => {
                    format!("?{}", rewrite.holes.get(*i).map_or("", |h| h.name.as_str()))
                }
            })
            .collect(),
    }
}

/// The token texts of a range, holes shown by name, so that keys compare across rewrites.
fn key(rewrite: &CompiledRewrite, template: &Template, range: TextRange) -> String {
    let tokens = template.tree.tokens_in(range);
    let mut out = String::new();
    for (i, t) in tokens.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&translate(rewrite, template.tree.text(t.range)));
    }
    out
}

/// A side of `a` with the splices applied, placeholders written back as `?name`.
fn render(rewrite: &CompiledRewrite, template: &Template, splices: &[Splice]) -> String {
    let mut splices = splices.to_vec();
    splices.sort_by_key(|(r, _)| r.start());
    let source = &template.tree.source;
    let mut out = String::new();
    let mut at = 0;
    for (range, name) in splices {
        let start = range.start().to_usize();
        if start < at {
            continue;
        }
        out.push_str(&translate(rewrite, &source[at..start]));
        out.push('?');
        out.push_str(&name);
        at = range.end().to_usize();
    }
    out.push_str(&translate(rewrite, &source[at..]));
    out
}

/// Nodes of a template that are not holes (the module or expression root excluded).
pub(crate) fn concrete_nodes(template: &Template) -> usize {
    template
        .tree
        .nodes
        .iter()
        .enumerate()
        .skip(1)
        .filter(|(id, _)| {
            let mut at = Some(*id);
            while let Some(n) = at {
                if template.node_hole[n].is_some() {
                    return false;
                }
                at = template.tree.nodes[n].parent;
            }
            true
        })
        .count()
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

    #[test]
    fn differing_receivers_become_one_shared_hole() {
        let g = generalise(
            &rw("self.conn.execute(?a % ?b)", "self.conn.execute(?a, (?b,))"),
            &rw("cur.execute(?a % ?b)", "cur.execute(?a, (?b,))"),
        )
        .expect("generalises");
        assert_eq!(g, rw("?g0.execute(?a % ?b)", "?g0.execute(?a, (?b,))"));
    }

    #[test]
    fn over_generalisation_is_refused() {
        // Root kinds differ.
        assert_eq!(
            generalise(&rw("?x == None", "?x is None"), &rw("?x == True", "?x")),
            None
        );
        // After difference without a before difference: an unbound hole.
        assert_eq!(
            generalise(
                &rw("?m.get(?k).strip()", "?m.get(?k, \"\").strip()"),
                &rw("?m.get(?k).strip()", "?m.get(?k, 0).strip()")
            ),
            None
        );
        // Only one concrete node would be left.
        assert_eq!(generalise(&rw("-a", "a"), &rw("-b", "b")), None);
    }

    #[test]
    fn string_bodies_generalise_to_literal_holes() {
        let g = generalise(&rw("f\"hello\"", "\"hello\""), &rw("f\"bye\"", "\"bye\""))
            .expect("generalises");
        assert_eq!(g, rw("f\"?g0\"", "\"?g0\""));
    }

    #[test]
    fn equal_inputs_give_the_input() {
        let r = rw("?x == None", "?x is None");
        assert_eq!(generalise(&r, &r), Some(r));
    }
}
