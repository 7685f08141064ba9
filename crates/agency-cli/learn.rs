//! `agency patterns learn --from-git [REV_RANGE]`: patterns learned from the fixes in the
//! repository's history. The walk, the scans, the pairing of findings and the extraction are
//! `agency_heal::history::mine`; this command resolves the settings, stores what was mined
//! through the pattern client and renders the report.
//!
//! A mined rewrite is stored as a `history` pattern with `unsafe` applicability: it starts
//! without a track record (support counts the commits it was seen in, not verified uses) and
//! is never applied unattended until heals here have verified it. Its id is
//! `<category>-<rule>-history-<fingerprint>`. Running the command again on the same history
//! adds nothing: a commit whose example the pattern already has does not count again. A
//! rewrite the store retired is never learned again; it is reported as refused. (Examples are
//! compared by their text, so a later commit whose example reads exactly like a stored one
//! adds no support either.)
//!
//! `--json` prints `{"version": 1, "range", "commits", "merges", "skipped": {reason: count},
//! "removed", "patterns": [{"id", "rule", "category", "before", "after", "support", "commits",
//! "stored": "learned|merged|known"}], "learned", "merged", "known", "refused": [{"id"?,
//! "commit", "file"?, "rule", "line"?, "reason"}], "notes": [{"commit", "file"?, "reason",
//! "message"}], "duration_ms"}`. `skipped` counts whole commits (`root_commit`,
//! `too_many_files`, `no_python_change`, `formatting_only`, `tool_failed`) and single files
//! (`file_added`, `file_deleted`, `binary_file`, `not_utf8`, `syntax_error`, `too_many_hunks`,
//! `too_many_lines`). Exit 0 when the walk finished (whatever it learned), 2 on bad input (a
//! range git does not know, not a git repository, an unknown tool, a missing tool).

use std::path::Path;
use std::time::Instant;

use agency_client::PatternClient;
use agency_client::wire::{ExampleRequest, LearnRequest};
use agency_heal::history::{self, MineSettings, Mined, MinedRewrite};
use agency_scan::tools::Tool;
use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;

use crate::ExitStatus;
use crate::output::{self, print_json, print_text};

#[derive(Debug, Args)]
pub struct LearnArgs {
    /// Walk the repository's git history (first-parent, non-merge commits).
    #[arg(long)]
    pub from_git: bool,
    /// The commits to walk (default: all of HEAD's history).
    pub rev_range: Option<String>,
    /// Tools whose findings are mined, besides agency's own rules: ruff, bandit, mypy (slow,
    /// about a second per scan), or none.
    #[arg(long, value_delimiter = ',', default_value = "ruff,bandit")]
    pub tools: Vec<String>,
    /// Print the report as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// How one mined rewrite ended in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Stored {
    /// A new pattern.
    Learned,
    /// Added to a pattern with the same rewrite (support +1 per new commit).
    Merged,
    /// Every commit of it was already an example of the stored pattern.
    Known,
}

#[derive(Debug, Serialize)]
struct PatternDoc {
    id: String,
    rule: String,
    category: String,
    before: String,
    after: String,
    /// Commits that showed the fix in this run.
    support: usize,
    commits: Vec<String>,
    stored: Stored,
}

#[derive(Debug, Serialize)]
struct RefusedDoc {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    commit: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<String>,
    rule: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<u32>,
    reason: String,
}

#[derive(Debug, Serialize)]
struct NoteDoc {
    commit: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<String>,
    reason: &'static str,
    message: String,
}

#[derive(Debug, Serialize)]
struct LearnReport {
    version: u32,
    range: String,
    /// First-parent, non-merge commits walked.
    commits: usize,
    /// Merge commits on the first-parent line, not walked.
    merges: usize,
    /// Skipped commits and files, by reason.
    skipped: std::collections::BTreeMap<&'static str, usize>,
    /// Findings a commit removed by changing their line.
    removed: usize,
    patterns: Vec<PatternDoc>,
    learned: usize,
    merged: usize,
    known: usize,
    refused: Vec<RefusedDoc>,
    notes: Vec<NoteDoc>,
    duration_ms: u64,
}

