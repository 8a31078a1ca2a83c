//! Kubewarden policies, unchanged: the core modules Kubewarden's SDKs build
//! (waPC guests, for `wasm32-wasip1` or `wasm32-unknown-unknown`), run on the
//! same wasmtime engine under the same deadline, memory cap and output cap as
//! every policy.
//!
//! Every call gets a fresh store and instance. The module's start functions
//! run (TinyGo's `_start`, waPC's `wapc_init`: they register the policy's
//! operations), then one waPC guest call ([`wapc`]): `validate` with
//! Kubewarden's ValidationRequest (`{"request": …, "settings": …}`), or
//! `validate_settings` with the settings at load. The answer is Kubewarden's
//! ValidationResponse (`accepted`, `message`, `code`, `mutated_object`, …).
//! The module's host calls are answered by [`capabilities`]; its WASI
//! imports by the locked-down context of [`crate::engine::wasi`]. The
//! module's `kubewarden_metadata` section ([`metadata`]) is read at load.

mod capabilities;
mod metadata;
#[cfg(test)]
mod tests;
mod wapc;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::value::RawValue;
use wasmtime::{ExternType, InstancePre, Linker, Module, Store};

use super::host::LogRate;
use super::limits::{Limits, StoreState};
use super::output::{self, Verdict};
use super::pre::{Call, Failed, Window, classify};
use super::{Engine, Error, core_module, wasi};

pub use metadata::Metadata;
pub use wapc::Exchange;

/// The waPC protocol version the host speaks.
const PROTOCOL: &str = "v1";

/// How long the protocol check at load may take.
const INTROSPECTION: Duration = Duration::from_secs(2);

/// Functions a module may export to set itself up, run in this order before
/// its guest call: a WASI reactor's `_initialize`, a WASI command's `_start`
/// (TinyGo policies register their operations in `main`), and waPC's
/// `wapc_init` (Rust policies).
const STARTS: [&str; 3] = ["_initialize", "_start", "wapc_init"];

/// The waPC guest's state in a store: the exchange, and its WASI context.
#[derive(Default)]
pub struct Guest {
    /// The current guest call's buffers.
    pub exchange: Exchange,
    /// What its WASI imports reach.
    pub wasi: wasi::P1,
}

/// A loaded Kubewarden module: compiled, its imports checked, linked once.
pub struct Program {
    pre: InstancePre<StoreState>,
    /// The start functions it exports, in the order they run.
    starts: Vec<&'static str>,
    metadata: Option<Metadata>,
}

/// Kubewarden's ValidationResponse.
#[derive(Deserialize)]
struct Response {
    accepted: bool,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    code: Option<u16>,
    #[serde(default)]
    mutated_object: Option<Box<RawValue>>,
    #[serde(default)]
    audit_annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    warnings: Option<Vec<String>>,
}

/// Kubewarden's SettingsValidationResponse.
#[derive(Deserialize)]
struct SettingsResponse {
    valid: bool,
    #[serde(default)]
    message: Option<String>,
}

/// What the guest answered a call: its response, or its error message.
type Answer = Result<Vec<u8>, String>;

