//! Compile once: compiled artifacts on disk, keyed by the SHA-256 of the
//! component and the engine's compatibility hash, so a restart with unchanged
//! policies loads them in well under a millisecond each instead of
//! recompiling. Compilation itself can run in a child process
//! ([`super::Compiler::Subprocess`]) so that Cranelift's memory never stays in
//! the server.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use super::Compiler;

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
}

/// Gives temporary files unique names within this process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Cache {
    /// Opens (creating) the cache directory.
    ///
    /// # Errors
    ///
    /// When the directory cannot be created.
    pub fn new(dir: PathBuf, compiler: Compiler, engine: &wasmtime::Engine) -> Result<Self, Error> {
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(Cache {
            dir,
            compiler,
            engine_key: hasher.finish(),
        })
    }

    /// Where the artifact of `bytes` lives.
    pub fn artifact_path(&self, bytes: &[u8]) -> PathBuf {
        let digest = hex::encode(Sha256::digest(bytes));
        self.dir
            .join(format!("{digest}-{:016x}.cwasm", self.engine_key))
    }

    /// The compiled component for `bytes`, from the cache or freshly compiled
    /// (and then cached).
    ///
    /// # Errors
    ///
    /// Invalid components, and cache or child-process failures.
    pub fn component(
        &self,
        engine: &wasmtime::Engine,
        bytes: &[u8],
    ) -> Result<Component, super::Error> {
        let path = self.artifact_path(bytes);
        if path.exists() {
            match load(engine, &path) {
                Ok(component) => return Ok(component),
                Err(error) => {
                    // A stale or damaged artifact: compile again.
                    tracing::warn!(path = %path.display(), "discarding unusable cached artifact: {error:#}");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let artifact = match &self.compiler {
            Compiler::InProcess => engine
                .precompile_component(bytes)
                .map_err(super::Error::Compile)?,
            Compiler::Subprocess(exe) => compile_in_child(exe, bytes)?,
        };
        self.store(&path, &artifact)?;
        load(engine, &path).map_err(super::Error::Compile)
    }

    /// Writes an artifact atomically (temporary file, then rename), so a
    /// crash never leaves a truncated artifact under the final name.
    fn store(&self, path: &Path, artifact: &[u8]) -> Result<(), Error> {
        let temp = self.dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&temp, artifact).map_err(|source| Error::Io {
            path: temp.clone(),
            source,
        })?;
        std::fs::rename(&temp, path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })
    }
}

#[allow(
    unsafe_code,
    reason = "wasmtime trusts precompiled artifacts; ours are written only by this cache, under a name derived from the source's hash"
)]
fn load(engine: &wasmtime::Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: the file was produced by `precompile_component` of an engine
    // with the same configuration (the name carries the compatibility hash),
    // written atomically into a directory the server owns; wasmtime also
    // checks the artifact's header and version before using it.
    unsafe { Component::deserialize_file(engine, path) }
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
