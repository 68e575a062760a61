//! A real PostgreSQL for the tests: one cluster per test binary, from the
//! server installed on this machine (Debian's `postgresql`), in a temporary
//! directory, on a free port, started on first use and stopped when the
//! binary exits; a fresh database for every test.
//!
//! Where no PostgreSQL is installed the tests that want one skip, saying
//! so; under `CI=true` that is a failure (`.ci/run` installs it).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

struct Cluster {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    /// Run the server's tools as this user (root may not run PostgreSQL).
    user: Option<String>,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
static DATABASES: AtomicU32 = AtomicU32::new(0);

/// The newest `/usr/lib/postgresql/<version>/bin`, or `PG_BIN`.
fn bin_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b)
}

fn tool(c: &Cluster, name: &str) -> Command {
    match &c.user {
        Some(user) => {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", user, "--"]).arg(c.bin.join(name));
            cmd
        }
        None => Command::new(c.bin.join(name)),
    }
}

fn run(mut cmd: Command, what: &str) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

extern "C" fn stop_cluster() {
    if let Some(Ok(c)) = CLUSTER.get() {
        let mut stop = tool(c, "pg_ctl");
        stop.arg("-D")
            .arg(&c.data)
            .args(["-m", "immediate", "stop"]);
        let _ = stop.stdout(Stdio::null()).stderr(Stdio::null()).status();
        if let Some(parent) = c.data.parent() {
            let _ = std::fs::remove_dir_all(parent);
        }
    }
}

fn start() -> Result<Cluster, String> {
    let bin =
        bin_dir().ok_or("no PostgreSQL under /usr/lib/postgresql (apt-get install postgresql)")?;
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let user = root.then(|| "postgres".to_owned());
    let dir = tempfile::Builder::new()
        .prefix("meshplay-pg")
        .tempdir()
        .map_err(|e| e.to_string())?
        .keep();
    if root {
        run(
            {
                let mut c = Command::new("chown");
                c.args(["-R", "postgres:postgres"]).arg(&dir);
                c
            },
            "chown",
        )?;
    }
    let data = dir.join("data");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let cluster = Cluster {
        bin,
        data: data.clone(),
        port,
        user,
    };
    let mut init = tool(&cluster, "initdb");
    init.arg("-D")
        .arg(&data)
        .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"]);
    run(init, "initdb")?;
    let mut ctl = tool(&cluster, "pg_ctl");
    ctl.arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(dir.join("log"))
        .args([
            "-o",
            &format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300",
                dir.display()
            ),
            "-w",
            "start",
        ]);
    run(ctl, "pg_ctl start")?;
    // SAFETY: registering a plain extern "C" function.
    unsafe { libc::atexit(stop_cluster) };
    Ok(cluster)
}

/// The URL of a fresh, empty database, or why there is none.
pub fn database() -> Result<String, String> {
    let cluster = CLUSTER.get_or_init(start).as_ref().map_err(Clone::clone)?;
    let name = format!(
        "meshplay_{}_{}",
        std::process::id(),
        DATABASES.fetch_add(1, Ordering::Relaxed)
    );
    let mut create = tool(cluster, "createdb");
    create.args([
        "-h",
        "127.0.0.1",
        "-p",
        &cluster.port.to_string(),
        "-U",
        "postgres",
        &name,
    ]);
    run(create, "createdb")?;
    Ok(format!(
        "postgres://postgres@127.0.0.1:{}/{name}",
        cluster.port
    ))
}

/// A fresh database, or `None` after printing why the test skips (a
/// failure under `CI=true`).
pub fn database_or_skip() -> Option<String> {
    match database() {
        Ok(url) => Some(url),
        Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI must run the PostgreSQL tests: {why}")
        }
        Err(why) => {
            eprintln!("skipped: {why}");
            None
        }
    }
}

/// The server's binaries, for tests that run its tools (pgbench, psql).
pub fn tool_path(name: &str) -> Option<PathBuf> {
    bin_dir()
        .map(|b| b.join(name))
        .filter(|p| Path::new(p).exists())
}
