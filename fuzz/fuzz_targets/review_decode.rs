//! AdmissionReview decoding: any body gives a review or an error, never a
//! panic; what decodes locates its object inside the body and encodes an
//! answer that is JSON.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use tollgate::policy::Outcome;
use tollgate::server::review;

fuzz_target!(|body: &[u8]| {
    let Ok(request) = review::decode(body) else {
        return;
    };
    assert!(!request.uid.is_empty());
    // Exactly one JSON value, as written: numbers past f64's range are
    // syntax the codec passes on (a policy's own parse refuses them).
    if let Some(object) = request.object_text() {
        let raw: Box<RawValue> = serde_json::from_str(object).expect("the object is JSON");
        assert_eq!(raw.get(), object);
    }
    let denied = Outcome {
        allowed: false,
        code: 403,
        message: Some(request.uid.to_string()),
        ..Outcome::default()
    };
    let answer = review::encode(&request.uid, &denied);
    let answer: serde_json::Value = serde_json::from_slice(&answer).expect("the answer is JSON");
    assert_eq!(answer["response"]["uid"], request.uid.as_ref());
});
