//! Learning patterns from the fixes in a repository's git history (LEARNING.md §6,
//! `agency patterns learn --from-git`).
//!
//! [`mine`] walks the first-parent, non-merge commits of a range, oldest first. A commit is
//! looked at only when it is small (at most [`Limits::max_files`] changed files; per Python
//! file at most [`Limits::max_changed_lines`] changed lines in [`Limits::max_hunks`] hunks) and
//! changes more than formatting. For each such commit the parent and child versions of its
//! changed Python files are written into two temporary directories (with the repository's tool
//! configuration files at the same relative places, so rule selection matches) and scanned. A
//! finding of the parent is *removed* when the child has no finding of the same rule on a line
//! with the same whitespace-normalised text (counted as a multiset, so the occurrence among
//! identical lines matters) and its line lies in a hunk of the commit; line numbers are never
//! used to pair. Each removed finding is handed to [`agency_learn::extract`] with the two file
//! texts; equal rewrites (same fingerprint) from several commits are grouped, one rewrite with
//! one example per commit.
//!
//! Everything git is asked is read-only (`rev-list`, `show`, `diff`, `ls-tree`, `cat-file`,
//! with `GIT_OPTIONAL_LOCKS=0`): the working tree and the index are never touched. Storing the
//! rewrites is the caller's business.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use agency_core::contract::Finding;
use agency_core::pattern::Rewrite;
use agency_scan::ScanSettings;

/// Everything that stops a walk. A commit or file that cannot be used is a [`Skip`], not an
/// error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{} is not inside a git repository ({message}); run the command in a git checkout",
        path.display()
    )]
    NotARepository { path: PathBuf, message: String },
    #[error(
        "git does not know the revision range `{range}`: {message}; give a range `git log` accepts, e.g. HEAD~20..HEAD or main, or leave it out for all of HEAD's history"
    )]
    UnknownRange { range: String, message: String },
    #[error("the repository at {} has no commits yet; commit first, then learn from its history", root.display())]
    NoCommits { root: PathBuf },
    #[error("cannot run git in {}; install git or put it on PATH", root.display())]
    Spawn {
        root: PathBuf,
        source: std::io::Error,
    },
    #[error("{tool} is {status} ({message}), or leave it out of --tools")]
    Tool {
        tool: String,
        status: String,
        message: String,
    },
    #[error("`git {command}` failed in {}: {message}", root.display())]
    Git {
        root: PathBuf,
        command: String,
        message: String,
    },
    #[error(
        "cannot create a temporary directory for the scans of commit {commit}; check the space and permissions of the temporary directory"
    )]
    Temp {
        commit: String,
        source: std::io::Error,
    },
    #[error("cannot write {} for the scan of commit {commit}; check the space of the temporary directory", path.display())]
    Write {
        path: PathBuf,
        commit: String,
        source: std::io::Error,
    },
}

/// The result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What makes a commit small enough to learn from (LEARNING.md §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Changed files of any kind in one commit.
    pub max_files: usize,
    /// Added plus deleted lines of one Python file.
    pub max_changed_lines: usize,
    /// Hunks of one Python file.
    pub max_hunks: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_files: 20,
            max_changed_lines: 30,
            max_hunks: 3,
        }
    }
}

/// What to walk and how to scan.
#[derive(Debug, Clone)]
pub struct MineSettings {
    /// A directory inside the repository.
    pub root: PathBuf,
    /// The revision range (`git rev-list` syntax); `None` is all of HEAD's history.
    pub range: Option<String>,
    /// The repository's scan settings: tools, their locations, `select`, `ignore`. Root,
    /// paths and caching are replaced for each scan.
    pub scan: ScanSettings,
    pub limits: Limits,
}

/// Progress of a walk, for the caller to draw.
#[derive(Debug, Clone)]
pub enum Progress {
    /// The commits to look at are known.
    Started { commits: usize },
    /// Commit `done` of `total` is finished.
    Commit {
        done: usize,
        total: usize,
        sha: String,
    },
}

/// Why a commit or a file was not learned from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Skip {
    /// The first commit: no parent to compare with.
    Root,
    /// More changed files than [`Limits::max_files`].
    TooManyFiles,
    /// No Python file left to look at.
    NoPythonChange,
    /// Only whitespace, comments, semicolons or trailing commas changed.
    FormattingOnly,
    /// A tool failed on the parent or the child, so the two scans cannot be compared.
    ToolFailed,
    /// A file added by the commit (there is no before).
    FileAdded,
    /// A file deleted by the commit.
    FileDeleted,
    /// Binary content, a symlink or a submodule.
    Binary,
    /// Not UTF-8.
    NotUtf8,
    /// The parent or the child version does not parse.
    SyntaxError,
    /// More hunks than [`Limits::max_hunks`].
    TooManyHunks,
    /// More changed lines than [`Limits::max_changed_lines`].
    TooManyLines,
}

