//! The scanner's side of a live cluster: listing every object the policies
//! match (discovery, paged lists, a few kinds at a time), and applying the
//! PolicyReports it wrote while removing those of objects that are gone. The
//! kube-rs calls are behind [`Cluster`], so the logic is tested with a fake.

use std::collections::BTreeSet;

use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::discovery::{Discovery, verbs};
use serde_json::Value;

use super::format::policyreport::{self, MANAGED_BY};
use super::report::Report;
use crate::context::Kind;
use crate::context::store::Incoming;

/// Why a call to the cluster failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No client could be made (no kubeconfig, no service account, or an
    /// unusable one).
    #[error(transparent)]
    Connect(#[from] crate::context::live::ConnectError),
    /// The client's runtime could not start.
    #[error("starting the cluster client: {0}")]
    Runtime(#[from] std::io::Error),
    /// The apiserver refused or could not be reached.
    #[error("{what}: {source}")]
    Call {
        /// What was being done (`listing batch/v1 Job`).
        what: String,
        /// The client's error.
        source: kube::Error,
    },
    /// A listed object could not be read back as JSON.
    #[error("reading a listed {kind}: {source}")]
    Object {
        /// Its kind.
        kind: String,
        /// The JSON error.
        source: serde_json::Error,
    },
}

fn call(what: impl FnOnce() -> String) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Call {
        what: what(),
        source,
    }
}

/// A report already in the cluster.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Existing {
    /// `PolicyReport` or `ClusterPolicyReport`.
    pub kind: String,
    /// Namespace (empty for ClusterPolicyReports).
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// What the scanner needs of a cluster.
pub trait Cluster {
    /// Every object of every listable kind `wanted(group, kind)` selects.
    ///
    /// # Errors
    ///
    /// Discovery or a list failed.
    fn objects(&self, wanted: &(dyn Fn(&str, &str) -> bool + Sync))
    -> Result<Vec<Incoming>, Error>;

    /// Tollgate's reports in the cluster.
    ///
    /// # Errors
    ///
    /// The list failed (or PolicyReports are not installed).
    fn reports(&self) -> Result<Vec<Existing>, Error>;

    /// Applies a report (server-side apply, field manager `tollgate`).
    ///
    /// # Errors
    ///
    /// The apiserver refused it.
    fn apply(&self, report: &Value) -> Result<(), Error>;

    /// Deletes a report.
    ///
    /// # Errors
    ///
    /// The apiserver refused.
    fn delete(&self, report: &Existing) -> Result<(), Error>;
}

/// What [`write_reports`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    /// Reports applied.
    pub applied: usize,
    /// Reports of objects that no longer exist, deleted.
    pub deleted: usize,
}

/// Applies one report per object with findings, and deletes Tollgate's
/// reports of objects that were not found by this scan.
///
/// # Errors
///
/// The first call the cluster refused.
pub fn write_reports(cluster: &dyn Cluster, report: &Report) -> Result<Written, Error> {
    let mut written = Written::default();
    let mut keep = BTreeSet::new();
    for object in report.objects.iter().filter(|o| !o.findings.is_empty()) {
        let value = policyreport::report(report, object);
        keep.insert(Existing {
            kind: value["kind"].as_str().unwrap_or_default().to_owned(),
            namespace: object.namespace.clone(),
            name: policyreport::name(object),
        });
        cluster.apply(&value)?;
        written.applied += 1;
    }
    for existing in cluster.reports()? {
        if !keep.contains(&existing) {
            cluster.delete(&existing)?;
            written.deleted += 1;
        }
    }
    Ok(written)
}

/// Kinds listed at once.
const CONCURRENT_LISTS: usize = 4;

/// Objects per page.
const PAGE: u32 = 500;

/// A cluster through kube-rs; calls block on `runtime`.
pub struct Kube {
    client: kube::Client,
    runtime: tokio::runtime::Runtime,
}

fn report_resource(kind: &str) -> ApiResource {
    let plural = format!("{}s", kind.to_lowercase());
    ApiResource {
        group: "wgpolicyk8s.io".into(),
        version: "v1alpha2".into(),
        api_version: "wgpolicyk8s.io/v1alpha2".into(),
        kind: kind.into(),
        plural,
    }
}

