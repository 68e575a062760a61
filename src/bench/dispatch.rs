//! `meshplay bench dispatch`: echo events through the REST API and, with
//! `--direct`, straight through the hub (the master's own dispatch path,
//! without HTTP and JSON in front), against the raw WebSocket echo and a
//! bare Luau call measured in the same run.

use crate::bench::figures::{Check, Figure, Report};
use crate::bench::load::{LoadPlan, drive};
use crate::bench::{BenchError, InProcess, baseline};
use crate::client::{ApiClient, ApiClientError, DispatchOutcome, StreamClient};
use crate::master::shard;
use crate::mesophyll::codec;
use crate::mesophyll::hub::{Hub, HubError};
use crate::mesophyll::message::{Event, ServerMessage, Tenant};
use crate::rest::DispatchRequest;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// What to run.
#[derive(Debug, Clone)]
pub struct DispatchOptions {
    /// Workers of the master this benchmark starts.
    pub workers: u32,
    /// Runtime threads of each of them (`serve --worker-threads`).
    pub worker_threads: u16,
    /// Callers at once.
    pub concurrency: usize,
    /// Distinct tenants the events go to, round robin.
    pub tenants: u32,
    /// How long each figure runs.
    pub duration: Duration,
    /// Also measure straight through the hub.
    pub direct: bool,
    /// Also measure through the binary client API (one WebSocket, every
    /// caller's event in flight on it).
    pub binary: bool,
    /// Measure the raw limits too.
    pub baseline: bool,
    /// A running master to target instead of starting one (REST only).
    pub target: Option<ApiClient>,
    /// Print progress lines.
    pub progress: bool,
}

const DEADLINE: Duration = Duration::from_secs(10);

fn tenant(n: u64, tenants: u32) -> Tenant {
    Tenant {
        kind: "user".into(),
        id: format!("bench-{}", n % u64::from(tenants.max(1))),
    }
}

fn request(n: u64) -> DispatchRequest {
    DispatchRequest {
        name: "echo".into(),
        data: serde_json::json!(n),
        wait: true,
        timeout_ms: Some(DEADLINE.as_millis() as u64),
    }
}

fn message(req_id: u64, n: u64, tenants: u32) -> ServerMessage {
    ServerMessage::DispatchEvent {
        req_id: Some(req_id),
        tenant: tenant(n, tenants),
        event: Event {
            name: "echo".into(),
            data: serde_json::json!(n).into(),
            ..Default::default()
        },
        deadline_ms: DEADLINE.as_millis() as u64,
    }
}

/// An echo's outcome as the load generator counts it: ok, or its code.
fn echoed(outcome: Result<DispatchOutcome, ApiClientError>) -> Result<(), String> {
    match outcome {
        Ok(DispatchOutcome::Done(d)) => match d.results.first() {
            Some(r) if r.error.is_none() => Ok(()),
            Some(r) => Err(r.error.as_ref().map_or("error".into(), |e| e.code.clone())),
            None => Err("no_result".into()),
        },
        Ok(DispatchOutcome::Accepted(_)) => Err("accepted".into()),
        Err(e) => Err(e.code().unwrap_or("transport").to_owned()),
    }
}

async fn via_rest(client: &ApiClient, n: u64, tenants: u32) -> Result<(), String> {
    let t = tenant(n, tenants);
    echoed(client.dispatch(&t.kind, &t.id, &request(n)).await)
}

async fn via_stream(stream: &StreamClient, n: u64, tenants: u32) -> Result<(), String> {
    let t = tenant(n, tenants);
    echoed(stream.dispatch(&t.kind, &t.id, request(n)).await)
}

async fn via_hub(hub: &Hub, workers: u32, n: u64, tenants: u32) -> Result<(), String> {
    let worker = shard::worker_for(&tenant(n, tenants), workers);
    match hub
        .request(worker, DEADLINE, |id| message(id, n, tenants))
        .await
    {
        Ok(_) => Ok(()),
        Err(HubError::Remote(e)) => Err(e.kind.as_str().to_owned()),
        Err(HubError::Overloaded(_)) => Err("overloaded".into()),
        Err(HubError::DeadlineExceeded { .. }) => Err("deadline_exceeded".into()),
        Err(_) => Err("worker_unavailable".into()),
    }
}

/// Runs the benchmark and returns its report.
///
/// Fails when its master does not start, a baseline cannot run, or (with a
/// target) the target does not answer the warm-up.
pub async fn run(opts: DispatchOptions) -> Result<Report, BenchError> {
    if opts.target.is_some() && opts.direct {
        return Err(BenchError::Usage(
            "--direct needs the master this benchmark starts; drop --api-addr".into(),
        ));
    }
    let (client, local) = match &opts.target {
        Some(c) => (c.clone(), None),
        None => {
            let m = InProcess::start_on(opts.workers, 0, None, opts.worker_threads).await?;
            let c = ApiClient::new(m.master.api_addr, m.master.token.clone());
            (c, Some(m))
        }
    };
    // Every tenant's VM exists before anything is timed.
    for n in 0..u64::from(opts.tenants) {
        if let Err(kind) = via_rest(&client, n, opts.tenants).await {
            return Err(BenchError::Target(format!("warm-up event failed: {kind}")));
        }
    }
    let measured = measure(&opts, &client, local.as_ref()).await?;
    let limits = match opts.baseline {
        true => Some(limits(&opts).await?),
        false => None,
    };
    let checks = checks(&measured, limits.as_ref());
    let figures = figures(measured, limits);
    if let Some(m) = local {
        m.stop().await;
    }
    Ok(Report {
        bench: "dispatch".into(),
        params: params(&opts),
        figures,
        checks,
    })
}

