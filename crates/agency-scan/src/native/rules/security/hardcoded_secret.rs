//! AGY203 `hardcoded-secret`: a credential written in the source. Two detections:
//!
//! - Known credential formats in any string literal (AWS access key ids, GitHub, GitLab, Slack,
//!   Stripe, Google, SendGrid, OpenAI, Anthropic, PyPI, npm and Hugging Face tokens, PEM
//!   private keys with a body). These are high severity: the format alone says what it is.
//! - A random-looking string literal assigned to a credential name (`password`, `secret`,
//!   `token`, `api_key`, `private_key`, `credential`, ...) as a variable, attribute, dict key,
//!   keyword argument or parameter default. Medium severity: the name carries the evidence,
//!   so the value must look like a secret (no spaces, not a URL, path, identifier, format
//!   string or placeholder, mixed characters with enough entropy).
//!
//! Test files hold fake credentials by design: there the name-based detection is skipped and
//! known formats drop to low severity (a real key in a test is still a leaked key).

use std::sync::LazyLock;

use agency_core::contract::Severity;
use regex::Regex;
use ruff_python_ast::visitor::{self, Visitor};
use ruff_python_ast::{Expr, InterpolatedStringElement, Stmt};
use ruff_text_size::TextRange;

use crate::native::{Checker, Diagnostic};

/// Known credential formats, by what the message calls them. Each needs a distinctive prefix
/// and the token's exact shape, so prose and identifiers do not match.
static FORMATS: LazyLock<Vec<(&'static str, Regex)>> =
    LazyLock::new(|| {
        [
        ("AWS access key id", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
        ("GitHub token", r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36}\b"),
        ("GitHub token", r"\bgithub_pat_[A-Za-z0-9_]{50,}\b"),
        ("GitLab token", r"\bglpat-[A-Za-z0-9_-]{20}\b"),
        ("Slack token", r"\bxox[baprs]-[0-9]{8,}-[0-9A-Za-z-]{10,}"),
        (
            "Slack webhook URL",
            r"hooks\.slack\.com/services/T[A-Z0-9]{8,}/B[A-Z0-9]{8,}/[A-Za-z0-9]{20,}",
        ),
        ("Stripe live key", r"\b(?:sk|rk)_live_[0-9A-Za-z]{24,}\b"),
        ("Google API key", r"\bAIza[0-9A-Za-z_-]{35}\b"),
        ("SendGrid API key", r"\bSG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}\b"),
        ("OpenAI API key", r"\bsk-(?:proj-)?[A-Za-z0-9_-]{20,}T3BlbkFJ[A-Za-z0-9_-]{20,}"),
        ("OpenAI API key", r"\bsk-proj-[A-Za-z0-9_-]{80,}"),
        ("Anthropic API key", r"\bsk-ant-(?:api|admin)[0-9]{2}-[A-Za-z0-9_-]{80,}"),
        ("PyPI token", r"\bpypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}"),
        ("npm token", r"\bnpm_[A-Za-z0-9]{36}\b"),
        ("Hugging Face token", r"\bhf_[A-Za-z]{34}\b"),
        // A header alone is what PEM parsers compare against; a key has a base64 body.
        (
            "private key",
            r"-----BEGIN [A-Z ]{0,20}PRIVATE KEY(?: BLOCK)?-----(?s:.{0,200}?)[A-Za-z0-9+/]{40}",
        ),
    ]
    .into_iter()
    .map(|(kind, pattern)| (kind, Regex::new(pattern).expect("the credential patterns are valid")))
    .collect()
    });

/// All formats in one automaton, so the common case (no match) is one scan per literal.
static ANY_FORMAT: LazyLock<Regex> = LazyLock::new(|| {
    let joined: Vec<&str> = FORMATS.iter().map(|(_, re)| re.as_str()).collect();
    Regex::new(&joined.join("|")).expect("the joined credential patterns are valid")
});

/// The shortest token any format matches (an AWS key id); shorter literals are skipped.
const MIN_FORMAT_LEN: usize = 20;

pub fn hardcoded_secret(checker: &Checker, out: &mut Vec<Diagnostic>) {
    let mut visitor = SecretVisitor {
        in_test: checker.is_test_file(),
        out,
    };
    visitor.visit_body(&checker.module.body);
}

struct SecretVisitor<'o> {
    in_test: bool,
    out: &'o mut Vec<Diagnostic>,
}

impl SecretVisitor<'_> {
    /// Reports a literal that contains a known credential format.
    fn check_format(&mut self, text: &str, range: TextRange) {
        if text.len() < MIN_FORMAT_LEN {
            return;
        }
        let Some(found) = ANY_FORMAT.find(text) else {
            return;
        };
        let token = found.as_str();
        // Documentation examples (`AKIAIOSFODNN7EXAMPLE`) and masks (`ghp_xxxx...`).
        if token.to_ascii_lowercase().contains("example") || shannon_entropy(token) < 3.0 {
            return;
        }
        let kind = FORMATS
            .iter()
            .find(|(_, re)| re.is_match(token))
            .map_or("credential", |(kind, _)| kind);
        let severity = if self.in_test {
            Severity::Low
        } else {
            Severity::High
        };
        self.out.push(
            Diagnostic::new(
                "AGY203",
                range,
                format!(
                    "hardcoded {kind}; revoke it and read it from the environment or a secret store"
                ),
            )
            .severity(severity),
        );
    }

    /// Reports a secret-looking literal bound to a credential name.
    fn check_named(&mut self, name: &str, value: &Expr, what: &str) {
        if self.in_test {
            return;
        }
        let Expr::StringLiteral(literal) = value else {
            return;
        };
        let text = literal.value.to_str();
        if text.len() < MIN_SECRET_LEN || !is_secret_name(name) || !looks_like_secret(text) {
            return;
        }
        if text.len() >= MIN_FORMAT_LEN && ANY_FORMAT.is_match(text) {
            // Reported with its format when the literal is visited.
            return;
        }
        self.out.push(
            Diagnostic::new(
                "AGY203",
                literal.range,
                format!(
                    "a hardcoded credential is assigned to {what} `{name}`; read it from the environment or a secret store, and rotate it"
                ),
            )
            .severity(Severity::Medium),
        );
    }
}

