//! The learning benchmark (`agency patterns bench --learning`, LEARNING.md §8 check 5): do the
//! patterns learned from a few verified heals heal the same defects elsewhere, with the
//! deterministic fixers off?
//!
//! A private copy of a project receives a corpus of 100 planted defects, ten of each of ten
//! kinds ([`KINDS`]: ruff rules with a safe fix that [`agency_learn::extract`] can turn into a
//! template), each in its own new function or class with its own identifiers, operands and
//! surrounding code ([`generate`], a fixed seed), inserted among the existing top-level
//! definitions of the project's modules ([`plant`]). A test module planted beside them runs
//! every planted function against a copy of the fixed version, so a fix that changes behaviour
//! fails the suite. The bench writes a ruff configuration that extends the project's own with
//! the ten rules.
//!
//! Phase 1 heals the first instance of each kind with the deterministic fixers, and the
//! caller's hook learns from the verified heals as a real heal does. Phase 2 heals the other 90
//! in nine rounds (one instance of each kind per round) with the fixers off (`Tiers::no_rules`),
//! so only a learned pattern can fix them. A learned pattern starts below the auto-apply bar,
//! so its verified fix waits for approval: the bench plays a reviewer who approves every
//! verified pattern fix (recording a success, as `agency approvals approve` does), so that
//! confidence grows as it would in use. Every kept fix is compared with the text ruff's own fix
//! produces (the expected text) and the suite runs at the end of each round.
//!
//! Lookup-to-apply latency is measured around the calls a heal makes for a finding
//! ([`Patterns::candidates`] then [`first_match`]) on the file's current text, apart from the
//! heal (whose attempt times include the test runs).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agency_client::PatternClient;
use agency_core::latency::Latency;
use agency_scan::finding::ScannedFinding;
use ruff_python_ast::Stmt;
use ruff_text_size::Ranged;
use serde::Serialize;

use crate::patterns::{Candidate, Patterns, first_match};
use crate::{Attempt, HealSettings, Status, Strategy, Workspace};

/// Version of [`LearningReport`] (`--json`).
pub const REPORT_VERSION: u32 = 1;

/// The corpus's seed: the same project always gets the same corpus.
pub const SEED: u64 = 0x1ea7_5eed_2025;

/// Instances planted per kind; the first is healed by the fixers, the others by patterns.
pub const PER_KIND: usize = 10;

/// At most this many modules receive planted code.
const MAX_MODULES: usize = 25;

/// The planted test module's file name.
pub const TEST_FILE: &str = "test_agency_learning_bench.py";

/// One kind of defect: a ruff rule with a safe fix in the `style` category (no human needed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Kind {
    pub rule: &'static str,
    pub name: &'static str,
    /// The defect and its fix, for people.
    pub shape: &'static str,
}

/// The ten kinds. Each was checked to be fixed by ruff with a `safe` fix, learned by
/// extraction from one fix, and to match again with other identifiers and surroundings.
pub const KINDS: [Kind; 10] = [
    Kind {
        rule: "E713",
        name: "not-in-test",
        shape: "not a in b -> a not in b",
    },
    Kind {
        rule: "E714",
        name: "not-is-test",
        shape: "not a is b -> a is not b",
    },
    Kind {
        rule: "F541",
        name: "f-string-missing-placeholders",
        shape: "f\"text\" -> \"text\"",
    },
    Kind {
        rule: "UP025",
        name: "unicode-kind-prefix",
        shape: "u\"text\" -> \"text\"",
    },
    Kind {
        rule: "UP012",
        name: "unnecessary-encode-utf8",
        shape: "\"text\".encode(\"utf-8\") -> b\"text\"",
    },
    Kind {
        rule: "PIE808",
        name: "unnecessary-range-start",
        shape: "range(0, n) -> range(n)",
    },
    Kind {
        rule: "UP015",
        name: "redundant-open-modes",
        shape: "open(p, \"r\") -> open(p)",
    },
    Kind {
        rule: "UP004",
        name: "useless-object-inheritance",
        shape: "class C(object): -> class C:",
    },
    Kind {
        rule: "PLR5501",
        name: "collapsible-else-if",
        shape: "else: if c: ... -> elif c: ...",
    },
    Kind {
        rule: "UP024",
        name: "os-error-alias",
        shape: "except IOError: -> except OSError:",
    },
];

/// Everything that stops the benchmark. A fix that fails is a result, not an error.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{} is not a directory: pass the project with --project DIR", path.display())]
    NotADirectory { path: PathBuf },
    #[error(
        "{} has no importable Python module outside its tests to plant defects in (a module is a .py file at the top or in a package with __init__.py); pass another project with --project DIR",
        path.display()
    )]
    NoModules { path: PathBuf },
    #[error("cannot read or write {} in the benchmark's copy", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot resolve the heal settings of the benchmark's copy {}: {message}", root.display())]
    Settings { root: PathBuf, message: String },
    #[error(
        "the planted code breaks the tests of {} ({failures}); a planted module may not import in the test run: pass another project with --project DIR",
        project.display()
    )]
    PlantedBreaksTests { project: PathBuf, failures: String },
    #[error(
        "ruff did not report or cannot fix {count} planted defect(s) in {}, e.g. {example}; the project's ruff configuration may exclude the file, ignore the rule or mark it unfixable",
        project.display()
    )]
    NotDetected {
        project: PathBuf,
        count: usize,
        example: String,
    },
    #[error(transparent)]
    Heal(#[from] crate::Error),
}

pub type Result<T, E = BenchError> = std::result::Result<T, E>;

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> BenchError + '_ {
    move |source| BenchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

// ---------------------------------------------------------------------------------------------
// The corpus
// ---------------------------------------------------------------------------------------------

/// A module defects can be planted in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Relative to the project root, `/`-separated.
    pub file: String,
    /// The dotted name the test module imports.
    pub name: String,
}

/// One planted defect: a top-level function or class of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Index into [`KINDS`].
    pub kind: usize,
    /// 0..[`PER_KIND`]; 0 is healed by the deterministic fixers.
    pub index: usize,
    /// `<rule>-<index>`.
    pub id: String,
    /// The name of the planted function or class.
    pub name: String,
    /// Where it is planted.
    pub module: Module,
    /// The surrounding code, for people (`if-condition`, `for-loop`, ...).
    pub context: &'static str,
    /// The planted code (top level, ends with a newline).
    pub block: String,
    /// The generator's expectation of the fixer's result (ruff's own fix is the yardstick of
    /// the bench; a difference is reported).
    pub fixed: String,
    /// How the test calls it: `{obj}` is the function or class.
    pub invoke: &'static str,
    /// Argument tuples (Python source); `sample` is the path of a file with two lines,
    /// `missing` one of no file.
    pub calls: Vec<String>,
    /// The identifiers the instance introduces (its name, parameters, locals).
    pub identifiers: Vec<String>,
}

/// A deterministic pseudo-random sequence (splitmix64): the corpus needs reproducibility, not
/// quality.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }

    fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..n).collect();
        self.shuffle(&mut order);
        order
    }
}

const VERBS: &[&str] = &[
    "check", "compute", "resolve", "render", "collect", "measure", "inspect", "select", "derive",
    "assess", "classify", "tally", "prepare", "verify", "gather", "extract", "probe", "rank",
    "load", "weigh",
];
const ADJECTIVES: &[&str] = &[
    "raw", "next", "last", "first", "pending", "cached", "total", "active", "stale", "local",
    "remote", "primary", "spare", "draft", "final", "inner", "outer", "fresh", "shared", "partial",
];
const NOUNS: &[&str] = &[
    "order", "invoice", "basket", "ticket", "payload", "record", "entry", "token", "window",
    "batch", "chunk", "source", "target", "buffer", "message", "account", "report", "session",
    "vendor", "parcel", "ledger", "signal", "sample", "bucket", "column", "cursor", "domain",
    "handle", "label", "member", "option", "packet", "quota", "region", "schema", "shard",
    "sensor", "socket", "stream", "symbol", "tenant", "thread", "update", "vector", "widget",
    "journal", "profile", "receipt", "segment", "digest",
];
const TEXT_WORDS: &[&str] = &[
    "ready", "to", "ship", "no", "rows", "found", "total", "pending", "retry", "later", "done",
    "unknown", "user", "default", "value", "empty", "list", "saved", "all", "items", "skipped",
    "open", "closed", "header", "footer", "ok", "missing", "field", "cache", "warm",
];

/// Fresh identifiers: never one the project uses, never one given before.
struct Names<'a, S> {
    rng: Rng,
    used: HashSet<String>,
    taken: &'a HashSet<String, S>,
}

impl<S: std::hash::BuildHasher> Names<'_, S> {
    fn fresh(&mut self, make: &dyn Fn(&mut Rng) -> String) -> String {
        loop {
            let name = make(&mut self.rng);
            if !self.taken.contains(&name) && self.used.insert(name.clone()) {
                return name;
            }
        }
    }

    /// `adjective_noun`.
    fn var(&mut self) -> String {
        self.fresh(&|r| format!("{}_{}", r.pick(ADJECTIVES), r.pick(NOUNS)))
    }

    /// `verb_adjective_noun`.
    fn function(&mut self) -> String {
        self.fresh(&|r| format!("{}_{}_{}", r.pick(VERBS), r.pick(ADJECTIVES), r.pick(NOUNS)))
    }

    /// `AdjectiveNoun`.
    fn class(&mut self) -> String {
        self.fresh(&|r| {
            format!(
                "{}{}",
                capitalise(r.pick(ADJECTIVES)),
                capitalise(r.pick(NOUNS))
            )
        })
    }

    /// A short phrase for a string literal (no quotes, braces or backslashes).
    fn text(&mut self) -> String {
        self.fresh(&|r| {
            let n = 2 + r.below(3);
            let mut words: Vec<String> = (0..n).map(|_| r.pick(TEXT_WORDS).to_string()).collect();
            if r.below(2) == 0 {
                words[0] = capitalise(&words[0]);
            }
            let end = r.pick(&["", ".", "!", ":", "?"]);
            format!("{}{end}", words.join(" "))
        })
    }
}

fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A surrounding of the defect: the function body, with `@@` where the defect goes.
struct Context {
    name: &'static str,
    body: &'static str,
}

/// Where a boolean expression can sit (E713, E714).
const BOOL_CONTEXTS: [Context; 10] = [
    Context {
        name: "if-condition",
        body: "if @@:\n    return \"yes\"\nreturn \"no\"",
    },
    Context {
        name: "assignment",
        body: "{v} = @@\nreturn {v}",
    },
    Context {
        name: "return",
        body: "return @@",
    },
    Context {
        name: "conditional-expression",
        body: "return \"on\" if @@ else \"off\"",
    },
    Context {
        name: "loop-body",
        body: "{v} = []\nfor _ in range(2):\n    {v}.append(@@)\nreturn {v}",
    },
    Context {
        name: "nested-function",
        body: "def inner():\n    return @@\n\nreturn inner()",
    },
    Context {
        name: "while-condition",
        body: "while @@:\n    return True\nreturn False",
    },
    Context {
        name: "dict-value",
        body: "return {\"ok\": @@, \"seen\": {p}}",
    },
    Context {
        name: "try-body",
        body: "try:\n    return @@\nexcept TypeError:\n    return None",
    },
    Context {
        name: "boolean-operand",
        body: "return callable(len) and @@",
    },
];

