//! A policy of the `prepared-policy` world written without the SDK, so
//! that its `prepare` can do what the SDK's never does: fail, or loop, on
//! settings its `validate-settings` accepts (`{"prepare": "fail"}`,
//! `{"prepare": "loop"}`). Its `evaluate` allows, with an audit annotation
//! `prepared` holding the settings its instance's `prepare` got (empty when
//! it was not called), so the host's tests see what each instance was
//! prepared with.

#[cfg(target_arch = "wasm32")]
#[allow(
    unsafe_code,
    reason = "wit-bindgen's export glue names exported functions; it is generated, not written here"
)]
mod component {
    use std::cell::RefCell;

    wit_bindgen::generate!({ world: "prepared-policy", path: "../../../sdk/wit" });

    thread_local! {
        static PREPARED: RefCell<String> = const { RefCell::new(String::new()) };
    }

    struct Probe;

    impl Guest for Probe {
        fn validate_settings(_settings: String) -> Result<(), String> {
            Ok(())
        }

        fn prepare(settings: String) -> Result<(), String> {
            if settings.contains(r#""prepare":"fail""#) {
                return Err("fails on purpose".into());
            }
            if settings.contains(r#""prepare":"loop""#) {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            PREPARED.with(|prepared| *prepared.borrow_mut() = settings);
            Ok(())
        }

        fn evaluate(_request: String, _settings: String) -> Result<Verdict, String> {
            Ok(Verdict {
                allowed: true,
                message: None,
                code: None,
                warnings: Vec::new(),
                audit_annotations: vec![(
                    "prepared".into(),
                    PREPARED.with(|prepared| prepared.borrow().clone()),
                )],
                mutated_object: None,
            })
        }

        fn index(_object: String, _settings: String) -> Result<Vec<(String, String, u64)>, String> {
            Ok(Vec::new())
        }
    }

    export!(Probe);
}
