//! The files an incremental scan looks at, from git: `--changed` (working tree and untracked
//! files against HEAD), `--staged` (the index, what a pre-commit hook sees) and `--since REV`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::{Error, Result};

/// Which changes an incremental scan covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changes {
    /// Modified, added and untracked files against HEAD.
    Changed,
    /// Files staged in the index.
    Staged,
    /// Files changed since a revision (committed or not), plus untracked ones.
    Since(String),
}

fn git(root: &Path, args: &[&str]) -> Result<String> {
    let mut cmd = Command::new("git");
    cmd.arg("-C").arg(root).args(args);
    let output =
        agency_setup::process::run(&mut cmd, Duration::from_mins(1)).map_err(|e| Error::Git {
            message: format!(
                "cannot run git in {}: {e}; install git or scan without --changed/--staged/--since",
                root.display()
            ),
        })?;
    if !output.status.success() {
        return Err(Error::Git {
            message: format!(
                "`git {}` failed in {}: {}",
                args.join(" "),
                root.display(),
                output.stderr.trim()
            ),
        });
    }
    Ok(output.stdout)
}

/// The changed files, `/`-separated and relative to `root`, sorted; deleted files are left out.
pub fn changed_files(root: &Path, changes: &Changes) -> Result<Vec<String>> {
    let inside = git(root, &["rev-parse", "--is-inside-work-tree"]).map_err(|_| Error::Git {
        message: format!(
            "{} is not a git repository, so there are no changes to scan; run a full scan (without --changed, --staged or --since)",
            root.display()
        ),
    })?;
    if inside.trim() != "true" {
        return Err(Error::Git {
            message: format!("{} is not a git work tree", root.display()),
        });
    }
    let has_head = git(root, &["rev-parse", "--verify", "--quiet", "HEAD"]).is_ok();
    let mut names = Vec::new();
    let mut add = |out: String| {
        names.extend(
            out.split('\0')
                .filter(|s| !s.is_empty())
                .map(ToString::to_string),
        );
    };
    match changes {
        Changes::Staged => {
            add(git(
                root,
                &[
                    "diff",
                    "--cached",
                    "--name-only",
                    "-z",
                    "--diff-filter=ACMR",
                    "--relative",
                ],
            )?);
        }
        Changes::Changed => {
            if has_head {
                add(git(
                    root,
                    &[
                        "diff",
                        "HEAD",
                        "--name-only",
                        "-z",
                        "--diff-filter=ACMR",
                        "--relative",
                    ],
                )?);
            } else {
                add(git(root, &["ls-files", "-z", "--cached"])?);
            }
            add(git(
                root,
                &["ls-files", "-z", "--others", "--exclude-standard"],
            )?);
        }
        Changes::Since(rev) => {
            if rev.starts_with('-') {
                return Err(Error::Git {
                    message: format!("`{rev}` is not a revision"),
                });
            }
            git(
                root,
                &[
                    "rev-parse",
                    "--verify",
                    "--quiet",
                    &format!("{rev}^{{commit}}"),
                ],
            )
            .map_err(|_| Error::Git {
                message: format!(
                    "unknown revision `{rev}` in {}; pass a commit, branch or tag that exists",
                    root.display()
                ),
            })?;
            add(git(
                root,
                &[
                    "diff",
                    rev,
                    "--name-only",
                    "-z",
                    "--diff-filter=ACMR",
                    "--relative",
                    "--",
                ],
            )?);
            add(git(
                root,
                &["ls-files", "-z", "--others", "--exclude-standard"],
            )?);
        }
    }
    names.retain(|n| root.join(n).is_file() && crate::discover::is_python(Path::new(n)));
    names.sort();
    names.dedup();
    Ok(names)
}
