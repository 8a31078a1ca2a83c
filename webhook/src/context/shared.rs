//! The ledger shared by several replicas, kept in the apiserver: one
//! ConfigMap per scope holds the scope's reservations, and every change is a
//! compare-and-swap on its `resourceVersion` (create fails if it exists,
//! replace fails if it changed). A replica that loses the race reads again
//! and re-checks; no replica trusts another's memory, and there is no
//! protocol of our own beyond the apiserver's optimistic concurrency.
//!
//! Group commit: each replica runs one committer per scope. Claims that
//! arrive while a round trip is in flight wait in the scope's queue, and the
//! next round decides them all, in arrival order, against the scope as last
//! written and stores the result in one compare-and-swap. Under a burst, one
//! write admits every claim that arrived meanwhile, instead of one write per
//! claim queueing behind the others. A round starts from the scope as this
//! replica last wrote it (no read); a conflict means another replica wrote,
//! and the round reads and decides again. A refusal is only ever given
//! against a fresh read, so a stale view can delay an admission but never
//! refuse one that fits. Releases (a denied request's reservations) go
//! through the same queue.
//!
//! Claims over several scopes are taken scope by scope in a fixed order; if
//! a later one does not fit, the earlier ones are given back. Reservations
//! lapse by wall-clock expiry: a replica whose cache already shows the
//! object does not count it, but must not delete it, since another
//! replica's cache may not show it yet. A sweep deletes the ConfigMaps
//! whose reservations have all lapsed (scopes no longer used, namespaces
//! gone), so none is left behind.
//!
//! Every apiserver call is bounded by a deadline, and a caller never waits
//! past its own: its claim is then given back by the committer if it was
//! written, or never written if its round had not started.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams, Preconditions};
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use super::ledger::{self, Decision, Ledger, Request};
use super::{Kind, ObjectKey, Store, Subject};

/// Errors of the ledger's storage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The apiserver could not be reached or refused the call.
    #[error("{action} ConfigMap {name}: {source}")]
    Api {
        /// `reading`, `writing`, `listing` or `deleting`.
        action: &'static str,
        /// The ConfigMap (the namespace, when listing).
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
/// Callers bound every call with their deadline.
pub trait Backend: Send + Sync + 'static {
    /// Reads a scope.
    ///
    /// # Errors
    ///
    /// The apiserver could not be reached or refused.
    fn load(&self, scope: &str) -> impl Future<Output = Result<Versioned, Error>> + Send;

    /// Writes a scope if it is still at `expected` version: its new version,
    /// or `None` when it changed (or was created, or deleted) meanwhile.
    ///
    /// # Errors
    ///
    /// The apiserver could not be reached or refused.
    fn store(
        &self,
        scope: &str,
        expected: Option<&str>,
        reservations: &[Reservation],
    ) -> impl Future<Output = Result<Option<String>, Error>> + Send;

    /// Every stored scope.
    ///
    /// # Errors
    ///
    /// The apiserver could not be reached or refused.
    fn scopes(&self) -> impl Future<Output = Result<Vec<(String, Versioned)>, Error>> + Send;

    /// Deletes a scope if it is still at `version` (else leaves it).
    ///
    /// # Errors
    ///
    /// The apiserver could not be reached or refused.
    fn delete(&self, scope: &str, version: &str) -> impl Future<Output = Result<(), Error>> + Send;
}

/// Attempts per batch before giving up: each lost race means another
/// replica made progress. The callers' deadlines usually end a batch first;
/// this bounds one whose callers wait long.
const MAX_ATTEMPTS: usize = 64;

/// How long giving back one round's reservations may take.
const GIVE_BACK_TIME: Duration = Duration::from_secs(5);

/// The shared ledger.
pub struct Shared<B> {
    inner: Arc<Inner<B>>,
}

struct Inner<B> {
    backend: B,
    ttl: Duration,
    runtime: Handle,
    /// Each scope's queue and committer state. A `std::sync::Mutex`: held
    /// only to queue or take work, never across I/O.
    scopes: Mutex<HashMap<String, Queue>>,
    /// Scopes each recent request reserved in, so that a denied request's
    /// reservations can be given back without reading every scope.
    taken: Mutex<HashMap<String, (Instant, Vec<String>)>>,
}

