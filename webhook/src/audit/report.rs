//! The audit report: what the scanner found, per object and policy, with
//! each policy's severity, category and controls; and its totals, which
//! every format shows.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Serialize;

use crate::policy::config::Severity;

/// One policy's result on one object, in PolicyReport's vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The object complies (or the policy only mutates it).
    Pass,
    /// The policy denies it (mode `enforce` or `audit`).
    Fail,
    /// The policy warns about it (mode `warn`).
    Warn,
    /// The policy could not reach a verdict.
    Error,
}

impl Outcome {
    /// Every outcome, in report order.
    pub const ALL: [Outcome; 4] = [Outcome::Pass, Outcome::Fail, Outcome::Warn, Outcome::Error];

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Warn => "warn",
            Outcome::Error => "error",
        }
    }
}

/// A policy as reports describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    /// Its name in the configuration.
    pub name: String,
    /// Its module (`builtin:pod-security`, a path).
    pub module: String,
    /// `enforce`, `warn` or `audit`.
    pub mode: String,
    /// How much a violation matters.
    pub severity: Severity,
    /// What it is about (`Pod Security`, `GPU Quota`).
    pub category: String,
    /// Controls it maps to (`CIS-5.2.1`, `NIST-800-53:AC-6`).
    pub controls: Vec<String>,
}

/// One policy's result on one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The policy's name.
    pub policy: String,
    /// The result.
    pub result: Outcome,
    /// The denial, warning or failure message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One object and what each matching policy found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Object {
    /// `apiVersion`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// Namespace (empty when cluster-scoped).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `metadata.uid`, when the object has one (from a cluster).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// One finding per matching policy, in configuration order.
    pub findings: Vec<Finding>,
}

impl Object {
    /// `Kind/namespace/name` (or `Kind/name`).
    pub fn reference(&self) -> String {
        if self.namespace.is_empty() {
            format!("{}/{}", self.kind, self.name)
        } else {
            format!("{}/{}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// Counts per outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Passes.
    pub pass: u64,
    /// Failures.
    pub fail: u64,
    /// Warnings.
    pub warn: u64,
    /// Errors.
    pub error: u64,
}

impl Counts {
    /// Adds one outcome.
    pub fn add(&mut self, outcome: Outcome) {
        *self.get_mut(outcome) += 1;
    }

    fn get_mut(&mut self, outcome: Outcome) -> &mut u64 {
        match outcome {
            Outcome::Pass => &mut self.pass,
            Outcome::Fail => &mut self.fail,
            Outcome::Warn => &mut self.warn,
            Outcome::Error => &mut self.error,
        }
    }

    /// The count of one outcome.
    pub fn get(&self, outcome: Outcome) -> u64 {
        match outcome {
            Outcome::Pass => self.pass,
            Outcome::Fail => self.fail,
            Outcome::Warn => self.warn,
            Outcome::Error => self.error,
        }
    }

    /// All outcomes.
    pub fn total(&self) -> u64 {
        self.pass + self.fail + self.warn + self.error
    }
}

/// Totals of a report, per policy, namespace and severity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Objects scanned.
    pub objects: u64,
    /// Every finding.
    pub total: Counts,
    /// Per policy.
    pub by_policy: BTreeMap<String, Counts>,
    /// Per namespace (`""` for cluster-scoped objects).
    pub by_namespace: BTreeMap<String, Counts>,
    /// Per severity of the policy.
    pub by_severity: BTreeMap<Severity, Counts>,
}

/// A whole report.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Always `tollgate.dev/v1`.
    pub api_version: &'static str,
    /// Always `AuditReport`.
    pub kind: &'static str,
    /// When the scan ended (RFC 3339).
    #[serde(serialize_with = "rfc3339")]
    pub generated: SystemTime,
    /// What was scanned (`manifests: PATH, …` or `cluster`).
    pub source: String,
    /// The totals.
    pub summary: Summary,
    /// The policies.
    pub policies: Vec<Policy>,
    /// Every object, in scan order.
    pub objects: Vec<Object>,
}

fn rfc3339<S: serde::Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&timestamp(*time))
}

/// A time as RFC 3339 text.
pub fn timestamp(time: SystemTime) -> String {
    jiff::Timestamp::try_from(time)
        .map_or_else(|_| "1970-01-01T00:00:00Z".into(), |t| t.to_string())
}

impl Report {
    /// A report of `objects` scanned from `source` against `policies`.
    pub fn new(source: String, policies: Vec<Policy>, objects: Vec<Object>) -> Self {
        let severity: BTreeMap<&str, Severity> = policies
            .iter()
            .map(|p| (p.name.as_str(), p.severity))
            .collect();
        let mut summary = Summary {
            objects: objects.len() as u64,
            ..Summary::default()
        };
        for object in &objects {
            for finding in &object.findings {
                summary.total.add(finding.result);
                summary
                    .by_policy
                    .entry(finding.policy.clone())
                    .or_default()
                    .add(finding.result);
                summary
                    .by_namespace
                    .entry(object.namespace.clone())
                    .or_default()
                    .add(finding.result);
                if let Some(severity) = severity.get(finding.policy.as_str()) {
                    summary
                        .by_severity
                        .entry(*severity)
                        .or_default()
                        .add(finding.result);
                }
            }
        }
        Report {
            api_version: "tollgate.dev/v1",
            kind: "AuditReport",
            generated: SystemTime::now(),
            source,
            summary,
            policies,
            objects,
        }
    }

    /// The counts of the policy named `policy`.
    pub fn counts(&self, policy: &str) -> Counts {
        self.summary
            .by_policy
            .get(policy)
            .copied()
            .unwrap_or_default()
    }

    /// The policy named `name`.
    pub fn policy(&self, name: &str) -> Option<&Policy> {
        self.policies.iter().find(|p| p.name == name)
    }

    /// Every finding that is not a pass, with its object.
    pub fn violations(&self) -> impl Iterator<Item = (&Object, &Finding)> {
        self.objects.iter().flat_map(|o| {
            o.findings
                .iter()
                .filter(|f| f.result != Outcome::Pass)
                .map(move |f| (o, f))
        })
    }
}
