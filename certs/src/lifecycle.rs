//! The certificate lifecycle of a replicated webhook, without
//! cert-manager: one Secret (`kubernetes.io/tls` plus `ca.crt` and the CA's
//! key) shared by every replica; one replica at a time, the holder of a
//! `coordination.k8s.io` Lease, creates and rotates it and keeps the CA
//! bundle in the webhook configurations; every replica serves what the
//! Secret holds.
//!
//! Rotation never leaves the apiserver distrusting a replica:
//!
//! 1. the serving certificate is issued again by the same CA at a fraction
//!    of its lifetime (the bundle does not change);
//! 2. the CA is rotated in three steps: a new CA joins the bundle (serving
//!    is unchanged) → once the webhook configurations hold that bundle for
//!    [`Settings::settle`], the serving certificate is issued by the new
//!    CA → once every live replica reports serving it, the old CA leaves
//!    the bundle.
//!
//! Replicas report what they serve in the Secret's annotations
//! (`serving.certs.tollgate.dev/<identity>: <fingerprint> <unix time>`),
//! again every [`Settings::report_every`]; a report three times that old is
//! a replica that is gone.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::authority::{self, Info, Pair};
use crate::objects::{self, Kind, Objects};

/// Annotation prefix of the replicas' reports.
const REPORT_PREFIX: &str = "serving.certs.tollgate.dev/";

/// Annotation saying which bundle the webhook configurations hold since
/// when: `<bundle fingerprint> <unix time>`.
const PUBLISHED: &str = "certs.tollgate.dev/bundle-published";

/// Lifecycle errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing an object failed.
    #[error(transparent)]
    Objects(#[from] objects::Error),
    /// A certificate could not be made or read.
    #[error(transparent)]
    Authority(#[from] authority::Error),
    /// The Secret exists but is not one this lifecycle can use.
    #[error("Secret {name}: {message}")]
    Secret {
        /// The Secret.
        name: String,
        /// What is wrong with it.
        message: String,
    },
}

/// What the lifecycle is asked to keep.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The Secret holding the CA and serving certificate.
    pub secret: String,
    /// The Lease naming the replica that writes the Secret.
    pub lease: String,
    /// This replica (its pod name).
    pub identity: String,
    /// Names the serving certificate is for.
    pub names: Vec<String>,
    /// Mutating/Validating webhook configurations given the CA bundle.
    pub webhook_configs: Vec<String>,
    /// Lifetime of a CA.
    pub ca_lifetime: Duration,
    /// Lifetime of a serving certificate.
    pub cert_lifetime: Duration,
    /// Fraction of a lifetime after which a certificate is replaced.
    pub renew_at: f64,
    /// How long a Lease holder that stops renewing keeps it.
    pub lease_duration: Duration,
    /// How often a replica reports what it serves when nothing changes.
    pub report_every: Duration,
    /// How long the webhook configurations hold a new CA before a
    /// certificate it issued is served (the apiserver's caches catch up).
    pub settle: Duration,
}

impl Settings {
    /// Defaults for `identity` serving `names`: CA 10 years, certificate
    /// 1 year, renewal at 2/3, Secret and Lease `tollgate-certs`.
    pub fn new(identity: &str, names: Vec<String>) -> Self {
        const DAY: u64 = 86_400;
        Settings {
            secret: "tollgate-certs".into(),
            lease: "tollgate-certs".into(),
            identity: identity.to_owned(),
            names,
            webhook_configs: Vec::new(),
            ca_lifetime: Duration::from_secs(10 * 365 * DAY),
            cert_lifetime: Duration::from_secs(365 * DAY),
            renew_at: 2.0 / 3.0,
            lease_duration: Duration::from_secs(30),
            report_every: Duration::from_secs(300),
            settle: Duration::from_secs(30),
        }
    }
}

/// What one replica knows of the Secret it serves from.
pub struct Lifecycle<O> {
    objects: O,
    settings: Settings,
    /// Fingerprint of the certificate this replica serves.
    serving: Option<String>,
    /// When this replica last reported it.
    reported: Option<SystemTime>,
}

