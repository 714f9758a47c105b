//! Builds the plugins workspace (`plugins/`) as wasm32-wasip2 components, so
//! that `cargo build`, `cargo run` and `cargo test` need no extra step.
//!
//! The nested cargo gets a target directory of its own
//! (`<target>/plugins-wasm`), so it neither waits for the outer build's lock
//! nor is rebuilt per profile: debug and release hosts embed the same
//! release-built components. `GATEWAY_PLUGIN_DIR` tells the host (and its
//! tests) where they are.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir
        .parent()
        .expect("host/ lives in the repository root");
    let plugins = root.join("plugins");

    for path in ["plugins/Cargo.toml", "plugins/Cargo.lock", "sdk", "wit"] {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }
    // Each member's manifest and sources; not plugins/target, which the
    // plugins' own unit tests write to.
    let members = std::fs::read_dir(&plugins).expect("plugins/ is readable");
    for entry in members.flatten() {
        let dir = entry.path();
        if dir.join("Cargo.toml").is_file() {
            println!(
                "cargo:rerun-if-changed={}",
                dir.join("Cargo.toml").display()
            );
            for sub in ["src", "wit"] {
                if dir.join(sub).exists() {
                    println!("cargo:rerun-if-changed={}", dir.join(sub).display());
                }
            }
        }
    }
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");

    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| if p.is_absolute() { p } else { root.join(p) })
        .unwrap_or_else(|| root.join("target"))
        .join("plugins-wasm");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    ensure_wasm_target(root);

    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--release")
        .args(["--target", "wasm32-wasip2"])
        .arg("--manifest-path")
        .arg(plugins.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(&plugins);
    // What the outer cargo set for compiling the host must not leak into the
    // nested build: wrappers (clippy), flags, the jobserver, the target.
    for var in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTDOC",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    // The host's own cfg and feature values are for the host's build script.
    for (var, _) in env::vars_os() {
        let name = var.to_string_lossy();
        if name.starts_with("CARGO_CFG_") || name.starts_with("CARGO_FEATURE_") {
            cmd.env_remove(&var);
        }
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| fail(&format!("cannot run cargo: {e}")));
    if !status.success() {
        fail(
            "building the plugins in plugins/ for wasm32-wasip2 failed (see above). \
             Is the target installed? `rustup target add wasm32-wasip2`",
        );
    }
    let out = target_dir.join("wasm32-wasip2").join("release");
    for name in [
        "kb_answer",
        "openai",
        "hello",
        "hmac_webhook",
        "testbed",
        "future_version",
        "whatsapp",
        "email",
    ] {
        let file = out.join(format!("{name}.wasm"));
        if !file.is_file() {
            fail(&format!("the build did not produce {}", file.display()));
        }
    }
    println!("cargo:rustc-env=GATEWAY_PLUGIN_DIR={}", display(&out));
}

/// The toolchain file's `targets` is applied only when rustup installs the
/// toolchain, not to one already installed, so a machine may lack the wasm
/// target. Install it when rustup is there; otherwise say what to run.
fn ensure_wasm_target(root: &Path) {
    const TARGET: &str = "wasm32-wasip2";
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let installed = |sysroot: &Path| {
        sysroot
            .join("lib/rustlib")
            .join(TARGET)
            .join("lib")
            .is_dir()
    };
    if sysroot.as_deref().is_some_and(installed) {
        return;
    }
    let added = Command::new("rustup")
        .args(["target", "add", TARGET])
        .current_dir(root)
        .env_remove("RUSTC")
        .status();
    match added {
        Ok(status) if status.success() => {
            println!("cargo:warning=the {TARGET} target was missing: installed it with rustup");
        }
        Ok(_) => fail(&format!(
            "`rustup target add {TARGET}` failed (see above); the plugins are built for that target"
        )),
        Err(_) => fail(&format!(
            "the plugins need the {TARGET} target and rustup is not here to install it: \
             install the target for this toolchain (`rustup target add {TARGET}`)"
        )),
    }
}

fn display(path: &Path) -> String {
    path.to_str()
        .unwrap_or_else(|| fail("the target directory's path is not UTF-8"))
        .to_owned()
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1)
}
