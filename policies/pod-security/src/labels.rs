//! The level and version of each Pod Security Admission mode, read from a
//! namespace's `pod-security.kubernetes.io/*` labels as PSA reads them.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::settings::{Level, Settings, Version};

/// The label prefix PSA reads.
const PREFIX: &str = "pod-security.kubernetes.io/";

/// A level and the version of its checks.
pub type Standard = (Level, Version);

/// What each mode asks in a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Modes {
    /// Refuse what violates it.
    pub enforce: Standard,
    /// Admit with a warning.
    pub warn: Option<Standard>,
    /// Admit with an audit annotation (and the decision log).
    pub audit: Option<Standard>,
}

impl Modes {
    /// Enforcement only, at `standard` (the policy without namespace
    /// labels).
    pub fn enforce(standard: Standard) -> Self {
        Modes {
            enforce: standard,
            warn: None,
            audit: None,
        }
    }

    /// The modes `labels` set; a mode without a level label gets the
    /// cluster default (the policy's `level` and `version` for enforce,
    /// none for warn and audit). As in PSA, a level that is not a level is
    /// read as `restricted` and a version that is not a version as
    /// `latest`.
    pub fn from_labels(labels: &BTreeMap<String, String>, settings: &Settings) -> Self {
        let standard = |mode: &str| -> Option<Standard> {
            let level = labels.get(&format!("{PREFIX}{mode}"))?;
            let level = parse_level(level);
            let version = labels.get(&format!("{PREFIX}{mode}-version")).map_or_else(
                || settings.version.clone(),
                |v| Version::try_from(v.clone()).unwrap_or_default(),
            );
            Some((level, version))
        };
        Modes {
            enforce: standard("enforce").unwrap_or((settings.level, settings.version.clone())),
            warn: standard("warn"),
            audit: standard("audit"),
        }
    }
}

fn parse_level(text: &str) -> Level {
    match text {
        "privileged" => Level::Privileged,
        "baseline" => Level::Baseline,
        _ => Level::Restricted,
    }
}

#[derive(Deserialize)]
struct Namespace {
    #[serde(default)]
    metadata: Metadata,
}

#[derive(Deserialize, Default)]
struct Metadata {
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// The labels of an object's JSON text (none when it has none).
///
/// # Errors
///
/// The text is not an object.
pub fn of(object: &str) -> tollgate_sdk::Result<BTreeMap<String, String>> {
    Ok(serde_json::from_str::<Namespace>(object)?.metadata.labels)
}

/// The labels of namespace `name`, read through the host's cluster context
/// (granted `v1/Namespace`); none when it is not known.
///
/// # Errors
///
/// Not granted, or no cluster context: the host's error.
pub fn of_namespace(name: &str) -> tollgate_sdk::Result<BTreeMap<String, String>> {
    match tollgate_sdk::context::get("v1", "Namespace", "", name)? {
        Some(object) => of(&object),
        None => Ok(BTreeMap::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        serde_json::from_value(serde_json::json!({"level": "baseline", "version": "v1.30"}))
            .unwrap()
    }

    #[test]
    fn labels_give_each_mode_as_psa_reads_them() {
        let labels: BTreeMap<String, String> = [
            ("pod-security.kubernetes.io/enforce", "restricted"),
            ("pod-security.kubernetes.io/enforce-version", "v1.25"),
            ("pod-security.kubernetes.io/warn", "restricted"),
            ("pod-security.kubernetes.io/audit", "bogus"),
            ("pod-security.kubernetes.io/audit-version", "not-a-version"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let modes = Modes::from_labels(&labels, &settings());
        assert_eq!(modes.enforce.0, Level::Restricted);
        assert_eq!(modes.enforce.1.to_string(), "v1.25");
        // No warn-version: the cluster default version.
        assert_eq!(modes.warn.as_ref().unwrap().1.to_string(), "v1.30");
        // Not a level: the most restrictive; not a version: latest.
        assert_eq!(modes.audit.as_ref().unwrap().0, Level::Restricted);
        assert_eq!(modes.audit.as_ref().unwrap().1.to_string(), "latest");
        // Unlabelled: the policy's own level and version enforce.
        let bare = Modes::from_labels(&BTreeMap::new(), &settings());
        assert_eq!(bare, Modes::enforce((Level::Baseline, settings().version)));
    }
}
