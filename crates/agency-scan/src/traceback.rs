//! Runtime errors from logs: Python tracebacks (several per file, chained exceptions, log
//! prefixes such as timestamps and levels) turned into findings. Frames are mapped to
//! repository files by path suffix, so a log from a container (`/app/shop/util.py`) or another
//! machine (`C:\src\shop\util.py`) still points at `shop/util.py`. NoneType errors (attribute,
//! subscript, call, iteration on None) get their own rules and the failing expression; other
//! exceptions are reported under their exception name.

use std::collections::BTreeMap;

use agency_core::Category;
use agency_core::contract::Severity;

use crate::tools::RawFinding;

/// One frame of a traceback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The path as printed (any machine's).
    pub path: String,
    pub line: u32,
    pub function: String,
    /// The source line printed under the frame, trimmed.
    pub code: Option<String>,
    /// Columns (0-based, characters) of the `^` markers under the code, Python 3.11+.
    pub caret: Option<(usize, usize)>,
}

/// One traceback: frames outermost first, then the exception.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traceback {
    pub frames: Vec<Frame>,
    pub exception: String,
    pub message: String,
    /// 1-based line of the log where the traceback starts.
    pub log_line: usize,
    /// The traceback was printed as the cause or context of the next one.
    pub chained: bool,
}

const HEADER: &str = "Traceback (most recent call last):";
const CAUSE: &str = "The above exception was the direct cause of the following exception:";
const CONTEXT: &str = "During handling of the above exception, another exception occurred:";

/// Every traceback in a log.
pub fn parse_log(text: &str) -> Vec<Traceback> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out: Vec<Traceback> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(pos) = lines[i].find(HEADER) else {
            if (lines[i].contains(CAUSE) || lines[i].contains(CONTEXT))
                && let Some(last) = out.last_mut()
            {
                last.chained = true;
            }
            i += 1;
            continue;
        };
        let prefix = &lines[i][..pos];
        let start = i;
        i += 1;
        let strip = |line: &str| -> Option<String> {
            // Lines of one traceback carry the header's prefix (a logger's), or none.
            if !prefix.is_empty() {
                if let Some(rest) = line.strip_prefix(prefix) {
                    return Some(rest.to_string());
                }
                let trimmed_prefix = prefix.trim_end();
                if !trimmed_prefix.is_empty()
                    && let Some(rest) = line.strip_prefix(trimmed_prefix)
                {
                    return Some(rest.to_string());
                }
            }
            Some(line.to_string())
        };
        let mut frames: Vec<Frame> = Vec::new();
        let mut exception = None;
        while i < lines.len() {
            let Some(line) = strip(lines[i]) else { break };
            if let Some(frame) = parse_frame_header(&line) {
                frames.push(frame);
                i += 1;
                continue;
            }
            if line.starts_with("    ") {
                let trimmed = line.trim();
                if let Some(frame) = frames.last_mut() {
                    if !trimmed.is_empty() && trimmed.chars().all(|c| matches!(c, '^' | '~')) {
                        frame.caret = Some(caret_span(&line));
                    } else if frame.code.is_none() && !trimmed.is_empty() {
                        frame.code = Some(trimmed.to_string());
                    }
                }
                i += 1;
                continue;
            }
            if line.trim_start().starts_with("...") {
                // "... N more lines" / repeated-frame markers.
                i += 1;
                continue;
            }
            if line.trim_start().starts_with("[Previous line repeated") {
                i += 1;
                continue;
            }
            exception = parse_exception_line(line.trim());
            i += 1;
            break;
        }
        if let Some((name, message)) = exception {
            out.push(Traceback {
                frames,
                exception: name,
                message,
                log_line: start + 1,
                chained: false,
            });
        }
    }
    out
}

