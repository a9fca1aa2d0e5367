//! Checks on the deployment files under deploy/.
//!
//! Each shipped file is tied to the code it configures, so a renamed config
//! key, metric, CLI flag or port breaks a test here rather than a deployment:
//! - the TOML configs load through `odgw::config::Config` (shape, unknown keys,
//!   units, and the semantic checks with secrets supplied by env);
//! - the Kubernetes, Prometheus and rule-test YAML parse (with serde_yaml,
//!   refusing what YAML readers disagree on, see [`yaml`], and cross-checked
//!   against PyYAML when it is installed) and have the kinds, fields and
//!   cross-references they need;
//! - the systemd unit has its sections, hardening and credentials, its
//!   `ExecStart` parses with odgw's own CLI, and `systemd-analyze verify`
//!   accepts it when systemd-analyze is installed;
//! - every `odgw_*` metric the alert rules name is exposed by a running
//!   gateway, with the label names and values the rules match on;
//! - the metrics table of `crates/odgw/src/metrics.rs` (what operators write
//!   rules against) names exactly the families a gateway exposes, with both
//!   cluster backends and without them;
//! - the Dockerfile runs as a numeric non-root user, builds with `--locked`
//!   and starts `odgw serve` with the shipped config.
//!
//! External validators (PyYAML, systemd-analyze, promtool, kubectl) run when
//! present and are skipped with a note otherwise; the structural checks
//! always run.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use clap::Parser as _;
use http::{Method, Request};
use http_body_util::Full;
use odgw::{
    cli::{Cli, Command as OdgwCommand, LogFormat},
    config::{Config, ENV_ADMIN_TOKEN, ENV_DEVELOPER_KEY, ENV_MASTER_KEY},
};
use odgw_core::HumanDuration;
use serde_json::{json, Value};

use crate::{
    cluster::{drop_schema, postgres_url, redis_url, unique},
    support::{Options, TestGateway},
};

// ---------------------------------------------------------------- helpers

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub(crate) fn deploy(rel: &str) -> PathBuf {
    repo().join("deploy").join(rel)
}

pub(crate) fn read(rel: &str) -> String {
    let path = deploy(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn no_env() -> BTreeMap<String, String> {
    BTreeMap::new()
}

/// Secrets supplied the way the Kubernetes Deployment supplies them.
pub(crate) fn secret_env() -> BTreeMap<String, String> {
    [
        (
            ENV_MASTER_KEY,
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        ),
        (ENV_ADMIN_TOKEN, "test-admin-token"),
        (ENV_DEVELOPER_KEY, "test-developer-key"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

pub(crate) fn parse_config(rel: &str) -> Config {
    Config::parse(Some(&deploy(rel)), &no_env())
        .unwrap_or_else(|e| panic!("deploy/{rel} does not parse: {e}"))
}

pub(crate) fn yaml_docs(rel: &str) -> Vec<Value> {
    yaml::parse(&read(rel)).unwrap_or_else(|e| panic!("deploy/{rel}: {e}"))
}

pub(crate) fn yaml_doc(rel: &str) -> Value {
    let mut docs = yaml_docs(rel);
    assert_eq!(docs.len(), 1, "deploy/{rel} should hold one document");
    docs.remove(0)
}

pub(crate) fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("missing string at {pointer} in {v}"))
}

pub(crate) fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("not a string: {s}"))
                .to_owned()
        })
        .collect()
}

/// Parses an argv (without the program name) with odgw's own CLI.
pub(crate) fn odgw_cli(what: &str, args: &[String]) -> Cli {
    Cli::try_parse_from(std::iter::once("odgw".to_owned()).chain(args.iter().cloned()))
        .unwrap_or_else(|e| panic!("{what}: odgw rejects {args:?}: {e}"))
}

/// Parses an `odgw ...` argv with odgw's own CLI and checks it is
/// `serve --config <config> --log-format json`.
fn assert_serve_argv(what: &str, args: &[String], config: &str) {
    let cli = odgw_cli(what, args);
    match &cli.command {
        OdgwCommand::Serve(serve) => {
            assert!(!serve.dev, "{what}: production must not run --dev");
        }
        other => panic!("{what}: expected `serve`, got {other:?}"),
    }
    assert_eq!(cli.config.as_deref(), Some(Path::new(config)), "{what}");
    assert_eq!(
        cli.log_format,
        LogFormat::Json,
        "{what}: logs should be JSON"
    );
}

/// Runs a program if it is installed: `None` when it is not.
pub(crate) fn run_tool(program: &str, args: &[&str]) -> Option<std::process::Output> {
    match Command::new(program).args(args).output() {
        Ok(out) => Some(out),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("note: {program} is not installed; skipping that external check");
            None
        }
        Err(e) => panic!("cannot run {program}: {e}"),
    }
}

