//! HTTP routes. Handlers hold no policy logic: they decode, hand the request
//! to the loaded [`PolicySet`], encode, and record metrics. Every error
//! becomes an HTTP answer in one place, [`Error::into_response`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use arc_swap::ArcSwapOption;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::metrics::Metrics;
use super::review;
use crate::audit;
use crate::audit::log::DecisionLog;
use crate::policy::PolicySet;

/// Largest request body accepted. The apiserver's own limit for objects is
/// 3 MiB; a review adds little around it.
pub const MAX_BODY_BYTES: usize = 3 << 20;

/// What the handlers share.
pub struct AppState {
    /// The loaded policies; `None` while loading. An `ArcSwapOption`, not a
    /// lock: every request loads it, reloads replace it, and in-flight
    /// requests keep the set they started with.
    pub policies: ArcSwapOption<PolicySet>,
    /// Metrics registry.
    pub metrics: Metrics,
    /// Set on shutdown, so that readiness goes false before connections
    /// drain.
    pub shutting_down: AtomicBool,
    /// Where every decision is appended, if anywhere.
    pub decisions: Option<DecisionLog>,
}

impl AppState {
    /// State with no policies loaded yet.
    pub fn new() -> Self {
        AppState {
            policies: ArcSwapOption::empty(),
            metrics: Metrics::default(),
            shutting_down: AtomicBool::new(false),
            decisions: None,
        }
    }

    /// State that appends every decision to `log`.
    pub fn with_decision_log(log: DecisionLog) -> Self {
        AppState {
            decisions: Some(log),
            ..AppState::new()
        }
    }
}

impl Default for AppState {
    fn default() -> Self {
        Self::new()
    }
}

/// Why a request got no admission answer.
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("request body exceeds the {} MiB limit", MAX_BODY_BYTES >> 20)]
    BodyTooLarge,
    #[error("cannot read the request body: {0}")]
    Body(String),
    #[error(transparent)]
    Review(#[from] review::Error),
    #[error("policies are still loading; retry shortly")]
    Loading,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = match self {
            Error::Loading => StatusCode::SERVICE_UNAVAILABLE,
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

/// The router for `state`.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/validate", post(validate))
        .route("/mutate", post(mutate))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

#[derive(Clone, Copy)]
enum Endpoint {
    Validate,
    Mutate,
}

impl Endpoint {
    fn name(self) -> &'static str {
        match self {
            Endpoint::Validate => "validate",
            Endpoint::Mutate => "mutate",
        }
    }
}

async fn validate(State(state): State<Arc<AppState>>, body: Body) -> Response {
    admit(&state, Endpoint::Validate, body).await
}

async fn mutate(State(state): State<Arc<AppState>>, body: Body) -> Response {
    admit(&state, Endpoint::Mutate, body).await
}

async fn admit(state: &AppState, endpoint: Endpoint, body: Body) -> Response {
    match answer(state, endpoint, body).await {
        Ok(response) => response,
        Err(error) => {
            state.metrics.record_invalid(endpoint.name());
            tracing::debug!(endpoint = endpoint.name(), "refused request: {error}");
            error.into_response()
        }
    }
}

async fn answer(state: &AppState, endpoint: Endpoint, body: Body) -> Result<Response, Error> {
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|e| {
            if std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            {
                Error::BodyTooLarge
            } else {
                Error::Body(e.to_string())
            }
        })?;
    let started = Instant::now();
    let request = review::decode(&bytes)?;
    let policies = state.policies.load_full().ok_or(Error::Loading)?;
    // Evaluation runs inline on this worker: it is CPU-bound and short, and
    // each policy's deadline bounds how long it can hold the thread.
    let mut outcome = match endpoint {
        Endpoint::Validate => policies.validate(&request),
        Endpoint::Mutate => policies.mutate(&request),
    };
    let body = review::encode(&request.uid, &outcome);
    state
        .metrics
        .record(endpoint.name(), &outcome, started.elapsed().as_secs_f64());
    // Queued before the answer leaves: a drained shutdown writes it.
    if let Some(log) = &state.decisions
        && !log.record(audit::decision(endpoint.name(), &request, &mut outcome))
    {
        state.metrics.record_dropped_decision();
    }
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<Arc<AppState>>) -> (StatusCode, String) {
    if state.shutting_down.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into());
    }
    let Some(policies) = state.policies.load_full() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "loading policies\n".into());
    };
    let failures: Vec<String> = policies
        .failures()
        .map(|(name, error)| format!("policy {name:?} failed to load: {error}"))
        .collect();
    let needing: Vec<&str> = policies.context_aware().collect();
    let context = if needing.is_empty() {
        Ok(String::new())
    } else {
        match policies.context().status() {
            Ok(line) => Ok(format!("{line}\n")),
            // Reads fail, and each policy's failurePolicy applies: serving
            // is still possible, and says so.
            Err(error) if !policies.context().available() => Ok(format!(
                "{error}; policies {} fail per their failurePolicy\n",
                needing.join(", ")
            )),
            Err(syncing) => Err(syncing),
        }
    };
    if failures.is_empty() {
        match context {
            Ok(context) => (
                StatusCode::OK,
                format!(
                    "ready: {} policies loaded\n{context}",
                    policies.policies().len()
                ),
            ),
            Err(syncing) => (StatusCode::SERVICE_UNAVAILABLE, format!("{syncing}\n")),
        }
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, failures.join("\n") + "\n")
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}
