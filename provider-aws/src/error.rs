//! The crate's error type and the mapping of AWS API errors to [`CloudError`].

use std::time::Duration;

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use cloudprovider_api::{BoxError, CloudError};

/// Error codes AWS answers when a caller exceeds its request rate.
pub const THROTTLING_CODES: [&str; 6] = [
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "TooManyRequestsException",
    "RequestThrottled",
    "RequestThrottledException",
];

/// What went wrong in the AWS provider.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AwsError {
    /// A configuration value is invalid; `field` is its camelCase path.
    #[error("invalid provider-aws config field `{field}`: {message}")]
    Config {
        /// The field, e.g. `clusterId`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// An AWS API call failed.
    #[error("AWS {operation} failed: {code}: {message}")]
    Api {
        /// The API operation, e.g. `DescribeInstances`.
        operation: &'static str,
        /// The AWS error code (`RequestLimitExceeded`, …), or the kind of failure when there is none
        /// (`dispatch`, `timeout`, …).
        code: String,
        /// The message.
        message: String,
        /// True when AWS throttled the call.
        throttled: bool,
        /// The SDK error.
        #[source]
        source: Option<BoxError>,
    },
    /// AWS answered something the provider cannot use (e.g. a created resource without an ARN).
    #[error("unexpected answer from AWS {operation}: {message}")]
    Unexpected {
        /// The API operation.
        operation: &'static str,
        /// What was missing or wrong.
        message: String,
    },
}

impl AwsError {
    pub(crate) fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Config {
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn unexpected(operation: &'static str, message: impl Into<String>) -> Self {
        Self::Unexpected {
            operation,
            message: message.into(),
        }
    }

    /// The AWS error code, for API errors.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Converts to the [`CloudError`] a controller acts on; throttling waits `retry_after`.
    pub fn into_cloud_error(self, retry_after: Duration) -> CloudError {
        match self {
            Self::Config { field, message } => CloudError::invalid_input(field, message),
            Self::Api {
                throttled: true,
                operation,
                code,
                message,
                ..
            } => CloudError::throttled(retry_after, format!("{operation}: {code}: {message}")),
            other => {
                let message = other.to_string();
                CloudError::transient_from(message, other)
            }
        }
    }
}

/// True for the error codes of [`THROTTLING_CODES`].
pub fn is_throttling_code(code: &str) -> bool {
    THROTTLING_CODES.contains(&code)
}

/// Classifies an SDK error of `operation`.
pub(crate) fn api_error<E, R>(operation: &'static str, err: SdkError<E, R>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let (code, message) = match &err {
        SdkError::ServiceError(service) => (
            service.err().code().unwrap_or("Unknown").to_owned(),
            service.err().message().unwrap_or_default().to_owned(),
        ),
        SdkError::TimeoutError(_) => ("timeout".to_owned(), err.to_string()),
        SdkError::DispatchFailure(_) => ("dispatch".to_owned(), format!("{err:?}")),
        SdkError::ResponseError(_) => ("response".to_owned(), format!("{err:?}")),
        SdkError::ConstructionFailure(_) => ("construction".to_owned(), format!("{err:?}")),
        _ => ("unknown".to_owned(), format!("{err:?}")),
    };
    AwsError::Api {
        operation,
        throttled: is_throttling_code(&code),
        code,
        message,
        source: Some(Box::new(err)),
    }
}

/// Shorthand for results of AWS calls inside the crate.
pub(crate) type AwsResult<T> = Result<T, AwsError>;
