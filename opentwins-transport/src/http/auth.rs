//! Authentication: HTTP Basic users (Argon2 password hashes), bearer tokens (SHA-256 digests),
//! an optional trusted pre-authentication header, and opt-in anonymous access. The result is the
//! caller's [`AuthContext`]; every command then goes through the engine's policy check with it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, HeaderName};
use base64::Engine as _;
use opentwins_core::policy::{AuthContext, validate_subject_id};
use sha2::{Digest, Sha256};

use super::HttpError;
use super::config::AuthConfig;

/// Hashes a password for [`super::UserConfig::password_hash`]: Argon2id with a random salt,
/// in PHC string format.
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::encode_b64(uuid::Uuid::new_v4().as_bytes())
        .expect("16 bytes always encode as a salt");
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters hashes any password")
        .to_string()
}

/// The digest of a bearer token for [`super::TokenConfig::sha256`]: lower-case hex SHA-256.
pub fn hash_token(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// A new random bearer token: 64 hex digits (244 random bits, from the system's generator).
pub fn generate_token() -> String {
    let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    hex(&[a.as_bytes().as_slice(), b.as_bytes().as_slice()].concat())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AuthFailure {
    /// No credentials and anonymous access is off.
    Missing,
    /// Credentials were given but are wrong or malformed.
    Invalid(&'static str),
    /// Every password check slot is taken (a flood of Basic attempts): try again later.
    Busy,
    /// This client sent too many wrong passwords: no check before this long.
    Throttled(Duration),
}

/// How long a Basic request waits for a password check slot before it is answered 503.
const HASH_WAIT: Duration = Duration::from_secs(2);

struct User {
    phc: String,
    /// The user's subjects, built once (cloning it is a reference count).
    context: AuthContext,
}

/// The configured credentials, checked per request.
pub(crate) struct Authenticator {
    users: HashMap<String, User>,
    tokens: HashMap<String, String>,
    pre_auth: Option<HeaderName>,
    anonymous: Option<AuthContext>,
    pub(crate) realm: String,
    /// Per user, the SHA-256 of the last password that passed Argon2: later requests with the
    /// same password skip the (deliberately slow) Argon2 check. Bounded by the number of users.
    verified: Mutex<HashMap<String, [u8; 32]>>,
    /// Argon2 checks running at once: one per core. Each costs ~19 MiB and tens of ms, so an
    /// unbounded number would let a flood of wrong passwords exhaust memory.
    hashing: Arc<tokio::sync::Semaphore>,
    /// Wrong passwords per client address.
    failures: Throttle,
}

impl Authenticator {
    pub(crate) fn new(config: &AuthConfig) -> Result<Self, HttpError> {
        let bad = |what: String| HttpError::Config(what);
        let mut users = HashMap::new();
        for u in &config.users {
            if u.name.is_empty() || u.name.contains(':') {
                return Err(bad(format!(
                    "user name '{}' must be non-empty and without ':'",
                    u.name
                )));
            }
            PasswordHash::new(&u.password_hash).map_err(|e| {
                bad(format!(
                    "password_hash of user '{}' is not a PHC string: {e}",
                    u.name
                ))
            })?;
            let mut subjects = vec![format!("basic:{}", u.name)];
            subjects.extend(u.subjects.iter().cloned());
            for s in &subjects {
                validate_subject_id(s).map_err(|e| bad(format!("user '{}': {e}", u.name)))?;
            }
            users.insert(
                u.name.clone(),
                User {
                    phc: u.password_hash.clone(),
                    context: AuthContext::new(subjects),
                },
            );
        }
        let mut tokens = HashMap::new();
        for t in &config.tokens {
            let digest = t.sha256.to_ascii_lowercase();
            if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(format!(
                    "token of subject '{}': sha256 must be 64 hex digits",
                    t.subject
                )));
            }
            validate_subject_id(&t.subject).map_err(|e| bad(format!("token subject: {e}")))?;
            tokens.insert(digest, t.subject.clone());
        }
        let pre_auth = config
            .pre_authenticated_header
            .as_deref()
            .map(|h| {
                HeaderName::try_from(h.to_ascii_lowercase())
                    .map_err(|e| bad(format!("pre_authenticated_header '{h}': {e}")))
            })
            .transpose()?;
        let anonymous = if config.anonymous {
            validate_subject_id(&config.anonymous_subject)
                .map_err(|e| bad(format!("anonymous_subject: {e}")))?;
            Some(AuthContext::new([config.anonymous_subject.clone()]))
        } else {
            None
        };
        Ok(Authenticator {
            users,
            tokens,
            pre_auth,
            anonymous,
            realm: config.realm.clone(),
            verified: Mutex::new(HashMap::new()),
            hashing: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, usize::from),
            )),
            failures: Throttle::new(config.failed_logins_per_minute),
        })
    }

    /// The caller of a request with these headers from `client` (the peer's address; `None`
    /// when unknown, as for a router called in-process: then no throttling).
    pub(crate) async fn authenticate(
        &self,
        headers: &HeaderMap,
        client: Option<IpAddr>,
    ) -> Result<AuthContext, AuthFailure> {
        if let Some(name) = &self.pre_auth
            && let Some(value) = headers.get(name)
        {
            let value = value
                .to_str()
                .map_err(|_| AuthFailure::Invalid("the pre-authenticated header is not text"))?;
            let subjects: Vec<&str> = value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            if subjects.is_empty() || subjects.iter().any(|s| validate_subject_id(s).is_err()) {
                return Err(AuthFailure::Invalid(
                    "the pre-authenticated header must list subjects 'issuer:subject'",
                ));
            }
            return Ok(AuthContext::new(subjects));
        }
        let Some(value) = headers.get(AUTHORIZATION) else {
            return self.anonymous.clone().ok_or(AuthFailure::Missing);
        };
        let value = value
            .to_str()
            .map_err(|_| AuthFailure::Invalid("the Authorization header is not text"))?;
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            // The attempt is counted before its check, so concurrent guesses cannot all slip
            // in under the limit; a success forgets the count, an undecided one is refunded.
            if let Some(client) = client {
                self.failures
                    .begin(client)
                    .map_err(AuthFailure::Throttled)?;
            }
            let result = self.basic(rest).await;
            if let Some(client) = client {
                match &result {
                    Err(AuthFailure::Invalid(_)) => {}
                    Ok(_) => self.failures.succeeded(client),
                    Err(_) => self.failures.refund(client),
                }
            }
            result
        } else if scheme.eq_ignore_ascii_case("bearer") {
            self.tokens
                .get(&hash_token(rest))
                .map(|s| AuthContext::new([s.clone()]))
                .ok_or(AuthFailure::Invalid("unknown bearer token"))
        } else {
            Err(AuthFailure::Invalid("unsupported authentication scheme"))
        }
    }

    async fn basic(&self, encoded: &str) -> Result<AuthContext, AuthFailure> {
        const BAD: AuthFailure = AuthFailure::Invalid("wrong user name or password");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or(AuthFailure::Invalid("malformed Basic credentials"))?;
        let (name, password) = decoded
            .split_once(':')
            .ok_or(AuthFailure::Invalid("malformed Basic credentials"))?;
        let Some(user) = self.users.get(name) else {
            // Spend the same time as for a known user, so user names cannot be probed.
            let _ = self.check(dummy_hash(), password).await?;
            return Err(BAD);
        };
        let digest: [u8; 32] = Sha256::new()
            .chain_update(name.as_bytes())
            .chain_update([0u8])
            .chain_update(password.as_bytes())
            .finalize()
            .into();
        let known = self
            .verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .is_some_and(|d| constant_time_eq(d, &digest));
        if !known {
            if !self.check(&user.phc, password).await? {
                return Err(BAD);
            }
            self.verified
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(name.to_owned(), digest);
        }
        Ok(user.context.clone())
    }

    /// Checks `password` against the Argon2 hash `phc` on a blocking thread, at most one per
    /// core at once; [`AuthFailure::Busy`] when no slot frees within [`HASH_WAIT`].
    async fn check(&self, phc: &str, password: &str) -> Result<bool, AuthFailure> {
        let permit = tokio::time::timeout(HASH_WAIT, self.hashing.clone().acquire_owned())
            .await
            .map_err(|_| AuthFailure::Busy)?
            .map_err(|_| AuthFailure::Busy)?;
        let (phc, password) = (phc.to_owned(), password.to_owned());
        let ok = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            verify(&phc, &password)
        })
        .await
        .unwrap_or(false);
        Ok(ok)
    }
}

