//! Wake-ups for commits made by other connections to the same file: other processes, or other
//! handles opened in this one.

use std::sync::Weak;
use std::time::Duration;

use sqlx::SqliteConnection;
use tokio::task::AbortHandle;

use crate::database::Inner;

/// Starts a task that polls `PRAGMA data_version` on a connection of its own and wakes this
/// handle's subscribers when it changes. It ends when the handle is dropped or closed.
///
/// NOTE: the data version also moves on this handle's own commits (made on another
/// connection); the extra wake-up only costs subscribers an empty read.
pub(crate) fn spawn(
    inner: Weak<Inner>,
    mut conn: SqliteConnection,
    every: Duration,
) -> AbortHandle {
    tokio::spawn(async move {
        let mut last = None;
        loop {
            let version = sqlx::query_scalar::<_, i64>("PRAGMA data_version")
                .fetch_one(&mut conn)
                .await;
            let Some(inner) = inner.upgrade() else { return };
            match version {
                Ok(v) => {
                    if last.is_some_and(|l| l != v) {
                        inner.wake.send_modify(|n| *n += 1);
                    }
                    last = Some(v);
                }
                Err(e) => tracing::debug!(error = %e, "cannot read the data version"),
            }
            drop(inner);
            tokio::time::sleep(every).await;
        }
    })
    .abort_handle()
}
