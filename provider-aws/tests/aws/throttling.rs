//! Throttling answers (RequestLimitExceeded from EC2, Throttling from ELBv2) become `CloudError::Throttled` with the
//! configured retry-after, after the SDK's own retries. moto never throttles, so a tiny HTTP server answers with
//! AWS's real error documents.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cloudprovider_api::conformance::{load_balancer_service, node_with_provider_id};
use cloudprovider_api::{CloudError, Instances, LoadBalancers};
use provider_aws::{ApiCallCounter, AwsCloud, AwsConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const EC2_THROTTLED: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>r1</RequestID></Response>";
const ELB_THROTTLED: &str = "<ErrorResponse xmlns=\"http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/\"><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>r2</RequestId></ErrorResponse>";

/// Answers every request with a throttling error; counts requests.
async fn throttling_server() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let url = format!(
        "http://{}",
        listener.local_addr().unwrap_or_else(|e| panic!("{e}"))
    );
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // Headers, then as much body as Content-Length says.
                loop {
                    let Ok(n) = socket.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request);
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let text = String::from_utf8_lossy(&request);
                let (status, body) = if text.contains("Action=DescribeInstances") {
                    ("503 Service Unavailable", EC2_THROTTLED)
                } else {
                    ("400 Bad Request", ELB_THROTTLED)
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: text/xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    (url, hits)
}

#[tokio::test]
async fn throttling_maps_to_throttled_with_retry_after() {
    let (url, hits) = throttling_server().await;
    let config = AwsConfig {
        region: Some("us-east-1".into()),
        endpoint_url: Some(url),
        max_attempts: Some(2),
        throttle_retry_after_seconds: Some(7),
        ..AwsConfig::new("c1")
    };
    // The production hook: an observer sees every attempt with its HTTP status.
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    let counter = ApiCallCounter::new().with_observer(move |call| {
        if let Ok(mut calls) = sink.lock() {
            calls.push((call.operation.clone(), call.status));
        }
    });
    let sdk = AwsCloud::config_loader(&config)
        .test_credentials()
        .load()
        .await;
    let cloud = AwsCloud::from_sdk_config_with_counter(config, &sdk, counter)
        .unwrap_or_else(|e| panic!("{e}"));

    let node = node_with_provider_id("n", "aws:///us-east-1a/i-0123456789abcdef0");
    match cloud.instance_exists(&node).await {
        Err(CloudError::Throttled {
            retry_after,
            message,
        }) => {
            assert_eq!(retry_after, Duration::from_secs(7));
            assert!(message.contains("RequestLimitExceeded"), "{message}");
        }
        other => panic!("want Throttled, got {other:?}"),
    }
    // The SDK retried once (2 attempts), and the interceptor saw both.
    assert_eq!(cloud.api_calls().count("DescribeInstances"), 2);
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    let observed = seen.lock().map(|c| c.clone()).unwrap_or_default();
    assert_eq!(
        observed,
        vec![("DescribeInstances".to_owned(), Some(503)); 2]
    );

    let svc = load_balancer_service("web", "0e6f4ab0-1111-4222-8333-444455556666");
    match cloud.get_load_balancer("c", &svc).await {
        Err(CloudError::Throttled {
            retry_after,
            message,
        }) => {
            assert_eq!(retry_after, Duration::from_secs(7));
            assert!(message.contains("Throttling"), "{message}");
        }
        other => panic!("want Throttled, got {other:?}"),
    }
    // Batch answers share the throttled error, node by node.
    let states = cloud.instance_states(&[&node, &node]).await;
    assert!(
        states
            .iter()
            .all(|s| matches!(s, Err(CloudError::Throttled { .. })))
    );
}

/// A provider whose SDK retries at once (1 ms backoff) against the throttling server.
async fn quick_retrying_cloud(url: &str, refill: u32) -> AwsCloud {
    let config = AwsConfig {
        region: Some("us-east-1".into()),
        endpoint_url: Some(url.to_owned()),
        max_attempts: Some(3),
        retry_quota_refill_per_second: Some(refill),
        ..AwsConfig::new("c1")
    };
    let sdk = AwsCloud::config_loader(&config)
        .retry_config(
            aws_config::retry::RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(1)),
        )
        .test_credentials()
        .load()
        .await;
    AwsCloud::from_sdk_config(config, &sdk).unwrap_or_else(|e| panic!("{e}"))
}

/// Attempts one `instance_exists` call made (1 = not retried, 3 = retried twice).
async fn attempts_of_one_call(cloud: &AwsCloud) -> u64 {
    let node = node_with_provider_id("n", "aws:///us-east-1a/i-0123456789abcdef0");
    let before = cloud.api_calls().count("DescribeInstances");
    let result = cloud.instance_exists(&node).await;
    assert!(
        matches!(result, Err(CloudError::Throttled { .. })),
        "{result:?}"
    );
    cloud.api_calls().count("DescribeInstances") - before
}

/// The retry quota (500 tokens, 5 per throttled retry) belongs to one provider and refills with time: a throttling
/// storm that drains it leaves the provider retrying again within seconds, not never (the SDK's default), and a
/// second provider in the process is not drained with it.
#[tokio::test]
async fn retry_quota_is_per_provider_and_refills_with_time() {
    let (url, _) = throttling_server().await;
    let no_refill = quick_retrying_cloud(&url, 0).await;
    let refilled = quick_retrying_cloud(&url, 5).await;
    let bystander = quick_retrying_cloud(&url, 0).await;

    // Two retries per call cost 10 tokens: 50 calls drain the quota.
    assert_eq!(attempts_of_one_call(&no_refill).await, 3);
    for _ in 0..55 {
        attempts_of_one_call(&no_refill).await;
        attempts_of_one_call(&refilled).await;
    }
    assert_eq!(
        attempts_of_one_call(&no_refill).await,
        1,
        "the quota drains"
    );
    assert_eq!(
        attempts_of_one_call(&bystander).await,
        3,
        "another provider's quota is its own"
    );

    // Three seconds regain 15 tokens at 5/s: enough for the two retries of one call.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(
        attempts_of_one_call(&no_refill).await,
        1,
        "without refill it stays empty"
    );
    assert_eq!(attempts_of_one_call(&refilled).await, 3, "refilled");

    // Every throttled attempt is counted under upstream's metric.
    let mut registry = prometheus_client::registry::Registry::default();
    no_refill.api_calls().metrics().register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)
        .unwrap_or_else(|e| panic!("{e}"));
    let attempts = no_refill.api_calls().count("DescribeInstances");
    let line = format!(
        "cloudprovider_aws_api_throttled_requests_total{{operation_name=\"DescribeInstances\"}} {attempts}"
    );
    assert!(text.contains(&line), "want {line} in\n{text}");
}
