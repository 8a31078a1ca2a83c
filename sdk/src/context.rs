//! Read-only cluster state through the host: [`get`] and [`list`] read the
//! host's caches (never the apiserver per request). A policy may read only
//! the kinds its configuration grants (`context:`); any other read returns
//! the host's error. Natively, in `cargo test`, reads go to the
//! [`crate::testing::Cluster`] installed by the test.

use serde::de::DeserializeOwned;

use crate::Result;

/// One object as JSON text, or `None` when it does not exist (`namespace`
/// empty for cluster-scoped kinds).
///
/// # Errors
///
/// When the kind is not granted or the host has no cluster context.
pub fn get(api_version: &str, kind: &str, namespace: &str, name: &str) -> Result<Option<String>> {
    #[cfg(target_arch = "wasm32")]
    let result = crate::guest::context_get(api_version, kind, namespace, name);
    #[cfg(not(target_arch = "wasm32"))]
    let result = crate::testing::host(|h| h.get(api_version, kind, namespace, name));
    result.map_err(crate::Error)
}

/// The objects of a kind as a JSON array text (empty `namespace`: every
/// namespace; `selector` in kubectl's syntax, see [`crate::selector`]).
///
/// # Errors
///
/// When the kind is not granted, the selector is malformed, or the host has
/// no cluster context.
pub fn list(api_version: &str, kind: &str, namespace: &str, selector: &str) -> Result<String> {
    #[cfg(target_arch = "wasm32")]
    let result = crate::guest::context_list(api_version, kind, namespace, selector);
    #[cfg(not(target_arch = "wasm32"))]
    let result = crate::testing::host(|h| h.list(api_version, kind, namespace, selector));
    result.map_err(crate::Error)
}

/// [`list`], deserialized: declare only the fields the policy reads, so the
/// rest of each object is skipped.
///
/// # Errors
///
/// As [`list`], or when an object does not fit `T`.
pub fn list_as<T: DeserializeOwned>(
    api_version: &str,
    kind: &str,
    namespace: &str,
    selector: &str,
) -> Result<Vec<T>> {
    Ok(serde_json::from_str(&list(
        api_version,
        kind,
        namespace,
        selector,
    )?)?)
}

/// [`get`], deserialized.
///
/// # Errors
///
/// As [`get`], or when the object does not fit `T`.
pub fn get_as<T: DeserializeOwned>(
    api_version: &str,
    kind: &str,
    namespace: &str,
    name: &str,
) -> Result<Option<T>> {
    get(api_version, kind, namespace, name)?
        .map(|text| serde_json::from_str(&text).map_err(crate::Error::from))
        .transpose()
}
