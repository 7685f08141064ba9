//! Pattern documentation pages: `agency patterns docs` renders the store's patterns as an index
//! page by category and one markdown page per pattern, under `docs/patterns/healing/`.
//!
//! [`render`] is pure (the CLI writes the files atomically) and deterministic: patterns are sorted
//! by contract category order and id, and nothing time-dependent is printed for seed patterns, so
//! the generated pages can be committed and regenerated without noise. Pattern text comes from
//! the store and may come from an import, so every string is escaped for the place it lands in:
//! table cells, headings, inline code and fenced blocks.

use std::collections::{BTreeMap, BTreeSet};

use agency_core::Category;
use agency_core::contract::PatternView;

/// Path of the index page, relative to the output directory.
pub const INDEX: &str = "README.md";

/// Renders the documentation pages: relative path (e.g. "README.md",
/// "style/style-e711-comparison-to-none.md") -> markdown.
///
/// Paths always use `/`, stay inside the output directory (ids and categories are reduced to
/// safe file names) and are unique even when two ids differ only in case. Every page ends with a
/// newline and has no trailing spaces.
pub fn render(patterns: &[PatternView]) -> BTreeMap<String, String> {
    let entries = entries(patterns);
    let mut pages = BTreeMap::new();
    pages.insert(INDEX.to_string(), finish(&index_page(&entries)));
    for entry in &entries {
        pages.insert(entry.path.clone(), finish(&pattern_page(entry)));
    }
    pages
}

/// Where a category sorts and how it is named: the seven contract categories in contract order,
/// then any other category string (an imported pattern may carry one) by name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Group {
    rank: usize,
    /// The canonical name of a contract category; the raw string (on one line) otherwise.
    name: String,
}

impl Group {
    fn of(category: &str) -> Group {
        match category.parse::<Category>() {
            Ok(category) => Group {
                rank: Category::ALL
                    .iter()
                    .position(|&c| c == category)
                    .expect("Category::ALL lists every category"),
                name: category.as_str().to_string(),
            },
            Err(_) => Group {
                rank: Category::ALL.len(),
                name: one_line(category),
            },
        }
    }

    fn is_known(&self) -> bool {
        self.rank < Category::ALL.len()
    }

    /// The section heading: `Type`, `Import`, ...
    fn heading(&self) -> String {
        if self.name.is_empty() {
            return "Uncategorized".to_string();
        }
        if self.is_known() {
            let mut chars = self.name.chars();
            return chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default();
        }
        escape_text(&self.name)
    }

    /// The directory holding the group's pages.
    fn dir(&self) -> String {
        if self.is_known() {
            self.name.clone()
        } else {
            slug(&self.name, "uncategorized")
        }
    }
}

/// A pattern with its group and page path, in output order.
struct Entry<'a> {
    view: &'a PatternView,
    group: Group,
    /// Page path relative to the output directory.
    path: String,
}

/// Sorts the patterns and gives each a unique page path.
fn entries(patterns: &[PatternView]) -> Vec<Entry<'_>> {
    let mut sorted: Vec<(Group, &PatternView)> = patterns
        .iter()
        .map(|p| (Group::of(&p.category), p))
        .collect();
    // The store keys patterns by id, so (group, id) is unique in practice; the debug rendering
    // breaks any remaining tie so that the input order can never show through.
    sorted.sort_by_cached_key(|(group, p)| (group.clone(), p.id.clone(), format!("{p:?}")));
    // Lower-cased, so that two pages never collide on a case-insensitive file system.
    let mut taken: BTreeSet<String> = BTreeSet::new();
    taken.insert(INDEX.to_ascii_lowercase());
    sorted
        .into_iter()
        .map(|(group, view)| {
            let dir = group.dir();
            let stem = slug(&view.id, "pattern");
            let mut path = format!("{dir}/{stem}.md");
            let mut n = 2;
            while !taken.insert(path.to_ascii_lowercase()) {
                path = format!("{dir}/{stem}-{n}.md");
                n += 1;
            }
            Entry { view, group, path }
        })
        .collect()
}