/// The outcome of one [`Lifecycle::tick`].
#[derive(Debug, Default)]
pub struct Tick {
    /// Whether this replica holds the Lease.
    pub leader: bool,
    /// A serving pair to switch to (a new one, or the first).
    pub serve: Option<Pair>,
    /// The CA bundle clients should trust, once the Secret exists.
    pub bundle: Option<String>,
}

/// The Secret's contents.
#[derive(Debug, Clone)]
struct Contents {
    /// Every trusted CA, the signing one first.
    bundle: Vec<String>,
    /// The signing CA's key.
    ca_key: String,
    /// The serving pair.
    serving: Pair,
    annotations: BTreeMap<String, String>,
    /// The object as read, to replace.
    secret: Secret,
}

impl Contents {
    fn signing(&self) -> Pair {
        Pair {
            cert: self.bundle[0].clone(),
            key: self.ca_key.clone(),
        }
    }

    fn bundle_text(&self) -> String {
        self.bundle.concat()
    }
}

impl<O: Objects> Lifecycle<O> {
    /// A replica's lifecycle on `objects`.
    pub fn new(objects: O, settings: Settings) -> Self {
        Lifecycle {
            objects,
            settings,
            serving: None,
            reported: None,
        }
    }

    /// The objects (for tests and diagnostics).
    pub fn objects(&self) -> &O {
        &self.objects
    }

    /// One round at time `now`: hold or seek the Lease; as holder, create,
    /// rotate and publish; then serve what the Secret holds and report it.
    ///
    /// # Errors
    ///
    /// The apiserver failed, or the Secret is unusable; the next round
    /// tries again, and a replica keeps serving what it has.
    pub async fn tick(&mut self, now: SystemTime) -> Result<Tick, Error> {
        let leader = self.hold_lease(now).await?;
        let mut contents = self.read().await?;
        if leader {
            contents = Some(self.maintain(contents, now).await?);
        }
        let Some(contents) = contents else {
            return Ok(Tick {
                leader,
                ..Tick::default()
            });
        };
        let fingerprint = Info::read(&contents.serving.cert, "tls.crt")?.fingerprint;
        let serve = (self.serving.as_ref() != Some(&fingerprint)).then(|| {
            self.serving = Some(fingerprint.clone());
            self.reported = None;
            contents.serving.clone()
        });
        let bundle = Some(contents.bundle_text());
        let due = self
            .reported
            .is_none_or(|at| at + self.settings.report_every <= now);
        // What this replica serves must not wait on its report: a failed
        // one is tried again next round.
        if due {
            match self.report(contents, &fingerprint, now).await {
                Ok(()) => self.reported = Some(now),
                Err(error) => tracing::warn!("reporting the certificate served: {error}"),
            }
        }
        Ok(Tick {
            leader,
            serve,
            bundle,
        })
    }

