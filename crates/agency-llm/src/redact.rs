//! Reversible redaction: secrets in what would be sent to a model are replaced by placeholders
//! (`__AGENCY_SECRET_1__`, ...) and put back, locally, into the code the model returns.
//!
//! Three detections, in the spirit of AGY203 (`agency-scan`'s `hardcoded_secret.rs`) but wider,
//! because here a false positive costs the model a little context while a miss leaks a
//! credential to a third party:
//!
//! - known credential formats anywhere in the text (AWS key ids, GitHub, GitLab, Slack, Stripe,
//!   Google, SendGrid, `sk-` API keys, PyPI, npm, Hugging Face tokens, JWTs, private key
//!   blocks, bearer tokens, the password of a `scheme://user:password@host` URL);
//! - any non-empty string literal bound to a credential-like name (`password = "..."`,
//!   `"api_key": "..."`, `token="..."`, `SECRET: str = "..."`), whatever it looks like;
//! - high-entropy runs of 20 or more base64/hex-like characters inside string literals.
//!
//! The same secret always gets the same placeholder, across every text given to one
//! [`Redactor`], so that a `find` quoting it maps back to the original bytes.

use std::ops::Range;
use std::sync::LazyLock;

use regex::Regex;

use crate::Rejection;

/// The placeholder text for secret number `n` (1-based).
pub fn placeholder(n: usize) -> String {
    format!("__AGENCY_SECRET_{n}__")
}

static PLACEHOLDER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"__AGENCY_SECRET_(\d+)__").expect("a valid regex"));

/// Credential formats; a capture group, when present, is the secret part of the match.
static FORMATS: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    [
        r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
        r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{30,}\b",
        r"\bgithub_pat_[A-Za-z0-9_]{22,}",
        r"\bglpat-[A-Za-z0-9_-]{20,}",
        r"\bxox[abposr]-[0-9A-Za-z-]{10,}",
        r"hooks\.slack\.com/services/[A-Za-z0-9/]{20,}",
        r"\b(?:sk|rk|pk)_(?:live|test)_[0-9A-Za-z]{16,}",
        r"\bAIza[0-9A-Za-z_-]{35}",
        r"\bSG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}",
        r"\bsk-[A-Za-z0-9_-]{20,}",
        r"\bpypi-[A-Za-z0-9_-]{50,}",
        r"\bnpm_[A-Za-z0-9]{36}\b",
        r"\bhf_[A-Za-z0-9]{30,}\b",
        r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*",
        r"(?s)-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\z)",
        r"(?i)\bBearer\s+([A-Za-z0-9._~+/-]{16,}=*)",
        r"(?i)\b[a-z][a-z0-9+.-]*://[^/\s:@'\x22]+:([^/\s@'\x22]+)@",
    ]
    .into_iter()
    .map(|p| Regex::new(p).expect("the credential patterns are valid"))
    .collect()
});

/// A name (bare, or quoted as a dict key), an optional annotation, `=` or `:`, then a
/// one-line string literal whose body is group `body_dq` or `body_sq`.
static NAMED_LITERAL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?x)
        (?: ["'](?P<qname>[A-Za-z_][A-Za-z0-9_.-]*)["'] | (?P<name>[A-Za-z_][A-Za-z0-9_]*) )
        [\t\x20]* (?: :[\t\x20]*[A-Za-z_][A-Za-z0-9_.\[\],|\t\x20]*? [\t\x20]* )?
        (?: = | : ) [\t\x20]*
        [rRbBuUfF]{0,2}
        (?: "(?P<body_dq>(?:[^"\\\n]|\\.)+)" | '(?P<body_sq>(?:[^'\\\n]|\\.)+)' )
        "#,
    )
    .expect("a valid regex")
});

/// One-line string literals.
static LITERAL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#""((?:[^"\\\n]|\\.)*)"|'((?:[^'\\\n]|\\.)*)'"#).expect("a valid regex")
});

/// Runs of base64/hex-like characters long enough to be keys.
static TOKEN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[A-Za-z0-9+/_=-]{20,}").expect("a valid regex"));

/// Words that make a name a credential besides the shared ones
/// (`agency_core::secrets`): redaction errs on the side of hiding.
const MORE_SECRET_WORDS: &[&str] = &["pass", "secrets"];

