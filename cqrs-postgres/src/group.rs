//! Group append: appends that arrive while commits are in flight are gathered and written by
//! one statement ([`APPEND_GROUP`]), so that they share one transaction and one commit.
//!
//! An append finding a free slot (fewer than [`IN_FLIGHT`] appends or groups running) and no one
//! waiting runs alone at once, as without grouping: a lone command on an idle store waits for
//! nothing. Otherwise it joins the queue. Whoever frees a slot while the queue holds appends
//! hands the slot to a flushing task, which takes up to [`MAX_GROUP`] of them (one per stream),
//! writes them in one statement, answers each after the commit, and goes on while appends wait.
//!
//! Each member keeps its own checks inside the statement: a stale expected version or a reused
//! command id leaves that member out and the others are written. A statement refused as a whole
//! (a writer outside the group won a race on a key) wrote nothing; its members are then
//! appended one by one, each getting its own answer. A group whose connection was lost may or
//! may not have committed: its members are looked up by event id, and each is answered as
//! written if its events are there and with the error if not.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use cqrs_core::{AppendResult, CommandId, Error, ExpectedVersion, Fingerprint, Result, StreamId};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::append::{Appended, Columns, expected_param, outcome};
use crate::database::PgDatabase;
use crate::error::{duplicate, is_connection_lost};
use crate::event_store::PgEventStore;
use crate::rows::to_u64;
use crate::sql::{APPEND_GROUP, EVENTS_BY_ID};

/// Appends or groups running at once. One: everything arriving meanwhile waits for the next
/// group. Measured against two and four (cqrs-bench W1 C=8), one gave the largest groups and
/// the best rates; with more slots the groups fragment into many small commits.
pub(crate) const IN_FLIGHT: usize = 1;

/// The most appends in one group.
const MAX_GROUP: usize = 64;

/// The most events in one group (a member above it still goes, alone).
const MAX_GROUP_EVENTS: usize = 4_096;

/// The most times a flusher yields to let appends on their way join its group.
const MAX_YIELDS: u32 = 8;

/// One append waiting for a group.
struct Member {
    stream: StreamId,
    expected: ExpectedVersion,
    cols: Columns,
    command: Option<CommandId>,
    reply: oneshot::Sender<Result<AppendResult>>,
}

/// The queue, and the slots taken.
#[derive(Default)]
struct State {
    queue: VecDeque<Member>,
    in_flight: usize,
    /// The mean size of recent groups, times 16: how many appends a flusher waits for.
    mean16: usize,
}

/// The group appender of a store (present when [`PgConfig::group_appends`] is on).
///
/// [`PgConfig::group_appends`]: crate::PgConfig::group_appends
#[derive(Default)]
pub(crate) struct Grouper {
    state: Mutex<State>,
}

impl Grouper {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many appends wait for a group (for tests).
    pub(crate) fn queued(&self) -> usize {
        self.lock().queue.len()
    }
}

fn grouper(db: &PgDatabase) -> &Grouper {
    db.inner.group.as_ref().expect("grouping is on")
}

/// A slot taken: given back, or handed to a flusher if appends wait, when dropped (also when
/// the append holding it is cancelled, so that the queue is never left without one).
struct Slot(PgDatabase);

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = grouper(&self.0).lock();
        if state.queue.is_empty() {
            state.in_flight -= 1;
            return;
        }
        drop(state);
        start_flusher(Slot(self.0.clone()));
    }
}

fn start_flusher(slot: Slot) {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn(flush(slot));
        }
        Err(_) => {
            // NOTE: no runtime left (it is shutting down): the waiting appends are answered
            // with the dropped reply, an error, and the slot is given back.
            {
                let mut state = grouper(&slot.0).lock();
                state.queue.clear();
                state.in_flight -= 1;
            }
            std::mem::forget(slot);
        }
    }
}

