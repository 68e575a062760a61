//! What a test reaches beside the test library: the plugin under test
//! through its master (`dispatch`), the tenant's store (`kv`), the HTTP
//! stand-in (`http.mock`, `http.calls`), the clock (`clock.*`), the
//! tenant's timers (`timers.pending`) and the plugin's variables
//! (`vars.set`).
//!
//! Each test gets a fresh [`LocalHost`]; the functions here are bound
//! once per test file and reach whichever host the [`Stage`] holds.

use crate::author::host::LocalHost;
use crate::client::{ApiClient, DispatchOutcome};
use crate::mesophyll::db::DEFAULT_SCOPE;
use crate::mesophyll::message::Tenant;
use crate::rest::DispatchRequest;
use crate::worker::egress::stand_in::{Canned, StandIn};
use crate::worker::kv::to_lua;
use mlua::{Lua, LuaSerdeExt, Table, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The tenant every test's events are for, unless a dispatch names another.
pub const TEST_TENANT: (&str, &str) = ("test", "1");

/// The longest `clock.advance` waits for the timers it made due.
const CATCH_UP_WITHIN: Duration = Duration::from_secs(10);

/// The running test's host, and what its failed expectation said.
#[derive(Default)]
pub struct Stage {
    current: Mutex<Option<Current>>,
    failure: Mutex<Option<serde_json::Value>>,
}

#[derive(Clone)]
struct Current {
    client: ApiClient,
    timers: Arc<crate::master::timers::Timers>,
}

impl Stage {
    /// The next test runs on `host`.
    pub fn enter(&self, host: &LocalHost) {
        *self.current.lock().unwrap() = Some(Current {
            client: host.client().clone(),
            timers: Arc::clone(host.timers()),
        });
        *self.failure.lock().unwrap() = None;
    }

    /// The test ended; what its failed expectation recorded, if any.
    pub fn leave(&self) -> Option<serde_json::Value> {
        *self.current.lock().unwrap() = None;
        self.failure.lock().unwrap().take()
    }

    fn current(&self) -> mlua::Result<Current> {
        self.current.lock().unwrap().clone().ok_or_else(|| {
            mlua::Error::runtime(
                "the host is only there while a test runs (call it inside test(...))",
            )
        })
    }
}

/// Everything a binding needs.
#[derive(Clone)]
pub struct Bindings {
    /// The host of the running test.
    pub stage: Arc<Stage>,
    /// The HTTP stand-in every host of this run uses.
    pub stand_in: Arc<StandIn>,
    /// The plugin under test.
    pub plugin: String,
    /// The budget of one dispatch.
    pub dispatch_timeout: Duration,
}

fn tenant() -> Tenant {
    Tenant::new(TEST_TENANT.0, TEST_TENANT.1)
}

fn failed<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> mlua::Error {
    move |e| mlua::Error::runtime(format!("{what}: {e}"))
}

/// The `host` table the prelude takes: `dispatch` and `failed`.
pub fn host_table(lua: &Lua, b: &Bindings) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let stage = Arc::clone(&b.stage);
    t.set(
        "failed",
        lua.create_function(move |lua, failure: Value| {
            *stage.failure.lock().unwrap() = Some(lua.from_value(failure)?);
            Ok(())
        })?,
    )?;
    let b = b.clone();
    t.set(
        "dispatch",
        lua.create_async_function(
            move |lua, (event, data, options): (String, Value, Option<Table>)| {
                let b = b.clone();
                async move { dispatch(&lua, &b, event, data, options).await }
            },
        )?,
    )?;
    Ok(t)
}

