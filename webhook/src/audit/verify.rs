//! `tollgate audit verify`: checks a decision log's hash chain across its
//! files (and, given the key, every line's seal) and names the first line
//! that was edited, removed, inserted or reordered.

use std::collections::HashMap;
use std::fmt;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use super::log::Line;
use super::seal::{self, Key};

/// An intact chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intact {
    /// Lines checked.
    pub lines: u64,
    /// Files read.
    pub files: usize,
    /// `seq` of the first and last line.
    pub seq: Option<(u64, u64)>,
    /// Lines that carry a seal (all of them were checked when a key was
    /// given).
    pub sealed: u64,
}

/// Where the chain breaks, and the likeliest cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// The file.
    pub file: PathBuf,
    /// The line number in it, from 1.
    pub line: u64,
    /// What is wrong there.
    pub reason: String,
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.reason)
    }
}

/// Checks the chain through `files`, oldest first, and with `keys` every
/// line's seal. A file given alone that has rotated files beside it
/// (`FILE.1`, `FILE.2`, …) is checked after them.
///
/// # Errors
///
/// The first break, or an unreadable file.
pub fn verify(files: &[PathBuf], keys: &[Key]) -> Result<Intact, Broken> {
    let files: Vec<PathBuf> = match files {
        [only] => {
            let mut all = super::log::rotated(only);
            all.push(only.clone());
            all
        }
        many => many.to_vec(),
    };
    let mut lines = Vec::new();
    for file in &files {
        let opened = std::fs::File::open(file).map_err(|e| Broken {
            file: file.clone(),
            line: 0,
            reason: format!("cannot read: {e}"),
        })?;
        read(file, std::io::BufReader::new(opened), keys, &mut lines)?;
    }
    chain(&lines, files.len())
}

/// Checks one log given as a reader (`file` names it in the answer).
///
/// # Errors
///
/// The first break, or a read error.
pub fn verify_reader(file: &Path, reader: impl BufRead, keys: &[Key]) -> Result<Intact, Broken> {
    let mut lines = Vec::new();
    read(file, reader, keys, &mut lines)?;
    chain(&lines, 1)
}

/// Checks the chain through `lines`, read from `files` files.
fn chain(lines: &[Read], files: usize) -> Result<Intact, Broken> {
    // Every seq and how often it occurs, to tell a removed line from a moved
    // or inserted one.
    let mut occurrences: HashMap<u64, u32> = HashMap::new();
    for line in lines {
        *occurrences.entry(line.seq).or_default() += 1;
    }
    let broken = |line: &Read, reason: String| Broken {
        file: line.file.clone(),
        line: line.number,
        reason,
    };
    // Line by line, so that the first break is the one named.
    for (i, line) in lines.iter().enumerate() {
        if let Some(before) = i.checked_sub(1).map(|b| &lines[b]) {
            let next = lines.get(i + 1).map(|l| l.seq);
            check(before, line, next, &occurrences).map_err(|r| broken(line, r))?;
        }
        line.seal.clone().map_err(|r| broken(line, r))?;
    }
    Ok(Intact {
        lines: lines.len() as u64,
        files,
        seq: lines.first().zip(lines.last()).map(|(f, l)| (f.seq, l.seq)),
        sealed: lines.iter().filter(|l| l.sealed).count() as u64,
    })
}

/// What the check needs of a line.
struct Read {
    file: PathBuf,
    number: u64,
    seq: u64,
    prev: String,
    hash: String,
    sealed: bool,
    /// The seal's check, when keys were given.
    seal: Result<(), String>,
}

/// Adds the lines of one file to `lines`.
fn read(
    file: &Path,
    reader: impl BufRead,
    keys: &[Key],
    lines: &mut Vec<Read>,
) -> Result<(), Broken> {
    for (index, text) in reader.lines().enumerate() {
        let number = index as u64 + 1;
        let broken = |reason: String| Broken {
            file: file.to_owned(),
            line: number,
            reason,
        };
        let text = text.map_err(|e| broken(format!("cannot read: {e}")))?;
        let line: Line = serde_json::from_str(&text).map_err(|e| {
            broken(format!(
                "not a decision line ({e}): the line was edited or inserted"
            ))
        })?;
        lines.push(Read {
            file: file.to_owned(),
            number,
            seq: line.seq,
            prev: line.prev,
            hash: super::log::hash(text.as_bytes()),
            sealed: line.mac.is_some(),
            seal: if keys.is_empty() {
                Ok(())
            } else {
                seal::check(keys, &text)
            },
        });
    }
    Ok(())
}

