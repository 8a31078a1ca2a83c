//! Trust in a policy: earned, lost, and suspension when it keeps
//! misbehaving.
//!
//! A policy that loops, exhausts its memory or traps costs up to its whole
//! deadline of CPU per request, on the same few cores every other policy
//! needs. So a policy is trusted (its calls run on the server's workers,
//! side by side) only after [`TRUST`] successes in a row. Until then (after
//! it loads, and again after any misbehaviour) its calls are tried one at a
//! time, the others waiting their turn within their deadline, on the
//! engine's aside lane at the lowest CPU priority: a policy that misbehaves
//! from the start never runs on the workers, and one that turns bad costs
//! the healthy ones one bad call before it is set aside.
//!
//! After [`THRESHOLD`] misbehaviours in a row its [`Breaker`] opens: for a
//! cooldown the policy is not run and its `failurePolicy` applies at once,
//! as it would have after the wasted deadline. Then one call tries it again:
//! a success closes the breaker, a failure reopens it for twice as long (up
//! to [`MAX_COOLDOWN`]).
//!
//! What counts as misbehaviour is the policy's own
//! ([`crate::engine::Error::is_misbehaviour`]): a request deadline that cut
//! it short, a host refusal or its own "no verdict" error do not.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Failures in a row that suspend a policy.
pub const THRESHOLD: u32 = 3;

/// Successes in a row after which a policy's calls run on the workers.
pub const TRUST: u32 = 3;

/// The first cooldown.
const FIRST_COOLDOWN: Duration = Duration::from_secs(1);

/// The longest cooldown.
pub const MAX_COOLDOWN: Duration = Duration::from_secs(60);

/// A policy's breaker.
#[derive(Debug)]
pub struct Breaker {
    /// A `std::sync::Mutex`: taken for a few instructions, never across a
    /// call.
    state: Mutex<State>,
    /// The turn of the one untrusted call that may run. A Tokio semaphore:
    /// the others wait asynchronously, within their deadline; a call that
    /// is abandoned gives its turn back when its permit drops.
    turn: Arc<Semaphore>,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            state: Mutex::default(),
            turn: Arc::new(Semaphore::new(1)),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// Misbehaviours in a row.
    failures: u32,
    /// While suspended: until when.
    open_until: Option<Instant>,
    /// The last misbehaviour's message.
    last_error: String,
    cooldown: Duration,
    /// Successes in a row (up to [`TRUST`]).
    proven: u32,
}

impl State {
    fn trusted(&self) -> bool {
        self.proven >= TRUST
    }
}

/// Why a call was not made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suspended {
    /// Misbehaviours in a row.
    pub failures: u32,
    /// The last one.
    pub last: String,
    /// Time until the next trial; `None` when the request's deadline passed
    /// while another call of the policy was being tried.
    pub retry_ms: Option<u64>,
}

impl std::fmt::Display for Suspended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (failures, last) = (self.failures, &self.last);
        match self.retry_ms {
            Some(retry_ms) => write!(
                f,
                "policy suspended after {failures} consecutive failures (last: {last}); next try in {retry_ms} ms"
            ),
            None if failures > 0 => write!(
                f,
                "the request's deadline passed while the policy, on probation after {failures} consecutive failure(s) (last: {last}), was being tried by another request"
            ),
            None => write!(
                f,
                "the request's deadline passed while the policy, not yet trusted, was being tried by another request"
            ),
        }
    }
}

impl std::error::Error for Suspended {}

/// Permission to make one call; report how it went with [`Pass::record`].
#[derive(Debug)]
#[must_use]
pub struct Pass<'a> {
    breaker: &'a Breaker,
    trial: bool,
    /// Held by an untrusted call: its turn.
    turn: Option<OwnedSemaphorePermit>,
}

impl Pass<'_> {
    /// Whether the call should run aside (the policy is not trusted).
    pub fn aside(&self) -> bool {
        self.turn.is_some()
    }

    /// Records how the call went: `Some(message)` for a misbehaviour.
    /// Returns whether this call (re)opened the breaker.
    pub fn record(self, misbehaviour: Option<String>) -> bool {
        let mut state = self.breaker.lock();
        let Some(error) = misbehaviour else {
            let proven = (state.proven + 1).min(TRUST);
            *state = State {
                proven,
                ..State::default()
            };
            return false;
        };
        state.proven = 0;
        state.failures += 1;
        state.last_error = error;
        let open = self.trial || (state.open_until.is_none() && state.failures >= THRESHOLD);
        if open {
            state.cooldown = if self.trial {
                (state.cooldown * 2).min(MAX_COOLDOWN)
            } else {
                FIRST_COOLDOWN
            };
            state.open_until = Some(Instant::now() + state.cooldown);
        }
        open
    }
}

