//! Label selectors, one model for both ways they are written: kubectl's
//! text syntax (`team=vision,tier notin (batch),!legacy`), as `context::list`
//! takes them, and the object form (`matchLabels`, `matchExpressions`) of
//! configurations and policy settings. Parsing, printing and matching,
//! shared by the host, the policies and the native test harness.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer};

/// A parsed selector: every requirement must hold (an empty one selects all).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

/// One requirement on one label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// How its value is tested.
    pub test: Test,
}

/// How a [`Requirement`] tests a label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Test {
    /// `key=value` or `key==value`.
    Equals(String),
    /// `key!=value` (also true when the label is absent).
    NotEquals(String),
    /// `key in (a,b)`.
    In(Vec<String>),
    /// `key notin (a,b)` (also true when the label is absent).
    NotIn(Vec<String>),
    /// `key`.
    Exists,
    /// `!key`.
    DoesNotExist,
}

impl Selector {
    /// Parses kubectl's selector syntax.
    ///
    /// # Errors
    ///
    /// A message naming the part that is not a requirement.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        let mut rest = text.trim();
        while !rest.is_empty() {
            let (part, tail) = split_requirement(rest);
            requirements.push(parse_requirement(part.trim()).map_err(|e| {
                format!(
                    "label selector {text:?}: {e} (write e.g. team=vision,tier in (a,b),!legacy)"
                )
            })?);
            rest = tail.trim_start();
        }
        Ok(Selector { requirements })
    }

    /// Builds a selector from requirements.
    pub fn new(requirements: Vec<Requirement>) -> Self {
        Selector { requirements }
    }

    /// This selector with one more requirement.
    pub fn with(mut self, requirement: Requirement) -> Self {
        self.requirements.push(requirement);
        self
    }

    /// Whether it selects everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether labels, looked up by `label`, satisfy every requirement.
    pub fn matches<'a>(&self, label: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.requirements.iter().all(|r| {
            let value = label(&r.key);
            match &r.test {
                Test::Equals(v) => value == Some(v.as_str()),
                Test::NotEquals(v) => value != Some(v.as_str()),
                Test::In(vs) => value.is_some_and(|x| vs.iter().any(|v| v == x)),
                Test::NotIn(vs) => value.is_none_or(|x| vs.iter().all(|v| v != x)),
                Test::Exists => value.is_some(),
                Test::DoesNotExist => value.is_none(),
            }
        })
    }

    /// Whether a label map satisfies every requirement.
    pub fn matches_labels(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches(|key| labels.get(key).map(String::as_str))
    }
}

/// The object form, as Kubernetes writes a `LabelSelector`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ObjectForm {
    #[serde(default)]
    match_labels: BTreeMap<String, String>,
    #[serde(default)]
    match_expressions: Vec<Expression>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expression {
    key: String,
    operator: Operator,
    #[serde(default)]
    values: Vec<String>,
}

#[derive(Debug, Deserialize)]
enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl TryFrom<ObjectForm> for Selector {
    type Error = String;

    fn try_from(form: ObjectForm) -> Result<Self, String> {
        let labels = form
            .match_labels
            .into_iter()
            .map(|(key, value)| Requirement {
                key,
                test: Test::Equals(value),
            });
        let expressions = form.match_expressions.into_iter().map(|e| {
            let test = match (e.operator, e.values.is_empty()) {
                (Operator::In, false) => Test::In(e.values),
                (Operator::NotIn, false) => Test::NotIn(e.values),
                (Operator::Exists, true) => Test::Exists,
                (Operator::DoesNotExist, true) => Test::DoesNotExist,
                (operator @ (Operator::In | Operator::NotIn), true) => {
                    return Err(format!(
                        "requirement on {:?}: {operator:?} needs values",
                        e.key
                    ));
                }
                (operator, false) => {
                    return Err(format!(
                        "requirement on {:?}: {operator:?} takes no values",
                        e.key
                    ));
                }
            };
            Ok(Requirement { key: e.key, test })
        });
        Ok(Selector {
            requirements: labels
                .map(Ok)
                .chain(expressions)
                .collect::<Result<_, _>>()?,
        })
    }
}

/// Reads the object form (`matchLabels`, `matchExpressions`); an `In` or
/// `NotIn` without values, or values on `Exists`, is an error, as the
/// apiserver's validation makes it.
impl<'de> Deserialize<'de> for Selector {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Selector::try_from(ObjectForm::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

/// Splits off the first requirement: commas inside `( )` do not end it.
fn split_requirement(text: &str) -> (&str, &str) {
    let mut depth = 0usize;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => return (&text[..i], &text[i + 1..]),
            _ => {}
        }
    }
    (text, "")
}

