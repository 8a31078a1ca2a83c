//! The patch diff. The input is two JSON texts separated by a NUL byte.
//! Applying our patch to the first gives the second, and agrees with what
//! `json_patch::diff`'s patch gives; the texts are also diffed as written
//! differently (pretty-printed), which must give the same result.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tollgate::policy::patch;

fn applied(original: &Value, patch: &json_patch::Patch) -> Value {
    let mut value = original.clone();
    json_patch::patch(&mut value, patch).expect("the patch applies");
    value
}

fuzz_target!(|data: &[u8]| {
    let Some(split) = data.iter().position(|&b| b == 0) else {
        return;
    };
    let (Ok(old), Ok(new)) = (
        std::str::from_utf8(&data[..split]),
        std::str::from_utf8(&data[split + 1..]),
    ) else {
        return;
    };
    let (Ok(old_value), Ok(new_value)) = (
        serde_json::from_str::<Value>(old),
        serde_json::from_str::<Value>(new),
    ) else {
        return;
    };
    let ours = patch::diff(old, new).expect("both are JSON");
    assert_eq!(applied(&old_value, &ours), new_value, "{ours:?}");
    let theirs = json_patch::diff(&old_value, &new_value);
    assert_eq!(applied(&old_value, &ours), applied(&old_value, &theirs));
    let pretty = serde_json::to_string_pretty(&new_value).expect("a value prints");
    let again = patch::diff(old, &pretty).expect("both are JSON");
    assert_eq!(applied(&old_value, &again), new_value);
});