    /// Takes the Lease if it is free or lapsed, renews it if ours.
    async fn hold_lease(&self, now: SystemTime) -> Result<bool, Error> {
        let name = &self.settings.lease;
        let me = &self.settings.identity;
        let renew = MicroTime(timestamp(now));
        let found: Option<Lease> = self.get(Kind::Lease, name).await?;
        let lease = match found {
            None => Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me.clone()),
                    lease_duration_seconds: Some(self.settings.lease_duration.as_secs() as i32),
                    acquire_time: Some(renew.clone()),
                    renew_time: Some(renew),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            },
            Some(mut lease) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                let ours = spec.holder_identity.as_ref() == Some(me);
                let lapsed = match (&spec.renew_time, spec.lease_duration_seconds) {
                    (Some(MicroTime(at)), Some(seconds)) => {
                        system_time(*at) + Duration::from_secs(seconds.max(0) as u64) < now
                    }
                    _ => true,
                };
                if !ours && !lapsed {
                    return Ok(false);
                }
                if !ours {
                    spec.holder_identity = Some(me.clone());
                    spec.acquire_time = Some(renew.clone());
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.lease_duration_seconds = Some(self.settings.lease_duration.as_secs() as i32);
                spec.renew_time = Some(renew);
                lease
            }
        };
        let written = if lease.metadata.resource_version.is_some() {
            self.objects.replace(Kind::Lease, to_json(&lease)).await
        } else {
            self.objects.create(Kind::Lease, to_json(&lease)).await
        };
        match written {
            Ok(_) => Ok(true),
            // Another replica took or renewed it first.
            Err(objects::Error::Conflict(..)) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        kind: Kind,
        name: &str,
    ) -> Result<Option<T>, Error> {
        let Some(value) = self.objects.get(kind, name).await? else {
            return Ok(None);
        };
        serde_json::from_value(value)
            .map(Some)
            .map_err(|e| Error::Secret {
                name: name.to_owned(),
                message: format!("not a {kind:?}: {e}"),
            })
    }

    /// The Secret's contents, if it exists.
    async fn read(&self) -> Result<Option<Contents>, Error> {
        let name = &self.settings.secret;
        let Some(secret) = self.get::<Secret>(Kind::Secret, name).await? else {
            return Ok(None);
        };
        let malformed = |message: String| Error::Secret {
            name: name.clone(),
            message,
        };
        let data = secret.data.clone().unwrap_or_default();
        let text = |key: &str| -> Result<String, Error> {
            let bytes = data
                .get(key)
                .ok_or_else(|| malformed(format!("has no {key}")))?;
            String::from_utf8(bytes.0.clone()).map_err(|_| malformed(format!("{key} is not PEM")))
        };
        let bundle = blocks(&text("ca.crt")?);
        if bundle.is_empty() {
            return Err(malformed("ca.crt holds no certificate".into()));
        }
        Ok(Some(Contents {
            bundle,
            ca_key: text("ca.key")?,
            serving: Pair {
                cert: text("tls.crt")?,
                key: text("tls.key")?,
            },
            annotations: secret.metadata.annotations.clone().unwrap_or_default(),
            secret,
        }))
    }

    /// As the Lease holder: creates the Secret, rotates what is due, and
    /// publishes the bundle.
    async fn maintain(
        &self,
        contents: Option<Contents>,
        now: SystemTime,
    ) -> Result<Contents, Error> {
        let settings = &self.settings;
        let mut contents = match contents {
            Some(contents) => contents,
            None => {
                let ca = authority::new_ca(now, settings.ca_lifetime)?;
                let serving = authority::issue(&ca, &settings.names, now, settings.cert_lifetime)?;
                tracing::info!(secret = %settings.secret, "created the CA and serving certificate");
                let contents = Contents {
                    bundle: vec![ca.cert],
                    ca_key: ca.key,
                    serving,
                    annotations: BTreeMap::new(),
                    secret: Secret::default(),
                };
                let created = self
                    .objects
                    .create(Kind::Secret, self.secret_json(&contents))
                    .await?;
                return self.publish(with_secret(contents, created)?, now).await;
            }
        };
        if let Some(change) = self.rotation(&contents, now)? {
            tracing::info!(secret = %settings.secret, "{}", change.describe());
            contents = change.apply(contents, settings, now)?;
            let replaced = self
                .objects
                .replace(Kind::Secret, self.secret_json(&contents))
                .await?;
            contents = with_secret(contents, replaced)?;
        }
        self.publish(contents, now).await
    }

    /// What is due, if anything, in order of urgency.
    fn rotation(&self, contents: &Contents, now: SystemTime) -> Result<Option<Change>, Error> {
        let settings = &self.settings;
        let cas = authority::all(&contents.bundle_text(), "ca.crt")?;
        let signing = &cas[0];
        let serving = Info::read(&contents.serving.cert, "tls.crt")?;
        let issued_by = |ca: &Info| ca.subject == serving.issuer;
        let trusted = cas.iter().any(issued_by);
        if !trusted || serving.not_after <= now {
            return Ok(Some(Change::Issue("the serving certificate is not valid")));
        }
        if cas.len() == 1 && signing.renew_at(settings.renew_at) <= now {
            return Ok(Some(Change::NewCa));
        }
        if !issued_by(signing) {
            let published = published(&contents.annotations);
            let held = published.as_ref().is_some_and(|(bundle, since)| {
                *bundle == fingerprint(&contents.bundle_text()) && *since + settings.settle <= now
            });
            return Ok(held.then_some(Change::Issue(
                "the new CA is in every webhook configuration",
            )));
        }
        if serving.renew_at(settings.renew_at) <= now {
            return Ok(Some(Change::Issue("the serving certificate is due")));
        }
        if settings.names.iter().any(|name| !serving.covers(name)) {
            return Ok(Some(Change::Issue("the serving certificate lacks a name")));
        }
        if cas.len() > 1 {
            let stale = settings.report_every * 3;
            let reports = reports(&contents.annotations);
            let live: Vec<_> = reports
                .iter()
                .filter(|(_, (_, at))| *at + stale > now)
                .collect();
            if !live.is_empty()
                && live
                    .iter()
                    .all(|(_, (served, _))| *served == serving.fingerprint)
            {
                return Ok(Some(Change::DropOldCas));
            }
        }
        Ok(None)
    }

    /// Gives every named webhook configuration the bundle (again, if
    /// someone edited it away), and notes once all of them hold it.
    async fn publish(&self, mut contents: Contents, now: SystemTime) -> Result<Contents, Error> {
        let bundle = contents.bundle_text();
        let encoded = base64::engine::general_purpose::STANDARD.encode(&bundle);
        let mut everywhere = true;
        for name in &self.settings.webhook_configs {
            let mut found = false;
            for kind in [
                Kind::MutatingWebhookConfiguration,
                Kind::ValidatingWebhookConfiguration,
            ] {
                let mut config = match self.objects.get(kind, name).await {
                    Ok(Some(config)) => config,
                    Ok(None) => continue,
                    Err(error) => {
                        tracing::error!("cannot read the webhook configuration: {error}");
                        found = true;
                        everywhere = false;
                        continue;
                    }
                };
                found = true;
                if set_ca_bundle(&mut config, &encoded) {
                    match self.objects.replace(kind, config).await {
                        Ok(_) => tracing::info!(%name, ?kind, "caBundle written"),
                        // Edited meanwhile: written next round.
                        Err(objects::Error::Conflict(..)) => everywhere = false,
                        // Serving goes on; the error is said every round.
                        Err(error) => {
                            tracing::error!("cannot write the caBundle: {error}");
                            everywhere = false;
                        }
                    }
                }
            }
            if !found {
                tracing::warn!(%name, "no webhook configuration of this name to give the CA bundle");
                everywhere = false;
            }
        }
        let current = fingerprint(&bundle);
        let noted = published(&contents.annotations).is_some_and(|(b, _)| b == current);
        if everywhere && !noted {
            contents
                .annotations
                .insert(PUBLISHED.into(), format!("{current} {}", unix(now)));
            let replaced = self
                .objects
                .replace(Kind::Secret, self.secret_json(&contents))
                .await?;
            contents = with_secret(contents, replaced)?;
        }
        Ok(contents)
    }

    /// Notes in the Secret that this replica serves `fingerprint`.
    async fn report(
        &self,
        mut contents: Contents,
        fingerprint: &str,
        now: SystemTime,
    ) -> Result<(), Error> {
        let key = format!(
            "{REPORT_PREFIX}{}",
            annotation_name(&self.settings.identity)
        );
        // Other replicas report too: on a conflict, read and try again.
        for _ in 0..5 {
            contents
                .annotations
                .insert(key.clone(), format!("{fingerprint} {}", unix(now)));
            match self
                .objects
                .replace(Kind::Secret, self.secret_json(&contents))
                .await
            {
                Ok(_) => return Ok(()),
                Err(objects::Error::Conflict(..)) => match self.read().await? {
                    Some(fresh) => contents = fresh,
                    None => return Ok(()),
                },
                Err(error) => return Err(error.into()),
            }
        }
        Err(objects::Error::Conflict(Kind::Secret, self.settings.secret.clone()).into())
    }

    fn secret_json(&self, contents: &Contents) -> Value {
        let mut secret = secret(
            &self.settings.secret,
            &contents.bundle_text(),
            &contents.ca_key,
            &contents.serving,
        );
        // The version read, so that the write is a compare-and-swap.
        secret.metadata.resource_version = contents.secret.metadata.resource_version.clone();
        secret.metadata.namespace = contents.secret.metadata.namespace.clone();
        secret.metadata.labels = contents.secret.metadata.labels.clone();
        secret.metadata.annotations =
            (!contents.annotations.is_empty()).then(|| contents.annotations.clone());
        to_json(&secret)
    }
}

