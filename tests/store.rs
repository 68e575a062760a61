//! The store end to end, on both backends: the Luau `kv` API, the REST and
//! CLI views of the same data, tenant state, the HTTP/2 DB endpoints'
//! checks. Durability across `kill -9` is `durability.rs`.

mod common;

use bytes::Bytes;
use common::api::{concurrent_incr, first_value};
use common::{Master, Opts, event, eventually, tenants_on, with_external_worker_1_on};
use http_body_util::{BodyExt, Full};
use meshplay::client::ApiClient;
use meshplay::mesophyll::db::{KvOp, KvReply, TenantStateEntry};
use meshplay::mesophyll::message::TenantState;
use meshplay::rest::ScriptRequest;
use serde_json::{Value, json};
use std::time::Duration;

async fn script(
    c: &ApiClient,
    kind: &str,
    id: &str,
    code: &str,
) -> Result<Value, meshplay::client::ApiClientError> {
    let req = ScriptRequest {
        name: Some("t".into()),
        code: code.into(),
        event: None,
        timeout_ms: Some(5000),
    };
    c.run_script(kind, id, &req).await.map(|r| r.result)
}

/// Fires `per_tenant` increments of `by = i` at each of `tenants` tenants,
/// all at once; returns the expected count per tenant.
async fn concurrent_increments_leave_exactly_the_right_counts(opts: Opts) {
    let m = Master::start(opts.clone()).await;
    let expected = concurrent_incr(&m.client, 20, 10).await;
    for t in 0..20 {
        let id = t.to_string();
        let v = first_value(&m.client, "counter", &id, &event("count", Value::Null)).await;
        assert_eq!(v, expected, "tenant {t}");
        let r = m
            .client
            .kv_get("counter", &id, "counter", "value")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.value, expected);
    }
}

async fn scripts_rest_and_cli_see_the_same_values(opts: Opts) {
    let m = Master::start(opts.clone()).await;
    let c = &m.client;
    // Script -> REST and CLI.
    script(
        c,
        "user",
        "1",
        "kv.set('greeting', { hello = 'world', n = {1, 2} }, 'prefs')",
    )
    .await
    .unwrap();
    let r = c
        .kv_get("user", "1", "prefs", "greeting")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.value, json!({"hello": "world", "n": [1, 2]}));
    let (code, out, err) = m.cli(&["kv", "get", "user", "1", "prefs", "greeting"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["hello"],
        "world"
    );

    // CLI and REST -> script.
    let (code, _, err) = m.cli(&["kv", "set", "user", "1", "prefs", "lang", r#""en""#]);
    assert_eq!(code, 0, "{err}");
    c.kv_set("user", "1", "prefs", "theme", &json!("dark"))
        .await
        .unwrap();
    let v = script(
        c,
        "user",
        "1",
        "return { kv.get('lang', 'prefs'), kv.get('theme', 'prefs'), kv.get('nope', 'prefs') }",
    )
    .await
    .unwrap();
    assert_eq!(v, json!(["en", "dark"]));

    // Find, in key order, with LIKE patterns, from all three sides.
    let v = script(c, "user", "1", "local r = kv.find('%e%', 'prefs') local ks = {} for _, x in r do table.insert(ks, x.key) end return ks")
        .await
        .unwrap();
    assert_eq!(v, json!(["greeting", "theme"]));
    let page = c.kv_find("user", "1", "prefs", "l_ng", None).await.unwrap();
    assert_eq!(page.records.len(), 1);
    assert_eq!(page.records[0].key, "lang");
    let (code, out, _) = m.cli(&["kv", "find", "user", "1", "prefs"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 3, "{out}");

    let v = script(c, "user", "1", "kv.set('x', 1) return kv.list_scopes()")
        .await
        .unwrap();
    assert_eq!(v, json!(["default", "prefs"]));

    // Delete from the CLI; the script sees it gone.
    let (code, out, _) = m.cli(&["kv", "delete", "user", "1", "prefs", "lang"]);
    assert_eq!(code, 0);
    assert!(out.contains("deleted"), "{out}");
    assert_eq!(
        script(c, "user", "1", "return kv.get('lang', 'prefs')")
            .await
            .unwrap(),
        Value::Null
    );
    let (code, _, _) = m.cli(&["kv", "get", "user", "1", "prefs", "lang"]);
    assert_eq!(code, 1);
}

async fn paging_through_a_large_scope(opts: Opts) {
    let m = Master::start(opts.clone()).await;
    let c = &m.client;
    // Written concurrently: one fsync serves many writers (group commit).
    let writes: Vec<_> = (1..=250)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                c.kv_set("user", "9", "many", &format!("k{i:03}"), &json!(i))
                    .await
                    .unwrap()
            })
        })
        .collect();
    for w in writes {
        w.await.unwrap();
    }
    let mut after = None;
    let mut seen = Vec::new();
    loop {
        let page = c
            .kv_find("user", "9", "many", "%", after.as_deref())
            .await
            .unwrap();
        assert!(page.records.len() <= 100);
        seen.extend(page.records.iter().map(|r| r.value.as_i64().unwrap()));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, (1..=250).collect::<Vec<i64>>());
}

