//! Concurrent KV writes share Raft entries.
//!
//! Every log entry costs the leader and each follower a serialisation, a RocksDB insert, a trip
//! through openraft's core loop and a response channel, and under load many writes wait at
//! once. The proposer queues KV writes; a driver task proposes whatever has queued as one
//! `Command::Batch` entry whenever fewer than `MAX_IN_FLIGHT` of its entries are uncommitted.
//! A lone write therefore goes out at once, as its own entry, and a burst shares one. Each
//! write keeps its own result: the batch applies in order and every command is checked for
//! ownership and deduplicated by its (client id, seq) as if it were alone.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use openraft::errors::{ClientWriteError, ForwardToLeader, RaftError};
use tokio::sync::{mpsc, oneshot, Semaphore};
use unikv_storage::{Applied, Command, CommandResult, TypeConfig};
use unikv_types::KvError;

use crate::service::Raft;

/// Entries of the proposer in flight at once; writes arriving meanwhile wait and go together.
const MAX_IN_FLIGHT: usize = 4;
/// Most writes in one entry (bounds the entry's size and the apply batch).
const MAX_BATCH: usize = 256;

/// Why a proposal did not produce an applied result.
#[derive(Debug, Clone)]
pub enum ProposeError {
    /// This node does not lead; openraft's guess of who does.
    ForwardToLeader(ForwardToLeader<TypeConfig>),
    /// The entry was appended but a new leader replaced it before it committed.
    Discarded,
    /// Raft is shutting down or failed.
    Raft(String),
}

impl From<RaftError<TypeConfig, ClientWriteError<TypeConfig>>> for ProposeError {
    fn from(e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> Self {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                ProposeError::ForwardToLeader(f)
            }
            RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)) => ProposeError::Discarded,
            e => ProposeError::Raft(e.to_string()),
        }
    }
}

type Reply = oneshot::Sender<Result<CommandResult, ProposeError>>;

/// What the proposer did since the process started (`/raft/status`): `writes / entries` is
/// the batching factor.
#[derive(Debug, Default)]
pub struct ProposerStats {
    /// Raft entries proposed for KV writes.
    pub entries: AtomicU64,
    /// KV writes proposed.
    pub writes: AtomicU64,
}

/// Handle of the batching proposer; dropping every handle stops its driver.
pub struct Proposer {
    queue: mpsc::UnboundedSender<(Command, Reply)>,
    stats: Arc<ProposerStats>,
}

impl Proposer {
    /// Starts the driver task for `raft`.
    pub fn start(raft: Raft) -> Proposer {
        let (queue, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(ProposerStats::default());
        tokio::spawn(drive(raft, rx, stats.clone()));
        Proposer { queue, stats }
    }

    pub fn stats(&self) -> &ProposerStats {
        &self.stats
    }

    /// Proposes one KV write (possibly sharing an entry with others) and waits for its result.
    pub async fn propose(&self, cmd: Command) -> Result<CommandResult, ProposeError> {
        let (tx, rx) = oneshot::channel();
        self.queue
            .send((cmd, tx))
            .map_err(|_| ProposeError::Raft("the proposer has stopped".into()))?;
        rx.await
            .map_err(|_| ProposeError::Raft("the proposer dropped the write".into()))?
    }
}

async fn drive(
    raft: Raft,
    mut rx: mpsc::UnboundedReceiver<(Command, Reply)>,
    stats: Arc<ProposerStats>,
) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        // Waiting for a free slot is what lets a burst gather behind the entries in flight.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        stats.entries.fetch_add(1, Relaxed);
        stats.writes.fetch_add(jobs.len() as u64, Relaxed);
        let raft = raft.clone();
        tokio::spawn(async move {
            submit(&raft, jobs).await;
            drop(permit);
        });
    }
}

/// Proposes `jobs` as one entry and hands each its result.
async fn submit(raft: &Raft, mut jobs: Vec<(Command, Reply)>) {
    if jobs.len() == 1 {
        let (cmd, reply) = jobs.pop().expect("one job");
        let res = raft
            .client_write(cmd)
            .await
            .map(|resp| resp.data.into_one())
            .map_err(ProposeError::from);
        let _ = reply.send(res);
        return;
    }
    let (cmds, replies): (Vec<Command>, Vec<Reply>) = jobs.into_iter().unzip();
    let n = cmds.len();
    match raft.client_write(Command::Batch(cmds)).await {
        Ok(resp) => match resp.data {
            Applied::Batch(results) if results.len() == n => {
                for (reply, res) in replies.into_iter().zip(results) {
                    let _ = reply.send(Ok(res));
                }
            }
            other => {
                // Cannot happen with this state machine; never guess which write applied.
                let reason = format!("a batch of {n} writes was answered with {other:?}");
                tracing::error!(%reason, "proposer");
                for reply in replies {
                    let _ = reply.send(Ok(Err(KvError::Unknown {
                        reason: reason.clone(),
                    })));
                }
            }
        },
        Err(e) => {
            let e = ProposeError::from(e);
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}
