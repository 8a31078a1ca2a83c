//! `tollgate policy`: a new policy project (`new`), and its component
//! (`build`).

mod build;
mod new;

/// What to do with a policy project.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Scaffold a policy project: a `Policy` with one rule, settings with
    /// validation, unit tests, a `tollgate-test.yaml` suite and a README.
    New(new::Args),
    /// Build a policy project into a component of the `tollgate:policy`
    /// world (`target/tollgate/<name>.wasm`).
    Build(build::Args),
}

/// Runs the subcommand.
///
/// # Errors
///
/// What the subcommand reports.
pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::New(args) => new::run(args),
        Command::Build(args) => build::run(args),
    }
}
