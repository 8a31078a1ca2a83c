//! `gpu-quota` across replicas (`quota: {ledger: apiserver}`): several
//! `tollgate serve` processes, each with the live context of one stand-in
//! apiserver whose round trip the test sets, take bursts of 200 concurrent
//! one-GPU pod CREATEs (64 in flight) split across them, as a Job
//! controller creating a training gang would send. Exactly what fits is
//! admitted, with the default deadlines; a slow apiserver makes answers
//! fail per failurePolicy at the deadline, not hang; a replica killed
//! mid-burst over-admits nothing and its claims lapse within the TTL; dry
//! runs write nothing; lapsed scopes are removed.
//!
//! Prints, per round trip and replica count, decisions per second and the
//! request latencies (`cargo test --release -p tollgate-e2e --test e2e --
//! quota_replicas --nocapture`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tollgate_e2e::apiserver::Apiserver;
use tollgate_e2e::{Options, Server, gpu_pod, review};

/// Where the ledger's ConfigMaps live.
const LEDGER: &str = "/api/v1/namespaces/tollgate-system/configmaps/";

/// Claims in one burst, and how many are in flight at once.
const CLAIMS: usize = 200;
const IN_FLIGHT: usize = 64;

/// GPUs the two pods already running in every namespace hold.
const IN_USE: u64 = 4;

/// A stand-in apiserver and replicas of `tollgate serve` reading it.
struct Cluster {
    apiserver: Apiserver,
    replicas: Vec<Server>,
    _scratch: tempfile::TempDir,
}

/// The configuration: each namespace of `room` is its own scope, with room
/// for `room.1` more one-GPU pods beside the pods already running.
fn config(ttl_seconds: u64, rooms: &[(&[String], u64)]) -> String {
    config_with(ttl_seconds, rooms, "")
}

/// [`config`], with more fields for the policy (`timeoutMs: 2000`).
fn config_with(ttl_seconds: u64, rooms: &[(&[String], u64)], more: &str) -> String {
    let scopes: String = rooms
        .iter()
        .map(|(namespaces, room)| {
            format!(
                "        - {{namespaces: {namespaces:?}, limits: {{nvidia.com/gpu: {}}}}}\n",
                room + IN_USE
            )
        })
        .collect();
    format!(
        r#"
quota: {{ledger: apiserver, namespace: tollgate-system, reservationTtlSeconds: {ttl_seconds}}}
policies:
  - name: gpu-quota
    module: builtin:gpu-quota
    failurePolicy: fail
    {more}
    match: {{kinds: [Pod], operations: [CREATE]}}
    context: [{{apiVersion: v1, kind: Pod}}]
    settings:
      scopes:
{scopes}"#
    )
}

