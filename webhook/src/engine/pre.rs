//! A policy prepared for fast instantiation, and one call of it.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures::executor::block_on;
use wasmtime::component::{ComponentExportIndex, InstancePre};
use wasmtime::{Store, Trap};

use super::host::{Abort, Host, LogRate};
use super::limits::{Limits, StoreState};
use super::output::{self, IndexEntry, RawEvaluation, RawIndex, RawSettings, Verdict};
use super::slot::Slot;
use super::spare::{Instance, NotMade, Prepare, Recipe, Spares};
use super::{Engine, Error, kubewarden, opa};

/// The exports the host calls, looked up once per component.
struct Exports {
    validate_settings: ComponentExportIndex,
    evaluate: ComponentExportIndex,
    /// `None` for components of the plain `policy` world.
    index: Option<ComponentExportIndex>,
    /// `None` for components of the worlds before `prepared-policy`.
    prepare: Option<ComponentExportIndex>,
}

/// A compiled, linked policy: type-checked once, instantiated per call.
///
/// Invariant: every call gets a fresh store and instance; nothing a call
/// writes is visible to the next one.
#[derive(Clone)]
pub struct PolicyPre {
    name: Arc<str>,
    kind: Kind,
    /// The policy's log rate, shared by every call.
    log_rate: Arc<LogRate>,
    engine: Engine,
}

/// What kind of module a policy is.
#[derive(Clone)]
enum Kind {
    /// A component of the `tollgate:policy` world.
    Component(Arc<Component>),
    /// A core module of OPA's Wasm ABI.
    Opa(Arc<opa::Program>),
    /// A Kubewarden policy module (waPC).
    Kubewarden(Arc<kubewarden::Program>),
}

/// A component, linked, with its exports and spare instances.
struct Component {
    pre: InstancePre<StoreState>,
    exports: Exports,
    /// Fresh instances made ahead of time; shared by clones of the handle.
    spares: Arc<Spares>,
    /// The settings instances are prepared with: the policy's, set when it
    /// is warmed.
    settings: OnceLock<Arc<str>>,
}

/// Where an evaluation runs.
enum Runs {
    /// On the caller's thread, in a slot when the engine bounds them.
    Here(Option<Slot>),
    /// On a thread of the aside lane.
    Aside,
}

/// One evaluation, as the program of a core module (OPA, Kubewarden) runs
/// it: the policy's engine, name and log rate, the call's inputs, its
/// window, the slot lent to its store, and what its host calls reach.
pub(super) struct Call<'a> {
    pub(super) engine: &'a Engine,
    pub(super) name: &'a str,
    pub(super) log_rate: &'a Arc<LogRate>,
    pub(super) request: &'a str,
    pub(super) settings: &'a str,
    pub(super) limits: &'a Limits,
    pub(super) window: Window,
    pub(super) slot: Option<Slot>,
    pub(super) host: Option<Box<dyn Host>>,
}

/// When one call must end: its own timeout from now, or the request's
/// deadline when that comes first.
#[derive(Debug, Clone, Copy)]
pub(super) struct Window {
    /// When the call must end.
    pub(super) end: Instant,
    /// The policy's own timeout.
    timeout: Duration,
    /// Whether the request's deadline cut the window short.
    cut: bool,
}

impl Window {
    pub(super) fn new(limits: &Limits, deadline: Option<Instant>) -> Self {
        let own = Instant::now() + limits.timeout;
        match deadline {
            Some(deadline) if deadline < own => Window {
                end: deadline,
                timeout: limits.timeout,
                cut: true,
            },
            _ => Window {
                end: own,
                timeout: limits.timeout,
                cut: false,
            },
        }
    }

    fn left(&self) -> Duration {
        self.end.saturating_duration_since(Instant::now())
    }

    /// What running out of this window is called.
    fn out_of_time(&self, starting: bool) -> Error {
        let ms = self.timeout.as_millis() as u64;
        match (self.cut, starting) {
            (true, _) => Error::RequestDeadline(ms),
            (false, true) => Error::StartTimeout(ms),
            (false, false) => Error::Timeout(ms),
        }
    }
}

fn export(pre: &InstancePre<StoreState>, name: &str) -> Option<ComponentExportIndex> {
    pre.component().get_export_index(None, name)
}

