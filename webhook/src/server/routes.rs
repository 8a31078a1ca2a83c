//! HTTP routes. Handlers hold no policy logic: they read the body, hand the
//! request to the loaded [`PolicySet`], encode, and record metrics and the
//! decision. Every error becomes an HTTP answer in one place,
//! [`Error::into_response`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use arc_swap::ArcSwapOption;
use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};

use super::body::{self, Budget};
use super::limits::{self, BadTimeout, Limits, MAX_BODY_BYTES};
use super::metrics::Metrics;
use super::{readiness, reload, review};
use crate::audit;
use crate::audit::log::{Decision, DecisionLog};
use crate::policy::PolicySet;
use crate::policy::config::FailurePolicy;

/// What the handlers share.
pub struct AppState {
    /// The loaded policies; `None` while loading. An `ArcSwapOption`, not a
    /// lock: every request loads it, reloads replace it, and in-flight
    /// requests keep the set they started with.
    pub policies: ArcSwapOption<PolicySet>,
    /// Which configuration serves, and why the last change was refused.
    pub configuration: ArcSwapOption<reload::Status>,
    /// Metrics registry.
    pub metrics: Metrics,
    /// Set on shutdown, so that readiness goes false before connections
    /// drain.
    pub shutting_down: AtomicBool,
    /// Where every decision is appended, if anywhere.
    pub decisions: Option<DecisionLog>,
    /// What one client may cost.
    pub limits: Limits,
    /// Request body bytes buffered at once.
    budget: Budget,
}

impl AppState {
    /// State with no policies loaded yet, serving within `limits`, and
    /// appending every decision to `decisions`.
    pub fn new(limits: Limits, decisions: Option<DecisionLog>) -> Self {
        AppState {
            policies: ArcSwapOption::empty(),
            configuration: ArcSwapOption::empty(),
            metrics: Metrics::default(),
            shutting_down: AtomicBool::new(false),
            decisions,
            budget: Budget::new(limits.max_buffered_bytes),
            limits,
        }
    }
}

/// Why a request got no admission answer.
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error(transparent)]
    Timeout(#[from] BadTimeout),
    #[error(transparent)]
    Body(#[from] body::Error),
    #[error(transparent)]
    Review(#[from] review::Error),
    #[error("policies are still loading; retry shortly")]
    Loading,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = match &self {
            Error::Loading | Error::Body(body::Error::Busy) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Body(body::Error::TooLarge(_)) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Body(body::Error::TimedOut) => StatusCode::REQUEST_TIMEOUT,
            _ => StatusCode::BAD_REQUEST,
        };
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{self}\n"),
        )
            .into_response()
    }
}

/// The router of the TLS port: admission (every policy at `/validate` and
/// `/mutate`; only the fail-closed or fail-open ones below `/fail` and
/// `/ignore`, one webhook each) and the probes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/validate", admission(Endpoint::Validate))
        .route("/mutate", admission(Endpoint::Mutate))
        .route(
            "/validate/fail",
            admission(Endpoint::ValidateOnly(FailurePolicy::Fail)),
        )
        .route(
            "/validate/ignore",
            admission(Endpoint::ValidateOnly(FailurePolicy::Ignore)),
        )
        .route(
            "/mutate/fail",
            admission(Endpoint::MutateOnly(FailurePolicy::Fail)),
        )
        .route(
            "/mutate/ignore",
            admission(Endpoint::MutateOnly(FailurePolicy::Ignore)),
        )
        .merge(probe_router())
        .with_state(state)
}

/// The router of the plain-HTTP probe port: `/healthz`, `/readyz` and
/// `/metrics`, so that kubelet and Prometheus need no certificate.
pub fn probe_router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

#[derive(Clone, Copy)]
enum Endpoint {
    Validate,
    Mutate,
    /// The validating policies of one failure policy.
    ValidateOnly(FailurePolicy),
    /// The mutating policies of one failure policy.
    MutateOnly(FailurePolicy),
}

