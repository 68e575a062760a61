//! The NATS bridge against a real `nats-server` (Debian's package, started
//! here on a free port; skipped, saying why, where it is not installed, and
//! a failure under `CI=true`): dispatch by request/reply in JSON and in
//! MessagePack, answered dispatches published, a plugin publishing to a
//! granted subject and refused another, and NATS restarted under a running
//! master, which keeps serving REST and comes back to the bus.

mod common;

use common::api::upload;
use common::{Master, Opts, event, eventually, free_addr};
use futures::StreamExt;
use meshplay::client::DispatchOutcome;
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `nats-server` on `addr`, killed when dropped.
struct NatsServer {
    child: Child,
    addr: String,
}

impl NatsServer {
    fn start_on(addr: &str) -> Option<NatsServer> {
        Self::start_with(addr, &[])
    }

    /// With `extra` arguments (`--auth TOKEN`).
    fn start_with(addr: &str, extra: &[&str]) -> Option<NatsServer> {
        let (host, port) = addr.rsplit_once(':').unwrap();
        let child = match Command::new("nats-server")
            .args(["-a", host, "-p", port])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("CI must run the NATS tests: nats-server: {e}")
            }
            Err(e) => {
                eprintln!("skipped: nats-server: {e}");
                return None;
            }
        };
        let server = NatsServer {
            child,
            addr: addr.to_owned(),
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(addr).is_ok() {
                return Some(server);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nats-server did not listen on {addr}");
    }

    fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const MANIFEST: &str = r#"name = "bus"
version = "1"
events = ["order", "leak"]
publishes = ["orders.>"]
"#;

const BUS: &str = r#"
return {
    order = function(event)
        nats.publish("orders.created", { id = event.data.id })
        return { took = event.data.id }
    end,
    leak = function(event)
        local ok, err = pcall(nats.publish, "secrets.all", "x")
        return { ok = ok, err = tostring(err) }
    end,
}
"#;

async fn request(
    bus: &async_nats::Client,
    subject: &str,
    payload: &[u8],
) -> Option<async_nats::Message> {
    let req = bus.request(subject.to_owned(), payload.to_vec().into());
    tokio::time::timeout(Duration::from_secs(5), req)
        .await
        .ok()?
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatch_over_nats_publishes_and_survives_a_nats_restart() {
    let addr = free_addr();
    let Some(server) = NatsServer::start_on(&addr) else {
        return;
    };
    let opts = Opts {
        extra: vec![
            "--nats".into(),
            server.url(),
            "--nats-publish-events".into(),
        ],
        ..Opts::default()
    };
    let m = Master::start(opts).await;
    m.client
        .put_plugin("bus", &upload(MANIFEST, BUS))
        .await
        .unwrap();
    let bus = async_nats::connect(server.url()).await.unwrap();
    let mut orders = bus.subscribe("orders.>").await.unwrap();
    let mut answered = bus.subscribe("meshplay.events.>").await.unwrap();
    bus.flush().await.unwrap();

    // Request/reply: the REST answer's body.
    let reply = eventually(Duration::from_secs(10), "a reply over NATS", || {
        request(&bus, "meshplay.dispatch.shop.1.order", br#"{"id": 7}"#)
    })
    .await;
    let body: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(
        body["tenant"],
        json!({ "type": "shop", "id": "1" }),
        "{body}"
    );
    assert_eq!(body["results"][0]["plugin"], "bus");
    assert_eq!(body["results"][0]["value"], json!({ "took": 7 }));

    // The plugin's publish, and the answered dispatch.
    let published = tokio::time::timeout(Duration::from_secs(5), orders.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(published.subject.as_str(), "orders.created");
    assert_eq!(
        serde_json::from_slice::<Value>(&published.payload).unwrap(),
        json!({ "id": 7 })
    );
    let seen = tokio::time::timeout(Duration::from_secs(5), answered.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.subject.as_str(), "meshplay.events.shop.1.order");
    assert_eq!(
        serde_json::from_slice::<Value>(&seen.payload).unwrap()["results"],
        body["results"]
    );

    // A subject the manifest does not grant.
    let reply = request(&bus, "meshplay.dispatch.shop.1.leak", b"")
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&reply.payload).unwrap();
    let leak = &body["results"][0]["value"];
    assert_eq!(leak["ok"], false, "{body}");
    assert!(
        leak["err"]
            .as_str()
            .unwrap()
            .contains("may not publish to \"secrets.all\""),
        "{leak}"
    );

    // MessagePack in, MessagePack out.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("content-type", "application/msgpack");
    let payload = rmp_serde::to_vec_named(&json!({ "id": 8 })).unwrap();
    let reply = bus
        .request_with_headers("meshplay.dispatch.shop.2.order", headers, payload.into())
        .await
        .unwrap();
    let body: Value = rmp_serde::from_slice(&reply.payload).unwrap();
    assert_eq!(body["results"][0]["value"], json!({ "took": 8 }));

    // A subject that names no tenant: the error, and its code in a header.
    let reply = request(&bus, "meshplay.dispatch.shop.order", b"{}")
        .await
        .unwrap();
    let code = reply.headers.as_ref().and_then(|h| h.get("meshplay-error"));
    assert_eq!(code.map(|c| c.as_str()), Some("bad_request"));

    // NATS goes away: REST goes on; NATS comes back: so does the bridge.
    drop((orders, answered, bus));
    drop(server);
    let rest = m
        .client
        .dispatch("shop", "3", &event("leak", Value::Null))
        .await
        .unwrap();
    assert!(matches!(rest, DispatchOutcome::Done(_)), "{rest:?}");
    let server = NatsServer::start_on(&addr).unwrap();
    let bus = async_nats::connect(server.url()).await.unwrap();
    let reply = eventually(Duration::from_secs(30), "the bridge back on NATS", || {
        request(&bus, "meshplay.dispatch.shop.4.order", br#"{"id": 9}"#)
    })
    .await;
    let body: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(body["results"][0]["value"], json!({ "took": 9 }));
}

/// A NATS that wants a token: the master given it (`--nats-token`) takes
/// requests; a client without it is refused by the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_that_wants_a_token_gets_it_from_the_flag() {
    let addr = free_addr();
    let Some(server) = NatsServer::start_with(&addr, &["--auth", "s3cret-token"]) else {
        return;
    };
    let opts = Opts {
        extra: vec![
            "--nats".into(),
            server.url(),
            "--nats-token".into(),
            "s3cret-token".into(),
        ],
        ..Opts::default()
    };
    let m = Master::start(opts).await;
    let refused = async_nats::connect(server.url()).await;
    assert!(refused.is_err(), "a client without the token was let in");
    let bus = async_nats::ConnectOptions::new()
        .token("s3cret-token".into())
        .connect(server.url())
        .await
        .unwrap();
    let reply = eventually(Duration::from_secs(10), "a reply over NATS", || {
        request(&bus, "meshplay.dispatch.user.1.echo", br#""hi""#)
    })
    .await;
    let body: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(body["results"][0]["plugin"], "echo", "{body}");
    assert!(!m.log().contains("s3cret-token"), "the token was logged");
}
