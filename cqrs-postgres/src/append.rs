//! The append path: one statement per append, its parameters and its outcomes.

use cqrs_core::{AppendResult, Error, ExpectedVersion, NewEvent, Result, StreamId};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::rows::{to_i64, to_u64};

/// Appends a whole batch in one statement, hence in one implicit transaction and one round trip:
/// a repeated command id returns the recorded result, a stale expected version inserts nothing,
/// otherwise the events and the command id are inserted together. A writer that races past the
/// version check runs into the unique key on `(stream, version)` instead.
const APPEND: &str = concat!(
    r#"
WITH prev AS (
    SELECT version, position FROM commands
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
    INSERT INTO commands (stream_category, stream_id, command_id, version, position)
    SELECT $1, $2, $4, version, position FROM last WHERE $4::uuid IS NOT NULL AND version IS NOT NULL
)
SELECT (SELECT v FROM cur), (SELECT version FROM last), (SELECT position FROM last),
       (SELECT version FROM prev), (SELECT position FROM prev)
"#
);

/// [`APPEND`] for an append without a command id: the version check and the insert only, the
/// cheapest statement that keeps the promises. No row back means the expected version did not
/// hold.
const APPEND_FAST: &str = concat!(
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
const APPEND_ONE: &str = concat!(
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

/// The columns of a batch, one array each, for `UNNEST`.
pub(crate) struct Columns {
    ids: Vec<Uuid>,
    types: Vec<String>,
    schema_versions: Vec<i32>,
    /// JSON text: the columns are `json`, stored as sent.
    payloads: Vec<String>,
    metadata: Vec<String>,
}

impl Columns {
    pub(crate) fn new(events: Vec<NewEvent>) -> Result<Self> {
        let n = events.len();
        let mut c = Columns {
            ids: Vec::with_capacity(n),
            types: Vec::with_capacity(n),
            schema_versions: Vec::with_capacity(n),
            payloads: Vec::with_capacity(n),
            metadata: Vec::with_capacity(n),
        };
        for e in events {
            let serialize = |source| Error::Serialize {
                event_type: e.event_type.clone(),
                source,
            };
            let meta = serde_json::to_string(&e.metadata).map_err(serialize)?;
            let payload = serde_json::to_string(&e.payload).map_err(serialize)?;
            let sv = i32::try_from(e.schema_version).map_err(|_| {
                Error::Invalid(format!("schema version {} is too large", e.schema_version))
            })?;
            c.ids.push(e.event_id);
            c.types.push(e.event_type);
            c.schema_versions.push(sv);
            c.payloads.push(payload);
            c.metadata.push(meta);
        }
        Ok(c)
    }
}

/// What one run of the append statement found.
pub(crate) enum Appended {
    /// Written (or, with `duplicate`, written before under the same command id).
    Done(AppendResult),
    /// The expected version did not hold; the actual one when the statement knows it.
    Stale(Option<u64>),
}

/// The expected version as the statements' `$3` (NULL for any).
pub(crate) fn expected_param(expected: ExpectedVersion) -> Result<Option<i64>> {
    Ok(match expected {
        ExpectedVersion::Any => None,
        ExpectedVersion::NoStream => Some(0),
        ExpectedVersion::Exact(v) => Some(to_i64(v, "expected version")?),
    })
}

/// Runs the append statement once: [`APPEND_FAST`] without a command id, [`APPEND`] with one.
pub(crate) async fn run_append<'e>(
    exec: impl PgExecutor<'e>,
    stream: &StreamId,
    expected: Option<i64>,
    cols: &Columns,
    command_id: Option<Uuid>,
) -> std::result::Result<Appended, sqlx::Error> {
    let Some(cid) = command_id else {
        let one = (
            &cols.ids[..],
            &cols.types[..],
            &cols.schema_versions[..],
            &cols.payloads[..],
            &cols.metadata[..],
        );
        let rows: Vec<(i64, i64)> = if let ([id], [ty], [sv], [payload], [meta]) = one {
            sqlx::query_as(APPEND_ONE)
                .bind(&stream.category)
                .bind(&stream.id)
                .bind(expected)
                .bind(id)
                .bind(ty)
                .bind(sv)
                .bind(payload)
                .bind(meta)
                .fetch_all(exec)
                .await?
        } else {
            sqlx::query_as(APPEND_FAST)
                .bind(&stream.category)
                .bind(&stream.id)
                .bind(expected)
                .bind(&cols.ids)
                .bind(&cols.types)
                .bind(&cols.schema_versions)
                .bind(&cols.payloads)
                .bind(&cols.metadata)
                .fetch_all(exec)
                .await?
        };
        return Ok(match rows.iter().max() {
            Some(&(version, position)) => Appended::Done(AppendResult {
                version: to_u64(version),
                position: to_u64(position),
                duplicate: false,
            }),
            None => Appended::Stale(None),
        });
    };
    let row =
        sqlx::query_as::<_, (i64, Option<i64>, Option<i64>, Option<i64>, Option<i64>)>(APPEND)
            .bind(&stream.category)
            .bind(&stream.id)
            .bind(expected)
            .bind(cid)
            .bind(&cols.ids)
            .bind(&cols.types)
            .bind(&cols.schema_versions)
            .bind(&cols.payloads)
            .bind(&cols.metadata)
            .fetch_one(exec)
            .await?;
    Ok(match row {
        (_, _, _, Some(version), Some(position)) => Appended::Done(AppendResult {
            version: to_u64(version),
            position: to_u64(position),
            duplicate: true,
        }),
        (_, Some(version), Some(position), _, _) => Appended::Done(AppendResult {
            version: to_u64(version),
            position: to_u64(position),
            duplicate: false,
        }),
        (actual, ..) => Appended::Stale(Some(to_u64(actual))),
    })
}

pub(crate) fn event_id_taken(stream: &StreamId) -> Error {
    Error::Invalid(format!(
        "an event id of this append to {stream} is already stored"
    ))
}
