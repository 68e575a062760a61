//! The instance's memory as host functions see it: bounds-checked reads and
//! writes, and handing the guest bytes in memory it allocated itself (the
//! ABI's `return_*_data` and `return_*_size` pairs).

use super::{HostState, Status};
use wasmtime::{Caller, Memory, TypedFunc};

/// What every host function needs of the instance, set once it exists.
#[derive(Clone)]
pub(super) struct Guest {
    pub memory: Memory,
    /// `proxy_on_memory_allocate`, or `malloc` where that is missing.
    pub alloc: TypedFunc<i32, i32>,
}

/// The most bytes one host call copies out of the guest (a header, a body,
/// a shared value): a filter cannot make the host allocate without bound.
pub(super) const MAX_READ: usize = 4 * 1024 * 1024;

fn memory(caller: &Caller<'_, HostState>) -> Result<Memory, Status> {
    caller
        .data()
        .guest
        .as_ref()
        .map(|g| g.memory)
        .ok_or(Status::InternalFailure)
}

/// A copy of `len` bytes at `ptr`.
pub(super) fn read(caller: &Caller<'_, HostState>, ptr: i32, len: i32) -> Result<Vec<u8>, Status> {
    let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
    if len > MAX_READ {
        return Err(Status::BadArgument);
    }
    let memory = memory(caller)?;
    let end = ptr.checked_add(len).ok_or(Status::InvalidMemoryAccess)?;
    memory
        .data(caller)
        .get(ptr..end)
        .map(<[u8]>::to_vec)
        .ok_or(Status::InvalidMemoryAccess)
}

/// `bytes` written at `ptr`.
pub(super) fn write(
    caller: &mut Caller<'_, HostState>,
    ptr: i32,
    bytes: &[u8],
) -> Result<(), Status> {
    let memory = memory(caller)?;
    memory
        .write(caller, ptr as u32 as usize, bytes)
        .map_err(|_| Status::InvalidMemoryAccess)
}

/// A little-endian `u32` (a `size_t` or an id) written at `ptr`.
pub(super) fn write_u32(
    caller: &mut Caller<'_, HostState>,
    ptr: i32,
    v: u32,
) -> Result<(), Status> {
    write(caller, ptr, &v.to_le_bytes())
}

/// A little-endian `u64` written at `ptr`.
pub(super) fn write_u64(
    caller: &mut Caller<'_, HostState>,
    ptr: i32,
    v: u64,
) -> Result<(), Status> {
    write(caller, ptr, &v.to_le_bytes())
}

/// Copies `bytes` into memory the guest allocates and writes its address
/// and length at `ptr_at` and `len_at`. Nothing to give is written as a
/// null pointer and length 0, which the SDKs read as "none" without
/// allocating.
///
/// A trap inside the guest's allocator (its deadline, its memory cap) is
/// the call's trap: it is the `Err` wasmtime unwinds with.
pub(super) fn give(
    caller: &mut Caller<'_, HostState>,
    bytes: &[u8],
    ptr_at: i32,
    len_at: i32,
) -> wasmtime::Result<i32> {
    let mut ptr = 0;
    if !bytes.is_empty() {
        let Some(alloc) = caller.data().guest.as_ref().map(|g| g.alloc.clone()) else {
            return Ok(Status::InternalFailure as i32);
        };
        // MAX_READ and the host's own budgets keep every buffer far below
        // 2 GiB.
        ptr = alloc.call(&mut *caller, bytes.len() as i32)?;
        if ptr == 0 {
            return Ok(Status::InternalFailure as i32);
        }
        if let Err(s) = write(caller, ptr, bytes) {
            return Ok(s as i32);
        }
    }
    let written = write_u32(caller, ptr_at, ptr as u32)
        .and_then(|()| write_u32(caller, len_at, bytes.len() as u32));
    Ok(super::answer(written))
}