/// Where a literal can sit (F541, UP025, UP012); `{p}` has the literal's type.
const VALUE_CONTEXTS: [Context; 10] = [
    Context {
        name: "return",
        body: "return @@",
    },
    Context {
        name: "assignment",
        body: "{v} = @@\nreturn {v} + {p}",
    },
    Context {
        name: "binary-operand",
        body: "return {p} + @@",
    },
    Context {
        name: "list-element",
        body: "{v} = [{p}, @@]\nreturn {v}",
    },
    Context {
        name: "dict-value",
        body: "return {\"text\": @@, \"other\": {p}}",
    },
    Context {
        name: "if-body",
        body: "if {p}:\n    return @@\nreturn {p}",
    },
    Context {
        name: "tuple-element",
        body: "return ({p}, @@)",
    },
    Context {
        name: "conditional-expression",
        body: "{v} = @@ if {p} else {p}\nreturn {v}",
    },
    Context {
        name: "call-argument",
        body: "return len(@@) + len({p})",
    },
    Context {
        name: "nested-function",
        body: "def inner():\n    return @@\n\nreturn inner() + {p}",
    },
];

/// Where a `range(0, n)` can sit (PIE808).
const RANGE_CONTEXTS: [Context; 10] = [
    Context {
        name: "list-call",
        body: "return list(@@)",
    },
    Context {
        name: "for-loop",
        body: "{v} = 0\nfor {w} in @@:\n    {v} += {w}\nreturn {v}",
    },
    Context {
        name: "list-comprehension",
        body: "return [{w} * 2 for {w} in @@]",
    },
    Context {
        name: "sum-argument",
        body: "return sum(@@)",
    },
    Context {
        name: "dict-comprehension",
        body: "return {{w}: -{w} for {w} in @@}",
    },
    Context {
        name: "assignment",
        body: "{v} = @@\nreturn len({v})",
    },
    Context {
        name: "tuple-call",
        body: "return tuple(@@)",
    },
    Context {
        name: "counting-loop",
        body: "{v} = 0\nfor _ in @@:\n    {v} += 1\nreturn {v}",
    },
    Context {
        name: "keyword-call",
        body: "return max(@@, default=-1)",
    },
    Context {
        name: "nested-function",
        body: "def inner():\n    return list(@@)\n\nreturn inner()",
    },
];

/// Where an `open(p, "r")` can sit (UP015).
const OPEN_CONTEXTS: [Context; 10] = [
    Context {
        name: "with-read",
        body: "with @@ as {f}:\n    return {f}.read()",
    },
    Context {
        name: "try-finally",
        body: "{f} = @@\ntry:\n    return {f}.readline()\nfinally:\n    {f}.close()",
    },
    Context {
        name: "with-comprehension",
        body: "with @@ as {f}:\n    return [{w}.strip() for {w} in {f}]",
    },
    Context {
        name: "with-call",
        body: "with @@ as {f}:\n    return len({f}.read())",
    },
    Context {
        name: "with-loop",
        body: "{v} = []\nwith @@ as {f}:\n    for {w} in {f}:\n        {v}.append({w})\nreturn {v}",
    },
    Context {
        name: "with-assignment",
        body: "with @@ as {f}:\n    {v} = {f}.readline()\nreturn {v}.upper()",
    },
    Context {
        name: "handle-then-with",
        body: "{f} = @@\nwith {f}:\n    return {f}.read().split()",
    },
    Context {
        name: "nested-function",
        body: "def inner():\n    with @@ as {f}:\n        return {f}.read()\n\nreturn inner()",
    },
    Context {
        name: "guarded",
        body: "if not {p}:\n    return \"\"\nwith @@ as {f}:\n    return {f}.read(5)",
    },
    Context {
        name: "with-subscript",
        body: "with @@ as {f}:\n    return {f}.readlines()[-1]",
    },
];

/// Classes with `(object)` (UP004): the whole block, `@@` unused. `{C}` is the class; the
/// factories are functions `{fn}` returning it.
const CLASS_CONTEXTS: [Context; 10] = [
    Context {
        name: "plain-class",
        body: "class {C}(object):\n    def describe(self, {x}):\n        return str({x})",
    },
    Context {
        name: "class-attribute",
        body: "class {C}(object):\n    {attr} = 3\n\n    def describe(self, {x}):\n        return [{x}] * self.{attr}",
    },
    Context {
        name: "docstring",
        body: "class {C}(object):\n    \"\"\"{text}\"\"\"\n\n    def describe(self, {x}):\n        return repr({x})",
    },
    Context {
        name: "init-method",
        body: "class {C}(object):\n    def __init__(self):\n        self.{attr} = []\n\n    def describe(self, {x}):\n        self.{attr}.append({x})\n        return len(self.{attr})",
    },
    Context {
        name: "staticmethod",
        body: "class {C}(object):\n    @staticmethod\n    def describe({x}):\n        return ({x}, {x})",
    },
    Context {
        name: "property",
        body: "class {C}(object):\n    @property\n    def {attr}(self):\n        return \"{text}\"\n\n    def describe(self, {x}):\n        return self.{attr} + str({x})",
    },
    Context {
        name: "factory-function",
        body: "def {fn}():\n    class {C}(object):\n        def describe(self, {x}):\n            return type({x}).__name__\n\n    return {C}",
    },
    Context {
        name: "loop-method",
        body: "class {C}(object):\n    def describe(self, {x}):\n        {v} = []\n        for {w} in str({x}):\n            {v}.append({w})\n        return {v}",
    },
    Context {
        name: "dunder-method",
        body: "class {C}(object):\n    def __len__(self):\n        return 2\n\n    def describe(self, {x}):\n        return len(self) + len(str({x}))",
    },
    Context {
        name: "factory-attribute",
        body: "def {fn}():\n    class {C}(object):\n        {attr} = \"{text}\"\n\n        def describe(self, {x}):\n            return self.{attr} + str({x})\n\n    return {C}",
    },
];

/// Where the nested `else: if` sits (PLR5501), with the two branches' bodies: `@@` is the
/// statement, `@1`/`@2` the bodies in it.
const ELIF_CONTEXTS: [(Context, &str, &str); 10] = [
    (
        Context {
            name: "returns",
            body: "@@\nreturn \"third\"",
        },
        "return \"first\"",
        "return \"second\"",
    ),
    (
        Context {
            name: "accumulator",
            body: "{v} = 0\n@@\nreturn {v}",
        },
        "{v} += 1\n{v} *= 2",
        "{v} -= 1",
    ),
    (
        Context {
            name: "for-loop",
            body: "{v} = []\nfor {w} in range(3):\n    @@\nreturn {v}",
        },
        "{v}.append({w})",
        "{v}.append(-{w})",
    ),
    (
        Context {
            name: "while-loop",
            body: "{v} = 0\nwhile {v} < 2:\n    {v} += 1\n    @@\nreturn {v}",
        },
        "{v} += 5",
        "break",
    ),
    (
        Context {
            name: "nested-function",
            body: "def inner():\n    @@\n    return 0\n\nreturn inner()",
        },
        "return 1",
        "return 2",
    ),
    (
        Context {
            name: "try-body",
            body: "try:\n    @@\nexcept TypeError:\n    return -1\nreturn 0",
        },
        "return 1",
        "return 2",
    ),
    (
        Context {
            name: "assignments",
            body: "{v} = \"none\"\n@@\nreturn {v}",
        },
        "{v} = \"left\"",
        "{v} = \"right\"\n{v} += \"!\"",
    ),
    (
        Context {
            name: "inside-if",
            body: "if {a} is not None:\n    @@\nreturn None",
        },
        "return {a}",
        "return {b}",
    ),
    (
        Context {
            name: "list-building",
            body: "{v} = [{a}]\n@@\nreturn {v}",
        },
        "{v}.append(1)",
        "{v}.append(2)\n{v}.append(3)",
    ),
    (
        Context {
            name: "loop-return",
            body: "for {w} in range(2):\n    @@\nreturn -1",
        },
        "return {w}",
        "return -{w}",
    ),
];

/// `try` statements with `except IOError:` (UP024).
const EXCEPT_CONTEXTS: [Context; 10] = [
    Context {
        name: "return-read",
        body: "try:\n    with open({p}) as {f}:\n        return {f}.read()\nexcept IOError:\n    return \"missing\"",
    },
    Context {
        name: "counter",
        body: "{v} = 0\ntry:\n    {v} += 1\n    {f} = open({p})\n    {f}.close()\nexcept IOError:\n    {v} += 10\n    {v} *= 2\nreturn {v}",
    },
    Context {
        name: "loop",
        body: "{v} = []\nfor {w} in [{p}, {p} + \".bak\"]:\n    try:\n        with open({w}) as {f}:\n            {v}.append(len({f}.read()))\n    except IOError:\n        {v}.append(-1)\nreturn {v}",
    },
    Context {
        name: "nested-function",
        body: "def inner():\n    try:\n        with open({p}) as {f}:\n            return {f}.readline()\n    except IOError:\n        return None\n\nreturn inner()",
    },
    Context {
        name: "flag",
        body: "{v} = True\ntry:\n    open({p}).close()\nexcept IOError:\n    {v} = False\nreturn {v}",
    },
    Context {
        name: "pass-handler",
        body: "{v} = \"\"\ntry:\n    with open({p}) as {f}:\n        {v} = {f}.read(3)\nexcept IOError:\n    pass\nreturn {v}",
    },
    Context {
        name: "statements-after",
        body: "try:\n    {f} = open({p})\nexcept IOError:\n    return -1\n{v} = len({f}.read())\n{f}.close()\nreturn {v}",
    },
    Context {
        name: "guarded",
        body: "if not {p}:\n    return None\ntry:\n    with open({p}) as {f}:\n        return {f}.read().split()\nexcept IOError:\n    return []",
    },
    Context {
        name: "assignment-handler",
        body: "try:\n    with open({p}) as {f}:\n        {v} = {f}.readlines()\nexcept IOError:\n    {v} = []\nreturn len({v})",
    },
    Context {
        name: "while-loop",
        body: "{v} = 0\nwhile {v} < 1:\n    {v} += 1\n    try:\n        open({p}).close()\n    except IOError:\n        {v} += 100\nreturn {v}",
    },
];