fn index_page(entries: &[Entry<'_>]) -> Vec<String> {
    let mut out = vec![
        "# Healing patterns".to_string(),
        String::new(),
        "These pages describe the patterns `agency` heals Python code with: for each one, the \
         error it recognises, the rewrite it applies, why, worked examples and its track record. \
         They are generated from the pattern store by `agency patterns docs`; do not edit them by \
         hand, regenerate them instead."
            .to_string(),
        String::new(),
    ];

    // Every contract category appears in the summary, even when empty, so the table's shape
    // does not depend on the store; other categories only when a pattern carries one.
    let mut groups: Vec<Group> = Category::ALL
        .iter()
        .map(|c| Group::of(c.as_str()))
        .collect();
    for entry in entries {
        if !groups.contains(&entry.group) {
            groups.push(entry.group.clone());
        }
    }
    out.push("## Summary".to_string());
    out.push(String::new());
    out.push("| Category | Patterns | Auto-apply | Retired |".to_string());
    out.push("| --- | ---: | ---: | ---: |".to_string());
    let (mut n_live, mut n_auto, mut n_retired) = (0, 0, 0);
    for group in &groups {
        let n_group = live(entries, group).count();
        let n_group_auto = live(entries, group).filter(|e| e.view.auto_apply).count();
        let n_group_retired = entries
            .iter()
            .filter(|e| &e.group == group && e.view.retired.is_some())
            .count();
        out.push(format!(
            "| {} | {n_group} | {n_group_auto} | {n_group_retired} |",
            group.heading()
        ));
        n_live += n_group;
        n_auto += n_group_auto;
        n_retired += n_group_retired;
    }
    out.push(format!("| **Total** | {n_live} | {n_auto} | {n_retired} |"));
    out.push(String::new());

    for group in &groups {
        if live(entries, group).next().is_none() {
            continue;
        }
        out.push(format!("## {}", group.heading()));
        out.push(String::new());
        out.push(
            "| Pattern | Rule | Title | Applicability | Confidence | Auto-apply | Uses | Source |"
                .to_string(),
        );
        out.push("| --- | --- | --- | --- | ---: | --- | ---: | --- |".to_string());
        for entry in live(entries, group) {
            let p = entry.view;
            out.push(format!(
                "| {} | {} | {} | {} | {:.2} | {} | {} | {} |",
                page_link(entry),
                cell_code(&p.rule),
                cell_text(&p.title),
                applicability_name(&p.applicability),
                p.confidence,
                yes_no(p.auto_apply),
                uses(p),
                cell_text(&p.source),
            ));
        }
        out.push(String::new());
    }

    let retired: Vec<&Entry<'_>> = entries
        .iter()
        .filter(|e| e.view.retired.is_some())
        .collect();
    if !retired.is_empty() {
        out.push("## Retired".to_string());
        out.push(String::new());
        out.push(
            "Retired patterns are no longer suggested or applied; their pages are kept for the \
             record."
                .to_string(),
        );
        out.push(String::new());
        out.push("| Pattern | Category | Rule | Title | Retired | Reason |".to_string());
        out.push("| --- | --- | --- | --- | --- | --- |".to_string());
        for entry in retired {
            let p = entry.view;
            let Some(retirement) = &p.retired else {
                continue;
            };
            out.push(format!(
                "| {} | {} | {} | {} | {} | {} |",
                page_link(entry),
                entry.group.heading(),
                cell_code(&p.rule),
                cell_text(&p.title),
                date_or_unknown(&retirement.at),
                cell_text(&retirement.reason),
            ));
        }
        out.push(String::new());
    }
    out
}

/// The group's live (not retired) patterns, in output order.
fn live<'a, 'p>(entries: &'a [Entry<'p>], group: &'a Group) -> impl Iterator<Item = &'a Entry<'p>> {
    entries
        .iter()
        .filter(move |e| &e.group == group && e.view.retired.is_none())
}