impl Cluster {
    /// `replicas` replicas of `config` over an apiserver holding
    /// `namespaces`, each with two running pods of two GPUs.
    async fn start(config: &str, namespaces: &[String], replicas: usize) -> Cluster {
        let apiserver = Apiserver::start().await;
        for namespace in namespaces {
            apiserver.put(
                &format!("/api/v1/namespaces/{namespace}"),
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
            );
            for name in ["running-0", "running-1"] {
                apiserver.put(
                    &format!("/api/v1/namespaces/{namespace}/pods/{name}"),
                    gpu_pod(namespace, name, 2),
                );
            }
        }
        let scratch = tempfile::tempdir().unwrap();
        let kubeconfig = scratch.path().join("kubeconfig");
        apiserver.kubeconfig(&kubeconfig);
        let mut started = Vec::new();
        for replica in 0..replicas {
            let name = format!("tollgate-{replica}");
            started.push(
                Server::start(Options {
                    config: Some(config),
                    args: &["--kubeconfig", kubeconfig.to_str().unwrap()],
                    env: &[("POD_NAME", &name)],
                })
                .await,
            );
        }
        // Connections open before any burst, as the apiserver keeps them:
        // the figures are of admissions, not of TLS handshakes.
        for replica in &started {
            let reviews: Vec<Value> = (0..IN_FLIGHT)
                .map(|i| {
                    let pod = json!({"apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": format!("warm-up-{i}"), "namespace": "default"},
                        "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
                    review("CREATE", &pod)
                })
                .collect();
            let warm_up = reviews.iter().map(|r| replica.review("/validate", r));
            for answer in futures::future::join_all(warm_up).await {
                assert_eq!(answer["allowed"], true, "{answer}");
            }
        }
        Cluster {
            apiserver,
            replicas: started,
            _scratch: scratch,
        }
    }

    /// Waits (ten seconds at most) until the scope of `namespace` names
    /// `count` reservations: the replicas name what they admitted from
    /// their grants once idle.
    async fn until_named(&self, namespace: &str, count: usize) {
        let until = Instant::now() + Duration::from_secs(10);
        while self.reservations(namespace) != count {
            assert!(
                Instant::now() < until,
                "{} named, not {count}",
                self.reservations(namespace)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The stored scopes' ConfigMaps (not the replicas' presences), by
    /// their scopes.
    fn scopes(&self) -> Vec<(String, Value)> {
        self.apiserver
            .under(LEDGER)
            .into_iter()
            .filter_map(|(_, map)| {
                let scope = map["metadata"]["annotations"]["tollgate.dev/quota-scope"].as_str()?;
                Some((scope.to_owned(), map))
            })
            .collect()
    }

    /// Waits (ten seconds at most) until `count` replicas' presences are
    /// stored.
    async fn until_present(&self, count: usize) {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let present = self
                .apiserver
                .under(LEDGER)
                .iter()
                .filter(|(_, map)| {
                    !map["metadata"]["annotations"]["tollgate.dev/quota-replica"].is_null()
                })
                .count();
            if present == count {
                return;
            }
            assert!(Instant::now() < until, "{present} presences, not {count}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Reservations stored for the scope of `namespace`, unexpired or not.
    fn reservations(&self, namespace: &str) -> usize {
        let scope = format!("/ns={namespace}");
        self.scopes()
            .iter()
            .filter(|(stored, _)| stored.ends_with(&scope))
            .map(|(_, map)| {
                let text = map["data"]["reservations"].as_str().unwrap_or("[]");
                serde_json::from_str::<Vec<Value>>(text).unwrap().len()
            })
            .sum()
    }
}

/// What a burst got back.
struct Outcome {
    admitted: usize,
    answered: usize,
    /// Latencies of the answered requests, sorted.
    latencies: Vec<Duration>,
    elapsed: Duration,
    /// The message of one denial.
    denial: Option<String>,
}

impl Outcome {
    fn percentile(&self, p: f64) -> Duration {
        let index = ((self.latencies.len() as f64 * p).ceil() as usize).saturating_sub(1);
        self.latencies[index.min(self.latencies.len() - 1)]
    }
}

/// `CLAIMS` CREATEs of one-GPU pods named `prefix-i` in `namespace`,
/// `IN_FLIGHT` at a time, sent to the replicas in turn. A request a
/// replica never answers (it was killed) counts as unanswered.
async fn burst(replicas: &[&Server], namespace: &str, prefix: &str, dry_run: bool) -> Outcome {
    burst_of(CLAIMS, replicas, namespace, prefix, dry_run).await
}

/// [`burst`] of `count` claims.
async fn burst_of(
    count: usize,
    replicas: &[&Server],
    namespace: &str,
    prefix: &str,
    dry_run: bool,
) -> Outcome {
    let gate = Arc::new(Semaphore::new(IN_FLIGHT));
    let started = Instant::now();
    let calls: Vec<_> = (0..count)
        .map(|i| {
            let replica = replicas[i % replicas.len()];
            let (client, url) = (replica.client.clone(), replica.endpoint("/validate"));
            let mut body = review("CREATE", &gpu_pod(namespace, &format!("{prefix}-{i}"), 1));
            body["request"]["dryRun"] = json!(dry_run);
            let gate = gate.clone();
            tokio::spawn(async move {
                let _turn = gate.acquire_owned().await.unwrap();
                let sent = Instant::now();
                let response = client.post(url).json(&body).send().await.ok()?;
                let answer: Value = response.json().await.ok()?;
                Some((sent.elapsed(), answer["response"].clone()))
            })
        })
        .collect();
    let mut outcome = Outcome {
        admitted: 0,
        answered: 0,
        latencies: Vec::new(),
        elapsed: Duration::ZERO,
        denial: None,
    };
    for call in calls {
        let Some((latency, answer)) = call.await.unwrap() else {
            continue;
        };
        outcome.answered += 1;
        outcome.latencies.push(latency);
        if answer["allowed"] == true {
            outcome.admitted += 1;
        } else if let Some(message) = answer["status"]["message"].as_str() {
            outcome.denial = Some(message.to_owned());
        }
    }
    outcome.elapsed = started.elapsed();
    outcome.latencies.sort();
    outcome
}

fn names(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i}")).collect()
}

/// Prints one burst's figures.
fn report(round_trip: u64, count: usize, room: usize, outcome: &Outcome) {
    println!(
        "quota across replicas: round trip {round_trip} ms, {count} replica(s), room for {room}: \
         {}/{CLAIMS} admitted in {:.2} s ({:.0} decisions/s), request p50 {} ms, p99 {} ms, max {} ms",
        outcome.admitted,
        outcome.elapsed.as_secs_f64(),
        CLAIMS as f64 / outcome.elapsed.as_secs_f64(),
        outcome.percentile(0.5).as_millis(),
        outcome.percentile(0.99).as_millis(),
        outcome.latencies.last().unwrap().as_millis(),
    );
}

/// With the default deadlines, at round trips of 2 and 10 ms, over 1, 2
/// and 3 replicas (as many as run, as in a Deployment): never more than
/// fits, every claim answered; the figures printed. A claim the ledger
/// could not answer within the policy's 100 ms is refused per
/// failurePolicy, so under contention on a slow apiserver fewer than fit
/// may be admitted: the figures say how many.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bursts_across_one_two_and_three_replicas_never_admit_more_than_fits() {
    let round_trips = [2, 10];
    let replica_counts = [1, 2, 3];
    let forty = names("forty", round_trips.len() * replica_counts.len());
    let all = names("all", round_trips.len() * replica_counts.len());
    let dry = vec!["dry".to_owned()];
    let config = config(600, &[(&forty, 40), (&all, 200), (&dry, 40)]);
    let everything: Vec<String> = [&forty[..], &all[..], &dry[..]].concat();

    let mut case = 0;
    for count in replica_counts {
        let cluster = Cluster::start(&config, &everything, count).await;
        let replicas: Vec<&Server> = cluster.replicas.iter().collect();
        let dry_runs = burst(&replicas, "dry", "dry", true).await;
        assert_eq!(dry_runs.admitted, CLAIMS, "dry runs are only checked");
        assert!(cluster.scopes().is_empty(), "a dry run wrote");
        // Each replica has seen the others' presences (renewed every 5 s,
        // told by the watch at once).
        cluster.until_present(count).await;
        for round_trip in round_trips {
            cluster
                .apiserver
                .set_round_trip(Duration::from_millis(round_trip));
            for (namespace, room) in [(&forty[case], 40), (&all[case], CLAIMS)] {
                let outcome = burst(&replicas, namespace, "burst", false).await;
                report(round_trip, count, room, &outcome);
                if outcome.admitted < room {
                    println!("  refused: {:?}", outcome.denial);
                }
                assert_eq!(outcome.answered, CLAIMS);
                assert!(outcome.admitted <= room, "over-admitted");
            }
            case += 1;
        }
    }
}

/// With a deadline long enough for the ledger under any load this machine
/// has, 2 and 3 replicas admit exactly what fits: 40 of 200, and all 200
/// when there is room; the stored reservations are exactly those.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bursts_across_two_and_three_replicas_admit_exactly_what_fits() {
    let forty = names("forty", 2);
    let all = names("all", 2);
    let config = config_with(600, &[(&forty, 40), (&all, 200)], "timeoutMs: 5000");
    let everything: Vec<String> = [&forty[..], &all[..]].concat();
    let cluster = Cluster::start(&config, &everything, 3).await;
    cluster.apiserver.set_round_trip(Duration::from_millis(2));
    let replicas: Vec<&Server> = cluster.replicas.iter().collect();
    for (case, count) in [2, 3].into_iter().enumerate() {
        for (namespace, room) in [(&forty[case], 40), (&all[case], CLAIMS)] {
            let outcome = burst(&replicas[..count], namespace, "burst", false).await;
            report(2, count, room, &outcome);
            assert_eq!(outcome.answered, CLAIMS);
            assert_eq!(
                outcome.admitted, room,
                "{count} replicas: {:?}",
                outcome.denial
            );
            cluster.until_named(namespace, room).await;
            if room < CLAIMS {
                let denial = outcome.denial.unwrap();
                assert!(
                    denial.starts_with(&format!(
                        "gpu-quota: namespace \"{namespace}\" would use 45 nvidia.com/gpu, limit 44: 4 in use by 2 pods, 40 reserved by admissions in flight; this pod asks 1"
                    )),
                    "{denial}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_apiserver_fails_claims_per_failure_policy_at_the_deadline_and_nothing_stays_reserved()
 {
    let namespaces = vec!["slow".to_owned()];
    let cluster = Cluster::start(&config(2, &[(&namespaces, 40)]), &namespaces, 2).await;
    let replicas: Vec<&Server> = cluster.replicas.iter().collect();
    cluster.apiserver.set_round_trip(Duration::from_secs(2));
    let outcome = burst(&replicas, "slow", "slow", false).await;
    assert_eq!(outcome.answered, CLAIMS);
    assert_eq!(outcome.admitted, 0);
    assert!(
        outcome
            .denial
            .as_deref()
            .is_some_and(|m| m.contains("deadline")),
        "{:?}",
        outcome.denial
    );
    // The policy's deadline (100 ms) bounds the wait for the apiserver;
    // nothing waits for the 2 s round trip.
    let slowest = *outcome.latencies.last().unwrap();
    assert!(slowest < Duration::from_secs(1), "{slowest:?}");
    println!(
        "quota across replicas, apiserver round trip 2 s: every claim failed per failurePolicy, request p99 {} ms, max {} ms",
        outcome.percentile(0.99).as_millis(),
        slowest.as_millis()
    );

    // The writes in flight land later; what they reserved is given back
    // (its callers left) or lapses, and the lapsed scope is removed.
    cluster.apiserver.set_round_trip(Duration::ZERO);
    let until = Instant::now() + Duration::from_secs(30);
    while cluster.scopes().is_empty() {
        assert!(Instant::now() < until, "no write landed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    while !cluster.scopes().is_empty() {
        assert!(Instant::now() < until, "{:?}", cluster.scopes());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = burst(&replicas, "slow", "after", false).await;
    assert_eq!(after.admitted, 40, "{:?}", after.denial);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_mid_burst_over_admits_nothing_and_its_claims_lapse_within_the_ttl() {
    const TTL: u64 = 4;
    let namespaces = vec!["killed".to_owned()];
    let mut cluster = Cluster::start(&config(TTL, &[(&namespaces, 40)]), &namespaces, 2).await;
    cluster.apiserver.set_round_trip(Duration::from_millis(5));
    let started = Instant::now();
    let first = {
        let replicas: Vec<&Server> = cluster.replicas.iter().collect();
        let burst = burst(&replicas, "killed", "first", false);
        let victim = &cluster.replicas[1];
        let kill = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            victim.signal("KILL");
        };
        let (outcome, ()) = tokio::join!(burst, kill);
        outcome
    };
    assert!(
        first.answered < CLAIMS,
        "the killed replica answered everything"
    );
    // The survivor fills what is left, counting what the dead replica
    // reserved (answered or not) until it lapses.
    let survivor = [&cluster.replicas[0]];
    let second = burst(&survivor, "killed", "second", false).await;
    assert!(
        first.admitted + second.admitted <= 40,
        "over-admitted: {} + {}",
        first.admitted,
        second.admitted
    );
    println!(
        "quota across replicas, one of two killed mid-burst: {} admitted before, {} after by the survivor, {} held by the dead replica (claims it never answered, room it held) until they lapse",
        first.admitted,
        second.admitted,
        40 - first.admitted - second.admitted
    );
    // Within the TTL of the first claims every reservation has lapsed (no
    // pod was created): the whole room is free again.
    let lapsed = started + Duration::from_secs(TTL) + Duration::from_millis(500);
    tokio::time::sleep_until(lapsed.into()).await;
    let third = burst(&survivor, "killed", "third", false).await;
    assert_eq!(third.admitted, 40, "{:?}", third.denial);
    cluster.replicas.pop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn room_a_killed_replica_held_counts_until_it_lapses() {
    const TTL: u64 = 4;
    let namespaces = vec!["held".to_owned()];
    let mut cluster = Cluster::start(&config(TTL, &[(&namespaces, 40)]), &namespaces, 2).await;
    cluster.apiserver.set_round_trip(Duration::from_millis(2));
    let started = Instant::now();
    // Twenty claims through one replica: it names some, and holds room for
    // more in its grant; then it dies before it could give that back.
    let victim = [&cluster.replicas[1]];
    let before = burst_of(20, &victim, "held", "before", false).await;
    assert_eq!(before.admitted, 20, "{:?}", before.denial);
    cluster.replicas[1].signal("KILL");
    let survivor = [&cluster.replicas[0]];
    let after = burst(&survivor, "held", "after", false).await;
    assert!(
        before.admitted + after.admitted <= 40,
        "over-admitted: {} + {}",
        before.admitted,
        after.admitted
    );
    println!(
        "quota across replicas, a replica killed holding room: {} admitted through it, {} after by the survivor, {} held by the dead replica until it lapses",
        before.admitted,
        after.admitted,
        40 - before.admitted - after.admitted
    );
    // Within the TTL everything the dead replica held has lapsed (no pod
    // was created): the whole room is free again.
    tokio::time::sleep_until(
        (started + Duration::from_secs(TTL) + Duration::from_millis(500)).into(),
    )
    .await;
    let later = burst(&survivor, "held", "later", false).await;
    assert_eq!(later.admitted, 40, "{:?}", later.denial);
    cluster.replicas.pop();
}
