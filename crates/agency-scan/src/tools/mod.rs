//! Adapters for the established tools: ruff, mypy and bandit. Each finds its executable (a
//! configured path, else the repository's own virtual environment, else the pinned copy from
//! `agency setup`), runs it on the scanned files with a deadline, and parses its JSON output.
//! A tool that is missing, crashes or prints something unparseable becomes a `ToolRun` with
//! status `missing` or `failed` and no findings: never a phantom finding.

pub mod bandit;
pub mod mypy;
pub mod ruff;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use agency_core::Category;
use agency_core::contract::{Severity, ToolRun};

/// The external tools, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tool {
    Ruff,
    Mypy,
    Bandit,
}

impl Tool {
    pub const ALL: [Tool; 3] = [Tool::Ruff, Tool::Mypy, Tool::Bandit];

    pub fn name(self) -> &'static str {
        match self {
            Tool::Ruff => "ruff",
            Tool::Mypy => "mypy",
            Tool::Bandit => "bandit",
        }
    }
}

/// A fix a tool proposes (ruff's edits), kept for the heal engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolFix {
    /// `safe`, `unsafe` or `display-only`, as ruff says.
    pub applicability: String,
    pub message: Option<String>,
    pub edits: Vec<ToolEdit>,
}

/// One replacement, in 1-based rows and columns (characters), end exclusive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolEdit {
    pub content: String,
    pub start: (u32, u32),
    pub end: (u32, u32),
}

/// A finding as one tool reported it, before suppression, merging and ids.
#[derive(Debug, Clone, PartialEq)]
pub struct RawFinding {
    pub tool: &'static str,
    pub rule: String,
    pub category: Category,
    pub severity: Severity,
    /// Relative to the repository root, `/`-separated.
    pub file: String,
    pub line: u32,
    pub column: u32,
    pub end_line: u32,
    pub end_column: u32,
    pub message: String,
    pub fix: Option<ToolFix>,
    pub impact_pct: Option<u32>,
    /// Another line of the same defect (for AGY201: where the query is built), on which a
    /// duplicate from another tool merges into this finding.
    pub related_line: Option<u32>,
}

/// Where a tool's executable comes from.
#[derive(Debug, Clone, Default)]
pub struct ToolLocations {
    /// `[scan.tools]` paths from the configuration, by tool.
    pub configured: Vec<(Tool, PathBuf)>,
    /// The `bin` directory of the venv that `agency setup` installed.
    pub pinned_bin: Option<PathBuf>,
    /// `$VIRTUAL_ENV` of the caller, if any (the CLI reads the environment).
    pub active_venv: Option<PathBuf>,
}

/// Virtual environment directory names looked for at the repository root, in order.
const REPO_VENVS: &[&str] = &[".venv", "venv", "env", ".env"];

/// The executable for `tool`, and whether it is the repository's own copy.
pub fn locate(tool: Tool, root: &Path, locations: &ToolLocations) -> Option<(PathBuf, bool)> {
    if let Some((_, path)) = locations.configured.iter().find(|(t, _)| *t == tool) {
        let path = if path.is_absolute() {
            path.clone()
        } else {
            root.join(path)
        };
        return Some((path, true));
    }
    let own = REPO_VENVS
        .iter()
        .map(|dir| root.join(dir))
        .chain(locations.active_venv.iter().cloned())
        .map(|venv| venv.join("bin").join(tool.name()))
        .find(|p| p.is_file());
    if let Some(path) = own {
        return Some((path, true));
    }
    locations
        .pinned_bin
        .as_ref()
        .map(|bin| bin.join(tool.name()))
        .filter(|p| p.is_file())
        .map(|p| (p, false))
}

/// The Python interpreter of the repository's own environment, for mypy's
/// `--python-executable`, so that it sees the project's installed dependencies.
pub fn repo_python(root: &Path, locations: &ToolLocations) -> Option<PathBuf> {
    REPO_VENVS
        .iter()
        .map(|dir| root.join(dir))
        .chain(locations.active_venv.iter().cloned())
        .map(|venv| venv.join("bin").join("python"))
        .find(|p| p.is_file())
}

/// The version of a tool installed in a virtual environment, read from its `.dist-info`
/// directory (spawning `--version` costs up to half a second for bandit); else by running it.
pub fn version(tool: Tool, exe: &Path) -> Option<String> {
    let venv = exe.parent()?.parent()?;
    let prefix = format!("{}-", tool.name());
    if let Ok(lib) = std::fs::read_dir(venv.join("lib")) {
        for python in lib.flatten() {
            let Ok(entries) = std::fs::read_dir(python.path().join("site-packages")) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(rest) = name.strip_prefix(&prefix)
                    && let Some(v) = rest.strip_suffix(".dist-info")
                {
                    return Some(v.to_string());
                }
            }
        }
    }
    let out =
        agency_setup::process::run(Command::new(exe).arg("--version"), Duration::from_secs(30))
            .ok()?;
    // "ruff 0.17.5", "mypy 2.4.1 (compiled: yes)", "bandit 1.9.4\n  python version = ...".
    out.stdout
        .split_whitespace()
        .nth(1)
        .map(ToString::to_string)
}