impl Program {
    /// Compiles (or fetches from the cache) a Kubewarden module, reads its
    /// metadata, checks its imports and exports, and asks it which protocol
    /// it speaks.
    ///
    /// # Errors
    ///
    /// A module that cannot be read, compiled or linked, or that is not a
    /// waPC policy of Kubernetes requests, with what is wrong.
    pub fn load(engine: &Engine, name: &str, bytes: &[u8]) -> Result<Program, Error> {
        if super::is_component(bytes) {
            return Err(Error::Kubewarden(
                "this is a component of the tollgate:policy world: load it with `module: PATH`, not `kubewarden:`".into(),
            ));
        }
        if super::opa::is_bundle(bytes) {
            return Err(Error::Kubewarden(
                "this is an OPA bundle: load it with `module: opa:PATH`".into(),
            ));
        }
        let metadata = metadata::read(bytes).map_err(Error::Kubewarden)?;
        let module: Module = engine.inner.cache.compiled(&engine.inner.wasmtime, bytes)?;
        check_imports(&module)?;
        if !matches!(module.get_export("memory"), Some(ExternType::Memory(_))) {
            return Err(Error::Kubewarden("the module exports no memory".into()));
        }
        match module.get_export("__guest_call") {
            Some(ExternType::Func(_)) => {}
            _ => {
                return Err(Error::Kubewarden(
                    "not a waPC guest: it exports no __guest_call (build it with a Kubewarden SDK)"
                        .into(),
                ));
            }
        }
        let mut starts = Vec::new();
        for start in STARTS {
            match module.get_export(start) {
                None => {}
                Some(ExternType::Func(ty)) if ty.params().len() == 0 && ty.results().len() == 0 => {
                    starts.push(start);
                }
                Some(_) => {
                    return Err(Error::Kubewarden(format!(
                        "it exports {start}, but not as a function of no arguments and no results"
                    )));
                }
            }
        }
        let pre = linker(&engine.inner.wasmtime)
            .and_then(|linker| linker.instantiate_pre(&module))
            .map_err(|e| Error::Kubewarden(format!("{e:#}")))?;
        let program = Program {
            pre,
            starts,
            metadata,
        };
        program.check_protocol(engine, name)?;
        Ok(program)
    }

    /// What the module's `kubewarden_metadata` section says, when it has one.
    pub fn metadata(&self) -> Option<&Metadata> {
        self.metadata.as_ref()
    }

    /// Asks the module which protocol it speaks (`protocol_version`); a
    /// module that does not answer (older SDKs and the Go template register
    /// no such operation) speaks v1.
    fn check_protocol(&self, engine: &Engine, name: &str) -> Result<(), Error> {
        let limits = Limits {
            timeout: INTROSPECTION,
            ..Limits::default()
        };
        let answer =
            self.call_blocking(engine, name, None, &limits, "protocol_version", Vec::new())?;
        match answer {
            Ok(bytes) => match serde_json::from_slice::<String>(&bytes) {
                Ok(version) if version == PROTOCOL => Ok(()),
                Ok(version) => Err(Error::Kubewarden(format!(
                    "it speaks protocol {version}; the host speaks {PROTOCOL}"
                ))),
                Err(_) => Err(Error::Kubewarden(format!(
                    "protocol_version answered {}, not a version",
                    String::from_utf8_lossy(&bytes)
                ))),
            },
            Err(message) => {
                tracing::debug!(
                    policy = name,
                    "protocol_version not answered ({message}): taken as {PROTOCOL}"
                );
                Ok(())
            }
        }
    }

    /// Runs the module's `validate_settings`. The outer error is the
    /// sandbox's; the inner one is the policy's verdict on the settings.
    ///
    /// # Errors
    ///
    /// The module trapped or ran out of time or memory.
    pub fn validate_settings(
        &self,
        engine: &Engine,
        name: &str,
        log_rate: &Arc<LogRate>,
        settings: &str,
        limits: &Limits,
    ) -> Result<Result<(), String>, Error> {
        let payload = settings_text(settings).as_bytes().to_vec();
        let answer = self.call_blocking(
            engine,
            name,
            Some(log_rate),
            limits,
            "validate_settings",
            payload,
        )?;
        let bytes = match answer {
            Ok(bytes) => bytes,
            Err(message) => return Ok(Err(message)),
        };
        let response: SettingsResponse = serde_json::from_slice(&bytes).map_err(|e| {
            Error::InvalidOutput(format!(
                "validate_settings answered no SettingsValidationResponse: {e}"
            ))
        })?;
        Ok(if response.valid {
            Ok(())
        } else {
            Err(response
                .message
                .unwrap_or_else(|| "the policy refused its settings".into()))
        })
    }