impl Skip {
    /// The key in reports and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::Root => "root_commit",
            Skip::TooManyFiles => "too_many_files",
            Skip::NoPythonChange => "no_python_change",
            Skip::FormattingOnly => "formatting_only",
            Skip::ToolFailed => "tool_failed",
            Skip::FileAdded => "file_added",
            Skip::FileDeleted => "file_deleted",
            Skip::Binary => "binary_file",
            Skip::NotUtf8 => "not_utf8",
            Skip::SyntaxError => "syntax_error",
            Skip::TooManyHunks => "too_many_hunks",
            Skip::TooManyLines => "too_many_lines",
        }
    }

    /// Whether the whole commit is skipped (else one file of it).
    pub fn whole_commit(self) -> bool {
        matches!(
            self,
            Skip::Root
                | Skip::TooManyFiles
                | Skip::NoPythonChange
                | Skip::FormattingOnly
                | Skip::ToolFailed
        )
    }
}

/// A commit, as reports name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub sha: String,
    pub subject: String,
}

/// Something the user should know about a skipped commit or file (a syntax error, a binary
/// file, a failed tool).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub commit: String,
    pub file: Option<String>,
    pub skip: Skip,
    pub message: String,
}

/// One fix a rewrite was learned from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinedExample {
    pub commit: Commit,
    pub file: String,
    /// The finding's line in the parent.
    pub line: u32,
    /// The concrete code the templates were cut from.
    pub example: Rewrite,
}

/// A rewrite learned from one or more commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinedRewrite {
    pub rule: String,
    pub category: String,
    /// The first removed finding's message.
    pub message: String,
    pub rewrite: Rewrite,
    pub fingerprint: String,
    /// One per fix, oldest commit first.
    pub examples: Vec<MinedExample>,
}

impl MinedRewrite {
    /// The distinct commits, oldest first.
    pub fn commits(&self) -> Vec<&Commit> {
        let mut out: Vec<&Commit> = Vec::new();
        for e in &self.examples {
            if !out.iter().any(|c| c.sha == e.commit.sha) {
                out.push(&e.commit);
            }
        }
        out
    }
}

/// A removed finding no rewrite was learned from, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub commit: String,
    pub file: String,
    pub rule: String,
    pub line: u32,
    pub reason: String,
}

/// What a walk found.
#[derive(Debug, Clone, Default)]
pub struct Mined {
    /// The revision range walked.
    pub range: String,
    /// First-parent, non-merge commits in the range.
    pub commits: usize,
    /// Merge commits on the first-parent line of the range, not walked.
    pub merges: usize,
    /// Skipped commits and files, by reason.
    pub skipped: BTreeMap<Skip, usize>,
    pub notes: Vec<Note>,
    /// Findings removed by a change on their line.
    pub removed: usize,
    /// Grouped rewrites, by rule then fingerprint.
    pub rewrites: Vec<MinedRewrite>,
    pub refused: Vec<Refusal>,
}

/// Tool configuration files copied next to the scanned files, so that the scans select the
/// rules the repository selects.
pub const CONFIG_FILES: &[&str] = &[
    "pyproject.toml",
    "ruff.toml",
    ".ruff.toml",
    "setup.cfg",
    "mypy.ini",
    ".mypy.ini",
    ".bandit",
];

/// Rules not learned from history: formatting is ruff's job, import sorting isort's, and the
/// project rules look at other files than the two scanned versions.
const NOT_LEARNED: &[&str] = &[
    agency_scan::tools::ruff::FORMAT_RULE,
    "I001",
    "AGY101",
    "AGY102",
];

/// Walks the history and returns the rewrites its fixes teach. Reads git only.
pub fn mine(settings: &MineSettings, progress: &dyn Fn(Progress)) -> Result<Mined> {
    let root = toplevel(&settings.root)?;
    let range = settings.range.clone().unwrap_or_else(|| "HEAD".to_string());
    if range.starts_with('-') {
        return Err(Error::UnknownRange {
            range,
            message: "a range cannot start with `-`".into(),
        });
    }
    let listed = git(
        &root,
        &[
            "rev-list",
            "--first-parent",
            "--no-merges",
            "--reverse",
            &range,
            "--",
        ],
    )
    .map_err(|e| range_error(e, &root, settings.range.is_none(), &range))?;
    let shas: Vec<String> = text(&listed).lines().map(str::to_string).collect();
    let merges = git(
        &root,
        &[
            "rev-list",
            "--first-parent",
            "--merges",
            "--count",
            &range,
            "--",
        ],
    )
    .map_err(|e| range_error(e, &root, settings.range.is_none(), &range))?;
    let mut mined = Mined {
        range: range.clone(),
        commits: shas.len(),
        merges: text(&merges).trim().parse().unwrap_or(0),
        ..Mined::default()
    };
    progress(Progress::Started {
        commits: shas.len(),
    });
    let work = tempfile::Builder::new()
        .prefix("agency-history-")
        .tempdir()
        .map_err(|source| Error::Temp {
            commit: range.clone(),
            source,
        })?;
    let mut groups: BTreeMap<(String, String), MinedRewrite> = BTreeMap::new();
    for (i, sha) in shas.iter().enumerate() {
        mine_commit(&root, sha, settings, work.path(), &mut mined, &mut groups)?;
        progress(Progress::Commit {
            done: i + 1,
            total: shas.len(),
            sha: sha.clone(),
        });
    }
    mined.rewrites = groups.into_values().collect();
    Ok(mined)
}

