//! One admission request as the chain sees it: the few envelope fields the
//! host needs, and the request's JSON text, handed to policies as it arrived.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::config::Operation;

/// Why a text is not a usable AdmissionRequest. Each message says what to
/// fix; they name the review, the form the apiserver sends it in.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not JSON, or not the request's shape.
    #[error("invalid AdmissionReview JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// No `uid`.
    #[error("the AdmissionReview request has no uid")]
    MissingUid,
    /// `operation` is missing or unknown.
    #[error("unsupported operation {0:?}: expected CREATE, UPDATE, DELETE or CONNECT")]
    Operation(String),
    /// `kind` is missing.
    #[error("the AdmissionReview request has no kind")]
    MissingKind,
}

/// An AdmissionRequest, borrowed from the body it arrived in.
#[derive(Debug)]
pub struct Request<'a> {
    /// The whole AdmissionRequest as JSON text.
    pub text: &'a str,
    /// Request uid.
    pub uid: Cow<'a, str>,
    /// API group of the object's kind (`""` for core).
    pub group: Cow<'a, str>,
    /// API version of the object's kind.
    pub version: Cow<'a, str>,
    /// Kind of the object.
    pub kind: Cow<'a, str>,
    /// The operation.
    pub operation: Operation,
    /// Namespace (`""` for cluster-scoped objects).
    pub namespace: Cow<'a, str>,
    /// Object name.
    pub name: Cow<'a, str>,
    /// Requesting user.
    pub username: Cow<'a, str>,
    /// The user's groups.
    pub groups: Vec<Cow<'a, str>>,
    /// Whether the request has no side effects.
    pub dry_run: bool,
    /// Where the object lies in `text`.
    pub object: Option<Range<usize>>,
    /// Where the old object lies in `text`.
    pub old_object: Option<Range<usize>>,
    /// The subresource (`status`, `ephemeralContainers`, …); empty for the
    /// resource itself.
    pub subresource: Cow<'a, str>,
    /// Labels of the object (or, without one, the old object); read only
    /// when a policy has an object selector.
    labels: OnceLock<BTreeMap<String, String>>,
    /// Labels of the old object, read only when a selector does not match
    /// the object's.
    old_labels: OnceLock<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct KindIn<'a> {
    #[serde(borrow, default)]
    group: Cow<'a, str>,
    #[serde(borrow, default)]
    version: Cow<'a, str>,
    #[serde(borrow, default)]
    kind: Cow<'a, str>,
}

#[derive(Deserialize, Default)]
struct UserInfoIn<'a> {
    #[serde(borrow, default)]
    username: Cow<'a, str>,
    #[serde(borrow, default)]
    groups: Vec<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestIn<'a> {
    #[serde(borrow, default)]
    uid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    kind: Option<KindIn<'a>>,
    #[serde(borrow, default)]
    namespace: Cow<'a, str>,
    #[serde(borrow, default)]
    name: Cow<'a, str>,
    #[serde(borrow, default)]
    operation: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    user_info: UserInfoIn<'a>,
    #[serde(default)]
    dry_run: Option<bool>,
    #[serde(borrow, default)]
    object: Option<&'a RawValue>,
    #[serde(borrow, default)]
    old_object: Option<&'a RawValue>,
    #[serde(borrow, default)]
    sub_resource: Cow<'a, str>,
}

/// Where `inner` lies within `outer` (it must be a sub-slice), unless it is
/// JSON `null`.
fn span(outer: &str, inner: Option<&RawValue>) -> Option<Range<usize>> {
    let inner = inner?.get();
    if inner == "null" {
        return None;
    }
    let start = inner.as_ptr() as usize - outer.as_ptr() as usize;
    Some(start..start + inner.len())
}

#[derive(Deserialize, Default)]
struct Metadata {
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct WithMetadata {
    #[serde(default)]
    metadata: Option<Metadata>,
}

impl<'a> Request<'a> {
    /// Parses an AdmissionRequest (the `request` member of a review),
    /// borrowing from its text.
    ///
    /// # Errors
    ///
    /// When the text is not a request with a uid, a kind and a known
    /// operation.
    pub fn parse(text: &'a str) -> Result<Self, Error> {
        let request: RequestIn<'_> = serde_json::from_str(text)?;
        let uid = request
            .uid
            .filter(|uid| !uid.is_empty())
            .ok_or(Error::MissingUid)?;
        let operation = request.operation.unwrap_or_default();
        let operation =
            Operation::parse(&operation).ok_or_else(|| Error::Operation(operation.into_owned()))?;
        let kind = request.kind.ok_or(Error::MissingKind)?;
        Ok(Request {
            text,
            uid,
            group: kind.group,
            version: kind.version,
            kind: kind.kind,
            operation,
            namespace: request.namespace,
            name: request.name,
            username: request.user_info.username,
            groups: request.user_info.groups,
            dry_run: request.dry_run.unwrap_or(false),
            object: span(text, request.object),
            old_object: span(text, request.old_object),
            subresource: request.sub_resource,
            labels: OnceLock::new(),
            old_labels: OnceLock::new(),
        })
    }

    /// The object's JSON text.
    pub fn object_text(&self) -> Option<&'a str> {
        self.object.clone().map(|range| &self.text[range])
    }

    /// The request's text with the object replaced by `object` (JSON text):
    /// what the next policy of a mutation chain sees.
    pub fn with_object(&self, object: &str) -> String {
        match &self.object {
            Some(range) => {
                let mut text = String::with_capacity(self.text.len() - range.len() + object.len());
                text.push_str(&self.text[..range.start]);
                text.push_str(object);
                text.push_str(&self.text[range.end..]);
                text
            }
            None => self.text.to_owned(),
        }
    }

    /// The object's labels (the old object's when there is no object).
    pub fn labels(&self) -> &BTreeMap<String, String> {
        self.labels
            .get_or_init(|| self.labels_at(self.object.clone().or_else(|| self.old_object.clone())))
    }

    /// The old object's labels (none without an old object).
    pub fn old_labels(&self) -> &BTreeMap<String, String> {
        self.old_labels
            .get_or_init(|| self.labels_at(self.old_object.clone()))
    }

    fn labels_at(&self, range: Option<Range<usize>>) -> BTreeMap<String, String> {
        range
            .and_then(|range| serde_json::from_str::<WithMetadata>(&self.text[range]).ok())
            .and_then(|object| object.metadata)
            .unwrap_or_default()
            .labels
    }
}

impl<'a> Request<'a> {
    /// The same request over another text whose object lies at `object`
    /// (the final object of a mutation chain).
    pub fn with_text<'b>(&self, text: &'b str, object: Range<usize>) -> Request<'b>
    where
        'a: 'b,
    {
        Request {
            text,
            uid: self.uid.clone(),
            group: self.group.clone(),
            version: self.version.clone(),
            kind: self.kind.clone(),
            operation: self.operation,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            username: self.username.clone(),
            groups: self.groups.clone(),
            dry_run: self.dry_run,
            // The old object moves by as much as the object grew, if it
            // comes after it.
            old_object: self.old_object.clone().map(|old| match &self.object {
                Some(was) if old.start >= was.end => {
                    let moved = |at: usize| at - was.end + object.end;
                    moved(old.start)..moved(old.end)
                }
                _ => old,
            }),
            object: Some(object),
            subresource: self.subresource.clone(),
            labels: OnceLock::new(),
            old_labels: OnceLock::new(),
        }
    }
}
