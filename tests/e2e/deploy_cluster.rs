//! Checks on the cluster deploy: `deploy/config/odgw.cluster.toml` and
//! `deploy/kubernetes/cluster/` (three replicas sharing PostgreSQL and Redis,
//! each with its own audit volume), tied to the code they configure:
//! - the config loads through `odgw::config::Config` with the Secret's files
//!   laid out as the StatefulSet mounts them, selects the postgres and redis
//!   backends, and differs from the single-node container config only in
//!   what a cluster changes;
//! - the manifests (parsed by the deploy tests' strict YAML reader, which
//!   also cross-checks every file against PyYAML) agree with the config and
//!   with each other: secret files, node id, volumes, ports, probes, grace
//!   periods, selectors;
//! - the one-off move-store Job and the README's commands parse with odgw's
//!   own CLI, and the Job reads exactly the single-node deploy's objects;
//! - `kubectl kustomize` builds the kustomization when kubectl is installed.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::Duration,
};

use odgw::{
    cli::{Command as OdgwCommand, LogFormat, StoreCommand},
    config::{
        Config, LimitsBackend, StoreBackend, ENV_ADMIN_TOKEN, ENV_DEVELOPER_KEY, ENV_MASTER_KEY,
        ENV_POSTGRES_URL, ENV_REDIS_URL,
    },
};
use serde_json::{json, Value};

use crate::deploy::{
    assert_single_writer_claim, deploy, odgw_cli, output_text, parse_config, read, run_tool,
    secret_env, str_at, strings, yaml, yaml_doc, yaml_docs,
};

const CLUSTER_CONFIG: &str = "config/odgw.cluster.toml";
const SINGLE_CONFIG: &str = "config/odgw.toml";
const CLUSTER_DIR: &str = "kubernetes/cluster";
/// Files of the cluster directory that kustomize must not apply.
const NOT_APPLIED: [&str; 2] = ["move-store.job.yaml", "secret.example.yaml"];
/// Env vars that would carry a secret's value.
const SECRET_ENV: [&str; 5] = [
    ENV_MASTER_KEY,
    ENV_ADMIN_TOKEN,
    ENV_DEVELOPER_KEY,
    ENV_POSTGRES_URL,
    ENV_REDIS_URL,
];

// ---------------------------------------------------------------- reading

fn in_cluster(file: &str) -> String {
    format!("{CLUSTER_DIR}/{file}")
}

fn env_of(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn items<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("no list at {pointer} in {v}"))
}

/// The resources kustomize applies, by kind.
struct Applied {
    kustomization: Value,
    listed: Vec<String>,
    by_kind: BTreeMap<String, Vec<Value>>,
}

impl Applied {
    fn load() -> Self {
        let kustomization = yaml_doc(&in_cluster("kustomization.yaml"));
        assert_eq!(str_at(&kustomization, "/kind"), "Kustomization");
        let listed = strings(&kustomization["resources"]);
        let mut by_kind: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for file in &listed {
            for doc in yaml_docs(&in_cluster(file)) {
                assert!(doc["apiVersion"].is_string(), "{file}: apiVersion");
                str_at(&doc, "/metadata/name");
                assert!(
                    doc.pointer("/metadata/namespace").is_none(),
                    "{file}: the kustomization sets the namespace"
                );
                by_kind
                    .entry(str_at(&doc, "/kind").to_owned())
                    .or_default()
                    .push(doc);
            }
        }
        Self {
            kustomization,
            listed,
            by_kind,
        }
    }

    fn all(&self, kind: &str) -> &[Value] {
        self.by_kind.get(kind).map_or(&[], Vec::as_slice)
    }

    fn one(&self, kind: &str) -> &Value {
        match self.all(kind) {
            [one] => one,
            other => panic!("expected one {kind}, found {}", other.len()),
        }
    }

    fn statefulset(&self) -> &Value {
        self.one("StatefulSet")
    }
}

/// The pod template's spec of a workload.
fn pod_spec(workload: &Value) -> &Value {
    workload
        .pointer("/spec/template/spec")
        .expect("a pod template")
}

fn container<'a>(spec: &'a Value, list: &str, name: &str) -> &'a Value {
    items(spec, &format!("/{list}"))
        .iter()
        .find(|c| c["name"] == json!(name))
        .unwrap_or_else(|| panic!("no {list} entry named {name}"))
}

/// mountPath → volume name.
fn mounts(container: &Value) -> BTreeMap<String, String> {
    items(container, "/volumeMounts")
        .iter()
        .map(|m| {
            (
                str_at(m, "/mountPath").to_owned(),
                str_at(m, "/name").to_owned(),
            )
        })
        .collect()
}

fn volume<'a>(spec: &'a Value, name: &str) -> &'a Value {
    items(spec, "/volumes")
        .iter()
        .find(|v| v["name"] == json!(name))
        .unwrap_or_else(|| panic!("no volume {name}"))
}

