//! The durable record of every call and its cost, the monthly budget check, and the answer
//! cache: `<data dir>/llm/usage.db` (SQLite, WAL, `synchronous=FULL`, migrations by
//! `user_version`).
//!
//! The budget is enforced across processes: a call first *reserves* its worst-case cost in an
//! immediate (write-locked) transaction that also checks the month's spend, then replaces the
//! reservation by the actual cost. A process killed mid-call leaves its reservation counted,
//! which errs on the side of spending less.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

use crate::{Error, Result};

/// The file, relative to the data directory.
pub const USAGE_DB: &str = "llm/usage.db";

/// The schema version this code writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE calls (
    id INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    month TEXT NOT NULL,
    model TEXT NOT NULL,
    category TEXT NOT NULL,
    tokens_in INTEGER NOT NULL,
    tokens_out INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    request_hash TEXT NOT NULL,
    cache_hit INTEGER NOT NULL,
    status TEXT NOT NULL
);
CREATE INDEX calls_month ON calls(month);
CREATE TABLE cache (
    request_hash TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    content TEXT NOT NULL,
    ts INTEGER NOT NULL
);
";

/// How a call ended, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallStatus {
    /// Reserved, not finished (or its process died).
    Pending,
    /// The server answered a completion.
    Answered,
    /// Every attempt failed; nothing was charged as far as we know.
    Failed,
    /// The server may have charged (an unreadable 2xx body, a timeout): the estimate is kept
    /// as its cost.
    Unknown,
}

impl CallStatus {
    fn as_str(self) -> &'static str {
        match self {
            CallStatus::Pending => "pending",
            CallStatus::Answered => "answered",
            CallStatus::Failed => "failed",
            CallStatus::Unknown => "unknown",
        }
    }
}

/// The usage database of one data directory.
#[derive(Debug)]
pub struct UsageDb {
    path: PathBuf,
    conn: Mutex<Connection>,
}

/// A reserved call: its row id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation(i64);

