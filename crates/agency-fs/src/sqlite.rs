//! Opening helpers shared by agency's SQLite databases, which several processes open at once
//! (the service and a CLI, parallel heals).

use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode};

/// Puts the database in WAL mode, retrying while another connection's lock is in the way.
///
/// Changing the journal mode needs the database to itself. When another connection holds a
/// lock, SQLite answers `SQLITE_BUSY` at once instead of calling the busy handler (waiting there
/// could deadlock), so `busy_timeout` does not cover it: two processes opening a new database
/// at the same moment hit it. Retries for up to `timeout`.
pub fn enable_wal(conn: &Connection, timeout: Duration) -> rusqlite::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == ErrorCode::DatabaseBusy && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Many connections turning a new database to WAL at once: each succeeds.
    #[test]
    fn connections_opening_a_new_database_at_once_all_get_wal() {
        for round in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(format!("db-{round}.sqlite"));
            std::thread::scope(|scope| {
                for _ in 0..8 {
                    let path = &path;
                    scope.spawn(move || {
                        let conn = Connection::open(path).unwrap();
                        conn.busy_timeout(Duration::from_secs(10)).unwrap();
                        enable_wal(&conn, Duration::from_secs(10)).unwrap();
                        let mode: String = conn
                            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                            .unwrap();
                        assert_eq!(mode, "wal");
                    });
                }
            });
        }
    }
}
