//! Files on disk: `<data_dir>/files/<2 hex>/<sha256>`, named by content,
//! never by anything a client sent. Rows in `attachments` point at them; a
//! file goes when its last row goes ([`FileStore::release`]), and a sweep
//! removes files no row points at (after an organization or a session is
//! deleted by cascade).

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::store::Db;

pub struct FileStore {
    root: PathBuf,
}

/// Why [`FileStore::put`] stored nothing.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    /// The bytes contradict the declared type.
    #[error("{0}")]
    Refused(String),
    #[error("could not write a file: {0}")]
    Io(std::io::Error),
}

fn path_in(root: &Path, sha256: &str) -> PathBuf {
    let prefix = sha256.get(..2).unwrap_or("00");
    root.join(prefix).join(sha256)
}

/// Writes `bytes` to `path` through a private temporary file, synced, then
/// renamed into place (a crash leaves the whole file or none).
fn write_new(root: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(root);
    create_private_dir(dir)?;
    let tmp = dir.join(format!(".tmp-{}", rand::random::<u64>()));
    let written = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename is durable once the directory is.
        std::fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Creates `dir` and its missing parents readable by the gateway's user
/// only (0700); directories that exist already are left as they are.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)
}

/// Makes the data directory the gateway's user's only (0700), creating it
/// if needed: it holds the database, the signing secret and every
/// customer's files. One created by an older version with wider
/// permissions is narrowed; when that is not allowed (another owner), a
/// warning says so and start-up goes on.
pub fn private_data_dir(dir: &Path) -> std::io::Result<()> {
    create_private_dir(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0
            && let Err(e) = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        {
            tracing::warn!(error = %e, dir = %dir.display(), mode = format!("{mode:o}"), "the data directory is readable by others and could not be restricted");
        }
    }
    Ok(())
}

/// Makes the file at `path`, if there is one, the gateway's user's only
/// (0600); a failure is logged, not fatal.
pub fn make_private(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        match std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "could not restrict a file's permissions")
            }
        }
    }
}

/// The bytes of request bodies being received at once over all clients
/// (`server.upload_budget_bytes`), so that many concurrent uploads cannot
/// exhaust memory. A body is charged as its bytes arrive (a client that
/// announces a huge body and sends nothing holds nothing); one that no
/// longer fits is refused with 503 and `Retry-After`.
pub struct UploadBudget {
    /// One permit per KiB.
    kib: std::sync::Arc<tokio::sync::Semaphore>,
    total_kib: u32,
}

impl UploadBudget {
    pub fn new(bytes: usize) -> UploadBudget {
        let total_kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX >> 4)
            .max(1);
        UploadBudget {
            kib: std::sync::Arc::new(tokio::sync::Semaphore::new(total_kib as usize)),
            total_kib,
        }
    }

    /// A share of `bytes` (at most the whole budget), or `None` while the
    /// budget is spent.
    pub fn take(&self, bytes: usize) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, self.total_kib);
        self.kib.clone().try_acquire_many_owned(kib).ok()
    }

    /// A ledger for one request's body: its bytes are charged as they
    /// arrive ([`Ledger::charge`]) and given back when the ledger goes.
    pub fn ledger(&self, weight: usize) -> Ledger {
        Ledger(std::sync::Arc::new(std::sync::Mutex::new(LedgerState {
            budget: self.kib.clone(),
            weight,
            uncharged: 0,
            held: None,
            exhausted: false,
        })))
    }
}

/// What one request's body has taken from the [`UploadBudget`]. Clones
/// share it; the share is given back when the last clone goes (after the
/// response, not when the body is read: the handler still holds the
/// bytes).
#[derive(Clone)]
pub struct Ledger(std::sync::Arc<std::sync::Mutex<LedgerState>>);

struct LedgerState {
    budget: std::sync::Arc<tokio::sync::Semaphore>,
    /// How many times each byte counts (JSON is held as text and parsed).
    weight: usize,
    /// Bytes received but not yet a whole KiB charged.
    uncharged: usize,
    held: Option<tokio::sync::OwnedSemaphorePermit>,
    exhausted: bool,
}

