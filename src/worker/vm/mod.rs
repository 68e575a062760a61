//! One tenant's Luau VM: a sandboxed `mlua::Lua` with a memory cap and a
//! deadline on every call.
//!
//! **Sandbox.** Only the safe standard libraries are opened (no `debug`, no
//! `loadstring`); mlua's filesystem `require` is removed; after the host API
//! is installed the globals are frozen (`Lua::sandbox`), so code can neither
//! change the shared libraries nor reach another tenant (each tenant has its
//! own `Lua`). Each plugin runs in its own environment table, and ad-hoc
//! scripts (RunScript) share one "script environment" per VM, which lives as
//! long as the VM: what a script sets there, the next script sees, until the
//! VM is dropped.
//!
//! **Deadlines.** Luau calls an interrupt at safepoints (loop back-edges,
//! calls). Ours only loads one atomic flag, so hot loops stay cheap. A
//! process-wide watchdog thread sets that flag: every
//! [`crate::worker::watchdog::SLICE`] to "yield", which
//! makes the interrupt hand the thread back to tokio (a CPU-bound tenant
//! cannot starve the others of the same worker), and at the deadline to
//! "expired", which makes the interrupt raise a timeout error at every
//! safepoint until the call unwinds, `pcall` or not. Awaited host calls stop
//! at the deadline too ([`Clock::remaining`]). Code that cannot yield (a
//! metamethod, a sort comparator) may hold the thread at most
//! [`VmLimits::hold`] at a time. As a last resort a call still
//! running [`BACKSTOP`] past its deadline is abandoned and the VM marked
//! poisoned.
//!
//! **Memory.** `Lua::set_memory_limit` caps the VM's heap; an allocation over
//! it fails with a memory error, and the VM is marked poisoned so that the
//! owner drops it and builds a fresh one for the next call.
//!
//! Modules:
//!
//! - `sliced`: a Luau call as a future that runs in slices and hands its
//!   thread back through tokio's driver between them.

use crate::catalogue::plugin::Plugin;
use crate::mesophyll::message::{ErrorKind, Event, Packed, RemoteError, Tenant};
use crate::worker::invocation::Invocation;
use crate::worker::packing::{PackError, Packing};
use crate::worker::services::Services;
use crate::worker::watchdog::{Clock, DeadlineExceeded, HeldTooLong, track_user_coroutines};
use crate::worker::{host, kv};
use mlua::chunk::ChunkMode;
use mlua::{Function, Lua, LuaOptions, LuaSerdeExt, StdLib, Table};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long past its deadline a call may still take to unwind before it is
/// abandoned (and its VM poisoned).
pub const BACKSTOP: Duration = Duration::from_secs(1);

/// Limits applied to every VM of a worker.
#[derive(Debug, Clone, Copy)]
pub struct VmLimits {
    /// Heap cap per VM, in bytes.
    pub memory_bytes: usize,
    /// The longest a call may run without giving its worker's thread back
    /// (see [`crate::worker::watchdog`]); past it the call fails `timeout`.
    pub hold: Duration,
}

/// [`VmLimits::hold`] unless `--vm-hold-ms` says otherwise.
pub const DEFAULT_HOLD: Duration = Duration::from_millis(250);

impl Default for VmLimits {
    fn default() -> Self {
        VmLimits {
            memory_bytes: 20 * 1024 * 1024,
            hold: DEFAULT_HOLD,
        }
    }
}

/// Luau's flags, set once per process before the first VM: they are
/// global to the library and must not change while any VM runs.
fn set_luau_flags() {
    static SET: std::sync::Once = std::sync::Once::new();
    SET.call_once(|| {
        // Sparse `table.move` ranges moved by their keys, not one index at
        // a time over the whole range (vendor/luau0-src/PATCHED.md).
        if Lua::set_fflag("LuauTableMoveTimeoutFix", true).is_err() {
            tracing::warn!("this Luau has no LuauTableMoveTimeoutFix flag");
        }
    });
}

