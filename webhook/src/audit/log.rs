//! The decision log: one JSON line per admission decision, hash-chained.
//!
//! Every line carries `seq` (one more than the line before, across files) and
//! `prev`, the SHA-256 of the previous line's bytes; the first line ever
//! written carries a random seed instead, and the first line of a rotated-in
//! file the hash of the last line of the file before it. Editing, removing,
//! inserting or reordering a line breaks the chain where it happened
//! ([`super::verify`]). With a key, each line is also sealed
//! ([`super::seal`]).
//!
//! Lines are written by one thread, off the request path: the server hands a
//! [`Decision`] over a bounded queue. When the queue is full the server either
//! waits (`block`, nothing is lost; the wait is asynchronous, so no async
//! worker is held) or drops the line and counts it (`drop`).
//! [`DecisionLog::close`] drains the queue and flushes, so on SIGTERM every
//! answered request's line is written before the process exits.
//!
//! # Durability
//!
//! A crash of the process, or of the machine, can lose what is not on disk
//! yet. [`Fsync`] chooses what that can be:
//!
//! - `batch` (the default): the writer `fdatasync`s after every batch it
//!   writes (a batch is what queued while it wrote the last one, a few
//!   milliseconds' worth). Answers do not wait for it: a machine crash
//!   loses at most the lines of the last few milliseconds, including some
//!   of requests already answered.
//! - `answer`: each answer waits until its line is written and synced (the
//!   writer still syncs once per batch, so waiting requests share one
//!   sync). Nothing answered is lost, at the cost of a sync's latency on
//!   every request.
//! - `never`: lines go to the OS as they are written; a process crash loses
//!   only what was queued, a machine crash what the OS had not flushed.
//!
//! Files are created readable by their owner only (0600): decisions name
//! users, objects and denial reasons.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use super::seal::Key;

/// One policy's part in a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyDecision {
    /// The policy.
    pub name: String,
    /// `enforce`, `warn` or `audit`.
    pub mode: String,
    /// `allowed`, `mutated`, `denied` or `failed`.
    pub verdict: String,
    /// The denial or failure message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// JSON Patch operations the policy's mutation added.
    pub patch_operations: usize,
    /// Evaluation time, instantiation included.
    pub micros: u64,
}

/// The object's kind as the request names it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupVersionKind {
    /// API group (`""` for core).
    pub group: String,
    /// Version.
    pub version: String,
    /// Kind.
    pub kind: String,
}

/// One decision, owned: it crosses to the writer thread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// When the answer was made (RFC 3339, UTC).
    #[serde(with = "rfc3339")]
    pub time: SystemTime,
    /// `/validate` or `/mutate`.
    pub endpoint: String,
    /// The request's uid.
    pub uid: String,
    /// The requesting user.
    pub user: String,
    /// The user's groups.
    pub groups: Vec<String>,
    /// `CREATE`, `UPDATE`, `DELETE` or `CONNECT`.
    pub operation: String,
    /// The object's kind.
    pub kind: GroupVersionKind,
    /// Namespace (empty for cluster-scoped objects).
    pub namespace: String,
    /// Object name.
    pub name: String,
    /// Whether the request had no side effects.
    pub dry_run: bool,
    /// The generation of the configuration that decided (lines written
    /// before it was recorded have none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub config: String,
    /// The answer.
    pub allowed: bool,
    /// Every policy that ran.
    pub policies: Vec<PolicyDecision>,
    /// The objects before and after each mutation, from which the writer
    /// counts each policy's patch operations (off the request path).
    #[serde(skip)]
    pub mutations: Option<Mutations>,
}

/// A request's mutations, to count patch operations per policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mutations {
    /// The object as it arrived.
    pub original: String,
    /// (index in `policies`, the object after that policy).
    pub steps: Vec<(usize, String)>,
}

impl Decision {
    /// Fills in each mutating policy's patch operation count.
    fn count_patches(&mut self) {
        let Some(mutations) = self.mutations.take() else {
            return;
        };
        let mut before = mutations.original.as_str();
        for (index, after) in &mutations.steps {
            if let (Ok(patch), Some(policy)) = (
                crate::policy::patch::diff(before, after),
                self.policies.get_mut(*index),
            ) {
                policy.patch_operations = patch.0.len();
            }
            before = after;
        }
    }
}

mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        let timestamp = jiff::Timestamp::try_from(*time).map_err(serde::ser::Error::custom)?;
        s.collect_str(&timestamp)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        let timestamp: jiff::Timestamp = text.parse().map_err(serde::de::Error::custom)?;
        Ok(SystemTime::from(timestamp))
    }
}

