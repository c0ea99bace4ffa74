//! One watch per resource (Nodes, Pods) shared by every controller.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use std::fmt::Debug;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use tokio::sync::{broadcast, watch};
use tracing::{info, warn};

/// How many changes a subscriber may fall behind before it is resynced from the store.
const SUBSCRIBER_BUFFER: usize = 4096;

/// What subscribers are told. Objects are named, not carried: a subscriber reads the current version from the
/// store, so the broadcast buffer never holds copies of objects (with thousands of changes buffered, those copies
/// would double the cache's memory) and a subscriber never acts on a version already replaced.
enum Change<K: Resource> {
    Applied(ObjectRef<K>),
    /// The store was (re)listed: every object may have changed.
    Resync,
}

impl<K: Resource> Clone for Change<K>
where
    K::DynamicType: Clone,
{
    fn clone(&self) -> Self {
        match self {
            Self::Applied(obj) => Self::Applied(obj.clone()),
            Self::Resync => Self::Resync,
        }
    }
}

/// What a cached object type needs: a watchable cluster-scoped or all-namespaces resource, and the projection that
/// keeps only what controllers read (see [`projection`](super::projection)), applied before caching.
pub trait Cached:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
    /// Keeps only what some controller reads; everything else is dropped before the object is cached.
    fn project(&mut self);
}

impl Cached for Node {
    /// See [`project_node`](super::projection::project_node).
    fn project(&mut self) {
        super::projection::project_node(self);
    }
}

impl Cached for Pod {
    /// See [`project_pod`](super::projection::project_pod).
    fn project(&mut self) {
        super::projection::project_pod(self);
    }
}

/// One watch of a resource shared by every controller: a [`Store`] to read, change streams for controllers, and a
/// generation counter that also moves on deletions. Only what controllers read is cached ([`Cached::project`]).
///
/// kube-runtime's own shared subscription is not used on purpose: an unread subscriber applies backpressure to the
/// watch (one idle controller would stall every other), and an object deleted between announcement and read can
/// leave its stream pending with nobody to wake it. Here subscribers never block the watch; one that falls behind
/// is resynced from the store, so no change is lost.
///
/// Controllers run by the [`Manager`](crate::manager::Manager) get these from
/// [`SharedCaches`](crate::manager::SharedCaches) and never build one.
pub struct SharedCache<K: Cached> {
    store: Store<K>,
    writer: Mutex<Option<reflector::store::Writer<K>>>,
    api: Api<K>,
    changes: broadcast::Sender<Change<K>>,
    generation: watch::Receiver<u64>,
    generation_tx: watch::Sender<u64>,
    synced: watch::Receiver<bool>,
    synced_tx: watch::Sender<bool>,
    initial_list: Arc<Mutex<InitialList>>,
}

/// The shared Node cache.
pub type NodeCache = SharedCache<Node>;
/// The shared Pod cache (all namespaces).
pub type PodCache = SharedCache<Pod>;
/// A stream of added or modified Nodes.
pub type NodeChanges = Changes<Node>;

impl<K: Cached> std::fmt::Debug for SharedCache<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCache")
            .field("objects", &self.store.state().len())
            .finish()
    }
}

impl<K: Cached> SharedCache<K> {
    /// A cache of every object of the kind. Nothing is watched until [`run`](Self::run) is polled.
    pub fn new(client: kube::Client) -> Self {
        let (store, writer) = reflector::store();
        let (generation_tx, generation) = watch::channel(0);
        let (synced_tx, synced) = watch::channel(false);
        Self {
            store,
            writer: Mutex::new(Some(writer)),
            api: Api::all(client),
            changes: broadcast::channel(SUBSCRIBER_BUFFER).0,
            generation,
            generation_tx,
            synced,
            synced_tx,
            initial_list: Arc::new(Mutex::new(InitialList::Streaming)),
        }
    }