async fn a_tenant_cannot_see_another_tenants_keys(opts: Opts) {
    let m = Master::start(opts.clone()).await;
    let c = &m.client;
    // Same worker and different workers alike.
    let same = tenants_on("user", 0, 2, 2);
    let other = tenants_on("user", 1, 2, 1);
    script(c, &same[0].kind, &same[0].id, "kv.set('secret', 'mine')")
        .await
        .unwrap();
    for t in [&same[1], &other[0]] {
        let v = script(c, &t.kind, &t.id, "return { secret = kv.get('secret'), found = #kv.find('%'), scopes = #kv.list_scopes() }")
            .await
            .unwrap();
        assert_eq!(v, json!({"found": 0, "scopes": 0}), "{t}");
    }
    // There is no way to name another tenant from a script.
    let err = script(c, &same[1].kind, &same[1].id, "kv.tenant = 'x'")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("readonly"), "{err}");
}

async fn oversized_keys_and_values_get_clear_errors_and_store_nothing(opts: Opts) {
    let m = Master::start(opts.clone()).await;
    let c = &m.client;
    let err = script(c, "user", "1", "kv.set('big', string.rep('x', 300 * 1024))")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("runtime"));
    assert!(err.to_string().contains("kv.set: too large"), "{err}");
    let err = script(c, "user", "1", "kv.get(string.rep('k', 600))")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("kv.get: too large"), "{err}");
    assert_eq!(
        script(c, "user", "1", "return kv.get('big')")
            .await
            .unwrap(),
        Value::Null
    );

    let err = c
        .kv_set(
            "user",
            "1",
            "default",
            "big",
            &json!("y".repeat(300 * 1024)),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("too_large"), "{err}");
    assert!(
        c.kv_get("user", "1", "default", "big")
            .await
            .unwrap()
            .is_none()
    );

    // Values a script cannot store are refused too, with the reason.
    let err = script(c, "user", "1", "kv.set('f', function() end)")
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("kv.set: the value cannot be stored"),
        "{err}"
    );
}

async fn tenant_state_decides_what_runs(opts: Opts) {
    let m = Master::start(opts.clone()).await;
    let c = &m.client;
    let t = tenants_on("guild", 0, 2, 1).remove(0);
    let vms = |m: &Master| {
        let c = m.client.clone();
        async move { c.workers().await.unwrap().workers[0].vms }
    };
    assert_eq!(vms(&m).await, 0);

    let state = TenantState {
        events: Some(vec!["echo".into(), "incr".into()]),
        plugins: Some(vec!["echo".into()]),
        data: json!({"lang": "en"}),
    };
    c.put_tenant_state(&t.kind, &t.id, &state).await.unwrap();
    assert_eq!(c.tenant_state(&t.kind, &t.id).await.unwrap().state, state);

    // Not subscribed: answered without a VM.
    let err = c
        .dispatch(&t.kind, &t.id, &event("member_join", json!({"name": "A"})))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("not_subscribed"), "{err}");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(409));
    tokio::time::sleep(Duration::from_millis(600)).await; // a few heartbeats
    assert_eq!(
        vms(&m).await,
        0,
        "no VM for an event the tenant is not subscribed to"
    );

    // Subscribed, but its plugin is not among the tenant's plugins.
    let err = c
        .dispatch(&t.kind, &t.id, &event("incr", Value::Null))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("not_found"), "{err}");
    assert_eq!(
        first_value(c, &t.kind, &t.id, &event("echo", json!(1))).await["data"],
        1
    );

    // A restarted worker loads the state from the store.
    let pid = m.worker(0).await.pid.unwrap();
    common::signal(pid, libc::SIGKILL);
    m.wait_restarted(0, pid, Duration::from_secs(20)).await;
    let err = eventually(
        Duration::from_secs(10),
        "the restarted worker to answer",
        || async {
            match c
                .dispatch(&t.kind, &t.id, &event("member_join", json!({"name": "A"})))
                .await
            {
                Err(e) if e.code() == Some("worker_unavailable") => None,
                other => Some(other),
            }
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Some("not_subscribed"), "{err}");

    // Clearing the subscription list lets everything run again.
    c.put_tenant_state(&t.kind, &t.id, &TenantState::default())
        .await
        .unwrap();
    let v = first_value(
        c,
        &t.kind,
        &t.id,
        &event("member_join", json!({"name": "A"})),
    )
    .await;
    assert_eq!(v["members"], 1);
}