/// The Secret the lifecycle keeps (and `tollgate certs` writes): a
/// `kubernetes.io/tls` Secret with the CA `bundle` as `ca.crt` and the
/// signing CA's key as `ca.key`.
pub fn secret(name: &str, bundle: &str, ca_key: &str, serving: &Pair) -> Secret {
    let bytes = |text: &str| ByteString(text.as_bytes().to_vec());
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::from([
            ("ca.crt".into(), bytes(bundle)),
            ("ca.key".into(), bytes(ca_key)),
            ("tls.crt".into(), bytes(&serving.cert)),
            ("tls.key".into(), bytes(&serving.key)),
        ])),
        ..Secret::default()
    }
}

/// `object` as JSON with its `apiVersion` and `kind`.
pub fn to_json<T: serde::Serialize + k8s_openapi::Resource>(object: &T) -> Value {
    let mut value = serde_json::to_value(object).expect("Kubernetes objects serialize");
    value["apiVersion"] = T::API_VERSION.into();
    value["kind"] = T::KIND.into();
    value
}

/// One change the Lease holder makes to the Secret.
enum Change {
    /// A new serving certificate from the signing CA, for the reason given.
    Issue(&'static str),
    /// A new signing CA joins the bundle.
    NewCa,
    /// Every replica serves the signing CA's certificate: the others go.
    DropOldCas,
}

impl Change {
    fn describe(&self) -> String {
        match self {
            Change::Issue(why) => format!("issuing a new serving certificate: {why}"),
            Change::NewCa => "the CA is due: a new CA joins the bundle".into(),
            Change::DropOldCas => {
                "every replica serves the new CA's certificate: the old CA leaves the bundle".into()
            }
        }
    }

