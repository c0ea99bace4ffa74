//! Instance checks: exists / shutdown / metadata semantics.

use k8s_openapi::api::core::v1::Node;

use super::{
    CheckFn, ConformanceReport, ConformanceTarget, Failure, call, ensure, eventually, setup,
};
use crate::{CloudError, InstanceState, Instances, ProviderId, node_provider_id};

pub(super) const CHECKS: [&str; 7] = [
    "instances/running-exists",
    "instances/metadata",
    "instances/stopped-exists-and-is-shutdown",
    "instances/terminated-is-gone",
    "instances/absent-is-not-found",
    "instances/batch-states-in-order",
    "instances/absent-by-name-is-not-found",
];

pub(super) async fn run(target: &dyn ConformanceTarget, report: &mut ConformanceReport) {
    let provider = target.provider();
    let Some(instances) = provider.instances() else {
        report.skip_all(&CHECKS, "instances not supported");
        return;
    };
    let running = target.create_instance("conformance-running").await;
    let stopped = target.create_instance("conformance-stopped").await;
    let doomed = target.create_instance("conformance-terminated").await;

    report.push(
        CHECKS[0],
        with(&running, |n| running_exists(instances, n)).await,
    );
    report.push(
        CHECKS[1],
        with(&running, |n| {
            metadata(instances, provider.provider_name(), n)
        })
        .await,
    );
    report.push(
        CHECKS[2],
        with(&stopped, |n| stopped_exists(target, instances, n)).await,
    );
    report.push(
        CHECKS[3],
        with(&doomed, |n| terminated_gone(target, instances, n)).await,
    );
    report.push(
        CHECKS[4],
        absent_not_found(instances, &target.absent_node()).await,
    );
    let stopped_ok = report.outcome(CHECKS[2]) == Some(&super::Outcome::Passed);
    let batch = match (&running, &stopped) {
        (Ok(r), Ok(s)) if stopped_ok => batch_states(instances, r, s, &target.absent_node()).await,
        _ => Err(Failure::Skipped(
            "needs a running and a stopped instance".into(),
        )),
    };
    report.push(CHECKS[5], batch);
    report.push(
        CHECKS[6],
        absent_not_found(instances, &absent_by_name()).await,
    );

    for node in [running, stopped].into_iter().flatten() {
        let _ = target.terminate_instance(&node).await;
    }
}

/// Runs `check` on the created node, or reports why there is none.
async fn with<'a, F, Fut>(node: &'a Result<Node, CloudError>, check: F) -> CheckFn
where
    F: FnOnce(&'a Node) -> Fut,
    Fut: std::future::Future<Output = CheckFn>,
{
    match node {
        Ok(n) => check(n).await,
        Err(e) => setup::<()>("create an instance", Err(clone_error(e))),
    }
}

fn clone_error(e: &CloudError) -> CloudError {
    match e {
        CloudError::NotImplemented(s) => CloudError::NotImplemented(s),
        other => CloudError::transient(other.to_string()),
    }
}

/// A Node without `spec.providerID` whose name no instance has: the name-lookup path.
fn absent_by_name() -> Node {
    let mut node = super::node_with_provider_id("conformance-absent-by-name", "");
    node.spec = None;
    node
}

async fn running_exists(instances: &dyn Instances, node: &Node) -> CheckFn {
    ensure!(
        call("instance_exists", instances.instance_exists(node).await)?,
        "instance_exists of a running instance returned false"
    );
    ensure!(
        !call("instance_shutdown", instances.instance_shutdown(node).await)?,
        "instance_shutdown of a running instance returned true"
    );
    Ok(())
}

async fn metadata(instances: &dyn Instances, provider_name: &str, node: &Node) -> CheckFn {
    let md = call("instance_metadata", instances.instance_metadata(node).await)?;
    let id = ProviderId::parse(&md.provider_id)
        .map_err(|e| Failure::Failed(format!("metadata provider_id {:?}: {e}", md.provider_id)))?;
    ensure!(
        id.provider() == provider_name,
        "metadata provider_id {:?} does not use the provider's name {provider_name:?}",
        md.provider_id
    );
    if let Some(existing) = node_provider_id(node) {
        ensure!(
            existing == md.provider_id,
            "metadata provider_id {:?} differs from the node's spec.providerID {existing:?}",
            md.provider_id
        );
    }
    ensure!(
        md.zone.is_empty() || !md.region.is_empty(),
        "metadata has zone {:?} but no region",
        md.zone
    );
    Ok(())
}

async fn stopped_exists(
    target: &dyn ConformanceTarget,
    instances: &dyn Instances,
    node: &Node,
) -> CheckFn {
    setup("stop an instance", target.stop_instance(node).await)?;
    let shut = eventually(target, || async {
        matches!(instances.instance_shutdown(node).await, Ok(true))
    })
    .await;
    ensure!(
        shut,
        "instance_shutdown of a stopped instance never returned true"
    );
    ensure!(
        call("instance_exists", instances.instance_exists(node).await)?,
        "instance_exists of a STOPPED instance returned false: the Node would be deleted"
    );
    let states = instances.instance_states(&[node]).await;
    ensure!(
        matches!(states.as_slice(), [Ok(InstanceState::Shutdown)]),
        "instance_states of a stopped instance returned {states:?}, want [Ok(Shutdown)]"
    );
    Ok(())
}

async fn terminated_gone(
    target: &dyn ConformanceTarget,
    instances: &dyn Instances,
    node: &Node,
) -> CheckFn {
    setup(
        "terminate an instance",
        target.terminate_instance(node).await,
    )?;
    let gone = eventually(target, || async {
        matches!(instances.instance_exists(node).await, Ok(false))
    })
    .await;
    ensure!(
        gone,
        "instance_exists of a terminated instance never returned false"
    );
    let md = instances.instance_metadata(node).await;
    ensure!(
        matches!(md, Err(CloudError::NotFound { .. })),
        "instance_metadata of a terminated instance returned {md:?}, want NotFound"
    );
    Ok(())
}

async fn absent_not_found(instances: &dyn Instances, node: &Node) -> CheckFn {
    let exists = call("instance_exists", instances.instance_exists(node).await)?;
    ensure!(
        !exists,
        "instance_exists of a never-created instance returned true"
    );
    let md = instances.instance_metadata(node).await;
    ensure!(
        matches!(md, Err(CloudError::NotFound { .. })),
        "instance_metadata of a never-created instance returned {md:?}, want NotFound"
    );
    let shut = instances.instance_shutdown(node).await;
    ensure!(
        matches!(shut, Err(CloudError::NotFound { .. })),
        "instance_shutdown of a never-created instance returned {shut:?}, want NotFound"
    );
    Ok(())
}

async fn batch_states(
    instances: &dyn Instances,
    running: &Node,
    stopped: &Node,
    absent: &Node,
) -> CheckFn {
    let states = instances.instance_states(&[running, stopped, absent]).await;
    let got: Vec<_> = states.iter().map(|s| s.as_ref().ok().copied()).collect();
    let want = [
        Some(InstanceState::Running),
        Some(InstanceState::Shutdown),
        Some(InstanceState::Gone),
    ];
    ensure!(
        got == want,
        "instance_states([running, stopped, absent]) returned {states:?}, want {want:?}"
    );
    Ok(())
}
