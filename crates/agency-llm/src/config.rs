//! `[llm]` in `agency.toml` (or `[tool.agency.llm]` in `pyproject.toml`): where the model is,
//! what it may cost and what it may see. No `[llm]` table means no generated fixes: every entry
//! point returns `Ok(None)` for it, never an error.
//!
//! ```toml
//! [llm]
//! base_url = "https://api.openai.com/v1"
//! model = "gpt-4o-mini"
//! api_key_env = "OPENAI_API_KEY"      # the NAME of the variable, never the key
//! monthly_budget_usd = 5
//! [llm.prices."my-local-model"]
//! input_per_mtok_usd = 0
//! output_per_mtok_usd = 0
//! ```

use std::collections::BTreeMap;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::Deserialize;

use crate::{Error, Result};

/// The machine-wide ceiling of requests in flight; `max_concurrent` may only lower it.
pub const MAX_CONCURRENT_LIMIT: usize = 5;

/// Default `monthly_budget_usd`.
pub const DEFAULT_MONTHLY_BUDGET_USD: f64 = 10.0;

/// Default `never_send`: environment files, keys and a secrets directory at any depth.
pub const DEFAULT_NEVER_SEND: &[&str] = &[".env*", "*.pem", "*.key", "secrets/"];

/// The price of a model, in US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    pub input_per_mtok_usd: f64,
    pub output_per_mtok_usd: f64,
}

impl ModelPrice {
    /// The cost of a call with these token counts.
    pub fn cost_usd(&self, tokens_in: u64, tokens_out: u64) -> f64 {
        (tokens_in as f64 * self.input_per_mtok_usd + tokens_out as f64 * self.output_per_mtok_usd)
            / 1_000_000.0
    }
}

/// List prices of common models (USD per million tokens, input/output), matched by the longest
/// prefix of the model name so that dated versions (`gpt-4o-mini-2024-07-18`) find theirs.
/// `[llm.prices]` overrides them; a model found nowhere is priced at [`UNKNOWN_MODEL_PRICE`].
pub const DEFAULT_PRICES: &[(&str, f64, f64)] = &[
    ("gpt-4o", 2.50, 10.00),
    ("gpt-4o-mini", 0.15, 0.60),
    ("gpt-4.1", 2.00, 8.00),
    ("gpt-4.1-mini", 0.40, 1.60),
    ("gpt-4.1-nano", 0.10, 0.40),
    ("gpt-5", 1.25, 10.00),
    ("gpt-5-mini", 0.25, 2.00),
    ("gpt-5-nano", 0.05, 0.40),
    ("o3", 2.00, 8.00),
    ("o3-mini", 1.10, 4.40),
    ("o4-mini", 1.10, 4.40),
    ("claude-3-5-haiku", 0.80, 4.00),
    ("claude-haiku-4", 1.00, 5.00),
    ("claude-3-5-sonnet", 3.00, 15.00),
    ("claude-3-7-sonnet", 3.00, 15.00),
    ("claude-sonnet-4", 3.00, 15.00),
    ("claude-opus-4", 15.00, 75.00),
    ("deepseek-chat", 0.27, 1.10),
    ("deepseek-reasoner", 0.55, 2.19),
    ("mistral-small", 0.20, 0.60),
    ("mistral-large", 2.00, 6.00),
    ("gemini-2.5-flash", 0.30, 2.50),
    ("gemini-2.5-pro", 1.25, 10.00),
];

/// The price assumed for a model with no known or configured price: high on purpose, so that
/// the budget errs on the side of spending less. Set `[llm.prices."<model>"]` (0 for a local
/// server) to replace it.
pub const UNKNOWN_MODEL_PRICE: ModelPrice = ModelPrice {
    input_per_mtok_usd: 15.0,
    output_per_mtok_usd: 75.0,
};

