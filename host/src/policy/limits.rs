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