/// Left and right operands of `not A in B` (E713): `{p}` a string, `{q}` a list of strings.
const IN_OPERANDS: [(&str, &str); 10] = [
    ("{p}", "{q}"),
    ("{p}.lower()", "{q}"),
    ("{p}.strip()", "set({q})"),
    ("{p}[:1]", "{q}"),
    ("str({p})", "tuple({q})"),
    ("{p}", "{q}[:2]"),
    ("{p}.upper()", "list({q})"),
    ("{p} + \"x\"", "{q}"),
    ("{p}", "sorted({q})"),
    ("{p}.title()", "{q}"),
];

/// Operands of `not A is B` (E714): `{p}` and `{q}` any objects.
const IS_OPERANDS: [(&str, &str); 10] = [
    ("{p}", "{q}"),
    ("{p}", "None"),
    ("type({p})", "type({q})"),
    ("{p}.__class__", "{q}.__class__"),
    ("{q}", "None"),
    ("{q}", "{p}"),
    ("type({p})", "int"),
    ("{p}.__class__", "str"),
    ("{p}", "True"),
    ("type({q})", "type(None)"),
];

/// Stops of `range(0, N)` (PIE808): `{n}` an int.
const RANGE_STOPS: [&str; 10] = [
    "{n}",
    "{n} + 1",
    "{n} * 2",
    "max({n}, 1)",
    "abs({n})",
    "{n} // 2",
    "min({n}, 5)",
    "int({n})",
    "{n} - 1",
    "len(str({n}))",
];

/// Paths given to `open(P, "r")` (UP015): `{p}` a path string.
const OPEN_PATHS: [&str; 10] = [
    "{p}",
    "str({p})",
    "{p}.strip()",
    "{p} + \"\"",
    "{p}[:]",
    "\"\" + {p}",
    "{p}.rstrip()",
    "f\"{{p}}\"",
    "{p}.lstrip()",
    "{p}.replace(\"//\", \"/\")",
];

/// Conditions of the two branches (PLR5501): `{a}` and `{b}` ints.
const CONDITIONS: [&str; 10] = [
    "{a} > {b}",
    "{a} == 0",
    "not {a}",
    "{a} in (1, 2)",
    "{b} < 0",
    "{a} + {b} > 3",
    "{a} % 2",
    "{b} >= {a}",
    "abs({a}) > 1",
    "{a} != {b}",
];

/// Replaces `{key}` placeholders.
fn subst(template: &str, pairs: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (key, value) in pairs {
        out = out.replace(&format!("{{{key}}}"), value);
    }
    out
}

/// Puts `snippet` where `@@` is in `template`: a line that is only `@@` takes the snippet's
/// lines at its indentation; otherwise it is replaced in place.
fn fill(template: &str, snippet: &str) -> String {
    let mut out = String::new();
    for line in template.lines() {
        if line.trim() == "@@" {
            let indent = &line[..line.len() - line.trim_start().len()];
            for part in snippet.lines() {
                if part.is_empty() {
                    out.push('\n');
                } else {
                    out.push_str(indent);
                    out.push_str(part);
                    out.push('\n');
                }
            }
        } else {
            out.push_str(&line.replace("@@", snippet));
            out.push('\n');
        }
    }
    out
}

/// Indents every non-empty line by `n` spaces.
fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_string()
            } else {
                format!("{pad}{l}\n")
            }
        })
        .collect()
}

/// `def name(params):` over `body`.
fn function(name: &str, params: &[&str], body: &str) -> String {
    format!("def {name}({}):\n{}", params.join(", "), indent(body, 4))
}

/// What one kind's generator produced for one instance.
struct Made {
    name: String,
    context: &'static str,
    block: String,
    fixed: String,
    invoke: &'static str,
    calls: Vec<String>,
    identifiers: Vec<String>,
}

fn calls(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_string()).collect()
}

/// A function with the defect `defect` (fixed: `fixed`) in context `ctx`.
fn in_context(
    name: String,
    params: &[&str],
    ctx: &Context,
    pairs: &[(&str, &str)],
    (defect, fixed): (&str, &str),
) -> (String, String, String) {
    let body = subst(ctx.body, pairs);
    let block = function(&name, params, &fill(&body, defect));
    let fixed = function(&name, params, &fill(&body, fixed));
    (name, block, fixed)
}

/// Generates instance `index` of kind `kind` in its `slot`-th context and operand form.
fn make<S: std::hash::BuildHasher>(
    kind: usize,
    slot: usize,
    form: usize,
    names: &mut Names<'_, S>,
) -> Made {
    let name = names.function();
    let acc = names.var();
    let item = names.var();
    let handle = names.var();
    let mut identifiers = vec![name.clone(), acc.clone(), item.clone(), handle.clone()];
    let mut made = |ctx: &'static str,
                    (name, block, fixed): (String, String, String),
                    invoke: &'static str,
                    calls: Vec<String>,
                    more: Vec<String>| {
        identifiers.extend(more);
        Made {
            name,
            context: ctx,
            block,
            fixed,
            invoke,
            calls,
            identifiers: identifiers.clone(),
        }
    };
    match KINDS[kind].rule {
        "E713" | "E714" => {
            let first = names.var();
            let second = names.var();
            let (lhs, rhs) = if KINDS[kind].rule == "E713" {
                IN_OPERANDS[form]
            } else {
                IS_OPERANDS[form]
            };
            let pairs = [
                ("p", first.as_str()),
                ("q", second.as_str()),
                ("v", acc.as_str()),
            ];
            let (lhs, rhs) = (subst(lhs, &pairs), subst(rhs, &pairs));
            let (defect, fix) = if KINDS[kind].rule == "E713" {
                (format!("not {lhs} in {rhs}"), format!("{lhs} not in {rhs}"))
            } else {
                (format!("not {lhs} is {rhs}"), format!("{lhs} is not {rhs}"))
            };
            let ctx = &BOOL_CONTEXTS[slot];
            let built = in_context(name, &[&first, &second], ctx, &pairs, (&defect, &fix));
            let args = if KINDS[kind].rule == "E713" {
                calls(&[
                    "(\"alpha\", [\"alpha\", \"beta\"])",
                    "(\"Gamma\", [\"gamma\", \"x\"])",
                    "(\" delta \", [\"delta\"])",
                    "(\"zeta\", [])",
                ])
            } else {
                calls(&[
                    "(None, None)",
                    "(1, None)",
                    "(\"a\", 2)",
                    "(3, 3)",
                    "(True, True)",
                ])
            };
            made(ctx.name, built, "{obj}(*args)", args, vec![first, second])
        }
        "F541" | "UP025" | "UP012" => {
            let first = names.var();
            let text = names.text();
            let (defect, fix, args) = match KINDS[kind].rule {
                "F541" => (
                    format!("f\"{text}\""),
                    format!("\"{text}\""),
                    calls(&["(\"x\",)", "(\"\",)", "(\"name\",)"]),
                ),
                "UP025" => (
                    format!("u\"{text}\""),
                    format!("\"{text}\""),
                    calls(&["(\"x\",)", "(\"\",)", "(\"name\",)"]),
                ),
                _ => (
                    format!("\"{text}\".encode(\"utf-8\")"),
                    format!("b\"{text}\""),
                    calls(&["(b\"x\",)", "(b\"\",)"]),
                ),
            };
            let ctx = &VALUE_CONTEXTS[slot];
            let pairs = [("p", first.as_str()), ("v", acc.as_str())];
            let built = in_context(name, &[&first], ctx, &pairs, (&defect, &fix));
            made(ctx.name, built, "{obj}(*args)", args, vec![first])
        }
        "PIE808" => {
            let count = names.var();
            let stop = subst(RANGE_STOPS[form], &[("n", count.as_str())]);
            let ctx = &RANGE_CONTEXTS[slot];
            let pairs = [("v", acc.as_str()), ("w", item.as_str())];
            let built = in_context(
                name,
                &[&count],
                ctx,
                &pairs,
                (&format!("range(0, {stop})"), &format!("range({stop})")),
            );
            made(
                ctx.name,
                built,
                "{obj}(*args)",
                calls(&["(0,)", "(3,)", "(7,)"]),
                vec![count],
            )
        }
        "UP015" => {
            let first = names.var();
            let path = subst(OPEN_PATHS[form], &[("p", first.as_str())]);
            let ctx = &OPEN_CONTEXTS[slot];
            let pairs = [
                ("p", first.as_str()),
                ("v", acc.as_str()),
                ("w", item.as_str()),
                ("f", handle.as_str()),
            ];
            let built = in_context(
                name,
                &[&first],
                ctx,
                &pairs,
                (&format!("open({path}, \"r\")"), &format!("open({path})")),
            );
            made(
                ctx.name,
                built,
                "{obj}(*args)",
                calls(&["(sample,)"]),
                vec![first],
            )
        }
        "UP004" => {
            let class = names.class();
            let x = names.var();
            let attr = names.var();
            let text = names.text();
            let ctx = &CLASS_CONTEXTS[slot];
            let block = subst(
                ctx.body,
                &[
                    ("C", class.as_str()),
                    ("fn", name.as_str()),
                    ("x", x.as_str()),
                    ("attr", attr.as_str()),
                    ("text", text.as_str()),
                    ("v", acc.as_str()),
                    ("w", item.as_str()),
                ],
            ) + "\n";
            let fixed = block.replacen(
                &format!("class {class}(object):"),
                &format!("class {class}:"),
                1,
            );
            let factory = block.starts_with("def ");
            let (block_name, invoke) = if factory {
                (name, "{obj}()().describe(*args)")
            } else {
                (class.clone(), "{obj}().describe(*args)")
            };
            made(
                ctx.name,
                (block_name, block, fixed),
                invoke,
                calls(&["(1,)", "(\"two\",)", "(None,)"]),
                vec![class, x, attr],
            )
        }
        "PLR5501" => {
            let left = names.var();
            let right = names.var();
            let (ctx, body1, body2) = &ELIF_CONTEXTS[slot];
            let pairs = [
                ("a", left.as_str()),
                ("b", right.as_str()),
                ("v", acc.as_str()),
                ("w", item.as_str()),
            ];
            let cond_one = subst(CONDITIONS[form], &pairs);
            let cond_two = subst(CONDITIONS[(form + 3) % CONDITIONS.len()], &pairs);
            let body_one = indent(&subst(body1, &pairs), 4);
            let body_two = subst(body2, &pairs);
            let defect = format!(
                "if {cond_one}:\n{body_one}else:\n    if {cond_two}:\n{}",
                indent(&body_two, 8)
            );
            let fix = format!(
                "if {cond_one}:\n{body_one}elif {cond_two}:\n{}",
                indent(&body_two, 4)
            );
            let built = in_context(name, &[&left, &right], ctx, &pairs, (&defect, &fix));
            made(
                ctx.name,
                built,
                "{obj}(*args)",
                calls(&["(0, 1)", "(2, 1)", "(1, 5)", "(-1, -2)", "(3, 3)"]),
                vec![left, right],
            )
        }
        _ => {
            // UP024
            let first = names.var();
            let ctx = &EXCEPT_CONTEXTS[slot];
            let body = subst(
                ctx.body,
                &[
                    ("p", first.as_str()),
                    ("v", acc.as_str()),
                    ("w", item.as_str()),
                    ("f", handle.as_str()),
                ],
            );
            let block = function(&name, &[&first], &body);
            let fixed = block.replacen("except IOError:", "except OSError:", 1);
            made(
                ctx.name,
                (name, block, fixed),
                "{obj}(*args)",
                calls(&["(sample,)", "(missing,)"]),
                vec![first],
            )
        }
    }
}

