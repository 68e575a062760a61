//! Many events over one connection: the binary client API
//! (`GET /api/v1/stream`, MessagePack frames on a WebSocket), with 64
//! requests in flight and answers matched by id as they come.
//!
//! ```text
//! cargo run --release -- serve            # in one terminal
//! cargo run --example stream              # in another
//! ```
//!
//! It finds the master the way the CLI does (`MESHPLAY_DATA_DIR`, default
//! `~/.meshplay`), sends 1,000 `echo` events to 100 tenants, and prints how
//! many were answered and how fast.

use futures::StreamExt;
use meshplay::client::{ApiClient, DispatchOutcome, StreamClient};
use meshplay::datadir;
use meshplay::rest::DispatchRequest;
use serde_json::json;
use std::time::Instant;

const EVENTS: u32 = 1_000;
const IN_FLIGHT: usize = 64;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = ApiClient::from_data_dir(&datadir::path_from_env())?;
    // One connection; calls on it run side by side.
    let stream = StreamClient::connect(&client).await?;
    let started = Instant::now();
    let answered = futures::stream::iter(0..EVENTS)
        .map(|i| {
            let stream = &stream;
            async move {
                let request = DispatchRequest {
                    name: "echo".into(),
                    data: json!({ "n": i }),
                    wait: true,
                    timeout_ms: Some(5_000),
                };
                let tenant = format!("t{}", i % 100);
                match stream.dispatch("user", &tenant, request).await {
                    Ok(DispatchOutcome::Done(d)) => d.results.iter().all(|r| r.error.is_none()),
                    Ok(DispatchOutcome::Accepted(_)) => false,
                    Err(e) => {
                        eprintln!("event {i}: {e}");
                        false
                    }
                }
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await;
    let took = started.elapsed();
    println!(
        "{answered} of {EVENTS} echo events answered in {:.0} ms ({:.0} a second, {IN_FLIGHT} in flight)",
        took.as_secs_f64() * 1e3,
        f64::from(answered as u32) / took.as_secs_f64()
    );
    if answered as u32 != EVENTS {
        return Err("some events were not answered".into());
    }
    Ok(())
}
