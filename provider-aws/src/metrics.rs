//! Counting AWS API calls: an SDK interceptor every client of the provider carries.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

/// One AWS API request as the SDK sent it (every attempt counts, retries included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiCall {
    /// The service, e.g. `EC2` or `Elastic Load Balancing v2`.
    pub service: String,
    /// The operation, e.g. `DescribeInstances`.
    pub operation: String,
    /// The HTTP status of the answer; `None` when no answer came (connection error, timeout).
    pub status: Option<u16>,
}

type Observer = dyn Fn(&ApiCall) + Send + Sync;

/// Counts every HTTP request the provider's AWS clients send, per operation, and optionally hands each one to an
/// observer (to feed Prometheus, logs or a budget). Cheap to clone: clones share the counts.
///
/// The provider installs one as an SDK interceptor on all its clients; read it with
/// [`AwsCloud::api_calls`](crate::AwsCloud::api_calls).
///
/// ```
/// use provider_aws::ApiCallCounter;
/// let counter = ApiCallCounter::new().with_observer(|call| {
///     // e.g. metrics.cloudprovider_aws_api_request_total.get_or_create(&labels(call)).inc();
///     let _ = (&call.operation, call.status);
/// });
/// assert_eq!(counter.count("DescribeInstances"), 0);
/// ```
#[derive(Clone, Default)]
pub struct ApiCallCounter {
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
    observer: Option<Arc<Observer>>,
}

impl fmt::Debug for ApiCallCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiCallCounter")
            .field("counts", &self.snapshot())
            .field("observer", &self.observer.is_some())
            .finish()
    }
}

impl ApiCallCounter {
    /// A counter without observer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Calls `observer` after every request with its operation and outcome.
    pub fn with_observer(mut self, observer: impl Fn(&ApiCall) + Send + Sync + 'static) -> Self {
        self.observer = Some(Arc::new(observer));
        self
    }

    /// Requests sent for `operation` (e.g. `"DescribeInstances"`) since creation or the last [`reset`](Self::reset).
    pub fn count(&self, operation: &str) -> u64 {
        self.lock().get(operation).copied().unwrap_or(0)
    }

    /// All requests sent, of every operation.
    pub fn total(&self) -> u64 {
        self.lock().values().sum()
    }

    /// Requests per operation.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.lock().clone()
    }

    /// Forgets the counts.
    pub fn reset(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
        // A panic while holding the lock cannot leave the map inconsistent; keep counting.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn operation(cfg: &ConfigBag) -> (String, String) {
    cfg.load::<Metadata>()
        .map(|m| (m.service().to_owned(), m.name().to_owned()))
        .unwrap_or_else(|| ("unknown".to_owned(), "unknown".to_owned()))
}

impl Intercept for ApiCallCounter {
    fn name(&self) -> &'static str {
        "provider-aws ApiCallCounter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let (_, op) = operation(cfg);
        *self.lock().entry(op).or_insert(0) += 1;
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(observer) = &self.observer {
            let (service, operation) = operation(cfg);
            let status = context.response().map(|r| r.status().as_u16());
            observer(&ApiCall {
                service,
                operation,
                status,
            });
        }
        Ok(())
    }
}