/// A line as written: the decision, its place in the chain.
#[derive(Debug, Serialize, Deserialize)]
pub struct Line {
    /// Position in the log, from 0, across rotated files.
    pub seq: u64,
    /// The decision.
    #[serde(flatten)]
    pub decision: Decision,
    /// SHA-256 (hex) of the previous line, or the log's random seed.
    pub prev: String,
    /// HMAC-SHA256 (hex) of this line without this field, when the log is
    /// written with a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// When lines are synced to disk (see the module's "Durability").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Fsync {
    /// After every batch; answers do not wait.
    #[default]
    Batch,
    /// After every batch; each answer waits for its line's sync.
    Answer,
    /// Never; the OS flushes when it will.
    Never,
}

/// What to do when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WhenFull {
    /// Wait for room: no line is ever lost; a stalled disk slows admissions.
    Block,
    /// Drop the line and count it in `tollgate_decision_log_dropped`.
    Drop,
}

/// Where lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A file, rotated by size.
    File(PathBuf),
    /// Standard output (for a log collector).
    Stdout,
}

/// How the log is written.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where.
    pub target: Target,
    /// Decisions that may wait for the writer.
    pub queue: usize,
    /// What a full queue does.
    pub when_full: WhenFull,
    /// Rotate a file once it would pass this size.
    pub max_bytes: u64,
    /// Seal every line with this key.
    pub key: Option<Key>,
    /// When lines are synced to disk.
    pub fsync: Fsync,
}

/// Pause between batches of the writer.
const BATCH_PAUSE: std::time::Duration = std::time::Duration::from_millis(2);

enum Message {
    /// A decision, and (with `--decision-log-fsync answer`) who waits for
    /// it to be on disk.
    Decision(Box<Decision>, Option<oneshot::Sender<()>>),
    Close,
}

/// The log's handle, shared by the server's workers.
pub struct DecisionLog {
    /// The queue to the writer thread. A Tokio channel: senders wait for
    /// room asynchronously; the thread receives with `blocking_recv`.
    sender: mpsc::Sender<Message>,
    when_full: WhenFull,
    fsync: Fsync,
    /// The writer thread, joined by `close`. A `std::sync::Mutex`: taken
    /// once, at shutdown.
    writer: Mutex<Option<JoinHandle<()>>>,
}

/// Errors opening the log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file or its directory could not be used.
    #[error("decision log {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The existing file's last line is not a decision line.
    #[error(
        "decision log {path}: the last line is not a decision line ({message}); move the file aside to start a new chain"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

impl DecisionLog {
    /// Opens the log (continuing an existing file's chain) and starts its
    /// writer thread.
    ///
    /// # Errors
    ///
    /// When the file cannot be opened or its last line cannot be read.
    pub fn open(options: Options) -> Result<Self, Error> {
        let mut sink = Sink::open(&options)?;
        let (sender, queue) = mpsc::channel(options.queue.max(1));
        let writer = std::thread::Builder::new()
            .name("tollgate-decision-log".into())
            .spawn(move || sink.run(queue))
            .map_err(|source| Error::Io {
                path: PathBuf::from("<thread>"),
                source,
            })?;
        Ok(DecisionLog {
            sender,
            when_full: options.when_full,
            fsync: options.fsync,
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Queues one decision, and with `--decision-log-fsync answer` waits
    /// until it is on disk; `false` when it was dropped (queue full, with
    /// `drop`) or could not be written.
    pub async fn record(&self, decision: Decision) -> bool {
        let (synced, on_disk) = match self.fsync {
            Fsync::Answer => {
                let (sender, receiver) = oneshot::channel();
                (Some(sender), Some(receiver))
            }
            Fsync::Batch | Fsync::Never => (None, None),
        };
        let message = Message::Decision(Box::new(decision), synced);
        let queued = match self.when_full {
            WhenFull::Block => self.sender.send(message).await.is_ok(),
            WhenFull::Drop => self.sender.try_send(message).is_ok(),
        };
        match on_disk {
            Some(on_disk) if queued => on_disk.await.is_ok(),
            _ => queued,
        }
    }

    /// Writes every queued decision, flushes and stops the writer. Later
    /// decisions are not written.
    pub async fn close(&self) {
        let Some(writer) = self
            .writer
            .lock()
            .expect("decision log lock poisoned")
            .take()
        else {
            return;
        };
        let _ = self.sender.send(Message::Close).await;
        let _ = tokio::task::spawn_blocking(move || writer.join()).await;
    }
}

/// The writer thread's side: the open file and the chain's state.
struct Sink {
    target: Target,
    out: Output,
    written: u64,
    max_bytes: u64,
    seq: u64,
    prev: String,
    key: Option<Key>,
    fsync: Fsync,
    /// Who waits for the current batch to be on disk.
    waiting: Vec<oneshot::Sender<()>>,
}

/// Where the writer writes.
enum Output {
    Stdout(std::io::Stdout),
    File(BufWriter<File>),
}

impl Output {
    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Output::Stdout(out) => out,
            Output::File(out) => out,
        }
    }

    /// Flushes, and syncs a file's data to disk when `sync`.
    fn flush(&mut self, sync: bool) -> std::io::Result<()> {
        self.writer().flush()?;
        match self {
            Output::File(file) if sync => file.get_ref().sync_data(),
            _ => Ok(()),
        }
    }
}

/// SHA-256 of a line, as lowercase hex.
pub fn hash(line: &[u8]) -> String {
    hex::encode(Sha256::digest(line))
}

/// A seed for a new chain: random bytes from the OS.
fn seed() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(hex::encode(bytes))
}

