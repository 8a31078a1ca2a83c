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
//! a policy is on probation: its calls run on the engine's aside lane, at
//! the lowest CPU priority, so that even the calls that lead up to its
//! suspension cost the healthy policies little.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures in a row that suspend a policy.
pub const THRESHOLD: u32 = 3;

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
    /// A trial call is running (the cooldown is over).
    trying: bool,
}

/// Why a call was not made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "policy suspended after {failures} consecutive failures (last: {last}); next try in {retry_ms} ms"
)]
pub struct Suspended {
    /// Misbehaviours in a row.
    pub failures: u32,
    /// The last one.
    pub last: String,
    /// Time until the next trial.
    pub retry_ms: u64,
}

/// Permission to make one call; report how it went with [`Breaker::record`].
#[derive(Debug)]
#[must_use]
pub struct Pass {
    trial: bool,
    probation: bool,
}

impl Pass {
    /// Whether the policy has misbehaved lately (or this call is a trial):
    /// the call should run aside.
    pub fn on_probation(&self) -> bool {
        self.probation
    }
}

impl Breaker {
    /// Whether a call may be made now.
    ///
    /// # Errors
    ///
    /// [`Suspended`] while the breaker is open, or while another call is
    /// the trial.
    pub fn admit(&self) -> Result<Pass, Suspended> {
        let mut state = self.state.lock().expect("breaker lock poisoned");
        let Some(until) = state.open_until else {
            return Ok(Pass {
                trial: false,
                probation: state.failures > 0,
            });
        };
        let now = Instant::now();
        if now >= until && !state.trying {
            state.trying = true;
            return Ok(Pass {
                trial: true,
                probation: true,
            });
        }
        Err(Suspended {
            failures: state.failures,
            last: state.last_error.clone(),
            retry_ms: until.saturating_duration_since(now).as_millis() as u64,
        })
    }

    /// Records how a call went: `Some(message)` for a misbehaviour. Returns
    /// whether this call (re)opened the breaker.
    pub fn record(&self, pass: Pass, misbehaviour: Option<String>) -> bool {
        let mut state = self.state.lock().expect("breaker lock poisoned");
        if pass.trial {
            state.trying = false;
        }
        let Some(error) = misbehaviour else {
            *state = State::default();
            return false;
        };
        state.failures += 1;
        state.last_error = error;
        let open = pass.trial || (state.open_until.is_none() && state.failures >= THRESHOLD);
        if open {
            state.cooldown = if pass.trial {
                (state.cooldown * 2).min(MAX_COOLDOWN)
            } else {
                FIRST_COOLDOWN
            };
            state.open_until = Some(Instant::now() + state.cooldown);
        }
        open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(breaker: &Breaker) -> bool {
        let pass = breaker.admit().expect("admitted");
        breaker.record(pass, Some("policy exceeded its deadline of 5 ms".into()))
    }

    #[test]
    fn opens_after_repeated_misbehaviour_and_a_success_closes_it() {
        let breaker = Breaker::default();
        assert!(!breaker.admit().unwrap().on_probation());
        assert!(!fail(&breaker));
        assert!(
            breaker.admit().unwrap().on_probation(),
            "one failure: probation"
        );
        assert!(!fail(&breaker));
        assert!(fail(&breaker), "the third failure in a row opens it");
        let suspended = breaker.admit().unwrap_err();
        assert_eq!(suspended.failures, THRESHOLD);
        assert!(suspended.retry_ms <= 1000);
        assert!(
            suspended
                .to_string()
                .starts_with("policy suspended after 3 consecutive failures (last: policy exceeded its deadline of 5 ms); next try in ")
        );
        // After the cooldown one trial is let through; others wait.
        breaker.state.lock().unwrap().open_until = Some(Instant::now());
        let trial = breaker.admit().unwrap();
        assert!(breaker.admit().is_err(), "one trial at a time");
        breaker.record(trial, None);
        let pass = breaker.admit().expect("a success closes it");
        assert!(!pass.on_probation());
    }

    #[test]
    fn a_failed_trial_doubles_the_cooldown() {
        let breaker = Breaker::default();
        for _ in 0..THRESHOLD {
            fail(&breaker);
        }
        for expected in [2, 4, 8, 16, 32, 60, 60] {
            breaker.state.lock().unwrap().open_until = Some(Instant::now());
            assert!(fail(&breaker));
            assert_eq!(
                breaker.state.lock().unwrap().cooldown,
                Duration::from_secs(expected)
            );
        }
    }

    #[test]
    fn successes_in_between_keep_it_closed() {
        let breaker = Breaker::default();
        for _ in 0..10 {
            fail(&breaker);
            fail(&breaker);
            let pass = breaker.admit().unwrap();
            breaker.record(pass, None);
        }
        assert!(breaker.admit().is_ok());
    }
}
