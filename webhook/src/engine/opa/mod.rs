//! OPA's Wasm ABI (1.2 and later): the core modules `opa build -t wasm`
//! writes, run on the same wasmtime engine, under the same deadline, memory
//! cap and output cap as every policy.
//!
//! A module imports its linear memory (`env.memory`), `opa_abort`,
//! `opa_println` and `opa_builtin0..4`, and exports the evaluator; the host
//! rewrites it at load to define that memory itself ([`rewrite`]), so that
//! its instances come from the pooling allocator as components' do. Every
//! call gets a fresh store and instance: the data is parsed into the heap
//! (`opa_malloc`, `opa_json_parse`), the input written at the heap pointer,
//! and one `opa_eval` (the ABI's fast path) returns the result set as JSON.
//! Builtins the module asks for are answered by [`builtins`]; a module that
//! needs one the host lacks is refused at load.
//!
//! The result set becomes the verdict: the members of each result (a set or
//! array of messages, `{"msg": …}` objects, or one message) deny, joined by
//! newlines; an undefined or empty result allows.

mod builtins;
mod bundle;
mod glob;
mod rewrite;
mod settings;
#[cfg(test)]
mod tests;
mod value;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use wasmtime::{
    Caller, Extern, ExternType, FuncType, Instance, InstancePre, Linker, Memory, Module, Store,
    TypedFunc, ValType,
};

use super::core_module::{self, memory_of};
use super::host::LogRate;
use super::limits::{Limits, StoreState};
use super::output::Verdict;
use super::pre::{Call, Failed, Window, classify};
use super::{Engine, Error};
use builtins::{Builtin, Patterns};
use settings::Bound;
use value::Value;

pub use bundle::is_bundle;

/// How long reading a module's builtins and entrypoints at load may take.
const INTROSPECTION: Duration = Duration::from_secs(2);

/// The exports the host calls.
const EXPORTS: &[&str] = &[
    "memory",
    "opa_eval",
    "opa_malloc",
    "opa_json_parse",
    "opa_json_dump",
    "opa_value_dump",
    "opa_heap_ptr_get",
    "builtins",
    "entrypoints",
];

/// `opa_abort` was called: the module gave up with this message.
#[derive(Debug, thiserror::Error)]
#[error("opa_abort: {0}")]
pub struct Aborted(pub String);

/// What the builtin imports need, shared by every call's host functions.
struct Builtins {
    /// The module's ids for the builtins it uses.
    by_id: HashMap<i32, Builtin>,
    patterns: Patterns,
}

/// A loaded OPA module: compiled, its imports, builtins and entrypoints
/// checked.
pub struct Program {
    /// Linked to the host's imports once.
    pre: InstancePre<StoreState>,
    /// Set once the module's `builtins()` has been read.
    builtins: Arc<OnceLock<Builtins>>,
    entrypoints: Ids,
    /// `data.json` of a bundle, under the settings' `data`.
    bundle_data: Option<serde_json::Value>,
    /// The settings last bound, since every call passes the same text.
    bound: Mutex<Option<(String, Arc<Bound>)>>,
}

/// `opa_eval(reserved, entrypoint, data, input, input_len, heap, format)`.
type Eval = TypedFunc<(i32, i32, i32, i32, i32, i32, i32), i32>;

/// A name-to-id map the module gives (`builtins()`, `entrypoints()`).
type Ids = BTreeMap<String, i32>;

/// The typed exports one evaluation calls.
struct Exports {
    malloc: TypedFunc<i32, i32>,
    json_parse: TypedFunc<(i32, i32), i32>,
    json_dump: TypedFunc<i32, i32>,
    heap_ptr_get: TypedFunc<(), i32>,
    eval: Eval,
}