/// Replaces secrets by placeholders and puts them back. One per prompt: the numbering is
/// shared by every text it redacts.
#[derive(Debug, Default, Clone)]
pub struct Redactor {
    /// Secret `i` is placeholder `i + 1`.
    secrets: Vec<String>,
}

impl Redactor {
    /// A redactor that has seen no secret yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many distinct secrets were replaced so far.
    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    /// Whether no secret was replaced.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// `text` with every detected secret replaced by its placeholder.
    pub fn redact(&mut self, text: &str) -> String {
        let ranges = secret_ranges(text);
        if ranges.is_empty() {
            return text.to_string();
        }
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for range in ranges {
            out.push_str(&text[last..range.start]);
            let secret = &text[range.clone()];
            let n = if let Some(i) = self.secrets.iter().position(|s| s == secret) {
                i + 1
            } else {
                self.secrets.push(secret.to_string());
                self.secrets.len()
            };
            out.push_str(&placeholder(n));
            last = range.end;
        }
        out.push_str(&text[last..]);
        out
    }

    /// `text` with every placeholder replaced by the secret it stands for; a placeholder this
    /// redactor never issued is an error (the model invented it).
    pub fn restore(&self, text: &str) -> Result<String, Rejection> {
        if !text.contains("__AGENCY_SECRET_") {
            return Ok(text.to_string());
        }
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for caps in PLACEHOLDER.captures_iter(text) {
            let whole = caps.get(0).expect("group 0 always exists");
            let secret = caps[1]
                .parse::<usize>()
                .ok()
                .and_then(|n| n.checked_sub(1))
                .and_then(|i| self.secrets.get(i))
                .ok_or_else(|| Rejection::UnknownPlaceholder {
                    placeholder: whole.as_str().to_string(),
                })?;
            out.push_str(&text[last..whole.start()]);
            out.push_str(secret);
            last = whole.end();
        }
        out.push_str(&text[last..]);
        Ok(out)
    }
}

/// Byte ranges of the secrets in `text`, sorted, overlapping detections merged. Text that
/// already looks like a placeholder counts too, so that it is mapped to a fresh placeholder
/// and restored as it was, never confused with a redacted secret.
pub fn secret_ranges(text: &str) -> Vec<Range<usize>> {
    let mut ranges: Vec<Range<usize>> = PLACEHOLDER.find_iter(text).map(|m| m.range()).collect();
    for re in FORMATS.iter() {
        for caps in re.captures_iter(text) {
            let m = caps
                .get(1)
                .or_else(|| caps.get(0))
                .expect("group 0 always exists");
            ranges.push(m.range());
        }
    }
    for caps in NAMED_LITERAL.captures_iter(text) {
        let name = caps
            .name("name")
            .or_else(|| caps.name("qname"))
            .expect("one name alternative always matches");
        if !is_secret_name(name.as_str()) {
            continue;
        }
        if let Some(body) = caps.name("body_dq").or_else(|| caps.name("body_sq")) {
            ranges.push(body.range());
        }
    }
    for caps in LITERAL.captures_iter(text) {
        let Some(body) = caps.get(1).or_else(|| caps.get(2)) else {
            continue;
        };
        if body.len() < 20 {
            continue;
        }
        for token in TOKEN.find_iter(body.as_str()) {
            if is_high_entropy(token.as_str()) {
                let start = body.start() + token.start();
                ranges.push(start..start + token.len());
            }
        }
    }
    ranges.sort_by_key(|r| (r.start, std::cmp::Reverse(r.end)));
    let mut merged: Vec<Range<usize>> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match merged.last_mut() {
            Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
            _ => merged.push(range),
        }
    }
    merged.retain(|r| !r.is_empty());
    merged
}

/// True for names that hold a credential: a credential word anywhere, or `key` after a
/// qualifier (`api_key`, `PRIVATE_KEY`, `secretKey`).
pub fn is_secret_name(name: &str) -> bool {
    let words = agency_core::secrets::split_words(name);
    words.iter().enumerate().any(|(idx, word)| {
        let previous = idx.checked_sub(1).map(|p| words[p].as_str());
        MORE_SECRET_WORDS.contains(&word.as_str())
            || agency_core::secrets::is_secret_word(word, previous)
    })
}