pub(crate) fn output_text(out: &std::process::Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A volume claim (or claim template) that one pod at a time writes to,
/// with a storage request.
pub(crate) fn assert_single_writer_claim(claim: &Value, what: &str) {
    let modes = strings(&claim["spec"]["accessModes"]);
    assert!(
        modes
            .iter()
            .all(|m| m == "ReadWriteOnce" || m == "ReadWriteOncePod"),
        "{what}: {modes:?}"
    );
    assert!(
        claim
            .pointer("/spec/resources/requests/storage")
            .is_some_and(Value::is_string),
        "{what}: a storage request"
    );
}

fn duration(text: &str) -> Duration {
    text.parse::<HumanDuration>()
        .unwrap_or_else(|e| panic!("{text:?} is not a duration: {e:?}"))
        .0
}

// ---------------------------------------------------------------- configs

#[test]
fn container_config_loads_and_uses_the_volume_and_secret_mounts() {
    let c = parse_config("config/odgw.toml");
    assert_eq!(c.server.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(c.server.admin_listen.to_string(), "0.0.0.0:8081");
    assert!(
        c.store.path.starts_with("/var/lib/odgw"),
        "{:?}",
        c.store.path
    );
    assert!(
        c.audit.path.starts_with("/var/lib/odgw"),
        "{:?}",
        c.audit.path
    );
    assert_ne!(c.store.path, c.audit.path);
    assert!(c.audit.fail_closed, "production audit must fail closed");
    for file in [
        c.store.master_key_file.as_deref(),
        c.admin.token_file.as_deref(),
        c.upstream.developer_key_file.as_deref(),
    ] {
        let file = file.expect("every secret has a file source too");
        assert!(file.starts_with("/run/secrets"), "{file:?}");
    }
    assert!(!c.auth.issuers.is_empty());
    // Full validation, with the secrets given as env vars as in Kubernetes.
    Config::load(Some(&deploy("config/odgw.toml")), &secret_env())
        .unwrap_or_else(|e| panic!("deploy/config/odgw.toml fails validation: {e}"));
}

#[test]
fn systemd_config_loads_and_keeps_admin_on_loopback() {
    let c = parse_config("config/odgw.systemd.toml");
    assert!(
        c.server.admin_listen.ip().is_loopback(),
        "{}",
        c.server.admin_listen
    );
    assert!(c.server.listen.ip().is_loopback(), "{}", c.server.listen);
    assert!(
        c.store.path.starts_with("/var/lib/odgw"),
        "{:?}",
        c.store.path
    );
    assert!(
        c.audit.path.starts_with("/var/lib/odgw"),
        "{:?}",
        c.audit.path
    );
    assert!(c.audit.fail_closed);
    for file in [
        c.store.master_key_file.as_deref(),
        c.admin.token_file.as_deref(),
        c.upstream.developer_key_file.as_deref(),
    ] {
        let file = file.expect("every secret has a credential file");
        assert!(
            file.starts_with("/run/credentials/odgw.service"),
            "{file:?}"
        );
    }
    Config::load(Some(&deploy("config/odgw.systemd.toml")), &secret_env())
        .unwrap_or_else(|e| panic!("deploy/config/odgw.systemd.toml fails validation: {e}"));
}

#[test]
fn configs_differ_from_defaults_only_in_deployment_settings() {
    // Traffic settings follow the example config, so a changed default is a
    // deliberate edit in both places rather than silent drift.
    let example = Config::parse(Some(&repo().join("config/odgw.example.toml")), &no_env()).unwrap();
    for rel in ["config/odgw.toml", "config/odgw.systemd.toml"] {
        let c = parse_config(rel);
        assert_eq!(c.server.max_body, example.server.max_body, "{rel}");
        assert_eq!(
            c.server.shutdown_grace, example.server.shutdown_grace,
            "{rel}"
        );
        assert_eq!(c.upstream.timeout, example.upstream.timeout, "{rel}");
        assert_eq!(
            c.limits.queue_timeout, example.limits.queue_timeout,
            "{rel}"
        );
        assert_eq!(c.audit.write_timeout, example.audit.write_timeout, "{rel}");
    }
}

// ---------------------------------------------------------------- Dockerfile

struct Instruction {
    keyword: String,
    args: String,
}

/// Dockerfile instructions with continuation lines joined and comments dropped.
fn dockerfile() -> Vec<Instruction> {
    let text = read("Dockerfile");
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        let (body, continues) = match trimmed.strip_suffix('\\') {
            Some(body) => (body, true),
            None => (trimmed, false),
        };
        current.push_str(body);
        current.push(' ');
        if !continues {
            let (keyword, args) = current
                .trim()
                .split_once(char::is_whitespace)
                .unwrap_or((current.trim(), ""));
            out.push(Instruction {
                keyword: keyword.to_ascii_uppercase(),
                args: args.trim().to_owned(),
            });
            current.clear();
        }
    }
    assert!(
        current.trim().is_empty(),
        "Dockerfile ends inside a continued line"
    );
    out
}

fn exec_form(what: &str, args: &str) -> Vec<String> {
    serde_json::from_str(args)
        .unwrap_or_else(|e| panic!("{what} must use the JSON exec form: {args} ({e})"))
}

#[test]
fn dockerfile_builds_locked_and_runs_odgw_serve_as_non_root() {
    let ins = dockerfile();
    let stages: Vec<usize> = ins
        .iter()
        .enumerate()
        .filter(|(_, i)| i.keyword == "FROM")
        .map(|(n, _)| n)
        .collect();
    assert!(stages.len() >= 2, "multi-stage build expected");
    let last = *stages.last().unwrap();
    let runtime = &ins[last..];
    let runtime_image = ins[last].args.split_whitespace().next().unwrap();
    assert!(
        runtime_image.starts_with("gcr.io/distroless/") || runtime_image.contains("-slim"),
        "minimal runtime image expected, got {runtime_image}"
    );
    assert!(
        !runtime.iter().any(|i| i.keyword == "RUN"),
        "the runtime stage should only copy files (distroless has no shell)"
    );

    // The builder: rust image at least the workspace's rust-version.
    let manifest: toml::Table = std::fs::read_to_string(repo().join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let msrv = manifest["workspace"]["package"]["rust-version"]
        .as_str()
        .unwrap();
    let rust_arg = ins
        .iter()
        .filter(|i| i.keyword == "ARG")
        .find_map(|i| i.args.strip_prefix("RUST_VERSION="))
        .expect("ARG RUST_VERSION=... selects the builder toolchain");
    let version = |s: &str| -> Vec<u32> { s.split('.').map(|p| p.parse().unwrap()).collect() };
    assert!(
        version(rust_arg) >= version(msrv),
        "builder Rust {rust_arg} < rust-version {msrv}"
    );
    assert!(
        ins[stages[0]].args.starts_with("rust:${RUST_VERSION}"),
        "{}",
        ins[stages[0]].args
    );

    // Dependencies are built in their own layer before the sources arrive,
    // and both builds use the committed Cargo.lock.
    let cook = ins
        .iter()
        .position(|i| i.keyword == "RUN" && i.args.contains("cargo chef cook"))
        .expect("dependency layer");
    let build = ins
        .iter()
        .position(|i| i.keyword == "RUN" && i.args.contains("cargo build"))
        .expect("cargo build");
    let sources = (cook..build)
        .find(|&n| ins[n].keyword == "COPY" && ins[n].args == ". .")
        .expect("sources are copied between the dependency layer and the build");
    assert!(cook < sources && sources < build);
    for n in [cook, build] {
        let words: Vec<&str> = ins[n].args.split_whitespace().collect();
        for flag in ["--release", "--locked", "-p", "odgw"] {
            assert!(
                words.contains(&flag),
                "{flag} missing in RUN {}",
                ins[n].args
            );
        }
    }
    assert!(ins[build]
        .args
        .contains("cargo build --release --locked -p odgw"));

    // Runtime: numeric non-root user (Kubernetes runAsNonRoot verifies UIDs).
    let user = runtime
        .iter()
        .rev()
        .find(|i| i.keyword == "USER")
        .expect("USER in the runtime stage");
    let uid: u32 = user
        .args
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("numeric USER");
    assert_ne!(uid, 0, "must not run as root");
    let deployment = yaml_doc("kubernetes/deployment.yaml");
    assert_eq!(
        deployment.pointer("/spec/template/spec/securityContext/runAsUser"),
        Some(&json!(uid)),
        "the Deployment runs as the image's user"
    );

    let exposed: BTreeSet<&str> = runtime
        .iter()
        .filter(|i| i.keyword == "EXPOSE")
        .flat_map(|i| i.args.split_whitespace())
        .collect();
    let c = parse_config("config/odgw.toml");
    for port in [c.server.listen.port(), c.server.admin_listen.port()] {
        assert!(
            exposed.contains(port.to_string().as_str()),
            "port {port} not exposed"
        );
    }
    let volumes: Vec<String> = runtime
        .iter()
        .filter(|i| i.keyword == "VOLUME")
        .flat_map(|i| exec_form("VOLUME", &i.args))
        .collect();
    assert!(volumes.iter().any(|v| v == "/var/lib/odgw"), "{volumes:?}");
    assert!(c.store.path.starts_with("/var/lib/odgw") && c.audit.path.starts_with("/var/lib/odgw"));

    let entrypoint = runtime
        .iter()
        .rev()
        .find(|i| i.keyword == "ENTRYPOINT")
        .expect("ENTRYPOINT");
    assert_eq!(
        exec_form("ENTRYPOINT", &entrypoint.args),
        ["/usr/local/bin/odgw"]
    );
    let cmd = runtime
        .iter()
        .rev()
        .find(|i| i.keyword == "CMD")
        .expect("CMD");
    assert_serve_argv(
        "Dockerfile CMD",
        &exec_form("CMD", &cmd.args),
        "/etc/odgw/odgw.toml",
    );

    // The shipped config is what the image carries, and it exists.
    let copy = runtime
        .iter()
        .find(|i| i.keyword == "COPY" && i.args.ends_with(" /etc/odgw/odgw.toml"))
        .expect("config copied to /etc/odgw/odgw.toml");
    let source = copy
        .args
        .split_whitespace()
        .find(|w| !w.starts_with("--"))
        .unwrap();
    assert_eq!(source, "deploy/config/odgw.toml");
    assert!(repo().join(source).is_file());
    // The binary in the runtime stage comes from the builder.
    assert!(runtime.iter().any(|i| i.keyword == "COPY"
        && i.args.contains("--from=builder")
        && i.args.ends_with("/usr/local/bin/odgw")));

    // The state directory is handed to the runtime user.
    assert!(
        runtime.iter().any(|i| i.keyword == "COPY"
            && i.args.contains("--from=builder")
            && i.args.contains(&format!("--chown={uid}:"))
            && (i.args.ends_with(" /var/lib/") || i.args.ends_with(" /var/lib/odgw"))),
        "/var/lib/odgw must be owned by UID {uid}"
    );

    // No secret is baked into the image.
    let all = read("Dockerfile");
    for name in [ENV_MASTER_KEY, ENV_ADMIN_TOKEN, ENV_DEVELOPER_KEY] {
        assert!(!all.contains(name), "the Dockerfile must not set {name}");
    }
    assert!(!ins
        .iter()
        .any(|i| i.keyword == "ENV" || i.keyword == "HEALTHCHECK"));
}

#[test]
fn dockerignore_keeps_build_output_and_secrets_out_of_the_context() {
    let text = read("Dockerfile.dockerignore");
    let rules: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for needed in ["target", ".git", "odgw-dev", "**/secrets"] {
        assert!(
            rules.contains(&needed),
            "{needed} missing from Dockerfile.dockerignore"
        );
    }
    // Everything the Dockerfile copies from the context stays in it.
    for kept in ["Cargo.toml", "Cargo.lock", "crates", "tests"] {
        assert!(
            !rules.contains(&kept),
            "{kept} must stay in the build context"
        );
    }
    if rules.contains(&"deploy") {
        assert!(
            rules.contains(&"!deploy/config/odgw.toml"),
            "the image's config is re-included"
        );
    }
}

// ---------------------------------------------------------------- systemd

/// `[Section]` → list of (key, value), in file order; keys may repeat.
fn unit_file() -> BTreeMap<String, Vec<(String, String)>> {
    let mut sections: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for (n, line) in read("odgw.service").lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        assert!(
            !line.ends_with('\\'),
            "line {}: keep unit lines unfolded",
            n + 1
        );
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            assert!(!sections.contains_key(name), "section [{name}] twice");
            sections.insert(name.to_owned(), Vec::new());
            current = Some(name.to_owned());
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("line {}: not Key=Value: {line}", n + 1));
        let section = current
            .clone()
            .unwrap_or_else(|| panic!("line {}: key outside a section", n + 1));
        sections
            .get_mut(&section)
            .unwrap()
            .push((key.trim().to_owned(), value.trim().to_owned()));
    }
    sections
}

