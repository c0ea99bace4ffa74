//! What the manager is doing, for `/readyz`: whether this replica runs a term, whether that term's caches have
//! synced, and which of its controllers are running.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::SharedCaches;

/// A handle on the manager's state, cheap to clone; read by readiness checks.
///
/// A replica that does not lead runs no term and is ready (a healthy standby). A replica that leads (or runs
/// without leader election) is ready once every cache its controllers asked for has synced and while every
/// runnable controller is running.
#[derive(Clone, Debug, Default)]
pub struct ManagerStatus {
    inner: Arc<Mutex<Term>>,
}

#[derive(Debug, Default)]
struct Term {
    active: bool,
    caches: Option<SharedCaches>,
    running: BTreeMap<&'static str, bool>,
}

impl ManagerStatus {
    /// `Err(reason)` while a term runs and a cache it requested has not finished its initial list.
    pub fn check_caches(&self) -> Result<(), String> {
        let term = self.inner.lock();
        let Some(caches) = term.caches.as_ref().filter(|_| term.active) else {
            return Ok(());
        };
        let pending = caches.unsynced();
        if pending.is_empty() {
            Ok(())
        } else {
            Err(format!("caches not synced: {}", pending.join(", ")))
        }
    }

    /// `Err(reason)` while a term runs and one of its controllers is not running.
    pub fn check_controllers(&self) -> Result<(), String> {
        let term = self.inner.lock();
        if !term.active {
            return Ok(());
        }
        let stopped: Vec<&str> = term
            .running
            .iter()
            .filter(|(_, running)| !**running)
            .map(|(name, _)| *name)
            .collect();
        if stopped.is_empty() {
            Ok(())
        } else {
            Err(format!("controllers not running: {}", stopped.join(", ")))
        }
    }

    pub(super) fn begin_term(&self, caches: SharedCaches, controllers: &[&'static str]) {
        let mut term = self.inner.lock();
        term.active = true;
        term.caches = Some(caches);
        term.running = controllers.iter().map(|name| (*name, false)).collect();
    }

    pub(super) fn set_running(&self, controller: &'static str, running: bool) {
        if let Some(state) = self.inner.lock().running.get_mut(controller) {
            *state = running;
        }
    }

    pub(super) fn end_term(&self) {
        *self.inner.lock() = Term::default();
    }
}

/// Ends the term in the status when dropped (the term's future ends or is cancelled).
pub(super) struct TermGuard(pub(super) ManagerStatus);

impl Drop for TermGuard {
    fn drop(&mut self) {
        self.0.end_term();
    }
}
