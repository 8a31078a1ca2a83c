//! # Tollgate
//!
//! A Kubernetes admission webhook whose policies are WebAssembly components.
//! One HTTPS call from the apiserver evaluates every matching policy.
//!
//! # Layout
//!
//! Read in the order a request flows:
//!
//! - [`server`]: HTTPS (rustls, hyper), routes, the AdmissionReview codec,
//!   metrics. The one place errors become HTTP answers.
//! - [`policy`]: the configuration model, the match index, the evaluation
//!   chain (modes, failure policies, mutation composition).
//! - [`engine`]: wasmtime: compile once (disk cache), pre-instantiate, a
//!   fresh pooled instance per call with deadline, memory and output caps.
//! - [`context`]: cluster state for context-aware policies (live watchers
//!   or manifest snapshots) and the quota ledger.
//! - [`audit`]: the hash-chained decision log, the scanner of existing
//!   objects and its reports.
//! - [`builtin`]: the policies compiled into the binary and the embedded
//!   default configuration.
//! - [`cli`]: the `tollgate` subcommands.

pub mod audit;
pub mod builtin;
pub mod cli;
pub mod context;
pub mod engine;
pub mod policy;
pub mod server;

#[cfg(test)]
mod test_support;
