//! The admission request as a policy sees it.
//!
//! The envelope (uid, kind, operation, user, …) is parsed eagerly; the object
//! stays raw JSON text, borrowed from the request, until the policy asks for
//! it: as a [`serde_json::Value`] ([`Request::object`], parsed once and
//! cached), as a typed `k8s-openapi` struct ([`Request::typed_object`]), or
//! piecewise: [`crate::pod::TemplatePaths::pod_specs_in`] reads only the pod
//! specs, into structs of only the fields a policy needs.

use std::cell::OnceCell;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::{Error, Result};

/// Group, version and kind of the object under review.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct GroupVersionKind {
    /// API group; empty for the core group.
    #[serde(default)]
    pub group: String,
    /// API version, e.g. `v1`.
    #[serde(default)]
    pub version: String,
    /// Kind, e.g. `Pod`.
    #[serde(default)]
    pub kind: String,
}

/// Who sent the request.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct UserInfo {
    /// User name, e.g. `system:serviceaccount:ns:name`.
    #[serde(default)]
    pub username: String,
    /// Groups the user belongs to.
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire<'a> {
    #[serde(default)]
    uid: String,
    #[serde(default)]
    kind: GroupVersionKind,
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    operation: String,
    #[serde(default)]
    user_info: UserInfo,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    sub_resource: String,
    #[serde(borrow)]
    object: Option<&'a RawValue>,
    #[serde(borrow)]
    old_object: Option<&'a RawValue>,
}

/// One AdmissionRequest (the `request` member of an AdmissionReview).
#[derive(Debug)]
pub struct Request<'a> {
    /// Request uid, echoed in the response by the host.
    pub uid: String,
    /// Kind of the object.
    pub kind: GroupVersionKind,
    /// Object name (may be empty on CREATE with `generateName`).
    pub name: String,
    /// Namespace; empty for cluster-scoped objects.
    pub namespace: String,
    /// `CREATE`, `UPDATE`, `DELETE` or `CONNECT`.
    pub operation: String,
    /// Who sent it.
    pub user_info: UserInfo,
    /// Whether the request has no side effects.
    pub dry_run: bool,
    /// Subresource, e.g. `status`; empty for the main resource.
    pub sub_resource: String,
    object: Option<&'a RawValue>,
    old_object: Option<&'a RawValue>,
    object_value: OnceCell<Value>,
}

impl<'a> Request<'a> {
    /// Parses an AdmissionRequest from JSON text.
    ///
    /// # Errors
    ///
    /// When the text is not a JSON object with the request's fields.
    pub fn parse(text: &'a str) -> Result<Self> {
        let wire: Wire<'a> = serde_json::from_str(text)
            .map_err(|e| Error(format!("invalid admission request: {e}")))?;
        Ok(Request {
            uid: wire.uid,
            kind: wire.kind,
            name: wire.name,
            namespace: wire.namespace,
            operation: wire.operation,
            user_info: wire.user_info,
            dry_run: wire.dry_run,
            sub_resource: wire.sub_resource,
            object: wire.object.filter(|raw| raw.get() != "null"),
            old_object: wire.old_object.filter(|raw| raw.get() != "null"),
            object_value: OnceCell::new(),
        })
    }

    /// The object as JSON text, if the request carries one.
    pub fn raw_object(&self) -> Option<&'a str> {
        self.object.map(RawValue::get)
    }

    /// The previous object (UPDATE, DELETE) as JSON text.
    pub fn raw_old_object(&self) -> Option<&'a str> {
        self.old_object.map(RawValue::get)
    }

    /// The object as a JSON value, parsed on first use.
    ///
    /// # Errors
    ///
    /// When the request has no object (e.g. DELETE) or it is not valid JSON.
    pub fn object(&self) -> Result<&Value> {
        self.object_opt()?
            .ok_or_else(|| Error(format!("{} request carries no object", self.operation)))
    }

    /// The object as a JSON value, or `None` when the request has none.
    ///
    /// # Errors
    ///
    /// When the object is not valid JSON.
    pub fn object_opt(&self) -> Result<Option<&Value>> {
        let Some(raw) = self.raw_object() else {
            return Ok(None);
        };
        if let Some(value) = self.object_value.get() {
            return Ok(Some(value));
        }
        let value: Value = serde_json::from_str(raw)?;
        Ok(Some(self.object_value.get_or_init(|| value)))
    }

    /// The object deserialized into a typed struct, e.g.
    /// `k8s_openapi::api::core::v1::Pod`.
    ///
    /// # Errors
    ///
    /// When there is no object or it does not fit the type.
    pub fn typed_object<T: DeserializeOwned>(&self) -> Result<T> {
        let raw = self
            .raw_object()
            .ok_or_else(|| Error(format!("{} request carries no object", self.operation)))?;
        serde_json::from_str(raw).map_err(|e| {
            Error(format!(
                "object does not fit {}: {e}",
                std::any::type_name::<T>()
            ))
        })
    }

    /// The previous object deserialized into a typed struct.
    ///
    /// # Errors
    ///
    /// When there is no old object or it does not fit the type.
    pub fn typed_old_object<T: DeserializeOwned>(&self) -> Result<T> {
        let raw = self
            .raw_old_object()
            .ok_or_else(|| Error(format!("{} request carries no old object", self.operation)))?;
        serde_json::from_str(raw).map_err(|e| {
            Error(format!(
                "old object does not fit {}: {e}",
                std::any::type_name::<T>()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;

    const REQUEST: &str = r#"{"uid":"u1","kind":{"group":"","version":"v1","kind":"Pod"},
        "namespace":"ml","operation":"CREATE","userInfo":{"username":"alice","groups":["g"]},
        "dryRun":true,"object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},
        "spec":{"containers":[{"name":"c","image":"nginx"}]}},"oldObject":null}"#;

    #[test]
    fn parses_envelope_and_object_both_ways() {
        let request = Request::parse(REQUEST).unwrap();
        assert_eq!(request.uid, "u1");
        assert_eq!(request.kind.kind, "Pod");
        assert_eq!(request.user_info.username, "alice");
        assert!(request.dry_run);
        assert!(request.raw_old_object().is_none());
        assert_eq!(request.object().unwrap()["metadata"]["name"], "p");
        let pod: Pod = request.typed_object().unwrap();
        assert_eq!(
            pod.spec.unwrap().containers[0].image.as_deref(),
            Some("nginx")
        );
    }

    #[test]
    fn missing_object_is_an_error_naming_the_operation() {
        let request = Request::parse(r#"{"uid":"u","operation":"DELETE"}"#).unwrap();
        assert_eq!(
            request.object().unwrap_err().0,
            "DELETE request carries no object"
        );
    }

    #[test]
    fn invalid_json_is_an_error() {
        assert!(
            Request::parse("{")
                .unwrap_err()
                .0
                .starts_with("invalid admission request")
        );
    }
}
