//! Things going wrong, for real: killed and stopped workers, a killed
//! master, bad credentials and garbage at the hub, a worker started by hand.

mod common;

use common::{Master, Opts, alive, eventually, signal, tenants_on, with_external_worker_1};
use futures::{SinkExt, StreamExt};
use meshplay::client::DispatchOutcome;
use meshplay::datadir::DataDir;
use meshplay::mesophyll::codec;
use meshplay::mesophyll::message::{ClientMessage, Packed, PluginOutcome, ServerMessage};
use meshplay::rest::{DispatchRequest, ScriptRequest};
use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::tungstenite::{self, Message};

fn echo(data: serde_json::Value) -> DispatchRequest {
    DispatchRequest {
        name: "echo".into(),
        data,
        wait: true,
        timeout_ms: Some(20_000),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_fails_its_pending_requests_at_once_and_is_restarted() {
    let m = Master::start(Opts::default()).await;
    let t = tenants_on("user", 0, 2, 1).remove(0);
    let before = m.worker(0).await;
    let pid = before.pid.unwrap();

    // A request that would run for 20 s if nothing happened.
    let c = m.client.clone();
    let (kind, id) = (t.kind.clone(), t.id.clone());
    let pending = tokio::spawn(async move {
        let req = ScriptRequest {
            name: None,
            code: "time.sleep(20000)".into(),
            event: None,
            timeout_ms: Some(30_000),
        };
        c.run_script(&kind, &id, &req).await
    });
    // Kill only once the request is on the worker's connection.
    eventually(
        Duration::from_secs(10),
        "the request to be in flight",
        || async { (m.worker(0).await.in_flight >= 1).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    signal(pid, libc::SIGKILL);

    // It fails because the worker is gone, not because a deadline passed.
    let err = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .expect("the pending request hung")
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), Some("worker_unavailable"), "{err}");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(503));

    let after = m.wait_restarted(0, pid, Duration::from_secs(20)).await;
    assert_eq!(after.restarts, 1);
    let d = match m
        .client
        .dispatch(&t.kind, &t.id, &echo(json!("again")))
        .await
        .unwrap()
    {
        DispatchOutcome::Done(d) => d,
        other => panic!("{other:?}"),
    };
    assert_eq!(d.results[0].value.as_ref().unwrap()["data"], "again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_worker_is_declared_dead_within_the_heartbeat_timeout() {
    let m = Master::start(Opts {
        heartbeat_timeout_ms: 1500,
        ..Opts::default()
    })
    .await;
    let t = tenants_on("user", 1, 2, 1).remove(0);
    let pid = m.worker(1).await.pid.unwrap();
    signal(pid, libc::SIGSTOP);
    let started = std::time::Instant::now();

    // Asked while the worker is frozen: fails when it is declared dead,
    // long before its own 20 s deadline.
    let err = m
        .client
        .dispatch(&t.kind, &t.id, &echo(json!(1)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("worker_unavailable"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );

    let after = m.wait_restarted(1, pid, Duration::from_secs(20)).await;
    assert!(after.restarts >= 1);
    assert!(
        m.log().contains("missed its heartbeats"),
        "the restart should say why"
    );
    eventually(
        Duration::from_secs(5),
        "the frozen worker to be killed",
        || async { (!alive(pid)).then_some(()) },
    )
    .await;
    m.client
        .dispatch(&t.kind, &t.id, &echo(json!(2)))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_master_is_killed_its_workers_go_too() {
    let mut m = Master::start(Opts::default()).await;
    let pids = m.worker_pids().await;
    assert_eq!(pids.len(), 2);
    m.child.kill().unwrap();
    m.child.wait().unwrap();
    eventually(Duration::from_secs(10), "orphaned workers to exit", || {
        let any = pids.iter().any(|&p| alive(p));
        async move { (!any).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_master_and_its_workers_cleanly() {
    let mut m = Master::start(Opts::default()).await;
    let pids = m.worker_pids().await;
    let status = m.stop().expect("the master did not stop");
    assert!(status.success(), "{status:?}");
    assert!(pids.iter().all(|&p| !alive(p)));
    assert!(
        DataDir::at(m.data_dir()).endpoint().is_err(),
        "endpoint.json should be gone"
    );
    let log = m.log();
    assert!(
        !log.contains("restarting"),
        "no restarts during shutdown:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_at_sigterm_is_answered_within_the_grace() {
    let mut m = Master::start(Opts::default()).await;
    let t = tenants_on("user", 0, 2, 1).remove(0);
    let c = m.client.clone();
    let pending = tokio::spawn(async move {
        let req = ScriptRequest {
            name: None,
            code: "time.sleep(1000) return 42".into(),
            event: None,
            timeout_ms: Some(10_000),
        };
        c.run_script(&t.kind, &t.id, &req).await
    });
    eventually(
        Duration::from_secs(10),
        "the request to be in flight",
        || async { (m.worker(0).await.in_flight >= 1).then_some(()) },
    )
    .await;
    // The workers are told to finish (the grace is 5 s), not cut off.
    signal(m.child.id(), libc::SIGTERM);
    let answer = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .expect("the pending request hung")
        .unwrap()
        .unwrap_or_else(|e| panic!("cut off by the shutdown: {e}\n{}", m.log()));
    assert_eq!(answer.result, json!(42));
    assert!(m.stop().is_some_and(|s| s.success()));
}

async fn ws_connect(
    addr: std::net::SocketAddr,
    id: &str,
    token: &str,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    tungstenite::Error,
> {
    let url = format!("ws://{addr}/ws?id={id}&token={token}");
    tokio_tungstenite::connect_async(url)
        .await
        .map(|(ws, _)| ws)
}

fn http_status(e: tungstenite::Error) -> u16 {
    match e {
        tungstenite::Error::Http(res) => res.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_refuses_wrong_tokens_and_unknown_workers() {
    let (m, good) = with_external_worker_1().await;
    let hub = m.endpoint.mesophyll_addr;
    let wrong = "x".repeat(64);

    assert_eq!(
        http_status(ws_connect(hub, "1", &wrong).await.unwrap_err()),
        401
    );
    assert_eq!(
        http_status(ws_connect(hub, "0", &good).await.unwrap_err()),
        401
    );
    assert_eq!(
        http_status(ws_connect(hub, "99", &good).await.unwrap_err()),
        404
    );
    assert_eq!(
        http_status(ws_connect(hub, "1", "").await.unwrap_err()),
        401
    );

    // The headers work as well as the query.
    use tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{hub}/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("x-meshplay-worker-id", "1".parse().unwrap());
    req.headers_mut()
        .insert("x-meshplay-token", good.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let hello = ws.next().await.unwrap().unwrap();
    let hello: ServerMessage = codec::decode(&hello.into_data()).unwrap();
    assert!(
        matches!(hello, ServerMessage::Hello { worker_id: 1, .. }),
        "{hello:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_frames_are_counted_and_do_not_close_the_connection() {
    let (m, token) = with_external_worker_1().await;
    let mut ws = ws_connect(m.endpoint.mesophyll_addr, "1", &token)
        .await
        .unwrap();
    let hello: ServerMessage =
        codec::decode(&ws.next().await.unwrap().unwrap().into_data()).unwrap();
    assert!(matches!(hello, ServerMessage::Hello { .. }));

    let valid = codec::encode(&ClientMessage::Heartbeat {
        in_flight: 0,
        vms: 0,
        rss_bytes: 0,
        bad_frames: 0,
        filters: vec![],
        filter_metrics: vec![],
        egress: vec![],
        hop_limited: 0,
    })
    .unwrap();
    ws.send(Message::binary(vec![0xc1, 0xff, 0x00]))
        .await
        .unwrap();
    ws.send(Message::text("hello?")).await.unwrap();
    ws.send(Message::binary(valid[..valid.len() / 2].to_vec()))
        .await
        .unwrap();
    ws.send(Message::binary(
        codec::encode(&json!({"Heartbeat": "not a heartbeat"})).unwrap(),
    ))
    .await
    .unwrap();

    // The connection still carries real traffic: we answer a dispatch.
    let t = tenants_on("user", 1, 2, 1).remove(0);
    let c = m.client.clone();
    let (kind, id) = (t.kind.clone(), t.id.clone());
    let asked = tokio::spawn(async move { c.dispatch(&kind, &id, &echo(json!("hi"))).await });
    let req_id = loop {
        let frame = ws.next().await.unwrap().unwrap();
        if let Message::Binary(bytes) = frame
            && let ServerMessage::DispatchEvent {
                req_id: Some(id),
                tenant,
                event,
                ..
            } = codec::decode(&bytes).unwrap()
        {
            assert_eq!(tenant, t);
            assert_eq!(event.data, json!("hi"));
            break id;
        }
    };
    let answer = vec![PluginOutcome {
        plugin: "by-hand".into(),
        result: Ok(json!("answered").into()),
    }];
    let reply = ClientMessage::DispatchResponse {
        req_id,
        result: Ok(Packed::encode(&answer).unwrap()),
    };
    ws.send(Message::binary(codec::encode(&reply).unwrap()))
        .await
        .unwrap();
    let d = match asked.await.unwrap().unwrap() {
        DispatchOutcome::Done(d) => d,
        other => panic!("{other:?}"),
    };
    assert_eq!(d.results[0].plugin, "by-hand");
    assert_eq!(d.results[0].value, Some(json!("answered")));

    let workers = m.client.workers().await.unwrap();
    assert!(workers.bad_frames >= 4, "{workers:?}");
    let w1 = workers.workers.iter().find(|w| w.id == 1).unwrap();
    assert!(!w1.managed && w1.pid.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_ends_only_that_connection() {
    let (m, token) = with_external_worker_1().await;
    let hub = m.endpoint.mesophyll_addr;
    let mut ws = ws_connect(hub, "1", &token).await.unwrap();
    ws.next().await.unwrap().unwrap(); // Hello
    let huge = vec![0u8; codec::MAX_FRAME_BYTES + 64 * 1024];
    let _ = ws.send(Message::binary(huge)).await;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the hub should end a connection that sends an oversized frame"
    );

    // The same worker may come back at once, and the master is unharmed.
    let mut ws = ws_connect(hub, "1", &token).await.unwrap();
    let hello: ServerMessage =
        codec::decode(&ws.next().await.unwrap().unwrap().into_data()).unwrap();
    assert!(matches!(hello, ServerMessage::Hello { worker_id: 1, .. }));
    let t = tenants_on("user", 0, 2, 1).remove(0);
    m.client
        .dispatch(&t.kind, &t.id, &echo(json!(0)))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_started_by_hand_with_token_on_the_command_line_serves() {
    let (m, token) = with_external_worker_1().await;
    let mut worker = common::start_worker_1(&m, &token);
    m.wait_connected(2).await;
    let t = tenants_on("user", 1, 2, 1).remove(0);
    match m
        .client
        .dispatch(&t.kind, &t.id, &echo(json!(5)))
        .await
        .unwrap()
    {
        DispatchOutcome::Done(d) => assert_eq!(d.results[0].value.as_ref().unwrap()["data"], 5),
        other => panic!("{other:?}"),
    }
    let _ = worker.0.kill();

    // A wrong token is refused for good: the worker exits instead of
    // retrying forever.
    let status = std::process::Command::new(common::EXE)
        .args(["--worker", "--worker-id", "1", "--master"])
        .arg(m.endpoint.mesophyll_addr.to_string())
        .args(["--token", &"y".repeat(64)])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success());
}