/// The volume mounted at `path`, if any.
fn volume_at<'a>(spec: &'a Value, container: &Value, path: &str) -> Option<&'a Value> {
    mounts(container).get(path).map(|name| volume(spec, name))
}

/// Whether every `key: value` of a selector's `matchLabels` (or of a
/// Service's plain selector) is among `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let selector = selector.get("matchLabels").unwrap_or(selector);
    let wanted = selector.as_object().expect("a label map");
    !wanted.is_empty() && wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A container port given by name or number, as a number.
fn port_number(container: &Value, port: &Value) -> u64 {
    if let Some(n) = port.as_u64() {
        return n;
    }
    let name = port.as_str().expect("a port name or number");
    items(container, "/ports")
        .iter()
        .find(|p| p["name"] == json!(name))
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

/// The single-node deploy's hardening, for any pod this directory runs.
fn assert_hardened(what: &str, spec: &Value, containers: &[&Value]) {
    assert_eq!(spec["automountServiceAccountToken"], json!(false), "{what}");
    assert_eq!(spec["enableServiceLinks"], json!(false), "{what}");
    let pod = &spec["securityContext"];
    assert_eq!(pod["runAsNonRoot"], json!(true), "{what}");
    let uid = pod["runAsUser"].as_u64().expect("numeric runAsUser");
    assert_ne!(uid, 0, "{what}");
    assert_eq!(
        str_at(pod, "/seccompProfile/type"),
        "RuntimeDefault",
        "{what}"
    );
    // The image's user: the single-node Deployment runs as it too.
    let single = yaml_doc("kubernetes/deployment.yaml");
    assert_eq!(
        pod_spec(&single)["securityContext"]["runAsUser"],
        json!(uid),
        "{what}"
    );
    for c in containers {
        let name = str_at(c, "/name");
        let sc = &c["securityContext"];
        assert_eq!(sc["readOnlyRootFilesystem"], json!(true), "{what}/{name}");
        assert_eq!(
            sc["allowPrivilegeEscalation"],
            json!(false),
            "{what}/{name}"
        );
        assert_ne!(sc["privileged"], json!(true), "{what}/{name}");
        assert_eq!(
            strings(&sc["capabilities"]["drop"]),
            ["ALL"],
            "{what}/{name}"
        );
        assert!(
            c["resources"]["requests"]["cpu"].is_string(),
            "{what}/{name}: cpu request"
        );
        for bound in ["requests", "limits"] {
            assert!(
                c["resources"][bound]["memory"].is_string(),
                "{what}/{name}: memory {bound}"
            );
        }
        // Same image as the single-node deploy, so one build serves both.
        assert_eq!(
            c["image"],
            pod_spec(&single)["containers"][0]["image"],
            "{what}/{name}: image"
        );
    }
}

/// Every secret file the cluster config names, by config key.
fn secret_files(c: &Config) -> BTreeMap<&'static str, PathBuf> {
    [
        ("store.master_key_file", c.store.master_key_file.clone()),
        ("admin.token_file", c.admin.token_file.clone()),
        (
            "upstream.developer_key_file",
            c.upstream.developer_key_file.clone(),
        ),
        ("postgres.url_file", c.postgres.url_file.clone()),
        ("redis.url_file", c.redis.url_file.clone()),
    ]
    .into_iter()
    .map(|(key, file)| (key, file.unwrap_or_else(|| panic!("{key} is not set"))))
    .collect()
}

/// The example Secret: its name and its keys.
fn example_secret() -> (String, BTreeSet<String>) {
    let s = yaml_doc(&in_cluster("secret.example.yaml"));
    let keys = s["stringData"]
        .as_object()
        .expect("stringData")
        .keys()
        .cloned()
        .collect();
    (str_at(&s, "/metadata/name").to_owned(), keys)
}

/// The Secret key behind `file` as `container` sees it: the mount holding
/// the file must be a volume of Secret `secret`; returns the key.
fn secret_key_of(spec: &Value, container: &Value, file: &Path, secret: &str) -> String {
    let dir = file.parent().expect("a directory").to_str().unwrap();
    let name = file.file_name().unwrap().to_str().unwrap();
    let mount = items(container, "/volumeMounts")
        .iter()
        .find(|m| m["mountPath"] == json!(dir))
        .unwrap_or_else(|| panic!("nothing is mounted at {dir} (for {})", file.display()));
    assert_eq!(mount["readOnly"], json!(true), "{dir} is mounted read-only");
    assert!(mount.get("subPath").is_none(), "{dir}: no subPath");
    let v = volume(spec, str_at(mount, "/name"));
    assert_eq!(str_at(v, "/secret/secretName"), secret, "volume at {dir}");
    let mode = v["secret"]["defaultMode"]
        .as_u64()
        .expect("an explicit defaultMode");
    assert_eq!(mode & 0o137, 0, "{dir}: mode {mode:o} is at most 0640");
    match v["secret"].get("items") {
        // Without items, every key is a file named as the key.
        None => name.to_owned(),
        Some(list) => str_at(
            list.as_array()
                .unwrap()
                .iter()
                .find(|i| i["path"] == json!(name))
                .unwrap_or_else(|| panic!("no Secret item is mounted as {name}")),
            "/key",
        )
        .to_owned(),
    }
}

