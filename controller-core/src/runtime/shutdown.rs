//! A shutdown signal that many tasks can wait on.

use tokio::sync::watch;

/// Fires the [`Shutdown`] signals made with it; dropping it fires them too.
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

/// Completes when the trigger fires. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// A trigger and its signal.
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (ShutdownTrigger(tx), Shutdown(rx))
    }

    /// A signal that never fires.
    pub fn never() -> Shutdown {
        let (tx, rx) = watch::channel(false);
        // Keep the sender alive for the life of the process so the receiver never reports closure.
        std::mem::forget(tx);
        Shutdown(rx)
    }

    /// Waits for the signal (or the trigger's drop).
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|fired| *fired).await;
    }

    /// Whether the signal has fired.
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow() || self.0.has_changed().is_err()
    }
}

impl ShutdownTrigger {
    /// Fires the signal.
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}
