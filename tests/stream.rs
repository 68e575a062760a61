//! The binary client API (`/api/v1/stream`) against the real binary:
//! pipelining on one connection, answers as each is ready, the same auth
//! and error codes as REST, a worker killed with requests pending, and
//! frames that are not requests.

mod common;

use common::api::upload;
use common::{Master, Opts, tenants_on};
use futures::{SinkExt, StreamExt};
use meshplay::client::{ApiClient, ApiClientError, DispatchOutcome, StreamClient};
use meshplay::rest::{DispatchRequest, Role, StreamAnswer};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn event(name: &str, data: Value) -> DispatchRequest {
    DispatchRequest {
        name: name.into(),
        data,
        wait: true,
        timeout_ms: Some(10_000),
    }
}

fn done(outcome: Result<DispatchOutcome, ApiClientError>) -> meshplay::rest::Dispatched {
    match outcome {
        Ok(DispatchOutcome::Done(d)) => d,
        other => panic!("{other:?}"),
    }
}

/// A plugin whose `slow` event sleeps for `data.ms` milliseconds.
async fn with_slow_plugin(m: &Master) {
    let manifest = "name = \"slow\"\nversion = \"1.0.0\"\nevents = [\"slow\"]\n";
    let code = "return { slow = function(e) time.sleep(e.data.ms) return e.data.ms end }";
    m.client
        .put_plugin("slow", &upload(manifest, code))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_events_in_flight_on_one_connection_are_each_answered() {
    let m = Master::start(Opts::default()).await;
    let stream = StreamClient::connect(&m.client).await.unwrap();
    let answers = futures::future::join_all((0..2000u64).map(|i| {
        let stream = &stream;
        async move {
            (
                i,
                stream
                    .dispatch("user", &format!("s{}", i % 50), event("echo", json!(i)))
                    .await,
            )
        }
    }))
    .await;
    let mut workers = std::collections::BTreeSet::new();
    for (i, answer) in answers {
        let d = done(answer);
        assert_eq!(d.tenant.id, format!("s{}", i % 50));
        assert_eq!(d.results[0].value.as_ref().unwrap()["data"], json!(i));
        workers.insert(d.worker);
    }
    assert_eq!(workers.len(), 2, "both shards served");
    // Fire-and-forget on the same connection.
    let mut queued = event("echo", json!(null));
    queued.wait = false;
    let accepted = stream.dispatch("user", "s1", queued).await.unwrap();
    assert!(
        matches!(accepted, DispatchOutcome::Accepted(_)),
        "{accepted:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_tenant_does_not_hold_up_the_answers_behind_it() {
    let m = Master::start(Opts::default()).await;
    with_slow_plugin(&m).await;
    let stream = &StreamClient::connect(&m.client).await.unwrap();
    let started = Instant::now();
    let slow = async {
        done(
            stream
                .dispatch("user", "slow", event("slow", json!({"ms": 800})))
                .await,
        );
        started.elapsed()
    };
    let fast = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let answers = futures::future::join_all((0..20).map(|i| async move {
            let id = format!("f{i}");
            stream.dispatch("user", &id, event("echo", json!(i))).await
        }))
        .await;
        for a in answers {
            done(a);
        }
        started.elapsed()
    };
    let (slow_at, fast_at) = tokio::join!(slow, fast);
    assert!(
        fast_at < slow_at,
        "the fast ones ({fast_at:?}) waited for the slow one ({slow_at:?})"
    );
    assert!(slow_at >= Duration::from_millis(800));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_takes_the_tokens_and_answers_the_codes_of_rest() {
    let m = Master::start(Opts::default()).await;
    let wrong = ApiClient::new(m.endpoint.api_addr, "not-a-token");
    let err = StreamClient::connect(&wrong).await.unwrap_err();
    assert_eq!(
        (err.code(), err.to_string().contains("401")),
        (Some("unauthorized"), true),
        "{err}"
    );
    let read = m
        .client
        .create_token(Role::Read, Some("reader"))
        .await
        .unwrap();
    let reader = ApiClient::new(m.endpoint.api_addr, &read.token);
    let err = StreamClient::connect(&reader).await.unwrap_err();
    assert_eq!(err.code(), Some("forbidden"), "{err}");

    let app = m.client.create_token(Role::App, Some("app")).await.unwrap();
    let stream = StreamClient::connect(&ApiClient::new(m.endpoint.api_addr, &app.token))
        .await
        .unwrap();
    done(stream.dispatch("user", "1", event("echo", json!(1))).await);
    let cases = [
        (event("no-such-event", json!(null)), 404, "not_found"),
        (event("", json!(null)), 400, "bad_request"),
        (
            DispatchRequest {
                timeout_ms: Some(0),
                ..event("echo", json!(null))
            },
            400,
            "bad_request",
        ),
    ];
    for (req, status, code) in cases {
        let rest = m.client.dispatch("user", "1", &req).await.unwrap_err();
        let err = stream.dispatch("user", "1", req).await.unwrap_err();
        match (&err, &rest) {
            (
                ApiClientError::Api {
                    status: s, code: c, ..
                },
                ApiClientError::Api {
                    status: rs,
                    code: rc,
                    ..
                },
            ) => {
                assert_eq!((s.as_u16(), c.as_str()), (status, code), "{err}");
                assert_eq!((s, c), (rs, rc), "the stream and REST disagree");
            }
            _ => panic!("{err:?} / {rest:?}"),
        }
    }
    let err = stream
        .dispatch("", "1", event("echo", json!(1)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("bad_request"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_with_requests_pending_fails_them_at_once_and_the_stream_carries_on() {
    let m = Master::start(Opts::default()).await;
    with_slow_plugin(&m).await;
    let stream = StreamClient::connect(&m.client).await.unwrap();
    let on_0 = tenants_on("user", 0, 2, 10);
    let on_1 = tenants_on("user", 1, 2, 1).remove(0);
    let pid = m.worker(0).await.pid.unwrap();
    let pending = futures::future::join_all(
        on_0.iter()
            .map(|t| stream.dispatch("user", &t.id, event("slow", json!({"ms": 8000})))),
    );
    let kill = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        common::signal(pid, libc::SIGKILL);
        Instant::now()
    };
    let (answers, killed) = tokio::join!(pending, kill);
    assert!(
        killed.elapsed() < Duration::from_secs(3),
        "the pending requests waited {:?}",
        killed.elapsed()
    );
    for a in answers {
        let err = a.unwrap_err();
        assert_eq!(err.code(), Some("worker_unavailable"), "{err}");
    }
    // The other shard, and then the restarted worker, on the same stream.
    done(
        stream
            .dispatch("user", &on_1.id, event("echo", json!(1)))
            .await,
    );
    m.wait_restarted(0, pid, Duration::from_secs(20)).await;
    done(
        stream
            .dispatch("user", &on_0[0].id, event("echo", json!(2)))
            .await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_that_are_not_requests_are_answered_and_the_connection_carries_on() {
    let m = Master::start(Opts::default()).await;
    let mut request = format!("ws://{}/api/v1/stream", m.endpoint.api_addr)
        .into_client_request()
        .unwrap();
    let bearer = format!("Bearer {}", m.admin_token()).parse().unwrap();
    request.headers_mut().insert("authorization", bearer);
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let mut answer = async |frame: Message| -> StreamAnswer {
        ws.send(frame).await.unwrap();
        loop {
            match ws.next().await.unwrap().unwrap() {
                Message::Binary(b) => return rmp_serde::from_slice(&b).unwrap(),
                _ => continue,
            }
        }
    };
    let garbage = answer(Message::Binary(vec![0xc1, 0xff, 0x00].into())).await;
    let e = garbage.error.unwrap();
    assert_eq!(
        (garbage.id, e.status, e.detail.code.as_str()),
        (0, 400, "bad_frame")
    );
    let text = answer(Message::Text("{\"id\":1}".into())).await;
    assert_eq!(text.error.unwrap().detail.code, "bad_frame");
    // An id, but no tenant: the answer carries the id back.
    let half = rmp_serde::to_vec_named(&json!({"id": 7, "name": 5})).unwrap();
    let half = answer(Message::Binary(half.into())).await;
    assert_eq!(
        (half.id, half.error.unwrap().detail.code.as_str()),
        (7, "bad_frame")
    );
    let good =
        json!({"id": 8, "tenant": {"type": "user", "id": "1"}, "name": "echo", "data": [1, 2]});
    let good = answer(Message::Binary(
        rmp_serde::to_vec_named(&good).unwrap().into(),
    ))
    .await;
    assert_eq!(good.id, 8);
    assert_eq!(
        good.done.unwrap().results[0].value.as_ref().unwrap()["data"],
        json!([1, 2])
    );
    // A frame over the limit ends the connection, and only it.
    let huge = vec![0u8; meshplay::rest::MAX_BODY_BYTES + 64 * 1024];
    let _ = ws.send(Message::Binary(huge.into())).await;
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the connection stayed open after an oversized frame"
    );
    m.client
        .dispatch("user", "1", &event("echo", json!(3)))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatch_many_sends_a_file_over_one_stream_and_says_what_failed() {
    let m = Master::start(Opts::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.ndjson");
    let mut lines: Vec<String> = (0..300)
        .map(|i| {
            json!({"type": "user", "id": format!("b{}", i % 7), "name": "echo", "data": i})
                .to_string()
        })
        .collect();
    lines.push(json!({"type": "user", "id": "b1", "name": "sign", "data": {"name": "Bob", "message": "cheap spam"}}).to_string());
    lines.push(String::new());
    lines.push(json!({"type": "user", "id": "b1", "name": "echo", "wait": false}).to_string());
    std::fs::write(&file, lines.join("\n")).unwrap();
    let (code, out, err) = m.cli(&["dispatch-many", file.to_str().unwrap(), "--in-flight", "32"]);
    assert_eq!(code, 3, "a plugin answered with an error: {err}");
    assert!(
        err.contains("302 events") && err.contains("0 failed, 1 with a plugin error"),
        "{err}"
    );
    let answers: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), 302);
    let mut seen: Vec<u64> = answers
        .iter()
        .map(|a| a["line"].as_u64().unwrap())
        .collect();
    seen.sort_unstable();
    let expected: Vec<u64> = (1..=301).chain([303]).collect();
    assert_eq!(
        seen, expected,
        "every line answered once, the blank one skipped"
    );
    let echo = answers.iter().find(|a| a["line"] == 5).unwrap();
    assert_eq!(echo["done"]["results"][0]["value"]["data"], 4);
    let queued = answers.iter().find(|a| a["line"] == 303).unwrap();
    assert!(queued["accepted"].is_object(), "{queued}");

    // A line that is not an event stops it before anything is sent.
    std::fs::write(&file, "{\"type\": \"user\"}\n").unwrap();
    let (code, _, err) = m.cli(&["dispatch-many", file.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("line 1"), "{err}");
}