impl Ledger {
    /// Charges `bytes` more; `false` once the budget cannot take them.
    pub fn charge(&self, bytes: usize) -> bool {
        let Ok(mut s) = self.0.lock() else {
            return false;
        };
        if s.exhausted {
            return false;
        }
        s.uncharged += bytes.saturating_mul(s.weight);
        let kib = s.uncharged / 1024;
        if kib == 0 {
            return true;
        }
        let Ok(kib32) = u32::try_from(kib) else {
            s.exhausted = true;
            return false;
        };
        match s.budget.clone().try_acquire_many_owned(kib32) {
            Ok(permit) => {
                s.uncharged -= kib * 1024;
                match &mut s.held {
                    Some(held) => held.merge(permit),
                    None => s.held = Some(permit),
                }
                true
            }
            Err(_) => {
                s.exhausted = true;
                false
            }
        }
    }

    /// Whether a charge was refused.
    pub fn exhausted(&self) -> bool {
        self.0.lock().map_or(true, |s| s.exhausted)
    }
}

/// What the bytes turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub struct Inspected {
    pub content_type: String,
    pub width: Option<i64>,
    pub height: Option<i64>,
}

/// Types that a browser would run or render as a page: always served as
/// downloads, never inline.
const ACTIVE_TYPES: [&str; 7] = [
    "text/html",
    "application/xhtml+xml",
    "image/svg+xml",
    "text/xml",
    "application/xml",
    "text/javascript",
    "application/javascript",
];

pub fn is_active_type(content_type: &str) -> bool {
    ACTIVE_TYPES.contains(&content_type) || content_type.ends_with("+xml")
}

