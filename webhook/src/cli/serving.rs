//! Where `serve`'s certificate comes from: made once in a directory, kept
//! in a Secret shared by the replicas, or mounted (cert-manager); each
//! swapped in without a restart when it changes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use tollgate_certs::authority::Service;
use tollgate_certs::dir::{self, Outcome};
use tollgate_certs::lifecycle::{Lifecycle, Settings};
use tollgate_certs::objects::Kube;

use crate::context::live;
use crate::server::tls::{Files, Resolver};

/// Where the serving certificate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Source {
    /// Made once in --cert-dir and reused (outside a cluster, or one
    /// replica with a volume of its own).
    SelfMade,
    /// Kept in one Secret for every replica: the holder of a Lease creates
    /// and rotates it and gives its CA to the --webhook-config objects.
    SelfManaged,
    /// Read from --cert-dir (`tls.crt`, `tls.key`) as mounted, e.g. from a
    /// Secret that cert-manager rewrites; reloaded when it changes.
    Mounted,
}

/// How often a replica looks at the Secret (and the holder renews its
/// Lease); well inside the Lease's 30 seconds.
const SECRET_INTERVAL: Duration = Duration::from_secs(10);

/// The options of `serve` that choose the certificate.
#[derive(Debug, clap::Args)]
pub struct CertArgs {
    /// Where the serving certificate comes from (ignored with --tls-cert).
    #[arg(long, value_enum, default_value = "self-made")]
    certs: Source,
    /// Serving certificate (PEM); with --tls-key. Reloaded when it changes.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Serving key (PEM); with --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The directory of a self-made pair (ca.crt, ca.key, tls.crt, tls.key),
    /// or of a mounted one (tls.crt, tls.key).
    #[arg(long, default_value = "tollgate-certs")]
    cert_dir: PathBuf,
    /// The webhook's Service, NAME.NAMESPACE: the certificate names
    /// NAME.NAMESPACE.svc and NAME.NAMESPACE.svc.cluster.local, and the
    /// Secret and Lease of --certs self-managed live in NAMESPACE.
    #[arg(long, value_name = "NAME.NAMESPACE")]
    service: Option<Service>,
    /// More names for the certificate (DNS names or IPs). May repeat.
    #[arg(long = "tls-san")]
    tls_sans: Vec<String>,
    /// With --certs self-managed: a Mutating- and/or
    /// ValidatingWebhookConfiguration of this name gets the CA bundle.
    /// May repeat.
    #[arg(long = "webhook-config", value_name = "NAME")]
    webhook_configs: Vec<String>,
    /// With --certs self-managed: the Secret (and Lease) name.
    #[arg(long, default_value = "tollgate-certs")]
    cert_secret: String,
    #[command(flatten)]
    lifetimes: Lifetimes,
    /// With --certs self-managed: the fraction of a lifetime after which a
    /// certificate or CA is replaced (`2/3`, `0.5`).
    #[arg(long, default_value = "2/3", value_parser = parse_fraction)]
    cert_renew_at: f64,
}

/// How long the certificates made are valid.
#[derive(Debug, clap::Args)]
pub struct Lifetimes {
    /// How long a serving certificate is valid.
    #[arg(long, default_value = "8760h", value_parser = super::parse_duration)]
    pub cert_lifetime: Duration,
    /// How long a CA is valid.
    #[arg(long, default_value = "87600h", value_parser = super::parse_duration)]
    pub ca_lifetime: Duration,
}

fn parse_fraction(text: &str) -> Result<f64, String> {
    let value = match text.split_once('/') {
        Some((a, b)) => a
            .trim()
            .parse::<f64>()
            .ok()
            .zip(b.trim().parse::<f64>().ok())
            .map(|(a, b)| a / b),
        None => text.parse().ok(),
    };
    match value {
        Some(v) if v > 0.0 && v < 1.0 => Ok(v),
        _ => Err(format!(
            "{text:?}: write a fraction between 0 and 1, like 2/3 or 0.5"
        )),
    }
}

impl CertArgs {
    /// The certificate names: the Service's and every --tls-san.
    fn names(&self) -> Vec<String> {
        let mut names = Vec::new();
        if let Some(service) = &self.service {
            names.extend(service.names());
        }
        names.extend(self.tls_sans.iter().cloned());
        names
    }

