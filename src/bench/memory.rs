//! `meshplay bench memory`: wakes T idle tenants on one worker (one echo
//! event each, so each has a live VM with the plugin loaded) and reports the
//! worker's RSS per tenant, from the load figures its heartbeats carry.

use crate::bench::figures::{Check, Report};
use crate::bench::{BenchError, InProcess};
use crate::mesophyll::hub::Hub;
use crate::mesophyll::message::{Event, ServerMessage, Tenant};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// One step of the memory benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Tenants awake after this step.
    pub tenants: u64,
    /// VMs the worker reports.
    pub vms: u64,
    /// The worker's RSS, bytes.
    pub rss_bytes: u64,
    /// (RSS - idle RSS) / tenants, bytes.
    pub per_tenant_bytes: u64,
}

async fn load_after(hub: &Hub, since_vms: u64) -> (u64, u64) {
    // The figures ride on heartbeats (1 s apart): wait for a fresh one.
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let w = hub.workers().into_iter().find(|w| w.id == 0);
        let (vms, rss) = w.map_or((0, 0), |w| (w.load.vms, w.load.rss_bytes));
        if vms >= since_vms || tokio::time::Instant::now() > until {
            return (vms, rss);
        }
    }
}

/// Wakes tenants on one worker up to each count in `steps` and returns the
/// report: one check per step, its value the RSS per tenant in KiB.
///
/// Fails when the master does not start or an event fails.
pub async fn run(steps: &[u64], concurrency: usize) -> Result<Report, BenchError> {
    let m = InProcess::start(1, 0).await?;
    let hub = std::sync::Arc::clone(&m.master.hub);
    let (_, idle) = load_after(&hub, 0).await;
    let mut awake = 0u64;
    let mut out = Vec::new();
    for &target in steps {
        futures::stream::iter(awake..target)
            .map(|n| {
                let hub = &hub;
                async move {
                    hub.request(0, Duration::from_secs(30), |req_id| {
                        ServerMessage::DispatchEvent {
                            req_id: Some(req_id),
                            tenant: Tenant {
                                kind: "user".into(),
                                id: format!("idle-{n}"),
                            },
                            event: Event {
                                name: "echo".into(),
                                data: Default::default(),
                                ..Default::default()
                            },
                            deadline_ms: 30_000,
                        }
                    })
                    .await
                    .map(|_| ())
                    .map_err(|e| BenchError::Target(e.to_string()))
                }
            })
            .buffer_unordered(concurrency.max(1))
            .try_collect::<Vec<()>>()
            .await?;
        awake = target;
        let (vms, rss) = load_after(&hub, target).await;
        out.push(Step {
            tenants: target,
            vms,
            rss_bytes: rss,
            per_tenant_bytes: rss.saturating_sub(idle) / target.max(1),
        });
    }
    m.stop().await;
    let checks = out
        .iter()
        .map(|s| Check {
            name: format!(
                "RSS per idle tenant at {} tenants ({} VMs, RSS {:.1} MiB, idle {:.1} MiB), KiB",
                s.tenants,
                s.vms,
                s.rss_bytes as f64 / 1048576.0,
                idle as f64 / 1048576.0
            ),
            value: s.per_tenant_bytes as f64 / 1024.0,
            target: "<= 150 KiB per idle tenant".into(),
            met: s.per_tenant_bytes <= 150 * 1024,
        })
        .collect();
    let params = BTreeMap::from([
        (
            "tenants".to_string(),
            steps
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ),
        ("concurrency".to_string(), concurrency.to_string()),
    ]);
    Ok(Report {
        bench: "memory".into(),
        params,
        figures: Vec::new(),
        checks,
    })
}
