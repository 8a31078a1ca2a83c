//! A policy that misbehaves as its settings say, for testing the sandbox:
//! the host must contain each behaviour within the policy's limits, name it
//! in the answer, and keep answering other requests.

use std::sync::atomic::{AtomicU32, Ordering};

use serde::Deserialize;
use serde_json::json;
use tollgate_sdk::{Error, Policy, Request, Verdict};

/// What to do on `evaluate`.
#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Behaviour {
    /// Allow, reporting how many calls this instance has seen (always 1 when
    /// the host gives every call a fresh instance).
    #[default]
    Count,
    /// Allow, reporting how many times this instance has read its settings
    /// (1 when the host prepared it with the call's settings, or did not
    /// prepare it; 2 when it prepared it with others).
    Reads,
    /// Loop forever.
    Loop,
    /// Allocate until memory runs out.
    Allocate,
    /// Panic (a trap).
    Trap,
    /// Recurse until the stack overflows.
    StackOverflow,
    /// Return a warning of 16 MiB.
    HugeOutput,
    /// Return an error instead of a verdict.
    Error,
    /// Add a label (a mutation).
    Mutate,
    /// Set the object's `spec.priorityClassName` (fixed after a Pod's
    /// creation).
    MutateSpec,
    /// Loop forever in `validate-settings`.
    LoopInSettings,
    /// Return `count` empty warnings (ten million by default).
    EmptyWarnings,
    /// Return a denial message of 100 MiB.
    HugeMessage,
    /// Return a "mutated object" that is not JSON.
    MutateGarbage,
    /// Return the object renamed (a mutation may not change identity).
    MutateIdentity,
    /// Return a denial with HTTP status 200.
    BadCode,
    /// Return the same audit annotation key twice.
    DuplicateAnnotations,
    /// Write log lines until stopped.
    LogFlood,
    /// List cluster objects until stopped.
    ListFlood,
    /// Reserve quota until stopped.
    ReserveFlood,
    /// Build and drop a 1 MiB buffer a thousand times, as a policy that
    /// makes large temporaries in turn does: allowed, when freed memory is
    /// reused.
    Churn,
}

/// Settings.
#[derive(Debug, Default, Deserialize)]
#[serde(from = "Stored")]
pub struct Settings {
    /// The behaviour.
    pub behaviour: Behaviour,
    /// How many, for behaviours that repeat something.
    pub count: Option<usize>,
}

/// Settings as written; each read is counted.
#[derive(Deserialize)]
struct Stored {
    #[serde(default)]
    behaviour: Behaviour,
    #[serde(default)]
    count: Option<usize>,
}

static READS: AtomicU32 = AtomicU32::new(0);

impl From<Stored> for Settings {
    fn from(stored: Stored) -> Self {
        READS.fetch_add(1, Ordering::Relaxed);
        Settings {
            behaviour: stored.behaviour,
            count: stored.count,
        }
    }
}

/// The policy.
pub struct Misbehave;

static CALLS: AtomicU32 = AtomicU32::new(0);

#[inline(never)]
#[allow(unconditional_recursion, reason = "overflowing the stack is the point")]
fn recurse(depth: u64) -> u64 {
    // `black_box` keeps LLVM from turning the recursion into a loop.
    std::hint::black_box(recurse(std::hint::black_box(depth + 1))) ^ depth
}

fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

impl Policy for Misbehave {
    type Settings = Settings;

    fn validate_settings(settings: &Settings) -> Result<(), String> {
        if settings.behaviour == Behaviour::LoopInSettings {
            spin();
        }
        Ok(())
    }

    fn evaluate(request: &Request<'_>, settings: &Settings) -> tollgate_sdk::Result<Verdict> {
        match settings.behaviour {
            Behaviour::Count | Behaviour::LoopInSettings => {
                let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
                Ok(Verdict::allow().annotate("calls", calls.to_string()))
            }
            Behaviour::Reads => Ok(Verdict::allow()
                .annotate("settings-reads", READS.load(Ordering::Relaxed).to_string())),
            Behaviour::Loop => spin(),
            Behaviour::Allocate => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                }
            }
            Behaviour::Trap => panic!("misbehave: trap on purpose"),
            Behaviour::StackOverflow => {
                let n = recurse(0);
                Ok(Verdict::deny(format!("unreachable {n}")))
            }
            Behaviour::HugeOutput => Ok(Verdict::allow().warn("x".repeat(16 << 20))),
            Behaviour::Error => Err(Error("misbehave: no verdict on purpose".into())),
            Behaviour::Churn => {
                // Each round keeps a small note made after its buffer, so the
                // freed buffer is never the latest block.
                let mut notes = Vec::with_capacity(1000);
                for round in 0..1000u32 {
                    let buffer = std::hint::black_box(vec![round as u8; 1 << 20]);
                    notes.push(format!("{}", buffer.len() >> 20));
                }
                Ok(Verdict::allow().annotate("churned-mib", notes.len().to_string()))
            }
            Behaviour::EmptyWarnings => Ok(Verdict {
                warnings: vec![String::new(); settings.count.unwrap_or(10_000_000)],
                ..Verdict::allow()
            }),
            Behaviour::HugeMessage => Ok(Verdict::deny("m".repeat(100 << 20))),
            Behaviour::MutateGarbage => Ok(Verdict::mutate_json("{\"metadata\": ".into())),
            Behaviour::MutateIdentity => {
                let mut object = request.object()?.clone();
                object["metadata"]["name"] = json!("someone-else");
                Ok(Verdict::mutate(object))
            }
            Behaviour::BadCode => Ok(Verdict::deny("no").with_code(200)),
            Behaviour::DuplicateAnnotations => {
                Ok(Verdict::allow().annotate("same", "1").annotate("same", "2"))
            }
            Behaviour::LogFlood => loop {
                tollgate_sdk::log::warn("misbehave: flooding the log\nwith a forged line");
            },
            Behaviour::ListFlood => loop {
                std::hint::black_box(tollgate_sdk::context::list("v1", "Pod", "", "")?);
            },
            Behaviour::ReserveFlood => {
                let claim = tollgate_sdk::quota::Claim {
                    scope: "flood".into(),
                    asks: [("nvidia.com/gpu".to_owned(), 1)].into(),
                    limits: [("nvidia.com/gpu".to_owned(), u64::MAX)].into(),
                    usage: Default::default(),
                };
                loop {
                    std::hint::black_box(tollgate_sdk::quota::reserve(std::slice::from_ref(
                        &claim,
                    ))?);
                }
            }
            Behaviour::Mutate => {
                let mut object = request.object()?.clone();
                object["metadata"]["labels"] = json!({"misbehave": "was-here"});
                Ok(Verdict::mutate(object))
            }
            Behaviour::MutateSpec => {
                let mut object = request.object()?.clone();
                object["spec"]["priorityClassName"] = json!("misbehave");
                Ok(Verdict::mutate(object))
            }
        }
    }
}

tollgate_sdk::export!(Misbehave);
