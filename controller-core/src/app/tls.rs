//! The serving certificate of the secure port (upstream's `--tls-cert-file`, `--tls-private-key-file`,
//! `--cert-dir`, `--client-ca-file`): loaded from files, or self-signed and written to the cert dir, and re-read
//! when the files change on disk, so a rotated certificate is served without a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::AppError;

/// How often the certificate files are checked for a change (at most once per handshake in this period).
const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// Where the serving certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertPaths {
    /// The certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// The private key (PEM).
    pub key: PathBuf,
}

/// Reads `--tls-cert-file`/`--tls-private-key-file` when both are given; otherwise uses (or generates and writes)
/// `<cert_dir>/<component>.crt` and `.key`, as upstream's `MaybeDefaultWithSelfSignedCerts`.
pub fn cert_paths(
    cert_file: Option<&Path>,
    key_file: Option<&Path>,
    cert_dir: &Path,
    component: &str,
) -> Result<CertPaths, AppError> {
    match (cert_file, key_file) {
        (Some(cert), Some(key)) => {
            for (path, flag) in [(cert, "--tls-cert-file"), (key, "--tls-private-key-file")] {
                std::fs::metadata(path).map_err(|e| {
                    AppError::flag(flag, format!("cannot read {}: {e}", path.display()))
                })?;
            }
            Ok(CertPaths {
                cert: cert.to_owned(),
                key: key.to_owned(),
            })
        }
        (Some(_), None) => Err(AppError::flag(
            "--tls-private-key-file",
            "must be given with --tls-cert-file",
        )),
        (None, Some(_)) => Err(AppError::flag(
            "--tls-cert-file",
            "must be given with --tls-private-key-file",
        )),
        (None, None) => {
            let paths = CertPaths {
                cert: cert_dir.join(format!("{component}.crt")),
                key: cert_dir.join(format!("{component}.key")),
            };
            if load_certified_key(&paths).is_ok() && !due_for_renewal(&paths.cert) {
                return Ok(paths);
            }
            write_self_signed(&paths, cert_dir)?;
            tracing::info!(cert = %paths.cert.display(), "generated a self-signed serving certificate");
            Ok(paths)
        }
    }
}

fn write_self_signed(paths: &CertPaths, cert_dir: &Path) -> Result<(), AppError> {
    let dir_error = |e: std::io::Error| {
        AppError::flag(
            "--cert-dir",
            format!("cannot write to {}: {e}", cert_dir.display()),
        )
    };
    let (cert, key) = self_signed().map_err(|e| {
        AppError::flag(
            "--cert-dir",
            format!("cannot generate a self-signed certificate: {e}"),
        )
    })?;
    std::fs::create_dir_all(cert_dir).map_err(dir_error)?;
    write_private(&paths.key, key.as_bytes()).map_err(dir_error)?;
    std::fs::write(&paths.cert, cert).map_err(dir_error)?;
    Ok(())
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

/// How long the self-signed certificates are valid (upstream's: a year, from an hour ago).
const SELF_SIGNED_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// A self-signed pair in `--cert-dir` older than this is replaced at startup, a month before it expires.
const SELF_SIGNED_RENEW_AFTER: Duration = Duration::from_secs(335 * 24 * 60 * 60);

/// Whether the self-signed certificate at `cert` was written long enough ago to be replaced (or its age is unknown).
fn due_for_renewal(cert: &Path) -> bool {
    std::fs::metadata(cert)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|written| written.elapsed().ok())
        .is_none_or(|age| age > SELF_SIGNED_RENEW_AFTER)
}

/// `[now - 1h, now - 1h + 1 year]`, as upstream's self-signed certificates.
fn validity() -> (time::OffsetDateTime, time::OffsetDateTime) {
    let from = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    let until = from
        + time::Duration::seconds(
            i64::try_from(SELF_SIGNED_VALIDITY.as_secs()).unwrap_or(i64::MAX),
        );
    (from, until)
}

/// A self-signed serving certificate as upstream's (`GenerateSelfSignedCertKey`): a CA `<host>-ca@<time>` and a
/// serving certificate `<host>@<time>` it signed, for `localhost`, `127.0.0.1`, `::1` and the hostname, each valid
/// a year from an hour ago. Returns (serving certificate then CA certificate as one PEM bundle, serving key PEM):
/// a client that trusts the CA verifies the serving certificate.
pub fn self_signed() -> Result<(String, String), rcgen::Error> {
    let loopback = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let with_host = (!host.is_empty() && !loopback.contains(&host))
        .then(|| {
            let mut names = loopback.clone();
            names.push(host);
            rcgen::CertificateParams::new(names).ok()
        })
        .flatten();
    // A hostname that is no DNS name: the loopback names only.
    let mut params = match with_host {
        Some(params) => params,
        None => rcgen::CertificateParams::new(loopback)?,
    };
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let (not_before, not_after) = validity();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("localhost-ca@{now}"));
    ca_params.not_before = not_before;
    ca_params.not_after = not_after;
    let ca_key = rcgen::KeyPair::generate()?;
    let ca = ca_params.self_signed(&ca_key)?;

    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("localhost@{now}"));
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = not_before;
    params.not_after = not_after;
    let key = rcgen::KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca, &ca_key)?;
    Ok((format!("{}{}", cert.pem(), ca.pem()), key.serialize_pem()))
}

