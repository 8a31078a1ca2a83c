//! A policy whose start function never returns: `wit-component` runs a core
//! module's `_initialize` export while the component is instantiated, before
//! any export can be called, so the host must bound instantiation itself.

use tollgate_sdk::{Policy, Request, Verdict};

/// The policy (it is never reached).
pub struct StartLoop;

impl Policy for StartLoop {
    type Settings = tollgate_sdk::serde_json::Value;

    fn evaluate(
        _request: &Request<'_>,
        _settings: &Self::Settings,
    ) -> tollgate_sdk::Result<Verdict> {
        Ok(Verdict::allow())
    }
}

tollgate_sdk::export!(StartLoop);

/// Run at instantiation; loops forever.
#[cfg(target_arch = "wasm32")]
#[unsafe(no_mangle)]
#[allow(
    unsafe_code,
    reason = "exporting `_initialize` by its C name is what makes it the start function"
)]
pub extern "C" fn _initialize() {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}