// ---------------------------------------------------------------- config

#[test]
fn cluster_config_loads_with_the_mounted_secret_files_and_selects_postgres_and_redis() {
    let c = parse_config(CLUSTER_CONFIG);
    assert_eq!(c.store.backend, StoreBackend::Postgres);
    assert_eq!(c.limits.backend, LimitsBackend::Redis);
    assert_eq!(c.server.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(c.server.admin_listen.to_string(), "0.0.0.0:8081");
    assert!(c.audit.fail_closed, "production audit must fail closed");
    assert!(
        c.audit.path.starts_with("/var/lib/odgw"),
        "{:?}",
        c.audit.path
    );
    // node_id comes from each pod, never from the shared file.
    let table: toml::Table = read(CLUSTER_CONFIG).parse().unwrap();
    assert!(
        table["server"].get("node_id").is_none(),
        "server.node_id must differ per replica: set it by env, not in the file"
    );

    // Lay the Secret out as the StatefulSet mounts it (one file per key, in
    // its mount directory), point the config there, and load it with no
    // secret in the environment: every file it names must exist.
    let applied = Applied::load();
    let sts = applied.statefulset();
    let spec = pod_spec(sts);
    let odgw = container(spec, "containers", "odgw");
    let (secret, keys) = example_secret();
    let files = secret_files(&c);
    let dir = files["store.master_key_file"]
        .parent()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    for file in files.values() {
        assert_eq!(
            file.parent().unwrap(),
            Path::new(&dir),
            "one secret directory"
        );
    }
    let volume = volume_at(spec, odgw, &dir).expect("the secret directory is mounted");
    assert_eq!(str_at(volume, "/secret/secretName"), secret);

    let tmp = tempfile::tempdir().unwrap();
    let mounted = tmp.path().join(dir.trim_start_matches('/'));
    std::fs::create_dir_all(&mounted).unwrap();
    for key in &keys {
        let value = if key == "master-key" {
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"
        } else {
            "placeholder\n"
        };
        std::fs::write(mounted.join(key), value).unwrap();
    }
    let text =
        read(CLUSTER_CONFIG).replace(&format!("\"{dir}/"), &format!("\"{}/", mounted.display()));
    let pod = format!("{}-0", str_at(sts, "/metadata/name"));
    let node_env = env_of(&[("ODGW_SERVER__NODE_ID", &pod)]);
    let loaded = Config::from_toml_str(&text, &node_env)
        .unwrap_or_else(|e| panic!("{CLUSTER_CONFIG} under the mounted Secret: {e}"));
    assert_eq!(loaded.server.node_id, pod);
    assert_eq!(loaded.store.backend, StoreBackend::Postgres);
    assert_eq!(loaded.limits.backend, LimitsBackend::Redis);
    assert_eq!(
        loaded.postgres.url_file.as_deref(),
        Some(mounted.join("postgres-url").as_path())
    );

    // The failing edge: a Secret without redis-url leaves a replica unable
    // to start, and the loader says which key is missing.
    std::fs::remove_file(mounted.join("redis-url")).unwrap();
    let err = Config::from_toml_str(&text, &node_env)
        .expect_err("a missing secret file is refused")
        .to_string();
    assert!(err.contains("redis.url_file"), "{err}");
    assert!(!err.contains("postgres.url_file"), "{err}");
}

#[test]
fn cluster_config_differs_from_the_single_node_one_only_in_cluster_settings() {
    let single = parse_config(SINGLE_CONFIG);
    let cluster = parse_config(CLUSTER_CONFIG);
    let as_json = |c: &Config| serde_json::to_value(c).unwrap();
    let (mut a, mut b) = (as_json(&single), as_json(&cluster));
    // What a cluster changes: the backends, where secrets are read from, and
    // the sections only a cluster uses.
    for v in [&mut a, &mut b] {
        let o = v.as_object_mut().unwrap();
        o.remove("store");
        o.remove("admin");
        o.remove("postgres");
        o.remove("redis");
        o["upstream"]
            .as_object_mut()
            .unwrap()
            .remove("developer_key_file");
        o["limits"].as_object_mut().unwrap().remove("backend");
    }
    assert_eq!(
        a, b,
        "{CLUSTER_CONFIG} and {SINGLE_CONFIG} must agree on every traffic setting"
    );
    assert_eq!(single.store.backend, StoreBackend::Sled);
    assert_eq!(single.limits.backend, LimitsBackend::Local);
}

#[test]
fn every_replica_name_is_a_valid_node_id() {
    let applied = Applied::load();
    let sts = applied.statefulset();
    let replicas = sts["spec"]["replicas"].as_u64().unwrap();
    let name = str_at(sts, "/metadata/name");
    let env = secrets_as_env();
    for n in 0..replicas {
        let pod = format!("{name}-{n}");
        let c = Config::parse(
            Some(&deploy(CLUSTER_CONFIG)),
            &env_of(&[("ODGW_SERVER__NODE_ID", &pod)]),
        )
        .unwrap();
        c.validate(&env)
            .unwrap_or_else(|e| panic!("pod {pod} as node_id: {e}"));
        assert_eq!(c.server.node_id, pod);
    }
}

/// Every secret as an env var, for validating without the files: the
/// single-node deploy's, plus the two URLs a cluster adds.
fn secrets_as_env() -> BTreeMap<String, String> {
    let mut env = secret_env();
    env.extend(env_of(&[
        (ENV_POSTGRES_URL, "postgres://db/odgw"),
        (ENV_REDIS_URL, "redis://cache"),
    ]));
    env
}

// ---------------------------------------------------------------- kustomization

#[test]
fn kustomization_applies_every_manifest_but_the_example_secret_and_the_move_job() {
    let applied = Applied::load();
    let on_disk: BTreeSet<String> = std::fs::read_dir(deploy(CLUSTER_DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    let listed: BTreeSet<String> = applied.listed.iter().cloned().collect();
    assert_eq!(
        listed.len(),
        applied.listed.len(),
        "a resource listed twice"
    );
    for file in &listed {
        assert!(on_disk.contains(file), "kustomization lists missing {file}");
    }
    let unlisted: Vec<&str> = on_disk
        .iter()
        .filter(|f| !listed.contains(*f))
        .map(String::as_str)
        .collect();
    assert_eq!(unlisted, NOT_APPLIED, "only these stay out");

    let kinds: BTreeSet<&str> = applied.by_kind.keys().map(String::as_str).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "ConfigMap",
            "Namespace",
            "PodDisruptionBudget",
            "Service",
            "StatefulSet"
        ])
    );
    // No Secret or one-off Job is applied from the repository, and no
    // shared volume exists (each replica's audit volume comes from the
    // StatefulSet).
    for absent in ["Secret", "Job", "PersistentVolumeClaim", "Deployment"] {
        assert!(!kinds.contains(absent), "{absent} must not be applied");
    }

    // The single-node deploy's namespace, declared the same way.
    let ns = applied.one("Namespace");
    assert_eq!(
        str_at(&applied.kustomization, "/namespace"),
        str_at(ns, "/metadata/name")
    );
    let single = yaml_doc("kubernetes/namespace.yaml");
    assert_eq!(ns, &single, "the namespace matches the single-node one");
}

