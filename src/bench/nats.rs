//! Just enough of the NATS client protocol for `bench peers` to measure
//! request/reply against a real `nats-server`: `CONNECT`, `SUB`, `PUB` with
//! a reply subject, `MSG`, `PING`/`PONG`.
//!
//! The requester works as the official clients do: one connection, one
//! wildcard subscription on an inbox, each request published with its own
//! reply subject under it, answers matched by that subject, any number in
//! flight. The responder echoes every message to its reply subject. Both
//! write everything queued at once (as our own writers do), so the peer is
//! measured at its best, not handicapped by a syscall per message.

use bytes::BytesMut;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::{mpsc, oneshot};

const INBOX: &str = "_INBOX.meshplay-bench";

/// One delivered message: its subject, reply subject and payload.
struct Msg {
    subject: String,
    reply: Option<String>,
    payload: Vec<u8>,
}

/// A connection: lines and payloads in, a queue of bytes out.
struct Conn {
    reader: BufReader<OwnedReadHalf>,
    out: mpsc::UnboundedSender<Vec<u8>>,
}

impl Conn {
    async fn open(addr: &str) -> Result<Conn, String> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("nats {addr}: {e}"))?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let (read, mut write) = tcp.into_split();
        let (out, mut queue) = mpsc::unbounded_channel::<Vec<u8>>();
        tokio::spawn(async move {
            let mut batch = BytesMut::new();
            while let Some(first) = queue.recv().await {
                batch.extend_from_slice(&first);
                while let Ok(more) = queue.try_recv() {
                    batch.extend_from_slice(&more);
                }
                if write.write_all(&batch).await.is_err() {
                    return;
                }
                batch.clear();
            }
        });
        let _ = out.send(br#"CONNECT {"verbose":false,"pedantic":false,"echo":false}"#.to_vec());
        let _ = out.send(b"\r\n".to_vec());
        Ok(Conn {
            reader: BufReader::new(read),
            out,
        })
    }

    fn send(&self, bytes: Vec<u8>) {
        let _ = self.out.send(bytes);
    }

    /// Sends `PING` and reads up to its `PONG`: everything sent before is
    /// then in force on the server (subscriptions included).
    async fn ready(&mut self) -> Result<(), String> {
        self.send(b"PING\r\n".to_vec());
        loop {
            match self.read().await? {
                Some(Read::Pong) => return Ok(()),
                Some(Read::Msg(_)) => {}
                None => return Err("the server closed the connection".into()),
            }
        }
    }

    /// The next message; `None` at the end.
    async fn next(&mut self) -> Result<Option<Msg>, String> {
        loop {
            match self.read().await? {
                Some(Read::Msg(msg)) => return Ok(Some(msg)),
                Some(Read::Pong) => {}
                None => return Ok(None),
            }
        }
    }

    /// The next message or `PONG`, answering pings on the way; `None` at
    /// the end.
    async fn read(&mut self) -> Result<Option<Read>, String> {
        let mut line = String::new();
        loop {
            line.clear();
            if self
                .reader
                .read_line(&mut line)
                .await
                .map_err(|e| e.to_string())?
                == 0
            {
                return Ok(None);
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.first().copied() {
                Some("PING") => self.send(b"PONG\r\n".to_vec()),
                Some("PONG") => return Ok(Some(Read::Pong)),
                Some("-ERR") => return Err(line.trim().to_owned()),
                Some("MSG") => {
                    let (subject, reply, len) = match words[1..] {
                        [subject, _sid, len] => (subject, None, len),
                        [subject, _sid, reply, len] => (subject, Some(reply), len),
                        _ => return Err(format!("bad MSG line: {line:?}")),
                    };
                    let len: usize = len.parse().map_err(|_| format!("bad length: {line:?}"))?;
                    let mut payload = vec![0u8; len + 2];
                    self.reader
                        .read_exact(&mut payload)
                        .await
                        .map_err(|e| e.to_string())?;
                    payload.truncate(len);
                    return Ok(Some(Read::Msg(Msg {
                        subject: subject.to_owned(),
                        reply: reply.map(str::to_owned),
                        payload,
                    })));
                }
                _ => {} // INFO, +OK
            }
        }
    }
}

/// What [`Conn::read`] got.
enum Read {
    Msg(Msg),
    Pong,
}

fn publish(subject: &str, reply: Option<&str>, payload: &[u8]) -> Vec<u8> {
    let head = match reply {
        Some(r) => format!("PUB {subject} {r} {}\r\n", payload.len()),
        None => format!("PUB {subject} {}\r\n", payload.len()),
    };
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(payload);
    bytes.extend_from_slice(b"\r\n");
    bytes
}

/// Echoes every message on `subject` back to its reply subject, until the
/// connection ends.
pub async fn serve_echo(addr: &str, subject: &str) -> Result<(), String> {
    let mut conn = Conn::open(addr).await?;
    conn.send(format!("SUB {subject} 1\r\n").into_bytes());
    conn.ready().await?;
    tokio::spawn(async move {
        while let Ok(Some(msg)) = conn.next().await {
            if let Some(reply) = &msg.reply {
                conn.send(publish(reply, None, &msg.payload));
            }
        }
    });
    Ok(())
}

type Waiting = Arc<Mutex<HashMap<u64, oneshot::Sender<Vec<u8>>>>>;

/// A requester: any number of requests in flight on one connection.
pub struct Requester {
    out: mpsc::UnboundedSender<Vec<u8>>,
    waiting: Waiting,
    next: AtomicU64,
}

impl Requester {
    /// Connects and subscribes to its inbox.
    ///
    /// Fails when the server cannot be reached.
    pub async fn connect(addr: &str) -> Result<Requester, String> {
        let mut conn = Conn::open(addr).await?;
        conn.send(format!("SUB {INBOX}.* 1\r\n").into_bytes());
        conn.ready().await?;
        let waiting: Waiting = Arc::default();
        let out = conn.out.clone();
        let answers = Arc::clone(&waiting);
        tokio::spawn(async move {
            while let Ok(Some(msg)) = conn.next().await {
                let id = msg
                    .subject
                    .rsplit('.')
                    .next()
                    .and_then(|n| n.parse::<u64>().ok());
                let to = id.and_then(|id| answers.lock().unwrap().remove(&id));
                if let Some(to) = to {
                    let _ = to.send(msg.payload);
                }
            }
            answers.lock().unwrap().clear();
        });
        Ok(Requester {
            out,
            waiting,
            next: AtomicU64::new(1),
        })
    }

    /// Publishes `payload` to `subject` and waits for the reply.
    ///
    /// Fails when the connection ends first.
    pub async fn request(&self, subject: &str, payload: &[u8]) -> Result<Vec<u8>, String> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().unwrap().insert(id, tx);
        let reply = format!("{INBOX}.{id}");
        self.out
            .send(publish(subject, Some(&reply), payload))
            .map_err(|_| "connection closed".to_string())?;
        rx.await.map_err(|_| "connection closed".to_string())
    }
}
