//! The statements of the event store, in one place, each written once.

/// SQL for the version of the stream `($1, $2)`: its last row's, 0 for no stream.
///
/// NOTE: the last row, `ORDER BY stream_version DESC LIMIT 1`, is one step down the index.
/// `MAX(stream_version)` is planned for the row count statistics give a stream (a handful), and
/// on a long stream the plain aggregate then reads every row of it (5 ms for 10,000 events).
macro_rules! stream_version_sql {
    () => {
        "COALESCE((SELECT stream_version FROM events WHERE stream_category = $1 AND stream_id = $2 \
         ORDER BY stream_version DESC LIMIT 1), 0)"
    };
}

/// The columns of an event row, in the order [`EventRow`](crate::rows::EventRow) reads them.
macro_rules! event_columns {
    () => {
        "position, tx_id AS tx, stream_category, stream_id, stream_version, \
         event_id, event_type, schema_version, payload, metadata, recorded_at"
    };
}

/// The version of the stream `($1, $2)`.
pub(crate) const STREAM_VERSION: &str = concat!("SELECT ", stream_version_sql!());

/// Appends a whole batch in one statement, hence in one implicit transaction and one round trip:
/// a repeated command id returns the recorded result and fingerprint, a stale expected version
/// inserts nothing, otherwise the events and the command id (with the request's fingerprint,
/// `$10`) are inserted together. A writer that races past the version check runs into the
/// unique key on `(stream, version)` instead.
pub(crate) const APPEND: &str = concat!(
    r#"
WITH prev AS (
    SELECT version, position, fingerprint FROM commands
    WHERE $4::uuid IS NOT NULL AND stream_category = $1 AND stream_id = $2 AND command_id = $4
), cur AS (
    SELECT "#,
    stream_version_sql!(),
    r#" AS v
), ok AS (
    SELECT v FROM cur WHERE NOT EXISTS (SELECT 1 FROM prev) AND ($3::int8 IS NULL OR v = $3)
), ins AS (
    INSERT INTO events (stream_category, stream_id, stream_version, event_id, event_type, schema_version, payload, metadata)
    SELECT $1, $2, ok.v + e.ord, e.event_id, e.event_type, e.schema_version, e.payload, e.metadata
    FROM ok CROSS JOIN UNNEST($5::uuid[], $6::text[], $7::int4[], $8::text[]::json[], $9::text[]::json[])
        WITH ORDINALITY AS e(event_id, event_type, schema_version, payload, metadata, ord)
    ORDER BY e.ord
    RETURNING stream_version, position
), last AS (
    SELECT MAX(stream_version) AS version, MAX(position) AS position FROM ins
), cmd AS (
    INSERT INTO commands (stream_category, stream_id, command_id, version, position, fingerprint)
    SELECT $1, $2, $4, version, position, $10 FROM last WHERE $4::uuid IS NOT NULL AND version IS NOT NULL
)
SELECT (SELECT v FROM cur), (SELECT version FROM last), (SELECT position FROM last),
       (SELECT version FROM prev), (SELECT position FROM prev), (SELECT fingerprint FROM prev)
"#
);

/// [`APPEND`] for an append without a command id: the version check and the insert only, the
/// cheapest statement that keeps the promises. No row back means the expected version did not
/// hold.
pub(crate) const APPEND_FAST: &str = concat!(
    r#"
WITH cur AS (
    SELECT "#,
    stream_version_sql!(),
    r#" AS v
)
INSERT INTO events (stream_category, stream_id, stream_version, event_id, event_type, schema_version, payload, metadata)
SELECT $1, $2, cur.v + e.ord, e.event_id, e.event_type, e.schema_version, e.payload, e.metadata
FROM cur CROSS JOIN UNNEST($4::uuid[], $5::text[], $6::int4[], $7::text[]::json[], $8::text[]::json[])
    WITH ORDINALITY AS e(event_id, event_type, schema_version, payload, metadata, ord)
WHERE $3::int8 IS NULL OR cur.v = $3
ORDER BY e.ord
RETURNING stream_version, position
"#
);