/// One scope's work, as its committer finds it.
#[derive(Default)]
struct Queue {
    /// Claims waiting for the next round, in arrival order.
    waiting: Vec<Pending>,
    /// Requests whose reservations the next round removes.
    released: Vec<String>,
    /// Whether a committer is running for the scope.
    running: bool,
    /// The scope as this replica last read or wrote it.
    view: Option<Versioned>,
}

/// A claim waiting for its round.
struct Pending {
    policy: String,
    claim: ledger::Claim,
    subject: Subject,
    seen: u64,
    store: Arc<Store>,
    deadline: Instant,
    reply: oneshot::Sender<Result<Decision, ledger::Error>>,
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

/// `call`, unless `deadline` comes first.
async fn by<T>(
    deadline: Instant,
    call: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::time::timeout_at(deadline.into(), call)
        .await
        .unwrap_or(Err(Error::DeadlinePassed))
}

/// The same error again, for each caller of a round.
fn again(error: &ledger::Error) -> ledger::Error {
    match error {
        ledger::Error::DeadlinePassed => ledger::Error::DeadlinePassed,
        ledger::Error::Contended { scope, attempts } => ledger::Error::Contended {
            scope: scope.clone(),
            attempts: *attempts,
        },
        ledger::Error::Unavailable(source) => ledger::Error::Unavailable(source.to_string().into()),
    }
}

/// A stored reservation during a round, with its object's key parsed once
/// for all the claims the round decides.
struct Held {
    reservation: Reservation,
    key: Option<ObjectKey>,
}

impl From<Reservation> for Held {
    fn from(reservation: Reservation) -> Self {
        let key = reservation.object.as_deref().and_then(object_key);
        Held { reservation, key }
    }
}

impl Pending {
    /// Decides the claim against what is `held` at `now_ms`; when it fits
    /// (and is not a dry run) its reservation replaces any earlier one of
    /// the same request or object.
    fn decide(&self, held: &mut Vec<Held>, now_ms: u64, ttl: Duration) -> Decision {
        let mine = self.subject.object.as_ref().map(object_name);
        let others = |h: &Held| {
            h.reservation.uid != self.subject.uid
                && (mine.is_none() || h.reservation.object != mine)
        };
        let request = Request {
            policy: &self.policy,
            claims: std::slice::from_ref(&self.claim),
            subject: &self.subject,
            seen: self.seen,
            store: &self.store,
            deadline: self.deadline,
        };
        let decision = ledger::check(&request, |_, resource| {
            held.iter()
                .filter(|h| others(h) && ledger::counts(h.key.as_ref(), self.seen, &self.store))
                .map(|h| h.reservation.asks.get(resource).copied().unwrap_or(0))
                .sum()
        });
        if decision.admitted && !self.subject.dry_run {
            held.retain(others);
            held.push(Held {
                reservation: Reservation {
                    uid: self.subject.uid.clone(),
                    object: mine,
                    asks: self.claim.asks.clone(),
                    expires_ms: now_ms + ttl.as_millis() as u64,
                },
                key: self.subject.object.clone(),
            });
        }
        decision
    }
}

impl<B: Backend> Shared<B> {
    /// A ledger over `backend` whose reservations lapse after `ttl`; its
    /// committers and sweep run on `runtime`.
    pub fn new(backend: B, ttl: Duration, runtime: Handle) -> Self {
        let inner = Arc::new(Inner {
            backend,
            ttl,
            runtime: runtime.clone(),
            scopes: Mutex::default(),
            taken: Mutex::default(),
        });
        runtime.spawn(sweep(Arc::downgrade(&inner)));
        Shared { inner }
    }

    /// Takes one claim through its scope's committer, waiting until the
    /// request's deadline at most.
    async fn take(
        &self,
        request: &Request<'_>,
        scope: &str,
        claim: &ledger::Claim,
    ) -> Result<Decision, ledger::Error> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            policy: request.policy.to_owned(),
            claim: claim.clone(),
            subject: request.subject.clone(),
            seen: request.seen,
            store: request.store.clone(),
            deadline: request.deadline,
            reply,
        };
        self.inner
            .enqueue(scope, |queue| queue.waiting.push(pending));
        match tokio::time::timeout_at(request.deadline.into(), answer).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(ledger::Error::Unavailable(
                "the quota ledger stopped (the server is shutting down)".into(),
            )),
            Err(_) => Err(ledger::Error::DeadlinePassed),
        }
    }
}

