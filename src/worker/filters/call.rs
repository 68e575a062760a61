//! One filter call: a slot of the pool, then the call under the module's
//! ABI. Under ABI v1 (here): the input encoded as MessagePack, a fresh
//! instance, `meshplay_alloc` then `meshplay_filter` under an epoch
//! deadline, and the verdict decoded from the instance's memory; under
//! proxy-wasm, [`super::proxy::call`].

use super::{CallState, CompiledFilter, FilterEngine, FilterError, Pre, TICK};
use crate::catalogue::abi::decode_verdict;
pub use crate::catalogue::abi::{FilterInput, Verdict};
use crate::catalogue::filter::ModuleError;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::{InstancePre, Store, StoreLimitsBuilder, Trap};

/// The largest verdict a filter may return.
const MAX_VERDICT_BYTES: u32 = 4 * 1024 * 1024;

impl FilterEngine {
    /// Runs `filter` once, in a fresh instance, within `timeout`.
    ///
    /// Fails with [`FilterError::Overloaded`] at once when every pool slot
    /// is taken, [`FilterError::Timeout`] past the deadline,
    /// [`FilterError::Trap`] when the module traps (memory cap included),
    /// [`FilterError::Failed`] when its answer is not a verdict.
    pub fn run(
        &self,
        filter: &CompiledFilter,
        input: &FilterInput<'_>,
        timeout: Duration,
    ) -> Result<Verdict, FilterError> {
        let _slot = self
            .slots
            .try_acquire()
            .map_err(|_| FilterError::Overloaded(self.limits.instances))?;
        match &filter.pre {
            Pre::V1(pre) => self.run_v1(filter, pre, input, timeout),
            Pre::ProxyWasm(pre) => {
                self.run_proxy(&Arc::from(filter.name.as_str()), pre, input, timeout)
            }
        }
    }

    fn run_v1(
        &self,
        filter: &CompiledFilter,
        pre: &InstancePre<CallState>,
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
                request: input.request,
            },
        );
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(deadline_ticks(timeout));
        store.epoch_deadline_trap();

        let trap = |e: wasmtime::Error| classify(e, timeout);
        let instance = pre.instantiate(&mut store).map_err(trap)?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| FilterError::from(ModuleError::Abi("no memory export".into())))?;
        let alloc = instance
            .get_typed_func::<i32, i32>(&mut store, "meshplay_alloc")
            .map_err(|e| FilterError::from(ModuleError::Abi(format!("{e:#}"))))?;
        let run = instance
            .get_typed_func::<(i32, i32), i64>(&mut store, "meshplay_filter")
            .map_err(|e| FilterError::from(ModuleError::Abi(format!("{e:#}"))))?;

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
        decode_verdict(&out).map_err(FilterError::Failed)
    }
}

/// Epoch ticks that make up `timeout` (at least one).
pub(crate) fn deadline_ticks(timeout: Duration) -> u64 {
    (timeout.as_millis() / TICK.as_millis()).max(1) as u64
}

/// A call's error as a filter error: an epoch interrupt is the deadline,
/// anything else a trap.
pub(crate) fn classify(e: wasmtime::Error, timeout: Duration) -> FilterError {
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => FilterError::Timeout(timeout),
        Some(t) => FilterError::Trap(t.to_string()),
        None => FilterError::Trap(format!("{e:#}")),
    }
}