impl PolicyPre {
    pub(super) fn new(
        name: &str,
        pre: InstancePre<StoreState>,
        engine: Engine,
    ) -> Result<Self, Error> {
        let missing = |export: &str| {
            Error::Link(wasmtime::format_err!("the component exports no `{export}`"))
        };
        let exports = Exports {
            validate_settings: export(&pre, "validate-settings")
                .ok_or_else(|| missing("validate-settings"))?,
            evaluate: export(&pre, "evaluate").ok_or_else(|| missing("evaluate"))?,
            index: export(&pre, "index"),
            prepare: export(&pre, "prepare"),
        };
        Ok(PolicyPre {
            name: name.into(),
            kind: Kind::Component(Arc::new(Component {
                pre,
                exports,
                spares: Arc::default(),
                settings: OnceLock::new(),
            })),
            log_rate: Arc::default(),
            engine,
        })
    }

    pub(super) fn opa(name: &str, program: opa::Program, engine: Engine) -> Self {
        PolicyPre {
            name: name.into(),
            kind: Kind::Opa(Arc::new(program)),
            log_rate: Arc::default(),
            engine,
        }
    }

    pub(super) fn kubewarden(name: &str, program: kubewarden::Program, engine: Engine) -> Self {
        PolicyPre {
            name: name.into(),
            kind: Kind::Kubewarden(Arc::new(program)),
            log_rate: Arc::default(),
            engine,
        }
    }

    /// The component, for the calls only components have.
    fn component(&self) -> Option<&Arc<Component>> {
        match &self.kind {
            Kind::Component(component) => Some(component),
            Kind::Opa(_) | Kind::Kubewarden(_) => None,
        }
    }

    /// What a Kubewarden module's `kubewarden_metadata` section says.
    pub fn kubewarden_metadata(&self) -> Option<&kubewarden::Metadata> {
        match &self.kind {
            Kind::Kubewarden(program) => program.metadata(),
            _ => None,
        }
    }

    /// Runs the policy's `validate-settings` on settings JSON text (then
    /// its `prepare`, if it has one, on settings it accepted), and checks
    /// that its other exports have the world's types. The outer
    /// error is the sandbox's (trap, timeout, bad exports); the inner one is
    /// the policy's verdict on the settings.
    ///
    /// # Errors
    ///
    /// When the policy could not run to completion within `limits`.
    pub fn validate_settings(
        &self,
        settings: &str,
        limits: &Limits,
    ) -> Result<Result<(), String>, Error> {
        let component = match &self.kind {
            Kind::Opa(program) => {
                return program.validate_settings(
                    &self.engine,
                    &self.name,
                    &self.log_rate,
                    settings,
                    limits,
                );
            }
            Kind::Kubewarden(program) => {
                return program.validate_settings(
                    &self.engine,
                    &self.name,
                    &self.log_rate,
                    settings,
                    limits,
                );
            }
            Kind::Component(component) => component,
        };
        self.call(component, limits, |store, instance, exports| {
            let validate = instance
                .get_typed_func::<(&str,), (RawSettings,)>(&mut *store, &exports.validate_settings)
                .map_err(Error::Link)?;
            instance
                .get_typed_func::<(&str, &str), (RawEvaluation,)>(&mut *store, &exports.evaluate)
                .map_err(Error::Link)?;
            if let Some(index) = &exports.index {
                instance
                    .get_typed_func::<(&str, &str), (RawIndex,)>(&mut *store, index)
                    .map_err(Error::Link)?;
            }
            let prepare = exports
                .prepare
                .map(|prepare| {
                    instance.get_typed_func::<(&str,), (RawSettings,)>(&mut *store, prepare)
                })
                .transpose()
                .map_err(Error::Link)?;
            let (raw,) = block_on(validate.call_async(&mut *store, (settings,))).map_err(Raw)?;
            let accepted = output::settings(raw, limits)?;
            let Some(prepare) = prepare.filter(|_| accepted.is_ok()) else {
                return Ok(accepted);
            };
            // Settings its `prepare` cannot read would fail every call.
            let (raw,) = block_on(prepare.call_async(&mut *store, (settings,))).map_err(Raw)?;
            Ok(output::settings(raw, limits)?
                .map_err(|message| format!("its `prepare` failed: {message}")))
        })
    }

