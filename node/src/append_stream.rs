//! Pipelined AppendEntries on one QUIC stream per replication session.
//!
//! openraft's replication runs a *session* per follower that keeps producing AppendEntries
//! requests as new entries are submitted. Its default transport sends one request and waits
//! for the answer before sending the next, so entries proposed while a request is in flight
//! wait a whole round trip (a follower's fsync included) before they even leave the leader.
//! Here a session is one bidirectional stream: the leader writes request frames as they come,
//! at most [`WINDOW`] unanswered, and the follower feeds them in order to openraft's
//! `Raft::stream_append`, which appends them in order and answers each once it is flushed;
//! the answers come back as frames in the same order. Any error ends the stream and openraft
//! opens a new session (after its backoff).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use openraft::errors::{NetworkError, RPCError};
use openraft::raft::{AppendEntriesRequest, StreamAppendResult};
use openraft::OptionalSend;
use tokio::sync::{mpsc, Notify, Semaphore};
use unikv_net::{read_frame, write_frame, Incoming, RecvStream, SendStream, Transport};
use unikv_storage::TypeConfig;
use unikv_types::rpc_kind;

use crate::service::Node;

/// Requests written but not yet answered, per session. Two lets the next batch of entries
/// leave while the previous one is being fsynced; more only splits batches that would
/// otherwise share one fsync.
pub const WINDOW: usize = 2;

/// One answer frame: the follower's result, or why its Raft core stopped.
type Answer = Result<StreamAppendResult<TypeConfig>, String>;

fn network_error(what: impl std::fmt::Display) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::new(&std::io::Error::other(what.to_string())))
}

/// Aborts the session's helper tasks when openraft drops the answer stream.
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Leader side: opens the session's stream to `addr` and returns the stream of answers.
/// Each answer must arrive within `ttl` of the moment it became the oldest one awaited.
pub async fn open<S>(
    transport: &Transport,
    addr: &str,
    input: S,
    ttl: Duration,
) -> Result<
    BoxStream<'static, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>,
    RPCError<TypeConfig>,
>
where
    S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
{
    let (send, recv) = transport
        .open(addr, rpc_kind::APPEND_STREAM, ttl)
        .await
        .map_err(crate::raft_errors::to_rpc_error)?;
    let window = Arc::new(Semaphore::new(WINDOW));
    let sent = Arc::new(AtomicU64::new(0));
    let wrote = Arc::new(Notify::new());
    let (tx, rx) = mpsc::channel::<Result<Answer, String>>(WINDOW + 1);
    let writer = tokio::spawn(write_requests(
        send,
        input,
        window.clone(),
        sent.clone(),
        wrote.clone(),
        tx.clone(),
    ));
    let reader = tokio::spawn(read_answers(recv, tx));
    let state = Session {
        rx,
        window,
        sent,
        answered: 0,
        wrote,
        ttl,
        done: false,
        _tasks: Tasks(vec![writer, reader]),
    };
    Ok(futures::stream::unfold(state, |mut s| async move {
        let item = s.next_answer().await?;
        Some((item, s))
    })
    .boxed())
}

struct Session {
    rx: mpsc::Receiver<Result<Answer, String>>,
    window: Arc<Semaphore>,
    sent: Arc<AtomicU64>,
    answered: u64,
    wrote: Arc<Notify>,
    ttl: Duration,
    done: bool,
    _tasks: Tasks,
}

impl Session {
    /// The next answer; `None` once the session is over.
    async fn next_answer(
        &mut self,
    ) -> Option<Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>> {
        if self.done {
            return None;
        }
        let msg = loop {
            // Register interest before checking, so a write in between is not missed.
            let wrote = self.wrote.notified();
            if self.sent.load(Ordering::Acquire) > self.answered {
                match tokio::time::timeout(self.ttl, self.rx.recv()).await {
                    Ok(msg) => break msg,
                    Err(_) => break Some(Err(format!("no answer within {:?}", self.ttl))),
                }
            }
            tokio::select! {
                msg = self.rx.recv() => break msg,
                () = wrote => {}
            }
        };
        let out = match msg {
            // Both halves ended cleanly: the input is exhausted and everything was answered.
            None => None,
            Some(Ok(Ok(answer))) => {
                self.answered += 1;
                self.window.add_permits(1);
                if answer.is_err() {
                    // Conflict or a higher vote: openraft ends the session on it.
                    self.done = true;
                }
                Some(Ok(answer))
            }
            Some(Ok(Err(fatal))) => {
                self.done = true;
                Some(Err(network_error(format!("follower stopped: {fatal}"))))
            }
            Some(Err(e)) => {
                self.done = true;
                Some(Err(network_error(e)))
            }
        };
        if out.is_none() {
            self.done = true;
        }
        out
    }
}

/// Writes requests while the window allows, then finishes the stream when the input ends.
async fn write_requests<S>(
    mut send: SendStream,
    mut input: S,
    window: Arc<Semaphore>,
    sent: Arc<AtomicU64>,
    wrote: Arc<Notify>,
    errors: mpsc::Sender<Result<Answer, String>>,
) where
    S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Unpin,
{
    loop {
        let Ok(permit) = window.acquire().await else {
            return;
        };
        permit.forget();
        let Some(req) = input.next().await else {
            let _ = send.finish();
            return;
        };
        if let Err(e) = write_frame(&mut send, &req).await {
            let _ = errors.send(Err(format!("sending append: {e}"))).await;
            return;
        }
        sent.fetch_add(1, Ordering::Release);
        wrote.notify_one();
    }
}

/// Forwards answer frames until the follower finishes its side or the stream fails.
async fn read_answers(mut recv: RecvStream, tx: mpsc::Sender<Result<Answer, String>>) {
    loop {
        match read_frame::<Option<Answer>>(&mut recv).await {
            Ok(Some(answer)) => {
                if tx.send(Ok(answer)).await.is_err() {
                    return;
                }
            }
            // The follower's explicit end of the session.
            Ok(None) => return,
            Err(e) => {
                let _ = tx.send(Err(format!("reading append answers: {e}"))).await;
                return;
            }
        }
    }
}

/// Follower side: feeds the stream's requests to Raft in order and writes each answer back.
pub async fn serve(node: &Node, inc: Incoming) -> unikv_net::Result<()> {
    let Incoming { send, recv, .. } = inc;
    let mut send = send;
    let requests = futures::stream::unfold(recv, |mut recv| async move {
        match read_frame::<AppendEntriesRequest<TypeConfig>>(&mut recv).await {
            Ok(req) => Some((req, recv)),
            // The leader finished (or dropped) the session.
            Err(_) => None,
        }
    });
    let answers = node.raft.stream_append(requests);
    futures::pin_mut!(answers);
    while let Some(res) = answers.next().await {
        let answer: Answer = res.map_err(|fatal| fatal.to_string());
        let last = !matches!(answer, Ok(Ok(_)));
        write_frame(&mut send, &Some(answer)).await?;
        if last {
            break;
        }
    }
    write_frame(&mut send, &None::<Answer>).await?;
    let _ = send.finish();
    Ok(())
}
