//! One scan, end to end: pick the files, start the external tools, run the native analyzers in
//! parallel (answering unchanged files from the cache) while the tools run, add the project
//! rules, then filter (selection, suppression comments, baseline), merge and sort.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agency_core::Category;
use agency_core::contract::{SCHEMA_VERSION, ScanReport, ScanStats, SkippedFile};
use rayon::prelude::*;
use ruff_source_file::LineIndex;
use ruff_text_size::TextSize;
use sha2::{Digest, Sha256};

use crate::cache::{Cache, CachedDiagnostic, FileEntry};
use crate::discover::{self, Excludes};
use crate::finding::{self, ScannedFinding};
use crate::git::{self, Changes};
use crate::native;
use crate::project::{self, FileFacts, ImportGraph};
use crate::suppress::Suppressions;
use crate::tools::{self, RawFinding, Tool, ToolLocations, ToolOutcome, ToolRequest};
use crate::{Error, Result};

/// Everything a scan needs, resolved (configuration and flags merged by the caller).
#[derive(Debug, Clone)]
pub struct ScanSettings {
    /// The repository root, canonical.
    pub root: PathBuf,
    /// Paths to scan (files or directories); empty means the whole repository.
    pub paths: Vec<PathBuf>,
    /// Only files changed in git, if set.
    pub changes: Option<Changes>,
    pub exclude: Vec<String>,
    /// Rule codes or prefixes to report; empty means all.
    pub select: Vec<String>,
    pub ignore: Vec<String>,
    pub tools: Vec<Tool>,
    pub locations: ToolLocations,
    /// Use and update `.agency/cache/`.
    pub cache: bool,
    pub tool_timeout: Duration,
    /// Finding ids not to report (a baseline).
    pub baseline: HashSet<String>,
    /// bandit processes at once (`None`: one per core, at most four).
    pub bandit_shards: Option<usize>,
    /// A runtime log: when set, the scan reads its Python tracebacks instead of running the
    /// analyzers and tools (`--from-log`).
    pub log: Option<String>,
    /// Where ruff and mypy keep their caches when `cache` is off (`<dir>/<tool>`): the heal's
    /// re-scans of its private copy, one directory per worker, never shared by two at once.
    pub tool_cache: Option<PathBuf>,
}

impl ScanSettings {
    /// Defaults for a repository: every file, every rule, all tools, cache on.
    pub fn new(root: PathBuf) -> Self {
        ScanSettings {
            root,
            paths: Vec::new(),
            changes: None,
            exclude: Vec::new(),
            select: Vec::new(),
            ignore: Vec::new(),
            tools: Tool::ALL.to_vec(),
            locations: ToolLocations::default(),
            cache: true,
            tool_timeout: Duration::from_mins(10),
            baseline: HashSet::new(),
            bandit_shards: None,
            log: None,
            tool_cache: None,
        }
    }

    fn rule_enabled(&self, rule: &str) -> bool {
        let matches = |prefixes: &[String]| {
            prefixes
                .iter()
                .any(|p| rule.len() >= p.len() && rule[..p.len()].eq_ignore_ascii_case(p))
        };
        (self.select.is_empty() || matches(&self.select)) && !matches(&self.ignore)
    }
}

/// What a scan produced.
#[derive(Debug, Clone)]
pub struct ScanOutput {
    pub report: ScanReport,
    /// The findings with the tool fixes the heal engine needs, in report order.
    pub findings: Vec<ScannedFinding>,
    /// What the user should know that is not a finding (e.g. tracebacks with no frame in the
    /// repository); the CLI prints these as warnings.
    pub notes: Vec<String>,
}

