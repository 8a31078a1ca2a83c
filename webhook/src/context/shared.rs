//! The ledger shared by several replicas, kept in the apiserver: one
//! ConfigMap per scope holds the scope's reservations, and every change is a
//! compare-and-swap on its `resourceVersion` (create fails if it exists,
//! replace fails if it changed). A replica that loses the race reads again
//! and re-checks; no replica trusts another's memory, and there is no
//! protocol of our own beyond the apiserver's optimistic concurrency.
//!
//! Claims are taken scope by scope in a fixed order; if a later one does not
//! fit, the earlier ones are given back. Reservations lapse by wall-clock
//! expiry only: a replica whose cache already shows the object does not
//! count it, but must not delete it, since another replica's cache may not
//! show it yet.
//!
//! Every apiserver call is bounded by the reserving call's deadline. What a
//! request gives back (it was denied, or its deadline passed after some
//! scopes were taken) is given back by a background thread, so no answer
//! waits for that I/O; if it fails, the reservation lapses at its expiry.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, PostParams};
use serde::{Deserialize, Serialize};

use super::ledger::{self, Decision, Ledger, Request};
use super::{Kind, ObjectKey};

/// Errors of the ledger's storage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The apiserver could not be reached or refused the call.
    #[error("{action} ConfigMap {name}: {source}")]
    Api {
        /// `reading` or `writing`.
        action: &'static str,
        /// The ConfigMap.
        name: String,
        /// kube-rs's error.
        #[source]
        source: kube::Error,
    },
    /// A ConfigMap's data is not reservations (edited by hand?).
    #[error(
        "ConfigMap {name}: {DATA_KEY} is not a list of reservations: {source} (delete it to reset the scope)"
    )]
    Corrupt {
        /// The ConfigMap.
        name: String,
        /// What the parser said.
        #[source]
        source: serde_json::Error,
    },
    /// The deadline passed before the apiserver answered.
    #[error("the deadline passed before the apiserver answered")]
    DeadlinePassed,
}

/// One reservation as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reservation {
    /// The request that made it.
    pub uid: String,
    /// The object (`apiVersion/kind/namespace/name`), when named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// What it holds.
    pub asks: BTreeMap<String, u64>,
    /// Expiry, milliseconds since the Unix epoch.
    pub expires_ms: u64,
}

/// A scope's reservations at one version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Versioned {
    /// The version to compare against (`resourceVersion`); `None` when the
    /// scope has no object yet.
    pub version: Option<String>,
    /// The reservations.
    pub reservations: Vec<Reservation>,
}

/// Compare-and-swap storage of scopes: the apiserver, or a fake in tests.
/// Every call ends by `deadline`.
pub trait Backend: Send + Sync + 'static {
    /// Reads a scope.
    ///
    /// # Errors
    ///
    /// The apiserver could not be reached in time or refused.
    fn load(&self, scope: &str, deadline: Instant) -> Result<Versioned, Error>;

    /// Writes a scope if it is still at `expected` version; `Ok(false)` when
    /// it changed (or was created) meanwhile.
    ///
    /// # Errors
    ///
    /// The apiserver could not be reached in time or refused.
    fn store(
        &self,
        scope: &str,
        expected: Option<&str>,
        reservations: &[Reservation],
        deadline: Instant,
    ) -> Result<bool, Error>;
}

/// Retries per scope before giving up: each lost race means another replica
/// made progress.
const MAX_ATTEMPTS: usize = 16;

/// How long the background thread may take to give one request's
/// reservations back.
const GIVE_BACK_TIME: Duration = Duration::from_secs(5);

/// Requests whose reservations may wait to be given back; beyond that they
/// lapse at their expiry instead.
const GIVE_BACK_QUEUE: usize = 1024;