/// The load of one figure.
fn load(opts: &DispatchOptions, label: &str) -> LoadPlan {
    LoadPlan {
        label: label.into(),
        concurrency: opts.concurrency,
        duration: opts.duration,
        progress: opts.progress,
    }
}

/// What Meshplay did: REST always, the binary stream and the hub directly
/// when asked.
struct Measured {
    rest: Figure,
    binary: Option<Figure>,
    direct: Option<Figure>,
}

async fn measure(
    opts: &DispatchOptions,
    client: &ApiClient,
    local: Option<&InProcess>,
) -> Result<Measured, BenchError> {
    let tenants = opts.tenants;
    let rest_client = client.clone();
    let rest = drive(&load(opts, "dispatch/rest"), move |n| {
        let c = rest_client.clone();
        async move { via_rest(&c, n, tenants).await }
    })
    .await;
    let binary = if opts.binary {
        let stream = StreamClient::connect(client)
            .await
            .map_err(|e| BenchError::Target(format!("cannot open the stream: {e}")))?;
        let stream = Arc::new(stream);
        let b = drive(&load(opts, "dispatch/binary"), move |n| {
            let stream = Arc::clone(&stream);
            async move { via_stream(&stream, n, tenants).await }
        })
        .await;
        Some(Figure::new("dispatch/binary", &b))
    } else {
        None
    };
    let direct = match (local, opts.direct) {
        (Some(m), true) => {
            let hub = Arc::clone(&m.master.hub);
            let workers = m.workers;
            let d = drive(&load(opts, "dispatch/direct"), move |n| {
                let hub = Arc::clone(&hub);
                async move { via_hub(&hub, workers, n, tenants).await }
            })
            .await;
            Some(Figure::new("dispatch/direct", &d))
        }
        _ => None,
    };
    Ok(Measured {
        rest: Figure::new("dispatch/rest", &rest),
        binary,
        direct,
    })
}

/// The raw limits measured beside it, in the same run.
struct Limits {
    ws: Figure,
    luau: Figure,
    http: Figure,
}

async fn limits(opts: &DispatchOptions) -> Result<Limits, BenchError> {
    let frame = codec::encode(&message(1, 1, opts.tenants))
        .map_err(|e| BenchError::Target(e.to_string()))?;
    let ws = baseline::ws_echo(
        &load(opts, "baseline/ws-echo"),
        opts.workers as usize,
        frame,
    )
    .await?;
    // The REST request's own body, so the echo carries what REST does.
    let body = serde_json::to_vec(&request(1)).expect("a request serialises");
    let http = baseline::http1_echo(&load(opts, "baseline/http1-echo"), body).await?;
    let luau = tokio::task::spawn_blocking({
        let d = opts.duration.min(Duration::from_secs(2));
        move || baseline::luau_call(d)
    })
    .await
    .map_err(|e| BenchError::Target(e.to_string()))??;
    Ok(Limits {
        ws: Figure::new("baseline/ws-echo", &ws),
        luau: Figure::new("baseline/luau-call", &luau),
        http: Figure::new("baseline/http1-echo", &http),
    })
}

/// The targets, each held against its limit.
fn checks(m: &Measured, limits: Option<&Limits>) -> Vec<Check> {
    let mut checks = Vec::new();
    if let Some(l) = limits {
        checks.push(Check::ratio_at_least(
            "rest throughput / http1-echo throughput",
            m.rest.rate,
            l.http.rate,
            0.5,
        ));
    }
    if let (Some(d), Some(l)) = (&m.direct, limits) {
        checks.push(Check::ratio_at_least(
            "direct throughput / ws-echo throughput",
            d.rate,
            l.ws.rate,
            0.5,
        ));
        let bound = 2.0 * (l.ws.p50_us + l.luau.p50_us);
        checks.push(Check {
            name: "direct p50 / (ws-echo p50 + luau call p50)".into(),
            value: d.p50_us / (l.ws.p50_us + l.luau.p50_us).max(1e-9),
            target: "<= 2".into(),
            met: d.p50_us <= bound,
        });
    }
    if let Some(d) = &m.direct {
        checks.push(Check::ratio_at_least(
            "rest throughput / direct throughput",
            m.rest.rate,
            d.rate,
            0.4,
        ));
    }
    checks
}

/// Every figure, each beside the limit it is read against.
fn figures(m: Measured, limits: Option<Limits>) -> Vec<Figure> {
    let mut figures = Vec::new();
    figures.push(match (&m.direct, &limits) {
        (Some(d), _) => m.rest.against(d),
        (None, Some(l)) => m.rest.against(&l.http),
        (None, None) => m.rest,
    });
    for figure in [m.binary, m.direct].into_iter().flatten() {
        figures.push(match &limits {
            Some(l) => figure.against(&l.ws),
            None => figure,
        });
    }
    if let Some(l) = limits {
        figures.extend([l.ws, l.luau, l.http]);
    }
    figures
}

/// The run's parameters, as the report shows them.
fn params(opts: &DispatchOptions) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("workers".to_string(), opts.workers.to_string()),
        ("concurrency".to_string(), opts.concurrency.to_string()),
        ("tenants".to_string(), opts.tenants.to_string()),
        ("duration".to_string(), format!("{:?}", opts.duration)),
        (
            "runtime_threads".to_string(),
            tokio::runtime::Handle::current()
                .metrics()
                .num_workers()
                .to_string(),
        ),
        (
            "target".to_string(),
            opts.target
                .as_ref()
                .map_or("in-process master".to_string(), |c| c.addr().to_string()),
        ),
    ])
}
