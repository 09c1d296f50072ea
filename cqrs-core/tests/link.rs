//! `testkit::FaultyLink` against a real TCP echo server on loopback.

use std::time::Duration;

use cqrs_core::testkit::FaultyLink;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An echo server; its address.
async fn echo() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// Sends `ping` and reads the answer within 300 ms: `Some(answer)`, or `None` when the link
/// closed the connection or said nothing.
async fn ping(s: &mut TcpStream) -> Option<Vec<u8>> {
    s.write_all(b"ping").await.ok()?;
    let mut buf = [0u8; 4];
    match tokio::time::timeout(Duration::from_millis(300), s.read_exact(&mut buf)).await {
        Ok(Ok(_)) => Some(buf.to_vec()),
        _ => None,
    }
}

#[tokio::test]
async fn the_link_relays_then_cuts_refuses_stalls_and_heals() {
    let link = FaultyLink::to(&echo().await).await.unwrap();
    let mut a = TcpStream::connect(link.addr()).await.unwrap();
    assert_eq!(ping(&mut a).await.as_deref(), Some(&b"ping"[..]), "relayed");

    assert_eq!(link.cut(), 1, "one connection was open");
    assert_eq!(ping(&mut a).await, None, "a cut connection is closed");
    let mut b = TcpStream::connect(link.addr()).await.unwrap();
    assert!(
        ping(&mut b).await.is_some(),
        "new connections go through after a cut"
    );

    link.down();
    assert_eq!(ping(&mut b).await, None, "down: open connections closed");
    let mut c = TcpStream::connect(link.addr()).await.unwrap();
    assert_eq!(ping(&mut c).await, None, "down: new ones closed");

    link.stall();
    let mut d = TcpStream::connect(link.addr()).await.unwrap();
    assert_eq!(ping(&mut d).await, None, "stalled: no answer");

    link.heal();
    let mut e = TcpStream::connect(link.addr()).await.unwrap();
    assert_eq!(ping(&mut e).await.as_deref(), Some(&b"ping"[..]), "healed");
}