/// The shared ledger.
pub struct Shared<B> {
    backend: Arc<B>,
    ttl: Duration,
    /// Scopes each recent request reserved in, so that a denied request's
    /// reservations can be given back without reading every scope. A
    /// `std::sync::Mutex`: held only to insert or remove, never across I/O.
    taken: Mutex<HashMap<String, (Instant, Vec<String>)>>,
    /// (uid, scopes) to give back, for the background thread; it ends when
    /// the ledger drops this sender.
    give_back: SyncSender<(String, Vec<String>)>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn object_name(key: &ObjectKey) -> String {
    format!("{}/{}/{}", key.kind, key.namespace, key.name)
}

/// The key back from its stored name (`v1/Pod/ns/name` or
/// `apps/v1/Deployment/ns/name`).
fn object_key(name: &str) -> Option<ObjectKey> {
    let mut parts = name.rsplitn(4, '/');
    let (object, namespace, kind, api_version) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    Some(ObjectKey {
        kind: Kind::new(api_version, kind),
        namespace: namespace.into(),
        name: object.into(),
    })
}

impl<B: Backend> Shared<B> {
    /// A ledger over `backend` whose reservations lapse after `ttl`.
    pub fn new(backend: B, ttl: Duration) -> Self {
        let backend = Arc::new(backend);
        let (give_back, queue) = mpsc::sync_channel::<(String, Vec<String>)>(GIVE_BACK_QUEUE);
        let worker = backend.clone();
        std::thread::Builder::new()
            .name("tollgate-quota-release".into())
            .spawn(move || {
                for (uid, scopes) in queue {
                    let deadline = Instant::now() + GIVE_BACK_TIME;
                    for scope in scopes {
                        if let Err(error) = remove(&*worker, &scope, &uid, deadline) {
                            tracing::warn!(
                                "releasing a reservation (it lapses at its expiry instead): {error}"
                            );
                        }
                    }
                }
            })
            .expect("spawning the quota release thread");
        Shared {
            backend,
            ttl,
            taken: Mutex::default(),
            give_back,
        }
    }

    /// Queues `uid`'s reservations in `scopes` for the background thread.
    fn release_later(&self, uid: &str, scopes: Vec<String>) {
        if !scopes.is_empty() && self.give_back.try_send((uid.to_owned(), scopes)).is_err() {
            tracing::warn!("quota release queue full: a reservation lapses at its expiry instead");
        }
    }

    /// Takes one claim; `Ok(false)` when it does not fit.
    fn take(
        &self,
        request: &Request<'_>,
        claim: &ledger::Claim,
        decision: &mut Decision,
    ) -> Result<bool, ledger::Error> {
        let scope = request.scope(claim);
        let subject = request.subject;
        let mine = subject.object.as_ref().map(object_name);
        for _ in 0..MAX_ATTEMPTS {
            let now = now_ms();
            let mut current = self.backend.load(&scope, request.deadline)?;
            current.reservations.retain(|r| {
                r.expires_ms > now && r.uid != subject.uid && (mine.is_none() || r.object != mine)
            });
            let single = Request {
                claims: std::slice::from_ref(claim),
                ..*request
            };
            let checked = ledger::check(&single, |_, resource| {
                current
                    .reservations
                    .iter()
                    .filter(|r| {
                        ledger::counts(
                            r.object.as_deref().and_then(object_key).as_ref(),
                            request.seen,
                            request.store,
                        )
                    })
                    .map(|r| r.asks.get(resource).copied().unwrap_or(0))
                    .sum()
            });
            decision.held.extend(checked.held);
            if !checked.admitted {
                return Ok(false);
            }
            if subject.dry_run {
                return Ok(true);
            }
            current.reservations.push(Reservation {
                uid: subject.uid.clone(),
                object: mine.clone(),
                asks: claim.asks.clone(),
                expires_ms: now + self.ttl.as_millis() as u64,
            });
            if self.backend.store(
                &scope,
                current.version.as_deref(),
                &current.reservations,
                request.deadline,
            )? {
                return Ok(true);
            }
            decision.held.clear();
        }
        Err(ledger::Error::Contended {
            scope,
            attempts: MAX_ATTEMPTS,
        })
    }
}

impl From<Error> for ledger::Error {
    fn from(error: Error) -> Self {
        match error {
            Error::DeadlinePassed => ledger::Error::DeadlinePassed,
            other => ledger::Error::Unavailable(Box::new(other)),
        }
    }
}

/// Removes request `uid`'s reservations from `scope`.
fn remove<B: Backend>(
    backend: &B,
    scope: &str,
    uid: &str,
    deadline: Instant,
) -> Result<(), ledger::Error> {
    for _ in 0..MAX_ATTEMPTS {
        let mut current = backend.load(scope, deadline)?;
        let before = current.reservations.len();
        current.reservations.retain(|r| r.uid != uid);
        if current.reservations.len() == before
            || backend.store(
                scope,
                current.version.as_deref(),
                &current.reservations,
                deadline,
            )?
        {
            return Ok(());
        }
    }
    Err(ledger::Error::Contended {
        scope: scope.to_owned(),
        attempts: MAX_ATTEMPTS,
    })
}

impl<B: Backend> Ledger for Shared<B> {
    fn reserve(&self, request: &Request<'_>) -> Result<Decision, ledger::Error> {
        let mut claims: Vec<&ledger::Claim> = request.claims.iter().collect();
        // One order for every replica, so two admissions never each hold
        // the scope the other needs.
        claims.sort_by(|a, b| a.scope.cmp(&b.scope));
        let mut decision = Decision {
            admitted: true,
            held: Vec::new(),
        };
        let mut taken = Vec::new();
        for claim in claims {
            match self.take(request, claim, &mut decision) {
                Ok(true) => taken.push(request.scope(claim)),
                outcome => {
                    decision.admitted = false;
                    if !request.subject.dry_run {
                        self.release_later(&request.subject.uid, taken);
                    }
                    outcome?;
                    return Ok(decision);
                }
            }
        }
        if !request.subject.dry_run && !taken.is_empty() {
            let now = Instant::now();
            let mut recent = self.taken.lock().expect("ledger lock poisoned");
            // What has expired is no longer worth giving back.
            recent.retain(|_, (at, _)| now.duration_since(*at) < self.ttl);
            recent.insert(request.subject.uid.clone(), (now, taken));
        }
        Ok(decision)
    }

