//! The event store: appends in one statement, gap-safe all-stream reads.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cqrs_core::{
    AppendResult, Cursor, Error, EventStore, ExpectedVersion, NewEvent, RecordedEvent, Result,
    StreamId, WakeUps,
};
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::config::{PgConfig, migrate, open_pool, schema_options};
use crate::diagnostics::{PgDiagnostics, diagnose};
use crate::error::{Duplicate, backend, duplicate};
use crate::notify::Notifier;
use crate::rows::{EVENT_COLUMNS, EventRow, to_i64, to_u64};
use crate::{
    PgCheckpointStore, PgDeadLetterStore, PgLeases, PgProjector, PgSnapshotStore, PgTransactional,
};

/// Appends a whole batch in one statement, hence in one implicit transaction and one round trip:
/// a repeated command id returns the recorded result, a stale expected version inserts nothing,
/// otherwise the events and the command id are inserted together. A writer that races past the
/// version check runs into the unique key on `(stream, version)` instead.
const APPEND: &str = r#"
WITH prev AS (
    SELECT version, position FROM commands
    WHERE $4::uuid IS NOT NULL AND stream_category = $1 AND stream_id = $2 AND command_id = $4
), cur AS (
    SELECT COALESCE(MAX(stream_version), 0) AS v FROM events WHERE stream_category = $1 AND stream_id = $2
), ok AS (
    SELECT v FROM cur WHERE NOT EXISTS (SELECT 1 FROM prev) AND ($3::int8 IS NULL OR v = $3)
), ins AS (
    INSERT INTO events (stream_category, stream_id, stream_version, event_id, event_type, schema_version, payload, metadata)
    SELECT $1, $2, ok.v + e.ord, e.event_id, e.event_type, e.schema_version, e.payload, e.metadata
    FROM ok CROSS JOIN UNNEST($5::uuid[], $6::text[], $7::int4[], $8::jsonb[], $9::jsonb[])
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
"#;

/// Pauses of a read that finds committed events held back by an older transaction still in
/// flight (about 0.2 s in all): long enough for ordinary transactions to end, short enough not to
/// stall a subscriber behind a long one, which it finds again on its next read.
const HOLD_BACK_WAITS: [Duration; 8] = {
    const fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }
    [ms(1), ms(2), ms(4), ms(8), ms(16), ms(32), ms(64), ms(64)]
};

/// [`APPEND`] for an append without a command id: the version check and the insert only, the
/// cheapest statement that keeps the promises. No row back means the expected version did not
/// hold.
const APPEND_FAST: &str = r#"
WITH cur AS (
    SELECT COALESCE(MAX(stream_version), 0) AS v FROM events WHERE stream_category = $1 AND stream_id = $2
)
INSERT INTO events (stream_category, stream_id, stream_version, event_id, event_type, schema_version, payload, metadata)
SELECT $1, $2, cur.v + e.ord, e.event_id, e.event_type, e.schema_version, e.payload, e.metadata
FROM cur CROSS JOIN UNNEST($4::uuid[], $5::text[], $6::int4[], $7::jsonb[], $8::jsonb[])
    WITH ORDINALITY AS e(event_id, event_type, schema_version, payload, metadata, ord)
WHERE $3::int8 IS NULL OR cur.v = $3
ORDER BY e.ord
RETURNING stream_version, position
"#;

/// How often an `ExpectedVersion::Any` append is retried after losing a race on the version.
const ANY_RETRIES: u32 = 20;

/// An [`EventStore`] on PostgreSQL.
///
/// Cloning is cheap and shares the pool and the wake-up listener. See the crate docs for the
/// schema, the gap-safe all-stream and the wake-ups.
#[derive(Clone)]
pub struct PgEventStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    schema: String,
    notifier: Notifier,
}

impl std::fmt::Debug for PgEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgEventStore")
            .field("schema", &self.inner.schema)
            .finish_non_exhaustive()
    }
}

impl PgEventStore {
    /// Connects to `url` with `config`: opens a pool whose sessions use `config.schema`, creates
    /// the schema and runs the migrations (unless `config.migrate` is off), and starts the
    /// wake-up listener. Call it within a tokio runtime.
    pub async fn connect(url: &str, config: PgConfig) -> Result<Self> {
        let options = PgConnectOptions::from_str(url).map_err(Error::backend)?;
        Self::connect_with(options, config).await
    }

    /// Like [`connect`](Self::connect), from connect options (any `search_path` in them is
    /// replaced by `config.schema`).
    pub async fn connect_with(options: PgConnectOptions, config: PgConfig) -> Result<Self> {
        if config.migrate {
            migrate(&options, &config.schema).await?;
        }
        let pool = open_pool(schema_options(options, &config.schema)?, &config).await?;
        Self::from_pool(pool).await
    }

