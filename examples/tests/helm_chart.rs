//! The Helm chart (`deploy/chart/cloud-controller-manager`) against a real kube-apiserver:
//!
//! - `helm lint --strict` with the default values and with `ci/full-values.yaml`; values that cannot work together
//!   fail the render with a message naming them;
//! - `helm template` of both: the objects carry what they must (HTTPS probes, leader election, PDB, ServiceMonitor
//!   with scheme https, the ClusterRoles of `deploy/rbac.yaml`), and each output passes a server-side dry run
//!   (`kubectl apply --server-side --dry-run=server`) after a minimal ServiceMonitor CRD
//!   (`tests/fixtures/servicemonitor-crd.yaml`) is installed, which really validates (a bad scheme is refused);
//! - the rendered objects applied for real, and the binary run with the rendered Deployment's arguments as the
//!   rendered ServiceAccount (impersonated): `/readyz` answers 200 and a Node gets initialized.
//!
//! helm comes from `$KUBE_CLOUD_HELM` (`scripts/test` sets it from `scripts/build-helm`), else from running
//! `scripts/build-helm`; without either the tests fail, saying so.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use test_support::{ControlPlane, NodeBuilder, UNINITIALIZED_TAINT, eventually};
use tokio::io::AsyncWriteExt;

const BIN: &str = env!("CARGO_BIN_EXE_cloud-controller-manager");
const NAMESPACE: &str = "kube-system";

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn chart_dir() -> PathBuf {
    repo_file("deploy/chart/cloud-controller-manager")
}

fn full_values() -> PathBuf {
    chart_dir().join("ci/full-values.yaml")
}

/// The helm binary: `$KUBE_CLOUD_HELM`, else the one `scripts/build-helm` prints (building it first if needed).
fn helm() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        if let Some(path) = std::env::var_os("KUBE_CLOUD_HELM").filter(|p| !p.is_empty()) {
            let path = PathBuf::from(path);
            assert!(
                path.is_file(),
                "KUBE_CLOUD_HELM={} is not a file; point it at a helm binary (scripts/build-helm prints one)",
                path.display()
            );
            return path;
        }
        let script = repo_file("scripts/build-helm");
        let out = std::process::Command::new(&script)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "KUBE_CLOUD_HELM is not set and running {} failed: {e}",
                    script.display()
                )
            });
        assert!(
            out.status.success(),
            "KUBE_CLOUD_HELM is not set and {} failed ({}; its errors are above): it builds helm from Go modules \
             and needs Go >= 1.26; or set KUBE_CLOUD_HELM to a helm binary",
            script.display(),
            out.status
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let path = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
        assert!(
            path.is_file(),
            "{} printed {stdout:?}, not the path of a helm binary",
            script.display()
        );
        path
    })
}

/// Runs helm; its stdout, or (on a non-zero exit) its stderr.
fn run_helm(args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new(helm())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {} {args:?}: {e}", helm().display()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!("{}: {stderr}{stdout}", out.status))
    }
}

/// `helm template RELEASE CHART -n kube-system [-f values] [--set s]...`.
fn render(release: &str, values: Option<&Path>, sets: &[&str]) -> Result<String, String> {
    let chart = chart_dir().display().to_string();
    let values = values.map(|v| v.display().to_string());
    let mut args = vec![
        "template",
        release,
        chart.as_str(),
        "--namespace",
        NAMESPACE,
    ];
    if let Some(v) = &values {
        args.extend(["--values", v.as_str()]);
    }
    for s in sets {
        args.extend(["--set", s]);
    }
    run_helm(&args)
}

fn render_ok(release: &str, values: Option<&Path>) -> String {
    render(release, values, &[])
        .unwrap_or_else(|e| panic!("helm template {release} (values {values:?}): {e}"))
}

