//! A self-made certificate authority and serving certificate, for running
//! without `--tls-cert`: written to the certificate directory under the names
//! a Kubernetes TLS Secret uses (`ca.crt`, `tls.crt`, `tls.key`, plus the
//! CA's own key `ca.key`) and reused on the next start, so the CA that
//! clients trust stays the same.
//!
//! The serving certificate is reused only while it covers every name asked
//! for (`localhost`, the loopback addresses and each `--tls-san`) and is
//! more than [`RENEW_BEFORE`] from expiry; otherwise it is issued again by
//! the same CA, so clients that trust the CA keep trusting the server.
//! Rotating the CA itself, and certificates for a cluster, are the job of
//! `tollgate certs` (see the operations guide).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use x509_parser::extensions::GeneralName;

use super::tls::Files;

/// How long the self-made CA is valid.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// How long a serving certificate is valid.
const SERVING_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// A serving certificate this close to expiry is issued again at start.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// Certificate generation errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The directory or a file could not be read or written.
    #[error("{path}: {source} (choose a writable --cert-dir)")]
    Io {
        /// The path.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// rcgen could not build a certificate, or read the CA back.
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// What became of the serving certificate at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new CA and certificate were made.
    Created,
    /// The certificate in the directory covers every name: kept.
    Reused,
    /// The same CA issued a new certificate, for the reason given.
    Reissued(String),
}

/// The files of a self-made pair.
#[derive(Debug, Clone)]
pub struct SelfMade {
    /// The CA certificate clients should trust (`curl --cacert`, caBundle).
    pub ca: PathBuf,
    /// Serving certificate and key.
    pub files: Files,
    /// Whether they were made, kept or issued again.
    pub outcome: Outcome,
}

/// Names always in the serving certificate; `extra` adds the Service's DNS
/// names (`tollgate.tollgate-system.svc`).
const DEFAULT_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Reuses the pair in `dir` if it serves `localhost` and the `extra` names,
/// issues a new serving certificate with the kept CA if not, or makes a CA
/// and a serving certificate.
///
/// # Errors
///
/// When the directory cannot be written or generation fails.
pub fn ensure(dir: &Path, extra: &[String]) -> Result<SelfMade, Error> {
    let ca = dir.join("ca.crt");
    let ca_key = dir.join("ca.key");
    let files = Files {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
    };
    let mut names: Vec<String> = DEFAULT_NAMES.iter().map(|s| s.to_string()).collect();
    names.extend(extra.iter().cloned());
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;

    let kept = match (read(&ca)?, read(&ca_key)?) {
        (Some(cert), Some(key)) => Some(Issuer::from_ca_cert_pem(&cert, KeyPair::from_pem(&key)?)?),
        _ => None,
    };
    // A new CA's certificate is written last: its presence says the
    // directory is complete.
    let mut new_ca = None;
    let (issuer, outcome) = match kept {
        Some(issuer) => {
            let problem = match read(&files.cert)? {
                Some(pem) if files.key.is_file() => problem(&pem, &names),
                _ => Some("no serving certificate".to_owned()),
            };
            match problem {
                None => {
                    return Ok(SelfMade {
                        ca,
                        files,
                        outcome: Outcome::Reused,
                    });
                }
                Some(why) => (issuer, Outcome::Reissued(why)),
            }
        }
        None => {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(Vec::new())?;
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params
                .distinguished_name
                .push(DnType::CommonName, "Tollgate self-made CA");
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            validity(&mut params, CA_LIFETIME);
            new_ca = Some(params.self_signed(&key)?.pem());
            replace(&ca_key, key.serialize_pem().as_bytes(), 0o600).map_err(io(&ca_key))?;
            (Issuer::new(params, key), Outcome::Created)
        }
    };

    let mut params = CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "tollgate");
    validity(&mut params, SERVING_LIFETIME);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    // The key first: a reader that sees the new certificate finds its key.
    replace(&files.key, key.serialize_pem().as_bytes(), 0o600).map_err(io(&files.key))?;
    replace(&files.cert, cert.pem().as_bytes(), 0o644).map_err(io(&files.cert))?;
    if let Some(pem) = new_ca {
        replace(&ca, pem.as_bytes(), 0o644).map_err(io(&ca))?;
    }
    Ok(SelfMade { ca, files, outcome })
}

/// Valid from a minute ago (clocks differ) for `lifetime`.
fn validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = SystemTime::now();
    params.not_before = (now - Duration::from_secs(60)).into();
    params.not_after = (now + lifetime).into();
}

