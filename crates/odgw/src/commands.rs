//! What each `odgw` subcommand does.

use std::{io::Read as _, net::SocketAddr, path::Path, time::Duration};

use anyhow::{bail, Context as _};
use http::Method;
use http_body_util::BodyExt;
use odgw_core::{HumanDuration, SecretString, TenantId};
use odgw_keystore::TenantInput;
use tokio::{io::AsyncWriteExt, net::TcpListener};

use crate::{
    admin_client::AdminClient,
    backends,
    cli::{
        AuditCommand, AuditFormat, CacheCommand, Cli, Command, StoreCommand, TenantCommand,
        TokenCommand,
    },
    config::{self, Config, ConfigSource, ProcessEnv},
    dev::{self, DevDir},
    gateway::Gateway,
    signals::{Hangups, Shutdown},
    token,
};

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Serve(args) if args.dev => serve_dev(args.mock_upstream).await,
        Command::Serve(_) => {
            let config = Config::load(cli.config.as_deref(), &ProcessEnv)?;
            // Before the ports open (see `signals`).
            let mut shutdown = Shutdown::register()?;
            let hangups = Hangups::register()?;
            let Some(built) = shutdown.unless_requested(build_and_bind(config)).await else {
                return stopped_during_startup();
            };
            let (gateway, data, admin) = built?;
            gateway.set_config_source(ConfigSource::new(
                cli.config.clone(),
                std::sync::Arc::new(ProcessEnv),
            ));
            let reloads = tokio::spawn(hangups.reload_each(gateway.reloader()));
            let result = gateway.serve(data, admin, shutdown.into_requested()).await;
            reloads.abort();
            result
        }
        Command::Reload => {
            let client = admin_client(&cli)?;
            let (_, answer) = client
                .send_read(Method::POST, "/admin/v1/reload", None)
                .await?;
            let value: serde_json::Value =
                serde_json::from_slice(&answer).context("admin API answer is not JSON")?;
            println!("{}", serde_json::to_string_pretty(&value)?);
            Ok(())
        }
        Command::CheckConfig => check_config(cli.config.as_deref()),
        Command::Tenant(cmd) => tenant(&cli, cmd).await,
        Command::Cache(CacheCommand::Purge { tenant }) => {
            let client = admin_client(&cli)?;
            let path = match tenant {
                Some(t) => format!("/admin/v1/cache?tenant={}", valid_id(t)?),
                None => "/admin/v1/cache".to_owned(),
            };
            client.send_read(Method::DELETE, &path, None).await?;
            println!("cache purged");
            Ok(())
        }
        Command::Audit(AuditCommand::Query(args)) => audit_query(&cli, args).await,
        Command::Store(cmd) => store(&cli, cmd).await,
        Command::Audit(AuditCommand::Verify { dir }) => {
            let dir = match dir {
                Some(d) => d.clone(),
                None => {
                    Config::parse(cli.config.as_deref(), &ProcessEnv)?
                        .audit
                        .path
                }
            };
            let report = odgw_audit::verify(&dir)
                .with_context(|| format!("cannot verify {}", dir.display()))?;
            println!("{}", serde_json::to_string(&report)?);
            if !report.ok {
                bail!(
                    "audit chain broken at seq {}",
                    report.first_bad_seq.map_or("?".into(), |s| s.to_string())
                );
            }
            Ok(())
        }
        Command::Token(TokenCommand::Mint(args)) => {
            let secret = config::read_secret_file(&args.secret_file)?;
            let ttl: HumanDuration = args
                .ttl
                .parse()
                .map_err(|e| anyhow::anyhow!("--ttl: {e}"))?;
            for t in &args.tenant {
                valid_id(t)?;
            }
            let jwt = token::mint(
                &secret,
                &token::MintRequest {
                    issuer: args.iss.clone(),
                    audience: args.aud.clone(),
                    subject: args.sub.clone(),
                    tenants: args.tenant.clone(),
                    scope: args.scope.clone(),
                    ttl: ttl.0,
                },
            )?;
            println!("{jwt}");
            Ok(())
        }
        Command::MockUpstream(args) => {
            odgw_mock::run_cli(args.listen, odgw_mock::MockConfig::cli_defaults()).await?;
            Ok(())
        }
    }
}

