//! The server half of [`Transport`]: accepting connections and dispatching request streams.
//!
//! Each connection and each stream gets its own task, so one slow handler (a snapshot
//! install, a blocked write) never delays others. The first byte of a stream selects the
//! request kind; the rest belongs to the handler through [`Incoming`]. Before that, the
//! handler is asked whether the sender's certificate role may send that kind at all; a stream
//! it may not is reset with [`REFUSED`], which the caller sees as [`Error::Refused`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::{Connection, RecvStream, SendStream, VarInt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::error::{Error, Result, REFUSED};
use crate::frame::{decode, encode, MAX_MESSAGE};
use crate::identity::{peer_role, CertRole};
use crate::transport::Transport;

/// How long [`Transport::serve`] waits for in-flight handlers after shutdown.
const DRAIN_WAIT: Duration = Duration::from_secs(5);

/// Application logic behind [`Transport::serve`].
pub trait Handler: Send + Sync + 'static {
    /// Handles one request stream of type `kind`. Usually reads the request with
    /// [`Incoming::read`] and answers with [`Incoming::reply`].
    fn handle(&self, kind: u8, incoming: Incoming) -> impl Future<Output = ()> + Send;

    /// Whether a peer whose certificate has `role` may send requests of `kind`. Asked for
    /// every stream before [`Handler::handle`].
    fn permits(&self, kind: u8, role: CertRole) -> bool;
}

/// One incoming request stream, after its `kind` byte.
pub struct Incoming {
    pub send: SendStream,
    pub recv: RecvStream,
    pub remote: SocketAddr,
    /// The role the sender's certificate names.
    pub role: CertRole,
}

impl Incoming {
    /// Reads the rest of the request (at most [`MAX_MESSAGE`] bytes) and decodes it.
    pub async fn read<T: DeserializeOwned>(&mut self) -> Result<T> {
        let peer = self.remote.to_string();
        let bytes = self
            .recv
            .read_to_end(MAX_MESSAGE)
            .await
            .map_err(|e| Error::read_to_end(Some(&peer), e, MAX_MESSAGE))?;
        decode(&bytes)
    }

    /// Encodes and writes the reply, then finishes the stream.
    pub async fn reply<T: Serialize>(mut self, resp: &T) -> Result<()> {
        let body = encode(resp)?;
        let peer = self.remote.to_string();
        self.send
            .write_all(&body)
            .await
            .map_err(|e| Error::write(Some(&peer), e))?;
        self.send
            .finish()
            .map_err(|e| Error::Stream(format!("{peer}: finish: {e}")))
    }
}

/// Shared by all tasks of one `serve` call: the shutdown signal, and a sender whose clones
/// count the tasks still running (the receiver sees `None` once all are gone).
#[derive(Clone)]
struct Tasks {
    stop: watch::Receiver<bool>,
    alive: mpsc::Sender<()>,
}

impl Tasks {
    /// Resolves once shutdown was requested (or `serve` itself went away).
    async fn stopped(&mut self) {
        let _ = self.stop.wait_for(|stop| *stop).await;
    }
}

impl Transport {
    /// Accepts connections and dispatches every bidirectional stream to `handler` until
    /// `shutdown` completes, then waits for in-flight handlers (at most 5 s) and returns.
    /// Connections are left open: call [`Transport::close`] to close them.
    pub async fn serve<H: Handler>(
        &self,
        handler: Arc<H>,
        shutdown: impl Future<Output = ()> + Send,
    ) {
        let endpoint = self.inner.endpoint.clone();
        let local = endpoint.local_addr().ok();
        let (stop_tx, stop_rx) = watch::channel(false);
        let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
        let tasks = Tasks {
            stop: stop_rx,
            alive: alive_tx,
        };
        tracing::debug!(local = ?local, "serving");

        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                incoming = endpoint.accept() => match incoming {
                    Some(incoming) => {
                        tokio::spawn(serve_connection(incoming, handler.clone(), tasks.clone()));
                    }
                    None => {
                        tracing::debug!(local = ?local, "endpoint closed; no longer accepting");
                        break;
                    }
                },
            }
        }

        let _ = stop_tx.send(true);
        drop(tasks);
        if tokio::time::timeout(DRAIN_WAIT, alive_rx.recv())
            .await
            .is_err()
        {
            tracing::warn!(local = ?local, "handlers still running {DRAIN_WAIT:?} after shutdown");
        }
        tracing::debug!(local = ?local, "stopped serving");
    }
}

async fn serve_connection<H: Handler>(
    incoming: quinn::Incoming,
    handler: Arc<H>,
    mut tasks: Tasks,
) {
    let remote = incoming.remote_address();
    let conn = tokio::select! {
        () = tasks.stopped() => return,
        conn = incoming => match conn {
            Ok(conn) => conn,
            Err(e) => {
                // Includes peers whose certificate is not signed by the cluster CA.
                let e = Error::handshake(&remote.to_string(), e, true);
                tracing::warn!(peer = %remote, error = %e, "incoming handshake failed");
                return;
            }
        },
    };
    let Some(role) = peer_role(&conn) else {
        tracing::warn!(peer = %remote, "refused a connection: its certificate names no unikv role (issue it with `unikv-node certs`)");
        conn.close(
            VarInt::from_u32(REFUSED),
            b"certificate names no unikv role",
        );
        return;
    };
    tracing::debug!(peer = %remote, %role, "accepted connection");
    accept_streams(&conn, remote, role, handler, &mut tasks).await;
}

async fn accept_streams<H: Handler>(
    conn: &Connection,
    remote: SocketAddr,
    role: CertRole,
    handler: Arc<H>,
    tasks: &mut Tasks,
) {
    loop {
        let (send, recv) = tokio::select! {
            () = tasks.stopped() => return,
            streams = conn.accept_bi() => match streams {
                Ok(streams) => streams,
                Err(e) => {
                    tracing::debug!(peer = %remote, reason = %e, "connection ended");
                    return;
                }
            },
        };
        let handler = handler.clone();
        let alive = tasks.alive.clone();
        tokio::spawn(async move {
            let _alive = alive;
            dispatch(&*handler, send, recv, remote, role).await;
        });
    }
}

async fn dispatch<H: Handler>(
    handler: &H,
    mut send: SendStream,
    mut recv: RecvStream,
    remote: SocketAddr,
    role: CertRole,
) {
    let mut kind = [0u8; 1];
    if let Err(e) = recv.read_exact(&mut kind).await {
        let e = Error::read_exact(Some(&remote.to_string()), e);
        tracing::debug!(peer = %remote, error = %e, "stream ended before its kind byte");
        return;
    }
    let kind = kind[0];
    if !handler.permits(kind, role) {
        tracing::warn!(peer = %remote, %role, kind, "refused a request its certificate's role may not send");
        let _ = send.reset(VarInt::from_u32(REFUSED));
        let _ = recv.stop(VarInt::from_u32(REFUSED));
        return;
    }
    tracing::trace!(peer = %remote, kind, "request");
    handler
        .handle(
            kind,
            Incoming {
                send,
                recv,
                remote,
                role,
            },
        )
        .await;
}