#[test]
fn configmap_carries_the_cluster_config_verbatim() {
    let applied = Applied::load();
    let cm = applied.one("ConfigMap");
    assert_eq!(
        str_at(cm, "/data/odgw.toml"),
        read(CLUSTER_CONFIG),
        "configmap.yaml must embed {CLUSTER_CONFIG} exactly"
    );
    // Its own name: the single-node ConfigMap may be in the namespace too.
    let single = yaml_doc("kubernetes/configmap.yaml");
    assert_ne!(
        str_at(cm, "/metadata/name"),
        str_at(&single, "/metadata/name")
    );
}

// ---------------------------------------------------------------- StatefulSet

#[test]
fn statefulset_runs_three_hardened_replicas_probed_on_the_admin_port() {
    let applied = Applied::load();
    let sts = applied.statefulset();
    let config = parse_config(CLUSTER_CONFIG);
    assert_eq!(sts["spec"]["replicas"], json!(3));
    let labels = sts.pointer("/spec/template/metadata/labels").unwrap();
    assert!(selects(&sts["spec"]["selector"], labels), "selector");
    assert_eq!(
        str_at(sts, "/spec/updateStrategy/type"),
        "RollingUpdate",
        "replicas are replaced one at a time"
    );

    let spec = pod_spec(sts);
    let odgw = container(spec, "containers", "odgw");
    assert_eq!(items(spec, "/containers").len(), 1);
    assert_hardened("StatefulSet", spec, &[odgw]);

    // Starts odgw serve with the ConfigMap's file.
    let cli = odgw_cli("StatefulSet args", &strings(&odgw["args"]));
    assert!(matches!(&cli.command, OdgwCommand::Serve(s) if !s.dev));
    assert_eq!(cli.log_format, LogFormat::Json);
    let config_path = cli.config.expect("--config");
    let dir = config_path.parent().unwrap().to_str().unwrap();
    let cm = volume_at(spec, odgw, dir).expect("the config directory is mounted");
    assert_eq!(
        str_at(cm, "/configMap/name"),
        str_at(applied.one("ConfigMap"), "/metadata/name")
    );
    let key = config_path.file_name().unwrap().to_str().unwrap();
    assert!(
        applied.one("ConfigMap")["data"].get(key).is_some(),
        "the ConfigMap has no {key}"
    );

    // Ports are the config's listeners; every probe is on the admin port.
    let port = |name: &str| port_number(odgw, &json!(name));
    assert_eq!(port("http"), u64::from(config.server.listen.port()));
    assert_eq!(port("admin"), u64::from(config.server.admin_listen.port()));
    for (probe, path) in [
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ] {
        assert_eq!(
            str_at(odgw, &format!("/{probe}/httpGet/path")),
            path,
            "{probe}"
        );
        assert_eq!(
            port_number(odgw, &odgw[probe]["httpGet"]["port"]),
            u64::from(config.server.admin_listen.port()),
            "{probe} port"
        );
    }

    // SIGKILL comes only after the preStop pause and the whole shutdown grace.
    let grace = spec["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    let pause = odgw
        .pointer("/lifecycle/preStop/sleep/seconds")
        .and_then(Value::as_u64)
        .expect("a preStop sleep (the image has no shell)");
    assert!(pause > 0);
    assert!(
        Duration::from_secs(grace) > Duration::from_secs(pause) + config.server.shutdown_grace.0,
        "terminationGracePeriodSeconds {grace} must exceed preStop {pause}s + shutdown_grace"
    );

    // Replicas spread over nodes where possible, never forced.
    let terms = items(
        spec,
        "/affinity/podAntiAffinity/preferredDuringSchedulingIgnoredDuringExecution",
    );
    assert!(!terms.is_empty());
    assert!(spec
        .pointer("/affinity/podAntiAffinity/requiredDuringSchedulingIgnoredDuringExecution")
        .is_none());
    let term = &terms[0]["podAffinityTerm"];
    assert_eq!(str_at(term, "/topologyKey"), "kubernetes.io/hostname");
    assert!(
        selects(&term["labelSelector"], labels),
        "anti-affinity selects the replicas"
    );

    // Scraped like the single-node pod, on the admin port.
    let annotations = sts.pointer("/spec/template/metadata/annotations").unwrap();
    assert_eq!(annotations["prometheus.io/scrape"], json!("true"));
    assert_eq!(
        annotations["prometheus.io/port"],
        json!(config.server.admin_listen.port().to_string())
    );
}

#[test]
fn statefulset_mounts_every_secret_file_the_config_names_and_sets_the_node_id() {
    let applied = Applied::load();
    let sts = applied.statefulset();
    let spec = pod_spec(sts);
    let odgw = container(spec, "containers", "odgw");
    let config = parse_config(CLUSTER_CONFIG);
    let (secret, keys) = example_secret();

    let mut used = BTreeSet::new();
    for (config_key, file) in secret_files(&config) {
        let key = secret_key_of(spec, odgw, &file, &secret);
        assert!(
            keys.contains(&key),
            "{config_key} reads Secret key {key}, which secret.example.yaml lacks"
        );
        assert!(used.insert(key.clone()), "{key} serves two config keys");
    }
    assert_eq!(used, keys, "every Secret key is read by the config");

    // The environment holds no secret: only the node id, from the pod name.
    let env = items(odgw, "/env");
    for e in env {
        let name = str_at(e, "/name");
        assert!(
            !SECRET_ENV.contains(&name),
            "{name}: secrets come from files"
        );
        assert!(
            e.pointer("/valueFrom/secretKeyRef").is_none(),
            "{name}: no secret in the environment"
        );
    }
    let node = env
        .iter()
        .find(|e| e["name"] == json!("ODGW_SERVER__NODE_ID"))
        .expect("ODGW_SERVER__NODE_ID");
    assert_eq!(
        str_at(node, "/valueFrom/fieldRef/fieldPath"),
        "metadata.name"
    );
    assert!(node.get("value").is_none());

    // Every ODGW_*__* variable is a real config key.
    let overrides: BTreeMap<String, String> = env
        .iter()
        .map(|e| str_at(e, "/name"))
        .filter(|n| n.starts_with("ODGW_") && n.contains("__"))
        .map(|n| (n.to_owned(), "odgw-0".to_owned()))
        .collect();
    assert!(!overrides.is_empty());
    let c = Config::parse(Some(&deploy(CLUSTER_CONFIG)), &overrides)
        .unwrap_or_else(|e| panic!("StatefulSet env overrides: {e}"));
    assert_eq!(c.server.node_id, "odgw-0");
}

#[test]
fn each_replica_keeps_its_audit_trail_on_its_own_volume() {
    let applied = Applied::load();
    let sts = applied.statefulset();
    let spec = pod_spec(sts);
    let odgw = container(spec, "containers", "odgw");
    let config = parse_config(CLUSTER_CONFIG);

    let templates = items(sts, "/spec/volumeClaimTemplates");
    assert_eq!(
        templates.len(),
        1,
        "one volume per replica: its audit trail"
    );
    let claim = &templates[0];
    let claim_name = str_at(claim, "/metadata/name");
    assert_single_writer_claim(claim, "one writer per audit trail, never a shared volume");

    // The claim is mounted where the audit trail lives, and is no pod volume
    // (a template, so each pod gets its own).
    let (mount, _) = mounts(odgw)
        .into_iter()
        .find(|(_, name)| name == claim_name)
        .expect("the audit claim is mounted");
    assert!(
        config.audit.path.starts_with(&mount),
        "audit.path {:?} is not on the claim mounted at {mount}",
        config.audit.path
    );
    for v in items(spec, "/volumes") {
        assert_ne!(str_at(v, "/name"), claim_name);
        assert!(
            v.get("persistentVolumeClaim").is_none(),
            "no volume is shared between replicas: {v}"
        );
    }
    // No sled volume: the keys are in PostgreSQL.
    assert_eq!(config.store.backend, StoreBackend::Postgres);
    assert_eq!(
        mounts(odgw).values().filter(|n| *n == claim_name).count(),
        1
    );

    // Scaling down or deleting keeps the trails.
    for when in ["whenDeleted", "whenScaled"] {
        assert_eq!(
            str_at(
                sts,
                &format!("/spec/persistentVolumeClaimRetentionPolicy/{when}")
            ),
            "Retain",
            "{when}"
        );
    }

    // Everything else the pod writes is in memory or a small emptyDir.
    for (path, name) in mounts(odgw) {
        if name == claim_name {
            continue;
        }
        let v = volume(spec, &name);
        assert!(
            v.get("configMap").is_some()
                || v.get("secret").is_some()
                || v.get("emptyDir").is_some(),
            "{path}: unexpected volume {v}"
        );
    }
}

// ---------------------------------------------------------------- Services, PDB

#[test]
fn services_and_the_disruption_budget_select_the_replicas_and_only_them() {
    let applied = Applied::load();
    let sts = applied.statefulset();
    let labels = sts.pointer("/spec/template/metadata/labels").unwrap();
    let odgw = container(pod_spec(sts), "containers", "odgw");
    let replicas = sts["spec"]["replicas"].as_u64().unwrap();
    // Pods that must never get cluster traffic: the single-node gateway
    // (its own sled store) and the one-off move Job.
    let single = yaml_doc("kubernetes/deployment.yaml");
    let single_labels = single.pointer("/spec/template/metadata/labels").unwrap();
    let job = yaml_doc(&in_cluster("move-store.job.yaml"));
    let job_labels = job.pointer("/spec/template/metadata/labels").unwrap();

    let mut by_name = BTreeMap::new();
    for s in applied.all("Service") {
        let name = str_at(s, "/metadata/name");
        assert_eq!(
            str_at(s, "/spec/type"),
            "ClusterIP",
            "{name}: never exposed"
        );
        let selector = &s["spec"]["selector"];
        assert!(selects(selector, labels), "{name} selects the replicas");
        assert!(
            !selects(selector, single_labels),
            "{name} must not select a single-node pod"
        );
        assert!(
            !selects(selector, job_labels),
            "{name} must not select the Job"
        );
        let ports = items(s, "/spec/ports");
        assert_eq!(ports.len(), 1, "{name}: one port per Service");
        let target = &ports[0]["targetPort"];
        port_number(odgw, target);
        by_name.insert(
            name.to_owned(),
            (s, str_at(&ports[0], "/targetPort").to_owned()),
        );
    }
    // Data plane over every replica, under the single-node Service's name.
    let (data, target) = &by_name["odgw"];
    assert_eq!(target, "http");
    assert!(
        data["spec"].get("clusterIP").is_none(),
        "load-balanced, not headless"
    );
    // Admin kept separate from the data plane.
    let admin: Vec<&String> = by_name
        .iter()
        .filter(|(_, (s, t))| t == "admin" && s["spec"].get("clusterIP").is_none())
        .map(|(n, _)| n)
        .collect();
    assert_eq!(admin, ["odgw-admin"]);
    assert!(by_name.values().all(|(_, t)| t == "http" || t == "admin"));
    // The StatefulSet's governing Service is headless, admin port only, and
    // lists replicas that are not ready so they can be inspected.
    let (governing, target) = &by_name[str_at(sts, "/spec/serviceName")];
    assert_eq!(governing["spec"]["clusterIP"], json!("None"));
    assert_eq!(governing["spec"]["publishNotReadyAddresses"], json!(true));
    assert_eq!(target, "admin");

    let pdb = applied.one("PodDisruptionBudget");
    assert!(
        selects(&pdb["spec"]["selector"], labels),
        "the PDB selects the replicas"
    );
    assert!(!selects(&pdb["spec"]["selector"], single_labels));
    let min = pdb["spec"]["minAvailable"].as_u64().expect("minAvailable");
    assert_eq!(min, 2);
    assert!(min < replicas, "a drain must be able to evict one replica");
    assert!(pdb["spec"].get("maxUnavailable").is_none());
}

#[test]
fn example_secret_holds_only_placeholders() {
    let s = yaml_doc(&in_cluster("secret.example.yaml"));
    assert_eq!(str_at(&s, "/kind"), "Secret");
    assert!(s.get("data").is_none(), "placeholders go in stringData");
    let values = s["stringData"].as_object().unwrap();
    let keys: Vec<&str> = values.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "admin-token",
            "developer-key",
            "master-key",
            "postgres-url",
            "redis-url"
        ]
    );
    for (k, v) in values {
        let v = v.as_str().unwrap();
        assert!(
            v.starts_with("REPLACE-ME"),
            "{k} must be a marked placeholder"
        );
        assert!(
            !(v.len() == 44 && v.ends_with('=')),
            "{k} looks like a real master key"
        );
        // A URL with a password in it would be a leaked credential.
        assert!(
            !v.contains('@') || v.contains(":PASSWORD@"),
            "{k} holds something that looks like a real credential"
        );
    }
}

