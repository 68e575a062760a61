//! `meshplay dev`: a master for one author, which follows the sources.
//!
//! It runs a [`LocalHost`] (a master and one worker in this process) on a
//! data directory kept between runs (`.meshplay-dev` by default, so
//! `meshplay dispatch --data-dir .meshplay-dev ...` reaches it), and
//! watches ([`notify`]) the plugin folders and filter crates it was given:
//!
//! - a plugin folder that changes is checked as the master would
//!   ([`folders::check`]) and pushed; when it does not build, the error is
//!   printed and the last good version keeps answering;
//! - a filter crate that changes is built with its build command
//!   ([`scaffold::filter_build`]) and its module pushed; a build that
//!   fails prints the compiler's last lines and keeps the last good
//!   module;
//! - with `--test`, a plugin's tests run after each reload that took, in a
//!   child `meshplay test` (tests move the clock, which is one per
//!   process).
//!
//! Changes are taken [`QUIET`] after the last write, so that an editor's
//! save (often several writes) is one reload.
//!
//! Modules:
//!
//! - `sources`: what `meshplay dev` follows.

mod sources;

use crate::author::host::{HostPlan, LocalHost};
use crate::author::logbook::Logbook;
use crate::author::{AuthorError, folders, scaffold};
use crate::client::ApiClient;
use crate::rest::PluginUpload;
pub use sources::Sources;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long the sources must be still before a change is taken.
pub const QUIET: Duration = Duration::from_millis(150);

/// The lines of a failed build that are printed.
const BUILD_LINES: usize = 20;

/// How `meshplay dev` runs.
#[derive(Debug, Clone)]
pub struct DevPlan {
    /// The plugin folders and filter crates to follow.
    pub sources: Sources,
    /// The host: data directory, API address, filters, networks.
    pub host: HostPlan,
    /// Run a plugin's tests after each reload.
    pub test: bool,
}

/// Runs until `stop` resolves: builds, starts, watches, reloads.
///
/// Fails when the host cannot start or the sources cannot be watched;
/// a plugin that does not build or a crate that does not compile is
/// printed and waited on, never a failure.
pub async fn run(
    plan: DevPlan,
    logbook: &Logbook,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), AuthorError> {
    let printing = tokio::spawn(print_logs(logbook.clone()));
    let mut host = plan.host.clone();
    host.plugins = plan.sources.plugins.clone();
    let local = LocalHost::start(&host).await?;
    let client = local.client().clone();
    banner(&plan, &local);
    forget_stale_uploads(&client, &plan.sources).await;
    for krate in &plan.sources.crates {
        rebuild_filter(&client, krate).await;
    }
    for plugin in &plan.sources.plugins {
        reload_plugin(&client, plugin, false).await;
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _watcher = plan.sources.watch(tx)?;
    println!("watching for changes; Ctrl-C to stop");
    tokio::pin!(stop);
    loop {
        let first = tokio::select! {
            () = &mut stop => break,
            p = rx.recv() => match p { Some(p) => p, None => break },
        };
        let mut changed = BTreeSet::from([first]);
        while let Ok(Some(p)) = tokio::time::timeout(QUIET, rx.recv()).await {
            changed.insert(p);
        }
        for krate in plan.sources.crates_of(&changed) {
            rebuild_filter(&client, &krate).await;
        }
        for plugin in plan.sources.plugins_of(&changed) {
            reload_plugin(&client, &plugin, plan.test).await;
        }
    }
    local.stop().await;
    printing.abort();
    Ok(())
}

/// What handlers log, printed as it comes.
async fn print_logs(logbook: Logbook) {
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (lines, dropped) = logbook.take();
        for l in lines {
            println!("[{}] {}: {}", l.level, l.tenant, l.line);
        }
        if dropped > 0 {
            println!("... {dropped} more lines");
        }
    }
}

fn banner(plan: &DevPlan, local: &LocalHost) {
    let names = |v: &[PathBuf]| {
        v.iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "meshplay dev: plugins [{}], filter crates [{}]",
        names(&plan.sources.plugins),
        names(&plan.sources.crates)
    );
    println!("  API     http://{}", local.api_addr());
    if let Some(dir) = &plan.host.data_dir {
        println!("  data    {}", dir.display());
        println!(
            "  try     MESHPLAY_DATA_DIR={} meshplay dispatch TYPE ID EVENT --data JSON",
            dir.display()
        );
    }
}

/// Plugins uploaded in an earlier run whose folder is not followed now.
async fn forget_stale_uploads(client: &ApiClient, sources: &Sources) {
    let Ok(list) = client.plugins().await else {
        return;
    };
    let followed: BTreeSet<String> = sources
        .plugins
        .iter()
        .filter_map(|f| folders::check(f).ok().map(|p| p.manifest.name))
        .collect();
    for p in list.plugins {
        if p.source == crate::rest::Source::Uploaded && !followed.contains(&p.name) {
            let _ = client.delete_plugin(&p.name).await;
        }
    }
}

/// Checks and pushes the plugin in `folder`; prints what came of it.
pub async fn reload_plugin(client: &ApiClient, folder: &Path, test: bool) {
    let shown = folder.display();
    let plugin = match folders::check(folder) {
        Ok(p) => p,
        Err(e) => {
            println!("✗ {shown}: {e}\n  (the last good version keeps answering)");
            return;
        }
    };
    let upload = PluginUpload {
        manifest: plugin.bundle.manifest.clone(),
        files: plugin.bundle.files.clone(),
    };
    match client.put_plugin(&plugin.manifest.name, &upload).await {
        Ok(changed) => println!(
            "✓ {shown}: plugin {} reloaded (revision {})",
            plugin.manifest.name, changed.revision
        ),
        Err(e) => {
            println!(
                "✗ {shown}: the master refused it: {e}\n  (the last good version keeps answering)"
            );
            return;
        }
    }
    if test {
        run_tests(folder).await;
    }
}

/// `meshplay test FOLDER` in a child process, its output passed through.
async fn run_tests(folder: &Path) {
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let status = tokio::process::Command::new(exe)
        .arg("test")
        .arg(folder)
        .status()
        .await;
    if let Err(e) = status {
        println!("✗ cannot run the tests of {}: {e}", folder.display());
    }
}

/// Builds the filter crate in `krate` and pushes its module; prints what
/// came of it.
pub async fn rebuild_filter(client: &ApiClient, krate: &Path) {
    let shown = krate.display();
    let name = krate
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (command, module) = match scaffold::filter_build(krate) {
        Ok(b) => b,
        Err(e) => {
            println!("✗ {shown}: {e}");
            return;
        }
    };
    println!("… {shown}: {}", command.join(" "));
    let built = tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .current_dir(krate)
        .output()
        .await;
    match built {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let lines: Vec<&str> = stderr.lines().collect();
            println!("✗ {shown}: the build failed (the last good module keeps running):");
            for line in &lines[lines.len().saturating_sub(BUILD_LINES)..] {
                println!("  {line}");
            }
            return;
        }
        Err(e) => {
            println!("✗ {shown}: cannot run {}: {e}", command[0]);
            return;
        }
    }
    let bytes = match std::fs::read(&module) {
        Ok(b) => b,
        Err(e) => {
            println!("✗ {shown}: {}: {e}", module.display());
            return;
        }
    };
    match client.put_filter(&name, bytes).await {
        Ok(changed) => println!(
            "✓ {shown}: filter {name} rebuilt and loaded (revision {})",
            changed.revision
        ),
        Err(e) => println!("✗ {shown}: the master refused the module: {e}"),
    }
}