/// How long a client's count of wrong passwords lasts.
const THROTTLE_WINDOW: Duration = Duration::from_secs(60);
/// Client addresses tracked at once; beyond it (a flood from very many addresses) new ones are
/// not throttled, and the password check slots still bound the work.
const MAX_TRACKED: usize = 65_536;

/// Counts wrong passwords per client address in fixed one-minute windows.
struct Throttle {
    limit: u32,
    clients: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Throttle {
    fn new(limit: u32) -> Self {
        Throttle {
            limit,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Counts an attempt of `client`; `Err(wait)` when it used up its attempts for the
    /// current window.
    fn begin(&self, client: IpAddr) -> Result<(), Duration> {
        if self.limit == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if clients.len() >= MAX_TRACKED && !clients.contains_key(&key(client)) {
            clients.retain(|_, (start, _)| now.duration_since(*start) < THROTTLE_WINDOW);
            if clients.len() >= MAX_TRACKED {
                return Ok(());
            }
        }
        let (start, count) = clients.entry(key(client)).or_insert((now, 0));
        let elapsed = now.duration_since(*start);
        if elapsed >= THROTTLE_WINDOW {
            (*start, *count) = (now, 0);
        }
        if *count >= self.limit {
            return Err(THROTTLE_WINDOW - elapsed);
        }
        *count += 1;
        Ok(())
    }

    /// Gives back an attempt that was not decided (no password check slot was free).
    fn refund(&self, client: IpAddr) {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, count)) = clients.get_mut(&key(client)) {
            *count = count.saturating_sub(1);
        }
    }

    fn succeeded(&self, client: IpAddr) {
        if self.limit > 0 {
            self.clients
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&key(client));
        }
    }
}

