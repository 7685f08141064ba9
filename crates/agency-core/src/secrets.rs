//! Names that hold a credential: the words shared by the hardcoded-secret rule (AGY203, which
//! adds its own exceptions for precision) and the redaction before anything is sent to a model
//! (which adds a few words for recall).

/// Words that make a name a credential, alone or as the last of two (`api_key`).
pub const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "credential",
    "credentials",
    "authorization",
    "privatekey",
    "secretkey",
    "accesskey",
    "authtoken",
];

/// Words before `key` that make it a credential: `api_key`, `private_key`, `access_key`.
pub const KEY_QUALIFIERS: &[&str] = &[
    "api",
    "private",
    "access",
    "auth",
    "encryption",
    "signing",
    "master",
    "app",
    "client",
    "license",
    "secret",
];

/// Whether `word` (with the word before it, if any) names a credential by the shared lists:
/// a secret word, or `key` after a qualifier.
pub fn is_secret_word(word: &str, previous: Option<&str>) -> bool {
    SECRET_WORDS.contains(&word)
        || (word == "key" && previous.is_some_and(|p| KEY_QUALIFIERS.contains(&p)))
}

/// Lowercase words of an identifier or key: split at non-alphanumerics (`_`, `-`, `.`,
/// spaces) and camelCase boundaries, trailing digits dropped (`password2`).
pub fn split_words(name: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut prev_lower = false;
    for c in name.chars() {
        if !c.is_ascii_alphanumeric() {
            prev_lower = false;
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            continue;
        }
        if c.is_ascii_uppercase() && prev_lower && !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
        prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        current.push(c.to_ascii_lowercase());
    }
    if !current.is_empty() {
        words.push(current);
    }
    for word in &mut words {
        let trimmed = word.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        if trimmed > 0 {
            word.truncate(trimmed);
        }
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_at_separators_and_camel_case() {
        assert_eq!(split_words("DB_PASSWORD2"), ["db", "password"]);
        assert_eq!(split_words("secretKey"), ["secret", "key"]);
        assert_eq!(split_words("x-api.key"), ["x", "api", "key"]);
    }

    #[test]
    fn key_needs_a_qualifier() {
        assert!(is_secret_word("key", Some("api")));
        assert!(!is_secret_word("key", Some("sort")));
        assert!(!is_secret_word("key", None));
        assert!(is_secret_word("token", None));
    }
}