fn pattern_page(entry: &Entry<'_>) -> Vec<String> {
    let p = entry.view;
    let title = if p.title.trim().is_empty() {
        &p.id
    } else {
        &p.title
    };
    let mut out = vec![
        format!("# {}", heading_text(title)),
        String::new(),
        format!("[Back to all patterns](../{INDEX})"),
        String::new(),
        "| Field | Value |".to_string(),
        "| --- | --- |".to_string(),
        format!("| ID | {} |", cell_code(&p.id)),
        format!("| Category | {} |", entry.group.heading()),
        format!("| Rule | {} |", cell_code(&p.rule)),
        format!(
            "| Applicability | {}: {} |",
            applicability_name(&p.applicability),
            applicability_meaning(&p.applicability)
        ),
        format!(
            "| Confidence | {:.2}, {} |",
            p.confidence,
            if p.auto_apply {
                "applied automatically"
            } else {
                "not applied automatically"
            }
        ),
        format!("| Uses | {} |", uses(p)),
        format!("| Successes | {} |", p.successes),
        format!("| Failures | {} |", p.failures),
        format!("| Support | {} |", p.support),
        format!("| Learned | {} |", learned(entry)),
        format!("| Fingerprint | {} |", cell_code(&p.fingerprint)),
    ];
    if let Some(retired) = &p.retired {
        out.push(format!(
            "| Status | retired on {} |",
            date_or_unknown(&retired.at)
        ));
    }
    out.push(String::new());

    out.push("## Signature".to_string());
    out.push(String::new());
    code_block(&mut out, "text", &p.message);
    out.push(String::new());

    out.push("## Why".to_string());
    out.push(String::new());
    if p.explanation.trim().is_empty() {
        out.push("_No explanation recorded._".to_string());
    } else {
        out.extend(markdown_block(&p.explanation));
    }
    out.push(String::new());

    out.push("## Rewrite".to_string());
    out.push(String::new());
    out.push("Before:".to_string());
    out.push(String::new());
    code_block(&mut out, "text", &p.template.before);
    out.push(String::new());
    out.push("After:".to_string());
    out.push(String::new());
    code_block(&mut out, "text", &p.template.after);
    out.push(String::new());

    out.push("## Examples".to_string());
    out.push(String::new());
    if p.examples.is_empty() {
        out.push("_No examples recorded._".to_string());
        out.push(String::new());
    }
    for (idx, example) in p.examples.iter().enumerate() {
        out.push(format!("### Example {}", idx + 1));
        out.push(String::new());
        if !example.source.trim().is_empty() {
            out.push(format!("Source: {}", inline_code(&example.source)));
            out.push(String::new());
        }
        out.push("Before:".to_string());
        out.push(String::new());
        code_block(&mut out, "python", &example.before);
        out.push(String::new());
        out.push("After:".to_string());
        out.push(String::new());
        code_block(&mut out, "python", &example.after);
        out.push(String::new());
    }

    if let Some(retired) = &p.retired {
        out.push("## Retired".to_string());
        out.push(String::new());
        let reason = one_line(&retired.reason);
        if reason.is_empty() {
            out.push(format!("Retired on {}.", date_or_unknown(&retired.at)));
        } else {
            out.push(format!(
                "Retired on {}: {}",
                date_or_unknown(&retired.at),
                escape_text(&reason)
            ));
        }
        out.push(String::new());
    }
    out
}

/// Where the pattern came from. Seed patterns name their file and no date, so regenerating the
/// pages on another day or machine changes nothing.
fn learned(entry: &Entry<'_>) -> String {
    let p = entry.view;
    let date = date_or_unknown(&p.created_at);
    match p.source.as_str() {
        "seed" => cell_text(&format!(
            "seed library (index/{}/{}.toml)",
            entry.group.dir(),
            p.id
        )),
        "heal" => format!("learned from a verified heal on {date}"),
        "history" => format!("learned from the repository's history on {date}"),
        "import" => format!("imported on {date}"),
        other => format!("source {} on {date}", cell_text(other)),
    }
}