impl<B: Backend> Inner<B> {
    /// Queues work for `scope` and starts its committer if none runs.
    fn enqueue(self: &Arc<Self>, scope: &str, work: impl FnOnce(&mut Queue)) {
        let mut scopes = self.scopes.lock().expect("ledger lock poisoned");
        let queue = scopes.entry(scope.to_owned()).or_default();
        work(queue);
        if !queue.running {
            queue.running = true;
            self.runtime.spawn(self.clone().commit(scope.to_owned()));
        }
    }

    /// Gives back `uid`'s reservations in `scopes`.
    fn release_in(self: &Arc<Self>, uid: &str, scopes: &[String]) {
        for scope in scopes {
            self.enqueue(scope, |queue| queue.released.push(uid.to_owned()));
        }
    }

    /// A scope's committer: rounds until its queue is empty.
    async fn commit(self: Arc<Self>, scope: String) {
        loop {
            let (mut waiting, released, view) = {
                let mut scopes = self.scopes.lock().expect("ledger lock poisoned");
                let queue = scopes.get_mut(&scope).expect("a running committer's queue");
                if queue.waiting.is_empty() && queue.released.is_empty() {
                    queue.running = false;
                    return;
                }
                (
                    std::mem::take(&mut queue.waiting),
                    std::mem::take(&mut queue.released),
                    queue.view.take(),
                )
            };
            // A caller that is gone (its deadline passed) reserves nothing.
            waiting.retain(|p| !p.reply.is_closed());
            let view = if waiting.is_empty() && released.is_empty() {
                view
            } else {
                self.round(&scope, waiting, &released, view).await
            };
            let mut scopes = self.scopes.lock().expect("ledger lock poisoned");
            if let Some(queue) = scopes.get_mut(&scope) {
                queue.view = view;
            }
        }
    }

    /// One batch: decided, written, answered. Returns the scope as written
    /// (or read), for the next round.
    async fn round(
        self: &Arc<Self>,
        scope: &str,
        mut waiting: Vec<Pending>,
        released: &[String],
        mut view: Option<Versioned>,
    ) -> Option<Versioned> {
        let mut deadline = waiting.iter().map(|p| p.deadline).max();
        if !released.is_empty() {
            deadline = deadline.max(Some(Instant::now() + GIVE_BACK_TIME));
        }
        let deadline = deadline?;
        for _ in 0..MAX_ATTEMPTS {
            let fresh = view.is_none();
            let current = match view.take() {
                Some(current) => current,
                None => match by(deadline, self.backend.load(scope)).await {
                    Ok(current) => current,
                    Err(error) => {
                        self.fail(scope, waiting, released, error.into(), false);
                        return None;
                    }
                },
            };
            // Callers that left while the scope was read reserve nothing.
            waiting.retain(|p| !p.reply.is_closed());
            let now = now_ms();
            let mut held: Vec<Held> = current
                .reservations
                .iter()
                .filter(|r| r.expires_ms > now && !released.contains(&r.uid))
                .cloned()
                .map(Held::from)
                .collect();
            let mut changed = held.len() != current.reservations.len();
            let decisions: Vec<Decision> = waiting
                .iter()
                .map(|pending| {
                    let decision = pending.decide(&mut held, now, self.ttl);
                    changed |= decision.admitted && !pending.subject.dry_run;
                    decision
                })
                .collect();
            if !fresh && decisions.iter().any(|d| !d.admitted) {
                continue;
            }
            if !changed {
                self.answer(scope, waiting, decisions);
                return Some(current);
            }
            let reservations: Vec<Reservation> = held.into_iter().map(|h| h.reservation).collect();
            let expected = current.version.as_deref();
            let writing = Instant::now();
            match by(deadline, self.backend.store(scope, expected, &reservations)).await {
                Ok(Some(version)) => {
                    self.answer(scope, waiting, decisions);
                    return Some(Versioned {
                        version: Some(version),
                        reservations,
                    });
                }
                Ok(None) => {
                    // Another replica wrote first. Waiting a random part of
                    // a round trip lets the replicas' rounds drift apart
                    // instead of colliding in step, where the one that
                    // needs no read would win every time.
                    let round_trip = writing.elapsed();
                    tokio::time::sleep(round_trip.mul_f64(fastrand::f64())).await;
                }
                Err(error) => {
                    self.fail(scope, waiting, released, error.into(), true);
                    return None;
                }
            }
        }
        let contended = ledger::Error::Contended {
            scope: scope.to_owned(),
            attempts: MAX_ATTEMPTS,
        };
        self.fail(scope, waiting, released, contended, false);
        None
    }

