//! The client half of [`Transport`]: endpoints, dialing, and request/response calls.
//!
//! One UDP socket per process serves both directions: a node's Raft peers dial it, and it
//! dials them from the same socket. Every request gets its own bidirectional stream on a
//! cached connection, so a slow request never blocks others (no head-of-line blocking) and
//! no per-request handshake is paid.

use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use quinn::{Connection, Endpoint, RecvStream, SendStream, VarInt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::frame::{decode, encode, MAX_MESSAGE};
use crate::identity::NODE_NAME;
use crate::pool::Pool;
use crate::tls::ClusterTls;

/// How long [`Transport::close`] waits for connections to finish closing.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// One QUIC endpoint acting as server (when bound with [`Transport::bind`]) and client, with
/// a pool of outgoing connections. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Transport {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) endpoint: Endpoint,
    pool: Pool,
}

impl Transport {
    /// Binds `addr` as server and client. Must be called within a tokio runtime.
    pub fn bind(addr: SocketAddr, tls: &ClusterTls) -> Result<Transport> {
        let socket = std::net::UdpSocket::bind(addr)?;
        let local = socket.local_addr()?;
        let mut config = quinn::EndpointConfig::new(Arc::new(tls.reset_key(local)));
        config.cid_generator(|| Box::new(RestartSafeCids::default()));
        let runtime = quinn::default_runtime()
            .ok_or_else(|| std::io::Error::other("no async runtime for QUIC"))?;
        let mut endpoint = Endpoint::new(config, Some(tls.server_config()?), socket, runtime)?;
        endpoint.set_default_client_config(tls.client_config()?);
        tracing::debug!(local = %endpoint.local_addr()?, "transport bound");
        Ok(Transport::with_endpoint(endpoint))
    }

    /// A client-only endpoint on `0.0.0.0:0` (routers and tools). Must be called within a
    /// tokio runtime.
    pub fn client(tls: &ClusterTls) -> Result<Transport> {
        let mut endpoint = Endpoint::client(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))?;
        endpoint.set_default_client_config(tls.client_config()?);
        Ok(Transport::with_endpoint(endpoint))
    }

    fn with_endpoint(endpoint: Endpoint) -> Transport {
        Transport {
            inner: Arc::new(Inner {
                endpoint,
                pool: Pool::default(),
            }),
        }
    }

    /// The local address of the UDP socket (useful after binding port 0).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.inner.endpoint.local_addr()?)
    }

    /// Sends `req` as a `kind` request to `addr` ("host:port") and decodes the response.
    ///
    /// The request is one byte `kind` followed by the msgpack of `req` on a fresh stream of
    /// the cached connection; the response is everything the peer writes back before
    /// finishing the stream. The whole call, dialing included, is bounded by `timeout`.
    pub async fn call<Req, Resp>(
        &self,
        addr: &str,
        kind: u8,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let body = encode(req)?;
        let exchange = async {
            let (mut send, mut recv) = self.open_stream(addr, kind).await?;
            send.write_all(&body)
                .await
                .map_err(|e| Error::write(Some(addr), e))?;
            // Only fails if the stream was already finished or reset, which we never do.
            send.finish()
                .map_err(|e| Error::Stream(format!("{addr}: finish: {e}")))?;
            let bytes = recv
                .read_to_end(MAX_MESSAGE)
                .await
                .map_err(|e| Error::read_to_end(Some(addr), e, MAX_MESSAGE))?;
            decode(&bytes)
        };
        let result = bounded(addr, timeout, exchange).await;
        if let Err(e) = &result {
            tracing::debug!(peer = addr, kind, error = %e, "call failed");
            self.note_refusal(addr, e).await;
        }
        result
    }

    /// Opens a raw bidirectional stream to `addr` and writes the `kind` byte, for streaming
    /// protocols (e.g. snapshots framed with [`crate::write_frame`]). Dialing, opening and the
    /// kind byte are bounded by `timeout`; what happens on the stream afterwards is not.
    pub async fn open(
        &self,
        addr: &str,
        kind: u8,
        timeout: Duration,
    ) -> Result<(SendStream, RecvStream)> {
        let result = bounded(addr, timeout, self.open_stream(addr, kind)).await;
        if let Err(e) = &result {
            self.note_refusal(addr, e).await;
        }
        result
    }

    /// A TLS failure on what looked like an established connection is a refusal too (one
    /// already holding redials back is left as it is).
    async fn note_refusal(&self, addr: &str, e: &Error) {
        if matches!(e, Error::Tls(_)) {
            self.inner.pool.refused(addr, e).await;
        }
    }

    /// Closes the endpoint and every connection, then waits (at most 2 s) for the peers to be
    /// told. Afterwards the transport cannot be used, and its port is free to be bound again.
    pub async fn close(&self) {
        let endpoint = &self.inner.endpoint;
        let local = endpoint.local_addr().ok();
        for conn in self.inner.pool.drain() {
            conn.close(VarInt::from_u32(0), b"closing");
        }
        endpoint.close(VarInt::from_u32(0), b"closing");
        if tokio::time::timeout(CLOSE_WAIT, endpoint.wait_idle())
            .await
            .is_err()
        {
            tracing::debug!(local = ?local, "connections still closing after {CLOSE_WAIT:?}");
        }
        release_socket(endpoint, local);
        tracing::debug!(local = ?local, "transport closed");
    }

    /// Opens a stream on the pooled connection (re-dialing once if that connection turns out
    /// to be dead) and writes the `kind` byte.
    async fn open_stream(&self, addr: &str, kind: u8) -> Result<(SendStream, RecvStream)> {
        let pool = &self.inner.pool;
        let conn = pool.get(addr, || self.dial(addr)).await?;
        let (mut send, recv) = match conn.open_bi().await {
            Ok(streams) => streams,
            Err(e) => {
                tracing::debug!(peer = addr, error = %e, "open stream failed; redialing");
                pool.evict(addr, &conn).await;
                let conn = pool.get(addr, || self.dial(addr)).await?;
                conn.open_bi()
                    .await
                    .map_err(|e| Error::lost(Some(addr), e))?
            }
        };
        send.write_all(&[kind])
            .await
            .map_err(|e| Error::write(Some(addr), e))?;
        Ok((send, recv))
    }

    async fn dial(&self, addr: &str) -> Result<Connection> {
        let target = resolve(addr).await?;
        let connect_err = |reason: String| Error::Connect {
            addr: addr.to_owned(),
            reason,
        };
        let connecting = self
            .inner
            .endpoint
            .connect(target, NODE_NAME)
            .map_err(|e| connect_err(e.to_string()))?;
        let conn = connecting.await.map_err(|e| Error::dial(addr, e))?;
        tracing::debug!(peer = addr, remote = %target, "connected");
        Ok(conn)
    }
}