/// The repository's top-level directory.
fn toplevel(dir: &Path) -> Result<PathBuf> {
    match git(dir, &["rev-parse", "--show-toplevel"]) {
        Ok(out) => Ok(PathBuf::from(text(&out).trim())),
        Err(Error::Git { message, .. }) => Err(Error::NotARepository {
            path: dir.to_path_buf(),
            message,
        }),
        Err(e) => Err(e),
    }
}

fn range_error(e: Error, root: &Path, default: bool, range: &str) -> Error {
    match e {
        Error::Git { message, .. } if default && message.contains("HEAD") => Error::NoCommits {
            root: root.to_path_buf(),
        },
        Error::Git { message, .. } => Error::UnknownRange {
            range: range.to_string(),
            message,
        },
        other => other,
    }
}

/// Runs a read-only git command in `dir` and returns its stdout.
fn git(dir: &Path, args: &[&str]) -> Result<Vec<u8>> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "core.quotepath=off", "--no-pager"])
        .args(args)
        // Read-only: no opportunistic index refresh either.
        .env("GIT_OPTIONAL_LOCKS", "0")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .output()
        .map_err(|source| Error::Spawn {
            root: dir.to_path_buf(),
            source,
        })?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let message = stderr
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("no message")
        .trim_start_matches("fatal: ")
        .to_string();
    Err(Error::Git {
        root: dir.to_path_buf(),
        command: args.first().copied().unwrap_or_default().to_string(),
        message,
    })
}

fn text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

/// One changed file of a commit, from `git diff --raw`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Change {
    path: String,
    status: char,
    old_mode: String,
    new_mode: String,
    old_oid: String,
    new_oid: String,
}

/// Parses `git diff --raw -z --no-renames --no-abbrev`.
fn parse_raw(out: &[u8]) -> Vec<Change> {
    let mut changes = Vec::new();
    let mut fields = out.split(|&b| b == 0);
    while let Some(meta) = fields.next() {
        let meta = text(meta);
        let Some(meta) = meta.strip_prefix(':') else {
            continue;
        };
        let Some(path) = fields.next() else { break };
        let parts: Vec<&str> = meta.split(' ').collect();
        if parts.len() < 5 {
            continue;
        }
        changes.push(Change {
            path: text(path).into_owned(),
            status: parts[4].chars().next().unwrap_or('?'),
            old_mode: parts[0].to_string(),
            new_mode: parts[1].to_string(),
            old_oid: parts[2].to_string(),
            new_oid: parts[3].to_string(),
        });
    }
    changes
}

/// Parses `git diff --numstat -z --no-renames`: path → (added, deleted), `None` for binary.
fn parse_numstat(out: &[u8]) -> HashMap<String, Option<(usize, usize)>> {
    let mut stats = HashMap::new();
    for record in out.split(|&b| b == 0) {
        let record = text(record);
        let mut parts = record.splitn(3, '\t');
        let (Some(added), Some(deleted), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let counts = added.parse().ok().zip(deleted.parse().ok());
        stats.insert(path.to_string(), counts);
    }
    stats
}

/// A changed run of lines: `old` in the parent, `new` in the child (0-based line indexes).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hunk {
    old: std::ops::Range<usize>,
    new: std::ops::Range<usize>,
}

impl Hunk {
    /// The parent side as `git diff -U0` writes it: `(first, count)`, 1-based; a pure
    /// insertion has count 0 and sits after line `first`.
    fn parent_lines(&self) -> (u32, u32) {
        let count = u32::try_from(self.old.len()).unwrap_or(u32::MAX);
        let start = u32::try_from(self.old.start).unwrap_or(u32::MAX);
        if count == 0 {
            (start, 0)
        } else {
            (start + 1, count)
        }
    }
}

/// The hunks of a line diff without context.
fn line_hunks(before: &str, after: &str) -> Vec<Hunk> {
    let diff = similar::TextDiff::from_lines(before, after);
    diff.grouped_ops(0)
        .iter()
        .filter_map(|group| {
            let (first, last) = (group.first()?, group.last()?);
            Some(Hunk {
                old: first.old_range().start..last.old_range().end,
                new: first.new_range().start..last.new_range().end,
            })
        })
        .collect()
}

/// A hunk replacing lines one for one, as one hunk per line; any other hunk as it is.
fn line_by_line(hunk: &Hunk) -> Vec<Hunk> {
    if hunk.old.len() != hunk.new.len() || hunk.old.len() <= 1 {
        return vec![hunk.clone()];
    }
    (0..hunk.old.len())
        .map(|k| Hunk {
            old: hunk.old.start + k..hunk.old.start + k + 1,
            new: hunk.new.start + k..hunk.new.start + k + 1,
        })
        .collect()
}

/// The parent with only `hunks` of the commit applied: the fix of one finding, without the
/// commit's other changes (the extraction covers everything that changed).
fn apply_hunks(before: &str, after: &str, hunks: &[&Hunk]) -> String {
    let old: Vec<&str> = before.split_inclusive('\n').collect();
    let new: Vec<&str> = after.split_inclusive('\n').collect();
    let mut out = String::with_capacity(before.len());
    let mut pos = 0;
    for hunk in hunks {
        out.extend(
            old[pos.min(old.len())..hunk.old.start.min(old.len())]
                .iter()
                .copied(),
        );
        out.extend(
            new[hunk.new.start.min(new.len())..hunk.new.end.min(new.len())]
                .iter()
                .copied(),
        );
        pos = hunk.old.end;
    }
    out.extend(old[pos.min(old.len())..].iter().copied());
    out
}

