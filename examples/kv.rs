//! A tenant's KV store from outside, as an operator's tool reads and
//! mends it: set, get, find by pattern a page at a time, delete.
//!
//! ```text
//! cargo run --release -- serve            # in one terminal
//! cargo run --example kv                  # in another
//! ```
//!
//! It finds the master the way the CLI does (`MESHPLAY_DATA_DIR`, default
//! `~/.meshplay`) and works on tenant `user:kv-example`, scope `notes`.

use meshplay::client::ApiClient;
use meshplay::datadir;
use serde_json::json;

const KIND: &str = "user";
const ID: &str = "kv-example";
const SCOPE: &str = "notes";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = ApiClient::from_data_dir(&datadir::path_from_env())?;

    for (key, text) in [
        ("2026-12-01", "ship it"),
        ("2026-12-02", "fix it"),
        ("todo", "docs"),
    ] {
        client
            .kv_set(KIND, ID, SCOPE, key, &json!({ "text": text }))
            .await?;
    }
    let one = client.kv_get(KIND, ID, SCOPE, "todo").await?;
    println!(
        "todo = {}",
        one.map_or("(none)".into(), |r| r.value.to_string())
    );

    // Keys matching a LIKE pattern, in key order, a page at a time.
    let mut after: Option<String> = None;
    let mut dated = 0;
    loop {
        let page = client
            .kv_find(KIND, ID, SCOPE, "2026-%", after.as_deref())
            .await?;
        for record in &page.records {
            println!("{} = {}", record.key, record.value);
            dated += 1;
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    println!("{dated} dated notes");

    let deleted = client.kv_delete(KIND, ID, SCOPE, "todo").await?;
    println!("todo deleted: {}", deleted.deleted);
    if dated != 2 || client.kv_get(KIND, ID, SCOPE, "todo").await?.is_some() {
        return Err("the store did not answer as written".into());
    }
    Ok(())
}
