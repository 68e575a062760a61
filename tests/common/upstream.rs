//! A real HTTP server on loopback for the fetches of tests' plugins: it
//! echoes, redirects, answers late, streams without end and counts.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A running upstream; it stops with the test's runtime.
pub struct Upstream {
    pub addr: SocketAddr,
    hits: Arc<AtomicU64>,
}

impl Upstream {
    /// Serves on a free loopback port.
    pub async fn start() -> Upstream {
        let hits = Arc::new(AtomicU64::new(0));
        let app = Router::new()
            .route("/echo", any(echo))
            .route("/redirect", any(redirect))
            .route("/slow", any(slow))
            .route("/endless", any(endless))
            .with_state(Arc::clone(&hits));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Upstream { addr, hits }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests served so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

/// The request as JSON: method, headers, body.
async fn echo(
    State(hits): State<Arc<AtomicU64>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    hits.fetch_add(1, Ordering::Relaxed);
    let headers: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_owned()))
        .collect();
    let out = json!({
        "method": method.as_str(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        out.to_string(),
    )
        .into_response()
}

/// `302` to `?to=`, or to itself.
async fn redirect(
    State(hits): State<Arc<AtomicU64>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    hits.fetch_add(1, Ordering::Relaxed);
    let to = q.get("to").cloned().unwrap_or_else(|| "/redirect".into());
    (StatusCode::FOUND, [(header::LOCATION, to)]).into_response()
}

/// Answers after `?ms=` (3000 by default).
async fn slow(
    State(hits): State<Arc<AtomicU64>>,
    Query(q): Query<HashMap<String, u64>>,
) -> &'static str {
    hits.fetch_add(1, Ordering::Relaxed);
    let ms = q.get("ms").copied().unwrap_or(3000);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    "late"
}

/// A body that never ends.
async fn endless(State(hits): State<Arc<AtomicU64>>) -> Response {
    hits.fetch_add(1, Ordering::Relaxed);
    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
    let stream = futures::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
    Response::new(Body::from_stream(stream))
}
