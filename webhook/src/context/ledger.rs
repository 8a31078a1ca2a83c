//! The quota ledger: an atomic check-and-reserve, so that admissions running
//! at the same time cannot together exceed a limit.
//!
//! A policy computes a scope's usage from the cache and asks the ledger to
//! admit what an object asks on top of it. The ledger adds what other
//! admissions hold and are not yet in that usage: a reservation counts until
//! its object was in the cache when the policy read it (its `since`
//! generation is at most the call's oldest read), and lapses after a TTL
//! (the object never came: another webhook refused it, or the apiserver
//! failed). Dry runs are checked and never reserve.
//!
//! Claims and decisions are the SDK's types ([`Claim`], [`Decision`]): the
//! same shapes the policy builds and reads.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

pub use tollgate_sdk::quota::{Claim, Decision, Held};

use super::{Store, Subject};

/// Why the ledger could not answer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The ledger's backing store could not be read or written.
    #[error("quota ledger unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Other admissions kept changing the scope.
    #[error(
        "quota scope {scope:?}: gave up after {attempts} conflicting updates (too many admissions at once; retry)"
    )]
    Contended {
        /// The scope.
        scope: String,
        /// Attempts made.
        attempts: usize,
    },
    /// The call's deadline passed before the ledger answered; what was
    /// taken is given back.
    #[error("the deadline passed while reserving quota")]
    DeadlinePassed,
}

/// A reserve call.
pub struct Request<'a> {
    /// The policy (scopes are prefixed with it).
    pub policy: &'a str,
    /// The claims, all or nothing.
    pub claims: &'a [Claim],
    /// The object and request.
    pub subject: &'a Subject,
    /// The oldest cache generation the policy read.
    pub seen: u64,
    /// The cache, to tell whether a reservation's object was counted.
    pub store: &'a Arc<Store>,
    /// When the answer is no longer wanted: I/O stops there.
    pub deadline: Instant,
}

impl Request<'_> {
    /// The ledger's name for a claim's scope.
    pub fn scope(&self, claim: &Claim) -> String {
        format!("{}/{}", self.policy, claim.scope)
    }
}

/// Check-and-reserve.
pub trait Ledger: Send + Sync {
    /// Checks every claim and, when all fit and the request is not a dry
    /// run, reserves their asks. The future ends by the request's deadline.
    ///
    /// # Errors
    ///
    /// When the ledger's backing store cannot be reached in time.
    fn reserve<'a>(&'a self, request: Request<'a>) -> BoxFuture<'a, Result<Decision, Error>>;

    /// Releases what request `uid` reserved (its admission was denied),
    /// without waiting for I/O.
    fn release(&self, uid: &str);
}

/// Whether `held` still counts for a policy that read the cache at
/// generation `seen`: not once its object was in the cache by then.
pub fn counts(object: Option<&super::ObjectKey>, seen: u64, store: &Store) -> bool {
    object.is_none_or(|o| {
        store
            .since(o.kind.group(), &o.kind.kind, &o.namespace, &o.name)
            .is_none_or(|since| since > seen)
    })
}

/// Adds claim by claim what others hold to the usage and checks the asks.
/// `held_in(scope, resource)` is what others hold.
pub fn check(request: &Request<'_>, held_in: impl Fn(&str, &str) -> u64) -> Decision {
    let mut decision = Decision {
        admitted: true,
        held: Vec::new(),
    };
    for claim in request.claims {
        let scope = request.scope(claim);
        for (resource, ask) in &claim.asks {
            let held = held_in(&scope, resource);
            if held > 0 {
                decision.held.push(Held {
                    scope: claim.scope.clone(),
                    resource: resource.clone(),
                    amount: held,
                });
            }
            let used = amount(&claim.usage, resource);
            if claim
                .limits
                .get(resource)
                .is_some_and(|limit| used.saturating_add(held).saturating_add(*ask) > *limit)
            {
                decision.admitted = false;
            }
        }
    }
    decision
}

fn amount(amounts: &BTreeMap<String, u64>, resource: &str) -> u64 {
    amounts.get(resource).copied().unwrap_or(0)
}

