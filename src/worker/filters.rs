//! WASM filters under wasmtime: compile once, cache the machine code on
//! disk, and run every call in a fresh instance with a deadline and a
//! memory cap.
//!
//! The ABI (version 1) is described for authors in `filters/README.md`; in
//! short, a module exports `memory`, the marker `meshplay_abi_v1`,
//! `meshplay_alloc(len) -> ptr` and `meshplay_filter(ptr, len) -> i64`
//! (the verdict's `ptr << 32 | len`), may import `meshplay.log(level, ptr,
//! len)` and `meshplay.now_ms() -> i64`, and nothing else (no WASI). Input
//! and verdict are MessagePack.
//!
//! - **One [`FilterEngine`] per worker**: one `wasmtime::Engine` with the
//!   pooling allocator (instances come from preallocated slots, so a fresh
//!   instance per call is cheap) and epoch interruption, ticked by one
//!   thread every [`TICK`].
//! - **Compiled once**: [`FilterEngine::compile`] checks the ABI and keeps an
//!   `InstancePre`. The machine code is cached as
//!   `<cache>/<sha256 of the module>-<engine hash>.cwasm`, so a restarted
//!   worker loads it instead of compiling again.
//! - **A fresh instance per call**: nothing a filter keeps survives to the
//!   next call, tenant or not.
//! - **Limits**: a deadline per call (epochs; a loop ends with
//!   [`FilterError::Timeout`]) and a memory cap (growing past it fails, and a
//!   module that insists traps). Either is an error of that call; the worker
//!   carries on.

use crate::mesophyll::message::{Event, Tenant};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::{
    Caller, Config, Enabled, Engine, ExternType, InstanceAllocationStrategy, InstancePre, Linker,
    Module, PoolingAllocationConfig, Store, StoreLimits, StoreLimitsBuilder, Trap, ValType,
};

/// How often the epoch advances: the granularity of filter deadlines.
pub const TICK: Duration = Duration::from_millis(2);

/// The deadline of a filter call when its plugin does not set one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);

/// Bytes of each instance's memory reset in place, not unmapped, between
/// calls (only the dirty pages among them, with PAGEMAP_SCAN).
const KEEP_RESIDENT: usize = 2 * 1024 * 1024;

/// The largest verdict a filter may return.
const MAX_VERDICT_BYTES: u32 = 4 * 1024 * 1024;

/// The longest log line a filter may write.
const MAX_LOG_BYTES: u32 = 4096;

/// Limits that apply to every filter instance of a worker.
#[derive(Debug, Clone)]
pub struct FilterLimits {
    /// Linear memory cap per instance.
    pub memory_bytes: usize,
    /// Instances that may exist at once (pool slots).
    pub instances: u32,
}

impl Default for FilterLimits {
    fn default() -> Self {
        FilterLimits {
            memory_bytes: 16 * 1024 * 1024,
            instances: 64,
        }
    }
}

/// Why a filter could not be loaded or did not give a verdict.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FilterError {
    /// The bytes are not a WebAssembly module wasmtime accepts.
    #[error("not a valid WebAssembly module: {0}")]
    Invalid(String),
    /// A valid module that does not follow the filter ABI.
    #[error("not a Meshplay filter (ABI v1): {0}")]
    Abi(String),
    /// The call ran past its deadline.
    #[error("ran past its {0:?} deadline")]
    Timeout(Duration),
    /// The module trapped (including running out of memory).
    #[error("trapped: {0}")]
    Trap(String),
    /// The filter answered something that is not a verdict, or said it
    /// failed (`Verdict::Error`).
    #[error("failed: {0}")]
    Failed(String),
    /// The plugin names a filter that is not in the catalogue.
    #[error("no filter named {0:?}")]
    Missing(String),
}

/// What a filter sees.
#[derive(Debug, Clone, Serialize)]
pub struct FilterInput<'a> {
    /// Whose event.
    pub tenant: &'a Tenant,
    /// The event.
    pub event: &'a Event,
    /// The filter's configuration.
    pub config: &'a serde_json::Value,
}

