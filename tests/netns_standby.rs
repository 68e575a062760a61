//! Standby masters on hosts that are apart: PostgreSQL, two masters and
//! two joined workers each in a network namespace of its own, all on one
//! bridge, and this test's client on the bridge too. The rounds are
//! `standby.rs`'s (`common::failover`): the leader SIGKILLed, SIGSTOPped
//! past its lease and cut off from PostgreSQL (a blackhole route to the
//! database's address on its host alone, so that its workers and clients
//! still reach it) three times each, under load, losing nothing
//! acknowledged.
//!
//! The masters serve plaintext with `--insecure`: the bridge is private to
//! the test (`join.rs` and `netns.rs` cover TLS between hosts).
//!
//! Needs root, `ip netns` (iproute2) and PostgreSQL: skipped with the
//! reason where one is missing, a failure under `CI=true`.

mod common;

use common::netns::ip;

use common::failover::rounds;
use meshplay::bench::failover::cluster::{Cluster, Placement};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

const NET: &str = "10.78.0";
const PG: &str = "10.78.0.10";

/// A bridge in a namespace of its own, hosts joined to it, and this
/// test's namespace too; removed on drop.
struct Net {
    tag: String,
    hosts: Vec<String>,
}

impl Net {
    /// The bridge, and hosts `names` at `10.78.0.<octet>`.
    fn build(hosts: &[(&str, u8)]) -> Result<Net, String> {
        let tag = format!("ms{}", std::process::id() % 100_000);
        let mut net = Net {
            tag: tag.clone(),
            hosts: Vec::new(),
        };
        let switch = net.ns("sw");
        ip(&["netns", "add", &switch])?;
        net.hosts.push(switch.clone());
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &switch, "link", "set", "br0", "up"])?;
        for (name, octet) in hosts {
            let ns = net.ns(name);
            ip(&["netns", "add", &ns])?;
            net.hosts.push(ns.clone());
            net.plug(Some(&ns), name, *octet)?;
        }
        net.plug(None, "t", 254)?;
        Ok(net)
    }

    fn ns(&self, name: &str) -> String {
        format!("{}{name}", self.tag)
    }

    /// A veth pair from host `ns` (this namespace for `None`) to the
    /// bridge, the host's end at `10.78.0.<octet>`.
    fn plug(&self, ns: Option<&str>, name: &str, octet: u8) -> Result<(), String> {
        let (near, far) = (
            format!("{}{name}a", self.tag),
            format!("{}{name}b", self.tag),
        );
        let switch = self.ns("sw");
        ip(&["link", "add", &near, "type", "veth", "peer", "name", &far])?;
        ip(&["link", "set", &far, "netns", &switch])?;
        ip(&["-n", &switch, "link", "set", &far, "master", "br0"])?;
        ip(&["-n", &switch, "link", "set", &far, "up"])?;
        let addr = format!("{NET}.{octet}/24");
        match ns {
            Some(ns) => {
                ip(&["link", "set", &near, "netns", ns])?;
                ip(&["-n", ns, "addr", "add", &addr, "dev", &near])?;
                ip(&["-n", ns, "link", "set", &near, "up"])?;
                ip(&["-n", ns, "link", "set", "lo", "up"])
            }
            None => {
                ip(&["addr", "add", &addr, "dev", &near])?;
                ip(&["link", "set", &near, "up"])
            }
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace takes its veth ends, and their peers, along.
        for ns in &self.hosts {
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = ip(&["link", "del", &format!("{}ta", self.tag)]);
    }
}

/// PostgreSQL on its own host, stopped on drop.
struct Postgres {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Postgres {
    fn start(ns: &str) -> Result<Postgres, String> {
        let initdb = common::pg::tool_path("initdb").ok_or("no PostgreSQL installed")?;
        let server = common::pg::tool_path("postgres").ok_or("no PostgreSQL installed")?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let data = dir.path().join("data");
        let chown = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .map_err(|e| e.to_string())?;
        if !chown.success() {
            return Err("cannot hand the data directory to postgres".into());
        }
        let init = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(&initdb)
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync"])
            .stdout(Stdio::null())
            .status()
            .map_err(|e| e.to_string())?;
        if !init.success() {
            return Err("initdb failed".into());
        }
        let hba = data.join("pg_hba.conf");
        let mut rules = std::fs::read_to_string(&hba).map_err(|e| e.to_string())?;
        rules.push_str(&format!("host all all {NET}.0/24 trust\n"));
        std::fs::write(&hba, rules).map_err(|e| e.to_string())?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "runuser", "-u", "postgres", "--"])
            .arg(&server)
            .arg("-D")
            .arg(&data)
            .args(["-h", PG, "-p", "5432", "-k"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("log")).map_err(|e| e.to_string())?)
            .spawn()
            .map_err(|e| e.to_string())?;
        let pg = Postgres { child, _dir: dir };
        let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect((PG, 5432)).is_err() {
            if std::time::Instant::now() > until {
                return Err("PostgreSQL did not listen within 30 s".into());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Ok(pg)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // runuser passes SIGTERM on: the server shuts down smartly.
        common::signal(self.child.id(), libc::SIGTERM);
        let _ = self.child.wait();
    }
}

/// Each master and worker on a host of its own.
struct Hosts {
    tag: String,
}

impl Hosts {
    fn master_ns(&self, i: usize) -> String {
        format!("{}m{i}", self.tag)
    }

    fn master_ip(i: usize) -> String {
        format!("{NET}.{}", 11 + i)
    }
}

impl Placement for Hosts {
    fn command(&self, exe: &Path, master: Option<usize>, worker: u32) -> Command {
        let ns = match master {
            Some(i) => self.master_ns(i),
            None => format!("{}w{worker}", self.tag),
        };
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &ns]).arg(exe);
        c
    }

    fn addrs(&self, i: usize) -> (SocketAddr, SocketAddr) {
        let host = Hosts::master_ip(i);
        (
            format!("{host}:9081").parse().unwrap(),
            format!("{host}:9082").parse().unwrap(),
        )
    }

    fn store(&self, _: usize) -> String {
        format!("postgres://postgres@{PG}:5432/postgres")
    }

    fn cut(&self, i: usize) {
        let route = format!("{PG}/32");
        ip(&[
            "-n",
            &self.master_ns(i),
            "route",
            "add",
            "blackhole",
            &route,
        ])
        .unwrap();
    }

    fn restore(&self, i: usize) {
        let route = format!("{PG}/32");
        ip(&[
            "-n",
            &self.master_ns(i),
            "route",
            "del",
            "blackhole",
            &route,
        ])
        .unwrap();
    }
}

/// The network and its database, or `None` (said why) when this machine
/// cannot make them.
fn setup_or_skip() -> Option<(Net, Postgres)> {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let made = if root {
        Net::build(&[("pg", 10), ("m0", 11), ("m1", 12), ("w0", 21), ("w1", 22)]).and_then(|net| {
            let pg = Postgres::start(&net.ns("pg"))?;
            Ok((net, pg))
        })
    } else {
        Err("not root".into())
    };
    match made {
        Ok(made) => Some(made),
        Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("network namespaces and PostgreSQL are needed under CI: {why}")
        }
        Err(why) => {
            eprintln!("skipping the multi-host standby test: {why}");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_masters_on_separate_hosts_take_over_losing_nothing() {
    let Some((net, _pg)) = setup_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let hosts = Box::new(Hosts {
        tag: net.tag.clone(),
    });
    let plan = common::failover::plan(dir.path(), vec!["--insecure".into()]);
    let mut cluster = Cluster::start(plan, hosts).await.unwrap();
    rounds(&mut cluster).await;
}
