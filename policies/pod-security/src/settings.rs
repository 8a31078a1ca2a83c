//! The policy's settings: level, version, exemptions and per-namespace
//! overrides, with PSA's meaning.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use tollgate_sdk::pod::TemplatePathRule;

/// The newest policy version whose checks this policy knows (Kubernetes
/// 1.37); newer versions are evaluated as this one, as PSA does.
pub const NEWEST_MINOR: u32 = 37;

/// A Pod Security Standards level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// No restrictions.
    Privileged,
    /// Prevents known privilege escalations.
    Baseline,
    /// Current pod hardening best practice.
    Restricted,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        })
    }
}

/// A policy version: `latest` or `v1.N`, kept as written for messages.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Version {
    text: String,
    minor: Option<u32>,
}

impl Version {
    /// The minor version whose checks apply: `latest` and versions newer
    /// than the newest known are the newest known.
    pub fn effective_minor(&self) -> u32 {
        self.minor.map_or(NEWEST_MINOR, |m| m.min(NEWEST_MINOR))
    }
}

impl Default for Version {
    fn default() -> Self {
        Version {
            text: "latest".to_owned(),
            minor: None,
        }
    }
}

impl TryFrom<String> for Version {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        if text == "latest" {
            return Ok(Version::default());
        }
        let minor = text
            .strip_prefix("v1.")
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .filter(|n| *n == "0" || !n.starts_with('0'))
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| {
                format!("version {text:?} is not \"latest\" or \"v1.<minor>\" (e.g. \"v1.30\")")
            })?;
        Ok(Version {
            text,
            minor: Some(minor),
        })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Requests that are never checked, as in PSA's admission configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Exemptions {
    /// Authenticated user names (e.g. a controller's service account).
    #[serde(default)]
    pub usernames: Vec<String>,
    /// Namespace names.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// `runtimeClassName`s whose pods are not checked (e.g. a sandboxed
    /// runtime such as gVisor or Kata).
    #[serde(default)]
    pub runtime_classes: Vec<String>,
}

/// A namespace's own level and version, as a namespace's
/// `pod-security.kubernetes.io/*` labels would give it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Override {
    /// The level for this namespace.
    pub level: Level,
    /// The version; the policy's own when absent.
    pub version: Option<Version>,
}

/// The policy's settings.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Settings {
    /// The level every namespace gets unless overridden.
    pub level: Level,
    /// The version of the level's checks; `latest` when absent.
    #[serde(default)]
    pub version: Version,
    /// Requests that are never checked.
    #[serde(default)]
    pub exemptions: Exemptions,
    /// Level and version per namespace name.
    #[serde(default)]
    pub namespace_overrides: BTreeMap<String, Override>,
    /// Where pod templates live in kinds the SDK does not know (ML CRDs).
    #[serde(default)]
    pub template_paths: Vec<TemplatePathRule>,
    /// Read each mode's level and version from the namespace's
    /// `pod-security.kubernetes.io/*` labels, as Pod Security Admission
    /// does (needs `context: [{apiVersion: v1, kind: Namespace}]`); `level`
    /// and `version` are then the default for namespaces without an
    /// `enforce` label.
    #[serde(default)]
    pub namespace_labels: bool,
}

impl Settings {
    /// The level and version that apply in `namespace`.
    pub fn for_namespace(&self, namespace: &str) -> (Level, &Version) {
        match self.namespace_overrides.get(namespace) {
            Some(o) => (o.level, o.version.as_ref().unwrap_or(&self.version)),
            None => (self.level, &self.version),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_clamp_like_psa() {
        let parse = |text: &str| Version::try_from(text.to_owned());
        assert_eq!(parse("latest").unwrap().effective_minor(), NEWEST_MINOR);
        assert_eq!(parse("v1.0").unwrap().effective_minor(), 0);
        assert_eq!(parse("v1.25").unwrap().effective_minor(), 25);
        assert_eq!(parse("v1.99").unwrap().effective_minor(), NEWEST_MINOR);
        assert_eq!(parse("v1.99").unwrap().to_string(), "v1.99");
        for bad in ["", "1.25", "v1.", "v1.025", "v2.0", "v1.2x", "Latest"] {
            let error = parse(bad).unwrap_err();
            assert!(error.contains("is not \"latest\""), "{bad}: {error}");
        }
    }
}
