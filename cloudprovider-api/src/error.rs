//! The one error type every provider returns.

use std::time::Duration;

/// A boxed error carried as the source of a [`CloudError::Transient`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result of a provider call.
pub type CloudResult<T> = Result<T, CloudError>;

/// What went wrong in a provider call, classified so a controller can choose its retry policy:
///
/// | variant | controller reaction |
/// |---|---|
/// | [`NotFound`](CloudError::NotFound) | the answer itself (e.g. "instance gone"), no retry |
/// | [`NotImplemented`](CloudError::NotImplemented) | skip that feature, no retry |
/// | [`ImplementedElsewhere`](CloudError::ImplementedElsewhere) | another controller owns the object: leave it alone |
/// | [`Throttled`](CloudError::Throttled) | wait `retry_after`, then retry |
/// | [`InvalidInput`](CloudError::InvalidInput) | Warning Event naming the field; retry only when the object changes |
/// | [`Transient`](CloudError::Transient) | exponential backoff |
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CloudError {
    /// The cloud object (instance, load balancer, route, node group) does not exist.
    /// Upstream's `InstanceNotFound`.
    #[error("{kind} not found: {id}")]
    NotFound {
        /// What was looked for, e.g. `"instance"`.
        kind: &'static str,
        /// The identifier used to look it up.
        id: String,
    },
    /// The provider does not implement this operation.
    #[error("not implemented by this provider: {0}")]
    NotImplemented(&'static str),
    /// Another controller owns this object (e.g. a load balancer handled by an external LB controller).
    /// Only ensure/update of load balancers may answer this; deletion never does.
    #[error("implemented elsewhere: {0}")]
    ImplementedElsewhere(String),
    /// The cloud API rejected the call for its rate limit; retry no earlier than `retry_after`.
    #[error("throttled by the cloud API, retry after {retry_after:?}: {message}")]
    Throttled {
        /// How long to wait before the next attempt.
        retry_after: Duration,
        /// What the cloud said.
        message: String,
    },
    /// The request cannot succeed as given: a bad annotation, spec field or configuration value.
    /// `field` names it the way the user wrote it (annotation key, `spec.ports[0].protocol`, config key).
    #[error("invalid {field}: {message}")]
    InvalidInput {
        /// The field, annotation or configuration key at fault.
        field: String,
        /// Why it is invalid and, where possible, what would be valid.
        message: String,
    },
    /// Anything that may succeed when retried: network errors, 5xx answers, eventual consistency.
    #[error("transient cloud error: {message}")]
    Transient {
        /// A short description of the failed operation.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },
}

impl CloudError {
    /// A [`CloudError::NotFound`].
    pub fn not_found(kind: &'static str, id: impl Into<String>) -> Self {
        Self::NotFound {
            kind,
            id: id.into(),
        }
    }

    /// A [`CloudError::InvalidInput`] naming `field`.
    pub fn invalid_input(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidInput {
            field: field.into(),
            message: message.into(),
        }
    }

    /// A [`CloudError::Transient`] without a source.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::Transient {
            message: message.into(),
            source: None,
        }
    }

    /// A [`CloudError::Transient`] wrapping `source`.
    pub fn transient_from(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Transient {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// A [`CloudError::Throttled`].
    pub fn throttled(retry_after: Duration, message: impl Into<String>) -> Self {
        Self::Throttled {
            retry_after,
            message: message.into(),
        }
    }

    /// True for [`CloudError::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    /// True when retrying the same call later may succeed (throttled or transient).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Throttled { .. } | Self::Transient { .. })
    }

    /// The delay the cloud asked for, for [`CloudError::Throttled`].
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Throttled { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// A short stable label for metrics and logs (`not_found`, `throttled`, …).
    pub fn kind_label(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "not_found",
            Self::NotImplemented(_) => "not_implemented",
            Self::ImplementedElsewhere(_) => "implemented_elsewhere",
            Self::Throttled { .. } => "throttled",
            Self::InvalidInput { .. } => "invalid_input",
            Self::Transient { .. } => "transient",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let t = CloudError::throttled(Duration::from_secs(3), "slow down");
        assert!(t.is_retryable());
        assert_eq!(t.retry_after(), Some(Duration::from_secs(3)));
        assert_eq!(t.kind_label(), "throttled");

        let i = CloudError::invalid_input("service.beta.kubernetes.io/x", "must be a number");
        assert!(!i.is_retryable());
        assert_eq!(
            i.to_string(),
            "invalid service.beta.kubernetes.io/x: must be a number"
        );

        let io = std::io::Error::other("connection reset");
        let tr = CloudError::transient_from("DescribeInstances", io);
        assert!(tr.is_retryable());
        assert!(std::error::Error::source(&tr).is_some());

        assert!(CloudError::not_found("instance", "i-1").is_not_found());
        assert!(!CloudError::NotImplemented("routes").is_retryable());
    }
}
