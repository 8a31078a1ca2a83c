//! What a policy may reach outside its sandbox, and the meter on it.
//!
//! The engine knows cluster context and the quota ledger only through the
//! [`Host`] trait: the caller hands one per call (or none, and every
//! context or quota import is refused). Every import goes through a
//! [`Meter`] first, which stops the call (a trap the engine reports as what
//! it is) when the call's deadline has passed, when it made too many host
//! calls, or when the host has handed it more data than its memory could
//! hold; `log` lines are also limited per call and per policy.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

pub use tollgate_sdk::quota::{Claim, Decision, Usage};

/// Why a host capability did not answer a call.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The capability refused (not granted, no cluster, ledger unreachable):
    /// the policy gets the message as its import's error.
    #[error(transparent)]
    Refused(Box<dyn std::error::Error + Send + Sync>),
    /// The call's deadline passed while the host worked on it: the call is
    /// stopped and reported as timed out.
    #[error("the deadline passed during a host call")]
    DeadlinePassed,
}

impl Refusal {
    /// A refusal with this message.
    pub fn message(text: impl Into<String>) -> Self {
        Refusal::Refused(text.into().into())
    }
}

/// Cluster reads and the quota ledger, as one policy call may use them.
pub trait Host: Send {
    /// `context.get`: one object as JSON text.
    ///
    /// # Errors
    ///
    /// A refusal, or the deadline passed.
    fn get(
        &mut self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
        deadline: Instant,
    ) -> Result<Option<String>, Refusal>;

    /// `context.list`: the selected objects as a JSON array text of at most
    /// `max_bytes` (a larger answer is refused: the policy could not hold it).
    ///
    /// # Errors
    ///
    /// A refusal, or the deadline passed.
    fn list(
        &mut self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        selector: &str,
        max_bytes: usize,
        deadline: Instant,
    ) -> Result<String, Refusal>;

    /// `quota.usage`: index totals for `keys`.
    ///
    /// # Errors
    ///
    /// A refusal.
    fn usage(&mut self, keys: &[String]) -> Result<Vec<Usage>, Refusal>;

    /// `quota.reserve`: the atomic check-and-reserve, which may wait on
    /// I/O (a ledger shared through the apiserver) until `deadline` at
    /// most. The host gives back what it took when it returns
    /// [`Refusal::DeadlinePassed`].
    ///
    /// # Errors
    ///
    /// A refusal, or the deadline passed.
    fn reserve(
        &mut self,
        claims: Vec<Claim>,
        deadline: Instant,
    ) -> BoxFuture<'_, Result<Decision, Refusal>>;
}

/// Why the meter stopped a call; carried by the trap it raises.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Abort {
    /// The call's deadline passed (checked on entry to every import).
    #[error("the deadline passed during a host call")]
    DeadlinePassed,
    /// The deadline passed while the host waited on I/O for the call (a
    /// slow or unreachable apiserver): not the policy's doing.
    #[error("the deadline passed while the host waited on I/O")]
    HostWaited,
    /// More imports called than one evaluation may.
    #[error("policy made more than {0} host calls in one evaluation")]
    TooManyCalls(usize),
    /// The host handed over more data than the policy's memory could hold.
    #[error("policy read more than {0} bytes through host calls in one evaluation")]
    TooMuchData(usize),
}

/// Host calls one evaluation may make: a quota policy makes a handful; a
/// loop of calls is a bug or an attack, and every call costs host time.
pub const MAX_CALLS: usize = 1024;

/// `log` lines one evaluation may write; more are counted, not written.
pub const LOG_LINES_PER_CALL: u32 = 32;

/// Longest log line; longer ones are cut.
pub const MAX_LOG_LINE: usize = 4096;

/// Per call: what it may still do.
#[derive(Debug)]
pub struct Meter {
    deadline: Instant,
    calls: usize,
    bytes: usize,
    max_bytes: usize,
    log_lines: u32,
    /// Lines dropped by the per-call or per-policy limit.
    pub dropped_lines: u32,
}

impl Meter {
    /// A meter for a call ending at `deadline` whose memory holds
    /// `max_bytes`.
    pub fn new(deadline: Instant, max_bytes: usize) -> Self {
        Meter {
            deadline,
            calls: 0,
            bytes: 0,
            max_bytes,
            log_lines: 0,
            dropped_lines: 0,
        }
    }

    /// The call's deadline.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Counts one import call.
    ///
    /// # Errors
    ///
    /// The deadline passed, or too many calls.
    pub fn enter(&mut self) -> Result<(), Abort> {
        if Instant::now() >= self.deadline {
            return Err(Abort::DeadlinePassed);
        }
        self.calls += 1;
        if self.calls > MAX_CALLS {
            return Err(Abort::TooManyCalls(MAX_CALLS));
        }
        Ok(())
    }

