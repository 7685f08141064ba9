//! The pattern database: SQLite in WAL mode, the source of truth for patterns, examples and
//! outcomes. The vector and text indexes are derived from it and can always be rebuilt.
//!
//! Schema migrations are numbered by `PRAGMA user_version`; a database from a newer agency is
//! refused with a clear error rather than guessed at.

use std::path::{Path, PathBuf};
use std::time::Duration;

use agency_core::confidence::TrackRecord;
use agency_core::pattern::{Example, PatternSpec, Rewrite};
use agency_core::{Applicability, Category, Source};
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::calibration::History;
use crate::error::{Error, Result};

/// Migrations, in order; the database's `user_version` is the number applied.
const MIGRATIONS: &[&str] = &[
    r"
CREATE TABLE patterns (
    pk INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    category TEXT NOT NULL,
    rule TEXT NOT NULL,
    title TEXT NOT NULL,
    message TEXT NOT NULL,
    explanation TEXT NOT NULL,
    applicability TEXT NOT NULL,
    before TEXT NOT NULL,
    after TEXT NOT NULL,
    source TEXT NOT NULL,
    fingerprint TEXT NOT NULL UNIQUE,
    signature TEXT NOT NULL,
    sig_message TEXT NOT NULL,
    sig_code TEXT NOT NULL,
    embedding BLOB NOT NULL,
    embedding_model TEXT NOT NULL,
    prior_successes REAL NOT NULL,
    prior_failures REAL NOT NULL,
    successes INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    decayed_successes REAL NOT NULL DEFAULT 0,
    decayed_failures REAL NOT NULL DEFAULT 0,
    as_of INTEGER NOT NULL,
    support INTEGER NOT NULL DEFAULT 1,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    retired_at INTEGER,
    retired_reason TEXT
);
CREATE INDEX patterns_rule ON patterns(rule);
CREATE TABLE examples (
    pk INTEGER PRIMARY KEY AUTOINCREMENT,
    pattern_pk INTEGER NOT NULL REFERENCES patterns(pk),
    before TEXT NOT NULL,
    after TEXT NOT NULL,
    source TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX examples_pattern ON examples(pattern_pk);
CREATE TABLE outcomes (
    pk INTEGER PRIMARY KEY AUTOINCREMENT,
    pattern_pk INTEGER NOT NULL REFERENCES patterns(pk),
    success INTEGER NOT NULL,
    finding TEXT,
    duration_ms INTEGER,
    idempotency_key TEXT,
    at INTEGER NOT NULL,
    UNIQUE (pattern_pk, idempotency_key)
);
CREATE INDEX outcomes_pattern ON outcomes(pattern_pk);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
",
    r"
CREATE TABLE heals (
    pk INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    category TEXT NOT NULL,
    rule TEXT NOT NULL,
    strategy TEXT NOT NULL,
    status TEXT NOT NULL,
    pattern_id TEXT,
    lookup_hit INTEGER,
    idempotency_key TEXT UNIQUE
);
CREATE INDEX heals_at ON heals(at);
",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// A pattern row without its examples: what the store keeps in memory for every pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct PatternRow {
    pub pk: u64,
    pub id: String,
    pub category: Category,
    pub rule: String,
    pub title: String,
    pub message: String,
    pub explanation: String,
    pub applicability: Applicability,
    pub rewrite: Rewrite,
    pub source: Source,
    pub fingerprint: String,
    pub signature: String,
    pub track: TrackRecord,
    pub support: u32,
    pub created_at: i64,
    pub updated_at: i64,
    pub retired: Option<(i64, String)>,
}

/// The columns of a pattern that lookups filter and rank on.
#[derive(Debug, Clone, PartialEq)]
pub struct MetaRow {
    pub pk: u64,
    pub id: String,
    pub category: Category,
    pub rule: String,
    pub applicability: Applicability,
    pub track: TrackRecord,
    pub retired: bool,
}

/// What the text index needs of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextFields {
    pub pk: u64,
    pub category: String,
    pub rule: String,
    pub message: String,
    pub code: String,
}

