//! Volume types: `hostPathVolumes` (baseline) and `restrictedVolumes`.

use super::Failure;
use super::text::{join_quote, pluralize, sorted_set};
use tollgate_sdk::pod::model::{Metadata, Spec};

/// No `hostPath` volume.
pub fn host_path(_: &Metadata<'_>, spec: &Spec<'_>) -> Option<Failure> {
    let names: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .filter(|volume| volume.has("hostPath"))
        .map(|volume| volume.name.as_str())
        .collect();
    if names.is_empty() {
        return None;
    }
    Failure::new(
        "hostPath volumes",
        format!(
            "{} {}",
            pluralize("volume", "volumes", names.len()),
            join_quote(&names)
        ),
    )
}

/// Volume sources a restricted pod may use.
const ALLOWED: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "image",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// The restricted volume sources PSA names, in the order it tests them.
const NAMED: &[&str] = &[
    "hostPath",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "nfs",
    "iscsi",
    "glusterfs",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "fc",
    "azureFile",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "portworxVolume",
    "scaleIO",
    "storageos",
];

/// Only the allowed volume sources. A volume with no source at all is one the
/// API server defaults to `emptyDir`, so it passes.
pub fn restricted(_: &Metadata<'_>, spec: &Spec<'_>) -> Option<Failure> {
    let mut names = Vec::new();
    let mut types = Vec::new();
    for volume in spec.volumes.iter().flatten() {
        if volume.sources.is_empty() || ALLOWED.iter().any(|source| volume.has(source)) {
            continue;
        }
        names.push(volume.name.as_str());
        types.push(
            NAMED
                .iter()
                .copied()
                .find(|source| volume.has(source))
                .unwrap_or("unknown"),
        );
    }
    if names.is_empty() {
        return None;
    }
    let types = sorted_set(types);
    Failure::new(
        "restricted volume types",
        format!(
            "{} {} {} {} {}",
            pluralize("volume", "volumes", names.len()),
            join_quote(&names),
            pluralize("uses", "use", names.len()),
            pluralize(
                "restricted volume type",
                "restricted volume types",
                types.len()
            ),
            join_quote(&types)
        ),
    )
}