/// An append with grouping on: alone if a slot is free and no one waits, else in a group.
pub(crate) async fn append(
    store: &PgEventStore,
    stream: &StreamId,
    expected: ExpectedVersion,
    cols: Columns,
    command: Option<CommandId>,
) -> Result<AppendResult> {
    let g = grouper(&store.db);
    let mut cols = Some(cols);
    let queued = {
        let mut state = g.lock();
        if state.in_flight < IN_FLIGHT && state.queue.is_empty() {
            state.in_flight += 1;
            None
        } else {
            let (reply, rx) = oneshot::channel();
            state.queue.push_back(Member {
                stream: stream.clone(),
                expected,
                cols: cols.take().expect("not queued yet"),
                command,
                reply,
            });
            let start = state.in_flight < IN_FLIGHT;
            if start {
                state.in_flight += 1;
            }
            Some((rx, start))
        }
    };
    let Some((rx, start)) = queued else {
        let _slot = Slot(store.db.clone());
        let cols = cols.expect("not queued");
        return store.append_alone(stream, expected, &cols, command).await;
    };
    if start {
        start_flusher(Slot(store.db.clone()));
    }
    // NOTE: a dropped reply means the flusher died (a panic) or the runtime is going away;
    // the append may or may not have been written, as with a lost connection.
    rx.await.map_err(|_| {
        Error::backend(std::io::Error::other(
            "the group append was abandoned; it may or may not have been written",
        ))
    })?
}

/// Writes groups while appends wait, then gives the slot back.
async fn flush(slot: Slot) {
    let store = slot.0.events();
    let g = grouper(&slot.0);
    loop {
        // NOTE: under load the appends answered by the last group come back within moments;
        // a few yields let them join this one. Idle (the recent groups had one member) there
        // is no wait.
        for _ in 0..MAX_YIELDS {
            let enough = {
                let state = g.lock();
                state.queue.is_empty() || state.queue.len() * 16 >= state.mean16
            };
            if enough {
                break;
            }
            tokio::task::yield_now().await;
        }
        let members = take(g);
        if members.is_empty() {
            break;
        }
        write(&store, members).await;
    }
    drop(slot);
}

/// The next group: the oldest waiting appends, one per stream (a later one on the same stream
/// stays for the next group, keeping their order), up to the bounds.
fn take(g: &Grouper) -> Vec<Member> {
    let mut state = g.lock();
    let mut group: Vec<Member> = Vec::new();
    let mut rest = VecDeque::new();
    let mut events = 0;
    while let Some(m) = state.queue.pop_front() {
        let full = group.len() >= MAX_GROUP
            || (!group.is_empty() && events + m.cols.ids.len() > MAX_GROUP_EVENTS);
        if full || group.iter().any(|o| o.stream == m.stream) {
            rest.push_back(m);
            if full {
                break;
            }
            continue;
        }
        events += m.cols.ids.len();
        group.push(m);
    }
    rest.append(&mut state.queue);
    state.queue = rest;
    if !group.is_empty() {
        state.mean16 = (state.mean16 * 7 + group.len() * 16) / 8;
    }
    group
}

/// Writes one group and answers its members.
async fn write(store: &PgEventStore, members: Vec<Member>) {
    if let [_] = &members[..] {
        let m = members.into_iter().next().expect("one member");
        let res = store
            .append_alone(&m.stream, m.expected, &m.cols, m.command)
            .await;
        let _ = m.reply.send(res);
        return;
    }
    match run_group(store, &members).await {
        Ok(rows) => {
            let mut woke = false;
            for (m, (appended, actual)) in members.into_iter().zip(rows) {
                woke |= matches!(&appended, Appended::Done(r) if !r.duplicate);
                let _ = m
                    .reply
                    .send(outcome(&m.stream, m.expected, m.command, appended, actual));
            }
            if woke {
                store.db.inner.notifier.appended();
            }
        }
        Err(err) if is_connection_lost(&err) => answer_lost(store, members, err).await,
        Err(err) => {
            // NOTE: the statement was refused as a whole, so nothing of it was written: each
            // member goes again alone, and only the one the refusal was about fails.
            tracing::debug!(error = %err, duplicate = ?duplicate(&err), members = members.len(),
                "group append refused; appending its members one by one");
            for m in members {
                let res = store
                    .append_alone(&m.stream, m.expected, &m.cols, m.command)
                    .await;
                let _ = m.reply.send(res);
            }
        }
    }
}

type GroupRow = (
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<Uuid>,
);

