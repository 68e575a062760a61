//! One listening port of the master (the API's or the hub's): which
//! connections it takes, how long each may stay silent, and hyper serving
//! the ones it keeps.
//!
//! A port that takes every connection and waits on each as long as it
//! likes belongs to whoever opens the most: 2,000 silent sockets, or ones
//! that send a byte a second, used to hold a task and a file descriptor
//! each for good, and with TLS 256 of them held every handshake slot. So
//! each port counts its connections, in all and per peer address
//! ([`PortLimits`]): past either cap a new connection is closed at once
//! (it costs an accept and a close, and waits behind nobody). A connection
//! must finish its request's headers within the header timeout, and an
//! HTTP/1 connection idle between requests is closed after the same time;
//! an HTTP/2 one must answer pings. With TLS, handshakes in progress are
//! capped in all and per peer, and each must finish within
//! [`PortLimits::handshake_timeout`].
//!
//! Upgraded connections (the hub's WebSockets, the binary stream) and long
//! answers (the console's event stream) are not idle in hyper's sense:
//! their own heartbeats and bounds apply.

use super::tls::{ServerTls, listener::handshake};
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tower_service::Service;

/// What one port takes. Every field has a `serve` flag.
#[derive(Debug, Clone)]
pub struct PortLimits {
    /// Connections open at once, in all (`--max-connections`).
    pub max_connections: usize,
    /// Connections open at once from one peer address
    /// (`--max-connections-per-peer`).
    pub max_per_peer: usize,
    /// How long a client may take to send a request's headers, and how
    /// long an HTTP/1 connection may sit idle between requests
    /// (`--header-timeout-ms`).
    pub header_timeout: Duration,
    /// How long a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// TLS handshakes in progress at once, in all.
    pub max_handshakes: usize,
    /// TLS handshakes in progress at once from one peer address.
    pub max_handshakes_per_peer: usize,
}

impl Default for PortLimits {
    fn default() -> Self {
        PortLimits {
            max_connections: 8192,
            max_per_peer: 512,
            header_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            max_handshakes: 256,
            max_handshakes_per_peer: 16,
        }
    }
}

/// What a port serves: the API's or the hub's router.
pub(super) trait App:
    Service<
        axum::extract::Request,
        Response = axum::response::Response,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> App for S where
    S: Service<
            axum::extract::Request,
            Response = axum::response::Response,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + Sync
        + 'static
{
}

/// Counts of what is open, in all and by peer address; one for the
/// connections of a port, one for its handshakes.
#[derive(Default)]
struct Counts {
    open: Mutex<Open>,
}

/// What a [`Counts`] holds: in all, and by peer address.
#[derive(Default)]
struct Open {
    total: usize,
    by_peer: HashMap<IpAddr, usize>,
}

/// One place in a [`Counts`], given back when dropped.
struct Place {
    counts: Arc<Counts>,
    peer: IpAddr,
}

impl Counts {
    /// A place for `peer`, unless it already has `per_peer` or all have
    /// `total`.
    fn take(self: &Arc<Self>, peer: IpAddr, total: usize, per_peer: usize) -> Option<Place> {
        let mut open = self.open.lock().unwrap();
        let mine = open.by_peer.get(&peer).copied().unwrap_or(0);
        if open.total >= total || mine >= per_peer {
            return None;
        }
        open.total += 1;
        open.by_peer.insert(peer, mine + 1);
        Some(Place {
            counts: Arc::clone(self),
            peer,
        })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut open = self.counts.open.lock().unwrap();
        open.total -= 1;
        if let Some(n) = open.by_peer.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                open.by_peer.remove(&self.peer);
            }
        }
    }
}

/// A port being served.
struct Port<A> {
    what: &'static str,
    app: A,
    limits: PortLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    connections: Arc<Counts>,
    handshakes: Arc<Counts>,
    /// Connections closed at once for a cap, for the log's sake.
    refused: AtomicU64,
}

