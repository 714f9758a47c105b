//! The `gateway` binary. See [`gateway::cli`] for its commands.

/// mimalloc: the request path allocates many small, short-lived objects,
/// and glibc's allocator showed up as the largest single cost in profiles.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    gateway::cli::main()
}
