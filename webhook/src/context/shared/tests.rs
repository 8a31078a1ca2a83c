//! The shared ledger against an in-memory apiserver with a round trip.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::*;

/// The apiserver's compare-and-swap, in memory: versions count writes,
/// and a write at a stale version fails as a 409 would. Every call takes
/// a round trip (half before, half after the storage acts, as on a
/// network), and a watch tells each change half a round trip after it
/// (a `blind` one tells nothing); calls on the `slow` scope take its
/// delay; a `down` one answers and tells nothing.
#[derive(Default)]
struct FakeApiserver {
    scopes: Mutex<BTreeMap<String, Versioned>>,
    versions: AtomicUsize,
    round_trip: Duration,
    loads: AtomicUsize,
    writes: AtomicUsize,
    conflicts: AtomicUsize,
    blind: bool,
    slow: Mutex<Option<(String, Duration)>>,
    down: AtomicBool,
    /// The replicas' presences.
    present: Mutex<BTreeMap<String, u64>>,
    /// Each watch, told what changed and when.
    watchers: Mutex<Vec<tokio::sync::mpsc::UnboundedSender<(Instant, Change)>>>,
}

/// A change a watch is told of.
#[derive(Clone)]
enum Change {
    Stored(String, Versioned),
    Deleted(String, Versioned),
    Present(String, u64),
    Departed(String),
}

impl Change {
    /// The scope it concerns (`""` for a presence), for its delay.
    fn scope(&self) -> &str {
        match self {
            Change::Stored(scope, _) | Change::Deleted(scope, _) => scope,
            Change::Present(..) | Change::Departed(_) => "",
        }
    }
}

impl From<Change> for Seen {
    fn from(change: Change) -> Seen {
        match change {
            Change::Stored(scope, state) => Seen::Stored(scope, state),
            Change::Deleted(scope, state) => Seen::Gone {
                scope,
                version: state.version,
            },
            Change::Present(replica, expires_ms) => Seen::Present {
                replica,
                expires_ms,
            },
            Change::Departed(replica) => Seen::Departed(replica),
        }
    }
}

impl FakeApiserver {
    fn with_round_trip(round_trip: Duration) -> Arc<Self> {
        Arc::new(FakeApiserver {
            round_trip,
            ..FakeApiserver::default()
        })
    }

    /// One without a watch.
    fn blind() -> Arc<Self> {
        Arc::new(FakeApiserver {
            blind: true,
            ..FakeApiserver::default()
        })
    }

    /// The named reservations stored for `scope`.
    fn reservations(&self, scope: &str) -> usize {
        self.scopes
            .lock()
            .unwrap()
            .get(scope)
            .map_or(0, |s| s.reservations.len())
    }

    /// The grants stored for `scope`.
    fn grants(&self, scope: &str) -> usize {
        self.scopes
            .lock()
            .unwrap()
            .get(scope)
            .map_or(0, |s| s.grants.len())
    }

    /// Half a round trip, or the scope's delay; forever when down.
    async fn travel(&self, scope: &str) {
        self.travel_from(scope, Instant::now()).await;
    }

    /// [`FakeApiserver::travel`], from `at`.
    async fn travel_from(&self, scope: &str, at: Instant) {
        if self.down.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
        let delay = match &*self.slow.lock().unwrap() {
            Some((slow, delay)) if slow == scope => *delay,
            _ => self.round_trip / 2,
        };
        tokio::time::sleep_until((at + delay).into()).await;
    }

    /// Tells every watch of `change`.
    fn tell(&self, change: Change) {
        let told = (Instant::now(), change);
        let mut watchers = self.watchers.lock().unwrap();
        watchers.retain(|watcher| watcher.send(told.clone()).is_ok());
    }
}

