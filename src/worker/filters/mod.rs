//! WASM filters under wasmtime: compile once, cache the machine code on
//! disk, and run every call in a fresh instance with a deadline and a
//! memory cap.
//!
//! Whether a module is a filter at all is decided in
//! [`crate::catalogue::filter`], the same check the master runs on uploads;
//! this module is how a worker runs one:
//!
//! - [`FilterEngine`] (here): one `wasmtime::Engine` per worker with the
//!   pooling allocator (instances come from preallocated slots, so a fresh
//!   instance per call is cheap) and epoch interruption, ticked by one
//!   thread every [`TICK`];
//! - [`cache`]: the machine code kept as
//!   `<cache>/<sha256 of the module>-<engine hash>.cwasm`, so a restarted
//!   worker loads it instead of compiling again;
//! - [`call`]: one call under ABI v1, input and verdict in MessagePack, in a
//!   fresh instance (nothing a filter keeps survives to the next call);
//! - [`imports`]: the host functions an ABI v1 filter may import;
//! - [`proxy`]: the proxy-wasm 0.2.1 host (the event as an HTTP request),
//!   on the same engine, pool and limits.
//!
//! **Limits**: a deadline per call (epochs; a loop ends with
//! [`FilterError::Timeout`]) and a memory cap (growing past it fails, and a
//! module that insists traps). Either is an error of that call; the worker
//! carries on.

pub mod cache;
pub mod call;
pub mod imports;
pub mod proxy;

pub use call::{FilterInput, Verdict};

use crate::catalogue::filter::{Abi, ModuleError, check_module, parse, sha256_hex};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolingAllocationConfig, StoreLimits,
};

/// How often the epoch advances: the granularity of filter deadlines.
pub const TICK: Duration = Duration::from_millis(2);

/// Bytes of each instance's memory reset in place, not unmapped, between
/// calls (only the dirty pages among them, with PAGEMAP_SCAN).
const KEEP_RESIDENT: usize = 2 * 1024 * 1024;

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
    /// The module is not a filter this host can run.
    #[error(transparent)]
    Module(#[from] ModuleError),
    /// The engine could not start (wasmtime refused its configuration, or
    /// the epoch thread could not be spawned).
    #[error("the filter engine cannot start: {0}")]
    Engine(String),
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
    /// Every instance slot of the pool is in use: try again.
    #[error("all {0} filter instance slots are in use")]
    Overloaded(u32),
}

/// A compiled, ABI-checked filter, ready to instantiate.
pub struct CompiledFilter {
    /// Its name in the catalogue.
    pub name: String,
    /// SHA-256 of the module's bytes, hex.
    pub sha256: String,
    /// Whether the machine code came from the on-disk cache.
    pub from_cache: bool,
    /// The ABI it speaks.
    pub abi: Abi,
    pub(crate) pre: Pre,
}

/// A module linked for its ABI, ready to instantiate.
pub(crate) enum Pre {
    V1(InstancePre<CallState>),
    ProxyWasm(InstancePre<proxy::HostState>),
}

impl std::fmt::Debug for CompiledFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledFilter")
            .field("name", &self.name)
            .field("sha256", &self.sha256)
            .field("from_cache", &self.from_cache)
            .field("abi", &self.abi)
            .finish()
    }
}

/// Per-call state of a store: its memory limits, and the filter's name
/// for the host functions' logs.
pub(crate) struct CallState {
    limits: StoreLimits,
    filter: Arc<str>,
    /// The request the call serves, for log lines.
    request: Option<u64>,
}

/// The filter runtime of one process.
#[derive(Clone)]
pub struct FilterEngine {
    pub(crate) engine: Engine,
    linker: Arc<Linker<CallState>>,
    proxy_linker: Arc<Linker<proxy::HostState>>,
    /// proxy-wasm shared data and metrics, for every call of this worker.
    pub proxy_shared: Arc<proxy::shared::ProxyShared>,
    cache_dir: Option<PathBuf>,
    pub(crate) limits: FilterLimits,
    /// One permit per pool slot: a call past the pool is refused as
    /// overloaded before it reaches the allocator.
    pub(crate) slots: Arc<tokio::sync::Semaphore>,
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
        let engine = Engine::new(&config).map_err(|e| FilterError::Engine(format!("{e:#}")))?;

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
            .map_err(|e| FilterError::Engine(format!("cannot start the epoch thread: {e}")))?;

        let mut linker = Linker::new(&engine);
        imports::define(&mut linker).map_err(|e| FilterError::Engine(format!("{e:#}")))?;
        let mut proxy_linker = Linker::new(&engine);
        proxy::define(&mut proxy_linker).map_err(|e| FilterError::Engine(format!("{e:#}")))?;
        Ok(FilterEngine {
            engine,
            linker: Arc::new(linker),
            proxy_linker: Arc::new(proxy_linker),
            proxy_shared: Arc::default(),
            cache_dir,
            slots: Arc::new(tokio::sync::Semaphore::new(limits.instances as usize)),
            limits,
        })
    }

    /// Compiles (or loads from the cache) and ABI-checks the module `bytes`
    /// as filter `name`.
    pub fn compile(&self, name: &str, bytes: &[u8]) -> Result<CompiledFilter, FilterError> {
        let sha256 = sha256_hex(bytes);
        let cached = self
            .cache_dir
            .as_ref()
            .map(|d| cache::path(d, &sha256, &self.engine));
        let loaded = cached
            .as_ref()
            .and_then(|path| cache::load(&self.engine, path, name));
        let from_cache = loaded.is_some();
        let module: Module = match loaded {
            Some(m) => m,
            None => {
                let m = parse(&self.engine, bytes)?;
                if let Some(path) = &cached {
                    cache::store(path, &m);
                }
                m
            }
        };
        let abi = check_module(&module)?;
        let pre = match abi {
            Abi::MeshplayV1 => Pre::V1(
                self.linker
                    .instantiate_pre(&module)
                    .map_err(|e| ModuleError::Abi(format!("{e:#}")))?,
            ),
            Abi::ProxyWasm => {
                let link = || -> wasmtime::Result<InstancePre<proxy::HostState>> {
                    let mut linker = (*self.proxy_linker).clone();
                    proxy::link_unimplemented(&mut linker, &module)?;
                    linker.instantiate_pre(&module)
                };
                Pre::ProxyWasm(link().map_err(|e| ModuleError::ProxyAbi(format!("{e:#}")))?)
            }
        };
        Ok(CompiledFilter {
            name: name.to_owned(),
            sha256,
            from_cache,
            abi,
            pre,
        })
    }
}

/// Writes a line a filter logged to the worker's log as `"{what}: {line}"`,
/// with the filter's name and the id of the request the call serves. Each
/// ABI maps its own level numbers to `level`.
pub(crate) fn log_line(
    level: tracing::Level,
    what: &str,
    filter: &str,
    request: Option<u64>,
    line: &str,
) {
    let req_id = request.map(crate::mesophyll::correlation::request_label);
    let req_id = req_id.as_deref();
    match level {
        tracing::Level::TRACE => tracing::trace!(filter = %filter, req_id, "{what}: {line}"),
        tracing::Level::DEBUG => tracing::debug!(filter = %filter, req_id, "{what}: {line}"),
        tracing::Level::INFO => tracing::info!(filter = %filter, req_id, "{what}: {line}"),
        tracing::Level::WARN => tracing::warn!(filter = %filter, req_id, "{what}: {line}"),
        _ => tracing::error!(filter = %filter, req_id, "{what}: {line}"),
    }
}

#[cfg(test)]
mod tests;
