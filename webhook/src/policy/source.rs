//! Where the configuration text comes from: the embedded default, a file,
//! or a ConfigMap read (and watched) through the apiserver.

use std::path::PathBuf;

use futures::{Stream, StreamExt as _};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::runtime::{WatchStreamExt as _, watcher};

use super::config::{self, Config};

/// The key of a ConfigMap that holds the configuration.
pub const CONFIGMAP_KEY: &str = "config.yaml";

/// Why the configuration text could not be had.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--config configmap:` without `NAMESPACE/NAME`.
    #[error("--config {0:?}: write configmap:NAMESPACE/NAME")]
    BadReference(String),
    /// The file could not be read.
    #[error("{path}: cannot read the configuration: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The apiserver did not give the ConfigMap.
    #[error("ConfigMap {namespace}/{name}: {message}")]
    ConfigMap {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// What went wrong.
        message: String,
    },
}

/// Where `--config` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The configuration built into the binary.
    Embedded,
    /// A YAML file (relative module paths resolve next to it).
    File(PathBuf),
    /// Key `config.yaml` of a ConfigMap.
    ConfigMap {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
}

/// A configuration's text, and how to parse it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text {
    /// The YAML.
    pub text: String,
    /// Where it is from, for messages.
    pub origin: String,
    /// Where relative module paths resolve.
    pub base_dir: PathBuf,
}

impl Text {
    /// Parses and checks it.
    ///
    /// # Errors
    ///
    /// Bad YAML or a bad field, named.
    pub fn parse(&self) -> Result<Config, config::Error> {
        Config::parse(&self.text, &self.origin, self.base_dir.clone())
    }
}

impl Source {
    /// The source `--config` names: `configmap:NAMESPACE/NAME`, a file, or
    /// (none) the embedded default.
    ///
    /// # Errors
    ///
    /// A `configmap:` reference without a namespace and name.
    pub fn parse(argument: Option<&str>) -> Result<Source, Error> {
        let Some(argument) = argument else {
            return Ok(Source::Embedded);
        };
        let Some(reference) = argument.strip_prefix("configmap:") else {
            return Ok(Source::File(PathBuf::from(argument)));
        };
        match reference.split_once('/') {
            Some((namespace, name))
                if !namespace.is_empty() && !name.is_empty() && !name.contains('/') =>
            {
                Ok(Source::ConfigMap {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                })
            }
            _ => Err(Error::BadReference(argument.to_owned())),
        }
    }

    /// Reads the text of a file or of the embedded default; `None` for a
    /// ConfigMap, which is read through the apiserver ([`read_configmap`]).
    ///
    /// # Errors
    ///
    /// An unreadable file.
    pub fn read_local(&self) -> Option<Result<Text, Error>> {
        match self {
            Source::Embedded => Some(Ok(Text {
                text: crate::builtin::DEFAULT_CONFIG.to_owned(),
                origin: "<embedded default configuration>".into(),
                base_dir: PathBuf::new(),
            })),
            Source::File(path) => Some(
                std::fs::read_to_string(path)
                    .map(|text| Text {
                        text,
                        origin: path.display().to_string(),
                        base_dir: path.parent().map(PathBuf::from).unwrap_or_default(),
                    })
                    .map_err(|source| Error::Read {
                        path: path.clone(),
                        source,
                    }),
            ),
            Source::ConfigMap { .. } => None,
        }
    }
}

/// The configuration text a ConfigMap holds.
///
/// # Errors
///
/// It has no `config.yaml`.
pub fn configmap_text(map: &ConfigMap) -> Result<Text, Error> {
    let namespace = map.metadata.namespace.clone().unwrap_or_default();
    let name = map.metadata.name.clone().unwrap_or_default();
    let origin = format!("configmap:{namespace}/{name}");
    match map.data.as_ref().and_then(|d| d.get(CONFIGMAP_KEY)) {
        Some(text) => Ok(Text {
            text: text.clone(),
            origin,
            // Module paths in a ConfigMap are absolute (a mounted volume)
            // or built-in.
            base_dir: PathBuf::from("/"),
        }),
        None => Err(Error::ConfigMap {
            namespace,
            name,
            message: format!("has no key {CONFIGMAP_KEY:?}"),
        }),
    }
}

/// Reads the ConfigMap once.
///
/// # Errors
///
/// The apiserver refused, it does not exist, or it has no `config.yaml`.
pub async fn read_configmap(
    client: kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Text, Error> {
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    let failed = |message: String| Error::ConfigMap {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        message,
    };
    let map = api.get(name).await.map_err(|e| failed(e.to_string()))?;
    configmap_text(&map)
}

/// Every version of the ConfigMap, as the apiserver's watch reports it
/// (re-listed with backoff when the watch breaks); a version without
/// `config.yaml`, or the ConfigMap's deletion, is an error item.
pub fn watch_configmap(
    client: kube::Client,
    namespace: &str,
    name: &str,
) -> impl Stream<Item = Result<Text, Error>> + Send + 'static {
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    let (namespace, name) = (namespace.to_owned(), name.to_owned());
    let selector = format!("metadata.name={name}");
    watcher(api, watcher::Config::default().fields(&selector))
        .default_backoff()
        .applied_objects()
        .map(move |event| match event {
            Ok(map) => configmap_text(&map),
            Err(error) => Err(Error::ConfigMap {
                namespace: namespace.clone(),
                name: name.clone(),
                message: format!("watch failed, retrying: {error}"),
            }),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_a_file_a_configmap_or_nothing() {
        assert_eq!(Source::parse(None).unwrap(), Source::Embedded);
        assert_eq!(
            Source::parse(Some("deploy/config.yaml")).unwrap(),
            Source::File("deploy/config.yaml".into())
        );
        assert_eq!(
            Source::parse(Some("configmap:tollgate-system/tollgate-config")).unwrap(),
            Source::ConfigMap {
                namespace: "tollgate-system".into(),
                name: "tollgate-config".into()
            }
        );
        for bad in [
            "configmap:",
            "configmap:ns",
            "configmap:/name",
            "configmap:ns/a/b",
        ] {
            assert_eq!(
                Source::parse(Some(bad)).unwrap_err().to_string(),
                format!("--config {bad:?}: write configmap:NAMESPACE/NAME")
            );
        }
    }

    #[test]
    fn a_configmap_gives_its_config_yaml() {
        let map: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "tollgate-config", "namespace": "tollgate-system"},
            "data": {"config.yaml": "policies: []\n"}
        }))
        .unwrap();
        let text = configmap_text(&map).unwrap();
        assert_eq!(text.origin, "configmap:tollgate-system/tollgate-config");
        assert!(text.parse().unwrap().policies.is_empty());
        let empty: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "other", "namespace": "ns"}, "data": {"x": "y"}
        }))
        .unwrap();
        assert_eq!(
            configmap_text(&empty).unwrap_err().to_string(),
            "ConfigMap ns/other: has no key \"config.yaml\""
        );
    }
}
