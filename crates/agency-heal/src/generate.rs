//! The third tier: a generated fix from a language model (`agency_llm`), for findings that
//! neither a pattern nor a deterministic fixer can fix. The model sees the finding, the
//! enclosing function or class, the file's imports and the closest patterns as worked
//! examples; it answers with code-anchored edits that must fall inside the enclosing
//! definition. A generated fix is verified like every other; it applies unattended only with
//! `[llm] auto_apply = true`, otherwise it waits for a human.

use std::ops::Range;

use agency_core::contract::Finding;
use agency_llm::{Example, FindingRef, FixRequest, LlmClient};
use ruff_python_ast::Stmt;
use ruff_text_size::Ranged;

/// The LLM tier of a run.
#[derive(Debug)]
pub struct Generator {
    client: LlmClient,
}

/// Why no generated fix came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoFix {
    /// Not tried, for a reason the user can act on (budget, a file that is never sent).
    Skip(String),
    /// Tried and failed (the model's answers were refused, the service failed).
    Fail(String),
}

/// Prompts per finding: the first, and one more with the reason the first answer was refused.
const PROMPTS: usize = 2;

impl Generator {
    pub fn new(client: LlmClient) -> Self {
        Generator { client }
    }

    /// Whether a verified generated fix may apply without a human (`[llm] auto_apply`).
    pub fn auto_apply(&self) -> bool {
        self.client.config().auto_apply
    }

    /// The file's text with a generated fix of `finding`, or why there is none. `examples` are
    /// the closest patterns, shown to the model whatever their confidence.
    pub fn generate(
        &self,
        finding: &Finding,
        text: &str,
        examples: &[Example],
    ) -> Result<String, NoFix> {
        let region = enclosing_definition(text, finding.line);
        let imports = imports(text);
        let mut previous: Option<String> = None;
        for _ in 0..PROMPTS {
            let request = FixRequest {
                finding: FindingRef {
                    rule: &finding.rule,
                    message: &finding.message,
                    file: &finding.file,
                    line: finding.line,
                    category: &finding.category,
                },
                file_text: text,
                region: region.clone(),
                imports: &imports,
                examples,
                previous_failure: previous.as_deref(),
            };
            match self.client.propose_fix(&request) {
                Ok(proposal) => {
                    let after = agency_llm::apply_edits(text, &proposal.edits);
                    if after == text {
                        return Err(NoFix::Fail("the generated fix changes nothing".into()));
                    }
                    return Ok(after);
                }
                Err(agency_llm::Error::Rejected(rejection)) => {
                    previous = Some(rejection.to_string());
                }
                Err(e) => {
                    return Err(match e.skip_reason() {
                        Some(reason) => NoFix::Skip(reason),
                        None => NoFix::Fail(format!("no generated fix: {e}")),
                    });
                }
            }
        }
        Err(NoFix::Fail(format!(
            "the model's answers were refused {PROMPTS} times; the last: {}",
            previous.unwrap_or_default()
        )))
    }
}

/// The byte range of the innermost function or class around `line` (1-based), else of the
/// lines around it (20 each way): the region the model may change.
fn enclosing_definition(text: &str, line: u32) -> Range<usize> {
    let offset = line_offset(text, line);
    let parsed = ruff_python_parser::parse_module(text);
    if let Ok(parsed) = parsed {
        let mut best: Option<Range<usize>> = None;
        innermost(&parsed.syntax().body, offset, &mut best);
        if let Some(range) = best {
            return range;
        }
    }
    let first = line.saturating_sub(20).max(1);
    line_offset(text, first)..line_offset(text, line + 21)
}

fn innermost(body: &[Stmt], offset: usize, best: &mut Option<Range<usize>>) {
    for stmt in body {
        let range = stmt.range().start().to_usize()..stmt.range().end().to_usize();
        if !range.contains(&offset) {
            continue;
        }
        match stmt {
            Stmt::FunctionDef(def) => {
                *best = Some(range);
                innermost(&def.body, offset, best);
            }
            Stmt::ClassDef(class) => {
                *best = Some(range);
                innermost(&class.body, offset, best);
            }
            Stmt::If(s) => {
                innermost(&s.body, offset, best);
                for clause in &s.elif_else_clauses {
                    innermost(&clause.body, offset, best);
                }
            }
            Stmt::For(s) => {
                innermost(&s.body, offset, best);
                innermost(&s.orelse, offset, best);
            }
            Stmt::While(s) => {
                innermost(&s.body, offset, best);
                innermost(&s.orelse, offset, best);
            }
            Stmt::With(s) => innermost(&s.body, offset, best),
            Stmt::Try(s) => {
                innermost(&s.body, offset, best);
                for handler in &s.handlers {
                    let ruff_python_ast::ExceptHandler::ExceptHandler(h) = handler;
                    innermost(&h.body, offset, best);
                }
                innermost(&s.orelse, offset, best);
                innermost(&s.finalbody, offset, best);
            }
            _ => {}
        }
    }
}

/// The byte offset where 1-based `line` starts (the end of the text past the last line).
fn line_offset(text: &str, line: u32) -> usize {
    if line <= 1 {
        return 0;
    }
    text.match_indices('\n')
        .nth(line as usize - 2)
        .map_or(text.len(), |(i, _)| i + 1)
}

/// The file's top-level import lines.
fn imports(text: &str) -> String {
    let mut out = String::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("import ") || l.starts_with("from "))
    {
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: &str = "import os\nfrom a import b\n\n\nclass C:\n    def m(self):\n        x = 1\n        return x\n\n\ndef f():\n    return 2\n";

    #[test]
    fn the_region_is_the_innermost_definition() {
        let r = enclosing_definition(SOURCE, 7);
        assert_eq!(&SOURCE[r], "def m(self):\n        x = 1\n        return x");
        let r = enclosing_definition(SOURCE, 12);
        assert_eq!(&SOURCE[r], "def f():\n    return 2");
        // Outside any definition: the lines around.
        let r = enclosing_definition(SOURCE, 1);
        assert_eq!(r.start, 0);
        assert!(r.end > 0);
    }

    #[test]
    fn imports_are_the_top_level_import_lines() {
        assert_eq!(imports(SOURCE), "import os\nfrom a import b\n");
    }
}
