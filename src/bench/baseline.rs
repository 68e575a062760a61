//! The raw limits Meshplay's figures are held against, measured in the same
//! run on the same machine: the building blocks without Meshplay around
//! them.
//!
//! - [`ws_echo`]: tokio-tungstenite echoing binary frames over loopback,
//!   pipelined like the hub (one connection per worker, many requests in
//!   flight, answers matched in order);
//! - [`h2_echo`]: an axum HTTP/2 (prior knowledge) server answering a body,
//!   called through the same hyper client the DB endpoints use;
//! - [`http1_echo`]: the same over HTTP/1.1 keep-alive, as REST is spoken;
//! - [`sled_ops`]: sled `insert` + `flush` (durable) and `get`;
//! - [`wasm_call`]: a call of a filter on one live wasmtime instance (no
//!   fresh instance per call);
//! - [`luau_call`]: one call of the echo handler in a plain mlua state.

use crate::bench::load::{LoadPlan, Measured, drive, spin};
use crate::wire::writer::{Batched, write_batch};
use axum::serve::ListenerExt;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// A baseline that could not run.
#[derive(Debug, thiserror::Error)]
#[error("baseline {what}: {message}")]
pub struct BaselineError {
    what: &'static str,
    message: String,
}

fn fail(what: &'static str) -> impl Fn(String) -> BaselineError {
    move |message| BaselineError { what, message }
}

/// One pipelined WebSocket connection: frames out in call order, answers
/// matched to callers in the same order (an echo server keeps it).
struct Pipe {
    order: Mutex<Order>,
}

/// The outgoing frames and, in the same order, who waits for each answer.
type Order = (
    mpsc::UnboundedSender<Vec<u8>>,
    VecDeque<oneshot::Sender<()>>,
);

impl Pipe {
    async fn call(&self, frame: Vec<u8>) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        {
            let mut order = self.order.lock().expect("not poisoned");
            order.0.send(frame).map_err(|_| "closed".to_string())?;
            order.1.push_back(tx);
        }
        rx.await.map_err(|_| "closed".to_string())
    }
}

/// The WebSocket settings Mesophyll's connections read with.
fn config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(crate::mesophyll::codec::READ_BUFFER_BYTES)
}

/// Echoes `frame` over `connections` loopback WebSocket connections with
/// `load.concurrency` callers, each end reading as Mesophyll's do.
pub async fn ws_echo(
    load: &LoadPlan,
    connections: usize,
    frame: Vec<u8>,
) -> Result<Measured, BaselineError> {
    let err = fail("ws-echo");
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| err(e.to_string()))?;
    let addr = listener.local_addr().map_err(|e| err(e.to_string()))?;
    let server = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let Ok(mut ws) =
                    tokio_tungstenite::accept_async_with_config(tcp, Some(config())).await
                else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_binary() && ws.send(msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let mut pipes = Vec::new();
    for _ in 0..connections.max(1) {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| err(e.to_string()))?;
        tcp.set_nodelay(true).map_err(|e| err(e.to_string()))?;
        let (ws, _) = tokio_tungstenite::client_async_with_config(
            format!("ws://{addr}/"),
            tcp,
            Some(config()),
        )
        .await
        .map_err(|e| err(e.to_string()))?;
        let (mut sink, mut stream) = ws.split();
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let pipe = Arc::new(Pipe {
            order: Mutex::new((out_tx, VecDeque::new())),
        });
        // Batched like the hub's writer: the same transport, at its best.
        tokio::spawn(async move {
            while let Some(frame) = out_rx.recv().await {
                let more = || out_rx.try_recv().ok();
                let to_message = |f: Vec<u8>| Batched::Frame(Message::binary(f));
                if write_batch(&mut sink, frame, more, to_message)
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        let reader = Arc::clone(&pipe);
        tokio::spawn(async move {
            while let Some(Ok(_)) = stream.next().await {
                let next = reader.order.lock().expect("not poisoned").1.pop_front();
                if let Some(tx) = next {
                    let _ = tx.send(());
                }
            }
        });
        pipes.push(pipe);
    }
    let pipes = Arc::new(pipes);
    let measured = drive(load, move |n| {
        let pipes = Arc::clone(&pipes);
        let frame = frame.clone();
        async move { pipes[n as usize % pipes.len()].call(frame).await }
    })
    .await;
    server.abort();
    Ok(measured)
}

/// Posts `body` to a bare HTTP/2 echo route with `load.concurrency` callers
/// over one multiplexed connection.
pub async fn h2_echo(load: &LoadPlan, body: Vec<u8>) -> Result<Measured, BaselineError> {
    http_echo(load, body, true).await
}

/// Posts `body` to a bare HTTP/1.1 echo route (axum, as the REST API is
/// served) with `load.concurrency` callers on pooled keep-alive
/// connections (as the REST client makes them): the REST transport's limit.
pub async fn http1_echo(load: &LoadPlan, body: Vec<u8>) -> Result<Measured, BaselineError> {
    http_echo(load, body, false).await
}

async fn http_echo(load: &LoadPlan, body: Vec<u8>, h2: bool) -> Result<Measured, BaselineError> {
    let err = fail(if h2 { "h2-echo" } else { "http1-echo" });
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| err(e.to_string()))?;
    let addr = listener.local_addr().map_err(|e| err(e.to_string()))?;
    let app = axum::Router::new().route("/echo", axum::routing::post(|b: Bytes| async move { b }));
    let server = tokio::spawn(async move {
        let _ = axum::serve(
            listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            }),
            app,
        )
        .await;
    });
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let http: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(h2)
        .build(connector);
    let uri: hyper::Uri = format!("http://{addr}/echo")
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| err(e.to_string()))?;
    let body = Bytes::from(body);
    let measured = drive(load, move |_| {
        let (http, uri, body) = (http.clone(), uri.clone(), body.clone());
        async move {
            let req = hyper::Request::post(uri)
                .header("content-type", "application/msgpack")
                .body(Full::new(body))
                .map_err(|e| e.to_string())?;
            let res = http
                .request(req)
                .await
                .map_err(|_| "transport".to_string())?;
            res.into_body()
                .collect()
                .await
                .map_err(|_| "transport".to_string())?;
            Ok(())
        }
    })
    .await;
    server.abort();
    Ok(measured)
}