/// The resolved `[llm]` table. Only `base_url` and `model` are required; every other key has
/// the default its doc names. Build it with [`LlmConfig::from_table`], which
/// validates it; a value deserialised by hand must go through [`LlmConfig::validate`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    /// The OpenAI-compatible API root, e.g. `https://api.openai.com/v1` or
    /// `http://127.0.0.1:11434/v1`; requests go to `<base_url>/chat/completions`.
    pub base_url: String,
    /// The model name sent with every request.
    pub model: String,
    /// The NAME of the environment variable holding the API key; none: no `Authorization`
    /// header (local servers).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Whole-request timeout of one attempt, in seconds (default 60).
    #[serde(default = "default_timeout_s")]
    pub timeout_s: u64,
    /// Attempts per request, retries of 408, 429, 5xx, timeouts and refused connections
    /// included (default 3).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// The first retry's wait when the server gives no `Retry-After`, doubled per retry
    /// (default 500 ms).
    #[serde(default = "default_retry_backoff_ms")]
    pub retry_backoff_ms: u64,
    /// Requests in flight at once across every agency process on the machine (default and
    /// maximum 5).
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: usize,
    /// How long a request waits for a free slot before giving up (default 300 s).
    #[serde(default = "default_slot_wait_s")]
    pub slot_wait_s: u64,
    /// The most this machine spends per calendar month (UTC), in US dollars (default 10).
    #[serde(default = "default_budget")]
    pub monthly_budget_usd: f64,
    /// The completion limit sent with each request, and the output side of the worst-case
    /// cost estimate (default 2048).
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    /// Per-model price overrides, by model name or name prefix.
    #[serde(default)]
    pub prices: BTreeMap<String, ModelPrice>,
    /// Whether a verified generated fix may be applied without approval (default false).
    #[serde(default)]
    pub auto_apply: bool,
    /// Globs of files never sent to a model (default `.env*`, `*.pem`, `*.key`, `secrets/`).
    /// A glob without `/` matches a file name at any depth; one ending in `/` matches a
    /// directory at any depth; other globs match the path from the repository root.
    #[serde(default = "default_never_send")]
    pub never_send: Vec<String>,
}

fn default_timeout_s() -> u64 {
    60
}
fn default_max_attempts() -> u32 {
    3
}
fn default_retry_backoff_ms() -> u64 {
    500
}
fn default_max_concurrent() -> usize {
    MAX_CONCURRENT_LIMIT
}
fn default_slot_wait_s() -> u64 {
    300
}
fn default_budget() -> f64 {
    DEFAULT_MONTHLY_BUDGET_USD
}
fn default_max_tokens() -> u32 {
    2048
}
fn default_never_send() -> Vec<String> {
    DEFAULT_NEVER_SEND
        .iter()
        .map(|s| (*s).to_string())
        .collect()
}

impl LlmConfig {
    /// A configuration with every default, for `base_url` and `model`.
    pub fn new(base_url: &str, model: &str) -> Self {
        Self {
            base_url: base_url.to_string(),
            model: model.to_string(),
            api_key_env: None,
            timeout_s: default_timeout_s(),
            max_attempts: default_max_attempts(),
            retry_backoff_ms: default_retry_backoff_ms(),
            max_concurrent: default_max_concurrent(),
            slot_wait_s: default_slot_wait_s(),
            monthly_budget_usd: default_budget(),
            max_tokens: default_max_tokens(),
            prices: BTreeMap::new(),
            auto_apply: false,
            never_send: default_never_send(),
        }
    }

    /// The configuration of an `[llm]` table; `Ok(None)` when there is none (the tier is off).
    pub fn from_table(table: Option<&toml::Table>) -> Result<Option<Self>> {
        let Some(table) = table else {
            return Ok(None);
        };
        let config: Self =
            toml::Value::Table(table.clone())
                .try_into()
                .map_err(|e: toml::de::Error| Error::Config {
                    key: "llm",
                    message: e.message().trim().replace('\n', " "),
                })?;
        config.validate()?;
        Ok(Some(config))
    }

