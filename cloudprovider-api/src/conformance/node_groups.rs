//! Node group checks: sizes move as asked, bounds are enforced, instances and templates are reported.

use super::{
    CheckFn, ConformanceReport, ConformanceTarget, Failure, call, ensure, eventually,
    node_with_provider_id,
};
use crate::{CloudError, CloudInstanceState, NodeGroup, NodeGroups};

pub(super) const CHECKS: [&str; 6] = [
    "node-groups/sizes-within-bounds",
    "node-groups/increase-size",
    "node-groups/increase-beyond-max-is-rejected",
    "node-groups/delete-instances",
    "node-groups/decrease-target-size-cannot-delete-running",
    "node-groups/template-node",
];

pub(super) async fn run(target: &dyn ConformanceTarget, report: &mut ConformanceReport) {
    let provider = target.provider();
    let Some(ng) = provider.node_groups() else {
        report.skip_all(&CHECKS, "node groups not supported");
        return;
    };
    let groups = match ng.node_groups().await {
        Ok(g) if !g.is_empty() => g,
        Ok(_) => {
            report.push(
                CHECKS[0],
                Err(Failure::Failed("node_groups() returned no groups".into())),
            );
            report.skip_all(&CHECKS[1..], "no node groups");
            return;
        }
        Err(e) => {
            report.push(
                CHECKS[0],
                Err(Failure::Failed(format!(
                    "node_groups() returned an error: {e}"
                ))),
            );
            report.skip_all(&CHECKS[1..], "no node groups");
            return;
        }
    };
    report.push(CHECKS[0], bounds(ng, &groups).await);

    // A group with room for two more instances.
    let mut roomy = None;
    for g in &groups {
        if let Ok(size) = ng.target_size(&g.id).await
            && size + 2 <= g.max_size
        {
            roomy = Some((g.clone(), size));
            break;
        }
    }
    let Some((group, size)) = roomy else {
        report.skip_all(&CHECKS[1..5], "no group has room for two more instances");
        report.push(CHECKS[5], template(ng, &groups[0]).await);
        return;
    };
    let increased = increase(target, ng, &group, size).await;
    let ok = increased.is_ok();
    report.push(CHECKS[1], increased.map(|_| ()));
    report.push(CHECKS[2], beyond_max(ng, &group).await);
    if ok {
        report.push(CHECKS[3], delete(target, ng, &group, size + 2).await);
    } else {
        report.push(
            CHECKS[3],
            Err(Failure::Skipped("increase_size failed".into())),
        );
    }
    report.push(CHECKS[4], decrease_running(ng, &group).await);
    report.push(CHECKS[5], template(ng, &group).await);
    restore(ng, &group, size).await;
}

async fn bounds(ng: &dyn NodeGroups, groups: &[NodeGroup]) -> CheckFn {
    for g in groups {
        ensure!(!g.id.is_empty(), "a node group has an empty id");
        ensure!(
            g.min_size <= g.max_size,
            "group {}: min {} > max {}",
            g.id,
            g.min_size,
            g.max_size
        );
        let size = call("target_size", ng.target_size(&g.id).await)?;
        ensure!(
            (g.min_size..=g.max_size).contains(&size),
            "group {}: target size {size} outside [{}, {}]",
            g.id,
            g.min_size,
            g.max_size
        );
    }
    let unknown = ng.target_size("conformance-no-such-group").await;
    ensure!(
        matches!(unknown, Err(CloudError::NotFound { .. })),
        "target_size of an unknown group returned {unknown:?}, want NotFound"
    );
    Ok(())
}

async fn increase(
    target: &dyn ConformanceTarget,
    ng: &dyn NodeGroups,
    g: &NodeGroup,
    size: u32,
) -> CheckFn {
    call("increase_size(2)", ng.increase_size(&g.id, 2).await)?;
    let now = call("target_size", ng.target_size(&g.id).await)?;
    ensure!(
        now == size + 2,
        "after increase_size(2) from {size}, target size is {now}"
    );
    let want = (size + 2) as usize;
    let shown = eventually(target, || async {
        ng.instances(&g.id)
            .await
            .map(|i| live(&i) == want)
            .unwrap_or(false)
    })
    .await;
    let got = ng.instances(&g.id).await.map(|i| live(&i));
    ensure!(
        shown,
        "instances() shows {got:?} live instances, want {want} (including not-yet-registered)"
    );
    Ok(())
}

fn live(instances: &[crate::CloudInstance]) -> usize {
    instances
        .iter()
        .filter(|i| i.state != CloudInstanceState::Deleting)
        .count()
}

