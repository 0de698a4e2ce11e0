//! The queue between a source and the sequencer, bounded in mutations
//! (`--targetApplyQueueSize`): a slow target pushes back on the source, and memory stays
//! bounded. A source transaction larger than the whole bound is admitted alone (it is never
//! split), once the queue has drained.
//!
//! The sequencer reads the queue itself ([`QueueReceiver`]), so everything queued is there
//! for it to coalesce into one target transaction (up to `--flushSize`); room is given back
//! to the source as the sequencer takes each transaction.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};

use super::Input;
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

/// The sequencer's end of the queue. Dropping it (the sequencer stopped) fails the source's
/// sends from then on.
#[derive(Debug)]
pub struct QueueReceiver {
    permits: Arc<Semaphore>,
    queued: mpsc::UnboundedReceiver<(SourceTransaction, u32)>,
}

impl QueueReceiver {
    /// Gives the room of a taken transaction back to the source.
    fn taken(&self, (tx, held): (SourceTransaction, u32)) -> SourceTransaction {
        self.permits.add_permits(held as usize);
        crate::metrics::global().target_apply_queue_size.sub(i64::from(held));
        tx
    }
}

impl Input for QueueReceiver {
    async fn recv(&mut self) -> Option<SourceTransaction> {
        let item = self.queued.recv().await?;
        Some(self.taken(item))
    }

    fn try_recv(&mut self) -> Result<SourceTransaction, mpsc::error::TryRecvError> {
        let item = self.queued.try_recv()?;
        Ok(self.taken(item))
    }
}

impl Drop for QueueReceiver {
    fn drop(&mut self) {
        self.permits.close();
    }
}

/// A queue holding at most `capacity` mutations (at least one transaction). Returns the
/// source's sender and the sequencer's receiver.
pub fn bounded(capacity: usize) -> (QueueSender, QueueReceiver) {
    let capacity = u32::try_from(capacity).unwrap_or(u32::MAX).max(1);
    let permits = Arc::new(Semaphore::new(capacity as usize));
    let (sender, queued) = mpsc::unbounded_channel::<(SourceTransaction, u32)>();
    (QueueSender { permits: permits.clone(), capacity, sender }, QueueReceiver { permits, queued })
}