/// Whether lines `start..=end` of the parent meet a hunk (a pure insertion touches the lines
/// on both sides of it).
fn in_hunk(hunks: &[(u32, u32)], start: u32, end: u32) -> bool {
    hunks.iter().any(|&(first, count)| {
        let (lo, hi) = if count == 0 {
            (first, first + 1)
        } else {
            (first, first + count - 1)
        };
        start <= hi && lo <= end.max(start)
    })
}

/// A Python file of a commit that is worth scanning.
struct FilePair {
    path: String,
    before: String,
    after: String,
    hunks: Vec<Hunk>,
}

fn skip(mined: &mut Mined, commit: &str, file: Option<&str>, why: Skip, message: Option<String>) {
    *mined.skipped.entry(why).or_default() += 1;
    if let Some(message) = message {
        mined.notes.push(Note {
            commit: commit.to_string(),
            file: file.map(str::to_string),
            skip: why,
            message,
        });
    }
}

/// Whether the scanner reads `path` as Python (as `discover` does: `*.py` and `*.pyi`).
fn is_python(path: &str) -> bool {
    Path::new(path)
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("py") || e.eq_ignore_ascii_case("pyi"))
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

fn mine_commit(
    root: &Path,
    sha: &str,
    settings: &MineSettings,
    work: &Path,
    mined: &mut Mined,
    groups: &mut BTreeMap<(String, String), MinedRewrite>,
) -> Result<()> {
    let header = git(root, &["show", "-s", "--format=%P%x00%s", sha])?;
    let header = text(&header);
    let (parents, subject) = header.split_once('\0').unwrap_or((&header, ""));
    let commit = Commit {
        sha: sha.to_string(),
        subject: subject.trim().to_string(),
    };
    let Some(parent) = parents.split_whitespace().next().map(str::to_string) else {
        skip(mined, sha, None, Skip::Root, None);
        return Ok(());
    };
    let raw = git(
        root,
        &[
            "diff",
            "--raw",
            "-z",
            "--no-renames",
            "--no-abbrev",
            &parent,
            sha,
            "--",
        ],
    )?;
    let changes = parse_raw(&raw);
    if changes.len() > settings.limits.max_files {
        skip(mined, sha, None, Skip::TooManyFiles, None);
        return Ok(());
    }
    let numstat = parse_numstat(&git(
        root,
        &[
            "diff",
            "--numstat",
            "-z",
            "--no-renames",
            &parent,
            sha,
            "--",
        ],
    )?);
    let mut pairs = Vec::new();
    for change in changes.iter().filter(|c| is_python(&c.path)) {
        if let Some(pair) = file_pair(root, &parent, sha, change, &numstat, settings, mined)? {
            pairs.push(pair);
        }
    }
    if pairs.is_empty() {
        // Every Python file was skipped (counted above) or there was none.
        if !changes.iter().any(|c| is_python(&c.path)) {
            skip(mined, sha, None, Skip::NoPythonChange, None);
        }
        return Ok(());
    }
    pairs.retain(|p| normalized_code(&p.before) != normalized_code(&p.after));
    if pairs.is_empty() {
        skip(mined, sha, None, Skip::FormattingOnly, None);
        return Ok(());
    }
    let dir = tempfile::Builder::new()
        .prefix("commit-")
        .tempdir_in(work)
        .map_err(|source| Error::Temp {
            commit: sha.to_string(),
            source,
        })?;
    let paths: Vec<&str> = pairs.iter().map(|p| p.path.as_str()).collect();
    let mut scans = Vec::with_capacity(2);
    for (side, rev) in [("before", parent.as_str()), ("after", sha)] {
        let side_dir = dir.path().join(side);
        for p in &pairs {
            let content = if side == "before" {
                &p.before
            } else {
                &p.after
            };
            write_file(&side_dir, &p.path, content.as_bytes(), sha)?;
        }
        copy_configs(root, rev, &paths, &side_dir, sha)?;
        let side_dir = std::fs::canonicalize(&side_dir).unwrap_or(side_dir);
        let mut scan = settings.scan.clone();
        scan.paths = paths.iter().map(|p| side_dir.join(p)).collect();
        scan.root = side_dir;
        scan.changes = None;
        scan.cache = false;
        scan.baseline.clear();
        scan.log = None;
        scan.tool_cache = Some(work.join("tool-cache"));
        scans.push(agency_scan::scan(&scan, &|_| {}));
    }
    let after = scans.pop().expect("two scans");
    let before = scans.pop().expect("two scans");
    let (before, after) = match (before, after) {
        (Ok(before), Ok(after)) => (before, after),
        (Err(e), _) | (_, Err(e)) => {
            let message = format!(
                "commit {} not learned from: the scan failed: {e}",
                short(sha)
            );
            skip(mined, sha, None, Skip::ToolFailed, Some(message));
            return Ok(());
        }
    };
    // A missing tool is missing for every commit: said once, as an error.
    if let Some(tool) = before.report.tools.iter().find(|t| t.status == "missing") {
        return Err(Error::Tool {
            tool: tool.tool.clone(),
            status: tool.status.clone(),
            message: tool
                .message
                .clone()
                .unwrap_or_else(|| "run agency setup, or leave it out with --tools".into()),
        });
    }
    if let Some(tool) = before
        .report
        .tools
        .iter()
        .chain(&after.report.tools)
        .find(|t| t.status != "ok" && t.status != "skipped")
    {
        let message = format!(
            "commit {} not learned from: {} {}: {}",
            short(sha),
            tool.tool,
            tool.status,
            tool.message.as_deref().unwrap_or("no message")
        );
        skip(mined, sha, None, Skip::ToolFailed, Some(message));
        return Ok(());
    }
    for pair in &pairs {
        let of = |report: &agency_core::contract::ScanReport| -> Vec<Finding> {
            report
                .findings
                .iter()
                .filter(|f| f.file == pair.path && !NOT_LEARNED.contains(&f.rule.as_str()))
                .cloned()
                .collect()
        };
        let parent_findings = of(&before.report);
        let child_findings = of(&after.report);
        let lines: Vec<(u32, u32)> = pair.hunks.iter().map(Hunk::parent_lines).collect();
        for index in removed(&parent_findings, &child_findings, &lines) {
            let finding = &parent_findings[index];
            mined.removed += 1;
            learn_one(&commit, pair, finding, mined, groups);
        }
    }
    Ok(())
}

