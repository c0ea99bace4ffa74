//! An HTTP proxy in front of moto that throttles and fails a share of AWS API calls the way AWS does, and counts
//! every call by action: the cloud of the throttled chaos runs.
//!
//! A throttled EC2 call answers 503 `RequestLimitExceeded`, a throttled ELBv2 call 400 `Throttling` (the codes the
//! SDK and provider-aws classify as throttling); a failed call answers 500 `InternalError` / `InternalFailure`.
//! Requests are AWS query-protocol forms (`Action=…&Version=…`), so the action and service are read from the body.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::Error;

/// Shares of calls to throttle and to fail, each in `0.0..=1.0`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AwsFaultRates {
    /// Answered with AWS's throttling error.
    pub throttle: f64,
    /// Answered with an internal error.
    pub fail: f64,
}

/// Calls of one action: how many reached the proxy, and how many of those it throttled or failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ActionCount {
    /// Every call.
    pub calls: u64,
    /// Calls answered with a throttling error.
    pub throttled: u64,
    /// Calls answered with an internal error.
    pub failed: u64,
}

#[derive(Default)]
struct State {
    rates: AwsFaultRates,
    counts: BTreeMap<String, ActionCount>,
    /// Actions whose request forms are kept, and the forms.
    recorded: BTreeMap<String, Vec<String>>,
    /// A xorshift state: faults are drawn deterministically per seed.
    rng: u64,
}

type Shared = Arc<Mutex<State>>;

/// The proxy; dropping it stops it.
#[derive(Debug)]
pub struct AwsFaultProxy {
    addr: SocketAddr,
    state: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AwsFaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("rates", &self.rates)
            .finish_non_exhaustive()
    }
}

fn lock(state: &Shared) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl AwsFaultProxy {
    /// Proxies to `target` (e.g. moto's `http://127.0.0.1:5000`), drawing faults from `seed`.
    pub async fn start(target: &str, seed: u64) -> Result<Self, Error> {
        let io = |context: &str| {
            let context = context.to_owned();
            move |source| Error::Io { context, source }
        };
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(io("binding the AWS fault proxy"))?;
        let addr = listener
            .local_addr()
            .map_err(io("the AWS fault proxy's address"))?;
        let state: Shared = Arc::new(Mutex::new(State {
            rng: seed | 1,
            ..State::default()
        }));
        let target: http::Uri = target.parse().map_err(|e| Error::Command {
            command: format!("AwsFaultProxy::start({target})"),
            detail: format!("invalid target URL: {e}"),
        })?;
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let task = tokio::spawn({
            let state = Arc::clone(&state);
            async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let state = Arc::clone(&state);
                    let client = client.clone();
                    let target = target.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            handle(req, Arc::clone(&state), client.clone(), target.clone())
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            }
        });
        Ok(Self { addr, state, task })
    }

    /// The URL to point the AWS SDK at.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sets the shares of throttled and failed calls from now on.
    pub fn set_rates(&self, rates: AwsFaultRates) {
        lock(&self.state).rates = rates;
    }

    /// Calls by action (`DescribeInstances`, `CreateLoadBalancer`, …) since the start.
    pub fn counts(&self) -> BTreeMap<String, ActionCount> {
        lock(&self.state).counts.clone()
    }

    /// Keeps the request forms of `actions` from now on (see [`requests`](Self::requests)): proof of what the
    /// provider asked for where moto does not keep it.
    pub fn record(&self, actions: &[&str]) {
        let mut st = lock(&self.state);
        for action in actions {
            st.recorded.entry((*action).to_owned()).or_default();
        }
    }

    /// The URL-encoded request forms of a recorded action, oldest first.
    pub fn requests(&self, action: &str) -> Vec<String> {
        lock(&self.state)
            .recorded
            .get(action)
            .cloned()
            .unwrap_or_default()
    }

    /// All calls since the start.
    pub fn total_calls(&self) -> u64 {
        lock(&self.state).counts.values().map(|c| c.calls).sum()
    }
}