async fn dispatch(
    lua: &Lua,
    b: &Bindings,
    event: String,
    data: Value,
    options: Option<Table>,
) -> mlua::Result<(bool, Value)> {
    let data: serde_json::Value = match data {
        Value::Nil => serde_json::Value::Null,
        v => lua.from_value(v).map_err(failed("dispatch: the data"))?,
    };
    let mut who = tenant();
    let mut timeout = b.dispatch_timeout;
    if let Some(o) = options {
        if let Some(t) = o.get::<Option<Table>>("tenant")? {
            who = Tenant::new(t.get::<String>("type")?, t.get::<String>("id")?);
        }
        if let Some(ms) = o.get::<Option<u64>>("timeout_ms")? {
            timeout = Duration::from_millis(ms);
        }
    }
    let request = DispatchRequest {
        name: event,
        data,
        wait: true,
        timeout_ms: Some(timeout.as_millis() as u64),
    };
    let client = b.stage.current()?.client;
    let outcome = client.dispatch(&who.kind, &who.id, &request).await;
    let answered = match outcome {
        Ok(DispatchOutcome::Done(d)) => d,
        Ok(DispatchOutcome::Accepted(_)) => {
            return Err(mlua::Error::runtime("dispatch: queued, not run"));
        }
        Err(e) => {
            let code = e.code().unwrap_or("host").to_owned();
            return Ok((
                false,
                to_lua(
                    lua,
                    &serde_json::json!({ "code": code, "message": e.to_string() }),
                )?,
            ));
        }
    };
    match answered.results.into_iter().find(|r| r.plugin == b.plugin) {
        Some(r) => match r.error {
            None => Ok((true, to_lua(lua, &r.value)?)),
            Some(e) => Ok((
                false,
                to_lua(
                    lua,
                    &serde_json::json!({ "code": e.code, "message": e.message }),
                )?,
            )),
        },
        None => Ok((
            false,
            to_lua(
                lua,
                &serde_json::json!({ "code": "not_found", "message": format!("plugin {} did not run", b.plugin) }),
            )?,
        )),
    }
}

/// Installs `kv`, `http`, `clock`, `timers`, `vars`, `tenant` and `plugin`.
pub fn install(lua: &Lua, b: &Bindings) -> mlua::Result<()> {
    let g = lua.globals();
    g.set("kv", kv_table(lua, b)?)?;
    g.set("http", http_table(lua, b)?)?;
    g.set("clock", clock_table(lua, b)?)?;
    g.set("timers", timers_table(lua, b)?)?;
    g.set("vars", vars_table(lua, b)?)?;
    g.set("webhook", webhook_function(lua, b)?)?;
    let t = lua.create_table()?;
    t.set("type", TEST_TENANT.0)?;
    t.set("id", TEST_TENANT.1)?;
    t.set_readonly(true);
    g.set("tenant", t)?;
    g.set("plugin", b.plugin.as_str())?;
    Ok(())
}

fn kv_table(lua: &Lua, b: &Bindings) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let stage = Arc::clone(&b.stage);
    t.set(
        "get",
        lua.create_async_function(move |lua, (key, scope): (String, Option<String>)| {
            let stage = Arc::clone(&stage);
            async move {
                let scope = scope.unwrap_or_else(|| DEFAULT_SCOPE.to_owned());
                let (kind, id) = TEST_TENANT;
                let record = stage
                    .current()?
                    .client
                    .kv_get(kind, id, &scope, &key)
                    .await
                    .map_err(failed("kv.get"))?;
                match record {
                    Some(r) => to_lua(&lua, &r.value),
                    None => Ok(Value::Nil),
                }
            }
        })?,
    )?;
    let stage = Arc::clone(&b.stage);
    t.set(
        "set",
        lua.create_async_function(
            move |lua, (key, value, scope): (String, Value, Option<String>)| {
                let stage = Arc::clone(&stage);
                async move {
                    let value: serde_json::Value =
                        lua.from_value(value).map_err(failed("kv.set"))?;
                    let scope = scope.unwrap_or_else(|| DEFAULT_SCOPE.to_owned());
                    let (kind, id) = TEST_TENANT;
                    stage
                        .current()?
                        .client
                        .kv_set(kind, id, &scope, &key, &value)
                        .await
                        .map_err(failed("kv.set"))?;
                    Ok(())
                }
            },
        )?,
    )?;
    Ok(t)
}

