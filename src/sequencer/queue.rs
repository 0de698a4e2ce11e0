//! The queue between a source and the sequencer, bounded in mutations
//! (`--targetApplyQueueSize`): a slow target pushes back on the source, and memory stays
//! bounded. A source transaction larger than the whole bound is admitted alone (it is never
//! split), once the queue has drained.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};

use crate::types::mutation::SourceTransaction;

/// The source's end of the queue.
#[derive(Debug, Clone)]
pub struct QueueSender {
    permits: Arc<Semaphore>,
    capacity: u32,
    sender: mpsc::UnboundedSender<(SourceTransaction, u32)>,
}

/// Why a send failed: the sequencer has stopped.
#[derive(Debug, thiserror::Error)]
#[error("the sequencer has stopped")]
pub struct Closed;

impl QueueSender {
    /// Waits for room for `tx`'s mutations, then queues it.
    pub async fn send(&self, tx: SourceTransaction) -> Result<(), Closed> {
        let want = u32::try_from(tx.mutations.len()).unwrap_or(u32::MAX).clamp(1, self.capacity);
        let permit = self.permits.acquire_many(want).await.map_err(|_| Closed)?;
        permit.forget();
        crate::metrics::global().target_apply_queue_size.add(i64::from(want));
        self.sender.send((tx, want)).map_err(|_| Closed)
    }
}

/// A queue holding at most `capacity` mutations (at least one transaction). Returns the
/// source's sender and the sequencer's receiver.
pub fn bounded(capacity: usize) -> (QueueSender, mpsc::Receiver<SourceTransaction>) {
    let capacity = u32::try_from(capacity).unwrap_or(u32::MAX).max(1);
    let permits = Arc::new(Semaphore::new(capacity as usize));
    let (sender, mut queued) = mpsc::unbounded_channel::<(SourceTransaction, u32)>();
    let (out, receiver) = mpsc::channel(1);
    let released = permits.clone();
    tokio::spawn(async move {
        loop {
            let (tx, held) = tokio::select! {
                // The sequencer stopped: fail the source's sends from now on.
                () = out.closed() => {
                    released.close();
                    return;
                }
                item = queued.recv() => match item {
                    Some(item) => item,
                    None => return,
                },
            };
            if out.send(tx).await.is_err() {
                released.close();
                return;
            }
            // Handed to the sequencer: the room is free again.
            released.add_permits(held as usize);
            crate::metrics::global().target_apply_queue_size.sub(i64::from(held));
        }
    });
    (QueueSender { permits, capacity, sender }, receiver)
}