    /// Bytes the host may still hand over.
    pub fn room(&self) -> usize {
        self.max_bytes.saturating_sub(self.bytes)
    }

    /// Counts `bytes` handed to the policy.
    ///
    /// # Errors
    ///
    /// More in total than the policy's memory.
    pub fn hand_over(&mut self, bytes: usize) -> Result<(), Abort> {
        self.bytes = self.bytes.saturating_add(bytes);
        if self.bytes > self.max_bytes {
            return Err(Abort::TooMuchData(self.max_bytes));
        }
        Ok(())
    }

    /// Whether one more log line may be written now (per call, then per
    /// policy through `rate`).
    pub fn log_line(&mut self, rate: &LogRate) -> bool {
        self.log_lines += 1;
        let allowed = self.log_lines <= LOG_LINES_PER_CALL && rate.take();
        if !allowed {
            self.dropped_lines += 1;
        }
        allowed
    }
}

/// Log lines a policy may write across calls: a token bucket, so that a
/// policy logging on every request cannot flood the host's log.
#[derive(Debug)]
pub struct LogRate {
    /// (tokens, last refill). A `std::sync::Mutex`: held for a few
    /// instructions, only by calls that log.
    bucket: Mutex<(f64, Instant)>,
}

/// Sustained log lines per second per policy.
pub const LOG_LINES_PER_SECOND: f64 = 50.0;

/// Lines a quiet policy may write at once.
const LOG_BURST: f64 = 200.0;

impl Default for LogRate {
    fn default() -> Self {
        LogRate {
            bucket: Mutex::new((LOG_BURST, Instant::now())),
        }
    }
}

impl LogRate {
    fn take(&self) -> bool {
        let mut bucket = self.bucket.lock().expect("log rate lock poisoned");
        let now = Instant::now();
        let refill = now.duration_since(bucket.1).as_secs_f64() * LOG_LINES_PER_SECOND;
        *bucket = ((bucket.0 + refill).min(LOG_BURST), now);
        if bucket.0 >= 1.0 {
            bucket.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A log line as the host writes it: cut at [`MAX_LOG_LINE`] characters,
/// control characters escaped, so a policy can neither forge host log lines
/// with newlines nor write terminal escapes.
pub fn sanitize(message: &str) -> String {
    let mut line = String::with_capacity(message.len().min(MAX_LOG_LINE));
    for (count, c) in message.chars().enumerate() {
        if count == MAX_LOG_LINE {
            line.push('…');
            break;
        }
        if c.is_control() {
            line.extend(c.escape_default());
        } else {
            line.push(c);
        }
    }
    line
}

/// The time left until `deadline`, zero when it passed.
pub fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_are_cut_and_cannot_forge_lines() {
        assert_eq!(
            sanitize("ok\nFAKE level=error\r\x1b[31m"),
            "ok\\nFAKE level=error\\r\\u{1b}[31m"
        );
        let long = "é".repeat(MAX_LOG_LINE + 10);
        assert_eq!(sanitize(&long).chars().count(), MAX_LOG_LINE + 1);
    }

    #[test]
    fn the_meter_stops_at_the_deadline_the_call_count_and_the_data_budget() {
        let mut meter = Meter::new(Instant::now() + Duration::from_secs(60), 10);
        for _ in 0..MAX_CALLS {
            meter.enter().unwrap();
        }
        assert_eq!(meter.enter(), Err(Abort::TooManyCalls(MAX_CALLS)));
        meter.hand_over(10).unwrap();
        assert_eq!(meter.room(), 0);
        assert_eq!(meter.hand_over(1), Err(Abort::TooMuchData(10)));
        let mut late = Meter::new(Instant::now(), 10);
        assert_eq!(late.enter(), Err(Abort::DeadlinePassed));
    }

    #[test]
    fn log_lines_are_limited_per_call_and_per_policy() {
        let rate = LogRate::default();
        let mut meter = Meter::new(Instant::now() + Duration::from_secs(60), 0);
        let written = (0..100).filter(|_| meter.log_line(&rate)).count();
        assert_eq!(written, LOG_LINES_PER_CALL as usize);
        assert_eq!(meter.dropped_lines, 100 - LOG_LINES_PER_CALL);
        // Across calls, the policy's bucket runs dry.
        let mut total = written;
        for _ in 0..20 {
            let mut meter = Meter::new(Instant::now() + Duration::from_secs(60), 0);
            total += (0..LOG_LINES_PER_CALL)
                .filter(|_| meter.log_line(&rate))
                .count();
        }
        assert!(total <= LOG_BURST as usize + 5, "{total}");
    }
}