/// `odgw store export | import`: sealed records as JSON Lines, one tenant a
/// line, moved without ever being decrypted to text outside the store.
async fn store(cli: &Cli, cmd: &StoreCommand) -> anyhow::Result<()> {
    // Only [store] and [postgres] matter here; the rest need not validate.
    let config = Config::parse(cli.config.as_deref(), &ProcessEnv)?;
    let master = backends::read_master_key(&config, &ProcessEnv)?;
    let store = backends::open_store(&config, &ProcessEnv, &master, false)
        .await?
        .store;
    match cmd {
        StoreCommand::Export { output } => {
            let records = store.export_sealed().await.context("export")?;
            let mut text = String::new();
            for record in &records {
                text.push_str(&serde_json::to_string(record)?);
                text.push('\n');
            }
            match output {
                Some(path) => write_private_file(path, text.as_bytes())
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => {
                    let mut stdout = tokio::io::stdout();
                    stdout.write_all(text.as_bytes()).await?;
                    stdout.flush().await?;
                }
            }
            eprintln!("exported {} tenants", records.len());
        }
        StoreCommand::Import { file } => {
            let text = if file == "-" {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("cannot read stdin")?;
                text
            } else {
                std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?
            };
            let records = text
                .lines()
                .enumerate()
                .filter(|(_, line)| !line.trim().is_empty())
                .map(|(i, line)| {
                    // serde's message may quote the line; a sealed record
                    // holds no clear key, but the line number is enough.
                    serde_json::from_str(line).map_err(|_| {
                        anyhow::anyhow!("{file}:{}: not a sealed tenant record", i + 1)
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let imported = store.import_sealed(records).await.context("import")?;
            println!("imported {imported} tenants");
        }
    }
    Ok(())
}

/// Creates (or truncates) `path` with mode 0600 and syncs it to disk.
fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn valid_id(id: &str) -> anyhow::Result<&str> {
    TenantId::parse(id).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(id)
}

/// Logs that a SIGTERM or SIGINT ended the start before any port was bound.
fn stopped_during_startup() -> anyhow::Result<()> {
    tracing::info!("shutdown requested while starting; nothing was served");
    Ok(())
}

/// Builds everything (so every startup error surfaces before a port is
/// bound), then binds both listeners.
async fn build_and_bind(config: Config) -> anyhow::Result<(Gateway, TcpListener, TcpListener)> {
    let gateway = Gateway::build(config, &ProcessEnv).await?;
    let data = TcpListener::bind(gateway.config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", gateway.config.server.listen))?;
    let admin = TcpListener::bind(gateway.config.server.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {}", gateway.config.server.admin_listen))?;
    tracing::info!(data = %data.local_addr()?, admin = %admin.local_addr()?, "odgw listening");
    Ok((gateway, data, admin))
}

async fn serve_dev(mock_upstream: bool) -> anyhow::Result<()> {
    let dir = DevDir::prepare(Path::new("odgw-dev"))?;
    let (base_url, upstream, _mock) = if mock_upstream {
        let running =
            odgw_mock::MockUpstream::spawn(odgw_mock::MockConfig::test_defaults()).await?;
        let url = running.base_url();
        let desc = format!("the built-in mock Open Dental API at {url}");
        (url, desc, Some(running))
    } else {
        let url = "https://api.opendental.com/api/v1".to_owned();
        let desc = format!("{url} (Open Dental's public test database)");
        (url, desc, None)
    };
    let config = Config::from_toml_str(&dir.config_toml(&base_url), &ProcessEnv)?;
    let mut shutdown = Shutdown::register()?;
    let Some(built) = shutdown.unless_requested(build_and_bind(config)).await else {
        return stopped_during_startup();
    };
    let (gateway, data, admin) = built?;
    // The demo tenant is (re)stored on every start so its keys are current.
    let demo = TenantId::parse(dev::DEMO_TENANT).map_err(|e| anyhow::anyhow!("{e}"))?;
    gateway
        .store
        .put(
            &demo,
            TenantInput {
                name: Some("Open Dental public test database".into()),
                customer_key: SecretString::new(dev::OD_TEST_CUSTOMER_KEY),
                developer_key: None,
                base_url: None,
                rate: None,
                burst: None,
                enabled: Some(true),
            },
        )
        .await
        .context("cannot store the demo tenant")?;
    gateway.runtime().cache.purge_tenant(&demo);
    let secret = config::read_secret_file(&dir.hs256_secret())?;
    let jwt = token::mint(
        &secret,
        &token::MintRequest {
            issuer: dev::DEV_ISSUER.into(),
            audience: dev::DEV_AUDIENCE.into(),
            subject: "dev-user".into(),
            tenants: vec![dev::DEMO_TENANT.into()],
            scope: "od:read od:write od:query".into(),
            ttl: Duration::from_secs(12 * 3600),
        },
    )?;
    let admin_addr = admin.local_addr()?;
    let console = gateway
        .console
        .dev_login_link(&format!("http://{admin_addr}"))
        .context("cannot make a console login link")?;
    println!(
        "{}",
        dev_banner(
            data.local_addr()?,
            admin_addr,
            &upstream,
            &dir,
            &jwt,
            &console
        )
    );
    gateway.serve(data, admin, shutdown.into_requested()).await
}

fn dev_banner(
    data: SocketAddr,
    admin: SocketAddr,
    upstream: &str,
    dir: &DevDir,
    jwt: &str,
    console: &str,
) -> String {
    let token_file = dir.admin_token().display().to_string();
    let demo = dev::DEMO_TENANT;
    format!(
        "
odgw dev mode
  data plane : http://{data}/api/v1/...
  admin API  : http://{admin}   (admin token in {token_file})
  upstream   : {upstream}
  tenant     : {demo} (Open Dental's public test key pair)

A token for tenant {demo} (valid 12 h; scopes od:read od:write od:query):

  export TOKEN={jwt}

Try:

  curl -s -H \"Authorization: Bearer $TOKEN\" http://{data}/api/v1/patients/11
  curl -s -i -H \"Authorization: Bearer $TOKEN\" 'http://{data}/api/v1/preferences?PrefName=ProgramVersion'
  ODGW_ADMIN_TOKEN=$(cat {token_file}) cargo run --release -- --admin-url http://{admin} tenant list

Audit review console (one-time sign-in link, valid 15 minutes):

  {console}
"
    )
}

fn check_config(path: Option<&Path>) -> anyhow::Result<()> {
    let config = Config::load(path, &ProcessEnv)?;
    let env_secrets: Vec<&str> = [
        config::ENV_DEVELOPER_KEY,
        config::ENV_ADMIN_TOKEN,
        config::ENV_MASTER_KEY,
        config::ENV_POSTGRES_URL,
        config::ENV_REDIS_URL,
        config::ENV_CONSOLE_CLIENT_SECRET,
    ]
    .into_iter()
    .filter(|name| std::env::var_os(name).is_some())
    .collect();
    println!("# configuration is valid");
    for name in env_secrets {
        println!("# {name}: set in the environment ([redacted])");
    }
    print!(
        "{}",
        toml::to_string_pretty(&config).context("cannot print the configuration")?
    );
    Ok(())
}

/// The admin client for `tenant`, `cache` and `audit query`: URL from
/// `--admin-url` or `server.admin_listen`; token from env or `admin.token_file`.
fn admin_client(cli: &Cli) -> anyhow::Result<AdminClient> {
    let config = Config::parse(cli.config.as_deref(), &ProcessEnv)?;
    let scheme = if config.server.admin_tls().is_some() {
        "https"
    } else {
        "http"
    };
    let url = cli
        .admin_url
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{}", config.server.admin_listen));
    let token = config::read_secret(
        config.admin.token_file.as_deref(),
        config::ENV_ADMIN_TOKEN,
        &ProcessEnv,
    )
    .context("admin token (set ODGW_ADMIN_TOKEN or admin.token_file)")?;
    AdminClient::new(url, token)
}

async fn tenant(cli: &Cli, cmd: &TenantCommand) -> anyhow::Result<()> {
    let client = admin_client(cli)?;
    let (method, path, body) = match cmd {
        TenantCommand::Put(args) => {
            let customer_key = read_key_source(&args.customer_key_file)?;
            let developer_key = args
                .developer_key_file
                .as_deref()
                .map(config::read_secret_file)
                .transpose()?;
            let mut body = serde_json::json!({ "customer_key": customer_key.expose() });
            if let Some(k) = &developer_key {
                body["developer_key"] = k.expose().into();
            }
            if let Some(v) = &args.base_url {
                body["base_url"] = v.clone().into();
            }
            if let Some(v) = &args.rate {
                body["rate"] = v.clone().into();
            }
            if let Some(v) = args.burst {
                body["burst"] = v.into();
            }
            if let Some(v) = &args.name {
                body["name"] = v.clone().into();
            }
            if args.disabled {
                body["enabled"] = false.into();
            }
            let bytes = zeroize::Zeroizing::new(serde_json::to_vec(&body)?);
            (
                Method::PUT,
                format!("/admin/v1/tenants/{}", valid_id(&args.id)?),
                Some(bytes.to_vec()),
            )
        }
        TenantCommand::List => (Method::GET, "/admin/v1/tenants".to_owned(), None),
        TenantCommand::Show { id } => (
            Method::GET,
            format!("/admin/v1/tenants/{}", valid_id(id)?),
            None,
        ),
        TenantCommand::Enable { id } => (
            Method::POST,
            format!("/admin/v1/tenants/{}/enable", valid_id(id)?),
            None,
        ),
        TenantCommand::Disable { id } => (
            Method::POST,
            format!("/admin/v1/tenants/{}/disable", valid_id(id)?),
            None,
        ),
        TenantCommand::Delete { id } => (
            Method::DELETE,
            format!("/admin/v1/tenants/{}", valid_id(id)?),
            None,
        ),
        TenantCommand::Check { id } => (
            Method::POST,
            format!("/admin/v1/tenants/{}/check", valid_id(id)?),
            None,
        ),
    };
    let (status, answer) = client.send_read(method, &path, body).await?;
    if answer.is_empty() {
        println!("ok ({})", status.as_u16());
    } else {
        let value: serde_json::Value =
            serde_json::from_slice(&answer).context("admin API answer is not JSON")?;
        println!("{}", serde_json::to_string_pretty(&value)?);
        if matches!(cmd, TenantCommand::Check { .. })
            && value.get("ok") != Some(&serde_json::Value::Bool(true))
        {
            bail!("tenant check failed");
        }
    }
    Ok(())
}

/// Reads a key from a file, or from stdin for `-`; never from argv.
fn read_key_source(source: &str) -> anyhow::Result<SecretString> {
    if source == "-" {
        let mut text = zeroize::Zeroizing::new(String::new());
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the customer key from stdin")?;
        let key = text.trim();
        if key.is_empty() {
            bail!("no customer key on stdin (use --customer-key-file FILE or pipe it in)");
        }
        Ok(SecretString::new(key))
    } else {
        config::read_secret_file(Path::new(source))
    }
}

async fn audit_query(cli: &Cli, args: &crate::cli::AuditQueryArgs) -> anyhow::Result<()> {
    let client = admin_client(cli)?;
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in [
        ("tenant", args.tenant.clone()),
        ("subject", args.subject.clone()),
        ("since", args.since.clone()),
        ("until", args.until.clone()),
        ("after_seq", args.after_seq.map(|v| v.to_string())),
        ("limit", args.limit.map(|v| v.to_string())),
    ] {
        if let Some(value) = value {
            query.append_pair(name, &value);
        }
    }
    let query = query.finish();
    let path = if query.is_empty() {
        "/admin/v1/audit".to_owned()
    } else {
        format!("/admin/v1/audit?{query}")
    };
    let response = client.send(Method::GET, &path, None).await?;
    let mut out = tokio::io::stdout();
    if args.format == AuditFormat::Csv {
        out.write_all(odgw_audit::to_csv_header().as_bytes())
            .await?;
        out.write_all(b"\n").await?;
    }
    let mut body = response.body;
    let mut pending: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.context("the admin API stream was cut off")?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        pending.extend_from_slice(&data);
        while let Some(pos) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            write_record(&mut out, &line, args.format).await?;
        }
    }
    if !pending.is_empty() {
        write_record(&mut out, &pending, args.format).await?;
    }
    out.flush().await?;
    Ok(())
}

async fn write_record(
    out: &mut tokio::io::Stdout,
    line: &[u8],
    format: AuditFormat,
) -> anyhow::Result<()> {
    match format {
        AuditFormat::Jsonl => out.write_all(line).await?,
        AuditFormat::Csv => {
            let record: odgw_audit::AuditRecord =
                serde_json::from_slice(line).context("the admin API sent a malformed record")?;
            out.write_all(odgw_audit::to_csv_row(&record).as_bytes())
                .await?;
            out.write_all(b"\n").await?;
        }
    }
    Ok(())
}
