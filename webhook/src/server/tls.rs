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
    let read = |path: &Path| {
        std::fs::read(path).map_err(|e| Error::Pem {
            path: path.to_owned(),
            message: e.to_string(),
        })
    };
    certified(&read(&files.cert)?, &read(&files.key)?, files)
}

/// The pair of PEM texts `cert` and `key`; `origin` names them in errors.
fn certified(cert: &[u8], key: &[u8], origin: &Files) -> Result<Arc<CertifiedKey>, Error> {
    let pem_error = |path: &Path, message: String| Error::Pem {
        path: path.to_owned(),
        message,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<_, _>>()
        .map_err(|e| pem_error(&origin.cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(pem_error(&origin.cert, "no certificate in it".into()));
    }
    let key =
        PrivateKeyDer::from_pem_slice(key).map_err(|e| pem_error(&origin.key, e.to_string()))?;
    let key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| pem_error(&origin.key, format!("unsupported private key: {e}")))?;
    let certified = CertifiedKey::new(chain, key);
    certified
        .keys_match()
        .map_err(|e| pem_error(&origin.key, format!("does not match the certificate: {e}")))?;
    Ok(Arc::new(certified))
}

/// Serves the current certificate; swapped atomically on reload, so
/// handshakes never wait on a lock.
#[derive(Debug)]
pub struct Resolver {
    current: ArcSwap<CertifiedKey>,
    /// Where it was read from: the files to watch, or the names a pair
    /// given in memory goes by in errors.
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
    /// Serves the pair in `files`.
    ///
    /// # Errors
    ///
    /// Unreadable or mismatched certificate and key.
    pub fn from_files(files: Files) -> Result<Arc<Self>, Error> {
        Ok(Arc::new(Resolver {
            current: ArcSwap::new(load(&files)?),
            files,
        }))
    }

    /// Serves a pair held in memory (from a Secret); `origin` names it.
    ///
    /// # Errors
    ///
    /// Unparsable or mismatched certificate and key.
    pub fn from_pem(cert: &str, key: &str, origin: &str) -> Result<Arc<Self>, Error> {
        let files = Files {
            cert: PathBuf::from(format!("{origin}: tls.crt")),
            key: PathBuf::from(format!("{origin}: tls.key")),
        };
        Ok(Arc::new(Resolver {
            current: ArcSwap::new(certified(cert.as_bytes(), key.as_bytes(), &files)?),
            files,
        }))
    }

    /// Serves another pair from the next handshake on; connections already
    /// open keep theirs.
    ///
    /// # Errors
    ///
    /// Unparsable or mismatched: the previous pair stays.
    pub fn replace(&self, cert: &str, key: &str) -> Result<(), Error> {
        let key = certified(cert.as_bytes(), key.as_bytes(), &self.files)?;
        self.current.store(key);
        Ok(())
    }

    /// Checks the files every few seconds (following symbolic links, as a
    /// mounted Secret's `..data` swap makes them) and swaps in a changed
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
            match load(&self.files) {
                Ok(key) => {
                    self.current.store(key);
                    seen = now;
                    tracing::info!(cert = %self.files.cert.display(), "serving certificate reloaded");
                }
                // Tried again next time: a pair caught between its two
                // writes matches once both are in place.
                Err(error) => tracing::error!("keeping the previous certificate: {error}"),
            }
        }
    }
}

/// Builds the rustls configuration serving `resolver`'s pair (HTTP/2 and
/// HTTP/1.1 by ALPN).
///
/// # Errors
///
/// Unreadable or mismatched certificate and key, or an unusable client CA.
pub fn server_config(
    resolver: Arc<Resolver>,
    client_ca: Option<&Path>,
) -> Result<rustls::ServerConfig, Error> {
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
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{ServerName, UnixTime};

    use super::*;

    /// Whether a client trusting `ca` accepts `resolver`'s pair for `name`.
    fn accepted(ca: &str, resolver: &Resolver, name: &str) -> bool {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider())
                .build()
                .unwrap();
        let served = resolver.current.load_full();
        verifier
            .verify_server_cert(
                &served.cert[0],
                &[],
                &ServerName::try_from(name.to_owned()).unwrap(),
                &[],
                UnixTime::now(),
            )
            .is_ok()
    }

    #[test]
    fn a_self_made_pair_is_served_and_replaced_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let made =
            tollgate_certs::dir::ensure(dir.path(), &["tollgate.tollgate-system.svc".into()])
                .unwrap();
        let resolver = Resolver::from_files(Files {
            cert: made.cert.clone(),
            key: made.key.clone(),
        })
        .unwrap();
        server_config(resolver.clone(), None).unwrap();
        let ca = std::fs::read_to_string(&made.ca).unwrap();
        assert!(accepted(&ca, &resolver, "tollgate.tollgate-system.svc"));
        assert!(!accepted(&ca, &resolver, "elsewhere.example"));

        let now = std::time::SystemTime::now();
        let other_ca = tollgate_certs::authority::new_ca(now, Duration::from_secs(3600)).unwrap();
        let other = tollgate_certs::authority::issue(
            &other_ca,
            &["elsewhere.example".into()],
            now,
            Duration::from_secs(3600),
        )
        .unwrap();
        let error = resolver.replace(&other.cert, &made_key(&made)).unwrap_err();
        assert!(
            error.to_string().contains("does not match the certificate"),
            "{error}"
        );
        assert!(
            accepted(&ca, &resolver, "tollgate.tollgate-system.svc"),
            "kept"
        );
        resolver.replace(&other.cert, &other.key).unwrap();
        assert!(accepted(&other_ca.cert, &resolver, "elsewhere.example"));
    }

    fn made_key(made: &tollgate_certs::dir::SelfMade) -> String {
        std::fs::read_to_string(&made.key).unwrap()
    }
}
