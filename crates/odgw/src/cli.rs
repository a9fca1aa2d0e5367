//! The command line (SPEC §3).

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "odgw",
    version,
    about = "A gateway in front of the Open Dental REST API"
)]
pub struct Cli {
    /// Configuration file (TOML).
    #[arg(long, global = true, env = "ODGW_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log output format.
    #[arg(long, global = true, env = "ODGW_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,

    /// Admin API base URL for `tenant`, `cache`, `audit query` and `reload`
    /// (default: http:// or, with admin TLS, https:// + server.admin_listen).
    #[arg(long, global = true, value_name = "URL")]
    pub admin_url: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve(ServeArgs),
    /// Validate the configuration and print it (secrets redacted).
    CheckConfig,
    /// Manage tenants (practices) through the admin API.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Manage the response cache through the admin API.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Query and verify the audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Copy the key store's sealed records out or in (backups, sled to PostgreSQL).
    #[command(subcommand)]
    Store(StoreCommand),
    /// Development tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Run a fake Open Dental API (see SPEC §9).
    MockUpstream(MockArgs),
    /// Ask the running gateway to reload its configuration (as SIGHUP does).
    Reload,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Zero-config local run: creates ./odgw-dev/ with generated secrets and a demo tenant.
    #[arg(long)]
    pub dev: bool,
    /// With --dev: run the built-in mock Open Dental API and point the demo tenant at it.
    #[arg(long, requires = "dev")]
    pub mock_upstream: bool,
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create or replace a tenant. The customer key is read from a file or stdin, never argv.
    Put(TenantPutArgs),
    /// List tenants (keys appear only as hints).
    List,
    /// Show one tenant.
    Show { id: String },
    /// Enable a tenant.
    Enable { id: String },
    /// Disable a tenant: its requests are refused and its cache entries dropped.
    Disable { id: String },
    /// Delete a tenant and its keys.
    Delete { id: String },
    /// Call Open Dental with the tenant's keys (GET /preferences?PrefName=ProgramVersion).
    Check { id: String },
}

#[derive(Debug, Args)]
pub struct TenantPutArgs {
    pub id: String,
    /// File holding the customer key, or `-` for stdin (the default).
    #[arg(long, value_name = "FILE", default_value = "-")]
    pub customer_key_file: String,
    /// File holding a developer key for this tenant (default: the gateway's).
    #[arg(long, value_name = "FILE")]
    pub developer_key_file: Option<PathBuf>,
    /// Open Dental base URL for this tenant (e.g. http://office:30223/api/v1).
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,
    /// Upstream budget, e.g. "1/s", "12/min", "unlimited".
    #[arg(long, value_name = "RATE")]
    pub rate: Option<String>,
    #[arg(long, value_name = "N")]
    pub burst: Option<u32>,
    #[arg(long, value_name = "TEXT")]
    pub name: Option<String>,
    /// Store the tenant disabled.
    #[arg(long)]
    pub disabled: bool,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Drop cached responses of one tenant, or of all.
    Purge {
        #[arg(long)]
        tenant: Option<String>,
    },
}

/// Works on the store named by `[store]` (and `[postgres]`) directly, not
/// through the admin API: a sled store must not be open in a running odgw.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Write every tenant's sealed record as JSON Lines. Keys stay encrypted
    /// under the master key; the file is created readable by its owner only.
    Export {
        /// Write here instead of stdout.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Read records written by `store export` into this store (same master
    /// key). Every record is checked before anything is written; then all are
    /// written at once, replacing tenants with the same id.
    Import {
        /// The JSON Lines file, or `-` for stdin.
        #[arg(value_name = "FILE")]
        file: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Stream matching records, oldest first.
    Query(AuditQueryArgs),
    /// Verify the hash chain offline.
    Verify {
        /// Audit directory (default: audit.path from the config).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct AuditQueryArgs {
    #[arg(long)]
    pub tenant: Option<String>,
    #[arg(long)]
    pub subject: Option<String>,
    /// RFC 3339 time, e.g. 2026-11-27T00:00:00Z.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    #[arg(long, value_name = "SEQ")]
    pub after_seq: Option<u64>,
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, value_enum, default_value_t = AuditFormat::Jsonl)]
    pub format: AuditFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuditFormat {
    Jsonl,
    Csv,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Mint an HS256 token for development and tests.
    Mint(MintArgs),
}

#[derive(Debug, Args)]
pub struct MintArgs {
    /// File holding the HS256 secret (its trimmed bytes are the key).
    #[arg(long, value_name = "F")]
    pub secret_file: PathBuf,
    #[arg(long)]
    pub sub: String,
    /// Tenant id; repeat for a token that grants several.
    #[arg(long, required = true)]
    pub tenant: Vec<String>,
    #[arg(long, default_value = "od:read od:write")]
    pub scope: String,
    #[arg(long, default_value = "15m")]
    pub ttl: String,
    #[arg(long, default_value = crate::dev::DEV_ISSUER)]
    pub iss: String,
    #[arg(long, default_value = crate::dev::DEV_AUDIENCE)]
    pub aud: String,
}

#[derive(Debug, Args)]
pub struct MockArgs {
    #[arg(long, default_value = "127.0.0.1:30222")]
    pub listen: SocketAddr,
}