impl UsageDb {
    /// Opens (creating and migrating) `<data_dir>/llm/usage.db`.
    pub fn open(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join(USAGE_DB);
        let dir = path.parent().expect("USAGE_DB has a directory");
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let wrap = |source| Error::Usage {
            path: path.clone(),
            source,
        };
        let mut conn = Connection::open(&path).map_err(wrap)?;
        conn.busy_timeout(Duration::from_secs(30)).map_err(wrap)?;
        agency_fs::sqlite::enable_wal(&conn, Duration::from_secs(30)).map_err(wrap)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(wrap)?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(wrap)?;
        let version: i64 = tx
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(wrap)?;
        if version > SCHEMA_VERSION {
            return Err(Error::UsageVersion {
                path,
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        if version < 1 {
            tx.execute_batch(SCHEMA).map_err(wrap)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                .map_err(wrap)?;
        }
        tx.commit().map_err(wrap)?;
        Ok(Self {
            path,
            conn: Mutex::new(conn),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn wrap(&self) -> impl Fn(rusqlite::Error) -> Error + '_ {
        |source| Error::Usage {
            path: self.path.clone(),
            source,
        }
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (its own
        // transactions roll back), so a poisoned lock is still usable.
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The spend recorded for `month` (`YYYY-MM`), reservations included.
    pub fn spent(&self, month: &str) -> Result<f64> {
        self.conn()
            .query_row(
                "SELECT COALESCE(SUM(cost_usd), 0) FROM calls WHERE month = ?1",
                [month],
                |row| row.get(0),
            )
            .map_err(self.wrap())
    }

    /// Reserves `estimate_usd` for a call, unless this month's spend plus the estimate would
    /// exceed `budget_usd` ([`Error::BudgetExhausted`]). Check and reservation are one
    /// write-locked transaction, so concurrent processes cannot both pass the last dollar.
    pub fn reserve(
        &self,
        model: &str,
        category: &str,
        request_hash: &str,
        estimate_usd: f64,
        budget_usd: f64,
    ) -> Result<Reservation> {
        let (ts, month) = now();
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.wrap())?;
        let spent: f64 = tx
            .query_row(
                "SELECT COALESCE(SUM(cost_usd), 0) FROM calls WHERE month = ?1",
                [&month],
                |row| row.get(0),
            )
            .map_err(self.wrap())?;
        if spent + estimate_usd > budget_usd {
            return Err(Error::BudgetExhausted {
                spent_usd: spent,
                budget_usd,
                estimate_usd,
            });
        }
        tx.execute(
            "INSERT INTO calls (ts, month, model, category, tokens_in, tokens_out, cost_usd,
                                request_hash, cache_hit, status)
             VALUES (?1, ?2, ?3, ?4, 0, 0, ?5, ?6, 0, ?7)",
            params![
                ts,
                month,
                model,
                category,
                estimate_usd,
                request_hash,
                CallStatus::Pending.as_str()
            ],
        )
        .map_err(self.wrap())?;
        let id = tx.last_insert_rowid();
        tx.commit().map_err(self.wrap())?;
        Ok(Reservation(id))
    }

    /// Replaces a reservation by what the call actually used.
    pub fn finish(
        &self,
        reservation: Reservation,
        tokens_in: u64,
        tokens_out: u64,
        cost_usd: f64,
        status: CallStatus,
    ) -> Result<()> {
        self.conn()
            .execute(
                "UPDATE calls SET tokens_in = ?1, tokens_out = ?2, cost_usd = ?3, status = ?4
                 WHERE id = ?5",
                params![
                    tokens_in as i64,
                    tokens_out as i64,
                    cost_usd,
                    status.as_str(),
                    reservation.0
                ],
            )
            .map_err(self.wrap())?;
        Ok(())
    }

    /// The cached answer to an identical request, if any.
    pub fn cached(&self, request_hash: &str) -> Result<Option<String>> {
        self.conn()
            .query_row(
                "SELECT content FROM cache WHERE request_hash = ?1",
                [request_hash],
                |row| row.get(0),
            )
            .optional()
            .map_err(self.wrap())
    }

    /// Records a call answered from the cache: no tokens, no cost.
    pub fn record_cache_hit(&self, model: &str, category: &str, request_hash: &str) -> Result<()> {
        let (ts, month) = now();
        self.conn()
            .execute(
                "INSERT INTO calls (ts, month, model, category, tokens_in, tokens_out, cost_usd,
                                    request_hash, cache_hit, status)
                 VALUES (?1, ?2, ?3, ?4, 0, 0, 0, ?5, 1, ?6)",
                params![
                    ts,
                    month,
                    model,
                    category,
                    request_hash,
                    CallStatus::Answered.as_str()
                ],
            )
            .map_err(self.wrap())?;
        Ok(())
    }

    /// Stores an answer for identical requests to come.
    pub fn store_answer(&self, request_hash: &str, model: &str, content: &str) -> Result<()> {
        let (ts, _) = now();
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO cache (request_hash, model, content, ts)
                 VALUES (?1, ?2, ?3, ?4)",
                params![request_hash, model, content, ts],
            )
            .map_err(self.wrap())?;
        Ok(())
    }

    /// Spend and calls of `month` (`YYYY-MM`) by model and category, against `budget_usd`.
    pub fn report(&self, month: &str, budget_usd: f64) -> Result<UsageReport> {
        let conn = self.conn();
        let lines = (|| -> rusqlite::Result<Vec<UsageLine>> {
            let mut stmt = conn.prepare(
                "SELECT model, category, SUM(1 - cache_hit), SUM(cache_hit), SUM(tokens_in),
                        SUM(tokens_out), SUM(cost_usd)
                 FROM calls WHERE month = ?1 GROUP BY model, category ORDER BY model, category",
            )?;
            let rows = stmt.query_map([month], |row| {
                Ok(UsageLine {
                    model: row.get(0)?,
                    category: row.get(1)?,
                    calls: row.get::<_, i64>(2)? as u64,
                    cache_hits: row.get::<_, i64>(3)? as u64,
                    tokens_in: row.get::<_, i64>(4)? as u64,
                    tokens_out: row.get::<_, i64>(5)? as u64,
                    spent_usd: row.get(6)?,
                })
            })?;
            rows.collect()
        })()
        .map_err(self.wrap())?;
        drop(conn);
        Ok(UsageReport::new(month, budget_usd, lines))
    }
}

/// The usage of one model for one category of findings.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageLine {
    pub model: String,
    pub category: String,
    /// Requests sent to the server (cache hits not included).
    pub calls: u64,
    /// Requests answered from the cache.
    pub cache_hits: u64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub spent_usd: f64,
}

/// One line of a usage report: a model or a category.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRow {
    /// The model or the category.
    pub name: String,
    /// Requests sent to the server (cache hits not included).
    pub calls: u64,
    /// Requests answered from the cache.
    pub cache_hits: u64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub spent_usd: f64,
}

/// `agency llm usage`: the month's spend against the budget. Serialises as the `--json`
/// document (`{"version": 1, "month", "budget_usd", "spent_usd", "remaining_usd", "calls",
/// "cache_hits", "by_model": [{"model", ...}], "by_category": [{"category", ...}]}`).
#[derive(Debug, Clone, PartialEq)]
pub struct UsageReport {
    pub month: String,
    pub budget_usd: f64,
    pub spent_usd: f64,
    /// `budget_usd - spent_usd`, never below 0.
    pub remaining_usd: f64,
    pub calls: u64,
    pub cache_hits: u64,
    /// Sorted by model name.
    pub by_model: Vec<UsageRow>,
    /// Sorted by category.
    pub by_category: Vec<UsageRow>,
    /// By model and category, sorted by both (the text table; not in the JSON document).
    pub lines: Vec<UsageLine>,
}

impl UsageReport {
    fn new(month: &str, budget_usd: f64, lines: Vec<UsageLine>) -> Self {
        let total = |key: fn(&UsageLine) -> &str| -> Vec<UsageRow> {
            let mut rows: std::collections::BTreeMap<&str, UsageRow> =
                std::collections::BTreeMap::new();
            for line in &lines {
                let row = rows.entry(key(line)).or_insert_with(|| UsageRow {
                    name: key(line).to_string(),
                    calls: 0,
                    cache_hits: 0,
                    tokens_in: 0,
                    tokens_out: 0,
                    spent_usd: 0.0,
                });
                row.calls += line.calls;
                row.cache_hits += line.cache_hits;
                row.tokens_in += line.tokens_in;
                row.tokens_out += line.tokens_out;
                row.spent_usd += line.spent_usd;
            }
            rows.into_values().collect()
        };
        let by_model = total(|l| &l.model);
        let by_category = total(|l| &l.category);
        // A fold from +0.0: `Sum` of no f64 is -0.0, which would print as "-0.0000".
        let spent_usd = lines.iter().fold(0.0, |sum, l| sum + l.spent_usd);
        Self {
            month: month.to_string(),
            budget_usd,
            spent_usd,
            remaining_usd: (budget_usd - spent_usd).max(0.0),
            calls: lines.iter().map(|l| l.calls).sum(),
            cache_hits: lines.iter().map(|l| l.cache_hits).sum(),
            by_model,
            by_category,
            lines,
        }
    }
}

impl Serialize for UsageReport {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Row<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            model: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            category: Option<&'a str>,
            calls: u64,
            cache_hits: u64,
            tokens_in: u64,
            tokens_out: u64,
            spent_usd: f64,
        }
        #[derive(Serialize)]
        struct Doc<'a> {
            version: u32,
            month: &'a str,
            budget_usd: f64,
            spent_usd: f64,
            remaining_usd: f64,
            calls: u64,
            cache_hits: u64,
            by_model: Vec<Row<'a>>,
            by_category: Vec<Row<'a>>,
        }
        fn row(r: &UsageRow, is_model: bool) -> Row<'_> {
            Row {
                model: is_model.then_some(r.name.as_str()),
                category: (!is_model).then_some(r.name.as_str()),
                calls: r.calls,
                cache_hits: r.cache_hits,
                tokens_in: r.tokens_in,
                tokens_out: r.tokens_out,
                spent_usd: r.spent_usd,
            }
        }
        Doc {
            version: 1,
            month: &self.month,
            budget_usd: self.budget_usd,
            spent_usd: self.spent_usd,
            remaining_usd: self.remaining_usd,
            calls: self.calls,
            cache_hits: self.cache_hits,
            by_model: self.by_model.iter().map(|r| row(r, true)).collect(),
            by_category: self.by_category.iter().map(|r| row(r, false)).collect(),
        }
        .serialize(serializer)
    }
}

