//! Tollgate's certificates: a CA and serving certificate for the webhook's
//! Service ([`authority`]), kept in a local directory ([`dir`]) or, for a
//! replicated webhook, in one Secret that one replica rotates and whose CA
//! bundle it injects into the webhook configurations ([`lifecycle`], over
//! the apiserver objects of [`objects`]).

pub mod authority;
pub mod dir;
pub mod lifecycle;
pub mod objects;

pub use authority::Pair;