    /// Checks every value; the error names the key, the limit and what to write instead.
    pub fn validate(&self) -> Result<()> {
        let bad = |key, message: String| Err(Error::Config { key, message });
        let url = self.base_url.trim();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return bad(
                "base_url",
                format!(
                    "is {:?}, not an http(s) URL; write the API root, e.g. \"https://api.openai.com/v1\"",
                    self.base_url
                ),
            );
        }
        if self.model.trim().is_empty() {
            return bad(
                "model",
                "is empty; name the model, e.g. \"gpt-4o-mini\"".to_string(),
            );
        }
        // A key pasted here must not be echoed by any later message either.
        if let Some(name) = &self.api_key_env
            && (!is_env_var_name(name)
                || !crate::redact::secret_ranges(&format!("k = \"{name}\"")).is_empty()
                    && !crate::redact::is_secret_name(name))
        {
            return bad(
                "api_key_env",
                "is not an environment variable name; it holds the NAME of the variable that holds the key (e.g. \"OPENAI_API_KEY\"), never the key itself: if a key was written here, revoke it".to_string(),
            );
        }
        if !(1..=3600).contains(&self.timeout_s) {
            return bad(
                "timeout_s",
                format!("is {}; set it between 1 and 3600", self.timeout_s),
            );
        }
        if !(1..=10).contains(&self.max_attempts) {
            return bad(
                "max_attempts",
                format!("is {}; set it between 1 and 10", self.max_attempts),
            );
        }
        if self.retry_backoff_ms > 60_000 {
            return bad(
                "retry_backoff_ms",
                format!("is {}; set it at most 60000", self.retry_backoff_ms),
            );
        }
        if self.max_concurrent == 0 || self.max_concurrent > MAX_CONCURRENT_LIMIT {
            return bad(
                "max_concurrent",
                format!(
                    "is {}, but at most {MAX_CONCURRENT_LIMIT} requests may be in flight on a machine; set it between 1 and {MAX_CONCURRENT_LIMIT}",
                    self.max_concurrent
                ),
            );
        }
        if self.slot_wait_s > 86_400 {
            return bad(
                "slot_wait_s",
                format!("is {}; set it at most 86400", self.slot_wait_s),
            );
        }
        if !self.monthly_budget_usd.is_finite() || self.monthly_budget_usd < 0.0 {
            return bad(
                "monthly_budget_usd",
                format!(
                    "is {}; set a number of US dollars, 0 or more",
                    self.monthly_budget_usd
                ),
            );
        }
        if !(1..=1_000_000).contains(&self.max_tokens) {
            return bad(
                "max_tokens",
                format!("is {}; set it between 1 and 1000000", self.max_tokens),
            );
        }
        for (model, price) in &self.prices {
            for value in [price.input_per_mtok_usd, price.output_per_mtok_usd] {
                if !value.is_finite() || value < 0.0 {
                    return bad(
                        "prices",
                        format!(
                            "has {value} for {model:?}; prices are US dollars per million tokens, 0 or more"
                        ),
                    );
                }
            }
        }
        never_send_set(&self.never_send)?;
        Ok(())
    }

    /// The price of the configured model: `[llm.prices]` first, then [`DEFAULT_PRICES`], each by
    /// exact name then longest prefix, else [`UNKNOWN_MODEL_PRICE`].
    pub fn price(&self) -> ModelPrice {
        price_of(&self.model, &self.prices)
    }

    /// The API key, looked up through `lookup` (the caller's access to the environment: only
    /// the CLI reads it). `Ok(None)` when no `api_key_env` is configured.
    pub fn api_key(&self, lookup: impl Fn(&str) -> Option<String>) -> Result<Option<String>> {
        let Some(name) = &self.api_key_env else {
            return Ok(None);
        };
        match lookup(name).filter(|v| !v.trim().is_empty()) {
            Some(key) => Ok(Some(key)),
            None => Err(Error::Config {
                key: "api_key_env",
                message: format!(
                    "names {name}, but that environment variable is not set or empty; export it, or remove api_key_env for a server that needs no key"
                ),
            }),
        }
    }
}

