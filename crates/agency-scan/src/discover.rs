//! Which files a scan looks at: the Python files under the requested paths, minus what git
//! ignores, virtual environments, caches and the configured `exclude` globs. Symbolic links are
//! not followed (no loops, nothing outside the repository), and a requested path outside the
//! repository is an error.

use std::path::{Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::{Error, Result};

/// Directories never descended into, whatever `.gitignore` says.
const SKIP_DIRS: &[&str] = &[
    ".git",
    ".hg",
    ".svn",
    ".agency",
    ".venv",
    "venv",
    ".tox",
    ".nox",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    "node_modules",
    "site-packages",
    ".eggs",
];

/// Compiled `exclude` globs, matched against `/`-separated paths relative to the root. A glob
/// without a `/` matches a file or directory name at any depth, as in ruff.
#[derive(Debug, Clone)]
pub struct Excludes {
    set: GlobSet,
}

impl Excludes {
    pub fn new(globs: &[String]) -> Result<Self> {
        let mut builder = GlobSetBuilder::new();
        for glob in globs {
            let pattern = if glob.contains('/') {
                glob.trim_start_matches("./").to_string()
            } else {
                format!("**/{glob}")
            };
            for p in [
                pattern.clone(),
                format!("{}/**", pattern.trim_end_matches('/')),
            ] {
                builder.add(Glob::new(&p).map_err(|e| Error::Config {
                    message: format!("invalid exclude glob `{glob}`: {e}"),
                })?);
            }
        }
        let set = builder.build().map_err(|e| Error::Config {
            message: format!("invalid exclude globs: {e}"),
        })?;
        Ok(Excludes { set })
    }

    pub fn is_excluded(&self, rel: &str) -> bool {
        self.set.is_match(rel)
    }
}

/// The `/`-separated path of `path` relative to `root`, or `None` when it is outside.
pub fn relative(root: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    Some(parts.join("/"))
}

/// True for files the scan analyses.
pub fn is_python(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("py") || e.eq_ignore_ascii_case("pyi"))
}

/// The Python files under `paths` (all of `root` when empty), sorted, relative to `root`.
/// `root` must be canonical.
pub fn discover(root: &Path, paths: &[PathBuf], excludes: &Excludes) -> Result<Vec<String>> {
    let mut starts = Vec::new();
    for path in paths {
        let absolute = if path.is_absolute() {
            path.clone()
        } else {
            std::env::current_dir()
                .map_err(|e| Error::Io {
                    path: path.clone(),
                    source: e,
                })?
                .join(path)
        };
        let canonical = std::fs::canonicalize(&absolute).map_err(|e| Error::Io {
            path: path.clone(),
            source: e,
        })?;
        if relative(root, &canonical).is_none() {
            return Err(Error::OutsideRoot {
                path: path.clone(),
                root: root.to_path_buf(),
            });
        }
        starts.push(canonical);
    }
    if starts.is_empty() {
        starts.push(root.to_path_buf());
    }
    let mut files = Vec::new();
    for start in &starts {
        if start.is_file() {
            // An explicitly named file is scanned even if it is not `.py` or is ignored, as
            // ruff does; only a non-Python file is refused.
            if let Some(rel) = relative(root, start)
                && is_python(start)
            {
                files.push(rel);
            }
            continue;
        }
        let walker = ignore::WalkBuilder::new(start)
            .follow_links(false)
            .require_git(false)
            .hidden(false)
            .filter_entry(|entry| {
                let name = entry.file_name().to_string_lossy();
                if entry.file_type().is_some_and(|t| t.is_dir()) {
                    if SKIP_DIRS.contains(&name.as_ref()) {
                        return false;
                    }
                    // Any other virtual environment, whatever its name.
                    if entry.path().join("pyvenv.cfg").is_file() {
                        return false;
                    }
                }
                true
            })
            .build();
        for entry in walker {
            let Ok(entry) = entry else {
                // Unreadable directories are skipped; the walk goes on.
                continue;
            };
            if !entry.file_type().is_some_and(|t| t.is_file()) || !is_python(entry.path()) {
                continue;
            }
            if let Some(rel) = relative(root, entry.path())
                && !excludes.is_excluded(&rel)
            {
                files.push(rel);
            }
        }
    }
    files.sort();
    files.dedup();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_python_files_and_skips_environments_and_excludes() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        for f in [
            "a.py",
            "pkg/__init__.py",
            "pkg/mod.py",
            "pkg/notes.txt",
            ".venv/lib/x.py",
            "myenv/lib/y.py",
            "migrations/0001.py",
            "ignored/z.py",
            "stubs/t.pyi",
        ] {
            let p = root.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, "x = 1\n").unwrap();
        }
        std::fs::write(root.join("myenv/pyvenv.cfg"), "home = /usr\n").unwrap();
        std::fs::write(root.join(".gitignore"), "ignored/\n").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(&root, root.join("pkg/loop")).unwrap();
        let excludes = Excludes::new(&["migrations".to_string()]).unwrap();
        let files = discover(&root, &[], &excludes).unwrap();
        assert_eq!(
            files,
            ["a.py", "pkg/__init__.py", "pkg/mod.py", "stubs/t.pyi"]
        );
        let only = discover(&root, &[root.join("pkg")], &excludes).unwrap();
        assert_eq!(only, ["pkg/__init__.py", "pkg/mod.py"]);
    }

    #[test]
    fn a_path_outside_the_root_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let inner = root.join("repo");
        std::fs::create_dir_all(&inner).unwrap();
        let err = discover(
            &inner,
            std::slice::from_ref(&root),
            &Excludes::new(&[]).unwrap(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("outside the repository"), "{err}");
    }
}