    /// Whether the initial list has finished (for readiness).
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// A reader of the cache.
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// A reader with its own change subscription, as one controller sees the cache.
    pub fn source(&self) -> CacheSource<K> {
        CacheSource {
            store: self.store(),
            changes: self.changes(),
            generation: self.generation(),
            synced: Synced(self.synced.clone()),
        }
    }

    /// Every added or modified object from now on (after the initial list: every object once). For
    /// `Controller::for_shared_stream` or a custom loop. Deletions are not announced: use
    /// [`generation`](Self::generation).
    pub fn changes(&self) -> Changes<K> {
        let state = (
            self.changes.subscribe(),
            self.store.clone(),
            VecDeque::new(),
        );
        let stream = futures::stream::unfold(state, |(mut rx, store, mut pending)| async move {
            loop {
                if let Some(obj) = pending.pop_front() {
                    return Some((obj, (rx, store, pending)));
                }
                match rx.recv().await {
                    Ok(Change::Applied(key)) => {
                        // Gone since: its deletion moved the generation, nothing to announce.
                        if let Some(obj) = store.get(&key) {
                            return Some((obj, (rx, store, pending)));
                        }
                    }
                    Ok(Change::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        pending.extend(store.state());
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Changes(Box::pin(stream))
    }

    /// A counter bumped after every change the cache applies, deletions included.
    pub fn generation(&self) -> watch::Receiver<u64> {
        self.generation.clone()
    }

    /// How the cache fills (or filled) its initial state.
    pub fn initial_list(&self) -> InitialList {
        *self.initial_list.lock()
    }

    /// Drives the watch. Runs until the stream ends (never, in practice: watch errors are retried with backoff).
    /// Only the first call watches; later ones return at once.
    ///
    /// The initial state is streamed (watch-list: one watch with `sendInitialEvents=true`, as client-go's informers
    /// do by default since 1.35): no paginated `LIST`, and the apiserver serves it from its watch cache without
    /// building the whole list in memory. An apiserver without the WatchList feature refuses such a watch (400 or
    /// 422); the cache then falls back to paginated lists and a watch, once, with a log line.
    pub async fn run(&self) {
        let Some(mut writer) = self.writer.lock().take() else {
            return;
        };
        let stream = watch_objects(
            self.api.clone(),
            watcher::Config::default(),
            Arc::clone(&self.initial_list),
        )
        .modify(K::project);
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => {
                    writer.apply_watcher_event(&event);
                    self.announce(event);
                }
                Err(e) => warn!(error = %e, "watch error; retrying with backoff"),
            }
        }
    }

    /// Tells subscribers about an event the store has applied.
    fn announce(&self, event: watcher::Event<K>) {
        let change = match event {
            watcher::Event::Apply(obj) => Some(Change::Applied(ObjectRef::from_obj(&obj))),
            watcher::Event::InitDone => {
                self.synced_tx.send_replace(true);
                Some(Change::Resync)
            }
            watcher::Event::Delete(_) => None,
            watcher::Event::Init | watcher::Event::InitApply(_) => return,
        };
        if let Some(change) = change {
            // No subscriber is not an error.
            let _ = self.changes.send(change);
        }
        self.generation_tx.send_modify(|g| *g = g.wrapping_add(1));
    }
}

/// How a shared cache fills its initial state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum InitialList {
    /// One watch that first sends every object (watch-list, `sendInitialEvents`).
    #[default]
    Streaming,
    /// Paginated `LIST` requests, then a watch (apiservers without the WatchList feature).
    Paginated,
}

/// True when the apiserver refused a streamed initial list as such (it lacks the WatchList feature): the watch
/// could not start with 400 Bad Request or 422 Invalid (`sendInitialEvents is forbidden …`).
fn streaming_refused(e: &watcher::Error) -> bool {
    let code = match e {
        watcher::Error::WatchStartFailed(kube::Error::Api(status)) => status.code,
        watcher::Error::WatchError(status) => status.code,
        _ => return false,
    };
    matches!(code, 400 | 422)
}

/// Watches every `K` matching `config`, streaming the initial state (watch-list) and falling back once to
/// paginated lists when the apiserver refuses that (see [`SharedCache::run`]); `strategy` tells which is in use.
/// Errors are retried with kube-runtime's default backoff and passed on for logging. For caches and controllers
/// that watch a resource of their own (the service controller's Services).
pub fn watch_objects<K>(
    api: Api<K>,
    config: watcher::Config,
    strategy: Arc<Mutex<InitialList>>,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
{
    *strategy.lock() = InitialList::Streaming;
    let start =
        move |config: watcher::Config| watcher(api.clone(), config).default_backoff().boxed();
    let streaming = start(config.clone().streaming_lists());
    let state = (streaming, false, Some((start, config)), strategy);
    futures::stream::unfold(
        state,
        |(mut inner, mut synced, mut fallback, strategy)| async move {
            loop {
                let event = inner.next().await?;
                match &event {
                    Ok(watcher::Event::InitDone) => synced = true,
                    Err(e) if !synced && streaming_refused(e) => {
                        if let Some((start, config)) = fallback.take() {
                            info!(error = %e, "the apiserver does not stream initial lists (WatchList); using paginated lists");
                            *strategy.lock() = InitialList::Paginated;
                            inner = start(config);
                            continue;
                        }
                    }
                    _ => {}
                }
                return Some((event, (inner, synced, fallback, strategy)));
            }
        },
    )
}

/// A shared cache as one controller sees it: a reader, and its own subscription to every change.
#[non_exhaustive]
pub struct CacheSource<K: Cached> {
    /// All cached objects (see [`Cached::project`] for what is kept).
    pub store: Store<K>,
    /// Every added or modified object, for `Controller::for_shared_stream` or a custom loop.
    pub changes: Changes<K>,
    /// Bumped after every change to the cache, deletions included.
    pub generation: watch::Receiver<u64>,
    /// Completes once the initial list is in the store.
    pub synced: Synced,
}

/// Waits for a shared cache's initial list. Use it instead of `Store::wait_until_ready` on a shared store:
/// kube-runtime's readiness signal wakes only the last of several concurrent waiters (a `futures` oneshot keeps
/// one waker), so two controllers waiting on the same store could leave one pending forever. This is a `watch`
/// channel that wakes every waiter. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Synced(watch::Receiver<bool>);

impl From<watch::Receiver<bool>> for Synced {
    /// A handle on a readiness flag: `true` once synced; the sender's drop means the cache is gone.
    fn from(rx: watch::Receiver<bool>) -> Self {
        Self(rx)
    }
}

impl Synced {
    /// Waits until the initial list is in the store; `false` if the cache was dropped first.
    pub async fn wait(&mut self) -> bool {
        self.0.wait_for(|synced| *synced).await.is_ok()
    }

    /// Whether the initial list is in the store.
    pub fn is_synced(&self) -> bool {
        *self.0.borrow()
    }
}

impl<K: Cached> std::fmt::Debug for CacheSource<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheSource")
            .field("objects", &self.store.state().len())
            .finish()
    }
}

/// A stream of added or modified objects; see [`SharedCache::changes`]. Never blocks the shared watch.
pub struct Changes<K>(Pin<Box<dyn Stream<Item = Arc<K>> + Send>>);

impl<K> std::fmt::Debug for Changes<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Changes")
    }
}

impl<K> Stream for Changes<K> {
    type Item = Arc<K>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Arc<K>>> {
        self.0.as_mut().poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_waiter_wakes_when_the_cache_syncs() {
        let (tx, rx) = watch::channel(false);
        let synced = Synced::from(rx);
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let mut synced = synced.clone();
                tokio::spawn(async move { synced.wait().await })
            })
            .collect();
        tokio::task::yield_now().await;
        assert!(!synced.is_synced());
        tx.send_replace(true);
        for waiter in waiters {
            let woke = tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await;
            assert!(matches!(woke, Ok(Ok(true))), "{woke:?}");
        }
        // A cache dropped before its list: waiters learn it.
        let (tx, rx) = watch::channel(false);
        drop(tx);
        assert!(!Synced::from(rx).wait().await);
    }
}