/// A file's text, or `None` when it does not exist.
fn read(path: &Path) -> Result<Option<String>, Error> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Why a serving certificate (PEM) cannot be served for `names`, if it
/// cannot.
fn problem(pem: &str, names: &[String]) -> Option<String> {
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(pem.as_bytes()) else {
        return Some("the serving certificate is not PEM".into());
    };
    let Ok(cert) = pem.parse_x509() else {
        return Some("the serving certificate does not parse".into());
    };
    let expires = cert.validity().not_after.timestamp();
    let renew_at = SystemTime::now() + RENEW_BEFORE;
    let renew_at = renew_at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if expires < renew_at {
        return Some(format!(
            "the serving certificate expires within {} days",
            RENEW_BEFORE.as_secs() / 86_400
        ));
    }
    let sans: Vec<&GeneralName<'_>> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| san.value.general_names.iter().collect())
        .unwrap_or_default();
    let covered = |name: &str| {
        sans.iter().any(|san| match (san, name.parse::<IpAddr>()) {
            (GeneralName::IPAddress(bytes), Ok(ip)) => match ip {
                IpAddr::V4(v4) => *bytes == v4.octets(),
                IpAddr::V6(v6) => *bytes == v6.octets(),
            },
            (GeneralName::DNSName(dns), Err(_)) => dns.eq_ignore_ascii_case(name),
            _ => false,
        })
    };
    let missing: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| !covered(n))
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "the serving certificate does not name {}",
            missing.join(", ")
        )
    })
}

/// Writes `path` whole or not at all: a temporary sibling renamed into
/// place, so a client reading the CA or a restart after a crash never sees a
/// half-written file.
fn replace(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(&temporary)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sans(path: &Path) -> Vec<String> {
        let pem = std::fs::read(path).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
        let cert = pem.parse_x509().unwrap();
        cert.subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect()
    }

    #[test]
    fn makes_a_pair_once_and_reuses_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure(dir.path(), &["tollgate.default.svc".into()]).unwrap();
        assert_eq!(first.outcome, Outcome::Created);
        #[cfg(unix)]
        for key in [&first.files.key, &dir.path().join("ca.key")] {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "keys are readable by their owner only");
        }
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 4, "no temporary file is left: {names:?}");
        let ca = std::fs::read(&first.ca).unwrap();
        let cert = std::fs::read(&first.files.cert).unwrap();
        let second = ensure(dir.path(), &["tollgate.default.svc".into()]).unwrap();
        assert_eq!(second.outcome, Outcome::Reused);
        assert_eq!(std::fs::read(&second.ca).unwrap(), ca);
        assert_eq!(std::fs::read(&second.files.cert).unwrap(), cert);
        // The pair is usable by rustls.
        super::super::tls::server_config(second.files, None).unwrap();
    }

    #[test]
    fn a_new_name_gets_a_new_certificate_from_the_same_ca() {
        use rustls::client::danger::ServerCertVerifier;
        let dir = tempfile::tempdir().unwrap();
        let first = ensure(dir.path(), &[]).unwrap();
        let ca = std::fs::read(&first.ca).unwrap();
        let second = ensure(dir.path(), &["tollgate.tollgate-system.svc".into()]).unwrap();
        assert_eq!(
            second.outcome,
            Outcome::Reissued(
                "the serving certificate does not name tollgate.tollgate-system.svc".into()
            )
        );
        assert_eq!(std::fs::read(&second.ca).unwrap(), ca, "the CA is kept");
        assert!(
            sans(&second.files.cert).contains(&"DNSName(tollgate.tollgate-system.svc)".to_owned()),
            "{:?}",
            sans(&second.files.cert)
        );
        // Issued by the kept CA: a client trusting it accepts the server.
        let pem = std::fs::read(&second.ca).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
            roots.add(cert.unwrap()).unwrap();
        }
        let chain: Vec<_> = rustls::pki_types::pem::PemObject::pem_file_iter(&second.files.cert)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots.into(),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        verifier
            .verify_server_cert(
                &chain[0],
                &[],
                &rustls::pki_types::ServerName::try_from("tollgate.tollgate-system.svc").unwrap(),
                &[],
                rustls::pki_types::UnixTime::now(),
            )
            .unwrap();
    }

    #[test]
    fn a_pair_without_the_ca_key_is_replaced_by_a_new_ca() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure(dir.path(), &[]).unwrap();
        let ca = std::fs::read(&first.ca).unwrap();
        std::fs::remove_file(dir.path().join("ca.key")).unwrap();
        let second = ensure(dir.path(), &[]).unwrap();
        assert_eq!(second.outcome, Outcome::Created);
        assert_ne!(std::fs::read(&second.ca).unwrap(), ca);
    }
}