impl Kube {
    /// Connects with `kubeconfig`, else as [`live::client`] finds the
    /// cluster.
    ///
    /// # Errors
    ///
    /// No usable configuration.
    ///
    /// [`live::client`]: crate::context::live::client
    pub fn connect(kubeconfig: Option<&std::path::Path>) -> Result<Self, Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let client = runtime.block_on(crate::context::live::client(kubeconfig))?;
        Ok(Kube { client, runtime })
    }

    /// A provider of cluster context on this connection.
    pub fn live(&self) -> crate::context::live::Live {
        crate::context::live::Live::new(self.client.clone(), self.runtime.handle().clone())
    }

    async fn list_all(&self, resource: ApiResource) -> Result<Vec<Incoming>, Error> {
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource);
        let kind = Kind::new(&resource.api_version, &resource.kind);
        let mut objects = Vec::new();
        let mut params = ListParams::default().limit(PAGE);
        loop {
            let page = api
                .list(&params)
                .await
                .map_err(call(|| format!("listing {kind}")))?;
            for mut object in page.items {
                object.types = Some(kube::api::TypeMeta {
                    api_version: resource.api_version.clone(),
                    kind: resource.kind.clone(),
                });
                let mut value = serde_json::to_value(&object).map_err(|source| Error::Object {
                    kind: kind.to_string(),
                    source,
                })?;
                crate::context::store::strip(&mut value);
                objects.push(Incoming {
                    kind: kind.clone(),
                    value,
                });
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => return Ok(objects),
            }
        }
    }
}

impl Cluster for Kube {
    fn objects(
        &self,
        wanted: &(dyn Fn(&str, &str) -> bool + Sync),
    ) -> Result<Vec<Incoming>, Error> {
        self.runtime.block_on(async {
            let discovery = Discovery::new(self.client.clone())
                .run()
                .await
                .map_err(call(|| "discovery".into()))?;
            let resources: Vec<ApiResource> = discovery
                .groups()
                .flat_map(|group| group.recommended_resources())
                .filter(|(resource, caps)| {
                    caps.supports_operation(verbs::LIST) && wanted(&resource.group, &resource.kind)
                })
                .map(|(resource, _)| resource)
                .collect();
            let lists: Vec<Vec<Incoming>> = futures::stream::iter(resources)
                .map(|resource| self.list_all(resource))
                .buffer_unordered(CONCURRENT_LISTS)
                .try_collect()
                .await?;
            Ok(lists.into_iter().flatten().collect())
        })
    }

    fn reports(&self) -> Result<Vec<Existing>, Error> {
        let selector = format!("{}={}", MANAGED_BY.0, MANAGED_BY.1);
        self.runtime.block_on(async {
            let mut found = Vec::new();
            for kind in ["PolicyReport", "ClusterPolicyReport"] {
                let api: Api<DynamicObject> =
                    Api::all_with(self.client.clone(), &report_resource(kind));
                let list = api
                    .list(&ListParams::default().labels(&selector))
                    .await
                    .map_err(call(|| format!("listing {kind}s")))?;
                found.extend(list.items.into_iter().map(|r| Existing {
                    kind: kind.into(),
                    namespace: r.metadata.namespace.unwrap_or_default(),
                    name: r.metadata.name.unwrap_or_default(),
                }));
            }
            Ok(found)
        })
    }