    /// The resolver serving the chosen certificate, with whatever keeps it
    /// current spawned on `runtime`.
    pub fn resolver(
        &self,
        runtime: &tokio::runtime::Handle,
        kubeconfig: Option<&std::path::Path>,
    ) -> anyhow::Result<Arc<Resolver>> {
        let files = match (&self.tls_cert, &self.tls_key, self.certs) {
            (Some(cert), Some(key), _) => Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            (_, _, Source::Mounted) => Files {
                cert: self.cert_dir.join("tls.crt"),
                key: self.cert_dir.join("tls.key"),
            },
            (_, _, Source::SelfMade) => self_made(&self.cert_dir, &self.names())?,
            (_, _, Source::SelfManaged) => return self.self_managed(runtime, kubeconfig),
        };
        let resolver = Resolver::from_files(files)?;
        runtime.spawn(resolver.clone().watch());
        Ok(resolver)
    }

    /// Waits for the shared Secret (made by whichever replica holds the
    /// Lease), then follows it.
    fn self_managed(
        &self,
        runtime: &tokio::runtime::Handle,
        kubeconfig: Option<&std::path::Path>,
    ) -> anyhow::Result<Arc<Resolver>> {
        let namespace = &self
            .service
            .as_ref()
            .context("--certs self-managed needs --service NAME.NAMESPACE")?
            .namespace;
        let client = runtime.block_on(live::client(kubeconfig))?;
        let mut settings = Settings::new(&identity(), self.names());
        settings.secret = self.cert_secret.clone();
        settings.lease = self.cert_secret.clone();
        settings.webhook_configs = self.webhook_configs.clone();
        settings.cert_lifetime = self.lifetimes.cert_lifetime;
        settings.ca_lifetime = self.lifetimes.ca_lifetime;
        settings.renew_at = self.cert_renew_at;
        let origin = format!("Secret {namespace}/{}", settings.secret);
        let mut lifecycle = Lifecycle::new(Kube::new(client, namespace), settings);
        tracing::info!(%origin, "waiting for the shared serving certificate");
        let first = runtime.block_on(async {
            loop {
                match lifecycle.tick(SystemTime::now()).await {
                    Ok(tick) if tick.serve.is_some() => break tick.serve,
                    Ok(_) => {}
                    Err(error) => tracing::warn!("{origin}: {error}; retrying"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let first = first.expect("the loop ends with a pair");
        let resolver = Resolver::from_pem(&first.cert, &first.key, &origin)?;
        tracing::info!(%origin, "serving the shared certificate");
        let serving = resolver.clone();
        runtime.spawn(async move {
            let mut ticks = tokio::time::interval(SECRET_INTERVAL);
            loop {
                ticks.tick().await;
                match lifecycle.tick(SystemTime::now()).await {
                    Ok(tick) => {
                        if let Some(pair) = tick.serve {
                            match serving.replace(&pair.cert, &pair.key) {
                                Ok(()) => tracing::info!(%origin, "serving certificate reloaded"),
                                Err(error) => {
                                    tracing::error!("keeping the previous certificate: {error}")
                                }
                            }
                        }
                    }
                    Err(error) => tracing::warn!("{origin}: {error}; retrying"),
                }
            }
        });
        Ok(resolver)
    }
}

/// The self-made pair in `dir`, made or reused, said in the log.
fn self_made(dir: &std::path::Path, names: &[String]) -> anyhow::Result<Files> {
    let made = dir::ensure(dir, names)?;
    let what = match &made.outcome {
        Outcome::Created => "created a self-made CA and certificate".to_owned(),
        Outcome::Reused => "reusing the self-made certificate".to_owned(),
        Outcome::Reissued(why) => {
            format!("issued a new self-made certificate with the same CA ({why})")
        }
    };
    tracing::info!(ca = %made.ca.display(), "{what}; trust it with: curl --cacert {}", made.ca.display());
    Ok(Files {
        cert: made.cert,
        key: made.key,
    })
}

/// This replica's name in the Lease: the pod's name (`POD_NAME` from the
/// downward API, else the host name a pod gets).
fn identity() -> String {
    std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| format!("tollgate-{}", std::process::id()))
}
