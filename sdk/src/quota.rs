//! Quota accounting through the host. A policy's [`crate::Policy::index`]
//! says what each cluster object counts for, under keys it chooses; the host
//! keeps the totals up to date as objects change, so [`usage`] costs a
//! lookup per key, not a list of the cluster. [`reserve`] then checks and
//! reserves atomically, so parallel admissions cannot together exceed a
//! limit.

use std::collections::BTreeMap;

use crate::Result;

/// One entry of an object's index: it counts `amount` of `resource` under
/// `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// A key the policy chooses (e.g. `ns/vision-a`).
    pub key: String,
    /// The resource (e.g. `nvidia.com/gpu`).
    pub resource: String,
    /// How much of it.
    pub amount: u64,
}

/// The index's total for one key and resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    /// The key.
    pub key: String,
    /// The resource.
    pub resource: String,
    /// Sum over the objects indexed under the key.
    pub amount: u64,
    /// How many objects contributed.
    pub objects: u32,
}

/// One quota scope to check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claim {
    /// The scope (reservations are kept per scope), e.g. `team/vision`.
    pub scope: String,
    /// What the object asks.
    pub asks: BTreeMap<String, u64>,
    /// The scope's limits; resources without one are not checked.
    pub limits: BTreeMap<String, u64>,
    /// Usage already in the cluster, as the policy computed it.
    pub usage: BTreeMap<String, u64>,
}

/// An amount other in-flight admissions hold in a scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The scope.
    pub scope: String,
    /// The resource.
    pub resource: String,
    /// Reserved, not yet in the cluster.
    pub amount: u64,
}

/// The ledger's answer to [`reserve`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// Every claim fits (and is now reserved, unless a dry run).
    pub admitted: bool,
    /// What other admissions hold in the claims' scopes.
    pub held: Vec<Held>,
}

impl Decision {
    /// What others hold of `resource` in `scope`.
    pub fn held(&self, scope: &str, resource: &str) -> u64 {
        self.held
            .iter()
            .filter(|h| h.scope == scope && h.resource == resource)
            .map(|h| h.amount)
            .sum()
    }
}

/// The index totals for `keys` (keys without usage are left out).
///
/// # Errors
///
/// When the host has no cluster context.
pub fn usage(keys: &[String]) -> Result<Vec<Usage>> {
    #[cfg(target_arch = "wasm32")]
    let result = crate::guest::quota_usage(keys);
    #[cfg(not(target_arch = "wasm32"))]
    let result = crate::testing::host(|h| h.usage(keys));
    result.map_err(crate::Error)
}

/// Checks every claim; when all fit, reserves their asks for this object.
///
/// # Errors
///
/// When the ledger cannot be reached (e.g. the shared ledger's apiserver).
pub fn reserve(claims: &[Claim]) -> Result<Decision> {
    #[cfg(target_arch = "wasm32")]
    let result = crate::guest::quota_reserve(claims);
    #[cfg(not(target_arch = "wasm32"))]
    let result = crate::testing::host(|h| h.reserve(claims));
    result.map_err(crate::Error)
}
