//! `tollgate certs`: a CA and serving certificate for the webhook's Service,
//! written as files and as the Secret `serve --certs self-managed` keeps
//! (for users who manage the Secret themselves).

use std::path::PathBuf;
use std::time::SystemTime;

use tollgate_certs::authority::{self, Service};
use tollgate_certs::{dir, lifecycle};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The webhook's Service, NAME.NAMESPACE: the certificate names
    /// NAME.NAMESPACE.svc and NAME.NAMESPACE.svc.cluster.local.
    #[arg(long, value_name = "NAME.NAMESPACE")]
    service: Service,
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
    let mut names = args.service.names().to_vec();
    names.extend(args.tls_sans.iter().cloned());
    let namespace = &args.service.namespace;
    let now = SystemTime::now();
    let ca = authority::new_ca(now, args.lifetimes.ca_lifetime)?;
    let serving = authority::issue(&ca, &names, now, args.lifetimes.cert_lifetime)?;
    dir::write_pair(&args.out, &serving, &ca.cert)?;
    // Keys (and the manifest that holds them) are for their owner only.
    dir::write_file(&args.out.join("ca.key"), &ca.key, 0o600)?;
    let mut secret = lifecycle::secret(&args.cert_secret, &ca.cert, &ca.key, &serving);
    secret.metadata.namespace = Some(namespace.to_owned());
    let manifest = serde_yaml::to_string(&lifecycle::to_json(&secret))?;
    dir::write_file(&args.out.join("secret.yaml"), &manifest, 0o600)?;
    println!(
        "wrote {dir}/ca.crt, ca.key, tls.crt, tls.key and secret.yaml (Secret {namespace}/{secret}) for {names}",
        dir = args.out.display(),
        secret = args.cert_secret,
        names = names.join(", ")
    );
    Ok(())
}
