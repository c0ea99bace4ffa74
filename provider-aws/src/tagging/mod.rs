//! Upstream's tagging controller (cloud-provider-aws `pkg/controllers/tagging`), for `--controllers=tagging`: the
//! EC2 instance of every Node gets the tags of `--tags` (and the cluster tag `kubernetes.io/cluster/<clusterId>=owned`
//! when it has no cluster tag), the Node the label `k8s.io/cloud-provider-aws=<checksum of the tags>` so it is not
//! tagged again, and when the Node is deleted the `--tags` are removed from its instance again (the cluster tag
//! stays: the machine may live on, and the cluster tag is what lets this cluster clean it up). Off by default, as
//! upstream; needs `--cloud-provider=aws`.
//!
//! Register it in a controller manager with `controller_core::app::App::controllers_with_flags` and
//! [`register_controllers`]; the bundled `cloud-controller-manager` does when built with the `aws` feature:
//!
//! ```text
//! cloud-controller-manager --cloud-provider=aws --cloud-config=aws.yaml \
//!     --controllers='*,tagging' --tags=team=platform,cost-center=42
//! ```

mod plan;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_ec2::types::Tag;
use cloudprovider_api::{Capability, CloudError, CloudProvider};
use controller_core::ControllerContext;
use controller_core::manager::{
    ControllerError, ControllerRegistry, ManagedController, RegistrationError, SharedCaches,
};
use controller_core::runtime::{
    self, CancellationToken, ReconcileError, Reconciler, RunOptions, object_key,
};
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use parking_lot::Mutex;
use tracing::{debug, info, warn};

pub use self::plan::{TAGGING_LABEL, checksum, parse_tags};
use self::plan::{departed, needs_tagging, tags_to_create};
use crate::AwsCloud;
use crate::error::api_error;
use crate::instances::{NodeKey, instance_id_from_provider_id};

/// The controller's name in `--controllers` (upstream's `TaggingControllerKey`).
pub const TAGGING_CONTROLLER: &str = "tagging";
/// The only resource kind upstream's `--resources` accepts.
pub const RESOURCE_INSTANCE: &str = "instance";
/// How long after its creation a Node's instance may be unknown to EC2 (eventual consistency) before the Node is
/// skipped instead of retried (upstream's grace period).
const NEW_NODE_GRACE: Duration = Duration::from_secs(300);

/// How often departed Nodes whose untagging failed are retried.
const UNTAG_RETRY: Duration = Duration::from_secs(30);

fn tags_arg(raw: &str) -> Result<BTreeMap<String, String>, String> {
    parse_tags(raw)
}

/// The tagging controller's flags, upstream's names.
#[derive(Clone, Debug, Default, clap::Args)]
#[non_exhaustive]
pub struct TaggingOptions {
    /// Tags for the EC2 instances of Nodes, `key=value,…`: added when a Node appears, removed when it goes
    /// (tagging controller; required when it runs).
    #[arg(long = "tags", value_parser = tags_arg, default_value = "")]
    pub tags: BTreeMap<String, String>,
    /// What the tagging controller tags: `instance` (the only kind).
    #[arg(long = "resources", value_delimiter = ',', default_value = RESOURCE_INSTANCE)]
    pub resources: Vec<String>,
    /// How many Nodes the tagging controller handles at once.
    #[arg(
        long = "tagging-controller-concurrent-node-syncs",
        default_value_t = 1,
        value_parser = clap::value_parser!(u16).range(1..=100)
    )]
    pub workers: u16,
}

impl TaggingOptions {
    /// Options tagging with `tags`, one worker.
    pub fn new(tags: BTreeMap<String, String>) -> Self {
        Self {
            tags,
            resources: vec![RESOURCE_INSTANCE.to_owned()],
            workers: 1,
        }
    }

    /// A startup error naming the flag when the options cannot work.
    fn validate(&self) -> Result<(), ControllerError> {
        if self.tags.is_empty() {
            return Err(ControllerError::startup(
                "--tags must not be empty when the tagging controller runs: give key=value,…",
            ));
        }
        if let Some(other) = self
            .resources
            .iter()
            .find(|r| r.as_str() != RESOURCE_INSTANCE)
        {
            return Err(ControllerError::startup(format!(
                "--resources: {other:?} is not supported; supported: {RESOURCE_INSTANCE}"
            )));
        }
        Ok(())
    }
}

