//! A NATS server of the test's own, a child process that can be killed and started again on the
//! same port and store: the broker side of a dropped connection, without touching the server
//! others use.

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The `nats-server` binary: `NATS_SERVER_BIN`, else the first on `PATH`, else where the
/// distribution's package puts it (`/usr/sbin` is not on every user's `PATH`).
pub fn nats_server_bin() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN") {
        return Some(bin.into());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("nats-server"))
        .chain([PathBuf::from("/usr/sbin/nats-server")])
        .find(|bin| bin.is_file())
}

/// A `nats-server -js` child process on a free local port with a store in a temporary
/// directory. Dropping it kills the process.
#[derive(Debug)]
pub struct NatsServer {
    bin: PathBuf,
    port: u16,
    child: Option<Child>,
    // NOTE: declared last, so that it is removed after `drop` killed the server writing to it.
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a server and waits until JetStream answers; `None` (skip) when there is no
    /// `nats-server` binary, a panic under CI=true.
    pub async fn start() -> Option<NatsServer> {
        let Some(bin) = nats_server_bin() else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "no nats-server binary under CI (set NATS_SERVER_BIN or put it on PATH)"
            );
            eprintln!("skipping: no nats-server binary (set NATS_SERVER_BIN or put it on PATH)");
            return None;
        };
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut server = NatsServer {
            bin,
            port: 0,
            child: None,
            dir,
        };
        // NOTE: the free port is only known free when it is asked for; a server that lost the
        // race to another process exits, and the next port is tried.
        let mut why = String::new();
        for _ in 0..3 {
            server.port = free_port();
            match server.run().await {
                Ok(()) => return Some(server),
                Err(e) => why = e,
            }
        }
        panic!("nats-server did not start: {why}\n{}", server.log());
    }

    /// The URL clients connect to.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server at once (SIGKILL): the kernel closes every client connection, and
    /// nothing is flushed or said goodbye.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and store, and waits until JetStream answers.
    pub async fn restart(&mut self) {
        self.kill();
        if let Err(why) = self.run().await {
            panic!("nats-server did not restart: {why}\n{}", self.log());
        }
    }

    /// What the server logged, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    async fn run(&mut self) -> Result<(), String> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .map_err(|e| e.to_string())?;
        let child = Command::new(&self.bin)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.path().join("store"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.bin.display()))?;
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!("exited with {status}"));
            }
            if self.jetstream_answers().await {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                self.kill();
                return Err("JetStream did not answer within 15 s".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether JetStream's API answers. A raw request, as the typed account info of newer
    /// clients does not parse what an older server sends.
    async fn jetstream_answers(&self) -> bool {
        let probe = async {
            let client = async_nats::ConnectOptions::new()
                .connection_timeout(Duration::from_secs(1))
                .connect(self.url())
                .await
                .ok()?;
            client.request("$JS.API.INFO", "".into()).await.ok()
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(2), probe).await,
            Ok(Some(_))
        )
    }
}

impl Drop for NatsServer {
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
