//! Compile once: compiled artifacts on disk, keyed by the SHA-256 of the
//! component and the engine's compatibility hash, so a restart with unchanged
//! policies loads them in well under a millisecond each instead of
//! recompiling. Compilation itself can run in a child process
//! ([`super::Compiler::Subprocess`]) so that Cranelift's memory never stays in
//! the server.
//!
//! # Trust
//!
//! An artifact is native code that runs outside the sandbox: whoever can
//! write one the server loads runs code as the server. So the cache is
//! guarded three ways:
//!
//! - its directory is created `0700`, and one that is not owned by the
//!   server's user or that its group or others can write is refused;
//! - it holds a key (`key`, 32 random bytes, `0600`) made on first use;
//! - every artifact ends with an HMAC-SHA256 under that key of its name
//!   (which names the component's hash) and its bytes, checked before
//!   wasmtime sees it. An artifact that fails the check is compiled again.
//!
//! This keeps out anyone who cannot read the key; it cannot keep out the
//! server's own user, who could change the binary as well.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use wasmtime::Module;
use wasmtime::component::Component;

use super::Compiler;

/// Bytes of an artifact's seal (an HMAC-SHA256).
const SEAL_BYTES: usize = 32;

/// Bytes of the cache key.
const KEY_BYTES: usize = 32;

/// Errors of the module cache.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory of the cache could not be read or written.
    #[error(
        "module cache {path}: {source} (check that the directory is writable, or choose another with --cache-dir)"
    )]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The directory or key could be written by someone else.
    #[error(
        "module cache {path}: {reason}; artifacts there run as native code, so only this user may write it (chmod 700, or choose another --cache-dir)"
    )]
    Insecure {
        /// The directory or file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The compile child process failed.
    #[error("compiling in a child process ({exe}) failed: {message}")]
    Subprocess {
        /// The executable run.
        exe: PathBuf,
        /// Its error output or exit status.
        message: String,
    },
}

/// The artifact store.
pub struct Cache {
    dir: PathBuf,
    compiler: Compiler,
    /// Distinguishes artifacts of different wasmtime versions and settings.
    engine_key: u64,
    /// The key artifacts are sealed with.
    key: Vec<u8>,
}

/// Gives temporary files unique names within this process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Cache {
    /// Opens (creating) the cache directory and its key.
    ///
    /// # Errors
    ///
    /// When the directory cannot be created, or others could write it.
    pub fn new(dir: PathBuf, compiler: Compiler, engine: &wasmtime::Engine) -> Result<Self, Error> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| Error::Io { path, source }
        };
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&dir).map_err(io(&dir))?;
        private(&dir)?;
        let key = key(&dir.join("key"))?;
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(Cache {
            dir,
            compiler,
            engine_key: hasher.finish(),
            key,
        })
    }

    /// Where the artifact of `bytes` lives.
    pub fn artifact_path(&self, bytes: &[u8]) -> PathBuf {
        let digest = hex::encode(Sha256::digest(bytes));
        self.dir
            .join(format!("{digest}-{:016x}.cwasm", self.engine_key))
    }

    /// The compiled component or module for `bytes`, from the cache or
    /// freshly compiled (and then cached).
    ///
    /// # Errors
    ///
    /// Invalid components or modules, and cache or child-process failures.
    pub fn compiled<T: Compiled>(
        &self,
        engine: &wasmtime::Engine,
        bytes: &[u8],
    ) -> Result<T, super::Error> {
        let path = self.artifact_path(bytes);
        match std::fs::read(&path) {
            Ok(sealed) => match self.load(engine, &path, &sealed) {
                Ok(component) => return Ok(component),
                Err(why) => {
                    // Stale, damaged or planted: compile again.
                    tracing::warn!(path = %path.display(), "discarding a cached artifact: {why}");
                    let _ = std::fs::remove_file(&path);
                }
            },
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(Error::Io { path, source }.into()),
        }
        let mut artifact = match &self.compiler {
            Compiler::InProcess => T::precompile(engine, bytes).map_err(super::Error::Compile)?,
            Compiler::Subprocess(exe) => compile_in_child(exe, bytes)?,
        };
        let seal = self.seal(&path, &artifact);
        artifact.extend_from_slice(&seal);
        self.store(&path, &artifact)?;
        self.load(engine, &path, &artifact)
            .map_err(|why| super::Error::Compile(wasmtime::format_err!("{why}")))
    }

    /// The seal of an artifact stored under `path`: it binds the bytes to
    /// the name, which names the component they were compiled from.
    fn seal(&self, path: &Path, artifact: &[u8]) -> [u8; SEAL_BYTES] {
        self.mac(path, artifact).finalize().into_bytes().into()
    }

    fn mac(&self, path: &Path, artifact: &[u8]) -> Hmac<Sha256> {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes any key length");
        let name = path.file_name().unwrap_or_default().as_encoded_bytes();
        mac.update(&(name.len() as u64).to_le_bytes());
        mac.update(name);
        mac.update(artifact);
        mac
    }

    /// Checks an artifact's seal, then hands it to wasmtime.
    fn load<T: Compiled>(
        &self,
        engine: &wasmtime::Engine,
        path: &Path,
        sealed: &[u8],
    ) -> Result<T, String> {
        let Some(split) = sealed.len().checked_sub(SEAL_BYTES) else {
            return Err("too short to carry a seal".into());
        };
        let (artifact, seal) = sealed.split_at(split);
        self.mac(path, artifact)
            .verify_slice(seal)
            .map_err(|_| "its seal does not match this cache's key".to_owned())?;
        T::deserialize(engine, artifact).map_err(|e| format!("{e:#}"))
    }

    /// Writes an artifact atomically (temporary file, then rename), so a
    /// crash never leaves a truncated artifact under the final name.
    fn store(&self, path: &Path, artifact: &[u8]) -> Result<(), Error> {
        let temp = self.dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        write_new(&temp, artifact).map_err(|source| Error::Io {
            path: temp.clone(),
            source,
        })?;
        std::fs::rename(&temp, path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })
    }
}

