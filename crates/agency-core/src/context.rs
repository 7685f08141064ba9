//! The error context: what the pattern store embeds and indexes, and the recipe that normalises
//! it so that incidental detail does not dominate similarity.
//!
//! Recipe (documented in `docs/error-context.md`):
//!
//! 1. The context is `category`, `rule`, the tool's `message` and the `code` around the fault.
//! 2. Message: file paths become `<path>`, hexadecimal addresses `<addr>`, free-standing numbers
//!    (line and column numbers, counts, values) `<num>`. Quoted names and types stay: in
//!    `Item "None" of "Optional[str]" has no attribute "strip"` they are the signal.
//! 3. Code: at most [`CODE_WINDOW_LINES`] lines around the fault line; comments are dropped;
//!    string literals become `<str>` (keeping a prefix such as `f`, since an f-string is what
//!    F541 and SQL injection rules are about); numbers become `<num>`.
//! 4. Identifiers longer than [`LONG_IDENT_CHARS`] keep their first [`LONG_IDENT_WORDS`] words
//!    (split at `_` and lower-to-upper case changes): `get_user_preferences_by_account_id` →
//!    `get_user_preferences`.
//! 5. Whitespace collapses to single spaces; message and code are each cut at a character
//!    budget so the whole text stays well under the model's 128-token window (latency grows with
//!    length).
//! 6. The embedded text is `"{category} {rule}: {message} | {code}"`, leaving out absent parts.
//!
//! Normalising is idempotent: normalising a normalised context changes nothing.

use crate::Category;

/// Lines of code kept around the fault line (the fault line and two on each side).
pub const CODE_WINDOW_LINES: usize = 5;
/// Identifiers longer than this are shortened.
pub const LONG_IDENT_CHARS: usize = 24;
/// Words kept of a long identifier.
pub const LONG_IDENT_WORDS: usize = 3;
/// Characters kept of the normalised message.
pub const MESSAGE_BUDGET_CHARS: usize = 240;
/// Characters kept of the normalised code.
pub const CODE_BUDGET_CHARS: usize = 200;

/// An error as found: what the healer or a query supplies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorContext {
    pub category: Option<Category>,
    pub rule: Option<String>,
    pub message: String,
    /// Source lines around the fault, if known.
    pub code: Option<String>,
    /// 0-based index into `code`'s lines of the faulting line, if known.
    pub fault_line: Option<usize>,
}

/// The normalised parts of a context: `text` is embedded; the parts feed the text index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedContext {
    pub text: String,
    pub message: String,
    pub code: String,
    /// True when the message or code was cut to its budget.
    pub truncated: bool,
}

/// Normalises an error context by the recipe in the module docs.
pub fn normalize(ctx: &ErrorContext) -> NormalizedContext {
    let (message, msg_cut) = cut(&normalize_message(&ctx.message), MESSAGE_BUDGET_CHARS);
    let code_full = ctx
        .code
        .as_deref()
        .map(|c| normalize_code(&window(c, ctx.fault_line)))
        .unwrap_or_default();
    let (code, code_cut) = cut(&code_full, CODE_BUDGET_CHARS);
    let mut text = String::new();
    if let Some(c) = ctx.category {
        text.push_str(c.as_str());
    }
    if let Some(rule) = ctx.rule.as_deref().map(str::trim).filter(|r| !r.is_empty()) {
        push_sep(&mut text, " ");
        text.push_str(rule);
    }
    if !text.is_empty() && !message.is_empty() {
        text.push(':');
    }
    if !message.is_empty() {
        push_sep(&mut text, " ");
        text.push_str(&message);
    }
    if !code.is_empty() {
        push_sep(&mut text, " | ");
        text.push_str(&code);
    }
    NormalizedContext {
        text,
        message,
        code,
        truncated: msg_cut || code_cut,
    }
}

fn push_sep(text: &mut String, sep: &str) {
    if !text.is_empty() {
        text.push_str(sep);
    }
}

/// Cuts `s` to at most `budget` characters on a word boundary where possible.
fn cut(s: &str, budget: usize) -> (String, bool) {
    if s.chars().count() <= budget {
        return (s.to_string(), false);
    }
    let end = s.char_indices().nth(budget).map_or(s.len(), |(i, _)| i);
    let head = &s[..end];
    let head = head.rfind(' ').map_or(head, |i| &head[..i]);
    (head.trim_end().to_string(), true)
}

fn window(code: &str, fault_line: Option<usize>) -> String {
    let lines: Vec<&str> = code.lines().collect();
    let Some(fault) = fault_line else {
        return lines
            .iter()
            .take(CODE_WINDOW_LINES)
            .copied()
            .collect::<Vec<_>>()
            .join("\n");
    };
    let fault = fault.min(lines.len().saturating_sub(1));
    let half = CODE_WINDOW_LINES / 2;
    let start = fault.saturating_sub(half);
    let end = (start + CODE_WINDOW_LINES).min(lines.len());
    lines[start..end].join("\n")
}