fn unit_values<'a>(
    unit: &'a BTreeMap<String, Vec<(String, String)>>,
    section: &str,
    key: &str,
) -> Vec<&'a str> {
    unit.get(section)
        .unwrap_or_else(|| panic!("no [{section}]"))
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

fn unit_value<'a>(
    unit: &'a BTreeMap<String, Vec<(String, String)>>,
    section: &str,
    key: &str,
) -> &'a str {
    match unit_values(unit, section, key).as_slice() {
        [one] => one,
        other => panic!("[{section}] {key}: expected exactly one value, got {other:?}"),
    }
}

#[test]
fn systemd_unit_is_hardened_and_starts_odgw_serve() {
    let unit = unit_file();
    let names: Vec<&str> = unit.keys().map(String::as_str).collect();
    assert_eq!(names, ["Install", "Service", "Unit"]);
    assert!(!unit_value(&unit, "Unit", "Description").is_empty());
    assert!(unit_value(&unit, "Unit", "After").contains("network-online.target"));
    assert_eq!(
        unit_value(&unit, "Install", "WantedBy"),
        "multi-user.target"
    );

    let exec = unit_value(&unit, "Service", "ExecStart");
    // "+" or "!" would run odgw outside the sandbox with full privileges.
    assert!(!exec.starts_with(['+', '!', '@', '-', ':']), "{exec}");
    let argv: Vec<String> = exec.split_whitespace().map(str::to_owned).collect();
    assert_eq!(argv[0], "/usr/local/bin/odgw");
    assert_serve_argv("ExecStart", &argv[1..], "/etc/odgw/odgw.toml");

    for (key, want) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("CapabilityBoundingSet", ""),
        ("MemoryDenyWriteExecute", "yes"),
        ("LimitCORE", "0"),
        ("UMask", "0077"),
        ("KillSignal", "SIGTERM"),
        ("Restart", "on-failure"),
        ("DynamicUser", "yes"),
        ("StateDirectory", "odgw"),
        ("StateDirectoryMode", "0700"),
        ("ConfigurationDirectory", "odgw"),
    ] {
        assert_eq!(unit_value(&unit, "Service", key), want, "[Service] {key}");
    }
    assert!(unit_values(&unit, "Service", "SystemCallFilter").contains(&"@system-service"));
    assert!(
        unit_values(&unit, "Service", "User").is_empty(),
        "DynamicUser allocates the user"
    );

    // The unit's config: listeners, state directory, stop timeout.
    let config_path = argv
        .iter()
        .position(|a| a == "--config")
        .map(|i| &argv[i + 1])
        .unwrap();
    assert_eq!(
        config_path, "/etc/odgw/odgw.toml",
        "ConfigurationDirectory=odgw is /etc/odgw"
    );
    let c = parse_config("config/odgw.systemd.toml");
    let state = Path::new("/var/lib").join(unit_value(&unit, "Service", "StateDirectory"));
    assert!(c.store.path.starts_with(&state) && c.audit.path.starts_with(&state));
    let stop = duration(unit_value(&unit, "Service", "TimeoutStopSec"));
    assert!(
        stop > c.server.shutdown_grace.0,
        "TimeoutStopSec {stop:?} must exceed shutdown_grace {:?}",
        c.server.shutdown_grace.0
    );

    // Credentials: each LoadCredential id feeds exactly one *_file override,
    // and those overrides are real config keys that land where the config
    // file also points.
    let creds: BTreeMap<&str, &str> = unit_values(&unit, "Service", "LoadCredential")
        .into_iter()
        .map(|v| v.split_once(':').expect("LoadCredential=ID:PATH"))
        .collect();
    assert_eq!(
        creds.keys().copied().collect::<Vec<_>>(),
        ["admin_token", "developer_key", "master_key"]
    );
    for path in creds.values() {
        assert!(path.starts_with('/'), "{path}");
    }
    let credentials_dir = "/run/credentials/odgw.service";
    let mut env = no_env();
    for assignment in unit_values(&unit, "Service", "Environment") {
        let (name, value) = assignment.split_once('=').unwrap();
        assert!(name.starts_with("ODGW_"), "{name}");
        let id = value
            .strip_prefix("%d/")
            .unwrap_or_else(|| panic!("{name} should use %d/"));
        assert!(
            creds.contains_key(id),
            "{name} names credential {id} that is not loaded"
        );
        env.insert(name.to_owned(), value.replace("%d", credentials_dir));
    }
    assert_eq!(env.len(), 3, "one *_file override per credential");
    let with_env = Config::parse(Some(&deploy("config/odgw.systemd.toml")), &env)
        .unwrap_or_else(|e| panic!("the unit's Environment= overrides are not config keys: {e}"));
    let d = Path::new(credentials_dir);
    assert_eq!(
        with_env.store.master_key_file.as_deref(),
        Some(d.join("master_key").as_path())
    );
    assert_eq!(
        with_env.admin.token_file.as_deref(),
        Some(d.join("admin_token").as_path())
    );
    assert_eq!(
        with_env.upstream.developer_key_file.as_deref(),
        Some(d.join("developer_key").as_path())
    );
    assert_eq!(with_env.store.master_key_file, c.store.master_key_file);
    assert_eq!(with_env.admin.token_file, c.admin.token_file);
    assert_eq!(
        with_env.upstream.developer_key_file,
        c.upstream.developer_key_file
    );
}

