//! Plugin variables through a real master, its workers and its store
//! (sled, and PostgreSQL where there is one): a plugin that lacks a
//! required one answers `not_configured`, per-tenant values override the
//! plugin's, and a secret reaches the plugin's `vars.get` and its upstream
//! and nothing else: not the log, the answers, the audit log, a listing,
//! nor the store's files in plain text.

mod common;

use common::api::upload;
use common::upstream::Upstream;
use common::{Master, Opts, event};
use meshplay::client::{ApiClient, DispatchOutcome};
use meshplay::mesophyll::message::Tenant;
use meshplay::rest::VarChange;
use serde_json::{Value, json};

const SECRET: &str = "sk-live-5f3c9a1e7d";

const RELAY: &str = r#"
return {
    relay = function(event)
        local key = vars.get("api_key")
        local res = http.fetch(vars.get("api_base") .. "/echo", { headers = { ["x-api-key"] = key } })
        local seen = json.decode(res.body).headers["x-api-key"]
        kv.set("last_status", res.status)
        return { base = vars.get("api_base"), key_len = #key, upstream_saw_it = seen == key }
    end,
    undeclared = function() return vars.get("nope") end,
}
"#;

fn manifest(up: &Upstream) -> String {
    format!(
        r#"name = "relay"
version = "1"
events = ["relay", "undeclared"]
allowed_hosts = ["{origin}", "http://localhost:{port}"]
[variables]
api_base = {{ default = "{origin}", description = "where the API is" }}
api_key = {{ required = true, secret = true }}
"#,
        origin = up.origin(),
        port = up.addr.port()
    )
}

/// Plugin relay's answer to `name` for user `id`: its value, or its
/// error's code and message.
async fn relay(c: &ApiClient, id: &str, name: &str) -> Result<Value, (String, String)> {
    match c
        .dispatch("user", id, &event(name, json!({})))
        .await
        .unwrap()
    {
        DispatchOutcome::Done(d) => {
            let r = d.results.into_iter().find(|r| r.plugin == "relay").unwrap();
            match r.error {
                Some(e) => Err((e.code, e.message)),
                None => Ok(r.value.unwrap()),
            }
        }
        other => panic!("{other:?}"),
    }
}

async fn set(c: &ApiClient, name: &str, value: &str, tenant: Option<Tenant>) {
    let change = VarChange {
        value: value.into(),
        tenant,
    };
    c.set_var("relay", name, &change).await.unwrap();
}

async fn a_secret_reaches_its_plugin_and_nothing_else(opts: Opts) {
    let up = Upstream::start().await;
    let mut extra = opts.extra.clone();
    extra.extend([
        "--egress-allow-cidr".to_string(),
        "127.0.0.1/32".to_string(),
    ]);
    let m = Master::start(Opts { extra, ..opts }).await;
    let c = &m.client;
    c.put_plugin("relay", &upload(&manifest(&up), RELAY))
        .await
        .unwrap();

    let (code, message) = relay(c, "a", "relay").await.unwrap_err();
    assert_eq!(code, "not_configured", "{message}");
    assert!(message.contains("api_key"), "{message}");
    assert_eq!(up.hits(), 0);

    set(c, "api_key", SECRET, None).await;
    let v = relay(c, "a", "relay").await.unwrap();
    assert_eq!(v["key_len"], SECRET.len());
    assert_eq!(v["upstream_saw_it"], true);
    assert_eq!(v["base"], up.origin());

    // One tenant's own value wins over the plugin's, for it alone.
    let b = Tenant::new("user", "b");
    let other_base = format!("http://localhost:{}", up.addr.port());
    set(c, "api_base", &other_base, Some(b.clone())).await;
    assert_eq!(relay(c, "b", "relay").await.unwrap()["base"], other_base);
    assert_eq!(relay(c, "a", "relay").await.unwrap()["base"], up.origin());
    c.unset_var("relay", "api_base", Some(&b)).await.unwrap();
    assert_eq!(relay(c, "b", "relay").await.unwrap()["base"], up.origin());

    let (code, message) = relay(c, "a", "undeclared").await.unwrap_err();
    assert_eq!(code, "runtime");
    assert!(
        message.contains("declares no variable \"nope\""),
        "{message}"
    );
    let err = common::api::script(c, "a", "return vars.get('api_key')")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no plugin"), "{err}");
    let err = c
        .set_var(
            "relay",
            "nope",
            &VarChange {
                value: "x".into(),
                tenant: None,
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("declares no variable"), "{err}");

    // Listed as set, never shown.
    let list = c.vars("relay").await.unwrap();
    let key = list.vars.iter().find(|v| v.name == "api_key").unwrap();
    assert!(key.set && key.secret && key.value.is_none(), "{key:?}");
    let (status, out, err) = m.cli(&["vars", "list", "relay"]);
    assert_eq!(status, 0, "{err}");
    assert!(out.contains("api_key required = (secret, set)"), "{out}");
    let (_, json_out, _) = m.cli(&["vars", "list", "relay", "--json"]);
    let audit = c.audit(None, 1000).await.unwrap();
    let audit = serde_json::to_string(&audit).unwrap();
    assert!(
        audit.contains("/api/v1/plugins/relay/vars/api_key"),
        "{audit}"
    );
    for (what, text) in [
        ("the log", m.log()),
        ("the listing", out),
        ("the JSON listing", json_out),
        ("the audit log", audit),
    ] {
        assert!(!text.contains(SECRET), "the secret is in {what}");
    }
    // Sealed at rest (sled's files; PostgreSQL keeps the same sealed bytes).
    for file in walk(&m.data_dir().join("store")) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "the secret is in {}",
            file.display()
        );
    }
    let key_file = m.data_dir().join("secrets.key");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&key_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

crate::on_both_stores!(a_secret_reaches_its_plugin_and_nothing_else);
