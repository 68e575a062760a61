//! What is particular to the PostgreSQL store, against a real cluster
//! (`common::pg`): the state is in the database and not beside the master,
//! the schema is migrated once, a database that cannot be reached is a
//! clear error that shows no password, and `meshplay store copy` moves
//! everything between sled and PostgreSQL, refusing a store that is not
//! empty. The store suite itself runs on both backends (`store.rs`).

mod common;

use common::{EXE, Master, Opts, event};
use meshplay::rest::Role;
use serde_json::json;
use std::process::Command;
use std::time::{Duration, Instant};

async fn sql(url: &str, query: &str) -> Vec<tokio_postgres::Row> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client.query(query, &[]).await.unwrap()
}

fn store_url(opts: &Opts) -> String {
    opts.extra[1].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_lives_in_the_database_and_the_schema_is_migrated_once() {
    let Some(opts) = Opts::on_postgres() else {
        return;
    };
    let url = store_url(&opts);
    let mut m = Master::start(opts.clone()).await;
    m.client
        .kv_set("user", "1", "notes", "a", &json!({"x": 1}))
        .await
        .unwrap();
    m.client
        .dispatch("counter", "7", &event("incr", json!({"by": 5})))
        .await
        .unwrap();
    let status = m.client.status().await.unwrap();
    assert_eq!(status.store, url);
    let rows = sql(&url, "SELECT tenant_type, tenant_id FROM kv ORDER BY 1, 2").await;
    let tenants: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        tenants,
        [("counter".into(), "7".into()), ("user".into(), "1".into())]
    );
    m.stop();

    // Another master, another data directory, the same database: the same
    // data, and the migration is not run again.
    let m2 = Master::start(opts).await;
    let r = m2.client.kv_get("user", "1", "notes", "a").await.unwrap();
    assert_eq!(r.map(|r| r.value), Some(json!({"x": 1})));
    let versions = sql(&url, "SELECT version FROM meshplay_schema").await;
    let versions: Vec<i32> = versions.iter().map(|r| r.get(0)).collect();
    let steps: Vec<i32> = meshplay::master::store::postgres::schema::MIGRATIONS
        .iter()
        .map(|(v, _)| *v)
        .collect();
    assert_eq!(versions, steps, "each step once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_cannot_be_reached_is_a_clear_error_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = Command::new(EXE)
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.path())
        .args([
            "--api-addr",
            "127.0.0.1:0",
            "--mesophyll-addr",
            "127.0.0.1:0",
        ])
        .args([
            "--store",
            "postgres://meshplay:hunter2@127.0.0.1:1/meshplay",
        ])
        .output()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("postgres"), "{stderr}");
    assert!(
        !stderr.contains("hunter2"),
        "the password was shown: {stderr}"
    );

    let out = Command::new(EXE)
        .args(["serve", "--store", "mysql://meshplay:hunter2@db/m"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("expected sled:PATH or postgres://"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

fn copy(from: &str, to: &str) -> (bool, String) {
    let out = Command::new(EXE)
        .args(["store", "copy", "--from", from, "--to", to, "--json"])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Puts a schedule on guild:1 and sets a timer for user:u0; returns the
/// schedule and the pending timers of user:u0.
async fn a_schedule_and_a_timer(
    c: &meshplay::client::ApiClient,
) -> (
    meshplay::mesophyll::timers::Schedule,
    Vec<meshplay::mesophyll::timers::PendingTimer>,
) {
    let daily = meshplay::rest::SchedulePut {
        cron: "0 9 * * *".into(),
        event: "sign".into(),
        data: json!({ "name": "cron" }),
        timezone: Some("Europe/Stockholm".into()),
    };
    let schedule = c.put_schedule("guild", "1", "daily", &daily).await.unwrap();
    let script = meshplay::rest::ScriptRequest {
        name: None,
        code: "return timers.after(3600000, 'echo', { n = 1 })".into(),
        event: None,
        timeout_ms: None,
    };
    c.run_script("user", "u0", &script).await.unwrap();
    (schedule, c.timers("user", "u0").await.unwrap().timers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_copy_moves_everything_from_sled_to_postgres_and_back() {
    let Some(pg) = common::pg::database_or_skip() else {
        return;
    };
    // A sled store with something of every kind in it.
    let mut m = Master::start(Opts::default()).await;
    for i in 0..300 {
        m.client
            .kv_set(
                "user",
                &format!("u{}", i % 3),
                "s",
                &format!("k{i:03}"),
                &json!(i),
            )
            .await
            .unwrap();
    }
    m.client
        .dispatch(
            "guild",
            "1",
            &event("sign", json!({"name": "Ada", "message": "hi"})),
        )
        .await
        .unwrap();
    let state = meshplay::mesophyll::message::TenantState {
        events: Some(vec!["echo".into()]),
        ..Default::default()
    };
    m.client
        .put_tenant_state("user", "u0", &state)
        .await
        .unwrap();
    let app = m.client.create_token(Role::App, Some("app")).await.unwrap();
    let upload = common::api::upload(
        "name = \"extra\"\nversion = \"1.0.0\"\nevents = [\"extra\"]\n",
        "return { extra = function(e) return 1 end }",
    );
    m.client.put_plugin("extra", &upload).await.unwrap();
    let (schedule, pending) = a_schedule_and_a_timer(&m.client).await;
    let audit = m.client.audit(None, 1000).await.unwrap().entries.len();
    let created = m
        .client
        .kv_get("user", "u0", "s", "k000")
        .await
        .unwrap()
        .unwrap();
    m.stop();
    let sled = format!("sled:{}", m.dir.path().join("store").display());

    let (ok, out) = copy(&sled, &pg);
    assert!(ok, "{out}");
    let counts: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(counts["kv"], 302, "{counts}"); // 300 + the guestbook's two
    assert_eq!(
        (counts["tenant_states"].clone(), counts["catalogue"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(counts["tokens"], 1);
    assert_eq!(counts["audit"], json!(audit));
    assert_eq!(
        (counts["timers"].clone(), counts["schedules"].clone()),
        (json!(1), json!(1))
    );

    // Into a store that is not empty: refused, nothing written.
    let (ok, out) = copy(&sled, &pg);
    assert!(!ok && out.contains("not empty"), "{out}");

    // A master on the copy sees what the sled one had, times included.
    let on_pg = Opts {
        extra: vec!["--store".into(), pg.clone()],
        ..Opts::default()
    };
    let mut m2 = Master::start(on_pg).await;
    let r = m2
        .client
        .kv_get("user", "u0", "s", "k000")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r, created);
    let page = m2
        .client
        .kv_find("user", "u1", "s", "k%", None)
        .await
        .unwrap();
    assert_eq!(page.records.len(), 100);
    assert_eq!(
        m2.client.tenant_state("user", "u0").await.unwrap().state,
        state
    );
    let names: Vec<String> = m2
        .client
        .plugins()
        .await
        .unwrap()
        .plugins
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert!(names.contains(&"extra".to_owned()), "{names:?}");
    let app_client = meshplay::client::ApiClient::new(m2.endpoint.api_addr, &app.token);
    app_client
        .dispatch("user", "u9", &event("echo", json!(1)))
        .await
        .expect("the copied app token works");
    let copied = m2.client.timers("user", "u0").await.unwrap().timers;
    assert_eq!(copied.len(), 1, "{copied:?}");
    assert_eq!(
        (copied[0].event.as_str(), copied[0].due_at),
        ("echo", pending[0].due_at)
    );
    let schedules = m2.client.schedules("guild", "1").await.unwrap().schedules;
    assert_eq!(schedules, vec![schedule]);
    m2.stop();

    // And back, into a fresh sled store: the same records.
    let back = tempfile::tempdir().unwrap();
    let sled2 = format!("sled:{}", back.path().join("store").display());
    let (ok, out) = copy(&pg, &sled2);
    assert!(ok, "{out}");
    let again: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(again, counts);
}

/// The audit log's retention on PostgreSQL: entries older than the cutoff
/// go, the younger ones stay in order (the sled side is a unit test of
/// `master::audit`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_is_trimmed_by_age_on_postgres() {
    let Some(url) = common::pg::database_or_skip() else {
        return;
    };
    let store = meshplay::master::store::StoreUrl::parse(&url)
        .unwrap()
        .open()
        .await
        .unwrap();
    for at in 0..1500 {
        store
            .audit_append(meshplay::rest::AuditEntry {
                seq: 0,
                at,
                token: "t".into(),
                method: "PUT".into(),
                route: "/x".into(),
                tenant: None,
                status: 200,
            })
            .await
            .unwrap();
    }
    let trimmed = meshplay::master::audit::trim(store.as_ref(), 1200)
        .await
        .unwrap();
    assert_eq!(trimmed, 1200);
    let left = store.audit(None, 10_000).unwrap();
    assert_eq!(left.len(), 300);
    assert_eq!(left[0].at, 1200);
}

/// Tenant states a page at a time, on a store at `url`: every state of
/// the shard once, in pages that stay under their byte budget.
async fn states_come_in_pages(url: &str) {
    use meshplay::mesophyll::message::{Tenant, TenantState};
    let store = meshplay::master::store::StoreUrl::parse(url)
        .unwrap()
        .open()
        .await
        .unwrap();
    let filler = "x".repeat(10_000);
    for i in 0..40 {
        let state = TenantState {
            events: None,
            plugins: None,
            data: json!({ "filler": filler }),
        };
        store
            .put_tenant_state(&Tenant::new("user", format!("t{i:02}")), &state)
            .await
            .unwrap();
    }
    let even = |t: &Tenant| t.id[1..].parse::<u32>().unwrap() % 2 == 0;
    let (mut seen, mut after, mut pages) = (Vec::new(), None::<Tenant>, 0);
    loop {
        let page =
            tokio::task::block_in_place(|| store.tenant_states_page(&even, after.as_ref(), 50_000))
                .unwrap();
        assert!(!page.states.is_empty());
        assert!(
            page.states.len() <= 5,
            "{} states of 10 KB in 50 KB",
            page.states.len()
        );
        seen.extend(page.states.into_iter().map(|e| e.tenant.id));
        pages += 1;
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    seen.sort();
    let expected: Vec<String> = (0..40).step_by(2).map(|i| format!("t{i:02}")).collect();
    assert_eq!(seen, expected);
    assert!(pages >= 4, "{pages} pages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_states_come_in_pages_on_sled() {
    let dir = tempfile::tempdir().unwrap();
    states_come_in_pages(&format!("sled:{}", dir.path().join("store").display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_states_come_in_pages_on_postgres() {
    let Some(url) = common::pg::database_or_skip() else {
        return;
    };
    states_come_in_pages(&url).await;
}

/// A schedule's run ending (`schedule_advance`) while the schedule is
/// deleted, over and over on two connections: each transaction must take
/// the rows in one order, or PostgreSQL finds a deadlock and one fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_deleted_while_its_run_ends_never_deadlocks() {
    let Some(url) = common::pg::database_or_skip() else {
        return;
    };
    let store: std::sync::Arc<dyn meshplay::master::store::Store> =
        meshplay::master::store::StoreUrl::parse(&url)
            .unwrap()
            .open()
            .await
            .unwrap();
    let tenant = meshplay::mesophyll::message::Tenant::new("guild", "1");
    let spec = meshplay::mesophyll::timers::ScheduleSpec {
        name: "tick".into(),
        cron: "* * * * * *".into(),
        event: "tick".into(),
        data: Default::default(),
        timezone: "UTC".into(),
    };
    for round in 0..100 {
        let run = store
            .timers()
            .schedule_put(&tenant, spec.clone(), 1_000, 64)
            .await
            .unwrap();
        let (a, b) = (std::sync::Arc::clone(&store), std::sync::Arc::clone(&store));
        let (t1, t2) = (tenant.clone(), tenant.clone());
        let advance = tokio::spawn(async move {
            let next = |_: &meshplay::mesophyll::timers::ScheduleSpec| Some(2_000);
            a.timers()
                .schedule_advance(&t1, "tick", run.id, &next)
                .await
        });
        let delete = tokio::spawn(async move { b.timers().schedule_delete(&t2, "tick").await });
        let (advanced, deleted) = (advance.await.unwrap(), delete.await.unwrap());
        assert!(advanced.is_ok(), "round {round}: {advanced:?}");
        assert!(deleted.is_ok(), "round {round}: {deleted:?}");
        // Whichever came first, nothing of the schedule is left pending
        // once both are done but a run the delete did not see.
        store
            .timers()
            .schedule_delete(&tenant, "tick")
            .await
            .unwrap();
        let left = store.timers().timers_of(&tenant, 10).unwrap();
        for t in left {
            store.timers().timer_done(t.id).await.unwrap();
        }
    }
}
