//! What a plugin instance's store holds, and the host side of every import
//! but HTTP (`http.rs`). Each import checks the entry's grants first.

use std::sync::Arc;

use std::sync::Mutex;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{clock, config, crypto, kv, log, mail, secrets, types};
use super::http::Gate;
use crate::config::Grants;
use crate::store::Db;

/// Keys and values of the key-value store, and how many keys one entry may
/// keep.
pub const KV_MAX_KEY_BYTES: usize = 256;
pub const KV_MAX_VALUE_BYTES: usize = 64 * 1024;
pub const KV_MAX_KEYS: i64 = 10_000;
/// How much of a plugin's stderr (the end, where a panic message is) is
/// kept per call.
pub const STDERR_BYTES: usize = 8 * 1024;

/// What every call of one `[[plugins]]` entry shares.
pub struct EntryContext {
    pub id: String,
    /// The `settings` table as JSON text.
    pub settings: String,
    pub grants: Grants,
    pub http: Gate,
    /// The key-value store; `None` where there is no database (`plugins check`).
    pub db: Option<Db>,
}

/// Refuses memory growth that would take the instance's memories together
/// past the entry's `memory_mb`, and remembers that it did, so that the trap
/// that follows is reported as what it is.
pub struct Limiter {
    pub max_memory: usize,
    /// Bytes of linear memory the instance holds, all memories together.
    pub used: usize,
    pub exceeded: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.used.saturating_sub(current).saturating_add(desired);
        if total > self.max_memory {
            self.exceeded = true;
            return Ok(false);
        }
        self.used = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

/// Linear memories one instance may have (Rust components have one).
pub const MAX_MEMORIES: usize = 4;

/// A plugin's stderr: keeps the last [`STDERR_BYTES`] and never refuses a
/// write, so a chatty plugin is not failed for talking and a panic message
/// (written last) is kept.
#[derive(Clone, Default)]
pub struct StderrTail(Arc<Mutex<Vec<u8>>>);

impl StderrTail {
    fn push(&self, bytes: &[u8]) {
        if let Ok(mut buf) = self.0.lock() {
            buf.extend_from_slice(bytes);
            if buf.len() > STDERR_BYTES {
                let cut = buf.len() - STDERR_BYTES;
                buf.drain(..cut);
            }
        }
    }

