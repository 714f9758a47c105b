//! The `gateway` binary. See [`gateway::cli`] for its commands.

fn main() -> std::process::ExitCode {
    gateway::cli::main()
}