/// A new pattern ready to insert: its spec, normalised signature parts and embedding.
#[derive(Debug, Clone)]
pub struct NewRow<'a> {
    pub spec: &'a PatternSpec,
    pub signature: &'a str,
    pub sig_message: &'a str,
    pub sig_code: &'a str,
    pub embedding: &'a [f32],
    pub model: &'a str,
    pub track: TrackRecord,
    pub support: u32,
    pub created_at: i64,
    pub retired: Option<(i64, String)>,
}

/// An outcome to record.
#[derive(Debug, Clone)]
pub struct OutcomeRow<'a> {
    pub pattern_pk: u64,
    pub success: bool,
    pub finding: Option<&'a str>,
    pub duration_ms: Option<u64>,
    pub idempotency_key: Option<&'a str>,
    pub at: i64,
}

/// The open database.
pub struct Db {
    conn: Connection,
    path: PathBuf,
}

impl Db {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path).map_err(|e| Error::db(path, e))?;
        let db = Self {
            conn,
            path: path.to_path_buf(),
        };
        db.configure()?;
        db.migrate()?;
        Ok(db)
    }

    fn configure(&self) -> Result<()> {
        let c = &self.conn;
        c.busy_timeout(Duration::from_secs(10))
            .map_err(|e| self.err(e))?;
        agency_fs::sqlite::enable_wal(c, Duration::from_secs(10)).map_err(|e| self.err(e))?;
        // FULL: a commit that returned is on disk, so an acknowledged outcome survives a crash.
        c.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| self.err(e))?;
        c.pragma_update(None, "foreign_keys", "ON")
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn migrate(&self) -> Result<()> {
        let version = |c: &Connection| -> rusqlite::Result<i64> {
            c.pragma_query_value(None, "user_version", |r| r.get(0))
        };
        if version(&self.conn).map_err(|e| self.err(e))? == SCHEMA_VERSION {
            return Ok(());
        }
        // Read the version again inside the write transaction: two processes opening a new
        // store at once must not both apply the same migration.
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| self.err(e))?;
        let result = (|| -> Result<()> {
            let found = version(&self.conn).map_err(|e| self.err(e))?;
            if found > SCHEMA_VERSION {
                return Err(Error::NewerSchema {
                    path: self.path.clone(),
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
            for (idx, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
                self.conn
                    .execute_batch(&format!("{sql}; PRAGMA user_version = {};", idx + 1))
                    .map_err(|e| self.err(e))?;
            }
            if found == 0 {
                self.conn
                    .execute(
                        "INSERT INTO meta (key, value) VALUES ('store_id', ?1)",
                        [new_store_id(&self.path)],
                    )
                    .map_err(|e| self.err(e))?;
            }
            Ok(())
        })();
        let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
        self.conn.execute_batch(end).map_err(|e| self.err(e))?;
        result
    }

    /// The random id given to this database when it was created; derived indexes record it, so
    /// that an index built from another database (a restored or replaced file) is rebuilt.
    pub fn store_id(&self) -> Result<String> {
        Ok(self.meta("store_id")?.unwrap_or_default())
    }

    /// The highest primary key ever assigned (0 for a new database).
    pub fn max_pk(&self) -> Result<u64> {
        self.conn
            .query_row("SELECT COALESCE(MAX(pk), 0) FROM patterns", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|v| v as u64)
            .map_err(|e| self.err(e))
    }

    fn err(&self, source: rusqlite::Error) -> Error {
        Error::db(&self.path, source)
    }

    /// The database file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in one write transaction: everything in it is committed together or not at all.
    pub fn write<T>(&mut self, f: impl FnOnce(&Writer<'_>) -> Result<T>) -> Result<T> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| Error::db(&path, e))?;
        let writer = Writer { tx, path };
        let value = f(&writer)?;
        writer.tx.commit().map_err(|e| Error::db(&writer.path, e))?;
        Ok(value)
    }

    /// Reads a metadata value.
    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Every pattern row, live and retired, in primary-key order.
    pub fn rows(&self) -> Result<Vec<PatternRow>> {
        self.rows_where("1 = 1", [])
    }

    /// The light columns of every row, for the store's in-memory table: reading whole rows of a
    /// large store at open would cost time and memory for text that lookups never filter on.
    pub fn meta_rows(&self) -> Result<Vec<MetaRow>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT pk, id, category, rule, applicability, prior_successes, prior_failures,
                    successes, failures, decayed_successes, decayed_failures, as_of,
                    retired_at IS NOT NULL
                 FROM patterns ORDER BY pk",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    TrackRecord {
                        prior_successes: r.get(5)?,
                        prior_failures: r.get(6)?,
                        successes: r.get(7)?,
                        failures: r.get(8)?,
                        decayed_successes: r.get(9)?,
                        decayed_failures: r.get(10)?,
                        as_of: r.get(11)?,
                    },
                    r.get::<_, bool>(12)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (pk, id, category, rule, applicability, track, retired) =
                row.map_err(|e| self.err(e))?;
            out.push(MetaRow {
                pk,
                id,
                category: category.parse().map_err(|e| self.corrupt(pk, &e))?,
                rule,
                applicability: applicability.parse().map_err(|e| self.corrupt(pk, &e))?,
                track,
                retired,
            });
        }
        Ok(out)
    }

    /// One pattern by its public id.
    pub fn row_by_id(&self, id: &str) -> Result<Option<PatternRow>> {
        row_where(&self.conn, &self.path, "id", &id)
    }

    /// One pattern by its primary key.
    pub fn row_by_pk(&self, pk: u64) -> Result<Option<PatternRow>> {
        row_where(&self.conn, &self.path, "pk", &(pk as i64))
    }

    /// The stored embedding of one pattern.
    pub fn embedding(&self, pk: u64, dim: usize) -> Result<Option<Vec<f32>>> {
        let blob: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT embedding FROM patterns WHERE pk = ?1",
                [pk as i64],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(blob.and_then(|b| decode_vector(&b, dim)))
    }

    /// One pattern by its fingerprint.
    pub fn row_by_fingerprint(&self, fingerprint: &str) -> Result<Option<PatternRow>> {
        row_where(&self.conn, &self.path, "fingerprint", &fingerprint)
    }

    fn rows_where<P: rusqlite::Params>(&self, cond: &str, params: P) -> Result<Vec<PatternRow>> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {ROW_COLUMNS} FROM patterns WHERE {cond} ORDER BY pk"
            ))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params, row_from_sql)
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row.map_err(|e| self.err(e))??);
        }
        Ok(out)
    }

    /// The examples of a pattern, oldest first.
    pub fn examples(&self, pk: u64) -> Result<Vec<Example>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT before, after, source FROM examples WHERE pattern_pk = ?1 ORDER BY pk",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([pk as i64], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (before, after, source) = row.map_err(|e| self.err(e))?;
            out.push(Example {
                before,
                after,
                source: source.parse().map_err(|e| self.corrupt(pk, &e))?,
            });
        }
        Ok(out)
    }

    /// Embeddings of the given rows, or of every row with a key above `after_pk`, in key order.
    pub fn embeddings_after(&self, after_pk: u64, dim: usize) -> Result<Vec<(u64, Vec<f32>)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT pk, embedding FROM patterns WHERE pk > ?1 ORDER BY pk")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([after_pk as i64], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (pk, blob) = row.map_err(|e| self.err(e))?;
            let vector = decode_vector(&blob, dim).ok_or_else(|| Error::Corrupt {
                path: self.path.clone(),
                detail: format!("pattern #{pk} has an embedding of {} bytes", blob.len()),
            })?;
            out.push((pk, vector));
        }
        Ok(out)
    }

    /// The embeddings of the rows above `after_pk` that `keep` accepts, in key order, as their
    /// keys and one flat array of `dim` floats each. One allocation, which a rebuilt index
    /// copies and then hands back to the system: 100k vectors allocated one by one stayed
    /// resident as freed heap after a rebuild (about 160 MB).
    pub fn embeddings_flat_after(
        &self,
        after_pk: u64,
        dim: usize,
        keep: &dyn Fn(u64) -> bool,
    ) -> Result<(Vec<u64>, Vec<f32>)> {
        let count: i64 = self
            .conn
            .query_row(
                "SELECT COUNT(*) FROM patterns WHERE pk > ?1",
                [after_pk as i64],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        let count = usize::try_from(count).unwrap_or(0);
        let mut ids = Vec::with_capacity(count);
        let mut data = Vec::with_capacity(count * dim);
        let mut stmt = self
            .conn
            .prepare("SELECT pk, embedding FROM patterns WHERE pk > ?1 ORDER BY pk")
            .map_err(|e| self.err(e))?;
        let mut rows = stmt.query([after_pk as i64]).map_err(|e| self.err(e))?;
        while let Some(row) = rows.next().map_err(|e| self.err(e))? {
            let pk = row.get::<_, i64>(0).map_err(|e| self.err(e))? as u64;
            if !keep(pk) {
                continue;
            }
            let blob = row
                .get_ref(1)
                .and_then(|v| v.as_blob().map_err(Into::into))
                .map_err(|e| self.err(e))?;
            if blob.len() != dim * 4 {
                return Err(Error::Corrupt {
                    path: self.path.clone(),
                    detail: format!("pattern #{pk} has an embedding of {} bytes", blob.len()),
                });
            }
            data.extend(
                blob.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            );
            ids.push(pk);
        }
        Ok((ids, data))
    }

    /// The text-index fields of every row with a key above `after_pk`.
    pub fn text_fields_after(&self, after_pk: u64) -> Result<Vec<TextFields>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT pk, category, rule, sig_message, sig_code FROM patterns
                 WHERE pk > ?1 ORDER BY pk",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([after_pk as i64], |r| {
                Ok(TextFields {
                    pk: r.get::<_, i64>(0)? as u64,
                    category: r.get(1)?,
                    rule: r.get(2)?,
                    message: r.get(3)?,
                    code: r.get(4)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    /// The embedding model recorded for the stored vectors, if any pattern exists.
    pub fn embedding_models(&self) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare("SELECT DISTINCT embedding_model FROM patterns")
            .map_err(|e| self.err(e))?;
        let rows = stmt.query_map([], |r| r.get(0)).map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    /// Number of outcomes recorded for a pattern (for tests and stats).
    pub fn outcome_count(&self, pk: u64) -> Result<u64> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM outcomes WHERE pattern_pk = ?1",
                [pk as i64],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }

    fn corrupt(&self, pk: u64, detail: &dyn std::fmt::Display) -> Error {
        Error::Corrupt {
            path: self.path.clone(),
            detail: format!("pattern #{pk}: {detail}"),
        }
    }
}

/// A write transaction; see [`Db::write`].
pub struct Writer<'a> {
    tx: Transaction<'a>,
    path: PathBuf,
}

