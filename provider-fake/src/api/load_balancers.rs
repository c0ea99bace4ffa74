//! [`LoadBalancers`] for the fake cloud.

use async_trait::async_trait;
use cloudprovider_api::{CloudError, CloudResult, LoadBalancers};
use k8s_openapi::api::core::v1::{LoadBalancerStatus, Node, Service};

use crate::cloud::FakeCloud;
use crate::method::Method;
use crate::state::load_balancers::service_key;

#[async_trait]
impl LoadBalancers for FakeCloud {
    async fn get_load_balancer(
        &self,
        cluster_name: &str,
        service: &Service,
    ) -> CloudResult<Option<LoadBalancerStatus>> {
        let name = self.load_balancer_name(cluster_name, service);
        self.call(Method::GetLoadBalancer, service_key(service), |st, _| {
            Ok(st.lbs.get(cluster_name, &name).map(|lb| lb.status()))
        })
        .await
    }

    async fn ensure_load_balancer(
        &self,
        cluster_name: &str,
        service: &Service,
        nodes: &[Node],
    ) -> CloudResult<LoadBalancerStatus> {
        let name = self.load_balancer_name(cluster_name, service);
        self.call(Method::EnsureLoadBalancer, service_key(service), |st, _| {
            if service.metadata.uid.as_deref().is_none_or(str::is_empty) {
                return Err(CloudError::invalid_input(
                    "metadata.uid",
                    "the Service has no UID to name its load balancer after",
                ));
            }
            let status = st.lbs.ensure(cluster_name, &name, service, nodes)?;
            self.publish_load_balancers(st);
            Ok(status)
        })
        .await
    }

    async fn update_load_balancer(
        &self,
        cluster_name: &str,
        service: &Service,
        nodes: &[Node],
    ) -> CloudResult<()> {
        let name = self.load_balancer_name(cluster_name, service);
        self.call(Method::UpdateLoadBalancer, service_key(service), |st, _| {
            st.lbs.update(cluster_name, &name, service, nodes)?;
            self.publish_load_balancers(st);
            Ok(())
        })
        .await
    }

    async fn ensure_load_balancer_deleted(
        &self,
        cluster_name: &str,
        service: &Service,
    ) -> CloudResult<()> {
        let name = self.load_balancer_name(cluster_name, service);
        self.call(
            Method::EnsureLoadBalancerDeleted,
            service_key(service),
            |st, _| {
                if st.lbs.delete(cluster_name, &name) {
                    self.publish_load_balancers(st);
                }
                Ok(())
            },
        )
        .await
    }
}