/// A uniform draw in `[0, 1)` (xorshift64*).
fn draw(state: &mut State) -> f64 {
    let mut x = state.rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    state.rng = x;
    // 53 random bits.
    (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
}

fn form_value<'a>(body: &'a str, key: &str) -> Option<&'a str> {
    body.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

enum Fault {
    Throttle,
    Fail,
}

fn error_response(fault: &Fault, ec2: bool) -> Response<Full<Bytes>> {
    let (status, code, message) = match (fault, ec2) {
        (Fault::Throttle, true) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "RequestLimitExceeded",
            "Request limit exceeded.",
        ),
        (Fault::Throttle, false) => (StatusCode::BAD_REQUEST, "Throttling", "Rate exceeded"),
        (Fault::Fail, true) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "An internal error has occurred",
        ),
        (Fault::Fail, false) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalFailure",
            "An internal error has occurred",
        ),
    };
    let body = if ec2 {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Errors><Error><Code>{code}</Code>\
             <Message>{message}</Message></Error></Errors><RequestID>chaos</RequestID></Response>"
        )
    } else {
        format!(
            "<ErrorResponse xmlns=\"http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/\"><Error>\
             <Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>\
             <RequestId>chaos</RequestId></ErrorResponse>"
        )
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/xml"),
    );
    response
}

async fn handle(
    req: Request<Incoming>,
    state: Shared,
    client: Client<HttpConnector, Full<Bytes>>,
    target: http::Uri,
) -> std::result::Result<Response<Full<Bytes>>, Infallible> {
    let (mut parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let form = String::from_utf8_lossy(&body);
    let action = form_value(&form, "Action").unwrap_or("unknown").to_owned();
    let ec2 = form_value(&form, "Version").is_some_and(|v| v == "2016-11-15");
    let fault = {
        let mut st = lock(&state);
        let rates = st.rates;
        let roll = draw(&mut st);
        let fault = if roll < rates.throttle {
            Some(Fault::Throttle)
        } else if roll < rates.throttle + rates.fail {
            Some(Fault::Fail)
        } else {
            None
        };
        if let Some(forms) = st.recorded.get_mut(&action) {
            forms.push(form.clone().into_owned());
        }
        let count = st.counts.entry(action).or_default();
        count.calls += 1;
        match fault {
            Some(Fault::Throttle) => count.throttled += 1,
            Some(Fault::Fail) => count.failed += 1,
            None => {}
        }
        fault
    };
    if let Some(fault) = fault {
        return Ok(error_response(&fault, ec2));
    }
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let mut uri = http::uri::Parts::default();
    uri.scheme = target.scheme().cloned();
    uri.authority = target.authority().cloned();
    uri.path_and_query = path.parse().ok();
    parts.uri = match http::Uri::from_parts(uri) {
        Ok(uri) => uri,
        Err(_) => return Ok(error_response(&Fault::Fail, ec2)),
    };
    let upstream = Request::from_parts(parts, Full::new(body));
    match client.request(upstream).await {
        Ok(res) => {
            let (parts, body) = res.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Ok(Response::from_parts(parts, Full::new(body)))
        }
        Err(_) => Ok(error_response(&Fault::Fail, ec2)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_uniform_enough_and_deterministic() {
        let mut a = State {
            rng: 7,
            ..State::default()
        };
        let mut b = State {
            rng: 7,
            ..State::default()
        };
        let draws: Vec<f64> = (0..10_000).map(|_| draw(&mut a)).collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)));
        let below_half = draws.iter().filter(|d| **d < 0.5).count();
        assert!((4_500..5_500).contains(&below_half), "{below_half}");
        assert_eq!(draw(&mut b), draws[0]);
    }

    #[test]
    fn forms_name_the_action() {
        let body = "Action=DescribeInstances&Version=2016-11-15&Filter.1.Name=vpc-id";
        assert_eq!(form_value(body, "Action"), Some("DescribeInstances"));
        assert_eq!(form_value(body, "Version"), Some("2016-11-15"));
        assert_eq!(form_value(body, "Missing"), None);
    }
}