fn parse_requirement(part: &str) -> Result<Requirement, String> {
    if part.is_empty() {
        return Err("an empty requirement".into());
    }
    if let Some(key) = part.strip_prefix('!') {
        return Ok(Requirement {
            key: key_of(key.trim())?,
            test: Test::DoesNotExist,
        });
    }
    if let Some((key, value)) = part.split_once("!=") {
        return Ok(Requirement {
            key: key_of(key.trim())?,
            test: Test::NotEquals(value_of(value.trim())?),
        });
    }
    if let Some((key, value)) = part.split_once('=') {
        let value = value.strip_prefix('=').unwrap_or(value);
        return Ok(Requirement {
            key: key_of(key.trim())?,
            test: Test::Equals(value_of(value.trim())?),
        });
    }
    let mut words = part.splitn(2, char::is_whitespace);
    let key = key_of(words.next().unwrap_or_default())?;
    let Some(rest) = words.next().map(str::trim_start) else {
        return Ok(Requirement {
            key,
            test: Test::Exists,
        });
    };
    let (negated, list) = if let Some(list) = rest.strip_prefix("notin") {
        (true, list)
    } else if let Some(list) = rest.strip_prefix("in") {
        (false, list)
    } else {
        return Err(format!("{part:?}: expected `in` or `notin` after the key"));
    };
    let values = list
        .trim()
        .strip_prefix('(')
        .and_then(|l| l.strip_suffix(')'))
        .ok_or_else(|| format!("{part:?}: the values must be in parentheses"))?
        .split(',')
        .map(|v| value_of(v.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Requirement {
        key,
        test: if negated {
            Test::NotIn(values)
        } else {
            Test::In(values)
        },
    })
}

fn key_of(key: &str) -> Result<String, String> {
    let valid = !key.is_empty()
        && key.len() <= 317
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if valid {
        Ok(key.to_owned())
    } else {
        Err(format!("{key:?} is not a label key"))
    }
}

fn value_of(value: &str) -> Result<String, String> {
    let valid = value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(value.to_owned())
    } else {
        Err(format!("{value:?} is not a label value"))
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let key = &r.key;
            match &r.test {
                Test::Equals(v) => write!(f, "{key}={v}")?,
                Test::NotEquals(v) => write!(f, "{key}!={v}")?,
                Test::In(vs) => write!(f, "{key} in ({})", vs.join(","))?,
                Test::NotIn(vs) => write!(f, "{key} notin ({})", vs.join(","))?,
                Test::Exists => write!(f, "{key}")?,
                Test::DoesNotExist => write!(f, "!{key}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn selects(selector: &str, labels: &[(&str, &str)]) -> bool {
        let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
        Selector::parse(selector)
            .unwrap()
            .matches(|k| labels.get(k).copied())
    }

    #[test]
    fn every_operator_of_kubectl_syntax() {
        let labels = [("team", "vision"), ("tier", "batch")];
        assert!(selects("", &labels));
        assert!(selects("team=vision", &labels));
        assert!(selects("team==vision", &labels));
        assert!(!selects("team!=vision", &labels));
        assert!(selects("owner!=bob", &labels));
        assert!(selects("tier in (batch, serving)", &labels));
        assert!(!selects("tier notin (batch,serving)", &labels));
        assert!(selects("missing notin (x)", &labels));
        assert!(selects("team,!legacy", &labels));
        assert!(!selects("team=vision,legacy", &labels));
        assert!(selects(
            "gpu.tollgate.dev/pool in (a,b),team = vision",
            &[("gpu.tollgate.dev/pool", "b"), ("team", "vision")]
        ));
    }

    #[test]
    fn printing_round_trips() {
        let text = "team=vision,tier in (a,b),x notin (c),y,!z,w!=v";
        assert_eq!(Selector::parse(text).unwrap().to_string(), text);
    }

    #[test]
    fn the_object_form_matches_like_kubernetes() {
        let selector: Selector = serde_json::from_str(
            r#"{"matchLabels": {"team": "a"}, "matchExpressions": [
                {"key": "tier", "operator": "NotIn", "values": ["dev"]},
                {"key": "gpu", "operator": "Exists"}]}"#,
        )
        .unwrap();
        assert_eq!(selector.to_string(), "team=a,tier notin (dev),gpu");
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(selector.matches_labels(&labels(&[("team", "a"), ("gpu", "1")])));
        assert!(!selector.matches_labels(&labels(&[("team", "a"), ("gpu", "1"), ("tier", "dev")])));
        assert!(!selector.matches_labels(&labels(&[("team", "a")])));
        let empty: Selector = serde_json::from_str("{}").unwrap();
        assert!(empty.is_empty() && empty.matches_labels(&BTreeMap::new()));
    }

    #[test]
    fn the_object_form_refuses_what_the_apiserver_refuses() {
        for (bad, message) in [
            (
                r#"{"key": "t", "operator": "In"}"#,
                "\"t\": In needs values",
            ),
            (
                r#"{"key": "t", "operator": "Exists", "values": ["x"]}"#,
                "Exists takes no values",
            ),
            (
                r#"{"key": "t", "operator": "Gt", "values": ["1"]}"#,
                "unknown variant `Gt`",
            ),
        ] {
            let text = format!(r#"{{"matchExpressions": [{bad}]}}"#);
            let error = serde_json::from_str::<Selector>(&text)
                .unwrap_err()
                .to_string();
            assert!(error.contains(message), "{bad}: {error}");
        }
        assert!(serde_json::from_str::<Selector>(r#"{"matchLabel": {}}"#).is_err());
    }

    #[test]
    fn malformed_selectors_are_named() {
        for bad in ["=x", "tier in a,b", "a,,b", "tier within (a)", "k=v v"] {
            let error = Selector::parse(bad).unwrap_err();
            assert!(error.starts_with("label selector"), "{bad}: {error}");
        }
    }
}