#[test]
fn systemd_analyze_accepts_the_unit() {
    // systemd-analyze checks that ExecStart's binary exists: point it at the
    // odgw this test run built.
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("odgw.service");
    let text = read("odgw.service").replace("/usr/local/bin/odgw", env!("CARGO_BIN_EXE_odgw"));
    std::fs::write(&unit, text).unwrap();
    let unit_arg = unit.to_str().unwrap();
    let Some(out) = run_tool("systemd-analyze", &["verify", unit_arg]) else {
        return;
    };
    // Problems with the unit are reported on stderr prefixed by its path
    // (an unknown key, a bad value); verify itself still exits 0 for those.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let problems: Vec<&str> = stderr.lines().filter(|l| l.contains(unit_arg)).collect();
    assert!(
        out.status.success() && problems.is_empty(),
        "{}",
        output_text(&out)
    );

    // Exposure score 0-10 (x10 for --threshold): keep it at 2.0 or below.
    let out = run_tool(
        "systemd-analyze",
        &[
            "security",
            "--offline=yes",
            "--threshold=20",
            "--no-pager",
            unit_arg,
        ],
    )
    .expect("systemd-analyze was found above");
    assert!(out.status.success(), "{}", output_text(&out));
}

// ---------------------------------------------------------------- Kubernetes

fn kustomization_resources() -> Vec<String> {
    let k = yaml_doc("kubernetes/kustomization.yaml");
    assert_eq!(str_at(&k, "/kind"), "Kustomization");
    strings(&k["resources"])
}

/// Every manifest applied by kustomize, by kind.
fn manifests() -> BTreeMap<String, Vec<Value>> {
    let mut by_kind: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for file in kustomization_resources() {
        for doc in yaml_docs(&format!("kubernetes/{file}")) {
            assert!(doc["apiVersion"].is_string(), "{file}: apiVersion");
            assert!(
                doc.pointer("/metadata/name").is_some_and(Value::is_string),
                "{file}: metadata.name"
            );
            by_kind
                .entry(str_at(&doc, "/kind").to_owned())
                .or_default()
                .push(doc);
        }
    }
    by_kind
}

fn one<'a>(by_kind: &'a BTreeMap<String, Vec<Value>>, kind: &str) -> &'a Value {
    match by_kind.get(kind).map(Vec::as_slice) {
        Some([one]) => one,
        other => panic!("expected one {kind}, got {other:?}"),
    }
}