/// The texts of one changed Python file, or `None` (counted) when it cannot be learned from.
fn file_pair(
    root: &Path,
    parent: &str,
    sha: &str,
    change: &Change,
    numstat: &HashMap<String, Option<(usize, usize)>>,
    settings: &MineSettings,
    mined: &mut Mined,
) -> Result<Option<FilePair>> {
    let path = change.path.as_str();
    let limits = settings.limits;
    match change.status {
        'A' => {
            skip(mined, sha, Some(path), Skip::FileAdded, None);
            return Ok(None);
        }
        'D' => {
            skip(mined, sha, Some(path), Skip::FileDeleted, None);
            return Ok(None);
        }
        _ => {}
    }
    let regular = |mode: &str| mode == "100644" || mode == "100755";
    if !regular(&change.old_mode) || !regular(&change.new_mode) {
        let message = format!(
            "{path} in commit {}: not a regular file (mode {} -> {}); skipped",
            short(sha),
            change.old_mode,
            change.new_mode
        );
        skip(mined, sha, Some(path), Skip::Binary, Some(message));
        return Ok(None);
    }
    match numstat.get(path) {
        Some(None) => {
            let message = format!("{path} in commit {}: binary content; skipped", short(sha));
            skip(mined, sha, Some(path), Skip::Binary, Some(message));
            return Ok(None);
        }
        Some(Some((added, deleted))) if added + deleted > limits.max_changed_lines => {
            skip(mined, sha, Some(path), Skip::TooManyLines, None);
            return Ok(None);
        }
        _ => {}
    }
    let mut texts = Vec::with_capacity(2);
    for (oid, rev) in [(&change.old_oid, parent), (&change.new_oid, sha)] {
        let bytes = git(root, &["cat-file", "blob", oid])?;
        if bytes.contains(&0) {
            let message = format!("{path} in commit {}: binary content; skipped", short(sha));
            skip(mined, sha, Some(path), Skip::Binary, Some(message));
            return Ok(None);
        }
        match String::from_utf8(bytes) {
            Ok(text) => texts.push((text, rev)),
            Err(e) => {
                let message = format!(
                    "{path} at {}: not UTF-8 (invalid byte at offset {}); skipped",
                    short(rev),
                    e.utf8_error().valid_up_to()
                );
                skip(mined, sha, Some(path), Skip::NotUtf8, Some(message));
                return Ok(None);
            }
        }
    }
    for (text, rev) in &texts {
        if let Err(e) = agency_learn::parse_source(text) {
            let cause = match e {
                agency_learn::Error::Source { cause, offset } => {
                    format!("{cause} at byte {offset}")
                }
                other => other.to_string(),
            };
            let message = format!(
                "{path} at {}: does not parse ({cause}); not learned from",
                short(rev)
            );
            skip(mined, sha, Some(path), Skip::SyntaxError, Some(message));
            return Ok(None);
        }
    }
    let after = texts.pop().expect("two texts").0;
    let before = texts.pop().expect("two texts").0;
    let hunks = line_hunks(&before, &after);
    if hunks.len() > limits.max_hunks {
        skip(mined, sha, Some(path), Skip::TooManyHunks, None);
        return Ok(None);
    }
    Ok(Some(FilePair {
        path: path.to_string(),
        before,
        after,
        hunks,
    }))
}

fn write_file(dir: &Path, rel: &str, bytes: &[u8], sha: &str) -> Result<()> {
    let path = dir.join(rel);
    let write = || -> std::io::Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, bytes)
    };
    write().map_err(|source| Error::Write {
        path: path.clone(),
        commit: sha.to_string(),
        source,
    })
}

