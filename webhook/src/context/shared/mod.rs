//! The ledger shared by several replicas, kept in the apiserver: one
//! ConfigMap per scope holds the scope's reservations, and every change is a
//! compare-and-swap on its `resourceVersion` (create fails if it exists,
//! replace fails if it changed). A replica that loses the race re-checks
//! against what the winner wrote; no replica trusts another's memory, and
//! there is no protocol of our own beyond the apiserver's optimistic
//! concurrency. Each replica watches the ledger's ConfigMaps, so it knows
//! every scope as last stored without reading it, and the other replicas'
//! presences (ConfigMaps they renew), so that it takes an even share of
//! each scope's room as its grant.
//!
//! Group commit: each replica runs one committer per scope. Claims that
//! arrive while a round trip is in flight wait in the scope's queue, and the
//! next round decides them all, in arrival order, against the scope as last
//! written and stores the result in one compare-and-swap. Under a burst, one
//! write admits every claim that arrived meanwhile, instead of one write per
//! claim queueing behind the others. A round starts from the scope as the
//! watch (or this replica's last write) shows it, without a read; a conflict
//! means another replica wrote, and the round decides again once the watch
//! tells what (or reads it, when the watch is down). Without the watch, a
//! refusal is only given against a fresh read; with it, against the scope
//! as last told, which lags the apiserver by one event. Releases (a denied
//! request's reservations) go through the same queue.
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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use futures::{Stream, StreamExt as _};
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;
use tokio::sync::{Notify, oneshot};

use super::ledger::{self, Decision, Ledger, Request};
use super::{Kind, ObjectKey, Store, Subject};

mod configmaps;

pub use configmaps::ConfigMaps;

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
    /// A ConfigMap's data is not reservations and grants (edited by hand?).
    #[error(
        "ConfigMap {name}: {key} is not what the quota ledger stores: {source} (delete it to reset the scope)"
    )]
    Corrupt {
        /// The ConfigMap.
        name: String,
        /// The data key.
        key: &'static str,
        /// What the parser said.
        #[source]
        source: serde_json::Error,
    },
    /// The watch of the ledger's ConfigMaps failed (it is retried).
    #[error("watching the quota ledger's ConfigMaps in namespace {namespace}: {source}")]
    Watch {
        /// The namespace.
        namespace: String,
        /// kube-rs's error.
        #[source]
        source: kube::runtime::watcher::Error,
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
    /// The replica that admitted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
}

/// Room one replica holds in a scope, to admit from on its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Grant {
    /// The replica (its own name for itself, unique per process).
    pub replica: String,
    /// What it holds.
    pub asks: BTreeMap<String, u64>,
    /// Expiry, milliseconds since the Unix epoch.
    pub expires_ms: u64,
}

/// A scope at one version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Versioned {
    /// The version to compare against (`resourceVersion`); `None` when the
    /// scope has no object yet.
    pub version: Option<String>,
    /// The reservations.
    pub reservations: Vec<Reservation>,
    /// The replicas' grants.
    pub grants: Vec<Grant>,
}

impl Versioned {
    /// Whether nothing in it holds room any more at `now_ms`.
    fn lapsed(&self, now_ms: u64) -> bool {
        self.reservations.iter().all(|r| r.expires_ms <= now_ms)
            && self.grants.iter().all(|g| g.expires_ms <= now_ms)
    }
}

/// What the watch of stored scopes tells, in the order it happened.
#[derive(Debug)]
pub enum Seen {
    /// A listing starts: until [`Seen::Listed`], what follows is every
    /// stored scope.
    Listing,
    /// A scope as stored now.
    Stored(String, Versioned),
    /// A scope that cannot be read (its data is not the ledger's).
    Unreadable(String),
    /// A scope was deleted at `version`.
    Gone {
        /// The scope.
        scope: String,
        /// The version it was deleted at.
        version: Option<String>,
    },
    /// The listing is complete: scopes not in it are not stored.
    Listed,
    /// A replica says it runs until `expires_ms`.
    Present {
        /// The replica.
        replica: String,
        /// Until when, milliseconds since the Unix epoch.
        expires_ms: u64,
    },
    /// A replica's presence was removed.
    Departed(String),
    /// The watch failed and is being retried: until it delivers again,
    /// views may lag.
    Broken(Error),
}