/// A tenant's VM.
pub struct Vm {
    lua: Lua,
    clock: Arc<Clock>,
    invocation: Arc<Invocation>,
    script_env: Table,
    /// Each plugin's dispatcher ([`BIND_HANDLERS`] over its handler table
    /// and `ctx`), with the plugin it came from: holding the `Arc` (not its
    /// address) means a new version is always noticed.
    dispatchers: HashMap<String, (Arc<Plugin>, Function)>,
    /// `event.tenant`, read-only: the same for every event of this VM, so
    /// built once rather than per event.
    tenant_table: Table,
    /// The event table's keys, interned once: creating a Lua string hashes
    /// it, and the profile showed that per event.
    keys: EventKeys,
    /// Event names as Luau strings, made once per name: with a heap cap
    /// set, every string mlua makes is a protected call.
    names: HashMap<String, mlua::LuaString>,
    /// [`BIND_HANDLERS`], run once per plugin version.
    bind: Function,
    packing: Packing,
    poisoned: bool,
}

/// Event names kept as Luau strings per VM, beyond which the cache starts
/// again (a plugin's events are a handful; this only bounds a flood of
/// made-up names).
const NAMES_KEPT: usize = 64;

/// Makes a plugin's dispatcher, `function(name, data, headers, timer, http)`,
/// which answers `false` when the plugin has no handler for `name`: a
/// dispatch is one call into the VM, the event table built by a table
/// constructor (not a lookup, a call with six, a set per field).
const BIND_HANDLERS: &str = "local handlers, tenant, ctx = ...\n\
    return function(name, data, headers, timer, http)\n\
        local handler = handlers[name]\n\
        if handler == nil then return false end\n\
        return true, handler({ name = name, data = data, tenant = tenant, headers = headers, timer = timer, http = http }, ctx)\n\
    end";

struct EventKeys {
    name: mlua::LuaString,
    data: mlua::LuaString,
    tenant: mlua::LuaString,
}

impl Vm {
    /// Builds a fresh sandboxed VM for `tenant`.
    ///
    /// Fails only if the Luau state cannot be set up (out of memory, most
    /// likely), as an [`ErrorKind::Internal`] error. Without a store in
    /// `services`, `kv` calls fail with a clear error.
    pub fn new(
        tenant: &Tenant,
        limits: VmLimits,
        services: &Arc<Services>,
    ) -> Result<Vm, RemoteError> {
        Self::build(tenant, limits, services)
            .map_err(|e| RemoteError::new(ErrorKind::Internal, format!("cannot create a VM: {e}")))
    }

