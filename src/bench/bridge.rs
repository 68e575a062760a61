//! `meshplay bench nats`: dispatch over the NATS bridge, beside NATS
//! request/reply alone and beside REST, in one run.
//!
//! A `nats-server` starts on a free loopback port, and a master in this
//! process bridges to it (`serve --nats`). Each figure runs `--duration`
//! at `--concurrency` requests in flight:
//!
//! 1. `peer/nats-request-reply`: a responder in this process echoes each
//!    request (what NATS itself costs, the limit);
//! 2. `nats/dispatch`: the same requests to
//!    `meshplay.dispatch.user.<n>.echo`, answered by the echo plugin
//!    through the bridge; its rate against 1's;
//! 3. `dispatch/rest`: the same dispatches through the REST API.

use crate::bench::figures::{Figure, Report};
use crate::bench::load::{LoadPlan, drive};
use crate::bench::peers::{echo, echoed, free_port, start_server};
use crate::bench::{BenchError, InProcess, Launch, nats};
use crate::client::ApiClient;
use crate::master::nats::NatsConfig;
use crate::mesophyll::hub::HubConfig;
use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// What the benchmark is told.
#[derive(Debug, Clone)]
pub struct BridgeOptions {
    /// Worker processes.
    pub workers: u32,
    /// Requests in flight.
    pub concurrency: usize,
    /// How long each figure runs.
    pub duration: Duration,
    /// Print progress lines.
    pub progress: bool,
}

/// Tenants the dispatches go round.
const TENANTS: u64 = 64;

/// Runs the benchmark.
pub async fn run(opts: BridgeOptions) -> Result<Report, BenchError> {
    let port = free_port()?;
    let mut cmd = Command::new("nats-server");
    cmd.args(["-a", "127.0.0.1", "-p", &port.to_string()]);
    let _server = start_server(cmd, port, "nats-server").await?;
    let addr = format!("127.0.0.1:{port}");
    let fleet = InProcess::launch(Launch {
        workers: opts.workers,
        external: 0,
        store: None,
        worker_threads: 1,
        hub: HubConfig::default(),
        plugins: Vec::new(),
        timers: Default::default(),
        nats: Some(NatsConfig {
            url: format!("nats://{addr}"),
            credentials: None,
            token: None,
            nkey: None,
            ca: None,
            queue_group: "meshplay".into(),
            publish_events: false,
        }),
    })
    .await?;
    let measured = measure(&opts, &fleet, &addr).await;
    fleet.stop().await;
    measured
}

fn plan(opts: &BridgeOptions, label: &str) -> LoadPlan {
    LoadPlan {
        label: label.into(),
        concurrency: opts.concurrency,
        duration: opts.duration,
        progress: opts.progress,
    }
}

async fn measure(
    opts: &BridgeOptions,
    fleet: &InProcess,
    addr: &str,
) -> Result<Report, BenchError> {
    nats::serve_echo(addr, "echo")
        .await
        .map_err(BenchError::Target)?;
    let requester = Arc::new(
        nats::Requester::connect(addr)
            .await
            .map_err(BenchError::Target)?,
    );
    let payload = Arc::new(br#""ping""#.to_vec());
    let (r, p) = (Arc::clone(&requester), Arc::clone(&payload));
    let alone = drive(&plan(opts, "peer/nats-request-reply"), move |_| {
        let (r, p) = (Arc::clone(&r), Arc::clone(&p));
        async move { r.request("echo", &p).await.map(drop) }
    })
    .await;
    warm_up(&requester).await?;
    let (r, p) = (Arc::clone(&requester), Arc::clone(&payload));
    let bridged = drive(&plan(opts, "nats/dispatch"), move |n| {
        let (r, p) = (Arc::clone(&r), Arc::clone(&p));
        async move {
            let subject = format!("meshplay.dispatch.user.bench-{}.echo", n % TENANTS);
            let reply = r.request(&subject, &p).await?;
            answered(&reply)
        }
    })
    .await;
    let client = Arc::new(ApiClient::new(fleet.master.api_addr, &fleet.master.token));
    let rest = drive(&plan(opts, "dispatch/rest"), move |n| {
        let client = Arc::clone(&client);
        async move {
            let id = format!("bench-{}", n % TENANTS);
            echoed(client.dispatch("user", &id, &echo("ping")).await)
        }
    })
    .await;
    let limit = Figure::new("peer/nats-request-reply", &alone);
    let params = BTreeMap::from([
        ("workers".into(), opts.workers.to_string()),
        ("concurrency".into(), opts.concurrency.to_string()),
        ("duration".into(), format!("{:?}", opts.duration)),
    ]);
    Ok(Report {
        bench: "nats".into(),
        params,
        figures: vec![
            Figure::new("nats/dispatch", &bridged).against(&limit),
            Figure::new("dispatch/rest", &rest).against(&limit),
            limit,
        ],
        checks: Vec::new(),
    })
}

/// A reply that is a dispatch's answer with no plugin error.
fn answered(reply: &[u8]) -> Result<(), String> {
    let v: serde_json::Value =
        serde_json::from_slice(reply).map_err(|_| "undecodable_reply".to_string())?;
    if let Some(code) = v["error"]["code"].as_str() {
        return Err(code.to_owned());
    }
    let results = v["results"].as_array().ok_or("no_results")?;
    if results.iter().any(|r| !r["error"].is_null()) {
        return Err("plugin_error".into());
    }
    Ok(())
}

/// Until the bridge answers (its subscription may still be on its way),
/// and every tenant has a VM.
async fn warm_up(requester: &nats::Requester) -> Result<(), BenchError> {
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    for n in 0..TENANTS {
        let subject = format!("meshplay.dispatch.user.bench-{n}.echo");
        loop {
            let reply = tokio::time::timeout(
                Duration::from_secs(2),
                requester.request(&subject, br#""warm""#),
            )
            .await;
            if let Ok(Ok(r)) = reply
                && answered(&r).is_ok()
            {
                break;
            }
            if tokio::time::Instant::now() > until {
                return Err(BenchError::Target(
                    "the bridge did not answer within 20 s".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}
