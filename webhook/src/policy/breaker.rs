//! Suspension of a policy that keeps misbehaving.
//!
//! A policy that loops, exhausts its memory or traps on every call costs up
//! to its whole deadline of CPU per request, on the same few evaluation
//! threads every other policy needs. After [`THRESHOLD`] such failures in a
//! row its [`Breaker`] opens: for a cooldown the policy is not run and its
//! `failurePolicy` applies at once, as it would have after the wasted
//! deadline. Then one request tries it again: a success closes the breaker,
//! a failure reopens it for twice as long (up to [`MAX_COOLDOWN`]).
//!
//! What counts is the policy's own misbehaviour
//! ([`crate::engine::Error::is_misbehaviour`]): a request deadline that cut
//! it short, a host refusal or its own "no verdict" error do not.
//!
//! Between its first misbehaviour and its suspension (and for its trials),
//! a policy is on probation: one call at a time is tried (the others get
//! its `failurePolicy` at once), on the engine's aside lane at the lowest
//! CPU priority, so that even the calls that lead up to its suspension cost
//! the healthy policies little. Trust is also earned: a policy's first
//! [`TRUST`] calls after it loads (or after a misbehaviour) run aside too,
//! concurrently, so that a policy that misbehaves from the start never runs
//! on the server's workers at all.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures in a row that suspend a policy.
pub const THRESHOLD: u32 = 3;

/// Successes in a row after which a policy's calls run on the workers.
pub const TRUST: u32 = 3;

/// The first cooldown.
const FIRST_COOLDOWN: Duration = Duration::from_secs(1);

/// The longest cooldown.
pub const MAX_COOLDOWN: Duration = Duration::from_secs(60);

/// A policy's breaker. A `std::sync::Mutex`: taken twice per call for a few
/// instructions, never across the call itself.
#[derive(Debug, Default)]
pub struct Breaker {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Misbehaviours in a row.
    failures: u32,
    /// While suspended: until when, and the last failure's message.
    open_until: Option<Instant>,
    last_error: String,
    cooldown: Duration,
    /// A call on probation (or a trial after the cooldown) is running.
    trying: bool,
    /// Successes in a row (up to [`TRUST`]).
    proven: u32,
}

/// Why a call was not made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suspended {
    /// Misbehaviours in a row.
    pub failures: u32,
    /// The last one.
    pub last: String,
    /// Time until the next trial; `None` while on probation, when another
    /// call is being tried.
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
            None => write!(
                f,
                "policy on probation after {failures} consecutive failure(s) (last: {last}); another call is being tried"
            ),
        }
    }
}

impl std::error::Error for Suspended {}

/// Permission to make one call; report how it went with [`Pass::record`].
/// Dropped unrecorded (the request was abandoned), it lets the next call
/// be tried.
#[derive(Debug)]
#[must_use]
pub struct Pass<'a> {
    breaker: &'a Breaker,
    trial: bool,
    probation: bool,
    unproven: bool,
}

impl Pass<'_> {
    /// Whether the call should run aside: the policy misbehaved lately,
    /// this is a trial, or it has not yet earned trust.
    pub fn aside(&self) -> bool {
        self.probation || self.unproven
    }

    /// Records how the call went: `Some(message)` for a misbehaviour.
    /// Returns whether this call (re)opened the breaker.
    pub fn record(mut self, misbehaviour: Option<String>) -> bool {
        let mut state = self.breaker.lock();
        if self.probation {
            state.trying = false;
            // Recorded: nothing for `Drop` to undo.
            self.probation = false;
        }
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

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        if self.probation {
            self.breaker.lock().trying = false;
        }
    }
}

