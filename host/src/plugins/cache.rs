//! Compiled components on disk, so that a restart does not recompile.
//!
//! A file is named by the SHA-256 of the component and a hash of the
//! engine's compatibility settings (wasmtime version, target, every setting
//! that changes the code), so a new gateway build or another configuration
//! simply misses. Each file starts with the SHA-256 of what follows, which
//! is checked before the bytes are handed to wasmtime: only artifacts this
//! gateway wrote, intact, are ever deserialized. A file that fails either
//! check is a miss and is rewritten.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where a loaded component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded from the cache.
    Hit,
    /// Compiled, and the result stored.
    Stored,
    /// Compiled; no cache in use.
    Disabled,
}

impl CacheOutcome {
    pub fn word(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Stored => "compiled",
            CacheOutcome::Disabled => "compiled (no cache)",
        }
    }
}

pub struct Cache {
    dir: PathBuf,
    /// Hex of the engine's compatibility hash.
    engine_key: String,
}

/// Feeds `Hash` output into SHA-256, for a hash that is stable across runs.
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_le_bytes(digest[..8].try_into().unwrap_or([0; 8]))
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl Cache {
    pub fn open(dir: &Path, engine: &Engine) -> std::io::Result<Cache> {
        std::fs::create_dir_all(dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let mut hasher = ShaHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = hex::encode(&hasher.0.finalize()[..12]);
        Ok(Cache {
            dir: dir.to_path_buf(),
            engine_key,
        })
    }

    fn path(&self, component: &[u8]) -> PathBuf {
        let digest = Sha256::digest(component);
        self.dir
            .join(format!("{}-{}.cwasm", hex::encode(digest), self.engine_key))
    }

    /// The compiled form of `component`, when a valid one is cached.
    pub fn load(&self, engine: &Engine, component: &[u8]) -> Option<Component> {
        let path = self.path(component);
        let file = std::fs::read(&path).ok()?;
        if file.len() < 32 || Sha256::digest(&file[32..])[..] != file[..32] {
            tracing::warn!(file = %path.display(), "damaged plugin cache file; recompiling");
            return None;
        }
        match deserialize(engine, &file[32..]) {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "unusable plugin cache file; recompiling");
                None
            }
        }
    }

    /// Writes the compiled form of `component` (atomically: a reader sees
    /// the old file, no file, or the whole new one).
    pub fn store(&self, compiled: &Component, component: &[u8]) -> std::io::Result<()> {
        let artifact = compiled.serialize().map_err(std::io::Error::other)?;
        let path = self.path(component);
        let (tmp, mut file) = tempfile_in(&self.dir)?;
        let written = file
            .write_all(&Sha256::digest(&artifact))
            .and_then(|()| file.write_all(&artifact))
            .and_then(|()| file.sync_all())
            .and_then(|()| std::fs::rename(&tmp, &path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }
}

fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    let name = format!(".tmp-{}-{}", std::process::id(), rand::random::<u64>());
    let path = dir.join(name);
    let file = std::fs::File::create(&path)?;
    Ok((path, file))
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, artifact: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: wasmtime requires that the bytes come from `serialize` of a
    // compatible engine. They do: the file is in the gateway's data dir
    // (created 0700), was written by `Cache::store` above, and its SHA-256
    // (checked by the caller) proves it is intact; wasmtime checks engine
    // compatibility itself and fails cleanly otherwise. The data dir is
    // trusted like the binary: whoever can write it can already replace the
    // JWT secret and the database, so the digest guards against damage, not
    // against its owner.
    unsafe { Component::deserialize(engine, artifact) }
}