    /// A store on an existing pool. The tables are those of the pool sessions' current schema
    /// (set it with [`schema_options`]); the migrations must have run there.
    pub async fn from_pool(pool: PgPool) -> Result<Self> {
        let schema: Option<String> = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(&pool)
            .await
            .map_err(backend)?;
        let schema = schema.ok_or_else(|| {
            Error::Invalid("the pool's search_path names no existing schema".into())
        })?;
        let notifier = Notifier::start(&pool, &schema);
        Ok(PgEventStore {
            inner: Arc::new(Inner {
                pool,
                schema,
                notifier,
            }),
        })
    }

    /// The pool, shared with the other stores of this crate.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The schema holding the tables.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// The snapshot store of this schema.
    pub fn snapshots(&self) -> PgSnapshotStore {
        PgSnapshotStore::new(self.inner.pool.clone())
    }

    /// The checkpoint store of this schema.
    pub fn checkpoints(&self) -> PgCheckpointStore {
        PgCheckpointStore::new(self.inner.pool.clone())
    }

    /// The dead-letter store of this schema.
    pub fn dead_letters(&self) -> PgDeadLetterStore {
        PgDeadLetterStore::new(self.inner.pool.clone())
    }

    /// Leases in this schema (each held lease opens a connection of its own).
    pub fn leases(&self) -> PgLeases {
        PgLeases::new(&self.inner.pool)
    }

    /// Runs `projector` transactionally on this store's pool.
    pub fn transactional<P: PgProjector>(&self, projector: P) -> PgTransactional<P> {
        PgTransactional::new(self.inner.pool.clone(), projector)
    }

    /// Checkpoints against the head, the watermark and what holds it back; see [`diagnose`].
    pub async fn diagnostics(&self) -> Result<PgDiagnostics> {
        diagnose(&self.inner.pool).await
    }

    /// Appends inside the caller's open transaction (or on any connection), with the same
    /// statement as [`append`](EventStore::append): the events commit or roll back with the
    /// caller's other writes, and subscribers see them once that transaction commits.
    ///
    /// A lost race on the version aborts the caller's transaction: it fails with
    /// [`Error::Conflict`] and the caller rolls back. Call [`wake`](Self::wake) after the commit
    /// to wake subscribers at once.
    pub async fn append_in(
        &self,
        conn: &mut PgConnection,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        command_id: Option<Uuid>,
    ) -> Result<AppendResult> {
        if events.is_empty() {
            return Err(Error::Invalid("append_in needs at least one event".into()));
        }
        let cols = Columns::new(events)?;
        match run_append(conn, stream, expected_param(expected)?, &cols, command_id).await {
            Ok(Appended::Done(res)) => Ok(res),
            Ok(Appended::Stale(Some(actual))) => Err(Error::Conflict {
                stream: stream.clone(),
                expected,
                actual,
            }),
            Ok(Appended::Stale(None)) => Err(self.conflict(stream, expected).await?),
            Err(err) => match duplicate(&err) {
                Some(Duplicate::StreamVersion) => Err(self.conflict(stream, expected).await?),
                Some(Duplicate::EventId) => Err(event_id_taken(stream)),
                _ => Err(backend(err)),
            },
        }
    }

    /// Wakes subscribers here and in other processes, after a commit of
    /// [`append_in`](Self::append_in) events.
    pub fn wake(&self) {
        self.inner.notifier.appended();
    }

    /// Whether committed events after the cursor wait below the watermark.
    async fn held_back(&self, tx: i64, position: i64) -> Result<bool> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM events WHERE (tx_id, position) > ($1::int8::text::xid8, $2) \
             AND tx_id >= pg_snapshot_xmin(pg_current_snapshot()))",
        )
        .bind(tx)
        .bind(position)
        .fetch_one(&self.inner.pool)
        .await
        .map_err(backend)
    }

    async fn conflict(&self, stream: &StreamId, expected: ExpectedVersion) -> Result<Error> {
        let actual = self.stream_version(stream).await?;
        Ok(Error::Conflict {
            stream: stream.clone(),
            expected,
            actual,
        })
    }

    /// An append of no events: checks the command id and the expected version, writes nothing.
    async fn append_nothing(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        command_id: Option<Uuid>,
    ) -> Result<AppendResult> {
        if let Some(cid) = command_id
            && let Some(prev) = self.command_result(stream, cid).await?
        {
            return Ok(prev);
        }
        let actual = self.stream_version(stream).await?;
        if !expected.matches(actual) {
            return Err(Error::Conflict {
                stream: stream.clone(),
                expected,
                actual,
            });
        }
        Ok(AppendResult {
            version: actual,
            position: 0,
            duplicate: false,
        })
    }
}