/// Copies the tool configuration files of `rev` found at the root and in every directory
/// above `paths` into `dir`, at the same relative places.
fn copy_configs(root: &Path, rev: &str, paths: &[&str], dir: &Path, sha: &str) -> Result<()> {
    let mut dirs: Vec<String> = vec![String::new()];
    for path in paths {
        let mut prefix = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            prefix.push_str(part);
            prefix.push('/');
            if !dirs.contains(&prefix) {
                dirs.push(prefix.clone());
            }
        }
    }
    let candidates: Vec<String> = dirs
        .iter()
        .flat_map(|d| CONFIG_FILES.iter().map(move |name| format!("{d}{name}")))
        .collect();
    let mut args = vec!["ls-tree", "-z", "--name-only", rev, "--"];
    args.extend(candidates.iter().map(String::as_str));
    let listed = git(root, &args)?;
    for name in listed.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = text(name).into_owned();
        let spec = format!("{rev}:{name}");
        let bytes = git(root, &["cat-file", "blob", &spec])?;
        write_file(dir, &name, &bytes, sha)?;
    }
    Ok(())
}

/// The findings of the parent that the child no longer has, as indexes into `parent`.
///
/// Findings are keyed by rule and the whitespace-normalised text of their line and compared as
/// multisets: when the parent has more of a key than the child, that many were removed, and
/// they are the ones whose lines meet a hunk (when more meet one than were removed, which one
/// was fixed cannot be told and none is taken). A rule whose findings the child has as many
/// of as the parent lost none, whatever their texts: the flagged code was edited or moved,
/// not fixed.
pub fn removed(parent: &[Finding], child: &[Finding], hunks: &[(u32, u32)]) -> Vec<usize> {
    let key = |f: &Finding| (f.rule.clone(), collapse_ws(&f.snippet));
    let mut child_counts: HashMap<(String, String), usize> = HashMap::new();
    for f in child {
        *child_counts.entry(key(f)).or_default() += 1;
    }
    let mut by_key: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    for (i, f) in parent.iter().enumerate() {
        by_key.entry(key(f)).or_default().push(i);
    }
    let mut out = Vec::new();
    for (k, indexes) in &by_key {
        let kept = child_counts.get(k).copied().unwrap_or(0);
        if indexes.len() <= kept {
            continue;
        }
        let gone = indexes.len() - kept;
        let touched: Vec<usize> = indexes
            .iter()
            .copied()
            .filter(|&i| in_hunk(hunks, parent[i].line, parent[i].end_line))
            .collect();
        if touched.len() <= gone {
            out.extend(touched);
        }
    }
    // Per rule, no more than the rule's net loss.
    let count = |list: &[Finding], rule: &str| list.iter().filter(|f| f.rule == rule).count();
    let mut per_rule: BTreeMap<&str, usize> = BTreeMap::new();
    for &i in &out {
        *per_rule.entry(parent[i].rule.as_str()).or_default() += 1;
    }
    out.retain(|&i| {
        let rule = parent[i].rule.as_str();
        let net = count(parent, rule).saturating_sub(count(child, rule));
        per_rule[rule] <= net
    });
    out.sort_unstable();
    out
}

/// Extracts the rewrite of one removed finding and adds it to its group, or records why not.
fn learn_one(
    commit: &Commit,
    pair: &FilePair,
    finding: &Finding,
    mined: &mut Mined,
    groups: &mut BTreeMap<(String, String), MinedRewrite>,
) {
    let refuse = |mined: &mut Mined, reason: String| {
        mined.refused.push(Refusal {
            commit: commit.sha.clone(),
            file: pair.path.clone(),
            rule: finding.rule.clone(),
            line: finding.line,
            reason,
        });
    };
    // Only the hunks on the finding's lines: the fix, not the commit's other changes. A hunk
    // that replaces lines one for one is first narrowed to the finding's own lines (two fixes
    // on adjacent lines are one hunk); if that does not give a rewrite, the whole hunk is used.
    let touches = |h: &Hunk| in_hunk(&[h.parent_lines()], finding.line, finding.end_line);
    let coarse: Vec<&Hunk> = pair.hunks.iter().filter(|h| touches(h)).collect();
    let narrow: Vec<Hunk> = coarse
        .iter()
        .flat_map(|h| line_by_line(h))
        .filter(|h| touches(h))
        .collect();
    let mut tries: Vec<Vec<&Hunk>> = vec![narrow.iter().collect()];
    if narrow.len() != coarse.len() || narrow.iter().zip(&coarse).any(|(n, c)| n != *c) {
        tries.push(coarse);
    }
    let mut outcome = Err(String::new());
    for hunks in tries {
        let after = apply_hunks(&pair.before, &pair.after, &hunks);
        outcome = match agency_learn::extract(&finding.rule, &pair.before, &after, finding.line) {
            Ok(extracted) => match unusable(&extracted.rewrite) {
                Some(reason) => Err(reason),
                None => Ok(extracted),
            },
            Err(e) => Err(e.to_string()),
        };
        if outcome.is_ok() {
            break;
        }
    }
    let extracted = match outcome {
        Ok(extracted) => extracted,
        Err(reason) => return refuse(mined, reason),
    };
    let rewrite = extracted.rewrite;
    let fingerprint = rewrite.fingerprint(&finding.rule);
    let example = MinedExample {
        commit: commit.clone(),
        file: pair.path.clone(),
        line: finding.line,
        example: extracted.example,
    };
    groups
        .entry((finding.rule.clone(), fingerprint.clone()))
        .or_insert_with(|| MinedRewrite {
            rule: finding.rule.clone(),
            category: finding.category.clone(),
            message: finding.message.clone(),
            rewrite,
            fingerprint,
            examples: Vec::new(),
        })
        .examples
        .push(example);
}