    fn release(&self, uid: &str) {
        let taken = self.taken.lock().expect("ledger lock poisoned").remove(uid);
        if let Some((_, scopes)) = taken {
            self.release_later(uid, scopes);
        }
    }
}

/// ConfigMaps in one namespace, through kube-rs.
pub struct ConfigMaps {
    api: Api<ConfigMap>,
    runtime: tokio::runtime::Handle,
}

/// The data key holding the reservations' JSON.
const DATA_KEY: &str = "reservations";

impl ConfigMaps {
    /// ConfigMaps in `namespace`; calls block the current worker thread on
    /// `runtime` (policy calls are synchronous).
    pub fn new(client: kube::Client, namespace: &str, runtime: tokio::runtime::Handle) -> Self {
        ConfigMaps {
            api: Api::namespaced(client, namespace),
            runtime,
        }
    }

    fn name(scope: &str) -> String {
        use sha2::{Digest, Sha256};
        let digest = hex::encode(&Sha256::digest(scope.as_bytes())[..10]);
        format!("tollgate-quota-{digest}")
    }

    /// Runs `future` on the runtime from this (synchronous) thread, until
    /// `deadline` at most.
    fn block<T>(&self, deadline: Instant, future: impl Future<Output = T>) -> Result<T, Error> {
        let bounded = tokio::time::timeout_at(deadline.into(), future);
        tokio::task::block_in_place(|| self.runtime.block_on(bounded))
            .map_err(|_| Error::DeadlinePassed)
    }
}

impl Backend for ConfigMaps {
    fn load(&self, scope: &str, deadline: Instant) -> Result<Versioned, Error> {
        let name = Self::name(scope);
        let found = self
            .block(deadline, self.api.get_opt(&name))?
            .map_err(|source| Error::Api {
                action: "reading",
                name: name.clone(),
                source,
            })?;
        let Some(map) = found else {
            return Ok(Versioned::default());
        };
        let text = map
            .data
            .as_ref()
            .and_then(|d| d.get(DATA_KEY))
            .map_or("[]", String::as_str);
        Ok(Versioned {
            version: map.metadata.resource_version.clone(),
            reservations: serde_json::from_str(text)
                .map_err(|source| Error::Corrupt { name, source })?,
        })
    }

