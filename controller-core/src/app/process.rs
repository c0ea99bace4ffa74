//! Process plumbing: logging, the default Lease identity, signals.

/// Logs text lines to stderr; `RUST_LOG` overrides the default filter (`info`, kube's internals at `warn`).
pub fn init_tracing() {
    init_logging(false);
}

/// Logs to stderr as text lines or, with `json`, one JSON object per line (fields and span context included).
/// `RUST_LOG` overrides the default filter (`info`, kube's internals at `warn`).
pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // `kube=warn` would also match `kube_cloud_examples` (directives are target prefixes): keep ours at info.
        // A subscriber already installed (by a test, or the binary itself) is left as it is.
        .unwrap_or_else(|_| "info,kube=warn,controller_core=info,kube_cloud_examples=info".into());
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter);
    if json {
        let _ = builder.json().with_current_span(true).try_init();
    } else {
        let _ = builder.try_init();
    }
}

/// A default candidate identity: `<hostname>_<pid>`, like client-go users commonly build.
pub fn default_identity() -> String {
    format!(
        "{}_{}",
        gethostname::gethostname().to_string_lossy(),
        std::process::id()
    )
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = term => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
