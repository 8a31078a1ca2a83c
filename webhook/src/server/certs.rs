//! A self-made certificate authority and serving certificate, for running
//! without `--tls-cert`: written to the certificate directory under the names
//! a Kubernetes TLS Secret uses (`ca.crt`, `tls.crt`, `tls.key`) and reused on
//! the next start, so the CA that clients trust stays the same.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

use super::tls::Files;

/// Certificate generation errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The directory or a file could not be written.
    #[error("{path}: {source} (choose a writable --cert-dir)")]
    Io {
        /// The path.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// rcgen could not build a certificate.
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// The files of a self-made pair.
#[derive(Debug, Clone)]
pub struct SelfMade {
    /// The CA certificate clients should trust (`curl --cacert`, caBundle).
    pub ca: PathBuf,
    /// Serving certificate and key.
    pub files: Files,
    /// Whether they were made now (rather than reused).
    pub created: bool,
}

/// Names always in the serving certificate; `extra` adds the Service's DNS
/// names (`tollgate.tollgate-system.svc`).
const DEFAULT_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Reuses the pair in `dir`, or makes a CA and a serving certificate for
/// `localhost` and `extra` names.
///
/// # Errors
///
/// When the directory cannot be written or generation fails.
pub fn ensure(dir: &Path, extra: &[String]) -> Result<SelfMade, Error> {
    let ca = dir.join("ca.crt");
    let files = Files {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
    };
    if ca.is_file() && files.cert.is_file() && files.key.is_file() {
        return Ok(SelfMade {
            ca,
            files,
            created: false,
        });
    }
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;

    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Tollgate self-made CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut names: Vec<String> = DEFAULT_NAMES.iter().map(|s| s.to_string()).collect();
    names.extend(extra.iter().cloned());
    let mut params = CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "tollgate");
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;

    // The CA goes last: its presence tells watchers the pair is complete.
    replace(&files.key, key.serialize_pem().as_bytes(), 0o600).map_err(io(&files.key))?;
    replace(&files.cert, cert.pem().as_bytes(), 0o644).map_err(io(&files.cert))?;
    replace(&ca, ca_cert.pem().as_bytes(), 0o644).map_err(io(&ca))?;
    Ok(SelfMade {
        ca,
        files,
        created: true,
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

    #[test]
    fn makes_a_pair_once_and_reuses_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure(dir.path(), &["tollgate.default.svc".into()]).unwrap();
        assert!(first.created);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&first.files.key)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "the key is readable by its owner only");
        }
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 3, "no temporary file is left: {names:?}");
        let ca = std::fs::read(&first.ca).unwrap();
        let second = ensure(dir.path(), &[]).unwrap();
        assert!(!second.created);
        assert_eq!(std::fs::read(&second.ca).unwrap(), ca);
        // The pair is usable by rustls.
        super::super::tls::server_config(second.files, None).unwrap();
    }
}