/// Runs [`APPEND_GROUP`]: each member's outcome and its stream's version before.
async fn run_group(
    store: &PgEventStore,
    members: &[Member],
) -> std::result::Result<Vec<(Appended, u64)>, sqlx::Error> {
    let n = members.len();
    let (mut cats, mut ids, mut expected, mut commands, mut fingerprints) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let events: usize = members.iter().map(|m| m.cols.ids.len()).sum();
    let mut of = Vec::with_capacity(events);
    let mut cols = Columns {
        ids: Vec::with_capacity(events),
        types: Vec::with_capacity(events),
        schema_versions: Vec::with_capacity(events),
        payloads: Vec::with_capacity(events),
        metadata: Vec::with_capacity(events),
    };
    for (i, m) in members.iter().enumerate() {
        cats.push(m.stream.category.as_str());
        ids.push(m.stream.id.as_str());
        // NOTE: checked by `append` before the member was queued.
        expected.push(expected_param(m.expected).unwrap_or(None));
        commands.push(m.command.map(|c| c.id));
        fingerprints.push(m.command.and_then(|c| c.fingerprint.map(|f| f.as_uuid())));
        of.extend(std::iter::repeat_n(i as i64 + 1, m.cols.ids.len()));
        cols.ids.extend_from_slice(&m.cols.ids);
        cols.types.extend_from_slice(&m.cols.types);
        cols.schema_versions
            .extend_from_slice(&m.cols.schema_versions);
        cols.payloads.extend_from_slice(&m.cols.payloads);
        cols.metadata.extend_from_slice(&m.cols.metadata);
    }
    let inner = &store.db.inner;
    let mut conn = inner.appends.take(&inner.pool).await?;
    let rows: Vec<GroupRow> = sqlx::query_as(APPEND_GROUP)
        .bind(&cats)
        .bind(&ids)
        .bind(&expected)
        .bind(&commands)
        .bind(&fingerprints)
        .bind(&of)
        .bind(&cols.ids)
        .bind(&cols.types)
        .bind(&cols.schema_versions)
        .bind(&cols.payloads)
        .bind(&cols.metadata)
        .fetch_all(conn.conn())
        .await?;
    conn.done();
    if rows.len() != n {
        return Err(sqlx::Error::Protocol(format!(
            "the group append returned {} rows for {n} members",
            rows.len()
        )));
    }
    Ok(members
        .iter()
        .zip(rows)
        .map(|(m, row)| {
            let appended = match row {
                (_, _, _, Some(_), Some(_), fingerprint)
                    if !m
                        .command
                        .is_some_and(|c| c.matches(fingerprint.map(Fingerprint::from_uuid))) =>
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
            };
            (appended, to_u64(row.0))
        })
        .collect())
}

/// Answers the members of a group whose connection was lost mid-statement: the transaction
/// either committed whole or not at all, so each member's first event tells which.
///
/// NOTE: a connection cut by the server (`pg_terminate_backend`, a restart) ended its
/// transaction before the socket closed. Cut elsewhere (the network), the server may still be
/// running the statement; then, as for an append alone, an error does not prove absence.
async fn answer_lost(store: &PgEventStore, members: Vec<Member>, err: sqlx::Error) {
    let err = Arc::new(err);
    let ids: Vec<Uuid> = members.iter().flat_map(|m| m.cols.ids.clone()).collect();
    let found: std::result::Result<Vec<(Uuid, i64, i64)>, _> = sqlx::query_as(EVENTS_BY_ID)
        .bind(&ids)
        .fetch_all(&store.db.inner.pool)
        .await;
    let found = match found {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %e, "cannot tell whether a group append whose connection was lost was written");
            Vec::new()
        }
    };
    let mut woke = false;
    for m in members {
        let mine: Vec<&(Uuid, i64, i64)> = found
            .iter()
            .filter(|(id, ..)| m.cols.ids.contains(id))
            .collect();
        let res = if mine.len() == m.cols.ids.len() && !mine.is_empty() {
            woke = true;
            Ok(AppendResult {
                version: to_u64(mine.iter().map(|r| r.1).max().unwrap_or(0)),
                position: to_u64(mine.iter().map(|r| r.2).max().unwrap_or(0)),
                duplicate: false,
            })
        } else {
            Err(backend_shared(&err))
        };
        let _ = m.reply.send(res);
    }
    if woke {
        store.db.inner.notifier.appended();
    }
}

fn backend_shared(err: &Arc<sqlx::Error>) -> Error {
    Error::backend(err.clone())
}
