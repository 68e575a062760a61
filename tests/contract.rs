//! The API's contract against a real master: every route is asked for its
//! success and for its error answers (no token, a role too small, bad
//! bodies and names, things that are not there), and every answer must be
//! one the committed `docs/openapi.json` documents, its JSON body valid
//! against the schema documented for its status. A route that got no
//! answer checked fails the test, as does one the master serves that the
//! contract lacks.

mod common;

use common::contract::{Contract, NONE, Probe, Tokens, Who, ask};
use common::{Master, Opts};
use meshplay::rest::Role;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_of_every_route_is_in_the_contract() {
    let m = Master::start(Opts::default()).await;
    let read = m.mint(Role::Read, "reader").await;
    let tokens = Tokens {
        admin: m.admin_token(),
        read: read.token,
    };
    let mut p = Probe {
        m: &m,
        c: Contract::load(),
        t: tokens,
    };
    open_routes(&mut p).await;
    live_routes(&mut p).await;
    tenant_routes(&mut p).await;
    catalogue_routes(&mut p).await;
    access_routes(&mut p).await;
    p.c.covered();
}

async fn open_routes(p: &mut Probe<'_>) {
    for path in [
        "/api/system/version",
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/openapi.json",
        "/",
        "/dashboard/app.js",
        "/dashboard/app.css",
    ] {
        let answer = ask(p.m, "GET", path, None, &[], vec![]).await;
        assert_eq!(answer.status, 200, "{path}");
        p.c.check("GET", path, &answer);
    }
    // The contract the master serves is the committed one.
    let served = ask(p.m, "GET", "/api/v1/openapi.json", None, &[], vec![]).await;
    assert_eq!(
        served.body,
        meshplay::master::api::contract::to_json().into_bytes()
    );
    // A webhook no plugin takes; one whose plugin lacks its secret.
    for (path, expected) in [
        ("/hooks/user/u1/nothing", 404),
        ("/hooks/user/u1/push", 502),
    ] {
        let answer = ask(p.m, "POST", path, None, &[], b"{}".to_vec()).await;
        assert_eq!(answer.status, expected, "{path}");
        p.c.check("POST", path, &answer);
    }
}