    pub fn contents(&self) -> Vec<u8> {
        self.0.lock().map(|b| b.clone()).unwrap_or_default()
    }
}

impl IsTerminal for StderrTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StderrTail {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for StderrTail {
    async fn ready(&mut self) {}
}

impl OutputStream for StderrTail {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for StderrTail {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.push(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// The data of one call's store.
pub struct HostState {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub limiter: Limiter,
    pub entry: Arc<EntryContext>,
    /// When the call must be over; host imports never wait past it.
    pub deadline: tokio::time::Instant,
    /// The guest's stderr: a Rust plugin's panic message lands here.
    pub stderr: StderrTail,
}

impl HostState {
    pub fn new(entry: Arc<EntryContext>, deadline: tokio::time::Instant) -> Self {
        let stderr = StderrTail::default();
        // No environment, arguments, files or sockets: plugins reach the
        // world only through the gateway's own imports.
        let wasi = WasiCtx::builder().stderr(stderr.clone()).build();
        Self {
            wasi,
            table: ResourceTable::new(),
            limiter: Limiter {
                max_memory: usize::try_from(entry.grants.memory_bytes).unwrap_or(usize::MAX),
                used: 0,
                exceeded: false,
            },
            entry,
            deadline,
            stderr,
        }
    }

    /// The last line the guest wrote to stderr (its panic message), if any.
    pub fn last_stderr_line(&self) -> Option<String> {
        let bytes = self.stderr.contents();
        let text = String::from_utf8_lossy(&bytes);
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        // A Rust panic prints "thread '...' panicked at FILE:\nMESSAGE".
        let all: Vec<&str> = lines.by_ref().collect();
        let at = all.iter().rposition(|l| l.contains("panicked at"));
        let picked = match at {
            Some(i) => all[i..]
                .iter()
                .take(2)
                .copied()
                .collect::<Vec<_>>()
                .join(" "),
            None => all.last()?.to_string(),
        };
        Some(picked.chars().take(500).collect())
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for HostState {}

impl config::Host for HostState {
    async fn plugin_id(&mut self) -> wasmtime::Result<String> {
        Ok(self.entry.id.clone())
    }

    async fn settings(&mut self) -> wasmtime::Result<String> {
        Ok(self.entry.settings.clone())
    }
}

impl clock::Host for HostState {
    async fn now_ms(&mut self) -> wasmtime::Result<u64> {
        Ok(u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0))
    }
}

/// Inputs larger than this are refused (the call traps): a plugin hashes
/// webhook bodies and downloaded files, not gigabytes.
const CRYPTO_MAX: usize = 128 << 20;

impl crypto::Host for HostState {
    async fn hmac_sha256(&mut self, key: Vec<u8>, message: Vec<u8>) -> wasmtime::Result<Vec<u8>> {
        use hmac::Mac;
        if message.len() > CRYPTO_MAX {
            return Err(wasmtime::Error::msg(
                "crypto.hmac-sha256: input over 128 MiB",
            ));
        }
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key)
            .map_err(|e| wasmtime::Error::msg(e.to_string()))?;
        mac.update(&message);
        Ok(mac.finalize().into_bytes().to_vec())
    }

    async fn sha256(&mut self, data: Vec<u8>) -> wasmtime::Result<Vec<u8>> {
        use sha2::Digest;
        if data.len() > CRYPTO_MAX {
            return Err(wasmtime::Error::msg("crypto.sha256: input over 128 MiB"));
        }
        Ok(sha2::Sha256::digest(&data).to_vec())
    }
}

impl secrets::Host for HostState {
    async fn get(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<String, secrets::SecretError>> {
        if !self.entry.grants.secrets.contains(&name) {
            tracing::warn!(plugin = %self.entry.id, secret = %name, "plugin asked for a secret it was not granted");
            return Ok(Err(secrets::SecretError::Denied(format!(
                "secret {name:?} is not in grants.secrets of plugin `{}`",
                self.entry.id
            ))));
        }
        Ok(std::env::var(&name)
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                secrets::SecretError::Missing(format!("environment variable {name} is not set"))
            }))
    }
}

impl log::Host for HostState {
    async fn write(
        &mut self,
        level: log::Level,
        message: String,
        fields: Vec<types::Pair>,
    ) -> wasmtime::Result<()> {
        let message: String = message.chars().take(4096).collect();
        let fields = fields
            .iter()
            .take(32)
            .map(|p| {
                format!(
                    "{}={}",
                    p.key,
                    p.value.chars().take(256).collect::<String>()
                )
            })
            .collect::<Vec<_>>()
            .join(" ");
        let plugin = self.entry.id.as_str();
        match level {
            log::Level::Trace => tracing::trace!(target: "plugin", plugin, fields, "{message}"),
            log::Level::Debug => tracing::debug!(target: "plugin", plugin, fields, "{message}"),
            log::Level::Info => tracing::info!(target: "plugin", plugin, fields, "{message}"),
            log::Level::Warn => tracing::warn!(target: "plugin", plugin, fields, "{message}"),
            log::Level::Error => tracing::error!(target: "plugin", plugin, fields, "{message}"),
        }
        Ok(())
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl HostState {
    fn kv_db(&self) -> Result<&Db, kv::KvError> {
        self.entry.db.as_ref().ok_or_else(|| {
            kv::KvError::Unavailable("no key-value store here (plugins check)".into())
        })
    }

    fn check_key(key: &str) -> Result<(), kv::KvError> {
        if key.is_empty() || key.len() > KV_MAX_KEY_BYTES {
            return Err(kv::KvError::TooLarge(format!(
                "keys are 1 to {KV_MAX_KEY_BYTES} bytes, got {}",
                key.len()
            )));
        }
        Ok(())
    }
}

/// Runs a store operation within the call's deadline. (A free function:
/// holding `&HostState` across an await would make the future not `Send`.)
async fn within_deadline<T>(
    deadline: tokio::time::Instant,
    plugin: &str,
    op: impl Future<Output = Result<T, crate::store::StoreError>>,
) -> Result<T, kv::KvError> {
    match tokio::time::timeout_at(deadline, op).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::warn!(plugin, error = %e, "plugin key-value store failed");
            Err(kv::KvError::Unavailable(
                "the store failed; retry later".into(),
            ))
        }
        Err(_) => Err(kv::KvError::Unavailable(
            "the call's deadline passed".into(),
        )),
    }
}

impl kv::Host for HostState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, kv::KvError>> {
        if let Err(e) = Self::check_key(&key) {
            return Ok(Err(e));
        }
        let db = match self.kv_db() {
            Ok(db) => db.clone(),
            Err(e) => return Ok(Err(e)),
        };
        let id = &self.entry.id;
        Ok(within_deadline(self.deadline, id, db.kv_get(id, &key, now_ms())).await)
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<(), kv::KvError>> {
        if let Err(e) = Self::check_key(&key) {
            return Ok(Err(e));
        }
        if value.len() > KV_MAX_VALUE_BYTES {
            return Ok(Err(kv::KvError::TooLarge(format!(
                "values are at most {KV_MAX_VALUE_BYTES} bytes, got {}",
                value.len()
            ))));
        }
        let db = match self.kv_db() {
            Ok(db) => db.clone(),
            Err(e) => return Ok(Err(e)),
        };
        let now = now_ms();
        let expires = ttl_ms.map(|t| now.saturating_add(i64::try_from(t).unwrap_or(i64::MAX)));
        let id = &self.entry.id;
        let stored = within_deadline(
            self.deadline,
            id,
            db.kv_set(id, &key, &value, expires, now, KV_MAX_KEYS),
        )
        .await;
        Ok(match stored {
            Ok(true) => Ok(()),
            Ok(false) => Err(kv::KvError::TooLarge(format!(
                "the store holds {KV_MAX_KEYS} keys already; delete some first"
            ))),
            Err(e) => Err(e),
        })
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<(), kv::KvError>> {
        if let Err(e) = Self::check_key(&key) {
            return Ok(Err(e));
        }
        let db = match self.kv_db() {
            Ok(db) => db.clone(),
            Err(e) => return Ok(Err(e)),
        };
        let id = &self.entry.id;
        Ok(within_deadline(self.deadline, id, db.kv_delete(id, &key)).await)
    }
}

impl mail::Host for HostState {
    async fn send(
        &mut self,
        _envelope: mail::Envelope,
        _raw: Vec<u8>,
    ) -> wasmtime::Result<Result<String, mail::MailError>> {
        if !self.entry.grants.mail {
            return Ok(Err(mail::MailError::Denied(format!(
                "plugin `{}` has no mail grant (grants.mail)",
                self.entry.id
            ))));
        }
        // The SMTP transport arrives with the email channel; until then the
        // import answers honestly instead of pretending to deliver.
        Ok(Err(mail::MailError::Unavailable(
            "this gateway has no mail transport configured".into(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_limit_counts_every_memory() {
        let mut l = Limiter {
            max_memory: 10,
            used: 0,
            exceeded: false,
        };
        assert!(l.memory_growing(0, 6, None).expect("grow"));
        assert!(l.memory_growing(6, 8, None).expect("grow"));
        // A second memory of 3 would make 11.
        assert!(!l.memory_growing(0, 3, None).expect("grow"));
        assert!(l.exceeded);
        assert!(l.memory_growing(0, 2, None).expect("grow"));
        assert_eq!(l.used, 10);
    }

    #[test]
    fn stderr_keeps_the_end() {
        let tail = StderrTail::default();
        tail.push(&vec![b'a'; STDERR_BYTES]);
        tail.push(b"panicked at src/lib.rs:1:1:\nboom\n");
        let kept = tail.contents();
        assert_eq!(kept.len(), STDERR_BYTES);
        assert!(kept.ends_with(b"boom\n"));
    }
}