impl Program {
    /// Compiles (or fetches from the cache) a module or an `opa build`
    /// bundle, checks that it speaks ABI 1.2 or later with builtins the host
    /// implements, and reads its entrypoints.
    ///
    /// # Errors
    ///
    /// A bundle or module that cannot be read, compiled or linked, with what
    /// is wrong.
    pub fn load(engine: &Engine, name: &str, bytes: &[u8]) -> Result<Program, Error> {
        if super::is_component(bytes) {
            return Err(Error::Opa(
                "this is a component of the tollgate:policy world: load it with `module: PATH`, not `opa:`".into(),
            ));
        }
        let (wasm, bundle_data) = if is_bundle(bytes) {
            let bundle = bundle::read(bytes).map_err(Error::Opa)?;
            (bundle.wasm, bundle.data)
        } else {
            (bytes.to_vec(), None)
        };
        let wasm = rewrite::own_memory(&wasm).map_err(Error::Opa)?;
        let module: Module = engine.inner.cache.compiled(&engine.inner.wasmtime, &wasm)?;
        check_imports(&module)?;
        let missing: Vec<&str> = EXPORTS
            .iter()
            .copied()
            .filter(|export| module.get_export(export).is_none())
            .collect();
        if !missing.is_empty() {
            let hint = if missing.contains(&"opa_eval") {
                " (OPA's Wasm ABI 1.2 or later is needed: rebuild the bundle with a current `opa build -t wasm`)"
            } else {
                ""
            };
            return Err(Error::Opa(format!(
                "not an OPA Wasm module: it exports no {}{hint}",
                missing.join(", ")
            )));
        }
        let builtins = Arc::new(OnceLock::new());
        let pre = linker(&engine.inner.wasmtime, &builtins)
            .and_then(|linker| linker.instantiate_pre(&module))
            .map_err(|e| Error::Opa(format!("{e:#}")))?;
        let mut program = Program {
            pre,
            builtins,
            entrypoints: BTreeMap::new(),
            bundle_data,
            bound: Mutex::new(None),
        };
        let (builtins, entrypoints) = program.introspect(engine, name)?;
        let unknown: Vec<&str> = builtins
            .keys()
            .filter(|name| Builtin::named(name).is_none())
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            return Err(Error::Opa(format!(
                "the module needs builtins the host does not implement: {} (implemented: {})",
                unknown.join(", "),
                builtins::NAMES.join(", ")
            )));
        }
        let by_id = builtins
            .iter()
            .filter_map(|(name, &id)| Builtin::named(name).map(|b| (id, b)))
            .collect();
        let _ = program.builtins.set(Builtins {
            by_id,
            patterns: Patterns::default(),
        });
        program.entrypoints = entrypoints;
        Ok(program)
    }

    /// The module's `builtins()` and `entrypoints()`, read in a fresh
    /// instance.
    fn introspect(&self, engine: &Engine, name: &str) -> Result<(Ids, Ids), Error> {
        let limits = Limits {
            timeout: INTROSPECTION,
            ..Limits::default()
        };
        let window = Window::new(&limits, None);
        let mut store =
            core_module::store(engine, name, &limits, &window, false, &Arc::default(), None);
        let _active = engine.inner.ticker.active();
        let read = futures::executor::block_on(async {
            let (instance, memory) = self.instantiate(&mut store).await?;
            let exports = Exports::of(&mut store, &instance)?;
            let mut object = async |export: &str| -> Result<Ids, Failed> {
                let function = instance
                    .get_typed_func::<(), i32>(&mut store, export)
                    .map_err(Failed::Raw)?;
                let addr = function
                    .call_async(&mut store, ())
                    .await
                    .map_err(Failed::Raw)?;
                let text = exports
                    .dump(&mut store, memory, addr, limits.output_bytes)
                    .await?;
                serde_json::from_str(&text).map_err(|e| {
                    Failed::Output(Error::InvalidOutput(format!("{export}(): {e}: {text}")))
                })
            };
            let builtins = object("builtins").await?;
            let entrypoints = object("entrypoints").await?;
            Ok((builtins, entrypoints))
        });
        read.map_err(|failed| stopped(failed, &store, &limits, &window))
    }

    /// The settings bound to this module: parsed once per settings text.
    fn bind(&self, settings: &str) -> Result<Arc<Bound>, String> {
        let mut last = self.bound.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((text, bound)) = &*last
            && text == settings
        {
            return Ok(bound.clone());
        }
        let bound = Arc::new(Bound::new(
            settings,
            &self.entrypoints,
            self.bundle_data.as_ref(),
        )?);
        *last = Some((settings.to_owned(), bound.clone()));
        Ok(bound)
    }

    /// Checks settings: they must name an entrypoint the module has, and
    /// the module must take their data. The outer error is the sandbox's.
    ///
    /// # Errors
    ///
    /// The module trapped or ran out of time or memory parsing the data.
    pub fn validate_settings(
        &self,
        engine: &Engine,
        name: &str,
        log_rate: &Arc<LogRate>,
        settings: &str,
        limits: &Limits,
    ) -> Result<Result<(), String>, Error> {
        let bound = match self.bind(settings) {
            Ok(bound) => bound,
            Err(message) => return Ok(Err(message)),
        };
        let window = Window::new(limits, None);
        let mut store = core_module::store(engine, name, limits, &window, false, log_rate, None);
        let _active = engine.inner.ticker.active();
        let parsed = futures::executor::block_on(self.prepare(&mut store, &bound));
        match parsed {
            Ok(_) => Ok(Ok(())),
            Err(Failed::Output(Error::Policy(message))) => Ok(Err(message)),
            Err(failed) => Err(stopped(failed, &store, limits, &window)),
        }
    }

    /// One evaluation in a fresh instance, yielding at every tick; its slot
    /// is lent to the store for the call. OPA modules call no host
    /// capabilities, so its host is dropped.
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
            host: _,
        } = call;
        let window = &window;
        let bound = self.bind(settings).map_err(Error::Policy)?;
        let mut store = core_module::store(engine, name, limits, window, true, log_rate, None);
        store.data_mut().slot = slot;
        let _active = engine.inner.ticker.active();
        let result = async {
            let (exports, memory, data) = self.prepare(&mut store, &bound).await?;
            let heap = exports
                .heap_ptr_get
                .call_async(&mut store, ())
                .await
                .map_err(Failed::Raw)?;
            let (before, after) = bound.input_around();
            let len = before.len() + request.len() + after.len();
            let input = heap as u32 as usize;
            reserve(&mut store, memory, input + len)?;
            let mut at = input;
            for part in [before, request, after] {
                memory
                    .write(&mut store, at, part.as_bytes())
                    .map_err(|e| Failed::Raw(e.into()))?;
                at += part.len();
            }
            let results = exports
                .eval
                .call_async(
                    &mut store,
                    (0, bound.entrypoint, data, heap, len as i32, at as i32, 0),
                )
                .await
                .map_err(Failed::Raw)?;
            read_c_string(&store, memory, results, limits.output_bytes).map_err(Failed::Output)
        }
        .await;
        store.data_mut().slot = None;
        let results = result.map_err(|failed| stopped(failed, &store, limits, window))?;
        bound.verdict(&results).map_err(Error::InvalidOutput)
    }

    /// How long a fresh instance with the data parsed takes: the part of
    /// every call that comes before `opa_eval`.
    ///
    /// # Errors
    ///
    /// As [`Program::run`].
    pub fn time_instantiation(
        &self,
        engine: &Engine,
        name: &str,
        settings: &str,
        limits: &Limits,
    ) -> Result<Duration, Error> {
        let bound = self.bind(settings).map_err(Error::Policy)?;
        let window = Window::new(limits, None);
        let started = Instant::now();
        let mut store =
            core_module::store(engine, name, limits, &window, false, &Arc::default(), None);
        let _active = engine.inner.ticker.active();
        futures::executor::block_on(self.prepare(&mut store, &bound))
            .map_err(|failed| stopped(failed, &store, limits, &window))?;
        Ok(started.elapsed())
    }

    /// A fresh instance with the bound data parsed into it: its exports,
    /// memory and the data's address.
    async fn prepare(
        &self,
        store: &mut Store<StoreState>,
        bound: &Bound,
    ) -> Result<(Exports, Memory, i32), Failed> {
        let (instance, memory) = self.instantiate(store).await?;
        let exports = Exports::of(store, &instance)?;
        let data = exports.parse(store, memory, &bound.data).await?;
        Ok((exports, memory, data))
    }

    /// A fresh instance, and its memory.
    async fn instantiate(
        &self,
        store: &mut Store<StoreState>,
    ) -> Result<(Instance, Memory), Failed> {
        let instance = self
            .pre
            .instantiate_async(&mut *store)
            .await
            .map_err(Failed::Raw)?;
        let memory = instance.get_memory(&mut *store, "memory").ok_or_else(|| {
            Failed::Raw(wasmtime::format_err!(
                "the rewritten module exports no memory"
            ))
        })?;
        Ok((instance, memory))
    }
}

