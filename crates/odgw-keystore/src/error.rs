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

    /// The database answered with an error (sled, or PostgreSQL refusing a
    /// statement).
    #[error("key store database error while {context}: {source}")]
    Backend {
        context: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The database cannot be reached right now: no connection within the
    /// connect timeout, the connection was refused or dropped, or the
    /// server is shutting down or starting. Retrying later may succeed;
    /// the gateway answers 503 `store_unavailable`. The message never
    /// contains the connection URL or its password.
    ///
    /// A write that fails this way was almost always not made; only a
    /// COMMIT whose answer never came (the connection dropped, or the
    /// deadline passed, while it was in flight) leaves the outcome unknown:
    /// it may have committed, and then other replicas are told as usual.
    /// Every write is a full replacement, a toggle or a delete, so repeating
    /// it is safe either way.
    #[error("key store database is unavailable while {context}: {source}")]
    Unavailable {
        context: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The PostgreSQL schema was migrated by a newer odgw than this one.
    #[error(
        "key store schema {schema} is at version {found}, newer than this build knows \
         (version {supported}); upgrade odgw or point it at another schema"
    )]
    SchemaTooNew {
        schema: String,
        found: i64,
        supported: i64,
    },

    /// The backend settings are unusable (e.g. a schema name odgw refuses,
    /// or a connection URL that does not parse). Never quotes the URL.
    #[error("invalid key store settings: {0}")]
    InvalidSettings(String),

    /// An import was refused before anything was written, because of the
    /// record named here.
    #[error("import refused, nothing was written: tenant {tenant}: {reason}")]
    ImportRefused { tenant: String, reason: String },

    /// The system random source failed; no nonce or key could be made.
    #[error("the system random number generator failed")]
    Random,
}

impl StoreError {
    /// Whether the store could not be reached (as opposed to answering
    /// with an error); callers may serve what they last knew meanwhile.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }

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