    /// One `validate` call in a fresh instance, yielding at every tick;
    /// its slot is lent to the store for the call and its host answers the
    /// module's cluster reads.
    ///
    /// # Errors
    ///
    /// A trap, timeout, memory or output cap, or the policy's own error.
    pub async fn run(&self, call: Call<'_>) -> Result<Verdict, Error> {
        let Call {
            engine,
            name,
            log_rate,
            request,
            settings,
            limits,
            window,
            slot,
            host,
        } = call;
        let window = &window;
        let settings = settings_text(settings);
        let mut payload = Vec::with_capacity(request.len() + settings.len() + 24);
        for part in [r#"{"request":"#, request, r#","settings":"#, settings, "}"] {
            payload.extend_from_slice(part.as_bytes());
        }
        let mut store = core_module::store(engine, name, limits, window, true, log_rate, host);
        store.data_mut().slot = slot;
        let _active = engine.inner.ticker.active();
        let answer = self.call(&mut store, "validate", payload, limits).await;
        store.data_mut().slot = None;
        match self.finish(&mut store, answer, limits, window)? {
            Ok(bytes) => verdict(&bytes, limits),
            Err(message) => Err(output::policy_error(
                store.data().refused.as_deref(),
                message,
            )),
        }
    }

    /// How long a fresh instance with its start functions run takes: the
    /// part of every call before the guest call.
    ///
    /// # Errors
    ///
    /// The instance could not be made, or a start function failed.
    pub fn time_instantiation(
        &self,
        engine: &Engine,
        name: &str,
        limits: &Limits,
    ) -> Result<Duration, Error> {
        let window = Window::new(limits, None);
        let log_rate = Arc::default();
        let started = Instant::now();
        let mut store = core_module::store(engine, name, limits, &window, false, &log_rate, None);
        let _active = engine.inner.ticker.active();
        let set_up = futures::executor::block_on(async {
            let instance = self.instantiate(&mut store).await?;
            self.start(&mut store, &instance).await
        });
        self.finish(&mut store, set_up.map(Ok), limits, &window)?
            .map_err(Error::Policy)?;
        Ok(started.elapsed())
    }

    /// One guest call in a fresh instance on this thread (at load).
    fn call_blocking(
        &self,
        engine: &Engine,
        name: &str,
        log_rate: Option<&Arc<LogRate>>,
        limits: &Limits,
        operation: &'static str,
        payload: Vec<u8>,
    ) -> Result<Answer, Error> {
        let window = Window::new(limits, None);
        let log_rate = log_rate.cloned().unwrap_or_default();
        let mut store = core_module::store(engine, name, limits, &window, false, &log_rate, None);
        let _active = engine.inner.ticker.active();
        let answer = futures::executor::block_on(self.call(&mut store, operation, payload, limits));
        self.finish(&mut store, answer, limits, &window)
    }

    /// A fresh instance with its start functions run, and one guest call.
    async fn call(
        &self,
        store: &mut Store<StoreState>,
        operation: &'static str,
        payload: Vec<u8>,
        limits: &Limits,
    ) -> Result<Answer, Failed> {
        let len = i32::try_from(payload.len()).map_err(|_| {
            Failed::Output(Error::Policy(format!(
                "a payload of {} bytes is too large for waPC",
                payload.len()
            )))
        })?;
        let instance = self.instantiate(store).await?;
        self.start(store, &instance).await?;
        store.data_mut().wapc_mut().exchange =
            Exchange::new(operation, payload, limits.output_bytes);
        let guest_call = instance
            .get_typed_func::<(i32, i32), i32>(&mut *store, "__guest_call")
            .map_err(Failed::Raw)?;
        let succeeded = guest_call
            .call_async(&mut *store, (operation.len() as i32, len))
            .await
            .map_err(Failed::Raw)?;
        let answer = store.data_mut().wapc_mut().exchange.answer();
        Ok(match (succeeded, answer) {
            (1, Some(Ok(bytes))) => Ok(bytes),
            (1, _) => {
                return Err(Failed::Output(Error::InvalidOutput(format!(
                    "{operation} reported success but gave no response (__guest_response)"
                ))));
            }
            (_, Some(Err(message))) => Err(String::from_utf8_lossy(&message).into_owned()),
            (_, _) => Err(format!("{operation} failed without saying why")),
        })
    }

