//! Workers that join from elsewhere: `meshplay join-token` mints what they
//! join with, `meshplay worker --join wss://...` takes a slot over TLS and
//! serves it, outlives a master restart with its VMs, and stops when its
//! join token is revoked or it is told to (SIGTERM). Bad tokens are refused
//! with a reason.
//!
//! The worker runs on this machine here; `netns.rs` runs one on another
//! (network namespace).

mod common;

use common::{EXE, Guard, Master, Opts, alive, event, eventually, free_addr, tenants_on};
use meshplay::client::ApiClient;
use meshplay::rest::{JoinTokenList, Role, WorkerState, Workers};
use meshplay::tls::{TlsClient, Trust};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn opts(addrs: (String, String)) -> Opts {
    Opts {
        workers: 2,
        external: 1,
        addrs,
        extra: vec!["--tls".into()],
        ..Opts::default()
    }
}

/// Mints a join token with the CLI; returns its file and the token.
fn join_token(m: &Master, ttl: &str) -> (PathBuf, String) {
    let (code, out, err) = m.cli(&["join-token", "create", "--ttl", ttl]);
    assert_eq!(code, 0, "{err}");
    let token = out.trim().to_owned();
    assert_eq!(token.len(), 64, "{out}");
    let file = m.data_dir().join(format!("join-{}", &token[..8]));
    std::fs::write(&file, format!("{token}\n")).unwrap();
    (file, token)
}

