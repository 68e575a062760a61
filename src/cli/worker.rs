//! `meshplay worker --join wss://HOST:PORT --token-file FILE`: a worker on
//! another machine, which joins a master with a join token
//! ([`crate::mesophyll::join`]), then serves the slot it was given as the
//! master's own children serve theirs.
//!
//! It outlives its master: when the master goes away it keeps its VMs and
//! reconnects with back-off, with the session it was given (which the
//! master keeps across restarts, in the store). Given several masters
//! (`--join URL,URL`: a leader and its standbys on one PostgreSQL), it
//! talks to whichever leads ([`crate::mesophyll::addresses`]) and moves to
//! the next when that one fails or stands by. It stops on `Shutdown` from the master,
//! on SIGTERM or SIGINT, and when the master refuses its session (its join
//! token was revoked, or another worker took its slot over with
//! `--worker-id`).

use super::CliError;
use super::child::{run_worker_session, worker_config};
use super::serve::signals;
use crate::mesophyll::addresses::Addresses;
use crate::mesophyll::join::{self, JoinRequest};
use crate::mesophyll::message::PROTOCOL_VERSION;
use crate::mesophyll::uplink::{CONNECT_TIMEOUT, UplinkConfig, UplinkError};
use crate::tls::{TlsClient, Trust};
use crate::wire::backoff::Backoff;
use crate::worker::WorkerError;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Args)]
pub(super) struct JoinArgs {
    /// The master's Mesophyll port: `wss://HOST:PORT` (or `ws://` to a
    /// master that serves plaintext with --insecure); several, comma
    /// separated, for a leader and its standbys.
    #[arg(
        long,
        value_name = "URL[,URL...]",
        value_delimiter = ',',
        required = true
    )]
    join: Vec<String>,
    /// A file holding the join token (`meshplay join-token create`).
    #[arg(long, value_name = "FILE")]
    token_file: PathBuf,
    /// The CA to check the master against (the master's
    /// <data-dir>/tls/ca.pem, or the operator's).
    #[arg(long, value_name = "FILE", env = "MESHPLAY_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// The slot to serve, taken over from whoever holds it [default: a
    /// free one].
    #[arg(long)]
    worker_id: Option<u32>,
    /// Where compiled filters are cached [default: none, compile each
    /// time].
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Heap cap of each tenant VM, in MiB.
    #[arg(long, default_value_t = 20)]
    vm_memory_mb: usize,
    /// The longest a tenant may hold this worker's thread without yielding
    /// (as `serve --vm-hold-ms`).
    #[arg(long, default_value_t = super::child::DEFAULT_HOLD_MS, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    vm_hold_ms: u64,
    /// The Luau heap all of this worker's VMs may hold together, in MiB
    /// (as `serve --worker-memory-mb`).
    #[arg(long, default_value_t = super::child::DEFAULT_WORKER_MEMORY_MB, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    worker_memory_mb: usize,
    /// Linear memory cap of each WASM filter instance, in MiB.
    #[arg(long, default_value_t = 16)]
    filter_memory_mb: usize,
    /// Runtime threads of this worker process (as `serve --worker-threads`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub(super) worker_threads: u16,
}

/// `wss://host:port` as the authority and whether it is TLS.
fn parse_join_url(url: &str) -> Result<(String, bool), CliError> {
    let (tls, rest) = match url.split_once("://") {
        Some(("wss", rest)) => (true, rest),
        Some(("ws", rest)) => (false, rest),
        _ => {
            return Err(CliError::Usage(format!(
                "--join {url}: give the master's Mesophyll port as wss://HOST:PORT"
            )));
        }
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') || !authority.contains(':') {
        return Err(CliError::Usage(format!(
            "--join {url}: give the master's Mesophyll port as wss://HOST:PORT"
        )));
    }
    Ok((authority.to_owned(), tls))
}