    fn apply(
        self,
        mut contents: Contents,
        settings: &Settings,
        now: SystemTime,
    ) -> Result<Contents, Error> {
        match self {
            Change::Issue(_) => {
                contents.serving = authority::issue(
                    &contents.signing(),
                    &settings.names,
                    now,
                    settings.cert_lifetime,
                )?;
            }
            Change::NewCa => {
                let ca = authority::new_ca(now, settings.ca_lifetime)?;
                contents.bundle.insert(0, ca.cert);
                contents.ca_key = ca.key;
            }
            Change::DropOldCas => contents.bundle.truncate(1),
        }
        // Reports of what was served before no longer tell anything new.
        if !matches!(self, Change::DropOldCas) {
            contents.annotations.remove(PUBLISHED);
        }
        Ok(contents)
    }
}

fn with_secret(mut contents: Contents, written: Value) -> Result<Contents, Error> {
    contents.secret = serde_json::from_value(written).map_err(|e| Error::Secret {
        name: String::new(),
        message: e.to_string(),
    })?;
    Ok(contents)
}

/// Sets `clientConfig.caBundle` of every webhook; whether anything changed.
fn set_ca_bundle(config: &mut Value, encoded: &str) -> bool {
    let mut changed = false;
    if let Some(webhooks) = config["webhooks"].as_array_mut() {
        for webhook in webhooks {
            let slot = &mut webhook["clientConfig"]["caBundle"];
            if slot.as_str() != Some(encoded) {
                *slot = encoded.into();
                changed = true;
            }
        }
    }
    changed
}

/// The PEM blocks of a bundle, each with its END line.
fn blocks(pem: &str) -> Vec<String> {
    const END: &str = "-----END CERTIFICATE-----";
    let mut found = Vec::new();
    let mut rest = pem;
    while let Some(end) = rest.find(END) {
        let block = rest[..end + END.len()].trim_start();
        found.push(format!("{block}\n"));
        rest = &rest[end + END.len()..];
    }
    found
}

/// The replicas' reports: identity → (fingerprint, time).
fn reports(annotations: &BTreeMap<String, String>) -> BTreeMap<&str, (&str, SystemTime)> {
    annotations
        .iter()
        .filter_map(|(key, value)| {
            let identity = key.strip_prefix(REPORT_PREFIX)?;
            let (served, at) = value.split_once(' ')?;
            Some((identity, (served, from_unix(at)?)))
        })
        .collect()
}

fn published(annotations: &BTreeMap<String, String>) -> Option<(String, SystemTime)> {
    let (bundle, at) = annotations.get(PUBLISHED)?.split_once(' ')?;
    Some((bundle.to_owned(), from_unix(at)?))
}

/// An annotation name for `identity`: itself when it fits (63 characters),
/// else a prefix and a hash.
fn annotation_name(identity: &str) -> String {
    if identity.len() <= 63 {
        return identity.to_owned();
    }
    let hash = hex::encode(&Sha256::digest(identity)[..8]);
    format!("{}-{hash}", identity[..46].trim_end_matches(['-', '.']))
}

fn fingerprint(text: &str) -> String {
    hex::encode(&Sha256::digest(text)[..16])
}

fn unix(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn from_unix(text: &str) -> Option<SystemTime> {
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(text.parse().ok()?))
}

fn timestamp(time: SystemTime) -> jiff::Timestamp {
    jiff::Timestamp::try_from(time).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

fn system_time(time: jiff::Timestamp) -> SystemTime {
    SystemTime::from(time)
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;
    use serde_json::json;

    use super::*;
    use crate::objects::Memory;

    const DAY: Duration = Duration::from_secs(86_400);

    fn settings(identity: &str) -> Settings {
        let mut settings = Settings::new(
            identity,
            vec![
                "tollgate.tollgate-system.svc".into(),
                "tollgate.tollgate-system.svc.cluster.local".into(),
            ],
        );
        settings.webhook_configs = vec!["tollgate".into()];
        settings.ca_lifetime = 300 * DAY;
        settings.cert_lifetime = 30 * DAY;
        settings
    }

    fn webhook_config(kind: &str) -> Value {
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": kind,
            "metadata": {"name": "tollgate"},
            "webhooks": [
                {"name": "fail.tollgate.dev", "clientConfig": {"service": {"name": "tollgate", "namespace": "tollgate-system"}}},
                {"name": "ignore.tollgate.dev", "clientConfig": {"service": {"name": "tollgate", "namespace": "tollgate-system"}}},
            ],
        })
    }

