//! TLS on both ports: `serve --tls` makes its CA and serves with it, its own
//! children pin the served certificate, clients check it against the CA (or
//! pin it from the data directory), plaintext clients are told what to do,
//! and plaintext beyond loopback needs `--insecure`.

mod common;

use common::{EXE, Master, Opts, event, tenants_on};
use meshplay::datadir::DataDir;
use meshplay::master::tls::{CertSource, ServerTls};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn tls_opts(extra: &[&str]) -> Opts {
    Opts {
        extra: extra.iter().map(|s| s.to_string()).collect(),
        ..Opts::default()
    }
}

/// Runs the CLI with nothing of the master's data directory: only what the
/// arguments say.
fn cli_elsewhere(args: &[&str]) -> (i32, String, String) {
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(EXE)
        .args(args)
        .env("MESHPLAY_DATA_DIR", empty.path())
        .env_remove("MESHPLAY_API_TOKEN")
        .env_remove("MESHPLAY_API_ADDR")
        .env_remove("MESHPLAY_CA_FILE")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What a plaintext HTTP request to `addr` gets back, whole.
fn plaintext_get(addr: std::net::SocketAddr) -> String {
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = tcp.read_to_string(&mut answer);
    answer
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_tls_makes_a_ca_and_everything_speaks_it() {
    let m = Master::start(tls_opts(&["--tls"])).await;
    let dir = m.data_dir().to_owned();
    assert!(m.endpoint.tls, "endpoint.json says TLS");
    assert_eq!(mode(&dir.join("tls")), 0o700);
    assert_eq!(mode(&dir.join("tls/ca-key.pem")), 0o600);
    assert_eq!(mode(&dir.join("tls/key.pem")), 0o600);
    assert!(m.client.url().starts_with("https://"), "{}", m.client.url());

    // Both children connected over TLS (the harness waited for them) and
    // serve their shards, DB calls included (the catalogue came that way).
    for worker in 0..2 {
        let tenant = &tenants_on("user", worker, 2, 1)[0];
        let answer = m
            .client
            .dispatch(
                &tenant.kind,
                &tenant.id,
                &event("echo", serde_json::json!(worker)),
            )
            .await
            .unwrap();
        assert!(format!("{answer:?}").contains("echo"), "{answer:?}");
    }

    // The CLI on this machine pins the certificate from the data directory.
    let (code, out, err) = m.cli(&["workers"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("running").count(), 2, "{out}");
    // And the binary stream speaks wss://.
    let mut many = Command::new(EXE)
        .args(["dispatch-many"])
        .env("MESHPLAY_DATA_DIR", &dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    many.stdin
        .take()
        .unwrap()
        .write_all(b"{\"type\":\"user\",\"id\":\"9\",\"name\":\"echo\",\"data\":1}\n")
        .unwrap();
    let out = many.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("echo"));

    // From elsewhere: the CA file and a name the certificate carries.
    let token = m.admin_token();
    let port = m.endpoint.api_addr.port();
    let url = format!("https://localhost:{port}");
    let version_with = |ca: &Path| {
        cli_elsewhere(&[
            "version",
            "--api-addr",
            &url,
            "--api-token",
            &token,
            "--ca-file",
            ca.to_str().unwrap(),
        ])
    };
    let (code, out, err) = version_with(&dir.join("tls/ca.pem"));
    assert_eq!((code, out.starts_with("meshplay")), (0, true), "{out}{err}");
    // Without a CA there is nothing to check the master against.
    let (code, _, err) = cli_elsewhere(&["version", "--api-addr", &url, "--api-token", &token]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--ca-file"), "{err}");
    // Another CA does not vouch for this master.
    let other = tempfile::tempdir().unwrap();
    let other_dir = DataDir::create(other.path().join("d")).unwrap();
    ServerTls::prepare(&other_dir, &CertSource::Generate { names: vec![] }, &[]).unwrap();
    let (code, _, err) = version_with(&other_dir.path().join("tls/ca.pem"));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("UnknownIssuer"), "{err}");
    // Plaintext to either port: a 400 that says what to do.
    for addr in [m.endpoint.api_addr, m.endpoint.mesophyll_addr] {
        let answer = plaintext_get(addr);
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("\"tls_required\""), "{answer}");
    }
    let (code, _, err) = cli_elsewhere(&[
        "version",
        "--api-addr",
        &format!("http://127.0.0.1:{port}"),
        "--api-token",
        &token,
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("tls_required"), "{err}");

    let log = m.log();
    assert_eq!(log.matches(&token).count(), 0, "the token is never logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_tls_with_the_operators_certificate() {
    // A certificate from a CA the master never saw (made here with the
    // master's own code, in another directory).
    let theirs = tempfile::tempdir().unwrap();
    let their_dir = DataDir::create(theirs.path().join("ca")).unwrap();
    ServerTls::prepare(
        &their_dir,
        &CertSource::Generate {
            names: vec!["master.example".into()],
        },
        &[],
    )
    .unwrap();
    let cert = their_dir.path().join("tls/cert.pem");
    let key = their_dir.path().join("tls/key.pem");
    let m = Master::start(tls_opts(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]))
    .await;
    assert!(
        !m.data_dir().join("tls/ca.pem").exists(),
        "no CA of its own"
    );
    let (code, out, err) = m.cli(&["workers"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("running").count(), 2, "{out}");
    let (code, _, err) = cli_elsewhere(&[
        "version",
        "--api-addr",
        &format!("https://localhost:{}", m.endpoint.api_addr.port()),
        "--api-token",
        &m.admin_token(),
        "--ca-file",
        their_dir.path().join("tls/ca.pem").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");

    // A key that is not the certificate's is refused at start.
    let wrong = tempfile::tempdir().unwrap();
    let out = Command::new(EXE)
        .args(["serve", "--data-dir"])
        .arg(wrong.path())
        .args([
            "--api-addr",
            "127.0.0.1:0",
            "--mesophyll-addr",
            "127.0.0.1:0",
        ])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(m.data_dir().join("tls/cert.pem"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TLS"), "{err}");
}

#[test]
fn plaintext_beyond_loopback_needs_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let serve = |extra: &[&str]| {
        Command::new(EXE)
            .args(["serve", "--workers", "1", "--data-dir"])
            .arg(dir.path())
            .args(["--mesophyll-addr", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let out = serve(&["--api-addr", "0.0.0.0:0"])
        .wait_with_output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to serve plaintext on 0.0.0.0:0 (--api-addr)")
            && err.contains("--tls")
            && err.contains("--insecure"),
        "{err}"
    );

    let mut child = serve(&["--api-addr", "0.0.0.0:0", "--insecure"]);
    let data = DataDir::at(dir.path());
    let until = Instant::now() + Duration::from_secs(30);
    let endpoint = loop {
        if let Ok(e) = data.endpoint()
            && e.pid == child.id()
        {
            break e;
        }
        assert!(Instant::now() < until, "the insecure master never listened");
        assert!(child.try_wait().unwrap().is_none(), "it exited");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(endpoint.api_addr.ip().is_unspecified() && !endpoint.tls);
    common::signal(child.id(), libc::SIGTERM);
    let _ = child.wait();
}
