//! The Helm chart (`helm/rtmanager`) renders into manifests that run the
//! controller the way the controller expects to run, and the Dockerfile
//! builds the image the chart assumes.
//!
//! No `helm` binary installs here, so the chart is rendered with the engine
//! Helm itself uses: Go's text/template with sprig, plus the few functions
//! Helm adds (`tests/helm/render/main.go`). The renderer is built once per
//! test run, offline in GOPATH mode, from Debian's packages; they are
//! installed with apt-get when missing, and a machine that cannot have them
//! fails these tests rather than skipping them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde::Deserialize;
use serde_yaml::Value;

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/helm/rtmanager");
const RTMANAGER: &str = env!("CARGO_BIN_EXE_rtmanager");

/// The release every test renders.
const RELEASE: &str = "rtm";
const NAMESPACE: &str = "games";

/// Debian's packages the renderer builds from: the Go toolchain, sprig
/// (Helm's template functions) and sigs.k8s.io/yaml (Helm's YAML).
const GO_PACKAGES: [&str; 3] = [
    "golang-go",
    "golang-github-masterminds-sprig-dev",
    "golang-k8s-sigs-yaml-dev",
];
/// Where Debian's `-dev` packages put the Go sources (GOPATH).
const GOPATH: &str = "/usr/share/gocode";
const GO_SOURCES: [&str; 2] = [
    "/usr/share/gocode/src/github.com/Masterminds/sprig",
    "/usr/share/gocode/src/sigs.k8s.io/yaml",
];