/// The corpus: [`PER_KIND`] instances of each of the [`KINDS`], spread over `modules`, with
/// identifiers that are not in `taken` (the project's own). The same inputs give the same
/// corpus.
pub fn generate<S: std::hash::BuildHasher>(
    modules: &[Module],
    taken: &HashSet<String, S>,
    seed: u64,
) -> Vec<Instance> {
    let mut names = Names {
        rng: Rng::new(seed),
        used: HashSet::new(),
        taken,
    };
    let mut out = Vec::with_capacity(KINDS.len() * PER_KIND);
    for (kind, _) in KINDS.iter().enumerate() {
        let mut rng = Rng::new(seed ^ ((kind as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d)));
        // Each kind meets its contexts and operand forms in its own order, so the instance
        // the fixers heal (and the patterns learn from) is in a different context per kind.
        let slots = rng.permutation(PER_KIND);
        let forms = rng.permutation(PER_KIND);
        let first_module = rng.below(modules.len());
        for index in 0..PER_KIND {
            let made = make(kind, slots[index], forms[index], &mut names);
            let module = modules[(first_module + index) % modules.len()].clone();
            out.push(Instance {
                kind,
                index,
                id: format!("{}-{index}", KINDS[kind].rule),
                name: made.name,
                module,
                context: made.context,
                block: made.block,
                fixed: made.fixed,
                invoke: made.invoke,
                calls: made.calls,
                identifiers: made.identifiers,
            });
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Planting
// ---------------------------------------------------------------------------------------------

/// The byte offsets where a top-level definition starts (decorators included), plus the end.
fn insertion_points(text: &str) -> Vec<usize> {
    let mut points = Vec::new();
    if let Ok(parsed) = ruff_python_parser::parse_module(text) {
        for stmt in &parsed.syntax().body {
            let start = match stmt {
                Stmt::FunctionDef(def) => def
                    .decorator_list
                    .iter()
                    .map(|d| d.range().start())
                    .chain([def.range().start()])
                    .min(),
                Stmt::ClassDef(class) => class
                    .decorator_list
                    .iter()
                    .map(|d| d.range().start())
                    .chain([class.range().start()])
                    .min(),
                _ => None,
            };
            if let Some(start) = start {
                let start = start.to_usize();
                // Only where the definition starts its line.
                if start == 0 || text.as_bytes().get(start - 1) == Some(&b'\n') {
                    points.push(start);
                }
            }
        }
    }
    points.push(text.len());
    points
}

/// Plants the instances into their modules' texts: each block goes before a top-level
/// definition or at the end of the module, chosen with `seed`. Returns the new texts of the
/// modules that received code.
pub fn plant(
    instances: &[Instance],
    texts: &BTreeMap<String, String>,
    seed: u64,
) -> BTreeMap<String, String> {
    let mut rng = Rng::new(seed ^ 0x0070_6c61_6e74);
    let mut by_module: BTreeMap<&str, Vec<(usize, &Instance)>> = BTreeMap::new();
    for instance in instances {
        let Some(text) = texts.get(&instance.module.file) else {
            continue;
        };
        let points = insertion_points(text);
        let point = points[rng.below(points.len())];
        by_module
            .entry(&instance.module.file)
            .or_default()
            .push((point, instance));
    }
    let mut out = BTreeMap::new();
    for (file, mut blocks) in by_module {
        let text = &texts[file];
        blocks.sort_by_key(|(point, _)| *point);
        let mut planted = String::with_capacity(text.len() + blocks.len() * 200);
        let mut at = 0;
        for (point, instance) in blocks {
            planted.push_str(&text[at..point]);
            at = point;
            if point == text.len() {
                if !planted.is_empty() && !planted.ends_with('\n') {
                    planted.push('\n');
                }
                if !planted.is_empty() {
                    planted.push_str("\n\n");
                }
                planted.push_str(&instance.block);
            } else {
                planted.push_str(&instance.block);
                planted.push_str("\n\n");
            }
        }
        planted.push_str(&text[at..]);
        out.insert(file.to_string(), planted);
    }
    out
}

/// The line range (0-based, end exclusive) of the top-level block `name` in `source`: from its
/// `def`/`class` line to its last non-blank line before the next line at column 0.
fn block_lines(lines: &[&str], name: &str) -> Option<(usize, usize)> {
    let def = format!("def {name}(");
    let class_paren = format!("class {name}(");
    let class_colon = format!("class {name}:");
    let start = lines.iter().position(|l| {
        l.starts_with(&def) || l.starts_with(&class_paren) || l.starts_with(&class_colon)
    })?;
    let mut end = start + 1;
    let mut last = start + 1;
    while end < lines.len() {
        let line = lines[end];
        if !line.trim().is_empty() {
            if !line.starts_with([' ', '\t']) {
                break;
            }
            last = end + 1;
        }
        end += 1;
    }
    Some((start, last))
}

/// The text of the top-level block `name` (with its final newline), if present.
pub fn block_text(source: &str, name: &str) -> Option<String> {
    let lines: Vec<&str> = source.lines().collect();
    let (start, end) = block_lines(&lines, name)?;
    let mut out = String::new();
    for line in &lines[start..end] {
        out.push_str(line);
        out.push('\n');
    }
    Some(out)
}

/// The 1-based line range of block `name` in `source`.
fn block_range(source: &str, name: &str) -> Option<(u32, u32)> {
    let lines: Vec<&str> = source.lines().collect();
    let (start, end) = block_lines(&lines, name)?;
    Some((start as u32 + 1, end as u32))
}

/// `source` with block `name` replaced by `block` (which ends with a newline).
fn replace_block(source: &str, name: &str, block: &str) -> Option<String> {
    let lines: Vec<&str> = source.split_inclusive('\n').collect();
    let bare: Vec<&str> = source.lines().collect();
    let (start, end) = block_lines(&bare, name)?;
    let mut out: String = lines[..start].concat();
    out.push_str(block);
    out.push_str(&lines[end..].concat());
    Some(out)
}

/// `source` without the blocks `names` (what must stay byte-identical).
fn without_blocks(source: &str, names: &[&str]) -> String {
    let mut text = source.to_string();
    for name in names {
        if let Some(next) = replace_block(&text, name, "") {
            text = next;
        }
    }
    text
}

/// The planted test module: every instance called beside a copy of its fixed text.
pub fn test_module(instances: &[Instance]) -> String {
    let mut out = String::from(
        "\"\"\"Planted by `agency patterns bench --learning`: each planted function or class\n\
         runs beside a copy of its fixed version, so a fix that changes behaviour fails.\"\"\"\n\
         \n\
         import importlib\n\
         \n\
         \n\
         def _planted(module, name):\n    return getattr(importlib.import_module(module), name)\n\
         \n\
         \n\
         def _files(tmp_path):\n    sample = tmp_path / \"sample.txt\"\n    sample.write_text(\"first line\\nsecond line\\n\")\n    return str(sample), str(tmp_path / \"missing.txt\")\n",
    );
    for instance in instances {
        let reference = reference_name(&instance.name);
        let fixed = rename_block(&instance.fixed, &instance.name, &reference);
        out.push_str(&format!(
            "\n\n# {} ({}) in {}\n{fixed}",
            instance.id, instance.context, instance.module.file
        ));
        let all = instance.calls.join(" ");
        let (sample, missing) = (all.contains("sample"), all.contains("missing"));
        let (param, files) = match (sample, missing) {
            (false, false) => ("", String::new()),
            (true, false) => ("tmp_path", "    sample, _ = _files(tmp_path)\n".to_string()),
            (false, true) => (
                "tmp_path",
                "    _, missing = _files(tmp_path)\n".to_string(),
            ),
            (true, true) => (
                "tmp_path",
                "    sample, missing = _files(tmp_path)\n".to_string(),
            ),
        };
        out.push_str(&format!(
            "\n\ndef {test}({param}):\n{files}    planted = _planted(\"{module}\", \"{name}\")\n    for args in [{calls}]:\n        assert {left} == {right}, args\n",
            test = test_name(instance),
            module = instance.module.name,
            name = instance.name,
            calls = instance.calls.join(", "),
            left = instance.invoke.replace("{obj}", "planted"),
            right = instance.invoke.replace("{obj}", &reference),
        ));
    }
    out
}

/// The test function of an instance.
fn test_name(instance: &Instance) -> String {
    format!("test_{}", instance.name.to_ascii_lowercase())
}

fn reference_name(name: &str) -> String {
    if name.starts_with(|c: char| c.is_ascii_uppercase()) {
        format!("_Reference{name}")
    } else {
        format!("_reference_{name}")
    }
}

/// The block with its own name (on its first line) replaced.
fn rename_block(block: &str, from: &str, to: &str) -> String {
    let mut lines = block.split_inclusive('\n');
    let first = lines.next().unwrap_or_default();
    let renamed = first
        .replacen(&format!("def {from}("), &format!("def {to}("), 1)
        .replacen(&format!("class {from}("), &format!("class {to}("), 1)
        .replacen(&format!("class {from}:"), &format!("class {to}:"), 1);
    renamed + &lines.collect::<String>()
}

// ---------------------------------------------------------------------------------------------
// The project
// ---------------------------------------------------------------------------------------------

/// Directories never planted in nor searched for modules.
fn skipped_dir(name: &str) -> bool {
    name.starts_with('.')
        || matches!(
            name,
            "tests"
                | "test"
                | "testing"
                | "docs"
                | "doc"
                | "examples"
                | "example"
                | "scripts"
                | "benchmarks"
                | "bench"
                | "build"
                | "dist"
                | "node_modules"
                | "__pycache__"
                | "venv"
                | "env"
                | "site-packages"
        )
}

fn skipped_file(name: &str) -> bool {
    Path::new(name).extension().is_none_or(|e| e != "py")
        || name.starts_with("test_")
        || name.ends_with("_test.py")
        || matches!(
            name,
            "setup.py" | "conftest.py" | "noxfile.py" | "fabfile.py" | "manage.py"
        )
}

/// Every `.py` file of the tree under `root`, relative, sorted (what the identifiers of the
/// project are collected from).
fn python_files(root: &Path) -> Result<Vec<String>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
        let entries = std::fs::read_dir(dir).map_err(io_error(dir))?;
        for entry in entries {
            let entry = entry.map_err(io_error(dir))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let kind = entry.file_type().map_err(io_error(&path))?;
            if kind.is_dir() {
                if !name.starts_with('.')
                    && name != "__pycache__"
                    && !path.join("pyvenv.cfg").exists()
                {
                    walk(root, &path, out)?;
                }
            } else if kind.is_file()
                && Path::new(&name).extension().is_some_and(|e| e == "py")
                && let Ok(rel) = path.strip_prefix(root)
            {
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(root, root, &mut out)?;
    out.sort();
    Ok(out)
}

/// The modules of `files` that can be planted in: outside tests and docs, importable (at the
/// top, or in a chain of packages with `__init__.py`), parsing without errors.
fn plantable(root: &Path, files: &[String], texts: &BTreeMap<String, String>) -> Vec<Module> {
    let mut out = Vec::new();
    for file in files {
        let parts: Vec<&str> = file.split('/').collect();
        let (dirs, name) = parts.split_at(parts.len() - 1);
        if skipped_file(name[0]) || dirs.iter().any(|d| skipped_dir(d)) {
            continue;
        }
        let mut package = PathBuf::from(root);
        let mut importable = true;
        for dir in dirs {
            package.push(dir);
            if !package.join("__init__.py").is_file() || !is_identifier(dir) {
                importable = false;
                break;
            }
        }
        let stem = name[0].trim_end_matches(".py");
        if !importable || !is_identifier(stem) {
            continue;
        }
        let Some(text) = texts.get(file) else {
            continue;
        };
        if ruff_python_parser::parse_module(text).is_err() {
            continue;
        }
        let mut dotted: Vec<&str> = dirs.to_vec();
        if stem != "__init__" {
            dotted.push(stem);
        }
        if dotted.is_empty() {
            continue;
        }
        out.push(Module {
            file: file.clone(),
            name: dotted.join("."),
        });
    }
    out
}

fn is_identifier(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Every identifier-like word of the texts.
fn words(texts: &BTreeMap<String, String>) -> HashSet<String> {
    texts
        .values()
        .flat_map(|t| t.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// The ruff configuration the bench writes: the file name and its text, extending the
/// project's own configuration with the ten rules. Returns also the file the project's
/// `.ruff.toml` moves to, if it had one.
fn ruff_config(root: &Path) -> (String, String, Option<(String, String)>) {
    let rules: Vec<String> = KINDS.iter().map(|k| format!("\"{}\"", k.rule)).collect();
    let lint = format!("[lint]\nextend-select = [{}]\n", rules.join(", "));
    let header = "# Written by `agency patterns bench --learning` in its private copy.\n";
    if root.join(".ruff.toml").is_file() {
        let base = "ruff-learning-bench-base.toml".to_string();
        return (
            ".ruff.toml".into(),
            format!("{header}extend = \"{base}\"\n\n{lint}"),
            Some((".ruff.toml".into(), base)),
        );
    }
    if root.join("ruff.toml").is_file() {
        return (
            ".ruff.toml".into(),
            format!("{header}extend = \"ruff.toml\"\n\n{lint}"),
            None,
        );
    }
    if agency_scan::tools::ruff::has_config(root) {
        return (
            "ruff.toml".into(),
            format!("{header}extend = \"pyproject.toml\"\n\n{lint}"),
            None,
        );
    }
    (
        "ruff.toml".into(),
        format!(
            "{header}\n[lint]\nselect = [\"{}\", {}]\n",
            agency_scan::tools::ruff::DEFAULT_SELECT.replace(',', "\", \""),
            rules.join(", ")
        ),
        None,
    )
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

/// Errors of the caller's hooks.
pub type HookError = Box<dyn std::error::Error + Send + Sync>;

/// What the benchmark needs from its caller (the CLI): the pieces a real heal gets there.
pub struct Hooks<'a> {
    /// The heal settings of a repository root, as `agency heal` resolves them.
    pub settings: &'a dyn Fn(&Path) -> Result<HealSettings, HookError>,
    /// A new client of the benchmark's private pattern store.
    pub client: &'a dyn Fn() -> Box<dyn PatternClient>,
    /// What a real heal does once its fixes are written: report the pattern outcomes, learn
    /// from the verified heals, record the heal events (`run id`, attempts).
    pub after_heal: &'a dyn Fn(&Patterns, &str, &[Attempt]),
}

/// What happened to one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Phase 1: healed by the deterministic fixer.
    HealedByFixer,
    /// Healed by a pattern confident enough to apply unattended.
    HealedAuto,
    /// Healed by a pattern's verified fix, approved by the simulated reviewer.
    HealedApproved,
    /// No learned pattern matched at the finding.
    NotMatched,
    /// A pattern's fix failed verification (rolled back).
    FailedVerification,
    /// Anything else (the reason says what).
    Other,
}

impl Outcome {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::HealedByFixer => "healed_by_fixer",
            Outcome::HealedAuto => "healed_auto",
            Outcome::HealedApproved => "healed_approved",
            Outcome::NotMatched => "not_matched",
            Outcome::FailedVerification => "failed_verification",
            Outcome::Other => "other",
        }
    }

    /// Whether the fix stays in the tree.
    pub fn kept(self) -> bool {
        matches!(
            self,
            Outcome::HealedByFixer | Outcome::HealedAuto | Outcome::HealedApproved
        )
    }
}

/// One instance in the report.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceReport {
    pub id: String,
    pub rule: &'static str,
    pub name: String,
    pub file: String,
    /// The finding's line when it was healed (or tried).
    pub line: Option<u32>,
    pub context: &'static str,
    /// 1 (fixers) or 2 (patterns alone).
    pub phase: u8,
    /// 0 for phase 1, 1..=9 in phase 2.
    pub round: usize,
    pub outcome: Outcome,
    pub pattern_id: Option<String>,
    /// The pattern's confidence when it was looked up.
    pub confidence: Option<f64>,
    /// For a kept fix: whether the result is the text ruff's fix gives.
    pub as_expected: Option<bool>,
    /// Whether its test failed in the suite run after its round.
    pub breaks_tests: bool,
    pub reason: Option<String>,
    /// Lookup + match + apply for this finding, in ms (phase 2).
    pub lookup_to_apply_ms: Option<f64>,
}

/// The pattern learned for a kind, at the end of the run.
#[derive(Debug, Clone, Serialize)]
pub struct LearnedPattern {
    pub id: String,
    pub before: String,
    pub after: String,
    pub confidence: f64,
    pub auto_apply: bool,
    pub successes: u32,
    pub failures: u32,
}

/// One kind in the report.
#[derive(Debug, Clone, Serialize)]
pub struct KindReport {
    pub rule: &'static str,
    pub name: &'static str,
    pub shape: &'static str,
    /// The patterns of its rule in the store at the end (normally one).
    pub patterns: Vec<LearnedPattern>,
    /// Why phase 1 learned nothing, when it did not.
    pub not_learned: Option<String>,
    pub healed_auto: usize,
    pub healed_approved: usize,
    pub not_matched: usize,
    pub failed_verification: usize,
    pub other: usize,
}

/// One heal run of the benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct RoundReport {
    pub round: usize,
    pub findings: usize,
    pub healed_by_fixer: usize,
    pub healed_auto: usize,
    pub healed_approved: usize,
    pub not_matched: usize,
    pub failed_verification: usize,
    pub other: usize,
    pub suite_runs: usize,
    /// The suite on the benchmark's tree after the round's fixes and approvals.
    pub suite_after: &'static str,
    pub wall_ms: u64,
}

/// Phase 2 in numbers.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseTwo {
    pub instances: usize,
    pub healed_auto: usize,
    pub healed_approved: usize,
    pub not_matched: usize,
    pub failed_verification: usize,
    pub other: usize,
    /// (auto + approved) / instances.
    pub share_healed_by_patterns: f64,
    /// Pattern fixes tried (a pattern matched and its fix was made).
    pub pattern_fixes_tried: usize,
    /// Of those, the share that passed verification (parse, re-scan, tests).
    pub verification_success: Option<f64>,
    /// Kept fixes (phase 2) whose result differs from ruff's fix or that fail their test.
    pub wrong_fixes_kept: usize,
}

/// Latencies of the pattern tier.
#[derive(Debug, Clone, Serialize)]
pub struct PatternLatency {
    /// Per phase-2 finding: the store lookup (embedding, search, templates compiled) plus
    /// parse, match and apply on the file's current text.
    pub lookup_to_apply: Latency,
    /// The lookup alone.
    pub lookup: Latency,
    /// Parse + match + apply (with its re-parse and idempotence check) alone.
    pub match_apply: Latency,
    /// What the engine does per candidate check ([`first_match`]: parse, match, apply, then
    /// re-parse and the idempotence check) on the same findings, each file padded to at least
    /// `padded_lines` lines with defect-free functions before it; [`PADDED_REPEATS`] samples
    /// per finding.
    pub match_apply_padded: Latency,
    /// Match + apply alone on the padded file, parsed beforehand (`agency_learn::apply` and
    /// the edits applied to the text): the template work without the parses.
    pub match_apply_parsed_padded: Latency,
    /// Parsing the padded file alone (one of the parses above).
    pub parse_padded: Latency,
    pub padded_lines: usize,
}

/// `agency patterns bench --learning --json`.
#[derive(Debug, Clone, Serialize)]
pub struct LearningReport {
    pub version: u32,
    pub project: String,
    /// Python files and lines of the project.
    pub files: usize,
    pub lines: usize,
    /// The modules planted in.
    pub modules: Vec<String>,
    pub seed: u64,
    pub instances: usize,
    pub verify_command: Option<String>,
    /// The project's suite in the copy before planting: `passed|failed|skipped`.
    pub suite_before_planting: &'static str,
    /// After the last round.
    pub suite_final: &'static str,
    /// Instances whose text ruff's fix gives differently from the generator's expectation
    /// (ruff's is the yardstick).
    pub generator_mismatches: Vec<String>,
    pub kinds: Vec<KindReport>,
    pub rounds: Vec<RoundReport>,
    pub phase1_healed: usize,
    pub phase1_learned: usize,
    pub phase2: PhaseTwo,
    pub latency: PatternLatency,
    /// How well the private store's confidence predicted success over the outcomes of the run
    /// (null when the store could not be asked; the notes say why).
    pub calibration: Option<agency_client::wire::CalibrationDoc>,
    /// Files where code outside the planted blocks changed (must be none).
    pub outside_changes: Vec<String>,
    /// The targets: ≥ 80% healed by patterns alone, no wrong fix kept, match + apply p99 ≤ 5
    /// ms on a 2,000-line file.
    pub targets_met: bool,
    pub suite_runs: usize,
    pub wall_ms: u64,
    pub notes: Vec<String>,
    pub details: Vec<InstanceReport>,
}

/// The benchmark's copy of the project with its corpus planted.
struct Prepared {
    /// Held for its lifetime: the copy is removed when it is dropped.
    _tree: Workspace,
    root: PathBuf,
    instances: Vec<Instance>,
    /// Module texts right after planting.
    planted: BTreeMap<String, String>,
    settings: HealSettings,
    files: usize,
    lines: usize,
    suite_before: &'static str,
    notes: Vec<String>,
}

fn suite_word(run: Option<&crate::SuiteRun>) -> &'static str {
    match run {
        None => "skipped",
        Some(r) if r.passed() => "passed",
        Some(_) => "failed",
    }
}

