//! One error type for every reconciler, classified for the retry policy.

use std::time::Duration;

use cloudprovider_api::CloudError;

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReconcileError {
    /// A provider call failed.
    #[error("{op}: {source}")]
    Cloud {
        /// The operation, e.g. `"EnsureLoadBalancer"`.
        op: &'static str,
        /// The provider's error.
        #[source]
        source: CloudError,
    },
    /// A Kubernetes API call failed.
    #[error("{op}: {source}")]
    Kube {
        /// The operation, e.g. `"patch Node"`.
        op: &'static str,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// The object itself is invalid (e.g. an unparsable annotation): the user must change it.
    #[error("invalid {field}: {message}")]
    Invalid {
        /// The field or annotation at fault.
        field: String,
        /// What is wrong and what would be valid.
        message: String,
    },
}

/// How the retry policy treats an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Retry no earlier than this.
    Throttled(Duration),
    /// Retry with exponential backoff.
    Transient,
    /// Do not retry until the object changes (a Warning Event tells the user).
    InvalidInput,
    /// Do not retry until the object changes (not implemented, implemented elsewhere).
    Permanent,
}

impl ReconcileError {
    /// Wraps a provider error.
    pub fn cloud(op: &'static str, source: CloudError) -> Self {
        Self::Cloud { op, source }
    }

    /// Wraps a Kubernetes API error.
    pub fn kube(op: &'static str, source: kube::Error) -> Self {
        Self::Kube { op, source }
    }

    /// An invalid field of the object.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The retry class.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Cloud { source, .. } => match source {
                CloudError::Throttled { retry_after, .. } => ErrorClass::Throttled(*retry_after),
                CloudError::InvalidInput { .. } => ErrorClass::InvalidInput,
                CloudError::NotImplemented(_) | CloudError::ImplementedElsewhere(_) => {
                    ErrorClass::Permanent
                }
                _ => ErrorClass::Transient,
            },
            Self::Kube { source, .. } => match source {
                kube::Error::Api(status) if status.code == 429 => ErrorClass::Throttled(
                    status
                        .details
                        .as_ref()
                        .map(|d| Duration::from_secs(u64::from(d.retry_after_seconds.max(1))))
                        .unwrap_or(Duration::from_secs(1)),
                ),
                _ => ErrorClass::Transient,
            },
            Self::Invalid { .. } => ErrorClass::InvalidInput,
        }
    }

    /// A short label for metrics: `throttled`, `transient`, `invalid_input`, `permanent`.
    pub fn class_label(&self) -> &'static str {
        match self.class() {
            ErrorClass::Throttled(_) => "throttled",
            ErrorClass::Transient => "transient",
            ErrorClass::InvalidInput => "invalid_input",
            ErrorClass::Permanent => "permanent",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        let t = ReconcileError::cloud(
            "Ensure",
            CloudError::throttled(Duration::from_secs(7), "slow"),
        );
        assert_eq!(t.class(), ErrorClass::Throttled(Duration::from_secs(7)));
        let i = ReconcileError::cloud("Ensure", CloudError::invalid_input("a/b", "bad"));
        assert_eq!(i.class(), ErrorClass::InvalidInput);
        assert_eq!(
            ReconcileError::cloud("Ensure", CloudError::transient("x")).class(),
            ErrorClass::Transient
        );
        assert_eq!(
            ReconcileError::cloud("Ensure", CloudError::ImplementedElsewhere("lb".into())).class(),
            ErrorClass::Permanent
        );
        assert_eq!(
            ReconcileError::invalid("f", "m").class(),
            ErrorClass::InvalidInput
        );
        assert_eq!(i.to_string(), "Ensure: invalid a/b: bad");
    }
}
