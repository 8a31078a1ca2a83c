//! The global allocator of policy components: a bump allocator.
//!
//! Every call runs in a fresh instance that is thrown away afterwards, so
//! memory never needs to be reused within an instance: allocation is a
//! pointer bump, freeing returns only the most recent block, and nothing is
//! ever searched. The heap starts at the linker's `__heap_base` inside the
//! module's initial memory (see `tollgate-sdk-build`), so a typical call
//! never executes `memory.grow`, which the host pays for with `mprotect`.
//! Past the initial memory it grows memory as any allocator would, and the
//! host's memory cap still applies.

#![allow(
    unsafe_code,
    reason = "a global allocator is an unsafe trait; each block says why it is sound"
)]

use core::alloc::{GlobalAlloc, Layout};
use core::arch::wasm32;
use core::sync::atomic::{AtomicUsize, Ordering};

const PAGE: usize = 65_536;

unsafe extern "C" {
    /// First byte after the module's static data and stack, set by wasm-ld.
    static __heap_base: u8;
}

/// Bump allocator over linear memory. Wasm instances are single-threaded;
/// the atomic is only there to make the static `Sync`.
pub struct Bump {
    next: AtomicUsize,
}

impl Bump {
    /// An allocator that starts at `__heap_base` on first use.
    pub const fn new() -> Self {
        Bump {
            next: AtomicUsize::new(0),
        }
    }

    fn next(&self) -> usize {
        match self.next.load(Ordering::Relaxed) {
            // Taking the address of the linker symbol reads nothing.
            0 => &raw const __heap_base as usize,
            next => next,
        }
    }

    /// Makes `[.., end)` addressable, growing memory if needed.
    fn ensure(end: usize) -> bool {
        let limit = wasm32::memory_size(0) * PAGE;
        if end <= limit {
            return true;
        }
        wasm32::memory_grow(0, (end - limit).div_ceil(PAGE)) != usize::MAX
    }
}

impl Default for Bump {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: blocks never overlap (each starts at or after the end of the
// previous one, aligned as asked) and lie in addressable memory (`ensure`).
unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let start = self.next().next_multiple_of(layout.align());
        let Some(end) = start.checked_add(layout.size()) else {
            return core::ptr::null_mut();
        };
        if !Self::ensure(end) {
            return core::ptr::null_mut();
        }
        self.next.store(end, Ordering::Relaxed);
        start as *mut u8
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // Only the latest block can be given back without bookkeeping.
        if ptr as usize + layout.size() == self.next() {
            self.next.store(ptr as usize, Ordering::Relaxed);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // The latest block grows or shrinks in place (vectors and strings
        // being built); any other is copied.
        if ptr as usize + layout.size() == self.next() {
            let Some(end) = (ptr as usize).checked_add(new_size) else {
                return core::ptr::null_mut();
            };
            if !Self::ensure(end) {
                return core::ptr::null_mut();
            }
            self.next.store(end, Ordering::Relaxed);
            return ptr;
        }
        // SAFETY: `new_size` with the old alignment is a valid layout (the
        // caller's contract); the blocks do not overlap.
        unsafe {
            let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
            let new = self.alloc(new_layout);
            if !new.is_null() {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
            }
            new
        }
    }
}
