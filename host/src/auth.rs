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
    /// The user's token generation when the token was issued: bumping it
    /// (deactivation, a role or password change) ends the token.
    #[serde(default)]
    pub tgen: i64,
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
    /// Tokens that verified, with what they say and when their user was
    /// last looked at.
    verified: Arc<DashMap<Box<str>, Verified>>,
    /// Bumped by every revocation: a check that read a user's record before
    /// one does not mark the token confirmed.
    revocations: Arc<std::sync::atomic::AtomicU64>,
}

/// A token that verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub principal: Principal,
    /// Expiry, Unix seconds.
    exp: i64,
    /// The user's token generation the token was issued under.
    pub generation: i64,
    /// When the user's record last confirmed the token; `None`: never.
    checked: Option<std::time::Instant>,
}

impl Verified {
    /// Whether the user's record must be read before the token is trusted:
    /// on first sight, then every [`RECHECK_EVERY`].
    pub fn needs_check(&self) -> bool {
        self.checked.is_none_or(|at| at.elapsed() >= RECHECK_EVERY)
    }
}

/// How long a token's check against its user's record holds. Revocations
/// made by this process take effect at once ([`Tokens::forget_user`]);
/// those made elsewhere (another node, the CLI, SQL) within this time.
pub const RECHECK_EVERY: Duration = Duration::from_secs(10);

/// How many verified tokens [`Tokens::verify`] remembers before starting over.
pub const VERIFIED_CACHE: usize = 10_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token has expired")]
    Expired,
    #[error("token is invalid")]
    Invalid,
}

/// Whether `state` (the user's record now) still admits a token that
/// says `v`.
pub fn still_valid(v: &Verified, state: Option<&crate::domain::identity::TokenState>) -> bool {
    state.is_some_and(|s| {
        s.is_active
            && s.generation == v.generation
            && s.role == v.principal.role
            && s.org_id == v.principal.org_id
    })
}

impl Tokens {
    pub fn new(secret: &[u8], config: &AuthConfig) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[&config.audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.leeway = 5;
        // A token that says it is not valid yet is not valid.
        validation.validate_nbf = true;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation: Arc::new(validation),
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            ttl: config.token_ttl,
            verified: Arc::new(DashMap::new()),
            revocations: Arc::default(),
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
            tgen: user.token_generation,
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
    ///
    /// The answer says whether the user's record must be consulted
    /// ([`Verified::needs_check`]); the caller does that and reports back
    /// with [`Tokens::checked`] or [`Tokens::forget`].
    pub fn verify(&self, token: &str) -> Result<Verified, TokenError> {
        let now = chrono::Utc::now().timestamp();
        if let Some(hit) = self.verified.get(token) {
            let v = *hit;
            if v.exp + i64::try_from(self.validation.leeway).unwrap_or(0) > now {
                return Ok(v);
            }
            drop(hit);
            self.verified.remove(token);
            return Err(TokenError::Expired);
        }
        let v = self.decode(token)?;
        if self.verified.len() >= VERIFIED_CACHE {
            self.verified.clear();
        }
        self.verified.insert(token.into(), v);
        Ok(v)
    }

    /// Where revocations stand; take it before reading a user's record and
    /// hand it to [`Tokens::checked`].
    pub fn revocations(&self) -> u64 {
        self.revocations.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Records that the user's record, read when revocations stood at
    /// `since`, confirmed `token`; ignored if a revocation came meanwhile
    /// (the record read may predate it).
    pub fn checked(&self, token: &str, since: u64) {
        if let Some(mut v) = self.verified.get_mut(token)
            && self.revocations() == since
        {
            v.checked = Some(std::time::Instant::now());
        }
    }

    /// Forgets `token` (its user's record refused it).
    pub fn forget(&self, token: &str) {
        self.verified.remove(token);
    }

    /// Forgets every remembered token of user `user_id`, so that the next
    /// use of any of them consults the user's record.
    pub fn forget_user(&self, user_id: i64) {
        self.revocations
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.verified
            .retain(|_, v| v.principal.user_id() != Some(user_id));
    }

    fn decode(&self, token: &str) -> Result<Verified, TokenError> {
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
        Ok(Verified {
            principal: Principal {
                org_id: claims.org,
                role: claims.role,
                kind: PrincipalKind::User(user_id),
            },
            exp: claims.exp,
            generation: claims.tgen,
            checked: None,
        })
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
            token_generation: 0,
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
        let p = t.verify(&token).expect("verify").principal;
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
        let mut v = t.verify(&token).expect("verify");
        v.exp = chrono::Utc::now().timestamp() - 60;
        t.verified.insert(token.as_str().into(), v);
        assert_eq!(t.verify(&token), Err(TokenError::Expired));
        assert!(t.verified.get(token.as_str()).is_none());
    }

    #[test]
    fn revocation_needs_the_users_record() {
        use crate::domain::identity::TokenState;
        let t = tokens();
        let token = t.issue(&user()).expect("issue");
        let v = t.verify(&token).expect("verify");
        assert!(v.needs_check(), "first sight reads the user's record");
        let now = TokenState {
            generation: 0,
            is_active: true,
            role: Role::Agent,
            org_id: 3,
        };
        assert!(still_valid(&v, Some(&now)));
        let since = t.revocations();
        t.checked(&token, since);
        assert!(
            !t.verify(&token).expect("verify").needs_check(),
            "then the cache holds"
        );
        for refused in [
            None,
            Some(TokenState {
                generation: 1,
                ..now
            }),
            Some(TokenState {
                is_active: false,
                ..now
            }),
            Some(TokenState {
                role: Role::Customer,
                ..now
            }),
        ] {
            assert!(!still_valid(&v, refused.as_ref()));
        }
        t.forget_user(7);
        assert!(
            t.verify(&token).expect("verify").needs_check(),
            "forgotten: read again"
        );
        // A check that read the record before the revocation confirms nothing.
        t.checked(&token, since);
        assert!(t.verify(&token).expect("verify").needs_check());
    }

    #[test]
    fn tokens_not_valid_yet_are_refused() {
        let t = tokens();
        let now = chrono::Utc::now().timestamp();
        #[derive(Serialize)]
        struct Early<'a> {
            sub: &'a str,
            iss: &'a str,
            aud: &'a str,
            iat: i64,
            exp: i64,
            nbf: i64,
            org: i64,
            role: Role,
        }
        let early = Early {
            sub: "7",
            iss: "gateway",
            aud: "gateway",
            iat: now,
            exp: now + 600,
            nbf: now + 300,
            org: 3,
            role: Role::Agent,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &early, &t.encoding)
            .expect("encode");
        assert_eq!(t.verify(&token), Err(TokenError::Invalid));
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
