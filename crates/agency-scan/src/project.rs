//! Project-wide rules: the import graph with its cycles (AGY101, strongly connected components
//! by Tarjan's algorithm, each reported once with its edges) and missing imports (AGY102, a name
//! read but never bound that a project module, the standard library or a well-known alias
//! provides). Both work on per-file facts (`FileAnalysis`), so an incremental scan updates the
//! graph from the cache and re-reads changed files only.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::Path;

use agency_core::Category;
use agency_core::contract::Severity;

use crate::native::imports::ModuleImports;
use crate::native::names::UnboundName;
use crate::native::names_table;
use crate::tools::RawFinding;

/// The facts the project rules need about one file.
#[derive(Debug, Clone, Copy)]
pub struct FileFacts<'a> {
    pub file: &'a str,
    pub imports: &'a ModuleImports,
    pub unbound: &'a [UnboundName],
}

/// The dotted module name of a file: directories holding an `__init__.py` are packages, so the
/// name starts at the outermost package (`src/pkg/mod.py` is `pkg.mod`).
pub fn module_name(
    root: &Path,
    file: &str,
    is_package_dir: &mut dyn FnMut(&Path) -> bool,
) -> String {
    let parts: Vec<&str> = file.split('/').collect();
    let Some((last, dirs)) = parts.split_last() else {
        return String::new();
    };
    let stem = last
        .strip_suffix(".pyi")
        .or_else(|| last.strip_suffix(".py"))
        .unwrap_or(last);
    let mut start = dirs.len();
    while start > 0 {
        let dir = root.join(dirs[..start].join("/"));
        if !is_package_dir(&dir) {
            break;
        }
        start -= 1;
    }
    let mut name: Vec<&str> = dirs[start..].to_vec();
    if stem != "__init__" {
        name.push(stem);
    }
    name.join(".")
}

/// The import graph of the project.
pub struct ImportGraph {
    /// Module name → file.
    modules: BTreeMap<String, String>,
    /// Module → (imported module → (line, column) of the first import of it).
    edges: BTreeMap<String, BTreeMap<String, (u32, u32)>>,
}

impl ImportGraph {
    /// Builds the graph; `names` maps each file to its module name.
    pub fn build(facts: &[FileFacts], names: &HashMap<&str, String>) -> Self {
        let mut modules = BTreeMap::new();
        for fact in facts {
            if let Some(name) = names.get(fact.file) {
                // A `.py` wins over its `.pyi` stub: the stub is never executed.
                if !is_stub(fact.file) || !modules.contains_key(name) {
                    modules.insert(name.clone(), fact.file.to_string());
                }
            }
        }
        let mut edges: BTreeMap<String, BTreeMap<String, (u32, u32)>> = BTreeMap::new();
        for fact in facts {
            if is_stub(fact.file) {
                continue;
            }
            let Some(from) = names.get(fact.file) else {
                continue;
            };
            let is_package = fact.file.ends_with("__init__.py");
            let targets = edges.entry(from.clone()).or_default();
            for import in &fact.imports.imports {
                for target in resolve(from, is_package, import, &modules) {
                    if target != *from {
                        targets
                            .entry(target)
                            .or_insert((import.line, import.column));
                    }
                }
            }
        }
        ImportGraph { modules, edges }
    }

    /// The graph by file: each file → the files it imports when it is imported.
    pub fn file_edges(&self) -> BTreeMap<String, BTreeSet<String>> {
        self.edges
            .iter()
            .filter_map(|(from, targets)| {
                let file = self.modules.get(from)?;
                let to = targets
                    .keys()
                    .filter_map(|t| self.modules.get(t))
                    .filter(|t| *t != file)
                    .cloned()
                    .collect();
                Some((file.clone(), to))
            })
            .collect()
    }

    /// The top-level names of the project's modules and packages, sorted.
    pub fn top_level(&self) -> Vec<String> {
        let set: BTreeSet<String> = self
            .modules
            .keys()
            .filter_map(|m| m.split('.').next())
            .filter(|m| !m.is_empty())
            .map(ToString::to_string)
            .collect();
        set.into_iter().collect()
    }

