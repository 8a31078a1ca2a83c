//! The host's side of the waPC protocol: the `wapc` imports a guest calls to
//! fetch its operation and payload, answer, and call the host.
//!
//! One guest call: the host sets the operation and payload in the store's
//! [`Exchange`], calls the guest's `__guest_call(op_len, payload_len)`; the
//! guest allocates both buffers and asks for them (`__guest_request`), runs
//! the operation, and answers with `__guest_response` or `__guest_error`
//! before returning 1 (success) or 0. A host call (`__host_call`) is answered
//! at once; the guest then fetches the answer's length and bytes
//! (`__host_response_len`, `__host_response`, or the error's).

use wasmtime::{Caller, Linker};

use super::capabilities;
use crate::engine::core_module::memory_of;
use crate::engine::host::MAX_LOG_LINE;
use crate::engine::limits::StoreState;

/// One guest call's buffers.
#[derive(Debug, Default)]
pub struct Exchange {
    operation: &'static str,
    payload: Vec<u8>,
    /// The most the guest's answer may hold.
    max_answer: usize,
    /// What the guest answered: its response, or its error.
    answer: Option<Result<Vec<u8>, Vec<u8>>>,
    /// The last host call's answer, until the guest fetches it.
    host_response: Vec<u8>,
    host_error: Vec<u8>,
}

impl Exchange {
    /// An exchange that hands the guest `operation` with `payload` and takes
    /// an answer of at most `max_answer` bytes.
    pub fn new(operation: &'static str, payload: Vec<u8>, max_answer: usize) -> Self {
        Exchange {
            operation,
            payload,
            max_answer,
            ..Exchange::default()
        }
    }

    /// The guest's answer, once it gave one.
    pub fn answer(&mut self) -> Option<Result<Vec<u8>, Vec<u8>>> {
        self.answer.take()
    }
}

/// An answer larger than the call's output cap.
#[derive(Debug, thiserror::Error)]
#[error("the policy answered {size} bytes; the limit is {limit}")]
pub struct TooLarge {
    pub size: usize,
    pub limit: usize,
}

/// Adds the `wapc` imports to `linker`.
///
/// # Errors
///
/// A name defined twice (a bug).
pub fn add_to_linker(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "wapc",
        "__guest_request",
        |mut caller: Caller<'_, StoreState>, op_ptr: i32, ptr: i32| -> wasmtime::Result<()> {
            let memory = memory_of(&mut caller)?;
            let (operation, payload) = {
                let exchange = &mut caller.data_mut().wapc_mut().exchange;
                (exchange.operation, std::mem::take(&mut exchange.payload))
            };
            memory.write(&mut caller, addr(op_ptr), operation.as_bytes())?;
            memory.write(&mut caller, addr(ptr), &payload)?;
            Ok(())
        },
    )?;
    for (name, ok) in [("__guest_response", true), ("__guest_error", false)] {
        linker.func_wrap(
            "wapc",
            name,
            move |mut caller: Caller<'_, StoreState>, ptr: i32, len: i32| -> wasmtime::Result<()> {
                let limit = caller.data_mut().wapc_mut().exchange.max_answer;
                let size = len as u32 as usize;
                if size > limit {
                    return Err(TooLarge { size, limit }.into());
                }
                let bytes = read(&mut caller, ptr, len)?;
                caller.data_mut().wapc_mut().exchange.answer =
                    Some(if ok { Ok(bytes) } else { Err(bytes) });
                Ok(())
            },
        )?;
    }
    linker.func_wrap(
        "wapc",
        "__host_call",
        #[allow(clippy::too_many_arguments, reason = "the waPC import's signature")]
        |mut caller: Caller<'_, StoreState>,
         binding: i32,
         binding_len: i32,
         namespace: i32,
         namespace_len: i32,
         operation: i32,
         operation_len: i32,
         payload: i32,
         payload_len: i32|
         -> wasmtime::Result<i32> {
            let room = caller.data().meter.room();
            if payload_len as u32 as usize > room {
                return Err(crate::engine::host::Abort::TooMuchData(room).into());
            }
            let binding = text(&mut caller, binding, binding_len)?;
            let namespace = text(&mut caller, namespace, namespace_len)?;
            let operation = text(&mut caller, operation, operation_len)?;
            let payload = read(&mut caller, payload, payload_len)?;
            let state = caller.data_mut();
            let answer = capabilities::answer(state, &binding, &namespace, &operation, &payload)?;
            let exchange = &mut state.wapc_mut().exchange;
            Ok(match answer {
                Ok(response) => {
                    exchange.host_response = response;
                    exchange.host_error.clear();
                    1
                }
                Err(error) => {
                    exchange.host_error = error.into_bytes();
                    exchange.host_response.clear();
                    0
                }
            })
        },
    )?;
    for (name, error) in [("__host_response", false), ("__host_error", true)] {
        linker.func_wrap(
            "wapc",
            name,
            move |mut caller: Caller<'_, StoreState>, ptr: i32| -> wasmtime::Result<()> {
                let memory = memory_of(&mut caller)?;
                let exchange = &mut caller.data_mut().wapc_mut().exchange;
                let bytes = std::mem::take(if error {
                    &mut exchange.host_error
                } else {
                    &mut exchange.host_response
                });
                memory.write(&mut caller, addr(ptr), &bytes)?;
                Ok(())
            },
        )?;
    }
    for (name, error) in [("__host_response_len", false), ("__host_error_len", true)] {
        linker.func_wrap(
            "wapc",
            name,
            move |mut caller: Caller<'_, StoreState>| -> i32 {
                let exchange = &caller.data_mut().wapc_mut().exchange;
                let len = if error {
                    exchange.host_error.len()
                } else {
                    exchange.host_response.len()
                };
                len as i32
            },
        )?;
    }
    linker.func_wrap(
        "wapc",
        "__console_log",
        |mut caller: Caller<'_, StoreState>, ptr: i32, len: i32| -> wasmtime::Result<()> {
            // Cut to the longest line the log keeps (maybe mid-character).
            let bytes = read(&mut caller, ptr, len.clamp(0, MAX_LOG_LINE as i32))?;
            let line = String::from_utf8_lossy(&bytes);
            caller.data_mut().log(tracing::Level::INFO, &line)?;
            Ok(())
        },
    )?;
    Ok(())
}

/// A guest address.
fn addr(ptr: i32) -> usize {
    ptr as u32 as usize
}

/// `len` bytes of the guest's memory at `ptr` (checked against its memory
/// before anything is allocated).
fn read(caller: &mut Caller<'_, StoreState>, ptr: i32, len: i32) -> wasmtime::Result<Vec<u8>> {
    let memory = memory_of(caller)?;
    let start = addr(ptr);
    memory
        .data(&*caller)
        .get(start..start.saturating_add(addr(len)))
        .map(<[u8]>::to_vec)
        .ok_or_else(|| wasmtime::format_err!("the policy passed bytes outside its memory"))
}

/// The guest's UTF-8 text at `ptr`.
fn text(caller: &mut Caller<'_, StoreState>, ptr: i32, len: i32) -> wasmtime::Result<String> {
    String::from_utf8(read(caller, ptr, len)?)
        .map_err(|e| wasmtime::format_err!("the policy passed text that is not UTF-8: {e}"))
}
