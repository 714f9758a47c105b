//! Credentials: Argon2id passwords, HS256 JWTs and API keys. No HTTP here.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::{
    PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString, rand_core::OsRng,
};
use dashmap::DashMap;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::AuthConfig;
use crate::domain::{Principal, PrincipalKind, Role, User};

/// Hashes and verifies passwords on `concurrency` dedicated threads, so a
/// burst of logins queues there instead of taking every core from the
/// requests that do not hash. Fixed threads (rather than tokio's blocking
/// pool) also bound memory: each Argon2id hash needs 19 MiB, which the
/// allocator keeps per thread.
#[derive(Clone)]
pub struct Passwords {
    jobs: std::sync::mpsc::SyncSender<Job>,
    /// Verified against when a login names no user, so that the answer takes
    /// as long as for a real user with a wrong password.
    dummy_hash: Arc<str>,
}

type Job = Box<dyn FnOnce() + Send>;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("the password hashing threads are gone")]
    Stopped,
    #[error("too many password checks are waiting")]
    Busy,
}

/// Jobs waiting beyond this are refused (503): at about 14 ms a hash, 256
/// queued jobs are already seconds of work per hashing thread.
const QUEUE: usize = 256;

impl Passwords {
    pub fn new(concurrency: usize) -> Result<Self, PasswordError> {
        let dummy = hash_now("not a password of anyone's")?;
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(QUEUE);
        let queue = Arc::new(std::sync::Mutex::new(queue));
        for n in 0..concurrency.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("password-hash-{n}"))
                .spawn(move || {
                    loop {
                        let job = match queue.lock() {
                            Ok(q) => q.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return, // every sender dropped
                        }
                    }
                })
                .map_err(|e| PasswordError::Hash(format!("cannot start a hashing thread: {e}")))?;
        }
        Ok(Self {
            jobs,
            dummy_hash: dummy.into(),
        })
    }

    /// Runs `work` on a hashing thread and waits for its answer. A job whose
    /// caller has gone (timed out, disconnected) is skipped, and a full
    /// queue is refused rather than waited on, so a flood of logins cannot
    /// pile up work that nobody will read.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            if !tx.is_closed() {
                let _ = tx.send(work());
            }
        });
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(std::sync::mpsc::TrySendError::Full(_)) => return Err(PasswordError::Busy),
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {
                return Err(PasswordError::Stopped);
            }
        }
        rx.await.map_err(|_| PasswordError::Stopped)
    }

    pub async fn hash(&self, password: String) -> Result<String, PasswordError> {
        self.run(move || hash_now(&password)).await?
    }

    /// Checks `password` against `hash`; with `None`, checks against a dummy
    /// hash and answers `false`, taking the same time.
    pub async fn verify(
        &self,
        password: String,
        hash: Option<String>,
    ) -> Result<bool, PasswordError> {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy_hash.to_string());
        let ok = self
            .run(move || {
                PasswordHash::new(&hash)
                    .map(|parsed| {
                        Argon2::default()
                            .verify_password(password.as_bytes(), &parsed)
                            .is_ok()
                    })
                    .unwrap_or(false)
            })
            .await?;
        Ok(ok && known)
    }
}

/// Argon2id with the crate's default parameters, on the calling thread.
pub fn hash_now(password: &str) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// The claims of a gateway token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The user id, as a decimal string.
    pub sub: String,
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    /// Organization id.
    pub org: i64,
    pub role: Role,
}

/// Signs and checks HS256 tokens. The algorithm is pinned: a token whose
/// header names any other algorithm (`none` included) is rejected.
#[derive(Clone)]
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Arc<Validation>,
    issuer: String,
    audience: String,
    ttl: Duration,
    /// Tokens that verified, with their principal and expiry.
    verified: Arc<DashMap<Box<str>, (Principal, i64)>>,
}

/// How many verified tokens [`Tokens::verify`] remembers before starting over.
pub const VERIFIED_CACHE: usize = 10_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token has expired")]
    Expired,
    #[error("token is invalid")]
    Invalid,
}