/// Checks `line` against the one `before` it; `next` is the seq after it.
fn check(
    before: &Read,
    line: &Read,
    next: Option<u64>,
    occurrences: &HashMap<u64, u32>,
) -> Result<(), String> {
    let at = if before.file == line.file {
        format!("line {}", before.number)
    } else {
        format!("{}:{}", before.file.display(), before.number)
    };
    let expected = before.seq.saturating_add(1);
    let seen = |seq: u64| occurrences.get(&seq).copied().unwrap_or(0);
    if line.seq != expected {
        if seen(line.seq) > 1 {
            return Err(format!(
                "seq {} occurs more than once: this line was inserted (a copy of another)",
                line.seq
            ));
        }
        let missing = (expected..line.seq).filter(|s| seen(*s) == 0).count() as u64;
        if line.seq > expected && missing == line.seq - expected {
            return Err(format!(
                "{missing} line{} removed before this line (seq {expected}{} missing after {at})",
                if missing == 1 { "" } else { "s" },
                if missing == 1 {
                    String::new()
                } else {
                    format!("–{}", line.seq - 1)
                },
            ));
        }
        let follows = if next == Some(expected) {
            format!(", and seq {expected} follows it")
        } else {
            String::new()
        };
        return Err(format!(
            "seq {} where seq {expected} belongs (after {at}){follows}: lines were reordered, or this line was inserted",
            line.seq
        ));
    }
    if line.prev != before.hash {
        return Err(format!(
            "the hash of {at} is not the one this line recorded: {at} was edited (or this line's `prev` was)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::audit::log::{DecisionLog, Fsync, Options, Target, WhenFull};

    fn write_log(dir: &Path, count: usize, key: Option<Key>) -> PathBuf {
        let path = dir.join("decisions.log");
        let log = DecisionLog::open(Options {
            target: Target::File(path.clone()),
            queue: 64,
            when_full: WhenFull::Block,
            max_bytes: 1 << 20,
            key,
            fsync: Fsync::Never,
        })
        .unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            for i in 0..count {
                let mut decision = crate::audit::log::tests::decision(&format!("u{i}"));
                decision.allowed = i % 2 == 0;
                assert!(log.record(decision).await);
            }
            log.close().await;
        });
        path
    }

    fn tamper(path: &Path, f: impl FnOnce(&mut Vec<String>)) {
        let mut lines: Vec<String> = std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        f(&mut lines);
        std::fs::write(path, lines.join("\n") + "\n").unwrap();
    }

    fn broken(f: impl FnOnce(&mut Vec<String>)) -> Broken {
        let dir = tempfile::tempdir().unwrap();
        let path = write_log(dir.path(), 8, None);
        assert_eq!(verify(std::slice::from_ref(&path), &[]).unwrap().lines, 8);
        tamper(&path, f);
        verify(&[path], &[]).unwrap_err()
    }

    fn key(path: &Path, byte: char) -> Key {
        std::fs::write(path, byte.to_string().repeat(32)).unwrap();
        Key::read(path).unwrap()
    }

    #[test]
    fn an_edited_line_is_named() {
        let b =
            broken(|lines| lines[3] = lines[3].replace(r#""allowed":false"#, r#""allowed":true"#));
        assert_eq!(b.line, 5);
        assert!(b.reason.contains("line 4 was edited"), "{b}");
    }

    #[test]
    fn a_removed_line_is_named() {
        let b = broken(|lines| {
            lines.remove(2);
        });
        assert_eq!(b.line, 3);
        assert!(
            b.reason
                .starts_with("1 line removed before this line (seq 2 missing"),
            "{b}"
        );
    }

    #[test]
    fn an_inserted_line_is_named() {
        let b = broken(|lines| {
            let copy = lines[5].clone();
            lines.insert(2, copy);
        });
        assert_eq!(b.line, 3);
        assert!(b.reason.contains("this line was inserted"), "{b}");
    }

    #[test]
    fn reordered_lines_are_named() {
        let b = broken(|lines| lines.swap(4, 5));
        assert_eq!(b.line, 5);
        assert!(b.reason.starts_with("seq 5 where seq 4 belongs (after line 4), and seq 4 follows it: lines were reordered"), "{b}");
    }

    #[test]
    fn garbage_is_named() {
        let b = broken(|lines| lines[6] = "not json".into());
        assert_eq!(b.line, 7);
        assert!(b.reason.starts_with("not a decision line"), "{b}");
    }

    /// Rewrites the last line and re-chains nothing: only a seal shows it.
    fn forge_last(path: &Path) {
        tamper(path, |lines| {
            let last = lines.last_mut().unwrap();
            *last = last.replace(r#""allowed":false"#, r#""allowed":true"#);
        });
    }

    #[test]
    fn a_sealed_log_verifies_with_its_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let right = key(&dir.path().join("right"), 'r');
        let wrong = key(&dir.path().join("wrong"), 'w');
        let path = write_log(dir.path(), 8, Some(right.clone()));
        let intact = verify(std::slice::from_ref(&path), std::slice::from_ref(&right)).unwrap();
        assert_eq!((intact.lines, intact.sealed), (8, 8));
        assert_eq!(verify(std::slice::from_ref(&path), &[]).unwrap().sealed, 8);
        verify(std::slice::from_ref(&path), &[wrong.clone(), right]).unwrap();
        let b = verify(&[path], &[wrong]).unwrap_err();
        assert_eq!(b.line, 1);
        assert!(b.reason.contains("a key not given"), "{b}");
    }

    #[test]
    fn an_edited_last_line_is_found_by_its_seal() {
        let dir = tempfile::tempdir().unwrap();
        let key = key(&dir.path().join("key"), 'k');
        let path = write_log(dir.path(), 8, Some(key.clone()));
        forge_last(&path);
        // No line follows the last to record its hash: the chain passes.
        verify(std::slice::from_ref(&path), &[]).unwrap();
        let b = verify(&[path], &[key]).unwrap_err();
        assert_eq!(b.line, 8);
        assert!(b.reason.contains("this line was edited"), "{b}");
    }

    #[test]
    fn an_unsealed_log_fails_where_a_seal_is_expected() {
        let dir = tempfile::tempdir().unwrap();
        let key = key(&dir.path().join("key"), 'k');
        let path = write_log(dir.path(), 3, None);
        let b = verify(&[path], &[key]).unwrap_err();
        assert_eq!(b.line, 1);
        assert!(b.reason.contains("carries no seal"), "{b}");
    }
}
