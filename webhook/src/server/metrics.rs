//! Prometheus metrics, served as text on `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use std::sync::atomic::AtomicU64;

use crate::context::KindHealth;
use crate::policy::Outcome;

/// Latency buckets in seconds, fine below a millisecond where Tollgate's
/// requests land, coarse above.
const BUCKETS: [f64; 14] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.5, 2.5,
];

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EvaluationLabels {
    policy: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    policy: String,
    reason: &'static str,
}

/// Every metric the server exports. The families take a read lock per
/// update (a write lock only the first time a label set appears).
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    evaluations: Family<EvaluationLabels, Counter>,
    evaluation_seconds: Family<PolicyLabels, Histogram, fn() -> Histogram>,
    failures: Family<FailureLabels, Counter>,
    decisions_dropped: Counter,
    reloads: Family<ResultLabels, Counter>,
    generation: Gauge,
    context_objects: Family<KindLabels, Gauge>,
    context_age: Family<KindLabels, Gauge<f64, AtomicU64>>,
    context_relists: Family<KindLabels, Gauge>,
    context_errors: Family<KindLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tollgate");
        let requests = Family::<RequestLabels, Counter>::default();
        let request_seconds =
            Family::<EndpointLabels, Histogram, fn() -> Histogram>::new_with_constructor(histogram);
        let evaluations = Family::<EvaluationLabels, Counter>::default();
        let evaluation_seconds =
            Family::<PolicyLabels, Histogram, fn() -> Histogram>::new_with_constructor(histogram);
        registry.register(
            "admission_requests",
            "Admission requests by endpoint and result (allowed, denied, invalid)",
            requests.clone(),
        );
        registry.register(
            "admission_request_duration_seconds",
            "Time to answer an admission request, from decoded body to encoded response",
            request_seconds.clone(),
        );
        registry.register(
            "policy_evaluations",
            "Policy evaluations by policy and result (allowed, mutated, denied, failed)",
            evaluations.clone(),
        );
        registry.register(
            "policy_evaluation_duration_seconds",
            "Time of one policy evaluation, instantiation included",
            evaluation_seconds.clone(),
        );
        let failures = Family::<FailureLabels, Counter>::default();
        registry.register(
            "policy_failures",
            "Policy evaluations that reached no verdict, by policy and reason (timeout, request-deadline, memory, trap, output, host-calls, policy, refused, suspended, load)",
            failures.clone(),
        );
        let decisions_dropped = Counter::default();
        registry.register(
            "decision_log_dropped",
            "Decisions not written to the decision log because its queue was full (--decision-log-when-full drop)",
            decisions_dropped.clone(),
        );
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration loads by result (loaded, unchanged, failed)",
            reloads.clone(),
        );
        let generation = Gauge::default();
        registry.register(
            "config_generation",
            "How many configurations this process has served (1: the first; each reload that is taken adds one)",
            generation.clone(),
        );
        let context_objects = Family::<KindLabels, Gauge>::default();
        registry.register(
            "context_objects",
            "Cluster objects cached, by kind",
            context_objects.clone(),
        );
        let context_age = Family::<KindLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "context_last_event_age_seconds",
            "Seconds since the last list or watch event of a cached kind",
            context_age.clone(),
        );
        let context_relists = Family::<KindLabels, Gauge>::default();
        registry.register(
            "context_relists",
            "Lists of a cached kind after its first (each after a broken watch)",
            context_relists.clone(),
        );
        let context_errors = Family::<KindLabels, Gauge>::default();
        registry.register(
            "context_errors",
            "Failed lists and watches of a cached kind",
            context_errors.clone(),
        );
        Metrics {
            context_objects,
            context_age,
            context_relists,
            context_errors,
            reloads,
            generation,
            registry,
            requests,
            request_seconds,
            evaluations,
            evaluation_seconds,
            failures,
            decisions_dropped,
        }
    }
}

impl Metrics {
    /// Records an answered admission request.
    pub fn record(&self, endpoint: &'static str, outcome: &Outcome, seconds: f64) {
        let result = if outcome.allowed { "allowed" } else { "denied" };
        self.requests
            .get_or_create(&RequestLabels { endpoint, result })
            .inc();
        self.request_seconds
            .get_or_create(&EndpointLabels { endpoint })
            .observe(seconds);
        for evaluation in &outcome.evaluations {
            let policy = evaluation.policy.to_string();
            self.evaluation_seconds
                .get_or_create(&PolicyLabels {
                    policy: policy.clone(),
                })
                .observe(evaluation.duration.as_secs_f64());
            if let Some(reason) = evaluation.reason {
                self.failures
                    .get_or_create(&FailureLabels {
                        policy: policy.clone(),
                        reason,
                    })
                    .inc();
            }
            self.evaluations
                .get_or_create(&EvaluationLabels {
                    policy,
                    result: evaluation.result.as_str(),
                })
                .inc();
        }
    }

    /// Counts a decision the log's full queue dropped.
    pub fn record_dropped_decision(&self) {
        self.decisions_dropped.inc();
    }

    /// Records a configuration load: `loaded` (then serving generation
    /// `serving`), `unchanged` or `failed`.
    pub fn record_reload(&self, result: &'static str, serving: u64) {
        self.reloads.get_or_create(&ResultLabels { result }).inc();
        self.generation.set(serving as i64);
    }

    /// Sets the cluster context's health, per kind (at each scrape).
    pub fn record_context(&self, kinds: &[KindHealth]) {
        for health in kinds {
            let labels = KindLabels {
                kind: health.kind.to_string(),
            };
            self.context_objects
                .get_or_create(&labels)
                .set(health.objects as i64);
            if let Some(at) = health.last_event {
                self.context_age
                    .get_or_create(&labels)
                    .set(at.elapsed().as_secs_f64());
            }
            self.context_relists
                .get_or_create(&labels)
                .set(health.lists.saturating_sub(1) as i64);
            self.context_errors
                .get_or_create(&labels)
                .set(health.errors as i64);
        }
    }

    /// Records a request refused before evaluation (bad body).
    pub fn record_invalid(&self, endpoint: &'static str) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint,
                result: "invalid",
            })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String");
        text
    }
}
