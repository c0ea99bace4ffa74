//! The caches controllers share, created on first request.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use k8s_openapi::api::core::v1::{Node, Pod};
use parking_lot::Mutex;

use crate::runtime::{CacheSource, Cached, CancellationToken, SharedCache};

/// The shared caches of one leadership term: each is created (and its watch started) the first time a controller
/// asks for it, and every later request shares it; all of them stop with the term's shutdown signal. No controller
/// builds a cache of its own. Cheap to clone.
#[derive(Clone)]
pub struct SharedCaches {
    inner: Arc<Inner>,
}

struct Inner {
    client: kube::Client,
    shutdown: CancellationToken,
    nodes: OnceLock<Arc<SharedCache<Node>>>,
    pods: OnceLock<Arc<SharedCache<Pod>>>,
    /// The requested caches, to tell whether their initial list finished.
    synced: Mutex<BTreeMap<&'static str, Arc<dyn SyncState>>>,
}

impl std::fmt::Debug for SharedCaches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCaches")
            .field("nodes", &self.inner.nodes.get().is_some())
            .field("pods", &self.inner.pods.get().is_some())
            .finish()
    }
}

/// A cache's sync state, whatever it caches.
trait SyncState: Send + Sync {
    fn is_synced(&self) -> bool;
}

impl<K: Cached> SyncState for SharedCache<K> {
    fn is_synced(&self) -> bool {
        SharedCache::is_synced(self)
    }
}

impl SharedCaches {
    /// Caches watched with `client`, stopped when `shutdown` fires. Must be used inside a tokio runtime (a cache's
    /// watch is spawned when it is first requested).
    pub fn new(client: kube::Client, shutdown: CancellationToken) -> Self {
        Self {
            inner: Arc::new(Inner {
                client,
                shutdown,
                nodes: OnceLock::new(),
                pods: OnceLock::new(),
                synced: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// Every Node (only the fields [`Cached::project`] keeps), with a change subscription of its own.
    pub fn nodes(&self) -> CacheSource<Node> {
        self.start("nodes", &self.inner.nodes).source()
    }

    /// Every Pod of every namespace (only the fields [`Cached::project`] keeps), with a change subscription of its own.
    pub fn pods(&self) -> CacheSource<Pod> {
        self.start("pods", &self.inner.pods).source()
    }

    /// The requested caches whose initial list has not finished (for `/readyz`).
    pub fn unsynced(&self) -> Vec<&'static str> {
        self.inner
            .synced
            .lock()
            .iter()
            .filter(|(_, cache)| !cache.is_synced())
            .map(|(name, _)| *name)
            .collect()
    }

    fn start<K: Cached>(
        &self,
        name: &'static str,
        cell: &OnceLock<Arc<SharedCache<K>>>,
    ) -> Arc<SharedCache<K>> {
        let cache = cell.get_or_init(|| {
            let cache = Arc::new(SharedCache::new(self.inner.client.clone()));
            let watched = Arc::clone(&cache);
            let shutdown = self.inner.shutdown.clone();
            self.inner
                .synced
                .lock()
                .insert(name, Arc::clone(&cache) as Arc<dyn SyncState>);
            tokio::spawn(async move {
                tokio::select! {
                    () = watched.run() => tracing::warn!(cache = name, "a shared watch ended"),
                    () = shutdown.cancelled() => {}
                }
            });
            cache
        });
        Arc::clone(cache)
    }
}
