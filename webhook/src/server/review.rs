//! The AdmissionReview codec (`admission.k8s.io/v1`).
//!
//! Decoding reads only the envelope fields the host needs and leaves the
//! object as the raw text it arrived as: a full parse on the host would cost
//! more than a policy's whole evaluation. Encoding writes the response
//! review, with the patch base64-encoded as the apiserver expects.

use std::borrow::Cow;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::policy::{Outcome, Request, request};

/// The only AdmissionReview version Tollgate speaks.
pub const API_VERSION: &str = "admission.k8s.io/v1";

/// Why a body is not a usable AdmissionReview. Each message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not JSON, or not the review's shape.
    #[error("invalid AdmissionReview JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// `apiVersion` is missing or another version.
    #[error(
        "unsupported apiVersion {0:?}: Tollgate speaks admission.k8s.io/v1 (set admissionReviewVersions: [v1] in the webhook configuration)"
    )]
    ApiVersion(String),
    /// `kind` is not `AdmissionReview`.
    #[error("unsupported kind {0:?}: expected AdmissionReview")]
    Kind(String),
    /// No `request` member.
    #[error("the AdmissionReview has no request")]
    MissingRequest,
    /// The request inside is not usable.
    #[error(transparent)]
    Request(#[from] request::Error),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewIn<'a> {
    #[serde(borrow, default)]
    api_version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    request: Option<&'a RawValue>,
}

/// Decodes a request body.
///
/// # Errors
///
/// When the body is not an `admission.k8s.io/v1` AdmissionReview with a
/// request, a uid, a kind and a known operation.
pub fn decode(body: &[u8]) -> Result<Request<'_>, Error> {
    let review: ReviewIn<'_> = serde_json::from_slice(body)?;
    match review.api_version.as_deref() {
        Some(API_VERSION) => {}
        other => return Err(Error::ApiVersion(other.unwrap_or("").to_owned())),
    }
    match review.kind.as_deref() {
        Some("AdmissionReview") => {}
        other => return Err(Error::Kind(other.unwrap_or("").to_owned())),
    }
    let text = review.request.ok_or(Error::MissingRequest)?.get();
    Ok(Request::parse(text)?)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: ResponseOut<'a>,
}

#[derive(Serialize)]
struct StatusOut<'a> {
    code: u16,
    message: &'a str,
    status: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<StatusOut<'a>>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    warnings: &'a [String],
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    audit_annotations: std::collections::BTreeMap<&'a str, &'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
}

/// Encodes the response review for request `uid`.
pub fn encode(uid: &str, outcome: &Outcome) -> Vec<u8> {
    let status = (!outcome.allowed).then(|| StatusOut {
        code: outcome.code,
        message: outcome.message.as_deref().unwrap_or("denied"),
        status: "Failure",
    });
    let patch = outcome
        .patch
        .as_ref()
        .filter(|_| outcome.allowed)
        .map(|patch| {
            let json = serde_json::to_vec(patch).expect("a JSON Patch serializes");
            base64::engine::general_purpose::STANDARD.encode(json)
        });
    let review = ReviewOut {
        api_version: API_VERSION,
        kind: "AdmissionReview",
        response: ResponseOut {
            uid,
            allowed: outcome.allowed,
            status,
            warnings: &outcome.warnings,
            audit_annotations: outcome
                .audit_annotations
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            patch_type: patch.as_ref().map(|_| "JSONPatch"),
            patch,
        },
    };
    serde_json::to_vec(&review).expect("a review serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::config::Operation;

    const REVIEW: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u-1",
        "kind":{"group":"apps","version":"v1","kind":"Deployment"},"namespace":"ml","name":"d","operation":"CREATE",
        "userInfo":{"username":"alice"},"object":{"metadata":{"name":"d"}},"oldObject":null,"dryRun":true}}"#;

    #[test]
    fn decodes_the_envelope_and_locates_the_object() {
        let request = decode(REVIEW.as_bytes()).unwrap();
        assert_eq!(request.uid, "u-1");
        assert_eq!(
            (request.group.as_ref(), request.kind.as_ref()),
            ("apps", "Deployment")
        );
        assert_eq!(request.operation, Operation::Create);
        assert_eq!(request.username, "alice");
        assert!(request.dry_run);
        assert_eq!(request.object_text(), Some(r#"{"metadata":{"name":"d"}}"#));
        assert_eq!(request.old_object, None);
        assert!(request.text.starts_with(r#"{"uid":"u-1""#));
    }

    #[test]
    fn refuses_what_is_not_a_v1_review_with_a_message_saying_what_to_fix() {
        let cases = [
            ("not json", "invalid AdmissionReview JSON"),
            (
                r#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{}}"#,
                "unsupported apiVersion \"admission.k8s.io/v1beta1\"",
            ),
            (
                r#"{"apiVersion":"admission.k8s.io/v1","kind":"Pod"}"#,
                "unsupported kind \"Pod\"",
            ),
            (
                r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
                "the AdmissionReview has no request",
            ),
            (
                r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"kind":{}}}"#,
                "the AdmissionReview request has no uid",
            ),
            (
                r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","operation":"PATCH","kind":{}}}"#,
                "unsupported operation \"PATCH\"",
            ),
            (
                r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","operation":"CREATE"}}"#,
                "the AdmissionReview request has no kind",
            ),
        ];
        for (body, expected) in cases {
            let message = decode(body.as_bytes()).unwrap_err().to_string();
            assert!(message.starts_with(expected), "{body}: {message}");
        }
    }

    #[test]
    fn deeply_nested_json_is_an_error_not_a_crash() {
        let body = format!(
            r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{}{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(decode(body.as_bytes()).is_err());
    }

    #[test]
    fn encodes_denials_with_status_and_allowances_with_a_base64_patch() {
        let denied = Outcome {
            allowed: false,
            code: 403,
            message: Some("p: no".into()),
            ..Outcome::default()
        };
        let json: serde_json::Value = serde_json::from_slice(&encode("u", &denied)).unwrap();
        assert_eq!(json["response"]["status"]["message"], "p: no");
        assert_eq!(json["response"]["status"]["code"], 403);
        assert!(json["response"].get("patch").is_none());

        let patch: json_patch::Patch =
            serde_json::from_str(r#"[{"op":"add","path":"/a","value":1}]"#).unwrap();
        let allowed = Outcome {
            allowed: true,
            patch: Some(patch),
            ..Outcome::default()
        };
        let json: serde_json::Value = serde_json::from_slice(&encode("u", &allowed)).unwrap();
        assert_eq!(json["response"]["patchType"], "JSONPatch");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(json["response"]["patch"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            String::from_utf8(decoded).unwrap(),
            r#"[{"op":"add","path":"/a","value":1}]"#
        );
    }
}
