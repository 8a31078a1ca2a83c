//! What one client may cost the server: time to send headers and body, bytes
//! buffered, connections, and the request's whole deadline.
//!
//! The deadline of an admission request is the apiserver's `?timeout=`
//! (the webhook's `timeoutSeconds`) minus a margin for the answer's way
//! back, capped by `--request-timeout`: every policy's own deadline is cut
//! to it, and what has not run by then gets its `failurePolicy`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The apiserver's limit on a request body, and so on an object.
pub const APISERVER_OBJECT_BYTES: usize = 3 << 20;

/// Largest request body accepted: an UPDATE review carries the object and
/// the old object, each up to the apiserver's limit, plus the envelope
/// (user info, options).
pub const MAX_BODY_BYTES: usize = 2 * APISERVER_OBJECT_BYTES + (1 << 20);

/// The server's limits (all configurable on `tollgate serve`).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Time a client has to send a request's headers (HTTP/1.1), and to
    /// finish the TLS handshake.
    pub header_read_timeout: Duration,
    /// Time a client has to send a request's body.
    pub body_read_timeout: Duration,
    /// Connections served at once; more wait in the listen queue.
    pub max_connections: usize,
    /// Request body bytes buffered at once across all connections; a body
    /// waits (within its deadline) for room.
    pub max_buffered_bytes: usize,
    /// The longest a request may take, whatever its `?timeout=` says.
    pub max_request_timeout: Duration,
    /// Taken off `?timeout=`, so the answer reaches the apiserver in time.
    pub timeout_margin: Duration,
    /// Policy evaluations running at once (one per core by default).
    pub evaluation_threads: usize,
    /// HTTP/2 streams one connection may have open.
    pub max_concurrent_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(5),
            body_read_timeout: Duration::from_secs(10),
            max_connections: 1024,
            max_buffered_bytes: 256 << 20,
            max_request_timeout: Duration::from_secs(10),
            timeout_margin: Duration::from_millis(250),
            evaluation_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            max_concurrent_streams: 128,
        }
    }
}

/// `timeout`, shortened by up to a fifth, differently for each call: clients
/// that started together (a slowloris flood) are then cut off over a
/// spread of time rather than in one instant, and do not all reconnect, and
/// handshake, at once. Never longer than configured.
pub fn spread(timeout: Duration) -> Duration {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    // Fibonacci hashing: consecutive calls land far apart in [0, 1).
    let turn = CALLS
        .fetch_add(1, Ordering::Relaxed)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let fraction = (turn >> 11) as f64 / (1u64 << 53) as f64;
    timeout.mul_f64(1.0 - 0.2 * fraction)
}

/// A `?timeout=` that is not a duration.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid timeout {0:?} in the query: write a duration such as 10s or 1m0s (the apiserver sends the webhook's timeoutSeconds)"
)]
pub struct BadTimeout(pub String);

impl Limits {
    /// The deadline of a request that arrived at `arrived` with this query
    /// string.
    ///
    /// # Errors
    ///
    /// A `timeout` parameter that is not a duration.
    pub fn deadline(&self, arrived: Instant, query: Option<&str>) -> Result<Instant, BadTimeout> {
        let asked = query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .find_map(|pair| pair.strip_prefix("timeout="))
            .map(|text| parse_go_duration(text).ok_or_else(|| BadTimeout(text.to_owned())))
            .transpose()?;
        let timeout = match asked {
            Some(asked) => asked
                .saturating_sub(self.timeout_margin)
                .min(self.max_request_timeout),
            None => self.max_request_timeout,
        };
        Ok(arrived + timeout)
    }
}

/// Parses a duration as Go prints it (`10s`, `1m0s`, `1.5s`, `500ms`,
/// `1h2m3.5s`), which is how the apiserver writes `?timeout=`.
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    const UNITS: [(&str, f64); 7] = [
        ("ns", 1e-9),
        ("us", 1e-6),
        ("µs", 1e-6),
        ("ms", 1e-3),
        ("s", 1.0),
        ("m", 60.0),
        ("h", 3600.0),
    ];
    if text.is_empty() || text.len() > 64 {
        return None;
    }
    let mut rest = text;
    let mut seconds = 0.0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        // The longest unit that matches (`ms` before `m`).
        let (unit, scale) = UNITS
            .iter()
            .filter(|(unit, _)| rest.starts_with(unit))
            .max_by_key(|(unit, _)| unit.len())?;
        rest = &rest[unit.len()..];
        seconds += number * scale;
    }
    Duration::try_from_secs_f64(seconds).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_timeouts_stay_within_a_fifth_below_and_differ() {
        let timeout = Duration::from_secs(10);
        let spread: Vec<Duration> = (0..100).map(|_| spread(timeout)).collect();
        assert!(
            spread
                .iter()
                .all(|t| *t <= timeout && *t >= timeout.mul_f64(0.8))
        );
        let (low, high) = (spread.iter().min().unwrap(), spread.iter().max().unwrap());
        assert!(*high - *low > Duration::from_secs(1), "{low:?} to {high:?}");
    }

    #[test]
    fn parses_durations_as_go_prints_them() {
        let cases = [
            ("10s", 10_000),
            ("1m0s", 60_000),
            ("1.5s", 1_500),
            ("500ms", 500),
            ("1h2m3.5s", 3_723_500),
            ("250000us", 250),
            ("0s", 0),
        ];
        for (text, ms) in cases {
            assert_eq!(
                parse_go_duration(text),
                Some(Duration::from_millis(ms)),
                "{text}"
            );
        }
        for bad in ["", "10", "s", "ten s", "1x", "-1s", "1e400s"] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_deadline_is_the_apiservers_timeout_less_a_margin_capped_by_the_maximum() {
        let limits = Limits::default();
        let now = Instant::now();
        assert_eq!(
            limits.deadline(now, Some("timeout=2s")).unwrap(),
            now + Duration::from_millis(1750)
        );
        assert_eq!(
            limits.deadline(now, Some("a=b&timeout=30s")).unwrap(),
            now + Duration::from_secs(10),
            "capped by --request-timeout"
        );
        assert_eq!(
            limits.deadline(now, None).unwrap(),
            now + Duration::from_secs(10)
        );
        assert_eq!(
            limits.deadline(now, Some("timeout=100ms")).unwrap(),
            now,
            "less than the margin leaves no time"
        );
        assert!(
            limits
                .deadline(now, Some("timeout=soon"))
                .unwrap_err()
                .to_string()
                .starts_with("invalid timeout \"soon\"")
        );
    }
}