/// Compare-and-swap storage of scopes: the apiserver, or a fake in tests.
/// Callers bound every call with their deadline.
pub trait Backend: Send + Sync + 'static {
    /// Watches every stored scope: a listing, then each change, for as long
    /// as the stream is polled (a failed watch is retried).
    fn watch(&self) -> impl Stream<Item = Seen> + Send + 'static;

    /// Reads a scope.
    ///
    /// # Errors
    ///
    /// The apiserver could not be reached or refused.
    fn load(&self, scope: &str) -> impl Future<Output = Result<Versioned, Error>> + Send;

    /// Writes a scope (`state`'s reservations and grants) if it is still at
    /// `state`'s version: its new version, or `None` when it changed (or was
    /// created, or deleted) meanwhile.
    ///
    /// # Errors
    ///
    /// The apiserver could not be reached or refused.
    fn store(
        &self,
        scope: &str,
        state: &Versioned,
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

    /// Stores that `replica` runs until `expires_ms`, for the watch to tell
    /// the others.
    ///
    /// # Errors
    ///
    /// The apiserver could not be reached or refused.
    fn announce(
        &self,
        replica: &str,
        expires_ms: u64,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Removes `replica`'s presence (a replica whose presence lapsed).
    ///
    /// # Errors
    ///
    /// The apiserver could not be reached or refused.
    fn withdraw(&self, replica: &str) -> impl Future<Output = Result<(), Error>> + Send;
}

/// Attempts per batch before giving up: each lost race means another
/// replica made progress. The callers' deadlines usually end a batch first;
/// this bounds one whose callers wait long.
const MAX_ATTEMPTS: usize = 64;

/// How long giving back one round's reservations may take.
const GIVE_BACK_TIME: Duration = Duration::from_secs(5);

/// How long a grant lives unless a round renews it (at most): room a dead
/// replica held comes back after this.
const GRANT_TTL: Duration = Duration::from_secs(10);

/// How long a replica's presence lasts unless renewed; it is renewed every
/// third of that.
const PRESENCE_TTL: Duration = Duration::from_secs(15);

/// How long claims that arrive together wait for each other before their
/// scope's first round: a burst's first claims share one write.
const GATHER: Duration = Duration::from_millis(3);

/// How long an idle replica keeps the room it holds before giving it back.
const LINGER: Duration = Duration::from_millis(20);

/// Bounds of the wait between rounds while claims wait for room other
/// replicas hold (about one round trip).
const POLL: (Duration, Duration) = (Duration::from_millis(2), Duration::from_millis(20));

/// The shared ledger.
pub struct Shared<B> {
    inner: Arc<Inner<B>>,
}

struct Inner<B> {
    backend: B,
    ttl: Duration,
    /// How long a grant lives unless renewed: [`GRANT_TTL`], or the
    /// reservations' TTL when shorter.
    grant_ttl: Duration,
    runtime: Handle,
    /// This replica's name in grants: unique per process.
    me: String,
    /// Whether the watch of stored scopes is listed and delivering: then
    /// each scope's view is as the apiserver last told (or absent when not
    /// stored), and a round needs no read.
    synced: AtomicBool,
    /// The other replicas the watch shows running, until when
    /// (milliseconds since the Unix epoch).
    present: Mutex<HashMap<String, u64>>,
    /// Each scope's queue, lease and view. A `std::sync::Mutex`: held only
    /// to decide from the lease or to queue or take work, never across I/O.
    scopes: Mutex<HashMap<String, Queue>>,
    /// Scopes each recent request reserved in, so that a denied request's
    /// reservations can be given back without reading every scope.
    taken: Mutex<HashMap<String, (Instant, Vec<String>)>>,
}

/// One scope, as this replica knows it.
#[derive(Default)]
struct Queue {
    /// Claims waiting for the next round, in arrival order.
    waiting: Vec<Pending>,
    /// Requests whose reservations the next round removes.
    released: Vec<String>,
    /// Whether a committer is running for the scope.
    running: bool,
    /// The scope as this replica last read, wrote or was told by the watch
    /// (an empty one with no version: not stored); `None` when unknown.
    view: Option<View>,
    /// The room this replica holds, and what it admitted from it.
    lease: Lease,
    /// A round in flight gives the lease back: nothing is admitted from it
    /// meanwhile.
    shrinking: bool,
    /// The next round gives the lease back (this replica's claims wait for
    /// room others hold, or it is idle).
    give_back: bool,
    /// When the lease was last used or renewed.
    active: Option<Instant>,
    /// Wakes a lingering committer when work arrives.
    wake: Arc<Notify>,
}

/// The room this replica holds in a scope (as its stored grant says) and
/// the claims it admitted from it that the scope does not name yet.
#[derive(Default)]
struct Lease {
    amounts: BTreeMap<String, u64>,
    expires_ms: u64,
    carved: Vec<Reservation>,
}

impl Lease {
    /// What is left of `resource` to admit from.
    fn unused(&self, resource: &str) -> u64 {
        amount(&self.amounts, resource).saturating_sub(total(&self.carved, resource))
    }

    /// Everything left to admit from.
    fn left(&self) -> BTreeMap<String, u64> {
        self.amounts
            .keys()
            .map(|resource| (resource.clone(), self.unused(resource)))
            .filter(|(_, left)| *left > 0)
            .collect()
    }
}

/// Whether `candidate` is a later version of a scope than `known`.
/// Versions are etcd's revisions, numbers that grow with every write; one
/// that is not a number (or none) is taken as later, as the watch and the
/// apiserver's answers tell them in order.
fn newer(candidate: Option<&str>, known: Option<&str>) -> bool {
    let revision = |version: Option<&str>| version?.parse::<u64>().ok();
    match (revision(candidate), revision(known)) {
        (Some(candidate), Some(known)) => candidate > known,
        _ => candidate != known,
    }
}

impl Queue {
    /// `scope`'s queue in `scopes`; a new one for a scope this replica has
    /// not seen is known not stored when the watch is `synced` (it would
    /// have told otherwise).
    fn of<'a>(scopes: &'a mut HashMap<String, Queue>, scope: &str, synced: bool) -> &'a mut Queue {
        scopes.entry(scope.to_owned()).or_insert_with(|| Queue {
            view: synced.then(View::default),
            ..Queue::default()
        })
    }

    /// Takes `view` as the scope's, unless the one known is later; wakes
    /// the committer, whose waiting claims may now fit.
    fn see(&mut self, view: View) {
        let known = self.view.as_ref().and_then(|v| v.version.as_deref());
        if self.view.is_none() || newer(view.version.as_deref(), known) {
            self.view = Some(view);
            if self.running {
                self.wake.notify_one();
            }
        }
    }
}