    /// Evaluates one AdmissionRequest (JSON text) with settings (JSON text)
    /// in a fresh instance. The call ends at its own timeout or at
    /// `deadline`, whichever comes first; `host` is what its context and
    /// quota imports reach.
    ///
    /// It runs on the caller's thread (the server's async workers) as a
    /// future that yields to the executor at every epoch tick, so a long
    /// evaluation holds no worker for more than a tick at a time, and the
    /// fast ones (nearly all) cost no hand-over to another thread. When the
    /// engine bounds evaluations (`Config::evaluations`, one per core in the
    /// server), the call first waits for a slot, within `deadline`: so that
    /// each call has a core's worth of time, and its deadline measures the
    /// policy rather than a queue of others' slices.
    ///
    /// # Errors
    ///
    /// A trap, timeout, memory or output cap, or the policy's own error.
    pub async fn evaluate(
        &self,
        request: &str,
        settings: &str,
        limits: &Limits,
        deadline: Option<Instant>,
        host: Option<Box<dyn Host>>,
    ) -> Result<Verdict, Error> {
        let slot = match &self.engine.inner.slots {
            Some(slots) => Some(Slot::take(slots, deadline).await.ok_or(Error::Queued)?),
            None => None,
        };
        self.run(request, settings, limits, deadline, host, Runs::Here(slot))
            .await
    }

    /// [`PolicyPre::evaluate`] on a thread of the aside lane, at the lowest
    /// CPU priority, for a policy on probation (see the `aside` module). The
    /// call's inputs are owned, since they cross to another thread, and its
    /// instance is torn down there too.
    ///
    /// # Errors
    ///
    /// As [`PolicyPre::evaluate`].
    pub async fn evaluate_aside(
        &self,
        request: String,
        settings: String,
        limits: Limits,
        deadline: Option<Instant>,
        host: Option<Box<dyn Host>>,
    ) -> Result<Verdict, Error> {
        let lane = self.engine.inner.aside.get_or_init(|| {
            let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
            super::aside::Lane::start(threads)
        });
        let pre = self.clone();
        // The host's I/O (a shared quota ledger) uses the server's timers.
        let runtime = tokio::runtime::Handle::try_current().ok();
        lane.run(move || {
            let _runtime = runtime.as_ref().map(tokio::runtime::Handle::enter);
            futures::executor::block_on(pre.run(
                &request,
                &settings,
                &limits,
                deadline,
                host,
                Runs::Aside,
            ))
        })
        .await
        .unwrap_or(Err(Error::Queued))
    }

    /// One evaluation, yielding at every tick, where `runs` says.
    async fn run(
        &self,
        request: &str,
        settings: &str,
        limits: &Limits,
        deadline: Option<Instant>,
        host: Option<Box<dyn Host>>,
        runs: Runs,
    ) -> Result<Verdict, Error> {
        let (slot, aside) = match runs {
            Runs::Here(slot) => (slot, false),
            Runs::Aside => (None, true),
        };
        let window = Window::new(limits, deadline);
        if window.left().is_zero() {
            return Err(window.out_of_time(false));
        }
        let call = |slot, host| Call {
            engine: &self.engine,
            name: &self.name,
            log_rate: &self.log_rate,
            request,
            settings,
            limits,
            window,
            slot,
            host,
        };
        let component = match &self.kind {
            Kind::Opa(program) => return program.run(call(slot, host)).await,
            Kind::Kubewarden(program) => return program.run(call(slot, host)).await,
            Kind::Component(component) => component,
        };
        let recipe = self.recipe(component, limits);
        let Instance {
            mut store,
            instance,
        } = match component.spares.take(limits.memory_bytes) {
            Some(instance) => instance,
            None => match recipe.instantiate_async(window.left()).await {
                Ok(instance) => component.repaired(instance),
                Err(failed) => {
                    return Err(self.not_started(component, &recipe, *failed, limits, &window));
                }
            },
        };
        let result = {
            let _active = self.engine.inner.ticker.active();
            store.data_mut().start_call(window.end, host, true);
            store.data_mut().slot = slot;
            store.set_epoch_deadline(1);
            let evaluated = async {
                let evaluate = instance
                    .get_typed_func::<(&str, &str), (RawEvaluation,)>(
                        &mut store,
                        &component.exports.evaluate,
                    )
                    .map_err(Error::Link)?;
                let (raw,) = evaluate
                    .call_async(&mut store, (request, settings))
                    .await
                    .map_err(Raw)?;
                Ok(output::verdict(
                    raw,
                    store.data().refused.as_deref(),
                    limits,
                )?)
            };
            let result = evaluated.await;
            // The slot is the caller's, not the instance's.
            store.data_mut().slot = None;
            result
        };
        self.finish(component, store, &recipe, result, limits, &window, aside)
    }

