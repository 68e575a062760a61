//! Tenants against bare services and the shipped plugins: ordering,
//! eviction, queues, state reloads.

use super::*;
use crate::mesophyll::db::TenantStateEntry;
use crate::mesophyll::message::TenantState;
use serde_json::Value;

/// A job's outcome, as JSON.
async fn run(t: &Arc<Tenants>, tenant: Tenant, job: Job) -> Result<Value, RemoteError> {
    t.run(tenant, job).await.map(|v| v.to_value())
}

fn tenants(max: usize) -> Arc<Tenants> {
    Tenants::new(
        TenantsConfig {
            max_tenants: max,
            queue_depth: 2,
            ..TenantsConfig::default()
        },
        Services::bare(),
    )
}

fn script(code: &str) -> Job {
    Job::Script {
        name: "t".into(),
        code: code.into(),
        event: Event::default(),
        deadline: Instant::now() + Duration::from_secs(5),
        request: None,
    }
}

#[tokio::test]
async fn drop_gives_the_next_job_a_fresh_vm() {
    let t = tenants(10);
    let a = Tenant::new("u", "1");
    run(&t, a.clone(), script("x = 1")).await.unwrap();
    assert_eq!(run(&t, a.clone(), script("return x")).await.unwrap(), 1);
    run(&t, a.clone(), Job::Drop).await.unwrap();
    assert_eq!(
        run(&t, a.clone(), script("return x")).await.unwrap(),
        Value::Null
    );
}

#[tokio::test]
async fn a_full_queue_is_overloaded_at_once() {
    let t = tenants(10);
    let a = Tenant::new("u", "1");
    // One job running (sleeping), two queued: the fourth is refused.
    for _ in 0..3 {
        t.submit_detached(a.clone(), script("time.sleep(300)"))
            .unwrap();
        tokio::task::yield_now().await;
    }
    let err = run(&t, a, script("return 1")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Overloaded);
}

#[tokio::test]
async fn past_the_cap_the_least_recently_used_tenant_is_evicted() {
    let t = tenants(2);
    for id in ["1", "2", "3"] {
        run(&t, Tenant::new("u", id), script("x = 1"))
            .await
            .unwrap();
    }
    assert_eq!(t.live(), 2);
    // Tenant 1 was evicted: its VM is fresh.
    assert_eq!(
        run(&t, Tenant::new("u", "1"), script("return x"))
            .await
            .unwrap(),
        Value::Null
    );
}

#[tokio::test]
async fn the_live_list_puts_the_most_recently_used_first_and_counts_them_all() {
    let t = tenants(10);
    for id in ["1", "2", "3", "1"] {
        run(&t, Tenant::new("u", id), script("x = 1"))
            .await
            .unwrap();
    }
    let busy = Tenant::new("u", "4");
    t.submit_detached(busy.clone(), script("time.sleep(300)"))
        .unwrap();
    t.submit_detached(busy.clone(), script("return 1")).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let live = t.list(3);
    assert_eq!(live.total, 4);
    let ids: Vec<&str> = live.tenants.iter().map(|l| l.tenant.id.as_str()).collect();
    assert_eq!(ids, ["4", "1", "3"]);
    assert!(live.tenants[0].busy);
    assert_eq!(live.tenants[0].queued, 1);
    assert!(!live.tenants[1].busy && live.tenants[1].queued == 0);
}

