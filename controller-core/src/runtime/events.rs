//! Events with upstream reasons, published through kube-runtime's recorder (events.k8s.io/v1, deduplicated).
//!
//! Publishing never waits for the API: like client-go's broadcaster, Events go into a bounded queue that one
//! background task sends in order, and an Event that finds the queue full is dropped (and logged). A reconcile
//! therefore holds its object for the writes that matter only, not for the Event about them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// Events waiting to be sent; client-go's broadcaster queues 1000 too.
const QUEUE_CAPACITY: usize = 1000;

/// The API rejects notes over 1 kB.
const MAX_NOTE_BYTES: usize = 1000;

/// Publishes Normal and Warning Events about objects. Cheap to clone; clones share one queue.
///
/// The sending task starts with the first Event published inside a Tokio runtime and ends once every clone is
/// dropped and the queue is empty.
#[derive(Clone)]
pub struct EventPublisher {
    shared: Arc<Shared>,
}

struct Shared {
    queue: mpsc::Sender<Queued>,
    /// The recorder and the queue's receiving end until the sending task takes them.
    idle: Mutex<Option<(Recorder, mpsc::Receiver<Queued>)>>,
    started: AtomicBool,
    dropped: Counter,
}

struct Queued {
    event: Event,
    regarding: ObjectReference,
}

impl std::fmt::Debug for EventPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventPublisher")
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl EventPublisher {
    /// Events reported as `controller` (e.g. `cloud-controller-manager`) from `instance` (e.g. the pod name).
    pub fn new(client: kube::Client, controller: &str, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: controller.to_owned(),
            instance,
        };
        let (queue, receiver) = mpsc::channel(QUEUE_CAPACITY);
        Self {
            shared: Arc::new(Shared {
                queue,
                idle: Mutex::new(Some((Recorder::new(client, reporter), receiver))),
                started: AtomicBool::new(false),
                dropped: Counter::default(),
            }),
        }
    }

    /// Queues a Normal Event. Failures to publish are logged, never propagated: an Event is not worth a retry loop.
    pub fn normal(&self, regarding: &ObjectReference, reason: &str, note: impl Into<String>) {
        self.publish(EventType::Normal, regarding, reason, note.into());
    }

    /// Queues a Warning Event.
    pub fn warning(&self, regarding: &ObjectReference, reason: &str, note: impl Into<String>) {
        self.publish(EventType::Warning, regarding, reason, note.into());
    }

    /// Events dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.get()
    }

    /// Exposes [`dropped`](Self::dropped) as `cloud_controller_events_dropped_total`, so a dashboard sees Events
    /// lost to a slow or throttled apiserver.
    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.register(
            "cloud_controller_events_dropped",
            "Events dropped because the publishing queue was full",
            self.shared.dropped.clone(),
        );
    }

    fn publish(&self, type_: EventType, regarding: &ObjectReference, reason: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            action: series_action(reason, &note),
            note: Some(truncate_note(note)),
            secondary: None,
        };
        let queued = Queued {
            event,
            regarding: regarding.clone(),
        };
        if self.shared.queue.try_send(queued).is_err() {
            let dropped = self.shared.dropped.inc() + 1;
            // Once per hundred, so a storm of Events does not become a storm of logs.
            if dropped % 100 == 1 {
                warn!(reason, dropped, "event queue full; dropping events");
            }
        }
        self.start_sending();
    }

    fn start_sending(&self) {
        if self.shared.started.load(Ordering::Acquire) {
            return;
        }
        // Outside a runtime the Event stays queued until a later publish inside one.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let taken = self
            .shared
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some((recorder, receiver)) = taken {
            self.shared.started.store(true, Ordering::Release);
            runtime.spawn(send_events(recorder, receiver));
        }
    }
}

/// The Event's `action`, which kube-runtime's recorder keys its Event series on (with the type, the reason and the
/// object). client-go counts an Event again only when its message is the same; keyed on the reason alone, a series
/// shows its first note only (`Registered (x4) … workers-1` although workers-2 to -4 registered too). So the action
/// is the reason plus a digest of the note: the same note again extends a series, another note is an Event of its
/// own. (`kubectl describe` does not show the action.)
fn series_action(reason: &str, note: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut digest = std::collections::hash_map::DefaultHasher::new();
    note.hash(&mut digest);
    format!("{reason}-{:016x}", digest.finish())
}

/// Sends queued Events one at a time, in order, until every publisher is gone.
async fn send_events(recorder: Recorder, mut receiver: mpsc::Receiver<Queued>) {
    while let Some(Queued { event, regarding }) = receiver.recv().await {
        if let Err(e) = recorder.publish(&event, &regarding).await {
            debug!(
                error = %e,
                reason = event.reason,
                namespace = regarding.namespace.as_deref().unwrap_or_default(),
                name = regarding.name.as_deref().unwrap_or_default(),
                "could not publish event"
            );
        }
    }
}

fn truncate_note(mut note: String) -> String {
    if note.len() > MAX_NOTE_BYTES {
        let mut cut = MAX_NOTE_BYTES - 3;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
        note.push_str("...");
    }
    note
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_note_same_series_other_note_other_event() {
        let a = series_action("Registered", "Node workers-1 registered");
        assert_eq!(a, series_action("Registered", "Node workers-1 registered"));
        assert_ne!(a, series_action("Registered", "Node workers-2 registered"));
        assert!(a.starts_with("Registered-") && a.len() <= 128, "{a}");
    }

    #[test]
    fn long_notes_are_cut_on_a_char_boundary() {
        let note = "é".repeat(600); // 1200 bytes
        let cut = truncate_note(note);
        assert!(cut.len() <= MAX_NOTE_BYTES, "{} bytes", cut.len());
        assert!(cut.ends_with("..."));
        assert_eq!(truncate_note("short".into()), "short");
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_instead_of_waiting() {
        // Nothing listens there; no Event is sent while the queue fills outside the runtime.
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("static URL"));
        let client = kube::Client::try_from(config).expect("client");
        let events = EventPublisher::new(client, "test", None);
        let regarding = ObjectReference {
            name: Some("n".into()),
            ..ObjectReference::default()
        };
        let outside = events.clone();
        std::thread::spawn(move || {
            for i in 0..QUEUE_CAPACITY + 5 {
                outside.normal(&regarding, "Test", format!("event {i}"));
            }
        })
        .join()
        .expect("publishing thread");
        assert_eq!(events.dropped(), 5);
        assert!(!events.shared.started.load(Ordering::Acquire));

        let mut registry = Registry::default();
        events.register_metrics(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(
            text.contains("cloud_controller_events_dropped_total 5"),
            "{text}"
        );
    }
}
