//! Leases between processes sharing a database file: an exclusive lock on a lock file beside
//! it, one per subscriber name (see [`SqliteLeases`]).

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

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
///   stops that subscriber after its current batch.
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
#[derive(Debug, Clone)]
pub struct SqliteLeases {
    database: PathBuf,
}

impl SqliteLeases {
    /// Leases beside the database file at `database`.
    pub fn beside(database: impl Into<PathBuf>) -> Self {
        SqliteLeases {
            database: database.into(),
        }
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
                Ok(Some(Box::new(SqliteLease {
                    file,
                    path,
                    name: name.to_owned(),
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
}

#[async_trait]
impl Lease for SqliteLease {
    async fn renew(&mut self) -> Result<bool> {
        let held = same_file(&self.file, &self.path);
        if !held {
            tracing::warn!(lease = %self.name, file = %self.path.display(),
                "lease lost: its lock file was removed or replaced");
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
