//! The `tollgate` binary; see [`tollgate::cli`].

fn main() -> std::process::ExitCode {
    match tollgate::cli::main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