fn amount(amounts: &BTreeMap<String, u64>, resource: &str) -> u64 {
    amounts.get(resource).copied().unwrap_or(0)
}

/// Adds `asks` to `amounts`.
fn add(amounts: &mut BTreeMap<String, u64>, asks: &BTreeMap<String, u64>) {
    for (resource, ask) in asks {
        *amounts.entry(resource.clone()).or_default() += ask;
    }
}

/// What `reservations` hold of `resource`.
fn total<'a>(reservations: impl IntoIterator<Item = &'a Reservation>, resource: &str) -> u64 {
    reservations
        .into_iter()
        .map(|r| amount(&r.asks, resource))
        .sum()
}

/// A scope as read or written, its reservations' objects parsed once.
#[derive(Clone, Default)]
struct View {
    version: Option<String>,
    held: Vec<Held>,
    grants: Vec<Grant>,
}

impl From<Versioned> for View {
    fn from(stored: Versioned) -> Self {
        View {
            version: stored.version,
            held: stored.reservations.into_iter().map(Held::from).collect(),
            grants: stored.grants,
        }
    }
}

/// A stored reservation with its object's key parsed.
#[derive(Clone)]
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

/// One claim and what it is decided against.
struct Asking {
    policy: String,
    claim: ledger::Claim,
    subject: Subject,
    seen: u64,
    store: Arc<Store>,
    deadline: Instant,
}

/// A claim waiting for its round.
struct Pending {
    asking: Asking,
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

impl Asking {
    /// Whether `reservation` is another request's (a retry of the same
    /// request or object replaces its own).
    fn others(&self, reservation: &Reservation, mine: Option<&str>) -> bool {
        reservation.uid != self.subject.uid
            && (mine.is_none() || reservation.object.as_deref() != mine)
    }

    /// Checks the claim against what is `held`, other replicas' `grants`
    /// (unexpired at `now_ms`) and `own` room this replica keeps aside.
    fn check(
        &self,
        held: &[Held],
        grants: &[Grant],
        me: &str,
        now_ms: u64,
        own: impl Fn(&str) -> u64,
    ) -> Decision {
        let mine = self.subject.object.as_ref().map(object_name);
        let request = Request {
            policy: &self.policy,
            claims: std::slice::from_ref(&self.claim),
            subject: &self.subject,
            seen: self.seen,
            store: &self.store,
            deadline: self.deadline,
        };
        ledger::check(&request, |_, resource| {
            let named: u64 = held
                .iter()
                .filter(|h| {
                    self.others(&h.reservation, mine.as_deref())
                        && ledger::counts(h.key.as_ref(), self.seen, &self.store)
                })
                .map(|h| amount(&h.reservation.asks, resource))
                .sum();
            let granted: u64 = others_grants(grants, me, now_ms)
                .map(|g| amount(&g.asks, resource))
                .sum();
            named + granted + own(resource)
        })
    }

    /// The claim as a reservation made at `now_ms`.
    fn reservation(&self, me: &str, now_ms: u64, ttl: Duration) -> Reservation {
        Reservation {
            uid: self.subject.uid.clone(),
            object: self.subject.object.as_ref().map(object_name),
            asks: self.claim.asks.clone(),
            expires_ms: now_ms + ttl.as_millis() as u64,
            replica: Some(me.to_owned()),
        }
    }

    /// This replica's share of `resource`: the claim's limit, less the
    /// usage, split evenly between `replicas`.
    fn share(&self, resource: &str, replicas: u64) -> Option<u64> {
        let limit = self.claim.limits.get(resource)?;
        let used = amount(&self.claim.usage, resource);
        Some(limit.saturating_sub(used).div_ceil(replicas))
    }

    /// What `me` holds of `resource` by its reservations in `held`.
    fn mine(&self, held: &[Held], me: &str, resource: &str) -> u64 {
        held.iter()
            .filter(|h| {
                h.reservation.replica.as_deref() == Some(me)
                    && ledger::counts(h.key.as_ref(), self.seen, &self.store)
            })
            .map(|h| amount(&h.reservation.asks, resource))
            .sum()
    }

    /// Whether taking the claim would put `me` over its share.
    fn over_share(&self, held: &[Held], me: &str, replicas: u64) -> bool {
        self.claim.asks.iter().any(|(resource, ask)| {
            self.share(resource, replicas)
                .is_some_and(|share| self.mine(held, me, resource) + ask > share)
        })
    }

    /// Whether other replicas hold room of a resource the claim asks for:
    /// what they hold may yet be given back.
    fn others_hold(&self, grants: &[Grant], me: &str, now_ms: u64) -> bool {
        others_grants(grants, me, now_ms)
            .any(|g| self.claim.asks.keys().any(|r| amount(&g.asks, r) > 0))
    }
}

/// The unexpired grants of replicas other than `me`.
fn others_grants<'a>(
    grants: &'a [Grant],
    me: &'a str,
    now_ms: u64,
) -> impl Iterator<Item = &'a Grant> {
    grants
        .iter()
        .filter(move |g| g.replica != me && g.expires_ms > now_ms)
}

