//! Wake-ups: a local signal on every append, and LISTEN/NOTIFY between processes.
//!
//! NOTE: the NOTIFY is sent after the append has committed, from a task that sends one for a
//! whole burst of appends, rather than inside the appending transaction. PostgreSQL serializes
//! the commits of notifying transactions (a database-wide lock is held until the commit is
//! flushed), which would take group commit away from concurrent writers. A process that dies
//! between its commit and its NOTIFY costs other processes one poll interval, nothing more.

use std::sync::Arc;
use std::time::Duration;

use cqrs_core::WakeUps;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// The least time between two NOTIFYs of one store.
const NOTIFY_SPACING: Duration = Duration::from_millis(3);

/// Sends and receives the "something was appended" signals of one store.
pub(crate) struct Notifier {
    wake: watch::Sender<u64>,
    pending: Arc<Notify>,
    tasks: Vec<JoinHandle<()>>,
}

impl Notifier {
    /// Starts the sending task and the listening task; they stop when this is dropped.
    pub(crate) fn start(pool: &PgPool, schema: &str) -> Self {
        let channel = format!("cqrs_events_{schema}");
        let wake = watch::channel(0u64).0;
        let pending = Arc::new(Notify::new());
        let tasks = vec![
            tokio::spawn(send_loop(pool.clone(), channel.clone(), pending.clone())),
            tokio::spawn(listen_loop(pool.clone(), channel, wake.clone())),
        ];
        Notifier {
            wake,
            pending,
            tasks,
        }
    }

    /// Signals an append of this process: at once to local subscribers, soon to others.
    pub(crate) fn appended(&self) {
        bump(&self.wake);
        self.pending.notify_one();
    }

    /// A receiver of the signals.
    pub(crate) fn subscribe(&self) -> WakeUps {
        self.wake.subscribe()
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn bump(wake: &watch::Sender<u64>) {
    wake.send_modify(|n| *n = n.wrapping_add(1));
}

async fn send_loop(pool: PgPool, channel: String, pending: Arc<Notify>) {
    loop {
        // NOTE: `Notify` keeps one permit, so the appends made while a NOTIFY is in flight
        // cost one more NOTIFY, not one each.
        pending.notified().await;
        // NOTE: the notification is no record to keep: its commit need not wait for the WAL
        // flush, so it does not compete with the appends' commits.
        let sql = "SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, '')";
        if let Err(e) = sqlx::query(sql).bind(&channel).execute(&pool).await {
            tracing::debug!(error = %e, "cannot send the append notification; other processes will poll");
        }
        // NOTE: under load a NOTIFY per round trip would cost each append a share of a
        // transaction; spacing them bounds that, at a few milliseconds of latency for other
        // processes (this process's subscribers were woken at once).
        tokio::time::sleep(NOTIFY_SPACING).await;
    }
}

/// Listens on its own connection, reconnecting with backoff. Every (re)connection and every
/// lost connection bumps the counter too, so subscribers read what they may have missed.
async fn listen_loop(pool: PgPool, channel: String, wake: watch::Sender<u64>) {
    let options = (*pool.connect_options())
        .clone()
        .application_name("cqrs-postgres-listener");
    drop(pool);
    let own = PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with(options);
    let mut backoff = Duration::from_millis(100);
    loop {
        let listener = async {
            let mut l = PgListener::connect_with(&own).await?;
            l.listen(&channel).await?;
            Ok::<_, sqlx::Error>(l)
        }
        .await;
        match listener {
            Ok(mut l) => {
                backoff = Duration::from_millis(100);
                bump(&wake);
                loop {
                    match l.try_recv().await {
                        Ok(_) => bump(&wake),
                        Err(e) => {
                            tracing::warn!(error = %e, "wake-up listener lost its connection; reconnecting");
                            bump(&wake);
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen for wake-ups; retrying"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
