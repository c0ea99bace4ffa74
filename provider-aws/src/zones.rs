//! Zones (deprecated upstream where instance metadata carries the zone, kept for older controllers).

use cloudprovider_api::{CloudError, CloudResult, Zone, Zones, async_trait};
use tracing::instrument;

use crate::AwsCloud;
use crate::instances::{NodeKey, instance_id_from_provider_id, is_terminated};

/// The instance metadata path of this machine's zone.
const IMDS_ZONE_PATH: &str = "/latest/meta-data/placement/availability-zone";

impl AwsCloud {
    async fn zone_of_key(&self, key: NodeKey, what: &str) -> CloudResult<Zone> {
        let found = self
            .lookup(std::slice::from_ref(&key))
            .await
            .map_err(|e| self.cloud_error(e))?;
        let zone = found
            .get(&key)
            .filter(|i| !is_terminated(i))
            .and_then(|i| i.placement())
            .and_then(|p| p.availability_zone())
            .ok_or_else(|| CloudError::not_found("instance", what))?;
        Ok(Zone {
            failure_domain: zone.to_owned(),
            region: self.inner.region.clone(),
        })
    }
}

#[async_trait]
impl Zones for AwsCloud {
    /// The configured `zone`, else the instance metadata service's answer.
    async fn zone(&self) -> CloudResult<Zone> {
        let failure_domain = match &self.inner.config.zone {
            Some(zone) => zone.clone(),
            None => aws_config::imds::Client::builder()
                .build()
                .get(IMDS_ZONE_PATH)
                .await
                .map_err(|e| {
                    CloudError::transient_from("reading the zone from instance metadata", e)
                })?
                .as_ref()
                .to_owned(),
        };
        Ok(Zone {
            failure_domain,
            region: self.inner.region.clone(),
        })
    }

    /// A provider ID that cannot name an EC2 instance names no instance: `NotFound`.
    #[instrument(skip(self))]
    async fn zone_by_provider_id(&self, provider_id: &str) -> CloudResult<Zone> {
        let id = instance_id_from_provider_id(provider_id)
            .map_err(|_| CloudError::not_found("instance", provider_id))?;
        self.zone_of_key(NodeKey::Id(id), provider_id).await
    }

    #[instrument(skip(self))]
    async fn zone_by_node_name(&self, node_name: &str) -> CloudResult<Zone> {
        self.zone_of_key(NodeKey::Name(node_name.to_owned()), node_name)
            .await
    }
}
