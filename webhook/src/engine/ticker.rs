//! The epoch ticker: a thread that advances the engine's epoch every
//! millisecond while at least one evaluation runs, and sleeps (parked)
//! otherwise, so an idle server spends no CPU on it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// One epoch tick; deadlines are counted in these.
pub const TICK: Duration = Duration::from_millis(1);

/// Handle to the ticker thread; the thread stops when the handle drops.
pub struct Ticker {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    /// Evaluations in progress; an atomic, not a lock, because it is touched
    /// twice per policy call on the hot path.
    active: AtomicUsize,
    stop: AtomicBool,
}

/// Marks one evaluation as running while alive.
pub struct Active<'a> {
    ticker: &'a Ticker,
}

impl Ticker {
    /// Starts the thread for `engine`.
    pub fn start(engine: wasmtime::Engine) -> Self {
        let shared = Arc::new(Shared {
            active: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let thread_shared = shared.clone();
        let thread = thread::Builder::new()
            .name("tollgate-epoch".into())
            .spawn(move || {
                while !thread_shared.stop.load(Ordering::Acquire) {
                    if thread_shared.active.load(Ordering::Acquire) == 0 {
                        thread::park();
                        continue;
                    }
                    thread::sleep(TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch thread");
        Ticker {
            shared,
            thread: Some(thread),
        }
    }

    /// Marks an evaluation as running until the guard drops.
    pub fn active(&self) -> Active<'_> {
        if self.shared.active.fetch_add(1, Ordering::AcqRel) == 0
            && let Some(thread) = &self.thread
        {
            thread.thread().unpark();
        }
        Active { ticker: self }
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.ticker.shared.active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}
