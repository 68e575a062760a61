//! GraphQL against a real master: every query, asked for every field the
//! contract gives its type, answers what its REST twin answers; tokens
//! and roles are refused as REST refuses them; and the `console`
//! subscription, over a real WebSocket, sees a dispatch, a worker killed
//! and restarted, its connection's bound, and its token's revocation.

mod common;

use common::contract::ask;
use common::{Master, Opts, event, signal};
use futures::{SinkExt, StreamExt};
use meshplay::rest::Role;
use serde_json::{Map, Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Fields that move between two asks (clocks, heartbeats, the last
/// minute's counts): compared by presence only.
const MOVING: &[&str] = &[
    "since_heartbeat_s",
    "rss_bytes",
    "vms",
    "in_flight",
    "uptime_s",
    "last_minute",
    "seconds",
    "busy",
    "queued",
    "seen_ms_ago",
];

/// The selection of every field of the contract's schema `name`, nested.
fn selection(name: &str, schemas: &Map<String, Value>, depth: usize) -> String {
    let schema = &schemas[name];
    let mut fields = Vec::new();
    let parts: Vec<&Value> = match schema["allOf"].as_array() {
        Some(parts) => parts.iter().map(|p| follow(p, schemas)).collect(),
        None => vec![schema],
    };
    for part in parts {
        for (field, property) in part["properties"].as_object().into_iter().flatten() {
            match object_of(property, schemas) {
                Some(inner) if depth < 8 => fields.push(format!(
                    "{field} {{ {} }}",
                    selection(&inner, schemas, depth + 1)
                )),
                Some(_) => {}
                None => fields.push(field.clone()),
            }
        }
    }
    fields.join(" ")
}

fn follow<'a>(v: &'a Value, schemas: &'a Map<String, Value>) -> &'a Value {
    match v["$ref"].as_str() {
        Some(r) => &schemas[r.trim_start_matches("#/components/schemas/")],
        None => v,
    }
}

/// The object schema a property holds (through lists and nulls), if any.
fn object_of(property: &Value, schemas: &Map<String, Value>) -> Option<String> {
    if let Some(r) = property["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        let target = &schemas[name];
        let object = target["properties"].is_object() || target["allOf"].is_array();
        return object.then(|| name.to_owned());
    }
    if let Some(options) = property["oneOf"].as_array() {
        return options.iter().find_map(|o| object_of(o, schemas));
    }
    if property["items"].is_object() {
        return object_of(&property["items"], schemas);
    }
    None
}

/// `value` with the moving fields blanked and absent ones as null, for
/// comparing a REST answer with its GraphQL twin.
fn settled(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| {
                    let v = if MOVING.contains(&k.as_str()) {
                        json!("moving")
                    } else {
                        settled(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(settled).collect()),
        other => other.clone(),
    }
}

/// A GraphQL query over POST; the HTTP status and the body.
async fn graphql(m: &Master, token: Option<&str>, query: &str) -> (u16, Value) {
    let body = serde_json::to_vec(&json!({ "query": query })).unwrap();
    let answer = ask(m, "POST", "/api/v1/graphql", token, &[], body).await;
    (answer.status, serde_json::from_slice(&answer.body).unwrap())
}

async fn rest(m: &Master, token: &str, path: &str) -> Value {
    let answer = ask(m, "GET", path, Some(token), &[], vec![]).await;
    assert_eq!(answer.status, 200, "{path}");
    serde_json::from_slice(&answer.body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_answers_what_its_rest_twin_answers() {
    let m = Master::start(Opts::default()).await;
    let token = m.mint(Role::Read, "reader").await.token;
    let (t, id) = ("user", "graph");
    m.client
        .dispatch(t, id, &event("incr", json!({"by": 3})))
        .await
        .unwrap();
    m.client
        .kv_set(t, id, "default", "colour", &json!({"name": "teal"}))
        .await
        .unwrap();
    let doc: Value = serde_json::from_str(&meshplay::master::api::contract::to_json()).unwrap();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let tenant = format!("/api/v1/tenants/{t}/{id}");
    let args = format!("type: \"{t}\", id: \"{id}\"");
    let twins = [
        (
            "workers",
            String::new(),
            "Workers",
            "/api/v1/workers".to_owned(),
        ),
        ("status", String::new(), "Status", "/api/v1/status".into()),
        (
            "traffic",
            String::new(),
            "Traffic",
            "/api/v1/traffic".into(),
        ),
        (
            "plugins",
            String::new(),
            "PluginList",
            "/api/v1/plugins".into(),
        ),
        (
            "filters",
            String::new(),
            "FilterList",
            "/api/v1/filters".into(),
        ),
        (
            "live_tenants",
            "(limit: 10)".into(),
            "LiveTenantList",
            "/api/v1/tenants?limit=10".into(),
        ),
        (
            "tenant_state",
            format!("({args})"),
            "TenantStateEntry",
            format!("{tenant}/state"),
        ),
        (
            "kv",
            format!("({args}, scope: \"default\")"),
            "KvPage",
            format!("{tenant}/kv?scope=default"),
        ),
        (
            "kv_entry",
            format!("({args}, scope: \"default\", key: \"colour\")"),
            "KvRecord",
            format!("{tenant}/kv/default/colour"),
        ),
        (
            "schedules",
            format!("({args})"),
            "ScheduleList",
            format!("{tenant}/schedules"),
        ),
        (
            "timers",
            format!("({args})"),
            "TimerList",
            format!("{tenant}/timers"),
        ),
    ];
    for (field, arguments, ty, path) in twins {
        let query = format!(
            "{{ {field}{arguments} {{ {} }} }}",
            selection(ty, schemas, 0)
        );
        let (status, answer) = graphql(&m, Some(&token), &query).await;
        assert_eq!(status, 200, "{query}");
        assert!(answer["errors"].is_null(), "{query}: {answer}");
        let twin = rest(&m, &token, &path).await;
        assert_eq!(
            settled(&answer["data"][field]),
            settled(&twin),
            "{field} and GET {path}"
        );
    }
    // A key that is not there: null, where REST answers 404.
    let (_, answer) = graphql(
        &m,
        Some(&token),
        &format!("{{ kv_entry({args}, scope: \"default\", key: \"none\") {{ key }} }}"),
    )
    .await;
    assert_eq!(answer["data"]["kv_entry"], Value::Null, "{answer}");
    // A bad tenant: REST's error, with its code.
    let (_, answer) = graphql(
        &m,
        Some(&token),
        "{ tenant_state(type: \"\", id: \"x\") { tenant { id } } }",
    )
    .await;
    assert_eq!(
        answer["errors"][0]["extensions"]["code"], "bad_request",
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_roles_are_refused_as_in_rest() {
    let m = Master::start(Opts::default()).await;
    let read = m.mint(Role::Read, "reader").await;
    let join = m
        .client
        .create_join_token(Some(60), Some("join"))
        .await
        .unwrap();
    let revoked = m.mint(Role::App, "gone").await;
    m.client.revoke_token(&revoked.info.id).await.unwrap();
    let query = "{ workers { bad_frames } }";
    for (who, token) in [
        ("no token", None),
        ("a wrong token", Some("not-a-token")),
        ("a join token", Some(join.token.as_str())),
        ("a revoked token", Some(revoked.token.as_str())),
        ("a read token", Some(read.token.as_str())),
    ] {
        let twin = ask(&m, "GET", "/api/v1/workers", token, &[], vec![]).await;
        let (status, body) = graphql(&m, token, query).await;
        assert_eq!(status, twin.status, "{who}: {body}");
        if status != 200 {
            let twin: Value = serde_json::from_slice(&twin.body).unwrap();
            assert_eq!(body["error"]["code"], twin["error"]["code"], "{who}");
        }
    }
    // What only an admin may read over REST has no query at all.
    let (_, body) = graphql(&m, Some(&read.token), "{ tokens { tokens { id } } }").await;
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("Unknown field"),
        "{body}"
    );
    // Queries that are too deep are refused before anything runs.
    let deep = format!("{{ workers {{ workers {} }} }}", "{ joined ".repeat(14));
    let (_, body) = graphql(&m, Some(&read.token), &deep).await;
    assert!(!body["errors"].is_null(), "{body}");
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A `graphql-transport-ws` connection, acknowledged.
async fn subscriptions(m: &Master, token: &str) -> Socket {
    let url = format!("ws://{}/api/v1/graphql", m.endpoint.api_addr);
    let mut request = url.into_client_request().unwrap();
    let headers = request.headers_mut();
    headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
    headers.insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    send(&mut socket, json!({"type": "connection_init"})).await;
    assert_eq!(next(&mut socket).await["type"], "connection_ack");
    socket
}

async fn send(socket: &mut Socket, message: Value) {
    socket
        .send(Message::text(message.to_string()))
        .await
        .unwrap();
}

/// The next message (pings answered), within 20 s.
async fn next(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(20), socket.next())
            .await
            .expect("a message within 20 s")
            .expect("the socket open")
            .unwrap();
        if let Message::Text(text) = message {
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["type"] == "ping" {
                send(socket, json!({"type": "pong"})).await;
                continue;
            }
            return value;
        }
    }
}

/// The next console event of subscription `id` for which `wanted` holds
/// (other subscriptions' messages are passed over).
async fn console_event(socket: &mut Socket, id: &str, wanted: impl Fn(&Value) -> bool) -> Value {
    loop {
        let message = next(socket).await;
        if message["id"] != id {
            continue;
        }
        assert_eq!(message["type"], "next", "{message}");
        let event = &message["payload"]["data"]["console"];
        if wanted(event) {
            return event.clone();
        }
    }
}

const CONSOLE: &str = "subscription { console { kind hello { workers } \
    dispatch { tenant event result worker } worker { worker state reason } lagged { skipped } } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_subscription_sees_dispatches_and_workers_restart() {
    let m = Master::start(Opts::default()).await;
    let read = m.mint(Role::Read, "watcher").await;
    let mut socket = subscriptions(&m, &read.token).await;
    let subscribe =
        |id: &str| json!({"id": id, "type": "subscribe", "payload": {"query": CONSOLE}});
    send(&mut socket, subscribe("1")).await;
    let hello = console_event(&mut socket, "1", |e| e["kind"] == "hello").await;
    assert_eq!(hello["hello"]["workers"], 2);

    m.client
        .dispatch("user", "watched", &event("incr", json!({})))
        .await
        .unwrap();
    let seen = console_event(&mut socket, "1", |e| e["kind"] == "dispatch").await;
    assert_eq!(seen["dispatch"]["tenant"], "user:watched", "{seen}");
    assert_eq!(seen["dispatch"]["event"], "incr");

    let pid = m.worker(0).await.pid.unwrap();
    signal(pid, libc::SIGKILL);
    let gone = console_event(&mut socket, "1", |e| e["kind"] == "worker").await;
    assert_eq!(gone["worker"]["worker"], 0, "{gone}");
    assert_eq!(gone["worker"]["state"], "disconnected", "{gone}");
    // The socket's close or the supervisor's kick, whichever comes first.
    let reason = gone["worker"]["reason"].as_str().unwrap_or_default();
    assert!(["closed", "kicked"].contains(&reason), "{gone}");
    let back = console_event(&mut socket, "1", |e| e["kind"] == "worker").await;
    assert_eq!(back["worker"]["state"], "connected", "{back}");

    // Four subscriptions on one connection, and the fifth refused.
    for id in ["2", "3", "4"] {
        send(&mut socket, subscribe(id)).await;
        console_event(&mut socket, id, |e| e["kind"] == "hello").await;
    }
    send(&mut socket, subscribe("5")).await;
    let refused = loop {
        let message = next(&mut socket).await;
        if message["id"] == "5" {
            break message;
        }
    };
    let code = &refused["payload"]["errors"][0]["extensions"]["code"];
    assert_eq!(code, "too_many_subscriptions", "{refused}");

    // Revoking the token ends every subscription it holds.
    m.client.revoke_token(&read.info.id).await.unwrap();
    let mut completed = std::collections::BTreeSet::new();
    completed.insert(String::from("5"));
    while completed.len() < 5 {
        let message = next(&mut socket).await;
        if message["type"] == "complete" {
            completed.insert(message["id"].as_str().unwrap().to_owned());
        }
    }
}
