//! Gathering: concurrent callers each hand one item to a task that takes
//! whatever has queued (up to a batch), runs one piece of work for the whole
//! batch, and answers every caller. A few batches run at once, and while
//! every slot is busy more items gather for the next one: under load many
//! requests share one query or one commit instead of queueing for their own.
//! It knows nothing of what the work is (the lease probe, the lease writer).

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

/// A handle to a gathering task; it ends when the last handle is dropped.
pub struct Gather<T, A> {
    queue: mpsc::Sender<(T, oneshot::Sender<A>)>,
}

impl<T, A> Clone for Gather<T, A> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

impl<T, A> std::fmt::Debug for Gather<T, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gather")
            .field("running", &!self.queue.is_closed())
            .finish()
    }
}

impl<T: Send + 'static, A: Send + 'static> Gather<T, A> {
    /// Starts the task: batches of at most `max_batch` items, at most
    /// `in_flight` of them at once. `work` answers a batch with one answer
    /// per item, in order.
    pub fn spawn<F, Fut>(max_batch: usize, in_flight: usize, work: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<A>> + Send + 'static,
    {
        let (queue, mut rx) = mpsc::channel::<(T, oneshot::Sender<A>)>(4 * max_batch);
        let work = Arc::new(work);
        tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(in_flight));
            let mut batch = Vec::with_capacity(max_batch);
            while rx.recv_many(&mut batch, max_batch).await > 0 {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    break;
                };
                let (items, replies): (Vec<T>, Vec<_>) = batch.drain(..).unzip();
                let work = work.clone();
                tokio::spawn(async move {
                    let answers = work(items).await;
                    drop(slot);
                    for (answer, reply) in answers.into_iter().zip(replies) {
                        let _ = reply.send(answer);
                    }
                });
            }
        });
        Self { queue }
    }

    /// The answer to `item`; None if the task has stopped (it stops only on
    /// a panic, or if `work` answered fewer items than it was given).
    pub async fn ask(&self, item: T) -> Option<A> {
        let (tx, rx) = oneshot::channel();
        self.queue.send((item, tx)).await.ok()?;
        rx.await.ok()
    }

    /// False once the task has stopped.
    pub fn is_running(&self) -> bool {
        !self.queue.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Concurrent callers share batches, and each gets its own answer.
    #[tokio::test]
    async fn concurrent_items_share_batches_and_each_gets_its_answer() {
        let batches = Arc::new(AtomicUsize::new(0));
        let counted = batches.clone();
        let doubler = Gather::spawn(16, 1, move |items: Vec<u32>| {
            counted.fetch_add(1, Ordering::Relaxed);
            async move {
                tokio::task::yield_now().await;
                items.into_iter().map(|i| i * 2).collect::<Vec<_>>()
            }
        });
        let asks = (0..64u32).map(|i| {
            let d = doubler.clone();
            async move { d.ask(i).await }
        });
        let answers = futures_util::future::join_all(asks).await;
        assert_eq!(answers, (0..64u32).map(|i| Some(i * 2)).collect::<Vec<_>>());
        assert!(batches.load(Ordering::Relaxed) < 64, "some items shared a batch");
        assert!(doubler.is_running());
    }
}