    fn build(tenant: &Tenant, limits: VmLimits, services: &Arc<Services>) -> mlua::Result<Vm> {
        set_luau_flags();
        let libs = StdLib::COROUTINE
            | StdLib::TABLE
            | StdLib::OS
            | StdLib::STRING
            | StdLib::UTF8
            | StdLib::BIT
            | StdLib::MATH
            | StdLib::BUFFER
            | StdLib::VECTOR;
        // A tenant runs one call at a time: two recycled coroutines spare
        // every async call the creation of a fresh one.
        let lua = Lua::new_with(libs, LuaOptions::default().thread_pool_size(2))?;
        let globals = lua.globals();
        for name in ["require", "loadstring", "getfenv", "setfenv"] {
            globals.raw_set(name, mlua::Nil)?;
        }
        let clock = Clock::new(limits.hold);
        track_user_coroutines(&lua, &clock)?;
        let invocation = Invocation::new();
        host::install(&lua, tenant, &clock, &invocation, services)?;
        kv::install(&lua, tenant, &clock, services.db.as_ref())?;
        crate::worker::timers::install(&lua, tenant, &clock, services.db.as_ref())?;
        crate::worker::nats::install(&lua, tenant, &clock, &invocation, services.db.as_ref())?;

        let interrupted = Arc::clone(&clock);
        lua.set_interrupt(move |lua| interrupted.interrupt(lua));
        lua.sandbox(true)?;
        lua.set_memory_limit(limits.memory_bytes)?;
        let script_env = environment(&lua)?;
        let tenant_table = lua.create_table()?;
        tenant_table.set("type", tenant.kind.as_str())?;
        tenant_table.set("id", tenant.id.as_str())?;
        tenant_table.set_readonly(true);
        let keys = EventKeys {
            name: lua.create_string("name")?,
            data: lua.create_string("data")?,
            tenant: lua.create_string("tenant")?,
        };
        let bind = lua
            .load(BIND_HANDLERS)
            .set_mode(ChunkMode::Text)
            .set_name("=dispatch")
            .into_function()?;
        let packing = Packing::new(&lua)?;
        // For the host functions that take values out of the VM (`kv`,
        // `filters.run`), which measure them with it first.
        lua.set_app_data(packing.clone());
        // The set-up's garbage, or an idle VM carries it: 26 KiB of RSS per
        // idle tenant (`bench memory` at 10k tenants, 257 -> 231 KiB).
        lua.gc_collect()?;
        Ok(Vm {
            lua,
            clock,
            invocation,
            script_env,
            dispatchers: HashMap::new(),
            tenant_table,
            keys,
            names: HashMap::new(),
            bind,
            packing,
            poisoned: false,
        })
    }

    /// What the last call emitted (`events.emit`), for the caller to send
    /// once it knows the call succeeded.
    pub fn take_emitted(&self) -> Vec<(Tenant, Event)> {
        self.invocation.take_emitted()
    }

    /// True once the VM hit its memory cap or abandoned a call: drop it.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Says which request the VM's next call serves, so that what it logs
    /// (and the filters it calls) carry the request's id.
    pub fn serve(&self, request: Option<u64>) {
        self.clock.serve(request);
    }

    /// Bytes the VM's heap uses now.
    pub fn used_memory(&self) -> usize {
        self.lua.used_memory()
    }

    /// Runs `plugin`'s handler for `event`, which must finish by `deadline`.
    ///
    /// The handler is `handlers[event.name](event, ctx)`, where the table of
    /// handlers is what the plugin's entry chunk returned (evaluated once per
    /// VM and plugin version).
    pub async fn handle_event(
        &mut self,
        plugin: &Arc<Plugin>,
        event: &Event,
        deadline: Instant,
    ) -> Result<Packed, RemoteError> {
        let _watchdog = self.clock.arm(deadline);
        self.invocation.begin(Some(plugin), event.hops);
        let dispatch = match self.dispatchers.get(&plugin.manifest.name) {
            Some((loaded, dispatch)) if Arc::ptr_eq(loaded, plugin) => dispatch.clone(),
            _ => {
                let env = environment(&self.lua).map_err(|e| self.classify(e))?;
                let chunk = self
                    .lua
                    .load(&plugin.bytecode[..])
                    // Our own compiler's output (catalogue::plugin::build).
                    .set_mode(ChunkMode::Binary)
                    .set_name(format!("@{}", plugin.manifest.name))
                    .set_environment(env);
                let table: Table = self.guarded(chunk.call_async(()), deadline).await?;
                let ctx = self.ctx_table(plugin)?;
                let dispatch: Function = self
                    .bind
                    .call((table, &self.tenant_table, ctx))
                    .map_err(|e| self.classify(e))?;
                self.dispatchers.insert(
                    plugin.manifest.name.clone(),
                    (Arc::clone(plugin), dispatch.clone()),
                );
                dispatch
            }
        };
        let name = self.name(&event.name)?;
        let data = self
            .packing
            .unpack(&self.lua, &event.data)
            .map_err(|e| self.event_error(e))?;
        let headers = self.headers(event)?;
        let (timer, http) = (self.timer(event)?, self.http(event)?);
        let (found, out): (bool, mlua::Value) = self
            .guarded(
                dispatch.call_async((name, data, headers, timer, http)),
                deadline,
            )
            .await?;
        if !found {
            return Err(RemoteError::new(
                ErrorKind::NotFound,
                format!(
                    "plugin {} declares event {:?} but its entry returns no handler for it",
                    plugin.manifest.name, event.name
                ),
            ));
        }
        self.to_packed(out)
    }

