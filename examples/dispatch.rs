//! Dispatch events to a running master through the REST API, with typed
//! requests and answers.
//!
//! ```text
//! cargo run --release -- serve            # in one terminal
//! cargo run --example dispatch            # in another
//! ```
//!
//! The example finds the master the way the CLI does: `endpoint.json` and
//! `admin-token` in the data directory (`MESHPLAY_DATA_DIR`, default
//! `~/.meshplay`).

use meshplay::client::{ApiClient, DispatchOutcome};
use meshplay::datadir;
use meshplay::rest::DispatchRequest;
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = ApiClient::from_data_dir(&datadir::path_from_env())?;
    let version = client.version().await?;
    println!(
        "connected to {} {} at {}",
        version.name,
        version.version,
        client.addr()
    );

    // Three members join guild 1; the greeter plugin keeps count.
    for name in ["Ada", "Grace", "Edsger"] {
        let request = DispatchRequest {
            name: "member_join".into(),
            data: json!({ "name": name }),
            wait: true,
            timeout_ms: Some(2_000),
        };
        match client.dispatch("guild", "1", &request).await? {
            DispatchOutcome::Done(answer) => {
                for result in answer.results {
                    match (result.value, result.error) {
                        (Some(value), _) => println!(
                            "worker {} / {}: {}",
                            answer.worker, result.plugin, value["message"]
                        ),
                        (_, Some(error)) => println!(
                            "{} failed: {} ({})",
                            result.plugin, error.message, error.code
                        ),
                        (None, None) => println!("{}: no answer", result.plugin),
                    }
                }
            }
            DispatchOutcome::Accepted(_) => unreachable!("we asked to wait"),
        }
    }

    // Errors are typed too: an event no plugin handles is `not_found`.
    let nobody = DispatchRequest {
        name: "no_such_event".into(),
        data: json!(null),
        wait: true,
        timeout_ms: None,
    };
    if let Err(e) = client.dispatch("guild", "1", &nobody).await {
        println!("as expected: {e} (code {:?})", e.code());
    }
    Ok(())
}
