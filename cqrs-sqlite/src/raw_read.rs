//! Reads of the all-stream and of one stream through the C library directly, a whole read per
//! trip to a blocking thread, for file databases.
//!
//! NOTE: sqlx's SQLite driver sends every row from its worker thread through a channel and
//! copies every value of it; on a batch of 500 events that costs several times what SQLite
//! spends reading them. Here one blocking task runs the whole statement and decodes the rows
//! where they are. An in-memory database has one connection, so it keeps the driver's path.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use cqrs_core::{Error, RecordedEvent, Result, StreamEvent, StreamId};
use rusqlite::{OpenFlags, Row};

use crate::error::to_u64;
use crate::rows::{RawEvent, RawStreamEvent, event_from_parts, stream_event_from_parts};
use crate::sql::{READ_ALL, READ_STREAM};

/// Read connections to a database file, opened when needed and kept for the next read.
#[derive(Debug)]
pub(crate) struct RawReaders {
    path: PathBuf,
    busy_timeout: Duration,
    keep: usize,
    /// The idle connections; `None` once the database is closed.
    idle: Mutex<Option<Vec<rusqlite::Connection>>>,
}

impl RawReaders {
    pub(crate) fn new(path: PathBuf, busy_timeout: Duration, keep: usize) -> Self {
        RawReaders {
            path,
            busy_timeout,
            keep: keep.max(1),
            idle: Mutex::new(Some(Vec::new())),
        }
    }

    /// Closes the idle connections; later reads fail.
    pub(crate) fn close(&self) {
        self.idle.lock().expect("readers lock").take();
    }

    fn take(&self) -> Result<rusqlite::Connection, rusqlite::Error> {
        let idle = self
            .idle
            .lock()
            .expect("readers lock")
            .as_mut()
            .map(Vec::pop);
        match idle {
            None => Err(rusqlite::Error::InvalidPath(self.path.clone())),
            Some(Some(conn)) => Ok(conn),
            Some(None) => {
                // NOTE: read-write without create: the writer made the file and its WAL
                // index, which a read-only connection could not create if missing.
                let conn = rusqlite::Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                conn.busy_timeout(self.busy_timeout)?;
                Ok(conn)
            }
        }
    }

    fn give_back(&self, conn: rusqlite::Connection) {
        if let Some(idle) = self.idle.lock().expect("readers lock").as_mut()
            && idle.len() < self.keep
        {
            idle.push(conn);
        }
    }

    /// The version of the stream `(category, id)` and its events of versions `from..=to`, in
    /// order; a row that does not decode fails the read.
    pub(crate) fn read_stream(
        &self,
        stream: &StreamId,
        from: i64,
        to: i64,
    ) -> Result<Result<(u64, Vec<StreamEvent>)>, rusqlite::Error> {
        let conn = self.take()?;
        let out = read_stream_on(&conn, stream, from, to);
        self.give_back(conn);
        out
    }

    /// The events after `after`, at most `limit`, in order; on a row that does not decode,
    /// the events before it, or its error when it is the first.
    pub(crate) fn read_all(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Result<Vec<RecordedEvent>>, rusqlite::Error> {
        let conn = self.take()?;
        let out = read_all_on(&conn, after, limit);
        self.give_back(conn);
        out
    }
}

fn read_all_on(
    conn: &rusqlite::Connection,
    after: i64,
    limit: i64,
) -> Result<Result<Vec<RecordedEvent>>, rusqlite::Error> {
    let mut stmt = conn.prepare_cached(READ_ALL)?;
    let mut rows = stmt.query((after, limit))?;
    let mut out = Vec::with_capacity(usize::try_from(limit).unwrap_or(0).min(10_000));
    while let Some(row) = rows.next()? {
        match decode(row) {
            Ok(e) => out.push(e),
            Err(e) if out.is_empty() => return Ok(Err(e)),
            Err(_) => break,
        }
    }
    Ok(Ok(out))
}

fn read_stream_on(
    conn: &rusqlite::Connection,
    stream: &StreamId,
    from: i64,
    to: i64,
) -> Result<Result<(u64, Vec<StreamEvent>)>, rusqlite::Error> {
    let mut stmt = conn.prepare_cached(READ_STREAM)?;
    let mut rows = stmt.query((&stream.category, &stream.id, from, to))?;
    let (mut head, mut out) = (0, Vec::new());
    while let Some(row) = rows.next()? {
        head = to_u64(row.get(0)?).unwrap_or(0);
        let Some(version) = row.get::<_, Option<i64>>(1)? else {
            continue;
        };
        let event = (|| {
            stream_event_from_parts(
                stream,
                RawStreamEvent {
                    version,
                    event_id: text(row, 2)?,
                    event_type: text(row, 3)?,
                    schema_version: int(row, 4)?,
                    payload: text(row, 5)?,
                    metadata: text(row, 6)?,
                    recorded_at: text(row, 7)?,
                    position: int(row, 8)?,
                },
            )
        })();
        match event {
            Ok(e) => out.push(e),
            Err(e) => return Ok(Err(e)),
        }
    }
    Ok(Ok((head, out)))
}

fn text<'r>(row: &'r Row<'_>, i: usize) -> Result<&'r str> {
    row.get_ref(i)
        .and_then(|v| v.as_str().map_err(Into::into))
        .map_err(Error::backend)
}

fn int(row: &Row<'_>, i: usize) -> Result<i64> {
    row.get(i).map_err(Error::backend)
}

fn decode(row: &Row<'_>) -> Result<RecordedEvent> {
    event_from_parts(RawEvent {
        position: int(row, 0)?,
        event_id: text(row, 1)?,
        category: text(row, 2)?,
        stream_id: text(row, 3)?,
        version: int(row, 4)?,
        event_type: text(row, 5)?,
        schema_version: int(row, 6)?,
        payload: text(row, 7)?,
        metadata: text(row, 8)?,
        recorded_at: text(row, 9)?,
    })
}