// ---------------------------------------------------------------- move-store Job

#[test]
fn move_store_job_exports_the_single_node_store_and_imports_with_the_cluster_config() {
    let job = yaml_doc(&in_cluster("move-store.job.yaml"));
    assert_eq!(str_at(&job, "/kind"), "Job");
    assert_eq!(job["spec"]["backoffLimit"], json!(0), "no automatic retry");
    let spec = pod_spec(&job);
    assert_eq!(str_at(spec, "/restartPolicy"), "Never");
    let export = container(spec, "initContainers", "export");
    let import = container(spec, "containers", "import");
    assert_hardened("move-store Job", spec, &[export, import]);

    // 1. Export: the single-node config, volume and master key.
    let cli = odgw_cli("export", &strings(&export["args"]));
    let OdgwCommand::Store(StoreCommand::Export {
        output: Some(output),
    }) = &cli.command
    else {
        panic!("the init container must run `store export --output FILE`");
    };
    let export_config = cli.config.clone().expect("--config");
    let single_cm = yaml_doc("kubernetes/configmap.yaml");
    let cm = volume_at(
        spec,
        export,
        export_config.parent().unwrap().to_str().unwrap(),
    )
    .expect("the export's config directory is mounted");
    assert_eq!(
        str_at(cm, "/configMap/name"),
        str_at(&single_cm, "/metadata/name")
    );
    let single = parse_config(SINGLE_CONFIG);
    assert_eq!(single.store.backend, StoreBackend::Sled);
    let pvc = yaml_doc("kubernetes/pvc.yaml");
    let (data_mount, data_volume) = mounts(export)
        .into_iter()
        .find(|(_, name)| volume(spec, name).get("persistentVolumeClaim").is_some())
        .expect("the single-node volume is mounted");
    assert_eq!(
        str_at(
            volume(spec, &data_volume),
            "/persistentVolumeClaim/claimName"
        ),
        str_at(&pvc, "/metadata/name")
    );
    assert!(
        single.store.path.starts_with(&data_mount),
        "store.path {:?} is not on the volume mounted at {data_mount}",
        single.store.path
    );
    let single_secret = yaml_doc("kubernetes/secret.example.yaml");
    let master = items(export, "/env")
        .iter()
        .find(|e| e["name"] == json!(ENV_MASTER_KEY))
        .expect("the single node's master key");
    assert_eq!(
        str_at(master, "/valueFrom/secretKeyRef/name"),
        str_at(&single_secret, "/metadata/name")
    );
    assert!(single_secret["stringData"]
        .get(str_at(master, "/valueFrom/secretKeyRef/key"))
        .is_some());

    // 2. Import: the cluster config and Secret, the file the export wrote.
    let cli = odgw_cli("import", &strings(&import["args"]));
    let OdgwCommand::Store(StoreCommand::Import { file }) = &cli.command else {
        panic!("the container must run `store import FILE`");
    };
    assert_eq!(
        Path::new(file),
        output.as_path(),
        "import reads what export wrote"
    );
    let import_config = cli.config.clone().expect("--config");
    let cm = volume_at(
        spec,
        import,
        import_config.parent().unwrap().to_str().unwrap(),
    )
    .expect("the import's config directory is mounted");
    let applied = Applied::load();
    assert_eq!(
        str_at(cm, "/configMap/name"),
        str_at(applied.one("ConfigMap"), "/metadata/name")
    );
    assert!(
        import.get("env").is_none(),
        "the cluster config reads its secret files"
    );
    let config = parse_config(CLUSTER_CONFIG);
    let (secret, keys) = example_secret();
    for file in [
        config.store.master_key_file.as_deref().unwrap(),
        config.postgres.url_file.as_deref().unwrap(),
    ] {
        let key = secret_key_of(spec, import, file, &secret);
        assert!(keys.contains(&key), "{key}");
    }

    // The file passes between them on a volume of this pod only.
    let dir = output.parent().unwrap().to_str().unwrap();
    let shared = mounts(export)[dir].clone();
    assert_eq!(mounts(import)[dir], shared);
    assert!(volume(spec, &shared).get("emptyDir").is_some());
}