    /// `name` as a Luau string, from the cache when it was seen before.
    fn name(&mut self, name: &str) -> Result<mlua::LuaString, RemoteError> {
        if let Some(s) = self.names.get(name) {
            return Ok(s.clone());
        }
        let s = self
            .lua
            .create_string(name)
            .map_err(|e| self.event_error(e))?;
        if self.names.len() >= NAMES_KEPT {
            self.names.clear();
        }
        self.names.insert(name.to_owned(), s.clone());
        Ok(s)
    }

    /// `event.headers`: only events a proxy-wasm filter gave headers carry
    /// the key, so the common event pays for no empty table.
    fn headers(&mut self, event: &Event) -> Result<Option<mlua::Value>, RemoteError> {
        if event.headers.is_empty() {
            return Ok(None);
        }
        let headers = self
            .lua
            .to_value(&event.headers)
            .map_err(|e| self.event_error(e))?;
        Ok(Some(headers))
    }

    /// `event.timer`, for an event a timer fired.
    fn timer(&mut self, event: &Event) -> Result<Option<mlua::Value>, RemoteError> {
        let Some(timer) = &event.timer else {
            return Ok(None);
        };
        let t = self.lua.to_value(timer).map_err(|e| self.event_error(e))?;
        Ok(Some(t))
    }

    /// `event.http`, for a webhook.
    fn http(&mut self, event: &Event) -> Result<Option<mlua::Value>, RemoteError> {
        let Some(http) = &event.http else {
            return Ok(None);
        };
        let t = self.lua.to_value(http).map_err(|e| self.event_error(e))?;
        Ok(Some(t))
    }

    /// An event the VM could not take in: a heap that ran out poisons the
    /// VM, anything else is the event's fault.
    fn event_error(&mut self, e: mlua::Error) -> RemoteError {
        if matches!(innermost(&e), mlua::Error::MemoryError(_)) {
            return self.classify(e);
        }
        RemoteError::new(ErrorKind::BadRequest, format!("event: {e}"))
    }

    /// Runs ad-hoc `code` in the VM's script environment, with the event as
    /// its first vararg (`local event = ...`).
    pub async fn run_script(
        &mut self,
        name: &str,
        code: &str,
        event: &Event,
        deadline: Instant,
    ) -> Result<Packed, RemoteError> {
        let _watchdog = self.clock.arm(deadline);
        self.invocation.begin(None, event.hops);
        let chunk = self
            .lua
            .load(code)
            // Source text only: Luau does not verify bytecode, so a chunk
            // that happens to be bytecode must fail to parse, not run.
            .set_mode(ChunkMode::Text)
            .set_name(format!("={name}"))
            .set_environment(self.script_env.clone());
        let arg = self.event_table(event)?;
        let out: mlua::Value = self.guarded(chunk.call_async(arg), deadline).await?;
        self.to_packed(out)
    }