/// Starts `meshplay worker --join` against `m`'s hub; its log goes to
/// `log`.
fn join(m: &Master, token_file: &Path, log: &Path, extra: &[&str]) -> Guard {
    Guard(
        Command::new(EXE)
            .args(["worker", "--join"])
            .arg(format!(
                "wss://localhost:{}",
                m.endpoint.mesophyll_addr.port()
            ))
            .arg("--token-file")
            .arg(token_file)
            .arg("--ca-file")
            .arg(m.data_dir().join("tls/ca.pem"))
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

/// Waits for `guard`'s process to exit; its exit code.
fn exit_code(guard: &mut Guard, limit: Duration) -> Option<i32> {
    let until = Instant::now() + limit;
    loop {
        if let Some(status) = guard.0.try_wait().unwrap() {
            return status.code();
        }
        assert!(Instant::now() < until, "the worker did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `POST /join` with `body`, by hand over TLS; the whole answer, lossily
/// as text (MessagePack strings stay readable).
async fn post_join(m: &Master, token: &str, body: Vec<u8>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tls = TlsClient::new(&Trust::Ca(m.data_dir().join("tls/ca.pem"))).unwrap();
    let port = m.endpoint.mesophyll_addr.port();
    let mut s = meshplay::tls::connect(&format!("localhost:{port}"), Some(&tls))
        .await
        .unwrap();
    let head = format!(
        "POST /join HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {token}\r\n\
         content-type: application/msgpack\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let _ = s.write_all(&body).await;
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}

async fn workers(m: &Master) -> Workers {
    m.client.workers().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joined_worker_serves_its_slot_and_outlives_its_master() {
    let addrs = (free_addr(), free_addr());
    let mut m = Master::start(opts(addrs.clone())).await;
    let (file, token) = join_token(&m, "10m");
    let log = m.data_dir().join("joined.log");
    let mut worker = join(&m, &file, &log, &[]);
    m.wait_connected(2).await;

    let w = workers(&m).await;
    let slot = &w.workers[1];
    let joined = slot.joined.as_ref().expect("slot 1 is joined");
    assert_eq!((slot.managed, slot.pid), (false, Some(worker.0.id())));
    assert_eq!(joined.pid, worker.0.id());
    let (_, out, _) = m.cli(&["workers"]);
    assert!(out.contains("joined") && out.contains("managed"), "{out}");
    let (_, out, _) = m.cli(&["join-token", "list", "--json"]);
    let list: JoinTokenList = serde_json::from_str(&out).unwrap();
    assert_eq!(list.tokens.len(), 1);
    assert_eq!(list.tokens[0].workers[0].worker_id, 1);
    // Join tokens are not API tokens: not listed with them, and no way in.
    let (_, out, _) = m.cli(&["tokens", "list", "--json"]);
    assert!(!out.contains(&list.tokens[0].info.id), "{out}");
    let pinned = Trust::Pinned(m.data_dir().join("tls/cert.pem"));
    let as_join = ApiClient::connect_to(&m.client.url(), token.clone(), Some(&pinned)).unwrap();
    let e = as_join.workers().await.unwrap_err();
    assert_eq!(e.status().map(|s| s.as_u16()), Some(401), "{e}");
    let e = m.client.create_token(Role::Join, None).await.unwrap_err();
    assert_eq!(e.code(), Some("bad_request"), "{e}");

    // Tenants on both shards answer; the joined worker keeps a VM.
    for worker_id in 0..2 {
        for t in tenants_on("user", worker_id, 2, 2) {
            m.client
                .dispatch(&t.kind, &t.id, &event("echo", serde_json::json!(1)))
                .await
                .unwrap();
        }
    }
    let vms = eventually(Duration::from_secs(10), "a heartbeat with VMs", || async {
        let w = m.client.workers().await.ok()?;
        Some(w.workers[1].vms).filter(|&v| v >= 2)
    })
    .await;

    // The master goes; the joined worker stays, and is back with the next
    // master (same ports, same data), its VMs kept.
    m.stop();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        alive(worker.0.id()),
        "the joined worker outlives its master"
    );
    let m = Master::start_in(opts(addrs), std::sync::Arc::clone(&m.dir)).await;
    let back = eventually(
        Duration::from_secs(30),
        "the joined worker back",
        || async {
            let w = m.client.workers().await.ok()?;
            let w = w.workers.into_iter().nth(1)?;
            (w.state == WorkerState::Running && w.vms > 0).then_some(w)
        },
    )
    .await;
    assert_eq!(back.pid, Some(worker.0.id()), "the same process");
    assert!(
        back.vms >= vms.min(2),
        "its VMs kept: {} of {vms}",
        back.vms
    );
    let t = &tenants_on("user", 1, 2, 1)[0];
    m.client
        .dispatch(&t.kind, &t.id, &event("echo", serde_json::json!(2)))
        .await
        .unwrap();

    // Revoking the join token ends its worker.
    let id = list.tokens[0].info.id.clone();
    let (code, out, err) = m.cli(&["join-token", "revoke", &id]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("revoked"), "{out}");
    assert_eq!(exit_code(&mut worker, Duration::from_secs(20)), Some(1));
    let worker_log = std::fs::read_to_string(&log).unwrap();
    assert!(worker_log.contains("session is over"), "{worker_log}");
    // And nothing more joins with it.
    let log2 = m.data_dir().join("refused.log");
    let mut refused = join(&m, &file, &log2, &[]);
    assert_eq!(exit_code(&mut refused, Duration::from_secs(20)), Some(1));
    let refused_log = std::fs::read_to_string(&log2).unwrap();
    assert!(refused_log.contains("unauthorized"), "{refused_log}");
    for log in [m.log(), worker_log, refused_log] {
        assert_eq!(
            log.matches(&token).count(),
            0,
            "a join token is never logged"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_join_tokens_are_refused_and_a_signal_stops_a_joined_worker() {
    let m = Master::start(opts(("127.0.0.1:0".into(), "127.0.0.1:0".into()))).await;

    let wrong = m.data_dir().join("wrong-token");
    std::fs::write(&wrong, "x".repeat(64)).unwrap();
    let log = m.data_dir().join("wrong.log");
    let mut w = join(&m, &wrong, &log, &[]);
    assert_eq!(exit_code(&mut w, Duration::from_secs(20)), Some(1));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("unauthorized"), "{text}");

    let (expiring, _) = join_token(&m, "1s");
    std::thread::sleep(Duration::from_millis(1200));
    let log = m.data_dir().join("expired.log");
    let mut w = join(&m, &expiring, &log, &[]);
    assert_eq!(exit_code(&mut w, Duration::from_secs(20)), Some(1));

    // A slot that is not for joining.
    let (file, _) = join_token(&m, "10m");
    let log = m.data_dir().join("slot0.log");
    let mut w = join(&m, &file, &log, &["--worker-id", "0"]);
    assert_eq!(exit_code(&mut w, Duration::from_secs(20)), Some(1));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("not a slot for joining"), "{text}");

    // Bodies that are not join requests, over TLS as a worker sends them.
    let token = std::fs::read_to_string(&file).unwrap();
    for (body, status, code) in [
        (b"hello".to_vec(), "400", "bad_request"),
        (vec![0u8; 70_000], "413", ""),
    ] {
        let answer = post_join(&m, token.trim(), body).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{answer}"
        );
        assert!(answer.contains(code), "{answer}");
    }

    // Without the CA, wss:// cannot be checked: a usage error.
    let out = Command::new(EXE)
        .args(["worker", "--join", "wss://localhost:1", "--token-file"])
        .arg(&file)
        .env_remove("MESHPLAY_CA_FILE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ca-file"));

    let log = m.data_dir().join("good.log");
    let mut w = join(&m, &file, &log, &[]);
    m.wait_connected(2).await;
    common::signal(w.0.id(), libc::SIGTERM);
    assert_eq!(exit_code(&mut w, Duration::from_secs(10)), Some(0));
    eventually(Duration::from_secs(10), "the slot to be free", || async {
        let w = m.client.workers().await.ok()?;
        (!w.workers[1].state.eq(&WorkerState::Running)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_leaves_alone_a_slot_served_by_a_worker_started_by_hand() {
    let m = Master::start(Opts {
        workers: 3,
        external: 2,
        extra: vec!["--tls".into()],
        ..Opts::default()
    })
    .await;
    // Slot 1 served the old way: its token file, the certificate pinned.
    let token = meshplay::datadir::DataDir::at(m.data_dir())
        .worker_token(1)
        .unwrap();
    let _by_hand = Guard(
        Command::new(EXE)
            .args(["--worker", "--worker-id", "1", "--master"])
            .arg(m.endpoint.mesophyll_addr.to_string())
            .arg("--tls-pin")
            .arg(m.data_dir().join("tls/cert.pem"))
            .env("MESHPLAY_WORKER_TOKEN", token)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    m.wait_connected(2).await;
    let (file, _) = join_token(&m, "10m");
    let _joined = join(&m, &file, &m.data_dir().join("joined.log"), &[]);
    m.wait_connected(3).await;
    let w = workers(&m).await;
    assert!(w.workers[1].joined.is_none(), "{:?}", w.workers[1]);
    assert_eq!(w.workers[2].joined.as_ref().map(|j| j.worker_id), Some(2));
    // Neither pushes the other out.
    std::thread::sleep(Duration::from_millis(1500));
    let w = workers(&m).await;
    assert!(
        w.workers.iter().all(|w| w.state == WorkerState::Running),
        "{:?}",
        w.workers
    );
}