/// Checks every import of the module against OPA's ABI.
fn check_imports(module: &Module) -> Result<(), Error> {
    for import in module.imports() {
        let known = import.module() == "env"
            && matches!(import.ty(), ExternType::Func(_))
            && match import.name() {
                "opa_abort" | "opa_println" => true,
                name => name
                    .strip_prefix("opa_builtin")
                    .and_then(|n| n.parse::<usize>().ok())
                    .is_some_and(|arity| arity <= 4),
            };
        if !known {
            return Err(Error::Opa(format!(
                "the module imports {}.{}, which is not part of OPA's Wasm ABI",
                import.module(),
                import.name()
            )));
        }
    }
    Ok(())
}

/// The host's side of the module's imports: `opa_abort`, `opa_println` and
/// `opa_builtin0..4`.
fn linker(
    engine: &wasmtime::Engine,
    builtins: &Arc<OnceLock<Builtins>>,
) -> wasmtime::Result<Linker<StoreState>> {
    let mut linker = Linker::new(engine);
    // `opa_abort(addr)`: the call ends with the module's message.
    linker.func_wrap(
        "env",
        "opa_abort",
        |mut caller: Caller<'_, StoreState>, addr: i32| -> wasmtime::Result<()> {
            Err(Aborted(message_at(&mut caller, addr)).into())
        },
    )?;
    // `opa_println(addr)`: a log line, within the policy's log limits.
    linker.func_wrap(
        "env",
        "opa_println",
        |mut caller: Caller<'_, StoreState>, addr: i32| -> wasmtime::Result<()> {
            let line = message_at(&mut caller, addr);
            caller.data_mut().log(tracing::Level::INFO, &line)?;
            Ok(())
        },
    )?;
    for arity in 0..=4 {
        let ty = FuncType::new(engine, vec![ValType::I32; arity + 2], [ValType::I32]);
        let builtins = builtins.clone();
        let name = format!("opa_builtin{arity}");
        linker.func_new_async("env", &name, ty, move |caller, params, results| {
            let builtins = builtins.clone();
            Box::new(async move {
                let builtins = builtins.get().ok_or_else(|| {
                    wasmtime::format_err!(
                        "the module called a builtin while its builtins() was read"
                    )
                })?;
                results[0] = wasmtime::Val::I32(call_builtin(caller, builtins, params).await?);
                Ok(())
            })
        })?;
    }
    Ok(linker)
}