/// The subject a caret line marks, relative to the printed (stripped) code: Python 3.11+
/// underlines the value with `~` and the failing operation with `^` (`~~~~^^^^` for
/// `value[key]`), so a leading `~` run is the value that was None; otherwise the `^` run.
fn caret_span(line: &str) -> (usize, usize) {
    // Code lines are printed with four spaces before the stripped source.
    let indent = (line.len() - line.trim_start().len()).saturating_sub(4);
    let marks = line.trim();
    let len = if marks.starts_with('~') {
        marks.chars().take_while(|c| *c == '~').count()
    } else {
        marks.chars().take_while(|c| *c == '^').count()
    };
    (indent, indent + len)
}

/// `  File "/app/x.py", line 12, in handler`
fn parse_frame_header(line: &str) -> Option<Frame> {
    let rest = line.trim_start().strip_prefix("File \"")?;
    let (path, rest) = rest.split_once("\", line ")?;
    let (number, function) = match rest.split_once(", in ") {
        Some((n, f)) => (n, f.trim().to_string()),
        None => (rest.trim(), String::new()),
    };
    Some(Frame {
        path: path.to_string(),
        line: number.trim().parse().ok()?,
        function,
        code: None,
        caret: None,
    })
}

/// `TypeError: 'NoneType' object is not subscriptable` → ("TypeError", message).
fn parse_exception_line(line: &str) -> Option<(String, String)> {
    let (name, message) = match line.split_once(':') {
        Some((n, m)) => (n.trim(), m.trim()),
        None => (line, ""),
    };
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    valid.then(|| (name.to_string(), message.to_string()))
}

/// The runtime rule of an exception: a NoneType rule, or `None` for other exceptions.
pub fn none_rule(exception: &str, message: &str) -> Option<&'static str> {
    let exception = exception.rsplit('.').next().unwrap_or(exception);
    match exception {
        "AttributeError" if message.starts_with("'NoneType' object has no attribute") => {
            Some("none-attribute")
        }
        "TypeError" if message.contains("'NoneType' object is not subscriptable") => {
            Some("none-subscript")
        }
        "TypeError" if message.contains("'NoneType' object is not callable") => Some("none-call"),
        "TypeError"
            if message.contains("'NoneType' object is not iterable")
                || message.contains("non-iterable NoneType")
                || message.contains("argument of type 'NoneType' is not iterable") =>
        {
            Some("none-iteration")
        }
        _ => None,
    }
}

/// The repository file a frame's path refers to: the file whose path is the longest suffix of
/// the frame's path (at least the file name), preferring a unique match.
pub fn map_frame(path: &str, files: &[String]) -> Option<String> {
    let parts: Vec<&str> = path.split(['/', '\\']).filter(|p| !p.is_empty()).collect();
    let name = parts.last()?;
    let mut best: Option<(usize, &String)> = None;
    let mut tie = false;
    for file in files {
        if !file.ends_with(name) {
            continue;
        }
        let file_parts: Vec<&str> = file.split('/').collect();
        let common = file_parts
            .iter()
            .rev()
            .zip(parts.iter().rev())
            .take_while(|(a, b)| a == b)
            .count();
        if common == 0 {
            continue;
        }
        // The whole repository path must match: `util.py` must not claim `x/other_util.py`.
        if common < file_parts.len() {
            continue;
        }
        match best {
            Some((n, _)) if n > common => {}
            Some((n, _)) if n == common => tie = true,
            _ => {
                best = Some((common, file));
                tie = false;
            }
        }
    }
    if tie {
        return None;
    }
    best.map(|(_, f)| f.clone())
}