/// Normalises a tool's message: paths, addresses and numbers become placeholders.
pub fn normalize_message(message: &str) -> String {
    let words: Vec<String> = message.split_whitespace().map(normalize_word).collect();
    words.join(" ")
}

fn normalize_word(word: &str) -> String {
    // Keep quotes and punctuation around a path: `"/app/x.py",` → `"<path>",`.
    let lead = word.len() - word.trim_start_matches(['"', '\'', '(', '[', '`']).len();
    let core_end = word
        .trim_end_matches(['"', '\'', ')', ']', ',', ':', ';', '.', '`'])
        .len()
        .max(lead);
    let core = &word[lead..core_end];
    if looks_like_path(core) {
        return format!("{}<path>{}", &word[..lead], &word[core_end..]);
    }
    let mut out = String::with_capacity(word.len());
    lex_code_like(word, &mut out, false);
    out
}

fn looks_like_path(s: &str) -> bool {
    let slashed = s.contains('/') || s.contains('\\');
    let rooted = s.starts_with('/')
        || s.starts_with("~/")
        || s.starts_with("./")
        || s.starts_with("../")
        || (s.len() > 2 && s.as_bytes()[1] == b':' && s.as_bytes()[2] == b'\\');
    let python_file = std::path::Path::new(s.split(':').next().unwrap_or(s))
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("py"));
    slashed && (rooted || python_file)
}