/// Serves `app` on `listener` (over TLS when `tls` is given) within
/// `limits` until `stop` completes; then stops accepting and lets open
/// connections finish their requests.
pub(super) fn serve<A: App>(
    what: &'static str,
    listener: TcpListener,
    tls: Option<&ServerTls>,
    app: A,
    limits: PortLimits,
    stop: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let port = Arc::new(Port {
        what,
        app,
        limits,
        tls: tls.map(ServerTls::acceptor),
        connections: Arc::default(),
        handshakes: Arc::default(),
        refused: AtomicU64::new(0),
    });
    tokio::spawn(async move {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut stop = std::pin::pin!(stop);
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = &mut stop => break,
            };
            match accepted {
                Ok((tcp, peer)) => Arc::clone(&port).admit(tcp, peer, &graceful),
                Err(e) => {
                    // Out of file descriptors, most likely: wait for some
                    // to be given back rather than spin.
                    tracing::warn!("{what}: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        drop(listener);
        graceful.shutdown().await;
    })
}

impl<A: App> Port<A> {
    /// Takes `tcp` from `peer` if the caps allow, and serves it on a task
    /// of its own.
    fn admit(
        self: Arc<Self>,
        tcp: TcpStream,
        peer: SocketAddr,
        graceful: &hyper_util::server::graceful::GracefulShutdown,
    ) {
        let Some(place) = self.connections.take(
            peer.ip(),
            self.limits.max_connections,
            self.limits.max_per_peer,
        ) else {
            self.note_refused(peer, "connections");
            return;
        };
        let _ = tcp.set_nodelay(true);
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _place = place;
            match self.tls.clone() {
                None => self.http(tcp, peer, watcher).await,
                Some(acceptor) => {
                    let Some(tls) = self.handshake(acceptor, tcp, peer).await else {
                        return;
                    };
                    self.http(tls, peer, watcher).await
                }
            }
        });
    }

    /// The TLS handshake within its caps and timeout; `None` when refused,
    /// failed, too slow, or answered as plaintext HTTP.
    async fn handshake(
        &self,
        acceptor: tokio_rustls::TlsAcceptor,
        tcp: TcpStream,
        peer: SocketAddr,
    ) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
        let what = self.what;
        let Some(_slot) = self.handshakes.take(
            peer.ip(),
            self.limits.max_handshakes,
            self.limits.max_handshakes_per_peer,
        ) else {
            self.note_refused(peer, "TLS handshakes");
            return None;
        };
        match tokio::time::timeout(self.limits.handshake_timeout, handshake(acceptor, tcp)).await {
            Ok(Ok(Some(tls))) => Some(tls),
            Ok(Ok(None)) => {
                tracing::debug!(%peer, "{what}: a plaintext client was told to use TLS");
                None
            }
            Ok(Err(e)) => {
                tracing::debug!(%peer, "{what}: TLS handshake failed: {e}");
                None
            }
            Err(_) => {
                tracing::debug!(%peer, "{what}: TLS handshake timed out");
                None
            }
        }
    }

    /// Serves HTTP/1 or HTTP/2 (with upgrades) on `io` until it closes.
    async fn http<I>(&self, io: I, peer: SocketAddr, watcher: hyper_util::server::graceful::Watcher)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let app = self.app.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let mut app = app.clone();
            app.call(req.map(axum::body::Body::new))
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_timeout);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(self.limits.header_timeout)
            .keep_alive_timeout(self.limits.header_timeout);
        let heard = Arc::new(AtomicBool::new(false));
        let io = TokioIo::new(Heard {
            io,
            heard: Arc::clone(&heard),
        });
        let conn = watcher.watch(
            builder
                .serve_connection_with_upgrades(io, service)
                .into_owned(),
        );
        // hyper's header timeout starts once it knows the HTTP version,
        // which takes the client's first bytes: a client that sends none
        // would otherwise be waited on for good.
        let silent = async {
            tokio::time::sleep(self.limits.header_timeout).await;
            if heard.load(Ordering::Relaxed) {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            served = conn => if let Err(e) = served {
                tracing::debug!(%peer, "{}: connection ended: {e}", self.what);
            },
            () = silent => tracing::debug!(%peer, "{}: closed a connection that sent nothing", self.what),
        }
    }

    /// A connection closed for a cap: logged once per 1,000, so that a
    /// flood does not become a flood of lines.
    fn note_refused(&self, peer: SocketAddr, what: &str) {
        let n = self.refused.fetch_add(1, Ordering::Relaxed);
        if n.is_multiple_of(1000) {
            tracing::warn!(
                %peer,
                refused = n + 1,
                "{}: too many {what} open (in all or from this address); closed a new one",
                self.what
            );
        }
    }
}

/// A connection's I/O that notes when the client first sent something.
struct Heard<I> {
    io: I,
    heard: Arc<AtomicBool>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Heard<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.heard.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Heard<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_capped_per_peer_and_in_all_and_given_back() {
        let counts = Arc::new(Counts::default());
        let (a, b, c): (IpAddr, IpAddr, IpAddr) = (
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            "10.0.0.3".parse().unwrap(),
        );
        let a1 = counts.take(a, 3, 2).unwrap();
        let _a2 = counts.take(a, 3, 2).unwrap();
        assert!(counts.take(a, 3, 2).is_none(), "a third from one peer");
        let _b1 = counts.take(b, 3, 2).unwrap();
        assert!(counts.take(c, 3, 2).is_none(), "a fourth in all");
        drop(a1);
        let _c1 = counts.take(c, 3, 2).unwrap();
        assert!(counts.take(a, 3, 2).is_none());
        let open = counts.open.lock().unwrap();
        assert_eq!(open.total, 3);
        assert_eq!(open.by_peer.values().sum::<usize>(), 3);
    }
}
