//! A policy built against the first `tollgate:policy` world (`wit/`, the
//! world as the core release shipped it: the `log` import, no context, no
//! quota, no `index` export), without the SDK. The host must keep running
//! such components unchanged.

#[cfg(target_arch = "wasm32")]
#[allow(
    unsafe_code,
    reason = "wit-bindgen's export glue names exported functions; it is generated, not written here"
)]
mod component {
    wit_bindgen::generate!({ world: "policy", path: "wit" });

    struct V0;

    impl Guest for V0 {
        fn validate_settings(_settings: String) -> Result<(), String> {
            Ok(())
        }

        fn evaluate(request: String, _settings: String) -> Result<Verdict, String> {
            tollgate::policy::log::log(tollgate::policy::log::Level::Debug, "world v0 evaluating");
            Ok(Verdict {
                allowed: !request.contains("\"deny-me\""),
                message: Some("denied by a v0 policy".into()),
                code: None,
                warnings: Vec::new(),
                audit_annotations: vec![("world".into(), "v0".into())],
                mutated_object: None,
            })
        }
    }

    export!(V0);
}
