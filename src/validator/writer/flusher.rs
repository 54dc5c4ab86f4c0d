//! The periodic flusher: a task that writes what the batch writer holds at
//! every interval, and once more when it stops.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{sync::watch, task::JoinHandle};

use super::BatchWriter;
use crate::sync::lock;

/// The periodic flusher. Dropping the handle (with the validator) or calling
/// [`Flusher::shutdown`] makes the task flush one last time and end.
pub(crate) struct Flusher {
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Flusher {
    /// Spawns the flusher on the current tokio runtime, if there is one.
    pub(crate) fn spawn(writer: Arc<BatchWriter>, interval: Duration) -> Option<Self> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (stop, mut stopped) = watch::channel(false);
        let task = runtime.spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                tokio::select! {
                    _ = ticks.tick() => {
                        let _ = writer.flush().await;
                    }
                    _ = stopped.changed() => break,
                }
            }
            if writer.flush().await.is_err() {
                tracing::error!(
                    keys = writer.pending_len(),
                    "last_used_at, re-hashes or usage counts could not be written at shutdown"
                );
            }
        });
        Some(Self {
            stop,
            task: Mutex::new(Some(task)),
        })
    }

    /// Stops the task after a final flush, and waits for it.
    pub(crate) async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let task = lock(&self.task).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}