impl Breaker {
    /// Whether a call may be made now.
    ///
    /// # Errors
    ///
    /// [`Suspended`] while the breaker is open, or while another call is
    /// the trial.
    pub fn admit(&self) -> Result<Pass<'_>, Suspended> {
        let mut state = self.lock();
        let refused = |state: &State, retry_ms| Suspended {
            failures: state.failures,
            last: state.last_error.clone(),
            retry_ms,
        };
        let unproven = state.proven < TRUST;
        match state.open_until {
            None if state.failures == 0 => Ok(Pass {
                breaker: self,
                trial: false,
                probation: false,
                unproven,
            }),
            None if state.trying => Err(refused(&state, None)),
            None => {
                state.trying = true;
                Ok(Pass {
                    breaker: self,
                    trial: false,
                    probation: true,
                    unproven,
                })
            }
            Some(until) => {
                let now = Instant::now();
                if now >= until && !state.trying {
                    state.trying = true;
                    return Ok(Pass {
                        breaker: self,
                        trial: true,
                        probation: true,
                        unproven,
                    });
                }
                let retry_ms = until.saturating_duration_since(now).as_millis() as u64;
                Err(refused(&state, Some(retry_ms)))
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("breaker lock poisoned")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: &str = "policy exceeded its deadline of 5 ms";

    fn succeed(breaker: &Breaker) {
        breaker.admit().expect("admitted").record(None);
    }

    fn fail(breaker: &Breaker) -> bool {
        breaker
            .admit()
            .expect("admitted")
            .record(Some(TIMEOUT.into()))
    }

    #[test]
    fn trust_is_earned_and_lost() {
        let breaker = Breaker::default();
        for _ in 0..TRUST {
            let first = breaker.admit().unwrap();
            let concurrent = breaker.admit().unwrap();
            assert!(
                first.aside() && concurrent.aside(),
                "unproven: aside, side by side"
            );
            concurrent.record(None);
            drop(first);
        }
        assert!(!breaker.admit().unwrap().aside(), "proven");
        fail(&breaker);
        succeed(&breaker);
        assert!(breaker.admit().unwrap().aside(), "trust starts over");
    }

    #[test]
    fn opens_after_repeated_misbehaviour_and_a_success_closes_it() {
        let breaker = Breaker::default();
        for _ in 0..TRUST {
            succeed(&breaker);
        }
        assert!(!fail(&breaker));
        let probation = breaker.admit().unwrap();
        assert!(probation.aside(), "one failure: probation");
        let refused = breaker.admit().unwrap_err();
        assert_eq!(refused.retry_ms, None, "one call at a time on probation");
        assert!(
            refused.to_string().starts_with(
                "policy on probation after 1 consecutive failure(s) (last: policy exceeded its deadline of 5 ms)"
            ),
            "{refused}"
        );
        assert!(!probation.record(Some(TIMEOUT.into())));
        assert!(fail(&breaker), "the third failure in a row opens it");
        let suspended = breaker.admit().unwrap_err();
        assert_eq!(suspended.failures, THRESHOLD);
        assert!(suspended.retry_ms.is_some_and(|ms| ms <= 1000));
        assert!(suspended.to_string().starts_with(
            "policy suspended after 3 consecutive failures (last: policy exceeded its deadline of 5 ms); next try in "
        ));
        // After the cooldown one trial is let through; others wait.
        breaker.lock().open_until = Some(Instant::now());
        let trial = breaker.admit().unwrap();
        assert!(breaker.admit().is_err(), "one trial at a time");
        trial.record(None);
        assert!(breaker.admit().is_ok(), "a success closes it");
    }

    #[test]
    fn an_abandoned_call_on_probation_lets_the_next_one_be_tried() {
        let breaker = Breaker::default();
        fail(&breaker);
        drop(breaker.admit().unwrap());
        assert!(
            breaker.admit().is_ok(),
            "not still taken by the abandoned call"
        );
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
        let breaker = Breaker::default();
        for _ in 0..10 {
            fail(&breaker);
            fail(&breaker);
            succeed(&breaker);
        }
        assert!(breaker.lock().open_until.is_none());
    }
}