/// How long a reservation whose object appeared is kept: no policy call
/// that read the cache before it appeared can still be running (calls are
/// capped at 30 s).
const APPEARED_GRACE: Duration = Duration::from_secs(30);

struct Hold {
    uid: String,
    object: Option<super::ObjectKey>,
    asks: BTreeMap<String, u64>,
    expires: Instant,
    /// When a check first found its object in the cache.
    appeared: Option<Instant>,
}

/// The ledger of one process (one replica, or `tollgate run`).
pub struct Local {
    ttl: Duration,
    scopes: Mutex<HashMap<String, Vec<Hold>>>,
}

impl Default for Local {
    fn default() -> Self {
        Local::new(Duration::from_secs(60))
    }
}

impl Local {
    /// A ledger whose reservations lapse after `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Local {
            ttl,
            scopes: Mutex::default(),
        }
    }

    /// What is reserved, as (scope, resource, amount).
    #[cfg(test)]
    pub fn reserved(&self) -> Vec<(String, String, u64)> {
        let scopes = self.scopes.lock().expect("ledger lock poisoned");
        let now = Instant::now();
        let mut all: Vec<_> = scopes
            .iter()
            .flat_map(|(scope, held)| {
                held.iter()
                    .filter(move |h| h.expires > now)
                    .flat_map(move |h| {
                        h.asks
                            .iter()
                            .map(move |(r, a)| (scope.clone(), r.clone(), *a))
                    })
            })
            .collect();
        all.sort();
        all
    }
}

impl Ledger for Local {
    fn reserve<'a>(&'a self, request: Request<'a>) -> BoxFuture<'a, Result<Decision, Error>> {
        Box::pin(std::future::ready(Ok(self.reserve_now(&request))))
    }

    fn release(&self, uid: &str) {
        let mut scopes = self.scopes.lock().expect("ledger lock poisoned");
        for held in scopes.values_mut() {
            held.retain(|h| h.uid != uid);
        }
    }
}

