//! The few WASI calls the proxy-wasm SDKs' runtimes import, as the spec
//! asks a host to give them: `fd_write` of stdout and stderr goes to the
//! worker's log, the environment and the argument list are empty, clocks
//! and randomness are the host's, and `proc_exit` ends the call as a trap.
//! No file, socket or other WASI call exists here (the catalogue refuses a
//! module that imports one).

use super::HostState;
use super::guest::{read, write, write_u32, write_u64};
use crate::catalogue::proxy_abi::WASI;
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use wasmtime::{Caller, Linker};

/// WASI's errno values the spec names.
const SUCCESS: i32 = 0;
const BADF: i32 = 8;
const FAULT: i32 = 21;
const INVAL: i32 = 28;
const NOTSUP: i32 = 58;

/// The longest stretch of stdout or stderr logged as one line.
const MAX_LINE: usize = 4096;

/// The most random bytes one call may ask for.
const MAX_RANDOM: usize = 64 * 1024;

fn errno(ok: bool) -> i32 {
    if ok { SUCCESS } else { FAULT }
}

/// Nanoseconds since the Unix epoch.
pub(super) fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Adds the WASI subset to `linker`.
pub(super) fn define(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(WASI, "fd_write", fd_write)?;
    for name in ["environ_sizes_get", "args_sizes_get"] {
        linker.func_wrap(
            WASI,
            name,
            |mut caller: Caller<'_, HostState>, count_at: i32, size_at: i32| -> i32 {
                let ok = write_u32(&mut caller, count_at, 0).is_ok()
                    && write_u32(&mut caller, size_at, 0).is_ok();
                errno(ok)
            },
        )?;
    }
    for name in ["environ_get", "args_get"] {
        // Nothing to write: the sizes said there is nothing.
        linker.func_wrap(WASI, name, |_: i32, _: i32| -> i32 { SUCCESS })?;
    }
    linker.func_wrap(
        WASI,
        "clock_time_get",
        |mut caller: Caller<'_, HostState>, clock: i32, _precision: i64, time_at: i32| -> i32 {
            static START: OnceLock<Instant> = OnceLock::new();
            let now = match clock {
                0 => unix_nanos(),
                1 => START.get_or_init(Instant::now).elapsed().as_nanos() as u64,
                _ => return NOTSUP,
            };
            errno(write_u64(&mut caller, time_at, now).is_ok())
        },
    )?;
    linker.func_wrap(
        WASI,
        "random_get",
        |mut caller: Caller<'_, HostState>, buf: i32, len: i32| -> i32 {
            let len = len as u32 as usize;
            if len > MAX_RANDOM {
                return INVAL;
            }
            let mut bytes = vec![0u8; len];
            rand::fill(&mut bytes[..]);
            errno(write(&mut caller, buf, &bytes).is_ok())
        },
    )?;
    linker.func_wrap(WASI, "proc_exit", |code: i32| -> wasmtime::Result<()> {
        Err(wasmtime::Error::msg(format!(
            "the filter exited (proc_exit({code}))"
        )))
    })?;
    Ok(())
}

/// `fd_write(fd, iovs, iovs_len, written_at)`: stdout is logged at info,
/// stderr at error (and kept as the filter's last words).
fn fd_write(
    mut caller: Caller<'_, HostState>,
    fd: i32,
    iovs: i32,
    iovs_len: i32,
    written_at: i32,
) -> i32 {
    if fd != 1 && fd != 2 {
        return BADF;
    }
    let Ok(vectors) = read(&caller, iovs, iovs_len.saturating_mul(8)) else {
        return FAULT;
    };
    let mut total: u32 = 0;
    let mut text = Vec::new();
    for iov in vectors.chunks_exact(8) {
        let ptr = i32::from_le_bytes(iov[..4].try_into().expect("4 bytes"));
        let len = u32::from_le_bytes(iov[4..].try_into().expect("4 bytes"));
        let room = MAX_LINE.saturating_sub(text.len());
        let Ok(part) = read(&caller, ptr, len.min(room as u32) as i32) else {
            return FAULT;
        };
        text.extend_from_slice(&part);
        total = total.saturating_add(len);
    }
    let line = String::from_utf8_lossy(&text);
    let line = line.trim_end();
    if !line.is_empty() {
        let state = caller.data();
        let (level, what) = if fd == 1 {
            (tracing::Level::INFO, "filter stdout")
        } else {
            (tracing::Level::ERROR, "filter stderr")
        };
        crate::worker::filters::log_line(level, what, &state.filter, state.request, line);
        if fd == 2 {
            caller.data_mut().last_words = Some(line.to_owned());
        }
    }
    errno(write_u32(&mut caller, written_at, total).is_ok())
}