/// What the cache compiles: policy components, and the core modules of
/// OPA's Wasm ABI.
pub trait Compiled: Sized {
    /// Compiles `bytes` to an artifact.
    ///
    /// # Errors
    ///
    /// Invalid bytes.
    fn precompile(engine: &wasmtime::Engine, bytes: &[u8]) -> wasmtime::Result<Vec<u8>>;

    /// Loads an artifact whose seal the cache has checked.
    ///
    /// # Errors
    ///
    /// An artifact of another wasmtime or configuration.
    fn deserialize(engine: &wasmtime::Engine, artifact: &[u8]) -> wasmtime::Result<Self>;
}

// SAFETY (both impls): the bytes were produced by `precompile_*` of an
// engine with the same configuration (the name carries the compatibility
// hash), and their seal proves they were written by a holder of the cache's
// key; wasmtime also checks the header and version.
#[allow(
    unsafe_code,
    reason = "wasmtime trusts precompiled artifacts; ours carry a seal under a key only this user can read, checked before this call"
)]
impl Compiled for Component {
    fn precompile(engine: &wasmtime::Engine, bytes: &[u8]) -> wasmtime::Result<Vec<u8>> {
        engine.precompile_component(bytes)
    }

    fn deserialize(engine: &wasmtime::Engine, artifact: &[u8]) -> wasmtime::Result<Self> {
        unsafe { Component::deserialize(engine, artifact) }
    }
}

#[allow(
    unsafe_code,
    reason = "wasmtime trusts precompiled artifacts; ours carry a seal under a key only this user can read, checked before this call"
)]
impl Compiled for Module {
    fn precompile(engine: &wasmtime::Engine, bytes: &[u8]) -> wasmtime::Result<Vec<u8>> {
        engine.precompile_module(bytes)
    }

    fn deserialize(engine: &wasmtime::Engine, artifact: &[u8]) -> wasmtime::Result<Self> {
        unsafe { Module::deserialize(engine, artifact) }
    }
}

/// Creates `path` (which must not exist) readable by its owner only, with
/// `contents`.
fn write_new(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Refuses `path` unless it belongs to this user and no one else may
/// write it.
fn private(path: &Path) -> Result<(), Error> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let metadata = std::fs::symlink_metadata(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        let insecure = |reason: String| Error::Insecure {
            path: path.to_owned(),
            reason,
        };
        let me = rustix::process::geteuid().as_raw();
        if metadata.uid() != me {
            return Err(insecure(format!(
                "it belongs to user {}, not to this user ({me})",
                metadata.uid()
            )));
        }
        if metadata.mode() & 0o022 != 0 {
            return Err(insecure(format!(
                "its mode {:o} lets its group or others write it",
                metadata.mode() & 0o777
            )));
        }
    }
    Ok(())
}

/// The cache's key: read, or made on first use.
fn key(path: &Path) -> Result<Vec<u8>, Error> {
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let mut key = vec![0u8; KEY_BYTES];
    getrandom::fill(&mut key).map_err(|e| io(e.into()))?;
    match write_new(path, &key) {
        Ok(()) => return Ok(key),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(error) => return Err(io(error)),
    }
    private(path)?;
    let key = std::fs::read(path).map_err(io)?;
    if key.len() != KEY_BYTES {
        return Err(Error::Insecure {
            path: path.to_owned(),
            reason: format!("it holds {} bytes, not a key of {KEY_BYTES}", key.len()),
        });
    }
    Ok(key)
}

fn compile_in_child(exe: &Path, bytes: &[u8]) -> Result<Vec<u8>, Error> {
    let failed = |message: String| Error::Subprocess {
        exe: exe.to_owned(),
        message,
    };
    let mut child = Command::new(exe)
        .arg("compile")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(e.to_string()))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let bytes = bytes.to_vec();
    // Feed stdin from another thread: the child may fill its stdout pipe
    // before it has read all of its input.
    let writer = std::thread::spawn(move || stdin.write_all(&bytes));
    let output = child
        .wait_with_output()
        .map_err(|e| failed(e.to_string()))?;
    let written = writer
        .join()
        .map_err(|_| failed("writer thread panicked".into()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(failed(format!("{} ({})", stderr.trim(), output.status)));
    }
    written.map_err(|e| failed(format!("writing the component to the child: {e}")))?;
    Ok(output.stdout)
}
