//! Evaluation slots: one per core, so that each running evaluation has a
//! core's worth of time and its deadline measures the policy rather than a
//! queue of others' slices. A slot is for CPU: a call lends its slot back
//! while a host call waits on I/O (a quota ledger shared through the
//! apiserver), so a burst of waiting calls never starves the ones that
//! could run.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The slot one evaluation holds, or has lent back while it waits.
pub struct Slot {
    gate: Arc<Semaphore>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Slot {
    /// A slot of `gate`, waited for until `deadline` at most; `None` when
    /// the deadline passed first.
    pub async fn take(gate: &Arc<Semaphore>, deadline: Option<Instant>) -> Option<Slot> {
        let permit = wait_for(gate, deadline).await?;
        Some(Slot {
            gate: gate.clone(),
            permit: Some(permit),
        })
    }

    /// Hands the slot back while the call waits on I/O.
    pub fn lend(&mut self) {
        self.permit = None;
    }

    /// Takes the slot again after [`Slot::lend`], by `deadline`; `false`
    /// when the deadline passed first.
    pub async fn take_back(&mut self, deadline: Instant) -> bool {
        if self.permit.is_none() {
            self.permit = wait_for(&self.gate, Some(deadline)).await;
        }
        self.permit.is_some()
    }
}

/// A permit of `gate`, waited for until `deadline` at most; `None` when the
/// deadline passed first. Outside a Tokio runtime (offline commands) there
/// is no timer to wait with, and the wait is not bounded.
pub async fn wait_for(
    gate: &Arc<Semaphore>,
    deadline: Option<Instant>,
) -> Option<OwnedSemaphorePermit> {
    let wait = gate.clone().acquire_owned();
    match deadline {
        Some(deadline) if tokio::runtime::Handle::try_current().is_ok() => {
            tokio::time::timeout_at(deadline.into(), wait)
                .await
                .ok()?
                .ok()
        }
        _ => wait.await.ok(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_lent_slot_runs_another_call_and_comes_back_within_the_deadline() {
        let gate = Arc::new(Semaphore::new(1));
        let soon = || Some(Instant::now() + Duration::from_millis(50));
        let mut first = Slot::take(&gate, soon()).await.unwrap();
        assert!(Slot::take(&gate, soon()).await.is_none(), "one slot");
        first.lend();
        let second = Slot::take(&gate, soon()).await.unwrap();
        assert!(!first.take_back(soon().unwrap()).await, "still taken");
        drop(second);
        assert!(first.take_back(soon().unwrap()).await);
    }
}
