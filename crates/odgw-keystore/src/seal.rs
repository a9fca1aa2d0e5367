//! The master key and AES-256-GCM sealing of individual secrets.
//!
//! A sealed value is `nonce ‖ ciphertext ‖ tag` with a fresh random 96-bit
//! nonce per seal. The associated data names what the value is (which tenant,
//! which field, and the record's clear metadata), so a ciphertext moved
//! anywhere else, or a record whose metadata was edited, fails to open.

use std::fmt;

use aws_lc_rs::{
    aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN},
    rand::{SecureRandom, SystemRandom},
};
use base64::{
    alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
    Engine as _,
};
use odgw_core::{SecretString, TenantId};
use zeroize::Zeroizing;

use crate::StoreError;

/// Length of the master key in bytes (AES-256).
pub const MASTER_KEY_LEN: usize = 32;

/// Standard base64; padding optional on input, always written on output.
const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Domain separation for everything this crate seals; bump with the format.
const AAD_PREFIX: &[u8] = b"odgw/keystore/v1\0";

/// The key that seals every tenant secret: 32 bytes, zeroed on drop, never
/// printed (`Debug` shows `[redacted]`).
#[derive(Clone)]
pub struct MasterKey(Zeroizing<[u8; MASTER_KEY_LEN]>);

impl MasterKey {
    /// Parses base64 of exactly 32 bytes (as in `store.master_key_file` or
    /// `ODGW_MASTER_KEY`); surrounding whitespace is ignored.
    pub fn from_base64(text: &SecretString) -> Result<Self, StoreError> {
        // The decoder's own error names the offending byte, which is part of
        // the key, so it is replaced by a fixed message.
        let decoded = Zeroizing::new(
            B64.decode(text.expose().trim())
                .map_err(|_| StoreError::InvalidMasterKey("it is not valid base64"))?,
        );
        if decoded.len() != MASTER_KEY_LEN {
            return Err(StoreError::InvalidMasterKey(
                "it must be base64 of exactly 32 bytes (generate one with `openssl rand -base64 32`)",
            ));
        }
        let mut key = Zeroizing::new([0u8; MASTER_KEY_LEN]);
        key.copy_from_slice(&decoded);
        Ok(Self(key))
    }

    /// A new random key from the system random source.
    pub fn generate() -> Result<Self, StoreError> {
        let mut key = Zeroizing::new([0u8; MASTER_KEY_LEN]);
        SystemRandom::new()
            .fill(&mut key[..])
            .map_err(|_| StoreError::Random)?;
        Ok(Self(key))
    }

    /// The key as padded standard base64, for writing a new key file.
    pub fn to_base64(&self) -> SecretString {
        SecretString::new(B64.encode(&self.0[..]))
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Which secret field of a tenant a sealed value belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    CustomerKey,
    DeveloperKey,
}

impl Field {
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Field::CustomerKey => "customer_key",
            Field::DeveloperKey => "developer_key",
        }
    }
}

/// What a sealed value is bound to.
pub(crate) enum Binding<'a> {
    /// The store's canary, which proves the master key on open.
    Canary,
    /// One secret field of one tenant, plus the record's clear metadata as
    /// stored, so editing e.g. `base_url` on disk is detected too.
    Tenant {
        id: &'a TenantId,
        field: Field,
        meta: &'a [u8],
    },
}

impl Binding<'_> {
    fn aad(&self) -> Vec<u8> {
        let mut aad = AAD_PREFIX.to_vec();
        match self {
            Binding::Canary => aad.extend_from_slice(b"canary"),
            // Tenant ids and field names cannot contain NUL, so the NUL
            // separators make the encoding unambiguous.
            Binding::Tenant { id, field, meta } => {
                aad.extend_from_slice(b"tenant\0");
                aad.extend_from_slice(id.as_str().as_bytes());
                aad.push(0);
                aad.extend_from_slice(field.name().as_bytes());
                aad.push(0);
                aad.extend_from_slice(meta);
            }
        }
        aad
    }
}

/// The AEAD key derived from a [`MasterKey`], plus the nonce source.
pub(crate) struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer(AES-256-GCM)")
    }
}

/// A sealed value failed to authenticate. Callers turn this into a
/// [`StoreError`] that says what was being opened.
#[derive(Debug)]
pub(crate) struct OpenFailed;

impl Sealer {
    pub(crate) fn new(master: &MasterKey) -> Result<Self, StoreError> {
        let key = UnboundKey::new(&AES_256_GCM, &master.0[..])
            .map_err(|_| StoreError::InvalidMasterKey("the key was rejected by AES-256-GCM"))?;
        Ok(Self {
            key: LessSafeKey::new(key),
            rng: SystemRandom::new(),
        })
    }