#[test]
fn kustomization_applies_every_manifest_but_the_example_secret() {
    let listed = kustomization_resources();
    let on_disk: BTreeSet<String> = std::fs::read_dir(deploy("kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    for file in &listed {
        assert!(on_disk.contains(file), "kustomization lists missing {file}");
    }
    let unlisted: Vec<&String> = on_disk.iter().filter(|f| !listed.contains(f)).collect();
    assert_eq!(
        unlisted,
        ["secret.example.yaml"],
        "only the placeholder Secret stays out"
    );
    let kinds: BTreeSet<String> = manifests().keys().cloned().collect();
    for kind in [
        "ConfigMap",
        "Deployment",
        "Namespace",
        "PersistentVolumeClaim",
        "Service",
    ] {
        assert!(kinds.contains(kind), "no {kind}");
    }
    assert!(
        !kinds.contains("Secret"),
        "no Secret is applied from this repository"
    );
}

#[test]
fn configmap_carries_the_container_config_verbatim() {
    let by_kind = manifests();
    let cm = one(&by_kind, "ConfigMap");
    let text = str_at(cm, "/data/odgw.toml");
    assert_eq!(
        text,
        read("config/odgw.toml"),
        "kubernetes/configmap.yaml must embed deploy/config/odgw.toml exactly"
    );
}

#[test]
fn deployment_is_a_single_hardened_writer_with_probes_and_secrets() {
    let by_kind = manifests();
    let d = one(&by_kind, "Deployment");
    let config = parse_config("config/odgw.toml");

    assert_eq!(d.pointer("/spec/replicas"), Some(&json!(1)));
    assert_eq!(str_at(d, "/spec/strategy/type"), "Recreate");
    let pod = &d["spec"]["template"];
    let selector = d
        .pointer("/spec/selector/matchLabels")
        .unwrap()
        .as_object()
        .unwrap();
    for (k, v) in selector {
        assert_eq!(pod["metadata"]["labels"][k], *v, "selector label {k}");
    }

    let spec = &pod["spec"];
    let grace = spec["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    assert!(
        Duration::from_secs(grace) > config.server.shutdown_grace.0,
        "terminationGracePeriodSeconds {grace} must exceed shutdown_grace"
    );
    assert_eq!(spec["automountServiceAccountToken"], json!(false));
    assert_eq!(spec["enableServiceLinks"], json!(false));
    assert_eq!(spec["securityContext"]["runAsNonRoot"], json!(true));
    assert_eq!(
        str_at(spec, "/securityContext/seccompProfile/type"),
        "RuntimeDefault"
    );

    let containers = spec["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], json!(true));
    assert_eq!(
        c["securityContext"]["allowPrivilegeEscalation"],
        json!(false)
    );
    assert_eq!(
        strings(&c["securityContext"]["capabilities"]["drop"]),
        ["ALL"]
    );
    assert!(c["securityContext"]["privileged"] != json!(true));
    for key in ["requests", "limits"] {
        assert!(
            c["resources"][key]["memory"].is_string(),
            "resources.{key}.memory"
        );
    }
    assert!(c["resources"]["requests"]["cpu"].is_string());

    // Ports match the config's listeners; probes hit the admin port.
    let ports: BTreeMap<String, u64> = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                str_at(p, "/name").to_owned(),
                p["containerPort"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ports.get("http"),
        Some(&u64::from(config.server.listen.port()))
    );
    assert_eq!(
        ports.get("admin"),
        Some(&u64::from(config.server.admin_listen.port()))
    );
    for (probe, path) in [
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/healthz"),
    ] {
        assert_eq!(
            str_at(c, &format!("/{probe}/httpGet/path")),
            path,
            "{probe}"
        );
        let port = &c[probe]["httpGet"]["port"];
        let port = port
            .as_u64()
            .or_else(|| port.as_str().and_then(|n| ports.get(n).copied()));
        assert_eq!(
            port,
            Some(u64::from(config.server.admin_listen.port())),
            "{probe} port"
        );
    }

    // Args start odgw serve with the mounted config.
    assert_serve_argv(
        "Deployment args",
        &strings(&c["args"]),
        "/etc/odgw/odgw.toml",
    );

    // Secrets come from secretKeyRef, under the names odgw reads, from keys
    // the example Secret documents.
    let example = yaml_doc("kubernetes/secret.example.yaml");
    let secret_name = str_at(&example, "/metadata/name");
    let env: BTreeMap<&str, &Value> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (str_at(e, "/name"), e))
        .collect();
    for name in [ENV_MASTER_KEY, ENV_ADMIN_TOKEN, ENV_DEVELOPER_KEY] {
        let e = env
            .get(name)
            .unwrap_or_else(|| panic!("env {name} missing"));
        assert!(e.get("value").is_none(), "{name} must not be inline");
        assert_eq!(
            str_at(e, "/valueFrom/secretKeyRef/name"),
            secret_name,
            "{name}"
        );
        let key = str_at(e, "/valueFrom/secretKeyRef/key");
        assert!(
            example["stringData"].get(key).is_some(),
            "{name}: key {key} not in the example Secret"
        );
    }
    // Any other ODGW_* env var must be a real config override.
    let overrides: BTreeMap<String, String> = env
        .iter()
        .filter(|(n, _)| n.contains("__"))
        .map(|(n, e)| {
            (
                n.to_string(),
                e["value"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    Config::parse(Some(&deploy("config/odgw.toml")), &overrides)
        .unwrap_or_else(|e| panic!("Deployment env overrides: {e}"));

    // Volumes: config from the ConfigMap at /etc/odgw, state on the PVC.
    let mounts: BTreeMap<&str, &str> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (str_at(m, "/mountPath"), str_at(m, "/name")))
        .collect();
    let volumes: BTreeMap<&str, &Value> = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (str_at(v, "/name"), v))
        .collect();
    let config_volume = volumes[mounts["/etc/odgw"]];
    assert_eq!(
        str_at(config_volume, "/configMap/name"),
        str_at(one(&by_kind, "ConfigMap"), "/metadata/name")
    );
    let data_volume = volumes[mounts["/var/lib/odgw"]];
    assert_eq!(
        str_at(data_volume, "/persistentVolumeClaim/claimName"),
        str_at(one(&by_kind, "PersistentVolumeClaim"), "/metadata/name")
    );
    assert!(
        config.store.path.starts_with("/var/lib/odgw")
            && config.audit.path.starts_with("/var/lib/odgw")
    );
    assert_single_writer_claim(
        one(&by_kind, "PersistentVolumeClaim"),
        "single-writer volume",
    );

    // The namespace enforces the restricted Pod Security Standard.
    let ns = one(&by_kind, "Namespace");
    assert_eq!(
        str_at(ns, "/metadata/labels/pod-security.kubernetes.io~1enforce"),
        "restricted"
    );
}

#[test]
fn services_select_the_pod_and_keep_admin_separate() {
    let by_kind = manifests();
    let d = one(&by_kind, "Deployment");
    let pod_labels = d.pointer("/spec/template/metadata/labels").unwrap();
    let port_names: Vec<String> = d
        .pointer("/spec/template/spec/containers/0/ports")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|p| str_at(p, "/name").to_owned())
        .collect();
    let services = &by_kind["Service"];
    assert_eq!(services.len(), 2, "a data Service and an admin Service");
    let mut targets = BTreeMap::new();
    for s in services {
        assert_eq!(
            str_at(s, "/spec/type"),
            "ClusterIP",
            "no Service is exposed outside the cluster"
        );
        for (k, v) in s["spec"]["selector"].as_object().unwrap() {
            assert_eq!(pod_labels[k], *v, "Service selector {k}");
        }
        let ports = s["spec"]["ports"].as_array().unwrap();
        assert_eq!(ports.len(), 1, "one port per Service");
        let target = str_at(&ports[0], "/targetPort");
        assert!(
            port_names.iter().any(|p| p == target),
            "targetPort {target}"
        );
        targets.insert(str_at(s, "/metadata/name").to_owned(), target.to_owned());
    }
    assert_eq!(targets.get("odgw").map(String::as_str), Some("http"));
    assert_eq!(targets.values().filter(|t| *t == "admin").count(), 1);
}

#[test]
fn example_secret_holds_only_placeholders() {
    let s = yaml_doc("kubernetes/secret.example.yaml");
    assert_eq!(str_at(&s, "/kind"), "Secret");
    assert!(
        s.get("data").is_none(),
        "placeholders go in stringData, readable as such"
    );
    let values = s["stringData"].as_object().unwrap();
    assert_eq!(values.len(), 3);
    for (k, v) in values {
        let v = v.as_str().unwrap();
        assert!(
            v.starts_with("REPLACE-ME"),
            "{k} must be a marked placeholder"
        );
        // A real master key is 44 characters of base64 ending in '='.
        assert!(
            !(v.len() == 44 && v.ends_with('=')),
            "{k} looks like a real key"
        );
    }
}

#[test]
fn kustomize_builds_when_kubectl_is_installed() {
    let dir = deploy("kubernetes");
    let Some(out) = run_tool("kubectl", &["kustomize", dir.to_str().unwrap()]) else {
        return;
    };
    assert!(out.status.success(), "{}", output_text(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for kind in [
        "Namespace",
        "ConfigMap",
        "PersistentVolumeClaim",
        "Deployment",
        "Service",
    ] {
        assert!(
            text.contains(&format!("kind: {kind}\n")),
            "kustomize output lacks {kind}"
        );
    }
    assert!(!text.contains("kind: Secret"));
}

// ---------------------------------------------------------------- Prometheus

/// Metric families a running gateway started with `opts` exposes: name →
/// TYPE, and the whole exposition.
async fn exposed_metrics(opts: Options) -> (BTreeMap<String, String>, String) {
    let gw = TestGateway::start_with(opts).await;
    // One forwarded and one denied request, so odgw_requests_total has samples.
    let token = gw.token(json!({}));
    let ok = gw.get("/api/v1/patients", Some(&token)).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    let denied = gw.get("/api/v1/patients", None).await;
    assert_eq!(denied.status, 401);
    let resp = gw
        .send(
            Request::builder()
                .method(Method::GET)
                .uri(format!("http://{}/metrics", gw.admin))
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert_eq!(resp.status, 200);
    let text = String::from_utf8(resp.body.to_vec()).unwrap();
    let types = metric_types(&text);
    gw.stop().await;
    (types, text)
}

/// The families of a Prometheus text exposition, from its `# TYPE` lines:
/// name → type. In this format (what a scrape without an OpenMetrics
/// `Accept` gets) a counter's family name carries its `_total`.
fn metric_types(exposition: &str) -> BTreeMap<String, String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, kind) = l.split_once(' ').unwrap();
            (name.to_owned(), kind.to_owned())
        })
        .collect()
}

/// Every `odgw_*` identifier in `text`.
fn odgw_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while let Some(off) = text[i..].find("odgw_") {
        let start = i + off;
        let mut end = start;
        while end < bytes.len() && ident(bytes[end]) {
            end += 1;
        }
        // "odgw_*" in prose is a glob, not a metric name.
        if (start == 0 || !ident(bytes[start - 1])) && end > start + "odgw_".len() {
            names.insert(text[start..end].to_owned());
        }
        i = end.max(start + 1);
    }
    names
}