/// Normalises source code: comments dropped, literals replaced, long names shortened,
/// whitespace collapsed.
pub fn normalize_code(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    for line in code.lines() {
        let before = out.len();
        if before > 0 {
            out.push(' ');
        }
        lex_code_like(line, &mut out, true);
        if out.len() == before + usize::from(before > 0) {
            out.truncate(before);
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Rewrites one line of code-like text into `out`. In code, comments are dropped and string
/// literals are replaced; in messages quoted text is kept (it names types and attributes).
fn lex_code_like(src: &str, out: &mut String, code: bool) {
    let bytes = src.as_bytes();
    let mut i = 0;
    while i < src.len() {
        let c = src[i..].chars().next().expect("i is on a char boundary");
        if code && c == '#' {
            break;
        }
        if code && (c == '"' || c == '\'') {
            i = skip_string(src, i);
            out.push_str("<str>");
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            let end = src[i..]
                .find(|ch: char| !(ch.is_alphanumeric() || ch == '_'))
                .map_or(src.len(), |n| i + n);
            let ident = &src[i..end];
            // A string prefix (`f"..."`, `rb'...'`) stays with its literal.
            if code
                && ident.len() <= 2
                && ident.chars().all(|ch| "rRbBfFuU".contains(ch))
                && matches!(bytes.get(end), Some(b'"' | b'\''))
            {
                out.push_str(&ident.to_ascii_lowercase());
                i = skip_string(src, end);
                out.push_str("<str>");
                continue;
            }
            out.push_str(&shorten_identifier(ident));
            i = end;
            continue;
        }
        if c.is_ascii_digit() {
            let end = number_end(src, i);
            let next_is_ident = src[end..]
                .chars()
                .next()
                .is_some_and(|ch| ch.is_alphabetic() || ch == '_');
            if next_is_ident {
                // Not a free-standing number (e.g. `3rd`); keep it as written.
                out.push_str(&src[i..end]);
            } else if src[i..end].starts_with("0x") || src[i..end].starts_with("0X") {
                out.push_str("<addr>");
            } else {
                out.push_str("<num>");
            }
            i = end;
            continue;
        }
        out.push(c);
        i += c.len_utf8();
    }
}

fn number_end(src: &str, start: usize) -> usize {
    let bytes = src.as_bytes();
    let mut i = start;
    if bytes[i] == b'0'
        && matches!(
            bytes.get(i + 1),
            Some(b'x' | b'X' | b'o' | b'O' | b'b' | b'B')
        )
    {
        i += 2;
        while i < bytes.len() && (bytes[i].is_ascii_hexdigit() || bytes[i] == b'_') {
            i += 1;
        }
        return i;
    }
    while i < bytes.len() {
        let b = bytes[i];
        let digit_after = bytes.get(i + 1).is_some_and(u8::is_ascii_digit);
        if b.is_ascii_digit() || (b == b'_' && digit_after) || (b == b'.' && digit_after) {
            i += 1;
        } else if (b == b'e' || b == b'E')
            && bytes
                .get(i + 1)
                .is_some_and(|n| n.is_ascii_digit() || *n == b'-' || *n == b'+')
        {
            i += 2;
        } else {
            break;
        }
    }
    i
}

/// Returns the index just past the string literal starting at `start` (a quote), or the end of
/// the line for an unterminated one.
fn skip_string(src: &str, start: usize) -> usize {
    let bytes = src.as_bytes();
    let quote = bytes[start];
    let triple = bytes.get(start + 1) == Some(&quote) && bytes.get(start + 2) == Some(&quote);
    let mut i = start + if triple { 3 } else { 1 };
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b if b == quote => {
                if !triple {
                    return i + 1;
                }
                if bytes.get(i + 1) == Some(&quote) && bytes.get(i + 2) == Some(&quote) {
                    return i + 3;
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    src.len()
}

/// Shortens an identifier longer than [`LONG_IDENT_CHARS`] to its first words.
pub fn shorten_identifier(ident: &str) -> String {
    if ident.chars().count() <= LONG_IDENT_CHARS {
        return ident.to_string();
    }
    let words = split_words(ident);
    if words.len() <= 1 {
        return ident.chars().take(LONG_IDENT_CHARS).collect();
    }
    let sep = if ident.contains('_') { "_" } else { "" };
    words[..words.len().min(LONG_IDENT_WORDS)].join(sep)
}

/// Splits an identifier at underscores and lower-to-upper case changes.
fn split_words(ident: &str) -> Vec<&str> {
    let mut words = Vec::new();
    for part in ident.split('_').filter(|p| !p.is_empty()) {
        let mut start = 0;
        let mut prev_lower = false;
        for (i, ch) in part.char_indices() {
            if ch.is_uppercase() && prev_lower {
                words.push(&part[start..i]);
                start = i;
            }
            prev_lower = ch.is_lowercase() || ch.is_ascii_digit();
        }
        words.push(&part[start..]);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(message: &str, code: Option<&str>) -> ErrorContext {
        ErrorContext {
            category: Some(Category::Runtime),
            rule: Some("none-attribute".into()),
            message: message.into(),
            code: code.map(Into::into),
            fault_line: None,
        }
    }

    #[test]
    fn messages() {
        let cases = [
            (
                r#"File "/home/ci/app/models/user.py", line 42, in load"#,
                r#"File "<path>", line <num>, in load"#,
            ),
            (
                "<User object at 0x7f3a9c0d1e50> has no attribute 'name'",
                "<User object at <addr>> has no attribute 'name'",
            ),
            (
                r#"Item "None" of "Optional[str]" has no attribute "strip"  [union-attr]"#,
                r#"Item "None" of "Optional[str]" has no attribute "strip" [union-attr]"#,
            ),
            ("E711 Comparison to `None`", "E711 Comparison to `None`"),
            (
                "expected 3 arguments, got 4.5",
                "expected <num> arguments, got <num>",
            ),
            ("app/views.py:17:5: error", "<path>: error"),
        ];
        for (input, expected) in cases {
            assert_eq!(normalize_message(input), expected, "{input}");
        }
    }

    #[test]
    fn code() {
        let cases = [
            (
                "name = user.get('name')  # the user's name\nreturn name.strip()",
                "name = user.get(<str>) return name.strip()",
            ),
            (
                r#"cursor.execute(f"SELECT * FROM t WHERE id = {uid}", )"#,
                "cursor.execute(f<str>, )",
            ),
            (
                "x = get_user_preferences_by_account_id(42, 0x1F, 3.5e-3)",
                "x = get_user_preferences(<num>, <addr>, <num>)",
            ),
            ("s = '''a\nb'''", "s = <str> b<str>"),
            (
                "veryLongCamelCaseIdentifierForTheWin = 1",
                "veryLongCamel = <num>",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(normalize_code(input), expected, "{input}");
        }
    }

    #[test]
    fn full_context_and_window() {
        let code = "a = 1\nb = 2\nc = 3\nd = None\nd.x\ne = 5\nf = 6\ng = 7";
        let n = normalize(&ErrorContext {
            fault_line: Some(4),
            ..ctx("'NoneType' object has no attribute 'x'", Some(code))
        });
        assert_eq!(
            n.text,
            "runtime none-attribute: 'NoneType' object has no attribute 'x' | c = <num> d = None d.x e = <num> f = <num>"
        );
        assert!(!n.truncated);
        let bare = normalize(&ErrorContext {
            message: "boom".into(),
            ..ErrorContext::default()
        });
        assert_eq!(bare.text, "boom");
    }

    #[test]
    fn long_input_is_cut_and_flagged() {
        let n = normalize(&ctx(&"word ".repeat(500), None));
        assert!(n.truncated);
        assert!(n.message.chars().count() <= MESSAGE_BUDGET_CHARS);
    }

    proptest::proptest! {
        #[test]
        fn normalising_is_idempotent(message in "\\PC{0,200}", code in "\\PC{0,200}") {
            let once = normalize(&ctx(&message, Some(&code)));
            let twice_msg = normalize_message(&once.message);
            proptest::prop_assert_eq!(&twice_msg, &once.message);
            let twice_code = normalize_code(&once.code);
            proptest::prop_assert_eq!(&twice_code, &once.code);
        }
    }
}
