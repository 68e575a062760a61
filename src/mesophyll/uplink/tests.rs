//! The uplink against fake masters on real loopback sockets: one that
//! accepts TCP and never answers the upgrade, one that says Hello and
//! then never reads again (a half-open or wedged master).

use super::*;
use crate::mesophyll::message::LoadFigures;
use tokio::net::TcpListener;

struct Idle;

impl Handler for Idle {
    fn handle(&self, _: ServerMessage, _: Outbox) {}
    fn load(&self) -> LoadFigures {
        LoadFigures::default()
    }
}

fn config(addr: std::net::SocketAddr) -> UplinkConfig {
    UplinkConfig {
        masters: Addresses::one(addr.to_string()),
        worker_id: 0,
        token: "t".into(),
        connect_timeout: Duration::from_millis(300),
        tls: None,
    }
}

/// Accepts TCP connections on `listener` for `within` and counts them,
/// handing each to `serve`.
async fn count_connections<F, Fut>(listener: TcpListener, within: Duration, serve: F) -> usize
where
    F: Fn(tokio::net::TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut n = 0;
    let until = tokio::time::Instant::now() + within;
    while let Ok(Ok((tcp, _))) = tokio::time::timeout_at(until, listener.accept()).await {
        n += 1;
        tokio::spawn(serve(tcp));
    }
    n
}

#[tokio::test]
async fn a_master_that_never_answers_the_upgrade_is_given_up_on_and_retried() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uplink = tokio::spawn(run(config(listener.local_addr().unwrap()), Arc::new(Idle)));
    let n = count_connections(listener, Duration::from_secs(3), |tcp| async move {
        // Hold the socket open and say nothing.
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(tcp);
    })
    .await;
    uplink.abort();
    assert!(
        n >= 2,
        "the worker connected {n} time(s): it waited on a silent upgrade"
    );
}

#[tokio::test]
async fn a_master_that_goes_silent_after_hello_is_left_for_a_new_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uplink = tokio::spawn(run(config(listener.local_addr().unwrap()), Arc::new(Idle)));
    let n = count_connections(listener, Duration::from_secs(4), |tcp| async move {
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let hello = codec::encode(&ServerMessage::Hello {
            protocol: PROTOCOL_VERSION,
            worker_id: 0,
            heartbeat_interval_ms: 50,
            heartbeat_timeout_ms: 300,
            egress: None,
            max_event_hops: None,
        })
        .unwrap();
        ws.send(Message::Binary(hello.into())).await.unwrap();
        // Never read again: no pong, no answer, while the kernel still
        // takes the worker's writes.
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(ws);
    })
    .await;
    uplink.abort();
    assert!(
        n >= 2,
        "the worker connected {n} time(s): it never noticed the silence"
    );
}

#[tokio::test]
async fn answers_past_the_byte_budget_become_overloaded_errors() {
    let (tx, mut rx) = mpsc::channel(16);
    let outbox = Outbox::new(tx, 10_000);
    let big = Packed::from_value(&serde_json::Value::String("x".repeat(6_000)));
    outbox.reply(1, Ok(big.clone())).await;
    outbox.reply(2, Ok(big)).await;
    let decode = |o: Outgoing| match o {
        Outgoing::Frame(f) => codec::decode::<ClientMessage>(&f).unwrap(),
        Outgoing::Close => panic!("close"),
    };
    let ClientMessage::DispatchResponse {
        req_id: 1,
        result: Ok(_),
    } = decode(rx.recv().await.unwrap())
    else {
        panic!("the first answer fits")
    };
    let ClientMessage::DispatchResponse {
        req_id: 2,
        result: Err(e),
    } = decode(rx.recv().await.unwrap())
    else {
        panic!("the second is past the budget")
    };
    assert_eq!(e.kind, crate::mesophyll::message::ErrorKind::Overloaded);
}
