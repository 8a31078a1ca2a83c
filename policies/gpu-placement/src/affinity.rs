//! Scheduling constraints added to a pod spec: node affinity requirements
//! (ANDed into every term, as the scheduler ORs terms) and pod affinity for
//! gangs.

use serde_json::{Value, json};

use crate::json::{array, path};
use crate::settings::TopologyMode;

/// Whether two node selector requirements say the same (values as a set).
fn same_requirement(a: &Value, b: &Value) -> bool {
    let values = |r: &Value| {
        let mut values: Vec<String> = r["values"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| v.as_str().unwrap_or_default().to_owned())
            .collect();
        values.sort();
        values
    };
    a["key"] == b["key"] && a["operator"] == b["operator"] && values(a) == values(b)
}

/// ANDs `requirements` into every term of the required node affinity (one
/// new term when there is none). Returns whether anything was added.
///
/// # Errors
///
/// When the affinity the user wrote is malformed.
pub fn require_nodes(affinity: &mut Value, requirements: &[Value]) -> Result<bool, String> {
    let required = path(
        affinity,
        &[
            "nodeAffinity",
            "requiredDuringSchedulingIgnoredDuringExecution",
        ],
    )?;
    let terms = array(path(required, &["nodeSelectorTerms"])?)?;
    if terms.is_empty() {
        terms.push(json!({"matchExpressions": requirements}));
        return Ok(true);
    }
    let mut changed = false;
    for term in terms {
        let expressions = array(path(term, &["matchExpressions"])?)?;
        for requirement in requirements {
            if !expressions.iter().any(|e| same_requirement(e, requirement)) {
                expressions.push(requirement.clone());
                changed = true;
            }
        }
    }
    Ok(changed)
}

/// Adds a pod affinity term (preferred with `weight`, or required) unless an
/// equal term is there. Returns whether it was added.
///
/// # Errors
///
/// When the affinity the user wrote is malformed.
pub fn attract_pods(
    affinity: &mut Value,
    term: Value,
    mode: TopologyMode,
    weight: u8,
) -> Result<bool, String> {
    let (field, entry) = match mode {
        TopologyMode::Preferred => (
            "preferredDuringSchedulingIgnoredDuringExecution",
            json!({"weight": weight, "podAffinityTerm": term}),
        ),
        TopologyMode::Required => (
            "requiredDuringSchedulingIgnoredDuringExecution",
            term.clone(),
        ),
    };
    let entries = array(path(affinity, &["podAffinity", field])?)?;
    let present = entries.iter().any(|e| match mode {
        TopologyMode::Preferred => e["podAffinityTerm"] == term,
        TopologyMode::Required => *e == term,
    });
    if !present {
        entries.push(entry);
    }
    Ok(!present)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h100() -> Vec<Value> {
        vec![
            json!({"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-H100-80GB-HBM3"]}),
        ]
    }

    #[test]
    fn requirements_create_a_term_when_there_is_none() {
        let mut affinity = Value::Null;
        assert!(require_nodes(&mut affinity, &h100()).unwrap());
        assert_eq!(
            affinity,
            json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": h100()}]}}})
        );
        assert!(
            !require_nodes(&mut affinity, &h100()).unwrap(),
            "idempotent"
        );
    }

    #[test]
    fn requirements_are_anded_into_every_existing_term() {
        let mut affinity = json!({"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]},
            ]},
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "preference": {}}]}});
        assert!(require_nodes(&mut affinity, &h100()).unwrap());
        let terms = &affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
        assert_eq!(terms[0]["matchExpressions"][0]["key"], "zone");
        assert_eq!(terms[0]["matchExpressions"][1], h100()[0]);
        assert_eq!(terms[1]["matchFields"][0]["key"], "metadata.name");
        assert_eq!(terms[1]["matchExpressions"], json!(h100()));
        assert_eq!(
            affinity["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["weight"],
            1
        );
        // The same requirement with values in another order is not added again.
        let reordered = vec![
            json!({"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-H100-80GB-HBM3"]}),
        ];
        assert!(!require_nodes(&mut affinity, &reordered).unwrap());
    }

    #[test]
    fn malformed_affinity_is_an_error_not_overwritten() {
        let mut affinity = json!({"nodeAffinity": "yes"});
        assert!(require_nodes(&mut affinity, &h100()).is_err());
        assert_eq!(affinity, json!({"nodeAffinity": "yes"}));
    }

    #[test]
    fn pod_affinity_terms_are_added_once() {
        let term = json!({"labelSelector": {"matchLabels": {"job": "j"}}, "topologyKey": "nvidia.com/gpu.clique"});
        let mut affinity = Value::Null;
        assert!(attract_pods(&mut affinity, term.clone(), TopologyMode::Preferred, 100).unwrap());
        assert!(!attract_pods(&mut affinity, term.clone(), TopologyMode::Preferred, 100).unwrap());
        assert_eq!(
            affinity["podAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"],
            json!([{"weight": 100, "podAffinityTerm": term}])
        );
        assert!(attract_pods(&mut affinity, term.clone(), TopologyMode::Required, 100).unwrap());
        assert_eq!(
            affinity["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"],
            json!([term])
        );
    }
}