pub fn run(home: &Path, args: &LearnArgs) -> anyhow::Result<ExitStatus> {
    if !args.from_git {
        bail!(
            "agency patterns learn needs a source of fixes: run `agency patterns learn --from-git [REV_RANGE]`"
        );
    }
    let started = Instant::now();
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let root = crate::config::find_root(&cwd);
    let mut scan = crate::heal::default_heal_settings(home, &root)?.scan;
    scan.tools = tools(&args.tools)?;
    let settings = MineSettings {
        root: root.clone(),
        range: args.rev_range.clone(),
        scan,
        limits: history::Limits::default(),
    };
    let mined = mine_with_progress(&settings)?;

    let mut patterns = Vec::new();
    let mut refused: Vec<RefusedDoc> = mined
        .refused
        .iter()
        .map(|r| RefusedDoc {
            id: None,
            commit: r.commit.clone(),
            file: Some(r.file.clone()),
            rule: r.rule.clone(),
            line: Some(r.line),
            reason: r.reason.clone(),
        })
        .collect();
    if !mined.rewrites.is_empty() {
        let client = crate::patterns::heal_client(home)?;
        for rewrite in &mined.rewrites {
            match store(client.as_ref(), rewrite)? {
                Ok(doc) => patterns.push(doc),
                Err(doc) => refused.push(doc),
            }
        }
    }
    let count = |what: Stored| patterns.iter().filter(|p| p.stored == what).count();
    let report = LearnReport {
        version: agency_core::contract::SCHEMA_VERSION,
        range: mined.range.clone(),
        commits: mined.commits,
        merges: mined.merges,
        skipped: mined
            .skipped
            .iter()
            .map(|(skip, n)| (skip.as_str(), *n))
            .collect(),
        removed: mined.removed,
        learned: count(Stored::Learned),
        merged: count(Stored::Merged),
        known: count(Stored::Known),
        patterns,
        refused,
        notes: notes(&mined),
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    if args.json {
        print_json(&report)?;
    } else {
        print_text(&render(&report))?;
    }
    Ok(ExitStatus::Success)
}

fn tools(names: &[String]) -> anyhow::Result<Vec<Tool>> {
    let mut out = Vec::new();
    for name in names {
        let tool = match name.trim() {
            "none" => continue,
            "ruff" => Tool::Ruff,
            "mypy" => Tool::Mypy,
            "bandit" => Tool::Bandit,
            other => {
                bail!("unknown tool `{other}` in --tools: expected ruff, bandit, mypy or none")
            }
        };
        if !out.contains(&tool) {
            out.push(tool);
        }
    }
    Ok(out)
}

fn mine_with_progress(settings: &MineSettings) -> anyhow::Result<Mined> {
    let plain = output::plain_progress();
    let bar = std::cell::RefCell::new(None::<indicatif::ProgressBar>);
    let progress = |event: history::Progress| match event {
        history::Progress::Started { commits } => {
            if plain {
                eprintln!("agency: walking {commits} commits");
            }
            *bar.borrow_mut() = Some(output::bar(commits, "commits"));
        }
        history::Progress::Commit { done, total, sha } => {
            if plain {
                eprintln!(
                    "agency: commit {done}/{total} {}",
                    &sha[..sha.len().min(12)]
                );
            }
            if let Some(bar) = bar.borrow().as_ref() {
                bar.set_position(done as u64);
            }
        }
    };
    let mined = history::mine(settings, &progress);
    if let Some(bar) = bar.borrow_mut().take() {
        bar.finish_and_clear();
    }
    Ok(mined?)
}

/// The pattern id of a mined rewrite.
fn pattern_id(rewrite: &MinedRewrite) -> String {
    let slug = |s: &str| -> String {
        s.to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect()
    };
    format!(
        "{}-{}-history-{}",
        slug(&rewrite.category),
        slug(&rewrite.rule),
        &rewrite.fingerprint[..rewrite.fingerprint.len().min(12)]
    )
}

/// Stores one mined rewrite: one learn per commit not yet among the stored pattern's examples
/// (the first inserts or merges into an equal rewrite, each further one adds support). A
/// refusal by the store (a retired rewrite, an invalid pattern) is the `Err` side; a store that
/// cannot be reached ends the command.
fn store(
    client: &dyn PatternClient,
    rewrite: &MinedRewrite,
) -> anyhow::Result<Result<PatternDoc, RefusedDoc>> {
    let mut id = pattern_id(rewrite);
    let commits = rewrite.commits();
    let refuse = |id: &str, reason: String| RefusedDoc {
        id: Some(id.to_string()),
        commit: commits.first().map(|c| c.sha.clone()).unwrap_or_default(),
        file: rewrite.examples.first().map(|e| e.file.clone()),
        rule: rewrite.rule.clone(),
        line: rewrite.examples.first().map(|e| e.line),
        reason,
    };
    // What the store already has under this id: its examples, or its retirement.
    let (known, existed): (Vec<(String, String)>, bool) = match client.show(&id) {
        Ok(view) => {
            if let Some(retired) = view.retired {
                return Ok(Err(refuse(
                    &id,
                    format!(
                        "the store retired this rewrite ({}); a retired rewrite is never learned again",
                        retired.reason
                    ),
                )));
            }
            let examples = view
                .examples
                .into_iter()
                .map(|e| (e.before, e.after))
                .collect();
            (examples, true)
        }
        Err(e) if e.code() == Some("not_found") => (Vec::new(), false),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot look up pattern {id} in {}", client.describe()));
        }
    };
    let mut stored = Stored::Known;
    for commit in &commits {
        let examples: Vec<ExampleRequest> = rewrite
            .examples
            .iter()
            .filter(|e| e.commit.sha == commit.sha)
            .filter(|e| {
                !known
                    .iter()
                    .any(|(b, a)| *b == e.example.before && *a == e.example.after)
            })
            .map(|e| ExampleRequest {
                before: e.example.before.clone(),
                after: e.example.after.clone(),
                source: "history".into(),
            })
            .collect();
        if examples.is_empty() {
            continue;
        }
        let short = &commit.sha[..commit.sha.len().min(12)];
        let request = LearnRequest {
            version: None,
            id: id.clone(),
            category: rewrite.category.clone(),
            rule: rewrite.rule.clone(),
            title: format!(
                "{}: {}",
                rewrite.rule,
                agency_heal::patterns::first_words(&rewrite.message, 60)
            ),
            message: rewrite.message.clone(),
            explanation: format!(
                "Learned from commit {short} \"{}\" in the repository's history: a human fix that removed a finding of {}. Not yet verified by a heal here.",
                commit.subject, rewrite.rule
            ),
            // Never applied unattended until heals verify it.
            applicability: "unsafe".into(),
            before: rewrite.rewrite.before.clone(),
            after: rewrite.rewrite.after.clone(),
            examples,
            source: "history".into(),
        };
        match client.learn(&request) {
            Ok(response) => {
                if response.inserted() && stored == Stored::Known && !existed {
                    stored = Stored::Learned;
                } else if stored == Stored::Known {
                    stored = Stored::Merged;
                }
                // An equal rewrite stored under another id (learned from a heal, or seeded):
                // the store merged into it, and so will the next commits.
                id = response.id;
            }
            Err(e) if matches!(e.code(), Some("retired" | "invalid_pattern" | "id_taken")) => {
                return Ok(Err(refuse(&id, e.to_string())));
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot store pattern {id} in {}", client.describe())
                });
            }
        }
    }
    Ok(Ok(PatternDoc {
        id,
        rule: rewrite.rule.clone(),
        category: rewrite.category.clone(),
        before: rewrite.rewrite.before.clone(),
        after: rewrite.rewrite.after.clone(),
        support: commits.len(),
        commits: commits.iter().map(|c| c.sha.clone()).collect(),
        stored,
    }))
}

