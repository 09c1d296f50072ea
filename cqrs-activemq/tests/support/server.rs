//! An ActiveMQ broker of the test's own, started by `scripts/activemq/start` on free ports with
//! a state directory in a temporary directory: it can be killed and started again on the same
//! ports and store without touching the broker the other tests use.

use std::path::PathBuf;
use std::process::Command;

/// A broker of the test's own. Dropping it kills the broker.
#[derive(Debug)]
pub struct ActiveMqServer {
    stomp: u16,
    openwire: u16,
    // NOTE: declared last, so that it is removed after `drop` killed the broker writing to it.
    dir: tempfile::TempDir,
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts/activemq")
        .join(name)
}

impl ActiveMqServer {
    /// Starts a broker and waits until STOMP answers; `None` (skip) without the `activemq`
    /// package, a panic under CI=true.
    pub fn start() -> Option<ActiveMqServer> {
        if !std::path::Path::new("/usr/share/activemq/bin/activemq.jar").is_file() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "no ActiveMQ under CI (apt-get install activemq)"
            );
            eprintln!("skipping: no ActiveMQ (apt-get install activemq)");
            return None;
        }
        let server = ActiveMqServer {
            stomp: free_port(),
            openwire: free_port(),
            dir: tempfile::tempdir().expect("a temporary directory"),
        };
        server.run();
        Some(server)
    }

    /// The URL clients connect to.
    pub fn url(&self) -> cqrs_activemq::StompUrl {
        format!("stomp://127.0.0.1:{}", self.stomp)
            .parse()
            .expect("a STOMP URL")
    }

    /// Kills the broker at once (SIGKILL): the kernel closes every client connection.
    pub fn kill(&self) {
        let status = Command::new(script("stop"))
            .arg("--kill")
            .arg(self.dir.path())
            .status()
            .expect("scripts/activemq/stop runs");
        assert!(status.success(), "scripts/activemq/stop --kill");
    }

    /// Starts the broker again on the same ports and store.
    pub fn restart(&self) {
        self.kill();
        self.run();
    }

    /// What the broker logged, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("data/activemq.log")).unwrap_or_default()
    }

    fn run(&self) {
        let out = Command::new(script("start"))
            .arg(self.dir.path())
            .env("ACTIVEMQ_STOMP_PORT", self.stomp.to_string())
            .env("ACTIVEMQ_OPENWIRE_PORT", self.openwire.to_string())
            .env("ACTIVEMQ_HEAP", "128m")
            .output()
            .expect("scripts/activemq/start runs");
        assert!(
            out.status.success(),
            "ActiveMQ did not start: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }
}

impl Drop for ActiveMqServer {
    fn drop(&mut self) {
        let _ = Command::new(script("stop"))
            .arg("--kill")
            .arg(self.dir.path())
            .status();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free local port")
        .port()
}
