//! A conformance kit any provider crate runs from its own tests to check that it keeps the contract.
//!
//! The kit talks to the provider only through the traits; a [`ConformanceTarget`] written by the provider's
//! tests supplies what the traits cannot do (create, stop and terminate an instance; adapt a Service to the
//! provider's annotations). Each check reports passed, failed (with what was expected and what came back) or
//! skipped (capability not supported, or the target cannot set it up).
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use cloudprovider_api::{CloudProvider, CloudResult, conformance::*};
//! # use k8s_openapi::api::core::v1::Node;
//! struct MyTarget { provider: Arc<dyn CloudProvider> }
//!
//! #[async_trait::async_trait]
//! impl ConformanceTarget for MyTarget {
//!     fn provider(&self) -> Arc<dyn CloudProvider> { self.provider.clone() }
//!     async fn create_instance(&self, name: &str) -> CloudResult<Node> { todo!("start a VM, return its Node") }
//!     async fn stop_instance(&self, node: &Node) -> CloudResult<()> { todo!() }
//!     async fn terminate_instance(&self, node: &Node) -> CloudResult<()> { todo!() }
//! }
//!
//! # async fn t(target: MyTarget) {
//! let report = run(&target).await;
//! report.assert_passed(); // panics with a table of the failures
//! # }
//! ```

mod instances;
mod load_balancers;
mod node_groups;
mod routes;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Node, NodeSpec, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::{CloudError, CloudProvider, CloudResult};

/// What the kit needs from a provider's test environment.
#[async_trait]
pub trait ConformanceTarget: Send + Sync {
    /// The provider under test.
    fn provider(&self) -> Arc<dyn CloudProvider>;

    /// The cluster name passed to load balancer and route calls.
    fn cluster_name(&self) -> String {
        "conformance".to_owned()
    }

    /// Creates a running instance and returns the Node its kubelet would register (name set; `spec.providerID` set
    /// or not, as the provider's nodes normally are). Return [`CloudError::NotImplemented`] to skip instance checks.
    async fn create_instance(&self, name: &str) -> CloudResult<Node>;

    /// Stops (shuts down) the instance behind `node`, leaving it in existence.
    async fn stop_instance(&self, node: &Node) -> CloudResult<()>;

    /// Terminates the instance behind `node`.
    async fn terminate_instance(&self, node: &Node) -> CloudResult<()>;

    /// A Node whose instance never existed. The default has provider ID `<provider>://conformance-absent`.
    fn absent_node(&self) -> Node {
        let provider = self.provider();
        node_with_provider_id(
            "conformance-absent",
            &format!("{}://conformance-absent", provider.provider_name()),
        )
    }

    /// Adapts a Service before it is used in load balancer checks (e.g. add the provider's required annotations).
    fn prepare_service(&self, _service: &mut Service) {}

    /// The pod CIDRs used in route checks: two disjoint CIDRs.
    fn route_cidrs(&self) -> [ipnet::IpNet; 2] {
        [
            ipnet::IpNet::V4(ipnet::Ipv4Net::new_assert([10, 244, 1, 0].into(), 24)),
            ipnet::IpNet::V4(ipnet::Ipv4Net::new_assert([10, 244, 2, 0].into(), 24)),
        ]
    }

    /// How long the cloud may take to show a change (eventual consistency). Checks poll until then.
    fn settle_timeout(&self) -> Duration {
        Duration::from_secs(30)
    }
}

/// The outcome of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The provider behaved as the contract says.
    Passed,
    /// It did not; the text says what was expected and what came back.
    Failed(String),
    /// The check did not apply (capability unsupported or not set up by the target).
    Skipped(String),
}

/// One check and its outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckResult {
    /// The check's name, `capability/what`.
    pub name: &'static str,
    /// What happened.
    pub outcome: Outcome,
}

/// The outcomes of all checks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConformanceReport {
    /// Every check, in the order run.
    pub checks: Vec<CheckResult>,
}

impl ConformanceReport {
    /// The failed checks.
    pub fn failures(&self) -> impl Iterator<Item = &CheckResult> {
        self.checks
            .iter()
            .filter(|c| matches!(c.outcome, Outcome::Failed(_)))
    }

    /// True when no check failed.
    pub fn passed(&self) -> bool {
        self.failures().next().is_none()
    }

    /// The outcome of the check named `name`.
    pub fn outcome(&self, name: &str) -> Option<&Outcome> {
        self.checks
            .iter()
            .find(|c| c.name == name)
            .map(|c| &c.outcome)
    }

    /// Counts of (passed, failed, skipped).
    pub fn counts(&self) -> (usize, usize, usize) {
        self.checks
            .iter()
            .fold((0, 0, 0), |(p, f, s), c| match c.outcome {
                Outcome::Passed => (p + 1, f, s),
                Outcome::Failed(_) => (p, f + 1, s),
                Outcome::Skipped(_) => (p, f, s + 1),
            })
    }

    /// A test assertion: panics with the report if any check failed.
    #[track_caller]
    pub fn assert_passed(&self) {
        assert!(self.passed(), "provider conformance failed:\n{self}");
    }
}

impl fmt::Display for ConformanceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.checks {
            match &c.outcome {
                Outcome::Passed => writeln!(f, "  pass  {}", c.name)?,
                Outcome::Failed(why) => writeln!(f, "  FAIL  {}: {why}", c.name)?,
                Outcome::Skipped(why) => writeln!(f, "  skip  {}: {why}", c.name)?,
            }
        }
        let (p, fl, s) = self.counts();
        write!(f, "{p} passed, {fl} failed, {s} skipped")
    }
}

