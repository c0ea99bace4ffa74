//! One Node watch shared by every controller.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use tokio::sync::{broadcast, watch};
use tracing::warn;

/// How many changes a subscriber may fall behind before it is resynced from the store.
const SUBSCRIBER_BUFFER: usize = 4096;

#[derive(Clone, Debug)]
enum Change {
    Applied(Arc<Node>),
    /// The store was (re)listed: every Node may have changed.
    Resync,
}

/// The cluster's Nodes, watched once: a [`Store`] to read, change streams for controllers, and a generation counter
/// that also moves on deletions. What no controller reads is stripped before caching: managed fields (most of a
/// small Node's size) and the kubelet's image and volume lists (most of a busy one's). Providers see cached Nodes
/// without `status.images`, `status.volumesInUse` and `status.volumesAttached`.
///
/// kube-runtime's own shared subscription is not used on purpose: an unread subscriber applies backpressure to the
/// watch (one idle controller would stall every other), and a Node deleted between announcement and read can leave
/// its stream pending with nobody to wake it. Here subscribers never block the watch; one that falls behind is
/// resynced from the store, so no change is lost.
pub struct NodeCache {
    store: Store<Node>,
    writer: Option<reflector::store::Writer<Node>>,
    api: Api<Node>,
    changes: broadcast::Sender<Change>,
    generation: watch::Sender<u64>,
}

impl std::fmt::Debug for NodeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCache")
            .field("nodes", &self.store.state().len())
            .finish()
    }
}

impl NodeCache {
    /// A cache of all Nodes. Nothing is watched until [`run`](Self::run) is polled.
    pub fn new(client: kube::Client) -> Self {
        let (store, writer) = reflector::store();
        Self {
            store,
            writer: Some(writer),
            api: Api::all(client),
            changes: broadcast::channel(SUBSCRIBER_BUFFER).0,
            generation: watch::channel(0).0,
        }
    }

    /// A reader of the cache.
    pub fn store(&self) -> Store<Node> {
        self.store.clone()
    }

    /// Every added or modified Node from now on (after the initial list: every Node once). For
    /// `Controller::for_shared_stream` or a custom loop. Deletions are not announced: use
    /// [`generation`](Self::generation).
    pub fn changes(&self) -> NodeChanges {
        let state = (
            self.changes.subscribe(),
            self.store.clone(),
            VecDeque::new(),
        );
        let stream = futures::stream::unfold(state, |(mut rx, store, mut pending)| async move {
            loop {
                if let Some(node) = pending.pop_front() {
                    return Some((node, (rx, store, pending)));
                }
                match rx.recv().await {
                    Ok(Change::Applied(node)) => return Some((node, (rx, store, pending))),
                    Ok(Change::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        pending.extend(store.state());
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        NodeChanges(Box::pin(stream))
    }

    /// A counter bumped after every change the cache applies, deletions included.
    pub fn generation(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Drives the watch. Runs until the stream ends (never, in practice: watch errors are retried with backoff).
    pub async fn run(mut self) {
        let Some(writer) = self.writer.take() else {
            return;
        };
        let stream = watched_nodes(self.api).reflect(writer);
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            // The reflector has applied the event to the store before yielding it.
            let change = match event {
                Ok(watcher::Event::Apply(node)) => Some(Change::Applied(Arc::new(node))),
                Ok(watcher::Event::InitDone) => Some(Change::Resync),
                Ok(watcher::Event::Delete(_)) => None,
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => continue,
                Err(e) => {
                    warn!(error = %e, "Node watch error; retrying with backoff");
                    continue;
                }
            };
            if let Some(change) = change {
                // No subscriber is not an error.
                let _ = self.changes.send(change);
            }
            self.generation.send_modify(|g| *g = g.wrapping_add(1));
        }
    }
}

/// A stream of added or modified Nodes; see [`NodeCache::changes`]. Never blocks the shared watch.
pub struct NodeChanges(Pin<Box<dyn Stream<Item = Arc<Node>> + Send>>);

impl std::fmt::Debug for NodeChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeChanges")
    }
}

impl Stream for NodeChanges {
    type Item = Arc<Node>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Arc<Node>>> {
        self.0.as_mut().poll_next(cx)
    }
}

fn watched_nodes(
    api: Api<Node>,
) -> impl Stream<Item = Result<watcher::Event<Node>, watcher::Error>> {
    watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(strip_unread_fields)
}

fn strip_unread_fields(node: &mut Node) {
    node.managed_fields_mut().clear();
    if let Some(status) = node.status.as_mut() {
        status.images = None;
        status.volumes_in_use = None;
        status.volumes_attached = None;
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ContainerImage, NodeAddress, NodeStatus};

    use super::*;

    #[test]
    fn cached_nodes_lose_image_and_volume_lists_but_keep_addresses() {
        let mut node = Node {
            status: Some(NodeStatus {
                images: Some(vec![ContainerImage::default(); 3]),
                volumes_in_use: Some(vec!["kubernetes.io/csi/x".into()]),
                addresses: Some(vec![NodeAddress {
                    type_: "InternalIP".into(),
                    address: "10.0.0.1".into(),
                }]),
                ..NodeStatus::default()
            }),
            ..Node::default()
        };
        strip_unread_fields(&mut node);
        let status = node.status.unwrap_or_default();
        assert!(status.images.is_none() && status.volumes_in_use.is_none());
        assert_eq!(status.addresses.map(|a| a.len()), Some(1));
    }
}