fn notes(mined: &Mined) -> Vec<NoteDoc> {
    mined
        .notes
        .iter()
        .map(|n| NoteDoc {
            commit: n.commit.clone(),
            file: n.file.clone(),
            reason: n.skip.as_str(),
            message: n.message.clone(),
        })
        .collect()
}

/// Notes shown in the text report.
const MAX_NOTES: usize = 10;

fn render(report: &LearnReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let skipped: usize = report.skipped.values().sum();
    let _ = writeln!(
        out,
        "walked {} commits of {} ({} merge commits not walked) in {:.1} s",
        report.commits,
        report.range,
        report.merges,
        report.duration_ms as f64 / 1000.0
    );
    if skipped > 0 {
        let reasons: Vec<String> = report
            .skipped
            .iter()
            .map(|(reason, n)| format!("{reason} {n}"))
            .collect();
        let _ = writeln!(out, "skipped: {}", reasons.join(", "));
    }
    // An old history can have hundreds of files that do not parse (Python 2): the first few
    // say what happened, --json has them all.
    for note in report.notes.iter().take(MAX_NOTES) {
        let _ = writeln!(out, "  note: {}", note.message);
    }
    if report.notes.len() > MAX_NOTES {
        let _ = writeln!(
            out,
            "  ... and {} more notes (--json lists them all)",
            report.notes.len() - MAX_NOTES
        );
    }
    let _ = writeln!(
        out,
        "{} findings removed by fixes; patterns: {} learned, {} merged, {} already known, {} refused",
        report.removed,
        report.learned,
        report.merged,
        report.known,
        report.refused.len()
    );
    if !report.patterns.is_empty() {
        let rows: Vec<Vec<String>> = report
            .patterns
            .iter()
            .map(|p| {
                vec![
                    p.id.clone(),
                    p.rule.clone(),
                    p.support.to_string(),
                    format!("{:?}", p.stored).to_lowercase(),
                    format!("{}  ->  {}", one_line(&p.before), one_line(&p.after)),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&output::table(
            &["ID", "RULE", "COMMITS", "STORED", "REWRITE"],
            &rows,
        ));
    }
    if !report.refused.is_empty() {
        out.push_str("\nrefused:\n");
        for r in &report.refused {
            let place = match (&r.file, r.line) {
                (Some(file), Some(line)) => format!(" {file}:{line}"),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "  {} {}{place} ({}): {}",
                &r.commit[..r.commit.len().min(12)],
                r.rule,
                r.id.as_deref().unwrap_or("not stored"),
                r.reason
            );
        }
    }
    out
}

fn one_line(template: &str) -> String {
    template
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ⏎ ")
}