/// Why an extracted rewrite is not worth storing, if it is not.
pub(crate) fn unusable(rewrite: &Rewrite) -> Option<String> {
    let lines = rewrite
        .before
        .lines()
        .count()
        .max(rewrite.after.lines().count());
    if lines > crate::patterns::MAX_TEMPLATE_LINES {
        return Some(format!(
            "the rewrite spans {lines} lines (more than {}): too specific to reuse",
            crate::patterns::MAX_TEMPLATE_LINES
        ));
    }
    if normalized_code(&rewrite.before) == normalized_code(&rewrite.after) {
        return Some("the rewrite only changes formatting".into());
    }
    None
}

fn collapse_ws(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The code of a Python source with formatting taken out: comments, whitespace (kept as one
/// space only between two words), line continuations, semicolons and trailing commas before
/// a closing bracket. String literals are kept byte for byte. Two sources with equal results
/// differ only in formatting; the converse need not hold (redundant parentheses count).
pub fn normalized_code(source: &str) -> String {
    let bytes = source.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut gap = false;
    // Whether the last byte of `out` is a comma of the code (not of a string).
    let mut comma = false;
    // Commas seen at the top level of each open bracket.
    let mut commas: Vec<usize> = Vec::new();
    let wordy =
        |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'\'' || b == b'"' || b >= 0x80;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' | b'\\' | b';' => {
                gap = true;
                i += 1;
            }
            _ => {
                if gap && out.last().is_some_and(|&l| wordy(l)) && wordy(b) {
                    out.push(b' ');
                    comma = false;
                }
                gap = false;
                if b == b'\'' || b == b'"' {
                    let end = string_end(bytes, i);
                    out.extend_from_slice(&bytes[i..end]);
                    comma = false;
                    i = end;
                    continue;
                }
                match b {
                    b'(' | b'[' | b'{' => commas.push(0),
                    b',' => {
                        if let Some(n) = commas.last_mut() {
                            *n += 1;
                        }
                    }
                    b')' | b']' | b'}' => {
                        // `(1,)` is a tuple and `(1)` is not: a comma before `)` is dropped
                        // only when it is not the group's only one.
                        let n = commas.pop().unwrap_or(0);
                        if comma && (b != b')' || n >= 2) {
                            out.pop();
                        }
                    }
                    _ => {}
                }
                out.push(b);
                comma = b == b',';
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The end (exclusive) of the string literal whose opening quote is at `start`.
fn string_end(bytes: &[u8], start: usize) -> usize {
    let quote = bytes[start];
    let triple = bytes.len() >= start + 3 && bytes[start + 1] == quote && bytes[start + 2] == quote;
    let mut i = if triple { start + 3 } else { start + 1 };
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\\' {
            i += 2;
            continue;
        }
        if b == quote {
            if !triple {
                return i + 1;
            }
            if bytes.len() >= i + 3 && bytes[i + 1] == quote && bytes[i + 2] == quote {
                return i + 3;
            }
        }
        if b == b'\n' && !triple {
            return i;
        }
        i += 1;
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(rule: &str, line: u32, snippet: &str) -> Finding {
        let doc = serde_json::json!({
            "id": format!("{rule}-{line}"), "category": "style", "rule": rule, "tool": "ruff",
            "priority": "P3", "severity": "low", "file": "m.py", "line": line, "column": 1,
            "end_line": line, "end_column": 2, "message": "m",
            "fix": {"available": false, "approval_required": false},
            "sources": [], "snippet": snippet
        });
        serde_json::from_value(doc).expect("a well-formed finding")
    }

    #[test]
    fn a_finding_whose_line_was_fixed_is_removed_whatever_its_line_number() {
        // The fix is on line 9; an insertion above moved everything by one line.
        let parent = [
            finding("E711", 3, "    if a == None:"),
            finding("E711", 9, "    if b == None:"),
        ];
        let child = [finding("E711", 4, "    if  a == None:")];
        assert_eq!(removed(&parent, &child, &[(1, 0), (9, 1)]), [1]);
    }

    #[test]
    fn a_finding_off_the_hunks_is_not_taken() {
        // F821 gone because an import was added at the top: the flagged line did not change.
        let parent = [finding("F821", 7, "    return yaml.load(fh)")];
        assert!(removed(&parent, &[], &[(1, 0)]).is_empty());
        assert_eq!(removed(&parent, &[], &[(7, 1)]), [0]);
    }

    #[test]
    fn identical_lines_count_as_a_multiset() {
        let parent = [
            finding("E711", 2, "x == None"),
            finding("E711", 5, "x == None"),
        ];
        let child = [finding("E711", 2, "x == None")];
        // One of two identical lines fixed: the one the hunk covers.
        assert_eq!(removed(&parent, &child, &[(5, 1)]), [1]);
        // Both lines in hunks but only one gone: which one cannot be told.
        assert!(removed(&parent, &child, &[(2, 1), (5, 1)]).is_empty());
        // Both still there: nothing removed.
        assert!(removed(&parent, &parent, &[(2, 1), (5, 1)]).is_empty());
    }

    #[test]
    fn an_edited_line_that_keeps_its_defect_is_not_a_fix() {
        // A rename: the E711 text changed, but the child has as many E711 as the parent.
        let parent = [finding("E711", 3, "if a == None:")];
        let child = [finding("E711", 3, "if b == None:")];
        assert!(removed(&parent, &child, &[(3, 1)]).is_empty());
    }

    #[test]
    fn hunks_come_from_a_line_diff_and_apply_one_by_one() {
        let before = "a\nb\nc\nd\ne\n";
        let after = "a\nB\nc\nd\nx\ne\n";
        let hunks = line_hunks(before, after);
        let lines: Vec<(u32, u32)> = hunks.iter().map(Hunk::parent_lines).collect();
        // Line 2 replaced; a line inserted after line 4.
        assert_eq!(lines, [(2, 1), (4, 0)]);
        assert!(in_hunk(&[(4, 0)], 5, 5));
        assert!(!in_hunk(&[(2, 1)], 3, 3));
        assert_eq!(apply_hunks(before, after, &[&hunks[0]]), "a\nB\nc\nd\ne\n");
        assert_eq!(
            apply_hunks(before, after, &[&hunks[1]]),
            "a\nb\nc\nd\nx\ne\n"
        );
        assert_eq!(apply_hunks(before, after, &[&hunks[0], &hunks[1]]), after);
        // Two lines replaced one for one split into two; an insertion stays whole.
        let pair = line_hunks("a\nb\nc\n", "A\nB\nc\n");
        assert_eq!(pair.len(), 1);
        let split = line_by_line(&pair[0]);
        assert_eq!(split.len(), 2);
        assert_eq!(
            apply_hunks("a\nb\nc\n", "A\nB\nc\n", &[&split[1]]),
            "a\nB\nc\n"
        );
        assert_eq!(line_by_line(&hunks[1]), [hunks[1].clone()]);
    }

    #[test]
    fn raw_and_numstat_records_are_parsed() {
        let raw = b":100644 100644 aaaa bbbb M\0src/m.py\0:000000 100644 0000 cccc A\0new.py\0";
        let changes = parse_raw(raw);
        assert_eq!(changes.len(), 2);
        assert_eq!(
            (changes[0].path.as_str(), changes[0].status),
            ("src/m.py", 'M')
        );
        assert_eq!(changes[1].status, 'A');
        let stats = parse_numstat(b"1\t2\tsrc/m.py\0-\t-\tlogo.png\0");
        assert_eq!(stats["src/m.py"], Some((1, 2)));
        assert_eq!(stats["logo.png"], None);
    }

    #[test]
    fn formatting_is_normalised_away_but_code_and_strings_are_not() {
        let same = |a: &str, b: &str| normalized_code(a) == normalized_code(b);
        assert!(same("x=f( a,b, )\n", "x = f(a, b)  # call\n"));
        assert!(same("if x: return 1\n", "if x:\n    return 1\n"));
        assert!(same("a = 1; b = 2;\n", "a = 1\nb = 2\n"));
        assert!(same("y = [\n  1,\n  2,\n]\n", "y = [1, 2]\n"));
        assert!(!same("x == None\n", "x is None\n"));
        assert!(!same("s = 'a b'\n", "s = 'ab'\n"));
        assert!(!same("s = '# no'\n", "s = ''\n"));
        assert!(!same("not x\n", "notx\n"));
        assert!(!same("t = (1,)\n", "t = (1)\n"));
        assert!(same("t = (1, 2,)\n", "t = (1, 2)\n"));
    }

    #[test]
    fn long_or_formatting_rewrites_are_unusable() {
        let rw = |before: &str, after: &str| Rewrite {
            before: before.into(),
            after: after.into(),
        };
        assert!(unusable(&rw("?x == None", "?x is None")).is_none());
        assert!(unusable(&rw("if ?x: ?y", "if ?x:\n    ?y")).is_some());
        assert!(unusable(&rw("a\nb\nc\nd\ne\nf\ng", "a")).is_some());
    }

    #[test]
    fn skip_reasons_have_distinct_keys() {
        let all = [
            Skip::Root,
            Skip::TooManyFiles,
            Skip::NoPythonChange,
            Skip::FormattingOnly,
            Skip::ToolFailed,
            Skip::FileAdded,
            Skip::FileDeleted,
            Skip::Binary,
            Skip::NotUtf8,
            Skip::SyntaxError,
            Skip::TooManyHunks,
            Skip::TooManyLines,
        ];
        let keys: std::collections::BTreeSet<&str> = all.iter().map(|s| s.as_str()).collect();
        assert_eq!(keys.len(), all.len());
    }
}
