//! `odgw serve --dev [--mock-upstream]` (SPEC §9): a zero-config local run.
//!
//! Creates `./odgw-dev/` (0700) holding a generated master key, admin token
//! and HS256 secret, stores tenant `demo` with Open Dental's public test key
//! pair, and prints a minted token and a ready `curl` line. Files are reused
//! on the next run, so the store stays readable.

use std::{
    fs,
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine as _;

/// Issuer and audience of dev tokens (also `token mint`'s defaults).
pub const DEV_ISSUER: &str = "odgw-dev";
pub const DEV_AUDIENCE: &str = "odgw";
/// The demo tenant's id.
pub const DEMO_TENANT: &str = "demo";
/// Open Dental's published test credentials (opendental-api.md §2): public,
/// shared by every developer, never a real practice's keys.
pub const OD_TEST_DEVELOPER_KEY: &str = "NFF6i0KrXrxDkZHt";
pub const OD_TEST_CUSTOMER_KEY: &str = "VzkmZEaUWOjnQX2z";

/// The files of a dev directory.
#[derive(Debug, Clone)]
pub struct DevDir {
    pub root: PathBuf,
}

impl DevDir {
    pub fn master_key(&self) -> PathBuf {
        self.root.join("master_key")
    }
    pub fn admin_token(&self) -> PathBuf {
        self.root.join("admin_token")
    }
    pub fn hs256_secret(&self) -> PathBuf {
        self.root.join("hs256.secret")
    }
    pub fn developer_key(&self) -> PathBuf {
        self.root.join("developer_key")
    }

    /// Creates the directory (0700) and any missing secret (0600).
    pub fn prepare(root: &Path) -> anyhow::Result<Self> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .with_context(|| format!("cannot create {}", root.display()))?;
        fs::set_permissions(root, fs::Permissions::from_mode(0o700))?;
        let dir = Self {
            root: root.to_path_buf(),
        };
        let b64 = base64::engine::general_purpose::STANDARD;
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        write_new(&dir.master_key(), || Ok(b64.encode(random::<32>()?)))?;
        write_new(&dir.admin_token(), || Ok(url.encode(random::<32>()?)))?;
        write_new(&dir.hs256_secret(), || Ok(url.encode(random::<48>()?)))?;
        write_new(
            &dir.developer_key(),
            || Ok(OD_TEST_DEVELOPER_KEY.to_owned()),
        )?;
        Ok(dir)
    }

    /// The dev configuration, as TOML (env overrides still apply on top).
    pub fn config_toml(&self, upstream_base_url: &str) -> String {
        let p = |path: PathBuf| {
            path.display()
                .to_string()
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
        };
        format!(
            r#"
[server]
listen = "127.0.0.1:8080"
admin_listen = "127.0.0.1:8081"

[upstream]
base_url = "{upstream_base_url}"
developer_key_file = "{dev_key}"

[[auth.issuers]]
issuer = "{DEV_ISSUER}"
audiences = ["{DEV_AUDIENCE}"]
algorithms = ["HS256"]
secret_file = "{hs256}"

[admin]
token_file = "{admin}"

[store]
path = "{store}"
master_key_file = "{master}"

[audit]
path = "{audit}"
"#,
            dev_key = p(self.developer_key()),
            hs256 = p(self.hs256_secret()),
            admin = p(self.admin_token()),
            store = p(self.root.join("keys")),
            master = p(self.master_key()),
            audit = p(self.root.join("audit")),
        )
    }
}

fn random<const N: usize>() -> anyhow::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
    Ok(bytes)
}

/// Writes a 0600 file with `make()`'s content unless the file exists.
fn write_new(path: &Path, make: impl FnOnce() -> anyhow::Result<String>) -> anyhow::Result<()> {
    if path.exists() {
        return Ok(());
    }
    let content = zeroize::Zeroizing::new(make()?);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(content.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_creates_private_files_once() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("odgw-dev");
        let dir = DevDir::prepare(&root).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&dir.master_key()), 0o600);
        let master = fs::read_to_string(dir.master_key()).unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(master.trim())
            .unwrap();
        assert_eq!(decoded.len(), 32);
        // A second run keeps the existing secrets (the store stays readable).
        DevDir::prepare(&root).unwrap();
        assert_eq!(fs::read_to_string(dir.master_key()).unwrap(), master);
    }
}
