//! Sealing decision-log lines with a secret key.
//!
//! The hash chain alone shows an edit only to someone who trusts that the
//! chain after it was not recomputed, and it never covers the last line.
//! With a key, every line also carries `mac`, an HMAC-SHA256 of the line
//! without that field: whoever can rewrite the file but lacks the key can
//! neither forge a line nor re-chain after an edit, and the last line is
//! covered too. Cutting lines off the end stays invisible (see
//! docs/audit.md).

use std::fmt;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Fewest key bytes accepted: HMAC-SHA256's output size.
const MIN_BYTES: usize = 32;

/// `,"mac":"` + 64 hex digits + `"}`: how a sealed line ends.
const FIELD: &[u8] = b",\"mac\":\"";
const SEALED_TAIL: usize = FIELD.len() + 64 + 2;

/// A sealing key (its bytes are never printed).
#[derive(Clone)]
pub struct Key(Vec<u8>);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(…)")
    }
}

/// A key file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Unreadable.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// Too short to be a secret.
    #[error(
        "key file {path}: {bytes} bytes; a key needs at least {MIN_BYTES} (e.g. `head -c 32 /dev/urandom | base64 > {path}`)"
    )]
    Short {
        /// The file.
        path: PathBuf,
        /// Its length after trailing whitespace.
        bytes: usize,
    },
}

impl Key {
    /// Reads a key file; trailing whitespace (a newline from `echo`, a
    /// mounted Secret) is not part of the key.
    ///
    /// # Errors
    ///
    /// When the file cannot be read or holds fewer than 32 bytes.
    pub fn read(path: &Path) -> Result<Key, Error> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        let key = bytes.trim_ascii_end();
        if key.len() < MIN_BYTES {
            return Err(Error::Short {
                path: path.to_owned(),
                bytes: key.len(),
            });
        }
        Ok(Key(key.to_vec()))
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::new_from_slice(&self.0).expect("HMAC takes keys of any length")
    }

    /// Adds `"mac"` as the last field of `line`, a JSON object's text.
    pub fn seal(&self, line: &mut Vec<u8>) {
        debug_assert_eq!(line.last(), Some(&b'}'));
        let mut mac = self.mac();
        mac.update(line);
        let tag = hex::encode(mac.finalize().into_bytes());
        line.pop();
        line.extend_from_slice(FIELD);
        line.extend_from_slice(tag.as_bytes());
        line.extend_from_slice(b"\"}");
    }
}

/// Checks the seal of one line as read from the log against `keys` (more
/// than one when the key was rotated during the log's life).
///
/// # Errors
///
/// Why the line is not one these keys sealed.
pub fn check(keys: &[Key], line: &str) -> Result<(), String> {
    let bytes = line.as_bytes();
    let split = bytes.len().checked_sub(SEALED_TAIL);
    let Some((body, tail)) = split.map(|at| bytes.split_at(at)) else {
        return Err(UNSEALED.to_owned());
    };
    let tag = tail
        .strip_prefix(FIELD)
        .and_then(|t| t.strip_suffix(b"\"}"))
        .and_then(|hex_tag| hex::decode(hex_tag).ok())
        .ok_or_else(|| UNSEALED.to_owned())?;
    let sealed_by = |key: &Key| {
        let mut mac = key.mac();
        mac.update(body);
        mac.update(b"}");
        mac.verify_slice(&tag).is_ok()
    };
    if keys.iter().any(sealed_by) {
        Ok(())
    } else {
        Err(
            "the seal does not match: this line was edited (or a key not given sealed it)"
                .to_owned(),
        )
    }
}

const UNSEALED: &str =
    "the line carries no seal: it was inserted or edited (or written without --decision-log-key)";

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> Key {
        Key(vec![byte; 32])
    }

    #[test]
    fn a_sealed_line_checks_and_stays_json() {
        let mut line = br#"{"seq":0,"allowed":true,"prev":"ab"}"#.to_vec();
        key(1).seal(&mut line);
        let text = String::from_utf8(line).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["mac"].as_str().unwrap().len(), 64);
        assert_eq!(check(&[key(1)], &text), Ok(()));
        assert_eq!(check(&[key(2), key(1)], &text), Ok(()), "a rotated key");
    }

    #[test]
    fn edits_other_keys_and_unsealed_lines_are_refused() {
        let mut line = br#"{"seq":0,"allowed":false,"prev":"ab"}"#.to_vec();
        key(1).seal(&mut line);
        let text = String::from_utf8(line).unwrap();
        let edited = text.replace("false", "true ");
        assert!(
            check(&[key(1)], &edited)
                .unwrap_err()
                .contains("was edited")
        );
        assert!(
            check(&[key(2)], &text)
                .unwrap_err()
                .contains("a key not given")
        );
        let plain = r#"{"seq":0,"allowed":false,"prev":"ab"}"#;
        assert!(check(&[key(1)], plain).unwrap_err().contains("no seal"));
        assert!(check(&[key(1)], "}").unwrap_err().contains("no seal"));
    }

    #[test]
    fn short_keys_are_refused_and_trailing_newlines_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "too short\n").unwrap();
        let error = Key::read(&path).unwrap_err().to_string();
        assert!(
            error.contains("9 bytes; a key needs at least 32"),
            "{error}"
        );
        std::fs::write(&path, format!("{}\n", "k".repeat(44))).unwrap();
        let with_newline = Key::read(&path).unwrap();
        std::fs::write(&path, "k".repeat(44)).unwrap();
        assert_eq!(with_newline.0, Key::read(&path).unwrap().0);
    }
}