/// sled in a temporary directory: (durable set = insert + flush, get), one
/// caller each, `duration` each.
pub fn sled_ops(
    duration: Duration,
    value_len: usize,
) -> Result<(Measured, Measured), BaselineError> {
    let err = fail("sled");
    let dir = tempfile::tempdir().map_err(|e| err(e.to_string()))?;
    let db = sled::open(dir.path()).map_err(|e| err(e.to_string()))?;
    let value = vec![7u8; value_len];
    let mut n = 0u64;
    let set = spin(duration, || {
        n += 1;
        db.insert(format!("k{}", n % 10_000), value.as_slice())
            .map_err(|e| e.to_string())?;
        db.flush().map(|_| ()).map_err(|e| e.to_string())
    });
    let mut n = 0u64;
    let get = spin(duration, || {
        n += 1;
        db.get(format!("k{}", n % 10_000))
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    Ok((set, get))
}

/// Calls filter `module` on one live instance (allocating its input anew
/// each time, as the host does) for `duration`. Only the calls are timed:
/// filters built with the SDK never free (a fresh instance is their normal
/// life), so every 10,000 calls the instance is replaced, off the clock.
pub fn wasm_call(
    duration: Duration,
    module: &[u8],
    input: &[u8],
) -> Result<Measured, BaselineError> {
    use wasmtime::{Engine, Linker, Module, Store};
    let err = fail("wasm-call");
    let engine = Engine::default();
    let module = Module::from_binary(&engine, module).map_err(|e| err(format!("{e:#}")))?;
    let mut linker: Linker<()> = Linker::new(&engine);
    linker
        .func_wrap("meshplay", "log", |_: i32, _: i32, _: i32| {})
        .and_then(|l| l.func_wrap("meshplay", "now_ms", || 0i64))
        .map_err(|e| err(format!("{e:#}")))?;
    let len = input.len() as i32;
    let mut m = Measured::default();
    let mut timed = Duration::ZERO;
    while timed < duration {
        let mut store = Store::new(&engine, ());
        let instance = linker
            .instantiate(&mut store, &module)
            .map_err(|e| err(format!("{e:#}")))?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| err("no memory".into()))?;
        let alloc = instance
            .get_typed_func::<i32, i32>(&mut store, "meshplay_alloc")
            .map_err(|e| err(format!("{e:#}")))?;
        let run = instance
            .get_typed_func::<(i32, i32), i64>(&mut store, "meshplay_filter")
            .map_err(|e| err(format!("{e:#}")))?;
        for _ in 0..10_000 {
            let t0 = std::time::Instant::now();
            let result = (|| -> Result<(), String> {
                let ptr = alloc
                    .call(&mut store, len)
                    .map_err(|_| "trap".to_string())?;
                memory
                    .write(&mut store, ptr as u32 as usize, input)
                    .map_err(|_| "bounds".to_string())?;
                let packed = run
                    .call(&mut store, (ptr, len))
                    .map_err(|_| "trap".to_string())?;
                let (p, l) = (
                    (packed as u64 >> 32) as usize,
                    packed as u64 as u32 as usize,
                );
                let mut out = vec![0u8; l];
                memory
                    .read(&store, p, &mut out)
                    .map_err(|_| "bounds".to_string())
            })();
            let took = t0.elapsed();
            timed += took;
            m.record(took);
            match result {
                Ok(()) => m.ok += 1,
                Err(kind) => *m.errors.entry(kind).or_default() += 1,
            }
            if timed >= duration {
                break;
            }
        }
    }
    m.elapsed = timed;
    Ok(m)
}

/// The shipped echo plugin's entry file: what the benchmark's master runs
/// and what the baseline Luau call calls, so both measure the same handler.
pub const ECHO_HANDLER: &str = include_str!("../../plugins/echo/init.luau");

/// The shipped echo plugin's manifest.
pub const ECHO_MANIFEST: &str = include_str!("../../plugins/echo/plugin.toml");

/// Calls the echo handler in a plain mlua state (no sandbox, no deadline)
/// with an event table built per call, as a worker does.
pub fn luau_call(duration: Duration) -> Result<Measured, BaselineError> {
    use mlua::{Function, Lua, Table};
    let err = fail("luau-call");
    let lua = Lua::new();
    let handlers: Table = lua
        .load(ECHO_HANDLER)
        .eval()
        .map_err(|e| err(e.to_string()))?;
    let echo: Function = handlers.get("echo").map_err(|e| err(e.to_string()))?;
    Ok(spin(duration, || {
        let event = lua.create_table().map_err(|e| e.to_string())?;
        event.set("name", "echo").map_err(|e| e.to_string())?;
        event.set("data", 1).map_err(|e| e.to_string())?;
        let tenant = lua.create_table().map_err(|e| e.to_string())?;
        tenant.set("type", "user").map_err(|e| e.to_string())?;
        tenant.set("id", "1").map_err(|e| e.to_string())?;
        event.set("tenant", tenant).map_err(|e| e.to_string())?;
        echo.call::<Table>(event)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }))
}