/// Loads a certificate chain and its key, checking that they belong together.
pub fn load_certified_key(paths: &CertPaths) -> Result<CertifiedKey, String> {
    let certs = CertificateDer::pem_file_iter(&paths.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", paths.cert.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate", paths.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&paths.key)
        .map_err(|e| format!("{}: {e}", paths.key.display()))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("{}: {e}", paths.key.display()))?;
    let certified = CertifiedKey::new(certs, signer);
    certified.keys_match().map_err(|e| {
        format!(
            "{} and {} do not match: {e}",
            paths.cert.display(),
            paths.key.display()
        )
    })?;
    Ok(certified)
}

type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

struct Current {
    key: Arc<CertifiedKey>,
    stamps: (Stamp, Stamp),
    checked: Instant,
}

/// Serves the certificate of [`CertPaths`], re-reading the files when their modification time or size changes
/// (checked at most once a second, on a handshake). A half-written or mismatched pair keeps the previous
/// certificate until the files are whole again.
pub struct ReloadingCert {
    paths: CertPaths,
    current: Mutex<Current>,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

impl ReloadingCert {
    /// Loads the files now: an unreadable or invalid pair is an error naming the file and `flags`.
    pub fn new(paths: CertPaths, flags: &'static str) -> Result<Self, AppError> {
        let stamps = (stamp(&paths.cert), stamp(&paths.key));
        let key = load_certified_key(&paths).map_err(|e| AppError::flag(flags, e))?;
        Ok(Self {
            current: Mutex::new(Current {
                key: Arc::new(key),
                stamps,
                checked: Instant::now(),
            }),
            paths,
        })
    }

    /// The certificate to serve now, re-read first if the files changed.
    pub fn current(&self) -> Arc<CertifiedKey> {
        let mut current = self.current.lock();
        if current.checked.elapsed() >= RELOAD_CHECK {
            current.checked = Instant::now();
            let stamps = (stamp(&self.paths.cert), stamp(&self.paths.key));
            if stamps != current.stamps {
                match load_certified_key(&self.paths) {
                    Ok(key) => {
                        tracing::info!(cert = %self.paths.cert.display(), "serving certificate reloaded");
                        current.key = Arc::new(key);
                        current.stamps = stamps;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "serving certificate changed but cannot be loaded; keeping the previous one");
                    }
                }
            }
        }
        Arc::clone(&current.key)
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The TLS configuration of the secure port: the reloading certificate, and client certificates verified against
/// `client_ca` when given (optional for the client: a request may authenticate with a bearer token instead).
pub fn server_config(
    cert: Arc<ReloadingCert>,
    client_ca: Option<&Path>,
) -> Result<ServerConfig, AppError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| AppError::flag("--tls-cert-file", e.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let ca_error =
                |e: String| AppError::flag("--client-ca-file", format!("{}: {e}", path.display()));
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| ca_error(e.to_string()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(ca_error("no CA certificate".into()));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| ca_error(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(cert);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_is_a_serving_certificate_of_its_own_ca_valid_for_a_year() {
        use rustls::client::danger::ServerCertVerifier;
        let (bundle, _key) = self_signed().unwrap_or_else(|e| panic!("{e}"));
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(bundle.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(certs.len(), 2, "serving certificate, then CA");
        let mut roots = RootCertStore::empty();
        roots
            .add(certs[1].clone())
            .unwrap_or_else(|e| panic!("{e}"));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap_or_else(|e| panic!("{e}"));
        let verify_at = |offset: Duration, forward: bool| {
            let now = SystemTime::now();
            let at = if forward { now + offset } else { now - offset };
            let at = rustls_pki_types::UnixTime::since_unix_epoch(
                at.duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default(),
            );
            verifier.verify_server_cert(
                &certs[0],
                &[],
                &rustls_pki_types::ServerName::try_from("localhost")
                    .unwrap_or_else(|e| panic!("{e}")),
                &[],
                at,
            )
        };
        assert!(verify_at(Duration::ZERO, true).is_ok());
        assert!(verify_at(Duration::from_secs(364 * 24 * 3600), true).is_ok());
        assert!(
            verify_at(Duration::from_secs(366 * 24 * 3600), true).is_err(),
            "expires after a year"
        );
        assert!(
            verify_at(Duration::from_secs(2 * 3600), false).is_err(),
            "not valid before an hour ago"
        );
    }

    #[test]
    fn generates_then_reuses_then_reloads() {
        let dir = tempfile_dir();
        let paths =
            cert_paths(None, None, &dir, "test-component").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(paths.cert, dir.join("test-component.crt"));
        let first = std::fs::read(&paths.cert).unwrap_or_default();
        // Readable files in the cert dir are reused, as upstream.
        let again =
            cert_paths(None, None, &dir, "test-component").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(std::fs::read(&again.cert).unwrap_or_default(), first);

        let reloading =
            ReloadingCert::new(paths.clone(), "--cert-dir").unwrap_or_else(|e| panic!("{e}"));
        let before = reloading.current().cert[0].clone();
        let (cert, key) = self_signed().unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&paths.key, key).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&paths.cert, cert).unwrap_or_else(|e| panic!("{e}"));
        std::thread::sleep(RELOAD_CHECK + Duration::from_millis(100));
        assert_ne!(reloading.current().cert[0], before);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn missing_files_name_the_flag_and_file() {
        let e = cert_paths(
            Some(Path::new("/nonexistent/x.crt")),
            Some(Path::new("/nonexistent/x.key")),
            Path::new("/tmp"),
            "c",
        )
        .map(|_| ())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            e.contains("--tls-cert-file") && e.contains("/nonexistent/x.crt"),
            "{e}"
        );
        let e = cert_paths(Some(Path::new("/x.crt")), None, Path::new("/tmp"), "c")
            .map(|_| ())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("--tls-private-key-file"), "{e}");
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "kube-cloud-rs-tls-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }
}
