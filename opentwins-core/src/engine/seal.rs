//! Search cursors as opaque tokens: the position a search continues from (the last item's sort
//! values and id) is encrypted and authenticated with this instance's key (ChaCha20-Poly1305),
//! bound to the caller's subjects. A cursor shows nothing in clear, cannot be forged or edited,
//! and is refused when another caller presents it.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

use crate::error::{Error, ErrorKind, Result};
use crate::policy::AuthContext;

/// Bytes of the nonce that leads every sealed cursor.
const NONCE_LEN: usize = 12;

/// Seals and opens search cursors with one key.
pub(super) struct CursorSeal {
    cipher: ChaCha20Poly1305,
}

impl CursorSeal {
    /// A seal with `key` (64 hex digits), or with a random key when `None`: cursors then stay
    /// valid as long as this process runs.
    pub(super) fn new(key: Option<&str>) -> Result<Self> {
        let key = match key {
            Some(hex) => Key::from(parse_key(hex)?),
            None => ChaCha20Poly1305::generate_key(&mut OsRng),
        };
        Ok(CursorSeal {
            cipher: ChaCha20Poly1305::new(&key),
        })
    }

    /// The opaque form of `cursor` for `auth`.
    pub(super) fn seal(&self, auth: &AuthContext, cursor: &str) -> String {
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = bound_to(auth);
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: cursor.as_bytes(),
                    aad: &aad,
                },
            )
            .expect("ChaCha20-Poly1305 encrypts any message of a cursor's size");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// The cursor sealed in `token`, if `token` was sealed with this key for `auth`.
    pub(super) fn open(&self, auth: &AuthContext, token: &str) -> Result<String> {
        let bytes = URL_SAFE_NO_PAD
            .decode(token.trim_end_matches('='))
            .map_err(|_| invalid())?;
        if bytes.len() < NONCE_LEN {
            return Err(invalid());
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let aad = bound_to(auth);
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .map_err(|_| invalid())?;
        String::from_utf8(plain).map_err(|_| invalid())
    }
}

/// The caller a cursor belongs to, as associated data: its subjects, sorted, NUL-separated.
fn bound_to(auth: &AuthContext) -> Vec<u8> {
    let mut subjects: Vec<&str> = auth.subjects().iter().map(String::as_str).collect();
    subjects.sort_unstable();
    subjects.join("\0").into_bytes()
}

fn parse_key(hex: &str) -> Result<[u8; 32]> {
    let bad =
        || Error::field_invalid("The cursor_key must be 64 hex digits (32 bytes).".to_string());
    let hex = hex.trim().as_bytes();
    if hex.len() != 64 {
        return Err(bad());
    }
    let mut key = [0u8; 32];
    for (byte, pair) in key.iter_mut().zip(hex.chunks(2)) {
        let text = std::str::from_utf8(pair).map_err(|_| bad())?;
        *byte = u8::from_str_radix(text, 16).map_err(|_| bad())?;
    }
    Ok(key)
}

fn invalid() -> Error {
    Error::new(
        ErrorKind::OptionInvalid,
        "The search option 'cursor' is invalid: it is not a cursor this search returned to you."
            .to_string(),
    )
    .with_description(
        "Use the cursor of the previous page, as the same caller, or search without a cursor.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(s: &str) -> AuthContext {
        AuthContext::new([s.to_string()])
    }

    #[test]
    fn a_sealed_cursor_opens_only_for_its_caller_and_key() {
        let seal = CursorSeal::new(None).unwrap();
        let alice = caller("basic:alice");
        let plain = r#"{"v":1,"k":[["the secret"]],"t":"a:b"}"#;
        let token = seal.seal(&alice, plain);
        assert!(!token.contains("secret"));
        let text = String::from_utf8_lossy(&URL_SAFE_NO_PAD.decode(&token).unwrap()).to_string();
        assert!(!text.contains("secret"), "nothing in clear: {text}");
        assert_eq!(seal.open(&alice, &token).unwrap(), plain);
        // Same caller with subjects in another order: the same caller.
        let both = AuthContext::new(["b:x".to_string(), "basic:alice".to_string()]);
        let again = AuthContext::new(["basic:alice".to_string(), "b:x".to_string()]);
        assert_eq!(seal.open(&again, &seal.seal(&both, plain)).unwrap(), plain);
        // Another caller, another key, an edited or cut token: refused.
        assert!(seal.open(&caller("basic:bob"), &token).is_err());
        assert!(CursorSeal::new(None).unwrap().open(&alice, &token).is_err());
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(seal.open(&alice, &URL_SAFE_NO_PAD.encode(&bytes)).is_err());
        for bad in ["", "AAAA", "!!", &token[..10]] {
            let e = seal.open(&alice, bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::OptionInvalid);
        }
    }

    #[test]
    fn a_configured_key_survives_restarts() {
        let key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let alice = caller("basic:alice");
        let token = CursorSeal::new(Some(key)).unwrap().seal(&alice, "c");
        assert_eq!(
            CursorSeal::new(Some(key))
                .unwrap()
                .open(&alice, &token)
                .unwrap(),
            "c"
        );
        for bad in ["", "00", &key[1..], &format!("{}zz", &key[2..])] {
            assert!(CursorSeal::new(Some(bad)).is_err(), "{bad}");
        }
    }
}
