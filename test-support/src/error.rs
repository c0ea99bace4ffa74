use std::path::PathBuf;
use std::time::Duration;

/// What can go wrong while starting or using the test components.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The tool binaries could not be found or built.
    #[error("test tools are not available: {0}")]
    Tools(String),
    /// A file or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A helper command (openssl, a script) failed.
    #[error("`{command}` failed: {detail}")]
    Command {
        /// The command line.
        command: String,
        /// Exit status and output.
        detail: String,
    },
    /// A component exited before it became ready.
    #[error("{component} exited before it was ready ({status}); log {log}:\n{log_tail}")]
    Exited {
        /// Which component.
        component: String,
        /// Its exit status.
        status: String,
        /// Its log file (removed with the temporary directory unless `TEST_SUPPORT_KEEP_DIR` is set).
        log: PathBuf,
        /// The last lines of its log.
        log_tail: String,
    },
    /// A component did not become ready in time.
    #[error(
        "{component} was not ready after {waited:?} (last check: {last_error}); log {log}:\n{log_tail}"
    )]
    Timeout {
        /// Which component.
        component: String,
        /// How long was waited.
        waited: Duration,
        /// The last readiness check's failure.
        last_error: String,
        /// Its log file (removed with the temporary directory unless `TEST_SUPPORT_KEEP_DIR` is set).
        log: PathBuf,
        /// The last lines of its log.
        log_tail: String,
    },
    /// The kubeconfig could not be loaded.
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    /// A Kubernetes API call failed.
    #[error("kube: {0}")]
    Kube(#[from] kube::Error),
    /// An HTTP request could not be built.
    #[error("http: {0}")]
    Http(#[from] http::Error),
    /// moto answered a request with an error.
    #[error("moto: {0}")]
    Moto(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result with this crate's [`Error`].
pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;
