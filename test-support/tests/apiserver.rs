//! Proof against a real kube-apiserver (+ kube-scheduler and kwok): CRUD, patches of the status
//! subresource, optimistic concurrency, watches, and cleanup.
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::watcher::{self, Event};
use serde_json::json;
use test_support::{ControlPlane, KwokOptions, NodeBuilder, kwok_node};

const WAIT: Duration = Duration::from_secs(30);

type Events<K> = BoxStream<'static, Result<Event<K>, watcher::Error>>;

/// A watcher on one object by name, returned once its initial list is done.
async fn watch_named<K>(api: &Api<K>, name: &str) -> Result<Events<K>>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let mut events = watcher::watcher(
        api.clone(),
        watcher::Config::default().fields(&format!("metadata.name={name}")),
    )
    .boxed();
    next_event(&mut events, "initial list", |e| {
        matches!(e, Event::InitDone)
    })
    .await?;
    Ok(events)
}

/// The next event matching `want`, skipping others; fails after [`WAIT`].
async fn next_event<K: std::fmt::Debug>(
    events: &mut Events<K>,
    what: &str,
    want: impl Fn(&Event<K>) -> bool,
) -> Result<Event<K>> {
    let found = tokio::time::timeout(WAIT, async {
        while let Some(event) = events.try_next().await? {
            if want(&event) {
                return Ok(event);
            }
        }
        bail!("watch ended")
    })
    .await;
    found.with_context(|| format!("no watch event for {what} within {WAIT:?}"))?
}

fn applied<K>(event: &Event<K>, pred: impl Fn(&K) -> bool) -> bool {
    matches!(event, Event::Apply(k) | Event::InitApply(k) if pred(k))
}

#[tokio::test]
async fn node_create_patch_status_watch_delete() -> Result<()> {
    let cp = ControlPlane::start().await?;
    let nodes: Api<Node> = Api::all(cp.client());
    let name = "node-a";
    let mut events = watch_named(&nodes, name).await?;

    let node = NodeBuilder::new(name).label("a", "1").build();
    nodes.create(&PostParams::default(), &node).await?;
    next_event(&mut events, "create", |e| {
        applied(e, |n: &Node| n.metadata.name.as_deref() == Some(name))
    })
    .await?;

    // Merge patch of metadata.labels.
    let pp = PatchParams::default();
    nodes
        .patch(
            name,
            &pp,
            &Patch::Merge(json!({"metadata": {"labels": {"b": "2"}}})),
        )
        .await?;
    next_event(&mut events, "label patch", |e| {
        applied(e, |n: &Node| {
            n.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.get("b").is_some_and(|v| v == "2"))
        })
    })
    .await?;

    // Merge patch of the status subresource: a condition and an address.
    let status = json!({"status": {
        "conditions": [{"type": "NetworkUnavailable", "status": "False", "reason": "RouteCreated",
                        "message": "set by test", "lastTransitionTime": "2030-01-01T00:00:00Z"}],
        "addresses": [{"type": "InternalIP", "address": "10.1.2.3"}],
    }});
    nodes.patch_status(name, &pp, &Patch::Merge(status)).await?;
    next_event(&mut events, "status patch", |e| {
        applied(e, |n: &Node| {
            n.status
                .as_ref()
                .and_then(|s| s.addresses.as_ref())
                .is_some_and(|a| !a.is_empty())
        })
    })
    .await?;

    let got = nodes.get(name).await?;
    let labels = got.metadata.labels.clone().unwrap_or_default();
    ensure!(
        labels.get("a").map(String::as_str) == Some("1"),
        "label a lost: {labels:?}"
    );
    ensure!(
        labels.get("b").map(String::as_str) == Some("2"),
        "label b missing: {labels:?}"
    );
    let status = got.status.context("no status")?;
    let condition = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "NetworkUnavailable");
    ensure!(
        condition
            .is_some_and(|c| c.status == "False" && c.reason.as_deref() == Some("RouteCreated"))
    );
    let addresses = status.addresses.unwrap_or_default();
    ensure!(
        addresses
            .iter()
            .any(|a| a.type_ == "InternalIP" && a.address == "10.1.2.3"),
        "{addresses:?}"
    );

    // A status change through the main resource is ignored (status is a subresource).
    nodes
        .patch(
            name,
            &pp,
            &Patch::Merge(json!({"status": {"addresses": []}})),
        )
        .await?;
    let addresses = nodes
        .get_status(name)
        .await?
        .status
        .and_then(|s| s.addresses)
        .unwrap_or_default();
    ensure!(
        addresses.len() == 1,
        "main resource patch changed status: {addresses:?}"
    );

    nodes.delete(name, &DeleteParams::default()).await?;
    next_event(
        &mut events,
        "delete",
        |e| matches!(e, Event::Delete(n) if n.metadata.name.as_deref() == Some(name)),
    )
    .await?;
    ensure!(nodes.get_opt(name).await?.is_none());

    // kubectl from the same tools works against it.
    let out = cp
        .kubectl()
        .args(["get", "--raw", "/readyz"])
        .output()
        .await?;
    ensure!(
        out.status.success() && out.stdout == b"ok",
        "kubectl: {out:?}"
    );
    Ok(())
}