async fn beyond_max(ng: &dyn NodeGroups, g: &NodeGroup) -> CheckFn {
    let before = call("target_size", ng.target_size(&g.id).await)?;
    ensure!(
        before <= g.max_size,
        "target size {before} is above max {}",
        g.max_size
    );
    let delta = g.max_size - before + 1;
    let r = ng.increase_size(&g.id, delta).await;
    ensure!(
        matches!(r, Err(CloudError::InvalidInput { .. })),
        "increase_size({delta}) past max {} returned {r:?}, want InvalidInput",
        g.max_size
    );
    let after = call("target_size", ng.target_size(&g.id).await)?;
    ensure!(
        after == before,
        "a rejected increase changed the target size from {before} to {after}"
    );
    Ok(())
}

async fn delete(
    target: &dyn ConformanceTarget,
    ng: &dyn NodeGroups,
    g: &NodeGroup,
    size: u32,
) -> CheckFn {
    let instances = call("instances", ng.instances(&g.id).await)?;
    let Some(victim) = instances
        .iter()
        .rev()
        .find(|i| i.state != CloudInstanceState::Deleting)
    else {
        return Err(Failure::Failed(
            "instances() is empty after increase_size".into(),
        ));
    };
    let node = node_with_provider_id("conformance-ng-node", &victim.provider_id);
    let owner = call("node_group_for_node", ng.node_group_for_node(&node).await)?;
    ensure!(
        owner.as_deref() == Some(g.id.as_str()),
        "node_group_for_node of an instance of {} returned {owner:?}",
        g.id
    );
    let stranger = node_with_provider_id("conformance-absent", "conformance://absent");
    let none = call(
        "node_group_for_node (absent)",
        ng.node_group_for_node(&stranger).await,
    )?;
    ensure!(
        none.is_none(),
        "node_group_for_node of an unknown node returned {none:?}"
    );

    let bogus = ng
        .delete_instances(&g.id, &["conformance://no-such-instance".into()])
        .await;
    ensure!(
        matches!(bogus, Err(CloudError::NotFound { .. })),
        "delete_instances of an instance not in the group returned {bogus:?}, want NotFound"
    );
    ensure!(
        call("target_size", ng.target_size(&g.id).await)? == size,
        "a rejected delete_instances changed the target size"
    );

    let victim_id = victim.provider_id.clone();
    call(
        "delete_instances",
        ng.delete_instances(&g.id, std::slice::from_ref(&victim_id))
            .await,
    )?;
    let now = call("target_size", ng.target_size(&g.id).await)?;
    ensure!(
        now == size - 1,
        "after deleting one instance of {size}, target size is {now}"
    );
    let gone = eventually(target, || async {
        ng.instances(&g.id).await.is_ok_and(|i| {
            !i.iter()
                .any(|i| i.provider_id == victim_id && i.state != CloudInstanceState::Deleting)
        })
    })
    .await;
    ensure!(gone, "deleted instance {victim_id} is still listed as live");
    Ok(())
}

async fn decrease_running(ng: &dyn NodeGroups, g: &NodeGroup) -> CheckFn {
    let before = call("target_size", ng.target_size(&g.id).await)?;
    let r = ng.decrease_target_size(&g.id, before + 1).await;
    ensure!(
        matches!(r, Err(CloudError::InvalidInput { .. })),
        "decrease_target_size({}) with target {before} returned {r:?}, want InvalidInput",
        before + 1
    );
    let after = call("target_size", ng.target_size(&g.id).await)?;
    ensure!(
        after == before,
        "a rejected decrease changed the target size from {before} to {after}"
    );
    Ok(())
}

async fn template(ng: &dyn NodeGroups, g: &NodeGroup) -> CheckFn {
    let node = call("template_node", ng.template_node(&g.id).await)?;
    let status = node.status.unwrap_or_default();
    for (what, list) in [
        ("capacity", status.capacity),
        ("allocatable", status.allocatable),
    ] {
        let list = list.unwrap_or_default();
        for res in ["cpu", "memory", "pods"] {
            ensure!(
                list.contains_key(res),
                "template_node status.{what} lacks {res:?}"
            );
        }
    }
    Ok(())
}

/// Puts the group back at its original size, deleting what the checks added.
async fn restore(ng: &dyn NodeGroups, g: &NodeGroup, size: u32) {
    let Ok(now) = ng.target_size(&g.id).await else {
        return;
    };
    if now <= size {
        return;
    }
    let Ok(instances) = ng.instances(&g.id).await else {
        return;
    };
    let extra: Vec<String> = instances
        .iter()
        .rev()
        .filter(|i| i.state != CloudInstanceState::Deleting)
        .take((now - size) as usize)
        .map(|i| i.provider_id.clone())
        .collect();
    let _ = ng.delete_instances(&g.id, &extra).await;
}