/// [`APPEND_FAST`] for the commonest append, one event: the same check and insert with plain
/// parameters, sparing both ends the arrays and the `UNNEST`.
pub(crate) const APPEND_ONE: &str = concat!(
    r#"
INSERT INTO events (stream_category, stream_id, stream_version, event_id, event_type, schema_version, payload, metadata)
SELECT $1, $2, cur.v + 1, $4, $5, $6, $7::text::json, $8::text::json
FROM (SELECT "#,
    stream_version_sql!(),
    r#" AS v) AS cur
WHERE $3::int8 IS NULL OR cur.v = $3
RETURNING stream_version, position
"#
);

/// A command id's recorded result and fingerprint.
pub(crate) const COMMAND_RESULT: &str = "SELECT version, position, fingerprint FROM commands \
     WHERE stream_category = $1 AND stream_id = $2 AND command_id = $3";

/// The events of versions `$3..=$4` of the stream `($1, $2)`, in order, each row with the
/// stream's version in front (an uncorrelated subquery: computed once, in the statement's
/// snapshot), for ranges that hold events for sure (the ranges a load reads below the version it
/// was told). Not held back by open transactions: a writer reads its own stream in full.
///
/// NOTE: the order is the statement's own `ORDER BY`, which the index gives without a sort. A
/// first row for the version joined with `UNION ALL` keeps its place only in practice, and
/// ordering the union sorts the whole range on the server.
pub(crate) const READ_STREAM: &str = concat!(
    "SELECT ",
    stream_version_sql!(),
    " AS head, stream_version, event_id, event_type, schema_version, payload, metadata, \
     recorded_at, position, tx_id \
     FROM events WHERE stream_category = $1 AND stream_id = $2 \
     AND stream_version >= $3 AND stream_version <= $4 ORDER BY stream_version"
);

/// [`READ_STREAM`] for a short range that may hold no event (a load's first read, which also
/// learns the version there, of a new stream or after an up-to-date snapshot): the version
/// row is joined with the range's events, so that an empty range is one row of NULL events
/// rather than a second statement. Ordering the join's rows costs the server a sort, cheap
/// for a short range.
pub(crate) const READ_SHORT_RANGE: &str = concat!(
    "SELECT h.head, e.stream_version, e.event_id, e.event_type, e.schema_version, e.payload, \
     e.metadata, e.recorded_at, e.position, e.tx_id \
     FROM (SELECT ",
    stream_version_sql!(),
    " AS head) AS h \
     LEFT JOIN events AS e ON e.stream_category = $1 AND e.stream_id = $2 \
     AND e.stream_version >= $3 AND e.stream_version <= $4 \
     ORDER BY e.stream_version"
);

/// The longest range read with [`READ_SHORT_RANGE`].
pub(crate) const SHORT_RANGE: i64 = 1_000;

/// The gap-safe all-stream read (guarantee 2). Every transaction below the snapshot's xmin has
/// ended, so no event can still appear below that watermark; events are read in (transaction
/// id, position) order up to it, and a cursor below the watermark stays below every event a
/// later commit can bring.
pub(crate) const READ_ALL: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events WHERE (tx_id, position) > ($1::int8::text::xid8, $2) \
     AND tx_id < events_watermark() ORDER BY tx_id, position LIMIT $3"
);

/// Whether committed events after the cursor `($1, $2)` wait below the watermark.
pub(crate) const HELD_BACK: &str = "SELECT EXISTS (SELECT 1 FROM events \
     WHERE (tx_id, position) > ($1::int8::text::xid8, $2) AND tx_id >= events_watermark())";

/// The greatest position.
pub(crate) const HEAD_POSITION: &str = "SELECT MAX(position) FROM events";

/// The transaction id of the event at position `$1`, and whether it is below the watermark.
pub(crate) const CURSOR_OF: &str =
    "SELECT tx_id::text::int8, tx_id < events_watermark() FROM events WHERE position = $1";

/// The appends of a group in one statement, hence one transaction and one commit: each member
/// (`$1..$5`, one array element each, on a stream of its own in the group) keeps its own
/// command-id check and expected-version check, and a member that fails either inserts nothing
/// while the others are written. The events (`$6..$11`) name their member by its 1-based place.
/// One row back per member, in order: the stream's version before, the last version and
/// position written (NULL if none), and the recorded result and fingerprint of its command id.
///
/// NOTE: members are on distinct streams, so no two of them race on one version here; a writer
/// outside the group that races past a check runs into the unique key, which refuses the whole
/// statement (nothing of the group is written) and its members are then appended one by one.
pub(crate) const APPEND_GROUP: &str = r#"
WITH req AS (
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::uuid[], $5::uuid[])
        WITH ORDINALITY AS r(cat, sid, expected, command, fingerprint, m)
), cur AS (
    SELECT r.m,
        COALESCE((SELECT e.stream_version FROM events AS e
                  WHERE e.stream_category = r.cat AND e.stream_id = r.sid
                  ORDER BY e.stream_version DESC LIMIT 1), 0) AS v,
        p.version AS prev_version, p.position AS prev_position, p.fingerprint AS prev_fingerprint
    FROM req AS r
    LEFT JOIN commands AS p ON r.command IS NOT NULL AND p.stream_category = r.cat
        AND p.stream_id = r.sid AND p.command_id = r.command
), ok AS (
    SELECT r.m, r.cat, r.sid, c.v FROM req AS r JOIN cur AS c USING (m)
    WHERE c.prev_version IS NULL AND (r.expected IS NULL OR c.v = r.expected)
), ev AS (
    SELECT * FROM UNNEST($6::int8[], $7::uuid[], $8::text[], $9::int4[], $10::text[]::json[], $11::text[]::json[])
        WITH ORDINALITY AS e(m, event_id, event_type, schema_version, payload, metadata, n)
), ins AS (
    INSERT INTO events (stream_category, stream_id, stream_version, event_id, event_type, schema_version, payload, metadata)
    SELECT ok.cat, ok.sid, ok.v + row_number() OVER (PARTITION BY ev.m ORDER BY ev.n),
        ev.event_id, ev.event_type, ev.schema_version, ev.payload, ev.metadata
    FROM ev JOIN ok USING (m)
    ORDER BY ev.n
    RETURNING stream_category, stream_id, stream_version, position
), last AS (
    SELECT ok.m, MAX(ins.stream_version) AS version, MAX(ins.position) AS position
    FROM ins JOIN ok ON ins.stream_category = ok.cat AND ins.stream_id = ok.sid
    GROUP BY ok.m
), cmd AS (
    INSERT INTO commands (stream_category, stream_id, command_id, version, position, fingerprint)
    SELECT r.cat, r.sid, r.command, l.version, l.position, r.fingerprint
    FROM last AS l JOIN req AS r USING (m) WHERE r.command IS NOT NULL
)
SELECT c.v, l.version, l.position, c.prev_version, c.prev_position, c.prev_fingerprint
FROM cur AS c LEFT JOIN last AS l USING (m) ORDER BY c.m
"#;

/// The version and position of stored events by id: what a group whose connection was lost
/// finds of its members.
pub(crate) const EVENTS_BY_ID: &str =
    "SELECT event_id, stream_version, position FROM events WHERE event_id = ANY($1)";
