//! The aside lane: threads at the lowest CPU priority, for evaluations of
//! policies that have just misbehaved.
//!
//! Evaluations normally run on the async workers, where a policy that loops
//! burns a core until its deadline. The first time that happens cannot be
//! foreseen; but once a policy has misbehaved (see `policy::breaker`), its
//! next calls, until it is suspended or does well again, run here: on
//! threads at nice 19, which the kernel gives CPU only when the server's
//! other threads do not need it. A policy that is really broken then costs
//! the healthy ones almost nothing while it is on probation; a policy that
//! had one bad moment on a quiet server runs here at full speed.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// Threads of the lane, sharing one queue.
pub struct Lane {
    /// Jobs for the threads; they end when the lane (this sender) drops.
    jobs: Mutex<mpsc::Sender<Job>>,
}

/// The lowest priority a thread can have: it runs when nothing else wants
/// the CPU, and gets a small share when something does.
const NICE: i32 = 19;

impl Lane {
    /// Starts `threads` threads.
    pub fn start(threads: usize) -> Self {
        let (jobs, queue) = mpsc::channel::<Job>();
        // A `std::sync::Mutex` around the receiver: held only to take the
        // next job, never while running it.
        let queue = Arc::new(Mutex::new(queue));
        for index in 0..threads.max(1) {
            let queue = queue.clone();
            thread::Builder::new()
                .name(format!("tollgate-aside-{index}"))
                .spawn(move || {
                    let me = rustix::thread::gettid();
                    if let Err(error) = rustix::process::setpriority_process(Some(me), NICE) {
                        tracing::warn!("cannot lower the aside lane's priority: {error}");
                    }
                    loop {
                        let job = queue.lock().expect("aside queue lock poisoned").recv();
                        match job {
                            Ok(job) => job(),
                            Err(mpsc::RecvError) => return,
                        }
                    }
                })
                .expect("spawning an aside thread");
        }
        Lane {
            jobs: Mutex::new(jobs),
        }
    }

    /// Runs `job` on a lane thread; `None` if the lane is gone.
    pub async fn run<R: Send + 'static>(
        &self,
        job: impl FnOnce() -> R + Send + 'static,
    ) -> Option<R> {
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(job());
        });
        self.jobs
            .lock()
            .expect("aside queue lock poisoned")
            .send(job)
            .ok()?;
        result.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_run_on_threads_at_the_lowest_priority() {
        let lane = Lane::start(1);
        let (nice, name) = futures::executor::block_on(lane.run(|| {
            let priority = rustix::process::getpriority_process(Some(rustix::thread::gettid()));
            (priority.ok(), thread::current().name().map(str::to_owned))
        }))
        .unwrap();
        assert_eq!(nice, Some(NICE));
        assert_eq!(name.as_deref(), Some("tollgate-aside-0"));
    }
}
