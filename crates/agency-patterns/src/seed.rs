//! The curated seed library: one TOML file per pattern under `index/<category>/`, embedded into
//! the binary at build time and loaded into a store on first use (and again when the library
//! gains patterns; known ones are left as they are, with their track record).

use std::path::{Path, PathBuf};

use agency_core::pattern::{Example, PatternSpec, Rewrite, collapse_ws};
use agency_core::{Applicability, Category, Source};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::store::PatternStore;

include!(concat!(env!("OUT_DIR"), "/seed_files.rs"));

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedFile {
    id: String,
    category: String,
    rule: String,
    title: String,
    message: String,
    applicability: String,
    before: String,
    after: String,
    explanation: String,
    prior: SeedPrior,
    examples: Vec<SeedExample>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedPrior {
    successes: f64,
    failures: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedExample {
    before: String,
    after: String,
}

/// Parses one seed file. `path` is only used in error messages.
pub fn parse(path: &Path, text: &str) -> Result<PatternSpec> {
    let err = |message: String| Error::File {
        path: path.to_path_buf(),
        message,
    };
    let f: SeedFile =
        toml::from_str(text).map_err(|e| err(format!("invalid seed pattern: {e}")))?;
    let category: Category = f.category.parse().map_err(|e| err(format!("{e}")))?;
    let applicability: Applicability = f.applicability.parse().map_err(|e| err(format!("{e}")))?;
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
    if stem.as_deref() != Some(f.id.as_str()) {
        return Err(err(format!("id `{}` must equal the file name", f.id)));
    }
    let prior_ok = |x: f64| x.is_finite() && (0.0..=50.0).contains(&x);
    if !prior_ok(f.prior.successes) || !prior_ok(f.prior.failures) {
        return Err(err("prior counts must be between 0 and 50".into()));
    }
    let spec = PatternSpec {
        id: f.id,
        category,
        rule: f.rule,
        title: f.title,
        message: f.message,
        explanation: collapse_ws(&f.explanation),
        applicability,
        rewrite: Rewrite {
            before: f.before,
            after: f.after,
        },
        examples: f
            .examples
            .into_iter()
            .map(|e| Example {
                before: e.before,
                after: e.after,
                source: Source::Seed,
            })
            .collect(),
        source: Source::Seed,
        prior: (f.prior.successes, f.prior.failures),
    };
    spec.validate().map_err(|e| err(e.to_string()))?;
    // As every stored pattern's, a seed's template must compile as the healer compiles it.
    agency_learn::compile(&spec.rewrite).map_err(|e| err(e.to_string()))?;
    Ok(spec)
}

/// Every pattern of the embedded seed library, in path order.
pub fn library() -> Result<Vec<PatternSpec>> {
    SEED_FILES
        .iter()
        .map(|(rel, text)| parse(&PathBuf::from("index").join(rel), text))
        .collect()
}

/// A content hash of the embedded library, to notice when it changed.
pub fn library_version() -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (rel, text) in SEED_FILES {
        h.update(rel.as_bytes());
        h.update([0]);
        h.update(text.as_bytes());
        h.update([0]);
    }
    agency_core::pattern::hex(&h.finalize()[..8])
}

/// What seeding did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedReport {
    pub added: usize,
    pub already_present: usize,
}

/// Loads the seed library into the store unless this version of it was loaded before.
pub fn ensure_seeded(
    store: &PatternStore,
    now: i64,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Option<SeedReport>> {
    let version = library_version();
    if store.meta("seed_version")?.as_deref() == Some(version.as_str()) {
        return Ok(None);
    }
    let specs = library()?;
    let total = specs.len();
    let items = specs.into_iter().map(|s| (s, None, None, None)).collect();
    let (added, skipped) = store.insert_many(items, now, progress)?;
    store.set_meta("seed_version", &version)?;
    store.checkpoint()?;
    debug_assert_eq!(added + skipped.len(), total);
    Ok(Some(SeedReport {
        added,
        already_present: skipped.len(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashSet};

    #[test]
    fn the_library_is_valid_and_covers_every_category() {
        let specs = library().unwrap();
        assert!(specs.len() >= 40, "{} seed patterns", specs.len());
        let mut per_category: BTreeMap<&str, usize> = BTreeMap::new();
        for s in &specs {
            *per_category.entry(s.category.as_str()).or_default() += 1;
        }
        for c in Category::ALL {
            assert!(
                per_category.get(c.as_str()).copied().unwrap_or(0) >= 5,
                "{per_category:?}"
            );
        }
        let ids: HashSet<_> = specs.iter().map(|s| &s.id).collect();
        let fingerprints: HashSet<_> = specs.iter().map(PatternSpec::fingerprint).collect();
        assert_eq!(ids.len(), specs.len());
        assert_eq!(fingerprints.len(), specs.len());
        for (rel, _) in SEED_FILES {
            let dir = rel.split('/').next().unwrap_or_default();
            assert!(
                dir.parse::<Category>().is_ok(),
                "{rel} is not under a category directory"
            );
        }
    }

    #[test]
    fn every_seed_template_compiles_as_the_store_requires() {
        // Parsed without the template check, so that every failure is listed at once.
        let mut failures = Vec::new();
        let mut n_seeds = 0;
        for (rel, text) in SEED_FILES {
            let f: SeedFile = toml::from_str(text).unwrap();
            n_seeds += 1;
            let rewrite = Rewrite {
                before: f.before,
                after: f.after,
            };
            if let Err(e) = agency_learn::compile(&rewrite) {
                failures.push(format!("{rel}: {e}"));
            }
        }
        assert!(n_seeds >= 40, "{n_seeds} seed files");
        assert!(failures.is_empty(), "{failures:#?}");
        for spec in library().unwrap() {
            crate::store::validate_spec(&spec).unwrap();
        }
    }

    #[test]
    fn a_seed_whose_template_does_not_parse_is_refused() {
        let (rel, text) = SEED_FILES
            .iter()
            .find(|(_, text)| text.contains("\nbefore = \""))
            .expect("a seed with a one-line before template");
        let start = text.find("\nbefore = \"").unwrap() + "\nbefore = \"".len();
        let broken = format!("{}def (?x == None{}", &text[..start], &text[start..]);
        let err = parse(&PathBuf::from("index").join(rel), &broken)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(rel.rsplit('/').next().unwrap()) && err.contains("does not parse"),
            "{err}"
        );
    }

    #[test]
    fn bad_seed_files_name_the_problem() {
        let path = Path::new("index/style/style-x.toml");
        let missing = "id = \"style-x\"\ncategory = \"style\"\n";
        let err = parse(path, missing).unwrap_err().to_string();
        assert!(
            err.contains("style-x.toml") && err.contains("missing field"),
            "{err}"
        );
        let wrong_id = SEED_FILES[0].1.replacen("id = \"", "id = \"zz-", 1);
        let err = parse(&PathBuf::from("index").join(SEED_FILES[0].0), &wrong_id)
            .unwrap_err()
            .to_string();
        assert!(err.contains("must equal the file name"), "{err}");
    }
}
