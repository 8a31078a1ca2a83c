//! Certificates themselves: a CA, serving certificates it issues, and what
//! can be read back from their PEM (names, validity, issuer, fingerprint).

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SerialNumber,
};
use sha2::{Digest as _, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

/// Errors of making or reading certificates.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// rcgen could not build a certificate, or read a CA back.
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM text holds no parsable certificate.
    #[error("{what} is not a PEM certificate: {message}")]
    Unreadable {
        /// Which certificate.
        what: &'static str,
        /// What the parser said.
        message: String,
    },
}

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    /// The certificate.
    pub cert: String,
    /// Its private key (PKCS#8).
    pub key: String,
}

/// Makes a CA valid from `now` (less a minute of clock skew) for
/// `lifetime`. Each CA's name carries its creation time, so that a
/// certificate's issuer names exactly one of the CAs in a bundle.
///
/// # Errors
///
/// When rcgen fails.
pub fn new_ca(now: SystemTime, lifetime: Duration) -> Result<Pair, Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let since = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    params.distinguished_name.push(
        DnType::CommonName,
        format!(
            "Tollgate CA {}.{:09}",
            since.as_secs(),
            since.subsec_nanos()
        ),
    );
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params, now, lifetime);
    let cert = params.self_signed(&key)?;
    Ok(Pair {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// Issues a serving certificate for `names` (DNS names or IP addresses)
/// signed by `ca`.
///
/// # Errors
///
/// When the CA cannot be read back or rcgen fails.
pub fn issue(
    ca: &Pair,
    names: &[String],
    now: SystemTime,
    lifetime: Duration,
) -> Result<Pair, Error> {
    let issuer = Issuer::from_ca_cert_pem(&ca.cert, KeyPair::from_pem(&ca.key)?)?;
    let mut params = CertificateParams::new(names.to_vec())?;
    params
        .distinguished_name
        .push(DnType::CommonName, names.first().map_or("tollgate", |n| n));
    validity(&mut params, now, lifetime);
    // Two certificates issued in one second must still differ.
    let mut serial = [0u8; 16];
    serial.copy_from_slice(&Sha256::digest(format!("{now:?}{names:?}"))[..16]);
    serial[0] &= 0x7f;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Pair {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// Valid from a minute before `now` (clocks differ) for `lifetime`.
fn validity(params: &mut CertificateParams, now: SystemTime, lifetime: Duration) {
    params.not_before = (now - Duration::from_secs(60)).into();
    params.not_after = (now + lifetime).into();
}

/// What a certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// The issuer's name (DER), to find its CA in a bundle.
    pub issuer: Vec<u8>,
    /// The subject's name (DER).
    pub subject: Vec<u8>,
    /// DNS names and IP addresses it is valid for.
    pub names: Vec<String>,
    /// SHA-256 of the DER, hex: which certificate a replica serves.
    pub fingerprint: String,
}

impl Info {
    /// Reads the first certificate of `pem`; `what` names it in errors.
    ///
    /// # Errors
    ///
    /// No parsable certificate.
    pub fn read(pem: &str, what: &'static str) -> Result<Info, Error> {
        Ok(all(pem, what)?.remove(0))
    }

    /// When the certificate is due for renewal: `fraction` of its lifetime.
    pub fn renew_at(&self, fraction: f64) -> SystemTime {
        let lifetime = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_before + lifetime.mul_f64(fraction.clamp(0.0, 1.0))
    }

    /// Whether it names `name` (a DNS name, case-insensitive, or an IP).
    pub fn covers(&self, name: &str) -> bool {
        let wanted = normal_name(name);
        self.names.contains(&wanted)
    }
}

/// Every certificate of `pem` (a bundle), in order.
///
/// # Errors
///
/// A block does not parse, or there is none.
pub fn all(pem: &str, what: &'static str) -> Result<Vec<Info>, Error> {
    let unreadable = |message: String| Error::Unreadable { what, message };
    let mut found = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block.map_err(|e| unreadable(e.to_string()))?;
        let cert = block.parse_x509().map_err(|e| unreadable(e.to_string()))?;
        found.push(info(&cert, &block.contents));
    }
    if found.is_empty() {
        return Err(unreadable("no certificate in it".into()));
    }
    Ok(found)
}

fn info(cert: &X509Certificate<'_>, der: &[u8]) -> Info {
    let time = |t: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
    let names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(dns) => Some(dns.to_ascii_lowercase()),
                    GeneralName::IPAddress(bytes) => match bytes.len() {
                        4 => Some(IpAddr::from(<[u8; 4]>::try_from(*bytes).ok()?).to_string()),
                        16 => Some(IpAddr::from(<[u8; 16]>::try_from(*bytes).ok()?).to_string()),
                        _ => None,
                    },
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Info {
        not_before: time(cert.validity().not_before.timestamp()),
        not_after: time(cert.validity().not_after.timestamp()),
        issuer: cert.issuer().as_raw().to_vec(),
        subject: cert.subject().as_raw().to_vec(),
        names,
        fingerprint: hex::encode(Sha256::digest(der)),
    }
}

/// A name as [`Info::names`] holds it: DNS names lower-case, IPs canonical.
fn normal_name(name: &str) -> String {
    match name.parse::<IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => name.to_ascii_lowercase(),
    }
}

/// A Service, written `NAME.NAMESPACE` on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Its name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
}

