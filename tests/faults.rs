//! Faults and hostile input found in review, each with the test that failed
//! before its fix: real masters and workers, real sockets.

mod common;

use common::EXE;
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
