//! The managed virtual environment: created with the user's interpreter, filled with the pinned
//! tools by its own pip, and checked by asking each tool for its version.
//!
//! A marker file written after `python -m venv` succeeds tells a complete environment from one an
//! interrupted run left half made, which is then recreated with `--clear`.

use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::Duration;

use crate::process::{self, TAIL_LINES};
use crate::{Error, Layout, PINNED_TOOLS, Progress, Result, SetupReport};

/// How [`install_tools`] names the tools in progress and in the report.
pub(crate) const TOOLS_LABEL: &str = "python tools";

const MARKER: &str = ".agency-venv-complete";
const VENV_TIMEOUT: Duration = Duration::from_mins(5);
const PIP_INSTALL_TIMEOUT: Duration = Duration::from_mins(30);
const VERSION_TIMEOUT: Duration = Duration::from_mins(2);

/// Checks that the managed virtual environment exists and that each pinned tool in it reports
/// its pinned version from `<venv>/bin/<tool> --version`; returns each tool with that version.
/// The tools are asked in parallel, since each `--version` starts a Python interpreter.
pub fn verify_tools(layout: &Layout) -> Result<Vec<(String, String)>> {
    let venv = layout.venv();
    if !venv_python(layout).exists() {
        return Err(Error::VenvMissing { path: venv });
    }
    let found = thread::scope(|scope| {
        let checks: Vec<_> = PINNED_TOOLS
            .iter()
            .map(|&(tool, pinned)| scope.spawn(move || check_tool(layout, tool, pinned)))
            .collect();
        checks
            .into_iter()
            .map(|check| check.join().expect("a tool check does not panic"))
            .collect::<Result<Vec<_>>>()
    })?;
    Ok(PINNED_TOOLS
        .iter()
        .zip(found)
        .map(|(&(tool, _), version)| (tool.to_owned(), version))
        .collect())
}

fn venv_python(layout: &Layout) -> std::path::PathBuf {
    layout.venv_bin("python")
}

fn check_tool(layout: &Layout, tool: &str, pinned: &str) -> Result<String> {
    let venv = layout.venv();
    let bin = layout.venv_bin(tool);
    if !bin.exists() {
        return Err(Error::ToolMissing {
            tool: tool.to_owned(),
            venv,
        });
    }
    let out = process::run(Command::new(&bin).arg("--version"), VERSION_TIMEOUT)?.require_success(
        || format!("delete {} and re-run agency setup", layout.venv().display()),
    )?;
    let Some(found) = parse_version(tool, &out.stdout).or_else(|| parse_version(tool, &out.stderr))
    else {
        return Err(Error::ToolVersionUnreadable {
            output: out.tail(TAIL_LINES),
            command: out.command,
            venv,
        });
    };
    if found != pinned {
        return Err(Error::ToolVersion {
            tool: tool.to_owned(),
            venv,
            found,
            expected: pinned.to_owned(),
        });
    }
    Ok(found)
}

/// The version in a tool's `--version` output: the word after the first line that starts with
/// the tool's name (`mypy 2.4.1 (compiled: yes)`, `bandit 1.9.4` followed by details).
pub(crate) fn parse_version(tool: &str, output: &str) -> Option<String> {
    output.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        let name = words.next()?;
        let version = words.next()?;
        (name.eq_ignore_ascii_case(tool) && version.starts_with(|c: char| c.is_ascii_digit()))
            .then(|| version.trim_end_matches(',').to_owned())
    })
}

/// Makes the pinned tools current, creating the environment first when needed, and returns
/// what [`verify_tools`] then finds.
pub(crate) fn install_tools(
    layout: &Layout,
    python: &Path,
    progress: &mut dyn FnMut(Progress<'_>),
    report: &mut SetupReport,
) -> Result<Vec<(String, String)>> {
    match verify_tools(layout) {
        Ok(found) => {
            progress(Progress::Skipped {
                what: TOOLS_LABEL,
                why: "pinned versions already installed",
            });
            report.already_present.push(TOOLS_LABEL.to_owned());
            return Ok(found);
        }
        Err(err) => tracing::debug!(%err, "tools need installing"),
    }
    ensure_venv(layout, python, progress)?;

    let specs: Vec<String> = PINNED_TOOLS
        .iter()
        .map(|(tool, version)| format!("{tool}=={version}"))
        .collect();
    let label = format!("installing {}", specs.join(" "));
    progress(Progress::Step { what: &label });
    let mut cmd = Command::new(venv_python(layout));
    cmd.args(["-m", "pip", "install"])
        .args(crate::download::PIP_QUIET)
        .args(&specs);
    process::run(&mut cmd, PIP_INSTALL_TIMEOUT)?.require_success(|| {
        "check that PyPI is reachable, then re-run agency setup; if it keeps failing, delete the \
         venv directory and re-run agency setup"
            .to_owned()
    })?;

    let found = verify_tools(layout)?;
    let detail = found
        .iter()
        .map(|(tool, version)| format!("{tool} {version}"))
        .collect::<Vec<_>>()
        .join(", ");
    progress(Progress::Done {
        what: TOOLS_LABEL,
        detail,
    });
    report.installed.push(TOOLS_LABEL.to_owned());
    Ok(found)
}

/// Creates the virtual environment unless a complete one is there.
fn ensure_venv(
    layout: &Layout,
    python: &Path,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<()> {
    let venv = layout.venv();
    let marker = venv.join(MARKER);
    if venv_python(layout).exists() && marker.exists() {
        return Ok(());
    }
    progress(Progress::Step {
        what: "creating the virtual environment",
    });
    let mut cmd = Command::new(python);
    cmd.args(["-m", "venv", "--clear"]).arg(&venv);
    let out = process::run(&mut cmd, VENV_TIMEOUT)?;
    if !out.status.success() {
        return Err(Error::Venv {
            path: venv,
            tail: out.tail(TAIL_LINES),
            command: out.command,
            status: out.status.to_string(),
        });
    }
    let note = format!("created by agency setup with {}\n", python.display());
    agency_fs::atomic_write(&marker, note.as_bytes()).map_err(|source| Error::Persist {
        path: marker.clone(),
        source,
    })?;
    progress(Progress::Done {
        what: "virtual environment",
        detail: venv.display().to_string(),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_recorded_output() {
        let cases = [
            ("ruff", "ruff 0.17.5\n", Some("0.17.5")),
            ("mypy", "mypy 2.4.1 (compiled: yes)\n", Some("2.4.1")),
            (
                "bandit",
                "bandit 1.9.4\n  python version = 3.11.7 (main, Jan  1 2024, 00:00:00) [GCC 12.2.0]\n",
                Some("1.9.4"),
            ),
            ("pytest", "pytest 9.2.0\n", Some("9.2.0")),
            ("ruff", "error: unexpected argument\n", None),
            ("mypy", "", None),
            ("pytest", "pytest version unknown\n", None),
        ];
        for (tool, output, expected) in cases {
            assert_eq!(
                parse_version(tool, output).as_deref(),
                expected,
                "{tool}: {output:?}"
            );
        }
    }

    #[test]
    fn a_missing_venv_says_run_agency_setup() {
        let dir = tempfile::tempdir().unwrap();
        let err = verify_tools(&Layout::new(dir.path())).unwrap_err();
        assert!(matches!(err, Error::VenvMissing { .. }), "{err}");
        assert!(err.to_string().ends_with("run agency setup"), "{err}");
    }
}