impl<'a> Visitor<'a> for SecretVisitor<'_> {
    fn visit_stmt(&mut self, stmt: &'a Stmt) {
        match stmt {
            Stmt::Assign(assign) => {
                for target in &assign.targets {
                    if let Some((name, what)) = target_name(target) {
                        self.check_named(name, &assign.value, what);
                    }
                }
            }
            Stmt::AnnAssign(assign) => {
                if let (Some((name, what)), Some(value)) =
                    (target_name(&assign.target), &assign.value)
                {
                    self.check_named(name, value, what);
                }
            }
            Stmt::FunctionDef(def) => {
                for param in def.parameters.iter_non_variadic_params() {
                    if let Some(default) = &param.default {
                        self.check_named(param.name().as_str(), default, "parameter");
                    }
                }
            }
            _ => {}
        }
        visitor::walk_stmt(self, stmt);
    }

    fn visit_expr(&mut self, expr: &'a Expr) {
        match expr {
            Expr::StringLiteral(literal) => {
                self.check_format(literal.value.to_str(), literal.range);
            }
            Expr::BytesLiteral(literal) => {
                let bytes: Vec<u8> = literal.value.bytes().collect();
                if bytes.len() >= MIN_FORMAT_LEN {
                    self.check_format(&String::from_utf8_lossy(&bytes), literal.range);
                }
            }
            Expr::FString(fstring) => {
                for element in fstring.value.elements() {
                    if let InterpolatedStringElement::Literal(literal) = element {
                        self.check_format(&literal.value, literal.range);
                    }
                }
                for literal in fstring.value.literals() {
                    self.check_format(&literal.value, literal.range);
                }
            }
            Expr::Dict(dict) => {
                for item in &dict.items {
                    if let Some(Expr::StringLiteral(key)) = &item.key {
                        self.check_named(key.value.to_str(), &item.value, "key");
                    }
                }
            }
            Expr::Call(call) => {
                for keyword in &call.arguments.keywords {
                    if let Some(arg) = &keyword.arg {
                        self.check_named(arg.as_str(), &keyword.value, "keyword argument");
                    }
                }
            }
            _ => {}
        }
        visitor::walk_expr(self, expr);
    }
}

/// The name an assignment target binds: a variable, an attribute, or a constant dict key
/// (`config["password"] = ...`), with the word a message uses for it.
fn target_name(target: &Expr) -> Option<(&str, &'static str)> {
    match target {
        Expr::Name(name) => Some((name.id.as_str(), "variable")),
        Expr::Attribute(attr) => Some((attr.attr.as_str(), "attribute")),
        Expr::Subscript(subscript) => match subscript.slice.as_ref() {
            Expr::StringLiteral(key) => Some((key.value.to_str(), "key")),
            _ => None,
        },
        _ => None,
    }
}

