//! The native analyzers: Python parsed once per file with ruff's parser (chosen by measurement,
//! see ARCHITECTURE.md), then every file rule run over the tree. Rules live one per file under
//! `rules/`; each is a plain function `fn(&Checker, &mut Vec<Diagnostic>)` that walks what it
//! needs, so rules stay independent and a new one is one file plus one registry line.
//!
//! Broken Python is input, not an error: a file that does not parse still yields its parse
//! errors (as `syntax-error` findings) and whatever the recovered tree lets the rules see.

pub mod helpers;
pub mod imports;
pub mod names;
pub mod names_table;
pub mod rules;

use agency_core::contract::Severity;
use ruff_python_ast::{ModModule, PySourceType};
use ruff_source_file::LineIndex;
use ruff_text_size::{TextRange, TextSize};

pub use imports::ModuleImports;

/// One problem a native rule found in one file, in byte offsets. Lines and columns are computed
/// only at the output edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// A code from `agency_core::codes` (`AGY201`, `syntax-error`, ...).
    pub rule: &'static str,
    pub range: TextRange,
    pub message: String,
    pub severity: Severity,
    /// A deterministic fixer exists for this finding.
    pub fix_available: bool,
    /// Estimated share of the enclosing work a fix saves, in percent (performance rules).
    pub impact_pct: Option<u32>,
    /// Where the defect starts when that is elsewhere (the construction of a query that
    /// reaches a sink on a later line); other tools report it there.
    pub related: Option<TextRange>,
}

impl Diagnostic {
    pub fn new(rule: &'static str, range: TextRange, message: impl Into<String>) -> Self {
        Diagnostic {
            rule,
            range,
            message: message.into(),
            severity: Severity::Medium,
            fix_available: false,
            impact_pct: None,
            related: None,
        }
    }

    #[must_use]
    pub fn severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }

    /// Records where the defect starts, when that is another place than `range`.
    #[must_use]
    pub fn related(mut self, range: TextRange) -> Self {
        self.related = Some(range);
        self
    }

    #[must_use]
    pub fn impact(mut self, pct: u32) -> Self {
        self.impact_pct = Some(pct);
        self
    }
}

/// What a rule sees of one file.
pub struct Checker<'a> {
    /// Path relative to the repository root, `/`-separated.
    pub path: &'a str,
    pub source: &'a str,
    pub module: &'a ModModule,
    pub line_index: &'a LineIndex,
}

impl Checker<'_> {
    /// The source text of a range.
    pub fn slice(&self, range: TextRange) -> &str {
        &self.source[range]
    }

    /// The 1-based line of an offset.
    pub fn line_of(&self, offset: TextSize) -> usize {
        self.line_index.line_index(offset).get()
    }

    /// True for test files, where fixtures and fake credentials are expected.
    pub fn is_test_file(&self) -> bool {
        let file = self.path.rsplit('/').next().unwrap_or(self.path);
        file.starts_with("test_")
            || file.ends_with("_test.py")
            || file == "conftest.py"
            || self
                .path
                .split('/')
                .any(|part| part == "tests" || part == "test")
    }
}

/// Everything the native analysis learned about one file.
#[derive(Debug, Clone, Default)]
pub struct FileAnalysis {
    pub diagnostics: Vec<Diagnostic>,
    /// Import-time imports, for the project's import graph.
    pub imports: ModuleImports,
    /// Names read but never bound, for `missing-import` (decided with the project's modules).
    pub unbound: Vec<names::UnboundName>,
    /// Number of lines in the file.
    pub lines: usize,
}

/// The signature of a per-file rule.
pub type FileRule = fn(&Checker, &mut Vec<Diagnostic>);

/// Parses `source` and runs every per-file rule accepted by `enabled`.
pub fn analyze_source(path: &str, source: &str, enabled: &dyn Fn(&str) -> bool) -> FileAnalysis {
    let source_type = if std::path::Path::new(path)
        .extension()
        .is_some_and(|e| e == "pyi")
    {
        PySourceType::Stub
    } else {
        PySourceType::Python
    };
    let parsed = ruff_python_parser::parse_unchecked_source(source, source_type);
    let line_index = LineIndex::from_source_text(source);
    let mut diagnostics = Vec::new();
    if enabled(rules::SYNTAX_ERROR) {
        for error in parsed.errors() {
            diagnostics.push(
                Diagnostic::new(
                    rules::SYNTAX_ERROR,
                    error.location,
                    format!("syntax error: {}", error.error),
                )
                .severity(Severity::High),
            );
        }
    }
    let checker = Checker {
        path,
        source,
        module: parsed.syntax(),
        line_index: &line_index,
    };
    for (code, rule) in rules::FILE_RULES.iter().flat_map(|family| family.iter()) {
        if enabled(code) {
            rule(&checker, &mut diagnostics);
        }
    }
    diagnostics.sort_by_key(|d| (d.range.start(), d.rule));
    diagnostics.dedup_by(|a, b| a.rule == b.rule && a.range == b.range);
    let locate = |offset: u32| {
        let loc = line_index.line_column(TextSize::from(offset), source);
        (loc.line.get() as u32, loc.column.get() as u32)
    };
    let mut imports = imports::collect(parsed.syntax());
    for import in &mut imports.imports {
        (import.line, import.column) = locate(import.start);
    }
    let insert_at = imports::insert_offset(parsed.syntax());
    imports.insert_line = if insert_at == 0 {
        1
    } else {
        locate(insert_at).0 + 1
    };
    let mut unbound = names::unbound_names(parsed.syntax());
    for name in &mut unbound {
        (name.line, name.column) = locate(name.start);
    }
    FileAnalysis {
        diagnostics,
        imports,
        unbound,
        lines: line_index.line_count(),
    }
}
