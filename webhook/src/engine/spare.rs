//! Spare instances: fresh instances of each policy, made ahead of time by a
//! background thread, which also tears down used ones. A call takes a spare
//! (or instantiates inline when none is ready), uses it once, and hands it
//! back for teardown, so instantiation and teardown stay off the request's
//! latency. Each instance still serves exactly one call: no state crosses
//! from one request to the next.
//!
//! Making an instance runs the component's start function and, when it
//! exports one, its `prepare` with the policy's own settings (world
//! `prepared-policy`): what a policy reads of its settings is read here, off
//! the request path, and only settings cross into the call. Both are policy
//! code: they run under the policy's deadline like a call, here and inline.
//! A policy whose spares cannot be made (its start function or `prepare`
//! traps, loops or fails) gets none until a call instantiates it
//! successfully, so the thread does not spend a deadline on it after every
//! call.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use wasmtime::component::{ComponentExportIndex, InstancePre};
use wasmtime::{Store, UpdateDeadline};

use super::host::{LogRate, sanitize};
use super::limits::StoreState;
use super::output::RawSettings;
use super::ticker::Ticker;

/// Spares kept per policy: enough for the two worker threads of a 2-core
/// server; a deeper queue only holds pool slots.
const DEPTH: usize = 2;

/// Jobs the thread may have queued before callers tear down inline: every
/// queued used store holds a pool slot, so a thread that falls behind under
/// load must not let them pile up.
const MAX_PENDING: usize = 8;

/// A fresh instance and its store.
pub struct Instance {
    /// The store, with its state and limits.
    pub store: Store<StoreState>,
    /// The instance.
    pub instance: wasmtime::component::Instance,
}

/// How to make one policy's instances.
#[derive(Clone)]
pub struct Recipe {
    /// The policy's name, for its log lines.
    pub name: Arc<str>,
    /// The pre-instantiated component.
    pub pre: InstancePre<StoreState>,
    /// Memory cap its instances are made with.
    pub memory_bytes: usize,
    /// How long a spare's start function may run.
    pub timeout: Duration,
    /// The policy's log rate, shared by its stores.
    pub log_rate: Arc<LogRate>,
    /// Advances the epoch while start functions run.
    pub ticker: Arc<Ticker>,
    /// The component's `prepare`, run on each instance once it is made.
    pub prepare: Option<Prepare>,
    /// Whether the thread may make spares of it: not for a component with
    /// `prepare` until its settings are known, or they would go unprepared.
    pub spares: bool,
}

/// A component's `prepare` export and the settings it gets: the policy's
/// own, so that its calls find them read.
#[derive(Clone)]
pub struct Prepare {
    /// The export.
    pub export: ComponentExportIndex,
    /// The policy's settings, as its calls get them.
    pub settings: Arc<str>,
}

impl Prepare {
    /// Runs `prepare` on a fresh instance.
    async fn run(
        &self,
        store: &mut Store<StoreState>,
        instance: &wasmtime::component::Instance,
    ) -> wasmtime::Result<()> {
        let prepare =
            instance.get_typed_func::<(&str,), (RawSettings,)>(&mut *store, &self.export)?;
        let (prepared,) = prepare.call_async(&mut *store, (&*self.settings,)).await?;
        prepared.map_err(|message| wasmtime::format_err!("{}", sanitize(&message)))
    }
}

/// What the epoch ticking into a store's code means: past the call's
/// deadline it stops the call; before it, a call running as a future yields
/// to the executor (other tasks run; the call resumes when polled again) and
/// a blocking call goes on.
fn on_tick(state: &StoreState) -> UpdateDeadline {
    if Instant::now() >= state.meter.deadline() {
        UpdateDeadline::Interrupt
    } else if state.yielding {
        UpdateDeadline::Yield(1)
    } else {
        UpdateDeadline::Continue(1)
    }
}

/// A store for `policy` capped at `memory_bytes`, whose epoch ticks stop a
/// call at its deadline and yield before it (see `on_tick`).
pub fn new_store(
    engine: &wasmtime::Engine,
    policy: Arc<str>,
    memory_bytes: usize,
    log_rate: Arc<LogRate>,
) -> Store<StoreState> {
    let mut store = Store::new(engine, StoreState::new(policy, memory_bytes, log_rate));
    store.limiter(|state| state);
    store.epoch_deadline_callback(|context| Ok(on_tick(context.data())));
    store
}

/// An instance that could not be made: its store (to classify the error),
/// the error, and whether it came from `prepare` rather than from
/// instantiation.
pub struct NotMade {
    /// The store it was being made in.
    pub store: Store<StoreState>,
    /// What failed.
    pub error: wasmtime::Error,
    /// Whether `prepare` failed (instantiation succeeded).
    pub preparing: bool,
}

impl Recipe {
    /// A store with this recipe's memory cap, ready to instantiate in.
    pub fn store(&self) -> Store<StoreState> {
        new_store(
            self.pre.engine(),
            self.name.clone(),
            self.memory_bytes,
            self.log_rate.clone(),
        )
    }

    /// A store for one call of `budget`: every tick is checked against it.
    fn store_for(&self, budget: Duration, yielding: bool) -> Store<StoreState> {
        let mut store = self.store();
        store
            .data_mut()
            .start_call(Instant::now() + budget, None, yielding);
        store.set_epoch_deadline(1);
        store
    }