/// The result of running one tool.
#[derive(Debug, Clone)]
pub struct ToolOutcome {
    pub run: ToolRun,
    pub findings: Vec<RawFinding>,
}

impl ToolOutcome {
    fn new(tool: Tool, status: &str, exe: Option<&Path>, started: Instant) -> Self {
        ToolOutcome {
            run: ToolRun {
                tool: tool.name().to_string(),
                status: status.to_string(),
                version: None,
                path: exe.map(|p| p.display().to_string()),
                duration_ms: started.elapsed().as_millis() as u64,
                message: None,
                cached_files: None,
            },
            findings: Vec::new(),
        }
    }

    pub(crate) fn missing(tool: Tool) -> Self {
        let mut outcome = Self::new(tool, "missing", None, Instant::now());
        outcome.run.message = Some(format!(
            "{} not found in the repository's virtual environment or agency's tools; run agency setup",
            tool.name()
        ));
        outcome
    }

    pub(crate) fn failed(tool: Tool, exe: &Path, started: Instant, message: String) -> Self {
        let mut outcome = Self::new(tool, "failed", Some(exe), started);
        outcome.run.message = Some(message);
        outcome
    }

    pub(crate) fn ok(tool: Tool, exe: &Path, started: Instant, findings: Vec<RawFinding>) -> Self {
        let mut outcome = Self::new(tool, "ok", Some(exe), started);
        outcome.findings = findings;
        outcome
    }
}

/// Everything an adapter needs to run.
#[derive(Debug, Clone)]
pub struct ToolRequest<'a> {
    pub root: &'a Path,
    /// Relative paths of the files to check.
    pub files: &'a [String],
    pub exe: PathBuf,
    /// The executable is the repository's own (respect its configuration as is).
    pub own: bool,
    /// Where the tool may keep its cache (`.agency/cache/<tool>`), if caching is on.
    pub cache_dir: Option<PathBuf>,
    /// Content hashes of `files` (sha256 hex), for tools whose results agency caches per file
    /// (bandit); empty when unknown, which disables that cache.
    pub hashes: &'a std::collections::HashMap<String, String>,
    /// Processes of a tool that shards its files (bandit) at once; `None`: one per core, at
    /// most four.
    pub shards: Option<usize>,
    pub python: Option<PathBuf>,
    pub timeout: Duration,
}

/// Runs `tool` on the request's files.
pub fn run(tool: Tool, request: &ToolRequest) -> ToolOutcome {
    let started = Instant::now();
    let mut outcome = match tool {
        Tool::Ruff => ruff::run(request, started),
        Tool::Mypy => mypy::run(request, started),
        Tool::Bandit => bandit::run(request, started),
    };
    outcome.run.version = version(tool, &request.exe);
    outcome.run.duration_ms = started.elapsed().as_millis() as u64;
    outcome
}

/// Runs a command in the repository root and returns its output, or the failure message.
pub(crate) fn exec(
    tool: Tool,
    cmd: &mut Command,
    request: &ToolRequest,
) -> Result<agency_setup::process::Output, String> {
    cmd.current_dir(request.root);
    agency_setup::process::run(cmd, request.timeout).map_err(|e| match e {
        agency_setup::Error::Timeout { timeout_s, .. } => format!(
            "{} did not finish within {timeout_s} s and was killed; scan fewer files or raise the timeout",
            tool.name()
        ),
        other => format!("{} could not run: {other}", tool.name()),
    })
}

/// The tail of a failed tool's output, for its `ToolRun` message.
pub(crate) fn failure(tool: Tool, output: &agency_setup::process::Output, why: &str) -> String {
    format!(
        "{} {why} ({}); its output ends with:\n{}",
        tool.name(),
        output.status,
        output.tail(8)
    )
}

/// `/`-separated path relative to the root for a path a tool printed (absolute or relative).
pub(crate) fn tool_path(root: &Path, printed: &str) -> String {
    let path = Path::new(printed);
    let rel = if path.is_absolute() {
        path.strip_prefix(root).unwrap_or(path)
    } else {
        path
    };
    let s = rel.to_string_lossy().replace('\\', "/");
    s.trim_start_matches("./").to_string()
}