/// Findings for the tracebacks of a log: one per (file, line, rule), at the innermost frame in
/// the repository, with the number of occurrences. `read_line(file, line)` gives the current
/// text of a repository line (to relocate a frame whose line moved since the log was written).
pub fn findings(
    tracebacks: &[Traceback],
    files: &[String],
    read_lines: &dyn Fn(&str) -> Option<Vec<String>>,
) -> Vec<RawFinding> {
    let mut grouped: BTreeMap<(String, u32, String), (RawFinding, u32)> = BTreeMap::new();
    for tb in tracebacks {
        let Some((frame, file)) = tb
            .frames
            .iter()
            .rev()
            .find_map(|f| map_frame(&f.path, files).map(|file| (f, file)))
        else {
            continue;
        };
        let rule = none_rule(&tb.exception, &tb.message);
        let lines = read_lines(&file).unwrap_or_default();
        let line = relocate(frame, &lines);
        let text = lines.get(line as usize - 1).cloned().unwrap_or_default();
        let (column, end_column, expression) = locate_expression(frame, &text, rule, &tb.message);
        let short = tb.exception.rsplit('.').next().unwrap_or(&tb.exception);
        let message = match (rule, &expression) {
            (Some("none-attribute"), Some(expr)) => format!(
                "`{expr}` was None when `.{}` was read ({short} in {}); check for None or make sure it is set",
                attribute_name(&tb.message).unwrap_or("?"),
                frame.function
            ),
            (Some("none-subscript"), Some(expr)) => format!(
                "`{expr}` was None when it was subscripted ({short} in {}); check for None or make sure it is set",
                frame.function
            ),
            (Some("none-call"), Some(expr)) => format!(
                "`{expr}` was None when it was called ({short} in {}); check for None or make sure it is set",
                frame.function
            ),
            (Some("none-iteration"), Some(expr)) => format!(
                "`{expr}` was None when it was iterated ({short} in {}); default it to an empty collection or check for None",
                frame.function
            ),
            _ => format!("{short}: {} (in {})", tb.message, frame.function),
        };
        let rule_name = rule.map_or_else(|| short.to_string(), ToString::to_string);
        let key = (file.clone(), line, rule_name.clone());
        let entry = grouped.entry(key).or_insert_with(|| {
            (
                RawFinding {
                    tool: "agency",
                    rule: rule_name,
                    category: Category::Runtime,
                    severity: if rule.is_some() {
                        Severity::High
                    } else {
                        Severity::Medium
                    },
                    file,
                    line,
                    column,
                    end_line: line,
                    end_column,
                    message,
                    fix: None,
                    impact_pct: None,
                    related_line: None,
                },
                0,
            )
        });
        entry.1 += 1;
    }
    grouped
        .into_values()
        .map(|(mut f, count)| {
            if count > 1 {
                f.message
                    .push_str(&format!(" (seen {count} times in the log)"));
            }
            f
        })
        .collect()
}

/// The frame's line in the current file: as printed if the code still matches, else the
/// nearest line (within 50) whose text is the frame's code.
fn relocate(frame: &Frame, lines: &[String]) -> u32 {
    let Some(code) = frame.code.as_deref() else {
        return frame.line.max(1);
    };
    let at = |n: u32| lines.get(n as usize - 1).is_some_and(|l| l.trim() == code);
    if frame.line >= 1 && at(frame.line) {
        return frame.line;
    }
    for delta in 1..=50u32 {
        if at(frame.line + delta) {
            return frame.line + delta;
        }
        if frame.line > delta && at(frame.line - delta) {
            return frame.line - delta;
        }
    }
    frame.line.max(1)
}

fn attribute_name(message: &str) -> Option<&str> {
    let rest = message.split("has no attribute '").nth(1)?;
    rest.split('\'').next()
}