/// `(label, value)` matchers inside every `odgw_requests_total{...}` selector.
fn request_matchers(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for part in text.split("odgw_requests_total{").skip(1) {
        let body = &part[..part.find('}').expect("unclosed selector")];
        for matcher in body.split(',') {
            let matcher = matcher.trim();
            let op = matcher
                .find(['=', '!'])
                .unwrap_or_else(|| panic!("matcher {matcher:?}"));
            let value = matcher[op..].trim_start_matches(['=', '!', '~']).trim();
            out.push((
                matcher[..op].trim().to_owned(),
                value.trim_matches('"').to_owned(),
            ));
        }
    }
    out
}

/// Every `.rs` file under `dir`, concatenated.
fn rust_sources(dir: &std::path::Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.push_str(&rust_sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
    out
}

#[tokio::test]
async fn alert_rules_use_only_metrics_and_labels_odgw_exposes() {
    let (families, exposition) = exposed_metrics(Options::default()).await;
    // The metric names this deployment relies on, each present in the code
    // (every crate registers its own).
    let sources = rust_sources(&repo().join("crates"));
    for (name, kind) in &families {
        if name.starts_with("odgw_") {
            assert!(
                sources.contains(name.as_str()),
                "{name} ({kind}) not found in sources"
            );
        }
    }

    let files = [
        "prometheus/odgw-rules.yml",
        "prometheus/prometheus.yml",
        "prometheus/odgw-rules.test.yml",
    ];
    for file in files {
        for name in odgw_names(&read(file)) {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|base| families.get(*base).map(String::as_str) == Some("histogram"))
                })
                .unwrap_or(&name);
            assert!(
                families.contains_key(family),
                "deploy/{file} names {name}, which odgw does not expose; exposed: {:?}",
                families.keys().collect::<Vec<_>>()
            );
        }
    }

    // Label names and values the rules match on are the ones odgw emits.
    let samples: Vec<&str> = exposition
        .lines()
        .filter(|l| l.starts_with("odgw_requests_total{"))
        .collect();
    assert!(samples.len() >= 2, "{exposition}");
    for label in ["method=", "status=", "outcome="] {
        assert!(
            samples.iter().all(|s| s.contains(label)),
            "{label} missing in {samples:?}"
        );
    }
    let outcome_sources = [
        std::fs::read_to_string(repo().join("crates/odgw-core/src/error.rs")).unwrap(),
        std::fs::read_to_string(repo().join("crates/odgw-core/src/ids.rs")).unwrap(),
    ]
    .concat();
    for file in files {
        for (label, value) in request_matchers(&read(file)) {
            match label.as_str() {
                "outcome" => {
                    let known = [
                        "forwarded",
                        "cache_hit",
                        "denied",
                        "rate_limited",
                        "upstream_error",
                        "gateway_error",
                    ];
                    assert!(
                        known.contains(&value.as_str()),
                        "deploy/{file}: outcome {value:?}"
                    );
                    assert!(
                        outcome_sources.contains(&format!("\"{value}\"")),
                        "outcome {value} not in code"
                    );
                }
                "status" => assert!(
                    ["1xx", "2xx", "3xx", "4xx", "5xx"].contains(&value.as_str()),
                    "deploy/{file}: status is a class label, not {value:?}"
                ),
                "method" | "job" | "instance" => {}
                other => panic!("deploy/{file}: odgw_requests_total has no label {other}"),
            }
        }
    }
    assert!(
        exposition.contains("outcome=\"forwarded\"") && exposition.contains("outcome=\"denied\"")
    );
}

/// The families the table in `crates/odgw/src/metrics.rs`'s module doc
/// lists: name (without its label set) → type (`gauge (info)` is a gauge).
fn documented_metrics() -> BTreeMap<String, String> {
    let path = repo().join("crates/odgw/src/metrics.rs");
    let source = std::fs::read_to_string(&path).unwrap();
    let doc: Vec<&str> = source
        .lines()
        .map_while(|l| l.strip_prefix("//!"))
        .map(str::trim)
        .collect();
    let header = doc
        .iter()
        .position(|l| *l == "| family | type | registered by |")
        .unwrap_or_else(|| panic!("no metrics table in {}", path.display()));
    assert!(doc[header + 1].starts_with("|---"), "{}", doc[header + 1]);
    let mut documented = BTreeMap::new();
    for row in doc[header + 2..].iter().take_while(|l| l.starts_with('|')) {
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        let [families, kind, _registered_by] = cells[..] else {
            panic!("row {row:?} does not have three cells");
        };
        let kind = kind.split(' ').next().unwrap();
        // Backticked names; a label set such as `{method,status}` is no
        // part of the family name.
        let names: Vec<&str> = families
            .split('`')
            .skip(1)
            .step_by(2)
            .map(|name| name.split('{').next().unwrap())
            .collect();
        assert!(!names.is_empty(), "row {row:?} names no family");
        for name in names {
            assert!(name.starts_with("odgw_"), "row {row:?}: {name}");
            let before = documented.insert(name.to_owned(), kind.to_owned());
            assert!(before.is_none(), "{name} is in the table twice");
        }
    }
    assert!(documented.len() > 10, "table cut short: {documented:?}");
    documented
}

/// Compares `documented` with the `odgw_` families of `exposed`, both ways
/// and by type, naming every difference.
fn assert_same_families(
    documented: &BTreeMap<String, String>,
    exposed: &BTreeMap<String, String>,
    gateway: &str,
) {
    let exposed: BTreeMap<&String, &String> = exposed
        .iter()
        .filter(|(name, _)| name.starts_with("odgw_"))
        .collect();
    let undocumented: Vec<_> = exposed
        .keys()
        .filter(|name| !documented.contains_key(**name))
        .collect();
    let missing: Vec<_> = documented
        .keys()
        .filter(|name| !exposed.contains_key(name))
        .collect();
    let mistyped: Vec<_> = documented
        .iter()
        .filter_map(|(name, kind)| {
            let shown = exposed.get(name)?;
            (*shown != kind).then(|| format!("{name}: table {kind}, scrape {shown}"))
        })
        .collect();
    assert!(
        undocumented.is_empty() && missing.is_empty() && mistyped.is_empty(),
        "crates/odgw/src/metrics.rs's table disagrees with a {gateway}:\n\
         exposed but not in the table: {undocumented:?}\n\
         in the table but not exposed: {missing:?}\n\
         types that differ: {mistyped:?}"
    );
}

