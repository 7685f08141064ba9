//! Finds the target repository's root and reads its configuration (`agency.toml`, else
//! `[tool.agency]` in `pyproject.toml`). Parsing lives in `agency_core::config`; this module
//! only does the file IO and names the file in its errors.

use std::path::{Path, PathBuf};

use agency_core::config::{self, ConfigSource, Options};
use anyhow::{Context, Result};

/// A repository's configuration and where it came from.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub options: Options,
    /// The file the options came from; `None` when the repository has no configuration.
    pub file: Option<PathBuf>,
}

impl Loaded {
    /// Where the options came from, for messages: the file, else the repository `root`.
    pub fn source(&self, root: &Path) -> String {
        self.file
            .as_ref()
            .map_or_else(|| root.display().to_string(), |f| f.display().to_string())
    }
}

/// The repository root for `start` (a file or directory): the nearest ancestor holding `.git`,
/// else the nearest holding `agency.toml` or `pyproject.toml`, else `start` itself (or its
/// parent for a file).
pub fn find_root(start: &Path) -> PathBuf {
    let start = std::fs::canonicalize(start).unwrap_or_else(|_| start.to_path_buf());
    let dir = if start.is_file() {
        start
            .parent()
            .map_or_else(|| start.clone(), Path::to_path_buf)
    } else {
        start.clone()
    };
    if let Some(git) = dir.ancestors().find(|d| d.join(".git").exists()) {
        return git.to_path_buf();
    }
    if let Some(cfg) = dir.ancestors().find(|d| {
        ConfigSource::ORDER
            .iter()
            .any(|s| d.join(s.file_name()).is_file())
    }) {
        return cfg.to_path_buf();
    }
    dir
}

/// Reads the configuration at `root`: the first of `agency.toml` and a `pyproject.toml` with a
/// `[tool.agency]` table wins; neither is required.
pub fn load(root: &Path) -> Result<Loaded> {
    for source in ConfigSource::ORDER {
        let path = root.join(source.file_name());
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", path.display()));
            }
        };
        let parsed = config::parse(source, &text)
            .with_context(|| format!("cannot use the configuration in {}", path.display()))?;
        if let Some(options) = parsed {
            return Ok(Loaded {
                options,
                file: Some(path),
            });
        }
    }
    Ok(Loaded::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agency_toml_wins_over_pyproject() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("pyproject.toml"),
            "[tool.agency.verify]\ncommand = \"a\"\n",
        )
        .unwrap();
        let loaded = load(dir.path()).unwrap();
        assert_eq!(loaded.options.verify.unwrap().command.as_deref(), Some("a"));
        std::fs::write(
            dir.path().join("agency.toml"),
            "[verify]\ncommand = \"b\"\n",
        )
        .unwrap();
        let loaded = load(dir.path()).unwrap();
        assert_eq!(loaded.options.verify.unwrap().command.as_deref(), Some("b"));
        assert!(loaded.file.unwrap().ends_with("agency.toml"));
    }

    #[test]
    fn no_configuration_is_defaults_and_a_bad_one_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().file.is_none());
        std::fs::write(dir.path().join("agency.toml"), "[scan]\nselec = []\n").unwrap();
        let err = format!("{:#}", load(dir.path()).unwrap_err());
        assert!(err.contains("agency.toml"), "{err}");
        assert!(err.contains("selec"), "{err}");
    }

    #[test]
    fn root_is_the_git_toplevel() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".git")).unwrap();
        std::fs::create_dir_all(dir.path().join("pkg/sub")).unwrap();
        let root = find_root(&dir.path().join("pkg/sub"));
        assert_eq!(root, std::fs::canonicalize(dir.path()).unwrap());
    }
}