fn http_table(lua: &Lua, b: &Bindings) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let stand_in = Arc::clone(&b.stand_in);
    t.set(
        "mock",
        lua.create_function(
            move |lua, (method, url, answer): (String, String, Option<Table>)| {
                let canned = canned(lua, answer).map_err(failed("http.mock"))?;
                stand_in
                    .answer(&method, &url, canned)
                    .map_err(failed("http.mock"))
            },
        )?,
    )?;
    let stand_in = Arc::clone(&b.stand_in);
    t.set(
        "calls",
        lua.create_function(move |lua, ()| {
            let out = lua.create_table()?;
            for seen in stand_in.seen() {
                let call = lua.create_table()?;
                call.set("method", seen.method)?;
                call.set("url", seen.url)?;
                let headers = lua.create_table()?;
                for (k, v) in seen.headers {
                    headers.set(k, v)?;
                }
                call.set("headers", headers)?;
                call.set("body", lua.create_string(&seen.body)?)?;
                out.push(call)?;
            }
            Ok(out)
        })?,
    )?;
    Ok(t)
}

/// `{ status = 200, body = "..." or a table (sent as JSON), headers = {} }`.
fn canned(lua: &Lua, answer: Option<Table>) -> mlua::Result<Canned> {
    let Some(answer) = answer else {
        return Ok(Canned {
            status: 200,
            headers: Vec::new(),
            body: Default::default(),
        });
    };
    let mut headers: Vec<(String, String)> = Vec::new();
    if let Some(h) = answer.get::<Option<Table>>("headers")? {
        for pair in h.pairs::<String, String>() {
            let (k, v) = pair?;
            headers.push((k.to_ascii_lowercase(), v));
        }
    }
    let body = match answer.get::<Value>("body")? {
        Value::Nil => Vec::new(),
        Value::String(s) => s.as_bytes().to_vec(),
        v => {
            if !headers.iter().any(|(k, _)| k == "content-type") {
                headers.push(("content-type".into(), "application/json".into()));
            }
            let json: serde_json::Value = lua.from_value(v)?;
            serde_json::to_vec(&json).map_err(mlua::Error::external)?
        }
    };
    Ok(Canned {
        status: answer.get::<Option<u16>>("status")?.unwrap_or(200),
        headers,
        body: body.into(),
    })
}

fn clock_table(lua: &Lua, b: &Bindings) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set(
        "now",
        lua.create_function(|_, ()| Ok(crate::clock::unix_millis()))?,
    )?;
    t.set(
        "freeze",
        lua.create_function(|_, at: Option<i64>| {
            crate::clock::freeze(at.unwrap_or_else(crate::clock::unix_millis));
            Ok(crate::clock::unix_millis())
        })?,
    )?;
    let stage = Arc::clone(&b.stage);
    t.set(
        "advance",
        lua.create_async_function(move |_, ms: i64| {
            let stage = Arc::clone(&stage);
            async move {
                if ms < 0 {
                    return Err(mlua::Error::runtime(
                        "clock.advance: time only moves forward",
                    ));
                }
                let timers = stage.current()?.timers;
                advance(&timers, ms).await.map_err(failed("clock.advance"))
            }
        })?,
    )?;
    Ok(t)
}

/// The most due times one `clock.advance` steps through.
const MAX_STEPS: usize = 10_000;

