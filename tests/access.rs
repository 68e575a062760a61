//! Scoped tokens and the audit log against a real master: an `app` token
//! dispatches and uses KV but is refused scripts, uploads and drops; a
//! `read` token only reads; a revoked token is refused; and every change,
//! done or refused, is in the audit log with its token, route, tenant and
//! status, while no secret is in the log or the listing.

mod common;

use common::api::upload;
use common::{Master, Opts, event};
use meshplay::client::{ApiClient, ApiClientError};
use meshplay::rest::{AuditEntry, Role, ScriptRequest};
use serde_json::json;

fn status(r: Result<impl std::fmt::Debug, ApiClientError>) -> u16 {
    let e = r.expect_err("must be refused");
    e.status().map(|s| s.as_u16()).unwrap_or(0)
}

fn script() -> ScriptRequest {
    ScriptRequest {
        name: None,
        code: "return 1".into(),
        event: None,
        timeout_ms: Some(5000),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_open_what_they_say_and_every_change_is_audited() {
    let m = Master::start(Opts::default()).await;
    m.wait_connected(2).await;
    let admin = &m.client;
    let app_token = admin.create_token(Role::App, Some("shop")).await.unwrap();
    assert_eq!(app_token.token.len(), 64);
    assert_eq!(
        (app_token.info.role, app_token.info.name.as_str()),
        (Role::App, "shop")
    );
    // The CLI mints one too; the secret goes to stdout, nothing else does.
    let (code, out, err) = m.cli(&["tokens", "create", "--role", "read", "--name", "dash"]);
    assert_eq!(code, 0, "{err}");
    let read_token = out.trim().to_owned();
    assert_eq!(read_token.len(), 64, "{out}");
    let app = ApiClient::new(m.endpoint.api_addr, app_token.token.clone());
    let read = ApiClient::new(m.endpoint.api_addr, read_token.clone());

    // app: dispatches, KV and state; not scripts, uploads, drops, tokens.
    app.dispatch("user", "1", &event("echo", json!(1)))
        .await
        .unwrap();
    app.kv_set("user", "1", "s", "k", &json!("v"))
        .await
        .unwrap();
    assert_eq!(
        app.kv_get("user", "1", "s", "k")
            .await
            .unwrap()
            .unwrap()
            .value,
        json!("v")
    );
    assert_eq!(status(app.run_script("user", "1", &script()).await), 403);
    let plugin = upload("name = 'x'\nversion = '1'\nevents = ['x']", "return {}");
    assert_eq!(status(app.put_plugin("x", &plugin).await), 403);
    assert_eq!(status(app.drop_tenant("user", "1").await), 403);
    assert_eq!(status(app.create_token(Role::Admin, None).await), 403);
    assert_eq!(status(app.audit(None, 10).await), 403);
    // read: GET only.
    read.workers().await.unwrap();
    read.kv_get("user", "1", "s", "k").await.unwrap();
    assert_eq!(
        status(read.dispatch("user", "1", &event("echo", json!(1))).await),
        403
    );
    assert_eq!(
        status(read.kv_set("user", "1", "s", "k", &json!(2)).await),
        403
    );
    assert_eq!(status(read.tokens().await), 403);

    // The admin does what the app could not.
    admin.run_script("user", "1", &script()).await.unwrap();
    admin.put_plugin("x", &plugin).await.unwrap();
    admin.drop_tenant("user", "1").await.unwrap();

    // A revoked token is refused like a wrong one.
    admin.revoke_token(&app_token.info.id).await.unwrap();
    assert_eq!(
        status(app.dispatch("user", "1", &event("echo", json!(1))).await),
        401
    );
    let listed = admin.tokens().await.unwrap().tokens;
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().any(|t| t.name == "shop" && t.revoked));

    let log: Vec<AuditEntry> = admin.audit(None, 1000).await.unwrap().entries;
    let find = |token: &str, method: &str, route_end: &str, status: u16| {
        log.iter()
            .find(|e| {
                e.token == token
                    && e.method == method
                    && e.route.ends_with(route_end)
                    && e.status == status
            })
            .unwrap_or_else(|| panic!("no {token} {method} …{route_end} {status} in {log:#?}"))
    };
    let refused = find("shop", "POST", "/tenants/user/1/scripts", 403);
    assert_eq!(refused.tenant.as_deref(), Some("user:1"));
    find("shop", "PUT", "/plugins/x", 403);
    find("shop", "DELETE", "/tenants/user/1/vm", 403);
    find("shop", "PUT", "/tenants/user/1/kv/s/k", 200);
    find("dash", "PUT", "/tenants/user/1/kv/s/k", 403);
    find("admin-token", "POST", "/tenants/user/1/scripts", 200);
    find("admin-token", "PUT", "/plugins/x", 200);
    find("admin-token", "DELETE", "/tenants/user/1/vm", 200);
    find("admin-token", "POST", "/tokens", 201);
    find(
        "admin-token",
        "DELETE",
        &format!("/tokens/{}", app_token.info.id),
        200,
    );
    assert!(
        !log.iter().any(|e| e.route.ends_with("/events")),
        "dispatches are traffic, not changes"
    );
    assert!(log.windows(2).all(|w| w[0].seq < w[1].seq), "in order");

    // The CLI shows the same log; no secret is anywhere.
    let (code, out, _) = m.cli(&["audit", "--limit", "100"]);
    assert_eq!(code, 0);
    assert!(out.contains("shop") && out.contains("403"), "{out}");
    let (_, listing, _) = m.cli(&["tokens", "list", "--json"]);
    for secret in [&app_token.token, &read_token] {
        assert!(
            !listing.contains(secret.as_str()),
            "a secret in the listing"
        );
        assert!(!m.log().contains(secret.as_str()), "a secret in the log");
        assert!(!out.contains(secret.as_str()), "a secret in the audit");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_the_audit_log_survive_a_restart() {
    let mut m = Master::start(Opts {
        workers: 1,
        ..Opts::default()
    })
    .await;
    let t = m.client.create_token(Role::Read, None).await.unwrap();
    m.stop();
    let m = Master::start_in(
        Opts {
            workers: 1,
            ..Opts::default()
        },
        std::sync::Arc::clone(&m.dir),
    )
    .await;
    let read = ApiClient::new(m.endpoint.api_addr, t.token.clone());
    read.workers().await.unwrap();
    let log = m.client.audit(None, 10).await.unwrap().entries;
    assert_eq!(log[0].route, "/api/v1/tokens", "{log:?}");
}

/// Tenants named after route words (`kv`, `state`, `events`, `scripts`,
/// `vm`) get no more than any tenant: an `app` token still cannot run a
/// script in them or drop their VMs, and a `read` token cannot write
/// their KV. (The role once followed from `/kv/` anywhere in the path.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_named_after_a_route_word_opens_nothing_more() {
    let m = Master::start(Opts::default()).await;
    m.wait_connected(2).await;
    let admin = &m.client;
    let app = ApiClient::new(
        m.endpoint.api_addr,
        admin.create_token(Role::App, None).await.unwrap().token,
    );
    let read = ApiClient::new(
        m.endpoint.api_addr,
        admin.create_token(Role::Read, None).await.unwrap().token,
    );
    for word in ["kv", "state", "events", "scripts", "vm"] {
        for (kind, id) in [(word, "1"), ("user", word), (word, word)] {
            let at = format!("{kind}:{id}");
            assert_eq!(
                status(app.run_script(kind, id, &script()).await),
                403,
                "app ran a script in {at}"
            );
            assert_eq!(
                status(app.drop_tenant(kind, id).await),
                403,
                "app dropped {at}"
            );
            assert_eq!(
                status(read.kv_set(kind, id, "s", "k", &json!(1)).await),
                403,
                "read wrote the KV of {at}"
            );
            assert_eq!(
                status(read.dispatch(kind, id, &event("echo", json!(1))).await),
                403,
                "read dispatched to {at}"
            );
            // What the roles do open, they open for these tenants too.
            app.kv_set(kind, id, "s", "k", &json!(at)).await.unwrap();
            app.dispatch(kind, id, &event("echo", json!(1)))
                .await
                .unwrap();
            admin.run_script(kind, id, &script()).await.unwrap();
        }
    }
}

/// Revoking a token ends what it holds open: its binary stream stops
/// taking requests and closes, its console's event stream ends. (Both once
/// outlived the revocation for as long as the client kept them.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_token_closes_its_streams_and_consoles() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let m = Master::start(Opts::default()).await;
    m.wait_connected(2).await;
    let admin = &m.client;
    let app = admin
        .create_token(Role::App, Some("streamer"))
        .await
        .unwrap();
    let stream =
        meshplay::client::StreamClient::connect(&ApiClient::new(m.endpoint.api_addr, &app.token))
            .await
            .unwrap();
    let echo = || meshplay::rest::DispatchRequest {
        name: "echo".into(),
        data: json!(1),
        wait: true,
        timeout_ms: None,
    };
    stream.dispatch("user", "1", echo()).await.unwrap();

    let mut console = tokio::net::TcpStream::connect(m.endpoint.api_addr)
        .await
        .unwrap();
    let ask = format!(
        "GET /api/v1/console HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\r\n",
        app.token
    );
    console.write_all(ask.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("event: hello") {
        let mut buf = [0u8; 4096];
        let n = console.read(&mut buf).await.unwrap();
        assert!(n > 0, "the console closed before its hello");
        seen.extend_from_slice(&buf[..n]);
    }

    admin.revoke_token(&app.info.id).await.unwrap();
    // The console's stream ends: the chunked body's last chunk, then EOF.
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        loop {
            match console.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(n) if buf[..n].ends_with(b"0\r\n\r\n") => return true,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert_eq!(ended, Ok(true), "the console outlived its token");
    // The stream takes nothing more.
    common::eventually(
        std::time::Duration::from_secs(5),
        "the stream to refuse after the revocation",
        || async { stream.dispatch("user", "1", echo()).await.err().map(|_| ()) },
    )
    .await;
}

/// A refused request with a huge path makes an audit entry of bounded size:
/// its route and tenant are cut at 512 bytes (a `read` token could add an
/// entry of any size per request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_entries_keep_a_bounded_path() {
    let m = Master::start(Opts::default()).await;
    let read = admin_made(&m, Role::Read).await;
    let id = "i".repeat(20_000);
    let path = format!("/api/v1/tenants/user/{id}/kv/s/k");
    let (status, _) = common::raw(
        m.endpoint.api_addr,
        "PUT",
        &path,
        Some(&read),
        "application/json",
        b"1".to_vec(),
    )
    .await;
    assert_eq!(status, 403);
    let log = m.client.audit(None, 1000).await.unwrap().entries;
    let entry = log
        .iter()
        .find(|e| e.status == 403 && e.method == "PUT")
        .expect("the refusal is audited");
    assert!(entry.route.len() <= 512, "{} bytes", entry.route.len());
    assert!(entry.route.starts_with("/api/v1/tenants/user/iii"));
    assert!(entry.route.ends_with("..."));
    let tenant = entry.tenant.as_deref().unwrap();
    assert!(
        tenant.len() <= 512 && tenant.starts_with("user:iii"),
        "{tenant}"
    );
}

/// A minted token of `role`'s secret.
async fn admin_made(m: &Master, role: Role) -> String {
    m.client.create_token(role, None).await.unwrap().token
}
