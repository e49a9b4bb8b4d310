//! The deployment examples under deploy/ against the real binary: every metric the Grafana
//! dashboard queries is exported, every flag the Kubernetes Deployment passes exists, the ports
//! of probes and Services are the ones akgate listens on, and the example rules load.
//!
//! No YAML parser is available, so the manifests are read with line logic that relies on their
//! layout (two-space indentation, block lists, `|` block scalars); a layout change these helpers
//! cannot follow makes a test fail rather than pass silently.

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The fake secrets of deploy/kubernetes/secret.yaml, by Secret key. Spelled out here so that
/// the secrets scan (`common::OTHER_TEST_SECRETS`) can list them: `akgate check` below reads them.
const EXAMPLE_SECRETS: &[(&str, &str)] = &[
    (
        "AKGATE_SECRET_CI",
        "FAKE-example-secret-ci-deployer-not-real",
    ),
    (
        "ops-oncall.secret",
        "FAKE-example-secret-ops-oncall-not-real",
    ),
    ("ops-oncall.totp", "FAKE-EXAMPLE-TOTP-SEED-NOTREAL-AAAAAA"),
];

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Minimal YAML reading for the manifests' layout.

/// The documents of a manifest file, split at `---` lines.
fn documents(text: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in text.lines() {
        if line.trim_end() == "---" {
            docs.push(String::new());
        } else {
            let last = docs.last_mut().unwrap();
            last.push_str(line);
            last.push('\n');
        }
    }
    docs.retain(|d| d.lines().any(|l| l.starts_with("kind:")));
    docs
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

fn unquote(s: &str) -> &str {
    let s = s.trim();
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
}

/// `key: value` on a line (a list item's leading `- ` ignored), the value unquoted.
fn value_of<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let t = line.trim_start();
    let t = t.strip_prefix("- ").unwrap_or(t);
    t.strip_prefix(key)?.strip_prefix(':').map(unquote)
}

/// The top-level `kind:` of a document.
fn kind(doc: &str) -> &str {
    doc.lines()
        .find_map(|l| l.strip_prefix("kind:"))
        .map(unquote)
        .expect("a document without kind")
}

/// `metadata.name` of a document.
fn name(doc: &str) -> &str {
    nested(doc, "metadata")
        .iter()
        .filter(|l| indent(l) == 2)
        .find_map(|l| value_of(l, "name"))
        .expect("a document without metadata.name")
}

/// The lines nested under the first line that is `key:` (after trimming and an optional `- `).
fn nested<'a>(doc: &'a str, key: &str) -> Vec<&'a str> {
    let lines: Vec<&str> = doc.lines().collect();
    let Some(start) = lines.iter().position(|l| value_of(l, key) == Some("")) else {
        return vec![];
    };
    let base = indent(lines[start]);
    lines[start + 1..]
        .iter()
        .take_while(|l| l.trim().is_empty() || indent(l) > base)
        .copied()
        .collect()
}

/// The items of the block list under `key:`, comments skipped, quotes removed.
fn block_list(doc: &str, key: &str) -> Vec<String> {
    nested(doc, key)
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let item = l
                .strip_prefix("- ")
                .unwrap_or_else(|| panic!("`{key}:` holds a non-list line: {l}"));
            unquote(item).to_string()
        })
        .collect()
}

/// The first `key: value` among `lines`.
fn first(lines: &[&str], key: &str) -> Option<String> {
    lines
        .iter()
        .find_map(|l| value_of(l, key))
        .map(str::to_string)
}

/// The `|` block scalars directly under `section:` (a ConfigMap's `data`), dedented.
fn block_scalars(doc: &str, section: &str) -> BTreeMap<String, String> {
    let lines = nested(doc, section);
    let mut out = BTreeMap::new();
    let mut current: Option<(String, usize, String)> = None;
    for line in lines {
        if let Some((_, body_indent, text)) = &mut current {
            if line.trim().is_empty() {
                text.push('\n');
                continue;
            }
            if indent(line) >= *body_indent {
                text.push_str(&line[*body_indent..]);
                text.push('\n');
                continue;
            }
            let (k, _, t) = current.take().unwrap();
            out.insert(k, t);
        }
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let (k, v) = t
            .split_once(':')
            .unwrap_or_else(|| panic!("`{section}:` holds a line that is no entry: {t}"));
        assert_eq!(
            v.trim(),
            "|",
            "`{section}.{k}` must be a `|` block scalar in this example"
        );
        current = Some((k.to_string(), indent(line) + 2, String::new()));
    }
    if let Some((k, _, t)) = current {
        out.insert(k, t);
    }
    out
}

