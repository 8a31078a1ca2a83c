//! Where policies run: a bounded number of blocking threads, never the
//! async workers, so a slow evaluation cannot hold up TLS handshakes,
//! probes or other requests' I/O.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Semaphore;

/// Runs evaluations on Tokio's blocking threads, at most `threads` at once.
#[derive(Debug, Clone)]
pub struct Pool {
    /// One permit per evaluation allowed to run. A Tokio semaphore: waiting
    /// for a permit is async, and bounded by the request's deadline.
    slots: Arc<Semaphore>,
}

impl Pool {
    /// A pool of `threads` evaluation threads.
    pub fn new(threads: usize) -> Self {
        Pool {
            slots: Arc::new(Semaphore::new(threads.max(1))),
        }
    }

    /// Runs `job` on an evaluation thread once one is free, unless
    /// `deadline` passes first.
    ///
    /// # Errors
    ///
    /// The job itself, not run, when no thread was free before `deadline`.
    ///
    /// # Panics
    ///
    /// When `job` panics (the panic is resumed here).
    pub async fn run<R, F>(&self, deadline: Instant, job: F) -> Result<R, F>
    where
        R: Send + 'static,
        F: FnOnce() -> R + Send + 'static,
    {
        let permit =
            tokio::time::timeout_at(deadline.into(), self.slots.clone().acquire_owned()).await;
        let Ok(Ok(permit)) = permit else {
            return Err(job);
        };
        let done = tokio::task::spawn_blocking(move || {
            let result = job();
            drop(permit);
            result
        })
        .await;
        match done {
            Ok(result) => Ok(result),
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn jobs_run_off_the_async_worker_and_wait_for_a_free_thread_until_the_deadline() {
        let pool = Pool::new(1);
        let far = Instant::now() + Duration::from_secs(10);
        let worker = std::thread::current().id();
        let busy = tokio::spawn({
            let pool = pool.clone();
            async move {
                pool.run(far, move || {
                    std::thread::sleep(Duration::from_millis(300));
                    std::thread::current().id()
                })
                .await
            }
        });
        // While the only thread is busy, the async worker still runs tasks.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let soon = Instant::now() + Duration::from_millis(50);
        let expired = pool.run(soon, || 5).await;
        assert_eq!(expired.map_err(|job| job()), Err(5), "the job comes back");
        let ran_on = busy.await.unwrap().ok().unwrap();
        assert_ne!(ran_on, worker);
        assert_eq!(pool.run(far, || 7).await.ok(), Some(7));
    }
}
