//! The allocator of filter modules: a bump allocator that never frees.
//!
//! Every call of a filter runs in a fresh instance, so nothing needs to be
//! freed: the instance and its memory go away after one call. Bumping a
//! pointer through the memory the module starts with (after the data, from
//! `__heap_base`) is faster than Rust's default dlmalloc, and, more to the
//! point, does not `memory.grow` on the first allocation as dlmalloc does:
//! a grown memory costs the host an `mprotect` (a TLB shootdown across its
//! threads) to shrink the slot back for the next call.
//!
//! A filter that allocates more than its module's memory still works: the
//! allocator grows the memory then, up to the host's cap. Filters that churn
//! through many times their input can opt out (`default-features = false`
//! on the SDK) and get Rust's allocator back.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr::null_mut;

const PAGE: usize = 65536;

unsafe extern "C" {
    /// Where the linker put the end of the data: the heap starts here.
    static __heap_base: u8;
}

/// The bump allocator; see the module documentation.
pub struct Bump {
    next: UnsafeCell<usize>,
}

// SAFETY: wasm32-unknown-unknown modules are single-threaded.
unsafe impl Sync for Bump {}

impl Bump {
    /// An allocator that starts at `__heap_base` on first use.
    pub const fn new() -> Self {
        Bump {
            next: UnsafeCell::new(0),
        }
    }

    /// Makes sure memory reaches `end`; false when the host refuses to grow.
    fn reach(end: usize) -> bool {
        let have = core::arch::wasm32::memory_size(0) * PAGE;
        if end <= have {
            return true;
        }
        core::arch::wasm32::memory_grow(0, (end - have).div_ceil(PAGE)) != usize::MAX
    }
}

impl Default for Bump {
    fn default() -> Self {
        Self::new()
    }
}

unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: single-threaded, and no reference to `next` outlives this
        // call.
        let next = unsafe { &mut *self.next.get() };
        if *next == 0 {
            *next = &raw const __heap_base as usize;
        }
        let start = (*next + layout.align() - 1) & !(layout.align() - 1);
        let Some(end) = start.checked_add(layout.size()) else {
            return null_mut();
        };
        if !Self::reach(end) {
            return null_mut();
        }
        *next = end;
        start as *mut u8
    }

    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as in `alloc`.
        let next = unsafe { &mut *self.next.get() };
        // The newest block grows (or shrinks) in place: a String or Vec being
        // built does not leave a trail of copies behind.
        if ptr as usize + layout.size() == *next {
            let Some(end) = (ptr as usize).checked_add(new_size) else {
                return null_mut();
            };
            if !Self::reach(end) {
                return null_mut();
            }
            *next = end;
            return ptr;
        }
        // SAFETY: the layout is valid: same alignment, size checked by the
        // caller's contract.
        let new =
            unsafe { self.alloc(Layout::from_size_align_unchecked(new_size, layout.align())) };
        if !new.is_null() {
            // SAFETY: both blocks are ours and do not overlap.
            unsafe { core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size)) };
        }
        new
    }
}