/// Checks `declared` (the client's type, if any) against the magic bytes
/// and reads an image's size from its header.
pub fn inspect(bytes: &[u8], declared: Option<&str>, file_name: &str) -> Result<Inspected, String> {
    let declared = declared
        .map(|d| {
            d.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|d| !d.is_empty() && d != "application/octet-stream");
    let detected = infer::get(bytes).map(|k| k.mime_type().to_owned());
    let content_type = match (detected, declared) {
        (Some(found), Some(said)) if found != said && !compatible(&found, &said) => {
            return Err(format!(
                "{file_name:?} is {found} by its content, not {said}"
            ));
        }
        (Some(found), _) => found,
        (None, Some(said)) if binary_family(&said) => {
            return Err(format!(
                "{file_name:?} does not look like {said} (its first bytes match no such format)"
            ));
        }
        (None, Some(said)) => said,
        (None, None) => {
            if std::str::from_utf8(bytes).is_ok() {
                "text/plain".to_owned()
            } else {
                "application/octet-stream".to_owned()
            }
        }
    };
    let (width, height) = if content_type.starts_with("image/") {
        match imagesize::blob_size(bytes) {
            Ok(size) => (
                i64::try_from(size.width).ok(),
                i64::try_from(size.height).ok(),
            ),
            Err(_) => (None, None),
        }
    } else {
        (None, None)
    };
    Ok(Inspected {
        content_type,
        width,
        height,
    })
}

/// Aliases clients use for the same format.
fn compatible(found: &str, said: &str) -> bool {
    matches!(
        (found, said),
        ("image/jpeg", "image/jpg")
            | ("audio/mpeg", "audio/mp3")
            | ("application/zip", "application/x-zip-compressed")
            | ("text/xml", "application/xml")
            | ("application/xml", "text/xml")
    ) || (found == "application/zip" && said.starts_with("application/vnd.openxmlformats"))
        || (found == "application/x-cfb" && said.starts_with("application/vnd.ms-"))
        || (found == "application/x-cfb" && said == "application/msword")
}

/// Formats with magic bytes: a file declared as one must show them.
fn binary_family(said: &str) -> bool {
    (said.starts_with("image/") && said != "image/svg+xml")
        || said.starts_with("audio/")
        || said.starts_with("video/")
        || said == "application/pdf"
        || said == "application/zip"
}

impl FileStore {
    pub fn new(data_dir: &Path) -> FileStore {
        FileStore {
            root: data_dir.join("files"),
        }
    }

    /// Where the file with this digest lives.
    pub fn path(&self, sha256: &str) -> PathBuf {
        path_in(&self.root, sha256)
    }

    /// Checks `bytes` against `declared` (see [`inspect`]), stores them
    /// (once, whatever the number of rows that use them, readable by the
    /// gateway's user only, synced to disk before this returns) and answers
    /// what they are and their SHA-256. The work runs on the blocking pool:
    /// hashing and sniffing megabytes must not hold up the request threads.
    pub async fn put(
        &self,
        bytes: Vec<u8>,
        declared: Option<String>,
        file_name: String,
    ) -> Result<(Inspected, String), PutError> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            let found =
                inspect(&bytes, declared.as_deref(), &file_name).map_err(PutError::Refused)?;
            let sha = hex::encode(Sha256::digest(&bytes));
            let path = path_in(&root, &sha);
            if !path.exists() {
                write_new(&root, &path, &bytes).map_err(PutError::Io)?;
            }
            Ok((found, sha))
        })
        .await
        .map_err(|e| PutError::Io(std::io::Error::other(e)))?
    }

    /// Removes the files among `digests` that no row uses any more.
    pub async fn release(&self, db: &Db, digests: &[String]) {
        for sha in digests {
            match db.attachment_digest_in_use(sha).await {
                Ok(false) => {
                    if let Err(e) = tokio::fs::remove_file(self.path(sha)).await
                        && e.kind() != std::io::ErrorKind::NotFound
                    {
                        tracing::warn!(error = %e, "could not remove a file");
                    }
                }
                Ok(true) => {}
                Err(e) => tracing::warn!(error = %e, "could not check a file's use"),
            }
        }
    }

    /// Removes files no row points at and older than `grace` (younger ones
    /// may belong to an upload still being recorded).
    pub async fn sweep(&self, db: &Db, grace: Duration) {
        let Ok(mut dirs) = tokio::fs::read_dir(&self.root).await else {
            return;
        };
        while let Ok(Some(dir)) = dirs.next_entry().await {
            let Ok(mut files) = tokio::fs::read_dir(dir.path()).await else {
                continue;
            };
            while let Ok(Some(file)) = files.next_entry().await {
                let name = file.file_name().to_string_lossy().into_owned();
                if name.len() != 64 || !name.chars().all(|c| c.is_ascii_hexdigit()) {
                    continue;
                }
                let old = file
                    .metadata()
                    .await
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > grace);
                if old {
                    self.release(db, &[name]).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG_1X1: &[u8] = &[
        0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13, b'I', b'H', b'D', b'R', 0, 0,
        0, 3, 0, 0, 0, 2, 8, 6, 0, 0, 0, 0, 0, 0, 0,
    ];

    #[test]
    fn types_are_checked_against_magic_bytes() {
        let png = inspect(PNG_1X1, Some("image/png"), "a.png").expect("png");
        assert_eq!(
            (png.content_type.as_str(), png.width, png.height),
            ("image/png", Some(3), Some(2))
        );
        let e = inspect(PNG_1X1, Some("application/pdf"), "a.pdf").expect_err("mismatch");
        assert!(e.contains("is image/png by its content"), "{e}");
        let e = inspect(b"hello", Some("image/jpeg"), "x.jpg").expect_err("not a jpeg");
        assert!(e.contains("does not look like image/jpeg"), "{e}");
        let text = inspect(b"hello", None, "x.txt").expect("text");
        assert_eq!(text.content_type, "text/plain");
        let html = inspect(b"<html></html>", Some("text/html"), "x.html").expect("html");
        assert!(is_active_type(&html.content_type));
        assert!(is_active_type("image/svg+xml"));
        assert!(!is_active_type("image/png"));
    }
}
