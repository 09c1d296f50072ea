//! Appending: one statement per append (see `sql.rs`), its parameters, its outcomes and the
//! retries of an append that lost a race.

use async_trait::async_trait;
use cqrs_core::{
    AppendResult, CommandId, Error, EventAppender, ExpectedVersion, Fingerprint, NewEvent, Result,
    StreamId, StreamReaderExt,
};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::error::{Duplicate, backend, duplicate};
use crate::event_store::PgEventStore;
use crate::rows::{to_i64, to_u64};
use crate::sql::{APPEND, APPEND_FAST, APPEND_ONE, COMMAND_RESULT};

/// How often an `ExpectedVersion::Any` append is retried after losing a race on the version.
const ANY_RETRIES: u32 = 20;

/// The columns of a batch, one array each, for `UNNEST`.
pub(crate) struct Columns {
    pub(crate) ids: Vec<Uuid>,
    pub(crate) types: Vec<String>,
    pub(crate) schema_versions: Vec<i32>,
    /// JSON text: the columns are `json`, stored as sent.
    pub(crate) payloads: Vec<String>,
    pub(crate) metadata: Vec<String>,
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
    /// The command id was recorded before with another fingerprint; nothing was written.
    Reused,
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
    command: Option<CommandId>,
) -> std::result::Result<Appended, sqlx::Error> {
    let Some(command) = command else {
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
    type Row = (
        i64,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<Uuid>,
    );
    let row = sqlx::query_as::<_, Row>(APPEND)
        .bind(&stream.category)
        .bind(&stream.id)
        .bind(expected)
        .bind(command.id)
        .bind(&cols.ids)
        .bind(&cols.types)
        .bind(&cols.schema_versions)
        .bind(&cols.payloads)
        .bind(&cols.metadata)
        .bind(command.fingerprint.map(|f| f.as_uuid()))
        .fetch_one(exec)
        .await?;
    Ok(match row {
        (_, _, _, Some(_), Some(_), fingerprint)
            if !command.matches(fingerprint.map(Fingerprint::from_uuid)) =>
        {
            Appended::Reused
        }
        (_, _, _, Some(version), Some(position), _) => Appended::Done(AppendResult {
            version: to_u64(version),
            position: to_u64(position),
            duplicate: true,
        }),
        (_, Some(version), Some(position), _, _, _) => Appended::Done(AppendResult {
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

/// The error of an append whose command id came with another fingerprint.
fn reused(stream: &StreamId, command: Option<CommandId>) -> Error {
    // NOTE: only an append with a command id can find one reused.
    command.map_or_else(
        || Error::Invalid("a command id reused without one".into()),
        |c| c.reused(stream),
    )
}

/// The first result of `command` on `stream`, if any; [`Error::CommandIdReused`] if it was
/// recorded with another fingerprint.
async fn command_row<'e>(
    exec: impl PgExecutor<'e>,
    stream: &StreamId,
    command: CommandId,
) -> Result<Option<AppendResult>> {
    let row: Option<(i64, i64, Option<Uuid>)> = sqlx::query_as(COMMAND_RESULT)
        .bind(&stream.category)
        .bind(&stream.id)
        .bind(command.id)
        .fetch_optional(exec)
        .await
        .map_err(backend)?;
    let Some((version, position, fingerprint)) = row else {
        return Ok(None);
    };
    if !command.matches(fingerprint.map(Fingerprint::from_uuid)) {
        return Err(command.reused(stream));
    }
    Ok(Some(AppendResult {
        version: to_u64(version),
        position: to_u64(position),
        duplicate: true,
    }))
}

impl PgEventStore {
    /// Appends inside the caller's open transaction (or on any connection), with the same
    /// statement as [`append`](EventAppender::append): the events commit or roll back with the
    /// caller's other writes, and subscribers see them once that transaction commits.
    ///
    /// A lost race on the version aborts the caller's transaction: it fails with
    /// [`Error::Conflict`] and the caller rolls back. Call [`wake`](crate::PgDatabase::wake)
    /// after the commit to wake subscribers at once.
    pub async fn append_in(
        &self,
        conn: &mut PgConnection,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        command: Option<CommandId>,
    ) -> Result<AppendResult> {
        if events.is_empty() {
            return Err(Error::Invalid("append_in needs at least one event".into()));
        }
        let cols = Columns::new(events)?;
        match run_append(conn, stream, expected_param(expected)?, &cols, command).await {
            Ok(Appended::Done(res)) => Ok(res),
            Ok(Appended::Reused) => Err(reused(stream, command)),
            Ok(Appended::Stale(Some(actual))) => Err(Error::Conflict {
                stream: stream.clone(),
                expected,
                actual,
            }),
            Ok(Appended::Stale(None)) => Err(self.conflict(stream, expected).await?),
            Err(err) => Err(self.refused(stream, expected, err).await?),
        }
    }

    /// The core error of an append the database refused inside a caller's transaction.
    async fn refused(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        err: sqlx::Error,
    ) -> Result<Error> {
        Ok(match duplicate(&err) {
            Some(Duplicate::StreamVersion) => self.conflict(stream, expected).await?,
            Some(Duplicate::EventId) => event_id_taken(stream),
            _ => backend(err),
        })
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
        command: Option<CommandId>,
    ) -> Result<AppendResult> {
        if let Some(command) = command
            && let Some(prev) = self.command_result(stream, command).await?
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

impl PgEventStore {
    /// One append on its own connection and in its own statement: the path of an ungrouped
    /// append, of a lone one on an idle store, and of a group's members when the group's
    /// statement was refused as a whole.
    pub(crate) async fn append_alone(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        cols: &Columns,
        command: Option<CommandId>,
    ) -> Result<AppendResult> {
        let expected_version = expected_param(expected)?;
        let inner = &self.db.inner;
        let mut retries = 0;
        loop {
            let mut conn = inner.appends.take(&inner.pool).await.map_err(backend)?;
            let ran = run_append(conn.conn(), stream, expected_version, cols, command).await;
            if ran.is_ok() {
                conn.done();
            }
            let err = match ran {
                Ok(Appended::Done(res)) => {
                    if !res.duplicate {
                        inner.notifier.appended();
                    }
                    return Ok(res);
                }
                Ok(Appended::Reused) => return Err(reused(stream, command)),
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
            if let Some(command) = command
                && let Some(prev) = self.command_result(stream, command).await?
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
}

/// The answer to an append of a group, from the group statement's outcome for it.
pub(crate) fn outcome(
    stream: &StreamId,
    expected: ExpectedVersion,
    command: Option<CommandId>,
    appended: Appended,
    actual: u64,
) -> Result<AppendResult> {
    match appended {
        Appended::Done(res) => Ok(res),
        Appended::Reused => Err(reused(stream, command)),
        Appended::Stale(_) => Err(Error::Conflict {
            stream: stream.clone(),
            expected,
            actual,
        }),
    }
}

#[async_trait]
impl EventAppender for PgEventStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        command: Option<CommandId>,
    ) -> Result<AppendResult> {
        if events.is_empty() {
            return self.append_nothing(stream, expected, command).await;
        }
        // NOTE: checked here, so that a group never meets a version it cannot bind.
        expected_param(expected)?;
        let cols = Columns::new(events)?;
        if self.db.inner.group.is_some() {
            return crate::group::append(self, stream, expected, cols, command).await;
        }
        self.append_alone(stream, expected, &cols, command).await
    }

    async fn command_result(
        &self,
        stream: &StreamId,
        command: CommandId,
    ) -> Result<Option<AppendResult>> {
        command_row(&self.db.inner.pool, stream, command).await
    }
}
