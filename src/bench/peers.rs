//! `meshplay bench peers`: Meshplay's dispatch beside what people compare
//! it to, on this machine, in the same run, at the same concurrency and
//! payload (200 bytes by default):
//!
//! - `meshplay/rest` and `meshplay/binary`: echo events to a master in a
//!   child process (`meshplay serve`, its own CPU), from this process, over
//!   REST and over the binary client API (one WebSocket);
//! - `peer/redis-eval`: `EVAL "return ARGV[1]" 0 PAYLOAD` (a script call
//!   per request, as a dispatch is a Luau call) on a `redis-server` started
//!   here, measured by `redis-benchmark` (its own process);
//! - `peer/nats-request-reply`: request/reply through a `nats-server`
//!   started here, with a responder and a requester in this process on one
//!   connection each ([`super::nats`]).
//!
//! A peer whose server is not installed is left out, and the report says
//! so in its parameters.

use crate::bench::figures::{Check, Figure, Report};
use crate::bench::load::{LoadPlan, drive};
use crate::bench::served::Served;
use crate::bench::{BenchError, nats};
use crate::client::{ApiClient, DispatchOutcome, StreamClient};
use crate::rest::DispatchRequest;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct PeersOptions {
    /// The `meshplay` executable that runs the master.
    pub exe: PathBuf,
    /// Worker processes.
    pub workers: u32,
    /// Callers (requests in flight) at once.
    pub concurrency: usize,
    /// How long each figure runs.
    pub duration: Duration,
    /// Bytes of each event's data.
    pub payload_bytes: usize,
    /// Print progress lines.
    pub progress: bool,
}

/// Kills the server when dropped.
pub(crate) struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn installed(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .chain(["/usr/sbin", "/usr/bin", "/usr/local/bin"])
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
}

pub(crate) fn free_port() -> Result<u16, BenchError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts `cmd` and waits until `port` takes connections.
pub(crate) async fn start_server(
    mut cmd: Command,
    port: u16,
    what: &str,
) -> Result<Server, BenchError> {
    let server = Server(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| BenchError::Target(format!("cannot start {what}: {e}")))?,
    );
    let until = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if Instant::now() > until {
            return Err(BenchError::Target(format!("{what} did not listen in 10 s")));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(server)
}

pub(crate) fn echo(payload: &str) -> DispatchRequest {
    DispatchRequest {
        name: "echo".into(),
        data: serde_json::Value::String(payload.to_owned()),
        wait: true,
        timeout_ms: Some(10_000),
    }
}

pub(crate) fn echoed(
    outcome: Result<DispatchOutcome, crate::client::ApiClientError>,
) -> Result<(), String> {
    match outcome {
        Ok(DispatchOutcome::Done(d)) if d.results.iter().all(|r| r.error.is_none()) => Ok(()),
        Ok(_) => Err("plugin_error".into()),
        Err(e) => Err(e.code().unwrap_or("transport").to_owned()),
    }
}

/// The figure `redis-benchmark --csv` reports for one command.
fn redis_figure(csv: &str, requests: u64) -> Option<Figure> {
    let row = csv.lines().find(|l| !l.starts_with("\"test\""))?;
    let cells: Vec<f64> = row
        .split("\",\"")
        .skip(1)
        .map(|c| c.trim_matches('"').parse::<f64>().unwrap_or(f64::NAN))
        .collect();
    // rps, avg, min, p50, p95, p99, max (milliseconds).
    let [rps, _, _, p50, _, p99, max] = cells[..] else {
        return None;
    };
    Some(Figure {
        name: "peer/redis-eval".into(),
        ok: requests,
        seconds: requests as f64 / rps.max(1e-9),
        rate: rps,
        p50_us: p50 * 1000.0,
        p99_us: p99 * 1000.0,
        p999_us: max * 1000.0,
        max_us: max * 1000.0,
        errors: BTreeMap::new(),
        vs: None,
    })
}

async fn redis(opts: &PeersOptions, dir: &Path, payload: &str) -> Result<Figure, BenchError> {
    let port = free_port()?;
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir);
    let _server = start_server(cmd, port, "redis-server").await?;
    // About the run's duration at the rate Redis reaches on a small machine.
    let requests = (opts.duration.as_secs_f64() * 60_000.0).max(1000.0) as u64;
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-c", &opts.concurrency.to_string()])
        .args(["-n", &requests.to_string(), "--csv"])
        .args(["EVAL", "return ARGV[1]", "0", payload])
        .output()
        .map_err(|e| BenchError::Target(format!("cannot run redis-benchmark: {e}")))?;
    let csv = String::from_utf8_lossy(&out.stdout);
    redis_figure(&csv, requests)
        .ok_or_else(|| BenchError::Target(format!("redis-benchmark said: {csv}")))
}

