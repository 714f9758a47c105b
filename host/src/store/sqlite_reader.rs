//! Point reads on SQLite on the calling thread.
//!
//! sqlx runs every SQLite statement on a worker thread per connection, so
//! each query costs two thread hand-offs. For a lookup by primary or unique
//! key those hand-offs cost far more than the read: on the 2-core benchmark
//! machine an authenticated request fell from about 60,000 to about 19,000
//! per second with one such read (BENCHMARKS.md). The hot per-request reads
//! (the user behind a token, an API key by hash) therefore go through this
//! small pool of read-only rusqlite connections instead, on the async thread.
//!
//! Rules that keep this safe: only single-row lookups through a unique
//! index, never scans; connections are read-only; in WAL mode readers never
//! wait for writers, so a read blocks only for the few microseconds it runs
//! (or, on a cold page cache, one disk read).

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags};

/// Idle connections kept; more may be opened under load and are then closed.
const MAX_IDLE: usize = 16;

#[derive(Debug)]
pub struct SqliteReader {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
}

impl SqliteReader {
    pub fn new(path: PathBuf, busy_timeout: Duration) -> Self {
        Self {
            path,
            busy_timeout,
            idle: Mutex::new(Vec::new()),
        }
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(self.busy_timeout)?;
        Ok(conn)
    }

    /// Runs `f` on an idle connection (opening one if none is idle).
    pub fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let conn = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let conn = match conn {
            Some(conn) => conn,
            None => self.open()?,
        };
        let result = f(&conn);
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(conn);
        }
        result
    }
}

/// Reads a timestamp column as sqlx writes it (RFC 3339 text).
pub fn timestamp(row: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<DateTime<Utc>> {
    let text: String = row.get(idx)?;
    parse_timestamp(&text, idx)
}

pub fn optional_timestamp(
    row: &rusqlite::Row<'_>,
    idx: usize,
) -> rusqlite::Result<Option<DateTime<Utc>>> {
    let text: Option<String> = row.get(idx)?;
    text.map(|t| parse_timestamp(&t, idx)).transpose()
}

fn parse_timestamp(text: &str, idx: usize) -> rusqlite::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%:z"))
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sqlx_timestamps() {
        let t = parse_timestamp("2026-11-22T03:03:02.127715667+00:00", 0).expect("rfc3339");
        assert_eq!(t.timestamp(), 1_795_316_582);
        assert!(parse_timestamp("2026-11-22 03:03:02.5+00:00", 0).is_ok());
        assert!(parse_timestamp("yesterday", 0).is_err());
    }
}
