//! A self-made CA and serving certificate in a local directory, for running
//! outside a cluster (or with a volume of its own): written under the names
//! a Kubernetes TLS Secret uses (`ca.crt`, `tls.crt`, `tls.key`, plus the
//! CA's own key `ca.key`) and reused on the next start, so the CA that
//! clients trust stays the same.
//!
//! The serving certificate is reused only while it covers every name asked
//! for (`localhost`, the loopback addresses and each extra name) and is
//! more than [`RENEW_BEFORE`] from expiry; otherwise the same CA issues it
//! again, so clients that trust the CA keep trusting the server. For a
//! cluster, the [`lifecycle`](crate::lifecycle) keeps one pair in a Secret.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::authority::{self, Info, Pair};

/// How long the self-made CA is valid.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// How long a serving certificate is valid.
const SERVING_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// A serving certificate this close to expiry is issued again at start.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// Names always in the serving certificate.
const DEFAULT_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Errors of the directory's pair.
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
    /// A certificate could not be made or read.
    #[error(transparent)]
    Authority(#[from] authority::Error),
}

/// What became of the serving certificate.
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
    /// The serving certificate.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// Whether they were made, kept or issued again.
    pub outcome: Outcome,
}

/// Reuses the pair in `dir` if it serves `localhost` and the `extra` names,
/// issues a new serving certificate with the kept CA if not, or makes a CA
/// and a serving certificate.
///
/// # Errors
///
/// When the directory cannot be written or generation fails.
pub fn ensure(dir: &Path, extra: &[String]) -> Result<SelfMade, Error> {
    let made = SelfMade {
        ca: dir.join("ca.crt"),
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
        outcome: Outcome::Reused,
    };
    let ca_key = dir.join("ca.key");
    let mut names: Vec<String> = DEFAULT_NAMES.iter().map(|s| s.to_string()).collect();
    names.extend(extra.iter().cloned());
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let now = SystemTime::now();

    let kept = match (read(&made.ca)?, read(&ca_key)?) {
        (Some(cert), Some(key)) => Some(Pair { cert, key }),
        _ => None,
    };
    let (ca, outcome) = match kept {
        Some(ca) => {
            let problem = match read(&made.cert)? {
                Some(pem) if made.key.is_file() => problem(&pem, &names, now),
                _ => Some("no serving certificate".to_owned()),
            };
            match problem {
                None => return Ok(made),
                Some(why) => (ca, Outcome::Reissued(why)),
            }
        }
        None => {
            let ca = authority::new_ca(now, CA_LIFETIME)?;
            write_file(&ca_key, &ca.key, 0o600)?;
            (ca, Outcome::Created)
        }
    };
    let served = authority::issue(&ca, &names, now, SERVING_LIFETIME)?;
    // The key first: a reader that sees the new certificate finds its key.
    write_file(&made.key, &served.key, 0o600)?;
    write_file(&made.cert, &served.cert, 0o644)?;
    // A new CA's certificate is written last: its presence says the
    // directory is complete.
    if outcome == Outcome::Created {
        write_file(&made.ca, &ca.cert, 0o644)?;
    }
    Ok(SelfMade { outcome, ..made })
}

/// Writes `pair` and the CA `bundle` to `dir` as `tls.crt`, `tls.key` and
/// `ca.crt` (what `tollgate certs --out` and a mounted Secret hold).
///
/// # Errors
///
/// When a file cannot be written.
pub fn write_pair(dir: &Path, pair: &Pair, bundle: &str) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    write_file(&dir.join("tls.key"), &pair.key, 0o600)?;
    write_file(&dir.join("tls.crt"), &pair.cert, 0o644)?;
    write_file(&dir.join("ca.crt"), bundle, 0o644)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::Io { path, source }
}

/// A file's text, or `None` when it does not exist.
fn read(path: &Path) -> Result<Option<String>, Error> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(io(path)(source)),
    }
}

/// Why a serving certificate (PEM) cannot be served for `names`, if it
/// cannot.
fn problem(pem: &str, names: &[String], now: SystemTime) -> Option<String> {
    let info = match Info::read(pem, "the serving certificate") {
        Ok(info) => info,
        Err(error) => return Some(error.to_string()),
    };
    if info.not_after < now + RENEW_BEFORE {
        return Some(format!(
            "the serving certificate expires within {} days",
            RENEW_BEFORE.as_secs() / 86_400
        ));
    }
    let missing: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| !info.covers(n))
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "the serving certificate does not name {}",
            missing.join(", ")
        )
    })
}

/// Writes `path` whole or not at all, readable as `mode` says: a temporary sibling renamed into
/// place, so a client reading the CA, a server reloading its certificate or
/// a restart after a crash never sees a half-written file.
pub fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), Error> {
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
    let written = options.open(&temporary).and_then(|mut file| {
        file.write_all(contents.as_bytes())?;
        file.sync_all()
    });
    written
        .and_then(|()| std::fs::rename(&temporary, path))
        .map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(path: &Path) -> Vec<String> {
        Info::read(&std::fs::read_to_string(path).unwrap(), "test")
            .unwrap()
            .names
    }

    #[test]
    fn makes_a_pair_once_and_reuses_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure(dir.path(), &["tollgate.default.svc".into()]).unwrap();
        assert_eq!(first.outcome, Outcome::Created);
        #[cfg(unix)]
        for key in [&first.key, &dir.path().join("ca.key")] {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "keys are readable by their owner only");
        }
        let files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(files.len(), 4, "no temporary file is left: {files:?}");
        let ca = std::fs::read(&first.ca).unwrap();
        let cert = std::fs::read(&first.cert).unwrap();
        let second = ensure(dir.path(), &["tollgate.default.svc".into()]).unwrap();
        assert_eq!(second.outcome, Outcome::Reused);
        assert_eq!(std::fs::read(&second.ca).unwrap(), ca);
        assert_eq!(std::fs::read(&second.cert).unwrap(), cert);
    }

    #[test]
    fn a_new_name_gets_a_new_certificate_from_the_same_ca() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure(dir.path(), &[]).unwrap();
        let ca = std::fs::read_to_string(&first.ca).unwrap();
        let second = ensure(dir.path(), &["tollgate.tollgate-system.svc".into()]).unwrap();
        assert_eq!(
            second.outcome,
            Outcome::Reissued(
                "the serving certificate does not name tollgate.tollgate-system.svc".into()
            )
        );
        assert_eq!(
            std::fs::read_to_string(&second.ca).unwrap(),
            ca,
            "the CA is kept"
        );
        assert!(names(&second.cert).contains(&"tollgate.tollgate-system.svc".to_owned()));
        let served = Info::read(&std::fs::read_to_string(&second.cert).unwrap(), "t").unwrap();
        assert_eq!(served.issuer, Info::read(&ca, "ca").unwrap().subject);
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