    fn cluster() -> Memory {
        let memory = Memory::default();
        memory.put(
            Kind::MutatingWebhookConfiguration,
            webhook_config("MutatingWebhookConfiguration"),
        );
        memory.put(
            Kind::ValidatingWebhookConfiguration,
            webhook_config("ValidatingWebhookConfiguration"),
        );
        memory
    }

    /// Every caBundle of every webhook, decoded.
    fn bundles(memory: &Memory) -> Vec<String> {
        let mut found = Vec::new();
        for kind in [
            Kind::MutatingWebhookConfiguration,
            Kind::ValidatingWebhookConfiguration,
        ] {
            let config = memory.peek(kind, "tollgate").unwrap();
            for webhook in config["webhooks"].as_array().unwrap() {
                let encoded = webhook["clientConfig"]["caBundle"].as_str().unwrap_or("");
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .unwrap();
                found.push(String::from_utf8(bytes).unwrap());
            }
        }
        found
    }

    /// Whether every webhook configuration trusts the certificate `pem`.
    fn trusted_everywhere(memory: &Memory, pem: &str) -> bool {
        let issuer = Info::read(pem, "served").unwrap().issuer;
        bundles(memory).iter().all(|bundle| {
            !bundle.is_empty()
                && authority::all(bundle, "bundle")
                    .unwrap()
                    .iter()
                    .any(|ca| ca.subject == issuer)
        })
    }