#[tokio::test]
async fn lease_update_conflict_watch_delete() -> Result<()> {
    let cp = ControlPlane::start().await?;
    let client = cp.client();
    let ns = "leases";
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await?;
    let leases: Api<Lease> = Api::namespaced(client, ns);
    let name = "leader";
    let mut events = watch_named(&leases, name).await?;

    // MicroTime keeps microseconds; truncate so values compare equal after a round trip.
    let now = Timestamp::from_microsecond(Timestamp::now().as_microsecond())?;
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15, "acquireTime": MicroTime(now),
                 "renewTime": MicroTime(now), "leaseTransitions": 0},
    }))?;
    let created = leases.create(&PostParams::default(), &lease).await?;
    next_event(&mut events, "create", |e| applied(e, |_| true)).await?;

    // Renew with the current resourceVersion (kept from `created`): accepted.
    let renewed_at = MicroTime(now + Duration::from_secs(2));
    let mut renew = created.clone();
    renew.spec.as_mut().context("no spec")?.renew_time = Some(renewed_at.clone());
    let renewed = leases.replace(name, &PostParams::default(), &renew).await?;
    ensure!(renewed.metadata.resource_version != created.metadata.resource_version);
    ensure!(renewed.spec.as_ref().and_then(|s| s.renew_time.clone()) == Some(renewed_at.clone()));
    next_event(&mut events, "renew", |e| {
        applied(e, |l: &Lease| {
            l.spec.as_ref().and_then(|s| s.renew_time.as_ref()) == Some(&renewed_at)
        })
    })
    .await?;

    // A writer holding the stale resourceVersion loses: 409 Conflict.
    let mut stale = created.clone();
    stale.spec.as_mut().context("no spec")?.holder_identity = Some("b".into());
    match leases.replace(name, &PostParams::default(), &stale).await {
        Err(kube::Error::Api(status)) if status.code == 409 && status.is_conflict() => {}
        other => bail!("expected 409 Conflict for a stale resourceVersion, got {other:?}"),
    }
    let current = leases.get(name).await?;
    ensure!(current.spec.and_then(|s| s.holder_identity).as_deref() == Some("a"));

    leases.delete(name, &DeleteParams::default()).await?;
    next_event(&mut events, "delete", |e| matches!(e, Event::Delete(_))).await?;
    ensure!(leases.get_opt(name).await?.is_none());
    Ok(())
}

fn is_node_ready(node: Option<&Node>) -> bool {
    let conditions = node
        .and_then(|n| n.status.as_ref())
        .and_then(|s| s.conditions.as_ref());
    conditions.is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test]
async fn scheduler_and_kwok_make_node_ready_and_run_pod() -> Result<()> {
    let cp = ControlPlane::builder()
        .scheduler(true)
        .kwok(KwokOptions::default())
        .start()
        .await?;
    let client = cp.client();
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .create(&PostParams::default(), &kwok_node("kwok-1"))
        .await?;
    let ready = tokio::time::timeout(
        WAIT,
        await_condition(nodes.clone(), "kwok-1", is_node_ready),
    )
    .await
    .context("kwok did not make the node Ready")??;
    ensure!(ready.is_some());
    // kwok keeps the node's Lease (node lease duration defaults to 40s).
    let node_leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease = tokio::time::timeout(
        WAIT,
        await_condition(node_leases, "kwok-1", |l: Option<&Lease>| l.is_some()),
    )
    .await
    .context("kwok did not create the node lease")??;
    ensure!(
        lease
            .and_then(|l| l.spec)
            .and_then(|s| s.lease_duration_seconds)
            == Some(40)
    );

    // The scheduler binds a pod to the kwok node, and kwok runs it.
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "example.invalid/none"}]},
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    let running = tokio::time::timeout(
        WAIT,
        await_condition(pods, "p", conditions::is_pod_running()),
    )
    .await
    .context("pod was not scheduled and run")??;
    ensure!(
        running
            .and_then(|p| p.spec)
            .and_then(|s| s.node_name)
            .as_deref()
            == Some("kwok-1")
    );
    Ok(())
}

#[tokio::test]
async fn drop_stops_everything_even_on_panic() -> Result<()> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let cp = ControlPlane::start().await.expect("start");
        let port: u16 = cp
            .server_url()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port");
        tx.send((cp.dir().to_path_buf(), port)).expect("send");
        panic!("deliberate panic while the control plane runs");
    });
    let joined = task.await;
    ensure!(
        joined.is_err_and(|e| e.is_panic()),
        "the task should have panicked"
    );
    let (dir, port) = rx.await?;
    ensure!(!dir.exists(), "{} still exists", dir.display());
    ensure!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "apiserver still listens on {port}"
    );
    Ok(())
}