impl Queue {
    /// Decides `asking` from the lease, without I/O: `None` when the
    /// lease cannot (too little left, expiring, being given back, or the
    /// claim does not fit by the last view: only a round refuses).
    fn decide_locally(
        &mut self,
        asking: &Asking,
        me: &str,
        ttl: Duration,
        grant_ttl: Duration,
    ) -> Option<Decision> {
        let now = now_ms();
        let lease = &self.lease;
        let fresh_enough = lease.expires_ms > now + grant_ttl.as_millis() as u64 / 2;
        if self.shrinking || !fresh_enough {
            return None;
        }
        let mine = asking.subject.object.as_ref().map(object_name);
        let others = |r: &Reservation| asking.others(r, mine.as_deref());
        let fits_lease = asking.claim.asks.iter().all(|(resource, ask)| {
            let own_retry = total(lease.carved.iter().filter(|r| !others(r)), resource);
            lease.unused(resource) + own_retry >= *ask
        });
        let view = self.view.as_ref()?;
        if !fits_lease {
            return None;
        }
        // Also within the limit by this claim's own usage and the last view
        // (an object that came without a reservation counts too); what this
        // replica admitted from the lease counts even if its object is
        // already in the usage: a round sorts that out.
        let carved = |resource: &str| total(lease.carved.iter().filter(|r| others(r)), resource);
        let decision = asking.check(&view.held, &view.grants, me, now, carved);
        if !decision.admitted {
            return None;
        }
        self.active = Some(Instant::now());
        if !asking.subject.dry_run {
            let lease = &mut self.lease;
            lease.carved.retain(|r| others(r));
            lease.carved.push(asking.reservation(me, now, ttl));
            // Used up: named at once, so that the others know the room is
            // taken (their claims may be waiting for it).
            if lease
                .amounts
                .keys()
                .all(|resource| lease.unused(resource) == 0)
            {
                self.give_back = true;
            }
        }
        Some(decision)
    }
}

/// What a round is given.
struct Work {
    waiting: Vec<Pending>,
    released: Vec<String>,
    view: Option<View>,
    /// What this replica admitted from its lease, named by this round.
    carved: Vec<Reservation>,
    /// The room this replica keeps (what was left of its lease; none when
    /// giving it back).
    kept: BTreeMap<String, u64>,
    shrinking: bool,
}

/// How a round ended.
struct Ended {
    /// The scope as written or read, when known.
    view: Option<View>,
    /// This replica's stored grant, when the round wrote or read it; `None`
    /// when the round failed (the stored grant is as before).
    grant: Option<(BTreeMap<String, u64>, u64)>,
    /// Claims still waiting for room other replicas hold.
    waiting: Vec<Pending>,
    /// The last round trip to the apiserver.
    round_trip: Duration,
    /// Whether the round wrote the scope.
    wrote: bool,
}

/// A number no other process is likely to draw.
fn unique() -> u64 {
    getrandom::u64().unwrap_or_else(|_| now_ms() ^ u64::from(std::process::id()) << 32)
}