async fn nats(opts: &PeersOptions, payload: &str) -> Result<Figure, BenchError> {
    let port = free_port()?;
    let mut cmd = Command::new("nats-server");
    cmd.args(["-a", "127.0.0.1", "-p", &port.to_string()]);
    let _server = start_server(cmd, port, "nats-server").await?;
    let addr = format!("127.0.0.1:{port}");
    nats::serve_echo(&addr, "echo")
        .await
        .map_err(BenchError::Target)?;
    let requester = Arc::new(
        nats::Requester::connect(&addr)
            .await
            .map_err(BenchError::Target)?,
    );
    let payload = Arc::new(payload.as_bytes().to_vec());
    let plan = plan(opts, "peer/nats-request-reply");
    let m = drive(&plan, move |_| {
        let (requester, payload) = (Arc::clone(&requester), Arc::clone(&payload));
        async move { requester.request("echo", &payload).await.map(drop) }
    })
    .await;
    Ok(Figure::new("peer/nats-request-reply", &m))
}

fn plan(opts: &PeersOptions, label: &str) -> LoadPlan {
    LoadPlan {
        label: label.into(),
        concurrency: opts.concurrency,
        duration: opts.duration,
        progress: opts.progress,
    }
}

async fn meshplay(
    opts: &PeersOptions,
    client: &ApiClient,
    payload: &str,
) -> Result<(Figure, Figure), BenchError> {
    let tenants = 64u64;
    let tenant = move |n: u64| format!("peer-{}", n % tenants);
    for n in 0..tenants {
        echoed(client.dispatch("user", &tenant(n), &echo(payload)).await)
            .map_err(|e| BenchError::Target(format!("warm-up event failed: {e}")))?;
    }
    let event = Arc::new(echo(payload));
    let (c, e) = (client.clone(), Arc::clone(&event));
    let rest = drive(&plan(opts, "meshplay/rest"), move |n| {
        let (c, e) = (c.clone(), Arc::clone(&e));
        async move { echoed(c.dispatch("user", &tenant(n), &e).await) }
    })
    .await;
    let stream = Arc::new(
        StreamClient::connect(client)
            .await
            .map_err(|e| BenchError::Target(format!("cannot open the stream: {e}")))?,
    );
    let binary = drive(&plan(opts, "meshplay/binary"), move |n| {
        let (s, e) = (Arc::clone(&stream), Arc::clone(&event));
        async move { echoed(s.dispatch("user", &tenant(n), (*e).clone()).await) }
    })
    .await;
    Ok((
        Figure::new("meshplay/rest", &rest),
        Figure::new("meshplay/binary", &binary),
    ))
}

/// Runs the benchmark and returns its report.
///
/// Fails when the master does not start or a peer that is installed does
/// not run.
pub async fn run(opts: PeersOptions) -> Result<Report, BenchError> {
    let dir = tempfile::tempdir()?;
    let payload = "x".repeat(opts.payload_bytes);
    let served = Served::start(&opts.exe, opts.workers, 5000, &dir.path().join("master"))?;
    served.all_running(Duration::from_secs(60)).await?;
    let (rest, binary) = meshplay(&opts, &served.client, &payload).await?;
    drop(served);

    let mut params = BTreeMap::from([
        ("workers".to_string(), opts.workers.to_string()),
        ("concurrency".to_string(), opts.concurrency.to_string()),
        ("payload_bytes".to_string(), opts.payload_bytes.to_string()),
        ("duration".to_string(), format!("{:?}", opts.duration)),
    ]);
    let mut peers = Vec::new();
    for (name, needs) in [
        ("redis", ["redis-server", "redis-benchmark"]),
        ("nats", ["nats-server", "nats-server"]),
    ] {
        if let Some(missing) = needs.iter().find(|n| installed(n).is_none()) {
            params.insert(name.into(), format!("skipped: {missing} is not installed"));
            continue;
        }
        let figure = match name {
            "redis" => redis(&opts, dir.path(), &payload).await?,
            _ => nats(&opts, &payload).await?,
        };
        peers.push(figure);
    }
    let checks = peers
        .iter()
        .map(|p| {
            Check::ratio_at_least(
                format!("meshplay/binary throughput / {} throughput", p.name),
                binary.rate,
                p.rate,
                1.0,
            )
        })
        .collect();
    let mut figures = vec![rest.clone().against(&binary), binary.clone()];
    figures.extend(peers.into_iter().map(|p| p.against(&binary)));
    Ok(Report {
        bench: "peers".into(),
        params,
        figures,
        checks,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn redis_benchmark_csv_becomes_a_figure() {
        let csv = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\"EVAL return ARGV[1] 0 xx\",\"52000.00\",\"1.100\",\"0.100\",\"1.050\",\"1.500\",\"2.000\",\"9.000\"\n";
        let f = super::redis_figure(csv, 1000).unwrap();
        assert_eq!(f.rate, 52000.0);
        assert_eq!((f.p50_us, f.p99_us, f.max_us), (1050.0, 2000.0, 9000.0));
        assert!(super::redis_figure("garbage", 1).is_none());
    }
}