/// The one-line `key: value` entries directly under `section:` (a Secret's `stringData`).
fn scalars(doc: &str, section: &str) -> BTreeMap<String, String> {
    nested(doc, section)
        .iter()
        .map(|l| l.trim())
        .filter(|t| !t.is_empty() && !t.starts_with('#'))
        .map(|t| {
            let (k, v) = t.split_once(':').unwrap();
            (k.to_string(), unquote(v).to_string())
        })
        .collect()
}

fn manifest(file: &str, want_kind: &str, want_name: &str) -> String {
    documents(&read(&format!("deploy/kubernetes/{file}")))
        .into_iter()
        .find(|d| kind(d) == want_kind && name(d) == want_name)
        .unwrap_or_else(|| panic!("no {want_kind} {want_name} in deploy/kubernetes/{file}"))
}

fn deployment() -> String {
    manifest("deployment.yaml", "Deployment", "akgate")
}

fn serve_args() -> Vec<String> {
    let args = block_list(&deployment(), "args");
    assert_eq!(
        args.first().map(String::as_str),
        Some("serve"),
        "args: {args:?}"
    );
    args
}

/// The value the Deployment gives `flag` (`--flag value` or `--flag=value`).
fn arg(args: &[String], flag: &str) -> Option<String> {
    let eq = format!("{flag}=");
    args.iter().enumerate().find_map(|(i, a)| {
        if a == flag {
            args.get(i + 1).cloned()
        } else {
            a.strip_prefix(&eq).map(str::to_string)
        }
    })
}

fn port_of(addr: &str) -> u16 {
    addr.parse::<SocketAddr>()
        .unwrap_or_else(|e| panic!("{addr}: {e}"))
        .port()
}

/// The akgate container's ports by name.
fn container_ports(doc: &str) -> BTreeMap<String, u16> {
    let lines = nested(doc, "ports");
    let mut out = BTreeMap::new();
    let mut name = None;
    for l in lines {
        if let Some(n) = value_of(l, "name") {
            name = Some(n.to_string());
        }
        if let Some(p) = value_of(l, "containerPort") {
            let n = name.take().expect("every container port is named");
            out.insert(n, p.parse().unwrap());
        }
    }
    out
}

/// A probe's or Service's port, by number or by container port name.
fn resolve(port: &str, named: &BTreeMap<String, u16>) -> u16 {
    port.parse()
        .ok()
        .or_else(|| named.get(port).copied())
        .unwrap_or_else(|| panic!("port `{port}` is neither a number nor a container port name"))
}

// ---------------------------------------------------------------------------------------------
// (b), (c): the Deployment's flags and ports.

