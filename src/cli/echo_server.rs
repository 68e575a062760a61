//! `meshplay echo-server`: a small HTTP server that answers every request
//! with what it received, for trying a plugin's `http.fetch` on one
//! machine (the README's tour posts the `webhook-relay` example to it).
//!
//! It answers `{ method, path, header_names, body }`, the body parsed when
//! it is JSON. Header values are left out on purpose: what a plugin sends
//! there (an API key) should not come back into its answers.

use super::CliError;
use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Uri};
use axum::routing::any;
use clap::Args;
use std::net::SocketAddr;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub(super) struct EchoServerArgs {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:8099")]
    addr: SocketAddr,
}

async fn echo(
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::Json<serde_json::Value> {
    let mut names: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
    names.sort_unstable();
    let body = serde_json::from_slice(&body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&body).into_owned()));
    axum::Json(serde_json::json!({
        "method": method.as_str(),
        "path": uri.path(),
        "header_names": names,
        "body": body,
    }))
}

pub(super) async fn echo_server(args: EchoServerArgs) -> Result<ExitCode, CliError> {
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .map_err(|e| CliError::Usage(format!("cannot listen on {}: {e}", args.addr)))?;
    eprintln!(
        "echo server on http://{}",
        listener.local_addr().unwrap_or(args.addr)
    );
    let app = Router::new().fallback(any(echo));
    tokio::select! {
        served = axum::serve(listener, app) => {
            served.map_err(|e| CliError::Usage(format!("echo server: {e}")))?;
        }
        _ = super::serve::signals() => {}
    }
    Ok(ExitCode::SUCCESS)
}
