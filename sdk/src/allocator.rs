//! The global allocator of policy components: a bump allocator that reuses
//! large blocks.
//!
//! Every call runs in a fresh instance that is thrown away afterwards, so
//! small blocks are never reused: allocation is a pointer bump, freeing
//! returns only the most recent block, and nothing is searched. Small blocks
//! carry no header, so a parsed object takes no more memory than its data.
//!
//! Large blocks (from [`LARGE`] bytes: the buffers of strings and vectors
//! that grow, copies of the object) are where a pure bump allocator wastes
//! memory: every buffer a growing vector leaves behind, every temporary
//! copy, stays allocated until the call ends, so a policy that builds a few
//! large values in turn can run out of its memory cap on a legitimate large
//! object. Freed large blocks go to a free list per power of two of their
//! size and are handed out again (split when much larger than asked).
//!
//! The heap starts at the linker's `__heap_base` inside the module's initial
//! memory (see `tollgate-sdk-build`), so a typical call never executes
//! `memory.grow`, which the host pays for with `mprotect`. Past the initial
//! memory it grows memory as any allocator would, and the host's memory cap
//! still applies.
//!
//! A general-purpose allocator was measured instead (Talc 5): on the
//! built-in policies it was 5-13 % slower per evaluation and needed 14-37 %
//! more memory for the same large objects (block headers and alignment).

#![allow(
    unsafe_code,
    reason = "a global allocator is an unsafe trait; each block says why it is sound"
)]

use core::alloc::{GlobalAlloc, Layout};
use core::arch::wasm32;
use core::cell::UnsafeCell;

const PAGE: usize = 65_536;

/// Blocks from this size are reused after they are freed.
pub const LARGE: usize = 16 << 10;

/// Free lists, one per power of two: list `k` holds blocks of `2^k` to
/// `2^(k+1) - 1` bytes.
const CLASSES: usize = usize::BITS as usize;

/// Alignment of every large block and of every free-list header.
const HEADER_ALIGN: usize = 8;

unsafe extern "C" {
    /// First byte after the module's static data and stack, set by wasm-ld.
    static __heap_base: u8;
}

/// A free large block, written into the block itself.
struct Free {
    size: usize,
    next: *mut Free,
}

struct State {
    /// The first unallocated byte; 0 before first use.
    next: usize,
    /// Heads of the free lists of large blocks.
    free: [*mut Free; CLASSES],
}

/// Bump allocator with free lists for large blocks.
pub struct Bump {
    state: UnsafeCell<State>,
}

// SAFETY: Wasm instances of policies are single-threaded (no `atomics`
// target feature): the state is never touched from two threads.
unsafe impl Sync for Bump {}

impl Bump {
    /// An allocator that starts at `__heap_base` on first use.
    pub const fn new() -> Self {
        Bump {
            state: UnsafeCell::new(State {
                next: 0,
                free: [core::ptr::null_mut(); CLASSES],
            }),
        }
    }
}

impl Default for Bump {
    fn default() -> Self {
        Self::new()
    }
}

/// The free list a block of `size` bytes belongs to.
fn class(size: usize) -> usize {
    (usize::BITS - 1 - size.leading_zeros()) as usize
}

impl State {
    fn next(&mut self) -> usize {
        if self.next == 0 {
            // Taking the address of the linker symbol reads nothing.
            self.next = &raw const __heap_base as usize;
        }
        self.next
    }

    /// Makes `[.., end)` addressable, growing memory if needed.
    fn ensure(end: usize) -> bool {
        let limit = wasm32::memory_size(0) * PAGE;
        if end <= limit {
            return true;
        }
        wasm32::memory_grow(0, (end - limit).div_ceil(PAGE)) != usize::MAX
    }

    fn bump(&mut self, layout: Layout) -> *mut u8 {
        let start = self.next().next_multiple_of(layout.align());
        let Some(end) = start.checked_add(layout.size()) else {
            return core::ptr::null_mut();
        };
        if !Self::ensure(end) {
            return core::ptr::null_mut();
        }
        self.next = end;
        start as *mut u8
    }

