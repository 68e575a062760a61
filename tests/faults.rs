//! Faults and hostile input found in review, each with the test that failed
//! before its fix: real masters and workers, real sockets.

mod common;

use common::{EXE, SpawnGuard};
use meshplay::client::DispatchOutcome;
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `meshplay` with `args` and waits at most 20 s for it to exit;
/// returns its status and stderr. A process still running then is killed
/// and the test fails.
fn run_to_exit(args: &[&str]) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(EXE)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status, err);
        }
        if Instant::now() > until {
            let _ = child.kill();
            panic!("meshplay {args:?} still runs after 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_zero_or_inverted_heartbeat_is_a_usage_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    for (interval, timeout) in [("200", "0"), ("0", "1000"), ("1000", "500")] {
        let (status, err) = run_to_exit(&[
            "serve",
            "--data-dir",
            data,
            "--api-addr",
            "127.0.0.1:0",
            "--mesophyll-addr",
            "127.0.0.1:0",
            "--heartbeat-interval-ms",
            interval,
            "--heartbeat-timeout-ms",
            timeout,
        ]);
        assert_eq!(status.code(), Some(2), "{interval}/{timeout}: {err}");
        assert!(err.contains("heartbeat"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_for_a_worker_that_is_not_up_wait_for_it_within_their_deadline() {
    let (m, token) = common::with_external_worker_1().await;
    m.wait_connected(1).await;
    let t = common::tenants_on("user", 1, 2, 1).remove(0);

    // Worker 1 does not exist yet: a short budget ends in 503, but only
    // once the budget is spent, not at once.
    let started = Instant::now();
    let mut short = common::event("echo", json!(1));
    short.timeout_ms = Some(400);
    let err = m.client.dispatch(&t.kind, &t.id, &short).await.unwrap_err();
    assert_eq!(err.code(), Some("worker_unavailable"), "{err}");
    assert!(started.elapsed() >= Duration::from_millis(400), "{err}");

    // A longer one waits, and is served once the worker connects.
    let client = m.client.clone();
    let (kind, id) = (t.kind.clone(), t.id.clone());
    let waiting = tokio::spawn(async move {
        client
            .dispatch(&kind, &id, &common::event("echo", json!(7)))
            .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "answered before worker 1 existed");
    let _worker = Command::new(EXE)
        .args(["--worker", "--worker-id", "1", "--master"])
        .arg(m.endpoint.mesophyll_addr.to_string())
        .env("MESHPLAY_WORKER_TOKEN", &token)
        .stderr(Stdio::null())
        .kill_on_drop_guard();
    match waiting.await.unwrap().unwrap() {
        DispatchOutcome::Done(d) => assert_eq!(d.results[0].value.as_ref().unwrap()["data"], 7),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_worker_that_dies_is_respawned_at_once_every_time() {
    let m = common::Master::start(common::Opts::default()).await;
    m.wait_connected(2).await;
    for round in 1..=3 {
        let old = m.worker(0).await.pid.unwrap();
        common::signal(old, libc::SIGKILL);
        m.wait_restarted(0, old, Duration::from_secs(20)).await;
        m.wait_connected(2).await;
        let restarts = m
            .log()
            .lines()
            .filter(|l| l.contains("worker died; restarting") && l.contains("worker=0"))
            .map(str::to_owned)
            .collect::<Vec<_>>();
        assert_eq!(restarts.len(), round, "{restarts:#?}");
        assert!(
            restarts.iter().all(|l| l.contains("delay=0ns")),
            "a worker that had been serving waited out a back-off: {restarts:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_upload_whose_files_name_a_path_is_refused() {
    let m = common::Master::start(common::Opts::default()).await;
    let before = m.client.plugins().await.unwrap();
    for bad in ["../../x.luau", "sub/init.luau", "/etc/x.luau", ".luau"] {
        let upload = meshplay::rest::PluginUpload {
            manifest: "name = 'evil'\nversion = '1'\nevents = ['evil']".into(),
            files: [
                ("init.luau".to_string(), "return {}".to_string()),
                (bad.to_string(), "return {}".to_string()),
            ]
            .into(),
        };
        let err = m.client.put_plugin("evil", &upload).await.unwrap_err();
        assert_eq!(err.code(), Some("bad_request"), "{bad}: {err}");
        assert!(err.to_string().contains("file name"), "{bad}: {err}");
    }
    assert_eq!(m.client.plugins().await.unwrap().plugins, before.plugins);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wedged_workers_queue_is_bounded_in_bytes_and_state_changes_say_so() {
    let m = common::Master::start(common::Opts {
        heartbeat_timeout_ms: 20_000,
        extra: vec!["--worker-queue-mb".into(), "2".into()],
        ..common::Opts::default()
    })
    .await;
    m.wait_connected(2).await;
    let w0 = m.worker(0).await.pid.unwrap();
    common::signal(w0, libc::SIGSTOP);
    let t = common::tenants_on("user", 0, 2, 1).remove(0);
    let big = "x".repeat(900 * 1024);
    let mut overloaded = 0;
    for _ in 0..40 {
        let mut req = common::event("echo", json!(big));
        req.wait = false;
        match m.client.dispatch(&t.kind, &t.id, &req).await {
            Ok(_) => {}
            Err(e) if e.code() == Some("overloaded") => overloaded += 1,
            Err(e) => panic!("{e}"),
        }
    }
    // 36 MB sent at a stopped worker with a 2 MiB budget: the kernel's
    // socket buffers take some, the queue 2 MiB, the rest is refused.
    assert!(
        overloaded > 0,
        "all 40 queued: the queue is not bounded in bytes"
    );
    // The worker cannot confirm a state change: the API says so, instead
    // of answering as if the worker had it.
    let err = m
        .client
        .put_tenant_state(&t.kind, &t.id, &Default::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err.code(), Some("overloaded" | "deadline_exceeded")),
        "{err}"
    );
    assert!(err.to_string().contains("stored"), "{err}");
    common::signal(w0, libc::SIGCONT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_state_changes_leave_the_worker_with_what_the_store_has() {
    let m = common::Master::start(common::Opts::default()).await;
    m.wait_connected(2).await;
    let t = common::tenants_on("user", 0, 2, 1).remove(0);
    let subscribed = |events: &[&str]| meshplay::mesophyll::message::TenantState {
        events: Some(events.iter().map(|e| e.to_string()).collect()),
        ..Default::default()
    };
    for round in 0..20 {
        let (a, b) = (m.client.clone(), m.client.clone());
        let (ka, ia, kb, ib) = (t.kind.clone(), t.id.clone(), t.kind.clone(), t.id.clone());
        let (on, off) = (subscribed(&["echo"]), subscribed(&["nothing"]));
        let (x, y) = tokio::join!(
            tokio::spawn(async move { a.put_tenant_state(&ka, &ia, &on).await }),
            tokio::spawn(async move { b.put_tenant_state(&kb, &ib, &off).await }),
        );
        x.unwrap().unwrap();
        y.unwrap().unwrap();
        let stored = m.client.tenant_state(&t.kind, &t.id).await.unwrap().state;
        let echo = m
            .client
            .dispatch(&t.kind, &t.id, &common::event("echo", json!(round)))
            .await;
        let runs = match echo {
            Ok(_) => true,
            Err(e) if e.code() == Some("not_subscribed") => false,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            runs,
            stored.events == Some(vec!["echo".to_string()]),
            "round {round}: the worker applied the changes in another order than the store"
        );
    }
}
