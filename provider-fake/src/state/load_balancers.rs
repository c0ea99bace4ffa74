//! Load balancers: one per cluster and default LB name, with a deterministically allocated address.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use cloudprovider_api::{CloudError, CloudResult, NodeAddress, node_addresses};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, Node, Service};

use crate::state::instances::{host_count, nth_host};
use crate::{ANNOTATION_IMPLEMENTED_ELSEWHERE, ANNOTATION_IP};

/// One port of a fake load balancer, from the Service's `spec.ports`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FakeLoadBalancerPort {
    /// The port name.
    pub name: Option<String>,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    /// The port the load balancer listens on.
    pub port: i32,
    /// The NodePort traffic is forwarded to on every host.
    pub node_port: Option<i32>,
}

/// A snapshot of a fake load balancer, for tests to inspect (and for a future forwarding mode: everything needed
/// to carry traffic from `ip:port` to `host address:node_port` is here).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeLoadBalancer {
    /// The load balancer name ([`default_load_balancer_name`](cloudprovider_api::default_load_balancer_name)).
    pub name: String,
    /// The cluster that owns it.
    pub cluster: String,
    /// `<namespace>/<name>` of the Service.
    pub service: String,
    /// The Service UID.
    pub service_uid: String,
    /// The ingress address.
    pub ip: IpAddr,
    /// The backend node names, sorted.
    pub hosts: Vec<String>,
    /// The addresses of each backend node, as passed in (`status.addresses`).
    pub host_addresses: BTreeMap<String, Vec<NodeAddress>>,
    /// The ports, in Service order.
    pub ports: Vec<FakeLoadBalancerPort>,
    /// How many times `ensure_load_balancer` succeeded for it.
    pub ensure_count: u64,
    /// How many times `update_load_balancer` succeeded for it.
    pub update_count: u64,
}

impl FakeLoadBalancer {
    /// The status the provider reports: one ingress with [`ip`](Self::ip).
    pub fn status(&self) -> LoadBalancerStatus {
        LoadBalancerStatus {
            ingress: Some(vec![LoadBalancerIngress {
                ip: Some(self.ip.to_string()),
                ..Default::default()
            }]),
        }
    }
}

/// `<namespace>/<name>` of a Service.
pub(crate) fn service_key(service: &Service) -> String {
    format!(
        "{}/{}",
        service.metadata.namespace.as_deref().unwrap_or("default"),
        service.metadata.name.as_deref().unwrap_or_default()
    )
}

#[derive(Debug)]
pub(crate) struct LbStore {
    pool: IpNet,
    elsewhere_classes: Vec<String>,
    lbs: BTreeMap<(String, String), FakeLoadBalancer>,
}

impl LbStore {
    pub(crate) fn new(pool: IpNet, elsewhere_classes: Vec<String>) -> Self {
        Self {
            pool,
            elsewhere_classes,
            lbs: BTreeMap::new(),
        }
    }

    pub(crate) fn get(&self, cluster: &str, name: &str) -> Option<&FakeLoadBalancer> {
        self.lbs.get(&(cluster.to_owned(), name.to_owned()))
    }

    /// The first load balancer named `name`, in any cluster.
    pub(crate) fn find(&self, name: &str) -> Option<&FakeLoadBalancer> {
        self.lbs.values().find(|lb| lb.name == name)
    }

    pub(crate) fn all(&self) -> Vec<FakeLoadBalancer> {
        self.lbs.values().cloned().collect()
    }