impl Writer<'_> {
    fn err(&self, source: rusqlite::Error) -> Error {
        Error::db(&self.path, source)
    }

    /// Inserts a pattern and its examples; returns its primary key.
    pub fn insert(&self, row: &NewRow<'_>) -> Result<u64> {
        let spec = row.spec;
        let t = &row.track;
        self.tx
            .execute(
                "INSERT INTO patterns (id, category, rule, title, message, explanation,
                    applicability, before, after, source, fingerprint, signature, sig_message,
                    sig_code, embedding, embedding_model, prior_successes, prior_failures,
                    successes, failures, decayed_successes, decayed_failures, as_of, support,
                    created_at, updated_at, retired_at, retired_reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                    ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?25, ?26, ?27)",
                params![
                    spec.id,
                    spec.category.as_str(),
                    spec.rule,
                    spec.title,
                    spec.message,
                    spec.explanation,
                    spec.applicability.as_str(),
                    spec.rewrite.before,
                    spec.rewrite.after,
                    spec.source.as_str(),
                    spec.fingerprint(),
                    row.signature,
                    row.sig_message,
                    row.sig_code,
                    encode_vector(row.embedding),
                    row.model,
                    t.prior_successes,
                    t.prior_failures,
                    t.successes,
                    t.failures,
                    t.decayed_successes,
                    t.decayed_failures,
                    t.as_of,
                    row.support,
                    row.created_at,
                    row.retired.as_ref().map(|r| r.0),
                    row.retired.as_ref().map(|r| r.1.as_str()),
                ],
            )
            .map_err(|e| self.err(e))?;
        let pk = self.tx.last_insert_rowid() as u64;
        for example in &spec.examples {
            self.add_example(pk, example, row.created_at)?;
        }
        Ok(pk)
    }

    /// Adds a worked example to a pattern.
    pub fn add_example(&self, pk: u64, example: &Example, at: i64) -> Result<()> {
        self.tx
            .execute(
                "INSERT INTO examples (pattern_pk, before, after, source, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    pk as i64,
                    example.before,
                    example.after,
                    example.source.as_str(),
                    at
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Stores a pattern's updated track record and support.
    pub fn update_track(&self, pk: u64, track: &TrackRecord, support: u32, at: i64) -> Result<()> {
        self.tx
            .execute(
                "UPDATE patterns SET successes = ?2, failures = ?3, decayed_successes = ?4,
                    decayed_failures = ?5, as_of = ?6, support = ?7, updated_at = ?8
                 WHERE pk = ?1",
                params![
                    pk as i64,
                    track.successes,
                    track.failures,
                    track.decayed_successes,
                    track.decayed_failures,
                    track.as_of,
                    support,
                    at
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Records an outcome. Returns false (and records nothing) when its idempotency key was
    /// seen before.
    pub fn insert_outcome(&self, o: &OutcomeRow<'_>) -> Result<bool> {
        let inserted = self
            .tx
            .execute(
                "INSERT INTO outcomes (pattern_pk, success, finding, duration_ms,
                    idempotency_key, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(pattern_pk, idempotency_key) DO NOTHING",
                params![
                    o.pattern_pk as i64,
                    o.success,
                    o.finding,
                    o.duration_ms.map(|d| d as i64),
                    o.idempotency_key,
                    o.at
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(inserted == 1)
    }

    /// Records what a heal did with one finding. Returns false (and records nothing) when its
    /// idempotency key was seen before.
    pub fn insert_heal(&self, h: &HealEvent, at: i64) -> Result<bool> {
        let inserted = self
            .tx
            .execute(
                "INSERT INTO heals (at, category, rule, strategy, status, pattern_id, lookup_hit,
                    idempotency_key)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(idempotency_key) DO NOTHING",
                params![
                    at,
                    h.category,
                    h.rule,
                    h.strategy,
                    h.status,
                    h.pattern_id,
                    h.lookup_hit,
                    h.idempotency_key
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(inserted == 1)
    }

    /// Retires a pattern, keeping it (and its fingerprint) with the reason.
    pub fn retire(&self, pk: u64, at: i64, reason: &str) -> Result<()> {
        self.tx
            .execute(
                "UPDATE patterns SET retired_at = ?2, retired_reason = ?3, updated_at = ?2
                 WHERE pk = ?1 AND retired_at IS NULL",
                params![pk as i64, at, reason],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Sets a metadata value.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.tx
            .execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [key, value],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Replaces the embedding of a row (after a model change).
    pub fn set_embedding(&self, pk: u64, embedding: &[f32], model: &str) -> Result<()> {
        self.tx
            .execute(
                "UPDATE patterns SET embedding = ?2, embedding_model = ?3 WHERE pk = ?1",
                params![pk as i64, encode_vector(embedding), model],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Reads one row inside the transaction (sees the transaction's own writes).
    pub fn row_by_fingerprint(&self, fingerprint: &str) -> Result<Option<PatternRow>> {
        row_where(&self.tx, &self.path, "fingerprint", &fingerprint)
    }

    /// One row by primary key inside the transaction.
    pub fn row_by_pk(&self, pk: u64) -> Result<Option<PatternRow>> {
        row_where(&self.tx, &self.path, "pk", &(pk as i64))
    }

    /// The examples of a pattern inside the transaction.
    pub fn examples(&self, pk: u64) -> Result<Vec<(String, String)>> {
        let mut stmt = self
            .tx
            .prepare_cached("SELECT before, after FROM examples WHERE pattern_pk = ?1 ORDER BY pk")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([pk as i64], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    /// Whether a pattern id is taken.
    pub fn id_exists(&self, id: &str) -> Result<bool> {
        self.tx
            .query_row("SELECT 1 FROM patterns WHERE id = ?1", [id], |_| Ok(()))
            .optional()
            .map(|r| r.is_some())
            .map_err(|e| self.err(e))
    }
}

/// The one row whose unique `column` equals `value`.
fn row_where(
    conn: &Connection,
    path: &Path,
    column: &str,
    value: &dyn rusqlite::ToSql,
) -> Result<Option<PatternRow>> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {ROW_COLUMNS} FROM patterns WHERE {column} = ?1"
        ))
        .map_err(|e| Error::db(path, e))?;
    stmt.query_row([value], row_from_sql)
        .optional()
        .map_err(|e| Error::db(path, e))?
        .transpose()
}

const ROW_COLUMNS: &str = "pk, id, category, rule, title, message, explanation, applicability,
    before, after, source, fingerprint, signature, prior_successes, prior_failures, successes,
    failures, decayed_successes, decayed_failures, as_of, support, created_at, updated_at,
    retired_at, retired_reason";

/// Reads a row; the outer result is SQLite's, the inner one our validation of the values.
fn row_from_sql(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<PatternRow>> {
    let pk = r.get::<_, i64>(0)? as u64;
    let category: String = r.get(2)?;
    let applicability: String = r.get(7)?;
    let source: String = r.get(10)?;
    let retired_at: Option<i64> = r.get(23)?;
    let retired_reason: Option<String> = r.get(24)?;
    let parsed = (|| -> std::result::Result<_, String> {
        Ok((
            category.parse::<Category>().map_err(|e| e.to_string())?,
            applicability
                .parse::<Applicability>()
                .map_err(|e| e.to_string())?,
            source.parse::<Source>().map_err(|e| e.to_string())?,
        ))
    })();
    let (category, applicability, source) = match parsed {
        Ok(v) => v,
        Err(detail) => {
            return Ok(Err(Error::Corrupt {
                path: PathBuf::from("patterns.db"),
                detail: format!("pattern #{pk}: {detail}"),
            }));
        }
    };
    Ok(Ok(PatternRow {
        pk,
        id: r.get(1)?,
        category,
        rule: r.get(3)?,
        title: r.get(4)?,
        message: r.get(5)?,
        explanation: r.get(6)?,
        applicability,
        rewrite: Rewrite {
            before: r.get(8)?,
            after: r.get(9)?,
        },
        source,
        fingerprint: r.get(11)?,
        signature: r.get(12)?,
        track: TrackRecord {
            prior_successes: r.get(13)?,
            prior_failures: r.get(14)?,
            successes: r.get(15)?,
            failures: r.get(16)?,
            decayed_successes: r.get(17)?,
            decayed_failures: r.get(18)?,
            as_of: r.get(19)?,
        },
        support: r.get(20)?,
        created_at: r.get(21)?,
        updated_at: r.get(22)?,
        retired: retired_at.map(|at| (at, retired_reason.unwrap_or_default())),
    }))
}

/// A fresh store id: a hash of the path, the time and the process, unique enough to tell two
/// databases apart.
fn new_store_id(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut h = Sha256::new();
    h.update(path.to_string_lossy().as_bytes());
    h.update(nanos.to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    agency_core::pattern::hex(&h.finalize()[..8])
}

/// Little-endian f32s.
pub fn encode_vector(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The inverse of [`encode_vector`]; `None` when the length is not `dim` floats.
pub fn decode_vector(bytes: &[u8], dim: usize) -> Option<Vec<f32>> {
    (bytes.len() == dim * 4).then(|| {
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    })
}

/// What a heal did with one finding, for the reuse and hit-rate statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealEvent {
    pub category: String,
    pub rule: String,
    /// `pattern`, `rule`, `llm` or `none`.
    pub strategy: String,
    /// The heal's final status (`healed`, `rolled_back`, ...).
    pub status: String,
    pub pattern_id: Option<String>,
    /// Whether a lookup in the store found a pattern that applies at the finding; `None`
    /// when no lookup was made.
    pub lookup_hit: Option<bool>,
    pub idempotency_key: Option<String>,
}

/// Heals of one category since some time: how many were healed, how many of those by a
/// pattern, and the lookups made and how many found an applicable pattern.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HealCounts {
    pub healed: u64,
    pub via_pattern: u64,
    pub lookups: u64,
    pub hits: u64,
}

impl Db {
    /// Heal counts per category since `since` (unix seconds).
    pub fn heal_counts_since(&self, since: i64) -> Result<Vec<(String, HealCounts)>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT category,
                        COALESCE(SUM(status = 'healed'), 0),
                        COALESCE(SUM(status = 'healed' AND strategy = 'pattern'), 0),
                        COALESCE(SUM(lookup_hit IS NOT NULL), 0),
                        COALESCE(SUM(lookup_hit = 1), 0)
                   FROM heals WHERE at >= ?1 GROUP BY category ORDER BY category",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([since], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    HealCounts {
                        healed: r.get::<_, i64>(1)? as u64,
                        via_pattern: r.get::<_, i64>(2)? as u64,
                        lookups: r.get::<_, i64>(3)? as u64,
                        hits: r.get::<_, i64>(4)? as u64,
                    },
                ))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))
    }

    /// Every pattern with outcomes (retired ones too) as a [`History`] for the calibration
    /// replay: its prior, its creation and its outcomes in the order they happened (ties in the
    /// order they were recorded).
    pub fn outcome_histories(&self) -> Result<Vec<History>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT p.pk, p.prior_successes, p.prior_failures, p.created_at, o.at, o.success
                   FROM outcomes o JOIN patterns p ON p.pk = o.pattern_pk
                  ORDER BY o.pattern_pk, o.at, o.pk",
            )
            .map_err(|e| self.err(e))?;
        let mut rows = stmt.query([]).map_err(|e| self.err(e))?;
        let mut out: Vec<History> = Vec::new();
        let mut last_pk = None;
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            let read = || -> rusqlite::Result<(i64, f64, f64, i64, i64, bool)> {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            };
            let (pk, prior_successes, prior_failures, created_at, at, success) =
                read().map_err(|e| self.err(e))?;
            if last_pk != Some(pk) {
                last_pk = Some(pk);
                out.push(History {
                    prior: (prior_successes, prior_failures),
                    created_at,
                    outcomes: Vec::new(),
                });
            }
            if let Some(history) = out.last_mut() {
                history.outcomes.push((at, success));
            }
        }
        Ok(out)
    }

    /// Outcomes recorded at or after `since` (unix seconds): `(total, successes)`, duplicates
    /// refused by their idempotency key not included.
    pub fn outcome_totals_since(&self, since: i64) -> Result<(u64, u64)> {
        self.conn
            .query_row(
                "SELECT COUNT(*), COALESCE(SUM(success), 0) FROM outcomes WHERE at >= ?1",
                [since],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
            )
            .map(|(total, successes)| (total as u64, successes as u64))
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str, before: &str) -> PatternSpec {
        PatternSpec {
            id: id.into(),
            category: Category::Style,
            rule: "E711".into(),
            title: "t".into(),
            message: "m".into(),
            explanation: String::new(),
            applicability: Applicability::Unsafe,
            rewrite: Rewrite {
                before: before.into(),
                after: "?x is None".into(),
            },
            examples: vec![Example {
                before: "a == None".into(),
                after: "a is None".into(),
                source: Source::Seed,
            }],
            source: Source::Seed,
            prior: (0.0, 0.0),
        }
    }

    fn new_row<'a>(spec: &'a PatternSpec, embedding: &'a [f32]) -> NewRow<'a> {
        NewRow {
            spec,
            signature: "sig",
            sig_message: "m",
            sig_code: "c",
            embedding,
            model: "test",
            track: TrackRecord::with_prior(0.0, 0.0, 100),
            support: 1,
            created_at: 100,
            retired: None,
        }
    }

    #[test]
    fn insert_read_outcomes_and_retire() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(&dir.path().join("p.db")).unwrap();
        let s = spec("a", "?x == None");
        let v = [0.5_f32, -1.0];
        let pk = db.write(|w| w.insert(&new_row(&s, &v))).unwrap();
        let row = db.row_by_id("a").unwrap().unwrap();
        assert_eq!(row.pk, pk);
        assert_eq!(row.rewrite, s.rewrite);
        assert_eq!(db.examples(pk).unwrap(), s.examples);
        assert_eq!(db.embeddings_after(0, 2).unwrap(), vec![(pk, v.to_vec())]);
        assert_eq!(
            db.embeddings_flat_after(0, 2, &|_| true).unwrap(),
            (vec![pk], v.to_vec())
        );
        assert_eq!(
            db.embeddings_flat_after(0, 2, &|_| false).unwrap(),
            (vec![], vec![])
        );

        let outcome = OutcomeRow {
            pattern_pk: pk,
            success: true,
            finding: None,
            duration_ms: Some(5),
            idempotency_key: Some("k1"),
            at: 200,
        };
        assert!(db.write(|w| w.insert_outcome(&outcome)).unwrap());
        assert!(!db.write(|w| w.insert_outcome(&outcome)).unwrap());
        assert_eq!(db.outcome_count(pk).unwrap(), 1);

        db.write(|w| w.retire(pk, 300, "failing")).unwrap();
        let row = db.row_by_id("a").unwrap().unwrap();
        assert_eq!(row.retired, Some((300, "failing".into())));
    }

    #[test]
    fn failed_transaction_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(&dir.path().join("p.db")).unwrap();
        let a = spec("a", "?x == None");
        let dup = spec("a", "?x != None");
        let v = [1.0_f32];
        let result = db.write(|w| {
            w.insert(&new_row(&a, &v))?;
            w.insert(&new_row(&dup, &v))
        });
        assert!(result.is_err());
        assert!(db.rows().unwrap().is_empty());
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        drop(Db::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(conn);
        let err = Db::open(&path).err().unwrap();
        assert!(err.to_string().contains("newer"), "{err}");
    }

    #[test]
    fn vector_codec_round_trips() {
        let v = vec![0.0_f32, 1.5, -2.25, f32::MIN_POSITIVE];
        assert_eq!(decode_vector(&encode_vector(&v), 4), Some(v));
        assert_eq!(decode_vector(&[1, 2, 3], 1), None);
    }
}
