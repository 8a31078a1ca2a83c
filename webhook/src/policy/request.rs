//! One admission request as the chain sees it: the few envelope fields the
//! host needs, and the request's JSON text, handed to policies as it arrived.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::OnceLock;

use serde::Deserialize;

use super::config::Operation;

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
    /// Labels of the object (or, without one, the old object); read only
    /// when a policy has an object selector.
    labels: OnceLock<BTreeMap<String, String>>,
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
    /// Assembles a request from decoded envelope fields.
    #[expect(
        clippy::too_many_arguments,
        reason = "one argument per envelope field, called from the codec only"
    )]
    pub fn new(
        text: &'a str,
        uid: Cow<'a, str>,
        group: Cow<'a, str>,
        version: Cow<'a, str>,
        kind: Cow<'a, str>,
        operation: Operation,
        namespace: Cow<'a, str>,
        name: Cow<'a, str>,
        username: Cow<'a, str>,
        groups: Vec<Cow<'a, str>>,
        dry_run: bool,
        object: Option<Range<usize>>,
        old_object: Option<Range<usize>>,
    ) -> Self {
        Request {
            text,
            uid,
            group,
            version,
            kind,
            operation,
            namespace,
            name,
            username,
            groups,
            dry_run,
            object,
            old_object,
            labels: OnceLock::new(),
        }
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
        self.labels.get_or_init(|| {
            let range = self.object.clone().or_else(|| self.old_object.clone());
            range
                .and_then(|range| serde_json::from_str::<WithMetadata>(&self.text[range]).ok())
                .and_then(|object| object.metadata)
                .unwrap_or_default()
                .labels
        })
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
            object: Some(object),
            old_object: None,
            labels: OnceLock::new(),
        }
    }
}