    /// The strongly connected components with more than one module, each sorted, in order.
    pub fn cycles(&self) -> Vec<Vec<String>> {
        let nodes: Vec<&String> = self.modules.keys().collect();
        let index: HashMap<&str, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let adjacency: Vec<Vec<usize>> = nodes
            .iter()
            .map(|n| {
                self.edges
                    .get(n.as_str())
                    .map(|t| {
                        t.keys()
                            .filter_map(|k| index.get(k.as_str()).copied())
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .collect();
        let mut components: Vec<Vec<String>> = tarjan(&adjacency)
            .into_iter()
            .filter(|c| c.len() > 1)
            .map(|c| {
                let mut names: Vec<String> = c.into_iter().map(|i| nodes[i].clone()).collect();
                names.sort();
                names
            })
            .collect();
        components.sort();
        components
    }

    /// The shortest cycle through `start` inside `component`, as a list of modules ending where
    /// it started.
    fn shortest_cycle(&self, start: &str, component: &BTreeSet<&str>) -> Vec<String> {
        let mut previous: HashMap<&str, &str> = HashMap::new();
        let mut queue = VecDeque::from([start]);
        while let Some(node) = queue.pop_front() {
            let Some(targets) = self.edges.get(node) else {
                continue;
            };
            for target in targets.keys().map(String::as_str) {
                if !component.contains(target) {
                    continue;
                }
                if target == start {
                    let mut path = vec![start.to_string()];
                    let mut at = node;
                    while at != start {
                        path.push(at.to_string());
                        at = previous[at];
                    }
                    path.push(start.to_string());
                    path.reverse();
                    return path;
                }
                if !previous.contains_key(target) {
                    previous.insert(target, node);
                    queue.push_back(target);
                }
            }
        }
        vec![start.to_string()]
    }

    /// One AGY101 finding per cycle that touches a file in `scanned` (all when `None`).
    pub fn cycle_findings(&self, scanned: Option<&BTreeSet<&str>>) -> Vec<RawFinding> {
        let mut out = Vec::new();
        for component in self.cycles() {
            let files: Vec<&str> = component
                .iter()
                .filter_map(|m| self.modules.get(m).map(String::as_str))
                .collect();
            if let Some(scanned) = scanned
                && !files.iter().any(|f| scanned.contains(f))
            {
                continue;
            }
            let members: BTreeSet<&str> = component.iter().map(String::as_str).collect();
            let start = component[0].as_str();
            let cycle = self.shortest_cycle(start, &members);
            let mut hops = Vec::new();
            for pair in cycle.windows(2) {
                let (line, _) = self.edges[&pair[0]][&pair[1]];
                hops.push(format!("{} ({}:{line})", pair[1], self.modules[&pair[0]]));
            }
            let edges_in_component: usize = component
                .iter()
                .map(|m| {
                    self.edges.get(m).map_or(0, |t| {
                        t.keys().filter(|k| members.contains(k.as_str())).count()
                    })
                })
                .sum();
            let mut message = format!("import cycle: {start} -> {}", hops.join(" -> "));
            if component.len() > cycle.len() - 1 {
                message.push_str(&format!(
                    "; {} modules and {edges_in_component} imports take part: {}",
                    component.len(),
                    component.join(", ")
                ));
            }
            message.push_str("; move an import into the function that needs it, or the shared code into its own module");
            let (line, column) = self.edges[start][&cycle[1]];
            out.push(RawFinding {
                tool: "agency",
                rule: "AGY101".to_string(),
                category: Category::Import,
                severity: Severity::Medium,
                file: self.modules[start].clone(),
                line,
                column,
                end_line: line,
                end_column: column,
                message,
                fix: None,
                impact_pct: None,
                related_line: None,
            });
        }
        out
    }
}

/// The project modules an import statement executes.
fn resolve(
    from: &str,
    is_package: bool,
    import: &crate::native::imports::Import,
    modules: &BTreeMap<String, String>,
) -> Vec<String> {
    let base = if import.level == 0 {
        import.module.clone()
    } else {
        // The package the import is relative to: the module itself for an `__init__`.
        let mut parts: Vec<&str> = from.split('.').filter(|p| !p.is_empty()).collect();
        if !is_package {
            parts.pop();
        }
        for _ in 1..import.level {
            if parts.pop().is_none() {
                return Vec::new();
            }
        }
        let mut base = parts.join(".");
        if !import.module.is_empty() {
            if !base.is_empty() {
                base.push('.');
            }
            base.push_str(&import.module);
        }
        base
    };
    let mut out = Vec::new();
    if import.names.is_empty() {
        // `import a.b.c` runs a, a.b and a.b.c: the deepest project module stands for them.
        let mut name = base.as_str();
        loop {
            if modules.contains_key(name) {
                out.push(name.to_string());
                break;
            }
            match name.rfind('.') {
                Some(dot) => name = &name[..dot],
                None => break,
            }
        }
        return out;
    }
    for name in &import.names {
        let sub = if base.is_empty() {
            name.clone()
        } else {
            format!("{base}.{name}")
        };
        if modules.contains_key(&sub) {
            out.push(sub);
        } else if modules.contains_key(&base) {
            out.push(base.clone());
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Tarjan's strongly connected components, iteratively (deep import chains must not overflow
/// the stack).
fn tarjan(adjacency: &[Vec<usize>]) -> Vec<Vec<usize>> {
    const UNVISITED: usize = usize::MAX;
    let n = adjacency.len();
    let mut index = vec![UNVISITED; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut components = Vec::new();
    let mut next = 0;
    for root in 0..n {
        if index[root] != UNVISITED {
            continue;
        }
        // (node, next edge to look at)
        let mut work = vec![(root, 0usize)];
        index[root] = next;
        low[root] = next;
        next += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&mut (node, ref mut edge)) = work.last_mut() {
            if let Some(&target) = adjacency[node].get(*edge) {
                *edge += 1;
                if index[target] == UNVISITED {
                    index[target] = next;
                    low[target] = next;
                    next += 1;
                    stack.push(target);
                    on_stack[target] = true;
                    work.push((target, 0));
                } else if on_stack[target] {
                    low[node] = low[node].min(index[target]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[node]);
            }
            if low[node] == index[node] {
                let mut component = Vec::new();
                while let Some(member) = stack.pop() {
                    on_stack[member] = false;
                    component.push(member);
                    if member == node {
                        break;
                    }
                }
                components.push(component);
            }
        }
    }
    components
}

/// AGY102 findings for the unbound names of one file.
pub fn missing_imports(fact: &FileFacts, top_level: &[String]) -> Vec<RawFinding> {
    fact.unbound
        .iter()
        .filter_map(|u| {
            let import = names_table::import_for(&u.name, top_level)?;
            // Insert the import after the module's leading imports. A name nothing binds
            // fails with NameError wherever it runs, so adding the import cannot break a path
            // that works today: the fix is safe (and still verified by the heal engine).
            let line = fact.imports.insert_line.max(1);
            let fix = crate::tools::ToolFix {
                applicability: "safe".to_string(),
                message: Some(format!("add `{import}`")),
                edits: vec![crate::tools::ToolEdit {
                    content: format!("{import}\n"),
                    start: (line, 1),
                    end: (line, 1),
                }],
            };
            Some(RawFinding {
                tool: "agency",
                rule: "AGY102".to_string(),
                category: Category::Import,
                severity: Severity::High,
                file: fact.file.to_string(),
                line: u.line,
                column: u.column,
                end_line: u.line,
                end_column: u.column + (u.end - u.start),
                message: format!("`{}` is used but never imported; add `{import}`", u.name),
                fix: Some(fix),
                impact_pct: None,
                related_line: None,
            })
        })
        .collect()
}

/// A type stub (`.pyi`; Python matches extensions case-sensitively).
fn is_stub(file: &str) -> bool {
    std::path::Path::new(file)
        .extension()
        .is_some_and(|e| e == "pyi")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_start_at_the_outermost_package() {
        let root = Path::new("/r");
        let mut packages = |d: &Path| {
            let s = d.to_string_lossy();
            s.ends_with("/pkg") || s.ends_with("/pkg/sub")
        };
        assert_eq!(
            module_name(root, "src/pkg/sub/m.py", &mut packages),
            "pkg.sub.m"
        );
        assert_eq!(
            module_name(root, "src/pkg/__init__.py", &mut packages),
            "pkg"
        );
        assert_eq!(module_name(root, "script.py", &mut packages), "script");
    }

    #[test]
    fn tarjan_finds_components() {
        // 0 -> 1 -> 2 -> 0, 2 -> 3, 3 -> 4 -> 3, 5 alone.
        let adjacency = vec![vec![1], vec![2], vec![0, 3], vec![4], vec![3], vec![]];
        let mut components: Vec<Vec<usize>> = tarjan(&adjacency)
            .into_iter()
            .map(|mut c| {
                c.sort_unstable();
                c
            })
            .collect();
        components.sort();
        assert_eq!(components, [vec![0, 1, 2], vec![3, 4], vec![5]]);
    }
}

/// Fixture tests of the project rules: every `# expect: CODE` line of the fixture directory
/// must be flagged, and nothing else.
#[cfg(test)]
mod fixture_tests {
    use std::fmt::Write as _;
    use std::path::PathBuf;

    use crate::scan::{ScanSettings, scan};

    fn check_dir(code: &str) {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/import")
            .join(code);
        let root = std::fs::canonicalize(&dir).unwrap();
        let mut settings = ScanSettings::new(root.clone());
        settings.tools.clear();
        settings.cache = false;
        settings.select = vec![code.to_string()];
        let output = scan(&settings, &|_| {}).unwrap();
        let marker = format!("# expect: {code}");
        let mut expected = Vec::new();
        for file in
            crate::discover::discover(&root, &[], &crate::discover::Excludes::new(&[]).unwrap())
                .unwrap()
        {
            let text = std::fs::read_to_string(root.join(&file)).unwrap();
            for (i, line) in text.lines().enumerate() {
                if line.contains(&marker) {
                    expected.push((file.clone(), i as u32 + 1));
                }
            }
        }
        let flagged: Vec<(String, u32)> = output
            .report
            .findings
            .iter()
            .map(|f| (f.file.clone(), f.line))
            .collect();
        assert_eq!(flagged, expected, "fixtures/import/{code}");
        let mut rendered = String::new();
        for f in &output.report.findings {
            let _ = writeln!(
                rendered,
                "{}:{}:{} {} [{} {}] {}",
                f.file,
                f.line,
                f.column,
                f.rule,
                f.priority.as_str(),
                f.severity.as_str(),
                f.message
            );
        }
        insta::assert_snapshot!(code, rendered);
    }

    #[test]
    fn agy101_import_cycle() {
        check_dir("AGY101");
    }

    #[test]
    fn agy102_missing_import() {
        check_dir("AGY102");
    }

    #[test]
    fn a_missing_import_comes_with_a_safe_fix_after_the_leading_imports() {
        let imports = crate::native::imports::ModuleImports {
            insert_line: 4,
            ..crate::native::imports::ModuleImports::default()
        };
        let unbound = [crate::native::names::UnboundName {
            name: "json".into(),
            start: 40,
            end: 44,
            line: 9,
            column: 12,
        }];
        let fact = crate::project::FileFacts {
            file: "shop/util.py",
            imports: &imports,
            unbound: &unbound,
        };
        let found = crate::project::missing_imports(&fact, &[]);
        let fix = found[0].fix.as_ref().unwrap();
        assert_eq!(fix.applicability, "safe");
        assert_eq!(fix.edits.len(), 1);
        assert_eq!(fix.edits[0].content, "import json\n");
        assert_eq!((fix.edits[0].start, fix.edits[0].end), ((4, 1), (4, 1)));
        // A name that resolves to nothing known gets no finding, so no guess at an import.
        let unknown = [crate::native::names::UnboundName {
            name: "frobnicate".into(),
            ..unbound[0].clone()
        }];
        let fact = crate::project::FileFacts {
            unbound: &unknown,
            ..fact
        };
        assert!(crate::project::missing_imports(&fact, &[]).is_empty());
    }
}