fn page_link(entry: &Entry<'_>) -> String {
    let text = if entry.view.id.trim().is_empty() {
        "(no id)".to_string()
    } else {
        cell_code(&entry.view.id)
    };
    format!("[{text}]({})", entry.path)
}

fn uses(p: &PatternView) -> u64 {
    u64::from(p.successes) + u64::from(p.failures)
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn applicability_name(applicability: &str) -> String {
    match applicability {
        "safe" | "unsafe" | "display_only" => format!("`{applicability}`"),
        other => cell_text(other),
    }
}

fn applicability_meaning(applicability: &str) -> &'static str {
    match applicability {
        "safe" => "may apply unattended once confident",
        "unsafe" => "applied only with approval or `--unsafe-fixes`",
        "display_only" => "advice, never applied",
        _ => "unknown applicability, treated as advice and never applied",
    }
}

/// The `YYYY-MM-DD` part of an RFC 3339 timestamp, or `unknown date` when it has none.
fn date_or_unknown(rfc3339: &str) -> String {
    let date = rfc3339.trim().get(..10).filter(|d| {
        d.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        })
    });
    date.unwrap_or("unknown date").to_string()
}

/// A safe file name: lower-case ASCII letters, digits, `_` and single inner `-`, at most 100
/// bytes and never empty, so it can hold neither a path separator nor `..`.
fn slug(s: &str, fallback: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() || c == '_' {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
        if out.len() >= 100 {
            break;
        }
    }
    let trimmed = out.trim_end_matches('-');
    if trimmed.is_empty() {
        fallback.to_string()
    } else {
        trimmed.to_string()
    }
}

/// Collapses all whitespace, newlines included, to single spaces.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Escapes the characters that markdown would read as markup in inline text, so a title such
/// as `__init__ | *args` renders as written. `[` and `<` open every link, image, autolink and
/// HTML tag, so their partners need no escape. `|` is escaped too, which makes the result safe
/// in a table cell.
fn escape_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | '`' | '*' | '_' | '[' | '<' | '|' | '~') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Inline text for a table cell: one line, escaped.
fn cell_text(s: &str) -> String {
    escape_text(&one_line(s))
}

/// A heading's text: a trailing `#` is escaped so it is not taken as a closing sequence.
fn heading_text(s: &str) -> String {
    let text = escape_text(&one_line(s));
    match text.strip_suffix('#') {
        Some(rest) => format!("{rest}\\#"),
        None => text,
    }
}

/// Inline code for a table cell. GFM splits cells before parsing code spans, so `|` must be
/// escaped even inside one; a backslash in front of it cannot be expressed there, so text with
/// a backslash is rendered as escaped text instead.
fn cell_code(s: &str) -> String {
    let s = one_line(s);
    if s.contains('\\') {
        escape_text(&s)
    } else {
        inline_code(&s).replace('|', "\\|")
    }
}

/// A code span delimited by more backticks than any run inside it, padded when the content
/// starts or ends with a backtick (CommonMark strips one padding space from each side).
fn inline_code(s: &str) -> String {
    let s = one_line(s);
    if s.is_empty() {
        return String::new();
    }
    let ticks = "`".repeat(longest_run(&s, '`') + 1);
    if s.starts_with('`') || s.ends_with('`') {
        format!("{ticks} {s} {ticks}")
    } else {
        format!("{ticks}{s}{ticks}")
    }
}

/// Appends a fenced code block whose fence is longer than any backtick run in `content`, so
/// content with its own fences cannot end the block early.
fn code_block(out: &mut Vec<String>, info: &str, content: &str) {
    let content = normalize_newlines(content);
    let content = content.trim_end_matches('\n');
    let fence = "`".repeat(longest_run(content, '`').max(2) + 1);
    out.push(format!("{fence}{info}"));
    if !content.is_empty() {
        out.extend(content.split('\n').map(str::to_string));
    }
    out.push(fence);
}

