//! Counting AWS API calls: an SDK interceptor every client of the provider carries. It also feeds upstream's
//! Prometheus metrics, `cloudprovider_aws_api_request_duration_seconds{request}` (latency of calls that succeeded,
//! retries included) and `cloudprovider_aws_api_request_errors{request}` (calls that failed after the SDK's
//! retries) and `cloudprovider_aws_api_throttled_requests_total{operation_name}` (attempts AWS answered with a
//! throttling error, retried or not), registered by
//! [`CloudProvider::register_metrics`](cloudprovider_api::CloudProvider::register_metrics).
//! `request` and `operation_name` are the AWS operation (`DescribeInstances`, `RegisterTargets`, …).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};

/// The `request` label of upstream's AWS API metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabel {
    /// The AWS operation, e.g. `DescribeInstances`.
    pub request: String,
}

/// The `operation_name` label of upstream's throttling metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabel {
    /// The AWS operation, e.g. `DescribeInstances`.
    pub operation_name: String,
}

/// A counter exposed without the `_total` suffix, as upstream's `cloudprovider_aws_api_request_errors` is (an
/// OpenMetrics counter always gets `_total`; an untyped sample keeps the name dashboards query).
#[derive(Clone, Debug, Default)]
pub struct UntypedCounter(Counter);

impl UntypedCounter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.inc();
    }

    /// The current count.
    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

impl TypedMetric for UntypedCounter {
    const TYPE: MetricType = MetricType::Unknown;
}

impl EncodeMetric for UntypedCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        encoder.encode_gauge(&self.0.get())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Unknown
    }
}

/// provider-aws's Prometheus metrics, under upstream's names. Cheap to clone: clones share the families.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AwsApiMetrics {
    /// `cloudprovider_aws_api_request_duration_seconds{request}`: latency of AWS API calls that succeeded.
    pub duration: Family<RequestLabel, Histogram>,
    /// `cloudprovider_aws_api_request_errors{request}`: AWS API calls that failed.
    pub errors: Family<RequestLabel, UntypedCounter>,
    /// `cloudprovider_aws_api_throttled_requests_total{operation_name}`: attempts AWS throttled.
    pub throttled: Family<OperationLabel, Counter>,
}

impl Default for AwsApiMetrics {
    /// Unregistered metrics.
    fn default() -> Self {
        Self {
            // Prometheus' default buckets, which upstream's histogram uses.
            duration: Family::new_with_constructor(|| {
                Histogram::new([
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
            }),
            errors: Family::default(),
            throttled: Family::default(),
        }
    }
}

impl AwsApiMetrics {
    /// Registers the families (clones sharing these) on `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "cloudprovider_aws_api_request_duration_seconds",
            "Latency of AWS API calls",
            self.duration.clone(),
        );
        registry.register(
            "cloudprovider_aws_api_request_errors",
            "AWS API errors",
            self.errors.clone(),
        );
        // prometheus-client appends `_total` to counters.
        registry.register(
            "cloudprovider_aws_api_throttled_requests",
            "AWS API throttled requests",
            self.throttled.clone(),
        );
    }

    fn record_throttled(&self, operation: &str) {
        self.throttled
            .get_or_create(&OperationLabel {
                operation_name: operation.to_owned(),
            })
            .inc();
    }

    fn record(&self, operation: &str, seconds: f64, failed: bool) {
        let label = RequestLabel {
            request: operation.to_owned(),
        };
        if failed {
            self.errors.get_or_create(&label).inc();
        } else {
            self.duration.get_or_create(&label).observe(seconds);
        }
    }
}

/// When the SDK started an operation (kept in the operation's config bag between interceptor hooks).
#[derive(Clone, Copy, Debug)]
struct ExecutionStarted(Instant);

impl Storable for ExecutionStarted {
    type Storer = StoreReplace<Self>;
}

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
    metrics: AwsApiMetrics,
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

    /// The Prometheus metrics this counter feeds.
    pub fn metrics(&self) -> &AwsApiMetrics {
        &self.metrics
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

/// True when an answer is one of AWS's throttling errors. EC2 (`RequestLimitExceeded`, HTTP 503) and ELB
/// (`Throttling`, HTTP 400) name the code in an XML `<Code>` element of the error body, which the SDK has read
/// into memory by the time an attempt ends; successful answers are not looked into.
fn is_throttling_answer(response: &aws_smithy_runtime_api::http::Response) -> bool {
    let status = response.status().as_u16();
    if !(400..600).contains(&status) {
        return false;
    }
    let Some(body) = response.body().bytes() else {
        return false;
    };
    let body = String::from_utf8_lossy(body);
    crate::error::THROTTLING_CODES
        .iter()
        .any(|code| body.contains(&format!("<Code>{code}</Code>")))
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

    fn read_before_execution(
        &self,
        _context: &aws_smithy_runtime_api::client::interceptors::context::BeforeSerializationInterceptorContextRef<'_>,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        cfg.interceptor_state()
            .store_put(ExecutionStarted(Instant::now()));
        Ok(())
    }

    fn read_after_execution(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(ExecutionStarted(started)) = cfg.load::<ExecutionStarted>().copied() else {
            return Ok(());
        };
        let (_, op) = operation(cfg);
        let failed = !matches!(context.output_or_error(), Some(Ok(_)));
        self.metrics
            .record(&op, started.elapsed().as_secs_f64(), failed);
        Ok(())
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
        let (service, operation) = operation(cfg);
        if context.response().is_some_and(is_throttling_answer) {
            self.metrics.record_throttled(&operation);
        }
        if let Some(observer) = &self.observer {
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