async fn live_routes(p: &mut Probe<'_>) {
    use Who::*;
    for path in [
        "/api/v1/workers",
        "/api/v1/status",
        "/api/v1/traffic",
        "/api/v1/tenants?limit=5",
        "/api/v1/console",
    ] {
        p.readable(path).await;
    }
    // A query that is not a number.
    p.each("GET", "/api/v1/tenants?limit=many", &[(Read, NONE, 400)])
        .await;
    let upgrade = [
        ("connection", "upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    let path = "/api/v1/stream";
    for (token, headers, expected) in [
        (Some(p.t.admin.as_str()), &upgrade[..], 101),
        (Some(p.t.read.as_str()), &upgrade[..], 403),
        (Some(p.t.admin.as_str()), &upgrade[..1], 400),
    ] {
        let answer = ask(p.m, "GET", path, token, headers, vec![]).await;
        assert_eq!(
            answer.status,
            expected,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        p.c.check("GET", path, &answer);
    }
    graphql_routes(p, &upgrade).await;
}

async fn graphql_routes(p: &mut Probe<'_>, upgrade: &[(&str, &str)]) {
    use Who::*;
    let path = "/api/v1/graphql";
    p.each(
        "POST",
        path,
        &[
            (Read, json!({"query": "{ workers { bad_frames } }"}), 200),
            (Read, NONE, 400),
            (Nobody, json!({"query": "{ status { version } }"}), 401),
        ],
    )
    .await;
    let mut subscribe = upgrade.to_vec();
    subscribe.push(("sec-websocket-protocol", "graphql-transport-ws"));
    p.admin("GET", path, &subscribe, vec![], 101).await;
    p.admin("GET", path, &subscribe[..1], vec![], 400).await;
}

async fn tenant_routes(p: &mut Probe<'_>) {
    use Who::*;
    let tenant = "/api/v1/tenants/user/contract";
    let events = format!("{tenant}/events");
    p.each(
        "POST",
        &events,
        &[
            (Admin, json!({"name": "incr", "data": {"by": 2}}), 200),
            (Admin, json!({"name": "incr", "wait": false}), 202),
            (Admin, json!({"name": "no_such_event"}), 404),
            (Admin, json!({"nme": "incr"}), 400),
            (Admin, json!({"name": "incr", "timeout_ms": 0}), 400),
            (Admin, Value::String("x".repeat(1024 * 1024 + 1)), 413),
            (Read, json!({"name": "incr"}), 403),
            (Nobody, json!({"name": "incr"}), 401),
        ],
    )
    .await;
    let scripts = format!("{tenant}/scripts");
    p.each(
        "POST",
        &scripts,
        &[
            (Admin, json!({"code": "return {n = 1}"}), 200),
            (Admin, json!({"code": "error('no')"}), 422),
            (
                Admin,
                json!({"code": "while true do end", "timeout_ms": 200}),
                504,
            ),
            (Admin, json!({"code": 1}), 400),
            (Read, json!({"code": "return 1"}), 403),
        ],
    )
    .await;
    let state = format!("{tenant}/state");
    p.each(
        "PUT",
        &state,
        &[
            (
                Admin,
                json!({"events": ["incr", "count"], "data": {"plan": "pro"}}),
                200,
            ),
            (Admin, json!({"events": "incr"}), 400),
            (Read, json!({}), 403),
        ],
    )
    .await;
    p.readable(&state).await;
    p.each(
        "GET",
        "/api/v1/tenants/user/%01/state",
        &[(Read, NONE, 400)],
    )
    .await;
    p.each(
        "DELETE",
        &format!("{tenant}/vm"),
        &[(Admin, NONE, 200), (Read, NONE, 403)],
    )
    .await;
    let entry = format!("{tenant}/kv/default/colour");
    p.each(
        "PUT",
        &entry,
        &[(Admin, json!({"name": "teal"}), 200), (Read, json!(1), 403)],
    )
    .await;
    p.readable(&entry).await;
    p.each(
        "GET",
        &format!("{tenant}/kv?scope=default&limit=1"),
        &[(Read, NONE, 200), (Read, NONE, 200)],
    )
    .await;
    p.each("GET", &format!("{tenant}/kv?limit=x"), &[(Read, NONE, 400)])
        .await;
    p.each("DELETE", &entry, &[(Admin, NONE, 200), (Read, NONE, 403)])
        .await;
    p.each("GET", &entry, &[(Read, NONE, 404)]).await;
    schedule_routes(p, tenant).await;
}

async fn schedule_routes(p: &mut Probe<'_>, tenant: &str) {
    use Who::*;
    let schedule = format!("{tenant}/schedules/nightly");
    p.each(
        "PUT",
        &schedule,
        &[
            (
                Admin,
                json!({"cron": "0 3 * * *", "event": "count", "timezone": "Europe/Stockholm"}),
                200,
            ),
            (Admin, json!({"cron": "not cron", "event": "count"}), 400),
            (Read, json!({"cron": "0 3 * * *", "event": "count"}), 403),
        ],
    )
    .await;
    let list = format!("{tenant}/schedules");
    p.readable(&list).await;
    let timers = format!("{tenant}/timers");
    p.readable(&timers).await;
    p.each(
        "DELETE",
        &schedule,
        &[(Admin, NONE, 200), (Read, NONE, 403)],
    )
    .await;
}

async fn catalogue_routes(p: &mut Probe<'_>) {
    use Who::*;
    let upload = json!({
        "manifest": "name = \"contract\"\nversion = \"1.0.0\"\nevents = [\"ping\"]\n",
        "files": {"init.luau": "return { ping = function() return 'pong' end }"},
    });
    let plugin = "/api/v1/plugins/contract";
    p.each(
        "PUT",
        plugin,
        &[
            (Admin, upload.clone(), 200),
            (Admin, json!({"manifest": "name = 1", "files": {}}), 400),
            (Read, upload.clone(), 403),
        ],
    )
    .await;
    p.readable("/api/v1/plugins").await;
    p.each(
        "GET",
        &format!("{plugin}/source"),
        &[(Admin, NONE, 200), (Read, NONE, 403)],
    )
    .await;
    p.each("GET", "/api/v1/plugins/none/source", &[(Admin, NONE, 404)])
        .await;
    p.each("DELETE", plugin, &[(Admin, NONE, 200), (Admin, NONE, 404)])
        .await;
    // A plugin of the --plugins folder is removed from the folder, not the API.
    p.each("DELETE", "/api/v1/plugins/greeter", &[(Admin, NONE, 409)])
        .await;
    p.each(
        "POST",
        "/api/v1/catalogue",
        &[
            (Admin, json!({"plugins": {"contract": upload}}), 200),
            (Admin, json!({"remove_plugins": ["none"]}), 400),
            (Read, json!({}), 403),
        ],
    )
    .await;
    let vars = "/api/v1/plugins/webhook-relay/vars";
    p.each("GET", vars, &[(Admin, NONE, 200), (Read, NONE, 403)])
        .await;
    p.each("GET", "/api/v1/plugins/none/vars", &[(Admin, NONE, 404)])
        .await;
    let var = format!("{vars}/endpoint");
    p.each(
        "PUT",
        &var,
        &[
            (Admin, json!({"value": "http://127.0.0.1:9/hooks"}), 200),
            (Admin, json!({"value": 1}), 400),
            (
                Admin,
                json!({"value": "x", "tenant": {"type": "user"}}),
                400,
            ),
        ],
    )
    .await;
    p.each(
        "PUT",
        &format!("{vars}/no_such_var"),
        &[(Admin, json!({"value": "x"}), 404)],
    )
    .await;
    p.each("DELETE", &var, &[(Admin, NONE, 200), (Read, NONE, 403)])
        .await;
    p.each(
        "DELETE",
        &format!("{var}?tenant_type=user"),
        &[(Admin, NONE, 400)],
    )
    .await;
    filter_routes(p).await;
}

async fn filter_routes(p: &mut Probe<'_>) {
    use Who::*;
    p.readable("/api/v1/filters").await;
    let module = std::fs::read(common::filters_dir().join("redact.wasm")).unwrap();
    let path = "/api/v1/filters/contract-redact";
    let wasm = [("content-type", "application/wasm")];
    p.admin("PUT", path, &wasm, module, 200).await;
    p.admin("PUT", path, &wasm, b"not wasm".to_vec(), 400).await;
    p.each("PUT", path, &[(Read, json!({}), 403)]).await;
    p.each("DELETE", path, &[(Admin, NONE, 200), (Admin, NONE, 404)])
        .await;
    p.each("DELETE", "/api/v1/filters/redact", &[(Admin, NONE, 409)])
        .await;
}

async fn access_routes(p: &mut Probe<'_>) {
    use Who::*;
    for list in [
        "/api/v1/tokens",
        "/api/v1/join-tokens",
        "/api/v1/audit?limit=5",
    ] {
        p.each("GET", list, &[(Admin, NONE, 200), (Read, NONE, 403)])
            .await;
    }
    p.each("GET", "/api/v1/audit?after=x", &[(Admin, NONE, 400)])
        .await;
    let minted = p
        .admin(
            "POST",
            "/api/v1/tokens",
            &[],
            br#"{"role":"app"}"#.to_vec(),
            201,
        )
        .await;
    p.each(
        "POST",
        "/api/v1/tokens",
        &[
            (Admin, json!({"role": "emperor"}), 400),
            (Read, json!({"role": "read"}), 403),
        ],
    )
    .await;
    let id = serde_json::from_slice::<Value>(&minted.body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    p.each(
        "DELETE",
        &format!("/api/v1/tokens/{id}"),
        &[(Admin, NONE, 200), (Read, NONE, 403)],
    )
    .await;
    p.each("DELETE", "/api/v1/tokens/none", &[(Admin, NONE, 404)])
        .await;
    let joined = p
        .admin(
            "POST",
            "/api/v1/join-tokens",
            &[],
            br#"{"ttl_s":60}"#.to_vec(),
            201,
        )
        .await;
    p.each(
        "POST",
        "/api/v1/join-tokens",
        &[
            (Admin, json!({"ttl_s": "soon"}), 400),
            (Read, json!({}), 403),
        ],
    )
    .await;
    let id = serde_json::from_slice::<Value>(&joined.body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    p.each(
        "DELETE",
        &format!("/api/v1/join-tokens/{id}"),
        &[(Admin, NONE, 200)],
    )
    .await;
    p.each("DELETE", "/api/v1/join-tokens/none", &[(Admin, NONE, 404)])
        .await;
}
