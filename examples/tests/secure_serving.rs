//! The cloud-controller-manager's secure port on a real apiserver: HTTPS with the certificate of
//! `--tls-cert-file` (re-read when rotated on disk), bearer tokens checked with TokenReviews, client certificates
//! against `--client-ca-file`, `/metrics` authorized with SubjectAccessReviews (200 with the metrics-reader
//! ClusterRole, 403 without, 401 with no credentials), `/healthz` open to anyone.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{Answer, ClientCert, https_get, service_account_token};
use test_support::{ControlPlane, eventually};

const BIN: &str = env!("CARGO_BIN_EXE_cloud-controller-manager");

async fn kubectl(cp: &ControlPlane, args: &[&str]) {
    let out = cp.kubectl().args(args).output().await.expect("kubectl");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a client certificate it signed for `cn` in group `o`: (CA PEM, client certificate).
fn client_ca_and_cert(cn: &str, o: &str) -> (String, ClientCert) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "test client CA");
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, o);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, &ca, &ca_key).expect("client cert");
    (
        ca.pem(),
        ClientCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        },
    )
}

fn write_serving_cert(dir: &Path) -> Vec<u8> {
    let (cert, key) = controller_core::app::self_signed().expect("self-signed");
    std::fs::write(dir.join("serving.key"), key).expect("write key");
    std::fs::write(dir.join("serving.crt"), &cert).expect("write cert");
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(cert.as_bytes())
        .expect("PEM")
        .to_vec()
}

async fn free_port() -> u16 {
    let l = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    l.local_addr().expect("addr").port()
}

/// `deploy/rbac.yaml` applied, and tokens of two ServiceAccounts: `scraper`, bound to the metrics-reader ClusterRole
/// (with the group `metrics-readers`, which client certificates use), and `nobody`, bound to nothing.
async fn scraper_and_nobody(cp: &ControlPlane) -> (String, String) {
    let rbac = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/rbac.yaml");
    kubectl(
        cp,
        &["apply", "--server-side", "-f", &rbac.display().to_string()],
    )
    .await;
    for sa in ["scraper", "nobody"] {
        kubectl(cp, &["create", "serviceaccount", sa, "-n", "default"]).await;
    }
    kubectl(
        cp,
        &[
            "create",
            "clusterrolebinding",
            "scraper-metrics",
            "--clusterrole=cloud-controller-manager-metrics-reader",
            "--serviceaccount=default:scraper",
            "--group=metrics-readers",
        ],
    )
    .await;
    let scraper = service_account_token(cp, "default", "scraper").await;
    let nobody = service_account_token(cp, "default", "nobody").await;
    (scraper, nobody)
}

#[tokio::test]
async fn metrics_need_an_authorized_identity_and_rotated_certificates_are_served() {
    let cp = ControlPlane::start().await.expect("control plane");
    let dir = tempfile::tempdir().expect("tempdir");
    let (scraper, nobody) = scraper_and_nobody(&cp).await;
    let (ca_pem, cert_reader) = client_ca_and_cert("cert-scraper", "metrics-readers");
    std::fs::write(dir.path().join("client-ca.crt"), ca_pem).expect("write CA");
    let first = write_serving_cert(dir.path());

    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), free_port().await);
    let p = |f: &str| dir.path().join(f).display().to_string();
    let _ccm = tokio::process::Command::new(BIN)
        .args([
            "--cloud-provider=fake",
            &format!("--kubeconfig={}", cp.kubeconfig_path().display()),
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            &format!("--secure-port={}", addr.port()),
            &format!("--tls-cert-file={}", p("serving.crt")),
            &format!("--tls-private-key-file={}", p("serving.key")),
            &format!("--client-ca-file={}", p("client-ca.crt")),
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("ccm.log")).expect("log file"))
        .kill_on_drop(true)
        .spawn()
        .expect("start the binary");

    // /healthz is always allowed, and the certificate of --tls-cert-file is served.
    let healthz = eventually(
        Duration::from_secs(60),
        "/healthz to answer 200 over HTTPS",
        async || {
            https_get(addr, "/healthz", None, None)
                .await
                .filter(|a| a.status == 200)
        },
    )
    .await;
    assert_eq!(healthz.served_cert, first);

    let get = async |token: Option<&str>, cert: Option<&ClientCert>| -> Answer {
        https_get(addr, "/metrics", token, cert)
            .await
            .expect("/metrics answers")
    };
    let allowed = get(Some(&scraper), None).await;
    assert_eq!(allowed.status, 200, "{}", allowed.body);
    assert!(allowed.body.contains("leader_election") || allowed.body.contains("# EOF"));
    // Cached decisions answer the same.
    assert_eq!(get(Some(&scraper), None).await.status, 200);
    let forbidden = get(Some(&nobody), None).await;
    assert_eq!(forbidden.status, 403, "{}", forbidden.body);
    assert!(
        forbidden
            .body
            .contains("system:serviceaccount:default:nobody")
    );
    assert_eq!(get(None, None).await.status, 401);
    assert_eq!(get(Some("not-a-token"), None).await.status, 401);
    // A client certificate of the CA: CN is the user, O the group the ClusterRole is bound to.
    let by_cert = get(None, Some(&cert_reader)).await;
    assert_eq!(by_cert.status, 200, "{}", by_cert.body);

    // A certificate rotated on disk is served without a restart.
    let second = write_serving_cert(dir.path());
    assert_ne!(first, second);
    eventually(
        Duration::from_secs(20),
        "the rotated certificate to be served",
        async || {
            https_get(addr, "/healthz", None, None)
                .await
                .filter(|a| a.status == 200 && a.served_cert == second)
        },
    )
    .await;
}

/// `virtual-node` serves the same way: HTTPS on `--secure-port` with a self-signed certificate from `--cert-dir`,
/// `/healthz` open, `/metrics` 401 without credentials, 403 for an identity not allowed, 200 with the reader role.
#[tokio::test]
async fn virtual_node_serves_https_with_delegated_authentication_and_authorization() {
    let cp = ControlPlane::start().await.expect("control plane");
    let dir = tempfile::tempdir().expect("tempdir");
    let (scraper, nobody) = scraper_and_nobody(&cp).await;
    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), free_port().await);
    let _node = tokio::process::Command::new(env!("CARGO_BIN_EXE_virtual-node"))
        .args([
            &format!("--kubeconfig={}", cp.kubeconfig_path().display()),
            "--cloud-provider=fake",
            "--nodename=vn-https",
            "--bind-address=127.0.0.1",
            &format!("--secure-port={}", addr.port()),
            &format!("--cert-dir={}", dir.path().display()),
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("vn.log")).expect("log file"))
        .kill_on_drop(true)
        .spawn()
        .expect("start the binary");
    eventually(
        Duration::from_secs(60),
        "virtual-node's /healthz to answer 200 over HTTPS",
        async || {
            https_get(addr, "/healthz", None, None)
                .await
                .filter(|a| a.status == 200)
        },
    )
    .await;
    assert!(
        dir.path().join("virtual-node.crt").exists(),
        "self-signed certificate in --cert-dir"
    );
    let status = async |token: Option<&str>| {
        https_get(addr, "/metrics", token, None)
            .await
            .map(|a| a.status)
    };
    assert_eq!(status(None).await, Some(401));
    assert_eq!(status(Some(&nobody)).await, Some(403));
    let allowed = https_get(addr, "/metrics", Some(&scraper), None)
        .await
        .expect("/metrics answers");
    assert_eq!(allowed.status, 200, "{}", allowed.body);
    assert!(allowed.body.contains("node_heartbeat"), "{}", allowed.body);
}