/// The names of every check [`run`] reports, in order. A provider's test can assert that each of them passed, so a
/// silently skipped capability cannot make it pass.
pub fn check_names() -> Vec<&'static str> {
    let mut names = vec!["provider/capabilities-consistent"];
    names.extend(instances::CHECKS);
    names.extend(load_balancers::CHECKS);
    names.extend(routes::CHECKS);
    names.extend(node_groups::CHECKS);
    names.extend(["zones/zone-of-instance", "clusters/list"]);
    names
}

/// Runs every check against `target` and returns the report.
pub async fn run(target: &dyn ConformanceTarget) -> ConformanceReport {
    let mut report = ConformanceReport::default();
    let provider = target.provider();
    report.push(
        "provider/capabilities-consistent",
        check_capabilities(provider.as_ref()),
    );
    instances::run(target, &mut report).await;
    load_balancers::run(target, &mut report).await;
    routes::run(target, &mut report).await;
    node_groups::run(target, &mut report).await;
    report.push("zones/zone-of-instance", check_zones(target).await);
    report.push("clusters/list", check_clusters(target).await);
    report
}

async fn check_zones(target: &dyn ConformanceTarget) -> CheckFn {
    let provider = target.provider();
    let Some(zones) = provider.zones() else {
        return Err(Failure::Skipped("zones not supported".into()));
    };
    let own = call("zone", zones.zone().await)?;
    ensure!(
        !own.failure_domain.is_empty(),
        "zone() returned an empty failure domain"
    );
    let node = setup(
        "create an instance",
        target.create_instance("conformance-zone").await,
    )?;
    let result = async {
        if let Some(id) = crate::node_provider_id(&node) {
            let z = call("zone_by_provider_id", zones.zone_by_provider_id(id).await)?;
            ensure!(
                !z.failure_domain.is_empty(),
                "zone_by_provider_id returned an empty failure domain"
            );
        }
        let absent = zones
            .zone_by_provider_id(&format!(
                "{}://conformance-absent",
                provider.provider_name()
            ))
            .await;
        ensure!(
            matches!(absent, Err(CloudError::NotFound { .. })),
            "zone_by_provider_id of an absent instance returned {absent:?}, want NotFound"
        );
        Ok(())
    }
    .await;
    let _ = target.terminate_instance(&node).await;
    result
}

async fn check_clusters(target: &dyn ConformanceTarget) -> CheckFn {
    let provider = target.provider();
    let Some(clusters) = provider.clusters() else {
        return Err(Failure::Skipped("clusters not supported".into()));
    };
    call("list_clusters", clusters.list_clusters().await)?;
    Ok(())
}

impl ConformanceReport {
    fn push(&mut self, name: &'static str, result: CheckFn) {
        let outcome = match result {
            Ok(()) => Outcome::Passed,
            Err(Failure::Failed(why)) => Outcome::Failed(why),
            Err(Failure::Skipped(why)) => Outcome::Skipped(why),
        };
        self.checks.push(CheckResult { name, outcome });
    }

    fn skip_all(&mut self, names: &[&'static str], why: &str) {
        for name in names {
            self.push(name, Err(Failure::Skipped(why.to_owned())));
        }
    }
}

/// Why a check did not pass.
enum Failure {
    Failed(String),
    Skipped(String),
}

type CheckFn = Result<(), Failure>;

/// Fails the check with a formatted message unless `cond` holds.
macro_rules! ensure_impl {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err($crate::conformance::Failure::Failed(format!($($arg)+)));
        }
    };
}
use ensure_impl as ensure;

/// Turns a provider error into a failed check, saying which call failed.
fn call<T>(what: &str, r: CloudResult<T>) -> Result<T, Failure> {
    r.map_err(|e| Failure::Failed(format!("{what} returned an error: {e}")))
}

/// Turns a setup error into a skip when the target does not implement it, and into a failure otherwise.
fn setup<T>(what: &str, r: CloudResult<T>) -> Result<T, Failure> {
    r.map_err(|e| match e {
        CloudError::NotImplemented(_) => Failure::Skipped(format!("target cannot {what}")),
        e => Failure::Failed(format!("setup ({what}) failed: {e}")),
    })
}

/// Polls `f` until it returns true or the target's settle timeout passes; returns the last value of `f`.
async fn eventually<F, Fut>(target: &dyn ConformanceTarget, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + target.settle_timeout();
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn check_capabilities(p: &dyn CloudProvider) -> CheckFn {
    let caps = p.capabilities();
    ensure!(!p.provider_name().is_empty(), "provider_name() is empty");
    let pairs = [
        ("instances", caps.instances, p.instances().is_some()),
        (
            "load-balancers",
            caps.load_balancers,
            p.load_balancers().is_some(),
        ),
        ("routes", caps.routes, p.routes().is_some()),
        ("zones", caps.zones, p.zones().is_some()),
        ("clusters", caps.clusters, p.clusters().is_some()),
        ("node-groups", caps.node_groups, p.node_groups().is_some()),
    ];
    for (name, said, has) in pairs {
        ensure!(
            said == has,
            "capabilities() says {name}={said} but the accessor returns {has}"
        );
    }
    Ok(())
}

/// A Node named `name` with `spec.providerID` set.
pub fn node_with_provider_id(name: &str, provider_id: &str) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            provider_id: Some(provider_id.to_owned()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A LoadBalancer Service with one TCP port (80 → NodePort 30080) and the given UID.
pub fn load_balancer_service(name: &str, uid: &str) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some("default".to_owned()),
            uid: Some(uid.to_owned()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("LoadBalancer".to_owned()),
            ports: Some(vec![ServicePort {
                name: Some("http".to_owned()),
                protocol: Some("TCP".to_owned()),
                port: 80,
                node_port: Some(30080),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}