/// The price of `model`: overrides, then defaults, each by exact name then longest prefix.
pub fn price_of(model: &str, overrides: &BTreeMap<String, ModelPrice>) -> ModelPrice {
    if let Some(price) = overrides.get(model) {
        return *price;
    }
    let longest_override = overrides
        .iter()
        .filter(|(name, _)| model.starts_with(name.as_str()))
        .max_by_key(|(name, _)| name.len());
    if let Some((_, price)) = longest_override {
        return *price;
    }
    DEFAULT_PRICES
        .iter()
        .filter(|(name, _, _)| model.starts_with(name))
        .max_by_key(|(name, _, _)| name.len())
        .map_or(UNKNOWN_MODEL_PRICE, |(_, input, output)| ModelPrice {
            input_per_mtok_usd: *input,
            output_per_mtok_usd: *output,
        })
}

fn is_env_var_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && name.len() <= 128
}

/// Compiles `never_send` globs into the set matched against repository-relative paths.
pub(crate) fn never_send_set(globs: &[String]) -> Result<GlobSet> {
    let mut builder = GlobSetBuilder::new();
    for glob in globs {
        for pattern in expand_never_send(glob) {
            let compiled = GlobBuilder::new(&pattern)
                .literal_separator(true)
                .build()
                .map_err(|e| Error::Config {
                    key: "never_send",
                    message: format!("has the invalid glob {glob:?}: {e}"),
                })?;
            builder.add(compiled);
        }
    }
    builder.build().map_err(|e| Error::Config {
        key: "never_send",
        message: format!("cannot be compiled: {e}"),
    })
}

