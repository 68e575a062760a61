//! The example programs (`examples/`) run against a real master and do
//! what their comments say: `cargo test` builds them, and this runs each
//! with `MESHPLAY_DATA_DIR` pointing at a master started here.

mod common;

use common::{Master, Opts};
use std::path::PathBuf;
use std::process::Command;

/// Where cargo put example `name`, beside this test's own executable.
fn example(name: &str) -> PathBuf {
    let deps = std::env::current_exe().unwrap();
    deps.parent()
        .and_then(|d| d.parent())
        .map(|profile| profile.join("examples").join(name))
        .unwrap()
}

/// Runs example `name` against `m`; its standard output.
fn run(m: &Master, name: &str) -> String {
    let out = Command::new(example(name))
        .env("MESHPLAY_DATA_DIR", m.data_dir())
        .output()
        .unwrap_or_else(|e| panic!("cannot run the {name} example: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_runs_against_a_master() {
    let m = Master::start(Opts::default()).await;
    let dispatch = run(&m, "dispatch");
    assert!(dispatch.contains("member"), "{dispatch}");
    let stream = run(&m, "stream");
    assert!(
        stream.starts_with("1000 of 1000 echo events answered"),
        "{stream}"
    );
    let kv = run(&m, "kv");
    assert!(
        kv.contains("2 dated notes") && kv.contains("todo deleted: true"),
        "{kv}"
    );
    let admin = run(&m, "admin");
    assert!(admin.contains("admin-example in force: true"), "{admin}");
    assert!(
        admin.contains("the reader may not remove it: 403"),
        "{admin}"
    );
}
