//! Routes: keyed by cluster and destination CIDR.

use std::collections::BTreeMap;

use cloudprovider_api::{CloudError, CloudResult, Route};
use ipnet::IpNet;

use crate::error::FakeError;

#[derive(Debug)]
struct StoredRoute {
    route: Route,
    /// Set by [`FakeCloud::set_route_blackhole`](crate::FakeCloud::set_route_blackhole).
    blackhole: bool,
}

#[derive(Debug, Default)]
pub(crate) struct RouteStore {
    routes: BTreeMap<(String, IpNet), StoredRoute>,
}

impl RouteStore {
    /// The routes of `cluster`, sorted by destination. `gone(node)` tells whether a target's instance is known to
    /// be terminated; such routes are blackholes.
    pub(crate) fn list(&self, cluster: &str, gone: impl Fn(&str) -> bool) -> Vec<Route> {
        self.routes
            .iter()
            .filter(|((c, _), _)| c == cluster)
            .map(|(_, r)| Route {
                blackhole: r.blackhole || gone(&r.route.target_node),
                ..r.route.clone()
            })
            .collect()
    }

    /// Creates a route. The same destination with the same target succeeds without change; a blackhole route for
    /// the destination is replaced; a live route to another target is a conflict (transient: it goes away once
    /// the route controller deletes the stale route).
    pub(crate) fn create(
        &mut self,
        cluster: &str,
        name_hint: &str,
        route: &Route,
        gone: impl Fn(&str) -> bool,
    ) -> CloudResult<()> {
        if route.target_node.is_empty() {
            return Err(CloudError::invalid_input("targetNode", "must not be empty"));
        }
        let cidr = route.destination_cidr.trunc();
        let key = (cluster.to_owned(), cidr);
        if let Some(existing) = self.routes.get(&key) {
            let is_blackhole = existing.blackhole || gone(&existing.route.target_node);
            if existing.route.target_node == route.target_node && !is_blackhole {
                return Ok(());
            }
            if !is_blackhole {
                return Err(CloudError::transient(format!(
                    "a route for {cidr} in cluster {cluster:?} already targets node {:?}",
                    existing.route.target_node
                )));
            }
        }
        let suffix = if name_hint.is_empty() {
            cidr.to_string().replace(['.', ':', '/'], "-")
        } else {
            name_hint.to_owned()
        };
        let stored = Route {
            name: format!("{cluster}-{suffix}"),
            target_node: route.target_node.clone(),
            target_node_addresses: route.target_node_addresses.clone(),
            destination_cidr: cidr,
            blackhole: false,
        };
        self.routes.insert(
            key,
            StoredRoute {
                route: stored,
                blackhole: false,
            },
        );
        Ok(())
    }

    /// Deletes the route for the destination; absent is fine.
    pub(crate) fn delete(&mut self, cluster: &str, route: &Route) {
        self.routes
            .remove(&(cluster.to_owned(), route.destination_cidr.trunc()));
    }

    pub(crate) fn set_blackhole(
        &mut self,
        cluster: &str,
        cidr: IpNet,
        blackhole: bool,
    ) -> Result<(), FakeError> {
        match self.routes.get_mut(&(cluster.to_owned(), cidr.trunc())) {
            Some(r) => {
                r.blackhole = blackhole;
                Ok(())
            }
            None => Err(FakeError::UnknownRoute {
                cluster: cluster.to_owned(),
                cidr: cidr.to_string(),
            }),
        }
    }
}
