//! The Kubernetes client of the binaries, with client-go's client-side rate limit (`--kube-api-qps`,
//! `--kube-api-burst`): a token bucket every request waits on before it is sent, so a burst of reconciles cannot
//! flood the apiserver. Watches count once, when they are opened, as in client-go.

use std::future::Future;
use std::num::NonZeroU32;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tower::{Layer, Service};

use super::AppError;
use super::bounds::check_rate;
use super::rest_metrics::{RestClientMetrics, host_label};

/// Loads the client configuration from `kubeconfig`, or by the usual lookup (`$KUBECONFIG`, `~/.kube/config`,
/// in-cluster) when `None`; `master` overrides the server address (upstream's `--master`).
pub async fn kube_config(
    kubeconfig: Option<&Path>,
    master: Option<&str>,
) -> Result<kube::Config, AppError> {
    fn client_error<E: std::error::Error + Send + Sync + 'static>(
        context: String,
    ) -> impl FnOnce(E) -> AppError {
        move |e| AppError::Client {
            context,
            source: Box::new(e),
        }
    }
    let mut config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).map_err(client_error(format!(
                "reading --kubeconfig {}",
                path.display()
            )))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(client_error(format!(
                    "using --kubeconfig {}",
                    path.display()
                )))?
        }
        None => kube::Config::infer().await.map_err(client_error(
            "no --kubeconfig given, no default kubeconfig, and not running in a cluster".into(),
        ))?,
    };
    if let Some(master) = master.filter(|m| !m.is_empty()) {
        config.cluster_url = master
            .parse()
            .map_err(|e| AppError::flag("--master", format!("invalid URL {master:?}: {e}")))?;
    }
    Ok(config)
}

/// A client whose requests are limited to `qps` per second with bursts of `burst` (client-go's semantics).
pub fn rate_limited_client(
    config: kube::Config,
    qps: f32,
    burst: u32,
) -> Result<kube::Client, AppError> {
    let layer = RateLimitLayer::new(qps, burst)?;
    let builder = kube::client::ClientBuilder::try_from(config).map_err(builder_error)?;
    Ok(builder.with_layer(&layer).build())
}

/// [`rate_limited_client`] whose requests are also counted in `metrics` (`rest_client_*`, see
/// [`RestClientMetrics`]). The time spent waiting for the rate limit is not part of a request's duration.
pub fn metered_client(
    config: kube::Config,
    qps: f32,
    burst: u32,
    metrics: &RestClientMetrics,
) -> Result<kube::Client, AppError> {
    let limit = RateLimitLayer::new(qps, burst)?;
    let metered = metrics.layer(host_label(&config.cluster_url));
    let builder = kube::client::ClientBuilder::try_from(config).map_err(builder_error)?;
    Ok(builder.with_layer(&metered).with_layer(&limit).build())
}

fn builder_error(e: kube::Error) -> AppError {
    AppError::Client {
        context: "building the Kubernetes client".into(),
        source: Box::new(e),
    }
}

/// A tower layer applying one shared token bucket to every request.
#[derive(Clone, Debug)]
pub struct RateLimitLayer {
    limiter: Arc<DefaultDirectRateLimiter>,
}

impl RateLimitLayer {
    /// `qps` requests per second on average, `burst` at once, within the bounds of
    /// [`check_rate`](super::check_rate).
    pub fn new(qps: f32, burst: u32) -> Result<Self, AppError> {
        check_rate(qps, burst)?;
        let Some(burst) = NonZeroU32::new(burst) else {
            return Err(AppError::flag(
                "--kube-api-burst",
                "must be at least 1, got 0",
            ));
        };
        let period = Duration::from_secs_f64(1.0 / f64::from(qps));
        let quota = Quota::with_period(period)
            .ok_or_else(|| AppError::flag("--kube-api-qps", format!("{qps} is too large")))?
            .allow_burst(burst);
        Ok(Self {
            limiter: Arc::new(RateLimiter::direct(quota)),
        })
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimited<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimited {
            inner,
            limiter: Arc::clone(&self.limiter),
            waiting: None,
            permitted: false,
        }
    }
}

type Wait = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The service of [`RateLimitLayer`]: readiness waits for a token (kube's client drives services through a
/// buffer, which polls readiness before each call), so the inner service needs no `Clone`.
pub struct RateLimited<S> {
    inner: S,
    limiter: Arc<DefaultDirectRateLimiter>,
    waiting: Option<Wait>,
    permitted: bool,
}

impl<S> std::fmt::Debug for RateLimited<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimited")
            .field("permitted", &self.permitted)
            .finish_non_exhaustive()
    }
}

impl<S, Req> Service<Req> for RateLimited<S>
where
    S: Service<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if !self.permitted {
            let limiter = Arc::clone(&self.limiter);
            let wait = self
                .waiting
                .get_or_insert_with(|| Box::pin(async move { limiter.until_ready().await }));
            ready!(wait.as_mut().poll(cx));
            self.waiting = None;
            self.permitted = true;
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.permitted = false;
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_limits_name_the_flag() {
        let err = |qps, burst| RateLimitLayer::new(qps, burst).err().map(|e| e.to_string());
        assert!(err(0.0, 10).is_some_and(|e| e.contains("--kube-api-qps")));
        assert!(err(-1.0, 10).is_some_and(|e| e.contains("--kube-api-qps")));
        assert!(err(f32::NAN, 10).is_some_and(|e| e.contains("--kube-api-qps")));
        assert!(err(5.0, 0).is_some_and(|e| e.contains("--kube-api-burst")));
        assert!(err(20.0, 30).is_none());
    }

    /// Counts calls to the inner service.
    struct Count(u32);
    impl Service<()> for Count {
        type Response = ();
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<(), Self::Error>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, (): ()) -> Self::Future {
            self.0 += 1;
            std::future::ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_burst_passes_then_requests_wait_for_tokens() {
        use tower::ServiceExt;
        let layer = RateLimitLayer::new(0.1, 3).expect("valid limits");
        let mut svc = layer.layer(Count(0));
        for _ in 0..3 {
            svc.ready()
                .await
                .expect("ready")
                .call(())
                .await
                .expect("call");
        }
        assert_eq!(svc.inner.0, 3);
        // The bucket is empty: the fourth request is not ready until a token arrives (10 s at 0.1 QPS).
        let fourth = tokio::time::timeout(Duration::from_millis(200), svc.ready()).await;
        assert!(
            fourth.is_err(),
            "the fourth request should wait for a token"
        );
    }
}