impl Backend for Arc<FakeApiserver> {
    fn watch(&self) -> impl Stream<Item = Seen> + Send + 'static {
        let (told, changes) = tokio::sync::mpsc::unbounded_channel();
        let listing: Vec<Seen> = if self.blind {
            // Nothing is ever told: the stream ends.
            Vec::new()
        } else {
            // Listed and registered at once: no change falls between.
            let scopes = self.scopes.lock().unwrap();
            let present = self.present.lock().unwrap();
            self.watchers.lock().unwrap().push(told);
            let stored = scopes
                .iter()
                .map(|(scope, state)| Change::Stored(scope.clone(), state.clone()));
            let present = present
                .iter()
                .map(|(replica, expires_ms)| Change::Present(replica.clone(), *expires_ms));
            std::iter::once(Seen::Listing)
                .chain(stored.chain(present).map(Seen::from))
                .chain(std::iter::once(Seen::Listed))
                .collect()
        };
        let apiserver = self.clone();
        let changes = futures::stream::unfold(changes, move |mut changes| {
            let apiserver = apiserver.clone();
            async move {
                let (at, change) = changes.recv().await?;
                apiserver.travel_from(change.scope(), at).await;
                Some((Seen::from(change), changes))
            }
        });
        futures::stream::iter(listing).chain(changes)
    }

    async fn load(&self, scope: &str) -> Result<Versioned, Error> {
        self.loads.fetch_add(1, Ordering::Relaxed);
        self.travel(scope).await;
        let found = self.scopes.lock().unwrap().get(scope).cloned();
        self.travel(scope).await;
        Ok(found.unwrap_or_default())
    }

    async fn store(&self, scope: &str, state: &Versioned) -> Result<Option<String>, Error> {
        self.travel(scope).await;
        let written = {
            let mut scopes = self.scopes.lock().unwrap();
            let current = scopes.get(scope).and_then(|s| s.version.clone());
            if current == state.version {
                let version = (self.versions.fetch_add(1, Ordering::Relaxed) + 1).to_string();
                let stored = Versioned {
                    version: Some(version.clone()),
                    ..state.clone()
                };
                self.tell(Change::Stored(scope.into(), stored.clone()));
                scopes.insert(scope.into(), stored);
                self.writes.fetch_add(1, Ordering::Relaxed);
                Some(version)
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
        Ok(scopes.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    async fn announce(&self, replica: &str, expires_ms: u64) -> Result<(), Error> {
        self.travel("").await;
        let mut present = self.present.lock().unwrap();
        present.insert(replica.into(), expires_ms);
        self.tell(Change::Present(replica.into(), expires_ms));
        Ok(())
    }

    async fn withdraw(&self, replica: &str) -> Result<(), Error> {
        self.travel("").await;
        let mut present = self.present.lock().unwrap();
        if present.remove(replica).is_some() {
            self.tell(Change::Departed(replica.into()));
        }
        Ok(())
    }

    async fn delete(&self, scope: &str, version: &str) -> Result<(), Error> {
        self.travel(scope).await;
        let mut scopes = self.scopes.lock().unwrap();
        if scopes
            .get(scope)
            .is_some_and(|s| s.version.as_deref() == Some(version))
        {
            let gone = scopes.remove(scope).expect("just found");
            self.tell(Change::Deleted(scope.into(), gone));
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

fn ledger_over(apiserver: &Arc<FakeApiserver>, ttl: Duration) -> Arc<Shared<Arc<FakeApiserver>>> {
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

/// `claims_made` claims of one GPU in one scope, 64 at a time, spread over
/// `replicas` ledgers, each with a deadline of a second (the e2e figures
/// measure the default 100 ms): how many were admitted.
async fn burst(
    apiserver: &Arc<FakeApiserver>,
    replicas: usize,
    claims_made: usize,
    limit: u64,
) -> usize {
    let ledgers: Vec<_> = (0..replicas)
        .map(|_| ledger_over(apiserver, Duration::from_secs(60)))
        .collect();
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    let calls = (0..claims_made).map(|i| {
        let ledger = ledgers[i % replicas].clone();
        let gate = gate.clone();
        tokio::spawn(async move {
            let _turn = gate.acquire_owned().await.unwrap();
            let deadline = Instant::now() + Duration::from_secs(1);
            let claim = claims(&[("team/vision", limit)]);
            let outcome = reserve_by(&*ledger, &format!("p{i}"), &claim, false, deadline).await;
            outcome.map(|d| d.admitted)
        })
    });
    let mut admitted = 0;
    for call in calls.collect::<Vec<_>>() {
        match call.await.unwrap() {
            Ok(yes) => admitted += usize::from(yes),
            Err(error) => panic!(
                "{replicas} replicas, limit {limit}, {:?}: {error}",
                apiserver.round_trip
            ),
        }
    }
    admitted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_racing_on_one_scope_admit_exactly_what_fits() {
    for round_trip in [2, 10] {
        for replicas in [1, 2, 3] {
            for limit in [40, 200] {
                let apiserver = FakeApiserver::with_round_trip(Duration::from_millis(round_trip));
                let admitted = burst(&apiserver, replicas, 200, limit).await;
                let case = format!("{replicas} replicas, {round_trip} ms, limit {limit}");
                assert_eq!(admitted, limit as usize, "{case}");
                // Once idle, each replica names what it admitted from its
                // grant and gives the rest back.
                eventually(|| {
                    apiserver.reservations("quota/team/vision") == limit as usize
                        && apiserver.grants("quota/team/vision") == 0
                })
                .await;
            }
        }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_replica_gives_its_room_back_to_the_others() {
    let apiserver = FakeApiserver::with_round_trip(Duration::from_millis(2));
    let one = ledger_over(&apiserver, Duration::from_secs(60));
    let other = ledger_over(&apiserver, Duration::from_secs(60));
    // `one` takes room for its next claims beside its own.
    let few = (0..4).map(|i| {
        let one = one.clone();
        async move {
            let claim = claims(&[("ns/a", 10)]);
            reserve(&*one, &format!("a{i}"), &claim, false)
                .await
                .admitted
        }
    });
    assert!(futures::future::join_all(few).await.into_iter().all(|a| a));
    // Once idle, it names what it admitted and gives the rest back.
    eventually(|| apiserver.grants("quota/ns/a") == 0).await;
    assert_eq!(apiserver.reservations("quota/ns/a"), 4);
    let mut admitted = 0;
    for i in 0..8 {
        let claim = claims(&[("ns/a", 10)]);
        admitted += usize::from(
            reserve(&*other, &format!("b{i}"), &claim, false)
                .await
                .admitted,
        );
    }
    assert_eq!(admitted, 6);
}

#[tokio::test]
async fn room_a_dead_replica_held_comes_back_when_its_grant_expires() {
    let apiserver = FakeApiserver::with_round_trip(Duration::ZERO);
    let expires_ms = now_ms() + 400;
    // Version 0: the fake's first write is version 1.
    apiserver.scopes.lock().unwrap().insert(
        "quota/ns/a".into(),
        Versioned {
            version: Some("0".into()),
            reservations: Vec::new(),
            grants: vec![Grant {
                replica: "dead".into(),
                asks: BTreeMap::from([("nvidia.com/gpu".into(), 2)]),
                expires_ms,
            }],
        },
    );
    let ledger = ledger_over(&apiserver, Duration::from_secs(60));
    // The dead replica's room may still be given back: a claim waits for
    // it rather than being refused, until its own deadline.
    let soon = Instant::now() + Duration::from_millis(100);
    let waited = reserve_by(&*ledger, "a", &claims(&[("ns/a", 2)]), false, soon).await;
    assert!(
        matches!(waited, Err(ledger::Error::DeadlinePassed)),
        "{waited:?}"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        reserve(&*ledger, "b", &claims(&[("ns/a", 2)]), false)
            .await
            .admitted
    );
    assert!(
        reserve(&*ledger, "c", &claims(&[("ns/a", 2)]), false)
            .await
            .admitted
    );
    assert!(
        !reserve(&*ledger, "d", &claims(&[("ns/a", 2)]), false)
            .await
            .admitted
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
async fn without_the_watch_a_refusal_from_a_stale_view_is_checked_against_a_fresh_read() {
    let apiserver = FakeApiserver::blind();
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

#[tokio::test]
async fn with_the_watch_rounds_decide_without_reading() {
    for (apiserver, reads) in [
        (FakeApiserver::with_round_trip(Duration::ZERO), false),
        (FakeApiserver::blind(), true),
    ] {
        let ledger = ledger_over(&apiserver, Duration::from_secs(60));
        eventually(|| apiserver.blind || ledger.inner.synced()).await;
        let claim = claims(&[("ns/a", 2)]);
        let admitted: Vec<bool> = [
            reserve(&*ledger, "a", &claim, false).await.admitted,
            reserve(&*ledger, "b", &claim, false).await.admitted,
            reserve(&*ledger, "c", &claim, false).await.admitted,
        ]
        .into();
        assert_eq!(admitted, [true, true, false]);
        // The refusal rests on the scope as the watch last told it, or on a
        // read when there is no watch.
        assert_eq!(apiserver.loads.load(Ordering::Relaxed) > 0, reads);
    }
}

#[tokio::test]
async fn grants_are_even_shares_of_the_replicas_that_run() {
    let apiserver = FakeApiserver::with_round_trip(Duration::ZERO);
    let ledgers: Vec<_> = (0..3)
        .map(|_| ledger_over(&apiserver, Duration::from_secs(60)))
        .collect();
    eventually(|| ledgers.iter().all(|l| l.inner.replicas(now_ms()) == 3)).await;
    assert!(
        reserve(&*ledgers[0], "a", &claims(&[("ns/a", 30)]), false)
            .await
            .admitted
    );
    // A third of 30, less the one it just took.
    let stored = apiserver.scopes.lock().unwrap()["quota/ns/a"].clone();
    assert_eq!(stored.grants.len(), 1);
    assert_eq!(stored.grants[0].asks["nvidia.com/gpu"], 9);
    assert_eq!(
        stored.reservations[0].replica.as_deref(),
        Some(&*ledgers[0].inner.me)
    );
}

#[tokio::test]
async fn a_lapsed_presence_is_withdrawn() {
    let apiserver = FakeApiserver::with_round_trip(Duration::ZERO);
    let long_ago = now_ms() - 2 * PRESENCE_TTL.as_millis() as u64;
    apiserver
        .present
        .lock()
        .unwrap()
        .insert("dead".into(), long_ago);
    let ledger = ledger_over(&apiserver, Duration::from_millis(100));
    // Its own presence is stored; the dead one's goes at the next sweep.
    eventually(|| {
        let present = apiserver.present.lock().unwrap();
        present.contains_key(&ledger.inner.me) && !present.contains_key("dead")
    })
    .await;
    assert_eq!(ledger.inner.replicas(now_ms()), 1);
}
