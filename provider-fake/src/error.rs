//! Errors of the fake's own administration API (adding instances, groups, configuration).

use cloudprovider_api::CloudError;

/// Why a [`FakeCloud`](crate::FakeCloud) administration call or configuration was rejected.
///
/// These are errors of the *test harness* API (e.g. [`FakeCloud::add_instance`](crate::FakeCloud::add_instance));
/// the capability traits always answer with a [`CloudError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FakeError {
    /// A configuration value is invalid. `field` is the camelCase path of the offending field.
    #[error("invalid fake cloud config field `{field}`: {message}")]
    InvalidConfig {
        /// The field, e.g. `nodeGroups[0].maxSize`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// Local load balancers or machine kubelets were asked for outside a Tokio runtime.
    #[error("local load balancers and machine kubelets need a Tokio runtime")]
    NoRuntime,
    /// An instance with this name or provider ID already exists and is not terminated.
    #[error("instance {0:?} already exists")]
    DuplicateInstance(String),
    /// No instance has this name or provider ID.
    #[error("no instance {0:?}")]
    UnknownInstance(String),
    /// A node group with this id already exists.
    #[error("node group {0:?} already exists")]
    DuplicateNodeGroup(String),
    /// No node group has this id.
    #[error("no node group {0:?}")]
    UnknownNodeGroup(String),
    /// No route for this destination exists in the cluster.
    #[error("no route for {cidr} in cluster {cluster:?}")]
    UnknownRoute {
        /// The cluster name.
        cluster: String,
        /// The destination CIDR.
        cidr: String,
    },
}

impl FakeError {
    pub(crate) fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidConfig {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<FakeError> for CloudError {
    fn from(e: FakeError) -> Self {
        match e {
            FakeError::InvalidConfig { field, message } => {
                CloudError::invalid_input(field, message)
            }
            FakeError::UnknownInstance(id) => CloudError::not_found("instance", id),
            FakeError::UnknownNodeGroup(id) => CloudError::not_found("node group", id),
            FakeError::UnknownRoute { cidr, .. } => CloudError::not_found("route", cidr),
            other @ (FakeError::DuplicateInstance(_) | FakeError::DuplicateNodeGroup(_)) => {
                CloudError::invalid_input("name", other.to_string())
            }
            other @ FakeError::NoRuntime => CloudError::transient(other.to_string()),
        }
    }
}