/// The NUL-terminated message at `addr`, or what is wrong with it.
fn message_at(caller: &mut Caller<'_, StoreState>, addr: i32) -> String {
    memory_of(caller)
        .map_err(|e| e.to_string())
        .and_then(|memory| {
            read_c_string(caller, memory, addr, super::host::MAX_LOG_LINE)
                .map_err(|e| e.to_string())
        })
        .unwrap_or_else(|e| e)
}

/// What stopped a call: `opa_abort`, or as for every policy.
fn stopped(failed: Failed, store: &Store<StoreState>, limits: &Limits, window: &Window) -> Error {
    match failed {
        Failed::Raw(error) => match error.downcast_ref::<Aborted>() {
            Some(aborted) => Error::Trap(aborted.to_string()),
            None => classify(store, error, limits, window, false),
        },
        Failed::Output(error) => error,
    }
}

/// Grows `memory` to hold `end` bytes.
fn reserve(store: &mut Store<StoreState>, memory: Memory, end: usize) -> Result<(), Failed> {
    let size = memory.data_size(&*store);
    if end > size {
        let pages = (end - size).div_ceil(64 << 10) as u64;
        memory.grow(&mut *store, pages).map_err(Failed::Raw)?;
    }
    Ok(())
}

/// Reads a NUL-terminated string the module wrote, of at most `max` bytes.
fn read_c_string(
    store: &impl wasmtime::AsContext,
    memory: Memory,
    addr: i32,
    max: usize,
) -> Result<String, Error> {
    let data = memory.data(store);
    let start = addr as u32 as usize;
    let tail = data.get(start..).ok_or_else(|| {
        Error::InvalidOutput(format!("address {start} is outside the module's memory"))
    })?;
    let len = tail
        .iter()
        .take(max.saturating_add(1))
        .position(|&b| b == 0)
        .ok_or(Error::OutputTooLarge {
            size: tail.len().min(max.saturating_add(1)),
            limit: max,
        })?;
    String::from_utf8(tail[..len].to_vec()).map_err(|e| Error::InvalidOutput(e.to_string()))
}

impl Exports {
    fn of(store: &mut Store<StoreState>, instance: &Instance) -> Result<Exports, Failed> {
        Ok(Exports {
            malloc: instance
                .get_typed_func(&mut *store, "opa_malloc")
                .map_err(Failed::Raw)?,
            json_parse: instance
                .get_typed_func(&mut *store, "opa_json_parse")
                .map_err(Failed::Raw)?,
            json_dump: instance
                .get_typed_func(&mut *store, "opa_json_dump")
                .map_err(Failed::Raw)?,
            heap_ptr_get: instance
                .get_typed_func(&mut *store, "opa_heap_ptr_get")
                .map_err(Failed::Raw)?,
            eval: instance
                .get_typed_func(&mut *store, "opa_eval")
                .map_err(Failed::Raw)?,
        })
    }

