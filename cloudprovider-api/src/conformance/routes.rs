//! Route checks: create, list, idempotent create, delete, delete of an absent route.

use super::{CheckFn, ConformanceReport, ConformanceTarget, call, ensure, setup};
use crate::{Route, Routes, node_addresses};

pub(super) const CHECKS: [&str; 2] = ["routes/lifecycle", "routes/delete-absent-succeeds"];

pub(super) async fn run(target: &dyn ConformanceTarget, report: &mut ConformanceReport) {
    let provider = target.provider();
    let Some(routes) = provider.routes() else {
        report.skip_all(&CHECKS, "routes not supported");
        return;
    };
    report.push(CHECKS[0], lifecycle(target, routes).await);
    report.push(CHECKS[1], delete_absent(target, routes).await);
}

async fn lifecycle(target: &dyn ConformanceTarget, routes: &dyn Routes) -> CheckFn {
    let cluster = target.cluster_name();
    let node = setup(
        "create an instance",
        target.create_instance("conformance-route").await,
    )?;
    let result = async {
        let name = node.metadata.name.clone().unwrap_or_default();
        let uid = node.metadata.uid.clone().unwrap_or_else(|| name.clone());
        let [cidr, _] = target.route_cidrs();
        let route = Route {
            name: String::new(),
            target_node: name.clone(),
            target_node_addresses: node_addresses(&node),
            destination_cidr: cidr,
            blackhole: false,
        };
        call(
            "create_route",
            routes.create_route(&cluster, &uid, &route).await,
        )?;
        call(
            "create_route (again)",
            routes.create_route(&cluster, &uid, &route).await,
        )?;
        let listed = call("list_routes", routes.list_routes(&cluster).await)?;
        let ours: Vec<&Route> = listed
            .iter()
            .filter(|r| r.destination_cidr == cidr)
            .collect();
        ensure!(
            ours.len() == 1,
            "after creating a route for {cidr} twice, list_routes shows {} routes for it: {ours:?}",
            ours.len()
        );
        ensure!(
            ours[0].target_node == name && !ours[0].blackhole,
            "listed route {:?} does not target node {name:?}",
            ours[0]
        );
        let listed_route = ours[0].clone();
        call(
            "delete_route",
            routes.delete_route(&cluster, &listed_route).await,
        )?;
        let after = call("list_routes", routes.list_routes(&cluster).await)?;
        ensure!(
            !after.iter().any(|r| r.destination_cidr == cidr),
            "route for {cidr} still listed after delete_route"
        );
        Ok(())
    }
    .await;
    let _ = target.terminate_instance(&node).await;
    result
}

async fn delete_absent(target: &dyn ConformanceTarget, routes: &dyn Routes) -> CheckFn {
    let [_, cidr] = target.route_cidrs();
    let route = Route {
        name: "conformance-absent-route".into(),
        target_node: "conformance-absent".into(),
        target_node_addresses: vec![],
        destination_cidr: cidr,
        blackhole: false,
    };
    call(
        "delete_route (absent)",
        routes.delete_route(&target.cluster_name(), &route).await,
    )?;
    Ok(())
}