impl Endpoint {
    /// The name in metrics and the decision log: which chain ran.
    fn name(self) -> &'static str {
        match self {
            Endpoint::Validate | Endpoint::ValidateOnly(_) => "validate",
            Endpoint::Mutate | Endpoint::MutateOnly(_) => "mutate",
        }
    }
}

/// The POST route of `endpoint`.
fn admission(endpoint: Endpoint) -> MethodRouter<Arc<AppState>> {
    post(
        move |State(state): State<Arc<AppState>>, RawQuery(query): RawQuery, body: Body| {
            admit(state, endpoint, query, body)
        },
    )
}

async fn admit(
    state: Arc<AppState>,
    endpoint: Endpoint,
    query: Option<String>,
    body: Body,
) -> Response {
    let arrived = Instant::now();
    match answer(&state, endpoint, arrived, query.as_deref(), body).await {
        Ok(response) => response,
        Err(error) => {
            state.metrics.record_invalid(endpoint.name());
            tracing::debug!(endpoint = endpoint.name(), "refused request: {error}");
            error.into_response()
        }
    }
}

/// The request path: deadline → body → policies → evaluation → decision
/// log → answer.
async fn answer(
    state: &Arc<AppState>,
    endpoint: Endpoint,
    arrived: Instant,
    query: Option<&str>,
    body: Body,
) -> Result<Response, Error> {
    let deadline = state.limits.deadline(arrived, query)?;
    let body_deadline = deadline.min(arrived + limits::spread(state.limits.body_read_timeout));
    let body = body::read(body, MAX_BODY_BYTES, body_deadline, &state.budget).await?;
    let policies = state.policies.load_full().ok_or(Error::Loading)?;
    let (answer, decision) = evaluate(state, &policies, endpoint, &body.bytes, deadline).await?;
    // Queued before the answer leaves: a drained shutdown writes it.
    if let Some(log) = &state.decisions
        && let Some(decision) = decision
        && !log.record(decision).await
    {
        state.metrics.record_dropped_decision();
    }
    Ok(([(header::CONTENT_TYPE, "application/json")], answer).into_response())
}

/// Decodes, evaluates and encodes one review.
async fn evaluate(
    state: &AppState,
    policies: &PolicySet,
    endpoint: Endpoint,
    body: &[u8],
    deadline: Instant,
) -> Result<(Vec<u8>, Option<Decision>), review::Error> {
    let started = Instant::now();
    let request = review::decode(body)?;
    let mut outcome = match endpoint {
        Endpoint::Validate => policies.validate(&request, deadline).await,
        Endpoint::Mutate => policies.mutate(&request, deadline).await,
        Endpoint::ValidateOnly(only) => policies.validate_only(&request, deadline, only).await,
        Endpoint::MutateOnly(only) => policies.mutate_only(&request, deadline, only).await,
    };
    let answer = review::encode(&request.uid, &outcome);
    state
        .metrics
        .record(endpoint.name(), &outcome, started.elapsed().as_secs_f64());
    let decision = state.decisions.is_some().then(|| {
        audit::decision(
            endpoint.name(),
            policies.generation(),
            &request,
            &mut outcome,
        )
    });
    Ok((answer, decision))
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// `/readyz`: 200 or 503 with what it is waiting for; `?verbose` adds the
/// configuration, every policy and every cached kind.
async fn readyz(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> (StatusCode, String) {
    if state.shutting_down.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into());
    }
    let Some(policies) = state.policies.load_full() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "loading policies\n".into());
    };
    let configuration = state.configuration.load_full();
    let readiness = readiness::assess(&policies, configuration.as_deref());
    let verbose = query
        .as_deref()
        .is_some_and(|q| q.split('&').any(|p| p.split('=').next() == Some("verbose")));
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = if verbose {
        readiness.summary + &readiness.details
    } else {
        readiness.summary
    };
    (status, body)
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    if let Some(policies) = state.policies.load_full() {
        state.metrics.record_context(&policies.context().kinds());
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}
