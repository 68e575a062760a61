//! How many runtime threads each kind of process gets.
//!
//! A worker runs what `--worker-threads` says, and with one thread a
//! current-thread runtime: its tenants' tasks hand over to each other
//! without waking another thread, which the dispatch benchmark showed to
//! cost more than the work on a machine whose cores the master and its
//! workers share. The master (`serve`) takes `--master-threads`, or by
//! default the cores its own workers leave free and at least one: on two
//! cores with two workers a master with two threads spent a seventh of its
//! time waking its other thread and moved 15-20% fewer events than one
//! with one. It stays a multi-thread runtime even with one thread, because the
//! PostgreSQL store's synchronous reads wait with `block_in_place`, which
//! a current-thread runtime does not allow. `bench dispatch`, whose one
//! process runs a master, the load and the baselines, takes one thread
//! per core unless its `--master-threads` says otherwise: with one thread
//! its loopback baselines ping-pong inside a single thread, a round trip
//! no client in another process gets. The client commands keep tokio's
//! default, a thread per core.

use super::{Cli, Command, bench::BenchCommand};
use tokio::runtime::{Builder, Runtime};

/// The threads a process asked for, by what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Threads {
    /// A worker process with this many.
    Worker(u16),
    /// A master with this many.
    Master(u16),
    /// A client command: one per core.
    PerCore,
}

impl Threads {
    /// What the command line asks for.
    pub(super) fn of(cli: &Cli) -> Threads {
        match &cli.command {
            None if cli.worker.worker => Threads::Worker(cli.worker.worker_threads),
            Some(Command::Worker(args)) => Threads::Worker(args.worker_threads),
            Some(Command::Serve(args)) => {
                Threads::Master(args.master_threads.unwrap_or_else(|| {
                    let managed = args.workers.saturating_sub(args.external_workers());
                    left_by(managed, args.worker_threads)
                }))
            }
            Some(Command::Bench(BenchCommand::Dispatch(args))) => args
                .master_threads
                .map_or(Threads::PerCore, Threads::Master),
            _ => Threads::PerCore,
        }
    }

    /// A runtime with these threads.
    ///
    /// Fails when the operating system refuses its threads or its I/O
    /// driver.
    pub(super) fn runtime(self) -> std::io::Result<Runtime> {
        match self {
            Threads::PerCore => Runtime::new(),
            Threads::Worker(1) => Builder::new_current_thread().enable_all().build(),
            Threads::Worker(n) | Threads::Master(n) => Builder::new_multi_thread()
                .worker_threads(usize::from(n))
                .enable_all()
                .build(),
        }
    }
}

/// The cores `workers` processes of `threads` threads each leave free, at
/// least 1.
fn left_by(workers: u32, threads: u16) -> u16 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let taken = usize::try_from(workers)
        .unwrap_or(usize::MAX)
        .saturating_mul(usize::from(threads));
    u16::try_from(cores.saturating_sub(taken).max(1)).unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn threads(args: &[&str]) -> Threads {
        Threads::of(&Cli::parse_from(args))
    }

    #[test]
    fn each_process_gets_its_threads() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let left = |taken: usize| u16::try_from(cores.saturating_sub(taken).max(1)).unwrap();
        assert_eq!(threads(&["meshplay", "serve"]), Threads::Master(left(2)));
        assert_eq!(
            threads(&[
                "meshplay",
                "serve",
                "--workers",
                "1",
                "--worker-threads",
                "3"
            ]),
            Threads::Master(left(3))
        );
        // Workers started elsewhere leave this machine's cores alone.
        assert_eq!(
            threads(&[
                "meshplay",
                "serve",
                "--workers",
                "4",
                "--external-workers",
                "4"
            ]),
            Threads::Master(left(0))
        );
        assert_eq!(
            threads(&["meshplay", "serve", "--master-threads", "5"]),
            Threads::Master(5)
        );
        assert_eq!(
            threads(&["meshplay", "bench", "dispatch"]),
            Threads::PerCore
        );
        assert_eq!(
            threads(&["meshplay", "bench", "dispatch", "--master-threads", "1"]),
            Threads::Master(1)
        );
        assert_eq!(threads(&["meshplay", "status"]), Threads::PerCore);
        assert_eq!(
            threads(&[
                "meshplay",
                "--worker",
                "--worker-id",
                "0",
                "--master",
                "ws://127.0.0.1:1",
                "--worker-threads",
                "2"
            ]),
            Threads::Worker(2)
        );
        assert!(Cli::try_parse_from(["meshplay", "serve", "--master-threads", "0"]).is_err());
    }

    #[test]
    fn a_master_always_gets_a_thread() {
        assert_eq!(left_by(u32::MAX, u16::MAX), 1);
        assert!(left_by(0, 1) >= 1);
    }
}