    /// One blocking call in a fresh instance (at load, and for indexing):
    /// a spare, or one made inline within the call's window. `f` calls an
    /// export and reads its output; the world has an async import, so `f`
    /// makes the async kind of call and drives it on this thread (the store
    /// never yields: one poll).
    fn call<R>(
        &self,
        component: &Component,
        limits: &Limits,
        f: impl FnOnce(
            &mut Store<StoreState>,
            &wasmtime::component::Instance,
            &Exports,
        ) -> Result<R, Failed>,
    ) -> Result<R, Error> {
        let window = Window::new(limits, None);
        let recipe = self.recipe(component, limits);
        let Instance {
            mut store,
            instance,
        } = match component.spares.take(limits.memory_bytes) {
            Some(instance) => instance,
            None => match recipe.instantiate(window.left()) {
                Ok(instance) => component.repaired(instance),
                Err(failed) => {
                    return Err(self.not_started(component, &recipe, *failed, limits, &window));
                }
            },
        };
        let result = {
            let _active = self.engine.inner.ticker.active();
            store.data_mut().start_call(window.end, None, false);
            store.set_epoch_deadline(1);
            f(&mut store, &instance, &component.exports)
        };
        self.finish(component, store, &recipe, result, limits, &window, false)
    }

    /// What a failed instantiation (or `prepare`) is called; its store is
    /// torn down.
    fn not_started(
        &self,
        component: &Component,
        recipe: &Recipe,
        NotMade {
            store,
            error,
            preparing,
        }: NotMade,
        limits: &Limits,
        window: &Window,
    ) -> Error {
        let error = match (is_stopped(&store, &error), preparing) {
            (true, false) => classify(&store, error, limits, window, true),
            (true, true) => match classify(&store, error, limits, window, true) {
                Error::StartTimeout(ms) => Error::PrepareTimeout(ms),
                other => other,
            },
            (false, false) => Error::Instantiate(error),
            (false, true) => Error::Policy(format!("its `prepare` failed: {error:#}")),
        };
        self.engine
            .inner
            .maker
            .recycle(&component.spares, recipe, Some(store));
        error
    }

    /// After a call: what it wrote through WASI logged, its errors
    /// classified, dropped log lines reported, the store torn down (here
    /// when `here`, else by the spares thread).
    #[allow(
        clippy::too_many_arguments,
        reason = "one call's parts, handed back together"
    )]
    fn finish<R>(
        &self,
        component: &Component,
        mut store: Store<StoreState>,
        recipe: &Recipe,
        result: Result<R, Failed>,
        limits: &Limits,
        window: &Window,
        here: bool,
    ) -> Result<R, Error> {
        // A component with WASI may have written to stdout or stderr.
        let written = store.data_mut().log_written();
        let result = result.map_err(|failed| match failed {
            Failed::Raw(error) => {
                super::wasi::with_written(classify(&store, error, limits, window, false), &written)
            }
            Failed::Output(error) => error,
        });
        let dropped = store.data().meter.dropped_lines;
        if dropped > 0 {
            tracing::warn!(
                policy = &*self.name,
                dropped,
                "log lines dropped: a call may write {} and a policy {} per second",
                super::host::LOG_LINES_PER_CALL,
                super::host::LOG_LINES_PER_SECOND
            );
        }
        // The host capabilities belong to the request: drop them now, not
        // when the spares thread gets to the store.
        store.data_mut().host = None;
        let used = if here {
            drop(store);
            None
        } else {
            Some(store)
        };
        self.engine
            .inner
            .maker
            .recycle(&component.spares, recipe, used);
        result
    }

    /// Whether fresh instances are made ahead of calls, off the request
    /// path (components); OPA and Kubewarden modules are instantiated
    /// within each call.
    pub fn makes_spares(&self) -> bool {
        self.component().is_some()
    }

    /// Whether the component exports `index` (the `indexed-policy` world).
    pub fn indexes(&self) -> bool {
        self.component()
            .is_some_and(|component| component.exports.index.is_some())
    }

    /// Runs the policy's `index` export on one cluster object in a fresh
    /// instance. `Ok(None)` when the component has no `index`.
    ///
    /// # Errors
    ///
    /// A trap, timeout, memory or output cap, or the policy's own error.
    pub fn index(
        &self,
        object: &str,
        settings: &str,
        limits: &Limits,
    ) -> Result<Option<Vec<IndexEntry>>, Error> {
        let Some((component, export)) = self
            .component()
            .and_then(|c| c.exports.index.as_ref().map(|export| (c, export)))
        else {
            return Ok(None);
        };
        self.call(component, limits, |store, instance, _| {
            let index = instance
                .get_typed_func::<(&str, &str), (RawIndex,)>(&mut *store, export)
                .map_err(Error::Link)?;
            let (raw,) =
                block_on(index.call_async(&mut *store, (object, settings))).map_err(Raw)?;
            Ok(output::index(raw, store.data().refused.as_deref(), limits)?)
        })
        .map(Some)
    }

    fn recipe(&self, component: &Component, limits: &Limits) -> Recipe {
        Recipe {
            name: self.name.clone(),
            pre: component.pre.clone(),
            memory_bytes: limits.memory_bytes,
            timeout: limits.timeout,
            log_rate: self.log_rate.clone(),
            ticker: self.engine.inner.ticker.clone(),
            prepare: component.exports.prepare.zip(component.settings.get()).map(
                |(export, settings)| Prepare {
                    export,
                    settings: settings.clone(),
                },
            ),
            spares: component.exports.prepare.is_none() || component.settings.get().is_some(),
        }
    }

    /// How long making one fresh instance takes: the part of every
    /// evaluation that the spares thread does ahead, off the request path
    /// (for `tollgate bench`).
    ///
    /// # Errors
    ///
    /// The instance could not be made.
    pub fn time_instantiation(&self, settings: &str, limits: &Limits) -> Result<Duration, Error> {
        let component = match &self.kind {
            Kind::Opa(program) => {
                return program.time_instantiation(&self.engine, &self.name, settings, limits);
            }
            Kind::Kubewarden(program) => {
                return program.time_instantiation(&self.engine, &self.name, limits);
            }
            Kind::Component(component) => component,
        };
        let window = Window::new(limits, None);
        let recipe = self.recipe(component, limits);
        let started = Instant::now();
        match recipe.instantiate(window.left()) {
            Ok(_instance) => Ok(started.elapsed()),
            Err(failed) => Err(self.not_started(component, &recipe, *failed, limits, &window)),
        }
    }

    /// Makes the first spares, so that the first requests do not
    /// instantiate inline; from now on instances are prepared with
    /// `settings` (the policy's, as its calls get them).
    pub fn warm(&self, settings: &str, limits: &Limits) {
        if let Some(component) = self.component() {
            // Set once: a policy's settings change only with a new load.
            component.settings.get_or_init(|| settings.into());
            let recipe = self.recipe(component, limits);
            self.engine
                .inner
                .maker
                .recycle(&component.spares, &recipe, None);
        }
    }
}