    /// A freed large block of at least `layout.size()` bytes, suitably
    /// aligned; what it has beyond that, if large, goes back to the lists.
    ///
    /// # Safety
    ///
    /// The lists hold only freed blocks of their recorded sizes.
    unsafe fn reuse(&mut self, layout: Layout) -> Option<*mut u8> {
        // Every block in a list above the size's own is large enough; in
        // the size's own list, the first one of the size or more.
        for k in class(layout.size())..CLASSES {
            let mut link: *mut *mut Free = &mut self.free[k];
            // SAFETY: `link` points at a list head or a free block's `next`.
            while let Some(block) = unsafe { (*link).as_mut() } {
                let address = block as *mut Free as usize;
                if block.size >= layout.size() && address.is_multiple_of(layout.align()) {
                    let size = block.size;
                    // SAFETY: unlinking the block the list points at.
                    unsafe { *link = block.next };
                    let used = layout.size().next_multiple_of(HEADER_ALIGN);
                    if size >= used + LARGE {
                        // SAFETY: the tail is part of this freed block, and
                        // starts aligned for a header.
                        unsafe { self.give_back(address + used, size - used) };
                    }
                    return Some(address as *mut u8);
                }
                link = &mut block.next;
            }
        }
        None
    }

    /// Puts a large freed block on its list (one not aligned for a header,
    /// grown in place from a small block, is left unused).
    ///
    /// # Safety
    ///
    /// `[address, address + size)` is a freed block, no longer used.
    unsafe fn give_back(&mut self, address: usize, size: usize) {
        if !address.is_multiple_of(HEADER_ALIGN) {
            return;
        }
        let k = class(size);
        let block = address as *mut Free;
        // SAFETY: the block is free, aligned for the header and larger than
        // it.
        unsafe {
            block.write(Free {
                size,
                next: self.free[k],
            })
        };
        self.free[k] = block;
    }
}

// SAFETY: blocks never overlap: bumped blocks start at or after the end of
// the previous one, aligned as asked, in addressable memory (`ensure`); a
// reused block was freed by its owner and is taken off its list before it
// is handed out again.
unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: single-threaded (see `Sync`); no reentrancy.
        let state = unsafe { &mut *self.state.get() };
        if layout.size() < LARGE {
            return state.bump(layout);
        }
        // SAFETY: the lists hold only freed blocks (`dealloc`).
        if let Some(block) = unsafe { state.reuse(layout) } {
            return block;
        }
        // Aligned for the header it gets when it is freed.
        let aligned = Layout::from_size_align(layout.size(), layout.align().max(HEADER_ALIGN));
        aligned.map_or(core::ptr::null_mut(), |l| state.bump(l))
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: single-threaded (see `Sync`); no reentrancy.
        let state = unsafe { &mut *self.state.get() };
        if ptr as usize + layout.size() == state.next() {
            // The latest block: the bump pointer steps back.
            state.next = ptr as usize;
        } else if layout.size() >= LARGE {
            // SAFETY: the caller freed this block.
            unsafe { state.give_back(ptr as usize, layout.size()) };
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        {
            // SAFETY: single-threaded (see `Sync`); no reentrancy.
            let state = unsafe { &mut *self.state.get() };
            // The latest block grows or shrinks in place (vectors and
            // strings being built).
            if ptr as usize + layout.size() == state.next() {
                let Some(end) = (ptr as usize).checked_add(new_size) else {
                    return core::ptr::null_mut();
                };
                if !State::ensure(end) {
                    return core::ptr::null_mut();
                }
                state.next = end;
                return ptr;
            }
        }
        // SAFETY: `new_size` with the old alignment is a valid layout (the
        // caller's contract); the new block does not overlap the old one,
        // which is freed (and, if large, reused) after the copy.
        unsafe {
            let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
            let new = self.alloc(new_layout);
            if !new.is_null() {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}