/// Shortest value the name-based detection considers: shorter strings are flags, modes and
/// toy values, and guessing them gains an attacker little over the name itself.
const MIN_SECRET_LEN: usize = 8;

/// A last word that makes the name describe a credential rather than hold one:
/// `password_field`, `token_type`, `TOKEN_URL`, `secret_key_name`, `PASSWORD_HASHERS`.
const DESCRIBING_WORDS: &[&str] = &[
    "field",
    "fields",
    "type",
    "types",
    "url",
    "uri",
    "urls",
    "endpoint",
    "name",
    "names",
    "label",
    "header",
    "headers",
    "param",
    "params",
    "prefix",
    "suffix",
    "length",
    "len",
    "min",
    "max",
    "size",
    "path",
    "file",
    "filename",
    "dir",
    "format",
    "pattern",
    "regex",
    "re",
    "input",
    "widget",
    "class",
    "attr",
    "column",
    "env",
    "var",
    "setting",
    "settings",
    "kind",
    "mode",
    "policy",
    "validator",
    "validators",
    "hasher",
    "hashers",
    "backend",
    "backends",
    "expiry",
    "expires",
    "expiration",
    "timeout",
    "ttl",
    "age",
    "count",
    "required",
    "enabled",
    "error",
    "errors",
    "message",
    "msg",
    "help",
    "text",
    "template",
    "placeholder",
    "hash",
    "id",
    "ids",
    "method",
    "methods",
    "scheme",
    "location",
    "index",
    "encoding",
    "algorithm",
    "alg",
    "version",
    "separator",
    "delimiter",
    "char",
    "chars",
    "key_name",
    "option",
    "options",
    "display",
    "view",
    "form",
    "link",
    "id_key",
    "cookie",
    "salt",
    "title",
    "description",
    "doc",
    "docs",
    "source",
    "sources",
    "storage",
    "parameter",
    "endpoint_url",
    "spec",
    "expression",
    "hint",
    "selection",
];

/// Words before `token` that make it a protocol value rather than a credential: pagination,
/// idempotency, CSRF and verification tokens are handed out in the open.
const PUBLIC_TOKEN_QUALIFIERS: &[&str] = &[
    "next",
    "page",
    "pagination",
    "continuation",
    "sync",
    "update",
    "change",
    "verification",
    "idempotency",
    "client",
    "request",
    "creation",
    "resume",
    "cursor",
    "csrf",
];

/// Verbs before a credential word that make the name an action on it (a view, a rate limit,
/// an event): `reset_password`, `forgot_password`, `change_password`. Not `new`/`confirm`,
/// whose names hold a password.
const ACTION_QUALIFIERS: &[&str] = &["reset", "forgot", "change", "revoke"];

/// True for names that hold a credential: a credential word anywhere, or `key` qualified by
/// `api`/`private`/`secret`/..., unless the last word says the name describes one or the word
/// before it says the name acts on one.
fn is_secret_name(name: &str) -> bool {
    let words = agency_core::secrets::split_words(name);
    let Some(last) = words.last() else {
        return false;
    };
    if DESCRIBING_WORDS.contains(&last.as_str()) {
        return false;
    }
    words.iter().enumerate().any(|(idx, word)| {
        let previous = idx.checked_sub(1).map(|i| words[i].as_str());
        if word == "token" && previous.is_some_and(|p| PUBLIC_TOKEN_QUALIFIERS.contains(&p)) {
            return false;
        }
        if previous.is_some_and(|p| ACTION_QUALIFIERS.contains(&p)) {
            return false;
        }
        agency_core::secrets::is_secret_word(word, previous)
    })
}

/// Substrings of placeholders, templates and documentation values.
const PLACEHOLDERS: &[&str] = &[
    "changeme",
    "change_me",
    "change-me",
    "changethis",
    "xxx",
    "your",
    "example",
    "dummy",
    "sample",
    "placeholder",
    "fake",
    "test",
    "todo",
    "fixme",
    "redacted",
    "replace",
    "insert",
    "***",
    "...",
    "<",
    ">",
    "{",
    "}",
    "$",
    "%(",
    "%s",
    "env:",
    "vault:",
    "secret",
    "password",
    "token",
    "undefined",
    "default",
    "foo",
    "bar",
    "abc",
    "123456",
    "qwerty",
];