/// The columns of a batch, one array each, for `UNNEST`.
struct Columns {
    ids: Vec<Uuid>,
    types: Vec<String>,
    schema_versions: Vec<i32>,
    payloads: Vec<Value>,
    metadata: Vec<Value>,
}

impl Columns {
    fn new(events: Vec<NewEvent>) -> Result<Self> {
        let n = events.len();
        let mut c = Columns {
            ids: Vec::with_capacity(n),
            types: Vec::with_capacity(n),
            schema_versions: Vec::with_capacity(n),
            payloads: Vec::with_capacity(n),
            metadata: Vec::with_capacity(n),
        };
        for e in events {
            let meta = serde_json::to_value(&e.metadata).map_err(|source| Error::Serialize {
                event_type: e.event_type.clone(),
                source,
            })?;
            let sv = i32::try_from(e.schema_version).map_err(|_| {
                Error::Invalid(format!("schema version {} is too large", e.schema_version))
            })?;
            c.ids.push(e.event_id);
            c.types.push(e.event_type);
            c.schema_versions.push(sv);
            c.payloads.push(e.payload);
            c.metadata.push(meta);
        }
        Ok(c)
    }
}

#[async_trait]
impl EventStore for PgEventStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        command_id: Option<Uuid>,
    ) -> Result<AppendResult> {
        if events.is_empty() {
            return self.append_nothing(stream, expected, command_id).await;
        }
        let expected_version = expected_param(expected)?;
        let cols = Columns::new(events)?;
        let mut retries = 0;
        loop {
            let err = match run_append(
                &self.inner.pool,
                stream,
                expected_version,
                &cols,
                command_id,
            )
            .await
            {
                Ok(Appended::Done(res)) => {
                    if !res.duplicate {
                        self.inner.notifier.appended();
                    }
                    return Ok(res);
                }
                Ok(Appended::Stale(Some(actual))) => {
                    return Err(Error::Conflict {
                        stream: stream.clone(),
                        expected,
                        actual,
                    });
                }
                Ok(Appended::Stale(None)) => return Err(self.conflict(stream, expected).await?),
                Err(e) => e,
            };
            let Some(dup) = duplicate(&err) else {
                return Err(backend(err));
            };
            // NOTE: a concurrent append of the same command may have won the race on the
            // version key or on the command key; its result is the answer either way.
            if let Some(cid) = command_id
                && let Some(prev) = self.command_result(stream, cid).await?
            {
                return Ok(prev);
            }
            match dup {
                Duplicate::EventId => return Err(event_id_taken(stream)),
                Duplicate::StreamVersion if expected != ExpectedVersion::Any => {
                    return Err(self.conflict(stream, expected).await?);
                }
                // NOTE: an `Any` append lost a race on the version, or the command key was taken
                // by an append that then rolled back: both are cured by going again.
                Duplicate::StreamVersion | Duplicate::Command => retries += 1,
            }
            if retries > ANY_RETRIES {
                return Err(backend(err));
            }
        }
    }

    async fn command_result(
        &self,
        stream: &StreamId,
        command_id: Uuid,
    ) -> Result<Option<AppendResult>> {
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT version, position FROM commands WHERE stream_category = $1 AND stream_id = $2 AND command_id = $3",
        )
        .bind(&stream.category)
        .bind(&stream.id)
        .bind(command_id)
        .fetch_optional(&self.inner.pool)
        .await
        .map_err(backend)?;
        Ok(row.map(|(v, p)| AppendResult {
            version: to_u64(v),
            position: to_u64(p),
            duplicate: true,
        }))
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let sql = const_format_stream();
        let rows: Vec<EventRow> = sqlx::query_as(sql)
            .bind(&stream.category)
            .bind(&stream.id)
            .bind(to_i64(from_version, "version")?)
            .bind(limit_of(limit))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(backend)?;
        rows.into_iter().map(EventRow::into_recorded).collect()
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<u64> {
        let v: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(stream_version), 0) FROM events WHERE stream_category = $1 AND stream_id = $2",
        )
        .bind(&stream.category)
        .bind(&stream.id)
        .fetch_one(&self.inner.pool)
        .await
        .map_err(backend)?;
        Ok(to_u64(v))
    }

    async fn read_all(&self, after: Cursor, limit: usize) -> Result<Vec<RecordedEvent>> {
        let (tx, position) = (
            to_i64(after.tx, "cursor transaction id")?,
            to_i64(after.position, "cursor position")?,
        );
        let mut waits = HOLD_BACK_WAITS.iter();
        loop {
            let rows: Vec<EventRow> = sqlx::query_as(const_format_all())
                .bind(tx)
                .bind(position)
                .bind(limit_of(limit))
                .fetch_all(&self.inner.pool)
                .await
                .map_err(backend)?;
            // NOTE: at the tail, committed events may be held back by a transaction that began
            // before them and ends in a moment (any writer of the cluster): wait a little for
            // it rather than leave them to the next wake-up or poll.
            if rows.len() < limit
                && let Some(wait) = waits.next()
                && self.held_back(tx, position).await?
            {
                tokio::time::sleep(*wait).await;
                continue;
            }
            return rows
                .into_iter()
                .map(EventRow::into_recorded_lenient)
                .collect();
        }
    }

    async fn head_position(&self) -> Result<u64> {
        let head: Option<i64> = sqlx::query_scalar("SELECT MAX(position) FROM events")
            .fetch_one(&self.inner.pool)
            .await
            .map_err(backend)?;
        Ok(head.map_or(0, to_u64))
    }

    async fn cursor_of(&self, position: u64) -> Result<Option<Cursor>> {
        let mut waits = HOLD_BACK_WAITS.iter();
        loop {
            let row: Option<(i64, bool)> = sqlx::query_as(
                "SELECT tx_id::text::int8, tx_id < pg_snapshot_xmin(pg_current_snapshot()) FROM events WHERE position = $1",
            )
            .bind(to_i64(position, "position")?)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(backend)?;
            match row {
                None => return Ok(None),
                Some((tx, true)) => return Ok(Some(Cursor::new(to_u64(tx), position))),
                Some((_, false)) => match waits.next() {
                    Some(wait) => tokio::time::sleep(*wait).await,
                    None => return Ok(None),
                },
            }
        }
    }

    fn wake_ups(&self) -> WakeUps {
        self.inner.notifier.subscribe()
    }
}

