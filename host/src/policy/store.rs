//! What a policy's store holds: its limiter, its log, and for policies that import WASI, an
//! empty WASI context whose clocks are frozen and whose output goes to the host's log.

use std::time::Duration;

use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use super::bindings::v0_1::model_pusher::policy::host::{self, Level};
use super::bindings::v0_1::model_pusher::policy::types;
use super::limits::{Limiter, Limits};

/// The state of one policy call.
pub(crate) struct State {
    pub(crate) limiter: Limiter,
    pub(crate) log: PolicyLog,
    wasi: Option<WasiState>,
    output_bytes: usize,
}

impl State {
    pub(crate) fn new(policy: &str, limits: &Limits) -> Self {
        Self {
            limiter: Limiter::new(limits),
            log: PolicyLog::new(policy, limits),
            wasi: None,
            output_bytes: limits.log_line_bytes * limits.log_lines.min(64),
        }
    }

    /// Sends what the policy wrote to stdout and stderr through WASI to the host's log.
    pub(crate) fn flush_output(&mut self) {
        let Some(wasi) = &self.wasi else { return };
        let streams = [
            (wasi.stdout.contents(), Level::Info),
            (wasi.stderr.contents(), Level::Warn),
        ];
        for (bytes, level) in streams {
            for line in String::from_utf8_lossy(&bytes).lines() {
                self.log.write(level, line);
            }
        }
    }
}

/// The policy's log lines, forwarded to `tracing` as they arrive, with a cap on their number
/// and size so that a policy cannot flood the host's log.
pub(crate) struct PolicyLog {
    policy: String,
    max_lines: usize,
    max_line_bytes: usize,
    lines: usize,
    dropped: usize,
    /// The last line logged at error level, which names a Rust policy's panic when a trap follows.
    pub(crate) last_error: Option<String>,
}

impl PolicyLog {
    fn new(policy: &str, limits: &Limits) -> Self {
        Self {
            policy: policy.to_owned(),
            max_lines: limits.log_lines,
            max_line_bytes: limits.log_line_bytes,
            lines: 0,
            dropped: 0,
            last_error: None,
        }
    }

    pub(crate) fn write(&mut self, level: Level, message: &str) {
        let message = truncate(message, self.max_line_bytes);
        if level == Level::Error {
            self.last_error = Some(message.to_owned());
        }
        if self.lines >= self.max_lines {
            self.dropped += 1;
            return;
        }
        self.lines += 1;
        let policy = self.policy.as_str();
        match level {
            Level::Trace => tracing::trace!(policy, "{message}"),
            Level::Debug => tracing::debug!(policy, "{message}"),
            Level::Info => tracing::info!(policy, "{message}"),
            Level::Warn => tracing::warn!(policy, "{message}"),
            Level::Error => tracing::error!(policy, "{message}"),
        }
    }

    /// Reports lines dropped by the cap, once, at the end of a call.
    pub(crate) fn finish(&mut self) {
        if self.dropped > 0 {
            tracing::warn!(
                policy = self.policy.as_str(),
                dropped = self.dropped,
                "policy logged more than {} lines; the rest were dropped",
                self.max_lines
            );
            self.dropped = 0;
        }
    }
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl host::Host for State {
    fn log(&mut self, level: Level, message: String) {
        self.log.write(level, &message);
    }
}

impl types::Host for State {}

struct WasiState {
    ctx: WasiCtx,
    table: wasmtime::component::ResourceTable,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
}

impl WasiState {
    fn new(output_bytes: usize) -> Self {
        let stdout = MemoryOutputPipe::new(output_bytes);
        let stderr = MemoryOutputPipe::new(output_bytes);
        // No preopened directories, environment, arguments, sockets or name lookups are granted;
        // the clocks read zero so that a decision cannot depend on when it was made.
        let ctx = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .wall_clock(FrozenClock)
            .monotonic_clock(FrozenClock)
            .allow_ip_name_lookup(false)
            .allow_tcp(false)
            .allow_udp(false)
            .build();
        Self {
            ctx,
            table: wasmtime::component::ResourceTable::new(),
            stdout,
            stderr,
        }
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let output_bytes = self.output_bytes;
        let wasi = self
            .wasi
            .get_or_insert_with(|| WasiState::new(output_bytes));
        WasiCtxView {
            ctx: &mut wasi.ctx,
            table: &mut wasi.table,
        }
    }
}

/// A clock stopped at the epoch.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }

    fn now(&self) -> u64 {
        0
    }
}
