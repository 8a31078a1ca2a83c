//! # tollgate-sdk
//!
//! Everything a policy author needs to write a Tollgate policy in Rust.
//!
//! A policy is a type that implements [`Policy`]: typed settings, checked once
//! at load, and an `evaluate` that turns a [`Request`] into a [`Verdict`].
//! [`export!`] makes it a WebAssembly component for the `tollgate:policy`
//! world (`sdk/wit/policy.wit`); [`testing`] runs the same code natively in
//! `cargo test`, no Wasm needed.
//!
//! ```
//! use tollgate_sdk::{Policy, Request, Verdict};
//!
//! #[derive(serde::Deserialize, Default)]
//! struct Settings { forbidden_label: String }
//!
//! struct NoLabel;
//!
//! impl Policy for NoLabel {
//!     type Settings = Settings;
//!     fn evaluate(request: &Request<'_>, settings: &Settings) -> tollgate_sdk::Result<Verdict> {
//!         let labels = &request.object()?["metadata"]["labels"];
//!         Ok(if labels.get(&settings.forbidden_label).is_some() {
//!             Verdict::deny(format!("label {:?} is not allowed", settings.forbidden_label))
//!         } else {
//!             Verdict::allow()
//!         })
//!     }
//! }
//!
//! let review = tollgate_sdk::testing::review(serde_json::json!({
//!     "apiVersion": "v1", "kind": "Pod",
//!     "metadata": {"name": "p", "labels": {"debug": "1"}},
//! }));
//! let verdict = tollgate_sdk::testing::evaluate::<NoLabel>(&review, r#"{"forbidden_label":"debug"}"#).unwrap();
//! assert!(!verdict.allowed);
//! assert_eq!(verdict.message.as_deref(), Some("label \"debug\" is not allowed"));
//! ```
//!
//! # Layout
//!
//! - [`request`]: the admission request as the policy sees it.
//! - [`verdict`]: allow, deny, warn, annotate, mutate.
//! - [`pod`]: containers of every kind, and pod specs inside workloads and
//!   ML jobs ([`pod::TemplatePaths`]); [`pod::model`], the typed Pod the
//!   built-in policies read (security, placement, resources).
//! - [`edit`]: mutate an object without parsing what is not changed.
//! - [`quantity`]: resource quantities as numbers.
//! - [`context`]: read-only cluster state through the host.
//! - [`quota`]: indexed usage and the atomic check-and-reserve.
//! - [`selector`]: label selectors, in kubectl's syntax or Kubernetes'
//!   object form.
//! - [`log`]: diagnostics through the host.
//! - [`prepared`]: settings read ahead of a call, off the request path.
//! - [`testing`]: the native harness.
//! - `guest` (Wasm only): the generated bindings behind [`export!`].

pub mod context;
pub mod edit;
pub mod log;
pub mod pod;
pub mod prepared;
pub mod quantity;
pub mod quota;
pub mod request;
pub mod selector;
pub mod testing;
pub mod verdict;

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod guest;

#[cfg(all(target_arch = "wasm32", feature = "bump-allocator"))]
pub mod allocator;

/// Policy components allocate with [`allocator::Bump`]: each instance serves
/// one call, so nothing needs reusing (turn off with
/// `default-features = false`).
#[cfg(all(target_arch = "wasm32", feature = "bump-allocator"))]
#[global_allocator]
static ALLOCATOR: allocator::Bump = allocator::Bump::new();

pub use k8s_openapi;
pub use request::Request;
pub use serde_json;
pub use verdict::Verdict;

/// Why a policy could not reach a verdict; the host applies the policy's
/// `failurePolicy` to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error(format!("invalid JSON: {e}"))
    }
}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Error(message)
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Self {
        Error(message.to_owned())
    }
}

/// Result of a policy call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A Tollgate policy.
pub trait Policy {
    /// The policy's settings, deserialized from the configuration's
    /// `settings` (absent settings deserialize from `{}`). In the sandbox
    /// they are read once per instance, off the request path (see
    /// [`prepared`]): whatever a policy derives from its settings alone
    /// belongs in their deserialization.
    type Settings: serde::de::DeserializeOwned + 'static;

    /// Checks settings beyond what deserialization checks.
    ///
    /// # Errors
    ///
    /// A message saying which setting is wrong and what to write instead.
    fn validate_settings(_settings: &Self::Settings) -> Result<(), String> {
        Ok(())
    }