#[test]
fn deployment_flags_exist_in_serve_help() {
    let out = Command::new(env!("CARGO_BIN_EXE_akgate"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    capture_output(&out);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let known: BTreeSet<&str> = help
        .lines()
        .flat_map(|l| l.split([' ', ',']))
        .filter(|w| w.starts_with("--"))
        .collect();
    let args = serve_args();
    let flags: Vec<&str> = args
        .iter()
        .filter(|a| a.starts_with("--"))
        .map(|a| a.split('=').next().unwrap())
        .collect();
    assert!(
        flags.len() >= 4,
        "the args were not read from deployment.yaml: {args:?}"
    );
    let missing: Vec<String> = flags
        .iter()
        .filter(|f| !known.contains(*f))
        .map(|f| f.to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "deploy/kubernetes/deployment.yaml passes flags `akgate serve --help` does not list: {missing:?}"
    );
}

/// The Deployment's args, values included, start the gateway on the example rules: only the
/// addresses, the rules path and the Redis URL are swapped for local ones.
#[tokio::test]
async fn deployment_args_start_the_gateway() {
    let rules = tempfile::tempdir().unwrap();
    let env = materialise_rules(rules.path());
    let state = tempfile::tempdir().unwrap();
    let args = serve_args();
    let mut extra: Vec<String> = Vec::new();
    let mut i = 1;
    while i < args.len() {
        let a = args[i].as_str();
        match a {
            // Given by the harness.
            "--rules" | "--listen" | "--admin" => i += 2,
            "--state" => {
                extra.push(a.to_string());
                extra.push(state.path().to_str().unwrap().to_string());
                i += 2;
            }
            _ => {
                extra.push(a.to_string());
                i += 1;
            }
        }
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let gw = Akgate::start_with_env(rules.path(), "127.0.0.1:0", &extra, &env);
    assert_eq!(admin_get(gw.admin, "/healthz").await.status, 200);
    assert_eq!(admin_get(gw.admin, "/readyz").await.status, 200);
    let r = admin_get(gw.admin, "/rules").await;
    assert_eq!(r.json()["keys"], 2, "{}", String::from_utf8_lossy(&r.body));
}

#[test]
fn deployment_replaces_the_image_entrypoint() {
    // The image's ENTRYPOINT already passes serve and its flags; args alone would append to it and
    // give every flag twice, which clap refuses.
    let dockerfile = read("Dockerfile");
    let entrypoint = dockerfile
        .lines()
        .find(|l| l.starts_with("ENTRYPOINT"))
        .expect("Dockerfile ENTRYPOINT");
    let doc = deployment();
    let command = doc
        .lines()
        .find_map(|l| value_of(l, "command"))
        .expect("the akgate container sets command");
    if entrypoint.contains("\"serve\"") {
        assert_eq!(command, "[\"akgate\"]");
    }
    assert!(
        dockerfile.contains("/usr/local/bin/akgate"),
        "`akgate` must stay on the image's PATH"
    );
}

#[test]
fn probe_and_service_ports_are_the_listeners() {
    let doc = deployment();
    let args = serve_args();
    let listen = port_of(&arg(&args, "--listen").expect("--listen"));
    let admin = port_of(&arg(&args, "--admin").expect("--admin"));
    assert_ne!(listen, admin);
    let named = container_ports(&doc);
    assert_eq!(
        named.values().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([listen, admin]),
        "containerPorts {named:?} vs --listen {listen} --admin {admin}"
    );

    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let lines = nested(&doc, probe);
        assert_eq!(first(&lines, "path").as_deref(), Some(path), "{probe}");
        let port = first(&lines, "port").unwrap_or_else(|| panic!("{probe} port"));
        assert_eq!(
            resolve(&port, &named),
            admin,
            "{probe} must probe the admin listener"
        );
    }

    let public = manifest("services.yaml", "Service", "akgate");
    let targets = nested(&public, "ports");
    let target = first(&targets, "targetPort").expect("Service akgate targetPort");
    assert_eq!(resolve(&target, &named), listen, "Service akgate");

    let admin_svc = manifest("services.yaml", "Service", "akgate-admin");
    let target = first(&nested(&admin_svc, "ports"), "targetPort").expect("targetPort");
    assert_eq!(resolve(&target, &named), admin, "Service akgate-admin");
    let annotations = nested(&admin_svc, "annotations");
    assert_eq!(
        first(&annotations, "prometheus.io/port"),
        Some(admin.to_string())
    );
    assert_eq!(
        first(&annotations, "prometheus.io/path").as_deref(),
        Some("/metrics")
    );
    assert_eq!(
        first(&annotations, "prometheus.io/scrape").as_deref(),
        Some("true")
    );
}

#[test]
fn termination_grace_covers_shutdown_delay_and_grace() {
    let doc = deployment();
    let args = serve_args();
    let dur = |flag: &str, default: &str| {
        let v = arg(&args, flag).unwrap_or_else(|| default.to_string());
        akgate::time::parse_duration(&v).unwrap_or_else(|| panic!("{flag} {v}"))
    };
    // Defaults as `akgate serve --help` gives them.
    let needed = dur("--shutdown-delay", "0s") + dur("--shutdown-grace", "30s");
    let period: u64 = doc
        .lines()
        .find_map(|l| value_of(l, "terminationGracePeriodSeconds"))
        .expect("terminationGracePeriodSeconds")
        .parse()
        .unwrap();
    assert!(
        Duration::from_secs(period) > needed,
        "terminationGracePeriodSeconds {period} must exceed --shutdown-delay + --shutdown-grace ({needed:?})"
    );
}

#[test]
fn state_url_names_the_redis_service() {
    let args = serve_args();
    let url = arg(&args, "--state").expect("--state");
    let hostport = url.strip_prefix("redis://").expect("a redis:// URL");
    let (host, port) = hostport.split_once(':').expect("host:port");
    let svc = manifest("redis.yaml", "Service", host);
    let svc_port = first(&nested(&svc, "ports"), "port").expect("port");
    assert_eq!(svc_port, port);
}

#[test]
fn kustomization_lists_every_manifest() {
    let kust = read("deploy/kubernetes/kustomization.yaml");
    let listed: BTreeSet<String> = block_list(&kust, "resources").into_iter().collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(repo("deploy/kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    assert_eq!(listed, on_disk);
}

// ---------------------------------------------------------------------------------------------
// (d): the example rules load as `serve` would load them.

/// Writes the ConfigMap's files and the Secret's projected files to `dir`, as the Deployment's
/// projected volume does; returns the Secret values the Deployment passes as environment
/// variables.
fn materialise_rules(dir: &Path) -> Vec<(String, String)> {
    let cm = manifest("rules-configmap.yaml", "ConfigMap", "akgate-rules");
    let files = block_scalars(&cm, "data");
    assert!(files.contains_key("keys.toml"), "files: {:?}", files.keys());
    for (name, text) in &files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let secret = manifest("secret.yaml", "Secret", "akgate-keys");
    let values = scalars(&secret, "stringData");
    let deploy = deployment();

    let projected: Vec<String> = nested(&deploy, "items")
        .iter()
        .filter_map(|l| value_of(l, "key"))
        .map(str::to_string)
        .collect();
    for key in &projected {
        let path = nested(&deploy, "items")
            .iter()
            .filter_map(|l| value_of(l, "path"))
            .find(|p| p == key)
            .unwrap_or_else(|| panic!("projected secret {key} keeps its name as path"))
            .to_string();
        let v = values
            .get(key)
            .unwrap_or_else(|| panic!("the Deployment projects `{key}`, absent from the Secret"));
        std::fs::write(dir.join(path), v).unwrap();
    }

    let env = nested(&deploy, "env");
    let mut out = Vec::new();
    let mut var = None;
    for l in env {
        if let Some(n) = value_of(l, "name").filter(|n| n.starts_with("AKGATE_")) {
            var = Some(n.to_string());
        }
        if let Some(k) = value_of(l, "key") {
            let v = values
                .get(k)
                .unwrap_or_else(|| panic!("env refers to Secret key `{k}`, absent"));
            out.push((var.take().expect("env name before key"), v.clone()));
        }
    }
    assert!(
        !out.is_empty() && !projected.is_empty(),
        "the example shows both secret_env and secret_file"
    );
    out
}

#[test]
fn configmap_rules_pass_check() {
    let dir = tempfile::tempdir().unwrap();
    let env = materialise_rules(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_akgate"))
        .arg("check")
        .arg(dir.path())
        .env_remove("AKGATE_SECRET_CI")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    capture_output(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "akgate check failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("2 keys"), "{stdout}");
    assert!(
        !stdout.to_lowercase().contains("warn") && !stderr.to_lowercase().contains("warn"),
        "the example rules should load without warnings:\n{stdout}\n{stderr}"
    );
}

#[test]
fn configmap_key_ids_are_clearly_fake() {
    let cm = manifest("rules-configmap.yaml", "ConfigMap", "akgate-rules");
    let files = block_scalars(&cm, "data");
    let keys = &files["keys.toml"];
    let ids: Vec<&str> = keys
        .lines()
        .filter_map(|l| l.trim().strip_prefix("id = \"LTAI"))
        .collect();
    assert!(!ids.is_empty());
    for id in ids {
        assert!(id.starts_with("5tEXAMPLE"), "LTAI{id}");
    }
    let secret = manifest("secret.yaml", "Secret", "akgate-keys");
    let values = scalars(&secret, "stringData");
    for (k, v) in &values {
        assert!(
            v.starts_with("FAKE-"),
            "Secret value {k} must be marked fake"
        );
    }
    let listed: BTreeMap<String, String> = EXAMPLE_SECRETS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(
        values, listed,
        "keep EXAMPLE_SECRETS in step with secret.yaml"
    );
}

#[test]
fn configmap_shipped_lists_are_the_defaults() {
    let cm = manifest("rules-configmap.yaml", "ConfigMap", "akgate-rules");
    let files = block_scalars(&cm, "data");
    for name in ["high_risk.toml", "critical.toml"] {
        let example = files
            .get(name)
            .unwrap_or_else(|| panic!("the ConfigMap has no {name}"));
        assert_eq!(
            example.trim_end(),
            read(&format!("rules/{name}")).trim_end(),
            "deploy/kubernetes/rules-configmap.yaml {name} drifted from rules/{name}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// (a): the dashboard's metrics exist.

/// Every string in the dashboard JSON (queries, variable definitions, titles).
fn strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read("deploy/grafana/akgate.json")).expect("dashboard JSON")
}

/// The `akgate_*` names in `text`.
fn metric_names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("akgate_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

fn base_name(name: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

/// Each query of the dashboard: (expr, metric base names in it, `by (...)` labels, exact
/// `label="value"` matchers).
type Query = (String, Vec<String>, Vec<String>, Vec<(String, String)>);

fn queries() -> Vec<Query> {
    let mut exprs = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(o) => {
                if let Some(serde_json::Value::String(e)) = o.get("expr") {
                    out.push(e.clone());
                }
                o.values().for_each(|x| walk(x, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    walk(&dashboard(), &mut exprs);
    exprs
        .into_iter()
        .map(|e| {
            let names: Vec<String> = metric_names(&e)
                .iter()
                .map(|n| base_name(n).to_string())
                .collect();
            let mut by = Vec::new();
            for part in e.split("by (").skip(1) {
                let list = part.split(')').next().unwrap();
                by.extend(
                    list.split(',')
                        .map(|l| l.trim().to_string())
                        .filter(|l| l != "le"),
                );
            }
            let mut matchers = Vec::new();
            for part in e.split('{').skip(1) {
                let sel = part.split('}').next().unwrap();
                for m in sel.split(',') {
                    if let Some((k, v)) = m.split_once('=')
                        && !v.starts_with('~')
                        && !k.ends_with('!')
                    {
                        matchers.push((k.trim().to_string(), unquote(v).to_string()));
                    }
                }
            }
            (e, names, by, matchers)
        })
        .collect()
}

/// The sample lines of a Prometheus text exposition, by metric base name.
fn exported(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name = line.split(['{', ' ']).next().unwrap();
        out.entry(base_name(name).to_string())
            .or_default()
            .push(line.to_string());
    }
    out
}

/// Whether `/metrics` has the series a query names: exactly, for a `_bucket`/`_sum`/`_count`
/// name (a histogram rendered as a summary has no `_bucket`, so `histogram_quantile` over it is
/// empty), or under any suffix for a bare name.
fn is_exported(name: &str, have: &BTreeMap<String, Vec<String>>) -> bool {
    let Some(lines) = have.get(base_name(name)) else {
        return false;
    };
    base_name(name) == name
        || lines
            .iter()
            .any(|l| l.split(['{', ' ']).next() == Some(name))
}

/// One kept-alive HTTP/1 connection from a chosen source address.
struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Conn {
    async fn open(addr: SocketAddr, source: &str) -> Conn {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(SocketAddr::new(source.parse::<IpAddr>().unwrap(), 0))
            .unwrap();
        let stream = socket.connect(addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        Conn { sender }
    }

    async fn send(&mut self, req: &Req) -> Resp {
        let mut b = http::Request::builder()
            .method(req.method.as_str())
            .uri(req.path_and_query.as_str());
        for (k, v) in &req.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        let r = b.body(Full::new(Bytes::from(req.body.clone()))).unwrap();
        self.sender.ready().await.unwrap();
        collect(self.sender.send_request(r).await.unwrap()).await
    }
}

/// A redis-server of the test's own on a free port, without persistence; `None` only when
/// `AKGATE_SKIP_REDIS=1` and there is none (never under CI).
struct Redis {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Option<Redis> {
        let bin = std::env::var_os("PATH")
            .and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|p| p.join("redis-server"))
                    .find(|p| p.is_file())
            })
            .or_else(|| Some(PathBuf::from("/usr/bin/redis-server")).filter(|p| p.is_file()));
        let Some(bin) = bin else {
            assert!(
                std::env::var("AKGATE_SKIP_REDIS").as_deref() == Ok("1")
                    && std::env::var("CI").is_err(),
                "redis-server not found: install it (`apt-get install redis-server`, as .ci/run \
                 does) or set AKGATE_SKIP_REDIS=1 (not under CI)"
            );
            eprintln!("SKIPPED: no redis-server; the akgate_state_* panels are not checked");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--maxmemory-policy", "noeviction"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server");
        let r = Redis {
            child,
            port,
            _dir: dir,
        };
        let start = std::time::Instant::now();
        while !r.command(&["PING"]).starts_with("+PONG") {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(r)
    }

    /// Sends one command; its reply's first line, or "" if Redis cannot be reached.
    fn command(&self, args: &[&str]) -> String {
        use std::io::{BufRead, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return String::new();
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut wire = format!("*{}\r\n", args.len());
        for a in args {
            wire.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        if s.write_all(wire.as_bytes()).is_err() {
            return String::new();
        }
        let mut line = String::new();
        let _ = std::io::BufReader::new(s).read_line(&mut line);
        line
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reuses alice's secret under another id, so the suite configures no new secret.
const SHADOW_KEY: (&str, &str) = ("AKDEPLOYSHADOW01", ALICE.1);

fn unsigned(host: &str) -> Req {
    Req {
        method: "GET".into(),
        path_and_query: "/".into(),
        headers: vec![("host".into(), host.into())],
        body: vec![],
    }
}

#[tokio::test]
async fn dashboard_metrics_are_exported() {
    let up = upstream().await;
    let slow = hanging_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    write_rules(dir.path(), up.addr, slow);
    // A user whose allowlist is in shadow mode and excludes 127.0.0.1: its requests pass with a
    // would_deny. A brute-force guard with a low limit.
    let mut keys = std::fs::read_to_string(dir.path().join("keys.toml")).unwrap();
    keys.push_str(&format!(
        r#"
[[user]]
name = "shadowy"
account = "100"
api_source_cidrs = ["127.0.0.8/32"]
allowlist_mode = "shadow"

[[access_key]]
id = "{}"
user = "shadowy"
account = "100"
secret_env = "AKGATE_IT_SECRET_ALICE"
status = "active"
"#,
        SHADOW_KEY.0
    ));
    std::fs::write(dir.path().join("keys.toml"), keys).unwrap();
    let mut settings = std::fs::read_to_string(dir.path().join("settings.toml")).unwrap();
    settings.push_str("auth_failure_limit = 2\nauth_failure_cooldown = \"5m\"\n");
    std::fs::write(dir.path().join("settings.toml"), settings).unwrap();

    // Fleet mode, as deployed: a Redis of the test's own.
    let redis = Redis::start();
    let state = match &redis {
        Some(r) => format!("redis://127.0.0.1:{}", r.port),
        None => dir.path().join("state").to_str().unwrap().to_string(),
    };
    let extra = [
        "--max-connections-per-ip",
        "1",
        "--audit-log",
        "off",
        "--state",
        &state,
    ];
    let gw = Akgate::start(dir.path(), "127.0.0.1:0", &extra);
    assert!(
        eventually(Duration::from_secs(10), || async {
            admin_get(gw.admin, "/readyz").await.status == 200
        })
        .await,
        "not ready: is the state store reachable?"
    );
    let host = "127.0.0.1";

    // Allowed, refused (leaked key, high-risk action) and allowed-with-would_deny, on one
    // connection: the per-source cap is 1.
    let mut main = Conn::open(gw.proxy, "127.0.0.1").await;
    let ok = main
        .send(&signed(host, "DescribeRegions", "", ALICE, b"", 0))
        .await;
    assert_eq!(ok.status, 200);
    let refused = main
        .send(&signed(host, "RunInstances", "", LEAKED, b"", 0))
        .await;
    refused.assert_error(403, "Forbidden");
    let shadow = main
        .send(&signed(host, "DescribeRegions", "", SHADOW_KEY, b"", 0))
        .await;
    assert_eq!(shadow.status, 200);

    // Authentication failures from one source until the guard puts it on cool-down.
    let mut guessing = Conn::open(gw.proxy, "127.0.0.5").await;
    // The counters are shared through Redis and synced about every second: keep failing until
    // the cool-down shows.
    let mut statuses = Vec::new();
    for _ in 0..100 {
        let r = guessing
            .send(&signed(
                host,
                "DescribeRegions",
                "",
                ("AKDEPLOYUNKNOWN1", "not-a-configured-secret"),
                b"",
                0,
            ))
            .await;
        statuses.push(r.status.as_u16());
        if r.status == 429 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(statuses.last(), Some(&429), "statuses: {statuses:?}");

    // A second connection from a source that already holds one: over the per-source cap.
    let mut holder = Conn::open(gw.proxy, "127.0.0.6").await;
    let _ = holder.send(&unsigned(host)).await;
    let mut over = Conn::open(gw.proxy, "127.0.0.6").await;
    let r = over.send(&unsigned(host)).await;
    assert_eq!(r.status, 503);

    // A full Redis (noeviction, as redis.yaml asks) refuses writes: fail-closed refuses the
    // request rather than skip the replay check, and counts a state error.
    if let Some(redis) = &redis {
        redis.command(&["CONFIG", "SET", "maxmemory", "1"]);
        let r = main
            .send(&signed(host, "DescribeRegions", "", ALICE, b"", 0))
            .await;
        assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    }

    let mut wanted: BTreeSet<String> = BTreeSet::new();
    let mut all = Vec::new();
    strings(&dashboard(), &mut all);
    for s in &all {
        wanted.extend(metric_names(s));
    }
    if redis.is_none() {
        wanted.retain(|w| !w.starts_with("akgate_state_"));
    }
    assert!(
        wanted.len() >= 15,
        "the dashboard's metrics were not found: {wanted:?}"
    );

    // Gauges set by the maintenance tick may need one tick (5 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(12);
    let (text, all_there) = loop {
        let text =
            String::from_utf8_lossy(&admin_get(gw.admin, "/metrics").await.body).into_owned();
        let have = exported(&text);
        let all_there = wanted.iter().all(|w| is_exported(w, &have));
        if all_there || std::time::Instant::now() > deadline {
            break (text, all_there);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let have = exported(&text);
    if !all_there {
        let missing: Vec<String> = wanted
            .iter()
            .filter(|w| !is_exported(w, &have))
            .cloned()
            .collect();
        panic!(
            "deploy/grafana/akgate.json queries metrics /metrics does not export: {missing:?}\n\
             exported: {:?}",
            have.keys().collect::<Vec<_>>()
        );
    }

    // The labels the queries group or filter by exist on those metrics.
    for (expr, names, by, matchers) in queries() {
        for name in &names {
            let lines = &have[name];
            for label in &by {
                assert!(
                    lines.iter().any(|l| l.contains(&format!("{label}=\""))),
                    "`{expr}`: {name} has no label {label}: {lines:#?}"
                );
            }
            for (k, v) in matchers
                .iter()
                .filter(|(k, _)| k != "job" && k != "instance")
            {
                assert!(
                    lines.iter().any(|l| l.contains(&format!("{k}=\"{v}\""))),
                    "`{expr}`: {name} has no series with {k}=\"{v}\": {lines:#?}"
                );
            }
        }
    }
}
