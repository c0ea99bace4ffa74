//! The cloud-controller-manager binary end to end on a real apiserver, running as the ServiceAccount of
//! `deploy/rbac.yaml` (impersonated), so every controller's permissions are proven by what it really does:
//! initializing Nodes, programming routes, deleting a Node whose instance is gone, provisioning a load balancer that
//! answers TCP, publishing Events, holding and releasing the Lease. Also: bad flags and config fail at startup
//! naming the field. `/healthz` and `/metrics` are read over HTTPS, `/metrics` with a token bound to the
//! metrics-reader ClusterRole (the binary's TokenReview and SubjectAccessReview run as the ServiceAccount too).

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, PostParams};
use test_support::{ControlPlane, NodeBuilder, UNINITIALIZED_TAINT as UNINITIALIZED, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BIN: &str = env!("CARGO_BIN_EXE_cloud-controller-manager");
const SERVICE_ACCOUNT: &str = "system:serviceaccount:kube-system:cloud-controller-manager";

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// Runs the binary to completion (for startup errors): (success, stdout, stderr).
async fn run_to_end(args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .await
        .expect("run the binary");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn startup_error(args: &[&str]) -> String {
    let (ok, _, stderr) = run_to_end(args).await;
    assert!(!ok, "{args:?} should fail; stderr: {stderr}");
    stderr
}

#[tokio::test]
async fn bad_flags_and_config_are_startup_errors_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let typo = dir.path().join("typo.yaml");
    std::fs::write(&typo, "zonee: a\n").expect("write config");
    let typo_flag = format!("--cloud-config={}", typo.display());
    let missing_flag = format!("--cloud-config={}", dir.path().join("none.yaml").display());

    let e = startup_error(&["--cloud-provider=nope"]).await;
    assert!(e.contains("\"nope\"") && e.contains("fake"), "{e}");
    let e = startup_error(&["--cloud-provider=fake", &typo_flag]).await;
    assert!(e.contains("zonee"), "{e}");
    let e = startup_error(&["--cloud-provider=fake", &missing_flag]).await;
    assert!(e.contains("none.yaml"), "{e}");
    // A provider without a cluster ID is refused unless --allow-untagged-cloud, as upstream.
    let untagged = dir.path().join("untagged.yaml");
    std::fs::write(&untagged, "hasClusterId: false\n").expect("write config");
    let untagged_flag = format!("--cloud-config={}", untagged.display());
    let e = startup_error(&["--cloud-provider=fake", &untagged_flag]).await;
    assert!(
        e.contains("--allow-untagged-cloud") && e.contains("no ClusterID"),
        "{e}"
    );
    let e = startup_error(&["--cloud-provider=fake", "--controllers=servce"]).await;
    assert!(e.contains("--controllers") && e.contains("servce"), "{e}");
    let e = startup_error(&["--cloud-provider=fake", "--leader-elect-renew-deadline=20s"]).await;
    assert!(e.contains("--leader-elect"), "{e}");
    let e = startup_error(&[
        "--cloud-provider=fake",
        "--allocate-node-cidrs",
        "--cluster-cidr=nonsense",
    ])
    .await;
    assert!(
        e.contains("--cluster-cidr") && e.contains("nonsense"),
        "{e}"
    );
    let e = startup_error(&[
        "--cloud-provider=fake",
        "--tls-cert-file=/nonexistent/serving.crt",
        "--tls-private-key-file=/nonexistent/serving.key",
    ])
    .await;
    assert!(
        e.contains("--tls-cert-file") && e.contains("/nonexistent/serving.crt"),
        "{e}"
    );
    let e = startup_error(&["--cloud-provider"]).await;
    assert!(e.contains("--cloud-provider"), "{e}");

    let (ok, schema, stderr) =
        run_to_end(&["--cloud-provider=fake", "--print-config-schema"]).await;
    assert!(ok, "{stderr}");
    let schema: serde_json::Value = serde_json::from_str(&schema).expect("the schema is JSON");
    assert!(
        schema["properties"]["localLoadBalancers"].is_object(),
        "{schema}"
    );
}

/// A loopback /24 of this test process's own.
fn loopback_net(purpose: u8) -> [u8; 3] {
    let pid = std::process::id();
    [
        127,
        (150 + (pid % 100)) as u8,
        ((pid / 100) % 120) as u8 * 2 + purpose,
    ]
}

/// A kubeconfig like the control plane's, whose requests are made as the ServiceAccount (impersonation).
fn impersonating_kubeconfig(cp: &ControlPlane, dir: &Path) -> PathBuf {
    let mut kc = kube::config::Kubeconfig::read_from(cp.kubeconfig_path()).expect("kubeconfig");
    for named in &mut kc.auth_infos {
        if let Some(auth) = named.auth_info.as_mut() {
            auth.impersonate = Some(SERVICE_ACCOUNT.into());
            auth.impersonate_groups = Some(vec![
                "system:serviceaccounts".into(),
                "system:serviceaccounts:kube-system".into(),
                "system:authenticated".into(),
            ]);
        }
    }
    let path = dir.join("as-ccm.kubeconfig");
    std::fs::write(&path, serde_yaml_ng::to_string(&kc).expect("yaml")).expect("write");
    path
}

async fn kubectl(cp: &ControlPlane, args: &[&str]) -> String {
    let out = cp.kubectl().args(args).output().await.expect("kubectl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kubectl {args:?}: {text}");
    text
}

/// A GET over HTTPS: (status code, body).
async fn https_get(addr: SocketAddr, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    common::https_get(addr, path, token, None)
        .await
        .map(|a| (a.status, a.body))
}

async fn free_port(ip: IpAddr) -> u16 {
    let l = TcpListener::bind((ip, 0)).await.expect("bind");
    l.local_addr().expect("addr").port()
}

fn internal_ip(node: &Node) -> Option<IpAddr> {
    node.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .find(|a| a.type_ == "InternalIP")?
        .address
        .parse()
        .ok()
}

fn initialized(node: &Node) -> bool {
    let untainted = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_none_or(|t| t.iter().all(|t| t.key != UNINITIALIZED));
    untainted && internal_ip(node).is_some()
}

fn route_created(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter().any(|c| {
                c.type_ == "NetworkUnavailable"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("RouteCreated")
            })
        })
}

