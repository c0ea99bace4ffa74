//! client-go's REST client metrics for the app's Kubernetes client: `rest_client_requests_total{code, method,
//! host}` and `rest_client_request_duration_seconds{verb, host}`, with upstream's names, labels and buckets, so
//! the panels and alerts people have for the Go controller-managers (apiserver error rates, slow requests) work.
//!
//! A tower layer on the client: a request counts when its response headers arrive (a watch when it is opened),
//! with the status code, or `<error>` when no response came. The time a request waited for the client-side rate
//! limit (`--kube-api-qps`) is not part of its duration, as in client-go.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use hyper::{Request, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tower::{Layer, Service};

/// Labels of `rest_client_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestResultLabels {
    /// The HTTP status code, or `<error>` when no response came.
    pub code: String,
    /// The HTTP method (`GET`, `PATCH`, …).
    pub method: String,
    /// The apiserver's `host:port`.
    pub host: String,
}

/// Labels of `rest_client_request_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLatencyLabels {
    /// The HTTP method.
    pub verb: String,
    /// The apiserver's `host:port`.
    pub host: String,
}

/// The REST client metrics. Cheap to clone: clones share the families.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RestClientMetrics {
    /// `rest_client_requests_total{code, method, host}`.
    pub requests: Family<RequestResultLabels, Counter>,
    /// `rest_client_request_duration_seconds{verb, host}`.
    pub duration: Family<RequestLatencyLabels, Histogram>,
}

impl Default for RestClientMetrics {
    /// Unregistered metrics.
    fn default() -> Self {
        Self {
            requests: Family::default(),
            // client-go's buckets.
            duration: Family::new_with_constructor(|| {
                Histogram::new([
                    0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0,
                ])
            }),
        }
    }
}

impl RestClientMetrics {
    /// Creates the metrics and registers them under client-go's names.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "rest_client_requests",
            "Number of HTTP requests, partitioned by status code, method, and host.",
            m.requests.clone(),
        );
        registry.register(
            "rest_client_request_duration_seconds",
            "Request latency in seconds. Broken down by verb, and host.",
            m.duration.clone(),
        );
        m
    }

    /// A layer recording every request sent to `host` (`host:port` of the apiserver).
    pub fn layer(&self, host: impl Into<String>) -> RestClientMetricsLayer {
        RestClientMetricsLayer {
            metrics: self.clone(),
            host: host.into(),
        }
    }

    fn record(&self, method: String, host: &str, code: String, seconds: f64) {
        self.duration
            .get_or_create(&RequestLatencyLabels {
                verb: method.clone(),
                host: host.to_owned(),
            })
            .observe(seconds);
        self.requests
            .get_or_create(&RequestResultLabels {
                code,
                method,
                host: host.to_owned(),
            })
            .inc();
    }
}

/// The tower layer of [`RestClientMetrics`].
#[derive(Clone, Debug)]
pub struct RestClientMetricsLayer {
    metrics: RestClientMetrics,
    host: String,
}

impl<S> Layer<S> for RestClientMetricsLayer {
    type Service = RestClientMetered<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RestClientMetered {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`RestClientMetricsLayer`].
#[derive(Clone, Debug)]
pub struct RestClientMetered<S> {
    inner: S,
    layer: RestClientMetricsLayer,
}

impl<S, B, ResBody> Service<Request<B>> for RestClientMetered<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let method = req.method().as_str().to_owned();
        let layer = self.layer.clone();
        let started = Instant::now();
        let response = self.inner.call(req);
        Box::pin(async move {
            let result = response.await;
            let code = match &result {
                Ok(res) => res.status().as_u16().to_string(),
                Err(_) => "<error>".to_owned(),
            };
            layer
                .metrics
                .record(method, &layer.host, code, started.elapsed().as_secs_f64());
            result
        })
    }
}

/// The `host:port` label of requests to `url`, as client-go writes it.
pub(crate) fn host_label(url: &hyper::Uri) -> String {
    match (url.host(), url.port_u16()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    /// Answers each request with the status its path names (`/404` → 404), or fails for `/fail`.
    #[derive(Clone)]
    struct Echo;
    impl Service<Request<()>> for Echo {
        type Response = Response<()>;
        type Error = &'static str;
        type Future = std::future::Ready<Result<Response<()>, &'static str>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, req: Request<()>) -> Self::Future {
            let path = req.uri().path().trim_start_matches('/');
            std::future::ready(match path.parse::<u16>() {
                Ok(code) => Response::builder().status(code).body(()).map_err(|_| "bad"),
                Err(_) => Err("connection refused"),
            })
        }
    }

    #[tokio::test]
    async fn counts_requests_by_code_method_and_host() {
        let mut registry = Registry::default();
        let metrics = RestClientMetrics::register(&mut registry);
        let svc = metrics.layer("127.0.0.1:6443").layer(Echo);
        for (method, path) in [
            ("GET", "/200"),
            ("GET", "/200"),
            ("PATCH", "/409"),
            ("GET", "/fail"),
        ] {
            let req = Request::builder()
                .method(method)
                .uri(path)
                .body(())
                .expect("request");
            let _ = svc.clone().oneshot(req).await;
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        for line in [
            r#"rest_client_requests_total{code="200",method="GET",host="127.0.0.1:6443"} 2"#,
            r#"rest_client_requests_total{code="409",method="PATCH",host="127.0.0.1:6443"} 1"#,
            r#"rest_client_requests_total{code="<error>",method="GET",host="127.0.0.1:6443"} 1"#,
            r#"rest_client_request_duration_seconds_count{verb="GET",host="127.0.0.1:6443"} 3"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn host_label_is_host_and_port() {
        let url: hyper::Uri = "https://10.0.0.1:6443/".parse().expect("uri");
        assert_eq!(host_label(&url), "10.0.0.1:6443");
        let url: hyper::Uri = "https://kubernetes.default.svc".parse().expect("uri");
        assert_eq!(host_label(&url), "kubernetes.default.svc");
    }
}
