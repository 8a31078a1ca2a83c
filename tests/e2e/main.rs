//! End-to-end tests: the real `tollgate serve` binary over HTTPS, driven with
//! real AdmissionReview JSON. One test binary; the harness is in
//! `tests/src/lib.rs`.

mod audit;
mod bad_input;
mod cli;
mod deploy;
mod gatekeeper;
mod gpu_placement;
mod gpu_quota;
mod hardening;
mod install;
mod kubewarden;
mod live;
mod network_guard;
mod opa;
mod pod_security;
mod quota_replicas;
mod sandbox;
mod serve;
mod workload_priority;
mod workloads;
