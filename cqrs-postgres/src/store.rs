//! The event store: appends in one statement, gap-safe all-stream reads.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use cqrs_core::{
    AppendResult, Cursor, Error, EventStore, ExpectedVersion, LoadSink, LoadedEvent, LoadedRange,
    NewEvent, RecordedEvent, Result, StreamId, WakeUps,
};
use futures_util::TryStreamExt;
use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::append::{Appended, Columns, event_id_taken, expected_param, run_append};
use crate::append_conns::AppendConns;
use crate::config::{PgConfig, migrate, open_pool, schema_options};
use crate::diagnostics::{PgDiagnostics, diagnose};
use crate::error::{Duplicate, backend, duplicate};
use crate::notify::Notifier;
use crate::rows::{
    Chunk, EVENT_COLUMNS, EventRow, InVersionOrder, LOAD_COLUMNS, LoadedChunk, chunk_bounds,
    joined_events, loaded_chunk, loaded_event, packable, to_i64, to_u64, whole_block,
};
use crate::{
    PgCheckpointStore, PgDeadLetterStore, PgLeases, PgProjector, PgSnapshotStore, PgTransactional,
};

/// Pauses of a read that finds committed events held back by an older transaction still in
/// flight (about 0.2 s in all): long enough for ordinary transactions to end, short enough not to
/// stall a subscriber behind a long one, which it finds again on its next read.
const HOLD_BACK_WAITS: [Duration; 8] = {
    const fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }
    [ms(1), ms(2), ms(4), ms(8), ms(16), ms(32), ms(64), ms(64)]
};

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
    appends: AppendConns,
    pack_blocks: AtomicBool,
    /// Held by the packing in flight (see `start_packing`).
    packing: Arc<tokio::sync::Mutex<()>>,
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
        let store = Self::from_pool(pool).await?;
        store.set_pack_blocks(config.pack_blocks);
        Ok(store)
    }

    /// A store on an existing pool. The tables are those of the pool sessions' current schema
    /// (set it with [`schema_options`]); the migrations must have run there. Loads pack blocks
    /// (see [`set_pack_blocks`](Self::set_pack_blocks)).
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
                appends: AppendConns::new(&pool),
                pool,
                schema,
                notifier,
                pack_blocks: AtomicBool::new(true),
                packing: Default::default(),
            }),
        })
    }

    /// Sets whether loads through this store and its clones pack the complete blocks of long
    /// streams they read ([`PgConfig::pack_blocks`]).
    pub fn set_pack_blocks(&self, pack: bool) {
        self.inner.pack_blocks.store(pack, Ordering::Relaxed);
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
             AND tx_id >= events_watermark())",
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

    /// A range of at most one chunk, as plain rows (the plan is simpler than the chunked
    /// read's, which a short stream's load notices), or as its packed block if it is one. The
    /// first row carries the stream's version, handed to `sink` at once, so that a load of a long
    /// stream can start reading the rest. A whole block read as rows is packed.
    async fn read_small_range(
        &self,
        stream: &StreamId,
        from: i64,
        to: i64,
        sink: &mut LoadSink<'_>,
    ) -> Result<u64> {
        let mut rows = sqlx::query(LOAD_SMALL_RANGE)
            .bind(&stream.category)
            .bind(&stream.id)
            .bind(from)
            .bind(to)
            .fetch(&self.inner.pool);
        let (first, last) = (to_u64(from), to_u64(to));
        let mut head = None;
        let mut events = Vec::new();
        let mut packed = None;
        while let Some(row) = rows.try_next().await.map_err(backend)? {
            if row.try_get::<bool, _>(4).map_err(backend)? {
                let version = to_u64(row.try_get::<i64, _>(0).map_err(backend)?);
                head = Some(version);
                // NOTE: the version comes first unless PostgreSQL reorders the UNION ALL; then
                // it goes with the events.
                if events.is_empty() {
                    sink(LoadedRange::new(Vec::new(), version))?;
                }
            } else if let Some(types) = row.try_get::<Option<&str>, _>(5).map_err(backend)? {
                let schema: i32 = row.try_get(2).map_err(backend)?;
                let payloads: &str = row.try_get(6).map_err(backend)?;
                packed = Some(joined_events(stream, first, last, schema, types, payloads)?);
            } else {
                events.push(loaded_event(stream, &row)?);
            }
        }
        drop(rows);
        let head = head.ok_or_else(|| Error::Corrupt {
            stream: stream.clone(),
            version: 0,
            reason: "the read brought no stream version".into(),
        })?;
        let events = match packed {
            Some(Chunk::Events(events)) => events,
            Some(Chunk::Irregular) => self.read_rows_in_range(stream, first, last).await?,
            None => {
                let events = in_version_order(events);
                if whole_block(first, last, LOAD_CHUNK as u64)
                    && events.len() == LOAD_CHUNK as usize
                    && packable(&events)
                {
                    self.start_packing(stream, vec![from]);
                }
                events
            }
        };
        if !events.is_empty() {
            sink(LoadedRange::new(events, head))?;
        }
        Ok(head)
    }

    /// Packs the blocks of `stream` that start at `firsts` (at most [`PACK_AT_ONCE`] of them)
    /// into `event_blocks` (see [`PACK_BLOCKS`]), on a task of its own, so that the load that
    /// found them does not wait. One packing runs at a time per store; while it runs, loads leave
    /// their blocks to later loads. Packing only spares later loads work, so a failure (a role
    /// without the right to lock rows of `events`, say) is logged and forgotten.
    fn start_packing(&self, stream: &StreamId, mut firsts: Vec<i64>) {
        if firsts.is_empty() || !self.inner.pack_blocks.load(Ordering::Relaxed) {
            return;
        }
        let Ok(running) = self.inner.packing.clone().try_lock_owned() else {
            return;
        };
        firsts.truncate(PACK_AT_ONCE);
        let (pool, stream) = (self.inner.pool.clone(), stream.clone());
        tokio::spawn(async move {
            let packed = sqlx::query(PACK_BLOCKS)
                .bind(&stream.category)
                .bind(&stream.id)
                .bind(firsts)
                .bind(LOAD_CHUNK)
                .execute(&pool)
                .await;
            match packed {
                Ok(done) => {
                    tracing::debug!(%stream, blocks = done.rows_affected(), "packed blocks")
                }
                Err(e) => tracing::debug!(%stream, error = %e, "blocks not packed"),
            }
            drop(running);
        });
    }

    /// Waits until the packing of blocks in flight, if any, has ended: after it, the blocks the
    /// loads so far have packed are in `event_blocks`. Loads never wait for packing; this is
    /// for tests, and for a shutdown that wants the work done before it closes the pool.
    ///
    /// ```no_run
    /// # use cqrs_core::{EventStore, StreamId};
    /// # async fn f(store: cqrs_postgres::PgEventStore) -> cqrs_core::Result<()> {
    /// let stream = StreamId::new("account", "a1");
    /// // A load of a long stream: its whole blocks of 500 events get packed meanwhile.
    /// store.read_stream_range_for_load(&stream, 1, 10_000).await?;
    /// store.wait_for_packing().await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn wait_for_packing(&self) {
        drop(self.inner.packing.lock().await);
    }

    /// The events of versions `from..=to` of `stream`, read row by row.
    async fn read_rows_in_range(
        &self,
        stream: &StreamId,
        from: u64,
        to: u64,
    ) -> Result<Vec<LoadedEvent>> {
        let limit = usize::try_from(to.saturating_sub(from) + 1).unwrap_or(usize::MAX);
        let mut events = self.read_stream_for_load(stream, from, limit).await?;
        events.retain(|e| e.stream_version <= to);
        Ok(events)
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
            let mut conn = self
                .inner
                .appends
                .take(&self.inner.pool)
                .await
                .map_err(backend)?;
            let ran = run_append(conn.conn(), stream, expected_version, &cols, command_id).await;
            if ran.is_ok() {
                conn.done();
            }
            let err = match ran {
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

    async fn read_stream_for_load(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<LoadedEvent>> {
        // NOTE: each row is converted as it arrives, while the server is still sending the next.
        let rows = sqlx::query(const_format_load())
            .bind(&stream.category)
            .bind(&stream.id)
            .bind(to_i64(from_version, "version")?)
            .bind(limit_of(limit))
            .map(|row| loaded_event(stream, &row))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(backend)?;
        rows.into_iter().collect()
    }

    async fn read_stream_range_for_load(
        &self,
        stream: &StreamId,
        from_version: u64,
        to_version: u64,
    ) -> Result<LoadedRange> {
        let mut events = Vec::new();
        let head = self
            .read_stream_range_into(stream, from_version, to_version, &mut |piece| {
                events.extend(piece.events);
                Ok(())
            })
            .await?;
        Ok(LoadedRange::new(events, head))
    }

    async fn read_stream_range_into(
        &self,
        stream: &StreamId,
        from_version: u64,
        to_version: u64,
        sink: &mut LoadSink<'_>,
    ) -> Result<u64> {
        if to_version < from_version {
            return self.stream_version(stream).await;
        }
        let (from, to) = (
            to_i64(from_version, "version")?,
            to_i64(to_version, "version")?,
        );
        if to_version - from_version < LOAD_CHUNK as u64 {
            return self.read_small_range(stream, from, to, sink).await;
        }
        let bounds = chunk_bounds(from_version, to_version, LOAD_CHUNK as u64);
        let (firsts, lasts): (Vec<i64>, Vec<i64>) = bounds
            .iter()
            .map(|&(first, last)| (first as i64, last as i64))
            .unzip();
        let mut rows = sqlx::query(LOAD_RANGE)
            .bind(&stream.category)
            .bind(&stream.id)
            .bind(firsts)
            .bind(lasts)
            .fetch(&self.inner.pool);
        let mut head = 0;
        let mut chunks = InVersionOrder::new(from_version, to_version, LOAD_CHUNK as u64);
        let mut to_pack = Vec::new();
        loop {
            let row = match rows.try_next().await {
                Ok(Some(row)) => row,
                Ok(None) => break,
                // NOTE: a chunk over the server's size limit for one value (events of megabytes
                // each); the rest of the range row by row.
                Err(sqlx::Error::Database(e))
                    if matches!(e.code().as_deref(), Some("54000" | "53200")) =>
                {
                    tracing::debug!(%stream, error = %e, "range too large to read in chunks");
                    break;
                }
                Err(e) => return Err(backend(e)),
            };
            let LoadedChunk {
                head: seen,
                first,
                chunk,
                packed,
            } = loaded_chunk(stream, &row)?;
            head = head.max(seen);
            if !packed
                && let Chunk::Events(events) = &chunk
                && let Some(last) = (first + events.len() as u64).checked_sub(1)
                && whole_block(first, last, LOAD_CHUNK as u64)
            {
                to_pack.push(first as i64);
            }
            chunks.put(first, chunk);
            while let Some((first, last, chunk)) = chunks.take() {
                let events = match chunk {
                    Chunk::Events(events) => events,
                    Chunk::Irregular => self.read_rows_in_range(stream, first, last).await?,
                };
                // NOTE: chunks past the stream's end (or emptied by hand) hand nothing over.
                if !events.is_empty() {
                    sink(LoadedRange::new(events, head))?;
                }
            }
        }
        drop(rows);
        if let Some((first, last)) = chunks.rest() {
            // What the chunks did not bring: the rest after the size limit above (with every
            // chunk row there, nothing).
            let events = self.read_rows_in_range(stream, first, last).await?;
            head = head.max(self.stream_version(stream).await?);
            if !events.is_empty() {
                sink(LoadedRange::new(events, head))?;
            }
        }
        self.start_packing(stream, to_pack);
        Ok(head)
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<u64> {
        let v: i64 = sqlx::query_scalar(concat!("SELECT ", stream_version_sql!()))
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
            // NOTE: each row becomes its event as it arrives, into a vector sized once, at the
            // first row: a batch is neither held twice nor grown by copying, and an empty read
            // (a live subscriber at the tail, most of the time) allocates nothing.
            let mut rows = sqlx::query_as::<_, EventRow>(const_format_all())
                .bind(tx)
                .bind(position)
                .bind(limit_of(limit))
                .fetch(&self.inner.pool);
            let mut events = Vec::new();
            while let Some(row) = rows.try_next().await.map_err(backend)? {
                if events.is_empty() {
                    events.reserve_exact(limit.min(READ_ALL_PRESIZE));
                }
                events.push(row.into_recorded_lenient()?);
            }
            drop(rows);
            // NOTE: at the tail, committed events may be held back by a transaction that began
            // before them and ends in a moment (any writer of the database): rather than leave
            // them to the next wake-up or poll, wait a little for it. Only an empty read waits,
            // so a subscriber that has events to handle is never slowed down.
            if events.is_empty()
                && let Some(wait) = waits.next()
                && self.held_back(tx, position).await?
            {
                tokio::time::sleep(*wait).await;
                continue;
            }
            return Ok(events);
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
                "SELECT tx_id::text::int8, tx_id < events_watermark() FROM events WHERE position = $1",
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

/// The most events `read_all` makes room for before its rows arrive (a larger batch grows).
const READ_ALL_PRESIZE: usize = 10_000;

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

/// Events of a range of versions in rows of up to [`LOAD_CHUNK`] events each: a long stream
/// comes in a few dozen rows rather than thousands, which halves the work of both ends per
/// event. The chunks' bounds come as two arrays (`$3`, `$4`; see `chunk_bounds`): every chunk
/// but the first and the last of a range is a whole block of [`LOAD_CHUNK`] versions.
///
/// A whole block packed in `event_blocks` (see [`PACK_BLOCKS`]) is read as its one row (a third
/// of the server's time of reading its 500 rows); any other chunk is aggregated from `events`.
/// Types and payloads come each as one text, joined by the record separator 0x1E (valid JSON
/// never holds it unescaped; an aggregated text costs the server one copy per event where an
/// array costs a send call per element). Versions are unique, so a chunk with as many events as
/// versions in its bounds holds each of them once, in order. A chunk with fewer (rows removed by
/// hand), with differing schema versions (a schema change within the chunk) or with a type that
/// holds the separator is read again row by row. Each chunk is its own index range scan. Every
/// row also carries the stream's version in the statement's snapshot, and whether it was packed.
///
/// The chunks' bounds come as arrays (`unnest`) rather than from `generate_series`: the planner
/// estimates a parameter array at a few elements and, after its first five custom plans, keeps
/// a generic plan for the prepared statement; with a series it estimated 1,000 rows and planned
/// every read anew (about 8 % of the server's time for a range read, in a profile of W2).
///
/// NOTE: the joined texts of a chunk aggregated here follow the inner query's `ORDER BY` in
/// practice (a subquery with an `ORDER BY` is not merged into the outer query, and an aggregate
/// takes its rows in the order its input plan yields them), but SQL does not promise it, and
/// `string_agg(... ORDER BY ...)`, which would, sorts every chunk again (half as much server
/// time again, measured with psql on a 10,000-event stream). So the chunk also brings its
/// versions, aggregated from the same rows in the same step (`array_agg`, about 5 % more):
/// the client takes the texts only if the versions come in order, and reads the chunk row by
/// row otherwise. (A packed block's texts were joined with that `ORDER BY`.)
const LOAD_RANGE: &str = concat!(
    "\
    SELECT CASE WHEN b.first_version IS NULL THEN a.n ELSE c.hi - c.lo + 1 END AS n, \
           c.lo AS first, c.hi AS last, \
           COALESCE(b.schema_version, a.schema) AS schema, \
           COALESCE(b.schema_version, a.last_schema) AS last_schema, \
           COALESCE(b.types, a.types) AS types, COALESCE(b.payloads, a.payloads) AS payloads, \
           h.head, b.first_version IS NOT NULL AS packed, a.versions \
    FROM unnest($3::int8[], $4::int8[]) AS c(lo, hi) \
    LEFT JOIN LATERAL ( \
        SELECT first_version, schema_version, types, payloads FROM event_blocks \
        WHERE stream_category = $1 AND stream_id = $2 AND first_version = c.lo AND last_version = c.hi \
    ) AS b ON true \
    CROSS JOIN LATERAL ( \
        SELECT count(*) AS n, min(schema_version) AS schema, max(schema_version) AS last_schema, \
               array_agg(stream_version) AS versions, \
               string_agg(event_type, E'\\x1e') AS types, string_agg(payload::text, E'\\x1e') AS payloads \
        FROM (SELECT stream_version, event_type, schema_version, payload FROM events \
              WHERE b.first_version IS NULL AND stream_category = $1 AND stream_id = $2 \
                AND stream_version >= c.lo AND stream_version <= c.hi \
              ORDER BY stream_version) AS e \
    ) AS a \
    CROSS JOIN (SELECT ",
    stream_version_sql!(),
    " AS head) AS h"
);

/// Packs whole blocks of a stream, each [`LOAD_CHUNK`] (`$4`) versions from a first version in
/// `$3`, into `event_blocks`: the types and the payloads each joined in version order. A block
/// is packed only if all its versions are there with one schema version and no type holds the
/// separator; one packed already is left as it is.
///
/// The rows are read `FOR SHARE SKIP LOCKED`, so that a hand edit of `events` and a packing of
/// the same rows never miss each other: the edit waits for the packing to commit and its
/// trigger then forgets the block, or the packing skips the row being edited (the block then
/// lacks a version and is not packed), or the edit has committed and the packing reads the
/// edited row. The row locks need the `UPDATE` privilege on `events`.
const PACK_BLOCKS: &str = "\
    INSERT INTO event_blocks (stream_category, stream_id, first_version, last_version, \
                              schema_version, types, payloads) \
    SELECT $1, $2, c.lo, c.lo + $4 - 1, min(e.schema_version), \
           string_agg(e.event_type, E'\\x1e' ORDER BY e.stream_version), \
           string_agg(e.payload::text, E'\\x1e' ORDER BY e.stream_version) \
    FROM unnest($3::int8[]) AS c(lo) \
    CROSS JOIN LATERAL ( \
        SELECT stream_version, event_type, schema_version, payload FROM events \
        WHERE stream_category = $1 AND stream_id = $2 \
          AND stream_version >= c.lo AND stream_version < c.lo + $4 \
        FOR SHARE SKIP LOCKED \
    ) AS e \
    GROUP BY c.lo \
    HAVING count(*) = $4 AND min(e.schema_version) = max(e.schema_version) \
       AND bool_and(strpos(e.event_type, E'\\x1e') = 0) \
    ON CONFLICT DO NOTHING";

/// `events` sorted by version. Rows come in the order of their query's `ORDER BY`; SQL does not
/// promise it for a `UNION ALL`, so it is checked and, if need be, restored.
fn in_version_order(mut events: Vec<LoadedEvent>) -> Vec<LoadedEvent> {
    if !events.is_sorted_by_key(|e| e.stream_version) {
        events.sort_by_key(|e| e.stream_version);
    }
    events
}

/// A range of at most [`LOAD_CHUNK`] versions: a first row with the stream's version (in the
/// statement's snapshot) in the version column and `head` set, then the events: the packed
/// block of exactly these versions as one row (the schema version, and the types and payloads
/// joined as in [`LOAD_RANGE`], in the last two columns), or else the rows.
const LOAD_SMALL_RANGE: &str = concat!(
    "SELECT ",
    stream_version_sql!(),
    ", NULL::text, NULL::int4, NULL::json, true AS head, NULL::text, NULL::text \
    UNION ALL \
    (SELECT first_version, NULL, schema_version, NULL, false, types, payloads FROM event_blocks \
     WHERE stream_category = $1 AND stream_id = $2 AND first_version = $3 AND last_version = $4) \
    UNION ALL \
    (SELECT stream_version, event_type, schema_version, payload, false, NULL, NULL FROM events \
     WHERE stream_category = $1 AND stream_id = $2 AND stream_version >= $3 AND stream_version <= $4 \
       AND NOT EXISTS (SELECT FROM event_blocks WHERE stream_category = $1 AND stream_id = $2 \
                       AND first_version = $3 AND last_version = $4) \
     ORDER BY stream_version)"
);

/// The most blocks one packing packs (5,000 events): the first load of a very long stream
/// leaves the rest to later loads rather than lock and copy all of it at once.
const PACK_AT_ONCE: usize = 10;

/// Events per row of [`LOAD_RANGE`]. The server caps one value at 1 GB: a chunk of events of
/// 2 MB each on average would pass it, and is then read row by row.
const LOAD_CHUNK: i64 = 500;

/// [`const_format_stream`] with only the columns a load needs: less for the server to send and
/// for the client to convert.
fn const_format_load() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        format!(
            "SELECT {LOAD_COLUMNS} FROM events WHERE stream_category = $1 AND stream_id = $2 \
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
             AND tx_id < events_watermark() \
             ORDER BY tx_id, position LIMIT $3"
        )
    })
}
