//! A tansu broker of the test's own, a child process with its storage in a SQLite file, that can
//! be killed and started again on the same port and storage: a broker restart, without
//! touching the broker others use.

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The `tansu` binary: `TANSU_BIN`, else where `scripts/services` builds it
/// (`~/.cache/cqrs-tools/tansu/bin/tansu`), else the first on `PATH`.
pub fn tansu_bin() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("TANSU_BIN") {
        return Some(bin.into());
    }
    let cached = std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".cache/cqrs-tools/tansu/bin/tansu"));
    let path = std::env::var_os("PATH").unwrap_or_default();
    cached
        .into_iter()
        .chain(std::env::split_paths(&path).map(|dir| dir.join("tansu")))
        .find(|bin| bin.is_file())
}

/// A `tansu broker` child process on a free local port, its storage a SQLite file in a
/// temporary directory (tansu's `sqlite://` engine, which keeps what it stored across a
/// restart, unlike `memory://`). Dropping it kills the process.
#[derive(Debug)]
pub struct TansuServer {
    bin: PathBuf,
    port: u16,
    child: Option<Child>,
    // NOTE: declared last, so that it is removed after `drop` killed the broker writing to it.
    dir: tempfile::TempDir,
}

impl TansuServer {
    /// Starts a broker and waits until it answers; `None` (skip) when there is no `tansu`
    /// binary, a panic under CI=true.
    pub async fn start() -> Option<TansuServer> {
        let Some(bin) = tansu_bin() else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "no tansu binary under CI (run scripts/services, or set TANSU_BIN)"
            );
            eprintln!("skipping: no tansu binary (run scripts/services, or set TANSU_BIN)");
            return None;
        };
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut server = TansuServer {
            bin,
            port: 0,
            child: None,
            dir,
        };
        // NOTE: the free port is only known free when it is asked for; a broker that lost the
        // race to another process exits, and the next port is tried.
        let mut why = String::new();
        for _ in 0..3 {
            server.port = free_port();
            match server.run().await {
                Ok(()) => return Some(server),
                Err(e) => why = e,
            }
        }
        panic!("tansu did not start: {why}\n{}", server.log());
    }

    /// The address clients bootstrap from.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the broker at once (SIGKILL): the kernel closes every client connection, and
    /// nothing is flushed or said goodbye.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again on the same port and storage, and waits until it answers.
    pub async fn restart(&mut self) {
        self.kill();
        if let Err(why) = self.run().await {
            panic!("tansu did not restart: {why}\n{}", self.log());
        }
    }

    /// What the broker logged, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default()
    }

    async fn run(&mut self) -> Result<(), String> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("broker.log"))
            .map_err(|e| e.to_string())?;
        let url = format!("tcp://127.0.0.1:{}", self.port);
        // NOTE: tansu reads the path of a `sqlite://` URL as relative to its working directory.
        let storage = "sqlite://tansu.db";
        let child = Command::new(&self.bin)
            .current_dir(self.dir.path())
            .arg("broker")
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", storage])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.bin.display()))?;
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!("exited with {status}"));
            }
            if super::answers(&self.brokers(), Duration::from_secs(1))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                self.kill();
                return Err("it did not answer within 20 s".into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for TansuServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free local port")
        .port()
}