    struct Replica<'m> {
        lifecycle: Lifecycle<&'m Memory>,
        serving: Option<Pair>,
    }

    impl<'m> Replica<'m> {
        fn new(memory: &'m Memory, identity: &str) -> Self {
            Replica {
                lifecycle: Lifecycle::new(memory, settings(identity)),
                serving: None,
            }
        }

        fn tick(&mut self, now: SystemTime) -> Tick {
            let tick = block_on(self.lifecycle.tick(now)).unwrap();
            if let Some(pair) = &tick.serve {
                self.serving = Some(pair.clone());
            }
            tick
        }

        fn cert(&self) -> &str {
            &self.serving.as_ref().expect("serving").cert
        }
    }

    #[test]
    fn the_first_replica_creates_and_publishes_the_second_loads() {
        let memory = cluster();
        let now = SystemTime::now();
        let mut a = Replica::new(&memory, "tollgate-a");
        let mut b = Replica::new(&memory, "tollgate-b");
        let first = a.tick(now);
        assert!(first.leader);
        let served = Info::read(a.cert(), "served").unwrap();
        assert!(served.covers("tollgate.tollgate-system.svc"));
        assert!(served.covers("tollgate.tollgate-system.svc.cluster.local"));
        let second = b.tick(now + Duration::from_secs(1));
        assert!(!second.leader, "one replica holds the Lease");
        assert_eq!(a.cert(), b.cert(), "both serve the one Secret's pair");
        assert_eq!(bundles(&memory).len(), 4);
        assert!(trusted_everywhere(&memory, a.cert()));
        let secret = memory.peek(Kind::Secret, "tollgate-certs").unwrap();
        assert_eq!(secret["type"], "kubernetes.io/tls");
        let annotations = secret["metadata"]["annotations"].as_object().unwrap();
        assert!(annotations.contains_key("serving.certs.tollgate.dev/tollgate-a"));
        assert!(annotations.contains_key("serving.certs.tollgate.dev/tollgate-b"));
        // Nothing is due: another round changes nothing.
        let version = secret["metadata"]["resourceVersion"].clone();
        assert!(a.tick(now + Duration::from_secs(10)).serve.is_none());
        assert!(b.tick(now + Duration::from_secs(11)).serve.is_none());
        let again = memory.peek(Kind::Secret, "tollgate-certs").unwrap();
        assert_eq!(again["metadata"]["resourceVersion"], version);
    }

    #[test]
    fn rotation_keeps_every_served_certificate_trusted() {
        let memory = cluster();
        let start = SystemTime::now();
        let mut a = Replica::new(&memory, "tollgate-a");
        let mut b = Replica::new(&memory, "tollgate-b");
        let mut seen_certs = Vec::new();
        let mut bundle_sizes = Vec::new();
        // A year in steps of six hours: the serving certificate (30 days)
        // turns over about every 20 days, the CA (300 days) once.
        let mut now = start;
        while now < start + 365 * DAY {
            for replica in [&mut a, &mut b] {
                replica.tick(now);
                assert!(
                    trusted_everywhere(&memory, replica.cert()),
                    "a replica serves a certificate the apiserver does not trust"
                );
                let served = Info::read(replica.cert(), "served").unwrap();
                assert!(served.not_after > now, "an expired certificate is served");
                now += Duration::from_secs(60);
            }
            if !seen_certs.contains(&a.cert().to_owned()) {
                seen_certs.push(a.cert().to_owned());
            }
            bundle_sizes.push(authority::all(&bundles(&memory)[0], "b").unwrap().len());
            now += 6 * 3600 * Duration::from_secs(1);
        }
        assert!(seen_certs.len() >= 15, "rotated {} times", seen_certs.len());
        assert!(bundle_sizes.contains(&2), "a new CA joined the bundle");
        assert_eq!(bundle_sizes.last(), Some(&1), "the old CA left it again");
        let cas = authority::all(&bundles(&memory)[0], "b").unwrap();
        assert_ne!(
            cas[0].not_before,
            Info::read(&seen_certs[0], "s").unwrap().not_before
        );
    }

    #[test]
    fn the_old_ca_stays_until_every_replica_serves_the_new_certificate() {
        let memory = cluster();
        let start = SystemTime::now();
        let mut a = Replica::new(&memory, "tollgate-a");
        let mut b = Replica::new(&memory, "tollgate-b");
        a.tick(start);
        b.tick(start);
        // Past 2/3 of the CA's 300 days (the 30-day certificate has long
        // expired: it is issued again first), the new CA joins the bundle.
        let mut now = start + 201 * DAY;
        a.tick(now);
        b.tick(now);
        assert_eq!(authority::all(&bundles(&memory)[0], "b").unwrap().len(), 1);
        a.tick(now);
        assert_eq!(authority::all(&bundles(&memory)[0], "b").unwrap().len(), 2);
        // After the settle time, the new CA's certificate is issued; b has
        // not loaded it yet, so the old CA must stay.
        now += Duration::from_secs(60);
        a.tick(now);
        let served_by_a = Info::read(a.cert(), "a").unwrap();
        let served_by_b = Info::read(b.cert(), "b").unwrap();
        assert_ne!(served_by_a.issuer, served_by_b.issuer);
        now += Duration::from_secs(60);
        a.tick(now);
        assert_eq!(authority::all(&bundles(&memory)[0], "b").unwrap().len(), 2);
        assert!(trusted_everywhere(&memory, b.cert()));
        // b serves it and reports: the old CA goes.
        b.tick(now);
        a.tick(now + Duration::from_secs(10));
        assert_eq!(authority::all(&bundles(&memory)[0], "b").unwrap().len(), 1);
        assert!(trusted_everywhere(&memory, a.cert()));
        assert!(trusted_everywhere(&memory, b.cert()));
    }

    #[test]
    fn a_ca_bundle_edited_away_is_put_back() {
        let memory = cluster();
        let now = SystemTime::now();
        let mut a = Replica::new(&memory, "tollgate-a");
        a.tick(now);
        memory.put(
            Kind::ValidatingWebhookConfiguration,
            webhook_config("ValidatingWebhookConfiguration"),
        );
        assert!(!trusted_everywhere(&memory, a.cert()));
        a.tick(now + Duration::from_secs(10));
        assert!(trusted_everywhere(&memory, a.cert()));
    }

    #[test]
    fn when_the_holder_stops_another_replica_takes_over_and_renews() {
        let memory = cluster();
        let start = SystemTime::now();
        let mut a = Replica::new(&memory, "tollgate-a");
        let mut b = Replica::new(&memory, "tollgate-b");
        assert!(a.tick(start).leader);
        assert!(!b.tick(start + Duration::from_secs(10)).leader);
        // a is gone; long after its Lease lapsed, the certificate expired.
        let later = start + 40 * DAY;
        let tick = b.tick(later);
        assert!(tick.leader, "the lapsed Lease is taken over");
        let served = Info::read(b.cert(), "b").unwrap();
        assert!(
            served.not_after > later,
            "the expired certificate was replaced"
        );
        assert!(trusted_everywhere(&memory, b.cert()));
        let lease = memory.peek(Kind::Lease, "tollgate-certs").unwrap();
        assert_eq!(lease["spec"]["holderIdentity"], "tollgate-b");
        assert_eq!(lease["spec"]["leaseTransitions"], 1);
    }

    #[test]
    fn a_secret_without_its_keys_is_an_error_and_is_not_overwritten() {
        let memory = cluster();
        memory.put(
            Kind::Secret,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tollgate-certs"},
                   "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}}),
        );
        let mut lifecycle = Lifecycle::new(&memory, settings("tollgate-a"));
        let error = block_on(lifecycle.tick(SystemTime::now())).unwrap_err();
        assert_eq!(error.to_string(), "Secret tollgate-certs: has no ca.crt");
        let secret = memory.peek(Kind::Secret, "tollgate-certs").unwrap();
        assert_eq!(secret["metadata"]["resourceVersion"], "3");
    }

    #[test]
    fn a_webhook_configuration_that_cannot_be_written_stops_neither_serving_nor_reports() {
        let memory = cluster();
        memory.refuse_writes(Kind::ValidatingWebhookConfiguration);
        let now = SystemTime::now();
        let mut a = Replica::new(&memory, "tollgate-a");
        let mut b = Replica::new(&memory, "tollgate-b");
        a.tick(now);
        b.tick(now);
        assert_eq!(a.cert(), b.cert());
        let secret = memory.peek(Kind::Secret, "tollgate-certs").unwrap();
        let annotations = secret["metadata"]["annotations"].as_object().unwrap();
        assert!(annotations.contains_key("serving.certs.tollgate.dev/tollgate-b"));
        // Not in every configuration: a new CA would not be served yet.
        assert!(!annotations.contains_key(PUBLISHED));
    }

    #[test]
    fn long_identities_make_valid_annotation_names() {
        let long = "tollgate-".repeat(10);
        let name = annotation_name(&long);
        assert!(name.len() <= 63, "{name}");
        assert_ne!(annotation_name(&format!("{long}x")), name);
        assert_eq!(
            annotation_name("tollgate-7c9d-x2x9z"),
            "tollgate-7c9d-x2x9z"
        );
    }
}
