//! Group append: appends that arrive while another is being written wait together, and the next
//! writer writes them all in one transaction (one commit, one wait for the disk).
//!
//! Each append of a group keeps its own expected-version check, its own versions and positions
//! and its own command-id idempotency: an append that fails (a conflict, a command id reused, an
//! event id already stored) writes nothing and fails alone, its neighbours commit. A lone append
//! on an idle store is not delayed: it finds no one waiting and is written at once, as before.

use std::sync::Mutex;

use cqrs_core::{AppendResult, CommandId, Error, ExpectedVersion, NewEvent, Result, StreamId};
use sqlx::SqliteConnection;
use tokio::sync::oneshot;

use crate::append::{append_in, is_one_statement};
use crate::error::{Failure, retry_busy};
use crate::event_store::SqliteEventStore;

/// The most appends written in one transaction.
const MAX_GROUP: usize = 256;

/// An append waiting for its group.
pub(crate) struct Pending {
    pub(crate) stream: StreamId,
    pub(crate) expected: ExpectedVersion,
    pub(crate) events: Vec<NewEvent>,
    pub(crate) command: Option<CommandId>,
    pub(crate) reply: oneshot::Sender<Result<AppendResult>>,
}

/// The appends of a handle waiting to be written, and the turn to write them.
#[derive(Default)]
pub(crate) struct AppendQueue {
    pending: Mutex<Vec<Pending>>,
    turn: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for AppendQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppendQueue").finish_non_exhaustive()
    }
}

impl SqliteEventStore {
    /// Queues an append and writes it, alone or in the group of those waiting with it.
    pub(crate) async fn append_grouped(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        command: Option<CommandId>,
    ) -> Result<AppendResult> {
        let queue = &self.db.inner.appends;
        let (reply, answer) = oneshot::channel();
        queue.pending.lock().expect("queue lock").push(Pending {
            stream: stream.clone(),
            expected,
            events,
            command,
            reply,
        });
        loop {
            let turn = queue.turn.lock().await;
            let group: Vec<Pending> = {
                let mut pending = queue.pending.lock().expect("queue lock");
                let n = pending.len().min(MAX_GROUP);
                pending.drain(..n).collect()
            };
            match group.len() {
                // NOTE: an earlier writer took this append into its group and has answered.
                0 => {}
                1 => self.write_alone(group).await,
                _ => {
                    // NOTE: the group is written by a task of its own, so that it finishes and
                    // every member hears its fate even if this caller stops waiting.
                    let store = self.clone();
                    let written = tokio::spawn(async move { store.write_group(group).await });
                    match written.await {
                        Ok(()) => {}
                        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                        // NOTE: cancelled: the runtime is shutting down, and the group may or
                        // may not have committed. No answer is given, as for any append whose
                        // runtime stops mid-write; this task is about to be dropped too.
                        Err(_) => std::future::pending::<()>().await,
                    }
                }
            }
            drop(turn);
            // NOTE: more than MAX_GROUP waiting: this append may still be queued.
            let queued = queue.pending.lock().expect("queue lock").len();
            if queued == 0 || !answer.is_empty() {
                break;
            }
        }
        answer.await.map_err(|_| {
            Error::backend(
                "the append's group ended without an answer (its task panicked, or the runtime \
                 stopped): the append may or may not be stored",
            )
        })?
    }

    /// Writes a group of one, as an append without grouping.
    async fn write_alone(&self, mut group: Vec<Pending>) {
        let p = group.pop().expect("a group of one");
        let result = retry_busy!(&self.db.inner.config, async {
            self.try_append(&p.stream, p.expected, &p.events, p.command)
                .await
        });
        if result
            .as_ref()
            .is_ok_and(|r| r.position > 0 && !r.duplicate)
        {
            self.db.notify();
        }
        let _ = p.reply.send(result);
    }

    /// Writes the appends of `group` in one transaction and answers each.
    async fn write_group(&self, group: Vec<Pending>) {
        let results = retry_busy!(&self.db.inner.config, async {
            self.try_group(&group).await
        });
        match results {
            Ok(results) => {
                if results
                    .iter()
                    .any(|r| r.as_ref().is_ok_and(|r| r.position > 0 && !r.duplicate))
                {
                    self.db.notify();
                }
                for (p, r) in group.into_iter().zip(results) {
                    let _ = p.reply.send(r);
                }
            }
            Err(e) => {
                for p in group {
                    let _ = p.reply.send(Err(same_error(&e)));
                }
            }
        }
    }

    /// One try of a group: a `BEGIN IMMEDIATE` transaction with each append in turn. An append
    /// of one statement undoes itself when it fails (a statement is atomic); one of several
    /// statements runs inside a savepoint, rolled back when it fails.
    async fn try_group(&self, group: &[Pending]) -> Result<Vec<Result<AppendResult>>, Failure> {
        let mut tx = self.db.inner.writer.begin_with("BEGIN IMMEDIATE").await?;
        let mut out = Vec::with_capacity(group.len());
        for p in group {
            let alone = is_one_statement(&p.events, p.command);
            if !alone {
                sqlx::query("SAVEPOINT cqrs_append")
                    .execute(&mut *tx)
                    .await?;
            }
            let result = append_in(&mut tx, &p.stream, p.expected, &p.events, p.command).await;
            let result = match result {
                Ok(r) => Ok(r),
                Err(Failure::Core(e)) => {
                    if !alone {
                        rollback_to(&mut tx).await?;
                    }
                    Err(e)
                }
                Err(e) => return Err(e),
            };
            if !alone {
                sqlx::query("RELEASE cqrs_append").execute(&mut *tx).await?;
            }
            out.push(result);
        }
        tx.commit().await?;
        Ok(out)
    }
}

async fn rollback_to(tx: &mut SqliteConnection) -> Result<(), Failure> {
    sqlx::query("ROLLBACK TO cqrs_append").execute(tx).await?;
    Ok(())
}

/// The error of a whole group, for each of its members.
fn same_error(e: &Error) -> Error {
    match e {
        Error::Timeout(s) => Error::Timeout(s.clone()),
        other => Error::backend(format!("the append's group failed: {other}")),
    }
}