impl std::str::FromStr for Service {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.split_once('.') {
            Some((name, namespace))
                if !name.is_empty() && !namespace.is_empty() && !namespace.contains('.') =>
            {
                Ok(Service {
                    name: name.to_owned(),
                    namespace: namespace.to_owned(),
                })
            }
            _ => Err(format!(
                "{text:?}: write the Service as NAME.NAMESPACE (e.g. tollgate.tollgate-system)"
            )),
        }
    }
}

impl Service {
    /// The DNS names it is reached by: `NAME.NAMESPACE.svc` and
    /// `NAME.NAMESPACE.svc.cluster.local`.
    pub fn names(&self) -> [String; 2] {
        let Service { name, namespace } = self;
        [
            format!("{name}.{namespace}.svc"),
            format!("{name}.{namespace}.svc.cluster.local"),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn a_served_certificate_names_its_ca_and_its_names() {
        let now = SystemTime::now();
        let ca = new_ca(now, 365 * DAY).unwrap();
        let names = vec![
            "tollgate.tollgate-system.svc".to_owned(),
            "127.0.0.1".into(),
        ];
        let served = issue(&ca, &names, now, 90 * DAY).unwrap();
        let ca_info = Info::read(&ca.cert, "CA").unwrap();
        let info = Info::read(&served.cert, "serving").unwrap();
        assert_eq!(info.issuer, ca_info.subject);
        assert!(info.covers("TOLLGATE.tollgate-system.svc"));
        assert!(info.covers("127.0.0.1"));
        assert!(!info.covers("other.svc"));
        let renew = info.renew_at(2.0 / 3.0);
        let lifetime = info.not_after.duration_since(info.not_before).unwrap();
        assert_eq!(
            renew.duration_since(info.not_before).unwrap().as_secs(),
            (lifetime.as_secs() * 2) / 3
        );
        // Another CA made at another instant has another name.
        let other = new_ca(now + Duration::from_millis(1), 365 * DAY).unwrap();
        assert_ne!(
            Info::read(&other.cert, "CA").unwrap().subject,
            ca_info.subject
        );
    }

    #[test]
    fn a_bundle_reads_as_every_certificate_and_garbage_is_an_error() {
        let now = SystemTime::now();
        let a = new_ca(now, DAY).unwrap();
        let b = new_ca(now + Duration::from_secs(1), DAY).unwrap();
        assert_eq!(
            all(&format!("{}{}", a.cert, b.cert), "bundle")
                .unwrap()
                .len(),
            2
        );
        let error = all("not a certificate", "ca.crt").unwrap_err().to_string();
        assert!(
            error.starts_with("ca.crt is not a PEM certificate"),
            "{error}"
        );
    }

    #[test]
    fn service_names_are_the_two_cluster_dns_names() {
        let service = |text: &str| text.parse::<Service>();
        assert_eq!(
            service("tollgate.tollgate-system").unwrap().names(),
            [
                "tollgate.tollgate-system.svc".to_owned(),
                "tollgate.tollgate-system.svc.cluster.local".to_owned()
            ]
        );
        for bad in ["tollgate", "a.b.c", ".ns", "name."] {
            assert!(service(bad).is_err(), "{bad}");
        }
    }
}
