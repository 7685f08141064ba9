//! AGY202 `xss-unescaped-markup`: text built by formatting or concatenation from a value that
//! is neither constant nor escaped, then marked safe for HTML (`Markup`, `mark_safe`,
//! `SafeString`), sent as HTML (`HTMLResponse`), compiled as a template
//! (`render_template_string`, `jinja2.Template`, `from_string`: server-side template
//! injection) or passed as the format string of `format_html`, which escapes only its
//! arguments.
//!
//! Precision: as for SQL, the rule reports only when it sees the literal text and the value
//! formatted into it; escaped values (`escape`, `conditional_escape`, `format_html`, `urlencode`,
//! numbers, constants) and names of HTML fragments (`inner_html`) are safe.

use agency_core::contract::Severity;
use ruff_python_ast::{Expr, ExprCall};
use ruff_text_size::Ranged;

use super::sql_string_format::sink_display;
use super::taint::{Analysis, Policy, find_sink_calls, snippet};
use crate::native::helpers::{callee_name, dotted_name};
use crate::native::{Checker, Diagnostic};

/// What a sink does with its text, for the message.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Marks text safe or sends it as HTML.
    Markup,
    /// Compiles text as a template.
    Template,
    /// `format_html`, whose first argument must be a constant format string.
    FormatHtml,
}

fn kind(name: &str) -> Option<Kind> {
    match name {
        "Markup" | "mark_safe" | "SafeString" | "SafeText" | "HTMLResponse" => Some(Kind::Markup),
        "render_template_string" | "Template" | "from_string" => Some(Kind::Template),
        "format_html" => Some(Kind::FormatHtml),
        _ => None,
    }
}

fn is_sink(name: &str) -> bool {
    kind(name).is_some()
}

/// Callees whose result is escaped (or is itself a checked sink) and safe inside HTML.
fn is_sanitizer(name: &str) -> bool {
    name.contains("escape")
        || name.contains("html")
        || name.starts_with("render")
        || name.starts_with("format_html")
        || name.starts_with("quote")
        || name.starts_with("urlencode")
        || name.starts_with("sanitize")
        // Builders of one element return rendered markup: Django's `label_tag`, Wagtail's
        // `img_tag`. Not any `_tag` (`get_tag` may return a user's tag name).
        || name.strip_suffix("_tag").is_some_and(|element| {
            matches!(
                element.rsplit('_').next(),
                Some(
                    "img" | "image" | "label" | "legend" | "script" | "link" | "meta" | "style"
                        | "input" | "anchor" | "picture" | "source"
                )
            )
        })
        || matches!(
            name,
            "mark_safe"
                | "Markup"
                | "SafeString"
                | "json_script"
                | "strip_tags"
                | "clean"
                | "linkify"
                | "flatatt"
                | "reverse"
                | "iri_to_uri"
                | "static"
                | "url_for"
                | "slugify"
                | "id"
        )
}

/// Names holding HTML that was built (and checked) elsewhere.
fn is_fragment(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.contains("html")
        || lower.contains("template")
        || lower.ends_with("_safe")
        || lower.starts_with("safe_")
}

const POLICY: Policy = Policy {
    sanitizer: is_sanitizer,
    fragment: is_fragment,
    quote_doubling_escapes: false,
};

pub fn xss_unescaped_markup(checker: &Checker, out: &mut Vec<Diagnostic>) {
    let (scopes, calls) = find_sink_calls(checker.module, is_sink);
    if calls.is_empty() {
        return;
    }
    // `Template` and `from_string` are generic names (`string.Template`, Django's engine);
    // only jinja2's compile attacker-controlled source into code.
    let jinja = checker.source.contains("jinja2");
    let analysis = Analysis::new(&scopes, &POLICY);
    // Tests render fixture values; the finding stays visible but does not gate.
    let severity = if checker.is_test_file() {
        Severity::Low
    } else {
        Severity::High
    };
    for sink in &calls {
        let call = sink.call;
        let Some(kind) = callee_name(call).and_then(kind) else {
            continue;
        };
        if !sink_applies(call, jinja) {
            continue;
        }
        let Some(arg) = html_argument(call) else {
            continue;
        };
        let scope = sink.scope;
        let Some(built) = analysis.eval(arg, scope, call.range().start()) else {
            continue;
        };
        let Some((how, culprit)) = built.tainted else {
            continue;
        };
        let sink = sink_display(checker, call);
        let value = snippet(checker.source, culprit);
        let how = how.describe();
        let message = match kind {
            Kind::Markup => format!(
                "HTML built with {how} from `{value}` reaches `{sink}` unescaped; escape the value (`format_html`, `escape`) or render it in a template"
            ),
            Kind::Template => format!(
                "template source built with {how} from `{value}` reaches `{sink}` (template injection); pass the value in the template context"
            ),
            Kind::FormatHtml => format!(
                "`{sink}` receives a string already built with {how} from `{value}`, so nothing is escaped; pass the value as an argument: `format_html(\"...{{}}...\", value)`"
            ),
        };
        out.push(Diagnostic::new("AGY202", arg.range(), message).severity(severity));
    }
}

/// Filters generic sink names: `Template` and `from_string` count only with jinja2 in the file
/// and not when spelled as `string.Template` or a Django engine.
fn sink_applies(call: &ExprCall, jinja: bool) -> bool {
    match callee_name(call) {
        Some("Template" | "from_string") => {
            jinja
                && dotted_name(&call.func)
                    .is_none_or(|d| !d.starts_with("string.") && !d.contains("django"))
        }
        _ => true,
    }
}

/// The markup argument: the first positional one or a keyword naming content.
fn html_argument(call: &ExprCall) -> Option<&Expr> {
    match call.arguments.args.first() {
        Some(Expr::Starred(_)) => None,
        Some(first) => Some(first),
        None => call
            .arguments
            .keywords
            .iter()
            .find(|k| {
                k.arg.as_ref().is_some_and(|arg| {
                    matches!(arg.as_str(), "content" | "source" | "s" | "value" | "base")
                })
            })
            .map(|k| &k.value),
    }
}