#[tokio::test]
async fn the_metrics_table_lists_every_family_a_gateway_with_both_cluster_backends_exposes() {
    // Both cluster backends, so that the limiter (Redis) and store
    // (PostgreSQL) families are registered too: every family in the table.
    let schema = unique("odgw_e2e_");
    let opts = Options {
        extra_toml: format!(
            "[postgres]\nschema = \"{schema}\"\n[redis]\nkey_prefix = \"{}:\"\n",
            unique("odgw-e2e-")
        ),
        ..Options::default()
    }
    .env("ODGW_STORE__BACKEND", "postgres")
    .env("ODGW_LIMITS__BACKEND", "redis")
    .env("ODGW_POSTGRES_URL", &postgres_url())
    .env("ODGW_REDIS_URL", &redis_url());
    let (exposed, _) = exposed_metrics(opts).await;
    drop_schema(&postgres_url(), &schema).await;

    assert_same_families(
        &documented_metrics(),
        &exposed,
        "gateway with the postgres store and redis limits",
    );
}

#[tokio::test]
async fn a_single_node_gateway_exposes_the_metrics_table_except_the_limiter_and_store_families() {
    // The table's note: limiter families with limits.backend = "redis" only,
    // store families with store.backend = "postgres" only.
    let (exposed, _) = exposed_metrics(Options::default()).await;
    let mut documented = documented_metrics();
    documented
        .retain(|name, _| !name.starts_with("odgw_limiter_") && !name.starts_with("odgw_store_"));

    assert_same_families(
        &documented,
        &exposed,
        "single-node gateway (sled, local limits)",
    );
}