impl Tokens {
    pub fn new(secret: &[u8], config: &AuthConfig) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[&config.audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation: Arc::new(validation),
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            ttl: config.token_ttl,
            verified: Arc::new(DashMap::new()),
        }
    }

    pub fn issue(&self, user: &User) -> Result<String, jsonwebtoken::errors::Error> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user.id.to_string(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            exp: now + i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX / 2),
            org: user.org_id,
            role: user.role,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    /// Verifies signature, algorithm, expiry, issuer and audience.
    ///
    /// A client sends the same token with every request, so tokens that
    /// verified are remembered (by their exact text, up to
    /// [`VERIFIED_CACHE`] of them) until they expire: a repeat costs a map
    /// lookup instead of two base64 decodes, two JSON parses and an HMAC.
    /// Only successful verifications are kept, and expiry is checked on
    /// every use, so the cache never admits a token `decode` would refuse.
    pub fn verify(&self, token: &str) -> Result<Principal, TokenError> {
        let now = chrono::Utc::now().timestamp();
        if let Some(hit) = self.verified.get(token) {
            let (principal, exp) = *hit;
            if exp + i64::try_from(self.validation.leeway).unwrap_or(0) > now {
                return Ok(principal);
            }
            drop(hit);
            self.verified.remove(token);
            return Err(TokenError::Expired);
        }
        let principal = self.decode(token)?;
        if self.verified.len() >= VERIFIED_CACHE {
            self.verified.clear();
        }
        self.verified.insert(token.into(), principal);
        Ok(principal.0)
    }

    fn decode(&self, token: &str) -> Result<(Principal, i64), TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })?;
        let claims = data.claims;
        let user_id: i64 = claims.sub.parse().map_err(|_| TokenError::Invalid)?;
        if claims.role == Role::Service {
            return Err(TokenError::Invalid);
        }
        let principal = Principal {
            org_id: claims.org,
            role: claims.role,
            kind: PrincipalKind::User(user_id),
        };
        Ok((principal, claims.exp))
    }
}

/// A fresh signing secret: 48 random bytes, hex-encoded.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 48];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Reads the secret kept at `path`, generating the file (mode 0600) on
/// first start.
pub fn load_or_create_secret_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    use anyhow::Context as _;
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().len() >= 32 => return Ok(text.trim().as_bytes().to_vec()),
        Ok(_) => anyhow::bail!(
            "{}: the stored JWT secret is too short; delete the file to regenerate it",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let secret = generate_secret();
    write_private(path, &secret).with_context(|| format!("writing {}", path.display()))?;
    Ok(secret.into_bytes())
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

/// The prefix every API key starts with, so leaked keys are easy to grep for.
pub const API_KEY_PREFIX: &str = "gwk_";

/// A fresh API key: `(key, shown prefix, stored hash)`.
pub fn generate_api_key() -> (String, String, String) {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    let key = format!("{API_KEY_PREFIX}{}", hex::encode(bytes));
    let prefix = key[..API_KEY_PREFIX.len() + 8].to_owned();
    let hash = hash_api_key(&key);
    (key, prefix, hash)
}

pub fn hash_api_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn user() -> User {
        let now = chrono::Utc::now();
        User {
            id: 7,
            org_id: 3,
            username: Some("alice".into()),
            email: "alice@example.com".into(),
            full_name: None,
            role: Role::Agent,
            is_active: true,
            created_at: now,
            updated_at: now,
            last_login_at: None,
        }
    }

    fn tokens() -> Tokens {
        Tokens::new(
            b"0123456789abcdef0123456789abcdef",
            &Config::defaults().auth,
        )
    }

    #[test]
    fn token_round_trip() {
        let t = tokens();
        let token = t.issue(&user()).expect("issue");
        let p = t.verify(&token).expect("verify");
        assert_eq!(p.user_id(), Some(7));
        assert_eq!(p.org_id, 3);
        assert_eq!(p.role, Role::Agent);
    }

    #[test]
    fn remembered_tokens_still_expire() {
        let t = tokens();
        let token = t.issue(&user()).expect("issue");
        assert!(t.verify(&token).is_ok());
        assert!(t.verify(&token).is_ok(), "second use comes from the cache");
        // Forge an expired cache entry: a cached token past its expiry is refused.
        let principal = t.verify(&token).expect("verify");
        t.verified.insert(
            token.as_str().into(),
            (principal, chrono::Utc::now().timestamp() - 60),
        );
        assert_eq!(t.verify(&token), Err(TokenError::Expired));
        assert!(t.verified.get(token.as_str()).is_none());
    }

    #[test]
    fn other_key_rejected() {
        let token = tokens().issue(&user()).expect("issue");
        let other = Tokens::new(
            b"another-secret-another-secret-xx",
            &Config::defaults().auth,
        );
        assert_eq!(other.verify(&token), Err(TokenError::Invalid));
    }

    #[tokio::test]
    async fn passwords_verify() {
        let p = Passwords::new(1).expect("passwords");
        let hash = p.hash("correct horse".into()).await.expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        assert!(
            p.verify("correct horse".into(), Some(hash.clone()))
                .await
                .expect("verify")
        );
        assert!(!p.verify("wrong".into(), Some(hash)).await.expect("verify"));
        assert!(
            !p.verify("not a password of anyone's".into(), None)
                .await
                .expect("verify")
        );
    }

    #[test]
    fn api_keys_hash_stably() {
        let (key, prefix, hash) = generate_api_key();
        assert!(key.starts_with(API_KEY_PREFIX));
        assert!(key.starts_with(&prefix));
        assert_eq!(hash_api_key(&key), hash);
        assert_ne!(generate_api_key().0, key);
    }
}
