use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::error::{Error, Result};
use crate::net::{free_port, http, http_with};
use crate::process::{Proc, owned_temp_dir, tail};
use crate::tools::run_script;

/// moto's AWS emulator (`moto_server`) on a free loopback port. Dropping it stops the server.
///
/// The Python venv is created once (`scripts/moto-server`, cached outside the repository).
#[derive(Debug)]
pub struct Moto {
    // Field order: the process stops before its log directory is removed.
    proc: Proc,
    _dir: TempDir,
    port: u16,
    endpoint: String,
}

impl Moto {
    /// Creates the venv if needed, starts `moto_server` and waits until it answers.
    pub async fn start() -> Result<Moto> {
        let moto_server = match tokio::task::spawn_blocking(moto_server_path).await {
            Ok(r) => r?,
            Err(e) => return Err(Error::Moto(format!("venv lookup panicked: {e}"))),
        };
        let mut attempt = 1;
        loop {
            match Self::start_once(&moto_server).await {
                Ok(moto) => return Ok(moto),
                Err((_, true)) if attempt < 3 => attempt += 1,
                Err((error, _)) => return Err(error),
            }
        }
    }

    /// On failure also tells whether the port was taken meanwhile.
    async fn start_once(moto_server: &std::path::Path) -> Result<Moto, (Error, bool)> {
        let dir = owned_temp_dir("kube-cloud-rs-moto-").map_err(|e| (e, false))?;
        let log = dir.path().join("moto.log");
        let port = free_port().map_err(|e| (e, false))?;
        let mut cmd = Command::new(moto_server);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        let mut proc = Proc::spawn("moto_server", cmd, &log).map_err(|e| (e, false))?;
        let started = Instant::now();
        loop {
            if let Some(status) = proc.exit_status() {
                let conflict = std::fs::read_to_string(&log)
                    .is_ok_and(|s| s.contains("Address already in use"));
                return Err((proc.exited_error(status), conflict));
            }
            match http(port, "GET", "/moto-api/data.json").await {
                Ok(_) => break,
                Err(e) if started.elapsed() > Duration::from_secs(60) => {
                    let error = Error::Timeout {
                        component: "moto_server".into(),
                        waited: started.elapsed(),
                        last_error: e.to_string(),
                        log_tail: tail(&log),
                        log,
                    };
                    return Err((error, false));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        Ok(Moto {
            proc,
            _dir: dir,
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
        })
    }

    /// The endpoint URL for an AWS SDK endpoint override, `http://127.0.0.1:<port>`.
    pub fn endpoint_url(&self) -> &str {
        &self.endpoint
    }

    /// The port moto listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Requests an ACM certificate for `domain` in `region` and returns its ARN (for TLS listeners; the AWS SDK
    /// for ACM is not a dependency, so this speaks ACM's JSON protocol directly — moto does not check signatures).
    pub async fn request_certificate(&self, region: &str, domain: &str) -> Result<String> {
        let authorization = format!(
            "AWS4-HMAC-SHA256 Credential=test/20260101/{region}/acm/aws4_request, SignedHeaders=host, Signature=0"
        );
        let body = format!("{{\"DomainName\":\"{domain}\"}}");
        let headers = [
            ("X-Amz-Target", "CertificateManager.RequestCertificate"),
            ("Content-Type", "application/x-amz-json-1.1"),
            ("Authorization", authorization.as_str()),
        ];
        let (status, answer) = http_with(self.port, "POST", "/", &headers, &body)
            .await
            .map_err(|e| Error::Moto(format!("RequestCertificate failed: {e}")))?;
        // {"CertificateArn": "arn:aws:acm:…"}: an ARN has no quotes or escapes.
        let arn = answer
            .split_once("\"CertificateArn\"")
            .and_then(|(_, rest)| rest.split('"').nth(1))
            .filter(|arn| arn.starts_with("arn:"))
            .map(str::to_owned);
        match (status, arn) {
            (200, Some(arn)) => Ok(arn),
            _ => Err(Error::Moto(format!(
                "RequestCertificate answered {status}: {answer:.300}"
            ))),
        }
    }

    /// Forgets every resource (`POST /moto-api/reset`).
    pub async fn reset(&self) -> Result<()> {
        match http(self.port, "POST", "/moto-api/reset").await {
            Ok((200, _)) => Ok(()),
            Ok((status, body)) => Err(Error::Moto(format!("reset answered {status}: {body}"))),
            Err(e) => Err(Error::Moto(format!(
                "reset failed: {e}; log:\n{}",
                tail(self.proc.log())
            ))),
        }
    }
}

/// `moto_server` of the cached venv, looked up once per process.
fn moto_server_path() -> Result<PathBuf> {
    static PATH: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PATH.get_or_init(|| {
        let python = PathBuf::from(run_script("moto-server", &[]).map_err(|e| e.to_string())?);
        let server = python.with_file_name("moto_server");
        if server.is_file() {
            Ok(server)
        } else {
            Err(format!("{} is missing", server.display()))
        }
    })
    .clone()
    .map_err(Error::Moto)
}
