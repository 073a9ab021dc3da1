//! Signatures asked of an outside signer, gathered into batches: while a
//! batch is out, the requests that arrive wait together for the next one.
//! Transit signs a batch in one `batch_input` request; an HSM signs one on
//! one session in one blocking call. Either way a round trip or a thread
//! hand-off is paid per batch, not per token.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::jose::{Alg, SignError, Signer, Signing};

/// A batch's outcome: one result per message, or one error for all.
pub type Signed = Result<Vec<Result<Vec<u8>, String>>, String>;

/// One signature waiting for its batch.
struct Job {
    message: Vec<u8>,
    reply: oneshot::Sender<Result<Vec<u8>, SignError>>,
}

/// A key held outside, signing in batches.
#[derive(Debug)]
pub struct BatchSigner {
    kid: String,
    alg: Alg,
    queue: mpsc::UnboundedSender<Job>,
}

impl BatchSigner {
    /// Starts the batcher: at most `in_flight` batches of at most `max`
    /// messages out at once, each signed by `sign`. It stops when the signer
    /// is dropped and the queue is drained.
    pub fn spawn<F, Fut>(kid: String, alg: Alg, max: usize, in_flight: usize, sign: F) -> Self
    where
        F: Fn(Vec<Vec<u8>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Signed> + Send + 'static,
    {
        let (queue, jobs) = mpsc::unbounded_channel();
        tokio::spawn(run(kid.clone(), max, in_flight, Arc::new(sign), jobs));
        Self { kid, alg, queue }
    }
}

async fn run<F, Fut>(kid: String, max: usize, in_flight: usize, sign: Arc<F>, mut jobs: mpsc::UnboundedReceiver<Job>)
where
    F: Fn(Vec<Vec<u8>>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Signed> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(in_flight));
    while let Some(first) = jobs.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        // While the permit was awaited, more requests queued: take them too.
        let mut batch = vec![first];
        while batch.len() < max {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let (sign, kid) = (sign.clone(), kid.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let (messages, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|j| (j.message, j.reply)).unzip();
            let failed = |why: String| SignError { kid: kid.clone(), why };
            match sign(messages).await {
                Ok(results) if results.len() == replies.len() => {
                    for (reply, result) in replies.into_iter().zip(results) {
                        let _ = reply.send(result.map_err(failed));
                    }
                }
                Ok(_) => {
                    for reply in replies {
                        let _ = reply.send(Err(failed("not one signature per message".into())));
                    }
                }
                Err(why) => {
                    for reply in replies {
                        let _ = reply.send(Err(failed(why.clone())));
                    }
                }
            }
        });
    }
}

impl Signer for BatchSigner {
    fn kid(&self) -> &str {
        &self.kid
    }

    fn alg(&self) -> Alg {
        self.alg
    }

    fn sign<'a>(&'a self, message: &'a [u8]) -> Signing<'a> {
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            let gone = || SignError {
                kid: self.kid.clone(),
                why: "the signer's batcher stopped".into(),
            };
            self.queue
                .send(Job {
                    message: message.to_vec(),
                    reply,
                })
                .map_err(|_| gone())?;
            answer.await.map_err(|_| gone())?
        })
    }
}