/// Moves the clock `ms` forward as time would pass: to each pending
/// timer's due time in turn, waiting there until what was due is
/// delivered, then to the end. Answers the clock's reading at the end.
async fn advance(timers: &crate::master::timers::Timers, ms: i64) -> Result<i64, String> {
    let target = crate::clock::unix_millis().saturating_add(ms);
    for _ in 0..MAX_STEPS {
        let now = crate::clock::unix_millis();
        let next = timers
            .earliest_due(target)
            .await
            .map_err(|e| e.to_string())?;
        let to = next.map_or(target, |due| due.clamp(now, target));
        crate::clock::advance(to - now);
        timers.wake();
        caught_up(timers).await?;
        if to >= target {
            return Ok(crate::clock::unix_millis());
        }
    }
    Err(format!("more than {MAX_STEPS} timers came due on the way"))
}

/// Waits until the timers due by now have been delivered.
async fn caught_up(timers: &crate::master::timers::Timers) -> Result<(), String> {
    let until = tokio::time::Instant::now() + CATCH_UP_WITHIN;
    // The loop needs a turn to look at the clock before it can be caught
    // up.
    tokio::time::sleep(Duration::from_millis(2)).await;
    while !timers.caught_up() {
        if tokio::time::Instant::now() > until {
            return Err(format!(
                "the timers due by then were not all delivered within {} s",
                CATCH_UP_WITHIN.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

fn timers_table(lua: &Lua, b: &Bindings) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let stage = Arc::clone(&b.stage);
    t.set(
        "pending",
        lua.create_async_function(move |lua, ()| {
            let stage = Arc::clone(&stage);
            async move {
                let (kind, id) = TEST_TENANT;
                let list = stage
                    .current()?
                    .client
                    .timers(kind, id)
                    .await
                    .map_err(failed("timers.pending"))?;
                to_lua(&lua, &list.timers)
            }
        })?,
    )?;
    Ok(t)
}

/// `webhook(event, body [, headers])`: posts to the master's
/// `/hooks/test/1/{event}` as a sender would; answers `{ status, headers,
/// body }` whatever the status. A table body is sent as JSON.
fn webhook_function(lua: &Lua, b: &Bindings) -> mlua::Result<mlua::Function> {
    let stage = Arc::clone(&b.stage);
    lua.create_async_function(
        move |lua, (event, body, headers): (String, Value, Option<Table>)| {
            let stage = Arc::clone(&stage);
            async move {
                let mut sent: Vec<(String, String)> = Vec::new();
                if let Some(h) = headers {
                    for pair in h.pairs::<String, String>() {
                        sent.push(pair?);
                    }
                }
                let body: Vec<u8> = match body {
                    Value::Nil => Vec::new(),
                    Value::String(s) => s.as_bytes().to_vec(),
                    v => {
                        let json: serde_json::Value = lua.from_value(v)?;
                        if !sent
                            .iter()
                            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                        {
                            sent.push(("content-type".into(), "application/json".into()));
                        }
                        serde_json::to_vec(&json).map_err(mlua::Error::external)?
                    }
                };
                let (kind, id) = TEST_TENANT;
                let client = stage.current()?.client;
                let answer = client
                    .post_webhook((kind, id, &event), &sent, body.into())
                    .await
                    .map_err(failed("webhook"))?;
                let out = lua.create_table()?;
                out.set("status", answer.status)?;
                let headers = lua.create_table()?;
                for (k, v) in answer.headers {
                    headers.set(k, v)?;
                }
                out.set("headers", headers)?;
                out.set("body", lua.create_string(&answer.body)?)?;
                Ok(out)
            }
        },
    )
}

fn vars_table(lua: &Lua, b: &Bindings) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let stage = Arc::clone(&b.stage);
    let plugin = b.plugin.clone();
    t.set(
        "set",
        lua.create_async_function(move |_, (name, value): (String, String)| {
            let (stage, plugin) = (Arc::clone(&stage), plugin.clone());
            async move {
                let change = crate::rest::VarChange {
                    value,
                    tenant: None,
                };
                stage
                    .current()?
                    .client
                    .set_var(&plugin, &name, &change)
                    .await
                    .map_err(failed("vars.set"))?;
                Ok(())
            }
        })?,
    )?;
    Ok(t)
}