/// Copies the project, plants the corpus and its test module, writes the ruff configuration,
/// and checks that the planted code keeps the tests as they were.
fn prepare(project: &Path, hooks: &Hooks<'_>, step: &(dyn Fn(&str) + Sync)) -> Result<Prepared> {
    step("copying the project");
    let tree = Workspace::create(project)?;
    let root = std::fs::canonicalize(tree.root()).map_err(io_error(tree.root()))?;
    let mut notes = Vec::new();
    let files = python_files(&root)?;
    let mut texts = BTreeMap::new();
    for file in &files {
        let path = root.join(file);
        // A file that is not UTF-8 is neither planted in nor counted.
        if let Ok(text) = std::fs::read_to_string(&path) {
            texts.insert(file.clone(), text);
        }
    }
    let lines = texts.values().map(|t| t.lines().count()).sum();
    let mut modules = plantable(&root, &files, &texts);
    if modules.is_empty() {
        return Err(BenchError::NoModules {
            path: project.to_path_buf(),
        });
    }
    if modules.len() > MAX_MODULES {
        Rng::new(SEED).shuffle(&mut modules);
        modules.truncate(MAX_MODULES);
        modules.sort_by(|a, b| a.file.cmp(&b.file));
    }
    // pytest puts a root conftest's directory on sys.path: the planted test imports the
    // project's modules from the copy, whatever the project's own layout.
    let conftest = root.join("conftest.py");
    if !conftest.exists() {
        std::fs::write(&conftest, "").map_err(io_error(&conftest))?;
        notes.push(
            "wrote an empty conftest.py at the copy's root so that pytest imports the project from the copy".into(),
        );
    }
    let settings = (hooks.settings)(&root).map_err(|e| BenchError::Settings {
        root: root.clone(),
        message: e.to_string(),
    })?;
    let before = match &settings.verify {
        Some(command) => {
            step("running the project's tests before planting");
            Some(crate::verify::run_suite(command, &root)?)
        }
        None => None,
    };
    let suite_before = suite_word(before.as_ref());
    if let Some(run) = before.as_ref().filter(|r| !r.passed()) {
        notes.push(format!(
            "the project's tests already fail before planting ({}); fixes are then kept when they add no failing test",
            run.describe_failures()
        ));
    }

    step("planting 100 defects");
    let instances = generate(&modules, &words(&texts), SEED);
    let planted = plant(&instances, &texts, SEED);
    for (file, text) in &planted {
        let path = root.join(file);
        std::fs::write(&path, text).map_err(io_error(&path))?;
    }
    let test_dir = ["tests", "test"]
        .iter()
        .map(|d| root.join(d))
        .find(|d| d.is_dir())
        .unwrap_or_else(|| root.clone());
    let test_path = test_dir.join(TEST_FILE);
    std::fs::write(&test_path, test_module(&instances)).map_err(io_error(&test_path))?;
    let (config, text, moved) = ruff_config(&root);
    if let Some((from, to)) = moved {
        std::fs::rename(root.join(&from), root.join(&to)).map_err(io_error(&root.join(&from)))?;
    }
    let config_path = root.join(&config);
    std::fs::write(&config_path, text).map_err(io_error(&config_path))?;

    // Settings again: the planted test module may be the copy's first test.
    let settings = (hooks.settings)(&root).map_err(|e| BenchError::Settings {
        root: root.clone(),
        message: e.to_string(),
    })?;
    if let Some(command) = &settings.verify {
        step("running the tests with the planted code");
        let after = crate::verify::run_suite(command, &root)?;
        if !after.acceptable_against(before.as_ref()) {
            return Err(BenchError::PlantedBreaksTests {
                project: project.to_path_buf(),
                failures: after.describe_failures(),
            });
        }
    } else {
        notes.push("no verify command: fixes are checked by parse and re-scan only".into());
    }
    Ok(Prepared {
        _tree: tree,
        root,
        instances,
        planted,
        settings,
        files: files.len(),
        lines,
        suite_before,
        notes,
    })
}