/// One HTTP/2 (prior knowledge) connection to the DB endpoints, as a worker.
struct H2 {
    send: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    id: String,
    token: String,
}

impl H2 {
    async fn connect(addr: std::net::SocketAddr, id: u32, token: &str) -> H2 {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        H2 {
            send,
            id: id.to_string(),
            token: token.into(),
        }
    }

    async fn post(&mut self, path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
        self.request("POST", path, body).await
    }

    async fn request(&mut self, method: &str, path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
        let req = hyper::Request::builder()
            .method(method)
            .uri(format!("http://meshplay{path}"))
            .header("x-meshplay-worker-id", &self.id)
            .header("x-meshplay-token", &self.token)
            .header("content-type", "application/msgpack")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        self.send.ready().await.unwrap();
        let res = self.send.send_request(req).await.unwrap();
        let status = res.status().as_u16();
        (
            status,
            res.into_body().collect().await.unwrap().to_bytes().to_vec(),
        )
    }
}

fn error_code(body: &[u8]) -> String {
    rmp_serde::from_slice::<meshplay::mesophyll::db::DbErrorBody>(body)
        .map(|b| b.code)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).into())
}

async fn the_db_endpoints_check_shard_credentials_and_bodies(opts: Opts) {
    let (m, token) = with_external_worker_1_on(opts.clone()).await;
    let hub = m.endpoint.mesophyll_addr;
    let mine = tenants_on("user", 1, 2, 1).remove(0);
    let theirs = tenants_on("user", 0, 2, 1).remove(0);
    let q = |t: &meshplay::mesophyll::message::Tenant| {
        format!("/db/kv?tenant_type={}&tenant_id={}", t.kind, t.id)
    };
    let set = rmp_serde::to_vec_named(&KvOp::Set {
        scope: "s".into(),
        key: "k".into(),
        value: json!({"v": 1}),
    })
    .unwrap();

    let mut h2 = H2::connect(hub, 1, &token).await;
    let (s, body) = h2.post(&q(&mine), set.clone()).await;
    assert_eq!(s, 200, "{}", error_code(&body));
    assert!(matches!(
        rmp_serde::from_slice(&body).unwrap(),
        KvReply::Stored(_)
    ));

    let (s, body) = h2.post(&q(&theirs), set.clone()).await;
    assert_eq!((s, error_code(&body).as_str()), (403, "forbidden"));

    // Bad bodies: 400 each, and the same connection keeps working.
    let truncated = set[..set.len() / 2].to_vec();
    let wrong_types =
        rmp_serde::to_vec_named(&json!({"Set": {"scope": 1, "key": [], "value": 2}})).unwrap();
    let unknown_op = rmp_serde::to_vec_named(&json!({"Truncate": {}})).unwrap();
    for bad in [
        truncated,
        wrong_types,
        unknown_op,
        b"not msgpack at all".to_vec(),
        vec![],
    ] {
        let (s, body) = h2.post(&q(&mine), bad).await;
        assert_eq!((s, error_code(&body).as_str()), (400, "bad_request"));
    }
    let (s, _) = h2.post("/db/kv?tenant_type=user", set.clone()).await;
    assert_eq!(s, 400);
    let get = rmp_serde::to_vec_named(&KvOp::Get {
        scope: "s".into(),
        key: "k".into(),
    })
    .unwrap();
    let (s, body) = h2.post(&q(&mine), get.clone()).await;
    assert_eq!(s, 200);
    match rmp_serde::from_slice(&body).unwrap() {
        KvReply::Record(Some(r)) => assert_eq!(r.value, json!({"v": 1})),
        other => panic!("{other:?}"),
    }

    // A value over the limit: 413, nothing stored.
    let big = rmp_serde::to_vec_named(&KvOp::Set {
        scope: "s".into(),
        key: "big".into(),
        value: json!("z".repeat(270 * 1024)),
    })
    .unwrap();
    let (s, _) = h2.post(&q(&mine), big).await;
    assert_eq!(s, 413);

    // Tenant states: only the caller's shard, both ways.
    let entry = |t: &meshplay::mesophyll::message::Tenant| {
        rmp_serde::to_vec_named(&TenantStateEntry {
            tenant: t.clone(),
            state: TenantState {
                events: Some(vec!["echo".into()]),
                ..TenantState::default()
            },
        })
        .unwrap()
    };
    assert_eq!(h2.post("/db/tenant-state", entry(&mine)).await.0, 200);
    assert_eq!(h2.post("/db/tenant-state", entry(&theirs)).await.0, 403);
    m.client
        .put_tenant_state(&theirs.kind, &theirs.id, &TenantState::default())
        .await
        .unwrap();
    let (s, body) = h2.request("GET", "/db/tenant-states", vec![]).await;
    assert_eq!(s, 200);
    let states: Vec<TenantStateEntry> = rmp_serde::from_slice(&body).unwrap();
    assert_eq!(states.len(), 1, "only its own shard: {states:?}");
    assert_eq!(states[0].tenant, mine);

    // Wrong credentials.
    let mut wrong = H2::connect(hub, 1, &"x".repeat(64)).await;
    assert_eq!(wrong.post(&q(&mine), get.clone()).await.0, 401);
    let mut unknown = H2::connect(hub, 7, &token).await;
    assert_eq!(unknown.post(&q(&mine), get).await.0, 404);
}