/// Registers the tagging controller: the function to hand
/// `controller_core::app::App::controllers_with_flags` (feature `app` of controller-core).
pub fn register_controllers(
    options: TaggingOptions,
    registry: &mut ControllerRegistry,
) -> Result<(), RegistrationError> {
    registry
        .register(TaggingController::new(options))
        .map(|_| ())
}

/// The tagging controller.
#[derive(Clone, Debug)]
pub struct TaggingController {
    options: TaggingOptions,
}

impl TaggingController {
    /// The controller with these options.
    pub fn new(options: TaggingOptions) -> Self {
        Self { options }
    }
}

impl ManagedController for TaggingController {
    fn name(&self) -> &'static str {
        TAGGING_CONTROLLER
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["tagging-controller"]
    }

    fn enabled_by_default(&self) -> bool {
        false
    }

    fn required_capabilities(&self) -> &'static [Capability] {
        &[Capability::Instances]
    }

    fn run(
        &self,
        ctx: ControllerContext,
        caches: SharedCaches,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<(), ControllerError>> {
        let options = self.options.clone();
        Box::pin(async move {
            options.validate()?;
            let provider = Arc::clone(&ctx.provider);
            let name = provider.provider_name().to_owned();
            let cloud = <dyn CloudProvider>::downcast::<AwsCloud>(provider).ok_or_else(|| {
                ControllerError::startup(format!(
                    "the tagging controller works with --cloud-provider=aws only, not {name:?}"
                ))
            })?;
            let tagger = Arc::new(Tagger {
                checksum: checksum(&options.tags),
                tags: options.tags,
                cloud,
                nodes: Api::all(ctx.client.clone()),
                known: Mutex::new(BTreeMap::new()),
            });
            let nodes = caches.nodes();
            let untagging = untag_departed(
                Arc::clone(&tagger),
                nodes.store.clone(),
                nodes.generation.clone(),
                nodes.synced.clone(),
                shutdown.clone(),
            );
            let queue = ctx.metrics.work_queue(TAGGING_CONTROLLER);
            let changes = queue.track(nodes.changes, |node| Some(object_key(node.as_ref())));
            let controller = Controller::for_shared_stream(changes, nodes.store)
                .graceful_shutdown_on(shutdown.cancelled_owned());
            let run_options =
                RunOptions::new(options.workers, ctx.events.clone(), ctx.metrics.clone());
            futures::join!(
                runtime::run(controller, TagReconciler { tagger }, run_options),
                untagging
            );
            Ok(())
        })
    }
}

/// What tagging and untagging share.
struct Tagger {
    cloud: Arc<AwsCloud>,
    nodes: Api<Node>,
    tags: BTreeMap<String, String>,
    checksum: String,
    /// Tagged Nodes (name → instance ID), to untag when they go.
    known: Mutex<BTreeMap<String, String>>,
}

fn ec2_tags(tags: &BTreeMap<String, String>) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

impl Tagger {
    fn instance_id(node: &Node) -> Option<String> {
        let provider_id = node.spec.as_ref()?.provider_id.as_deref()?;
        instance_id_from_provider_id(provider_id).ok()
    }

    async fn create_tags(
        &self,
        instance: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), CloudError> {
        self.cloud
            .inner
            .ec2
            .create_tags()
            .resources(instance)
            .set_tags(Some(ec2_tags(tags)))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.cloud.cloud_error(api_error("CreateTags", e)))
    }

    /// Removes the configured tags (those still carrying the configured value) from `instances`.
    async fn delete_tags(&self, instances: &[String]) -> Result<(), CloudError> {
        self.cloud
            .inner
            .ec2
            .delete_tags()
            .set_resources(Some(instances.to_vec()))
            .set_tags(Some(ec2_tags(&self.tags)))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.cloud.cloud_error(api_error("DeleteTags", e)))
    }

    async fn label(&self, node: &str) -> Result<(), kube::Error> {
        let patch =
            serde_json::json!({ "metadata": { "labels": { TAGGING_LABEL: self.checksum } } });
        self.nodes
            .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
    }
}

struct TagReconciler {
    tagger: Arc<Tagger>,
}

