//! A TCP link on loopback to a real server, whose failures a test decides.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const UP: u8 = 0;
const DOWN: u8 = 1;
const STALLED: u8 = 2;

/// A TCP relay on `127.0.0.1` in front of a real server (a database, a broker), for fault
/// tests: point the component under test at [`addr`](FaultyLink::addr) instead of the server,
/// and [`cut`](FaultyLink::cut) its connections, take the server [`down`](FaultyLink::down),
/// make it [`stall`](FaultyLink::stall), then [`heal`](FaultyLink::heal) the link. Other
/// clients of the server are not touched.
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// use cqrs_core::testkit::FaultyLink;
///
/// let link = FaultyLink::to("127.0.0.1:5672").await?;
/// let url = format!("amqp://guest:guest@{}/%2f", link.addr());
/// // ... start the relay on `url`, publish ...
/// link.down(); // connections closed, new ones refused
/// // ... the relay retries, the runner shows the error ...
/// link.heal();
/// # Ok(()) }
/// ```
pub struct FaultyLink {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    shared: Arc<Mutex<Open>>,
    accept: JoinHandle<()>,
}

/// The connections through the link.
#[derive(Default)]
struct Open {
    /// Forwarding tasks, one per connection.
    pipes: Vec<JoinHandle<()>>,
    /// Connections accepted while stalled, held without an answer.
    held: Vec<TcpStream>,
}

impl std::fmt::Debug for FaultyLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyLink")
            .field("addr", &self.addr)
            .field("mode", &self.mode.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

impl FaultyLink {
    /// Starts relaying connections to `target` (`host:port`).
    pub async fn to(target: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mode = Arc::new(AtomicU8::new(UP));
        let shared: Arc<Mutex<Open>> = Arc::default();
        let target = target.to_owned();
        let accept = tokio::spawn({
            let (mode, shared) = (mode.clone(), shared.clone());
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    match mode.load(Ordering::SeqCst) {
                        DOWN => continue, // dropped: closed at once
                        STALLED => {
                            shared.lock().expect("link").held.push(inbound);
                            continue;
                        }
                        _ => {}
                    }
                    let target = target.clone();
                    let pipe = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(&target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    shared.lock().expect("link").pipes.push(pipe);
                }
            }
        });
        Ok(FaultyLink {
            addr,
            mode,
            shared,
            accept,
        })
    }

    /// Where to connect instead of the server.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every connection through the link, as a network failure would; new ones are
    /// relayed as before. Returns how many were open.
    pub fn cut(&self) -> usize {
        let mut open = self.shared.lock().expect("link");
        let pipes = std::mem::take(&mut open.pipes);
        let live = pipes.iter().filter(|p| !p.is_finished()).count();
        for p in pipes {
            p.abort();
        }
        live
    }

    /// The server "goes down": connections are closed, new ones closed as soon as accepted.
    pub fn down(&self) {
        self.mode.store(DOWN, Ordering::SeqCst);
        self.cut();
    }

    /// The server stops answering: connections are closed, new ones accepted and left without
    /// a byte.
    pub fn stall(&self) {
        self.mode.store(STALLED, Ordering::SeqCst);
        self.cut();
    }

    /// The server is back: new connections are relayed (those held while stalled are closed).
    pub fn heal(&self) {
        self.mode.store(UP, Ordering::SeqCst);
        self.shared.lock().expect("link").held.clear();
    }
}

impl Drop for FaultyLink {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