    fn apply(&self, report: &Value) -> Result<(), Error> {
        let kind = report["kind"].as_str().unwrap_or_default();
        let name = report["metadata"]["name"].as_str().unwrap_or_default();
        let resource = report_resource(kind);
        let api: Api<DynamicObject> = match report["metadata"]["namespace"].as_str() {
            Some(namespace) => Api::namespaced_with(self.client.clone(), namespace, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        };
        let params = PatchParams::apply("tollgate").force();
        self.runtime
            .block_on(api.patch(name, &params, &Patch::Apply(report)))
            .map(|_| ())
            .map_err(call(|| format!("applying {kind} {name}")))
    }

    fn delete(&self, report: &Existing) -> Result<(), Error> {
        let resource = report_resource(&report.kind);
        let api: Api<DynamicObject> = if report.namespace.is_empty() {
            Api::all_with(self.client.clone(), &resource)
        } else {
            Api::namespaced_with(self.client.clone(), &report.namespace, &resource)
        };
        self.runtime
            .block_on(api.delete(&report.name, &DeleteParams::default()))
            .map(|_| ())
            .map_err(call(|| format!("deleting {} {}", report.kind, report.name)))
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::audit::report::{Finding, Object, Outcome, Policy};
    use crate::policy::config::Severity;

    /// The apiserver's reports, in memory.
    #[derive(Default)]
    struct Fake {
        reports: RefCell<BTreeSet<Existing>>,
        applied: RefCell<Vec<Value>>,
    }

    impl Cluster for Fake {
        fn objects(&self, _: &(dyn Fn(&str, &str) -> bool + Sync)) -> Result<Vec<Incoming>, Error> {
            Ok(Vec::new())
        }
        fn reports(&self) -> Result<Vec<Existing>, Error> {
            let reports = self.reports.borrow().iter().cloned().collect();
            Ok(reports)
        }
        fn apply(&self, report: &Value) -> Result<(), Error> {
            self.reports.borrow_mut().insert(Existing {
                kind: report["kind"].as_str().unwrap().into(),
                namespace: report["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .into(),
                name: report["metadata"]["name"].as_str().unwrap().into(),
            });
            self.applied.borrow_mut().push(report.clone());
            Ok(())
        }
        fn delete(&self, report: &Existing) -> Result<(), Error> {
            self.reports.borrow_mut().remove(report);
            Ok(())
        }
    }

    fn object(kind: &str, namespace: &str, name: &str, result: Outcome) -> Object {
        Object {
            api_version: "v1".into(),
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
            uid: Some(format!("uid-{name}")),
            findings: vec![Finding {
                policy: "pod-security".into(),
                result,
                message: (result == Outcome::Fail).then(|| "privileged".to_owned()),
            }],
        }
    }

    #[test]
    fn reports_are_applied_per_object_and_stale_ones_removed() {
        let fake = Fake::default();
        fake.reports.borrow_mut().insert(Existing {
            kind: "PolicyReport".into(),
            namespace: "ml".into(),
            name: "tollgate-pod-deleted-long-ago".into(),
        });
        let policies = vec![Policy {
            name: "pod-security".into(),
            module: "builtin:pod-security".into(),
            mode: "enforce".into(),
            severity: Severity::High,
            category: "Pod Security".into(),
            controls: vec!["CIS-5.2".into()],
        }];
        let report = Report::new(
            "cluster".into(),
            policies,
            vec![
                object("Pod", "ml", "train", Outcome::Fail),
                object("Namespace", "", "ml", Outcome::Pass),
            ],
        );
        let written = write_reports(&fake, &report).unwrap();
        assert_eq!(
            written,
            Written {
                applied: 2,
                deleted: 1
            }
        );
        let names: Vec<String> = fake
            .reports()
            .unwrap()
            .into_iter()
            .map(|r| format!("{}/{}/{}", r.kind, r.namespace, r.name))
            .collect();
        assert_eq!(
            names,
            [
                "ClusterPolicyReport//tollgate-namespace-ml",
                "PolicyReport/ml/tollgate-pod-train"
            ]
        );
        let pod = fake.applied.borrow()[0].clone();
        assert_eq!(pod["apiVersion"], "wgpolicyk8s.io/v1alpha2");
        assert_eq!(
            pod["scope"],
            serde_json::json!({"apiVersion": "v1", "kind": "Pod", "name": "train", "namespace": "ml", "uid": "uid-train"})
        );
        assert_eq!(
            pod["summary"],
            serde_json::json!({"pass": 0, "fail": 1, "warn": 0, "error": 0, "skip": 0})
        );
        assert_eq!(pod["results"][0]["severity"], "high");
        assert_eq!(pod["results"][0]["category"], "Pod Security");
        assert_eq!(pod["results"][0]["message"], "privileged");
        assert_eq!(pod["results"][0]["properties"]["controls"], "CIS-5.2");
        // A second scan after the pod is gone removes its report.
        let report = Report::new(
            "cluster".into(),
            report.policies.clone(),
            vec![object("Namespace", "", "ml", Outcome::Pass)],
        );
        assert_eq!(
            write_reports(&fake, &report).unwrap(),
            Written {
                applied: 1,
                deleted: 1
            }
        );
    }
}