/// The usage report of `month` for the data directory, without creating anything: a data
/// directory that never called a model reports zeros.
pub fn usage_report(data_dir: &Path, month: &str, budget_usd: f64) -> Result<UsageReport> {
    if !data_dir.join(USAGE_DB).exists() {
        return Ok(UsageReport::new(month, budget_usd, Vec::new()));
    }
    UsageDb::open(data_dir)?.report(month, budget_usd)
}

/// The current month in UTC, `YYYY-MM`.
pub fn current_month() -> String {
    now().1
}

/// Unix seconds and the UTC month of now.
fn now() -> (i64, String) {
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let month = agency_core::contract::format_rfc3339(ts)[..7].to_string();
    (ts, month)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_enforce_the_budget_and_reports_add_up() {
        let dir = tempfile::tempdir().unwrap();
        let db = UsageDb::open(dir.path()).unwrap();
        let month = current_month();
        let r1 = db.reserve("m1", "security", "h1", 0.02, 0.05).unwrap();
        let r2 = db.reserve("m2", "style", "h2", 0.02, 0.05).unwrap();
        // 0.04 reserved: another 0.02 would pass the 0.05 budget.
        let err = db.reserve("m1", "style", "h3", 0.02, 0.05).unwrap_err();
        assert!(
            matches!(err, Error::BudgetExhausted { spent_usd, budget_usd, .. }
                if (spent_usd - 0.04).abs() < 1e-12 && (budget_usd - 0.05).abs() < 1e-12),
            "{err}"
        );
        db.finish(r1, 1000, 200, 0.001, CallStatus::Answered)
            .unwrap();
        db.finish(r2, 0, 0, 0.0, CallStatus::Failed).unwrap();
        db.record_cache_hit("m1", "security", "h1").unwrap();
        assert!((db.spent(&month).unwrap() - 0.001).abs() < 1e-12);
        let report = db.report(&month, 0.05).unwrap();
        assert_eq!(report.calls, 2);
        assert_eq!(report.cache_hits, 1);
        assert!((report.remaining_usd - 0.049).abs() < 1e-12);
        assert_eq!(report.by_model.len(), 2);
        assert_eq!(report.by_model[0].name, "m1");
        assert_eq!(report.by_model[0].calls, 1);
        assert_eq!(report.by_model[0].cache_hits, 1);
        assert_eq!(report.by_model[0].tokens_in, 1000);
        let lines: Vec<_> = report
            .lines
            .iter()
            .map(|l| (l.model.as_str(), l.category.as_str(), l.calls, l.cache_hits))
            .collect();
        assert_eq!(lines, [("m1", "security", 1, 1), ("m2", "style", 1, 0)]);
        let security = &report.by_category[0];
        assert_eq!((security.name.as_str(), security.calls), ("security", 1));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["version"], 1);
        assert_eq!(json["month"], month.as_str());
        assert_eq!(json["by_model"][1]["model"], "m2");
        assert_eq!(json["by_category"][1]["category"], "style");
        assert!(json["by_model"][0].get("category").is_none());
        // Another month is empty.
        assert_eq!(db.report("1999-01", 10.0).unwrap().calls, 0);
    }

    #[test]
    fn cache_round_trip_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = UsageDb::open(dir.path()).unwrap();
            assert_eq!(db.cached("h").unwrap(), None);
            db.store_answer("h", "m", "{}").unwrap();
        }
        let db = UsageDb::open(dir.path()).unwrap();
        assert_eq!(db.cached("h").unwrap().as_deref(), Some("{}"));
        let mode: String = db
            .conn()
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn newer_format_is_refused_and_missing_db_reports_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let report = usage_report(dir.path(), "2026-12", 10.0).unwrap();
        assert_eq!((report.calls, report.remaining_usd), (0, 10.0));
        assert!(report.spent_usd.is_sign_positive(), "no -0.0 in reports");
        assert!(!dir.path().join(USAGE_DB).exists(), "nothing created");
        drop(UsageDb::open(dir.path()).unwrap());
        let conn = Connection::open(dir.path().join(USAGE_DB)).unwrap();
        conn.pragma_update(None, "user_version", 9).unwrap();
        drop(conn);
        let err = UsageDb::open(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("version 9") && err.contains("upgrade"),
            "{err}"
        );
    }
}
