//! A link to the database that can be cut: a TCP relay on loopback between
//! one master and PostgreSQL.
//!
//! Cutting it does what a pulled cable does, not what a crashed server
//! does: nothing is closed, bytes simply stop moving both ways on every
//! connection, and new connections are accepted and left hanging. The
//! master sees no error, only calls that never answer, which is the case
//! a lease must survive. Restoring it closes what was held (the
//! connections broke, as a real cut's would once TCP gave up) and carries
//! new ones again.

use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The relay; stops when dropped.
pub struct Link {
    /// Where the master connects instead of the database.
    pub addr: SocketAddr,
    cut: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Link {
    /// Relays a free loopback port to `target`.
    ///
    /// Fails when no port can be bound.
    pub async fn start(target: SocketAddr) -> std::io::Result<Link> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (cut, _) = watch::channel(false);
        let watching = cut.clone();
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let _ = inbound.set_nodelay(true);
                tokio::spawn(carry(inbound, target, watching.subscribe()));
            }
        });
        Ok(Link { addr, cut, task })
    }

    /// Stops every byte, both ways, on every connection.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Closes what the cut held and carries new connections again.
    pub fn restore(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Carries one connection until either side closes, or holds it, moving
/// nothing, from a cut until the link is restored.
async fn carry(mut inbound: TcpStream, target: SocketAddr, mut cut: watch::Receiver<bool>) {
    if !*cut.borrow_and_update() {
        let Ok(mut outbound) = TcpStream::connect(target).await else {
            return;
        };
        let _ = outbound.set_nodelay(true);
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => return,
            _ = cut.wait_for(|cut| *cut) => {}
        }
    }
    let _ = cut.wait_for(|cut| !*cut).await;
}

/// `url` (`postgres://user@host:port/db...`) with its host and port
/// replaced by `addr`, and the address it named; `None` when it names no
/// `host:port` this can read.
pub fn through(url: &str, addr: SocketAddr) -> Option<(String, String)> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))?;
    let start = url.len() - rest.len() + rest.find('@').map_or(0, |i| i + 1);
    let end = url[start..]
        .find(['/', '?'])
        .map_or(url.len(), |i| start + i);
    let named = url[start..end].to_owned();
    named.contains(':').then_some(())?;
    Some((format!("{}{addr}{}", &url[..start], &url[end..]), named))
}

#[cfg(test)]
mod tests {
    use super::through;

    #[test]
    fn a_url_goes_through_the_relay() {
        let relay = "127.0.0.1:7".parse().unwrap();
        assert_eq!(
            through("postgres://postgres@127.0.0.1:5432/db", relay),
            Some((
                "postgres://postgres@127.0.0.1:7/db".into(),
                "127.0.0.1:5432".into()
            ))
        );
        assert_eq!(
            through("postgres://h:1?sslmode=disable", relay),
            Some((
                "postgres://127.0.0.1:7?sslmode=disable".into(),
                "h:1".into()
            ))
        );
        assert_eq!(through("postgres://u@host/db", relay), None);
        assert_eq!(through("sled:/x", relay), None);
    }
}

#[cfg(test)]
mod relay_tests {
    use super::Link;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn echo_server() -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(s: &mut tokio::net::TcpStream) -> bool {
        s.write_all(b"x").await.unwrap();
        let mut b = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_millis(300), s.read(&mut b)).await,
            Ok(Ok(1))
        )
    }

    #[tokio::test]
    async fn a_cut_moves_nothing_and_a_restore_closes_what_it_held() {
        let link = Link::start(echo_server().await).await.unwrap();
        let mut before = tokio::net::TcpStream::connect(link.addr).await.unwrap();
        assert!(round_trip(&mut before).await);
        link.cut();
        assert!(!round_trip(&mut before).await, "bytes moved through a cut");
        let mut during = tokio::net::TcpStream::connect(link.addr).await.unwrap();
        assert!(
            !round_trip(&mut during).await,
            "a new connection was carried"
        );
        link.restore();
        let mut b = [0u8; 8];
        let closed = tokio::time::timeout(Duration::from_secs(2), before.read(&mut b)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
        let mut after = tokio::net::TcpStream::connect(link.addr).await.unwrap();
        assert!(round_trip(&mut after).await);
    }
}