/// What one run of the append statement found.
enum Appended {
    /// Written (or, with `duplicate`, written before under the same command id).
    Done(AppendResult),
    /// The expected version did not hold; the actual one when the statement knows it.
    Stale(Option<u64>),
}

/// The expected version as the statements' `$3` (NULL for any).
fn expected_param(expected: ExpectedVersion) -> Result<Option<i64>> {
    Ok(match expected {
        ExpectedVersion::Any => None,
        ExpectedVersion::NoStream => Some(0),
        ExpectedVersion::Exact(v) => Some(to_i64(v, "expected version")?),
    })
}

/// Runs the append statement once: [`APPEND_FAST`] without a command id, [`APPEND`] with one.
async fn run_append<'e>(
    exec: impl PgExecutor<'e>,
    stream: &StreamId,
    expected: Option<i64>,
    cols: &Columns,
    command_id: Option<Uuid>,
) -> std::result::Result<Appended, sqlx::Error> {
    let Some(cid) = command_id else {
        let rows: Vec<(i64, i64)> = sqlx::query_as(APPEND_FAST)
            .bind(&stream.category)
            .bind(&stream.id)
            .bind(expected)
            .bind(&cols.ids)
            .bind(&cols.types)
            .bind(&cols.schema_versions)
            .bind(&cols.payloads)
            .bind(&cols.metadata)
            .fetch_all(exec)
            .await?;
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

fn event_id_taken(stream: &StreamId) -> Error {
    Error::Invalid(format!(
        "an event id of this append to {stream} is already stored"
    ))
}

fn limit_of(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Events of one stream from a version. Not held back by open transactions: a writer reads its
/// own stream in full.
fn const_format_stream() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE stream_category = $1 AND stream_id = $2 \
             AND stream_version >= $3 ORDER BY stream_version LIMIT $4"
        )
    })
}

/// The gap-safe all-stream read (guarantee 2). Every transaction below the snapshot's xmin has
/// ended, so no event can still appear below that watermark; events are read in (transaction
/// id, position) order up to it, and a cursor below the watermark stays below every event a
/// later commit can bring.
fn const_format_all() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        format!(
            "SELECT {EVENT_COLUMNS} FROM events \
             WHERE (tx_id, position) > ($1::int8::text::xid8, $2) \
             AND tx_id < pg_snapshot_xmin(pg_current_snapshot()) \
             ORDER BY tx_id, position LIMIT $3"
        )
    })
}