    /// Answers each claim; one whose caller left while it was written is
    /// given back.
    fn answer(self: &Arc<Self>, scope: &str, waiting: Vec<Pending>, decisions: Vec<Decision>) {
        for (pending, decision) in waiting.into_iter().zip(decisions) {
            let reserved = decision.admitted && !pending.subject.dry_run;
            if pending.reply.send(Ok(decision)).is_err() && reserved {
                self.release_in(&pending.subject.uid, &[scope.to_owned()]);
            }
        }
    }

    /// Answers each claim with `error`. A write that failed (`written`)
    /// may still have landed, so its claims are given back once (they
    /// lapse at their expiry if that fails too); releases that failed lapse
    /// likewise.
    fn fail(
        self: &Arc<Self>,
        scope: &str,
        waiting: Vec<Pending>,
        released: &[String],
        error: ledger::Error,
        written: bool,
    ) {
        if !released.is_empty() {
            tracing::warn!(
                "giving back reservations in quota scope {scope:?} failed (they lapse at their expiry): {error}"
            );
        }
        let mut unsure = Vec::new();
        for pending in waiting {
            if written && !pending.subject.dry_run {
                unsure.push(pending.subject.uid.clone());
            }
            let _ = pending.reply.send(Err(again(&error)));
        }
        if !unsure.is_empty() {
            self.enqueue(scope, |queue| queue.released.extend(unsure));
        }
    }
}

/// How often the sweep looks for scopes whose reservations have all lapsed.
fn sweep_interval(ttl: Duration) -> Duration {
    ttl.max(Duration::from_secs(1))
}

/// Deletes, every interval, the stored scopes whose reservations have all
/// lapsed (a scope no longer in the configuration, a namespace gone); ends
/// with the ledger. A scope written meanwhile is left: deletion is
/// conditional on the version read.
async fn sweep<B: Backend>(ledger: Weak<Inner<B>>) {
    let Some(interval) = ledger.upgrade().map(|l| sweep_interval(l.ttl)) else {
        return;
    };
    loop {
        tokio::time::sleep(interval).await;
        let Some(ledger) = ledger.upgrade() else {
            return;
        };
        let deadline = Instant::now() + GIVE_BACK_TIME;
        let scopes = match by(deadline, ledger.backend.scopes()).await {
            Ok(scopes) => scopes,
            Err(error) => {
                tracing::warn!("listing quota scopes to remove lapsed ones: {error}");
                continue;
            }
        };
        let now = now_ms();
        for (scope, stored) in scopes {
            let lapsed = stored.reservations.iter().all(|r| r.expires_ms <= now);
            let Some(version) = stored.version.filter(|_| lapsed) else {
                continue;
            };
            match by(deadline, ledger.backend.delete(&scope, &version)).await {
                Ok(()) => tracing::debug!("removed lapsed quota scope {scope:?}"),
                Err(error) => tracing::warn!("removing lapsed quota scope {scope:?}: {error}"),
            }
        }
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

impl<B: Backend> Ledger for Shared<B> {
    fn reserve<'a>(
        &'a self,
        request: Request<'a>,
    ) -> BoxFuture<'a, Result<Decision, ledger::Error>> {
        Box::pin(async move {
            let mut claims: Vec<&ledger::Claim> = request.claims.iter().collect();
            // One order for every replica, so two admissions never each
            // hold the scope the other needs.
            claims.sort_by(|a, b| a.scope.cmp(&b.scope));
            let subject = request.subject;
            let mut decision = Decision {
                admitted: true,
                held: Vec::new(),
            };
            let mut taken = Vec::new();
            for claim in claims {
                let scope = request.scope(claim);
                let outcome = self.take(&request, &scope, claim).await;
                match outcome {
                    Ok(one) if one.admitted => {
                        decision.held.extend(one.held);
                        taken.push(scope);
                    }
                    outcome => {
                        decision.admitted = false;
                        if !subject.dry_run {
                            self.inner.release_in(&subject.uid, &taken);
                        }
                        decision.held.extend(outcome?.held);
                        return Ok(decision);
                    }
                }
            }
            if !subject.dry_run && !taken.is_empty() {
                let now = Instant::now();
                let mut recent = self.inner.taken.lock().expect("ledger lock poisoned");
                // What has expired is no longer worth giving back.
                recent.retain(|_, (at, _)| now.duration_since(*at) < self.inner.ttl);
                recent.insert(subject.uid.clone(), (now, taken));
            }
            Ok(decision)
        })
    }

    fn release(&self, uid: &str) {
        let taken = self
            .inner
            .taken
            .lock()
            .expect("ledger lock poisoned")
            .remove(uid);
        if let Some((_, scopes)) = taken {
            self.inner.release_in(uid, &scopes);
        }
    }
}