impl Reconciler<Node> for TagReconciler {
    fn name(&self) -> &'static str {
        "tagging-controller"
    }

    /// Tags the Node's instance unless its label says it carries the tags: looks the instance up (its tags tell
    /// whether the cluster tag is missing), creates the tags, then labels the Node.
    async fn reconcile(&self, node: Arc<Node>) -> Result<Action, ReconcileError> {
        let t = &self.tagger;
        let name = node.name_any();
        let Some(instance) = Tagger::instance_id(&node) else {
            // No provider ID yet: the cloud-node controller sets it, which is a change that brings the Node back.
            debug!(node = %name, "no AWS provider ID yet; not tagged");
            return Ok(Action::await_change());
        };
        if !needs_tagging(&node, &t.checksum) {
            t.known.lock().insert(name, instance);
            return Ok(Action::await_change());
        }
        let found = t
            .cloud
            .lookup(&[NodeKey::Id(instance.clone())])
            .await
            .map_err(|e| ReconcileError::cloud("DescribeInstances", t.cloud.cloud_error(e)))?;
        let Some(described) = found.get(&NodeKey::Id(instance.clone())) else {
            let young = node
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|c| k8s_openapi::jiff::Timestamp::now().duration_since(c.0))
                .is_some_and(|age| age.as_secs() < NEW_NODE_GRACE.as_secs() as i64);
            if young {
                return Err(ReconcileError::cloud(
                    "CreateTags",
                    CloudError::transient(format!(
                        "instance {instance} is not visible yet (EC2 is eventually consistent); retrying"
                    )),
                ));
            }
            info!(node = %name, %instance, "instance does not exist; not tagged");
            return Ok(Action::await_change());
        };
        let keys: BTreeSet<String> = described
            .tags()
            .iter()
            .filter_map(|tag| tag.key().map(str::to_owned))
            .collect();
        let tags = tags_to_create(&t.tags, &keys, &t.cloud.inner.tagging.cluster_key);
        t.create_tags(&instance, &tags)
            .await
            .map_err(|e| ReconcileError::cloud("CreateTags", e))?;
        t.label(&name)
            .await
            .map_err(|e| ReconcileError::kube("label Node", e))?;
        info!(node = %name, %instance, tags = tags.len(), "instance tagged");
        t.known.lock().insert(name, instance);
        Ok(Action::await_change())
    }

    fn failure_reason(&self, _err: &ReconcileError) -> Option<&'static str> {
        Some("TaggingFailed")
    }

    fn queue_name(&self) -> &'static str {
        TAGGING_CONTROLLER
    }
}

/// Removes the configured tags from the instances of deleted Nodes: on every change of the Node cache (deletions
/// included), one `DeleteTags` for all departed Nodes; a failure is retried every 30 s. Nodes tagged in an earlier
/// term are known from their label; Nodes deleted while no replica ran are not seen (as upstream).
async fn untag_departed(
    tagger: Arc<Tagger>,
    store: Store<Node>,
    mut generation: tokio::sync::watch::Receiver<u64>,
    mut synced: controller_core::runtime::Synced,
    shutdown: CancellationToken,
) {
    tokio::select! {
        () = shutdown.cancelled() => return,
        ready = synced.wait() => if !ready { return },
    }
    {
        let mut known = tagger.known.lock();
        for node in store.state() {
            if let Some(instance) = Tagger::instance_id(&node)
                && !needs_tagging(&node, &tagger.checksum)
            {
                known.insert(node.name_any(), instance);
            }
        }
    }
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = generation.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(UNTAG_RETRY) => {}
        }
        let present: BTreeSet<String> = store.state().iter().map(|n| n.name_any()).collect();
        let gone = departed(&tagger.known.lock(), &present);
        if gone.is_empty() {
            continue;
        }
        let instances: Vec<String> = gone.iter().map(|(_, i)| i.clone()).collect();
        match tagger.delete_tags(&instances).await {
            Ok(()) => {
                let mut known = tagger.known.lock();
                for (node, instance) in &gone {
                    known.remove(node);
                    info!(%node, %instance, "node deleted; its instance's tags removed");
                }
            }
            Err(e) => {
                warn!(error = %e, ?instances, "removing the tags of deleted nodes failed; retrying")
            }
        }
    }
}