/// The failing expression's 1-based columns and text, from the carets when present, else from
/// the attribute name in the message.
/// Where the receiver of `.attr` at `dot` starts: names, dots and balanced `(...)`/`[...]`
/// groups, read backwards (`a.b(c, d)[0]` in `x = a.b(c, d)[0].attr`).
fn receiver_start(chars: &[char], dot: usize) -> usize {
    let mut i = dot;
    while i > 0 {
        let c = chars[i - 1];
        if c.is_alphanumeric() || c == '_' || c == '.' {
            i -= 1;
        } else if c == ')' || c == ']' {
            let open = if c == ')' { '(' } else { '[' };
            let mut depth = 0usize;
            let mut j = i;
            loop {
                if j == 0 {
                    return i;
                }
                j -= 1;
                if chars[j] == c {
                    depth += 1;
                } else if chars[j] == open {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
            }
            i = j;
        } else {
            break;
        }
    }
    i
}

/// The iterated expression of a line: `EXPR` in `for x in EXPR:` (or `async for`), or the
/// right-hand side of an unpacking `a, b = EXPR`.
fn iterated_span(chars: &[char]) -> Option<(usize, usize)> {
    let text: String = chars.iter().collect();
    let trimmed = text.trim_start();
    let indent = chars.len() - trimmed.chars().count();
    let trim_end = |start: usize, mut end: usize| {
        while end > start && (chars[end - 1].is_whitespace() || chars[end - 1] == ':') {
            end -= 1;
        }
        let mut start = start;
        while start < end && chars[start].is_whitespace() {
            start += 1;
        }
        (start < end).then_some((start, end))
    };
    if trimmed.starts_with("for ") || trimmed.starts_with("async for ") {
        // The first ` in ` outside brackets ends the target.
        let mut depth = 0i32;
        for i in indent..chars.len() {
            match chars[i] {
                '(' | '[' | '{' => depth += 1,
                ')' | ']' | '}' => depth -= 1,
                ' ' if depth == 0 && chars.get(i + 1..i + 4) == Some(&['i', 'n', ' '][..]) => {
                    return trim_end(i + 4, chars.len());
                }
                _ => {}
            }
        }
        return None;
    }
    // `a, b = EXPR`: the first top-level `=` that is not part of `==`, `<=`, `>=`, `!=`.
    let mut depth = 0i32;
    for i in indent..chars.len() {
        match chars[i] {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            '=' if depth == 0
                && chars.get(i + 1) != Some(&'=')
                && !matches!(chars.get(i.wrapping_sub(1)), Some('=' | '<' | '>' | '!')) =>
            {
                return trim_end(i + 1, chars.len());
            }
            _ => {}
        }
    }
    None
}

fn locate_expression(
    frame: &Frame,
    text: &str,
    rule: Option<&str>,
    message: &str,
) -> (u32, u32, Option<String>) {
    let indent = text.chars().count() - text.trim_start().chars().count();
    let chars: Vec<char> = text.chars().collect();
    if let Some((start, end)) = frame.caret {
        let start_col = (indent + start).min(chars.len());
        let end_col = (indent + end).min(chars.len());
        let mut expr: String = chars[start_col..end_col].iter().collect();
        if rule == Some("none-attribute")
            && let Some(attr) = attribute_name(message)
            && let Some(stripped) = expr.strip_suffix(&format!(".{attr}"))
        {
            expr = stripped.to_string();
        }
        if !expr.trim().is_empty() {
            return (
                start_col as u32 + 1,
                end_col as u32 + 1,
                Some(expr.trim().to_string()),
            );
        }
    }
    if rule == Some("none-attribute")
        && let Some(attr) = attribute_name(message)
    {
        let needle: Vec<char> = format!(".{attr}").chars().collect();
        if let Some(pos) = chars
            .windows(needle.len())
            .position(|w| w == needle.as_slice())
        {
            let start = receiver_start(&chars, pos);
            if start < pos {
                let expr: String = chars[start..pos].iter().collect();
                return (
                    start as u32 + 1,
                    (pos + needle.len()) as u32 + 1,
                    Some(expr),
                );
            }
        }
    }
    if rule == Some("none-subscript")
        && let Some((start, end)) = subscripted_span(&chars)
    {
        let expr: String = chars[start..end].iter().collect();
        return (start as u32 + 1, end as u32 + 1, Some(expr));
    }
    if rule == Some("none-iteration")
        && let Some((start, end)) = iterated_span(&chars)
    {
        let expr: String = chars[start..end].iter().collect();
        return (start as u32 + 1, end as u32 + 1, Some(expr));
    }
    let col = indent as u32 + 1;
    let end = text.chars().count() as u32 + 1;
    (col, end.max(col), frame.code.clone())
}

/// The one name or attribute chain subscripted on the line (`rate` in `price * rate["p"]`),
/// outside string literals; `None` when there is none or more than one.
fn subscripted_span(chars: &[char]) -> Option<(usize, usize)> {
    let mut found: Option<(usize, usize)> = None;
    let mut quote: Option<char> = None;
    for (pos, &c) in chars.iter().enumerate() {
        match quote {
            Some(q) if c == q && chars.get(pos.wrapping_sub(1)) != Some(&'\\') => quote = None,
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' => break,
            None if c == '['
                && pos > 0
                && (chars[pos - 1].is_alphanumeric() || chars[pos - 1] == '_') =>
            {
                let start = receiver_start(chars, pos);
                if start < pos {
                    if found.is_some_and(|f| f != (start, pos)) {
                        return None;
                    }
                    found = Some((start, pos));
                }
            }
            // Inside a string, or nothing to look at.
            _ => {}
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_one_subscripted_name_of_a_line_is_the_none_expression() {
        let span = |line: &str| {
            let chars: Vec<char> = line.chars().collect();
            subscripted_span(&chars).map(|(s, e)| chars[s..e].iter().collect::<String>())
        };
        assert_eq!(
            span("    return price * rate[\"percent\"] / 100").as_deref(),
            Some("rate")
        );
        assert_eq!(
            span("    x = self.cfg.values[0]").as_deref(),
            Some("self.cfg.values")
        );
        assert_eq!(span("    x = a[0] + b[1]"), None);
        assert_eq!(span("    x = \"a[0]\" + b[1]").as_deref(), Some("b"));
        assert_eq!(span("    x = f()[0]"), None);
    }

    const LOG: &str = r#"2026-11-25 10:00:01,123 INFO  shop.web: GET /orders/7
2026-11-25 10:00:01,130 ERROR shop.web: request failed
2026-11-25 10:00:01,130 ERROR shop.web: Traceback (most recent call last):
2026-11-25 10:00:01,130 ERROR shop.web:   File "/usr/lib/python3.12/site-packages/flask/app.py", line 880, in full_dispatch_request
2026-11-25 10:00:01,130 ERROR shop.web:     rv = self.dispatch_request()
2026-11-25 10:00:01,130 ERROR shop.web:   File "/app/shop/util.py", line 21, in display_name
2026-11-25 10:00:01,130 ERROR shop.web:     return customer["name"].title()
2026-11-25 10:00:01,130 ERROR shop.web:            ~~~~~~~~^^^^^^^^
2026-11-25 10:00:01,130 ERROR shop.web: TypeError: 'NoneType' object is not subscriptable
Traceback (most recent call last):
  File "C:\deploy\shop\orders.py", line 14, in owner_email
    return customers.lookup(order["customer_id"]).upper()
AttributeError: 'NoneType' object has no attribute 'upper'

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "/srv/shop/report.py", line 9, in render
    for customer in customers:
TypeError: 'NoneType' object is not iterable
Traceback (most recent call last):
  File "/app/shop/db.py", line 16, in find_customer
    cursor.execute(query)
sqlite3.OperationalError: no such table: customers
"#;

    #[test]
    fn parses_prefixed_chained_and_plain_tracebacks() {
        let tbs = parse_log(LOG);
        assert_eq!(tbs.len(), 4);
        assert_eq!(tbs[0].exception, "TypeError");
        assert_eq!(tbs[0].frames.len(), 2);
        assert_eq!(tbs[0].frames[1].path, "/app/shop/util.py");
        assert_eq!(tbs[0].frames[1].line, 21);
        assert_eq!(tbs[0].frames[1].caret, Some((7, 15)));
        assert!(tbs[1].chained);
        assert_eq!(tbs[1].exception, "AttributeError");
        assert_eq!(tbs[3].exception, "sqlite3.OperationalError");
        assert_eq!(tbs[3].log_line, 21);
    }

    #[test]
    fn maps_frames_by_suffix_and_classifies_none_errors() {
        let files: Vec<String> = [
            "shop/util.py",
            "shop/orders.py",
            "shop/report.py",
            "shop/db.py",
            "other/util.py",
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(
            map_frame("/app/shop/util.py", &files).as_deref(),
            Some("shop/util.py")
        );
        assert_eq!(
            map_frame("C:\\deploy\\shop\\orders.py", &files).as_deref(),
            Some("shop/orders.py")
        );
        assert_eq!(
            map_frame("/usr/lib/python3.12/site-packages/flask/app.py", &files),
            None
        );
        // `util.py` alone matches two files: ambiguous, not guessed.
        assert_eq!(map_frame("util.py", &files), None);
        assert_eq!(
            none_rule("AttributeError", "'NoneType' object has no attribute 'x'"),
            Some("none-attribute")
        );
        assert_eq!(
            none_rule("TypeError", "cannot unpack non-iterable NoneType object"),
            Some("none-iteration")
        );
        assert_eq!(none_rule("KeyError", "'x'"), None);

        let source: BTreeMap<&str, Vec<String>> = [
            ("shop/util.py", {
                let mut v = vec![String::new(); 20];
                v.push("    return customer[\"name\"].title()".to_string());
                v
            }),
            ("shop/orders.py", {
                let mut v = vec![String::new(); 13];
                v.push("    return customers.lookup(order[\"customer_id\"]).upper()".to_string());
                v
            }),
        ]
        .into_iter()
        .collect();
        let found = findings(&parse_log(LOG), &files, &|f| source.get(f).cloned());
        let summary: Vec<(&str, &str, u32, u32)> = found
            .iter()
            .map(|f| (f.rule.as_str(), f.file.as_str(), f.line, f.column))
            .collect();
        assert_eq!(
            summary,
            [
                ("OperationalError", "shop/db.py", 16, 1),
                ("none-attribute", "shop/orders.py", 14, 12),
                ("none-iteration", "shop/report.py", 9, 1),
                ("none-subscript", "shop/util.py", 21, 12),
            ]
        );
        assert!(
            found[1].message.starts_with(
                "`customers.lookup(order[\"customer_id\"])` was None when `.upper` was read"
            ),
            "{}",
            found[1].message
        );
        assert!(
            found[3]
                .message
                .starts_with("`customer` was None when it was subscripted"),
            "{}",
            found[3].message
        );
    }

    #[test]
    fn finds_receivers_and_iterated_expressions_without_carets() {
        let receiver = |line: &str, attr: &str| {
            let chars: Vec<char> = line.chars().collect();
            let needle: Vec<char> = attr.chars().collect();
            let dot = chars
                .windows(needle.len())
                .position(|w| w == needle.as_slice())
                .unwrap();
            chars[receiver_start(&chars, dot)..dot]
                .iter()
                .collect::<String>()
        };
        assert_eq!(
            receiver("    x = a.b(c, d)[0].attr", ".attr"),
            "a.b(c, d)[0]"
        );
        assert_eq!(
            receiver("return get(k, {}).upper()", ".upper"),
            "get(k, {})"
        );
        assert_eq!(receiver("é = café.name", ".name"), "café");
        let iterated = |line: &str| {
            let chars: Vec<char> = line.chars().collect();
            iterated_span(&chars).map(|(s, e)| chars[s..e].iter().collect::<String>())
        };
        assert_eq!(
            iterated("    for customer in customers:").as_deref(),
            Some("customers")
        );
        assert_eq!(
            iterated("async for (a, b) in conn.rows(q) :").as_deref(),
            Some("conn.rows(q)")
        );
        assert_eq!(
            iterated("  first, rest = split(items)").as_deref(),
            Some("split(items)")
        );
        assert_eq!(iterated("if a == b:"), None);
        assert_eq!(iterated("for x in"), None);
    }
}