/// The last non-empty line of a file, if it has one.
fn last_line(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    last_line_of(File::open(path)?)
}

/// Bytes read at a time from the end.
const TAIL_CHUNK: u64 = 64 << 10;

/// The last non-empty line of `file` (without its newline), reading back
/// from the end a chunk at a time, so a line of any length is found whole
/// and no read splits a character.
pub fn last_line_of(mut file: impl Read + Seek) -> std::io::Result<Option<Vec<u8>>> {
    let size = file.seek(SeekFrom::End(0))?;
    let mut tail: Vec<u8> = Vec::new();
    let mut start = size;
    loop {
        // Trailing newlines belong to no line.
        while tail.last() == Some(&b'\n') {
            tail.pop();
        }
        if let Some(newline) = tail.iter().rposition(|&b| b == b'\n') {
            return Ok(Some(tail.split_off(newline + 1)));
        }
        if start == 0 {
            return Ok((!tail.is_empty()).then_some(tail));
        }
        let read_from = start.saturating_sub(TAIL_CHUNK);
        let mut chunk = vec![0; (start - read_from) as usize];
        file.seek(SeekFrom::Start(read_from))?;
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&tail);
        tail = chunk;
        start = read_from;
    }
}

/// Rotated files of `path`: `path.1`, `path.2`, … (oldest first).
pub fn rotated(path: &Path) -> Vec<PathBuf> {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Vec::new();
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let file = entry.file_name();
            let n = file
                .to_str()?
                .strip_prefix(name)?
                .strip_prefix('.')?
                .parse()
                .ok()?;
            Some((n, entry.path()))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, p)| p).collect()
}

