//! What makes a container, and a pod, a GPU one.

use serde_json::Value;
use tollgate_sdk::quantity;

/// Whether `name` matches `pattern`, where `*` matches any run of
/// characters.
pub fn matches(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// Whether a container (given its `resources`) asks for a GPU: a non-zero request or limit of a
/// resource matching `patterns`, or (with dynamic resource claims) a
/// reference to one of the pod's claims.
pub fn is_gpu_container(resources: &Value, patterns: &[String], claims: bool) -> bool {
    let asks = ["limits", "requests"].iter().any(|field| {
        resources[field].as_object().is_some_and(|amounts| {
            amounts.iter().any(|(name, amount)| {
                patterns.iter().any(|p| matches(p, name))
                    && amount
                        .as_str()
                        .and_then(quantity::parse)
                        .or_else(|| amount.as_f64())
                        .is_some_and(|n| n > 0.0)
            })
        })
    });
    asks || (claims
        && resources["claims"]
            .as_array()
            .is_some_and(|claims| !claims.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn patterns_match_like_globs() {
        assert!(matches("nvidia.com/gpu", "nvidia.com/gpu"));
        assert!(!matches("nvidia.com/gpu", "nvidia.com/gpu.shared"));
        assert!(matches("nvidia.com/mig-*", "nvidia.com/mig-1g.10gb"));
        assert!(!matches("nvidia.com/mig-*", "nvidia.com/gpu"));
        assert!(matches("*/gpu", "amd.com/gpu"));
        assert!(matches("a*b*c", "axxbyyc"));
        assert!(!matches("a*b*c", "axxcyyb"));
    }

    #[test]
    fn gpu_containers_ask_for_a_non_zero_amount() {
        let patterns = ["nvidia.com/gpu".to_owned(), "nvidia.com/mig-*".to_owned()];
        let gpu = |resources: Value| is_gpu_container(&resources, &patterns, true);
        assert!(gpu(json!({"limits": {"nvidia.com/gpu": "1"}})));
        assert!(gpu(json!({"limits": {"nvidia.com/gpu": 2}})));
        assert!(gpu(json!({"requests": {"nvidia.com/mig-1g.10gb": "1"}})));
        assert!(!gpu(json!({"limits": {"nvidia.com/gpu": "0"}})));
        assert!(!gpu(json!({"limits": {"cpu": "8"}})));
        assert!(gpu(json!({"claims": [{"name": "gpu"}]})));
        assert!(!gpu(json!({})));
    }
}
