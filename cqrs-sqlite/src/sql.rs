//! The statements of the event store, in one place.

/// Every column of `events`, in the order [`event_from_row`](crate::rows::event_from_row)
/// reads them.
macro_rules! event_columns {
    () => {
        "position, event_id, category, stream_id, version, event_type, schema_version, payload, metadata, recorded_at"
    };
}

/// The stream's version: its greatest, 0 for no stream.
pub(crate) const STREAM_VERSION: &str =
    "SELECT COALESCE(MAX(version), 0) FROM events WHERE category = ? AND stream_id = ?";

/// A command id's recorded result and fingerprint.
pub(crate) const COMMAND_RESULT: &str = "SELECT version, position, fingerprint FROM commands \
     WHERE category = ? AND stream_id = ? AND command_id = ?";

/// The most events one [`insert_events`] statement carries: 5 parameters each, far below
/// SQLite's limit of 32,766, and statements of a size the prepared-statement cache keeps.
pub(crate) const EVENTS_PER_STATEMENT: usize = 256;

/// Inserts `n` events of a stream, numbered from the stream's version on, if that version
/// matches the expectation (NULL: any version); gives the position and version of each inserted
/// event, none when the version did not match. Its parameters, in order: category, stream id,
/// time, category and stream id again, then five per event (id, type, schema version, payload,
/// metadata), then the expectation twice.
///
/// NOTE: one statement checks the version and inserts every event, so an append without a
/// command id is one trip to SQLite's worker thread and one implicit transaction (a statement
/// is atomic): the version read and the inserts happen under the same write lock. Parameters are
/// anonymous (`?`) on purpose: the driver looks up the name of every numbered one, a cost that
/// grows with the square of their count.
pub(crate) fn insert_events(n: usize) -> String {
    use std::fmt::Write;
    let mut sql = String::with_capacity(420 + n * 24);
    sql.push_str(
        "INSERT INTO events (event_id, category, stream_id, version, event_type, schema_version, payload, metadata, recorded_at) \
         SELECT e.column1, ?, ?, h.head + e.column2, e.column3, e.column4, e.column5, e.column6, ? \
         FROM (SELECT COALESCE(MAX(version), 0) AS head FROM events WHERE category = ? AND stream_id = ?) AS h, (VALUES ",
    );
    for i in 0..n {
        let sep = if i == 0 { "" } else { ", " };
        let _ = write!(sql, "{sep}(?, {}, ?, ?, ?, ?)", i + 1);
    }
    sql.push_str(
        ") AS e WHERE ? IS NULL OR h.head = ? ORDER BY e.column2 RETURNING position, version",
    );
    sql
}

/// Records a command id's result and fingerprint.
pub(crate) const INSERT_COMMAND: &str = "INSERT INTO commands (category, stream_id, command_id, version, position, fingerprint) \
     VALUES (?, ?, ?, ?, ?, ?)";

/// The events of versions `?3..=?4` of the stream `(?1, ?2)`, each row with the stream's
/// version (read in the same statement, so in the same snapshot) in front; one row with NULL
/// event columns when the range holds no event.
pub(crate) const READ_STREAM: &str = "SELECT h.head, e.version, e.event_id, e.event_type, e.schema_version, e.payload, e.metadata, \
            e.recorded_at, e.position \
     FROM (SELECT COALESCE(MAX(version), 0) AS head FROM events WHERE category = ?1 AND stream_id = ?2) AS h \
     LEFT JOIN events AS e ON e.category = ?1 AND e.stream_id = ?2 AND e.version BETWEEN ?3 AND ?4 \
     ORDER BY e.version";

/// The all-stream after a position, in order.
pub(crate) const READ_ALL: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events WHERE position > ? ORDER BY position LIMIT ?"
);

/// The greatest position, 0 for an empty store.
pub(crate) const HEAD_POSITION: &str = "SELECT COALESCE(MAX(position), 0) FROM events";

/// Whether an event is at a position.
pub(crate) const POSITION_EXISTS: &str = "SELECT position FROM events WHERE position = ?";