/// The globs one `never_send` entry stands for (see [`LlmConfig::never_send`]).
fn expand_never_send(glob: &str) -> Vec<String> {
    let glob = glob.trim_start_matches("./");
    if let Some(dir) = glob.strip_suffix('/') {
        let dir = dir.trim_start_matches('/');
        if dir.contains('/') {
            vec![format!("{dir}/**")]
        } else {
            vec![format!("{dir}/**"), format!("**/{dir}/**")]
        }
    } else if glob.contains('/') {
        vec![glob.trim_start_matches('/').to_string()]
    } else {
        vec![glob.to_string(), format!("**/{glob}")]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<LlmConfig>> {
        let table: toml::Table = toml::from_str(text).expect("test TOML is valid");
        LlmConfig::from_table(table.get("llm").and_then(toml::Value::as_table))
    }

    #[test]
    fn minimal_table_gets_every_default() {
        let config = parse("[llm]\nbase_url = \"http://127.0.0.1:1/v1\"\nmodel = \"m\"\n")
            .unwrap()
            .unwrap();
        assert_eq!(config, LlmConfig::new("http://127.0.0.1:1/v1", "m"));
        assert_eq!(config.max_concurrent, 5);
        assert!((config.monthly_budget_usd - 10.0).abs() < f64::EPSILON);
        assert!(!config.auto_apply);
        assert_eq!(config.never_send, [".env*", "*.pem", "*.key", "secrets/"]);
    }

    #[test]
    fn no_table_is_off_not_an_error() {
        assert_eq!(parse("[verify]\ncommand = \"pytest\"\n").unwrap(), None);
    }

    #[test]
    fn errors_name_the_key_and_the_limit() {
        let check = |text: &str, needles: &[&str]| {
            let err = parse(text).unwrap_err().to_string();
            for needle in needles {
                assert!(err.contains(needle), "{needle:?} not in {err}");
            }
        };
        let base = "[llm]\nbase_url = \"https://x/v1\"\nmodel = \"m\"\n";
        check(
            &format!("{base}max_concurrent = 8\n"),
            &["max_concurrent", "8", "at most 5"],
        );
        check(&format!("{base}max_concurrent = 0\n"), &["max_concurrent"]);
        check(&format!("{base}modle = \"x\"\n"), &["modle"]);
        check("[llm]\nmodel = \"m\"\n", &["base_url"]);
        check(
            "[llm]\nbase_url = \"api.openai.com\"\nmodel = \"m\"\n",
            &["base_url", "http(s)"],
        );
        check(
            &format!("{base}api_key_env = \"sk-abc123def456ghi789jkl\"\n"),
            &["api_key_env", "NAME", "revoke"],
        );
        check(
            &format!("{base}api_key_env = \"ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A\"\n"),
            &["api_key_env", "NAME", "revoke"],
        );
        check(
            &format!("{base}api_key_env = \"AKIAZ7Q3JX4PLM2W8RTV\"\n"),
            &["api_key_env", "NAME"],
        );
        let ok = format!("{base}api_key_env = \"OPENAI_API_KEY\"\n");
        assert!(parse(&ok).unwrap().is_some());
        let ok = format!("{base}api_key_env = \"MY_LLM_TOKEN_2\"\n");
        assert!(parse(&ok).unwrap().is_some());
        check(
            &format!("{base}monthly_budget_usd = -1\n"),
            &["monthly_budget_usd"],
        );
        check(
            &format!("{base}never_send = [\"a[\"]\n"),
            &["never_send", "a["],
        );
        check(
            &format!("{base}[llm.prices.m]\ninput_per_mtok_usd = 1\n"),
            &["output_per_mtok_usd"],
        );
    }

    #[test]
    fn prices_override_then_default_then_unknown() {
        let mut config = LlmConfig::new("http://x/v1", "gpt-4o-mini-2024-07-18");
        assert!((config.price().input_per_mtok_usd - 0.15).abs() < 1e-12);
        config.model = "gpt-4o-2024-08-06".into();
        assert!((config.price().input_per_mtok_usd - 2.5).abs() < 1e-12);
        config.model = "llama3".into();
        assert_eq!(config.price(), UNKNOWN_MODEL_PRICE);
        config.prices.insert(
            "llama".into(),
            ModelPrice {
                input_per_mtok_usd: 0.0,
                output_per_mtok_usd: 0.0,
            },
        );
        assert!(config.price().cost_usd(1000, 1000).abs() < 1e-12);
        let price = ModelPrice {
            input_per_mtok_usd: 1.0,
            output_per_mtok_usd: 2.0,
        };
        assert!((price.cost_usd(1_000_000, 500_000) - 2.0).abs() < 1e-9);
    }

    #[test]
    fn api_key_comes_from_the_named_variable() {
        let mut config = LlmConfig::new("http://x/v1", "m");
        assert_eq!(config.api_key(|_| None).unwrap(), None);
        config.api_key_env = Some("MY_KEY".into());
        let key = config
            .api_key(|name| (name == "MY_KEY").then(|| "k-1".to_string()))
            .unwrap();
        assert_eq!(key.as_deref(), Some("k-1"));
        let err = config.api_key(|_| None).unwrap_err().to_string();
        assert!(err.contains("MY_KEY") && err.contains("not set"), "{err}");
    }

    #[test]
    fn never_send_globs_match_at_any_depth() {
        let set = never_send_set(&default_never_send()).unwrap();
        for path in [
            ".env",
            ".env.local",
            "app/.env.prod",
            "certs/server.pem",
            "a/b/id.key",
        ] {
            assert!(set.is_match(path), "{path}");
        }
        for path in ["secrets/db.py", "pkg/secrets/x.py"] {
            assert!(set.is_match(path), "{path}");
        }
        for path in ["app/main.py", "env.py", "secrets.py", "keys/readme.md"] {
            assert!(!set.is_match(path), "{path}");
        }
        let set = never_send_set(&["config/prod/*.py".to_string()]).unwrap();
        assert!(set.is_match("config/prod/db.py"));
        assert!(!set.is_match("other/config/prod/db.py"));
    }
}