/// A filter's decision.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Go on, with the event rewritten or (`None`) as it was.
    Continue {
        /// The rewritten event.
        #[serde(default)]
        event: Option<Event>,
    },
    /// Stop, for this reason.
    Reject {
        /// Why.
        reason: String,
    },
}

/// The guest's own error report, decoded beside [`Verdict`].
#[derive(Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
enum GuestError {
    Error { message: String },
}

/// A compiled, ABI-checked filter, ready to instantiate.
pub struct CompiledFilter {
    /// Its name in the catalogue.
    pub name: String,
    /// SHA-256 of the module's bytes, hex.
    pub sha256: String,
    /// Whether the machine code came from the on-disk cache.
    pub from_cache: bool,
    pre: InstancePre<CallState>,
}

impl std::fmt::Debug for CompiledFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledFilter")
            .field("name", &self.name)
            .field("sha256", &self.sha256)
            .field("from_cache", &self.from_cache)
            .finish()
    }
}

/// Per-call state of a store.
struct CallState {
    limits: StoreLimits,
    filter: Arc<str>,
}

/// The filter runtime of one process.
#[derive(Clone)]
pub struct FilterEngine {
    engine: Engine,
    linker: Arc<Linker<CallState>>,
    cache_dir: Option<PathBuf>,
    limits: FilterLimits,
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl FilterEngine {
    /// An engine whose compiled modules are cached in `cache_dir` (none:
    /// no cache), and the thread that advances its epochs.
    ///
    /// Fails only if wasmtime rejects the configuration (for instance, when
    /// the pool cannot reserve its address space).
    pub fn new(cache_dir: Option<PathBuf>, limits: FilterLimits) -> Result<Self, FilterError> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(limits.instances)
            .total_memories(limits.instances)
            .total_tables(limits.instances)
            .max_memory_size(limits.memory_bytes)
            .max_memories_per_module(1)
            .max_tables_per_module(1)
            // Between calls, reset only the pages a call dirtied, in place
            // (PAGEMAP_SCAN, Linux 6.7+): no madvise, so no TLB shootdown
            // across the worker's threads and no page faults on the next
            // call. Where the ioctl is missing, wasmtime falls back to
            // madvise past the first KEEP_RESIDENT bytes.
            .pagemap_scan(Enabled::Auto)
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(64 * 1024);
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            // Slots only as large as the cap: bounds checks stay explicit,
            // but a worker reserves megabytes, not terabytes, of address
            // space.
            .memory_reservation(limits.memory_bytes as u64)
            .memory_guard_size(64 * 1024)
            .memory_reservation_for_growth(0)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| FilterError::Invalid(format!("{e:#}")))?;

