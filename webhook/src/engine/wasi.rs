//! The WASI a policy is offered when it imports WASI (a Kubewarden module
//! built for `wasm32-wasip1`, or a component configured with `wasi: true`,
//! such as one `componentize-py` builds): nothing of the machine. No files (no preopened directories), no network, no
//! environment variables or arguments, an empty stdin, a wall clock stopped
//! at the Unix epoch (only the monotonic clock runs: an admission must not
//! depend on the date), and stdout and stderr captured into a small buffer
//! whose lines become the policy's log lines (a Rust policy's panic message
//! lands there).

use std::time::Duration;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{HostWallClock, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView};

use super::Error;

/// What one call's stdout and stderr may hold together; past it the streams
/// are closed to the policy (its writes fail), never trapped.
const OUTPUT_BYTES: usize = 16 << 10;

/// A wall clock stopped at the Unix epoch.
struct Epoch;

impl HostWallClock for Epoch {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

/// A builder of the locked-down context, writing into `output`.
fn builder(output: &MemoryOutputPipe) -> WasiCtxBuilder {
    let mut builder = WasiCtxBuilder::new();
    builder
        .stdout(output.clone())
        .stderr(output.clone())
        .wall_clock(Epoch)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    builder
}

/// WASI preview 1 for one call of a core module, and what it wrote.
pub struct P1 {
    ctx: WasiP1Ctx,
    output: MemoryOutputPipe,
}

impl Default for P1 {
    fn default() -> Self {
        let output = MemoryOutputPipe::new(OUTPUT_BYTES);
        P1 {
            ctx: builder(&output).build_p1(),
            output,
        }
    }
}

impl P1 {
    /// The context the WASI imports reach.
    pub fn ctx(&mut self) -> &mut WasiP1Ctx {
        &mut self.ctx
    }

    /// What the module wrote to stdout and stderr.
    pub fn written(&self) -> String {
        written(&self.output)
    }
}

/// WASI 0.2 for one call of a component, and what it wrote.
pub struct P2 {
    ctx: WasiCtx,
    table: ResourceTable,
    output: MemoryOutputPipe,
}

impl Default for P2 {
    fn default() -> Self {
        let output = MemoryOutputPipe::new(OUTPUT_BYTES);
        P2 {
            ctx: builder(&output).build(),
            table: ResourceTable::new(),
            output,
        }
    }
}

impl P2 {
    /// What the WASI imports reach.
    pub fn view(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }

    /// What the component wrote to stdout and stderr.
    pub fn written(&self) -> String {
        written(&self.output)
    }
}

fn written(output: &MemoryOutputPipe) -> String {
    String::from_utf8_lossy(&output.contents()).into_owned()
}

/// A trap named with the end of what the policy wrote before it (a Rust
/// panic's message, a Python traceback's last lines).
pub fn with_written(error: Error, written: &str) -> Error {
    const KEEP: usize = 400;
    match error {
        Error::Trap(trap) if !written.trim().is_empty() => {
            let text = written.trim().replace('\n', " | ");
            let tail = match text.char_indices().rev().nth(KEEP) {
                Some((at, _)) => format!("…{}", &text[at..]),
                None => text,
            };
            Error::Trap(format!("{trap} (the policy wrote: {tail})"))
        }
        other => other,
    }
}

/// Whether a call ended by the module exiting with status 0 (a WASI
/// command's `_start` may end with `proc_exit(0)`).
pub fn exited_cleanly(error: &wasmtime::Error) -> bool {
    error
        .downcast_ref::<I32Exit>()
        .is_some_and(|exit| exit.0 == 0)
}