    /// `ImplementedElsewhere` for Services another controller owns.
    pub(crate) fn check_ours(&self, service: &Service) -> CloudResult<()> {
        let key = service_key(service);
        let annotated = service
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_IMPLEMENTED_ELSEWHERE))
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        if annotated {
            return Err(CloudError::ImplementedElsewhere(format!(
                "service {key} is annotated {ANNOTATION_IMPLEMENTED_ELSEWHERE}=true"
            )));
        }
        let class = service
            .spec
            .as_ref()
            .and_then(|s| s.load_balancer_class.as_deref());
        if let Some(class) = class
            && self.elsewhere_classes.iter().any(|c| c == class)
        {
            return Err(CloudError::ImplementedElsewhere(format!(
                "service {key} has loadBalancerClass {class:?}, implemented by another controller"
            )));
        }
        Ok(())
    }

    /// Creates or updates the load balancer `name` of `cluster` for `service` and `nodes`.
    pub(crate) fn ensure(
        &mut self,
        cluster: &str,
        name: &str,
        service: &Service,
        nodes: &[Node],
    ) -> CloudResult<LoadBalancerStatus> {
        self.check_ours(service)?;
        let requested = requested_ip(service)?;
        let ports = ports_of(service)?;
        let id = (cluster.to_owned(), name.to_owned());
        let current = self.lbs.get(&id).map(|lb| lb.ip);
        let ip = match (requested, current) {
            (Some((field, ip)), current) if current != Some(ip) => {
                if !self.pool.contains(&ip) {
                    return Err(CloudError::invalid_input(
                        field,
                        format!("{ip} is not in the load balancer pool {}", self.pool),
                    ));
                }
                if let Some(other) = self.lbs.values().find(|lb| lb.ip == ip) {
                    return Err(CloudError::invalid_input(
                        field,
                        format!(
                            "{ip} is already used by the load balancer of {}",
                            other.service
                        ),
                    ));
                }
                ip
            }
            (_, Some(ip)) => ip,
            (_, None) => self.allocate()?,
        };
        let (hosts, host_addresses) = hosts_of(nodes);
        let lb = self.lbs.entry(id).or_insert_with(|| FakeLoadBalancer {
            name: name.to_owned(),
            cluster: cluster.to_owned(),
            service: String::new(),
            service_uid: String::new(),
            ip,
            hosts: Vec::new(),
            host_addresses: BTreeMap::new(),
            ports: Vec::new(),
            ensure_count: 0,
            update_count: 0,
        });
        lb.service = service_key(service);
        lb.service_uid = service.metadata.uid.clone().unwrap_or_default();
        lb.ip = ip;
        lb.hosts = hosts;
        lb.host_addresses = host_addresses;
        lb.ports = ports;
        lb.ensure_count += 1;
        Ok(lb.status())
    }

    /// Replaces the hosts of an existing load balancer.
    pub(crate) fn update(
        &mut self,
        cluster: &str,
        name: &str,
        service: &Service,
        nodes: &[Node],
    ) -> CloudResult<()> {
        self.check_ours(service)?;
        let Some(lb) = self.lbs.get_mut(&(cluster.to_owned(), name.to_owned())) else {
            return Err(CloudError::not_found("load balancer", name));
        };
        let (hosts, host_addresses) = hosts_of(nodes);
        lb.hosts = hosts;
        lb.host_addresses = host_addresses;
        lb.update_count += 1;
        Ok(())
    }

    /// Deletes the load balancer; false if there was none.
    pub(crate) fn delete(&mut self, cluster: &str, name: &str) -> bool {
        self.lbs
            .remove(&(cluster.to_owned(), name.to_owned()))
            .is_some()
    }

    /// The lowest free address of the pool.
    fn allocate(&self) -> CloudResult<IpAddr> {
        let used: HashSet<IpAddr> = self.lbs.values().map(|lb| lb.ip).collect();
        let count = host_count(&self.pool);
        let mut n = 0u128;
        while n < count && n <= used.len() as u128 {
            if let Some(ip) = nth_host(&self.pool, n)
                && !used.contains(&ip)
            {
                return Ok(ip);
            }
            n += 1;
        }
        Err(CloudError::transient(format!(
            "no free address in the load balancer pool {}",
            self.pool
        )))
    }
}

/// The address the Service asks for, and the field it asked with.
fn requested_ip(service: &Service) -> CloudResult<Option<(&'static str, IpAddr)>> {
    let annotation = service
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_IP));
    let spec = service
        .spec
        .as_ref()
        .and_then(|s| s.load_balancer_ip.as_deref())
        .filter(|s| !s.is_empty());
    let (field, text) = match (annotation, spec) {
        (Some(a), _) => (ANNOTATION_IP, a.as_str()),
        (None, Some(s)) => ("spec.loadBalancerIP", s),
        (None, None) => return Ok(None),
    };
    text.trim()
        .parse::<IpAddr>()
        .map(|ip| Some((field, ip)))
        .map_err(|e| {
            CloudError::invalid_input(field, format!("{text:?} is not an IP address: {e}"))
        })
}

fn ports_of(service: &Service) -> CloudResult<Vec<FakeLoadBalancerPort>> {
    let ports = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or_default();
    ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".to_owned());
            if !matches!(protocol.as_str(), "TCP" | "UDP" | "SCTP") {
                return Err(CloudError::invalid_input(
                    format!("spec.ports[{i}].protocol"),
                    format!("{protocol:?} is not one of TCP, UDP, SCTP"),
                ));
            }
            Ok(FakeLoadBalancerPort {
                name: p.name.clone(),
                protocol,
                port: p.port,
                node_port: p.node_port,
            })
        })
        .collect()
}

fn hosts_of(nodes: &[Node]) -> (Vec<String>, BTreeMap<String, Vec<NodeAddress>>) {
    let map: BTreeMap<String, Vec<NodeAddress>> = nodes
        .iter()
        .filter_map(|n| {
            n.metadata
                .name
                .clone()
                .map(|name| (name, node_addresses(n)))
        })
        .collect();
    (map.keys().cloned().collect(), map)
}
