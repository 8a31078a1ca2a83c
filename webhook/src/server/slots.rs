//! How many requests are evaluated at once.
//!
//! Policies run on the async workers, as futures that yield to the executor
//! at every epoch tick (see [`crate::engine::PolicyPre::evaluate`]): a slow
//! evaluation holds no worker for more than a tick, so TLS handshakes,
//! probes and other requests' I/O go on around it, and the fast ones cost
//! no hand-over to another thread. At most `evaluation_threads` requests are
//! evaluated at once, so that each has a core's worth of time (its
//! deadline measures the policy, not a queue of others' slices); the others
//! wait here, asynchronously, within their deadline.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The evaluation slots.
#[derive(Debug, Clone)]
pub struct Slots {
    /// One permit per evaluation running. A Tokio semaphore: waiting is
    /// async, and bounded by the request's deadline.
    permits: Arc<Semaphore>,
}

impl Slots {
    /// `count` slots.
    pub fn new(count: usize) -> Self {
        Slots {
            permits: Arc::new(Semaphore::new(count.max(1))),
        }
    }

    /// Waits for a slot until `deadline`; `None` when none came free in
    /// time (the request's policies then fail without running).
    pub async fn take(&self, deadline: Instant) -> Option<OwnedSemaphorePermit> {
        tokio::time::timeout_at(deadline.into(), self.permits.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_slot_is_waited_for_until_the_deadline() {
        let slots = Slots::new(1);
        let far = Instant::now() + Duration::from_secs(10);
        let held = slots.take(far).await.expect("a free slot");
        let soon = Instant::now() + Duration::from_millis(30);
        assert!(slots.take(soon).await.is_none());
        drop(held);
        assert!(slots.take(far).await.is_some());
    }
}
