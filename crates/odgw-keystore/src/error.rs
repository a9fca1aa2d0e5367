use std::path::PathBuf;

/// Why a key store operation failed. Messages are lowercase, name the tenant
/// or file involved, and never contain key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store's sealed canary does not open with the configured master key.
    #[error(
        "the master key does not match the one this key store was created with \
         (check store.master_key_file or ODGW_MASTER_KEY)"
    )]
    WrongMasterKey,

    /// The master key text is not base64 of exactly 32 bytes.
    #[error("invalid master key: {0}")]
    InvalidMasterKey(&'static str),

    /// Stored data failed to parse or to authenticate: moved between tenants
    /// or fields, edited on disk, or truncated.
    #[error("key store data is corrupt: {what}")]
    Corrupt { what: String },

    /// The store was written by a newer (or unknown) format version.
    #[error(
        "key store format version {found} is not supported (this build reads version {supported})"
    )]
    UnsupportedVersion { found: u64, supported: u64 },

    /// A tenant field was rejected by validation; the text says which and why.
    #[error("invalid tenant: {0}")]
    InvalidInput(String),

    /// Creating, inspecting or securing the store directory failed.
    #[error("key store {context} ({}): {source}", path.display())]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The store directory is open to every user on the machine.
    #[error("key store directory {} is accessible to all users (mode {mode:o}); run chmod 700 on it before starting odgw", path.display())]
    WorldAccessible { path: PathBuf, mode: u32 },

    /// Another process (or another open in this one) holds the store.
    #[error("key store {} is in use by another process (is another odgw running?)", path.display())]
    InUse { path: PathBuf },

    /// The database backend failed (sled today).
    #[error("key store database error while {context}: {source}")]
    Backend {
        context: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The system random source failed; no nonce or key could be made.
    #[error("the system random number generator failed")]
    Random,
}

impl StoreError {
    pub(crate) fn corrupt(what: impl Into<String>) -> Self {
        Self::Corrupt { what: what.into() }
    }

    pub(crate) fn backend(context: &'static str) -> impl FnOnce(sled::Error) -> StoreError {
        move |source| StoreError::Backend {
            context,
            source: Box::new(source),
        }
    }
}
