//! An administrator's chores through the API: mint a read-only token for
//! a dashboard, upload a plugin, check it is in force, remove it, revoke
//! the token, and read what the audit log kept of it all.
//!
//! ```text
//! cargo run --release -- serve            # in one terminal
//! cargo run --example admin               # in another
//! ```
//!
//! It finds the master and its admin token the way the CLI does
//! (`MESHPLAY_DATA_DIR`, default `~/.meshplay`).

use meshplay::client::ApiClient;
use meshplay::datadir;
use meshplay::rest::{PluginUpload, Role};
use std::collections::BTreeMap;

const PLUGIN: &str = "admin-example";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let admin = ApiClient::from_data_dir(&datadir::path_from_env())?;

    // A token that can read and nothing more; its secret is shown once.
    let minted = admin.create_token(Role::Read, Some("wall-screen")).await?;
    println!(
        "minted {} ({:?}) for the wall screen",
        minted.info.id, minted.info.role
    );
    let reader = ApiClient::connect_to(&admin.url(), minted.token, None)?;
    println!(
        "the reader sees {} workers",
        reader.workers().await?.workers.len()
    );

    let upload = PluginUpload {
        manifest: format!("name = \"{PLUGIN}\"\nversion = \"0.1.0\"\nevents = [\"ping\"]\n"),
        files: BTreeMap::from([(
            "init.luau".to_owned(),
            "return { ping = function() return \"pong\" end }".to_owned(),
        )]),
    };
    let changed = admin.put_plugin(PLUGIN, &upload).await?;
    println!("{PLUGIN} uploaded: catalogue revision {}", changed.revision);
    // A read token cannot change the catalogue.
    let refused = reader.delete_plugin(PLUGIN).await.unwrap_err();
    println!("the reader may not remove it: {refused}");
    let listed = admin.plugins().await?;
    let present = listed.plugins.iter().any(|p| p.name == PLUGIN);
    println!("{PLUGIN} in force: {present}");
    admin.delete_plugin(PLUGIN).await?;

    let revoked = admin.revoke_token(&minted.info.id).await?;
    println!("token {} revoked: {}", revoked.id, revoked.revoked);
    // The audit log pages oldest first: read it through, show the end.
    let mut entries = Vec::new();
    let mut after = None;
    loop {
        let page = admin.audit(after, 500).await?;
        entries.extend(page.entries);
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    for e in entries.iter().rev().take(5).rev() {
        println!(
            "audit: {} {} {} -> {}",
            e.token, e.method, e.route, e.status
        );
    }
    if !present || refused.status().map(|s| s.as_u16()) != Some(403) {
        return Err("the master did not answer as an admin expects".into());
    }
    Ok(())
}
