//! Leases between processes sharing a database file: an exclusive lock on a lock file beside
//! it, one per subscriber name (see [`SqliteLeases`]).

use std::collections::HashMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use cqrs_core::{Error, Lease, Leases, Result};

/// [`Leases`] for processes that share one SQLite file: the lease on a name is an exclusive
/// advisory lock (`flock` on Unix) on the file `<database>-lease-<name in hex>` beside the
/// database. Give them to a [`cqrs_core::Runner`] with `with_leases`, in every process that
/// runs the same subscribers: each subscriber then runs in one process at a time, and another
/// takes it over when that process stops.
///
/// What it guarantees:
/// - One holder per name at a time, across processes and within one (each acquisition opens
///   the lock file anew, and two opens of a file do not share its lock).
/// - A holder that exits, crashes or is killed frees the lease at once: the system drops its
///   locks with its open files. No timeout to wait out, and no clock involved.
/// - A lock cannot be lost while its holder lives, so no stale holder has to be fenced out,
///   with one exception: a lock file deleted (or replaced) by hand. Renewal checks that the
///   path still names the locked file, and reports the lease lost otherwise; the runner then
///   stops that subscriber after its current batch. A
///   [`SqliteTransactional::fenced_by`](crate::SqliteTransactional::fenced_by) these leases
///   checks the same inside each write transaction, and rolls back a batch whose lease is
///   lost ([`cqrs_core::Error::FencedOut`]).
///
/// Local disks only: advisory locks on network file systems are not reliable, as SQLite's own
/// locking is not.
///
/// ```no_run
/// # async fn f() -> cqrs_core::Result<()> {
/// use std::sync::Arc;
/// use cqrs_core::{Leases, Runner};
/// use cqrs_sqlite::SqliteDatabase;
///
/// let db = SqliteDatabase::open("sqlite:bank.db?mode=rwc").await?;
/// let leases = db.leases().expect("a database file");
/// let lease = leases.try_acquire("accounts").await?;
/// assert!(lease.is_some(), "no other process runs `accounts`");
/// let runner = Runner::new(Arc::new(db.events()), Arc::new(db.dead_letters()))
///     .with_leases(Arc::new(leases));
/// # Ok(()) }
/// ```
///
/// Cloning shares the leases; give the runner and `fenced_by` clones of one value.
#[derive(Debug, Clone)]
pub struct SqliteLeases {
    database: PathBuf,
    /// The lock files of the leases held through this value, by name.
    held: Arc<Mutex<HashMap<String, File>>>,
}

impl SqliteLeases {
    /// Leases beside the database file at `database`.
    pub fn beside(database: impl Into<PathBuf>) -> Self {
        SqliteLeases {
            database: database.into(),
            held: Arc::default(),
        }
    }

    /// Whether this value holds the lease on `name` now: taken through it, not dropped, and
    /// its lock file still the one at its path.
    pub fn holds(&self, name: &str) -> bool {
        let held = self.held.lock().expect("lease map");
        held.get(name)
            .is_some_and(|file| same_file(file, &self.lock_file(name)))
    }

    /// The lock file of the lease on `name`.
    pub fn lock_file(&self, name: &str) -> PathBuf {
        let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
        let mut path = self.database.clone().into_os_string();
        path.push(format!("-lease-{hex}"));
        path.into()
    }
}

#[async_trait]
impl Leases for SqliteLeases {
    async fn try_acquire(&self, name: &str) -> Result<Option<Box<dyn Lease>>> {
        let path = self.lock_file(name);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| lock_error(&path, e))?;
        match file.try_lock() {
            Ok(()) => {
                tracing::info!(lease = name, file = %path.display(), "lease acquired");
                // NOTE: a second handle on the same open file, to recognise it; the lock
                // belongs to the open file description, which the lease's handle keeps.
                let seen = file.try_clone().map_err(|e| lock_error(&path, e))?;
                self.held
                    .lock()
                    .expect("lease map")
                    .insert(name.to_owned(), seen);
                Ok(Some(Box::new(SqliteLease {
                    file,
                    path,
                    name: name.to_owned(),
                    held: self.held.clone(),
                })))
            }
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(lock_error(&path, e)),
        }
    }
}

fn lock_error(path: &Path, e: std::io::Error) -> Error {
    Error::backend(format!("lease lock file {}: {e}", path.display()))
}

/// A held lease: its open file holds the lock, until it is dropped.
#[derive(Debug)]
struct SqliteLease {
    file: File,
    path: PathBuf,
    name: String,
    held: Arc<Mutex<HashMap<String, File>>>,
}

impl SqliteLease {
    /// Forgets this lease in the shared map (if the entry is still this lease's file).
    fn forget(&self) {
        let mut held = self.held.lock().expect("lease map");
        if held
            .get(&self.name)
            .is_some_and(|f| same_open_file(f, &self.file))
        {
            held.remove(&self.name);
        }
    }
}

impl Drop for SqliteLease {
    fn drop(&mut self) {
        self.forget();
    }
}

#[async_trait]
impl Lease for SqliteLease {
    async fn renew(&mut self) -> Result<bool> {
        let held = same_file(&self.file, &self.path);
        if !held {
            tracing::warn!(lease = %self.name, file = %self.path.display(),
                "lease lost: its lock file was removed or replaced");
            self.forget();
        }
        Ok(held)
    }
}

/// Whether `path` still names the open `file` (another process would lock a new file there).
#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_file: &File, path: &Path) -> bool {
    path.exists()
}

/// Whether two handles are on the same file.
#[cfg(unix)]
fn same_open_file(a: &File, b: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (a.metadata(), b.metadata()) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_open_file(_a: &File, _b: &File) -> bool {
    true
}