    async fn guarded<T>(
        &mut self,
        call: impl Future<Output = mlua::Result<T>>,
        deadline: Instant,
    ) -> Result<T, RemoteError> {
        let clock = Arc::clone(&self.clock);
        let call = sliced::sliced(&clock, call);
        match tokio::time::timeout_at(deadline + BACKSTOP, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.classify(e)),
            Err(_) => {
                self.poisoned = true;
                Err(RemoteError::new(
                    ErrorKind::Timeout,
                    "the call did not unwind after its deadline; the VM was dropped",
                ))
            }
        }
    }

    fn classify(&mut self, e: mlua::Error) -> RemoteError {
        if self.clock.held() || e.downcast_ref::<HeldTooLong>().is_some() {
            return RemoteError::new(
                ErrorKind::Timeout,
                format!(
                    "held its worker's thread for over {} ms without yielding \
                     (a metamethod, a sort comparator or a library call cannot yield; \
                     the limit is --vm-hold-ms)",
                    self.clock.hold().as_millis()
                ),
            );
        }
        if self.clock.expired() || e.downcast_ref::<DeadlineExceeded>().is_some() {
            return RemoteError::new(ErrorKind::Timeout, "ran past its deadline");
        }
        match innermost(&e) {
            mlua::Error::MemoryError(m) => {
                self.poisoned = true;
                RemoteError::new(ErrorKind::Memory, format!("out of memory: {m}"))
            }
            mlua::Error::SyntaxError { message, .. } => {
                RemoteError::new(ErrorKind::Syntax, message.clone())
            }
            mlua::Error::RuntimeError(m) => RemoteError::new(ErrorKind::Runtime, m.clone()),
            other => RemoteError::new(ErrorKind::Runtime, other.to_string()),
        }
    }

    /// The event as a table, for a script's `...` (handlers get theirs
    /// built by [`BIND_HANDLERS`]).
    fn event_table(&mut self, event: &Event) -> Result<mlua::Value, RemoteError> {
        let headers = self.headers(event)?;
        let timer = self.timer(event)?;
        let build = || -> mlua::Result<mlua::Value> {
            let t = self.lua.create_table_with_capacity(0, 3)?;
            t.raw_set(&self.keys.name, event.name.as_str())?;
            t.raw_set(
                &self.keys.data,
                self.packing.unpack(&self.lua, &event.data)?,
            )?;
            t.raw_set(&self.keys.tenant, &self.tenant_table)?;
            if let Some(headers) = headers {
                t.raw_set("headers", headers)?;
            }
            if let Some(timer) = timer {
                t.raw_set("timer", timer)?;
            }
            Ok(mlua::Value::Table(t))
        };
        build().map_err(|e| self.event_error(e))
    }

    fn ctx_table(&self, plugin: &Plugin) -> Result<Table, RemoteError> {
        let build = || -> mlua::Result<Table> {
            let t = self.lua.create_table()?;
            t.set("plugin", plugin.manifest.name.as_str())?;
            t.set("version", plugin.manifest.version.as_str())?;
            // Shared by every event of this plugin in this VM.
            t.set_readonly(true);
            Ok(t)
        };
        build().map_err(|e| RemoteError::new(ErrorKind::Internal, e.to_string()))
    }

    fn to_packed(&self, v: mlua::Value) -> Result<Packed, RemoteError> {
        self.packing.pack(&v).map_err(|e| match e {
            PackError::TooLarge(_) => RemoteError::new(
                ErrorKind::TooLarge,
                format!("the returned value cannot be sent: {e}"),
            ),
            PackError::Unsendable(_) => RemoteError::new(
                ErrorKind::Runtime,
                format!("the returned value cannot be sent: {e}"),
            ),
        })
    }
}

/// A fresh environment that reads through to the frozen globals.
fn environment(lua: &Lua) -> mlua::Result<Table> {
    let env = lua.create_table()?;
    let meta = lua.create_table()?;
    meta.set("__index", lua.globals())?;
    env.set_metatable(Some(meta))?;
    Ok(env)
}

fn innermost(e: &mlua::Error) -> &mlua::Error {
    match e {
        mlua::Error::CallbackError { cause, .. } => innermost(cause),
        mlua::Error::WithContext { cause, .. } => innermost(cause),
        other => other,
    }
}

mod sliced;
#[cfg(test)]
mod tests;