impl Component {
    /// Notes that the policy could be instantiated inline.
    fn repaired(&self, instance: Instance) -> Instance {
        self.spares.repaired();
        instance
    }
}

/// How a call's closure failed: wasmtime stopped it (classified by the
/// caller, which holds the store), or its output was refused.
pub(super) enum Failed {
    Raw(wasmtime::Error),
    Output(Error),
}

use Failed::Raw;

impl From<Error> for Failed {
    fn from(error: Error) -> Self {
        Failed::Output(error)
    }
}

/// Whether an instantiation error is the policy's start function being
/// stopped (rather than a linking or pool problem).
fn is_stopped(store: &Store<StoreState>, error: &wasmtime::Error) -> bool {
    store.data().memory_exceeded
        || error.downcast_ref::<Trap>().is_some()
        || error.downcast_ref::<Abort>().is_some()
}

/// Names what stopped a call: the memory cap, the deadline, the host-call
/// meter, or a trap.
/// How soon after a wait on host I/O a deadline is still the host's doing:
/// the policy had no real time left to finish in.
const HOST_GRACE: Duration = Duration::from_millis(10);

pub(super) fn classify(
    store: &Store<StoreState>,
    error: wasmtime::Error,
    limits: &Limits,
    window: &Window,
    starting: bool,
) -> Error {
    if store.data().memory_exceeded {
        return Error::MemoryLimit(limits.memory_bytes >> 20);
    }
    // A deadline that came while, or just after, the host waited on I/O
    // for the policy is the host's, not the policy's.
    let host_waited = store
        .data()
        .waited
        .is_some_and(|at| window.end.saturating_duration_since(at) < HOST_GRACE);
    let out_of_time = || {
        if host_waited && !window.cut {
            Error::HostTimeout(window.timeout.as_millis() as u64)
        } else {
            window.out_of_time(starting)
        }
    };
    if let Some(abort) = error.downcast_ref::<Abort>() {
        return match abort {
            Abort::DeadlinePassed | Abort::HostWaited => out_of_time(),
            other => Error::HostCalls(other.clone()),
        };
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => out_of_time(),
        Some(trap) => Error::Trap(trap.to_string()),
        // Not a trap: the result could not be lifted (pointers out of
        // bounds, more data than wasmtime's hostcall fuel allows).
        None => Error::InvalidOutput(format!("{error:#}")),
    }
}