impl Local {
    /// Check-and-reserve under the lock: nothing here waits.
    fn reserve_now(&self, request: &Request<'_>) -> Decision {
        let now = Instant::now();
        let mut scopes = self.scopes.lock().expect("ledger lock poisoned");
        for claim in request.claims {
            if let Some(held) = scopes.get_mut(&request.scope(claim)) {
                held.retain_mut(|h| {
                    if h.appeared.is_none() && !counts(h.object.as_ref(), u64::MAX, request.store) {
                        h.appeared = Some(now);
                    }
                    h.expires > now && h.appeared.is_none_or(|t| now - t < APPEARED_GRACE)
                });
            }
        }
        let subject = request.subject;
        // Another call about the same object (a retry) replaces its own
        // reservation rather than adding to it.
        let others = |h: &&Hold| {
            h.uid != subject.uid && (subject.object.is_none() || h.object != subject.object)
        };
        let decision = check(request, |scope, resource| {
            scopes
                .get(scope)
                .into_iter()
                .flatten()
                .filter(others)
                .filter(|h| counts(h.object.as_ref(), request.seen, request.store))
                .map(|h| amount(&h.asks, resource))
                .sum()
        });
        if decision.admitted && !subject.dry_run {
            for claim in request.claims {
                let held = scopes.entry(request.scope(claim)).or_default();
                held.retain(|h| others(&h));
                held.push(Hold {
                    uid: subject.uid.clone(),
                    object: subject.object.clone(),
                    asks: claim.asks.clone(),
                    expires: now + self.ttl,
                    appeared: None,
                });
            }
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::context::store::Incoming;
    use crate::context::{Kind, ObjectKey};

    fn pod(name: &str) -> ObjectKey {
        ObjectKey {
            kind: Kind::new("v1", "Pod"),
            namespace: "ml".into(),
            name: name.into(),
        }
    }

    fn subject(name: &str, dry_run: bool) -> Subject {
        Subject {
            uid: format!("uid-{name}"),
            object: Some(pod(name)),
            dry_run,
        }
    }

    fn gpus(amount: u64) -> BTreeMap<String, u64> {
        BTreeMap::from([("nvidia.com/gpu".to_owned(), amount)])
    }

    fn claim(used: u64) -> Vec<Claim> {
        vec![Claim {
            scope: "namespace/ml".into(),
            asks: gpus(1),
            limits: gpus(2),
            usage: gpus(used),
        }]
    }

    fn held(amount: u64) -> Vec<Held> {
        vec![Held {
            scope: "namespace/ml".into(),
            resource: "nvidia.com/gpu".into(),
            amount,
        }]
    }

    fn reserve(
        ledger: &Local,
        store: &Arc<Store>,
        name: &str,
        used: u64,
        seen: u64,
        dry_run: bool,
    ) -> Decision {
        ledger.reserve_now(&Request {
            policy: "quota",
            claims: &claim(used),
            subject: &subject(name, dry_run),
            seen,
            store,
            deadline: Instant::now() + Duration::from_secs(60),
        })
    }

    #[test]
    fn reservations_count_until_the_object_was_read_from_the_cache() {
        let ledger = Local::default();
        let store = Arc::new(Store::default());
        assert!(reserve(&ledger, &store, "a", 0, 0, false).admitted);
        assert!(reserve(&ledger, &store, "b", 0, 0, false).admitted);
        let third = reserve(&ledger, &store, "c", 0, 0, false);
        assert!(!third.admitted);
        assert_eq!(third.held, held(2));
        // Pod a appears in the cache (generation 1).
        store.apply(Incoming {
            kind: Kind::new("v1", "Pod"),
            value: json!({"metadata": {"name": "a", "namespace": "ml"}}),
        });
        // A policy that read before it appeared did not count it: a still counts.
        assert!(!reserve(&ledger, &store, "c", 0, 0, false).admitted);
        // One that read after counted it in its usage: a no longer counts twice.
        let after = reserve(&ledger, &store, "c", 1, 1, false);
        assert!(!after.admitted, "a (usage) + b (held) + c = 3 > 2");
        assert_eq!(after.held, held(1));
    }

    #[test]
    fn dry_runs_check_without_reserving_and_retries_replace() {
        let ledger = Local::default();
        let store = Arc::new(Store::default());
        for _ in 0..5 {
            assert!(reserve(&ledger, &store, "a", 0, 0, true).admitted);
        }
        assert!(ledger.reserved().is_empty());
        assert!(reserve(&ledger, &store, "a", 0, 0, false).admitted);
        assert!(
            reserve(&ledger, &store, "a", 0, 0, false).admitted,
            "a retry of a"
        );
        assert_eq!(ledger.reserved().len(), 1);
    }

    #[test]
    fn release_frees_only_the_denied_requests_own_reservations() {
        let ledger = Local::default();
        let store = Arc::new(Store::default());
        assert!(reserve(&ledger, &store, "a", 0, 0, false).admitted);
        assert!(reserve(&ledger, &store, "b", 0, 0, false).admitted);
        ledger.release("uid-c");
        assert_eq!(ledger.reserved().len(), 2);
        ledger.release("uid-a");
        assert_eq!(ledger.reserved().len(), 1);
        assert!(reserve(&ledger, &store, "c", 0, 0, false).admitted);
    }

    #[test]
    fn reservations_lapse_after_the_ttl() {
        let ledger = Local::new(Duration::from_millis(400));
        let store = Arc::new(Store::default());
        assert!(reserve(&ledger, &store, "a", 0, 0, false).admitted);
        assert!(reserve(&ledger, &store, "b", 0, 0, false).admitted);
        assert!(!reserve(&ledger, &store, "c", 0, 0, false).admitted);
        std::thread::sleep(Duration::from_millis(500));
        assert!(reserve(&ledger, &store, "c", 0, 0, false).admitted);
    }

    #[test]
    fn parallel_reservations_never_exceed_the_limit() {
        let ledger = Arc::new(Local::default());
        let store = Arc::new(Store::default());
        let admitted: usize = (0..8)
            .map(|t| {
                let (ledger, store) = (ledger.clone(), store.clone());
                std::thread::spawn(move || {
                    (0..50)
                        .filter(|i| {
                            reserve(&ledger, &store, &format!("p{t}-{i}"), 0, 0, false).admitted
                        })
                        .count()
                })
            })
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(admitted, 2);
    }
}
