//! The prompt: one system message with the answer format, one user message with the finding,
//! the file's imports, the region that may be edited, the closest learned patterns as worked
//! examples and, on a retry, why the previous attempt failed.
//!
//! Edits are anchored on code (`find`/`replace`), never on line numbers: models count lines
//! badly, and a quoted anchor that must occur exactly once is checkable.

use std::fmt::Write as _;
use std::ops::Range;

use serde::Serialize;

use crate::redact::Redactor;

/// The finding to fix, as the healer knows it.
#[derive(Debug, Clone, Copy)]
pub struct FindingRef<'a> {
    /// Rule code, e.g. `AGY203` or `F401`.
    pub rule: &'a str,
    pub message: &'a str,
    /// Path relative to the repository root, `/`-separated; matched against `never_send`.
    pub file: &'a str,
    /// 1-based line of the finding.
    pub line: u32,
    /// The finding's category (`security`, `type`, ...): usage is reported by it.
    pub category: &'a str,
}

/// A learned pattern shown as a worked example.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// The pattern's template before the fix.
    pub before: String,
    /// The pattern's template after the fix.
    pub after: String,
    /// The pattern's confidence, 0 to 1.
    pub confidence: f64,
}

/// Everything one generated fix needs. The region is the only part of the file the model sees
/// and the only part its edits may touch: usually the enclosing function or class.
#[derive(Debug, Clone)]
pub struct FixRequest<'a> {
    pub finding: FindingRef<'a>,
    /// The whole file; only `region` of it is sent.
    pub file_text: &'a str,
    /// Byte range of `file_text` shown to the model and allowed to change.
    pub region: Range<usize>,
    /// The file's import statements, as text.
    pub imports: &'a str,
    /// The closest patterns, best first.
    pub examples: &'a [Example],
    /// On a retry: why the previous attempt failed (its verification output or rejection).
    pub previous_failure: Option<&'a str>,
}

/// One chat message, as sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    pub role: &'static str,
    pub content: String,
}

/// The instructions: the answer format and the rules of an acceptable edit.
pub const SYSTEM_PROMPT: &str = r#"You fix one reported problem in a Python file.
Answer with exactly one JSON object and nothing else:
{"edits": [{"find": "<exact code from the region>", "replace": "<new code>"}], "explanation": "<one or two sentences>"}
Rules:
- Each "find" is copied character for character (indentation and line breaks included) from the REGION, and occurs exactly once in it. Quote enough surrounding code to make it unique.
- "replace" is the code that takes its place. Keep the indentation of the surrounding code.
- Change only what the fix needs; do not reformat, rename or reorder other code. Edits must not overlap.
- Only the REGION may change. If a new import is needed, the region must contain a place for it; otherwise fix without it.
- Values written as __AGENCY_SECRET_<n>__ are redacted secrets: keep them exactly as they are, never invent values for them.
- If the problem cannot be fixed inside the region, answer {"edits": [], "explanation": "<why>"}."#;

/// The longest previous-failure text sent: the tail of a long test log says most.
const MAX_FAILURE_BYTES: usize = 4000;

/// Builds the messages for `request`, redacting every text through `redactor` (which then
/// restores the answer). The region must be a valid range of the file: the caller checks it.
pub fn build_messages(request: &FixRequest<'_>, redactor: &mut Redactor) -> Vec<Message> {
    let finding = &request.finding;
    let region_text = &request.file_text[request.region.clone()];
    let first_line = line_of(request.file_text, request.region.start);
    let last_line = first_line + region_text.trim_end_matches('\n').matches('\n').count();
    let mut user = String::with_capacity(region_text.len() * 2 + 1024);
    let _ = writeln!(
        user,
        "PROBLEM: {} {}\nFILE: {}, line {}",
        finding.rule,
        redactor.redact(finding.message),
        finding.file,
        finding.line
    );
    if !request.imports.trim().is_empty() {
        let _ = write!(
            user,
            "\nIMPORTS of the file (for reference):\n```python\n{}\n```\n",
            redactor.redact(request.imports.trim_end())
        );
    }
    let _ = write!(
        user,
        "\nREGION (lines {first_line}-{last_line}, the only code you may edit):\n```python\n{}\n```\n",
        redactor.redact(region_text.trim_end_matches('\n'))
    );
    for (idx, example) in request.examples.iter().enumerate() {
        let _ = write!(
            user,
            "\nEXAMPLE {} of a verified fix of a similar problem (confidence {:.2}; ?name marks a hole):\nBefore:\n```python\n{}\n```\nAfter:\n```python\n{}\n```\n",
            idx + 1,
            example.confidence,
            redactor.redact(example.before.trim_end()),
            redactor.redact(example.after.trim_end())
        );
    }
    if let Some(failure) = request.previous_failure {
        let tail = tail(failure, MAX_FAILURE_BYTES);
        let _ = write!(
            user,
            "\nYOUR PREVIOUS ATTEMPT FAILED; avoid its mistake:\n```\n{}\n```\n",
            redactor.redact(tail.trim_end())
        );
    }
    user.push_str("\nAnswer with the JSON object only.");
    vec![
        Message {
            role: "system",
            content: SYSTEM_PROMPT.to_string(),
        },
        Message {
            role: "user",
            content: user,
        },
    ]
}

/// 1-based line of a byte offset.
pub fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .split(|&b| b == b'\n')
        .count()
}

/// The last `max` bytes of `text`, cut at a character boundary.
fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_has_the_finding_the_region_the_examples_and_the_failure() {
        let file = "import os\n\n\ndef f(x):\n    if x == None:\n        return 1\n\n\ndef g():\n    pass\n";
        let start = file.find("def f").unwrap();
        let end = file.find("\n\n\ndef g").unwrap() + 1;
        let examples = [Example {
            before: "?x == None".into(),
            after: "?x is None".into(),
            confidence: 0.93,
        }];
        let request = FixRequest {
            finding: FindingRef {
                rule: "E711",
                message: "comparison to None",
                file: "pkg/mod.py",
                line: 5,
                category: "style",
            },
            file_text: file,
            region: start..end,
            imports: "import os\n",
            examples: &examples,
            previous_failure: Some("FAILED test_f - AssertionError"),
        };
        let messages = build_messages(&request, &mut Redactor::new());
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].role, "system");
        let user = &messages[1].content;
        for needle in [
            "PROBLEM: E711 comparison to None",
            "FILE: pkg/mod.py, line 5",
            "import os",
            "REGION (lines 4-6",
            "def f(x):\n    if x == None:\n        return 1\n```",
            "confidence 0.93",
            "?x is None",
            "FAILED test_f - AssertionError",
        ] {
            assert!(user.contains(needle), "{needle:?} not in {user}");
        }
        assert!(!user.contains("def g"), "only the region is sent");
    }

    #[test]
    fn lines_and_tails() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 99), 3);
        assert_eq!(tail("héllo", 4), "llo");
        assert_eq!(tail("abc", 10), "abc");
    }
}
