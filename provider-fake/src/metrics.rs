//! Prometheus metrics of the fake cloud's API, shaped like provider-aws's upstream ones so a dashboard for a real
//! provider can be tried against the fake: `cloudprovider_fake_api_request_duration_seconds{request}` (every call,
//! injected latency included) and `cloudprovider_fake_api_request_errors_total{request}` (calls that failed,
//! injected faults and throttling included). `request` is the [`Method`](crate::Method) name
//! (`instance_metadata`, `ensure_load_balancer`, …).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::Method;

/// The `request` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabel {
    request: &'static str,
}

/// The fake cloud's API metrics; registered by `CloudProvider::register_metrics`.
#[derive(Clone, Debug)]
pub(crate) struct FakeApiMetrics {
    duration: Family<RequestLabel, Histogram>,
    errors: Family<RequestLabel, Counter>,
}

impl Default for FakeApiMetrics {
    fn default() -> Self {
        Self {
            duration: Family::new_with_constructor(|| {
                Histogram::new([
                    0.0001, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
            }),
            errors: Family::default(),
        }
    }
}

impl FakeApiMetrics {
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "cloudprovider_fake_api_request_duration_seconds",
            "Latency of fake cloud API calls",
            self.duration.clone(),
        );
        registry.register(
            "cloudprovider_fake_api_request_errors",
            "Fake cloud API calls that failed",
            self.errors.clone(),
        );
    }

    pub(crate) fn record(&self, method: Method, seconds: f64, failed: bool) {
        let label = RequestLabel {
            request: method.as_str(),
        };
        self.duration.get_or_create(&label).observe(seconds);
        if failed {
            self.errors.get_or_create(&label).inc();
        }
    }
}
