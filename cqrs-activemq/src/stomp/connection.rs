//! One STOMP connection: frames out, frames in, receipts awaited. Messages that arrive while a
//! receipt is awaited are kept for [`Connection::next_message`], so one connection serves a
//! subscription and the sends of its dead letters.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use cqrs_core::{Error, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Frame, StompUrl};

/// How long connecting (TCP and the CONNECTED frame) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A STOMP 1.2 connection with heart-beats off: a dead peer shows as a closed socket or as the
/// timeouts of whoever waits (the relay's attempt limit).
#[derive(Debug)]
pub(crate) struct Connection {
    stream: TcpStream,
    read: Vec<u8>,
    pending: VecDeque<Frame>,
    next_receipt: u64,
}

impl Connection {
    /// Connects and logs in.
    pub(crate) async fn open(url: &StompUrl) -> Result<Connection> {
        tokio::time::timeout(CONNECT_TIMEOUT, Self::handshake(url))
            .await
            .unwrap_or_else(|_| {
                Err(Error::Timeout(format!(
                    "STOMP broker at {url} did not answer within {CONNECT_TIMEOUT:?}"
                )))
            })
    }

    async fn handshake(url: &StompUrl) -> Result<Connection> {
        let stream = TcpStream::connect(url.address())
            .await
            .map_err(|e| Error::backend(format!("cannot connect to {url}: {e}")))?;
        let _ = stream.set_nodelay(true);
        let mut conn = Connection {
            stream,
            read: Vec::with_capacity(64 * 1024),
            pending: VecDeque::new(),
            next_receipt: 0,
        };
        let mut connect = Frame::new("CONNECT")
            .header("accept-version", "1.2")
            .header("host", url.host_header())
            .header("heart-beat", "0,0");
        if let Some((login, passcode)) = url.login() {
            connect = connect.header("login", login).header("passcode", passcode);
        }
        conn.write(&[connect]).await?;
        let answer = conn.read_frame().await?;
        if answer.command != "CONNECTED" {
            return Err(Error::backend(format!(
                "STOMP broker at {url} answered {} to CONNECT",
                answer.command
            )));
        }
        Ok(conn)
    }

    /// Writes `frames` in one go.
    pub(crate) async fn write(&mut self, frames: &[Frame]) -> Result<()> {
        let mut out = Vec::with_capacity(frames.iter().map(|f| f.body.len() + 512).sum());
        for f in frames {
            f.encode(&mut out);
        }
        self.stream
            .write_all(&out)
            .await
            .map_err(|e| Error::backend(format!("STOMP write failed: {e}")))
    }

    /// Writes `frames`, each asking for a receipt, and returns once the broker sent every
    /// receipt. An ERROR frame from the broker is the error (and the broker closes the
    /// connection after it).
    pub(crate) async fn write_with_receipts(&mut self, mut frames: Vec<Frame>) -> Result<()> {
        let mut awaited = HashSet::with_capacity(frames.len());
        for f in &mut frames {
            self.next_receipt += 1;
            let id = format!("r{}", self.next_receipt);
            f.headers.push(("receipt".to_owned(), id.clone()));
            awaited.insert(id);
        }
        self.write(&frames).await?;
        while !awaited.is_empty() {
            let frame = self.read_frame().await?;
            match frame.command.as_str() {
                "RECEIPT" => {
                    if let Some(id) = frame.get("receipt-id") {
                        awaited.remove(id);
                    }
                }
                "MESSAGE" => self.pending.push_back(frame),
                _ => {}
            }
        }
        Ok(())
    }

    /// The next MESSAGE frame (one kept while a receipt was awaited comes first). Cancel-safe:
    /// what was read stays in the buffer.
    pub(crate) async fn next_message(&mut self) -> Result<Frame> {
        if let Some(frame) = self.pending.pop_front() {
            return Ok(frame);
        }
        loop {
            let frame = self.read_frame().await?;
            if frame.command == "MESSAGE" {
                return Ok(frame);
            }
        }
    }

    /// Says goodbye and waits (briefly) for the broker's receipt, so that it has seen what was
    /// written before.
    pub(crate) async fn close(mut self) {
        let bye = self.write_with_receipts(vec![Frame::new("DISCONNECT")]);
        let _ = tokio::time::timeout(Duration::from_secs(2), bye).await;
    }

    async fn read_frame(&mut self) -> Result<Frame> {
        loop {
            if let Some(frame) = Frame::parse(&mut self.read)? {
                if frame.command == "ERROR" {
                    return Err(broker_error(&frame));
                }
                return Ok(frame);
            }
            self.read.reserve(16 * 1024);
            let n = self
                .stream
                .read_buf(&mut self.read)
                .await
                .map_err(|e| Error::backend(format!("STOMP read failed: {e}")))?;
            if n == 0 {
                return Err(Error::backend("the STOMP broker closed the connection"));
            }
        }
    }
}

fn broker_error(frame: &Frame) -> Error {
    let message = frame.get("message").unwrap_or("no message");
    let detail = String::from_utf8_lossy(&frame.body);
    let detail = detail.lines().next().unwrap_or_default();
    Error::backend(
        format!("the STOMP broker refused: {message} {detail}")
            .trim_end()
            .to_owned(),
    )
}