    /// Copies JSON text into the module and parses it there; the value's
    /// address.
    async fn parse(
        &self,
        store: &mut Store<StoreState>,
        memory: Memory,
        json: &str,
    ) -> Result<i32, Failed> {
        let value = parse_json(&mut *store, &self.malloc, &self.json_parse, memory, json)
            .await
            .map_err(Failed::Raw)?;
        if value == 0 {
            return Err(Failed::Output(Error::Policy(
                "the module could not parse the settings' data".into(),
            )));
        }
        Ok(value)
    }

    /// A value the module holds, as JSON text.
    async fn dump(
        &self,
        store: &mut Store<StoreState>,
        memory: Memory,
        value: i32,
        max: usize,
    ) -> Result<String, Failed> {
        let text = self
            .json_dump
            .call_async(&mut *store, value)
            .await
            .map_err(Failed::Raw)?;
        read_c_string(store, memory, text, max).map_err(Failed::Output)
    }
}

/// `opa_builtinN(id, ctx, args…)`: the builtin the module's id names, its
/// arguments read with `opa_value_dump` (which keeps sets) and its result
/// parsed back into the module. A builtin's error makes the call undefined
/// (address 0), as in OPA, and is logged.
async fn call_builtin(
    mut caller: Caller<'_, StoreState>,
    builtins: &Builtins,
    params: &[wasmtime::Val],
) -> wasmtime::Result<i32> {
    caller.data_mut().meter.enter()?;
    let id = params[0].unwrap_i32();
    let builtin = *builtins.by_id.get(&id).ok_or_else(|| {
        wasmtime::format_err!("the module called builtin {id}, which its builtins() does not name")
    })?;
    let memory = memory_of(&mut caller)?;
    let dump = caller
        .get_export("opa_value_dump")
        .and_then(Extern::into_func)
        .ok_or_else(|| wasmtime::format_err!("the module exports no opa_value_dump"))?
        .typed::<i32, i32>(&caller)?;
    let max = caller.data().meter.room();
    let mut args = Vec::with_capacity(params.len() - 2);
    for param in &params[2..] {
        let text = dump.call_async(&mut caller, param.unwrap_i32()).await?;
        let text = read_c_string(&caller, memory, text, max)?;
        args.push(Value::parse(&text).map_err(|e| wasmtime::format_err!("{e}"))?);
    }
    let mut notes = Vec::new();
    let result = builtin.call(&args, &builtins.patterns, &mut |note| {
        notes.push(note.to_owned())
    });
    for note in notes {
        caller.data_mut().log(tracing::Level::INFO, &note)?;
    }
    match result {
        Ok(value) => write_json(&mut caller, memory, &value.to_json().to_string()).await,
        Err(message) => {
            let line = format!("{}: {message}", builtin.name());
            caller.data_mut().log(tracing::Level::WARN, &line)?;
            Ok(0)
        }
    }
}

/// Parses JSON text into the module from inside a host call.
async fn write_json(
    caller: &mut Caller<'_, StoreState>,
    memory: Memory,
    json: &str,
) -> wasmtime::Result<i32> {
    let func = |caller: &mut Caller<'_, StoreState>, name: &str| {
        caller
            .get_export(name)
            .and_then(Extern::into_func)
            .ok_or_else(|| wasmtime::format_err!("the module exports no {name}"))
    };
    let malloc = func(caller, "opa_malloc")?.typed(&*caller)?;
    let json_parse = func(caller, "opa_json_parse")?.typed(&*caller)?;
    parse_json(&mut *caller, &malloc, &json_parse, memory, json).await
}

/// Copies JSON text into the module's heap (`opa_malloc`) and parses it
/// there (`opa_json_parse`); the value's address, 0 when it would not parse.
async fn parse_json(
    mut store: impl wasmtime::AsContextMut<Data = StoreState>,
    malloc: &TypedFunc<i32, i32>,
    json_parse: &TypedFunc<(i32, i32), i32>,
    memory: Memory,
    json: &str,
) -> wasmtime::Result<i32> {
    let len = i32::try_from(json.len())?;
    let addr = malloc.call_async(&mut store, len).await?;
    memory.write(&mut store, addr as u32 as usize, json.as_bytes())?;
    json_parse.call_async(&mut store, (addr, len)).await
}