#[test]
fn alert_rules_cover_audit_readiness_upstream_and_rate_limits() {
    let doc = yaml_doc("prometheus/odgw-rules.yml");
    let mut alerts = BTreeMap::new();
    for group in doc["groups"].as_array().expect("groups") {
        assert!(group["name"].is_string());
        for rule in group["rules"].as_array().expect("rules") {
            let name = str_at(rule, "/alert").to_owned();
            let expr = str_at(rule, "/expr").to_owned();
            let severity = str_at(rule, "/labels/severity");
            assert!(
                ["critical", "warning"].contains(&severity),
                "{name}: severity {severity}"
            );
            assert!(
                !str_at(rule, "/annotations/summary").is_empty(),
                "{name}: summary"
            );
            assert!(
                !str_at(rule, "/annotations/description").is_empty(),
                "{name}: description"
            );
            if let Some(f) = rule.get("for") {
                duration(f.as_str().expect("for is a duration string"));
            }
            assert!(
                alerts.insert(name.clone(), expr).is_none(),
                "alert {name} twice"
            );
        }
    }
    let expr_of =
        |needle: &str| -> Vec<&String> { alerts.values().filter(|e| e.contains(needle)).collect() };
    assert!(
        expr_of("increase(odgw_audit_write_failures_total[5m]) > 0").len() == 1,
        "audit write failures alert"
    );
    assert!(
        expr_of("odgw_audit_healthy == 0").len() == 1,
        "audit health alert"
    );
    assert!(!expr_of("up{").is_empty(), "scrape-down alert");
    assert!(
        !expr_of("probe_success").is_empty(),
        "readiness probe alert"
    );
    assert!(
        !expr_of("outcome=\"upstream_error\"").is_empty(),
        "upstream error alert"
    );
    assert!(
        !expr_of("outcome=\"rate_limited\"").is_empty(),
        "rate limiting alert"
    );

    // Every alert is exercised or named by the rule tests or documented.
    let prom = yaml_doc("prometheus/prometheus.yml");
    assert_eq!(strings(&prom["rule_files"]), ["odgw-rules.yml"]);
    let jobs: Vec<&str> = prom["scrape_configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| str_at(j, "/job_name"))
        .collect();
    for job in ["odgw", "odgw-kubernetes", "odgw-readyz"] {
        assert!(jobs.contains(&job), "scrape job {job}");
        assert!(
            alerts
                .values()
                .any(|e| e.contains(&format!("{job}\"")) || e.contains(&format!("{job}|"))),
            "no alert uses job {job}"
        );
    }
    let admin_port = parse_config("config/odgw.systemd.toml")
        .server
        .admin_listen
        .to_string();
    assert!(read("prometheus/prometheus.yml").contains(&format!("\"{admin_port}\"")));
    let tests = yaml_doc("prometheus/odgw-rules.test.yml");
    assert_eq!(strings(&tests["rule_files"]), ["odgw-rules.yml"]);
    assert!(!tests["tests"].as_array().unwrap().is_empty());
}

#[test]
fn promtool_accepts_and_unit_tests_the_rules() {
    let dir = deploy("prometheus");
    let rules = dir.join("odgw-rules.yml");
    let Some(out) = run_tool("promtool", &["check", "rules", rules.to_str().unwrap()]) else {
        return;
    };
    assert!(out.status.success(), "{}", output_text(&out));
    let out = Command::new("promtool")
        .args(["test", "rules", "odgw-rules.test.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
}

// ---------------------------------------------------------------- YAML, README

fn all_yaml_files() -> Vec<String> {
    let mut files = Vec::new();
    for sub in ["kubernetes", "kubernetes/cluster", "prometheus"] {
        for e in std::fs::read_dir(deploy(sub)).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            if name.ends_with(".yaml") || name.ends_with(".yml") {
                files.push(format!("{sub}/{name}"));
            }
        }
    }
    files.sort();
    files
}

#[test]
fn every_yaml_file_parses_and_agrees_with_pyyaml() {
    let files = all_yaml_files();
    assert!(files.len() >= 10, "{files:?}");
    const SCRIPT: &str = "import sys, json\n\
try:\n    import yaml\nexcept ImportError:\n    sys.exit(3)\n\
docs = [d for d in yaml.safe_load_all(open(sys.argv[1], encoding='utf-8')) if d is not None]\n\
json.dump(docs, sys.stdout)\n";
    for file in files {
        let ours = yaml_docs(&file);
        assert!(!ours.is_empty(), "{file} is empty");
        let path = deploy(&file);
        let Some(out) = run_tool("python3", &["-c", SCRIPT, path.to_str().unwrap()]) else {
            continue;
        };
        if out.status.code() == Some(3) {
            eprintln!("note: PyYAML is not installed; skipping the YAML cross-check");
            continue;
        }
        assert!(
            out.status.success(),
            "PyYAML rejects deploy/{file}: {}",
            output_text(&out)
        );
        let theirs: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            ours, theirs,
            "deploy/{file}: serde_yaml and PyYAML disagree"
        );
    }
}

#[test]
fn readme_documents_every_deploy_file() {
    let readme = read("README.md");
    let mut files = vec![
        "Dockerfile".to_owned(),
        "Dockerfile.dockerignore".to_owned(),
        "odgw.service".to_owned(),
        "config/odgw.toml".to_owned(),
        "config/odgw.systemd.toml".to_owned(),
    ];
    files.extend(all_yaml_files());
    for f in files {
        assert!(deploy(&f).is_file(), "deploy/{f} missing");
        let name = f.rsplit('/').next().unwrap();
        assert!(
            readme.contains(name),
            "deploy/README.md does not mention {f}"
        );
    }
    for topic in [
        "head -c32 /dev/urandom | base64",
        "backup",
        "restore",
        "cannot be validated",
    ] {
        assert!(
            readme.to_lowercase().contains(&topic.to_lowercase()),
            "README lacks {topic:?}"
        );
    }
}

// ---------------------------------------------------------------- YAML reading

#[test]
fn yaml_reader_handles_and_rejects_what_it_should() {
    let v = yaml::parse(
        "# c\na: 1\nb:\n  - x\n  - k: v\n    num: -2\nc: \"q # not a comment\"  # comment\nd: [\"A\", b]\ne: |\n  one\n\n  two\nf: >-\n  x\n  y\ng: 0.5\nh: ~\ni: {}\nj: 'it''s'\nk:\n- compact\nl: \"yes\"\nm: '1:30'\n---\nz: true\n---\n# an empty document\n",
    )
    .unwrap();
    assert_eq!(
        v,
        [
            json!({"a": 1, "b": ["x", {"k": "v", "num": -2}], "c": "q # not a comment",
                   "d": ["A", "b"], "e": "one\n\ntwo\n", "f": "x y", "g": 0.5, "h": null,
                   "i": {}, "j": "it's", "k": ["compact"], "l": "yes", "m": "1:30"}),
            json!({"z": true}),
        ]
    );
    for bad in [
        "a: 1\n  b: 2\n",                   // stray indentation
        "a: 1\na: 2\n",                     // duplicate key
        "a:\n\t- x\n",                      // tab indentation
        "a: \"open\n",                      // unclosed quote
        "a: b: c\n",                        // nested mapping on one line
        "a: *ref\n",                        // alias of no anchor
        "- a\nb: 1\n",                      // sequence then mapping at top level
        "a: yes\n",                         // YAML 1.1 boolean: ambiguous
        "a: Off\n",                         // the same, capitalised
        "a: [x, on]\n",                     // the same, in a flow sequence
        "yes: 1\n",                         // the same, as a key
        "a: 0700\n",                        // octal in YAML 1.1
        "a: 1:30\n",                        // sexagesimal in YAML 1.1
        "a: 2024-05-01\n",                  // a timestamp in YAML 1.1
        "a: 1_000\n",                       // an integer in YAML 1.1
        "a: \"yes\"\nb: yes\n",             // quoted once does not excuse plain twice
        "a: \"yes\"\n---\nb: yes\n",        // nor in another document
        "a: !custom x\n",                   // tag
        "base: {x: 1}\nb:\n  <<: {y: 2}\n", // merge key: readers differ
        "1: one\n",                         // non-string key
        "[a]: one\n",                       // non-string key
    ] {
        assert!(yaml::parse(bad).is_err(), "accepted {bad:?}");
    }
}

/// Reads the YAML under deploy/ with serde_yaml into `serde_json::Value`s,
/// and refuses what would not read the same in every YAML reader: tags,
/// merge keys and non-string keys (which JSON and Kubernetes lack), and plain
/// scalars that YAML 1.1 readers (PyYAML; the YAML library Kubernetes tools
/// use) take for booleans, numbers or dates while YAML 1.2 readers (serde_yaml)
/// take them for strings, such as `yes`, `on`, `0700` or `1:30`: those must be
/// quoted. serde_yaml itself refuses duplicate keys, tabs in indentation and
/// unknown aliases. `every_yaml_file_parses_and_agrees_with_pyyaml` also
/// compares the whole result with PyYAML's where PyYAML is installed.
pub(crate) mod yaml {
    use serde::Deserialize as _;
    use serde_json::Value;
    use serde_yaml::Value as Yaml;

    /// Parses every non-empty document.
    pub fn parse(text: &str) -> Result<Vec<Value>, String> {
        let mut docs = Vec::new();
        for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let doc =
                Yaml::deserialize(document).map_err(|e| format!("document {}: {e}", i + 1))?;
            if !doc.is_null() {
                docs.push(doc);
            }
        }
        check_portable(&docs, text)?;
        docs.iter()
            .map(|doc| serde_json::to_value(doc).map_err(|e| e.to_string()))
            .collect()
    }

    /// See the module docs. `text` is the source of `docs`: a string they
    /// hold that YAML 1.1 reads otherwise must appear quoted there at least
    /// as many times as they hold it, so no copy of it was written plain.
    fn check_portable(docs: &[Yaml], text: &str) -> Result<(), String> {
        let mut strings = Vec::new();
        for doc in docs {
            collect(doc, &mut strings)?;
        }
        strings.retain(|s| reads_otherwise_in_yaml_1_1(s));
        strings.sort_unstable();
        for same in strings.chunk_by(|a, b| a == b) {
            let s = same[0];
            let quoted =
                text.matches(&format!("\"{s}\"")).count() + text.matches(&format!("'{s}'")).count();
            if quoted < same.len() {
                return Err(format!(
                    "{s:?} is read differently by YAML 1.1 readers unless quoted"
                ));
            }
        }
        Ok(())
    }

    /// Every string scalar of `node`, keys included; errors on tags, merge
    /// keys and keys that are not strings.
    fn collect<'a>(node: &'a Yaml, strings: &mut Vec<&'a str>) -> Result<(), String> {
        match node {
            Yaml::String(s) => strings.push(s),
            Yaml::Sequence(items) => {
                for item in items {
                    collect(item, strings)?;
                }
            }
            Yaml::Mapping(map) => {
                for (key, value) in map {
                    match key {
                        Yaml::String(k) if k == "<<" => {
                            return Err("merge keys (`<<`) are not read alike".to_owned())
                        }
                        Yaml::String(k) => strings.push(k),
                        other => return Err(format!("keys must be strings, got {other:?}")),
                    }
                    collect(value, strings)?;
                }
            }
            Yaml::Tagged(tagged) => return Err(format!("tags are not allowed: {}", tagged.tag)),
            Yaml::Null | Yaml::Bool(_) | Yaml::Number(_) => {}
        }
        Ok(())
    }

    /// Whether a YAML 1.1 reader takes `s`, written plain, for something
    /// other than this string: its booleans (`yes`, `On`, `n`, ...), nulls,
    /// and anything that starts like a number and holds only number, date
    /// and time characters (`0700`, `1:30`, `1_000`, `2024-05-01`, `1e3`).
    fn reads_otherwise_in_yaml_1_1(s: &str) -> bool {
        const WORDS: [&str; 11] = [
            "y", "n", "yes", "no", "on", "off", "true", "false", "null", "~", "",
        ];
        if WORDS.contains(&s.to_ascii_lowercase().as_str()) {
            return true;
        }
        let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
        digits.starts_with(|c: char| c.is_ascii_digit() || c == '.')
            && digits
                .bytes()
                .all(|b| b.is_ascii_digit() || b"._:eE+-xXoObB".contains(&b))
    }
}