/// ConfigMaps in one namespace, through kube-rs.
pub struct ConfigMaps {
    api: Api<ConfigMap>,
    namespace: String,
}

/// The data key holding the reservations' JSON.
const DATA_KEY: &str = "reservations";

/// The annotation naming a ConfigMap's scope.
const SCOPE_ANNOTATION: &str = "tollgate.dev/quota-scope";

/// The label every ledger ConfigMap carries, to list them.
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "tollgate");

impl ConfigMaps {
    /// ConfigMaps in `namespace`.
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        ConfigMaps {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
        }
    }

    fn name(scope: &str) -> String {
        use sha2::{Digest, Sha256};
        let digest = hex::encode(&Sha256::digest(scope.as_bytes())[..10]);
        format!("tollgate-quota-{digest}")
    }

    /// A stored ConfigMap's reservations.
    fn versioned(map: ConfigMap, name: String) -> Result<Versioned, Error> {
        let text = map
            .data
            .as_ref()
            .and_then(|d| d.get(DATA_KEY))
            .map_or("[]", String::as_str);
        Ok(Versioned {
            reservations: serde_json::from_str(text)
                .map_err(|source| Error::Corrupt { name, source })?,
            version: map.metadata.resource_version,
        })
    }
}

/// Whether kube-rs's error is the apiserver's answer `code`.
fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

impl Backend for ConfigMaps {
    async fn load(&self, scope: &str) -> Result<Versioned, Error> {
        let name = Self::name(scope);
        let found = self.api.get_opt(&name).await.map_err(|source| Error::Api {
            action: "reading",
            name: name.clone(),
            source,
        })?;
        match found {
            Some(map) => Self::versioned(map, name),
            None => Ok(Versioned::default()),
        }
    }

    async fn store(
        &self,
        scope: &str,
        expected: Option<&str>,
        reservations: &[Reservation],
    ) -> Result<Option<String>, Error> {
        let name = Self::name(scope);
        let map = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                resource_version: expected.map(str::to_owned),
                labels: Some(BTreeMap::from([(
                    MANAGED_BY.0.to_owned(),
                    MANAGED_BY.1.to_owned(),
                )])),
                annotations: Some(BTreeMap::from([(
                    SCOPE_ANNOTATION.to_owned(),
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
            None => self.api.create(&params, &map).await,
            Some(_) => self.api.replace(&name, &params, &map).await,
        };
        match result {
            Ok(stored) => Ok(Some(stored.metadata.resource_version.unwrap_or_default())),
            // Changed, created, or deleted (by the sweep) meanwhile.
            Err(error) if is_status(&error, 409) || is_status(&error, 404) => Ok(None),
            Err(source) => Err(Error::Api {
                action: "writing",
                name,
                source,
            }),
        }
    }

    async fn scopes(&self) -> Result<Vec<(String, Versioned)>, Error> {
        let selector = format!("{}={}", MANAGED_BY.0, MANAGED_BY.1);
        let list = self
            .api
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|source| Error::Api {
                action: "listing",
                name: format!("in namespace {}", self.namespace),
                source,
            })?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|map| {
                let scope = map
                    .metadata
                    .annotations
                    .as_ref()?
                    .get(SCOPE_ANNOTATION)?
                    .clone();
                let name = map.metadata.name.clone().unwrap_or_default();
                // One that cannot be read is left for a person to look at.
                Some((scope, Self::versioned(map, name).ok()?))
            })
            .collect())
    }

