//! The bounds a policy runs within, and the resource limiter that enforces its memory cap.

use std::fmt;
use std::time::Duration;

/// What a policy may use. Every bound has a default safe for a decision over a few dozen metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock time for one instantiation and call, enforced by epoch interruption.
    pub deadline: Duration,
    /// Linear memory of the policy's instance, in bytes.
    pub memory: usize,
    /// The size of a decision the host accepts back: the reason, plus every check's strings.
    pub output: usize,
    /// Lines the policy may log per call; later lines are counted and dropped.
    pub log_lines: usize,
    /// Bytes of one logged line; longer lines are cut.
    pub log_line_bytes: usize,
    /// Native stack the policy's WebAssembly may use, which bounds recursion.
    pub wasm_stack: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(2),
            memory: 64 << 20,
            output: 64 << 10,
            log_lines: 1_000,
            log_line_bytes: 4 << 10,
            wasm_stack: 512 << 10,
        }
    }
}

/// How the engine finds memory for each decision's instance.
///
/// Every call instantiates the policy afresh, so this is paid on every decision; it does not
/// change what a policy may do, which [`Limits`] and the resource limiter decide either way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Allocation {
    /// Maps each instance's memories and tables when it is created and unmaps them when it is
    /// dropped. Nothing is reserved up front, which suits a command that decides once and exits.
    #[default]
    OnDemand,
    /// Reserves slots for [`POOLED_INSTANCES`] instances when the runtime is created and reuses
    /// them, so a decision skips the mapping and unmapping. It pays off for a process that decides
    /// many times; more than [`POOLED_INSTANCES`] decisions at once fail with a runtime error.
    Pooling,
}

/// How many policy instances a pooling runtime holds at once: one per decision in flight.
pub const POOLED_INSTANCES: u32 = 16;

/// Core instances, memories and tables one pooled instance may use. A Rust policy needs three
/// core instances, one memory and two tables; a componentize-py policy links many more modules
/// (Python, libc, the WASI adapter), all sharing a memory or two.
const CORE_INSTANCES_PER_POLICY: u32 = 32;
const MEMORIES_PER_POLICY: u32 = 2;
const TABLES_PER_POLICY: u32 = 8;

/// Dirty bytes of a freed memory, and of a freed table, that are zeroed in place instead of
/// released. A decision by a bundled policy dirties well under this; a larger policy's excess is
/// released as before.
const POOL_MEMORY_RESIDENT: usize = 1 << 20;
const POOL_TABLE_RESIDENT: usize = 64 << 10;

/// The address space the engine reserves for a linear memory on a 64-bit host whatever the
/// allocator, so a pool slot of this size costs nothing extra.
const MEMORY_SLOT: u64 = 4 << 30;

impl Allocation {
    /// Sets the engine's instance allocator.
    pub(crate) fn configure(self, config: &mut wasmtime::Config, limits: &Limits) {
        match self {
            Allocation::OnDemand => {
                config.allocation_strategy(wasmtime::InstanceAllocationStrategy::OnDemand);
            }
            Allocation::Pooling => {
                let mut pool = wasmtime::PoolingAllocationConfig::new();
                pool.total_component_instances(POOLED_INSTANCES)
                    .total_core_instances(POOLED_INSTANCES * CORE_INSTANCES_PER_POLICY)
                    .total_memories(POOLED_INSTANCES * MEMORIES_PER_POLICY)
                    .total_tables(POOLED_INSTANCES * TABLES_PER_POLICY)
                    // The memory cap is the resource limiter's to enforce, so that a breach is
                    // reported as one. The pool rejects a memory whose initial size exceeds its own
                    // cap before the limiter is asked, with a bare error; a cap no lower than the
                    // reservation every memory gets anyway keeps that from happening.
                    .max_memory_size(
                        limits
                            .memory
                            .max(usize::try_from(MEMORY_SLOT).unwrap_or(usize::MAX)),
                    )
                    .table_elements(TABLE_ELEMENTS);
                // A freed slot is reset for the next decision. By default that is one `madvise`
                // per memory and table, after which every page the policy touches faults in
                // again; where the kernel can list the dirty pages (Linux 6.7's PAGEMAP_SCAN),
                // zeroing just those in place is cheaper. Without the scan, keeping memory
                // resident would zero the whole budget on every call, which costs more than the
                // faults it saves, so the default stays.
                if wasmtime::PoolingAllocationConfig::is_pagemap_scan_available() {
                    pool.pagemap_scan(wasmtime::Enabled::Yes)
                        .linear_memory_keep_resident(POOL_MEMORY_RESIDENT)
                        .table_keep_resident(POOL_TABLE_RESIDENT);
                }
                config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
            }
        }
    }
}

/// Prints a byte count the way the limits are usually written: "64 MiB", "512 KiB", "100 B".
pub(crate) struct Bytes(pub usize);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Bytes(bytes) = *self;
        if bytes >= 1 << 20 && bytes % (1 << 20) == 0 {
            write!(f, "{} MiB", bytes >> 20)
        } else if bytes >= 1 << 10 && bytes % (1 << 10) == 0 {
            write!(f, "{} KiB", bytes >> 10)
        } else {
            write!(f, "{bytes} B")
        }
    }
}

/// Prints a deadline as "2 s" or "250 ms".
pub(crate) struct Seconds(pub Duration);

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0.as_millis();
        if millis.is_multiple_of(1000) {
            write!(f, "{} s", millis / 1000)
        } else {
            write!(f, "{millis} ms")
        }
    }
}

/// Caps a store's memories and tables, and remembers whether the cap was what stopped the
/// policy, so that the host can say so instead of reporting a bare trap.
pub(crate) struct Limiter {
    memory: usize,
    pub(crate) memory_breached: bool,
}

/// A table larger than this is a policy out of control, not a policy deciding.
const TABLE_ELEMENTS: usize = 1 << 20;

impl Limiter {
    pub(crate) fn new(limits: &Limits) -> Self {
        Self {
            memory: limits.memory,
            memory_breached: false,
        }
    }
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory {
            // Failing the growth with an error traps at once; returning `false` would hand the
            // guest a failed `memory.grow` that a careless allocator might retry forever.
            self.memory_breached = true;
            return Err(wasmtime::Error::msg("policy exceeded its memory limit"));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= TABLE_ELEMENTS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_in_the_largest_whole_unit() {
        assert_eq!(Bytes(64 << 20).to_string(), "64 MiB");
        assert_eq!(Bytes(512 << 10).to_string(), "512 KiB");
        assert_eq!(Bytes(1000).to_string(), "1000 B");
        assert_eq!(Seconds(Duration::from_secs(2)).to_string(), "2 s");
        assert_eq!(Seconds(Duration::from_millis(250)).to_string(), "250 ms");
    }
}