        let weak = engine.weak();
        std::thread::Builder::new()
            .name("meshplay-epochs".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(TICK);
                }
            })
            .map_err(|e| FilterError::Invalid(format!("cannot start the epoch thread: {e}")))?;

        let mut linker = Linker::new(&engine);
        linker
            .func_wrap("meshplay", "log", host_log)
            .and_then(|l| {
                l.func_wrap("meshplay", "now_ms", || -> i64 {
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis() as i64)
                        .unwrap_or(0)
                })
            })
            .map_err(|e| FilterError::Invalid(format!("{e:#}")))?;
        Ok(FilterEngine {
            engine,
            linker: Arc::new(linker),
            cache_dir,
            limits,
        })
    }

    fn engine_hash(&self) -> String {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        format!("{:016x}", h.finish())
    }

    /// Checks that `bytes` are a filter this host can run, without caching
    /// anything: what the master does before it accepts an upload.
    pub fn validate(&self, bytes: &[u8]) -> Result<(), FilterError> {
        let module = parse(&self.engine, bytes)?;
        check_abi(&module)
    }

    /// Compiles (or loads from the cache) and ABI-checks the module `bytes`
    /// as filter `name`.
    pub fn compile(&self, name: &str, bytes: &[u8]) -> Result<CompiledFilter, FilterError> {
        let sha256 = sha256_hex(bytes);
        let cached = self
            .cache_dir
            .as_ref()
            .map(|d| d.join(format!("{sha256}-{}.cwasm", self.engine_hash())));
        let mut from_cache = false;
        let mut module = None;
        if let Some(path) = cached.as_ref().filter(|p| p.is_file()) {
            // SAFETY: only Meshplay workers write this directory (inside the
            // operator's data directory), each file atomically by rename,
            // from a module compiled by an engine of the hash the file name
            // carries; wasmtime also checks the engine's compatibility.
            match unsafe { Module::deserialize_file(&self.engine, path) } {
                Ok(m) => {
                    from_cache = true;
                    module = Some(m);
                }
                Err(e) => tracing::warn!(filter = name, "ignoring a bad cache entry: {e:#}"),
            }
        }
        let module = match module {
            Some(m) => m,
            None => {
                let m = parse(&self.engine, bytes)?;
                if let Some(path) = &cached {
                    write_cache(path, &m);
                }
                m
            }
        };
        check_abi(&module)?;
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|e| FilterError::Abi(format!("{e:#}")))?;
        Ok(CompiledFilter {
            name: name.to_owned(),
            sha256,
            from_cache,
            pre,
        })
    }

    /// Runs `filter` once, in a fresh instance, within `timeout`.
    pub fn run(
        &self,
        filter: &CompiledFilter,
        input: &FilterInput<'_>,
        timeout: Duration,
    ) -> Result<Verdict, FilterError> {
        let bytes = rmp_serde::to_vec_named(input)
            .map_err(|e| FilterError::Failed(format!("cannot encode the input: {e}")))?;
        let len = i32::try_from(bytes.len())
            .map_err(|_| FilterError::Failed("input too large".into()))?;
        let mut store = Store::new(
            &self.engine,
            CallState {
                limits: StoreLimitsBuilder::new()
                    .memory_size(self.limits.memory_bytes)
                    .instances(1)
                    .build(),
                filter: Arc::from(filter.name.as_str()),
            },
        );
        store.limiter(|s| &mut s.limits);
        let ticks = (timeout.as_millis() / TICK.as_millis()).max(1) as u64;
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();

        let trap = |e: wasmtime::Error| classify(e, timeout);
        let instance = filter.pre.instantiate(&mut store).map_err(trap)?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| FilterError::Abi("no memory export".into()))?;
        let alloc = instance
            .get_typed_func::<i32, i32>(&mut store, "meshplay_alloc")
            .map_err(|e| FilterError::Abi(format!("{e:#}")))?;
        let run = instance
            .get_typed_func::<(i32, i32), i64>(&mut store, "meshplay_filter")
            .map_err(|e| FilterError::Abi(format!("{e:#}")))?;

        let ptr = alloc.call(&mut store, len).map_err(trap)?;
        memory
            .write(&mut store, ptr as u32 as usize, &bytes)
            .map_err(|_| {
                FilterError::Failed("meshplay_alloc returned memory out of bounds".into())
            })?;
        let packed = run.call(&mut store, (ptr, len)).map_err(trap)?;
        let (out_ptr, out_len) = ((packed as u64 >> 32) as u32, packed as u64 as u32);
        if out_len > MAX_VERDICT_BYTES {
            return Err(FilterError::Failed(format!("verdict of {out_len} bytes")));
        }
        let mut out = vec![0u8; out_len as usize];
        memory
            .read(&store, out_ptr as usize, &mut out)
            .map_err(|_| FilterError::Failed("verdict out of bounds".into()))?;
        match rmp_serde::from_slice::<Verdict>(&out) {
            Ok(v) => Ok(v),
            Err(e) => match rmp_serde::from_slice::<GuestError>(&out) {
                Ok(GuestError::Error { message }) => Err(FilterError::Failed(message)),
                Err(_) => Err(FilterError::Failed(format!("not a verdict: {e}"))),
            },
        }
    }
}

/// Compiles `bytes`, with an error fit for one line of an API answer.
fn parse(engine: &Engine, bytes: &[u8]) -> Result<Module, FilterError> {
    if !bytes.starts_with(b"\0asm") {
        let what = if bytes.trim_ascii_start().starts_with(b"(module") {
            "WebAssembly text (.wat); compile it to a binary .wasm first"
        } else {
            "the file does not start with the WebAssembly magic bytes \\0asm"
        };
        return Err(FilterError::Invalid(what.into()));
    }
    Module::from_binary(engine, bytes).map_err(|e| {
        // wasmtime's messages may span lines (debug-printed byte arrays).
        let message = format!("{e:#}");
        FilterError::Invalid(message.split_whitespace().collect::<Vec<_>>().join(" "))
    })
}