    fn store(
        &self,
        scope: &str,
        expected: Option<&str>,
        reservations: &[Reservation],
        deadline: Instant,
    ) -> Result<bool, Error> {
        let name = Self::name(scope);
        let map = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                resource_version: expected.map(str::to_owned),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".to_owned(),
                    "tollgate".to_owned(),
                )])),
                annotations: Some(BTreeMap::from([(
                    "tollgate.dev/quota-scope".to_owned(),
                    scope.to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([(
                DATA_KEY.to_owned(),
                serde_json::to_string(reservations).expect("reservations serialize"),
            )])),
            ..ConfigMap::default()
        };
        let params = PostParams::default();
        let result = match expected {
            None => self.block(deadline, self.api.create(&params, &map))?,
            Some(_) => self.block(deadline, self.api.replace(&name, &params, &map))?,
        };
        match result {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(source) => Err(Error::Api {
                action: "writing",
                name,
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::context::{Store, Subject};

    /// The apiserver's compare-and-swap, in memory: versions count writes,
    /// and a write at a stale version fails as a 409 would. Writes to the
    /// `slow` scope take its delay, and give up at the deadline as a
    /// bounded call would.
    #[derive(Default)]
    struct FakeApiserver {
        scopes: Mutex<BTreeMap<String, (u64, Vec<Reservation>)>>,
        conflicts: AtomicUsize,
        slow: Mutex<Option<(String, Duration)>>,
    }

    impl FakeApiserver {
        fn reservations(&self, scope: &str) -> usize {
            self.scopes
                .lock()
                .unwrap()
                .get(scope)
                .map_or(0, |(_, r)| r.len())
        }
    }

    impl Backend for Arc<FakeApiserver> {
        fn load(&self, scope: &str, _deadline: Instant) -> Result<Versioned, Error> {
            let scopes = self.scopes.lock().unwrap();
            Ok(scopes
                .get(scope)
                .map_or_else(Versioned::default, |(v, r)| Versioned {
                    version: Some(v.to_string()),
                    reservations: r.clone(),
                }))
        }

        fn store(
            &self,
            scope: &str,
            expected: Option<&str>,
            reservations: &[Reservation],
            deadline: Instant,
        ) -> Result<bool, Error> {
            let delay = match &*self.slow.lock().unwrap() {
                Some((slow, delay)) if slow == scope => *delay,
                _ => Duration::ZERO,
            };
            if Instant::now() + delay > deadline {
                std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
                return Err(Error::DeadlinePassed);
            }
            std::thread::sleep(delay);
            // Widen the window between load and store, as a network would.
            std::thread::yield_now();
            let mut scopes = self.scopes.lock().unwrap();
            let current = scopes.get(scope).map(|(v, _)| v.to_string());
            if current.as_deref() != expected {
                self.conflicts.fetch_add(1, Ordering::Relaxed);
                return Ok(false);
            }
            let version = scopes.get(scope).map_or(1, |(v, _)| v + 1);
            scopes.insert(scope.into(), (version, reservations.to_vec()));
            Ok(true)
        }
    }

    fn claims(scopes: &[(&str, u64)]) -> Vec<ledger::Claim> {
        scopes
            .iter()
            .map(|(scope, limit)| ledger::Claim {
                scope: (*scope).into(),
                asks: BTreeMap::from([("nvidia.com/gpu".into(), 1)]),
                limits: BTreeMap::from([("nvidia.com/gpu".into(), *limit)]),
                usage: BTreeMap::new(),
            })
            .collect()
    }

    fn reserve_by(
        ledger: &dyn Ledger,
        store: &Store,
        name: &str,
        claims: &[ledger::Claim],
        dry_run: bool,
        deadline: Instant,
    ) -> Result<Decision, ledger::Error> {
        let subject = Subject {
            uid: format!("uid-{name}"),
            object: Some(ObjectKey {
                kind: Kind::new("v1", "Pod"),
                namespace: "ml".into(),
                name: name.into(),
            }),
            dry_run,
        };
        ledger.reserve(&Request {
            policy: "quota",
            claims,
            subject: &subject,
            seen: 0,
            store,
            deadline,
        })
    }

    fn reserve(
        ledger: &dyn Ledger,
        store: &Store,
        name: &str,
        claims: &[ledger::Claim],
        dry_run: bool,
    ) -> Decision {
        let deadline = Instant::now() + Duration::from_secs(60);
        reserve_by(ledger, store, name, claims, dry_run, deadline).unwrap()
    }

    /// Waits (a few seconds at most) for the background thread to give
    /// reservations back.
    fn eventually(condition: impl Fn() -> bool) {
        let until = Instant::now() + Duration::from_secs(5);
        while !condition() {
            assert!(Instant::now() < until, "never happened");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn replicas_racing_on_one_scope_admit_exactly_the_limit() {
        let apiserver = Arc::new(FakeApiserver::default());
        let store = Arc::new(Store::default());
        let admitted: usize = (0..4)
            .map(|replica| {
                let ledger = Shared::new(apiserver.clone(), Duration::from_secs(60));
                let store = store.clone();
                std::thread::spawn(move || {
                    (0..40)
                        .filter(|i| {
                            reserve(
                                &ledger,
                                &store,
                                &format!("r{replica}-{i}"),
                                &claims(&[("team/vision", 25)]),
                                false,
                            )
                            .admitted
                        })
                        .count()
                })
            })
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(admitted, 25);
        assert_eq!(apiserver.reservations("quota/team/vision"), 25);
    }

    #[test]
    fn a_claim_that_does_not_fit_gives_back_the_ones_taken() {
        let apiserver = Arc::new(FakeApiserver::default());
        let ledger = Shared::new(apiserver.clone(), Duration::from_secs(60));
        let store = Store::default();
        assert!(reserve(&ledger, &store, "a", &claims(&[("ns/b", 1)]), false).admitted);
        // ns/a sorts first and fits; ns/b is full: both must end unreserved.
        let refused = reserve(
            &ledger,
            &store,
            "c",
            &claims(&[("ns/b", 1), ("ns/a", 5)]),
            false,
        );
        assert!(!refused.admitted);
        eventually(|| apiserver.reservations("quota/ns/a") == 0);
        assert_eq!(apiserver.reservations("quota/ns/b"), 1);
    }

    #[test]
    fn a_slow_apiserver_is_bounded_by_the_deadline_and_what_was_taken_is_given_back() {
        let apiserver = Arc::new(FakeApiserver::default());
        let ledger = Shared::new(apiserver.clone(), Duration::from_secs(60));
        let store = Store::default();
        // The first scope is taken at once; writing the second takes longer
        // than the time left.
        *apiserver.slow.lock().unwrap() = Some(("quota/ns/b".into(), Duration::from_secs(10)));
        let started = Instant::now();
        let deadline = started + Duration::from_millis(300);
        let two = claims(&[("ns/a", 5), ("ns/b", 5)]);
        let slow = reserve_by(&ledger, &store, "p", &two, false, deadline);
        assert!(
            matches!(slow, Err(ledger::Error::DeadlinePassed)),
            "{slow:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        eventually(|| apiserver.reservations("quota/ns/a") == 0);
        assert_eq!(apiserver.reservations("quota/ns/b"), 0);
    }

    #[test]
    fn denied_requests_are_released_in_the_background() {
        let apiserver = Arc::new(FakeApiserver::default());
        let ledger = Shared::new(apiserver.clone(), Duration::from_secs(60));
        let store = Store::default();
        assert!(reserve(&ledger, &store, "a", &claims(&[("ns/a", 1)]), false).admitted);
        ledger.release("uid-a");
        eventually(|| apiserver.reservations("quota/ns/a") == 0);
    }

    #[test]
    fn dry_runs_and_expired_reservations_hold_nothing() {
        let apiserver = Arc::new(FakeApiserver::default());
        let ledger = Shared::new(apiserver.clone(), Duration::from_millis(400));
        let store = Store::default();
        for i in 0..3 {
            assert!(
                reserve(
                    &ledger,
                    &store,
                    &format!("d{i}"),
                    &claims(&[("ns/a", 1)]),
                    true
                )
                .admitted
            );
        }
        assert!(apiserver.scopes.lock().unwrap().is_empty());
        assert!(reserve(&ledger, &store, "a", &claims(&[("ns/a", 1)]), false).admitted);
        assert!(!reserve(&ledger, &store, "b", &claims(&[("ns/a", 1)]), false).admitted);
        std::thread::sleep(Duration::from_millis(500));
        assert!(reserve(&ledger, &store, "b", &claims(&[("ns/a", 1)]), false).admitted);
    }

    #[test]
    fn stored_object_names_read_back() {
        let key = ObjectKey {
            kind: Kind::new("apps/v1", "Deployment"),
            namespace: "ml".into(),
            name: "train".into(),
        };
        assert_eq!(object_key(&object_name(&key)), Some(key));
    }
}
