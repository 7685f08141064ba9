//! BM25 text search (tantivy) over the normalised message, rule and code tokens of each pattern.
//!
//! User text never goes through tantivy's query parser (it would read `category:x` as a field
//! and `*` as match-all): it is tokenised with the field's own analyzer and the terms are OR-ed.
//! Each commit carries the highest primary key it covers as its payload, so the store knows
//! where to catch up from after a crash.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, ConstScoreQuery, Occur, Query, TermQuery};
use tantivy::schema::{FAST, Field, INDEXED, IndexRecordOption, STRING, Schema, TEXT};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use crate::error::{Error, Result};

/// Writer memory: tantivy's minimum for one thread.
const WRITER_BUDGET_BYTES: usize = 15_000_000;

/// One pattern's text, as indexed.
#[derive(Debug, Clone, Copy)]
pub struct TextDoc<'a> {
    pub pk: u64,
    pub category: &'a str,
    pub rule: &'a str,
    pub message: &'a str,
    pub code: &'a str,
}

#[derive(Debug, Clone, Copy)]
struct Fields {
    body: Field,
    category: Field,
    rule: Field,
    pk: Field,
}

/// The text index.
pub struct TextIndex {
    index: Index,
    reader: IndexReader,
    /// Taken on first write, so that a process that only reads never holds tantivy's writer
    /// lock (another agency process may be writing).
    writer: Mutex<Option<IndexWriter>>,
    fields: Fields,
    path: PathBuf,
    /// The id of the database this index is derived from, written into every commit.
    owner: String,
}

impl std::fmt::Debug for TextIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextIndex")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn schema() -> (Schema, Fields) {
    let mut sb = Schema::builder();
    // Message, rule and code tokens in one analysed field; rule and category also raw, as filters.
    let body = sb.add_text_field("body", TEXT);
    let category = sb.add_text_field("category", STRING);
    let rule = sb.add_text_field("rule", STRING);
    let pk = sb.add_u64_field("pk", INDEXED | FAST);
    (
        sb.build(),
        Fields {
            body,
            category,
            rule,
            pk,
        },
    )
}

impl TextIndex {
    /// Opens the index in `dir`. Any damage is an error; the caller then calls [`Self::create`].
    pub fn open(dir: &Path) -> Result<Self> {
        let index = Index::open_in_dir(dir).map_err(|e| Error::index(dir, e))?;
        let (expected, fields) = schema();
        if index.schema() != expected {
            return Err(Error::index(dir, "the text index has another schema"));
        }
        Self::from_index(index, fields, dir)
    }

