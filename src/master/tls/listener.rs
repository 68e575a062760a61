//! A listener that hands axum connections whose TLS handshake is done.
//!
//! Handshakes run on their own tasks (at most [`HANDSHAKES`] at once, each
//! within [`HANDSHAKE_TIMEOUT`]), so a slow or silent client never holds up
//! the next one. A client that speaks plain HTTP to a TLS port gets a 400
//! that says so instead of a broken handshake it cannot read.

use super::ServerTls;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::server::TlsStream;

/// How long a client may take to finish its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; more connections wait to be accepted.
pub const HANDSHAKES: usize = 256;

/// What a plaintext HTTP client is told, as an API error.
fn plaintext_answer() -> String {
    let body = r#"{"error":{"code":"tls_required","message":"this port speaks TLS: use https:// or wss:// and the master's CA"}}"#;
    format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Accepted and handshaken connections, for `axum::serve`.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl TlsListener {
    /// Serves TLS on `tcp`: accepting starts now. `what` names the port in
    /// logs.
    pub fn new(tcp: TcpListener, tls: &ServerTls, what: &'static str) -> Self {
        // Only a socket that is not one has no address: `tcp` is bound.
        let local = tcp
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, ready) = mpsc::channel(64);
        let acceptor = tls.acceptor();
        let accepting = tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(HANDSHAKES));
            loop {
                let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                    return;
                };
                let (tcp, peer) = match tcp.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors, most likely: wait for
                        // some to be given back rather than spin.
                        tracing::warn!("{what}: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    let _ = tcp.set_nodelay(true);
                    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, accept(acceptor, tcp));
                    match handshake.await {
                        Ok(Ok(Some(tls))) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Ok(None)) => {
                            tracing::debug!(%peer, "{what}: a plaintext client was told to use TLS")
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, "{what}: TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "{what}: TLS handshake timed out"),
                    }
                });
            }
        });
        TlsListener {
            ready,
            local,
            accepting,
        }
    }
}

/// The handshake, or `None` when the client spoke plain HTTP (and was
/// answered).
async fn accept(
    acceptor: tokio_rustls::TlsAcceptor,
    mut tcp: TcpStream,
) -> std::io::Result<Option<TlsStream<TcpStream>>> {
    let mut first = [0u8; 1];
    // A TLS client opens with a handshake record (0x16); an HTTP one with
    // a method name.
    if tcp.peek(&mut first).await? == 1 && first[0].is_ascii_uppercase() {
        tcp.write_all(plaintext_answer().as_bytes()).await?;
        let _ = tcp.shutdown().await;
        return Ok(None);
    }
    acceptor.accept(tcp).await.map(Some)
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accepting task is gone only when this listener is.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_plaintext_answer_says_its_length() {
        let text = super::plaintext_answer();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        serde_json::from_str::<serde_json::Value>(body).unwrap();
    }
}