/// The objects of a multi-document YAML stream (helm separates documents with `---` lines).
fn objects(yaml: &str) -> Vec<Value> {
    let mut docs = vec![String::new()];
    for line in yaml.lines() {
        if line.trim_end() == "---" {
            docs.push(String::new());
        } else if let Some(doc) = docs.last_mut() {
            doc.push_str(line);
            doc.push('\n');
        }
    }
    docs.iter()
        .map(|d| {
            serde_yaml_ng::from_str::<Value>(d)
                .unwrap_or_else(|e| panic!("rendered YAML does not parse: {e}\n{d}"))
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn kinds(objects: &[Value]) -> Vec<String> {
    let mut kinds: Vec<String> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap_or("?").to_owned())
        .collect();
    kinds.sort();
    kinds
}

/// The one object of `kind` named `name`.
fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| {
            let all: Vec<String> = objects
                .iter()
                .map(|o| format!("{}/{}", o["kind"], o["metadata"]["name"]))
                .collect();
            panic!("no {kind} {name} among the rendered objects {all:?}")
        })
}

fn container(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

fn args(deployment: &Value) -> Vec<String> {
    container(deployment)["args"]
        .as_array()
        .unwrap_or_else(|| panic!("the container has no args: {deployment}"))
        .iter()
        .map(|a| a.as_str().unwrap_or_default().to_owned())
        .collect()
}

fn assert_arg(args: &[String], arg: &str) {
    assert!(args.iter().any(|a| a == arg), "{arg} missing in {args:?}");
}

fn rules_of(objects: &[Value], kind: &str, name: &str) -> Value {
    find(objects, kind, name)["rules"].clone()
}

/// What every rendering must have, whatever the values: HTTPS probes on the serving port, the uninitialized-taint
/// toleration, and the ClusterRoles and Lease Role of `deploy/rbac.yaml` (the chart's own copy must not drift).
fn assert_common(objects: &[Value], release: &str, fullname: &str, deploy_rbac: &[Value]) {
    let deployment = find(objects, "Deployment", fullname);
    let c = container(deployment);
    assert_eq!(c["ports"][0]["name"], "https", "{c}");
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["scheme"], "HTTPS", "{probe}: {get}");
        assert_eq!(get["path"], path, "{probe}: {get}");
        assert_eq!(get["port"], "https", "{probe}: {get}");
    }
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");
    let tolerations = pod["tolerations"].as_array().expect("tolerations");
    for key in [UNINITIALIZED_TAINT, "node-role.kubernetes.io/control-plane"] {
        assert!(
            tolerations.iter().any(|t| t["key"] == key),
            "no toleration of {key}: {tolerations:?}"
        );
    }
    assert_eq!(
        deployment["spec"]["selector"]["matchLabels"],
        json!({"app.kubernetes.io/name": "cloud-controller-manager", "app.kubernetes.io/instance": release})
    );

    let ours = rules_of(objects, "ClusterRole", &format!("system:{fullname}"));
    let upstream = rules_of(
        deploy_rbac,
        "ClusterRole",
        "system:cloud-controller-manager",
    );
    let ours = ours.as_array().expect("rules");
    let upstream = upstream.as_array().expect("rules");
    assert_eq!(
        &ours[..upstream.len().min(ours.len())],
        &upstream[..],
        "the chart's ClusterRole differs from deploy/rbac.yaml's"
    );
    assert_eq!(
        rules_of(
            objects,
            "ClusterRole",
            &format!("{fullname}-metrics-reader")
        ),
        rules_of(
            deploy_rbac,
            "ClusterRole",
            "cloud-controller-manager-metrics-reader"
        ),
    );
    let lease = rules_of(objects, "Role", &format!("{fullname}:leader-election"));
    let deploy_lease = rules_of(
        deploy_rbac,
        "Role",
        "cloud-controller-manager:leader-election",
    );
    assert_eq!(lease[0], deploy_lease[0], "Lease create rule");
    assert_eq!(lease[1]["verbs"], deploy_lease[1]["verbs"], "Lease rule");
}

