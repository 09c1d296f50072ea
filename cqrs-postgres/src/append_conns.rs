//! Connections kept for appends, out of the pool, so that an append is one round trip.
//!
//! sqlx pings every connection it takes back into the pool (a Sync exchange, unconditional), so
//! an append on a pooled connection costs the server a second round trip. These connections
//! skip it where it is safe: one goes back to the free list only after its statement completed;
//! one left mid-statement (a cancelled append) or by an error is dropped, which closes it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgPool, Postgres};
use sqlx::{Connection, PgConnection};

/// At most this many append connections live out of the pool (fewer if the pool is smaller).
const MAX_KEPT: usize = 8;

/// A kept connection idle for longer is pinged before use, as the pool does for its own.
const STALE_AFTER: Duration = Duration::from_millis(100);

/// The free list, and how many kept connections exist (free or in use).
pub(crate) struct AppendConns {
    free: Mutex<Free>,
    cap: usize,
}

struct Free {
    conns: Vec<(PgConnection, Instant)>,
    live: usize,
}

/// A connection for one append: kept (out of the pool) or pooled.
pub(crate) enum AppendConn<'a> {
    /// A kept connection; dropped (closed) unless [`done`](Self::done) hands it back.
    Kept(Option<PgConnection>, &'a AppendConns),
    /// A pooled one, for when all kept connections are in use; the pool checks it on release.
    Pooled(PoolConnection<Postgres>),
}

impl AppendConns {
    pub(crate) fn new(pool: &PgPool) -> Self {
        let pool_max = usize::try_from(pool.options().get_max_connections()).unwrap_or(1);
        AppendConns {
            free: Mutex::new(Free {
                conns: Vec::new(),
                live: 0,
            }),
            cap: MAX_KEPT.min(pool_max),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Free> {
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection for an append: a free kept one, a new kept one taken out of the pool (so it
    /// carries the pool's session settings, the `search_path` among them), or a pooled one.
    pub(crate) async fn take(&self, pool: &PgPool) -> Result<AppendConn<'_>, sqlx::Error> {
        loop {
            let (popped, open_new) = {
                let mut free = self.lock();
                match free.conns.pop() {
                    Some(c) => (Some(c), false),
                    None if free.live < self.cap => {
                        free.live += 1;
                        (None, true)
                    }
                    None => (None, false),
                }
            };
            if let Some((conn, since)) = popped {
                // NOTE: wrapped before the ping, so that a ping that fails or is cancelled
                // closes the connection and gives its count back.
                let mut kept = AppendConn::Kept(Some(conn), self);
                if since.elapsed() > STALE_AFTER && kept.conn().ping().await.is_err() {
                    // NOTE: cut while idle; a fresh one is taken on the next turn.
                    continue;
                }
                return Ok(kept);
            }
            if !open_new {
                return Ok(AppendConn::Pooled(pool.acquire().await?));
            }
            // NOTE: counted before the await, so a cancelled take must give the count back.
            let mut counted = Forget(Some(self));
            let conn = pool.acquire().await?.detach();
            counted.0 = None;
            return Ok(AppendConn::Kept(Some(conn), self));
        }
    }

    fn forget(&self) {
        self.lock().live -= 1;
    }
}

/// Gives back the count of a kept connection that was never made.
struct Forget<'a>(Option<&'a AppendConns>);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.0 {
            c.forget();
        }
    }
}

impl AppendConn<'_> {
    /// The connection to run the statement on.
    pub(crate) fn conn(&mut self) -> &mut PgConnection {
        match self {
            AppendConn::Kept(c, _) => c.as_mut().expect("taken only by done or drop"),
            AppendConn::Pooled(c) => c,
        }
    }

    /// The statement completed (the server answered): a kept connection is free again.
    pub(crate) fn done(mut self) {
        if let AppendConn::Kept(c, owner) = &mut self
            && let Some(conn) = c.take()
        {
            owner.lock().conns.push((conn, Instant::now()));
        }
    }
}

impl Drop for AppendConn<'_> {
    fn drop(&mut self) {
        // NOTE: still holding its connection means the append did not complete (cancelled,
        // or failed): its state is unknown, so it is closed rather than reused.
        if let AppendConn::Kept(c, owner) = self
            && c.take().is_some()
        {
            owner.forget();
        }
    }
}
