//! Slow and silent clients against a real master's ports: 2,000
//! connections from one address (127.0.0.2), half of them silent and half
//! sending a byte a second, while a normal client on 127.0.0.1 is served
//! as before. The master keeps at most `--max-connections-per-peer` of
//! them, closes the rest at once, and closes the ones it kept after
//! `--header-timeout-ms`. Plaintext and TLS (where silent connections once
//! held every handshake slot for 10 s each).

mod common;

use common::{Master, Opts};
use meshplay::client::ApiClient;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const HELD: usize = 2000;
const PER_PEER: usize = 64;
const HEADER_TIMEOUT_MS: u64 = 3000;

fn opts(tls: bool) -> Opts {
    let mut extra = vec![
        "--max-connections-per-peer".to_string(),
        PER_PEER.to_string(),
        "--header-timeout-ms".to_string(),
        HEADER_TIMEOUT_MS.to_string(),
    ];
    if tls {
        extra.push("--tls".into());
    }
    Opts {
        extra,
        ..Opts::default()
    }
}

/// A connection to `to` from 127.0.0.2.
async fn connect_from_elsewhere(to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind("127.0.0.2:0".parse().unwrap())?;
    socket.connect(to).await
}

/// Whether the master closed `conn` (EOF or reset) within `wait`.
async fn closed_within(conn: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(wait, conn.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // An answer (a 408, a TLS alert): read on to the close.
            Ok(Ok(_)) => {}
        }
    }
}

/// The normal client's latencies for `n` calls, each on a connection of
/// its own (another client arriving, not one already connected), each of
/// which must succeed.
async fn served(m: &Master, n: usize) -> Vec<Duration> {
    let mut took = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let fresh = ApiClient::from_data_dir(m.data_dir()).expect("a client");
        tokio::time::timeout(Duration::from_secs(5), fresh.workers())
            .await
            .expect("the API answers a new client within 5 s")
            .expect("the API answers");
        took.push(started.elapsed());
    }
    took.sort();
    took
}

/// How many of `conns` the master closes within `wait`, all watched at
/// once.
async fn closed_among(conns: Vec<TcpStream>, wait: Duration) -> (usize, Vec<TcpStream>) {
    let watched = conns.into_iter().map(|mut c| async move {
        let closed = closed_within(&mut c, wait).await;
        (closed, c)
    });
    let outcomes = futures_join_all(watched).await;
    let closed = outcomes.iter().filter(|(c, _)| *c).count();
    (closed, outcomes.into_iter().map(|(_, c)| c).collect())
}

/// `futures::future::join_all`, on tokio tasks.
async fn futures_join_all<F, T>(futures: impl IntoIterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let tasks: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

async fn held_connections_leave_the_port_to_others(tls: bool) {
    let m = Master::start(opts(tls)).await;
    m.wait_connected(2).await;
    let api = m.endpoint.api_addr;
    let before = served(&m, 50).await;

    // Open them all; half trickle a request line a byte at a time.
    let mut conns = Vec::with_capacity(HELD);
    for _ in 0..HELD {
        conns.push(connect_from_elsewhere(api).await.expect("connect"));
    }
    let trickle = tokio::spawn({
        let mut trickling: Vec<TcpStream> = conns.split_off(HELD / 2);
        async move {
            let request = b"GET /api/v1/workers HTTP/1.1\r\nhost: x\r\n";
            for byte in request.iter().cycle().take(6) {
                for c in &mut trickling {
                    let _ = c.write_all(&[*byte]).await;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            trickling
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Served as before while they are held.
    let during = served(&m, 50).await;
    let p50 = |v: &[Duration]| v[v.len() / 2];
    println!(
        "tls={tls}: p50 {:?} before, {:?} with {HELD} held; max {:?} / {:?}",
        p50(&before),
        p50(&during),
        before.last().unwrap(),
        during.last().unwrap()
    );
    assert!(
        *during.last().unwrap() < Duration::from_secs(1),
        "a call took {:?} while {HELD} connections were held",
        during.last().unwrap()
    );

    // Past the cap, the silent ones were closed at once...
    let (closed, mut conns) = closed_among(conns, Duration::from_millis(300)).await;
    assert!(
        closed >= HELD / 2 - PER_PEER,
        "{closed} of {} silent connections closed at once (cap {PER_PEER})",
        HELD / 2
    );
    // ...and the ones kept, by the header timeout, trickling or not.
    let mut trickling = trickle.await.unwrap();
    for c in conns.iter_mut().chain(trickling.iter_mut()) {
        assert!(
            closed_within(c, Duration::from_millis(HEADER_TIMEOUT_MS + 2000)).await,
            "a connection outlived the header timeout"
        );
    }
    served(&m, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_plaintext_connections_leave_the_api_to_others() {
    held_connections_leave_the_port_to_others(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_tls_connections_leave_the_api_to_others() {
    held_connections_leave_the_port_to_others(true).await;
}