fn classify(e: wasmtime::Error, timeout: Duration) -> FilterError {
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => FilterError::Timeout(timeout),
        Some(t) => FilterError::Trap(t.to_string()),
        None => FilterError::Trap(format!("{e:#}")),
    }
}

fn write_cache(path: &std::path::Path, module: &Module) {
    let write = || -> std::io::Result<()> {
        let bytes = module.serialize().map_err(std::io::Error::other)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        tracing::warn!(path = %path.display(), "cannot cache a compiled filter: {e}");
    }
}

/// The host's `meshplay.log(level, ptr, len)`.
fn host_log(mut caller: Caller<'_, CallState>, level: i32, ptr: i32, len: i32) {
    let Some(memory) = caller.get_export("memory").and_then(|e| e.into_memory()) else {
        return;
    };
    let len = (len as u32).min(MAX_LOG_BYTES) as usize;
    let mut buf = vec![0u8; len];
    if memory.read(&caller, ptr as u32 as usize, &mut buf).is_err() {
        return;
    }
    let line = String::from_utf8_lossy(&buf);
    let filter = caller.data().filter.clone();
    match level {
        0 => tracing::debug!(filter = %filter, "filter: {line}"),
        1 => tracing::info!(filter = %filter, "filter: {line}"),
        2 => tracing::warn!(filter = %filter, "filter: {line}"),
        _ => tracing::error!(filter = %filter, "filter: {line}"),
    }
}

