//! Kubewarden's host capabilities, as a waPC `__host_call` reaches them:
//! `kubewarden/tracing/log` writes the policy's log line, and the
//! `kubewarden/kubernetes` reads are answered from the cluster context the
//! policy's configuration grants (the reflector caches every Tollgate policy
//! reads). Everything else (OCI registries, sigstore, DNS, certificates,
//! `can_i`) is refused with a message naming what is offered.

use serde::Deserialize;

use crate::engine::bindings::tollgate::policy::context::Host as _;
use crate::engine::limits::StoreState;

/// What a refused capability is told.
const OFFERED: &str = "Tollgate answers kubewarden/kubernetes get_resource, list_resources_by_namespace and list_resources_all (from the cluster context its configuration grants) and kubewarden/tracing log";

/// `get_resource`'s request.
#[derive(Deserialize)]
struct Get {
    api_version: String,
    kind: String,
    name: String,
    #[serde(default)]
    namespace: Option<String>,
}

/// `list_resources_by_namespace`'s and `list_resources_all`'s request.
#[derive(Deserialize)]
struct List {
    api_version: String,
    kind: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    label_selector: Option<String>,
    #[serde(default)]
    field_selector: Option<String>,
}

/// A log event of the Kubewarden SDK: its level and message; the other
/// fields are written beside them.
#[derive(Deserialize)]
struct Event {
    #[serde(default)]
    level: String,
    #[serde(default)]
    message: String,
    #[serde(flatten)]
    fields: serde_json::Map<String, serde_json::Value>,
}

/// The answer to one host call: the response bytes, or the error the guest
/// gets. A stopped call (deadline, meter) is the outer error.
///
/// # Errors
///
/// The meter stopped the call.
pub fn answer(
    state: &mut StoreState,
    binding: &str,
    namespace: &str,
    operation: &str,
    payload: &[u8],
) -> wasmtime::Result<Result<Vec<u8>, String>> {
    match (binding, namespace, operation) {
        ("kubewarden", "tracing", "log") => {
            log(state, payload)?;
            Ok(Ok(Vec::new()))
        }
        ("kubewarden", "kubernetes", "get_resource") => {
            let Ok(get) = serde_json::from_slice::<Get>(payload) else {
                return refuse(
                    state,
                    "get_resource: the request is not Kubewarden's GetResourceRequest",
                );
            };
            let found = state.get(
                get.api_version.clone(),
                get.kind.clone(),
                get.namespace.clone().unwrap_or_default(),
                get.name.clone(),
            )?;
            Ok(match found {
                Ok(Some(object)) => Ok(object.into_bytes()),
                Ok(None) => Err(format!(
                    "{} {} {}{} not found",
                    get.api_version,
                    get.kind,
                    get.namespace.map(|ns| ns + "/").unwrap_or_default(),
                    get.name
                )),
                Err(error) => Err(error),
            })
        }
        (
            "kubewarden",
            "kubernetes",
            which @ ("list_resources_by_namespace" | "list_resources_all"),
        ) => {
            let Ok(list) = serde_json::from_slice::<List>(payload) else {
                return refuse(
                    state,
                    &format!("{which}: the request is not Kubewarden's list request"),
                );
            };
            if list
                .field_selector
                .as_deref()
                .is_some_and(|s| !s.is_empty())
            {
                return refuse(
                    state,
                    &format!("{which}: field selectors are not supported; select by label"),
                );
            }
            let namespace = match (which, list.namespace) {
                ("list_resources_all", _) => String::new(),
                (_, Some(namespace)) if !namespace.is_empty() => namespace,
                _ => {
                    return refuse(
                        state,
                        "list_resources_by_namespace: the request names no namespace",
                    );
                }
            };
            let items = state.list(
                list.api_version.clone(),
                list.kind.clone(),
                namespace,
                list.label_selector.unwrap_or_default(),
            )?;
            // The SDK reads a `k8s_openapi::List<T>`, which checks both.
            Ok(items.map(|items| {
                format!(
                    r#"{{"apiVersion":{},"kind":{},"metadata":{{}},"items":{items}}}"#,
                    serde_json::Value::from(list.api_version),
                    serde_json::Value::from(format!("{}List", list.kind)),
                )
                .into_bytes()
            }))
        }
        _ => refuse(
            state,
            &format!(
                "the host capability {binding}/{namespace}/{operation} is not offered: {OFFERED}"
            ),
        ),
    }
}

/// Refuses a host call, as the context imports refuse: metered, and
/// remembered so that a policy failing on it is reported as refused.
fn refuse(state: &mut StoreState, message: &str) -> wasmtime::Result<Result<Vec<u8>, String>> {
    state.meter.enter()?;
    state.refused = Some(message.to_owned());
    Ok(Err(message.to_owned()))
}

/// Writes a log event at its level, with its fields.
fn log(state: &mut StoreState, payload: &[u8]) -> wasmtime::Result<()> {
    let (level, line) = match serde_json::from_slice::<Event>(payload) {
        Ok(event) => {
            let level = match event.level.as_str() {
                "debug" => tracing::Level::DEBUG,
                "warning" => tracing::Level::WARN,
                "error" => tracing::Level::ERROR,
                _ => tracing::Level::INFO,
            };
            let mut line = event.message;
            for (key, value) in &event.fields {
                if !matches!(key.as_str(), "line" | "column" | "file") {
                    line.push_str(&format!(" {key}={value}"));
                }
            }
            (level, line)
        }
        Err(_) => (
            tracing::Level::INFO,
            String::from_utf8_lossy(payload).into_owned(),
        ),
    };
    Ok(state.log(level, &line)?)
}
