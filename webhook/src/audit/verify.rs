//! `tollgate audit verify`: checks a decision log's hash chain across its
//! files and names the first line that was edited, removed, inserted or
//! reordered.

use std::fmt;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::log::Line;

/// An intact chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intact {
    /// Lines checked.
    pub lines: u64,
    /// Files read.
    pub files: usize,
    /// `seq` of the first and last line.
    pub seq: Option<(u64, u64)>,
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

struct Previous {
    seq: u64,
    hash: String,
    file: PathBuf,
    line: u64,
}

/// Checks the chain through `files`, oldest first. A file given alone that
/// has rotated files beside it (`FILE.1`, `FILE.2`, …) is checked after them.
///
/// # Errors
///
/// The first break, or an unreadable file.
pub fn verify(files: &[PathBuf]) -> Result<Intact, Broken> {
    let files: Vec<PathBuf> = match files {
        [only] => {
            let mut all = super::log::rotated(only);
            all.push(only.clone());
            all
        }
        many => many.to_vec(),
    };
    let mut previous: Option<Previous> = None;
    let mut first_seq = None;
    let mut lines = 0;
    for file in &files {
        let opened = std::fs::File::open(file).map_err(|e| Broken {
            file: file.clone(),
            line: 0,
            reason: format!("cannot read: {e}"),
        })?;
        for (index, text) in std::io::BufReader::new(opened).lines().enumerate() {
            let number = index as u64 + 1;
            let broken = |reason: String| Broken {
                file: file.clone(),
                line: number,
                reason,
            };
            let text = text.map_err(|e| broken(format!("cannot read: {e}")))?;
            let line: Line = serde_json::from_str(&text)
                .map_err(|e| broken(format!("not a decision line ({e}): the line was edited or inserted")))?;
            if let Some(previous) = &previous {
                check(previous, &line, file).map_err(broken)?;
            }
            first_seq.get_or_insert(line.seq);
            lines += 1;
            previous = Some(Previous {
                seq: line.seq,
                hash: hex(&Sha256::digest(text.as_bytes())),
                file: file.clone(),
                line: number,
            });
        }
    }
    Ok(Intact {
        lines,
        files: files.len(),
        seq: first_seq.zip(previous.map(|p| p.seq)),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn place(file: &Path, line: u64, here: &Path) -> String {
    if file == here {
        format!("line {line}")
    } else {
        format!("{}:{line}", file.display())
    }
}

/// Checks `line` against the one before it.
fn check(previous: &Previous, line: &Line, file: &Path) -> Result<(), String> {
    let before = place(&previous.file, previous.line, file);
    let expected = previous.seq + 1;
    if line.seq > expected {
        let missing = line.seq - expected;
        return Err(format!(
            "{missing} line{} removed before this line (seq {expected}{} missing after {before})",
            if missing == 1 { "" } else { "s" },
            if missing == 1 { String::new() } else { format!("–{}", line.seq - 1) },
        ));
    }
    if line.seq < expected {
        return Err(format!(
            "seq {} after seq {} ({before}): this line was inserted or lines were reordered",
            line.seq, previous.seq
        ));
    }
    if line.prev != previous.hash {
        return Err(format!(
            "the hash of {before} is not the one this line recorded: {before} was edited (or this line's `prev` was)"
        ));
    }
    Ok(())
}