/// Opens `path` for appending, creating it readable by its owner only.
fn append(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

impl Sink {
    fn open(options: &Options) -> Result<Self, Error> {
        let (out, written, seq, prev): (Output, u64, u64, String) = match &options.target {
            Target::Stdout => (
                Output::Stdout(std::io::stdout()),
                0,
                0,
                seed().map_err(|source| Error::Io {
                    path: PathBuf::from("<random seed>"),
                    source,
                })?,
            ),
            Target::File(path) => {
                let io = |source| Error::Io {
                    path: path.clone(),
                    source,
                };
                // Continue the chain from the newest line there is.
                let newest = if path.exists() {
                    Some(path.clone())
                } else {
                    rotated(path).pop()
                };
                let last = match &newest {
                    Some(file) => last_line(file).map_err(io)?,
                    None => None,
                };
                let (seq, prev) = match last {
                    Some(line) => {
                        let parsed: Line =
                            serde_json::from_slice(&line).map_err(|e| Error::Corrupt {
                                path: newest.clone().unwrap_or_default(),
                                message: e.to_string(),
                            })?;
                        (parsed.seq + 1, hash(&line))
                    }
                    None => (0, seed().map_err(io)?),
                };
                let file = append(path).map_err(io)?;
                let written = file.metadata().map_err(io)?.len();
                (Output::File(BufWriter::new(file)), written, seq, prev)
            }
        };
        Ok(Sink {
            target: options.target.clone(),
            out,
            written,
            max_bytes: options.max_bytes,
            seq,
            prev,
            key: options.key.clone(),
            fsync: options.fsync,
            waiting: Vec::new(),
        })
    }

    fn run(&mut self, mut queue: mpsc::Receiver<Message>) {
        while let Some(message) = queue.blocking_recv() {
            let mut close = self.handle(message);
            // Write what else is waiting before one flush.
            while !close && let Ok(message) = queue.try_recv() {
                close = self.handle(message);
            }
            match self.out.flush(self.fsync != Fsync::Never) {
                // The batch is on disk: its waiting answers may leave.
                Ok(()) => self.waiting.drain(..).for_each(|w| {
                    let _ = w.send(());
                }),
                Err(error) => {
                    // Waiting answers learn that their line may be lost.
                    self.waiting.clear();
                    tracing::error!("decision log: flush failed: {error}");
                }
            }
            if close {
                return;
            }
            // Let lines gather: under load this turns a wake-up per request
            // into one per batch, which on a small machine is the larger
            // cost of logging.
            std::thread::sleep(BATCH_PAUSE);
        }
    }

    /// Writes one message; `true` on close.
    fn handle(&mut self, message: Message) -> bool {
        match message {
            Message::Close => true,
            Message::Decision(decision, waiting) => {
                match self.write(*decision) {
                    Ok(()) => self.waiting.extend(waiting),
                    Err(error) => tracing::error!("decision log: write failed: {error}"),
                }
                false
            }
        }
    }

    fn write(&mut self, mut decision: Decision) -> std::io::Result<()> {
        decision.count_patches();
        let line = Line {
            seq: self.seq,
            decision,
            prev: std::mem::take(&mut self.prev),
            mac: None,
        };
        let mut text = serde_json::to_vec(&line).map_err(std::io::Error::other)?;
        if let Some(key) = &self.key {
            key.seal(&mut text);
        }
        self.prev = hash(&text);
        self.seq += 1;
        text.push(b'\n');
        if self.written > 0 && self.written + text.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.out.writer().write_all(&text)?;
        self.written += text.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let Target::File(path) = &self.target else {
            return Ok(());
        };
        self.out.flush(self.fsync != Fsync::Never)?;
        let next = rotated(path)
            .last()
            .and_then(|p| p.extension()?.to_str()?.parse::<u64>().ok())
            .map_or(1, |n| n + 1);
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{next}"));
        std::fs::rename(path, PathBuf::from(name))?;
        self.out = Output::File(BufWriter::new(append(path)?));
        self.written = 0;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A decision for `uid`.
    pub(crate) fn decision(uid: &str) -> Decision {
        Decision {
            time: SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_764_345_600_123),
            endpoint: "validate".into(),
            uid: uid.into(),
            user: "alice".into(),
            groups: vec!["system:authenticated".into()],
            operation: "CREATE".into(),
            kind: GroupVersionKind {
                group: String::new(),
                version: "v1".into(),
                kind: "Pod".into(),
            },
            namespace: "ml".into(),
            name: "train".into(),
            dry_run: false,
            config: "0123456789ab".into(),
            allowed: false,
            policies: vec![PolicyDecision {
                name: "gpu-quota".into(),
                mode: "enforce".into(),
                verdict: "denied".into(),
                message: Some("over quota".into()),
                patch_operations: 0,
                micros: 41,
            }],
            mutations: None,
        }
    }

    fn options(path: &Path, max_bytes: u64) -> Options {
        Options {
            target: Target::File(path.to_owned()),
            queue: 16,
            when_full: WhenFull::Block,
            max_bytes,
            key: None,
            fsync: Fsync::Batch,
        }
    }

    fn lines(path: &Path) -> Vec<Line> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn lines_carry_the_decision_and_chain_across_rotation_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decisions.log");
        let log = DecisionLog::open(options(&path, 1500)).unwrap();
        for i in 0..10 {
            assert!(log.record(decision(&format!("u{i}"))).await);
        }
        log.close().await;
        // A restart continues the chain.
        let log = DecisionLog::open(options(&path, 1500)).unwrap();
        log.record(decision("after-restart")).await;
        log.close().await;
        let rotated = rotated(&path);
        assert!(rotated.len() >= 3, "{rotated:?}");
        let mut files = rotated.clone();
        files.push(path.clone());
        let all: Vec<Line> = files.iter().flat_map(|f| lines(f)).collect();
        assert_eq!(all.len(), 11);
        assert_eq!(
            all.iter().map(|l| l.seq).collect::<Vec<_>>(),
            (0..11).collect::<Vec<_>>()
        );
        assert_eq!(all[10].decision.uid, "after-restart");
        let first = std::fs::read_to_string(&files[0]).unwrap();
        let text = first.lines().next().unwrap();
        assert!(text.starts_with(r#"{"seq":0,"time":"2025-11-28T16:00:00.123Z","endpoint":"validate","uid":"u0","user":"alice","groups":["system:authenticated"],"operation":"CREATE","kind":{"group":"","version":"v1","kind":"Pod"},"namespace":"ml","name":"train","dryRun":false,"config":"0123456789ab","allowed":false,"policies":[{"name":"gpu-quota","mode":"enforce","verdict":"denied","message":"over quota","patchOperations":0,"micros":41}],"prev":""#), "{text}");
        let intact = crate::audit::verify::verify(std::slice::from_ref(&path), &[]).unwrap();
        assert_eq!(intact.lines, 11);
        assert_eq!(intact.seq, Some((0, 10)));
        #[cfg(unix)]
        for file in &files {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", file.display());
        }
    }

    #[tokio::test]
    async fn a_restart_continues_after_a_last_line_longer_than_any_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decisions.log");
        let log = DecisionLog::open(options(&path, 64 << 20)).unwrap();
        let mut long = decision("long");
        // Over 1 MiB, of 2-byte characters: any fixed-size read from the
        // end would split the line or a character.
        long.policies[0].message = Some("é".repeat(700_000));
        assert!(log.record(decision("short")).await);
        assert!(log.record(long).await);
        log.close().await;
        let log = DecisionLog::open(options(&path, 64 << 20)).unwrap();
        assert!(log.record(decision("after")).await);
        log.close().await;
        let intact = crate::audit::verify::verify(std::slice::from_ref(&path), &[]).unwrap();
        assert_eq!(intact.seq, Some((0, 2)));
    }

    #[test]
    fn the_last_line_is_found_whatever_its_length() {
        use std::io::Cursor;
        let last = |text: &[u8]| last_line_of(Cursor::new(text.to_vec())).unwrap();
        assert_eq!(last(b""), None);
        assert_eq!(last(b"\n\n"), None);
        assert_eq!(last(b"one"), Some(b"one".to_vec()));
        assert_eq!(last(b"one\ntwo\n\n"), Some(b"two".to_vec()));
        let long = vec![b'x'; 3 * TAIL_CHUNK as usize + 17];
        let mut text = b"first\n".to_vec();
        text.extend_from_slice(&long);
        text.push(b'\n');
        assert_eq!(last(&text), Some(long));
    }

    #[tokio::test]
    async fn with_fsync_answer_a_record_returns_once_its_line_is_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.log");
        let mut options = options(&path, 1 << 20);
        options.fsync = Fsync::Answer;
        let log = DecisionLog::open(options).unwrap();
        for i in 0..3 {
            assert!(log.record(decision(&i.to_string())).await);
            // Already written (and synced) when record returns.
            assert_eq!(lines(&path).len(), i + 1);
        }
        log.close().await;
    }

    #[test]
    fn patch_operations_are_counted_per_mutating_policy() {
        let mut d = decision("m");
        d.policies.push(d.policies[0].clone());
        d.mutations = Some(Mutations {
            original: r#"{"a":1}"#.into(),
            steps: vec![
                (0, r#"{"a":1,"b":2,"c":3}"#.into()),
                (1, r#"{"a":2,"b":2,"c":3}"#.into()),
            ],
        });
        d.count_patches();
        assert_eq!(
            d.policies
                .iter()
                .map(|p| p.patch_operations)
                .collect::<Vec<_>>(),
            [2, 1]
        );
    }

    #[tokio::test]
    async fn a_full_queue_drops_with_drop_and_waits_with_block() {
        let dir = tempfile::tempdir().unwrap();
        let mut options = options(&dir.path().join("d.log"), 1 << 20);
        options.queue = 1;
        options.when_full = WhenFull::Drop;
        let log = DecisionLog::open(options).unwrap();
        let mut recorded = 0;
        for i in 0..5_000 {
            if log.record(decision(&i.to_string())).await {
                recorded += 1;
            }
        }
        log.close().await;
        let written = lines(&dir.path().join("d.log")).len();
        assert_eq!(written, recorded, "every queued line is written");
        assert!(
            recorded < 5_000,
            "a one-slot queue drops some of 5,000 back-to-back lines"
        );
    }
}