/// Every `--join` URL as `host:port`, and whether they are TLS (all or
/// none).
fn parse_join_urls(urls: &[String]) -> Result<(Addresses, bool), CliError> {
    let parsed = urls
        .iter()
        .map(|u| parse_join_url(u.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    let wss = parsed.first().is_some_and(|(_, tls)| *tls);
    if parsed.iter().any(|(_, tls)| *tls != wss) {
        return Err(CliError::Usage(
            "--join: give every master as wss:// or every one as ws://".into(),
        ));
    }
    Ok((
        Addresses::new(parsed.into_iter().map(|(a, _)| a).collect()),
        wss,
    ))
}

pub(super) async fn worker(args: JoinArgs) -> Result<ExitCode, CliError> {
    let (masters, wss) = parse_join_urls(&args.join)?;
    let tls = match (wss, &args.ca_file) {
        (false, _) => None,
        (true, Some(ca)) => Some(
            TlsClient::new(&Trust::Ca(ca.clone())).map_err(|e| CliError::Usage(e.to_string()))?,
        ),
        (true, None) => {
            return Err(CliError::Usage(
                "wss:// needs the master's CA: --ca-file FILE (its <data-dir>/tls/ca.pem)".into(),
            ));
        }
    };
    let join_token = std::fs::read_to_string(&args.token_file)
        .map_err(|e| CliError::Usage(format!("{}: {e}", args.token_file.display())))?
        .trim()
        .to_owned();
    if join_token.is_empty() {
        return Err(CliError::Usage(format!(
            "{} is empty: it should hold a join token",
            args.token_file.display()
        )));
    }
    let request = JoinRequest {
        protocol: PROTOCOL_VERSION,
        worker_id: args.worker_id,
        host: crate::hostname::hostname().unwrap_or_else(|| "unknown".into()),
        pid: std::process::id(),
    };
    let joining = async {
        let mut backoff = Backoff::reconnect();
        loop {
            let master = masters.current();
            match join::join(
                &master,
                tls.as_ref(),
                &join_token,
                &request,
                CONNECT_TIMEOUT,
            )
            .await
            {
                Ok(grant) => return Ok(grant),
                Err(e) if e.is_transient() => {
                    // Another master may lead: ask the next one.
                    masters.next_after(&master);
                    let delay = backoff.next_delay();
                    tracing::warn!(?delay, %master, "cannot join yet: {e}");
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(CliError::Failed(e.to_string())),
            }
        }
    };
    let grant = tokio::select! {
        grant = joining => grant?,
        _ = signals() => return Ok(ExitCode::SUCCESS),
    };
    tracing::info!(worker = grant.worker_id, workers = grant.workers, master = %masters.current(), "joined");
    let uplink = UplinkConfig {
        masters,
        worker_id: grant.worker_id,
        token: grant.token,
        connect_timeout: CONNECT_TIMEOUT,
        tls,
    };
    let limits = super::child::WorkerLimits {
        vm_memory_mb: args.vm_memory_mb,
        vm_hold_ms: args.vm_hold_ms,
        worker_memory_mb: args.worker_memory_mb,
        filter_memory_mb: args.filter_memory_mb,
    };
    let config = worker_config(uplink, args.cache_dir, limits, None);
    tokio::select! {
        served = run_worker_session(config) => served.map_err(|e| match e {
            CliError::Worker(WorkerError::Client(refused @ UplinkError::Refused(_))) => {
                CliError::Failed(format!(
                    "{refused}: this worker's session is over (its join token was revoked, \
                     or another worker took slot {} over)",
                    grant.worker_id
                ))
            }
            other => other,
        })?,
        _ = signals() => {
            tracing::info!("stopping on a signal");
            // In-flight requests fail on the master's side as a lost
            // connection does; give the close a moment to reach it.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn join_urls() {
        assert_eq!(
            super::parse_join_url("wss://10.0.0.1:9082").unwrap(),
            ("10.0.0.1:9082".into(), true)
        );
        assert_eq!(
            super::parse_join_url("ws://m:1/").unwrap(),
            ("m:1".into(), false)
        );
        assert!(super::parse_join_urls(&["wss://a:1".into(), "ws://b:1".into()]).is_err());
        let (masters, tls) =
            super::parse_join_urls(&["ws://a:1".into(), " ws://b:2/".into()]).unwrap();
        assert_eq!(
            (masters.all(), tls),
            (&["a:1".to_owned(), "b:2".to_owned()][..], false)
        );
        for bad in ["10.0.0.1:9082", "https://m:1", "wss://m", "wss://m:1/ws"] {
            assert!(super::parse_join_url(bad).is_err(), "{bad}");
        }
    }
}