/// Checks the module's imports and exports against ABI v1.
fn check_abi(module: &Module) -> Result<(), FilterError> {
    for import in module.imports() {
        let allowed = match (import.module(), import.name(), import.ty()) {
            ("meshplay", "log", ExternType::Func(f)) => {
                f.params().map(|p| p.to_string()).collect::<Vec<_>>() == ["i32", "i32", "i32"]
                    && f.results().len() == 0
            }
            ("meshplay", "now_ms", ExternType::Func(f)) => {
                f.params().len() == 0
                    && f.results().map(|r| r.to_string()).collect::<Vec<_>>() == ["i64"]
            }
            _ => false,
        };
        if !allowed {
            return Err(FilterError::Abi(format!(
                "imports `{}::{}`, which the host does not provide (only meshplay::log and meshplay::now_ms; no WASI)",
                import.module(),
                import.name()
            )));
        }
    }
    let func = |name: &str, params: &[ValType], results: &[ValType]| -> Result<(), FilterError> {
        match module.get_export(name) {
            Some(ExternType::Func(f))
                if f.params()
                    .map(|p| p.to_string())
                    .eq(params.iter().map(|p| p.to_string()))
                    && f.results()
                        .map(|r| r.to_string())
                        .eq(results.iter().map(|r| r.to_string())) =>
            {
                Ok(())
            }
            Some(_) => Err(FilterError::Abi(format!(
                "export `{name}` has the wrong type"
            ))),
            None => Err(FilterError::Abi(format!("no export `{name}`"))),
        }
    };
    func("meshplay_abi_v1", &[], &[])?;
    func("meshplay_alloc", &[ValType::I32], &[ValType::I32])?;
    func(
        "meshplay_filter",
        &[ValType::I32, ValType::I32],
        &[ValType::I64],
    )?;
    match module.get_export("memory") {
        Some(ExternType::Memory(_)) => Ok(()),
        _ => Err(FilterError::Abi("no exported `memory`".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn engine(cache: Option<PathBuf>) -> FilterEngine {
        FilterEngine::new(cache, FilterLimits::default()).unwrap()
    }

    fn dist(name: &str) -> Vec<u8> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("filters/dist")
            .join(format!("{name}.wasm"));
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e} (run filters/build.sh)", p.display()))
    }

    fn fixture(name: &str) -> Vec<u8> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("filters/fixtures")
            .join(name);
        if name.ends_with(".wat") {
            wat::parse_file(&p).unwrap()
        } else {
            std::fs::read(&p).unwrap()
        }
    }

    fn run(
        e: &FilterEngine,
        f: &CompiledFilter,
        data: serde_json::Value,
        config: serde_json::Value,
    ) -> Result<Verdict, FilterError> {
        let tenant = Tenant::new("user", "1");
        let event = Event {
            name: "msg".into(),
            data,
        };
        e.run(
            f,
            &FilterInput {
                tenant: &tenant,
                event: &event,
                config: &config,
            },
            DEFAULT_TIMEOUT,
        )
    }

    #[test]
    fn redact_rewrites_and_keyword_block_rejects() {
        let e = engine(None);
        let redact = e.compile("redact", &dist("redact")).unwrap();
        match run(
            &e,
            &redact,
            json!({"t": "mail me at ada@example.org"}),
            json!(null),
        )
        .unwrap()
        {
            Verdict::Continue { event: Some(ev) } => assert_eq!(ev.data["t"], "mail me at [email]"),
            other => panic!("{other:?}"),
        }
        let block = e.compile("keyword-block", &dist("keyword-block")).unwrap();
        let words = json!({"words": ["spam"]});
        assert_eq!(
            run(&e, &block, json!(["buy SPAM"]), words.clone()).unwrap(),
            Verdict::Reject {
                reason: "blocked word: spam".into()
            }
        );
        assert_eq!(
            run(&e, &block, json!("fine"), words).unwrap(),
            Verdict::Continue { event: None }
        );
        assert!(matches!(
            run(&e, &block, json!("x"), json!(null)),
            Err(FilterError::Failed(_))
        ));
    }

    #[test]
    fn runaway_and_greedy_filters_fail_and_the_engine_goes_on() {
        let e = engine(None);
        let looping = e.compile("loop", &fixture("endless-loop.wat")).unwrap();
        let started = std::time::Instant::now();
        assert_eq!(
            run(&e, &looping, json!(1), json!(null)),
            Err(FilterError::Timeout(DEFAULT_TIMEOUT))
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        let hog = e.compile("hog", &fixture("memory-hog.wat")).unwrap();
        assert!(matches!(
            run(&e, &hog, json!(1), json!(null)),
            Err(FilterError::Trap(_))
        ));
        let ok = e
            .compile("require-fields", &dist("require-fields"))
            .unwrap();
        assert!(run(&e, &ok, json!({"a": 1}), json!({"fields": ["a"]})).is_ok());
    }

    #[test]
    fn modules_that_are_not_filters_are_refused_with_the_reason() {
        let e = engine(None);
        let err = e.validate(&fixture("unknown-import.wat")).unwrap_err();
        assert!(err.to_string().contains("env::launch_missiles"), "{err}");
        let err = e.validate(&fixture("not-wasm.wasm")).unwrap_err();
        assert!(matches!(err, FilterError::Invalid(_)), "{err}");
        let err = e.validate(&fixture("no-abi-marker.wat")).unwrap_err();
        assert!(err.to_string().contains("meshplay_abi_v1"), "{err}");
        let text = b"  (module (memory 1))".to_vec();
        let err = e.validate(&text).unwrap_err();
        assert!(err.to_string().contains(".wat"), "{err}");
        // Valid magic, broken body: wasmtime's reason, on one line.
        let err = e.validate(b"\0asm\x01\0\0\0\x01\xff").unwrap_err();
        assert!(matches!(err, FilterError::Invalid(_)), "{err}");
        assert!(!err.to_string().contains('\n'), "{err}");
    }

    #[test]
    fn the_second_compile_comes_from_the_cache() {
        let tmp = tempfile::tempdir().unwrap();
        let bytes = dist("redact");
        let first = engine(Some(tmp.path().to_path_buf()))
            .compile("redact", &bytes)
            .unwrap();
        assert!(!first.from_cache);
        let e = engine(Some(tmp.path().to_path_buf()));
        let second = e.compile("redact", &bytes).unwrap();
        assert!(second.from_cache);
        assert!(run(&e, &second, json!("x"), json!(null)).is_ok());
    }
}
