//! TLS with rustls: the serving certificate, reloaded from disk when its
//! files change (cert-manager and Secret updates rotate it in place), and
//! optional client-certificate authentication of the apiserver.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;

/// TLS errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration refused: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client CA bundle is unusable.
    #[error("client CA {path}: {message}")]
    ClientCa {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
}

/// Where the serving certificate and key live.
#[derive(Debug, Clone)]
pub struct Files {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// How often the certificate files are checked for changes.
const RELOAD_INTERVAL: Duration = Duration::from_secs(10);

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load(files: &Files) -> Result<Arc<CertifiedKey>, Error> {
    let pem_error = |path: &Path, message: String| Error::Pem {
        path: path.to_owned(),
        message,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| pem_error(&files.cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem_error(&files.cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(pem_error(&files.cert, "no certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| pem_error(&files.key, e.to_string()))?;
    let key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| pem_error(&files.key, format!("unsupported private key: {e}")))?;
    let certified = CertifiedKey::new(chain, key);
    certified
        .keys_match()
        .map_err(|e| pem_error(&files.key, format!("does not match the certificate: {e}")))?;
    Ok(Arc::new(certified))
}

/// Serves the current certificate; swapped atomically on reload, so
/// handshakes never wait on a lock.
#[derive(Debug)]
pub struct Resolver {
    current: ArcSwap<CertifiedKey>,
    files: Files,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn modified(files: &Files) -> Option<(SystemTime, SystemTime)> {
    let time = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((time(&files.cert)?, time(&files.key)?))
}

impl Resolver {
    /// Checks the files every few seconds and swaps in a changed
    /// certificate. A broken new pair is logged and the old one kept.
    pub async fn watch(self: Arc<Self>) {
        let mut seen = modified(&self.files);
        let mut ticks = tokio::time::interval(RELOAD_INTERVAL);
        loop {
            ticks.tick().await;
            let now = modified(&self.files);
            if now == seen {
                continue;
            }
            seen = now;
            match load(&self.files) {
                Ok(key) => {
                    self.current.store(key);
                    tracing::info!(cert = %self.files.cert.display(), "serving certificate reloaded");
                }
                Err(error) => tracing::error!("keeping the previous certificate: {error}"),
            }
        }
    }
}

/// Builds the rustls configuration (HTTP/2 and HTTP/1.1 by ALPN).
///
/// # Errors
///
/// Unreadable or mismatched certificate and key, or an unusable client CA.
pub fn server_config(
    files: Files,
    client_ca: Option<&Path>,
) -> Result<(rustls::ServerConfig, Arc<Resolver>), Error> {
    let resolver = Arc::new(Resolver {
        current: ArcSwap::new(load(&files)?),
        files,
    });
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let ca_error = |message: String| Error::ClientCa {
                path: path.to_owned(),
                message,
            };
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| ca_error(e.to_string()))? {
                roots
                    .add(cert.map_err(|e| ca_error(e.to_string()))?)
                    .map_err(|e| ca_error(e.to_string()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| ca_error(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((config, resolver))
}
