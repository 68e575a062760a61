//! What a filter may import: `meshplay.log(level, ptr, len)` and
//! `meshplay.now_ms() -> i64`, and nothing else (no WASI, no clock of
//! higher resolution, no randomness), so a filter is a pure function of its
//! input and the time.

use super::CallState;
use tracing::Level;
use wasmtime::{Caller, Linker};

/// The longest log line a filter may write.
const MAX_LOG_BYTES: u32 = 4096;

/// Adds every host function to `linker`.
pub(super) fn define(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    linker.func_wrap("meshplay", "log", log)?;
    linker.func_wrap("meshplay", "now_ms", || -> i64 {
        crate::clock::unix_millis()
    })?;
    Ok(())
}

/// The host's `meshplay.log(level, ptr, len)`.
fn log(mut caller: Caller<'_, CallState>, level: i32, ptr: i32, len: i32) {
    let Some(memory) = caller.get_export("memory").and_then(|e| e.into_memory()) else {
        return;
    };
    let len = (len as u32).min(MAX_LOG_BYTES) as usize;
    let mut buf = vec![0u8; len];
    if memory.read(&caller, ptr as u32 as usize, &mut buf).is_err() {
        return;
    }
    let level = match level {
        0 => Level::DEBUG,
        1 => Level::INFO,
        2 => Level::WARN,
        _ => Level::ERROR,
    };
    let state = caller.data();
    let line = String::from_utf8_lossy(&buf);
    super::log_line(level, "filter", &state.filter, state.request, &line);
}
