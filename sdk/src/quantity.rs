//! Kubernetes resource quantities (`100m`, `1.5Gi`, `2e3`), parsed for
//! comparison. `k8s-openapi` keeps a `Quantity` as its text; policies that
//! compare amounts need the number.

use std::collections::BTreeMap;

use serde::de::{Deserialize, Deserializer, Error as _};
use serde_json::Value;

/// Deserializes a map of resource name to quantity, accepting numbers as
/// YAML users write them (`cpu: 1`) as well as strings (`cpu: 100m`). Use
/// with `#[serde(deserialize_with = "…")]`.
///
/// # Errors
///
/// When a value is neither a string nor a number.
pub fn deserialize_map<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    BTreeMap::<String, Value>::deserialize(deserializer)?
        .into_iter()
        .map(|(resource, value)| match value {
            Value::String(text) => Ok((resource, text)),
            Value::Number(number) => Ok((resource, number.to_string())),
            other => Err(D::Error::custom(format!(
                "{resource}: {other} is not a quantity (write e.g. 100m or 1Gi)"
            ))),
        })
        .collect()
}

/// The value of a quantity in base units (cores, bytes, devices), or `None`
/// when the text is not a quantity.
pub fn parse(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exponent => {
            let digits = exponent.strip_prefix(['e', 'E'])?;
            10f64.powi(digits.parse().ok()?)
        }
    };
    Some(number * scale)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn parses_decimal_binary_and_exponent_suffixes() {
        assert_eq!(parse("100m"), Some(0.1));
        assert_eq!(parse("2"), Some(2.0));
        assert_eq!(parse("1Gi"), Some(1024.0 * 1024.0 * 1024.0));
        assert_eq!(parse("1.5k"), Some(1500.0));
        assert_eq!(parse("2e3"), Some(2000.0));
    }

    #[test]
    fn rejects_what_is_not_a_quantity() {
        assert_eq!(parse("lots"), None);
        assert_eq!(parse("1Xi"), None);
        assert_eq!(parse(""), None);
    }
}
