//! Load balancer checks: idempotent ensure and delete, absent semantics, host updates.

use k8s_openapi::api::core::v1::{LoadBalancerStatus, Node, Service};

use super::{
    CheckFn, ConformanceReport, ConformanceTarget, Failure, call, ensure, load_balancer_service,
    setup,
};
use crate::{CloudError, LoadBalancers};

pub(super) const CHECKS: [&str; 5] = [
    "load-balancers/absent-get-is-none-and-delete-succeeds",
    "load-balancers/name-is-stable-and-distinct",
    "load-balancers/ensure-is-idempotent",
    "load-balancers/update-hosts",
    "load-balancers/delete-is-idempotent",
];

pub(super) async fn run(target: &dyn ConformanceTarget, report: &mut ConformanceReport) {
    let provider = target.provider();
    let Some(lbs) = provider.load_balancers() else {
        report.skip_all(&CHECKS, "load balancers not supported");
        return;
    };
    let cluster = target.cluster_name();
    let service = |name: &str, uid: &str| {
        let mut svc = load_balancer_service(name, uid);
        target.prepare_service(&mut svc);
        svc
    };

    let absent = service(
        "conformance-absent-lb",
        "00000000-0000-4000-8000-00000000abcd",
    );
    report.push(CHECKS[0], absent_lb(lbs, &cluster, &absent).await);
    report.push(CHECKS[1], names(lbs, &cluster, &service).await);

    let nodes: Vec<Node> = match (
        target.create_instance("conformance-lb-a").await,
        target.create_instance("conformance-lb-b").await,
    ) {
        (Ok(a), Ok(b)) => vec![a, b],
        (Err(e), _) | (_, Err(e)) => {
            // A target that cannot create instances skips; one whose creation fails fails the checks.
            let (skip, text) = match setup::<()>("create an instance", Err(e)).err() {
                Some(Failure::Skipped(t)) => (true, t),
                Some(Failure::Failed(t)) => (false, t),
                None => (true, String::new()),
            };
            for name in &CHECKS[2..] {
                let why = format!("no backend nodes: {text}");
                report.push(
                    name,
                    Err(if skip {
                        Failure::Skipped(why)
                    } else {
                        Failure::Failed(why)
                    }),
                );
            }
            return;
        }
    };
    let svc = service("conformance-lb", "11111111-2222-4333-8444-555555555555");
    let ensured = ensure_idempotent(lbs, &cluster, &svc, &nodes[..1]).await;
    let created = ensured.is_ok();
    report.push(CHECKS[2], ensured);
    if created {
        report.push(CHECKS[3], update_hosts(lbs, &cluster, &svc, &nodes).await);
    } else {
        report.push(CHECKS[3], Err(Failure::Skipped("ensure failed".into())));
    }
    report.push(CHECKS[4], delete_idempotent(lbs, &cluster, &svc).await);
    for node in &nodes {
        let _ = target.terminate_instance(node).await;
    }
}

async fn absent_lb(lbs: &dyn LoadBalancers, cluster: &str, svc: &Service) -> CheckFn {
    let got = call(
        "get_load_balancer",
        lbs.get_load_balancer(cluster, svc).await,
    )?;
    ensure!(
        got.is_none(),
        "get_load_balancer of a never-created LB returned {got:?}"
    );
    call(
        "ensure_load_balancer_deleted (never created)",
        lbs.ensure_load_balancer_deleted(cluster, svc).await,
    )?;
    Ok(())
}

async fn names(
    lbs: &dyn LoadBalancers,
    cluster: &str,
    service: &dyn Fn(&str, &str) -> Service,
) -> CheckFn {
    let a = service("n1", "aaaaaaaa-0000-4000-8000-000000000001");
    let b = service("n2", "bbbbbbbb-0000-4000-8000-000000000002");
    let (na, na2, nb) = (
        lbs.load_balancer_name(cluster, &a),
        lbs.load_balancer_name(cluster, &a),
        lbs.load_balancer_name(cluster, &b),
    );
    ensure!(!na.is_empty(), "load_balancer_name is empty");
    ensure!(
        na == na2,
        "load_balancer_name is not stable: {na:?} then {na2:?}"
    );
    ensure!(
        na != nb,
        "two Services with different UIDs got the same LB name {na:?}"
    );
    Ok(())
}

fn has_ingress(status: &LoadBalancerStatus) -> bool {
    status
        .ingress
        .as_ref()
        .is_some_and(|i| i.iter().any(|i| i.ip.is_some() || i.hostname.is_some()))
}

async fn ensure_idempotent(
    lbs: &dyn LoadBalancers,
    cluster: &str,
    svc: &Service,
    nodes: &[Node],
) -> CheckFn {
    let first = call(
        "ensure_load_balancer",
        lbs.ensure_load_balancer(cluster, svc, nodes).await,
    )?;
    ensure!(
        has_ingress(&first),
        "ensure_load_balancer returned a status without ingress: {first:?}"
    );
    let second = call(
        "ensure_load_balancer (second time)",
        lbs.ensure_load_balancer(cluster, svc, nodes).await,
    )?;
    ensure!(
        first == second,
        "ensure_load_balancer is not idempotent: first {first:?}, then {second:?}"
    );
    let got = call(
        "get_load_balancer",
        lbs.get_load_balancer(cluster, svc).await,
    )?;
    ensure!(
        got.as_ref() == Some(&first),
        "get_load_balancer after ensure returned {got:?}, want Some({first:?})"
    );
    Ok(())
}

async fn update_hosts(
    lbs: &dyn LoadBalancers,
    cluster: &str,
    svc: &Service,
    nodes: &[Node],
) -> CheckFn {
    call(
        "update_load_balancer (more hosts)",
        lbs.update_load_balancer(cluster, svc, nodes).await,
    )?;
    call(
        "update_load_balancer (no hosts)",
        lbs.update_load_balancer(cluster, svc, &[]).await,
    )?;
    let got = call(
        "get_load_balancer",
        lbs.get_load_balancer(cluster, svc).await,
    )?;
    ensure!(got.is_some(), "the LB vanished after update_load_balancer");
    Ok(())
}

async fn delete_idempotent(lbs: &dyn LoadBalancers, cluster: &str, svc: &Service) -> CheckFn {
    let deleted = lbs.ensure_load_balancer_deleted(cluster, svc).await;
    ensure!(
        !matches!(deleted, Err(CloudError::ImplementedElsewhere(_))),
        "ensure_load_balancer_deleted answered ImplementedElsewhere, which deletion never may"
    );
    call("ensure_load_balancer_deleted", deleted)?;
    let got = call(
        "get_load_balancer",
        lbs.get_load_balancer(cluster, svc).await,
    )?;
    ensure!(
        got.is_none(),
        "get_load_balancer after delete returned {got:?}, want None"
    );
    call(
        "ensure_load_balancer_deleted (second time)",
        lbs.ensure_load_balancer_deleted(cluster, svc).await,
    )?;
    Ok(())
}