/// Connection ids that a restarted endpoint still accepts as "ours". quinn's default generator
/// signs ids with a per-process key and silently drops packets whose id it did not sign, so a
/// restarted node would ignore its peers' stale connections instead of answering them with a
/// stateless reset. Random ids with no signature make every unknown short-header packet get a
/// reset (rate-limited by quinn, and only ever smaller than the packet that caused it); with the
/// stable reset key the peer accepts that reset and redials at once.
struct RestartSafeCids {
    rng: ring::rand::SystemRandom,
}

impl Default for RestartSafeCids {
    fn default() -> Self {
        Self {
            rng: ring::rand::SystemRandom::new(),
        }
    }
}

const CID_LEN: usize = 8;

impl quinn::ConnectionIdGenerator for RestartSafeCids {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        let mut bytes = [0u8; CID_LEN];
        // SystemRandom only fails if the OS has no entropy source at all.
        if ring::rand::SecureRandom::fill(&self.rng, &mut bytes).is_err() {
            bytes = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or_default()
                .to_le_bytes();
        }
        quinn::ConnectionId::new(&bytes)
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// Runs `fut` with a deadline, turning expiry into [`Error::Timeout`].
async fn bounded<T>(
    addr: &str,
    timeout: Duration,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(result) => result,
        Err(_) => Err(Error::Timeout {
            addr: addr.to_owned(),
            after_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        }),
    }
}

/// Resolves "host:port", preferring IPv4 (sockets bound to IPv4 cannot reach IPv6 peers, and
/// "localhost" commonly resolves to both).
async fn resolve(addr: &str) -> Result<SocketAddr> {
    let candidates: Vec<SocketAddr> = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| Error::Resolve(format!("{addr}: {e}")))?
        .collect();
    candidates
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| candidates.first())
        .copied()
        .ok_or_else(|| Error::Resolve(format!("{addr}: no addresses")))
}

/// Makes the endpoint let go of its UDP socket right away, so the same port can be bound again
/// (e.g. a node restarted inside the same process). Otherwise the socket lives until the last
/// clone of the endpoint is dropped and its driver task notices, which callers cannot observe.
/// quinn keeps the previous socket of a rebind for migration, so swapping twice is what
/// actually drops the original.
fn release_socket(endpoint: &Endpoint, local: Option<SocketAddr>) {
    let unspecified = match local {
        Some(SocketAddr::V6(_)) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
        _ => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
    };
    for _ in 0..2 {
        let rebound =
            std::net::UdpSocket::bind(unspecified).and_then(|socket| endpoint.rebind(socket));
        if let Err(e) = rebound {
            tracing::debug!(local = ?local, error = %e, "could not release socket");
            return;
        }
    }
}
