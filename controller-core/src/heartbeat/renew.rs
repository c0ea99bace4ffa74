//! One heartbeat of one node: ping, Lease write, status post if due.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cloudprovider_api::{CloudError, NodeProvider};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, NodeCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};

use super::NODE_LEASE_NAMESPACE;

/// What a heartbeat needs; built by the scheduler from its state.
pub(crate) struct Job {
    pub(crate) name: String,
    pub(crate) uid: String,
    pub(crate) provider: Arc<dyn NodeProvider>,
    /// The Lease last written, if any: renewed without a GET.
    pub(crate) lease: Option<Lease>,
    /// Conditions to post (already stamped), when a status post is due.
    pub(crate) status: Option<Vec<NodeCondition>>,
}

/// A failed API call.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// How a heartbeat went.
pub(crate) enum Outcome {
    /// The provider did not answer the ping: nothing was written.
    PingFailed(CloudError),
    /// The Lease was written.
    Renewed {
        lease: Box<Lease>,
        conflicted: bool,
        /// The status post, if one was due.
        status: Option<Result<Vec<NodeCondition>, WriteError>>,
    },
    /// The Lease write failed (the cached Lease, if still valid, is returned for the next try).
    LeaseFailed { error: WriteError, conflicted: bool },
}

pub(crate) struct Clients {
    pub(crate) leases: Api<Lease>,
    pub(crate) nodes: Api<Node>,
    pub(crate) lease_seconds: i32,
    pub(crate) timeout: Duration,
}

impl Clients {
    pub(crate) fn new(client: kube::Client, lease_duration: Duration, timeout: Duration) -> Self {
        Self {
            leases: Api::namespaced(client.clone(), NODE_LEASE_NAMESPACE),
            nodes: Api::all(client),
            lease_seconds: i32::try_from(lease_duration.as_secs()).unwrap_or(i32::MAX),
            timeout,
        }
    }

    async fn timed<T>(
        &self,
        call: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, WriteError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r.map_err(WriteError::Api),
            Err(_) => Err(WriteError::Timeout(self.timeout)),
        }
    }
}

fn micro_now() -> MicroTime {
    let now = Timestamp::now();
    MicroTime(Timestamp::from_microsecond(now.as_microsecond()).unwrap_or(now))
}

fn status_code(e: &WriteError) -> Option<u16> {
    match e {
        WriteError::Api(kube::Error::Api(s)) => Some(s.code),
        _ => None,
    }
}

/// Runs one heartbeat.
pub(crate) async fn beat(clients: &Clients, job: Job) -> Outcome {
    let ping = match tokio::time::timeout(clients.timeout, job.provider.ping()).await {
        Ok(r) => r,
        Err(_) => Err(CloudError::transient(format!(
            "ping timed out after {:?}",
            clients.timeout
        ))),
    };
    if let Err(e) = ping {
        return Outcome::PingFailed(e);
    }
    let (lease, conflicted) = match renew_lease(clients, &job).await {
        Ok(r) => r,
        Err((error, conflicted)) => return Outcome::LeaseFailed { error, conflicted },
    };
    let status = match job.status {
        Some(conditions) => Some(post_status(clients, &job.name, conditions).await),
        None => None,
    };
    Outcome::Renewed {
        lease: Box::new(lease),
        conflicted,
        status,
    }
}

/// One PUT of the cached Lease; on 409 one re-read and PUT; a missing Lease is created.
async fn renew_lease(clients: &Clients, job: &Job) -> Result<(Lease, bool), (WriteError, bool)> {
    let mut conflicted = false;
    if let Some(cached) = &job.lease {
        match replace(clients, &job.name, cached.clone()).await {
            Ok(l) => return Ok((l, false)),
            Err(e) if status_code(&e) == Some(409) => conflicted = true,
            Err(e) if status_code(&e) == Some(404) => {}
            Err(e) => return Err((e, false)),
        }
    }
    let current = clients
        .timed(clients.leases.get_opt(&job.name))
        .await
        .map_err(|e| (e, conflicted))?;
    let result = match current {
        Some(lease) => replace(clients, &job.name, lease).await,
        None => {
            let lease = new_lease(&job.name, &job.uid, clients.lease_seconds);
            clients
                .timed(clients.leases.create(&PostParams::default(), &lease))
                .await
        }
    };
    result.map(|l| (l, conflicted)).map_err(|e| (e, conflicted))
}

async fn replace(clients: &Clients, name: &str, mut lease: Lease) -> Result<Lease, WriteError> {
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = Some(name.to_owned());
    spec.lease_duration_seconds = Some(clients.lease_seconds);
    spec.renew_time = Some(micro_now());
    clients
        .timed(clients.leases.replace(name, &PostParams::default(), &lease))
        .await
}

fn new_lease(name: &str, uid: &str, lease_seconds: i32) -> Lease {
    let owner = (!uid.is_empty()).then(|| {
        vec![OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: name.to_owned(),
            uid: uid.to_owned(),
            ..OwnerReference::default()
        }]
    });
    Lease {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(NODE_LEASE_NAMESPACE.to_owned()),
            owner_references: owner,
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(name.to_owned()),
            lease_duration_seconds: Some(lease_seconds),
            renew_time: Some(micro_now()),
            ..LeaseSpec::default()
        }),
    }
}

async fn post_status(
    clients: &Clients,
    name: &str,
    conditions: Vec<NodeCondition>,
) -> Result<Vec<NodeCondition>, WriteError> {
    // A merge patch replaces the whole list: the heartbeat owns every condition it reports.
    let patch = serde_json::json!({ "status": { "conditions": conditions } });
    clients
        .timed(
            clients
                .nodes
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)),
        )
        .await?;
    Ok(conditions)
}