#[tokio::test]
async fn an_event_nobody_handles_is_not_found() {
    let t = tenants(2);
    let err = run(
        &t,
        Tenant::new("u", "1"),
        Job::Event {
            event: Event {
                name: "nope".into(),
                data: Value::Null.into(),
                ..Default::default()
            },
            deadline: Instant::now() + Duration::from_secs(1),
            request: None,
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound);
}

fn event(name: &str, data: Value) -> Job {
    Job::Event {
        event: Event {
            name: name.into(),
            data: data.into(),
            ..Default::default()
        },
        deadline: Instant::now() + Duration::from_secs(5),
        request: None,
    }
}

#[tokio::test]
async fn the_shipped_greeter_counts_members_and_explains_bad_input() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins");
    let (catalogue, errors) = LoadedCatalogue::load(&dir);
    assert!(errors.is_empty(), "{errors:?}");
    let t = Tenants::new(
        TenantsConfig::default(),
        Services::new(0, None, None, catalogue),
    );
    let guild = Tenant::new("guild", "7");
    let join = |name: &str| event("member_join", serde_json::json!({ "name": name }));
    run(&t, guild.clone(), join("Ada")).await.unwrap();
    let out = run(&t, guild.clone(), join("Grace")).await.unwrap();
    let out: Vec<PluginOutcome> = serde_json::from_value(out).unwrap();
    assert_eq!(out.len(), 1);
    let v = out[0].result.clone().unwrap().to_value();
    assert_eq!(v["message"], "Welcome, Grace! You are member #2 here.");
    assert_eq!(v["by"], "greeter 1.0.0");

    let out = run(&t, guild, event("member_join", Value::Null))
        .await
        .unwrap();
    let out: Vec<PluginOutcome> = serde_json::from_value(out).unwrap();
    let err = out[0].result.clone().unwrap_err();
    assert_eq!(err.kind, ErrorKind::Runtime);
    assert!(err.message.starts_with("greeter:13:"), "{err}");
    assert!(err.message.contains("needs data.name"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicting_a_busy_tenant_never_runs_it_twice_at_once() {
    let t = tenants(1);
    let a = Tenant::new("u", "a");
    // Each job says when it ran (the first when it ended, the second when
    // it started): the order the VM ran them in, whatever order the callers
    // are woken in.
    let slow = {
        let (t, a) = (Arc::clone(&t), a.clone());
        tokio::spawn(
            async move { run(&t, a, script("time.sleep(300) return time.now_ms()")).await },
        )
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The cap is one tenant: B evicts A, whose queue is empty while its
    // first job still runs.
    run(&t, Tenant::new("u", "b"), script("return 0"))
        .await
        .unwrap();
    let second_started = run(&t, a, script("return time.now_ms()")).await.unwrap();
    let first_ended = slow.await.unwrap().unwrap();
    assert!(
        second_started.as_i64().unwrap() >= first_ended.as_i64().unwrap(),
        "A's second job ran at {second_started} ms, before its first ended ({first_ended} ms)"
    );
}

#[tokio::test]
async fn a_job_that_races_an_idle_exit_is_run_not_dropped() {
    let t = Tenants::new(
        TenantsConfig {
            idle_ttl: Duration::from_millis(20),
            ..TenantsConfig::default()
        },
        Services::bare(),
    );
    let a = Tenant::new("u", "1");
    // Many rounds of: let the actor go idle, then send just as it exits.
    for _ in 0..50 {
        run(&t, a.clone(), script("return 1")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let out = run(&t, a.clone(), script("return 2")).await;
        assert_eq!(out.unwrap(), 2);
    }
}

#[test]
fn a_state_change_during_a_reload_survives_the_reload() {
    let t = tenants(10);
    let a = Tenant::new("u", "1");
    let old = TenantState {
        data: serde_json::json!("old"),
        ..TenantState::default()
    };
    let new = TenantState {
        data: serde_json::json!("new"),
        ..TenantState::default()
    };
    // The worker asks for every state; before the answer lands, a newer
    // change arrives; the answer (read before the change) must not
    // overwrite it.
    let reload = t.states().begin_reload();
    t.states().set(a.clone(), Some(new.clone()));
    t.states().finish_reload(
        reload,
        vec![TenantStateEntry {
            tenant: a.clone(),
            state: old,
        }],
    );
    assert_eq!(t.states().state(&a), Some(new));
}

#[tokio::test]
async fn past_the_memory_budget_new_vms_wait_and_idle_ones_make_room() {
    let t = Tenants::new(
        TenantsConfig {
            memory_budget: 4 * 1024 * 1024,
            ..TenantsConfig::default()
        },
        Services::bare(),
    );
    // Each tenant keeps about 1.5 MiB of heap.
    let keep = "kept = string.rep('x', 1536 * 1024) return #kept";
    let mut admitted = 0;
    let mut refused = None;
    for i in 0..10 {
        match run(&t, Tenant::new("u", i.to_string()), script(keep)).await {
            Ok(_) => admitted += 1,
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let e = refused.expect("the budget refused a VM");
    assert_eq!(e.kind, ErrorKind::Overloaded, "{e:?}");
    assert!(e.message.contains("--worker-memory-mb"), "{e:?}");
    assert!((2..=4).contains(&admitted), "{admitted} admitted");
    // A tenant with a VM already goes on.
    assert_eq!(
        run(&t, Tenant::new("u", "0"), script("return 1"))
            .await
            .unwrap(),
        1
    );
    // The refusal evicted idle tenants: a retry finds room.
    common_eventually(|| async {
        run(&t, Tenant::new("u", "late"), script("return 2"))
            .await
            .ok()
    })
    .await;
}

/// Retries `f` for up to 5 s.
async fn common_eventually<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < until, "no room was made");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