fn deploy_rbac() -> Vec<Value> {
    let path = repo_file("deploy/rbac.yaml");
    objects(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// The default values: 2 replicas with leader election and a PDB, provider config in a ConfigMap, a self-signed
/// certificate in an emptyDir; no Service, no ServiceMonitor.
fn assert_default(objects: &[Value]) {
    let fullname = "ccm-cloud-controller-manager";
    assert_common(objects, "ccm", fullname, &deploy_rbac());
    assert_eq!(
        kinds(objects),
        [
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "Deployment",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "ServiceAccount",
        ]
    );
    let deployment = find(objects, "Deployment", fullname);
    assert_eq!(deployment["spec"]["replicas"], 2);
    let args = args(deployment);
    for arg in [
        "--cloud-provider=fake",
        "--cloud-config=/etc/cloud/cloud-config.yaml",
        "--leader-elect=true",
        "--leader-elect-resource-name=cloud-controller-manager",
        "--leader-elect-resource-namespace=kube-system",
        "--secure-port=10258",
        "--bind-address=0.0.0.0",
        "--cert-dir=/var/run/cloud-controller-manager/certs",
    ] {
        assert_arg(&args, arg);
    }
    // The node's resolver: cluster DNS may wait for the CCM (docs/kubeadm.md).
    assert_eq!(
        deployment["spec"]["template"]["spec"]["dnsPolicy"],
        "Default"
    );
    let volumes = &deployment["spec"]["template"]["spec"]["volumes"];
    assert!(
        volumes
            .as_array()
            .expect("volumes")
            .iter()
            .any(|v| v["name"] == "serving-cert" && v["emptyDir"].is_object()),
        "{volumes}"
    );
    let config = find(objects, "ConfigMap", &format!("{fullname}-config"));
    assert_eq!(
        config["data"]["cloud-config.yaml"],
        "autoCreateInstances: true\n"
    );
    let pdb = find(objects, "PodDisruptionBudget", fullname);
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"], deployment["spec"]["selector"],
        "the PDB selects the Deployment's pods"
    );
}

/// `ci/full-values.yaml`: every optional object, wired to each other.
fn assert_full(objects: &[Value]) {
    let fullname = "prod-cloud-controller-manager";
    assert_common(objects, "prod", fullname, &deploy_rbac());
    let deployment = find(objects, "Deployment", fullname);
    assert_eq!(deployment["spec"]["replicas"], 2);
    let args = args(deployment);
    for arg in [
        "--leader-elect=true",
        "--leader-elect-resource-name=ccm-prod",
        "--cloud-config=/etc/cloud/cloud.yaml",
        "--cluster-name=prod-eu-1",
        "--controllers=*,-cloud-node-lifecycle",
        "--allocate-node-cidrs=true",
        "--cluster-cidr=10.244.0.0/16,fd00:10:244::/56",
        "--concurrent-service-syncs=2",
        "--logging-format=text",
    ] {
        assert_arg(&args, arg);
    }
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    assert_eq!(pod["serviceAccountName"], "cloud-controller-manager");

    let secret = find(objects, "Secret", &format!("{fullname}-config"));
    assert!(secret["stringData"]["cloud.yaml"].is_string(), "{secret}");
    let volume = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == "cloud-config")
        .expect("cloud-config volume");
    assert_eq!(volume["secret"]["secretName"], secret["metadata"]["name"]);

    let pdb = find(objects, "PodDisruptionBudget", fullname);
    assert_eq!(pdb["spec"]["selector"], deployment["spec"]["selector"]);

    let service = find(objects, "Service", &format!("{fullname}-metrics"));
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "https");
    let monitor = find(objects, "ServiceMonitor", fullname);
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(
        monitor["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["scheme"], "https", "{endpoint}");
    assert_eq!(endpoint["path"], "/metrics");
    assert_eq!(endpoint["port"], service["spec"]["ports"][0]["name"]);
    assert_eq!(endpoint["tlsConfig"]["insecureSkipVerify"], true);
    assert_eq!(
        endpoint["bearerTokenFile"],
        "/var/run/secrets/kubernetes.io/serviceaccount/token"
    );
    let selector = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels");
    for (k, v) in selector {
        assert_eq!(
            &service["metadata"]["labels"][k], v,
            "the ServiceMonitor's selector {k} does not match the Service"
        );
    }

    let readers = find(
        objects,
        "ClusterRoleBinding",
        &format!("{fullname}-metrics-reader"),
    );
    assert_eq!(
        readers["roleRef"]["name"],
        format!("{fullname}-metrics-reader")
    );
    assert_eq!(
        readers["subjects"],
        json!([
            {"kind": "ServiceAccount", "name": "prometheus-k8s", "namespace": "monitoring"},
            {"kind": "ServiceAccount", "name": "vmagent", "namespace": "monitoring"},
        ])
    );
    let rules = rules_of(objects, "ClusterRole", &format!("system:{fullname}"));
    assert!(
        rules
            .as_array()
            .expect("rules")
            .iter()
            .any(|r| r["resources"] == json!(["configmaps"])),
        "rbac.extraRules missing: {rules}"
    );
}

#[test]
fn lint_passes_and_bad_values_fail_naming_them() {
    let chart = chart_dir().display().to_string();
    let full = full_values().display().to_string();
    for args in [
        vec!["lint", "--strict", chart.as_str()],
        vec![
            "lint",
            "--strict",
            chart.as_str(),
            "--values",
            full.as_str(),
        ],
    ] {
        let out = run_helm(&args).unwrap_or_else(|e| panic!("helm {args:?}: {e}"));
        assert!(out.contains("0 chart(s) failed"), "helm {args:?}: {out}");
    }

    // One replica: no PodDisruptionBudget (it would block every drain).
    let single = render("ccm", None, &["replicaCount=1"]).expect("replicaCount=1");
    assert!(
        !kinds(&objects(&single)).contains(&"PodDisruptionBudget".to_owned()),
        "{single}"
    );

    for (sets, message) in [
        (
            &["replicaCount=2", "leaderElection.enabled=false"][..],
            "replicaCount > 1 needs leaderElection.enabled=true",
        ),
        (
            &["routes.allocateNodeCidrs=true"][..],
            "routes.clusterCidr is required",
        ),
        (
            &["extraArgs={--cloud-provider=aws}"][..],
            "extraArgs: --cloud-provider is set by the chart",
        ),
        (&["cloudProvider="][..], "cloudProvider is required"),
        (
            &["loggingFormat=xml"][..],
            "loggingFormat must be json or text",
        ),
        (
            &["serviceAccount.create=false"][..],
            "serviceAccount.name is required",
        ),
    ] {
        match render("ccm", None, sets) {
            Ok(out) => panic!("helm template --set {sets:?} should fail, rendered:\n{out}"),
            Err(e) => assert!(e.contains(message), "--set {sets:?}: {e}"),
        }
    }
}

/// `kubectl apply --server-side [--dry-run=server] -f -` with `yaml` on stdin; the output, or a panic with it.
async fn apply(
    cp: &ControlPlane,
    cache: &Path,
    yaml: &str,
    dry_run: bool,
) -> Result<String, String> {
    let mut cmd = cp.kubectl();
    cmd.arg("--cache-dir").arg(cache).args([
        "apply",
        "--server-side",
        "--field-manager=helm-chart-test",
        "-f",
        "-",
    ]);
    if dry_run {
        cmd.arg("--dry-run=server");
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kubectl");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(yaml.as_bytes())
        .await
        .expect("write to kubectl");
    drop(stdin);
    let out = child.wait_with_output().await.expect("kubectl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

async fn install_servicemonitor_crd(cp: &ControlPlane, cache: &Path) {
    let crd = std::fs::read_to_string(repo_file("examples/tests/fixtures/servicemonitor-crd.yaml"))
        .expect("read the ServiceMonitor CRD fixture");
    apply(cp, cache, &crd, false)
        .await
        .unwrap_or_else(|e| panic!("install the ServiceMonitor CRD: {e}"));
    let out = cp
        .kubectl()
        .arg("--cache-dir")
        .arg(cache)
        .args([
            "wait",
            "--for=condition=Established",
            "crd/servicemonitors.monitoring.coreos.com",
            "--timeout=60s",
        ])
        .output()
        .await
        .expect("kubectl wait");
    assert!(
        out.status.success(),
        "the ServiceMonitor CRD is not established: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn rendered_chart_passes_a_server_side_dry_run() {
    let default = render_ok("ccm", None);
    let full = render_ok("prod", Some(&full_values()));
    assert_default(&objects(&default));
    assert_full(&objects(&full));

    let cp = ControlPlane::start().await.expect("control plane");
    let cache = tempfile::tempdir().expect("tempdir");
    install_servicemonitor_crd(&cp, cache.path()).await;

    for (name, yaml) in [("default values", &default), ("ci/full-values.yaml", &full)] {
        let out = apply(&cp, cache.path(), yaml, true)
            .await
            .unwrap_or_else(|e| panic!("server-side dry run of the {name} rendering: {e}"));
        let applied = out.matches("serverside-applied (server dry run)").count();
        assert_eq!(
            applied,
            objects(yaml).len(),
            "every object of the {name} rendering is applied: {out}"
        );
    }

    // The dry run really validates the ServiceMonitor against a schema: a scheme it does not allow is refused.
    let monitor = full
        .split("\n---")
        .find(|d| d.contains("kind: ServiceMonitor"))
        .expect("a ServiceMonitor document")
        .replace("scheme: https", "scheme: ftp");
    match apply(&cp, cache.path(), &monitor, true).await {
        Ok(out) => panic!("a ServiceMonitor with scheme ftp passed the dry run: {out}"),
        Err(e) => assert!(e.contains("scheme"), "{e}"),
    }
}

/// A kubeconfig like the control plane's whose requests are made as ServiceAccount `kube-system/name`.
fn impersonating_kubeconfig(cp: &ControlPlane, dir: &Path, name: &str) -> PathBuf {
    let mut kc = kube::config::Kubeconfig::read_from(cp.kubeconfig_path()).expect("kubeconfig");
    for named in &mut kc.auth_infos {
        if let Some(auth) = named.auth_info.as_mut() {
            auth.impersonate = Some(format!("system:serviceaccount:{NAMESPACE}:{name}"));
            auth.impersonate_groups = Some(vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{NAMESPACE}"),
                "system:authenticated".into(),
            ]);
        }
    }
    let path = dir.join(format!("{name}.kubeconfig"));
    std::fs::write(&path, serde_yaml_ng::to_string(&kc).expect("yaml")).expect("write kubeconfig");
    path
}

async fn free_port() -> u16 {
    let l = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    l.local_addr().expect("addr").port()
}

/// Replaces the argument starting with `prefix` (it must be there: the chart passes it).
fn replace_arg(args: &mut [String], prefix: &str, with: String) {
    let arg = args
        .iter_mut()
        .find(|a| a.starts_with(prefix))
        .unwrap_or_else(|| panic!("the chart passes no {prefix}…"));
    *arg = with;
}

/// Runs the binary as the pod would: the rendered Deployment's arguments, the rendered provider configuration,
/// the rendered ServiceAccount; only the paths, the address and the port are local. Returns once `/readyz` is 200.
async fn run_as_rendered(
    cp: &ControlPlane,
    dir: &Path,
    objects: &[Value],
    fullname: &str,
) -> tokio::process::Child {
    let deployment = find(objects, "Deployment", fullname);
    let pod = &deployment["spec"]["template"]["spec"];
    let sa = pod["serviceAccountName"]
        .as_str()
        .expect("serviceAccountName");
    let mut args = args(deployment);

    // The provider configuration the pod would read, from the rendered ConfigMap or Secret.
    let config_arg = args
        .iter()
        .find_map(|a| a.strip_prefix("--cloud-config=/etc/cloud/"))
        .expect("--cloud-config under /etc/cloud")
        .to_owned();
    let content = objects
        .iter()
        .filter(|o| o["kind"] == "ConfigMap" || o["kind"] == "Secret")
        .find_map(|o| {
            o["data"][&config_arg]
                .as_str()
                .or(o["stringData"][&config_arg].as_str())
        })
        .unwrap_or_else(|| panic!("no rendered ConfigMap or Secret holds {config_arg}"));
    let config = dir.join(format!("{fullname}-{config_arg}"));
    std::fs::write(&config, content).expect("write the provider configuration");
    replace_arg(
        &mut args,
        "--cloud-config=",
        format!("--cloud-config={}", config.display()),
    );
    let certs = dir.join(format!("{fullname}-certs"));
    replace_arg(
        &mut args,
        "--cert-dir=",
        format!("--cert-dir={}", certs.display()),
    );
    replace_arg(
        &mut args,
        "--bind-address=",
        "--bind-address=127.0.0.1".into(),
    );
    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), free_port().await);
    replace_arg(
        &mut args,
        "--secure-port=",
        format!("--secure-port={}", addr.port()),
    );
    let kubeconfig = impersonating_kubeconfig(cp, dir, sa);
    args.push(format!("--kubeconfig={}", kubeconfig.display()));

    let log = dir.join(format!("{fullname}.log"));
    let mut child = tokio::process::Command::new(BIN)
        .args(&args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .kill_on_drop(true)
        .spawn()
        .expect("start the binary");
    // Not `eventually`: a binary that exits (a flag it refuses) fails the test at once, with its log.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let failure = loop {
        if let Some(status) = child.try_wait().expect("wait for the binary") {
            break format!("exited with {status}");
        }
        if let Some(a) = common::https_get(addr, "/readyz?verbose", None, None).await {
            if a.status == 200 {
                return child;
            }
            if tokio::time::Instant::now() > deadline {
                break format!("/readyz still answers {}: {}", a.status, a.body);
            }
        } else if tokio::time::Instant::now() > deadline {
            break "nothing answers on the secure port".to_owned();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    panic!(
        "{fullname} with the rendered args {args:?} never became ready ({failure}); its log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_runs_with_the_rendered_objects() {
    let default = objects(&render_ok("ccm", None));
    let full = objects(&render_ok("prod", Some(&full_values())));
    let cp = ControlPlane::start().await.expect("control plane");
    let cache = tempfile::tempdir().expect("tempdir");
    let dir = tempfile::tempdir().expect("tempdir");
    install_servicemonitor_crd(&cp, cache.path()).await;
    // Everything for real (no kubelets here, so the Deployments' pods never run): the RBAC the binary runs under.
    for (name, objects) in [("default", &default), ("full", &full)] {
        let yaml: String = objects
            .iter()
            .map(|o| format!("---\n{}", serde_yaml_ng::to_string(o).expect("yaml")))
            .collect();
        apply(&cp, cache.path(), &yaml, false)
            .await
            .unwrap_or_else(|e| panic!("apply the {name} rendering: {e}"));
    }

    // Every flag and value of the full rendering is accepted, and its RBAC is enough to become ready.
    let full_ccm = run_as_rendered(&cp, dir.path(), &full, "prod-cloud-controller-manager").await;
    drop(full_ccm);

    // The default rendering initializes a Node with its RBAC.
    let _ccm = run_as_rendered(&cp, dir.path(), &default, "ccm-cloud-controller-manager").await;
    let nodes: Api<Node> = Api::all(cp.client());
    nodes
        .create(
            &PostParams::default(),
            &NodeBuilder::new("helm-node").uninitialized().build(),
        )
        .await
        .expect("create node");
    eventually(
        Duration::from_secs(60),
        "helm-node to get a provider ID and lose the uninitialized taint",
        async || {
            let node = nodes.get("helm-node").await.ok()?;
            let spec = node.spec.as_ref()?;
            let tainted = spec
                .taints
                .as_ref()
                .is_some_and(|t| t.iter().any(|t| t.key == UNINITIALIZED_TAINT));
            (spec.provider_id.is_some() && !tainted).then_some(())
        },
    )
    .await;
}