async fn global_entries_are_shared_read_only_and_owned(opts: Opts) {
    let m = Master::start(opts.clone()).await;
    let c = &m.client;
    let (a, b) = (
        tenants_on("user", 0, 2, 1).remove(0),
        tenants_on("user", 1, 2, 1).remove(0),
    );
    let made = script(
        c,
        &a.kind,
        &a.id,
        "local e = global_kv.create{ key = 'greetings', scope = 'lists', value = {'hi', 'hello'}, public = true }
         global_kv.create{ key = 'private-notes', scope = 'lists', value = 1 }
         return e.owner",
    )
    .await
    .unwrap();
    assert_eq!(made, json!({"type": a.kind, "id": a.id}));

    // Another tenant, on another worker, reads the public entry only.
    let v = script(
        c,
        &b.kind,
        &b.id,
        "local found = global_kv.find('lists')
         return { value = global_kv.get('greetings', 1, 'lists').value, n = #found,
                  private = global_kv.get('private-notes', 1, 'lists') }",
    )
    .await
    .unwrap();
    assert_eq!(v, json!({"value": ["hi", "hello"], "n": 1}));

    // Not its owner: may not delete. Duplicates and bad keys are refused.
    let err = script(
        c,
        &b.kind,
        &b.id,
        "global_kv.delete('greetings', 1, 'lists')",
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("global_kv.delete: forbidden"),
        "{err}"
    );
    let err = script(
        c,
        &a.kind,
        &a.id,
        "global_kv.create{ key = 'greetings', scope = 'lists', value = 2 }",
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("global_kv.create: conflict"),
        "{err}"
    );
    let err = script(
        c,
        &a.kind,
        &a.id,
        "global_kv.create{ key = 'a b', value = 2 }",
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("3-64 characters"), "{err}");

    let v = script(
        c,
        &a.kind,
        &a.id,
        "return global_kv.delete('greetings', 1, 'lists')",
    )
    .await
    .unwrap();
    assert_eq!(v, true);
    let v = script(
        c,
        &b.kind,
        &b.id,
        "return global_kv.get('greetings', 1, 'lists') == nil",
    )
    .await
    .unwrap();
    assert_eq!(v, true);
}

crate::on_both_stores!(
    concurrent_increments_leave_exactly_the_right_counts,
    scripts_rest_and_cli_see_the_same_values,
    paging_through_a_large_scope,
    a_tenant_cannot_see_another_tenants_keys,
    oversized_keys_and_values_get_clear_errors_and_store_nothing,
    tenant_state_decides_what_runs,
    the_db_endpoints_check_shard_credentials_and_bodies,
    global_entries_are_shared_read_only_and_owned,
);