/// Answers every connection with `name`, like a pod behind a NodePort.
async fn backend(addr: SocketAddr, name: String) -> tokio::task::JoinHandle<()> {
    let listener = TcpListener::bind(addr).await.expect("backend bind");
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let _ = conn.write_all(name.as_bytes()).await;
        }
    })
}

#[tokio::test]
async fn runs_every_controller_as_its_service_account() {
    let cp = ControlPlane::start().await.expect("control plane");
    let admin = cp.client();
    let dir = tempfile::tempdir().expect("tempdir");

    // The manifests are valid for the apiserver as a whole (server-side dry run); then the RBAC for real.
    let manifests: Vec<String> = ["rbac.yaml", "cloud-config.yaml", "deployment.yaml"]
        .iter()
        .map(|f| repo_file(&format!("deploy/{f}")).display().to_string())
        .collect();
    let mut dry_run = vec!["apply", "--server-side", "--dry-run=server"];
    for m in &manifests {
        dry_run.extend(["-f", m.as_str()]);
    }
    let out = kubectl(&cp, &dry_run).await;
    for object in [
        "deployment.apps/cloud-controller-manager",
        "poddisruptionbudget.policy/cloud-controller-manager",
        "clusterrole.rbac.authorization.k8s.io/system:cloud-controller-manager",
    ] {
        assert!(
            out.contains(object),
            "dry run did not apply {object}: {out}"
        );
    }
    kubectl(&cp, &["apply", "--server-side", "-f", &manifests[0]]).await;

    // The impersonation takes effect: the identity may not read Secrets (so this test would catch a missing rule).
    let as_ccm = impersonating_kubeconfig(&cp, dir.path());
    let ccm_client = {
        let kc = kube::config::Kubeconfig::read_from(&as_ccm).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .expect("config");
        kube::Client::try_from(config).expect("client")
    };
    let secrets: Api<Secret> = Api::namespaced(ccm_client, "kube-system");
    match secrets.list(&Default::default()).await {
        Err(kube::Error::Api(e)) if e.code == 403 => {}
        other => panic!("the ServiceAccount should not list Secrets: {other:?}"),
    }

    let (lb_net, node_net) = (loopback_net(0), loopback_net(1));
    let cloud_config = dir.path().join("fake.yaml");
    std::fs::write(
        &cloud_config,
        format!(
            "autoCreateInstances: true\n\
             instanceAddressPool: {}.{}.{}.0/24\n\
             loadBalancerIpPool: {}.{}.{}.0/24\n\
             localLoadBalancers: true\n\
             instances: [{{ name: gone-node, state: Terminated }}]\n",
            node_net[0], node_net[1], node_net[2], lb_net[0], lb_net[1], lb_net[2]
        ),
    )
    .expect("write cloud config");
    let health = SocketAddr::new(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        free_port(IpAddr::V4(Ipv4Addr::LOCALHOST)).await,
    );
    let stderr_path = dir.path().join("ccm.log");
    let mut ccm = tokio::process::Command::new(BIN)
        .args([
            "--cloud-provider=fake",
            &format!("--cloud-config={}", cloud_config.display()),
            &format!("--kubeconfig={}", as_ccm.display()),
            "--bind-address=127.0.0.1",
            &format!("--secure-port={}", health.port()),
            &format!("--cert-dir={}", dir.path().join("certs").display()),
            "--allocate-node-cidrs",
            "--cluster-cidr=10.244.0.0/16",
            "--node-monitor-period=1s",
            "--leader-elect-identity=rbac-test",
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).expect("log file"))
        .kill_on_drop(true)
        .spawn()
        .expect("start the binary");
    eventually(
        Duration::from_secs(60),
        "/healthz to answer 200",
        async || {
            https_get(health, "/healthz", None)
                .await
                .filter(|(s, _)| *s == 200)
        },
    )
    .await;

    let nodes: Api<Node> = Api::all(admin.clone());
    for (name, cidr) in [("n1", "10.244.1.0/24"), ("n2", "10.244.2.0/24")] {
        nodes
            .create(
                &PostParams::default(),
                &NodeBuilder::new(name)
                    .pod_cidrs(&[cidr])
                    .uninitialized()
                    .build(),
            )
            .await
            .expect("create node");
    }
    nodes
        .create(
            &PostParams::default(),
            &NodeBuilder::new("gone-node")
                .provider_id("fake://gone-node")
                .build(),
        )
        .await
        .expect("create node");

    // cloud-node (nodes patch, nodes/status patch) and route (nodes/status) did their work.
    let ready = eventually(
        Duration::from_secs(60),
        "the nodes to be initialized and routed",
        async || {
            let list = nodes.list(&Default::default()).await.ok()?;
            let mine: Vec<Node> = list
                .items
                .into_iter()
                .filter(|n| n.metadata.name.as_deref() != Some("gone-node"))
                .collect();
            (mine.len() == 2 && mine.iter().all(|n| initialized(n) && route_created(n)))
                .then_some(mine)
        },
    )
    .await;
    // node-lifecycle (nodes delete): the instance is terminated, so the Node goes.
    eventually(
        Duration::from_secs(60),
        "gone-node to be deleted",
        async || matches!(nodes.get_opt("gone-node").await, Ok(None)).then_some(()),
    )
    .await;

    // service (services patch for the finalizer, services/status), and the load balancer carries traffic.
    let node_port = 30080u16;
    let mut backends = Vec::new();
    for n in &ready {
        let ip = internal_ip(n).expect("address");
        let name = n.metadata.name.clone().unwrap_or_default();
        backends.push(backend(SocketAddr::new(ip, node_port), name).await);
    }
    let lb_ip = IpAddr::V4(Ipv4Addr::new(lb_net[0], lb_net[1], lb_net[2], 1));
    let lb_port = free_port(lb_ip).await;
    let services: Api<Service> = Api::namespaced(admin.clone(), "default");
    let svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "web" },
        "spec": { "type": "LoadBalancer", "ports": [{ "port": lb_port, "nodePort": node_port }] },
    }))
    .expect("service");
    services
        .create(&PostParams::default(), &svc)
        .await
        .expect("create service");
    let address = eventually(
        Duration::from_secs(60),
        "the Service to have an address and the finalizer",
        async || {
            let s = services.get("web").await.ok()?;
            let finalized = s.metadata.finalizers.as_ref().is_some_and(|f| {
                f.iter()
                    .any(|f| f == "service.kubernetes.io/load-balancer-cleanup")
            });
            let ip = s.status?.load_balancer?.ingress?.first()?.ip.clone()?;
            finalized.then_some(ip)
        },
    )
    .await;
    assert_eq!(address, lb_ip.to_string());
    let answer = eventually(
        Duration::from_secs(30),
        "the load balancer to forward to a node",
        async || {
            let mut conn = TcpStream::connect((lb_ip, lb_port)).await.ok()?;
            let mut text = String::new();
            conn.read_to_string(&mut text).await.ok()?;
            (!text.is_empty()).then_some(text)
        },
    )
    .await;
    assert!(answer == "n1" || answer == "n2", "{answer}");

    // Events (events.k8s.io create) from the component.
    let events: Api<Event> = Api::namespaced(admin.clone(), "default");
    eventually(
        Duration::from_secs(30),
        "an EnsuredLoadBalancer Event",
        async || {
            let list = events.list(&Default::default()).await.ok()?;
            list.items
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some("EnsuredLoadBalancer")
                        && e.reporting_controller.as_deref() == Some("cloud-controller-manager")
                })
                .then_some(())
        },
    )
    .await;

    // Metrics of every part are served, to a scraper bound to the metrics-reader ClusterRole.
    kubectl(
        &cp,
        &["create", "serviceaccount", "scraper", "-n", "default"],
    )
    .await;
    kubectl(
        &cp,
        &[
            "create",
            "clusterrolebinding",
            "scraper-metrics",
            "--clusterrole=cloud-controller-manager-metrics-reader",
            "--serviceaccount=default:scraper",
        ],
    )
    .await;
    let token = common::service_account_token(&cp, "default", "scraper").await;
    let (status, metrics) = https_get(health, "/metrics", Some(&token))
        .await
        .expect("/metrics");
    assert_eq!(status, 200);
    for name in [
        "service_controller_loadbalancer_sync_total",
        "node_controller_cloud_provider_taint_removal_delay_seconds",
        "leader_election_master_status",
        "cloud_controller_events_dropped_total 0",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}");
    }

    // Deleting the Service releases the load balancer and the finalizer (services patch).
    services
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete service");
    eventually(
        Duration::from_secs(60),
        "the Service to be gone",
        async || matches!(services.get_opt("web").await, Ok(None)).then_some(()),
    )
    .await;

    // The Lease is held by this identity, and released on SIGTERM (leases get/update).
    let leases: Api<Lease> = Api::namespaced(admin.clone(), "kube-system");
    let holder = |l: Lease| l.spec.and_then(|s| s.holder_identity).unwrap_or_default();
    let held = holder(leases.get("cloud-controller-manager").await.expect("lease"));
    assert_eq!(held, "rbac-test");
    let pid = ccm.id().expect("pid");
    // SAFETY: kill(2) with a valid signal on the pid of our own child.
    let rc = unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let status = tokio::time::timeout(Duration::from_secs(30), ccm.wait())
        .await
        .expect("exits after SIGTERM")
        .expect("wait");
    assert!(status.success(), "exit status {status}");
    let released = holder(leases.get("cloud-controller-manager").await.expect("lease"));
    assert_eq!(released, "", "the Lease should be released on shutdown");

    let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "the ServiceAccount lacked a permission:\n{log}"
    );
    drop(backends);
}