/// The finding of each instance in `scanned` (same file, rule, inside its block).
fn locate(
    root: &Path,
    instances: &[&Instance],
    scanned: &[ScannedFinding],
) -> Result<Vec<Option<ScannedFinding>>> {
    let mut texts: BTreeMap<&str, String> = BTreeMap::new();
    let mut out = Vec::with_capacity(instances.len());
    for instance in instances {
        let file = instance.module.file.as_str();
        if !texts.contains_key(file) {
            let path = root.join(file);
            let text = std::fs::read_to_string(&path).map_err(io_error(&path))?;
            texts.insert(file, text);
        }
        let rule = KINDS[instance.kind].rule;
        let found = block_range(&texts[file], &instance.name).and_then(|(start, end)| {
            scanned
                .iter()
                .find(|s| {
                    let f = &s.finding;
                    f.file == file
                        && (start..=end).contains(&f.line)
                        && (f.rule == rule || f.sources.iter().any(|src| src.rule == rule))
                })
                .cloned()
        });
        out.push(found);
    }
    Ok(out)
}

/// One heal run over `targets` on the benchmark's tree, written back to it as a real heal
/// writes the user's tree, then the caller's hook.
fn heal(
    prepared: &Prepared,
    hooks: &Hooks<'_>,
    patterns: &Patterns,
    targets: &[ScannedFinding],
    no_rules: bool,
    run_id: &str,
    step: &(dyn Fn(&str) + Sync),
) -> Result<(Vec<Attempt>, usize)> {
    let progress = |event: crate::Progress| match event {
        crate::Progress::Attempt {
            index,
            total,
            rule,
            file,
            line,
        } => step(&format!("  [{index}/{total}] {rule} at {file}:{line}")),
        crate::Progress::Batch { fixes } => {
            step(&format!("  verifying {fixes} fixes with one test run"));
        }
        _ => {}
    };
    let mut session = crate::start(&prepared.settings, &progress)?;
    let tiers = crate::Tiers {
        patterns: Some(patterns),
        llm: None,
        no_rules,
    };
    let mut attempts =
        crate::attempt_all(&mut session, &prepared.settings, targets, &tiers, &progress);
    let writes = crate::apply::plan(&session, &attempts);
    let outcomes = crate::apply::execute(&prepared.root, &writes, &mut |_, _| {});
    crate::apply::settle(&mut attempts, &outcomes);
    (hooks.after_heal)(patterns, run_id, &attempts);
    Ok((attempts, session.suite_runs))
}

/// The simulated reviewer approves a verified pattern fix: its function's fixed text replaces
/// the function in the tree (the fix was verified on the text the round's kept fixes leave),
/// and the pattern gets a success, as `agency approvals approve` records it. Returns why not
/// when the fix cannot be taken (it changed code outside its function, or the function changed
/// since).
fn approve(
    root: &Path,
    instance: &Instance,
    attempt: &Attempt,
    patterns: &Patterns,
    run_id: &str,
) -> Result<Option<String>> {
    let (Some(proposal), Some(pattern)) = (&attempt.proposal, &attempt.pattern) else {
        return Ok(Some("no proposal to approve".into()));
    };
    let name = instance.name.as_str();
    if without_blocks(&proposal.before, &[name]) != without_blocks(&proposal.after, &[name]) {
        patterns.outcome(
            &pattern.id,
            false,
            &attempt.finding,
            &format!("approval-{run_id}-{}-reject", instance.id),
        );
        return Ok(Some(
            "rejected: the fix changes code outside the planted function".into(),
        ));
    }
    let path = root.join(&proposal.file);
    let current = std::fs::read_to_string(&path).map_err(io_error(&path))?;
    let (Some(before), Some(after)) = (
        block_text(&proposal.before, name),
        block_text(&proposal.after, name),
    ) else {
        return Ok(Some("the planted function is not in the proposal".into()));
    };
    if block_text(&current, name).as_deref() != Some(before.as_str()) {
        return Ok(Some(
            "conflict: the function changed since the fix was proposed".into(),
        ));
    }
    let Some(next) = replace_block(&current, name, &after) else {
        return Ok(Some("the planted function is gone".into()));
    };
    std::fs::write(&path, next).map_err(io_error(&path))?;
    patterns.outcome(
        &pattern.id,
        true,
        &attempt.finding,
        &format!("approval-{run_id}-{}-approve", instance.id),
    );
    Ok(None)
}

/// Classifies a phase-2 attempt.
fn classify(attempt: &Attempt) -> Outcome {
    match (attempt.strategy, attempt.status) {
        (Some(Strategy::Pattern), Status::Healed) => Outcome::HealedAuto,
        (Some(Strategy::Pattern), Status::PendingApproval) => Outcome::HealedApproved,
        (Some(Strategy::Pattern), Status::RolledBack | Status::Failed) => {
            Outcome::FailedVerification
        }
        (None, Status::Flagged) if attempt.lookup_hit != Some(true) => Outcome::NotMatched,
        _ => Outcome::Other,
    }
}

/// A lookup-to-apply measurement of one finding.
struct Timing {
    line: u32,
    column: u32,
    lookup: Duration,
    match_apply: Duration,
    matched: bool,
    confidence: Option<f64>,
    candidates: Vec<Candidate>,
}

/// Times what a heal does to find a pattern's fix for `finding`: the lookup through a fresh
/// client (no run cache), then parse, match and apply on `text`.
fn time_lookup(hooks: &Hooks<'_>, scanned: &ScannedFinding, text: &str) -> Timing {
    let patterns = Patterns::new((hooks.client)());
    let finding = &scanned.finding;
    let started = Instant::now();
    let candidates = patterns.candidates(finding);
    let lookup = started.elapsed();
    let started = Instant::now();
    let matched = first_match(&candidates, text, finding.line, finding.column, &|_| true);
    let match_apply = started.elapsed();
    Timing {
        line: finding.line,
        column: finding.column,
        lookup,
        match_apply,
        confidence: matched
            .as_ref()
            .map(|(c, _)| c.confidence)
            .or_else(|| candidates.first().map(|c| c.confidence)),
        matched: matched.is_some(),
        candidates,
    }
}

/// Lines of defect-free filler code put before a file to make it at least `lines` long.
fn filler(lines: usize) -> (String, u32) {
    let mut out = String::new();
    let mut n = 0u32;
    let mut i = 0;
    while (n as usize) < lines {
        out.push_str(&format!(
            "def filler_{i}(value):\n    total = value\n    for step in range(3):\n        total += step * {i}\n    return total\n\n\n"
        ));
        n += 7;
        i += 1;
    }
    (out, n)
}

