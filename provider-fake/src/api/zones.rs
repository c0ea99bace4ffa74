//! [`Zones`] and [`Clusters`] for the fake cloud.

use async_trait::async_trait;
use cloudprovider_api::{CloudError, CloudResult, Clusters, ProviderId, Zone, Zones};

use crate::cloud::FakeCloud;
use crate::method::Method;
use crate::state::instances::InstanceRecord;

fn zone_of(
    record: Option<&InstanceRecord>,
    now: tokio::time::Instant,
    id: &str,
) -> CloudResult<Zone> {
    match record {
        Some(r) if r.exists_at(now) => Ok(Zone {
            failure_domain: r.zone.clone(),
            region: r.region.clone(),
        }),
        _ => Err(CloudError::not_found("instance", id)),
    }
}

#[async_trait]
impl Zones for FakeCloud {
    async fn zone(&self) -> CloudResult<Zone> {
        let zone = Zone {
            failure_domain: self.inner.settings.zone.clone(),
            region: self.inner.settings.region.clone(),
        };
        self.call(Method::Zone, String::new(), |_, _| Ok(zone))
            .await
    }

    async fn zone_by_provider_id(&self, provider_id: &str) -> CloudResult<Zone> {
        let provider = &self.inner.settings.name;
        self.call(
            Method::ZoneByProviderId,
            provider_id.to_owned(),
            |st, now| {
                ProviderId::parse_for(provider, provider_id)?;
                zone_of(st.instances.get(provider_id), now, provider_id)
            },
        )
        .await
    }

    async fn zone_by_node_name(&self, node_name: &str) -> CloudResult<Zone> {
        let auto = self.auto_create();
        self.call(Method::ZoneByNodeName, node_name.to_owned(), |st, now| {
            if node_name.is_empty() {
                return Err(CloudError::invalid_input("nodeName", "must not be empty"));
            }
            let id = st.instances.resolve_name(node_name, auto)?;
            zone_of(id.and_then(|id| st.instances.get(&id)), now, node_name)
        })
        .await
    }
}

#[async_trait]
impl Clusters for FakeCloud {
    async fn list_clusters(&self) -> CloudResult<Vec<String>> {
        let clusters = self.inner.settings.clusters.clone();
        self.call(Method::ListClusters, String::new(), |_, _| Ok(clusters))
            .await
    }

    async fn master(&self, cluster_name: &str) -> CloudResult<String> {
        let settings = &self.inner.settings;
        self.call(Method::Master, cluster_name.to_owned(), |_, _| {
            if settings.clusters.iter().any(|c| c == cluster_name) {
                Ok(settings.master_address.clone())
            } else {
                Err(CloudError::not_found("cluster", cluster_name))
            }
        })
        .await
    }
}
