//! `tollgate certs`: a CA and serving certificate for the webhook's Service,
//! written as files and as the Secret `serve --certs self-managed` keeps
//! (for users who manage the Secret themselves).

use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::Context as _;
use tollgate_certs::{authority, dir, lifecycle};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The webhook's Service, NAME.NAMESPACE: the certificate names
    /// NAME.NAMESPACE.svc and NAME.NAMESPACE.svc.cluster.local.
    #[arg(long, value_name = "NAME.NAMESPACE")]
    service: String,
    /// More names for the certificate (DNS names or IPs). May repeat.
    #[arg(long = "tls-san")]
    tls_sans: Vec<String>,
    /// Where to write ca.crt, ca.key, tls.crt, tls.key and secret.yaml.
    #[arg(long)]
    out: PathBuf,
    /// Name of the Secret in secret.yaml.
    #[arg(long, default_value = "tollgate-certs")]
    cert_secret: String,
    #[command(flatten)]
    lifetimes: super::serving::Lifetimes,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut names = authority::service_names(&args.service)
        .map_err(anyhow::Error::msg)?
        .to_vec();
    names.extend(args.tls_sans.iter().cloned());
    let (_, namespace) = args.service.split_once('.').unwrap_or_default();
    let now = SystemTime::now();
    let ca = authority::new_ca(now, args.lifetimes.ca_lifetime)?;
    let serving = authority::issue(&ca, &names, now, args.lifetimes.cert_lifetime)?;
    dir::write_pair(&args.out, &serving, &ca.cert)?;
    let ca_key = args.out.join("ca.key");
    std::fs::write(&ca_key, &ca.key).with_context(|| format!("writing {}", ca_key.display()))?;
    restrict(&ca_key)?;
    let mut secret = lifecycle::secret(&args.cert_secret, &ca.cert, &ca.key, &serving);
    secret.metadata.namespace = Some(namespace.to_owned());
    let manifest = args.out.join("secret.yaml");
    std::fs::write(
        &manifest,
        serde_yaml::to_string(&lifecycle::to_json(&secret))?,
    )
    .with_context(|| format!("writing {}", manifest.display()))?;
    restrict(&manifest)?;
    println!(
        "wrote {dir}/ca.crt, ca.key, tls.crt, tls.key and secret.yaml (Secret {namespace}/{secret}) for {names}",
        dir = args.out.display(),
        secret = args.cert_secret,
        names = names.join(", ")
    );
    Ok(())
}

/// Keys are for their owner only.
fn restrict(path: &std::path::Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting {}", path.display()))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}