/// Lines the padded match + apply measurement makes each file at least.
pub const PADDED_LINES: usize = 2000;

/// Samples of the padded measurement per finding.
pub const PADDED_REPEATS: usize = 5;

/// Runs the benchmark on a copy of `project`.
pub fn run(
    project: &Path,
    hooks: &Hooks<'_>,
    step: &(dyn Fn(&str) + Sync),
) -> Result<LearningReport> {
    let wall = Instant::now();
    if !project.is_dir() {
        return Err(BenchError::NotADirectory {
            path: project.to_path_buf(),
        });
    }
    let prepared = prepare(project, hooks, step)?;
    let root = prepared.root.clone();
    let instances = &prepared.instances;
    let mut notes = prepared.notes.clone();
    let mut suite_runs = 0usize;

    // The expected text of each instance: what ruff's own fix makes of it.
    step("scanning the planted copy");
    let scanned =
        agency_scan::scan(&prepared.settings.scan, &|_| {}).map_err(crate::Error::from)?;
    let all: Vec<&Instance> = instances.iter().collect();
    let found = locate(&root, &all, &scanned.findings)?;
    let mut expected: Vec<String> = Vec::with_capacity(instances.len());
    let mut missing: Vec<String> = Vec::new();
    let mut mismatches = Vec::new();
    for (instance, finding) in instances.iter().zip(&found) {
        let text = &prepared.planted[&instance.module.file];
        let fixed = finding.as_ref().and_then(|f| {
            crate::strategy::fixed_text(text, f.tool_fix.as_ref())
                .ok()
                .filter(|after| after != text)
                .and_then(|after| block_text(&after, &instance.name))
        });
        if let Some(fixed) = fixed {
            if fixed != instance.fixed {
                mismatches.push(instance.id.clone());
            }
            expected.push(fixed);
        } else {
            missing.push(format!(
                "{} {} in {}",
                instance.id, instance.name, instance.module.file
            ));
            expected.push(instance.fixed.clone());
        }
    }
    if let Some(example) = missing.first() {
        return Err(BenchError::NotDetected {
            project: project.to_path_buf(),
            count: missing.len(),
            example: example.clone(),
        });
    }

    let mut details: Vec<Option<InstanceReport>> = vec![None; instances.len()];
    let mut rounds = Vec::new();
    let mut timings: Vec<(usize, Timing, String)> = Vec::new();
    let run_prefix = format!("learning-bench-{}", crate::audit::run_id());

    for round in 0..PER_KIND {
        let started = Instant::now();
        let phase1 = round == 0;
        let members: Vec<usize> = (0..instances.len())
            .filter(|&i| instances[i].index == round)
            .collect();
        step(&format!(
            "round {round}: {} ({} findings)",
            if phase1 {
                "phase 1, deterministic fixers on"
            } else {
                "phase 2, deterministic fixers off"
            },
            members.len()
        ));
        let scanned = if phase1 {
            scanned.findings.clone()
        } else {
            agency_scan::scan(&prepared.settings.scan, &|_| {})
                .map_err(crate::Error::from)?
                .findings
        };
        let refs: Vec<&Instance> = members.iter().map(|&i| &instances[i]).collect();
        let located = locate(&root, &refs, &scanned)?;
        let mut targets = Vec::new();
        let mut target_of: Vec<usize> = Vec::new();
        for (&i, finding) in members.iter().zip(located) {
            match finding {
                Some(f) => {
                    target_of.push(i);
                    targets.push(f);
                }
                None => {
                    details[i] = Some(report_of(
                        &instances[i],
                        round,
                        None,
                        Outcome::Other,
                        Some("the planted defect was no longer reported".into()),
                    ));
                }
            }
        }
        if !phase1 {
            for (&i, target) in target_of.iter().zip(&targets) {
                let path = root.join(&target.finding.file);
                let text = std::fs::read_to_string(&path).map_err(io_error(&path))?;
                let timing = time_lookup(hooks, target, &text);
                timings.push((i, timing, text));
            }
        }
        let patterns = Patterns::new((hooks.client)());
        let run_id = format!("{run_prefix}-{round}");
        let (attempts, runs) = heal(
            &prepared, hooks, &patterns, &targets, !phase1, &run_id, step,
        )?;
        suite_runs += runs;
        for (&i, attempt) in target_of.iter().zip(&attempts) {
            let instance = &instances[i];
            let mut outcome = if phase1 {
                if attempt.status == Status::Healed && attempt.strategy == Some(Strategy::Rule) {
                    Outcome::HealedByFixer
                } else {
                    Outcome::Other
                }
            } else {
                classify(attempt)
            };
            let mut reason = attempt.reason.clone();
            if outcome == Outcome::HealedApproved {
                if let Some(why) = approve(&root, instance, attempt, &patterns, &run_id)? {
                    outcome = Outcome::Other;
                    reason = Some(why);
                } else {
                    reason = None;
                }
            }
            let mut report = report_of(instance, round, Some(attempt), outcome, reason);
            if let Some((_, timing, _)) = timings.iter().find(|(j, _, _)| *j == i) {
                report.lookup_to_apply_ms =
                    Some((timing.lookup + timing.match_apply).as_secs_f64() * 1000.0);
                if report.confidence.is_none() {
                    report.confidence = timing.confidence;
                }
                if !timing.matched && outcome == Outcome::NotMatched {
                    report.reason = Some(if timing.candidates.is_empty() {
                        "the store has no pattern for this rule".into()
                    } else {
                        format!(
                            "{} pattern(s) for {} in the store, none matches here",
                            timing.candidates.len(),
                            KINDS[instance.kind].rule
                        )
                    });
                }
            }
            details[i] = Some(report);
        }
        for e in patterns.errors() {
            if !notes.contains(&e) {
                notes.push(e);
            }
        }
        // Judge the kept fixes against ruff's text, then the suite on the tree.
        for &i in &members {
            let Some(report) = details[i].as_mut() else {
                continue;
            };
            if report.outcome.kept() {
                let path = root.join(&instances[i].module.file);
                let text = std::fs::read_to_string(&path).map_err(io_error(&path))?;
                report.as_expected = Some(
                    block_text(&text, &instances[i].name).as_deref() == Some(expected[i].as_str()),
                );
            }
        }
        let suite_after = match &prepared.settings.verify {
            Some(command) => {
                step(&format!(
                    "round {round}: running the tests on the healed tree"
                ));
                let run = crate::verify::run_suite(command, &root)?;
                suite_runs += 1;
                for &i in &members {
                    let test = test_name(&instances[i]);
                    if run
                        .failures
                        .iter()
                        .any(|f| f.ends_with(&format!("::{test}")))
                        && let Some(report) = details[i].as_mut()
                    {
                        report.breaks_tests = true;
                    }
                }
                suite_word(Some(&run))
            }
            None => "skipped",
        };
        let count = |o: Outcome| {
            members
                .iter()
                .filter(|&&i| details[i].as_ref().is_some_and(|r| r.outcome == o))
                .count()
        };
        rounds.push(RoundReport {
            round,
            findings: targets.len(),
            healed_by_fixer: count(Outcome::HealedByFixer),
            healed_auto: count(Outcome::HealedAuto),
            healed_approved: count(Outcome::HealedApproved),
            not_matched: count(Outcome::NotMatched),
            failed_verification: count(Outcome::FailedVerification),
            other: count(Outcome::Other),
            suite_runs: runs,
            suite_after,
            wall_ms: started.elapsed().as_millis() as u64,
        });
        step(&format!(
            "round {round}: {} by fixer, {} auto, {} approved, {} not matched, {} failed, {} other",
            count(Outcome::HealedByFixer),
            count(Outcome::HealedAuto),
            count(Outcome::HealedApproved),
            count(Outcome::NotMatched),
            count(Outcome::FailedVerification),
            count(Outcome::Other)
        ));
    }

    // The final state: nothing outside the planted blocks changed.
    let mut outside_changes = Vec::new();
    for (file, planted) in &prepared.planted {
        let path = root.join(file);
        let now = std::fs::read_to_string(&path).map_err(io_error(&path))?;
        let names: Vec<&str> = instances
            .iter()
            .filter(|i| &i.module.file == file)
            .map(|i| i.name.as_str())
            .collect();
        if without_blocks(&now, &names) != without_blocks(planted, &names) {
            outside_changes.push(file.clone());
        }
    }
    let suite_final = rounds.last().map_or("skipped", |r| r.suite_after);

    // The patterns at the end, per kind.
    let client = (hooks.client)();
    let listed = client.list().map(|l| l.patterns).unwrap_or_default();
    let details: Vec<InstanceReport> = details.into_iter().flatten().collect();
    let mut kinds = Vec::new();
    for (k, kind) in KINDS.iter().enumerate() {
        let mut patterns = Vec::new();
        for summary in listed.iter().filter(|p| p.rule == kind.rule && !p.retired) {
            let (before, after) = client
                .show(&summary.id)
                .map(|v| (v.template.before, v.template.after))
                .unwrap_or_default();
            patterns.push(LearnedPattern {
                id: summary.id.clone(),
                before,
                after,
                confidence: summary.confidence,
                auto_apply: summary.auto_apply,
                successes: summary.successes,
                failures: summary.failures,
            });
        }
        let first = details.iter().find(|d| d.rule == kind.rule && d.phase == 1);
        let first_instance = instances.iter().position(|i| i.kind == k && i.index == 0);
        let not_learned = if patterns.is_empty() {
            first_instance.map(|i| diagnose(&root, first, &instances[i], &expected[i]))
        } else {
            None
        };
        let phase2 = |o: Outcome| {
            details
                .iter()
                .filter(|d| d.rule == kind.rule && d.phase == 2 && d.outcome == o)
                .count()
        };
        kinds.push(KindReport {
            rule: kind.rule,
            name: kind.name,
            shape: kind.shape,
            patterns,
            not_learned,
            healed_auto: phase2(Outcome::HealedAuto),
            healed_approved: phase2(Outcome::HealedApproved),
            not_matched: phase2(Outcome::NotMatched),
            failed_verification: phase2(Outcome::FailedVerification),
            other: phase2(Outcome::Other),
        });
    }

    let phase2: Vec<&InstanceReport> = details.iter().filter(|d| d.phase == 2).collect();
    let count = |o: Outcome| phase2.iter().filter(|d| d.outcome == o).count();
    let (auto, approved) = (count(Outcome::HealedAuto), count(Outcome::HealedApproved));
    let failed = count(Outcome::FailedVerification);
    let tried = auto + approved + failed;
    let wrong = phase2
        .iter()
        .filter(|d| d.outcome.kept() && (d.as_expected == Some(false) || d.breaks_tests))
        .count();
    let n2 = instances.iter().filter(|i| i.index > 0).count();
    let share = if n2 == 0 {
        0.0
    } else {
        (auto + approved) as f64 / n2 as f64
    };

    step("timing match + apply on padded files");
    let mut padded = Vec::new();
    let mut parsed_only = Vec::new();
    let mut parses = Vec::new();
    for (_, timing, text) in &timings {
        if timing.candidates.is_empty() {
            continue;
        }
        let (pad, pad_lines) = filler(PADDED_LINES.saturating_sub(text.lines().count()));
        let big = format!("{pad}{text}");
        let line = timing.line + pad_lines;
        let site = agency_learn::Site::at(line, timing.column);
        for _ in 0..PADDED_REPEATS {
            let started = Instant::now();
            let _ = first_match(&timing.candidates, &big, line, timing.column, &|_| true);
            padded.push(started.elapsed());
            let started = Instant::now();
            let Ok(parsed) = agency_learn::parse_source(&big) else {
                continue;
            };
            parses.push(started.elapsed());
            let started = Instant::now();
            for candidate in &timing.candidates {
                if let Ok(Some(fix)) = agency_learn::apply(&candidate.rewrite, &parsed, site)
                    && fix.apply_to(&big).is_ok()
                {
                    break;
                }
            }
            parsed_only.push(started.elapsed());
        }
    }
    let lookups: Vec<Duration> = timings.iter().map(|(_, t, _)| t.lookup).collect();
    let matches: Vec<Duration> = timings.iter().map(|(_, t, _)| t.match_apply).collect();
    let totals: Vec<Duration> = timings
        .iter()
        .map(|(_, t, _)| t.lookup + t.match_apply)
        .collect();
    let latency = PatternLatency {
        lookup_to_apply: Latency::from_samples(&totals),
        lookup: Latency::from_samples(&lookups),
        match_apply: Latency::from_samples(&matches),
        match_apply_padded: Latency::from_samples(&padded),
        match_apply_parsed_padded: Latency::from_samples(&parsed_only),
        parse_padded: Latency::from_samples(&parses),
        padded_lines: PADDED_LINES,
    };
    let targets_met = share >= 0.8
        && wrong == 0
        && latency.match_apply_padded.samples > 0
        && latency.match_apply_padded.p99_ms <= 5.0;
    let phase1_learned = kinds.iter().filter(|k| !k.patterns.is_empty()).count();
    // The private store's calibration over every outcome the run recorded (LEARNING.md §8
    // check 7), as `GET /v1/stats` reports it.
    let calibration = match (hooks.client)().stats() {
        Ok(stats) => stats.calibration,
        Err(e) => {
            notes.push(format!("calibration not computed: {e}"));
            None
        }
    };
    Ok(LearningReport {
        version: REPORT_VERSION,
        project: project.display().to_string(),
        files: prepared.files,
        lines: prepared.lines,
        modules: {
            let set: BTreeSet<&str> = instances.iter().map(|i| i.module.file.as_str()).collect();
            set.into_iter().map(str::to_string).collect()
        },
        seed: SEED,
        instances: instances.len(),
        verify_command: prepared
            .settings
            .verify
            .as_ref()
            .map(crate::VerifyCommand::display),
        suite_before_planting: prepared.suite_before,
        suite_final,
        generator_mismatches: mismatches,
        kinds,
        rounds,
        phase1_healed: details
            .iter()
            .filter(|d| d.outcome == Outcome::HealedByFixer)
            .count(),
        phase1_learned,
        phase2: PhaseTwo {
            instances: n2,
            healed_auto: auto,
            healed_approved: approved,
            not_matched: count(Outcome::NotMatched),
            failed_verification: failed,
            other: count(Outcome::Other),
            share_healed_by_patterns: share,
            pattern_fixes_tried: tried,
            verification_success: (tried > 0).then(|| (auto + approved) as f64 / tried as f64),
            wrong_fixes_kept: wrong,
        },
        latency,
        calibration,
        outside_changes,
        targets_met,
        suite_runs,
        wall_ms: wall.elapsed().as_millis() as u64,
        notes,
        details,
    })
}

