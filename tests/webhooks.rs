//! Webhooks through a real master and real workers, with the example
//! plugin `plugins/signed-hook`: a request signed with the tenant's secret
//! is taken and answered as the handler says, a bad signature is 401 and
//! changes nothing, an event no plugin declared as a webhook is 404 (and a
//! plugin that handles the event without declaring it never runs), a body
//! over the limit is 413 (declared or streamed), and a tenant over its rate
//! is 429; each is counted in `/metrics`.

mod common;

use bytes::Bytes;
use common::api::upload;
use common::{Master, Opts, event, scrape};
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::{BodyExt, StreamBody};
use meshplay::client::DispatchOutcome;
use meshplay::rest::VarChange;
use serde_json::{Value, json};
use sha2::Sha256;

const SECRET: &str = "it's a secret to everybody";

fn signature(body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// One POST: status, headers, body as text.
async fn post(
    m: &Master,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, hyper::HeaderMap, String) {
    let res = common::request(m.endpoint.api_addr, "POST", path, headers, body).await;
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status.as_u16(),
        parts.headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

async fn signed_hook(extra: &[&str]) -> Master {
    let mut opts = Opts::default();
    opts.extra.extend(extra.iter().map(|s| s.to_string()));
    let m = Master::start(opts).await;
    let change = VarChange {
        value: SECRET.into(),
        tenant: None,
    };
    m.client
        .set_var("signed-hook", "signing_secret", &change)
        .await
        .unwrap();
    m
}

async fn recent(m: &Master, id: &str) -> Vec<Value> {
    match m
        .client
        .dispatch("repo", id, &event("recent", Value::Null))
        .await
        .unwrap()
    {
        DispatchOutcome::Done(d) => d
            .results
            .iter()
            .find(|r| r.plugin == "signed-hook")
            .and_then(|r| r.value.clone())
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default(),
        other => panic!("{other:?}"),
    }
}

const PLAIN: &str = r#"name = "plain"
version = "1"
events = ["push"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_webhooks_reach_only_the_plugins_that_declare_them() {
    let m = signed_hook(&[]).await;
    // Handles `push` too, without declaring it a webhook.
    let plain = "return { push = function() kv.set('plain_ran', true) return 'plain' end }";
    m.client
        .put_plugin("plain", &upload(PLAIN, plain))
        .await
        .unwrap();

    let body = br#"{"ref": "refs/heads/main", "commits": 3}"#.to_vec();
    let sig = signature(&body);
    let headers = [
        ("content-type", "application/json"),
        ("x-hub-signature-256", sig.as_str()),
        ("x-github-delivery", "d-1"),
    ];
    let (status, h, text) =
        post(&m, "/hooks/repo/1/push?source=test", &headers, body.clone()).await;
    assert_eq!(status, 202, "{text}");
    assert_eq!(h["x-kept"], "1");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!({ "accepted": true })
    );
    let kept = recent(&m, "1").await;
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0]["delivery"], "d-1");
    assert_eq!(
        kept[0]["payload"],
        json!({ "ref": "refs/heads/main", "commits": 3 })
    );
    let ran = m
        .client
        .kv_get("repo", "1", "default", "plain_ran")
        .await
        .unwrap();
    assert!(
        ran.is_none(),
        "a plugin that did not declare the webhook ran"
    );

    // A bad signature, and none: 401, nothing kept.
    let forged = [("x-hub-signature-256", "sha256=00")];
    let (status, _, text) = post(&m, "/hooks/repo/1/push", &forged, body.clone()).await;
    assert_eq!((status, text.as_str()), (401, "bad signature"));
    let (status, _, _) = post(&m, "/hooks/repo/1/push", &[], body.clone()).await;
    assert_eq!(status, 401);
    assert_eq!(recent(&m, "1").await.len(), 1);

    // Events nobody declared a webhook: 404, whatever handles them.
    for path in ["/hooks/repo/1/recent", "/hooks/repo/1/nothing"] {
        let (status, _, text) = post(&m, path, &headers, body.clone()).await;
        assert_eq!(status, 404, "{path}: {text}");
        assert!(text.contains("no plugin takes webhook"), "{text}");
    }

    let (_, series) = scrape(&m).await;
    assert_eq!(series["meshplay_webhooks_total{result=\"ok\"}"], 3.0);
    assert_eq!(series["meshplay_webhooks_total{result=\"not_found\"}"], 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_and_tenants_over_their_rate_are_refused() {
    let m = signed_hook(&[
        "--webhook-max-body-bytes",
        "1024",
        "--webhook-tenant-rate",
        "2",
    ])
    .await;
    let big = vec![b'x'; 2048];
    let (status, _, text) = post(&m, "/hooks/repo/2/push", &[], big.clone()).await;
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("--webhook-max-body-bytes"), "{text}");

    // Streamed, without a content-length: cut at the limit all the same.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<StreamBody<_>>();
    let chunks = futures_chunks(big);
    let req = hyper::Request::builder()
        .method("POST")
        .uri(format!("http://{}/hooks/repo/3/push", m.endpoint.api_addr))
        .body(StreamBody::new(chunks))
        .unwrap();
    let res = client.request(req).await.unwrap();
    assert_eq!(res.status().as_u16(), 413);

    // Rate 2 a second, bursts of 4: of 8 at once, 4 get through.
    let body = b"{}".to_vec();
    let sig = signature(&body);
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let headers = [("x-hub-signature-256", sig.as_str())];
        statuses.push(
            post(&m, "/hooks/repo/4/push", &headers, body.clone())
                .await
                .0,
        );
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 202).count(),
        4,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        4,
        "{statuses:?}"
    );
    // Another tenant has its own rate.
    let headers = [("x-hub-signature-256", sig.as_str())];
    assert_eq!(post(&m, "/hooks/repo/5/push", &headers, body).await.0, 202);

    let (_, series) = scrape(&m).await;
    assert_eq!(series["meshplay_webhooks_total{result=\"too_large\"}"], 2.0);
    assert_eq!(
        series["meshplay_webhooks_total{result=\"rate_limited\"}"],
        4.0
    );
}

/// `body` as a stream of 256-byte frames, with no length known ahead.
fn futures_chunks(
    body: Vec<u8>,
) -> impl futures::Stream<Item = Result<hyper::body::Frame<Bytes>, std::io::Error>>
+ Send
+ Unpin
+ 'static {
    let frames: Vec<_> = body
        .chunks(256)
        .map(|c| Ok(hyper::body::Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    futures::stream::iter(frames)
}