    /// Seals `plaintext`; returns base64 of `nonce ‖ ciphertext ‖ tag`.
    pub(crate) fn seal(
        &self,
        binding: &Binding<'_>,
        plaintext: &[u8],
    ) -> Result<String, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| StoreError::Random)?;
        let tag_len = AES_256_GCM.tag_len();
        // Reserving the full size up front means the buffer never reallocates
        // while it still holds plaintext, so no stray copy is left behind.
        let mut buf = Vec::with_capacity(NONCE_LEN + plaintext.len() + tag_len);
        buf.extend_from_slice(&nonce);
        let mut body = Vec::with_capacity(plaintext.len() + tag_len);
        body.extend_from_slice(plaintext);
        let sealed = self.key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(binding.aad()),
            &mut body,
        );
        if sealed.is_err() {
            // Still plaintext in that case.
            zeroize::Zeroize::zeroize(&mut body);
            return Err(StoreError::corrupt("sealing a value failed"));
        }
        buf.extend_from_slice(&body);
        Ok(B64.encode(&buf))
    }

    /// Opens a value made by [`Sealer::seal`] under the same binding.
    pub(crate) fn open(
        &self,
        binding: &Binding<'_>,
        sealed_b64: &str,
    ) -> Result<Zeroizing<Vec<u8>>, OpenFailed> {
        let raw = B64.decode(sealed_b64).map_err(|_| OpenFailed)?;
        if raw.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(OpenFailed);
        }
        let (nonce, body) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| OpenFailed)?;
        let mut buf = Zeroizing::new(body.to_vec());
        let plain_len = self
            .key
            .open_in_place(nonce, Aad::from(binding.aad()), &mut buf[..])
            .map_err(|_| OpenFailed)?
            .len();
        buf.truncate(plain_len);
        Ok(buf)
    }

    /// Opens a sealed UTF-8 secret straight into a [`SecretString`].
    pub(crate) fn open_secret(
        &self,
        binding: &Binding<'_>,
        sealed_b64: &str,
    ) -> Result<SecretString, OpenFailed> {
        let mut plain = self.open(binding, sealed_b64)?;
        // `take` moves the bytes out without copying; `plain` is left empty.
        match String::from_utf8(std::mem::take(&mut *plain)) {
            Ok(text) => Ok(SecretString::new(text)),
            Err(err) => {
                zeroize::Zeroize::zeroize(&mut err.into_bytes());
                Err(OpenFailed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(id: &str) -> TenantId {
        TenantId::parse(id).unwrap()
    }

    #[test]
    fn master_key_round_trips_and_never_prints() {
        let key = MasterKey::generate().unwrap();
        let text = key.to_base64();
        assert_eq!(text.expose().len(), 44);
        let again = MasterKey::from_base64(&text).unwrap();
        assert_eq!(again.0[..], key.0[..]);
        assert_eq!(format!("{key:?}"), "[redacted]");
        // Trailing newline from a key file and missing padding are accepted.
        let with_newline = SecretString::new(format!("{}\n", text.expose()));
        assert!(MasterKey::from_base64(&with_newline).is_ok());
        let unpadded = SecretString::new(text.expose().trim_end_matches('='));
        assert!(MasterKey::from_base64(&unpadded).is_ok());
    }

    #[test]
    fn bad_master_keys_are_refused_without_echoing_them() {
        let not_b64 = SecretString::new("this is not base64 at all!!");
        let err = MasterKey::from_base64(&not_b64).unwrap_err().to_string();
        assert_eq!(err, "invalid master key: it is not valid base64");

        let short = SecretString::new(B64.encode([7u8; 16]));
        let err = MasterKey::from_base64(&short).unwrap_err().to_string();
        assert!(err.contains("exactly 32 bytes"), "{err}");
        assert!(!err.contains(short.expose()));

        let long = SecretString::new(B64.encode([7u8; 33]));
        assert!(MasterKey::from_base64(&long).is_err());
        assert!(MasterKey::from_base64(&SecretString::new("")).is_err());
    }

    #[test]
    fn seal_open_round_trip_with_fresh_nonces() {
        let sealer = Sealer::new(&MasterKey::generate().unwrap()).unwrap();
        let id = tenant("acme");
        let binding = Binding::Tenant {
            id: &id,
            field: Field::CustomerKey,
            meta: b"{}",
        };
        let a = sealer.seal(&binding, b"VzkmZEaUWOjnQX2z").unwrap();
        let b = sealer.seal(&binding, b"VzkmZEaUWOjnQX2z").unwrap();
        assert_ne!(a, b, "each seal uses a new nonce");
        let opened = sealer.open_secret(&binding, &a).unwrap();
        assert_eq!(opened.expose(), "VzkmZEaUWOjnQX2z");
    }

    #[test]
    fn binding_mismatch_fails_to_open() {
        let sealer = Sealer::new(&MasterKey::generate().unwrap()).unwrap();
        let (a, b) = (tenant("a"), tenant("b"));
        let bind = |id, field, meta| Binding::Tenant { id, field, meta };
        let sealed = sealer
            .seal(&bind(&a, Field::CustomerKey, b"m"), b"secret")
            .unwrap();
        assert!(sealer
            .open(&bind(&a, Field::CustomerKey, b"m"), &sealed)
            .is_ok());
        assert!(sealer
            .open(&bind(&b, Field::CustomerKey, b"m"), &sealed)
            .is_err());
        assert!(sealer
            .open(&bind(&a, Field::DeveloperKey, b"m"), &sealed)
            .is_err());
        assert!(sealer
            .open(&bind(&a, Field::CustomerKey, b"n"), &sealed)
            .is_err());
        assert!(sealer.open(&Binding::Canary, &sealed).is_err());

        let other = Sealer::new(&MasterKey::generate().unwrap()).unwrap();
        assert!(other
            .open(&bind(&a, Field::CustomerKey, b"m"), &sealed)
            .is_err());

        // Truncated, garbage and flipped-bit inputs fail cleanly.
        assert!(sealer.open(&Binding::Canary, "").is_err());
        assert!(sealer.open(&Binding::Canary, "not base64!").is_err());
        let mut raw = B64.decode(&sealed).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let flipped = B64.encode(&raw);
        assert!(sealer
            .open(&bind(&a, Field::CustomerKey, b"m"), &flipped)
            .is_err());
    }
}