    async fn delete(&self, scope: &str, version: &str) -> Result<(), Error> {
        let name = Self::name(scope);
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: Some(version.to_owned()),
                uid: None,
            }),
            ..DeleteParams::default()
        };
        match self.api.delete(&name, &params).await {
            Ok(_) => Ok(()),
            Err(error) if is_status(&error, 409) || is_status(&error, 404) => Ok(()),
            Err(source) => Err(Error::Api {
                action: "deleting",
                name,
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;

    /// The apiserver's compare-and-swap, in memory: versions count writes,
    /// and a write at a stale version fails as a 409 would. Every call takes
    /// a round trip (half before, half after the storage acts, as on a
    /// network); calls on the `slow` scope take its delay; a `down` one
    /// answers nothing.
    #[derive(Default)]
    struct FakeApiserver {
        scopes: Mutex<BTreeMap<String, (u64, Vec<Reservation>)>>,
        round_trip: Duration,
        writes: AtomicUsize,
        conflicts: AtomicUsize,
        slow: Mutex<Option<(String, Duration)>>,
        down: AtomicBool,
    }

    impl FakeApiserver {
        fn with_round_trip(round_trip: Duration) -> Arc<Self> {
            Arc::new(FakeApiserver {
                round_trip,
                ..FakeApiserver::default()
            })
        }

        fn reservations(&self, scope: &str) -> usize {
            self.scopes
                .lock()
                .unwrap()
                .get(scope)
                .map_or(0, |(_, r)| r.len())
        }

        /// Half a round trip, or the scope's delay; forever when down.
        async fn travel(&self, scope: &str) {
            if self.down.load(Ordering::Relaxed) {
                std::future::pending::<()>().await;
            }
            let delay = match &*self.slow.lock().unwrap() {
                Some((slow, delay)) if slow == scope => *delay,
                _ => self.round_trip / 2,
            };
            tokio::time::sleep(delay).await;
        }
    }

    impl Backend for Arc<FakeApiserver> {
        async fn load(&self, scope: &str) -> Result<Versioned, Error> {
            self.travel(scope).await;
            let found =
                self.scopes
                    .lock()
                    .unwrap()
                    .get(scope)
                    .map_or_else(Versioned::default, |(v, r)| Versioned {
                        version: Some(v.to_string()),
                        reservations: r.clone(),
                    });
            self.travel(scope).await;
            Ok(found)
        }

        async fn store(
            &self,
            scope: &str,
            expected: Option<&str>,
            reservations: &[Reservation],
        ) -> Result<Option<String>, Error> {
            self.travel(scope).await;
            let written = {
                let mut scopes = self.scopes.lock().unwrap();
                let current = scopes.get(scope).map(|(v, _)| v.to_string());
                if current.as_deref() == expected {
                    let version = scopes.get(scope).map_or(1, |(v, _)| v + 1);
                    scopes.insert(scope.into(), (version, reservations.to_vec()));
                    self.writes.fetch_add(1, Ordering::Relaxed);
                    Some(version.to_string())
                } else {
                    self.conflicts.fetch_add(1, Ordering::Relaxed);
                    None
                }
            };
            self.travel(scope).await;
            Ok(written)
        }

        async fn scopes(&self) -> Result<Vec<(String, Versioned)>, Error> {
            self.travel("").await;
            let scopes = self.scopes.lock().unwrap();
            Ok(scopes
                .iter()
                .map(|(scope, (v, r))| {
                    let stored = Versioned {
                        version: Some(v.to_string()),
                        reservations: r.clone(),
                    };
                    (scope.clone(), stored)
                })
                .collect())
        }

        async fn delete(&self, scope: &str, version: &str) -> Result<(), Error> {
            self.travel(scope).await;
            let mut scopes = self.scopes.lock().unwrap();
            if scopes
                .get(scope)
                .is_some_and(|(v, _)| v.to_string() == version)
            {
                scopes.remove(scope);
            }
            Ok(())
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

    fn ledger_over(
        apiserver: &Arc<FakeApiserver>,
        ttl: Duration,
    ) -> Arc<Shared<Arc<FakeApiserver>>> {
        Arc::new(Shared::new(apiserver.clone(), ttl, Handle::current()))
    }

    async fn reserve_by(
        ledger: &dyn Ledger,
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
        let store = Arc::new(Store::default());
        ledger
            .reserve(Request {
                policy: "quota",
                claims,
                subject: &subject,
                seen: 0,
                store: &store,
                deadline,
            })
            .await
    }

    async fn reserve(
        ledger: &dyn Ledger,
        name: &str,
        claims: &[ledger::Claim],
        dry_run: bool,
    ) -> Decision {
        let deadline = Instant::now() + Duration::from_secs(60);
        reserve_by(ledger, name, claims, dry_run, deadline)
            .await
            .unwrap()
    }

    /// Waits (a few seconds at most) for the committers to give
    /// reservations back.
    async fn eventually(condition: impl Fn() -> bool) {
        let until = Instant::now() + Duration::from_secs(5);
        while !condition() {
            assert!(Instant::now() < until, "never happened");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// `claims` claims of one GPU in one scope, spread over `replicas`
    /// ledgers, all at once: how many were admitted.
    async fn burst(
        apiserver: &Arc<FakeApiserver>,
        replicas: usize,
        claims_made: usize,
        limit: u64,
    ) -> usize {
        let ledgers: Vec<_> = (0..replicas)
            .map(|_| ledger_over(apiserver, Duration::from_secs(60)))
            .collect();
        let calls = (0..claims_made).map(|i| {
            let ledger = ledgers[i % replicas].clone();
            tokio::spawn(async move {
                reserve(
                    &*ledger,
                    &format!("p{i}"),
                    &claims(&[("team/vision", limit)]),
                    false,
                )
                .await
                .admitted
            })
        });
        let mut admitted = 0;
        for call in calls.collect::<Vec<_>>() {
            admitted += usize::from(call.await.unwrap());
        }
        admitted
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn replicas_racing_on_one_scope_admit_exactly_the_limit() {
        for replicas in [1, 2, 3] {
            let apiserver = FakeApiserver::with_round_trip(Duration::from_millis(2));
            assert_eq!(
                burst(&apiserver, replicas, 200, 40).await,
                40,
                "{replicas} replicas"
            );
            assert_eq!(apiserver.reservations("quota/team/vision"), 40);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_burst_is_written_in_a_few_rounds_not_one_per_claim() {
        let apiserver = FakeApiserver::with_round_trip(Duration::from_millis(10));
        assert_eq!(burst(&apiserver, 1, 200, 1000).await, 200);
        let writes = apiserver.writes.load(Ordering::Relaxed);
        assert!(writes < 20, "{writes} writes for 200 claims");
        assert_eq!(
            apiserver.conflicts.load(Ordering::Relaxed),
            0,
            "one replica never conflicts"
        );
    }

    #[tokio::test]
    async fn a_claim_that_does_not_fit_gives_back_the_ones_taken() {
        let apiserver = FakeApiserver::with_round_trip(Duration::ZERO);
        let ledger = ledger_over(&apiserver, Duration::from_secs(60));
        assert!(
            reserve(&*ledger, "a", &claims(&[("ns/b", 1)]), false)
                .await
                .admitted
        );
        // ns/a sorts first and fits; ns/b is full: both must end unreserved.
        let refused = reserve(&*ledger, "c", &claims(&[("ns/b", 1), ("ns/a", 5)]), false).await;
        assert!(!refused.admitted);
        eventually(|| apiserver.reservations("quota/ns/a") == 0).await;
        assert_eq!(apiserver.reservations("quota/ns/b"), 1);
    }

    #[tokio::test]
    async fn a_slow_apiserver_is_bounded_by_the_deadline_and_what_was_taken_is_given_back() {
        let apiserver = FakeApiserver::with_round_trip(Duration::ZERO);
        let ledger = ledger_over(&apiserver, Duration::from_secs(60));
        // The first scope is taken at once; the second answers later than
        // the caller waits, and its write lands after the caller left.
        *apiserver.slow.lock().unwrap() = Some(("quota/ns/b".into(), Duration::from_millis(400)));
        let started = Instant::now();
        let deadline = started + Duration::from_millis(300);
        let two = claims(&[("ns/a", 5), ("ns/b", 5)]);
        let slow = reserve_by(&*ledger, "p", &two, false, deadline).await;
        assert!(
            matches!(slow, Err(ledger::Error::DeadlinePassed)),
            "{slow:?}"
        );
        let waited = started.elapsed();
        assert!(waited < Duration::from_millis(350), "{waited:?}");
        eventually(|| apiserver.reservations("quota/ns/a") == 0).await;
        // The late write of ns/b is given back once it lands.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        eventually(|| apiserver.reservations("quota/ns/b") == 0).await;
    }

    #[tokio::test]
    async fn an_unreachable_apiserver_fails_claims_at_their_deadline() {
        let apiserver = FakeApiserver::with_round_trip(Duration::ZERO);
        apiserver.down.store(true, Ordering::Relaxed);
        let ledger = ledger_over(&apiserver, Duration::from_secs(60));
        let started = Instant::now();
        let deadline = started + Duration::from_millis(100);
        let calls: Vec<_> = (0..10)
            .map(|i| {
                let ledger = ledger.clone();
                tokio::spawn(async move {
                    reserve_by(
                        &*ledger,
                        &format!("p{i}"),
                        &claims(&[("ns/a", 5)]),
                        false,
                        deadline,
                    )
                    .await
                })
            })
            .collect();
        for call in calls {
            let outcome = call.await.unwrap();
            assert!(
                matches!(outcome, Err(ledger::Error::DeadlinePassed)),
                "{outcome:?}"
            );
        }
        assert!(
            started.elapsed() < Duration::from_millis(150),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(apiserver.reservations("quota/ns/a"), 0);
    }

    #[tokio::test]
    async fn denied_requests_are_released() {
        let apiserver = FakeApiserver::with_round_trip(Duration::ZERO);
        let ledger = ledger_over(&apiserver, Duration::from_secs(60));
        assert!(
            reserve(&*ledger, "a", &claims(&[("ns/a", 1)]), false)
                .await
                .admitted
        );
        ledger.release("uid-a");
        eventually(|| apiserver.reservations("quota/ns/a") == 0).await;
        assert!(
            reserve(&*ledger, "b", &claims(&[("ns/a", 1)]), false)
                .await
                .admitted
        );
    }

    #[tokio::test]
    async fn a_refusal_from_a_stale_view_is_checked_against_a_fresh_read() {
        let apiserver = FakeApiserver::with_round_trip(Duration::ZERO);
        let one = ledger_over(&apiserver, Duration::from_secs(60));
        let other = ledger_over(&apiserver, Duration::from_secs(60));
        assert!(
            reserve(&*one, "a", &claims(&[("ns/a", 1)]), false)
                .await
                .admitted
        );
        // Another replica gives a's reservation back: `one` still has the
        // scope as it wrote it, full.
        other.inner.release_in("uid-a", &["quota/ns/a".to_owned()]);
        eventually(|| apiserver.reservations("quota/ns/a") == 0).await;
        assert!(
            reserve(&*one, "b", &claims(&[("ns/a", 1)]), false)
                .await
                .admitted
        );
    }

    #[tokio::test]
    async fn dry_runs_and_expired_reservations_hold_nothing() {
        let apiserver = FakeApiserver::with_round_trip(Duration::ZERO);
        let ledger = ledger_over(&apiserver, Duration::from_millis(400));
        for i in 0..3 {
            assert!(
                reserve(&*ledger, &format!("d{i}"), &claims(&[("ns/a", 1)]), true)
                    .await
                    .admitted
            );
        }
        assert!(apiserver.scopes.lock().unwrap().is_empty());
        assert!(
            reserve(&*ledger, "a", &claims(&[("ns/a", 1)]), false)
                .await
                .admitted
        );
        assert!(
            !reserve(&*ledger, "b", &claims(&[("ns/a", 1)]), false)
                .await
                .admitted
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            reserve(&*ledger, "b", &claims(&[("ns/a", 1)]), false)
                .await
                .admitted
        );
    }

    #[tokio::test]
    async fn scopes_whose_reservations_all_lapsed_are_removed() {
        let apiserver = FakeApiserver::with_round_trip(Duration::ZERO);
        let ledger = ledger_over(&apiserver, Duration::from_millis(300));
        assert!(
            reserve(&*ledger, "a", &claims(&[("ns/gone", 1)]), false)
                .await
                .admitted
        );
        assert_eq!(apiserver.reservations("quota/ns/gone"), 1);
        eventually(|| apiserver.scopes.lock().unwrap().is_empty()).await;
        // The ledger's own view of the removed scope does not block it.
        assert!(
            reserve(&*ledger, "b", &claims(&[("ns/gone", 1)]), false)
                .await
                .admitted
        );
        assert_eq!(apiserver.reservations("quota/ns/gone"), 1);
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
