//! `tollgate compile`: component on stdin, artifact on stdout. Runs as a
//! short-lived child of `serve`, so Cranelift's memory is returned to the OS
//! when it exits.

use std::io::{Read, Write};

use anyhow::Context as _;

pub fn run() -> anyhow::Result<()> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .read_to_end(&mut bytes)
        .context("reading the component from standard input")?;
    let artifact = crate::engine::precompile(&bytes)?;
    std::io::stdout()
        .write_all(&artifact)
        .context("writing the artifact to standard output")?;
    Ok(())
}