impl<B: Backend> Shared<B> {
    /// A ledger over `backend` whose reservations lapse after `ttl`; its
    /// committers and sweep run on `runtime`.
    pub fn new(backend: B, ttl: Duration, runtime: Handle) -> Self {
        let host = std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "tollgate".to_owned());
        let inner = Arc::new(Inner {
            backend,
            ttl,
            grant_ttl: ttl.min(GRANT_TTL),
            runtime: runtime.clone(),
            me: format!("{host}-{:016x}", unique()),
            synced: AtomicBool::new(false),
            present: Mutex::default(),
            scopes: Mutex::default(),
            taken: Mutex::default(),
        });
        runtime.spawn(sweep(Arc::downgrade(&inner)));
        runtime.spawn(follow(Arc::downgrade(&inner), inner.backend.watch()));
        runtime.spawn(announce(Arc::downgrade(&inner)));
        Shared { inner }
    }

    /// Takes one claim: from this replica's lease when it can, else through
    /// the scope's committer, waiting until the request's deadline at most.
    async fn take(
        &self,
        request: &Request<'_>,
        scope: &str,
        claim: &ledger::Claim,
    ) -> Result<Decision, ledger::Error> {
        let asking = Asking {
            policy: request.policy.to_owned(),
            claim: claim.clone(),
            subject: request.subject.clone(),
            seen: request.seen,
            store: request.store.clone(),
            deadline: request.deadline,
        };
        let (reply, answer) = oneshot::channel();
        {
            let inner = &self.inner;
            let mut scopes = inner.scopes.lock().expect("ledger lock poisoned");
            let queue = Queue::of(&mut scopes, scope, inner.synced());
            if let Some(decision) =
                queue.decide_locally(&asking, &inner.me, inner.ttl, inner.grant_ttl)
            {
                if queue.give_back {
                    inner.start(scope, queue);
                }
                return Ok(decision);
            }
            queue.waiting.push(Pending { asking, reply });
            inner.start(scope, queue);
        }
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
    /// Whether the watch is listed and delivering.
    fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// How many replicas run, this one included, as their presences say
    /// at `now_ms`.
    fn replicas(&self, now_ms: u64) -> u64 {
        let present = self.present.lock().expect("ledger lock poisoned");
        1 + present.values().filter(|e| **e > now_ms).count() as u64
    }

    /// The scope's view once the watch tells a version later than
    /// `version` (what another replica wrote), within `patience`; `None`
    /// (read it) when the watch is not synced or does not tell in time.
    async fn seen_after(
        &self,
        scope: &str,
        version: Option<&str>,
        patience: Duration,
    ) -> Option<View> {
        let until = Instant::now() + patience;
        loop {
            if !self.synced() {
                return None;
            }
            let wake = {
                let scopes = self.scopes.lock().expect("ledger lock poisoned");
                let queue = scopes.get(scope)?;
                match &queue.view {
                    Some(view) if newer(view.version.as_deref(), version) => {
                        return Some(view.clone());
                    }
                    _ => queue.wake.clone(),
                }
            };
            tokio::time::timeout_at(until.into(), wake.notified())
                .await
                .ok()?;
        }
    }

    /// Takes in one thing the watch tells; `listed` gathers the scopes of a
    /// listing (`None` outside one), to forget those it leaves out.
    fn apply(&self, seen: Seen, listed: &mut Option<HashSet<String>>) {
        let mut scopes = self.scopes.lock().expect("ledger lock poisoned");
        let synced = self.synced();
        match seen {
            Seen::Listing => {
                self.synced.store(false, Ordering::Release);
                *listed = Some(HashSet::new());
            }
            Seen::Stored(scope, state) => {
                Queue::of(&mut scopes, &scope, synced).see(View::from(state));
                if let Some(listed) = listed {
                    listed.insert(scope);
                }
            }
            Seen::Unreadable(scope) => {
                // Rounds read it, and say what is wrong.
                Queue::of(&mut scopes, &scope, synced).view = None;
                if let Some(listed) = listed {
                    listed.insert(scope);
                }
            }
            Seen::Gone { scope, version } => {
                let queue = Queue::of(&mut scopes, &scope, synced);
                let known = queue.view.as_ref().and_then(|v| v.version.as_deref());
                if !newer(known, version.as_deref()) {
                    queue.see(View::default());
                }
            }
            Seen::Listed => {
                let listed = listed.take().unwrap_or_default();
                for (scope, queue) in scopes.iter_mut() {
                    if !listed.contains(scope) {
                        queue.see(View::default());
                    }
                }
            }
            Seen::Present {
                replica,
                expires_ms,
            } => {
                if replica != self.me {
                    let mut present = self.present.lock().expect("ledger lock poisoned");
                    present.insert(replica, expires_ms);
                }
            }
            Seen::Departed(replica) => {
                let mut present = self.present.lock().expect("ledger lock poisoned");
                present.remove(&replica);
            }
            Seen::Broken(error) => {
                tracing::warn!("watching the quota ledger's scopes failed, retrying: {error}");
                self.synced.store(false, Ordering::Release);
                return;
            }
        }
        // Delivering again after a failure: the watch resumed where it
        // broke off, in order.
        if listed.is_none() {
            self.synced.store(true, Ordering::Release);
        }
    }

    /// Starts `scope`'s committer if none runs.
    fn start(self: &Arc<Self>, scope: &str, queue: &mut Queue) {
        if queue.running {
            queue.wake.notify_one();
        } else {
            queue.running = true;
            self.runtime.spawn(self.clone().commit(scope.to_owned()));
        }
    }

    /// Gives back `uid`'s reservations in `scopes`: at once when they are
    /// still this replica's alone, else by the next round.
    fn release_in(self: &Arc<Self>, uid: &str, scopes: &[String]) {
        let mut all = self.scopes.lock().expect("ledger lock poisoned");
        for scope in scopes {
            let queue = Queue::of(&mut all, scope, self.synced());
            let carved = queue.lease.carved.len();
            queue.lease.carved.retain(|r| r.uid != uid);
            if queue.lease.carved.len() == carved {
                queue.released.push(uid.to_owned());
                self.start(scope, queue);
            }
        }
    }

    /// Takes the next round's work; `None` when there is none. Claims that
    /// queued while the lease was short are first tried on it again (a
    /// round since may have renewed it).
    fn work(&self, scope: &str) -> Option<Work> {
        let mut scopes = self.scopes.lock().expect("ledger lock poisoned");
        let queue = scopes.get_mut(scope).expect("a running committer's queue");
        queue.waiting = self.settle_locally(queue);
        let shrinking = std::mem::take(&mut queue.give_back);
        if queue.waiting.is_empty() && queue.released.is_empty() && !shrinking {
            return None;
        }
        let left = queue.lease.left();
        let carved = std::mem::take(&mut queue.lease.carved);
        // While the round is out, the lease is what was left of it; claims
        // admitted from it meanwhile are named by the next round.
        queue.lease.amounts = left.clone();
        queue.shrinking = shrinking;
        Some(Work {
            waiting: std::mem::take(&mut queue.waiting),
            released: std::mem::take(&mut queue.released),
            view: queue.view.clone(),
            carved,
            kept: if shrinking { BTreeMap::new() } else { left },
            shrinking,
        })
    }

    /// Answers the queued claims the lease can take now; the others.
    fn settle_locally(&self, queue: &mut Queue) -> Vec<Pending> {
        let mut left = Vec::new();
        for pending in std::mem::take(&mut queue.waiting) {
            let asking = &pending.asking;
            match queue.decide_locally(asking, &self.me, self.ttl, self.grant_ttl) {
                Some(decision) => {
                    let uid = asking.subject.uid.clone();
                    if pending.reply.send(Ok(decision)).is_err() {
                        queue.lease.carved.retain(|r| r.uid != uid);
                    }
                }
                None => left.push(pending),
            }
        }
        left
    }

    /// Moves the claims queued for `scope` that the lease cannot take into
    /// a round's batch.
    fn join(&self, scope: &str, waiting: &mut Vec<Pending>) {
        let mut scopes = self.scopes.lock().expect("ledger lock poisoned");
        if let Some(queue) = scopes.get_mut(scope) {
            waiting.append(&mut self.settle_locally(queue));
        }
    }

    /// A scope's committer: rounds until there is no work, then, after a
    /// while idle, one more that gives the lease back.
    async fn commit(self: Arc<Self>, scope: String) {
        tokio::time::sleep(GATHER).await;
        loop {
            let Some(mut work) = self.work(&scope) else {
                if !self.linger(&scope).await {
                    return;
                }
                continue;
            };
            // A caller that is gone (its deadline passed) reserves nothing.
            work.waiting.retain(|p| !p.reply.is_closed());
            let carved = work.carved.clone();
            let ended = self.round(&scope, work).await;
            let poll = !ended.waiting.is_empty();
            let (wrote, round_trip) = (ended.wrote, ended.round_trip);
            let wake = {
                let mut scopes = self.scopes.lock().expect("ledger lock poisoned");
                let queue = scopes.get_mut(&scope).expect("a running committer's queue");
                match ended.view {
                    Some(view) => queue.see(view),
                    // Unknown, unless the watch tells.
                    None if !self.synced() => queue.view = None,
                    None => {}
                }
                queue.active = Some(Instant::now());
                queue.shrinking = false;
                match ended.grant {
                    Some((amounts, expires_ms)) => {
                        queue.lease.amounts = amounts;
                        queue.lease.expires_ms = expires_ms;
                    }
                    None => {
                        // The stored grant is as before: what it covered is
                        // this replica's to name again.
                        for reservation in &carved {
                            add(&mut queue.lease.amounts, &reservation.asks);
                        }
                        queue.lease.carved.extend(carved);
                    }
                }
                if poll {
                    // Others hold the room: give ours back too, so that two
                    // replicas never wait on each other.
                    queue.give_back = true;
                    let mut waiting = ended.waiting;
                    waiting.append(&mut queue.waiting);
                    queue.waiting = waiting;
                }
                queue.wake.clone()
            };
            if wrote && !poll && self.replicas(now_ms()) > 1 {
                // Others that lost to this write are deciding again: let
                // their writes go first, so that no replica loses every
                // race while this one wins each.
                tokio::time::sleep(round_trip / 2).await;
            }
            if poll {
                if self.synced() {
                    // The watch wakes the committer when the scope changes;
                    // grants also lapse with time.
                    let _ = tokio::time::timeout(POLL.1, wake.notified()).await;
                } else {
                    tokio::time::sleep(round_trip.clamp(POLL.0, POLL.1)).await;
                }
            }
        }
    }

    /// After the queue emptied: `true` when the committer goes on (new
    /// work; or the lease to give back, once it went [`LINGER`] without
    /// being used or renewed), `false` when it may stop (nothing held).
    async fn linger(&self, scope: &str) -> bool {
        loop {
            let (wake, quiet) = {
                let mut scopes = self.scopes.lock().expect("ledger lock poisoned");
                let queue = scopes.get_mut(scope).expect("a running committer's queue");
                let holds =
                    queue.lease.amounts.values().any(|a| *a > 0) || !queue.lease.carved.is_empty();
                if !holds {
                    queue.running = false;
                    return false;
                }
                if !queue.waiting.is_empty() || !queue.released.is_empty() || queue.give_back {
                    return true;
                }
                let quiet = queue.active.map_or(LINGER, |at| at.elapsed());
                if quiet >= LINGER {
                    queue.give_back = true;
                    return true;
                }
                (queue.wake.clone(), quiet)
            };
            // Claims the lease cannot take end the wait at once.
            let _ = tokio::time::timeout(LINGER - quiet, wake.notified()).await;
        }
    }

    /// One batch: this replica's admitted claims named, the waiting claims
    /// decided, its grant set, all in one compare-and-swap; then answered.
    async fn round(self: &Arc<Self>, scope: &str, work: Work) -> Ended {
        let Work {
            mut waiting,
            released,
            mut view,
            carved,
            kept,
            shrinking,
        } = work;
        let mut deadline = waiting.iter().map(|p| p.asking.deadline).max();
        if !released.is_empty() || !carved.is_empty() || shrinking {
            deadline = deadline.max(Some(Instant::now() + GIVE_BACK_TIME));
        }
        let deadline = deadline.unwrap_or_else(|| Instant::now() + GIVE_BACK_TIME);
        let mut round_trip = Duration::ZERO;
        let failed = |round_trip| Ended {
            view: None,
            grant: None,
            waiting: Vec::new(),
            round_trip,
            wrote: false,
        };
        for _ in 0..MAX_ATTEMPTS {
            // A view the watch keeps is as fresh as a read.
            let fresh = view.is_none() || self.synced();
            let current = match view.take() {
                Some(current) => current,
                None => {
                    let reading = Instant::now();
                    match by(deadline, self.backend.load(scope)).await {
                        Ok(stored) => {
                            round_trip = reading.elapsed();
                            View::from(stored)
                        }
                        Err(error) => {
                            self.fail(scope, waiting, &released, error.into(), false);
                            return failed(round_trip);
                        }
                    }
                }
            };
            // Claims that queued since join the batch (a retried one too);
            // callers that left while the scope was read reserve nothing.
            self.join(scope, &mut waiting);
            waiting.retain(|p| !p.reply.is_closed());
            let now = now_ms();
            let mut held: Vec<Held> = current
                .held
                .iter()
                .filter(|h| {
                    h.reservation.expires_ms > now && !released.contains(&h.reservation.uid)
                })
                .cloned()
                .chain(carved.iter().cloned().map(Held::from))
                .collect();
            let grants: Vec<Grant> = others_grants(&current.grants, &self.me, now)
                .cloned()
                .collect();
            let kept_of = |resource: &str| amount(&kept, resource);
            // As many as run, as their presences say, or as hold room here.
            let replicas = self.replicas(now).max(1 + grants.len() as u64);
            let mut decisions = Vec::with_capacity(waiting.len());
            let mut last = None;
            for (index, pending) in waiting.iter().enumerate() {
                let asking = &pending.asking;
                let decision = asking.check(&held, &grants, &self.me, now, kept_of);
                if decision.admitted && !asking.subject.dry_run {
                    let mine = asking.subject.object.as_ref().map(object_name);
                    held.retain(|h| asking.others(&h.reservation, mine.as_deref()));
                    held.push(Held {
                        reservation: asking.reservation(&self.me, now, self.ttl),
                        key: asking.subject.object.clone(),
                    });
                    last = Some(index);
                }
                // Room held by others may yet be given back, and room kept
                // here is given up by the next round: a claim that would
                // fit without them waits for that rather than being refused
                // — unless it would put this replica over its share: what
                // the others hold is within theirs, for them to use.
                let wait = !decision.admitted
                    && (asking.claim.asks.keys().any(|r| kept_of(r) > 0)
                        || (asking.others_hold(&grants, &self.me, now)
                            && !asking.over_share(&held, &self.me, replicas)))
                    && asking.check(&held, &[], &self.me, now, |_| 0).admitted;
                decisions.push((decision, wait));
            }
            if !fresh && decisions.iter().any(|(d, _)| !d.admitted) {
                continue;
            }
            // The room kept, topped up to this replica's share, less what it
            // holds already, as far as it fits by the last admitted claim's
            // usage. Even shares from the first round on: each replica then
            // admits its part of a burst on its own.
            let mut grant = kept.clone();
            if let Some(last) = last.filter(|_| !shrinking) {
                let asking = &waiting[last].asking;
                for (resource, ask) in &asking.claim.asks {
                    let (Some(limit), Some(share)) = (
                        asking.claim.limits.get(resource),
                        asking.share(resource, replicas),
                    ) else {
                        continue;
                    };
                    let used = amount(&asking.claim.usage, resource);
                    let held_now = asking
                        .check(&held, &grants, &self.me, now, kept_of)
                        .held
                        .iter()
                        .filter(|h| &h.resource == resource)
                        .map(|h| h.amount)
                        .sum::<u64>();
                    // `check` leaves out the claim's own reservation.
                    let room = limit.saturating_sub(used + held_now + ask);
                    let mine = asking.mine(&held, &self.me, resource);
                    let more = share.saturating_sub(mine + kept_of(resource)).min(room);
                    *grant.entry(resource.clone()).or_default() += more;
                }
            }
            grant.retain(|_, a| *a > 0);
            let grant_ttl = self.grant_ttl.as_millis() as u64;
            let expires_ms = if grant.is_empty() { 0 } else { now + grant_ttl };
            let stored_own = current.grants.iter().find(|g| g.replica == self.me);
            let grant_changed = match stored_own {
                Some(own) => {
                    own.asks != grant || (!grant.is_empty() && own.expires_ms < now + grant_ttl / 2)
                }
                None => !grant.is_empty(),
            };
            let admitted = decisions
                .iter()
                .zip(&waiting)
                .any(|((d, _), p)| d.admitted && !p.asking.subject.dry_run);
            let changed =
                grant_changed || held.len() != current.held.len() || !carved.is_empty() || admitted;
            let (mut answers, still) = split(waiting, decisions);
            if !admitted {
                // Refusals that rest on no admission of this batch hold
                // whatever becomes of the write (it only names and renews):
                // answered now.
                self.answer(scope, std::mem::take(&mut answers));
            }
            if !changed {
                let own =
                    stored_own.map_or((BTreeMap::new(), 0), |g| (g.asks.clone(), g.expires_ms));
                self.answer(scope, answers);
                return Ended {
                    view: Some(current),
                    grant: Some(own),
                    waiting: still,
                    round_trip,
                    wrote: false,
                };
            }
            let mut grants = grants;
            if !grant.is_empty() {
                grants.push(Grant {
                    replica: self.me.clone(),
                    asks: grant.clone(),
                    expires_ms,
                });
            }
            let state = Versioned {
                version: current.version.clone(),
                reservations: held.iter().map(|h| h.reservation.clone()).collect(),
                grants,
            };
            let writing = Instant::now();
            match by(deadline, self.backend.store(scope, &state)).await {
                Ok(Some(version)) => {
                    self.answer(scope, answers);
                    return Ended {
                        view: Some(View {
                            version: Some(version),
                            held,
                            grants: state.grants,
                        }),
                        grant: Some((grant, expires_ms)),
                        waiting: still,
                        round_trip: writing.elapsed(),
                        wrote: true,
                    };
                }
                Ok(None) => {
                    // Another replica wrote first: decide again on what it
                    // wrote, as the watch tells it (else read it).
                    waiting = answers.into_iter().map(|(p, _)| p).chain(still).collect();
                    round_trip = writing.elapsed();
                    let patience = round_trip.clamp(POLL.0, POLL.1);
                    view = self
                        .seen_after(scope, state.version.as_deref(), patience)
                        .await;
                }
                Err(error) => {
                    let waiting = answers.into_iter().map(|(p, _)| p).chain(still).collect();
                    self.fail(scope, waiting, &released, error.into(), true);
                    return failed(round_trip);
                }
            }
        }
        let contended = ledger::Error::Contended {
            scope: scope.to_owned(),
            attempts: MAX_ATTEMPTS,
        };
        self.fail(scope, waiting, &released, contended, false);
        failed(round_trip)
    }

    /// Answers each claim; one whose caller left while it was written is
    /// given back.
    fn answer(self: &Arc<Self>, scope: &str, answers: Vec<(Pending, Decision)>) {
        for (pending, decision) in answers {
            let reserved = decision.admitted && !pending.asking.subject.dry_run;
            if pending.reply.send(Ok(decision)).is_err() && reserved {
                self.release_in(&pending.asking.subject.uid, &[scope.to_owned()]);
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
            if written && !pending.asking.subject.dry_run {
                unsure.push(pending.asking.subject.uid.clone());
            }
            let _ = pending.reply.send(Err(again(&error)));
        }
        if !unsure.is_empty() {
            let mut scopes = self.scopes.lock().expect("ledger lock poisoned");
            let queue = Queue::of(&mut scopes, scope, self.synced());
            queue.released.extend(unsure);
            self.start(scope, queue);
        }
    }
}

/// The claims answered now (with their decisions) and those that wait for
/// room other replicas hold.
fn split(
    waiting: Vec<Pending>,
    decisions: Vec<(Decision, bool)>,
) -> (Vec<(Pending, Decision)>, Vec<Pending>) {
    let mut answers = Vec::new();
    let mut still = Vec::new();
    for (pending, (decision, wait)) in waiting.into_iter().zip(decisions) {
        if wait {
            still.push(pending);
        } else {
            answers.push((pending, decision));
        }
    }
    (answers, still)
}

/// Keeps the scopes' views as the watch tells them; ends with the ledger.
async fn follow<B: Backend>(ledger: Weak<Inner<B>>, seen: impl Stream<Item = Seen> + Send) {
    let mut seen = std::pin::pin!(seen);
    let mut listed = None;
    while let Some(event) = seen.next().await {
        let Some(ledger) = ledger.upgrade() else {
            return;
        };
        ledger.apply(event, &mut listed);
    }
}

/// Stores this replica's presence, renewed while the ledger lives.
async fn announce<B: Backend>(ledger: Weak<Inner<B>>) {
    let every = PRESENCE_TTL / 3;
    loop {
        let Some(ledger) = ledger.upgrade() else {
            return;
        };
        let expires_ms = now_ms() + PRESENCE_TTL.as_millis() as u64;
        let deadline = Instant::now() + every;
        if let Err(error) = by(deadline, ledger.backend.announce(&ledger.me, expires_ms)).await {
            tracing::warn!("storing this replica's presence in the quota ledger: {error}");
        }
        drop(ledger);
        tokio::time::sleep(every).await;
    }
}

/// How often the sweep looks for scopes whose reservations have all lapsed.
fn sweep_interval(ttl: Duration) -> Duration {
    ttl.max(Duration::from_secs(1))
}

/// Deletes, every interval, the stored scopes in which nothing holds room
/// any more (a scope no longer in the configuration, a namespace gone);
/// ends with the ledger. A scope written meanwhile is left: deletion is
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
        let departed: Vec<String> = {
            let present = ledger.present.lock().expect("ledger lock poisoned");
            let grace = PRESENCE_TTL.as_millis() as u64;
            present
                .iter()
                .filter(|(_, expires_ms)| **expires_ms + grace < now)
                .map(|(replica, _)| replica.clone())
                .collect()
        };
        for replica in departed {
            if let Err(error) = by(deadline, ledger.backend.withdraw(&replica)).await {
                tracing::warn!("removing the lapsed presence of replica {replica:?}: {error}");
            }
        }
        for (scope, stored) in scopes {
            let Some(version) = stored.version.clone().filter(|_| stored.lapsed(now)) else {
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

#[cfg(test)]
mod tests;
