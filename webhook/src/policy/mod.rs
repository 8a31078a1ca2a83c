//! Policies as configured: the configuration model ([`config`]), which
//! policies apply to a request ([`matcher`]), the loaded set ([`set`]) and
//! the evaluation chain with its modes and mutation composition ([`chain`]).

pub mod chain;
pub mod config;
pub mod matcher;
pub mod patch;
pub mod request;
pub mod set;

pub use chain::Outcome;
pub use config::Config;
pub use request::Request;
pub use set::PolicySet;
