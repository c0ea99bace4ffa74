//! An HTTPS client for the binaries' secure port: trusts any server certificate (the test compares the served
//! certificate itself), sends an optional bearer token and client certificate.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug)]
struct AnyServer(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// A client certificate chain and its key (PEM).
pub struct ClientCert {
    pub cert_pem: String,
    pub key_pem: String,
}

/// What a GET over HTTPS answered.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    /// The leaf certificate the server presented (DER).
    pub served_cert: Vec<u8>,
}

/// GET `path` over HTTPS (HTTP/1.0), with `token` as bearer token and `client` as client certificate.
pub async fn https_get(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    client: Option<&ClientCert>,
) -> Option<Answer> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .ok()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(
            provider.signature_verification_algorithms,
        )));
    let config = match client {
        None => builder.with_no_client_auth(),
        Some(c) => {
            use rustls::pki_types::pem::PemObject;
            let chain = CertificateDer::pem_slice_iter(c.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .ok()?;
            let key = PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).ok()?;
            builder.with_client_auth_cert(chain, key).ok()?
        }
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.ok()?;
    let name = ServerName::try_from("localhost").ok()?;
    let mut tls = connector.connect(name, tcp).await.ok()?;
    let served_cert = tls.get_ref().1.peer_certificates()?.first()?.to_vec();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    tls.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n{auth}\r\n").as_bytes())
        .await
        .ok()?;
    let mut bytes = Vec::new();
    // A peer closing without close_notify still leaves the whole response read.
    let _ = tls.read_to_end(&mut bytes).await;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some(Answer {
        status,
        body,
        served_cert,
    })
}

/// A token of ServiceAccount `namespace/name` (TokenRequest through kubectl).
pub async fn service_account_token(
    cp: &test_support::ControlPlane,
    namespace: &str,
    name: &str,
) -> String {
    let out = cp
        .kubectl()
        .args(["create", "token", name, "-n", namespace, "--duration=1h"])
        .output()
        .await
        .expect("kubectl create token");
    assert!(
        out.status.success(),
        "kubectl create token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
