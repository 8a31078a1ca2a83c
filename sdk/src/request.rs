//! The admission request as a policy sees it.
//!
//! The envelope (uid, kind, operation, user, …) is parsed eagerly; the object
//! stays raw JSON text, borrowed from the request, until the policy asks for
//! it: as a [`serde_json::Value`] ([`Request::object`], parsed once and
//! cached), as a typed `k8s-openapi` struct ([`Request::typed_object`]), or
//! piecewise: [`crate::pod::TemplatePaths::pod_specs_in`] reads only the pod
//! specs, into structs of only the fields a policy needs.
//!
//! [`Request::parse_with`] goes one step further for the hot path: it reads
//! the object while the envelope is parsed (with a seed such as
//! [`crate::pod::TemplatePaths::pod_specs_seed`]), so a policy's evaluation
//! scans the object's text once.

use std::cell::OnceCell;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{
    DeserializeOwned, DeserializeSeed, Deserializer, Error as _, IgnoredAny, MapAccess, Visitor,
};
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

impl GroupVersionKind {
    /// Whether this is the core group's `Pod`.
    pub fn is_pod(&self) -> bool {
        self.group.is_empty() && self.kind == "Pod"
    }
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

/// The members of an AdmissionRequest this SDK reads.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum Field {
    Uid,
    Kind,
    Name,
    Namespace,
    Operation,
    UserInfo,
    DryRun,
    SubResource,
    Object,
    OldObject,
    #[serde(other)]
    Other,
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
    /// Parses an AdmissionRequest from JSON text; the object is kept as
    /// raw text.
    ///
    /// # Errors
    ///
    /// When the text is not a JSON object with the request's fields.
    pub fn parse(text: &'a str) -> Result<Self> {
        let (mut request, object) =
            Request::parse_with(text, |_| PhantomData::<Option<&'a RawValue>>)?;
        // `null` is already `None`: the object member is read as an option.
        request.object = object.flatten();
        Ok(request)
    }

    /// Parses an AdmissionRequest and reads its object in the same pass,
    /// with the seed `read` makes from the request's kind (e.g.
    /// [`crate::pod::TemplatePaths::pod_specs_seed`]), so the object's text
    /// is scanned once. The apiserver writes `kind` before `object`; when a
    /// request does not, the object is read after the envelope instead. The
    /// returned request has no object of its own: `None` when the request
    /// carries none (or `null`).
    ///
    /// # Errors
    ///
    /// When the text is not a JSON object with the request's fields, or the
    /// seed refuses the object.
    pub fn parse_with<S: DeserializeSeed<'a>>(
        text: &'a str,
        read: impl FnOnce(&GroupVersionKind) -> S,
    ) -> Result<(Self, Option<S::Value>)> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let parsed = deserializer
            .deserialize_map(RequestVisitor {
                read: Some(read),
                seed: PhantomData,
            })
            .and_then(|parsed| deserializer.end().map(|()| parsed))
            .map_err(|e| Error(format!("invalid admission request: {e}")))?;
        Ok(parsed)
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

/// Reads the request's members; the object through the caller's seed.
struct RequestVisitor<F, S> {
    read: Option<F>,
    seed: PhantomData<S>,
}

impl<'a, F, S> Visitor<'a> for RequestVisitor<F, S>
where
    F: FnOnce(&GroupVersionKind) -> S,
    S: DeserializeSeed<'a>,
{
    type Value = (Request<'a>, Option<S::Value>);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an AdmissionRequest object")
    }

    fn visit_map<A: MapAccess<'a>>(mut self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut request = Request {
            uid: String::new(),
            kind: GroupVersionKind::default(),
            name: String::new(),
            namespace: String::new(),
            operation: String::new(),
            user_info: UserInfo::default(),
            dry_run: false,
            sub_resource: String::new(),
            object: None,
            old_object: None,
            object_value: OnceCell::new(),
        };
        let mut kind_seen = false;
        let mut object = None;
        let mut deferred: Option<&'a RawValue> = None;
        let text = |value: Option<String>| value.unwrap_or_default();
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::Uid => request.uid = text(map.next_value()?),
                Field::Kind => {
                    request.kind = map.next_value::<Option<_>>()?.unwrap_or_default();
                    kind_seen = true;
                }
                Field::Name => request.name = text(map.next_value()?),
                Field::Namespace => request.namespace = text(map.next_value()?),
                Field::Operation => request.operation = text(map.next_value()?),
                Field::UserInfo => {
                    request.user_info = map.next_value::<Option<_>>()?.unwrap_or_default();
                }
                Field::DryRun => request.dry_run = map.next_value::<Option<_>>()?.unwrap_or(false),
                Field::SubResource => request.sub_resource = text(map.next_value()?),
                Field::Object if kind_seen => {
                    let read = self
                        .read
                        .take()
                        .ok_or_else(|| A::Error::duplicate_field("object"))?;
                    object = map.next_value_seed(Optional(read(&request.kind)))?;
                }
                Field::Object => deferred = map.next_value()?,
                Field::OldObject => {
                    request.old_object = map.next_value()?;
                }
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if let (Some(raw), Some(read)) = (deferred, self.read.take()) {
            let mut deserializer = serde_json::Deserializer::from_str(raw.get());
            object = Optional(read(&request.kind))
                .deserialize(&mut deserializer)
                .map_err(A::Error::custom)?;
        }
        Ok((request, object))
    }
}

/// A seed for a member that may be `null`.
struct Optional<S>(S);

impl<'a, S: DeserializeSeed<'a>> DeserializeSeed<'a> for Optional<S> {
    type Value = Option<S::Value>;

    fn deserialize<D: Deserializer<'a>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'a, S: DeserializeSeed<'a>> Visitor<'a> for Optional<S> {
    type Value = Option<S::Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object or null")
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'a>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        self.0.deserialize(deserializer).map(Some)
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
    fn parse_with_reads_the_object_in_the_same_pass_in_either_order() {
        let paths = crate::pod::TemplatePaths::default();
        let object = r#"{"apiVersion":"ray.io/v1","kind":"RayCluster","spec":{
            "headGroupSpec":{"template":{"spec":{"containers":[{"name":"head"}]}}},
            "workerGroupSpecs":[{"template":{"spec":{"containers":[{"name":"w"}]}}}]}}"#;
        let kind = r#""kind":{"group":"ray.io","version":"v1","kind":"RayCluster"}"#;
        for text in [
            format!(r#"{{"uid":"u",{kind},"object":{object},"dryRun":true}}"#),
            format!(r#"{{"object":{object},"uid":"u",{kind},"dryRun":true}}"#),
        ] {
            let (request, specs) = Request::parse_with(&text, |kind| {
                paths.pod_specs_seed::<Value>(&kind.group, &kind.kind)
            })
            .unwrap();
            assert_eq!((request.uid.as_str(), request.dry_run), ("u", true));
            assert!(request.raw_object().is_none(), "the seed took the object");
            let pointers: Vec<String> = specs.unwrap().into_iter().map(|(p, _)| p).collect();
            assert_eq!(
                pointers,
                [
                    "/spec/headGroupSpec/template/spec",
                    "/spec/workerGroupSpecs/0/template/spec"
                ]
            );
        }
        let (_, none) = Request::parse_with(r#"{"kind":{"kind":"Pod"},"object":null}"#, |_| {
            PhantomData::<Value>
        })
        .unwrap();
        assert!(none.is_none());
        let twice = r#"{"kind":{"kind":"Pod"},"object":{},"object":{}}"#;
        assert!(Request::parse_with(twice, |_| PhantomData::<Value>).is_err());
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
