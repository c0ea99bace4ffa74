//! The app's one error type.

use cloudprovider_api::{BoxError, CloudError, RegistryError};

/// Why a controller-manager binary could not start or stopped with a failure. Every variant names what to fix:
/// the flag, the file, the provider or the controller. The bundled binaries print it and exit 1, as upstream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// A flag has an invalid value.
    #[error("{flag}: {message}")]
    Flag {
        /// The flag, e.g. `--kube-api-qps`.
        flag: &'static str,
        /// What is wrong with the value.
        message: String,
    },
    /// `--cloud-provider` or `--cloud-config` could not be used.
    #[error(transparent)]
    Provider(#[from] RegistryError),
    /// The provider's `initialize` failed.
    #[error("cannot initialize cloud provider {provider:?}: {source}")]
    Initialize {
        /// The provider.
        provider: String,
        /// Its error.
        #[source]
        source: CloudError,
    },
    /// The Kubernetes client could not be configured (`--kubeconfig`, `--master`, in-cluster config).
    #[error("{context}: {source}")]
    Client {
        /// What was being done, naming the flag.
        context: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// A startup step that talks to the cluster failed (e.g. installing a CRD).
    #[error("{context}: {source}")]
    Kube {
        /// What was being done.
        context: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Serving `/healthz`, `/readyz` and `/metrics` failed (e.g. the port is taken).
    #[error("{context}: {source}")]
    Serve {
        /// The flags and address.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The process could not start its runtime or print its output.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Leadership was lost; upstream exits here so the pod restarts and contends again.
    #[error("leaderelection lost")]
    LeadershipLost,
    /// A controller failed; every controller was stopped.
    #[error("controller {controller:?} failed: {error}")]
    ControllerFailed {
        /// The controller.
        controller: &'static str,
        /// Its error.
        error: String,
    },
}

impl AppError {
    /// An invalid value of `flag`.
    pub fn flag(flag: &'static str, message: impl Into<String>) -> Self {
        Self::Flag {
            flag,
            message: message.into(),
        }
    }
}