    /// Makes one fresh instance on this thread; its start function and
    /// `prepare` (if any) may run for `budget`.
    ///
    /// # Errors
    ///
    /// Whatever instantiation or `prepare` reports.
    pub fn instantiate(&self, budget: Duration) -> Result<Instance, Box<NotMade>> {
        let store = self.store_for(budget, false);
        let _active = self.ticker.active();
        // The world has an async import, so instantiation is always the
        // async kind; this store never yields, so the future completes in
        // one poll on this thread.
        futures::executor::block_on(self.make(store))
    }

    /// Makes one fresh instance as a future that yields at every tick; its
    /// start function and `prepare` (if any) may run for `budget`.
    ///
    /// # Errors
    ///
    /// Whatever instantiation or `prepare` reports.
    pub async fn instantiate_async(&self, budget: Duration) -> Result<Instance, Box<NotMade>> {
        let store = self.store_for(budget, true);
        let _active = self.ticker.active();
        self.make(store).await
    }

    /// Instantiates in `store`, then prepares the instance.
    async fn make(&self, mut store: Store<StoreState>) -> Result<Instance, Box<NotMade>> {
        let instance = match self.pre.instantiate_async(&mut store).await {
            Ok(instance) => instance,
            Err(error) => {
                return Err(Box::new(NotMade {
                    store,
                    error,
                    preparing: false,
                }));
            }
        };
        if let Some(prepare) = &self.prepare
            && let Err(error) = prepare.run(&mut store, &instance).await
        {
            return Err(Box::new(NotMade {
                store,
                error,
                preparing: true,
            }));
        }
        Ok(Instance { store, instance })
    }
}

/// One policy's spares. A `std::sync::Mutex`, not a Tokio one: it is held
/// only to push or pop, never across a call or an await.
#[derive(Default)]
pub struct Spares {
    ready: Mutex<Vec<(usize, Instance)>>,
    /// Set when the thread failed to make a spare; cleared when a call
    /// instantiates the policy inline.
    broken: AtomicBool,
}

impl Spares {
    /// A spare made with this memory cap, if one is ready.
    pub fn take(&self, memory_bytes: usize) -> Option<Instance> {
        let mut ready = self.ready.lock().expect("spares lock poisoned");
        while let Some((cap, instance)) = ready.pop() {
            if cap == memory_bytes {
                return Some(instance);
            }
        }
        None
    }

    /// Notes that a call instantiated the policy inline: spares may be
    /// made again.
    pub fn repaired(&self) {
        self.broken.store(false, Ordering::Relaxed);
    }
}

struct Job {
    spares: Arc<Spares>,
    recipe: Recipe,
    used: Option<Store<StoreState>>,
}

/// The background thread's handle. Dropping it closes the channel and the
/// thread ends after its current job.
pub struct Maker {
    /// Jobs for the thread. Senders never block a request; [`MAX_PENDING`]
    /// bounds the queue instead.
    jobs: mpsc::Sender<Job>,
    /// Jobs sent and not yet done.
    pending: Arc<AtomicUsize>,
}

impl Maker {
    /// Starts the thread.
    pub fn start() -> Self {
        let (jobs, queue) = mpsc::channel::<Job>();
        let pending = Arc::new(AtomicUsize::new(0));
        let done = pending.clone();
        thread::Builder::new()
            .name("tollgate-spares".into())
            .spawn(move || {
                for job in queue {
                    done.fetch_sub(1, Ordering::AcqRel);
                    drop(job.used);
                    let spares = &job.spares;
                    let short = spares.ready.lock().expect("spares lock poisoned").len() < DEPTH;
                    if !short || !job.recipe.spares || spares.broken.load(Ordering::Relaxed) {
                        continue;
                    }
                    match job.recipe.instantiate(job.recipe.timeout) {
                        Ok(instance) => spares
                            .ready
                            .lock()
                            .expect("spares lock poisoned")
                            .push((job.recipe.memory_bytes, instance)),
                        Err(failed) => {
                            spares.broken.store(true, Ordering::Relaxed);
                            tracing::warn!(
                                policy = &*job.recipe.name,
                                "cannot make spare instances: {}{:#}",
                                if failed.preparing {
                                    "its `prepare` failed: "
                                } else {
                                    ""
                                },
                                failed.error
                            );
                        }
                    }
                }
            })
            .expect("spawning the spares thread");
        Maker { jobs, pending }
    }

    /// Hands a used store over for teardown and asks for a new spare.
    pub fn recycle(&self, spares: &Arc<Spares>, recipe: &Recipe, used: Option<Store<StoreState>>) {
        if self.pending.fetch_add(1, Ordering::AcqRel) >= MAX_PENDING {
            // The thread is behind: tear down here, and let it catch up.
            self.pending.fetch_sub(1, Ordering::AcqRel);
            drop(used);
            return;
        }
        let job = Job {
            spares: spares.clone(),
            recipe: recipe.clone(),
            used,
        };
        if let Err(mpsc::SendError(job)) = self.jobs.send(job) {
            // The thread is gone (shutdown): tear down here.
            drop(job);
        }
    }
}
