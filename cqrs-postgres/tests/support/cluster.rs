//! A throwaway PostgreSQL cluster of the machine's own binaries, in a temporary directory, on a
//! free port: for what the shared server cannot show (a hot standby, prepared transactions).
//!
//! The binaries come from `PG_BIN` or `/usr/lib/postgresql/15/bin`; a missing one fails the
//! test. PostgreSQL refuses to run as root, so as root every server command runs as the
//! `postgres` OS user (`runuser`), and the directory is handed to that user first.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use uuid::Uuid;

/// The directory of the PostgreSQL binaries.
fn bin_dir() -> PathBuf {
    std::env::var_os("PG_BIN").map_or_else(|| "/usr/lib/postgresql/15/bin".into(), PathBuf::from)
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("run id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// A free TCP port on the loopback interface (free when asked: good enough for tests).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The temporary directory of a cluster and its standbys, removed when the last server stops.
struct Dir {
    path: PathBuf,
    root: bool,
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

impl Dir {
    fn new() -> Arc<Self> {
        let path =
            std::env::temp_dir().join(format!("cqrs-pg-cluster-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).expect("create the cluster directory");
        let root = is_root();
        if root {
            let status = Command::new("chown")
                .arg("postgres:postgres")
                .arg(&path)
                .status()
                .expect("run chown");
            assert!(
                status.success(),
                "chown of {} to postgres failed",
                path.display()
            );
        }
        Arc::new(Dir { path, root })
    }

    /// Runs the PostgreSQL program `program` with `args`, as `postgres` when root; panics with
    /// its output (and `log`'s tail, if given) when it fails.
    fn run(&self, program: &str, args: &[&str], log: Option<&Path>) {
        let bin = bin_dir().join(program);
        let mut cmd = if self.root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&bin);
            c
        } else {
            Command::new(&bin)
        };
        // NOTE: the postgres user may not be allowed into the test's working directory.
        let out = cmd
            .args(args)
            .current_dir(&self.path)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        if !out.status.success() {
            let log = log
                .and_then(|l| std::fs::read_to_string(l).ok())
                .unwrap_or_default();
            panic!(
                "{program} {args:?} failed: {}\n{}\n{}\nserver log:\n{log}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// One running server of a throwaway cluster, stopped (immediately) when dropped.
pub struct Server {
    dir: Arc<Dir>,
    data: PathBuf,
    log: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl Server {
    /// A new primary: `initdb` (trust authentication, user `postgres`), started with room for
    /// prepared transactions.
    pub fn primary() -> Self {
        let dir = Dir::new();
        let data = dir.path.join("primary");
        let data_s = data.to_str().expect("utf-8 path");
        dir.run(
            "initdb",
            &[
                "-D",
                data_s,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            None,
        );
        Self::start(dir, data, "primary")
    }

    /// A hot standby of this server: `pg_basebackup -R`, streaming from it.
    pub fn standby(&self) -> Self {
        let data = self
            .dir
            .path
            .join(format!("standby-{}", Uuid::new_v4().simple()));
        let port = self.port.to_string();
        self.dir.run(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-D",
                data.to_str().expect("utf-8 path"),
                "-R",
                "--checkpoint=fast",
                "-X",
                "stream",
                "--no-sync",
            ],
            None,
        );
        Self::start(self.dir.clone(), data, "standby")
    }

    fn start(dir: Arc<Dir>, data: PathBuf, name: &str) -> Self {
        let port = free_port();
        let log = dir.path.join(format!("{name}-{port}.log"));
        let options = format!(
            "-c port={port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{}' \
             -c max_prepared_transactions=10 -c fsync=off -c shared_buffers=16MB",
            dir.path.display()
        );
        dir.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().expect("utf-8 path"),
                "-l",
                log.to_str().expect("utf-8 path"),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
            Some(&log),
        );
        Server {
            dir,
            data,
            log,
            port,
        }
    }

    /// The URL of database `db` on this server.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let data = self.data.to_str().expect("utf-8 path").to_owned();
        let bin = bin_dir().join("pg_ctl");
        let mut cmd = if self.dir.root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&bin);
            c
        } else {
            Command::new(&bin)
        };
        let _ = cmd
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .current_dir(&self.dir.path)
            .output();
    }
}