    /// A fresh instance.
    async fn instantiate(
        &self,
        store: &mut Store<StoreState>,
    ) -> Result<wasmtime::Instance, Failed> {
        self.pre
            .instantiate_async(&mut *store)
            .await
            .map_err(Failed::Raw)
    }

    /// Runs the module's start functions; a WASI command that exits with
    /// status 0 has started.
    async fn start(
        &self,
        store: &mut Store<StoreState>,
        instance: &wasmtime::Instance,
    ) -> Result<(), Failed> {
        for start in &self.starts {
            let function = instance
                .get_typed_func::<(), ()>(&mut *store, start)
                .map_err(Failed::Raw)?;
            match function.call_async(&mut *store, ()).await {
                Ok(()) => {}
                Err(error) if wasi::exited_cleanly(&error) => {}
                Err(error) => return Err(Failed::Raw(error)),
            }
        }
        Ok(())
    }

    /// After a call: what the module wrote to stdout and stderr logged (and
    /// named in a trap's message), and its failure classified.
    fn finish<R>(
        &self,
        store: &mut Store<StoreState>,
        result: Result<R, Failed>,
        limits: &Limits,
        window: &Window,
    ) -> Result<R, Error> {
        let written = store.data_mut().log_written();
        result.map_err(|failed| match failed {
            Failed::Raw(error) => match error.downcast_ref::<wapc::TooLarge>() {
                Some(too_large) => Error::OutputTooLarge {
                    size: too_large.size,
                    limit: too_large.limit,
                },
                None => wasi::with_written(classify(store, error, limits, window, false), &written),
            },
            Failed::Output(error) => error,
        })
    }
}

/// The settings as Kubewarden hands them: none is an empty object.
fn settings_text(settings: &str) -> &str {
    match settings.trim() {
        "" | "null" => "{}",
        _ => settings,
    }
}

/// A ValidationResponse as a verdict, under the output's item cap.
fn verdict(bytes: &[u8], limits: &Limits) -> Result<Verdict, Error> {
    let response: Response = serde_json::from_slice(bytes).map_err(|e| {
        Error::InvalidOutput(format!("validate answered no ValidationResponse: {e}"))
    })?;
    let warnings = response.warnings.unwrap_or_default();
    let audit_annotations: Vec<(String, String)> = response
        .audit_annotations
        .unwrap_or_default()
        .into_iter()
        .collect();
    let items = warnings.len() + audit_annotations.len();
    if items > limits.output_items {
        return Err(Error::OutputTooManyItems {
            items,
            limit: limits.output_items,
        });
    }
    Ok(Verdict {
        allowed: response.accepted,
        message: response.message,
        code: response.code,
        warnings,
        audit_annotations,
        mutated_object: response
            .mutated_object
            .filter(|_| response.accepted)
            .map(|object| object.get().to_owned()),
    })
}

/// Checks every import against waPC and WASI preview 1.
fn check_imports(module: &Module) -> Result<(), Error> {
    for import in module.imports() {
        let known = matches!(import.ty(), ExternType::Func(_))
            && matches!(import.module(), "wapc" | "wasi_snapshot_preview1");
        if !known {
            return Err(Error::Kubewarden(format!(
                "the module imports {}.{}, which is neither waPC nor WASI preview 1",
                import.module(),
                import.name()
            )));
        }
    }
    Ok(())
}

/// The host's side of the module's imports: waPC and WASI preview 1.
fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<StoreState>> {
    let mut linker = Linker::new(engine);
    wapc::add_to_linker(&mut linker)?;
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |state: &mut StoreState| {
        state.wapc_mut().wasi.ctx()
    })?;
    Ok(linker)
}
