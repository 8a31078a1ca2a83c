//! Policies as configured: the configuration model ([`config`]), which
//! policies apply to a request ([`matcher`]), the loaded set ([`set`]) and
//! the evaluation chain with its modes, deadline and mutation composition
//! ([`chain`]), what a verdict may say ([`output`]), and the suspension of
//! policies that keep misbehaving ([`breaker`]). The engine reaches the
//! cluster context through `capabilities`.

pub mod breaker;
mod capabilities;
pub mod chain;
pub mod config;
pub mod gatekeeper;
pub mod immutable;
pub mod matcher;
pub mod output;
pub mod patch;
pub mod registration;
pub mod request;
pub mod set;
pub mod source;

pub use chain::Outcome;
pub use config::Config;
pub use request::Request;
pub use set::PolicySet;