/// Authored markdown (an explanation), passed through as written except that a code fence it
/// leaves open is closed, so it cannot swallow the rest of the page.
fn markdown_block(text: &str) -> Vec<String> {
    let text = normalize_newlines(text);
    let lines: Vec<String> = text
        .trim_matches('\n')
        .split('\n')
        .map(str::to_string)
        .collect();
    let mut open: Option<(char, usize)> = None;
    for line in &lines {
        let trimmed = line.trim_start_matches(' ');
        if line.len() - trimmed.len() > 3 {
            continue;
        }
        let Some(c) = trimmed.chars().next().filter(|c| matches!(c, '`' | '~')) else {
            continue;
        };
        let run = trimmed.len() - trimmed.trim_start_matches(c).len();
        if run < 3 {
            continue;
        }
        match open {
            None => {
                // A backtick fence's info string may not contain a backtick.
                let info = &trimmed[run..];
                if c == '~' || !info.contains('`') {
                    open = Some((c, run));
                }
            }
            Some((open_c, open_run)) => {
                if c == open_c && run >= open_run && trimmed[run..].trim().is_empty() {
                    open = None;
                }
            }
        }
    }
    let mut out = lines;
    if let Some((c, run)) = open {
        out.push(c.to_string().repeat(run));
    }
    out
}

fn normalize_newlines(s: &str) -> String {
    s.replace("\r\n", "\n").replace('\r', "\n")
}

fn longest_run(s: &str, c: char) -> usize {
    let (mut best, mut current) = (0, 0);
    for ch in s.chars() {
        if ch == c {
            current += 1;
            best = best.max(current);
        } else {
            current = 0;
        }
    }
    best
}