    /// Creates an empty index in `dir`, removing whatever was there.
    pub fn create(dir: &Path) -> Result<Self> {
        if dir.exists() {
            fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let (schema, fields) = schema();
        let index = Index::create_in_dir(dir, schema).map_err(|e| Error::index(dir, e))?;
        Self::from_index(index, fields, dir)
    }

    /// An index in memory (for benchmarks and throwaway stores).
    pub fn in_memory() -> Result<Self> {
        let (schema, fields) = schema();
        let index = Index::create_in_ram(schema);
        Self::from_index(index, fields, Path::new(":memory:"))
    }

    fn from_index(index: Index, fields: Fields, dir: &Path) -> Result<Self> {
        let reader: IndexReader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(|e| Error::index(dir, e))?;
        let this = Self {
            index,
            reader,
            writer: Mutex::new(None),
            fields,
            path: dir.to_path_buf(),
            owner: String::new(),
        };
        // Damaged segments only show when searched: probe once so that open fails instead.
        this.search("probe", None, None, 1)?;
        Ok(this)
    }

    /// Records the id of the database this index is derived from in every later commit.
    #[must_use]
    pub fn with_owner(mut self, owner: &str) -> Self {
        self.owner = owner.to_string();
        self
    }

    /// The commit payload: `"<owner> <highest key>"` (or just the key, without an owner).
    fn payload(&self) -> Result<(Option<String>, u64)> {
        let meta = self
            .index
            .load_metas()
            .map_err(|e| Error::index(&self.path, e))?;
        let payload = meta.payload.unwrap_or_default();
        let mut parts: Vec<&str> = payload.split_whitespace().collect();
        let max = parts.pop().and_then(|p| p.parse().ok()).unwrap_or(0);
        Ok((parts.first().map(|o| (*o).to_string()), max))
    }

    /// The highest primary key covered by the last commit (0 when empty).
    pub fn indexed_up_to(&self) -> Result<u64> {
        Ok(self.payload()?.1)
    }

    /// The database id recorded by the last commit, if any.
    pub fn recorded_owner(&self) -> Result<Option<String>> {
        Ok(self.payload()?.0)
    }

    /// Number of documents (tombstones included).
    pub fn len(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds documents and commits them, recording the highest key covered.
    pub fn add(&self, docs: &[TextDoc<'_>]) -> Result<()> {
        let Some(max_pk) = docs.iter().map(|d| d.pk).max() else {
            return Ok(());
        };
        let mut guard = self
            .writer
            .lock()
            .map_err(|_| Error::index(&self.path, "text index writer poisoned by a panic"))?;
        if guard.is_none() {
            let writer = self
                .index
                .writer_with_num_threads(1, WRITER_BUDGET_BYTES)
                .map_err(|e| match e {
                    tantivy::TantivyError::LockFailure(..) => Error::Locked {
                        path: self.path.clone(),
                    },
                    other => Error::index(&self.path, other),
                })?;
            *guard = Some(writer);
        }
        let writer = guard.as_mut().expect("set just above");
        // Under the writer lock, so that two adds cannot move the mark backwards.
        let covered = max_pk.max(self.indexed_up_to()?);
        let f = self.fields;
        for d in docs {
            let mut doc = TantivyDocument::default();
            doc.add_text(f.body, format!("{} {} {}", d.rule, d.message, d.code));
            doc.add_text(f.category, d.category);
            doc.add_text(f.rule, d.rule);
            doc.add_u64(f.pk, d.pk);
            writer
                .add_document(doc)
                .map_err(|e| Error::index(&self.path, e))?;
        }
        let mut prepared = writer
            .prepare_commit()
            .map_err(|e| Error::index(&self.path, e))?;
        let payload = if self.owner.is_empty() {
            covered.to_string()
        } else {
            format!("{} {covered}", self.owner)
        };
        prepared.set_payload(&payload);
        prepared.commit().map_err(|e| Error::index(&self.path, e))?;
        drop(guard);
        self.reader
            .reload()
            .map_err(|e| Error::index(&self.path, e))
    }

    /// BM25 top `limit` as (primary key, score), with optional exact category and rule filters.
    pub fn search(
        &self,
        text: &str,
        category: Option<&str>,
        rule: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(u64, f32)>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let f = self.fields;
        let mut analyzer = self
            .index
            .tokenizer_for_field(f.body)
            .map_err(|e| Error::index(&self.path, e))?;
        let mut stream = analyzer.token_stream(text);
        let mut terms: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        while let Some(token) = stream.next() {
            if seen.insert(token.text.clone()) {
                terms.push((
                    Occur::Should,
                    Box::new(TermQuery::new(
                        Term::from_field_text(f.body, &token.text),
                        IndexRecordOption::WithFreqs,
                    )),
                ));
            }
        }
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        let mut clauses: Vec<(Occur, Box<dyn Query>)> =
            vec![(Occur::Must, Box::new(BooleanQuery::new(terms)))];
        for (field, value) in [(f.category, category), (f.rule, rule)] {
            if let Some(value) = value {
                let filter = TermQuery::new(
                    Term::from_field_text(field, value),
                    IndexRecordOption::Basic,
                );
                clauses.push((
                    Occur::Must,
                    Box::new(ConstScoreQuery::new(Box::new(filter), 0.0)),
                ));
            }
        }
        let query = BooleanQuery::new(clauses);
        let searcher = self.reader.searcher();
        let hits = searcher
            .search(&query, &TopDocs::with_limit(limit).order_by_score())
            .map_err(|e| Error::index(&self.path, e))?;
        let mut out = Vec::with_capacity(hits.len());
        for (score, addr) in hits {
            let column = searcher
                .segment_reader(addr.segment_ord)
                .fast_fields()
                .u64("pk")
                .map_err(|e| Error::index(&self.path, e))?;
            if let Some(pk) = column.first(addr.doc_id) {
                out.push((pk, score));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc<'a>(pk: u64, category: &'a str, rule: &'a str, message: &'a str) -> TextDoc<'a> {
        TextDoc {
            pk,
            category,
            rule,
            message,
            code: "",
        }
    }

    #[test]
    fn search_filters_and_survives_query_syntax() {
        let dir = tempfile::tempdir().unwrap();
        let index = TextIndex::create(&dir.path().join("text")).unwrap();
        index
            .add(&[
                doc(
                    1,
                    "style",
                    "E711",
                    "comparison to none should be cond is none",
                ),
                doc(
                    2,
                    "runtime",
                    "none-attribute",
                    "nonetype object has no attribute group",
                ),
                doc(3, "security", "B608", "possible sql injection vector"),
            ])
            .unwrap();
        assert_eq!(index.indexed_up_to().unwrap(), 3);
        let hits = index
            .search("'NoneType' object has no attribute", None, None, 10)
            .unwrap();
        assert_eq!(hits[0].0, 2);
        let filtered = index.search("none", Some("style"), None, 10).unwrap();
        assert_eq!(filtered.iter().map(|h| h.0).collect::<Vec<_>>(), [1]);
        let by_rule = index.search("sql", None, Some("B608"), 10).unwrap();
        assert_eq!(by_rule.iter().map(|h| h.0).collect::<Vec<_>>(), [3]);
        for nasty in ["*", "category:style", "\"", ")(", "", "   "] {
            assert!(
                index.search(nasty, None, None, 10).unwrap().is_empty(),
                "{nasty}"
            );
        }
    }

    #[test]
    fn reopen_keeps_documents_and_payload_and_damage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("text");
        {
            let index = TextIndex::create(&path).unwrap();
            index
                .add(&[doc(5, "style", "F401", "unused import os")])
                .unwrap();
        }
        let index = TextIndex::open(&path).unwrap();
        assert_eq!(index.indexed_up_to().unwrap(), 5);
        assert_eq!(index.search("import", None, None, 5).unwrap()[0].0, 5);
        drop(index);
        fs::write(path.join("meta.json"), b"{ not json").unwrap();
        assert!(TextIndex::open(&path).is_err());
        assert!(TextIndex::open(&dir.path().join("missing")).is_err());
    }
}