    /// Decides one admission request. A mutating policy returns
    /// [`Verdict::mutate`] only when it changed something; the host turns the
    /// difference into a JSON Patch (an empty difference is no patch).
    ///
    /// # Errors
    ///
    /// When no verdict can be reached (e.g. the object is malformed); the host
    /// then applies the policy's `failurePolicy`.
    fn evaluate(request: &Request<'_>, settings: &Self::Settings) -> Result<Verdict>;

    /// Decides one request given as JSON text. The default parses it into a
    /// [`Request`] and calls [`Policy::evaluate`]; a policy may instead read
    /// what it needs of the object while the request is parsed
    /// ([`Request::parse_with`]), so the object's text is scanned once.
    ///
    /// # Errors
    ///
    /// As [`Policy::evaluate`].
    fn evaluate_text(request: &str, settings: &Self::Settings) -> Result<Verdict> {
        Self::evaluate(&Request::parse(request)?, settings)
    }

    /// What a cluster object (JSON text) counts for in the quota index: the
    /// host calls it for every object of the kinds the policy is granted, as
    /// they change, and keeps the totals per key ([`quota::usage`]). The
    /// default counts nothing.
    ///
    /// # Errors
    ///
    /// When the object cannot be read; the host logs it and counts nothing.
    fn index(_object: &str, _settings: &Self::Settings) -> Result<Vec<quota::Entry>> {
        Ok(Vec::new())
    }
}

/// Parses settings JSON text; empty text or `null` count as `{}`.
///
/// # Errors
///
/// The deserializer's message, naming the offending field.
pub fn parse_settings<S: serde::de::DeserializeOwned>(settings: &str) -> Result<S, String> {
    let text = settings.trim();
    let text = if text.is_empty() || text == "null" {
        "{}"
    } else {
        text
    };
    serde_json::from_str(text).map_err(|e| format!("invalid settings: {e}"))
}

/// Runs [`Policy::validate_settings`] on settings text (used by the export
/// glue and the test harness).
///
/// # Errors
///
/// Whatever parsing or the policy's own check reports.
pub fn run_validate_settings<P: Policy>(settings: &str) -> Result<(), String> {
    let settings: P::Settings = parse_settings(settings)?;
    P::validate_settings(&settings)
}

/// Runs [`Policy::evaluate`] on request and settings text, with the settings
/// [`prepared`] ahead when they are the same text (used by the export glue
/// and the test harness).
///
/// # Errors
///
/// Unparseable request or settings, or the policy's own error.
pub fn run_evaluate<P: Policy>(request: &str, settings: &str) -> Result<Verdict> {
    prepared::with_settings::<P, _>(settings, |settings| P::evaluate_text(request, settings))
}

/// Runs [`Policy::index`] on object and settings text, as
/// [`run_evaluate`] runs `evaluate` (used by the export glue and the test
/// harness).
///
/// # Errors
///
/// Unparseable settings, or the policy's own error.
pub fn run_index<P: Policy>(object: &str, settings: &str) -> Result<Vec<quota::Entry>> {
    prepared::with_settings::<P, _>(settings, |settings| P::index(object, settings))
}

/// Makes a [`Policy`] the component's exports. Call it once, at the crate
/// root of a `cdylib` policy crate; on non-Wasm targets it expands to nothing,
/// so the same crate also builds natively for `cargo test`.
#[macro_export]
macro_rules! export {
    ($policy:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct Export;
            impl $crate::guest::Guest for Export {
                fn validate_settings(
                    settings: ::std::string::String,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::run_validate_settings::<$policy>(&settings)
                }
                fn evaluate(
                    request: ::std::string::String,
                    settings: ::std::string::String,
                ) -> ::std::result::Result<
                    $crate::guest::tollgate::policy::types::Verdict,
                    ::std::string::String,
                > {
                    $crate::guest::to_wit($crate::run_evaluate::<$policy>(&request, &settings))
                }
                fn index(
                    object: ::std::string::String,
                    settings: ::std::string::String,
                ) -> ::std::result::Result<
                    ::std::vec::Vec<(::std::string::String, ::std::string::String, u64)>,
                    ::std::string::String,
                > {
                    $crate::guest::to_wit_entries($crate::run_index::<$policy>(&object, &settings))
                }
                fn prepare(
                    settings: ::std::string::String,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::prepared::prepare::<$policy>(&settings)
                }
            }
    $crate::guest::export!(Export with_types_in $crate::guest);
        };
    };
}