/// Progress events for a long scan (the CLI draws them).
#[derive(Debug, Clone)]
pub enum Progress {
    Discovered { files: usize },
    Analyzed { done: usize, total: usize },
    ToolFinished { tool: &'static str },
}

/// A file's text and where its lines start.
struct Source {
    text: String,
    index: LineIndex,
}

impl Source {
    fn line(&self, line: u32) -> Option<String> {
        let idx = ruff_source_file::OneIndexed::new(line as usize)?;
        if idx.get() > self.index.line_count() {
            return None;
        }
        let range = self.index.line_range(idx, &self.text);
        Some(self.text[range].trim_end_matches(['\n', '\r']).to_string())
    }
}

/// The engine identity that keys the cache: a cache from another version or rule set is void.
fn engine_id() -> String {
    let codes: Vec<&str> = native::rules::FILE_RULES
        .iter()
        .flat_map(|family| family.iter().map(|(code, _)| *code))
        .collect();
    format!("{} {}", env!("CARGO_PKG_VERSION"), codes.join(","))
}

/// Runs the scan.
pub fn scan(settings: &ScanSettings, progress: &(dyn Fn(Progress) + Sync)) -> Result<ScanOutput> {
    let started = Instant::now();
    let root = &settings.root;
    let excludes = Excludes::new(&settings.exclude)?;
    let mut files = discover::discover(root, &settings.paths, &excludes)?;
    if let Some(log) = &settings.log {
        return Ok(scan_log(settings, log, &files, started));
    }
    if let Some(changes) = &settings.changes {
        let changed: HashSet<String> = git::changed_files(root, changes)?.into_iter().collect();
        files.retain(|f| changed.contains(f));
    }
    progress(Progress::Discovered { files: files.len() });

    let mut cache = if settings.cache {
        Some(Cache::load(root, &engine_id()))
    } else {
        None
    };

    // Read every file once: text for the analyzers, suppressions and snippets.
    let mut skipped = Vec::new();
    let read: Vec<(String, ReadResult)> = files
        .par_iter()
        .map(|rel| (rel.clone(), read_source(&root.join(rel))))
        .collect();
    let mut sources: Vec<(String, String, String)> = Vec::with_capacity(read.len());
    for (rel, result) in read {
        match result {
            Ok((text, hash)) => sources.push((rel, text, hash)),
            Err(reason) => skipped.push(SkippedFile { file: rel, reason }),
        }
    }
    let readable: Vec<String> = sources.iter().map(|(rel, _, _)| rel.clone()).collect();

    // External tools run on their own threads while the native analysis uses the rest.
    let tool_files: Vec<String> = readable.clone();
    let hashes: HashMap<String, String> = sources
        .iter()
        .map(|(rel, _, hash)| (rel.clone(), hash.clone()))
        .collect();
    // mypy stops at the first file that does not parse and reports nothing else, so it waits
    // for the native pass (a fraction of its own run time) to learn which files to leave out.
    let (broken_tx, broken_rx) = std::sync::mpsc::channel::<HashSet<String>>();
    let broken_rx = std::sync::Mutex::new(broken_rx);
    let (outcomes, entries) = std::thread::scope(|scope| {
        let handles: Vec<_> = settings
            .tools
            .iter()
            .map(|&tool| {
                let files = &tool_files;
                let hashes = &hashes;
                let broken_rx = &broken_rx;
                scope.spawn(move || {
                    let outcome = if tool == Tool::Mypy {
                        let broken = broken_rx
                            .lock()
                            .ok()
                            .and_then(|rx| rx.recv().ok())
                            .unwrap_or_default();
                        let files: Vec<String> = files
                            .iter()
                            .filter(|f| !broken.contains(*f))
                            .cloned()
                            .collect();
                        run_tool(tool, settings, &files, hashes)
                    } else {
                        run_tool(tool, settings, files, hashes)
                    };
                    progress(Progress::ToolFinished { tool: tool.name() });
                    outcome
                })
            })
            .collect();
        let entries = analyze_all(&sources, cache.as_ref(), progress);
        let broken: HashSet<String> = sources
            .iter()
            .zip(&entries)
            .filter(|(_, (entry, _))| {
                entry
                    .diagnostics
                    .iter()
                    .any(|d| d.rule == native::rules::SYNTAX_ERROR)
            })
            .map(|((rel, _, _), _)| rel.clone())
            .collect();
        // The receiver is gone only when mypy is not run.
        let _ = broken_tx.send(broken);
        let outcomes: Vec<ToolOutcome> = handles
            .into_iter()
            .zip(&settings.tools)
            .map(|(h, &tool)| {
                h.join().unwrap_or_else(|_| {
                    ToolOutcome::failed(
                        tool,
                        Path::new(tool.name()),
                        Instant::now(),
                        format!("the {} adapter panicked; please report this", tool.name()),
                    )
                })
            })
            .collect();
        (outcomes, entries)
    });

    let source_map: HashMap<&str, Source> = sources
        .iter()
        .map(|(rel, text, _)| {
            (
                rel.as_str(),
                Source {
                    index: LineIndex::from_source_text(text),
                    text: text.clone(),
                },
            )
        })
        .collect();

    let mut raw: Vec<RawFinding> = Vec::new();
    let mut lines_scanned = 0;
    let mut cached_files = 0;
    for ((rel, _, _), (entry, from_cache)) in sources.iter().zip(&entries) {
        lines_scanned += entry.lines;
        cached_files += u64::from(*from_cache);
        raw.extend(entry.diagnostics.iter().map(|d| native_finding(rel, d)));
    }

    // Project rules over every file of the repository (cached facts for those not scanned).
    let project_raw = project_findings(settings, &excludes, &sources, &entries, cache.as_mut())?;
    raw.extend(project_raw);

    let mut tool_runs = Vec::new();
    for outcome in outcomes {
        let readable_set: HashSet<&str> = readable.iter().map(String::as_str).collect();
        raw.extend(
            outcome
                .findings
                .into_iter()
                .filter(|f| readable_set.contains(f.file.as_str())),
        );
        tool_runs.push(outcome.run);
    }

    if let Some(cache) = cache.as_mut() {
        for ((rel, _, _), (entry, from_cache)) in sources.iter().zip(&entries) {
            if !from_cache {
                cache.insert(rel.clone(), entry.clone());
            }
        }
        if settings.paths.is_empty() && settings.changes.is_none() {
            let present: HashSet<&str> = readable.iter().map(String::as_str).collect();
            cache.retain(|f| present.contains(f));
        }
        if let Err(e) = cache.save() {
            tracing::warn!(root = %root.display(), error = %e, "cannot write the scan cache; scanning without it");
        }
    }

    let (mut findings, suppressed, baselined) = filter_and_finalize(settings, raw, &source_map);
    let superseded = drop_superseded(settings, &mut findings);
    let report = ScanReport {
        version: SCHEMA_VERSION,
        findings: findings.iter().map(|f| f.finding.clone()).collect(),
        stats: ScanStats {
            files_scanned: readable.len() as u64,
            duration_ms: started.elapsed().as_millis() as u64,
            lines_scanned,
            suppressed,
            baselined,
            cached_files,
            superseded,
        },
        tools: tool_runs,
        skipped,
    };
    Ok(ScanOutput {
        report,
        findings,
        notes: Vec::new(),
    })
}

/// The runtime scan of a log: its tracebacks mapped to the repository's `files`, then filtered
/// like any scan (selection, suppression comments, baseline).
fn scan_log(settings: &ScanSettings, log: &str, files: &[String], started: Instant) -> ScanOutput {
    let tracebacks = crate::traceback::parse_log(log);
    let read_lines = |file: &str| -> Option<Vec<String>> {
        let (text, _) = read_source(&settings.root.join(file)).ok()?;
        Some(text.lines().map(ToString::to_string).collect())
    };
    let raw = crate::traceback::findings(&tracebacks, files, &read_lines);
    let mut owned: HashMap<String, Source> = HashMap::new();
    let mut skipped = Vec::new();
    for f in &raw {
        if owned.contains_key(&f.file) || skipped.iter().any(|s: &SkippedFile| s.file == f.file) {
            continue;
        }
        match read_source(&settings.root.join(&f.file)) {
            Ok((text, _)) => {
                let index = LineIndex::from_source_text(&text);
                owned.insert(f.file.clone(), Source { text, index });
            }
            Err(reason) => skipped.push(SkippedFile {
                file: f.file.clone(),
                reason,
            }),
        }
    }
    let mapped = raw.len();
    let (findings, suppressed, baselined) = filter_and_finalize(settings, raw, &owned);
    let mut notes = Vec::new();
    if tracebacks.is_empty() {
        notes.push(
            "the log holds no Python traceback (`Traceback (most recent call last):`)".to_string(),
        );
    }
    let outside = tracebacks.len()
        - tracebacks
            .iter()
            .filter(|tb| {
                tb.frames
                    .iter()
                    .any(|f| crate::traceback::map_frame(&f.path, files).is_some())
            })
            .count();
    if outside > 0 {
        notes.push(format!(
            "{outside} of {} tracebacks have no frame in this repository (library or other code); run agency from the repository that produced the log",
            tracebacks.len()
        ));
    }
    tracing::debug!(tracebacks = tracebacks.len(), mapped, "log scanned");
    let lines_scanned = owned.values().map(|s| s.index.line_count() as u64).sum();
    let report = ScanReport {
        version: SCHEMA_VERSION,
        findings: findings.iter().map(|f| f.finding.clone()).collect(),
        stats: ScanStats {
            files_scanned: owned.len() as u64,
            duration_ms: started.elapsed().as_millis() as u64,
            lines_scanned,
            suppressed,
            baselined,
            cached_files: 0,
            superseded: 0,
        },
        tools: Vec::new(),
        skipped,
    };
    ScanOutput {
        report,
        findings,
        notes,
    }
}

/// Without a bandit configuration, bandit's pattern checks that an enabled native rule checks
/// with data flow (string-built SQL, `mark_safe`, hardcoded passwords) are kept only where the
/// native rule agrees (the findings merged); elsewhere the native rule looked at the same code
/// and found the values constant, escaped or not secret. Returns how many were dropped.
fn drop_superseded(settings: &ScanSettings, findings: &mut Vec<ScannedFinding>) -> u64 {
    if crate::tools::bandit::configured(&settings.root) {
        return 0;
    }
    let before = findings.len();
    findings.retain(|f| {
        let superseded = f.finding.tool == "bandit"
            && finding::native_counterpart(&f.finding.rule)
                .is_some_and(|native| settings.rule_enabled(native))
            && !f.finding.sources.iter().any(|s| s.tool == "agency");
        !superseded
    });
    (before - findings.len()) as u64
}

/// Drops what the selection, suppression comments and the baseline hide, then merges and
/// sorts: (findings, suppressed, baselined).
fn filter_and_finalize<K: std::borrow::Borrow<str> + std::hash::Hash + Eq>(
    settings: &ScanSettings,
    mut raw: Vec<RawFinding>,
    source_map: &HashMap<K, Source>,
) -> (Vec<ScannedFinding>, u64, u64) {
    // Filter by selection and suppression comments.
    let suppressions: HashMap<&str, Suppressions> = source_map
        .iter()
        .map(|(rel, source)| (rel.borrow(), Suppressions::parse(&source.text)))
        .collect();
    raw.retain(|f| settings.rule_enabled(&f.rule));
    let mut suppressed = 0u64;
    raw.retain(|f| {
        let hidden = suppressions.get(f.file.as_str()).is_some_and(|s| {
            s.hides(
                f.line as usize,
                f.end_line.max(f.line) as usize,
                f.category,
                &[f.rule.as_str(), finding::defect_group(&f.rule)],
            )
        });
        suppressed += u64::from(hidden);
        !hidden
    });

    let line_text = |file: &str, line: u32| source_map.get(file).and_then(|s| s.line(line));
    let mut findings = finding::finalize(raw, &line_text);
    // Merged findings: a comment naming any source's code hides the merged finding.
    findings.retain(|f| {
        let hidden = suppressions.get(f.finding.file.as_str()).is_some_and(|s| {
            let rules: Vec<&str> = f.finding.sources.iter().map(|s| s.rule.as_str()).collect();
            let category: Category = f.finding.category.parse().unwrap_or(Category::Style);
            s.hides(
                f.finding.line as usize,
                f.finding.end_line as usize,
                category,
                &rules,
            )
        });
        suppressed += u64::from(hidden);
        !hidden
    });
    let before = findings.len();
    findings.retain(|f| !settings.baseline.contains(&f.finding.id));
    let baselined = (before - findings.len()) as u64;

    (findings, suppressed, baselined)
}

/// A file's text and content hash, or why it cannot be analysed.
type ReadResult = std::result::Result<(String, String), String>;

/// Reads a file as UTF-8 text with its content hash, or says why it cannot be analysed.
fn read_source(path: &Path) -> ReadResult {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    if bytes.contains(&0) {
        return Err("binary file (contains NUL bytes)".to_string());
    }
    let hash = agency_core::pattern::hex(&Sha256::digest(&bytes));
    let text = String::from_utf8(bytes).map_err(|e| {
        format!(
            "not UTF-8 (invalid byte at offset {}); Python 3 source must be UTF-8 unless it declares another encoding, which agency does not read",
            e.utf8_error().valid_up_to()
        )
    })?;
    Ok((text, hash))
}

/// Native analysis of every readable file, in parallel; `(entry, from_cache)` in input order.
fn analyze_all(
    sources: &[(String, String, String)],
    cache: Option<&Cache>,
    progress: &(dyn Fn(Progress) + Sync),
) -> Vec<(FileEntry, bool)> {
    let done = std::sync::atomic::AtomicUsize::new(0);
    let total = sources.len();
    sources
        .par_iter()
        .map(|(rel, text, hash)| {
            let result = match cache.and_then(|c| c.get(rel, hash)) {
                Some(entry) => (entry.clone(), true),
                None => (analyze_file(rel, text, hash), false),
            };
            let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            if n.is_multiple_of(64) || n == total {
                progress(Progress::Analyzed { done: n, total });
            }
            result
        })
        .collect()
}

/// Runs every native rule on one file (selection is applied later, so the cache holds all).
fn analyze_file(rel: &str, text: &str, hash: &str) -> FileEntry {
    let analysis = native::analyze_source(rel, text, &|_| true);
    let index = LineIndex::from_source_text(text);
    let locate = |offset: TextSize| {
        let loc = index.line_column(offset, text);
        (loc.line.get() as u32, loc.column.get() as u32)
    };
    let diagnostics = analysis
        .diagnostics
        .into_iter()
        .map(|d| {
            let (line, column) = locate(d.range.start());
            let (end_line, end_column) = locate(d.range.end());
            CachedDiagnostic {
                rule: d.rule.to_string(),
                line,
                column,
                end_line,
                end_column,
                message: d.message,
                severity: d.severity,
                impact_pct: d.impact_pct,
                related_line: d
                    .related
                    .map(|r| locate(r.start()).0)
                    .filter(|&l| l != line),
            }
        })
        .collect();
    FileEntry {
        hash: hash.to_string(),
        lines: analysis.lines as u64,
        diagnostics,
        imports: analysis.imports,
        unbound: analysis.unbound,
    }
}

fn native_finding(rel: &str, d: &CachedDiagnostic) -> RawFinding {
    let category = agency_core::codes::lookup(&d.rule).map_or(Category::Type, |r| r.category);
    RawFinding {
        tool: "agency",
        rule: d.rule.clone(),
        category,
        severity: d.severity,
        file: rel.to_string(),
        line: d.line,
        column: d.column,
        end_line: d.end_line,
        end_column: d.end_column,
        message: d.message.clone(),
        fix: None,
        impact_pct: d.impact_pct,
        related_line: d.related_line,
    }
}

/// Runs one external tool on the files it can check.
pub(crate) fn run_tool(
    tool: Tool,
    settings: &ScanSettings,
    files: &[String],
    hashes: &HashMap<String, String>,
) -> ToolOutcome {
    let Some((exe, own)) = tools::locate(tool, &settings.root, &settings.locations) else {
        return ToolOutcome::missing(tool);
    };
    // bandit cannot read stubs; ruff and mypy can.
    let files: Vec<String> = files
        .iter()
        .filter(|f| {
            tool != Tool::Bandit
                || std::path::Path::new(f)
                    .extension()
                    .is_some_and(|e| e == "py")
        })
        .cloned()
        .collect();
    if files.is_empty() {
        return ToolOutcome::ok(tool, &exe, Instant::now(), Vec::new());
    }
    let request = ToolRequest {
        root: &settings.root,
        files: &files,
        exe,
        own,
        cache_dir: if settings.cache {
            Some(Cache::dir(&settings.root).join(tool.name()))
        } else {
            settings
                .tool_cache
                .as_ref()
                .map(|dir| dir.join(tool.name()))
        },
        hashes,
        shards: settings.bandit_shards,
        python: if tool == Tool::Mypy {
            tools::repo_python(&settings.root, &settings.locations)
        } else {
            None
        },
        timeout: settings.tool_timeout,
    };
    tools::run(tool, &request)
}

/// AGY101 and AGY102 over the whole project. Files outside this scan contribute their cached
/// facts, or are analysed now when the cache does not have them.
fn project_findings(
    settings: &ScanSettings,
    excludes: &Excludes,
    sources: &[(String, String, String)],
    entries: &[(FileEntry, bool)],
    cache: Option<&mut Cache>,
) -> Result<Vec<RawFinding>> {
    let root = &settings.root;
    let partial = !settings.paths.is_empty() || settings.changes.is_some();
    let mut extra: Vec<(String, FileEntry)> = Vec::new();
    if partial {
        let scanned: HashSet<&str> = sources.iter().map(|(r, _, _)| r.as_str()).collect();
        let all = discover::discover(root, &[], excludes)?;
        let others: Vec<&String> = all
            .iter()
            .filter(|f| !scanned.contains(f.as_str()))
            .collect();
        let cached: Vec<Option<FileEntry>> = others
            .iter()
            .map(|f| cache.as_ref().and_then(|c| c.get_any(f)).cloned())
            .collect();
        let fresh: Vec<(String, FileEntry)> = others
            .par_iter()
            .zip(cached)
            .filter_map(|(rel, cached)| {
                if let Some(entry) = cached {
                    return Some(((*rel).clone(), entry));
                }
                let (text, hash) = read_source(&root.join(rel)).ok()?;
                Some(((*rel).clone(), analyze_file(rel, &text, &hash)))
            })
            .collect();
        if let Some(cache) = cache {
            for (rel, entry) in &fresh {
                if cache.get(rel, &entry.hash).is_none() {
                    cache.insert(rel.clone(), entry.clone());
                }
            }
        }
        extra = fresh;
    }
    let mut facts: Vec<FileFacts> = sources
        .iter()
        .zip(entries)
        .map(|((rel, _, _), (entry, _))| FileFacts {
            file: rel,
            imports: &entry.imports,
            unbound: &entry.unbound,
        })
        .collect();
    facts.extend(extra.iter().map(|(rel, entry)| FileFacts {
        file: rel,
        imports: &entry.imports,
        unbound: &entry.unbound,
    }));
    let mut package_dirs: HashMap<PathBuf, bool> = HashMap::new();
    let mut names: HashMap<&str, String> = HashMap::new();
    for fact in &facts {
        let mut is_package = |dir: &Path| -> bool {
            *package_dirs
                .entry(dir.to_path_buf())
                .or_insert_with(|| dir.join("__init__.py").is_file())
        };
        names.insert(
            fact.file,
            project::module_name(root, fact.file, &mut is_package),
        );
    }
    let graph = ImportGraph::build(&facts, &names);
    let mut out = Vec::new();
    if settings.rule_enabled("AGY101") {
        let scanned: BTreeSet<&str> = sources.iter().map(|(r, _, _)| r.as_str()).collect();
        out.extend(graph.cycle_findings(partial.then_some(&scanned)));
    }
    if settings.rule_enabled("AGY102") {
        let top = graph.top_level();
        for fact in facts.iter().take(sources.len()) {
            out.extend(project::missing_imports(fact, &top));
        }
    }
    Ok(out)
}

/// Returns `Err` if the scan root is unusable.
pub fn check_root(root: &Path) -> Result<PathBuf> {
    std::fs::canonicalize(root).map_err(|e| Error::Io {
        path: root.to_path_buf(),
        source: e,
    })
}
