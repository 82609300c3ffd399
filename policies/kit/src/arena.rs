//! The allocator of a policy built with the kit: a bump arena in the module's zero-initialised
//! data, with the standard allocator behind it.
//!
//! The host makes a fresh instance for every decision, so nothing a decision allocates outlives
//! it and freed memory never needs to be reused. The standard allocator on wasm32 asks for
//! every new block of heap with `memory.grow`, and a grown memory is what the host's pooling
//! allocator must protect again when it reuses the instance's slot: two `mprotect` calls per
//! decision, about a fifth of its cost. Serving the decision from memory the module already has
//! avoids both. A policy that allocates more than the arena holds carries on with the standard
//! allocator, within the host's memory limit as before.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What a decision over a few dozen metrics allocates, with room to spare: the settings parsed
/// from JSON, the checks and their strings.
const ARENA_BYTES: usize = 256 << 10;

#[repr(C, align(16))]
struct Arena(UnsafeCell<[u8; ARENA_BYTES]>);

// SAFETY: the arena's bytes are only handed out by `InstanceAllocator::alloc`, which gives each
// byte to at most one allocation, so no two references to the same bytes are ever made.
unsafe impl Sync for Arena {}

static ARENA: Arena = Arena(UnsafeCell::new([0; ARENA_BYTES]));

/// The offset in `ARENA` of its first byte not yet handed out.
static USED: AtomicUsize = AtomicUsize::new(0);

/// Hands out the arena's bytes in order and never takes them back; past its end, the standard
/// allocator.
pub struct InstanceAllocator;

impl InstanceAllocator {
    fn start() -> usize {
        ARENA.0.get() as usize
    }

    fn in_arena(ptr: *mut u8) -> bool {
        (Self::start()..Self::start() + ARENA_BYTES).contains(&(ptr as usize))
    }
}

// SAFETY: `alloc` returns either null, a block of the standard allocator, or a block of the
// arena that is aligned to `layout.align()`, lies wholly inside the arena, and overlaps no other
// block, since `USED` only grows past the blocks it hands out. `dealloc` passes the standard
// allocator's blocks back to it and ignores the arena's.
unsafe impl GlobalAlloc for InstanceAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let base = Self::start();
        let mut used = USED.load(Ordering::Relaxed);
        loop {
            // `layout.align()` is a power of two, as `Layout` guarantees.
            let start = (base + used)
                .checked_add(layout.align() - 1)
                .map(|end| end & !(layout.align() - 1));
            let block = start.and_then(|start| {
                let end = start.checked_add(layout.size())?;
                (end <= base + ARENA_BYTES).then_some((start, end))
            });
            let Some((start, end)) = block else {
                // SAFETY: the caller's promises about `layout` hold for the standard allocator.
                return unsafe { System.alloc(layout) };
            };
            match USED.compare_exchange_weak(used, end - base, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return start as *mut u8,
                Err(now) => used = now,
            }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // The newest block of the arena grows in place, which is how a string or vector being
        // built usually grows; any other block moves, as the default `realloc` does.
        if Self::in_arena(ptr) {
            let base = Self::start();
            let block_end = ptr as usize + layout.size();
            let new_end = (ptr as usize).checked_add(new_size);
            if let Some(new_end) = new_end.filter(|end| *end <= base + ARENA_BYTES)
                && USED
                    .compare_exchange(
                        block_end - base,
                        new_end.max(block_end) - base,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    )
                    .is_ok()
            {
                return ptr;
            }
        }
        // SAFETY: the caller's promises about `ptr`, `layout` and `new_size` are the ones the
        // default `realloc` needs: it allocates anew through `alloc`, copies and frees the old
        // block through `dealloc`, both of this allocator.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are valid for the smaller of the two sizes and do not overlap,
            // since `new` was just handed out.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !Self::in_arena(ptr) {
            // SAFETY: a block outside the arena came from `System.alloc` with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }
}