/// Shannon entropy of the characters of `s`, in bits per character.
pub fn shannon_entropy(s: &str) -> f64 {
    let mut counts = [0u32; 256];
    for b in s.bytes() {
        counts[usize::from(b)] += 1;
    }
    let len = s.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / len;
            -p * p.log2()
        })
        .sum()
}

/// Whether a base64/hex-like run reads as a random key rather than a word, an identifier or a
/// constant: hex runs need letters and digits and 3 bits per character; other runs need
/// digits or symbols mixed into both cases, and an entropy near the most their length allows
/// (`log2(len) - 0.7`, at most 4.5 bits).
pub fn is_high_entropy(token: &str) -> bool {
    if token.len() < 20 {
        return false;
    }
    let bytes = token.as_bytes();
    let has_digit = bytes.iter().any(u8::is_ascii_digit);
    let has_lower = bytes.iter().any(u8::is_ascii_lowercase);
    let has_upper = bytes.iter().any(u8::is_ascii_uppercase);
    let entropy = shannon_entropy(token);
    if bytes.iter().all(u8::is_ascii_hexdigit) {
        return has_digit && (has_lower || has_upper) && entropy >= 3.0;
    }
    let classes = [
        has_lower,
        has_upper,
        has_digit,
        bytes.iter().any(|b| matches!(b, b'+' | b'/' | b'=')),
    ];
    let threshold = ((token.len() as f64).log2() - 0.7).min(4.5);
    classes.iter().filter(|c| **c).count() >= 3 && entropy >= threshold
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Redacts `text` and checks that exactly `secrets` disappeared, and that restoring
    /// gives the original back.
    fn check(text: &str, secrets: &[&str]) {
        let mut redactor = Redactor::new();
        let redacted = redactor.redact(text);
        for secret in secrets {
            assert!(
                !redacted.contains(secret),
                "{secret:?} survived in {redacted:?}"
            );
        }
        assert_eq!(redactor.len(), secrets.len(), "{redacted:?}");
        assert_eq!(redactor.restore(&redacted).unwrap(), text);
    }

    #[test]
    fn known_formats() {
        check("key = 'AKIAZ7Q3JX4PLM2W8RTV'", &["AKIAZ7Q3JX4PLM2W8RTV"]);
        check(
            "GH = ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A",
            &["ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A"],
        );
        check(
            "x = 'github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuv'",
            &["github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuv"],
        );
        check(
            "slack(xoxb-1234567890-abcdefghij)",
            &["xoxb-1234567890-abcdefghij"],
        );
        check(
            "client = OpenAI(sk-proj-abcdefghijklmnopqrstuvwx)",
            &["sk-proj-abcdefghijklmnopqrstuvwx"],
        );
        check(
            "h = {'Authorization': 'Bearer abcdefghijklmnop1234'}",
            &["abcdefghijklmnop1234"],
        );
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        check(&format!("t = {jwt}\n"), &[jwt]);
        check(
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----\n",
            &["MIIEowIBAAKCAQEA"],
        );
    }

    #[test]
    fn url_password_only() {
        let text = "DB = 'postgres://app:s3cr3tpw@db.internal:5432/app'";
        let mut redactor = Redactor::new();
        let redacted = redactor.redact(text);
        assert_eq!(
            redacted,
            "DB = 'postgres://app:__AGENCY_SECRET_1__@db.internal:5432/app'"
        );
    }

    #[test]
    fn values_of_secret_names_whatever_they_look_like() {
        check("password = \"hunter2\"\n", &["hunter2"]);
        check("db_passwd='pw'\n", &["pw"]);
        check("connect(api_key=\"abc\", host=\"h\")", &["abc"]);
        check("{\"client_secret\": \"s1\", \"name\": \"n\"}", &["s1"]);
        check("    self.accessKey = 'k9'\n", &["k9"]);
        check(
            "SECRET_KEY: str = 'django-insecure-x'\n",
            &["django-insecure-x"],
        );
        check("AUTH_TOKEN = r'tok'\n", &["tok"]);
        // Comparisons, other names and empty values are left alone.
        check("if password == 'x': pass\n", &[]);
        check("username = 'admin'\nkeyboard = 'qwerty'\n", &[]);
        check("password = ''\n", &[]);
    }

    #[test]
    fn high_entropy_literals_only() {
        let key = "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZg==";
        check(&format!("x = call('{key}')\n"), &[key]);
        check(
            "h = 'a94a8fe5ccb19ba61c4c0873d391e987982fbbd3'\n",
            &["a94a8fe5ccb19ba61c4c0873d391e987982fbbd3"],
        );
        // Identifiers, prose and constants are not keys.
        check("very_long_function_name_for_tests(x)\n", &[]);
        check("msg = 'this_is_a_perfectly_normal_message_key'\n", &[]);
        check("C = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ'\n", &[]);
        check("p = 'django/contrib/admin/templates'\n", &[]);
    }

    #[test]
    fn same_secret_same_placeholder_across_texts() {
        let mut redactor = Redactor::new();
        let a = redactor.redact("password = 'pw-1'\ntoken = 'tk-2'\n");
        let b = redactor.redact("use('AKIAZ7Q3JX4PLM2W8RTV')\npassword = 'pw-1'\n");
        assert_eq!(
            a,
            "password = '__AGENCY_SECRET_1__'\ntoken = '__AGENCY_SECRET_2__'\n"
        );
        assert_eq!(
            b,
            "use('__AGENCY_SECRET_3__')\npassword = '__AGENCY_SECRET_1__'\n"
        );
        assert_eq!(
            redactor.restore("x = '__AGENCY_SECRET_3__'").unwrap(),
            "x = 'AKIAZ7Q3JX4PLM2W8RTV'"
        );
        assert_eq!(
            redactor.restore("__AGENCY_SECRET_4__"),
            Err(Rejection::UnknownPlaceholder {
                placeholder: "__AGENCY_SECRET_4__".into()
            })
        );
        assert!(redactor.restore("__AGENCY_SECRET_0__").is_err());
    }

    #[test]
    fn text_that_looks_like_a_placeholder_survives_the_round_trip() {
        let text = "msg = '__AGENCY_SECRET_1__'\npassword = 'pw-9'\n";
        let mut redactor = Redactor::new();
        let redacted = redactor.redact(text);
        assert_eq!(
            redacted,
            "msg = '__AGENCY_SECRET_1__'\npassword = '__AGENCY_SECRET_2__'\n"
        );
        assert_eq!(
            redactor
                .restore("password = '__AGENCY_SECRET_2__'")
                .unwrap(),
            "password = 'pw-9'"
        );
        assert_eq!(redactor.restore(&redacted).unwrap(), text);
    }

    proptest::proptest! {
        /// Whatever the text, restoring its redaction gives it back, and no planted secret
        /// survives redaction.
        #[test]
        fn redaction_round_trips(parts in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::strategy::Just("password = 'hunter2-x'\n".to_string()),
                proptest::strategy::Just("k = \"AKIAZ7Q3JX4PLM2W8RTV\"".to_string()),
                proptest::strategy::Just("__AGENCY_SECRET_1__".to_string()),
                proptest::strategy::Just("__AGENCY_SECRET_".to_string()),
                proptest::strategy::Just("'".to_string()),
                "[ -~\n]{0,24}",
                "[A-Za-z0-9+/]{20,40}",
            ],
            0..12,
        )) {
            let text: String = parts.concat();
            let mut redactor = Redactor::new();
            let redacted = redactor.redact(&text);
            proptest::prop_assert_eq!(redactor.restore(&redacted).unwrap(), text.clone());
            proptest::prop_assert!(!redacted.contains("AKIAZ7Q3JX4PLM2W8RTV"));
        }
    }

    #[test]
    fn secret_names() {
        for name in [
            "password",
            "DB_PASSWORD",
            "apiKey",
            "private_key",
            "client_secret",
            "authToken",
            "password2",
        ] {
            assert!(is_secret_name(name), "{name}");
        }
        for name in [
            "username",
            "keyboard",
            "monkey",
            "key",
            "primary_key",
            "passage",
        ] {
            assert!(!is_secret_name(name), "{name}");
        }
    }
}