/// Joins a page's lines without trailing spaces and with exactly one final newline.
fn finish(lines: &[String]) -> String {
    let mut text = lines
        .iter()
        .map(|l| l.trim_end())
        .collect::<Vec<_>>()
        .join("\n");
    let len = text.trim_end_matches('\n').len();
    text.truncate(len);
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use agency_core::contract::{ExampleDoc, Retirement, Template};

    use super::*;

    fn seed() -> PatternView {
        PatternView {
            version: 1,
            id: "style-e711-comparison-to-none".to_string(),
            category: "style".to_string(),
            rule: "E711".to_string(),
            title: "Comparison to None with ==".to_string(),
            message: "Comparison to `None` should be `cond is None`".to_string(),
            explanation: "`==` dispatches to `__eq__`, which a class may override; `is` is the \
                          exact test for the None singleton."
                .to_string(),
            applicability: "unsafe".to_string(),
            template: Template {
                before: "?x == None".to_string(),
                after: "?x is None".to_string(),
            },
            examples: vec![ExampleDoc {
                before: "if user == None:\n    return \"anonymous\"\n".to_string(),
                after: "if user is None:\n    return \"anonymous\"\n".to_string(),
                source: "seed".to_string(),
            }],
            source: "seed".to_string(),
            confidence: 0.833_333,
            auto_apply: false,
            support: 5,
            successes: 5,
            failures: 0,
            fingerprint: "e711:3f2a9c".to_string(),
            created_at: "2026-01-02T03:04:05Z".to_string(),
            updated_at: "2026-01-02T03:04:05Z".to_string(),
            retired: None,
        }
    }

    fn healed() -> PatternView {
        PatternView {
            version: 1,
            id: "type-union-attr-optional-str".to_string(),
            category: "type".to_string(),
            rule: "union-attr".to_string(),
            title: "String method called on an Optional[str]".to_string(),
            message: "Item \"None\" of \"str | None\" has no attribute \"strip\"".to_string(),
            explanation: "The value may be None; guard it before calling a str method.".to_string(),
            applicability: "safe".to_string(),
            template: Template {
                before: "?x.strip()".to_string(),
                after: "(?x or \"\").strip()".to_string(),
            },
            examples: vec![
                ExampleDoc {
                    before: "name = row.get(\"name\").strip()\n".to_string(),
                    after: "name = (row.get(\"name\") or \"\").strip()\n".to_string(),
                    source: "app/users.py".to_string(),
                },
                ExampleDoc {
                    before: "title = meta.title.strip()  \n".to_string(),
                    after: "title = (meta.title or \"\").strip()\n".to_string(),
                    source: String::new(),
                },
            ],
            source: "heal".to_string(),
            confidence: 0.917,
            auto_apply: true,
            support: 2,
            successes: 11,
            failures: 1,
            fingerprint: "union-attr:9b1c04".to_string(),
            created_at: "2026-03-04T10:15:00Z".to_string(),
            updated_at: "2026-05-06T07:08:09Z".to_string(),
            retired: None,
        }
    }

    fn retired() -> PatternView {
        PatternView {
            version: 1,
            id: "security-b113-requests-without-timeout".to_string(),
            category: "security".to_string(),
            rule: "B113".to_string(),
            title: "requests call without a timeout".to_string(),
            message: "Call to requests without timeout".to_string(),
            explanation: String::new(),
            applicability: "display_only".to_string(),
            template: Template {
                before: "requests.get(?url)".to_string(),
                after: "requests.get(?url, timeout=10)".to_string(),
            },
            examples: Vec::new(),
            source: "import".to_string(),
            confidence: 0.2,
            auto_apply: false,
            support: 1,
            successes: 1,
            failures: 4,
            fingerprint: "b113:77aa01".to_string(),
            created_at: "2025-12-24T23:59:59Z".to_string(),
            updated_at: "2026-02-01T00:00:00Z".to_string(),
            retired: Some(Retirement {
                at: "2026-02-01T00:00:00Z".to_string(),
                reason: "failed 4 of 5 verified uses".to_string(),
            }),
        }
    }

    fn fixtures() -> Vec<PatternView> {
        vec![seed(), healed(), retired()]
    }

    /// Checks the invariants every page must keep whatever the input.
    fn check_well_formed(pages: &BTreeMap<String, String>) {
        for (path, text) in pages {
            assert!(
                text.ends_with('\n') && !text.ends_with("\n\n"),
                "{path}: final newline"
            );
            for (idx, line) in text.lines().enumerate() {
                assert_eq!(line, line.trim_end(), "{path}:{}: trailing space", idx + 1);
            }
            assert!(!path.contains(".."), "{path}: escapes the output directory");
            assert!(!path.starts_with('/'), "{path}: absolute");
        }
    }

    #[test]
    fn snapshot_index() {
        let pages = render(&fixtures());
        check_well_formed(&pages);
        insta::assert_snapshot!("index", pages[INDEX].as_str());
    }

    #[test]
    fn snapshot_pattern_page() {
        let pages = render(&fixtures());
        insta::assert_snapshot!(
            "pattern_page_heal",
            pages["type/type-union-attr-optional-str.md"].as_str()
        );
    }

    #[test]
    fn pages_and_paths() {
        let pages = render(&fixtures());
        let paths: Vec<&str> = pages.keys().map(String::as_str).collect();
        assert_eq!(
            paths,
            [
                "README.md",
                "security/security-b113-requests-without-timeout.md",
                "style/style-e711-comparison-to-none.md",
                "type/type-union-attr-optional-str.md",
            ]
        );
        let seed_page = &pages["style/style-e711-comparison-to-none.md"];
        assert!(seed_page.contains(
            "| Learned | seed library (index/style/style-e711-comparison-to-none.toml) |"
        ));
        assert!(
            !seed_page.contains("2026"),
            "seed pages carry no dates:\n{seed_page}"
        );
        let retired_page = &pages["security/security-b113-requests-without-timeout.md"];
        assert!(
            retired_page
                .contains("## Retired\n\nRetired on 2026-02-01: failed 4 of 5 verified uses\n")
        );
        assert!(retired_page.contains("| Learned | imported on 2025-12-24 |"));
        // Retired patterns are listed only in the final section of the index.
        let index = &pages[INDEX];
        assert!(
            !index.contains("## Security"),
            "no live security pattern, no section"
        );
        assert_eq!(
            index
                .matches("security-b113-requests-without-timeout.md")
                .count(),
            1
        );
        assert!(index.contains("## Retired"));
    }

    #[test]
    fn output_ignores_input_order_and_seed_timestamps() {
        let base = fixtures();
        let expected = render(&base);
        // All six orders of three patterns: rotations of the list and of its reverse.
        let mut reversed = base.clone();
        reversed.reverse();
        for list in [base, reversed] {
            for shift in 0..list.len() {
                let mut shuffled = list.clone();
                shuffled.rotate_left(shift);
                assert_eq!(render(&shuffled), expected, "shift {shift}");
            }
        }
        // A seed pattern re-loaded on another day renders the same.
        let mut later = fixtures();
        later[0].created_at = "2030-07-08T09:10:11Z".to_string();
        later[0].updated_at = "2030-07-08T09:10:11Z".to_string();
        later[1].updated_at = "2030-07-08T09:10:11Z".to_string();
        assert_eq!(render(&later), expected);
    }

    #[test]
    fn backticks_and_pipes_are_escaped() {
        let mut p = healed();
        p.title = "Pipe | in the title #".to_string();
        p.rule = "a|b".to_string();
        p.template.before = "```python\nx = 1\n```".to_string();
        p.template.after = "````\ny = 2\n````".to_string();
        p.examples[0].before = "s = \"```\"\n".to_string();
        p.explanation = "Unclosed fence:\n\n```python\nx = 1".to_string();
        let pages = render(&[p]);
        check_well_formed(&pages);

        let index = &pages[INDEX];
        let row = index
            .lines()
            .find(|l| l.contains("type-union-attr-optional-str.md"))
            .unwrap_or_default();
        assert!(row.contains("| Pipe \\| in the title # |"), "{row}");
        assert!(row.contains("| `a\\|b` |"), "{row}");
        // Eight cells: nine unescaped pipes.
        let unescaped = row
            .match_indices('|')
            .filter(|(at, _)| !row[..*at].ends_with('\\'));
        assert_eq!(unescaped.count(), 9, "{row}");

        let page = &pages["type/type-union-attr-optional-str.md"];
        assert!(page.starts_with("# Pipe \\| in the title \\#\n"), "{page}");
        assert!(
            page.contains("````text\n```python\nx = 1\n```\n````\n"),
            "{page}"
        );
        assert!(
            page.contains("`````text\n````\ny = 2\n````\n`````\n"),
            "{page}"
        );
        assert!(page.contains("````python\ns = \"```\"\n````\n"), "{page}");
        assert!(
            page.contains("```python\nx = 1\n```\n\n## Rewrite"),
            "{page}"
        );
    }

    #[test]
    fn hostile_ids_and_categories_stay_inside_the_output() {
        let mut a = seed();
        a.id = "../../etc/passwd".to_string();
        a.category = "../Secret".to_string();
        let mut b = seed();
        b.id = "Style-E711".to_string();
        let mut c = seed();
        c.id = "style-e711".to_string();
        let pages = render(&[a, b, c]);
        check_well_formed(&pages);
        let paths: Vec<&str> = pages.keys().map(String::as_str).collect();
        assert_eq!(
            paths,
            [
                "README.md",
                "secret/etc-passwd.md",
                "style/style-e711-2.md",
                "style/style-e711.md",
            ]
        );
        assert!(pages[INDEX].contains("\n## ../Secret\n"));
    }

    #[test]
    fn helpers() {
        assert_eq!(inline_code("a ` b"), "``a ` b``");
        assert_eq!(inline_code("`x`"), "`` `x` ``");
        assert_eq!(date_or_unknown("2026-03-04T10:15:00Z"), "2026-03-04");
        assert_eq!(date_or_unknown("yesterday"), "unknown date");
        assert_eq!(date_or_unknown(""), "unknown date");
        assert_eq!(escape_text("__init__ *x*"), "\\_\\_init\\_\\_ \\*x\\*");
        assert_eq!(
            finish(&["a  ".to_string(), String::new(), String::new()]),
            "a\n"
        );
    }
}