// ---------------------------------------------------------------- README

/// The "Running several replicas" section of deploy/README.md.
fn readme_section() -> String {
    let readme = read("README.md");
    let start = readme
        .find("\n## Running several replicas\n")
        .expect("deploy/README.md has a section \"Running several replicas\"");
    let rest = &readme[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 4);
    rest[..end].to_owned()
}

/// Shell commands of the ```sh blocks, continuation lines joined.
fn shell_commands(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_block = false;
    let mut current = String::new();
    for line in markdown.lines() {
        if line.starts_with("```") {
            in_block = line == "```sh";
            continue;
        }
        if !in_block || line.trim_start().starts_with('#') {
            continue;
        }
        // A trailing comment, as in `cmd   # what it prints`.
        let line = line.split(" # ").next().unwrap_or_default();
        match line.strip_suffix('\\') {
            Some(head) => current.push_str(head),
            None => {
                current.push_str(line);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    out
}

#[test]
fn readme_documents_the_cluster_deploy_and_its_odgw_commands_parse() {
    let section = readme_section();
    let readme = read("README.md");
    for f in std::fs::read_dir(deploy(CLUSTER_DIR)).unwrap() {
        let name = f.unwrap().file_name().into_string().unwrap();
        assert!(
            section.contains(&format!("`{name}`")),
            "the section does not describe {name}"
        );
    }
    for needed in ["config/odgw.cluster.toml", "kubernetes/cluster/"] {
        assert!(
            readme.contains(&format!("`{needed}`")),
            "README lacks {needed}"
        );
    }
    for topic in [
        "store export",
        "store import",
        "redis.on_failure",
        "limiter_unavailable",
        "store_unavailable",
        "same master key",
        "audit verify",
        "per replica",
        "ODGW_SERVER__NODE_ID",
    ] {
        assert!(section.contains(topic), "the section lacks {topic:?}");
    }

    // The Secret the README creates has exactly the example's keys.
    let (secret, keys) = example_secret();
    let commands = shell_commands(&section);
    let creates: Vec<&String> = commands
        .iter()
        .filter(|c| c.contains(&format!("create secret generic {secret}")))
        .collect();
    assert!(!creates.is_empty(), "the README creates {secret}");
    for c in creates {
        let from: BTreeSet<String> = c
            .split_whitespace()
            .filter_map(|w| w.strip_prefix("--from-file="))
            .map(str::to_owned)
            .collect();
        assert_eq!(from, keys, "{c}");
    }

    // Every odgw invocation in the section parses with odgw's CLI.
    let mut parsed = BTreeSet::new();
    for c in &commands {
        let words: Vec<&str> = c.split_whitespace().collect();
        if words.is_empty() {
            continue;
        }
        let program = words
            .iter()
            .position(|w| *w == "/usr/local/bin/odgw")
            .or_else(|| {
                (!["kubectl", "systemctl"].contains(&words[0]))
                    .then(|| words.iter().position(|w| *w == "odgw"))
                    .flatten()
            });
        let Some(program) = program else { continue };
        let mut args = Vec::new();
        let mut rest = words[program + 1..].iter();
        while let Some(w) = rest.next() {
            match *w {
                "|" => break,
                "<" | ">" => {
                    rest.next();
                }
                w => args.push(w.to_owned()),
            }
        }
        let cli = odgw_cli(&format!("deploy/README.md: {c}"), &args);
        let shown = format!("{:?}", cli.command);
        parsed.insert(
            shown
                .split(['(', ' ', '{'])
                .next()
                .unwrap_or_default()
                .to_owned(),
        );
        if let OdgwCommand::Store(StoreCommand::Import { .. } | StoreCommand::Export { .. }) =
            &cli.command
        {
            assert!(
                cli.config.is_some(),
                "{c}: the store commands need --config"
            );
        }
    }
    assert!(
        parsed.len() >= 3,
        "store, audit and tenant commands: {parsed:?}"
    );
}

// ---------------------------------------------------------------- external tools

#[test]
fn kustomize_builds_when_kubectl_is_installed() {
    let dir = deploy(CLUSTER_DIR);
    let Some(out) = run_tool("kubectl", &["kustomize", dir.to_str().unwrap()]) else {
        return;
    };
    assert!(out.status.success(), "{}", output_text(&out));
    let built = yaml::parse(&String::from_utf8_lossy(&out.stdout))
        .unwrap_or_else(|e| panic!("kustomize output: {e}"));
    let mut kinds = BTreeMap::new();
    for doc in &built {
        if doc["kind"] != json!("Namespace") {
            assert_eq!(str_at(doc, "/metadata/namespace"), "odgw", "{doc}");
        }
        *kinds.entry(str_at(doc, "/kind").to_owned()).or_insert(0) += 1;
    }
    let kinds: Vec<(&str, i32)> = kinds.iter().map(|(k, n)| (k.as_str(), *n)).collect();
    assert_eq!(
        kinds,
        [
            ("ConfigMap", 1),
            ("Namespace", 1),
            ("PodDisruptionBudget", 1),
            ("Service", 3),
            ("StatefulSet", 1)
        ]
    );
}
