//! TLS on the listeners (rustls with the aws-lc-rs provider).
//!
//! - [`load_certified_key`] reads a PEM certificate chain and private key and
//!   checks that they belong together; `check-config` and reloads use it, so
//!   a broken pair is refused before it could be served.
//! - [`ReloadableCert`] is the certificate resolver of a listener: it serves
//!   whatever [`CertifiedKey`] it currently holds, and a reload swaps that key
//!   without touching open connections (they keep the certificate they
//!   negotiated; new handshakes see the new one).
//! - [`acceptor`] builds the listener's acceptor, offering ALPN `h2` and
//!   `http/1.1`.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
};

use arc_swap::ArcSwap;
use rustls::{
    crypto::CryptoProvider,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
    ServerConfig,
};

/// Why a certificate and key could not be used. Never contains key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: PathBuf },
    #[error("{path}: not a valid PEM certificate chain")]
    BadCertificate { path: PathBuf },
    #[error("{path}: no PEM private key found (PKCS#8, PKCS#1 or SEC1 expected)")]
    NoKey { path: PathBuf },
    #[error("{key}: unusable private key for {cert}: {reason}")]
    BadKey {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("cannot build the TLS configuration: {0}")]
    Config(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads `cert` (PEM chain, end-entity first) and `key` (PEM private key) and
/// checks that the key belongs to the certificate.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let cert_pem = std::fs::read(cert).map_err(|source| TlsError::Read {
        path: cert.to_owned(),
        source,
    })?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| TlsError::BadCertificate {
            path: cert.to_owned(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_owned(),
        });
    }
    let key_pem = zeroize::Zeroizing::new(std::fs::read(key).map_err(|source| TlsError::Read {
        path: key.to_owned(),
        source,
    })?);
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::NoKey {
        path: key.to_owned(),
    })?;
    let certified =
        CertifiedKey::from_der(chain, private, &provider()).map_err(|e| TlsError::BadKey {
            cert: cert.to_owned(),
            key: key.to_owned(),
            reason: describe(&e),
        })?;
    // `from_der` skips the comparison when the key type cannot report its
    // public half; odgw insists, so a mismatched pair never reaches a client.
    certified.keys_match().map_err(|e| TlsError::BadKey {
        cert: cert.to_owned(),
        key: key.to_owned(),
        reason: describe(&e),
    })?;
    Ok(certified)
}

fn describe(error: &rustls::Error) -> String {
    match error {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
            "the private key does not match the certificate".to_owned()
        }
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown) => {
            "cannot tell whether the private key matches the certificate".to_owned()
        }
        other => other.to_string(),
    }
}

/// A listener's certificate, swappable while serving.
pub struct ReloadableCert {
    current: ArcSwap<CertifiedKey>,
}

impl fmt::Debug for ReloadableCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadableCert").finish_non_exhaustive()
    }
}

impl ReloadableCert {
    pub fn new(key: CertifiedKey) -> Self {
        Self {
            current: ArcSwap::from_pointee(key),
        }
    }

    /// Serves `key` to every handshake from now on.
    pub fn replace(&self, key: CertifiedKey) {
        self.current.store(Arc::new(key));
    }

    /// The certified key handed to new handshakes.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }

    /// The DER of the end-entity certificate now served.
    pub fn end_entity_der(&self) -> Option<Vec<u8>> {
        self.current
            .load()
            .cert
            .first()
            .map(|c| c.as_ref().to_vec())
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// A TLS acceptor serving `cert`, offering ALPN `h2` then `http/1.1`.
pub fn acceptor(cert: Arc<ReloadableCert>) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str) -> (PathBuf, PathBuf, Vec<u8>) {
        let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, generated.cert.pem()).unwrap();
        std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
        (cert, key, generated.cert.der().to_vec())
    }

    #[test]
    fn loads_a_matching_pair() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, der) = pair(dir.path(), "a");
        let loaded = load_certified_key(&cert, &key).unwrap();
        assert_eq!(loaded.cert[0].as_ref(), der.as_slice());
    }

    #[test]
    fn refuses_a_key_of_another_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_a, _, _) = pair(dir.path(), "a");
        let (_, key_b, _) = pair(dir.path(), "b");
        let err = load_certified_key(&cert_a, &key_b).unwrap_err().to_string();
        assert!(err.contains("does not match"), "{err}");
    }

    #[test]
    fn refuses_missing_and_garbage_files() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, _) = pair(dir.path(), "a");
        let err = load_certified_key(&dir.path().join("nope"), &key).unwrap_err();
        assert!(err.to_string().starts_with("cannot read"), "{err}");
        let junk = dir.path().join("junk");
        std::fs::write(&junk, "not pem at all\n").unwrap();
        let err = load_certified_key(&junk, &key).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
        let err = load_certified_key(&cert, &junk).unwrap_err();
        assert!(matches!(err, TlsError::NoKey { .. }), "{err}");
        // A certificate file handed over as the key: no key in it.
        let err = load_certified_key(&cert, &cert).unwrap_err();
        assert!(matches!(err, TlsError::NoKey { .. }), "{err}");
    }

    #[test]
    fn replace_changes_what_new_handshakes_get() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_a, key_a, der_a) = pair(dir.path(), "a");
        let (cert_b, key_b, der_b) = pair(dir.path(), "b");
        let served = ReloadableCert::new(load_certified_key(&cert_a, &key_a).unwrap());
        assert_eq!(served.end_entity_der().unwrap(), der_a);
        served.replace(load_certified_key(&cert_b, &key_b).unwrap());
        assert_eq!(served.end_entity_der().unwrap(), der_b);
        assert_eq!(served.current().cert[0].as_ref(), der_b.as_slice());
    }
}
