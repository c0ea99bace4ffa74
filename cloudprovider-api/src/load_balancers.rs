//! Load balancers for Services of type LoadBalancer.

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{LoadBalancerStatus, Node, Service};

use crate::CloudResult;

/// The most characters a default load balancer name has.
pub const MAX_LOAD_BALANCER_NAME_LEN: usize = 32;

/// Upstream's default load balancer name: `"a"` + the Service UID without dashes, cut to 32 characters.
///
/// ```
/// use cloudprovider_api::default_load_balancer_name;
/// use k8s_openapi::api::core::v1::Service;
/// let mut svc = Service::default();
/// svc.metadata.uid = Some("8f6b8a6e-2b1c-4a3e-9d7f-0c1e2d3f4a5b".into());
/// assert_eq!(default_load_balancer_name(&svc), "a8f6b8a6e2b1c4a3e9d7f0c1e2d3f4a5");
/// ```
pub fn default_load_balancer_name(service: &Service) -> String {
    let uid = service.metadata.uid.as_deref().unwrap_or_default();
    let mut name = String::with_capacity(MAX_LOAD_BALANCER_NAME_LEN);
    name.push('a');
    name.extend(uid.chars().filter(|c| *c != '-'));
    name.truncate(MAX_LOAD_BALANCER_NAME_LEN);
    name
}

/// Load balancers (upstream `LoadBalancer`). Arguments are read-only: a provider reports what it made through
/// the returned status, never by changing the Service.
///
/// `nodes` is the target node set already filtered by the service controller exactly as upstream does
/// (not being deleted, not excluded by label, not tainted for deletion; readiness is not a filter).
#[async_trait]
pub trait LoadBalancers: Send + Sync {
    /// The status of the Service's load balancer, or `None` if it does not exist.
    async fn get_load_balancer(
        &self,
        cluster_name: &str,
        service: &Service,
    ) -> CloudResult<Option<LoadBalancerStatus>>;

    /// The cloud name of the Service's load balancer. Defaults to [`default_load_balancer_name`].
    fn load_balancer_name(&self, _cluster_name: &str, service: &Service) -> String {
        default_load_balancer_name(service)
    }

    /// Creates the load balancer or brings it in line with the Service and `nodes`; returns its status.
    /// Must be idempotent. May answer [`CloudError::ImplementedElsewhere`](crate::CloudError::ImplementedElsewhere)
    /// or [`CloudError::Throttled`](crate::CloudError::Throttled) with a fixed retry-after.
    async fn ensure_load_balancer(
        &self,
        cluster_name: &str,
        service: &Service,
        nodes: &[Node],
    ) -> CloudResult<LoadBalancerStatus>;

    /// Updates only the hosts (backends) of an existing load balancer. May answer
    /// [`CloudError::ImplementedElsewhere`](crate::CloudError::ImplementedElsewhere); a load balancer that no longer
    /// exists may answer [`CloudError::NotFound`](crate::CloudError::NotFound), which the controller counts as success.
    async fn update_load_balancer(
        &self,
        cluster_name: &str,
        service: &Service,
        nodes: &[Node],
    ) -> CloudResult<()>;

    /// Deletes the load balancer and everything made for it. Succeeds if it does not exist. Never answers
    /// "implemented elsewhere". Must delete only what this cluster owns.
    async fn ensure_load_balancer_deleted(
        &self,
        cluster_name: &str,
        service: &Service,
    ) -> CloudResult<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_name_is_bounded() {
        let mut svc = Service::default();
        assert_eq!(default_load_balancer_name(&svc), "a");
        svc.metadata.uid = Some("12345678-1234-1234-1234-123456789abc".into());
        let name = default_load_balancer_name(&svc);
        assert_eq!(name.len(), MAX_LOAD_BALANCER_NAME_LEN);
        assert!(name.starts_with("a12345678123412341234"));
        assert!(!name.contains('-'));
    }
}