fn report_of(
    instance: &Instance,
    round: usize,
    attempt: Option<&Attempt>,
    outcome: Outcome,
    reason: Option<String>,
) -> InstanceReport {
    InstanceReport {
        id: instance.id.clone(),
        rule: KINDS[instance.kind].rule,
        name: instance.name.clone(),
        file: instance.module.file.clone(),
        line: attempt.map(|a| a.finding.line),
        context: instance.context,
        phase: if round == 0 { 1 } else { 2 },
        round,
        outcome,
        pattern_id: attempt.and_then(|a| a.pattern.as_ref().map(|p| p.id.clone())),
        confidence: attempt.and_then(|a| a.pattern.as_ref().map(|p| p.confidence)),
        as_expected: None,
        breaks_tests: false,
        reason,
        lookup_to_apply_ms: None,
    }
}

/// Why no pattern was learned from a kind's phase-1 heal: the heal's outcome, and what
/// extraction makes of ruff's fix of that instance (on the file as it is now).
fn diagnose(
    root: &Path,
    first: Option<&InstanceReport>,
    instance: &Instance,
    expected: &str,
) -> String {
    let heal = match first {
        None => "its first instance was not tried".to_string(),
        Some(f) if f.outcome == Outcome::HealedByFixer => {
            "its first instance was healed by the fixer".to_string()
        }
        Some(f) => format!(
            "its first instance was not healed by the fixer ({})",
            f.reason.as_deref().unwrap_or("no reason given")
        ),
    };
    let Ok(now) = std::fs::read_to_string(root.join(&instance.module.file)) else {
        return format!("{heal}; cannot read {}", instance.module.file);
    };
    let (Some(before), Some(after)) = (
        replace_block(&now, &instance.name, &instance.block),
        replace_block(&now, &instance.name, expected),
    ) else {
        return format!("{heal}; its function is gone");
    };
    let changed = instance
        .block
        .lines()
        .zip(expected.lines())
        .position(|(a, b)| a != b)
        .unwrap_or(0);
    let line = block_range(&before, &instance.name).map_or(1, |(start, _)| start) + changed as u32;
    let learned = match agency_learn::extract(KINDS[instance.kind].rule, &before, &after, line) {
        Err(e) => format!("extraction refuses ruff's fix: {e}"),
        Ok(extracted) => match crate::history::unusable(&extracted.rewrite) {
            Some(why) => format!("extraction gives a rewrite that is not stored: {why}"),
            None => format!(
                "ruff's fix would be learned as `{}` -> `{}`",
                extracted.rewrite.before.replace('\n', "⏎ "),
                extracted.rewrite.after.replace('\n', "⏎ ")
            ),
        },
    };
    format!("{heal}; {learned}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn modules() -> Vec<Module> {
        ["shop/orders.py", "shop/util.py", "shop/report.py"]
            .iter()
            .map(|f| Module {
                file: (*f).to_string(),
                name: f.trim_end_matches(".py").replace('/', "."),
            })
            .collect()
    }

    fn corpus() -> Vec<Instance> {
        let taken: HashSet<String> = ["raw_order".to_string()].into_iter().collect();
        generate(&modules(), &taken, SEED)
    }

    #[test]
    fn the_corpus_is_deterministic_with_ten_kinds_of_ten() {
        let a = corpus();
        assert_eq!(a, corpus(), "the same seed gives the same corpus");
        assert_eq!(a.len(), 100);
        for (k, kind) in KINDS.iter().enumerate() {
            let of_kind: Vec<&Instance> = a.iter().filter(|i| i.kind == k).collect();
            assert_eq!(of_kind.len(), PER_KIND, "{}", kind.rule);
            let indexes: BTreeSet<usize> = of_kind.iter().map(|i| i.index).collect();
            assert_eq!(indexes.len(), PER_KIND);
            let contexts: BTreeSet<&str> = of_kind.iter().map(|i| i.context).collect();
            assert_eq!(
                contexts.len(),
                PER_KIND,
                "{}: every instance has its own context",
                kind.rule
            );
        }
        let other = generate(&modules(), &HashSet::new(), SEED + 1);
        assert_ne!(a, other, "another seed gives another corpus");
    }

    #[test]
    fn every_instance_has_its_own_identifiers_and_avoids_the_projects() {
        let a = corpus();
        let names: BTreeSet<&str> = a.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names.len(), a.len(), "block names are distinct");
        let mut seen: HashSet<&str> = HashSet::new();
        for instance in &a {
            for id in &instance.identifiers {
                assert!(seen.insert(id), "{id} is used twice");
                assert_ne!(id, "raw_order", "a name the project uses");
            }
        }
    }

    #[test]
    fn blocks_parse_and_differ_from_their_fix_only_at_the_defect() {
        for instance in corpus() {
            assert!(
                ruff_python_parser::parse_module(&instance.block).is_ok(),
                "{}:\n{}",
                instance.id,
                instance.block
            );
            assert!(
                ruff_python_parser::parse_module(&instance.fixed).is_ok(),
                "{}:\n{}",
                instance.id,
                instance.fixed
            );
            assert_ne!(instance.block, instance.fixed, "{}", instance.id);
            assert_eq!(
                block_text(&instance.block, &instance.name).as_deref(),
                Some(instance.block.as_str()),
                "{}",
                instance.id
            );
            let changed = instance
                .block
                .lines()
                .zip(instance.fixed.lines())
                .filter(|(a, b)| a != b)
                .count();
            assert!(changed >= 1, "{}", instance.id);
        }
    }

    #[test]
    fn planting_keeps_the_module_and_every_block_is_found_again() {
        let a = corpus();
        let module = "\"\"\"Orders.\"\"\"\n\nimport os\n\n\n@decorator\ndef first(x):\n    return x\n\n\nclass Second:\n    pass\n";
        let texts: BTreeMap<String, String> = modules()
            .into_iter()
            .map(|m| (m.file, module.to_string()))
            .collect();
        let planted = plant(&a, &texts, SEED);
        assert_eq!(planted, plant(&a, &texts, SEED));
        for (file, text) in &planted {
            assert!(
                ruff_python_parser::parse_module(text).is_ok(),
                "{file}:\n{text}"
            );
            let names: Vec<&str> = a
                .iter()
                .filter(|i| &i.module.file == file)
                .map(|i| i.name.as_str())
                .collect();
            assert_eq!(
                without_blocks(text, &names).replace('\n', ""),
                module.replace('\n', "")
            );
        }
        for instance in &a {
            let text = &planted[&instance.module.file];
            assert_eq!(
                block_text(text, &instance.name).as_deref(),
                Some(instance.block.as_str()),
                "{}",
                instance.id
            );
            let replaced = replace_block(text, &instance.name, &instance.fixed).expect("present");
            assert_eq!(
                block_text(&replaced, &instance.name).as_deref(),
                Some(instance.fixed.as_str())
            );
        }
        let tests = test_module(&a);
        assert!(ruff_python_parser::parse_module(&tests).is_ok(), "{tests}");
        assert_eq!(tests.matches("\ndef test_").count(), 100);
    }
}