/// True for a value that reads as a real secret rather than a word, identifier, path, URL,
/// message, format string or placeholder.
fn looks_like_secret(value: &str) -> bool {
    let value = ["Bearer ", "Basic ", "Token ", "token "]
        .iter()
        .find_map(|prefix| value.strip_prefix(prefix))
        .unwrap_or(value);
    if value.len() < MIN_SECRET_LEN || value.len() > 512 || value.chars().any(char::is_whitespace) {
        return false;
    }
    // URLs, paths, quoted header parameters (`oauth_nonce="..."`) and e-mail addresses.
    if value.contains("://")
        || value.starts_with(['/', '.', '~'])
        || value.contains(['\\', '"', '\''])
        || is_email(value)
    {
        return false;
    }
    let lower = value.to_ascii_lowercase();
    if PLACEHOLDERS.iter().any(|p| lower.contains(p)) {
        return false;
    }
    // Words, identifiers and dotted paths (`client_credentials`, `MY_APP_SECRET`,
    // `django.contrib.auth.hashers.PBKDF2PasswordHasher`) name things; secrets mix digits
    // or symbols into letters.
    let has_digit = value.bytes().any(|b| b.is_ascii_digit());
    let has_symbol = value
        .bytes()
        .any(|b| !b.is_ascii_alphanumeric() && !matches!(b, b'_' | b'-' | b'.' | b':'));
    if !has_digit && !has_symbol {
        return false;
    }
    // Constant-style names with a counter (`FORBIDDEN_VALUE2`) are placeholders too.
    let stem = value.trim_end_matches(|c: char| c.is_ascii_digit());
    if stem.len() >= 4 && stem.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
        return false;
    }
    // A dotted path has identifier segments, at least one of them a plain lower-case word
    // (`django.contrib`); a JWT's segments are random base64.
    let segments = || value.split('.');
    if value.contains('.')
        && segments().all(|segment| {
            segment
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
        && segments().any(|segment| segment.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
    {
        return false;
    }
    let classes = [
        value.bytes().any(|b| b.is_ascii_lowercase()),
        value.bytes().any(|b| b.is_ascii_uppercase()),
        has_digit,
        has_symbol || value.contains(['_', '-', '.', ':']),
    ];
    classes.iter().filter(|c| **c).count() >= 2 && shannon_entropy(value) >= 3.0
}

/// True for `user@host.tld`.
fn is_email(value: &str) -> bool {
    value.split_once('@').is_some_and(|(user, host)| {
        !user.is_empty()
            && host.rsplit_once('.').is_some_and(|(name, tld)| {
                !name.is_empty() && tld.len() >= 2 && tld.bytes().all(|b| b.is_ascii_alphabetic())
            })
    })
}

/// Shannon entropy in bits per character, over bytes.
fn shannon_entropy(text: &str) -> f64 {
    let mut counts = [0_u32; 256];
    for b in text.bytes() {
        counts[usize::from(b)] += 1;
    }
    #[allow(
        clippy::cast_precision_loss,
        reason = "string lengths are far below 2^52"
    )]
    let len = text.len() as f64;
    counts
        .iter()
        .filter(|&&n| n > 0)
        .map(|&n| {
            let p = f64::from(n) / len;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for name in [
            "password",
            "DB_PASSWORD",
            "api_key",
            "apiKey",
            "client_secret",
            "authToken",
            "password2",
            "Authorization",
        ] {
            assert!(is_secret_name(name), "{name}");
        }
        for name in [
            "password_field",
            "token_type",
            "TOKEN_URL",
            "secret_key_name",
            "PASSWORD_HASHERS",
            "keyboard",
            "monkey",
            "primary_key",
            "reset_password",
        ] {
            assert!(!is_secret_name(name), "{name}");
        }
    }

    #[test]
    fn values() {
        for value in [
            "s3cr3t-Pa55w0rd!",
            "9f86d081884c7d659a2feaa0c55ad015",
            "Bearer eyJhbGciOiJIUzI1NiJ9.Zk93xQ",
        ] {
            assert!(looks_like_secret(value), "{value}");
        }
        for value in [
            "changeme",
            "your_api_key_here",
            "<your-token>",
            "${API_TOKEN}",
            "%(password)s",
            "client_credentials",
            "The password is wrong",
            "https://example.com/token",
            "django.contrib.auth.hashers.PBKDF2PasswordHasher",
            "aaaaaaaa1",
        ] {
            assert!(!looks_like_secret(value), "{value}");
        }
    }
}
