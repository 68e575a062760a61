//! What the tests ask of a running master's API, a line each: a waiting
//! dispatch's results by plugin, one plugin's value or error, a script's
//! result, a plugin upload, and the filter modules to upload.

use super::event;
use meshplay::client::{ApiClient, ApiClientError, DispatchOutcome};
use meshplay::rest::{DispatchRequest, PluginResult, PluginUpload, ScriptRequest};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;

/// A module from `filters/fixtures` (`.wat` assembled on the fly).
pub fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("filters/fixtures")
        .join(name);
    if name.ends_with(".wat") {
        wat::parse_file(&path).unwrap()
    } else {
        std::fs::read(&path).unwrap()
    }
}

/// A filter of `filters/dist`, as `filters/build.sh` built it.
pub fn built(name: &str) -> Vec<u8> {
    std::fs::read(super::filters_dir().join(format!("{name}.wasm"))).unwrap()
}

/// The results of one waiting dispatch, by plugin.
pub async fn results(
    c: &ApiClient,
    id: &str,
    req: &DispatchRequest,
) -> BTreeMap<String, PluginResult> {
    match c.dispatch("user", id, req).await.unwrap() {
        DispatchOutcome::Done(d) => d
            .results
            .into_iter()
            .map(|r| (r.plugin.clone(), r))
            .collect(),
        other => panic!("{other:?}"),
    }
}

pub async fn value(c: &ApiClient, id: &str, plugin: &str, req: &DispatchRequest) -> Value {
    let r = results(c, id, req).await.remove(plugin).expect(plugin);
    assert!(r.error.is_none(), "{r:?}");
    r.value.unwrap()
}

/// The (code, message) of plugin `plugin`'s failed result.
pub async fn failure(
    c: &ApiClient,
    id: &str,
    plugin: &str,
    req: &DispatchRequest,
) -> (String, String) {
    let r = results(c, id, req).await.remove(plugin).expect(plugin);
    let e = r
        .error
        .unwrap_or_else(|| panic!("expected an error, got {:?}", r.value));
    (e.code, e.message)
}

pub fn upload(manifest: &str, code: &str) -> PluginUpload {
    PluginUpload {
        manifest: manifest.into(),
        files: BTreeMap::from([("init.luau".to_string(), code.to_string())]),
    }
}

pub async fn script(c: &ApiClient, id: &str, code: &str) -> Result<Value, ApiClientError> {
    let req = ScriptRequest {
        name: Some("t".into()),
        code: code.into(),
        event: None,
        timeout_ms: Some(5000),
    };
    c.run_script("user", id, &req).await.map(|r| r.result)
}

/// The first plugin's value of a dispatch that must succeed.
pub async fn first_value(c: &ApiClient, kind: &str, id: &str, req: &DispatchRequest) -> Value {
    match c.dispatch(kind, id, req).await.unwrap() {
        DispatchOutcome::Done(d) => {
            let r = &d.results[0];
            assert!(r.error.is_none(), "{r:?}");
            r.value.clone().unwrap()
        }
        other => panic!("{other:?}"),
    }
}

/// `per_tenant` concurrent `incr` events (by 1, 2, ...) to each of
/// `tenants` counter tenants; returns what each count must then be.
pub async fn concurrent_incr(c: &ApiClient, tenants: u32, per_tenant: u32) -> i64 {
    let mut tasks = Vec::new();
    for t in 0..tenants {
        for i in 1..=per_tenant {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                first_value(
                    &c,
                    "counter",
                    &t.to_string(),
                    &event("incr", json!({ "by": i })),
                )
                .await
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    (per_tenant * (per_tenant + 1) / 2) as i64
}