/// The address a client is counted under: IPv4 as is, IPv6 by its /64 (one host commonly
/// holds a whole /64, so single addresses would cost an attacker nothing).
fn key(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((v6.to_bits() & !u128::from(u64::MAX)).into()),
        },
        v4 => v4,
    }
}

fn verify(phc: &str, password: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("not a password anyone uses"))
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;
    use crate::http::config::{TokenConfig, UserConfig};

    fn basic(user: &str, pw: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {v}")).unwrap(),
        );
        h
    }

    #[tokio::test]
    async fn password_checks_are_bounded_and_a_flood_is_told_to_wait() {
        let config = AuthConfig {
            users: vec![UserConfig {
                name: "alice".into(),
                password_hash: hash_password("s3cret"),
                subjects: vec![],
            }],
            ..AuthConfig::default()
        };
        let a = Authenticator::new(&config).unwrap();
        // Every slot taken, as by a flood of wrong passwords: known and unknown users alike
        // are answered Busy once the wait is over, without an Argon2 check of their own.
        let slots = a.hashing.available_permits();
        assert!(slots >= 1);
        let held = a
            .hashing
            .clone()
            .acquire_many_owned(slots as u32)
            .await
            .unwrap();
        for (user, password) in [("alice", "s3cret"), ("nobody", "x")] {
            let got =
                tokio::time::timeout(HASH_WAIT * 3, a.authenticate(&basic(user, password), None))
                    .await
                    .expect("a bounded wait");
            assert!(matches!(got, Err(AuthFailure::Busy)), "{user}");
        }
        drop(held);
        a.authenticate(&basic("alice", "s3cret"), None)
            .await
            .unwrap();
        assert_eq!(
            a.hashing.available_permits(),
            slots,
            "every slot is given back"
        );
    }

    #[tokio::test]
    async fn wrong_passwords_are_throttled_per_client_address() {
        let config = AuthConfig {
            users: vec![UserConfig {
                name: "alice".into(),
                password_hash: hash_password("s3cret"),
                subjects: vec![],
            }],
            failed_logins_per_minute: 3,
            ..AuthConfig::default()
        };
        let a = Authenticator::new(&config).unwrap();
        let (mallory, alice): (IpAddr, IpAddr) =
            ("10.0.0.7".parse().unwrap(), "10.0.0.8".parse().unwrap());
        for _ in 0..3 {
            let got = a
                .authenticate(&basic("alice", "guess"), Some(mallory))
                .await;
            assert!(matches!(got, Err(AuthFailure::Invalid(_))), "{got:?}");
        }
        // The fourth attempt is not checked at all, even with the right password.
        for password in ["guess", "s3cret"] {
            let got = a
                .authenticate(&basic("alice", password), Some(mallory))
                .await;
            match got {
                Err(AuthFailure::Throttled(wait)) => assert!(wait <= THROTTLE_WINDOW),
                other => panic!("{other:?}"),
            }
        }
        // Concurrent guesses from a fresh address: no more than the limit are checked.
        let a = Arc::new(a);
        let eve: IpAddr = "10.0.0.9".parse().unwrap();
        let guesses: Vec<_> = (0..12)
            .map(|_| {
                let a = a.clone();
                tokio::spawn(async move { a.authenticate(&basic("alice", "x"), Some(eve)).await })
            })
            .collect();
        let mut checked = 0;
        for guess in guesses {
            match guess.await.unwrap() {
                Err(AuthFailure::Invalid(_)) => checked += 1,
                Err(AuthFailure::Throttled(_)) => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(checked, 3);
        // Other addresses, bearer tokens and in-process callers are not affected.
        a.authenticate(&basic("alice", "s3cret"), Some(alice))
            .await
            .unwrap();
        a.authenticate(&basic("alice", "s3cret"), None)
            .await
            .unwrap();
        // An IPv6 client is counted by its /64, an IPv4-mapped one as its IPv4 address.
        assert_eq!(
            key("2001:db8:1:2:aaaa::1".parse().unwrap()),
            key("2001:db8:1:2:bbbb::9".parse().unwrap())
        );
        assert_ne!(
            key("2001:db8:1:2::1".parse().unwrap()),
            key("2001:db8:1:3::1".parse().unwrap())
        );
        assert_eq!(key("::ffff:10.0.0.7".parse().unwrap()), mallory);
        // A successful login forgets earlier failures; an undecided attempt is given back.
        for _ in 0..2 {
            a.failures.begin(alice).unwrap();
        }
        a.authenticate(&basic("alice", "s3cret"), Some(alice))
            .await
            .unwrap();
        for _ in 0..3 {
            a.failures.begin(alice).unwrap();
        }
        assert!(a.failures.begin(alice).is_err());
        a.failures.refund(alice);
        a.failures.begin(alice).unwrap();
        // 0 turns the throttle off.
        let off = Throttle::new(0);
        for _ in 0..100 {
            off.begin(mallory).unwrap();
        }
    }

    #[tokio::test]
    async fn basic_token_preauth_anonymous() {
        let config = AuthConfig {
            users: vec![UserConfig {
                name: "alice".into(),
                password_hash: hash_password("s3cret"),
                subjects: vec!["group:ops".into()],
            }],
            tokens: vec![TokenConfig {
                sha256: hash_token("tok-42"),
                subject: "token:vehicle-42".into(),
            }],
            pre_authenticated_header: Some("X-OpenTwins-Subject".into()),
            ..AuthConfig::default()
        };
        let a = Authenticator::new(&config).unwrap();
        for _ in 0..2 {
            // The second round hits the verified-password cache.
            let ctx = a
                .authenticate(&basic("alice", "s3cret"), None)
                .await
                .unwrap();
            assert_eq!(ctx.subjects(), ["basic:alice", "group:ops"]);
        }
        assert!(matches!(
            a.authenticate(&basic("alice", "wrong"), None).await,
            Err(AuthFailure::Invalid(_))
        ));
        assert!(matches!(
            a.authenticate(&basic("bob", "s3cret"), None).await,
            Err(AuthFailure::Invalid(_))
        ));
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer tok-42"));
        assert_eq!(
            a.authenticate(&h, None).await.unwrap().subjects(),
            ["token:vehicle-42"]
        );
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer tok-43"));
        assert!(a.authenticate(&h, None).await.is_err());
        h.insert(AUTHORIZATION, HeaderValue::from_static("Digest x"));
        assert!(a.authenticate(&h, None).await.is_err());
        assert_eq!(
            a.authenticate(&HeaderMap::new(), None).await,
            Err(AuthFailure::Missing)
        );
        let mut h = HeaderMap::new();
        h.insert(
            "x-opentwins-subject",
            HeaderValue::from_static("proxy:carol, group:x"),
        );
        assert_eq!(
            a.authenticate(&h, None).await.unwrap().subjects(),
            ["proxy:carol", "group:x"]
        );
        h.insert("x-opentwins-subject", HeaderValue::from_static("nocolon"));
        assert!(a.authenticate(&h, None).await.is_err());

        let anon = Authenticator::new(&AuthConfig {
            anonymous: true,
            ..AuthConfig::default()
        })
        .unwrap();
        assert_eq!(
            anon.authenticate(&HeaderMap::new(), None)
                .await
                .unwrap()
                .subjects(),
            ["anonymous:anonymous"]
        );
        // Wrong credentials never fall back to anonymous.
        assert!(anon.authenticate(&basic("x", "y"), None).await.is_err());
    }

    #[test]
    fn bad_config_is_refused() {
        let bad_hash = AuthConfig {
            users: vec![UserConfig {
                name: "a".into(),
                password_hash: "plain".into(),
                subjects: vec![],
            }],
            ..AuthConfig::default()
        };
        assert!(Authenticator::new(&bad_hash).is_err());
        let bad_token = AuthConfig {
            tokens: vec![TokenConfig {
                sha256: "abc".into(),
                subject: "token:x".into(),
            }],
            ..AuthConfig::default()
        };
        assert!(Authenticator::new(&bad_token).is_err());
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