/// The least a user sets: the chart's defaults plus the required endpoints.
const MINIMAL: &str = "
etcd:
  endpoints: [http://etcd-0.etcd:2379, http://etcd-1.etcd:2379]
";

/// Every switch away from its default: a Deployment for one shared Docker
/// engine, TLS and auth from Secrets, a ServiceMonitor, non-root with the
/// socket's group, and custom controller settings.
const EVERYTHING: &str = "
kind: Deployment
replicaCount: 2
updateStrategy: {type: Recreate}
image: {repository: registry.example/rtmanager, tag: '1.2.3', pullPolicy: Always}
etcd:
  endpoints: [https://etcd-a:2379, https://etcd-b:2379, https://etcd-c:2379]
  prefix: /games/eu
  timeout: 3s
  tls: {enabled: true, secretName: etcd-client-tls}
  auth: {enabled: true, secretName: etcd-auth, userKey: user, passwordKey: pass}
docker:
  host: tcp://dockerd.games:2375
  socketGroupId: 998
controller:
  nodeName: pool-a
  nodeLabels: {region: eu, gpu: 'true'}
  capacity: games=200,cpus=30,memory=60Gi
  portRange: 20000-20999
  placementStrategy: Distributed
  nodeFailureGrace: 2m
  selfFenceAfter: 45s
  concurrency: 12
  leaseTTL: 30s
  resync: 2m
  logFormat: text
  historyRetention: 50
  gcGrace: 5m
  reconcileTimeout: 90s
  imagePullTimeout: 60s
  drainTimeout: 2m
  extraEnv: [{name: RUST_LOG, value: 'info,rtmanager=debug'}]
terminationGracePeriodSeconds: 150
serviceMonitor: {enabled: true, labels: {release: prom}, interval: 15s}
nodeSelector: {rtmanager.dev/docker: 'true'}
tolerations: [{key: games, operator: Exists, effect: NoSchedule}]
resources: {requests: {cpu: 100m, memory: 128Mi}, limits: {memory: 512Mi}}
";

/// A DaemonSet on the nodes' sockets, run as non-root with the socket's
/// group, with server-only TLS, on IPv6.
const SOCKET_GROUP: &str = "
etcd:
  endpoints: [https://etcd:2379]
  tls: {enabled: true, secretName: etcd-ca, certKey: '', keyKey: ''}
docker: {socketGroupId: 998}
metrics: {listenHost: '[::]'}
";

/// Every values file above, by name, for the checks that hold for all.
const VARIANTS: [(&str, &str); 3] = [
    ("minimal", MINIMAL),
    ("everything", EVERYTHING),
    ("socket group", SOCKET_GROUP),
];

// ------------------------------------------------------------------ renderer

fn go_toolchain_present() -> bool {
    let go = Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|output| output.status.success());
    go && GO_SOURCES.iter().all(|dir| Path::new(dir).is_dir())
}

/// Installs Debian's Go packages when they are missing; fails the test
/// when they cannot be had.
fn ensure_go_toolchain() {
    if go_toolchain_present() {
        return;
    }
    let mut log = String::new();
    let mut apt_get = |args: &[&str]| {
        let output = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output();
        match output {
            Ok(output) => {
                log.push_str(&String::from_utf8_lossy(&output.stderr));
                output.status.success()
            }
            Err(error) => {
                log.push_str(&format!("apt-get: {error}\n"));
                false
            }
        }
    };
    // Wait for a dpkg lock another install holds instead of failing at once.
    let install: Vec<&str> = ["-o", "DPkg::Lock::Timeout=300", "install", "-y", "-q"]
        .into_iter()
        .chain(GO_PACKAGES)
        .collect();
    // A machine whose package lists are old or missing needs an update first.
    if !apt_get(&install) {
        apt_get(&["-o", "DPkg::Lock::Timeout=300", "update", "-q"]);
        apt_get(&install);
    }
    assert!(
        go_toolchain_present(),
        "the chart tests render with Go's text/template and sprig: install {} \
         (apt-get, as root) so that `go` runs and {} exist\n{log}",
        GO_PACKAGES.join(" "),
        GO_SOURCES.join(" and "),
    );
}

/// The renderer binary, built once per test run (Go's cache under
/// target/ makes a rebuild cheap).
fn renderer() -> &'static Path {
    static RENDERER: OnceLock<PathBuf> = OnceLock::new();
    RENDERER.get_or_init(|| {
        ensure_go_toolchain();
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("helm-render");
        let binary = dir.join("render");
        let output = Command::new("go")
            .args(["build", "-o"])
            .arg(&binary)
            .arg("./tests/helm/render")
            .current_dir(MANIFEST_DIR)
            // Offline, from Debian's sources: GOPATH mode, no module proxy.
            .env("GO111MODULE", "off")
            .env("GOPATH", GOPATH)
            .env("GOPROXY", "off")
            .env("GOFLAGS", "")
            .env("GOCACHE", dir.join("gocache"))
            .env("CGO_ENABLED", "0")
            .output()
            .expect("`go build` runs");
        assert!(
            output.status.success(),
            "building tests/helm/render failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        binary
    })
}

/// Runs the renderer on the chart with `values` (YAML values files, later
/// ones winning, as `helm -f a -f b`; none for the chart's defaults alone)
/// and `extra` arguments.
fn run_renderer(release: &str, values: &[&str], extra: &[&str]) -> Result<String, String> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut command = Command::new(renderer());
    command.args(["-name", release, "-namespace", NAMESPACE]);
    for (i, values) in values.iter().enumerate() {
        let file = dir.path().join(format!("values-{i}.yaml"));
        std::fs::write(&file, values).expect("the values file is writable");
        command.arg("-f").arg(file);
    }
    let output = command
        .args(extra)
        .arg(CHART)
        .output()
        .expect("the renderer runs");
    if output.status.success() {
        Ok(String::from_utf8(output.stdout).expect("the rendered chart is UTF-8"))
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// The chart rendered as `helm template rtm helm/rtmanager -n games -f
/// values...`, or a panic with the renderer's error.
fn render(values: &[&str]) -> Manifests {
    render_release(RELEASE, values)
}

fn render_release(release: &str, values: &[&str]) -> Manifests {
    let stream = run_renderer(release, values, &[])
        .unwrap_or_else(|error| panic!("the chart does not render:\n{error}\nvalues: {values:?}"));
    Manifests::parse(&stream)
}

/// The renderer's error for `values`.
fn render_error(values: &[&str]) -> String {
    match run_renderer(RELEASE, values, &[]) {
        Ok(stream) => {
            panic!("the chart rendered with {values:?} although it should not:\n{stream}")
        }
        Err(error) => error,
    }
}

fn notes(values: &str) -> String {
    run_renderer(RELEASE, &[values], &["-notes"])
        .unwrap_or_else(|error| panic!("NOTES.txt does not render:\n{error}"))
}

// ------------------------------------------------------------------ manifests

/// The documents of one rendering.
#[derive(Debug)]
struct Manifests {
    docs: Vec<Value>,
}

impl Manifests {
    /// Parses the stream; every document must be a Kubernetes object with
    /// apiVersion, kind and metadata.name.
    fn parse(stream: &str) -> Manifests {
        let mut docs = Vec::new();
        for document in serde_yaml::Deserializer::from_str(stream) {
            let doc = Value::deserialize(document).unwrap_or_else(|error| {
                panic!("a rendered document is not YAML: {error}\n{stream}")
            });
            for field in ["apiVersion", "kind"] {
                assert!(
                    doc[field].as_str().is_some_and(|s| !s.is_empty()),
                    "a rendered document has no {field}:\n{}",
                    yaml(&doc)
                );
            }
            assert!(
                doc["metadata"]["name"]
                    .as_str()
                    .is_some_and(|s| !s.is_empty()),
                "a rendered document has no metadata.name:\n{}",
                yaml(&doc)
            );
            docs.push(doc);
        }
        assert!(!docs.is_empty(), "the chart rendered nothing");
        Manifests { docs }
    }

    fn kinds(&self) -> BTreeSet<&str> {
        self.docs
            .iter()
            .filter_map(|d| d["kind"].as_str())
            .collect()
    }

    fn find(&self, kind: &str) -> Option<&Value> {
        let mut found = self.docs.iter().filter(|d| d["kind"] == kind);
        let first = found.next();
        assert!(found.next().is_none(), "the chart renders two {kind}s");
        first
    }

    fn one(&self, kind: &str) -> &Value {
        self.find(kind)
            .unwrap_or_else(|| panic!("the chart renders no {kind}: {:?}", self.kinds()))
    }

    /// The DaemonSet or the Deployment.
    fn workload(&self) -> &Value {
        let workloads: Vec<&Value> = self
            .docs
            .iter()
            .filter(|d| d["kind"] == "DaemonSet" || d["kind"] == "Deployment")
            .collect();
        assert_eq!(workloads.len(), 1, "exactly one controller workload");
        workloads[0]
    }

    fn pod(&self) -> &Value {
        &self.workload()["spec"]["template"]
    }

    fn container(&self) -> &Value {
        let containers = seq(&self.pod()["spec"]["containers"]);
        assert_eq!(containers.len(), 1, "one container per controller pod");
        assert_eq!(containers[0]["name"], "rtmanager");
        &containers[0]
    }

    /// The container's environment, in order.
    fn env(&self) -> &[Value] {
        seq(&self.container()["env"])
    }

    fn env_entry(&self, name: &str) -> &Value {
        let mut found = self.env().iter().filter(|e| e["name"] == name);
        let entry = found
            .next()
            .unwrap_or_else(|| panic!("the container sets no {name}"));
        assert!(found.next().is_none(), "the container sets {name} twice");
        entry
    }

    /// A plain `value:` variable.
    fn env_value(&self, name: &str) -> &str {
        self.env_entry(name)["value"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no string value"))
    }

    fn has_env(&self, name: &str) -> bool {
        self.env().iter().any(|e| e["name"] == name)
    }

    fn volume(&self, name: &str) -> Option<&Value> {
        seq_or_empty(&self.pod()["spec"]["volumes"])
            .iter()
            .find(|v| v["name"] == name)
    }

    fn mount(&self, name: &str) -> Option<&Value> {
        seq_or_empty(&self.container()["volumeMounts"])
            .iter()
            .find(|m| m["name"] == name)
    }
}

fn seq(value: &Value) -> &[Value] {
    value
        .as_sequence()
        .unwrap_or_else(|| panic!("expected a list, got:\n{}", yaml(value)))
}

fn seq_or_empty(value: &Value) -> &[Value] {
    value.as_sequence().map_or(&[], Vec::as_slice)
}

fn yaml(value: &Value) -> String {
    serde_yaml::to_string(value).unwrap_or_else(|e| e.to_string())
}

/// `labels` contains every entry of `selector`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let selector = selector.as_mapping().expect("a selector is a map");
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn chart_yaml() -> Value {
    let text = std::fs::read_to_string(format!("{CHART}/Chart.yaml")).expect("Chart.yaml");
    serde_yaml::from_str(&text).expect("Chart.yaml is YAML")
}

fn chart_values() -> Value {
    let text = std::fs::read_to_string(format!("{CHART}/values.yaml")).expect("values.yaml");
    serde_yaml::from_str(&text).expect("values.yaml is YAML")
}

fn seconds(duration: &str) -> Duration {
    humantime::parse_duration(duration)
        .unwrap_or_else(|e| panic!("{duration:?} is not a duration: {e}"))
}

// ------------------------------------------------------------------ the chart

#[test]
fn every_rendered_document_is_a_kubernetes_object_in_the_release_namespace() {
    for (variant, values) in VARIANTS {
        let manifests = render(&[values]);
        for doc in &manifests.docs {
            assert_eq!(
                doc["metadata"]["namespace"],
                NAMESPACE,
                "{variant}: {} {} is not in the release namespace",
                doc["kind"].as_str().unwrap_or("?"),
                doc["metadata"]["name"].as_str().unwrap_or("?"),
            );
            let labels = &doc["metadata"]["labels"];
            assert_eq!(labels["app.kubernetes.io/instance"], RELEASE, "{variant}");
            assert_eq!(labels["app.kubernetes.io/managed-by"], "Helm", "{variant}");
        }
    }
}

#[test]
fn defaults_run_one_controller_per_node_on_the_node_docker_socket() {
    let manifests = render(&[MINIMAL]);
    assert_eq!(
        manifests.kinds(),
        BTreeSet::from(["DaemonSet", "Service", "ServiceAccount"]),
        "the defaults render the controller, its metrics Service and its ServiceAccount"
    );
    assert_eq!(manifests.workload()["kind"], "DaemonSet");
    assert_eq!(manifests.workload()["metadata"]["name"], "rtm-rtmanager");

    let socket = manifests
        .volume("docker-socket")
        .expect("the node's Docker socket is a volume");
    assert_eq!(socket["hostPath"]["path"], "/var/run/docker.sock");
    assert_eq!(socket["hostPath"]["type"], "Socket");
    let mount = manifests
        .mount("docker-socket")
        .expect("the Docker socket is mounted");
    assert_eq!(mount["mountPath"], "/var/run/docker.sock");
    assert_eq!(
        manifests.env_value("DOCKER_HOST"),
        "unix:///var/run/docker.sock"
    );

    let node = manifests.env_entry("RTM_NODE_NAME");
    assert_eq!(
        node["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName",
        "each controller is named after its node (downward API)"
    );
    let address = manifests.env_entry("RTM_ADVERTISE_ADDRESS");
    assert_eq!(
        address["valueFrom"]["fieldRef"]["fieldPath"], "status.hostIP",
        "each node registers its own IP as its address (downward API)"
    );
    // The node's registration and the scheduler's options, at the
    // controller's defaults.
    for (name, value) in [
        ("RTM_NODE_LABELS", ""),
        ("RTM_CAPACITY", ""),
        ("RTM_PORT_RANGE", "17000-17999"),
        ("RTM_PLACEMENT_STRATEGY", "Packed"),
        ("RTM_NODE_FAILURE_GRACE", "60s"),
        ("RTM_SELF_FENCE_AFTER", "30s"),
    ] {
        assert_eq!(manifests.env_value(name), value, "{name}");
    }
    assert!(
        !manifests.has_env("RTM_TAKE_UNASSIGNED"),
        "the scheduler assigns every game: there is no --take-unassigned"
    );

    let pod_security = &manifests.pod()["spec"]["securityContext"];
    assert_eq!(
        pod_security["runAsUser"], 0,
        "without docker.socketGroupId only root reaches the root:docker 0660 socket"
    );
    let security = &manifests.container()["securityContext"];
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["capabilities"]["drop"][0], "ALL");
}

#[test]
fn defaults_point_the_controller_at_etcd_and_serve_metrics_on_all_interfaces() {
    let manifests = render(&[MINIMAL]);
    let container = manifests.container();
    let app_version = chart_yaml()["appVersion"]
        .as_str()
        .expect("Chart.yaml has an appVersion")
        .to_owned();
    assert_eq!(container["image"], format!("rtmanager:{app_version}"));
    assert_eq!(container["imagePullPolicy"], "IfNotPresent");

    assert_eq!(
        manifests.env_value("RTM_ETCD_ENDPOINTS"),
        "http://etcd-0.etcd:2379,http://etcd-1.etcd:2379"
    );
    assert_eq!(
        manifests.env_value("RTM_METRICS_ADDR"),
        "0.0.0.0:9464",
        "in a pod, the loopback default would hide the endpoints from probes and Prometheus"
    );
    for (name, value) in [
        ("RTM_PREFIX", "/rtmanager"),
        ("RTM_LOG_FORMAT", "json"),
        ("RTM_LEASE_TTL", "15s"),
        ("RTM_CONCURRENCY", "32"),
        ("RTM_RESYNC", "60s"),
        ("RTM_HISTORY_RETENTION", "100"),
        // No host directory may be bind-mounted unless the operator lists it.
        ("RTM_ALLOWED_HOST_PATHS", ""),
    ] {
        assert_eq!(manifests.env_value(name), value, "{name}");
    }
    for absent in [
        "RTM_ETCD_CA_FILE",
        "RTM_ETCD_CERT_FILE",
        "RTM_ETCD_KEY_FILE",
        "RTM_ETCD_USER",
        "RTM_ETCD_PASSWORD",
    ] {
        assert!(!manifests.has_env(absent), "{absent} is set by default");
    }
    assert!(manifests.volume("etcd-tls").is_none());
}

#[test]
fn allowed_host_paths_are_a_list_joined_for_the_controller() {
    let manifests = render(&[
        MINIMAL,
        "controller:\n  allowedHostPaths: [/srv/maps, /srv/mods]\n",
    ]);
    assert_eq!(
        manifests.env_value("RTM_ALLOWED_HOST_PATHS"),
        "/srv/maps,/srv/mods"
    );
}

#[test]
fn the_metrics_port_is_exposed_probed_and_behind_the_service() {
    for (variant, values) in VARIANTS {
        let manifests = render(&[values]);
        let container = manifests.container();
        let port = &seq(&container["ports"])[0];
        assert_eq!(port["name"], "metrics", "{variant}");
        assert_eq!(port["containerPort"], 9464, "{variant}");

        for (probe, path) in [
            ("startupProbe", "/healthz"),
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
        ] {
            let get = &container[probe]["httpGet"];
            assert_eq!(get["path"], path, "{variant}: {probe}");
            assert_eq!(get["port"], "metrics", "{variant}: {probe}");
        }

        let service = manifests.one("Service");
        let service_port = &seq(&service["spec"]["ports"])[0];
        assert_eq!(service_port["port"], 9464, "{variant}");
        assert_eq!(service_port["targetPort"], "metrics", "{variant}");
        let pod_labels = &manifests.pod()["metadata"]["labels"];
        assert!(
            selects(&service["spec"]["selector"], pod_labels),
            "{variant}: the Service selects the controller pods"
        );
        assert!(
            selects(
                &manifests.workload()["spec"]["selector"]["matchLabels"],
                pod_labels
            ),
            "{variant}: the workload's selector matches its pod template"
        );
    }
}

#[test]
fn the_grace_period_outlasts_the_drain_timeout() {
    for (variant, values) in VARIANTS {
        let manifests = render(&[values]);
        let grace = manifests.pod()["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("terminationGracePeriodSeconds is set");
        let drain = seconds(manifests.env_value("RTM_DRAIN_TIMEOUT"));
        assert!(
            Duration::from_secs(grace) > drain,
            "{variant}: Kubernetes would kill the controller ({grace}s) before it drains ({drain:?})"
        );
    }
    let error = render_error(&[
        MINIMAL,
        "{controller: {drainTimeout: 2m}, terminationGracePeriodSeconds: 120}",
    ]);
    assert!(
        error.contains(
            "terminationGracePeriodSeconds (120) must exceed controller.drainTimeout (2m)"
        ),
        "{error}"
    );
}

#[test]
fn non_default_values_render_a_deployment_with_tls_auth_and_custom_settings() {
    let manifests = render(&[EVERYTHING]);
    let workload = manifests.workload();
    assert_eq!(workload["kind"], "Deployment");
    assert_eq!(workload["spec"]["replicas"], 2);
    assert_eq!(workload["spec"]["strategy"]["type"], "Recreate");

    let container = manifests.container();
    assert_eq!(container["image"], "registry.example/rtmanager:1.2.3");
    assert_eq!(container["imagePullPolicy"], "Always");
    assert_eq!(container["resources"]["requests"]["cpu"], "100m");
    assert_eq!(container["resources"]["limits"]["memory"], "512Mi");

    for (name, value) in [
        (
            "RTM_ETCD_ENDPOINTS",
            "https://etcd-a:2379,https://etcd-b:2379,https://etcd-c:2379",
        ),
        ("RTM_PREFIX", "/games/eu"),
        ("RTM_ETCD_TIMEOUT", "3s"),
        ("RTM_NODE_NAME", "pool-a"),
        ("RTM_NODE_LABELS", "gpu=true,region=eu"),
        ("RTM_CAPACITY", "games=200,cpus=30,memory=60Gi"),
        ("RTM_PORT_RANGE", "20000-20999"),
        ("RTM_PLACEMENT_STRATEGY", "Distributed"),
        ("RTM_NODE_FAILURE_GRACE", "2m"),
        ("RTM_SELF_FENCE_AFTER", "45s"),
        ("RTM_CONCURRENCY", "12"),
        ("RTM_LEASE_TTL", "30s"),
        ("RTM_RESYNC", "2m"),
        ("RTM_LOG_FORMAT", "text"),
        ("RTM_HISTORY_RETENTION", "50"),
        ("RTM_GC_GRACE", "5m"),
        ("RTM_RECONCILE_TIMEOUT", "90s"),
        ("RTM_DRAIN_TIMEOUT", "2m"),
        ("RTM_METRICS_ADDR", "0.0.0.0:9464"),
        ("DOCKER_HOST", "tcp://dockerd.games:2375"),
        ("RUST_LOG", "info,rtmanager=debug"),
    ] {
        assert_eq!(manifests.env_value(name), value, "{name}");
    }
    assert!(
        manifests.volume("docker-socket").is_none() && manifests.mount("docker-socket").is_none(),
        "with docker.host set, no node socket is mounted"
    );

    // TLS: the Secret mounted read-only, and the controller pointed at its files.
    let tls = manifests.volume("etcd-tls").expect("the TLS Secret volume");
    assert_eq!(tls["secret"]["secretName"], "etcd-client-tls");
    let mount = manifests.mount("etcd-tls").expect("the TLS Secret mount");
    assert_eq!(mount["mountPath"], "/etc/rtmanager/etcd-tls");
    assert_eq!(mount["readOnly"], true);
    for (name, file) in [
        ("RTM_ETCD_CA_FILE", "ca.crt"),
        ("RTM_ETCD_CERT_FILE", "tls.crt"),
        ("RTM_ETCD_KEY_FILE", "tls.key"),
    ] {
        assert_eq!(
            manifests.env_value(name),
            format!("/etc/rtmanager/etcd-tls/{file}"),
            "{name}"
        );
    }

    // Auth: from the Secret, never in the manifest.
    for (name, key) in [("RTM_ETCD_USER", "user"), ("RTM_ETCD_PASSWORD", "pass")] {
        let reference = &manifests.env_entry(name)["valueFrom"]["secretKeyRef"];
        assert_eq!(reference["name"], "etcd-auth", "{name}");
        assert_eq!(reference["key"], key, "{name}");
        assert!(manifests.env_entry(name)["value"].is_null(), "{name}");
    }

    let pod = &manifests.pod()["spec"];
    assert_eq!(pod["nodeSelector"]["rtmanager.dev/docker"], "true");
    assert_eq!(pod["tolerations"][0]["key"], "games");
    assert_eq!(pod["terminationGracePeriodSeconds"], 150);
}

#[test]
fn a_socket_group_runs_the_controller_as_the_image_non_root_user() {
    let manifests = render(&[SOCKET_GROUP]);
    assert_eq!(manifests.workload()["kind"], "DaemonSet");
    let context = &manifests.pod()["spec"]["securityContext"];
    assert_eq!(context["runAsNonRoot"], true);
    assert_eq!(context["runAsUser"], 10001);
    assert_eq!(context["runAsGroup"], 10001);
    assert_eq!(
        context["supplementalGroups"],
        serde_yaml::from_str::<Value>("[998]").expect("YAML"),
        "the socket's group lets the non-root user reach it"
    );
    assert!(manifests.volume("docker-socket").is_some());

    // Server-only TLS: a CA, no client certificate.
    assert_eq!(
        manifests.env_value("RTM_ETCD_CA_FILE"),
        "/etc/rtmanager/etcd-tls/ca.crt"
    );
    assert!(!manifests.has_env("RTM_ETCD_CERT_FILE"));
    assert!(!manifests.has_env("RTM_ETCD_KEY_FILE"));

    // The chart's non-root user is the image's USER.
    let dockerfile = dockerfile();
    let user = instruction(&dockerfile, "USER");
    let values = chart_values();
    assert_eq!(
        user,
        format!(
            "{}:{}",
            values["docker"]["runAsUser"]
                .as_u64()
                .expect("docker.runAsUser"),
            values["docker"]["runAsGroup"]
                .as_u64()
                .expect("docker.runAsGroup")
        ),
        "docker.runAsUser/runAsGroup and the Dockerfile's USER differ"
    );
}

#[test]
fn registry_credentials_come_from_a_secret_mounted_as_a_directory() {
    let defaults = render(&[MINIMAL]);
    assert!(
        !defaults.has_env("RTM_REGISTRY_AUTH_FILE"),
        "anonymous by default"
    );
    assert!(defaults.volume("registry-auth").is_none());
    assert_eq!(defaults.env_value("RTM_IMAGE_PULL_TIMEOUT"), "4m");
    assert_eq!(defaults.env_value("RTM_IMAGE_CHECK_INTERVAL"), "5m");

    let manifests = render(&[
        MINIMAL,
        "registryAuth: {secretName: pull-secret}\ncontroller: {imagePullTimeout: 90s}\n",
    ]);
    assert_eq!(
        manifests.env_value("RTM_REGISTRY_AUTH_FILE"),
        "/etc/rtmanager/registry-auth/.dockerconfigjson"
    );
    assert_eq!(manifests.env_value("RTM_IMAGE_PULL_TIMEOUT"), "90s");
    let volume = manifests
        .volume("registry-auth")
        .expect("the Secret volume");
    assert_eq!(volume["secret"]["secretName"], "pull-secret");
    let mount = manifests.mount("registry-auth").expect("the Secret mount");
    assert_eq!(mount["mountPath"], "/etc/rtmanager/registry-auth");
    assert_eq!(mount["readOnly"], true);
    // A subPath mount would never see the Secret's updates.
    assert!(mount["subPath"].is_null(), "{}", yaml(mount));
}

#[test]
fn the_service_monitor_exists_only_when_enabled() {
    assert!(render(&[MINIMAL]).find("ServiceMonitor").is_none());
    assert!(render(&[SOCKET_GROUP]).find("ServiceMonitor").is_none());

    let manifests = render(&[EVERYTHING]);
    let monitor = manifests.one("ServiceMonitor");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prom");
    let service = manifests.one("Service");
    assert!(
        selects(
            &monitor["spec"]["selector"]["matchLabels"],
            &service["metadata"]["labels"]
        ),
        "the ServiceMonitor selects the metrics Service"
    );
    assert_eq!(
        monitor["spec"]["namespaceSelector"]["matchNames"][0],
        NAMESPACE
    );
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], "metrics");
    assert_eq!(endpoint["path"], "/metrics");
    assert_eq!(endpoint["interval"], "15s");
}

#[test]
fn empty_etcd_endpoints_fail_with_a_clear_message() {
    let defaults_alone: &[&str] = &[];
    for values in [
        defaults_alone,
        &["etcd: {endpoints: []}"],
        &["etcd: {endpoints: ''}"],
    ] {
        let error = render_error(values);
        assert!(
            error.contains("etcd.endpoints is required"),
            "values {values:?}: {error}"
        );
    }
}

#[test]
fn combinations_that_would_deploy_something_broken_fail_with_a_clear_message() {
    for (values, message) in [
        ("kind: StatefulSet", "kind must be DaemonSet or Deployment"),
        (
            "controller: {placementStrategy: Spread}",
            "controller.placementStrategy must be Packed or Distributed",
        ),
        (
            "controller: {leaseTTL: 15s, selfFenceAfter: 10s}",
            "controller.selfFenceAfter (10s) must be at least controller.leaseTTL (15s)",
        ),
        (
            "controller: {leaseTTL: 15s, nodeFailureGrace: 20s, selfFenceAfter: 30s}",
            "controller.selfFenceAfter (30s) + 5s (stop bound) + 5s (clock drift margin) must be \
             less than controller.leaseTTL (15s) + controller.nodeFailureGrace (20s)",
        ),
        (
            "controller: {logFormat: yaml}",
            "controller.logFormat must be json or text",
        ),
        (
            "{serviceMonitor: {enabled: true}, metrics: {service: {enabled: false}}}",
            "serviceMonitor.enabled needs metrics.service.enabled",
        ),
        (
            "docker: {socketGroupId: docker}",
            "docker.socketGroupId must be a numeric group id",
        ),
        (
            "etcd: {tls: {enabled: true}}",
            "etcd.tls.secretName is required",
        ),
        (
            "etcd: {tls: {enabled: true, secretName: s, keyKey: ''}}",
            "etcd.tls.certKey and etcd.tls.keyKey go together",
        ),
        (
            "etcd: {auth: {enabled: true}}",
            "etcd.auth.secretName is required",
        ),
    ] {
        let error = render_error(&[MINIMAL, values]);
        assert!(error.contains(message), "values {values}: {error}");
    }
}

#[test]
fn deployments_of_one_or_several_replicas_render() {
    let single = render(&[MINIMAL, "kind: Deployment"]);
    assert_eq!(single.workload()["spec"]["replicas"], 1);
    assert!(single.volume("docker-socket").is_some());
    assert!(
        single.workload()["spec"]["strategy"].is_null(),
        "no strategy unless updateStrategy is set"
    );

    // Each replica on its node's socket is a node of its own, named after
    // it; the scheduler assigns the games among them.
    let several = render(&[MINIMAL, "{kind: Deployment, replicaCount: 3}"]);
    assert_eq!(several.workload()["spec"]["replicas"], 3);
    assert_eq!(
        several.env_entry("RTM_NODE_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    assert!(!several.has_env("RTM_TAKE_UNASSIGNED"));
}

#[test]
fn node_labels_and_capacity_take_a_map_or_a_string() {
    let from_maps = render(&[
        MINIMAL,
        "controller: {nodeLabels: {zone: b, region: eu}, capacity: {memory: 60Gi, games: 150}}",
    ]);
    assert_eq!(from_maps.env_value("RTM_NODE_LABELS"), "region=eu,zone=b");
    assert_eq!(from_maps.env_value("RTM_CAPACITY"), "games=150,memory=60Gi");
    let from_strings = render(&[
        MINIMAL,
        "controller: {nodeLabels: 'region=eu,zone=b', capacity: 'games=150,memory=60Gi'}",
    ]);
    assert_eq!(
        from_strings.env_value("RTM_NODE_LABELS"),
        "region=eu,zone=b"
    );
    assert_eq!(
        from_strings.env_value("RTM_CAPACITY"),
        "games=150,memory=60Gi"
    );
    let config = print_config(&from_maps);
    for line in [
        "node-labels: region=eu,zone=b",
        "capacity: games=150,memory=60Gi",
    ] {
        assert!(
            config.lines().any(|l| l == line),
            "missing {line:?}:\n{config}"
        );
    }
}

#[test]
fn long_release_names_stay_within_kubernetes_name_limits() {
    // Helm refuses release names over 53 characters, which leaves room for
    // "-rtmanager"; a longer nameOverride must still be cut to 63.
    let release = "a-release-name-of-fifty-three-characters-at-the-limit";
    assert_eq!(release.len(), 53);
    let manifests = render_release(
        release,
        &[EVERYTHING, "nameOverride: rtmanager-for-the-game-servers"],
    );
    for doc in &manifests.docs {
        let name = doc["metadata"]["name"].as_str().expect("a name");
        assert!(name.len() <= 63, "{name:?} is longer than 63 characters");
        assert!(!name.ends_with('-'), "{name:?} ends with a dash");
        for (key, value) in doc["metadata"]["labels"].as_mapping().expect("labels") {
            let value = value.as_str().expect("label values are strings");
            assert!(value.len() <= 63, "label {key:?}: {value:?} is too long");
        }
    }
}

#[test]
fn the_notes_say_where_the_controller_runs_and_how_to_reach_it() {
    let text = notes(MINIMAL);
    assert!(text.contains("DaemonSet games/rtm-rtmanager"), "{text}");
    assert!(
        text.contains("http://etcd-0.etcd:2379,http://etcd-1.etcd:2379"),
        "{text}"
    );
    assert!(text.contains("the Packed strategy picks a node"), "{text}");
    assert!(
        text.contains("port-forward service/rtm-rtmanager 9464"),
        "{text}"
    );
    assert!(!text.contains("ServiceMonitor"), "{text}");

    let text = notes(EVERYTHING);
    assert!(text.contains("Deployment games/rtm-rtmanager"), "{text}");
    assert!(text.contains("TLS from Secret etcd-client-tls"), "{text}");
    assert!(text.contains("tcp://dockerd.games:2375"), "{text}");
    assert!(
        text.contains("the Distributed strategy picks a node"),
        "{text}"
    );
    assert!(text.contains("ServiceMonitor"), "{text}");
}

#[test]
fn the_chart_deploys_this_crate_version() {
    let chart = chart_yaml();
    assert_eq!(chart["apiVersion"], "v2", "a Helm 3 chart");
    assert_eq!(chart["name"], "rtmanager");
    assert_eq!(
        chart["appVersion"],
        env!("CARGO_PKG_VERSION"),
        "bump Chart.yaml's appVersion (and version) with Cargo.toml's version"
    );
}

// ------------------------------------------------------------------ the chart and the controller

/// The environment variables `rtmanager --help` documents.
fn controller_env_vars() -> BTreeSet<String> {
    let output = Command::new(RTMANAGER)
        .arg("--help")
        .env_clear()
        .output()
        .expect("rtmanager --help runs");
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).expect("UTF-8 help");
    let names: BTreeSet<String> = help
        .split("[env: ")
        .skip(1)
        .map(|rest| {
            rest.split(['=', ']'])
                .next()
                .expect("split yields at least one part")
                .to_owned()
        })
        .collect();
    assert!(names.contains("RTM_ETCD_ENDPOINTS"), "help: {help}");
    let mut names = names;
    // Read from the environment only: its flag is refused on a command line
    // (`ps` would show it), so `--help` hides it. The chart sets it from a
    // Secret (secretKeyRef), which never reaches the command line.
    names.insert("RTM_ETCD_PASSWORD".to_owned());
    names
}

#[test]
fn every_variable_the_chart_sets_is_one_the_controller_reads() {
    let known = controller_env_vars();
    for (variant, values) in VARIANTS {
        let manifests = render(&[values]);
        for entry in manifests.env() {
            let name = entry["name"].as_str().expect("an env name");
            if name == "RUST_LOG" {
                continue; // controller.extraEnv, the user's own
            }
            assert!(
                known.contains(name),
                "{variant}: the chart sets {name}, which `rtmanager --help` does not list \
                 ({known:?})"
            );
        }
    }
}

/// Runs `rtmanager --print-config` with exactly the environment the chart
/// gives the container (downward API and Secret references filled in) and
/// returns its output.
fn print_config(manifests: &Manifests) -> String {
    let mut command = Command::new(RTMANAGER);
    command.arg("--print-config").env_clear();
    for entry in manifests.env() {
        let name = entry["name"].as_str().expect("an env name");
        let value = if let Some(value) = entry["value"].as_str() {
            value.to_owned()
        } else if entry["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName" {
            "node-1".to_owned()
        } else if entry["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP" {
            "10.0.0.7".to_owned()
        } else if let Some(key) = entry["valueFrom"]["secretKeyRef"]["key"].as_str() {
            format!("secret-{key}")
        } else {
            panic!("{name}: a value the test cannot fill in:\n{}", yaml(entry));
        };
        command.env(name, value);
    }
    let output = command.output().expect("rtmanager --print-config runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "the controller rejects the chart's configuration:\n{}{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn the_controller_accepts_the_configuration_the_chart_renders() {
    let minimal = print_config(&render(&[MINIMAL]));
    for line in [
        "etcd-endpoints: http://etcd-0.etcd:2379,http://etcd-1.etcd:2379",
        "prefix: /rtmanager",
        "docker-host: unix:///var/run/docker.sock",
        "node-name: node-1",
        "node-labels: -",
        "capacity: unlimited",
        "port-range: 17000-17999",
        "placement-strategy: Packed",
        "node-failure-grace: 1m",
        "self-fence-after: 30s",
        "metrics-addr: 0.0.0.0:9464",
        // The node's own IP (the downward API), where players reach its games.
        "advertise-address: 10.0.0.7",
        "probe-concurrency: 256",
        "log-format: Json",
        "lease-ttl: 15s",
    ] {
        assert!(
            minimal.lines().any(|l| l == line),
            "missing {line:?}:\n{minimal}"
        );
    }

    let everything = print_config(&render(&[EVERYTHING]));
    for line in [
        "etcd-endpoints: https://etcd-a:2379,https://etcd-b:2379,https://etcd-c:2379",
        "prefix: /games/eu",
        "etcd-ca-file: /etc/rtmanager/etcd-tls/ca.crt",
        "etcd-cert-file: /etc/rtmanager/etcd-tls/tls.crt",
        "etcd-key-file: /etc/rtmanager/etcd-tls/tls.key",
        "etcd-user: secret-user",
        "etcd-password: (set)",
        "etcd-timeout: 3s",
        "docker-host: tcp://dockerd.games:2375",
        "node-name: pool-a",
        "node-labels: gpu=true,region=eu",
        "capacity: games=200,cpus=30,memory=60Gi",
        "port-range: 20000-20999",
        "placement-strategy: Distributed",
        "node-failure-grace: 2m",
        "self-fence-after: 45s",
        "concurrency: 12",
        "lease-ttl: 30s",
        "resync: 2m",
        "log-format: Text",
        "history-retention: 50",
        "gc-grace: 5m",
        "reconcile-timeout: 1m 30s",
        "drain-timeout: 2m",
    ] {
        assert!(
            everything.lines().any(|l| l == line),
            "missing {line:?}:\n{everything}"
        );
    }

    let socket_group = print_config(&render(&[SOCKET_GROUP]));
    for line in [
        "etcd-ca-file: /etc/rtmanager/etcd-tls/ca.crt",
        "etcd-cert-file: -",
        "metrics-addr: [::]:9464",
    ] {
        assert!(
            socket_group.lines().any(|l| l == line),
            "missing {line:?}:\n{socket_group}"
        );
    }
}

// ------------------------------------------------------------------ the Dockerfile

fn dockerfile() -> String {
    std::fs::read_to_string(format!("{MANIFEST_DIR}/Dockerfile")).expect("Dockerfile")
}

/// The Dockerfile's logical lines (continuations joined, comments dropped).
fn instructions(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(start) = line.strip_suffix('\\') {
            current.push_str(start);
            current.push(' ');
        } else {
            current.push_str(line);
            lines.push(std::mem::take(&mut current));
        }
    }
    lines
}

/// The argument of the last `keyword` instruction.
fn instruction(text: &str, keyword: &str) -> String {
    instructions(text)
        .iter()
        .rev()
        .find_map(|line| line.strip_prefix(&format!("{keyword} ")))
        .unwrap_or_else(|| panic!("the Dockerfile has no {keyword}"))
        .trim()
        .to_owned()
}

#[test]
fn the_dockerfile_builds_both_binaries_into_a_small_non_root_image() {
    let text = dockerfile();
    let lines = instructions(&text);
    let stages: Vec<&String> = lines.iter().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(stages.len(), 2, "a build stage and a final stage");
    assert!(
        stages[0].starts_with("FROM rust:") && stages[0].contains("bookworm"),
        "the builder is Debian bookworm's Rust, matching the final image's glibc: {}",
        stages[0]
    );
    assert_eq!(stages[1], "FROM debian:bookworm-slim");
    assert!(
        text.contains("protobuf-compiler"),
        "etcd-client needs protoc"
    );
    // The image ships the controller and the CLI, nothing else of the workspace.
    let build = "cargo build --release --locked -p rtmanager --bin rtmanager --bin rtctl";
    assert_eq!(
        lines.iter().filter(|l| l.contains(build)).count(),
        2,
        "the dependency layer and the real build build the same binaries"
    );
    assert!(
        lines
            .iter()
            .any(|l| l == "COPY --from=build /out/rtmanager /out/rtctl /usr/local/bin/")
    );
    assert_eq!(
        instruction(&text, "ENTRYPOINT"),
        r#"["/usr/local/bin/rtmanager"]"#
    );
    let values = chart_values();
    let port = values["metrics"]["port"].as_u64().expect("metrics.port");
    assert_eq!(instruction(&text, "EXPOSE"), port.to_string());
    assert_eq!(
        instruction(&text, "ENV"),
        format!("RTM_METRICS_ADDR=0.0.0.0:{port}")
    );
    let user = instruction(&text, "USER");
    assert!(
        !user.starts_with("0") && !user.starts_with("root"),
        "the image runs as non-root by default, not {user}"
    );

    // The build context keeps what the COPYs need and leaves out local state.
    let ignore =
        std::fs::read_to_string(format!("{MANIFEST_DIR}/.dockerignore")).expect(".dockerignore");
    let ignored: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for excluded in ["target/", ".state/", ".git/"] {
        assert!(
            ignored.contains(&excluded),
            ".dockerignore lacks {excluded}"
        );
    }
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "src",
        "src/",
        "crates",
        "crates/",
    ] {
        assert!(
            !ignored.contains(&needed),
            ".dockerignore excludes {needed}, which the build copies"
        );
    }
}
