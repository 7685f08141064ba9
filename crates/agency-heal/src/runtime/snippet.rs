//! The Python text the fixers write: string literals and f-string messages, `if ... is None:`
//! blocks in the file's own indentation and line endings, and byte-range edits.

use std::fmt::Write as _;

/// One piece of an exception message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Part {
    /// Literal text.
    Text(String),
    /// `{expr!r}`: the value's repr at run time. Only for expressions that are safe to evaluate
    /// again (names, dotted names).
    Repr(String),
    /// `{expr}`: the value's str at run time, same restriction.
    Plain(String),
}

/// A Python string literal for `parts`: a plain `"..."` when every part is text, else an
/// f-string. Only names and dotted names go between braces, so no quote or backslash ever
/// appears inside a replacement field (which Python before 3.12 rejects).
pub(super) fn message(parts: &[Part]) -> String {
    let dynamic = parts.iter().any(|p| !matches!(p, Part::Text(_)));
    let mut out = String::from(if dynamic { "f\"" } else { "\"" });
    for part in parts {
        match part {
            Part::Text(text) => escape_into(&mut out, text, dynamic),
            Part::Repr(expr) => {
                let _ = write!(out, "{{{expr}!r}}");
            }
            Part::Plain(expr) => {
                let _ = write!(out, "{{{expr}}}");
            }
        }
    }
    out.push('"');
    out
}

/// `text` as a double-quoted Python string literal.
pub(super) fn string_literal(text: &str) -> String {
    message(&[Part::Text(text.to_string())])
}

fn escape_into(out: &mut String, text: &str, braces: bool) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '{' if braces => out.push_str("{{"),
            '}' if braces => out.push_str("}}"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// Lines of code at one indentation, each ended by `newline`: `indent` before the first,
/// `indent + unit` before the others (a header and its one-statement body).
pub(super) fn block(indent: &str, unit: &str, header: &str, body: &str, newline: &str) -> String {
    format!("{indent}{header}{newline}{indent}{unit}{body}{newline}")
}

/// Source text on one line, whitespace runs collapsed, cut to about 60 characters: how the
/// report names a piece of code.
pub(super) fn short(code: &str) -> String {
    let collapsed = code.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.chars().count() <= 60 {
        return collapsed;
    }
    let cut: String = collapsed.chars().take(57).collect();
    format!("{cut}...")
}

/// One replacement of a byte range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Edit {
    pub start: usize,
    pub end: usize,
    pub text: String,
}

impl Edit {
    pub fn insert(at: usize, text: String) -> Self {
        Edit {
            start: at,
            end: at,
            text,
        }
    }
}

/// `source` with `edits` applied; `None` when two edits overlap.
pub(super) fn apply(source: &str, edits: &[Edit]) -> Option<String> {
    let mut sorted: Vec<&Edit> = edits.iter().collect();
    sorted.sort_by_key(|e| (e.start, e.end));
    let mut out = String::with_capacity(source.len() + 256);
    let mut at = 0;
    for edit in sorted {
        if edit.start < at || edit.end < edit.start || edit.end > source.len() {
            return None;
        }
        out.push_str(source.get(at..edit.start)?);
        out.push_str(&edit.text);
        at = edit.end;
    }
    out.push_str(source.get(at..)?);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_escape_quotes_backslashes_and_braces() {
        assert_eq!(string_literal(r#"say "hi"\n"#), r#""say \"hi\"\\n""#);
        assert_eq!(
            message(&[
                Part::Repr("line".into()),
                Part::Text(" does not match '(\\d{2})'".into()),
            ]),
            r#"f"{line!r} does not match '(\\d{{2}})'""#
        );
        assert_eq!(
            message(&[Part::Text("{x}".into())]),
            "\"{x}\"",
            "braces stay single outside f-strings"
        );
    }

    #[test]
    fn edits_apply_in_order_and_refuse_overlaps() {
        let edits = [
            Edit::insert(4, "X".into()),
            Edit {
                start: 0,
                end: 1,
                text: "b".into(),
            },
        ];
        assert_eq!(apply("abcdef", &edits).as_deref(), Some("bbcdXef"));
        let overlapping = [
            Edit {
                start: 0,
                end: 3,
                text: String::new(),
            },
            Edit::insert(1, "Y".into()),
        ];
        assert_eq!(apply("abcdef", &overlapping), None);
        assert_eq!(
            short("call(\n    a,\n    b,\n)"),
            "call( a, b, )",
            "whitespace runs collapse"
        );
    }
}
