//! The repository configuration as written by users: `agency.toml`, or `[tool.agency]` in
//! `pyproject.toml` (the first found wins). These are `Options` in ruff's sense: every field is
//! optional and unknown keys are errors, so a typo is reported instead of silently ignored. The
//! CLI reads the file, merges flags and resolves the result into complete settings.

use serde::Deserialize;

use crate::contract::Priority;

/// Where a configuration was read from, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    /// `agency.toml`: the whole file is the configuration.
    AgencyToml,
    /// `pyproject.toml`: the configuration is the `[tool.agency]` table, if any.
    Pyproject,
}

impl ConfigSource {
    /// The file names, in lookup order.
    pub const ORDER: [ConfigSource; 2] = [ConfigSource::AgencyToml, ConfigSource::Pyproject];

    /// The file name at the repository root.
    pub fn file_name(self) -> &'static str {
        match self {
            ConfigSource::AgencyToml => "agency.toml",
            ConfigSource::Pyproject => "pyproject.toml",
        }
    }
}

/// A configuration file that could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {file}: {message}; fix the file or remove the offending key")]
pub struct ConfigError {
    pub file: &'static str,
    pub message: String,
}

/// Every option a repository may set.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Options {
    pub verify: Option<VerifyOptions>,
    pub patterns: Option<PatternsOptions>,
    pub scan: Option<ScanOptions>,
    pub heal: Option<HealOptions>,
    /// `[llm]`: the generated-fix tier, checked by `agency_llm::LlmConfig::from_table`.
    pub llm: Option<toml::Table>,
}

/// `[heal]`: how a heal run works.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealOptions {
    /// Verify the fixes that pass their cheap checks with one test run, bisecting when it
    /// fails (default true); `false` runs the tests once per fix.
    pub batch: Option<bool>,
    /// How many fixes are made and checked at once (default 5).
    pub max_concurrent: Option<usize>,
}

/// `[verify]`: how a heal is proven.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyOptions {
    /// Shell-free command line run in the isolated copy (split on whitespace, quotes honoured).
    pub command: Option<String>,
    pub timeout_s: Option<u64>,
}

/// `[patterns]`: where the pattern store lives.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternsOptions {
    /// A running `agency serve`, e.g. `http://127.0.0.1:8080`; absent means in-process.
    pub url: Option<String>,
    /// The name of the environment variable that holds the service's bearer token.
    pub token_env: Option<String>,
    /// Fail instead of falling back to the in-process store when the service is unreachable.
    pub require_service: Option<bool>,
}

/// `[scan]`: what the scanner looks at and reports. Keys are snake_case like every other
/// section (`fail_on`); the kebab-case spelling `fail-on` is accepted too.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanOptions {
    /// Glob patterns (relative to the repository root) of files never scanned.
    pub exclude: Option<Vec<String>>,
    /// Rule codes or code prefixes to report (default: all).
    pub select: Option<Vec<String>>,
    /// Rule codes or code prefixes never reported.
    pub ignore: Option<Vec<String>>,
    /// The lowest priority that makes the exit code 1 (default P1).
    #[serde(alias = "fail-on")]
    pub fail_on: Option<Priority>,
    /// A baseline file (relative to the root) whose findings are not reported.
    pub baseline: Option<String>,
    /// Explicit paths of the external tools; default: the repository's venv, then `agency setup`.
    pub tools: Option<ToolPaths>,
}

/// `[scan.tools]`: explicit executables.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolPaths {
    pub ruff: Option<String>,
    pub mypy: Option<String>,
    pub bandit: Option<String>,
}

/// Parses a configuration file's text. For `pyproject.toml` the options are the
/// `[tool.agency]` table; a pyproject without it yields `Ok(None)` (the lookup goes on as if the
/// file did not exist, as ruff does).
pub fn parse(source: ConfigSource, text: &str) -> Result<Option<Options>, ConfigError> {
    let err = |e: toml::de::Error| ConfigError {
        file: source.file_name(),
        message: e.to_string().trim().replace('\n', " "),
    };
    match source {
        ConfigSource::AgencyToml => toml::from_str::<Options>(text).map(Some).map_err(err),
        ConfigSource::Pyproject => {
            #[derive(Deserialize)]
            struct Pyproject {
                tool: Option<Tool>,
            }
            #[derive(Deserialize)]
            struct Tool {
                agency: Option<Options>,
            }
            let doc: Pyproject = toml::from_str(text).map_err(err)?;
            Ok(doc.tool.and_then(|t| t.agency))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agency_toml_full() {
        let text = r#"
[verify]
command = "python -m pytest -q -x"
timeout_s = 120

[patterns]
url = "http://127.0.0.1:8080"
token_env = "MY_TOKEN"
require_service = true

[scan]
exclude = ["migrations/**"]
select = ["AGY2", "F"]
ignore = ["E501"]
fail_on = "P0"
baseline = ".agency/baseline.json"

[scan.tools]
ruff = "/opt/ruff"
"#;
        let opts = parse(ConfigSource::AgencyToml, text).unwrap().unwrap();
        assert_eq!(opts.verify.unwrap().timeout_s, Some(120));
        let patterns = opts.patterns.unwrap();
        assert_eq!(patterns.url.as_deref(), Some("http://127.0.0.1:8080"));
        assert_eq!(patterns.require_service, Some(true));
        let scan = opts.scan.unwrap();
        assert_eq!(scan.fail_on, Some(Priority::P0));
        assert_eq!(scan.tools.unwrap().ruff.as_deref(), Some("/opt/ruff"));
    }

    #[test]
    fn empty_agency_toml_is_all_defaults() {
        assert_eq!(
            parse(ConfigSource::AgencyToml, "").unwrap(),
            Some(Options::default())
        );
    }

    #[test]
    fn pyproject_without_tool_agency_is_none() {
        let text = "[project]\nname = \"x\"\n[tool.ruff]\nline-length = 100\n";
        assert_eq!(parse(ConfigSource::Pyproject, text).unwrap(), None);
        let text = "[tool.agency.verify]\ncommand = \"pytest\"\n";
        let opts = parse(ConfigSource::Pyproject, text).unwrap().unwrap();
        assert_eq!(opts.verify.unwrap().command.as_deref(), Some("pytest"));
    }

    #[test]
    fn typos_and_bad_values_name_the_file() {
        let e = parse(ConfigSource::AgencyToml, "[verify]\ncommnd = \"x\"\n").unwrap_err();
        assert_eq!(e.file, "agency.toml");
        assert!(e.message.contains("commnd"), "{e}");
        let e = parse(
            ConfigSource::Pyproject,
            "[tool.agency.scan]\nfail-on = \"P9\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("invalid pyproject.toml:"), "{e}");
        assert!(parse(ConfigSource::AgencyToml, "not toml [").is_err());
    }
}
