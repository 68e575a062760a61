//! The web dashboard and what it watches, against the real binary: the
//! live console's event stream, the live tenants and the traffic per second
//! over plain HTTP; then the page itself in headless Chromium (Debian's
//! `chromium`, driven by `playwright-core` from npm: `tests/dashboard/`).

mod common;

use bytes::Bytes;
use common::{Master, Opts, event, eventually};
use http_body_util::{BodyExt, Empty};
use meshplay::rest::{ConsoleEntry, Role};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// An open `GET /api/v1/console`: its server-sent events, as (name, data).
struct ConsoleStream {
    body: hyper::body::Incoming,
    buffer: String,
}

impl ConsoleStream {
    async fn open(m: &Master, token: &str) -> Result<ConsoleStream, u16> {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Empty<Bytes>>();
        let req = hyper::Request::get(format!("http://{}/api/v1/console", m.endpoint.api_addr))
            .header("authorization", format!("Bearer {token}"))
            .body(Empty::new())
            .unwrap();
        let res = client.request(req).await.unwrap();
        if !res.status().is_success() {
            return Err(res.status().as_u16());
        }
        let kind = res.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(kind.starts_with("text/event-stream"), "{kind}");
        Ok(ConsoleStream {
            body: res.into_body(),
            buffer: String::new(),
        })
    }

    /// The next event with data (keep-alive comments are skipped).
    async fn next(&mut self) -> (String, Value) {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut name = String::from("message");
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if !data.is_empty() {
                    return (name, serde_json::from_str(&data).unwrap());
                }
                continue;
            }
            let frame = tokio::time::timeout(Duration::from_secs(20), self.body.frame())
                .await
                .expect("the console went quiet")
                .expect("the console ended")
                .unwrap();
            if let Ok(data) = frame.into_data() {
                self.buffer.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
    }