impl Breaker {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("breaker lock poisoned")
    }

    /// Whether a call may be made now: at once for a trusted policy; for
    /// another, when it is its turn (waiting until `deadline` at most).
    ///
    /// # Errors
    ///
    /// [`Suspended`] while the breaker is open, or when the deadline passed
    /// before its turn.
    pub async fn admit(&self, deadline: Instant) -> Result<Pass<'_>, Suspended> {
        if let Some(pass) = self.check(None)? {
            return Ok(pass);
        }
        let turn = crate::engine::wait_for(&self.turn, Some(deadline)).await;
        let turn = turn.ok_or_else(|| {
            let state = self.lock();
            Suspended {
                failures: state.failures,
                last: state.last_error.clone(),
                retry_ms: None,
            }
        })?;
        Ok(self
            .check(Some(turn))?
            .expect("with a turn, a call that is not suspended is admitted"))
    }

    /// A pass if the call may go now: trusted, or holding its `turn`.
    fn check(&self, turn: Option<OwnedSemaphorePermit>) -> Result<Option<Pass<'_>>, Suspended> {
        let state = self.lock();
        if let Some(until) = state.open_until {
            let now = Instant::now();
            if now < until {
                return Err(Suspended {
                    failures: state.failures,
                    last: state.last_error.clone(),
                    retry_ms: Some(until.duration_since(now).as_millis() as u64),
                });
            }
        }
        if state.trusted() {
            return Ok(Some(Pass {
                breaker: self,
                trial: false,
                turn: None,
            }));
        }
        Ok(turn.map(|turn| Pass {
            breaker: self,
            trial: state.open_until.is_some(),
            turn: Some(turn),
        }))
    }
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;

    use super::*;

    const TIMEOUT: &str = "policy exceeded its deadline of 5 ms";

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    fn admit(breaker: &Breaker) -> Result<Pass<'_>, Suspended> {
        block_on(breaker.admit(far()))
    }

    fn succeed(breaker: &Breaker) {
        admit(breaker).expect("admitted").record(None);
    }

    fn fail(breaker: &Breaker) -> bool {
        admit(breaker)
            .expect("admitted")
            .record(Some(TIMEOUT.into()))
    }

    fn trusted() -> Breaker {
        let breaker = Breaker::default();
        for _ in 0..TRUST {
            succeed(&breaker);
        }
        breaker
    }

    #[tokio::test]
    async fn trust_is_earned_one_call_at_a_time_and_lost() {
        let breaker = Breaker::default();
        let first = breaker.admit(far()).await.unwrap();
        assert!(first.aside(), "unproven: aside");
        // A second call waits for the first one's turn.
        let soon = Instant::now() + Duration::from_millis(30);
        let waited = breaker.admit(soon).await.unwrap_err();
        assert_eq!(waited.retry_ms, None);
        assert!(waited.to_string().contains("not yet trusted"), "{waited}");
        first.record(None);
        for _ in 1..TRUST {
            breaker.admit(far()).await.unwrap().record(None);
        }
        let (one, two) = (
            breaker.admit(far()).await.unwrap(),
            breaker.admit(far()).await.unwrap(),
        );
        assert!(!one.aside() && !two.aside(), "trusted: side by side");
        one.record(Some(TIMEOUT.into()));
        assert!(
            breaker.admit(far()).await.unwrap().aside(),
            "a misbehaviour loses it"
        );
    }

    #[test]
    fn opens_after_repeated_misbehaviour_and_a_success_closes_it() {
        let breaker = trusted();
        assert!(!fail(&breaker));
        assert!(!fail(&breaker));
        assert!(fail(&breaker), "the third failure in a row opens it");
        let suspended = admit(&breaker).unwrap_err();
        assert_eq!(suspended.failures, THRESHOLD);
        assert!(suspended.retry_ms.is_some_and(|ms| ms <= 1000));
        assert!(suspended.to_string().starts_with(
            "policy suspended after 3 consecutive failures (last: policy exceeded its deadline of 5 ms); next try in "
        ));
        // After the cooldown one call is the trial.
        breaker.lock().open_until = Some(Instant::now());
        let trial = admit(&breaker).unwrap();
        assert!(trial.trial && trial.aside());
        trial.record(None);
        assert!(admit(&breaker).is_ok(), "a success closes it");
    }

    #[test]
    fn an_abandoned_call_gives_its_turn_back() {
        let breaker = Breaker::default();
        drop(admit(&breaker).unwrap());
        assert!(admit(&breaker).is_ok());
    }

    #[test]
    fn a_failed_trial_doubles_the_cooldown() {
        let breaker = Breaker::default();
        for _ in 0..THRESHOLD {
            fail(&breaker);
        }
        for expected in [2, 4, 8, 16, 32, 60, 60] {
            breaker.lock().open_until = Some(Instant::now());
            assert!(fail(&breaker));
            assert_eq!(breaker.lock().cooldown, Duration::from_secs(expected));
        }
    }

    #[test]
    fn successes_in_between_keep_it_closed() {
        let breaker = trusted();
        for _ in 0..10 {
            fail(&breaker);
            fail(&breaker);
            succeed(&breaker);
        }
        assert!(breaker.lock().open_until.is_none());
    }
}