    /// Skips to the next event named `name`.
    async fn next_named(&mut self, name: &str) -> Value {
        loop {
            let (n, data) = self.next().await;
            if n == name {
                return data;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_streams_every_dispatch_and_every_worker_coming_and_going() {
    let m = Master::start(Opts::default()).await;
    let admin = m.admin_token();
    assert_eq!(
        ConsoleStream::open(&m, "wrong").await.err(),
        Some(401),
        "the console wants a token like any route"
    );
    // A read token may watch: the console is a GET.
    let reader = m
        .client
        .create_token(Role::Read, Some("watcher"))
        .await
        .unwrap();
    let mut console = ConsoleStream::open(&m, &reader.token).await.unwrap();
    let (name, hello) = console.next().await;
    assert_eq!((name.as_str(), hello), ("hello", json!({"workers": 2})));

    m.client
        .dispatch("user", "c1", &event("echo", json!({"n": 1})))
        .await
        .unwrap();
    let ok: ConsoleEntry = serde_json::from_value(console.next_named("dispatch").await).unwrap();
    assert_eq!((ok.tenant.as_str(), ok.event.as_str()), ("user:c1", "echo"));
    assert_eq!(ok.result, "ok");
    assert_eq!(ok.results.len(), 1);
    assert_eq!(
        ok.results[0].value.as_ref().unwrap()["data"],
        json!({"n": 1})
    );
    assert!(
        ok.request_id.as_deref().is_some_and(|r| r.len() == 16),
        "{ok:?}"
    );
    assert!(ok.elapsed_ms > 0.0);

    // A plugin's error inside a good answer, a failure of the whole
    // dispatch, and a fire-and-forget one.
    let _ = m
        .client
        .dispatch(
            "guild",
            "c2",
            &event("sign", json!({"name": "x", "message": "cheap spam"})),
        )
        .await;
    let rejected = console.next_named("dispatch").await;
    assert_eq!(rejected["result"], "ok", "{rejected}");
    let codes: Vec<&str> = rejected["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["error"]["code"].as_str())
        .collect();
    assert_eq!(codes, ["rejected"], "{rejected}");
    let _ = m
        .client
        .dispatch("user", "c1", &event("nothing", json!(null)))
        .await;
    let missing = console.next_named("dispatch").await;
    assert_eq!(missing["result"], "not_found", "{missing}");
    assert_eq!(missing["error"]["code"], "not_found", "{missing}");
    let mut queued = event("echo", json!(null));
    queued.wait = false;
    m.client.dispatch("user", "c3", &queued).await.unwrap();
    let accepted = console.next_named("dispatch").await;
    assert_eq!(accepted["result"], "accepted", "{accepted}");

    // The live tenants are asked of the workers; the traffic is per second.
    let live = eventually(Duration::from_secs(10), "the live tenants", || async {
        let l = m.client.live_tenants(100).await.unwrap();
        let names: Vec<String> = l.tenants.iter().map(|t| t.tenant.to_string()).collect();
        let all = ["user:c1", "guild:c2", "user:c3"];
        all.iter()
            .all(|t| names.iter().any(|n| n == t))
            .then_some(l)
    })
    .await;
    assert!(live.total >= 3 && live.unavailable.is_empty(), "{live:?}");
    let traffic = m.client.traffic().await.unwrap();
    assert_eq!(traffic.seconds.len(), 60);
    let dispatches: u64 = traffic.seconds.iter().map(|s| s.dispatches).sum();
    let errors: u64 = traffic.seconds.iter().map(|s| s.errors).sum();
    assert_eq!((dispatches, errors), (4, 2), "{traffic:?}");
    assert!(traffic.seconds.iter().any(|s| s.max_ms > 0.0));

    // A killed worker goes and comes back on the same stream.
    let pid = m.worker(1).await.pid.unwrap();
    common::signal(pid, libc::SIGKILL);
    let gone = console.next_named("worker").await;
    assert_eq!(gone["worker"], 1, "{gone}");
    assert_eq!(gone["state"], "disconnected", "{gone}");
    let back = console.next_named("worker").await;
    assert_eq!(
        (back["worker"].clone(), back["state"].clone()),
        (json!(1), json!("connected"))
    );
    let after = m.client.live_tenants(100).await.unwrap();
    assert!(
        after.tenants.iter().all(|t| t.worker != 1),
        "a new worker process has no tenants yet: {after:?}"
    );
    drop(admin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_in_the_binary_and_locked_down() {
    let m = Master::start(Opts::default()).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    for (path, kind) in [
        ("/", "text/html"),
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/app.css", "text/css"),
    ] {
        let url = format!("http://{}{path}", m.endpoint.api_addr);
        let res = client.get(url.parse().unwrap()).await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let h = res.headers();
        assert!(
            h["content-type"].to_str().unwrap().starts_with(kind),
            "{path}"
        );
        let policy = h["content-security-policy"].to_str().unwrap();
        assert!(policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"));
        assert_eq!(h["x-frame-options"], "DENY");
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert!(body.len() > 500, "{path} is {} bytes", body.len());
        if path == "/dashboard/app.js" {
            let script = String::from_utf8_lossy(&body);
            assert!(script.contains("sessionStorage") && !script.contains("localStorage.setItem"));
            assert!(
                !script.contains("innerHTML"),
                "API data goes on the page as text"
            );
        }
    }
}

/// What the browser test needs, or why it cannot run here.
fn browser() -> Result<(String, std::path::PathBuf), String> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        return Err(format!(
            "no Chromium at {chromium} (apt-get install chromium)"
        ));
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard");
    if !dir.join("node_modules/playwright-core").exists() {
        return Err("no playwright-core (npm ci --prefix tests/dashboard)".into());
    }
    match Command::new("node").arg("--version").output() {
        Ok(o) if o.status.success() => Ok((chromium, dir)),
        _ => Err("no node (apt-get install nodejs npm)".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_signs_in_dispatches_watches_and_sees_a_worker_restart() {
    let (chromium, dir) = match browser() {
        Ok(found) => found,
        Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI must run the browser test: {why}")
        }
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let m = Master::start(Opts::default()).await;
    m.client
        .kv_set(
            "guild",
            "dash",
            "default",
            "motd",
            &json!("hello from the test"),
        )
        .await
        .unwrap();
    let nightly = meshplay::rest::SchedulePut {
        cron: "30 2 * * *".into(),
        event: "tick".into(),
        data: json!(null),
        timezone: None,
    };
    m.client
        .put_schedule("guild", "dash", "nightly", &nightly)
        .await
        .unwrap();
    let before: Vec<u32> = m.worker_pids().await;
    // Some traffic while the page watches, for its charts and console: ten
    // dispatches a second over a few tenants, one in five a filter reject.
    let traffic = {
        let client = m.client.clone();
        tokio::spawn(async move {
            for i in 0u64.. {
                let id = format!("load-{}", i % 4);
                let req = if i % 5 == 4 {
                    event("sign", json!({"name": "Bob", "message": "cheap spam"}))
                } else {
                    event("incr", json!({"by": 1}))
                };
                let _ = client.dispatch("guild", &id, &req).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard");
    let run = tokio::task::spawn_blocking({
        let token = m.admin_token();
        let url = format!("http://{}", m.endpoint.api_addr);
        let shots = shots.clone();
        move || {
            Command::new("node")
                .arg(dir.join("drive.mjs"))
                .env("MESHPLAY_URL", url)
                .env("MESHPLAY_TOKEN", token)
                .env("SCREENSHOTS", shots)
                .env("CHROMIUM", chromium)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    traffic.abort();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "the browser run failed\n{stdout}\n{stderr}\nmaster log:\n{}",
        m.log()
    );
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    // What the page showed is what the master knows.
    let mut shown: Vec<u32> = serde_json::from_value(summary["pids"].clone()).unwrap();
    shown.sort_unstable();
    let mut spawned = before.clone();
    spawned.sort_unstable();
    assert_eq!(shown, spawned, "{stdout}");
    let w0 = m.worker(0).await;
    assert_eq!(summary["killed"], json!(before[0]), "{stdout}");
    assert_eq!(summary["restarted"], json!(w0.pid.unwrap()), "{stdout}");
    assert!(w0.restarts >= 1);
    for shot in ["dashboard.png", "worker-restarted.png"] {
        let len = std::fs::metadata(shots.join(shot)).unwrap().len();
        assert!(len > 10_000, "{shot} is {len} bytes");
    }
}
