//! Authenticated, encrypted gossip: every datagram chitchat sends is sealed with the cluster's
//! gossip key (ChaCha20-Poly1305, from `ring`), and a datagram that does not open — no key,
//! another cluster's key, a flipped byte — or that was seen before is dropped and counted. The
//! key authenticates membership of the cluster (routers hold it too), not roles.
//!
//! Wire format: `UKG1` ++ sender instance (16 random bytes per process start) ++ counter (u64
//! BE) ++ ciphertext ++ tag. The header is the AEAD's associated data. Each instance seals
//! with its own key, derived from the cluster key and the instance by HKDF-SHA256, and its
//! counter is the nonce, so a nonce is never reused under a key whatever the number of
//! processes. A receiver keeps, per sender instance, the highest counter seen and a 128-wide
//! window below it (as IPsec and WireGuard do): a replayed datagram, or one older than the
//! window, is dropped. The window does not depend on clocks (faketime tests skew them).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use async_trait::async_trait;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport};
use chitchat::ChitchatEnvelope;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use ring::hkdf::{Salt, HKDF_SHA256};
use ring::rand::{SecureRandom, SystemRandom};

const MAGIC: &[u8; 4] = b"UKG1";
const HEADER: usize = 4 + 16 + 8;
const TAG: usize = 16;
/// Largest UDP payload (IPv4).
const MAX_DATAGRAM: usize = 65_507;
/// Sender instances a receiver remembers (the oldest seen is forgotten first).
const MAX_SENDERS: usize = 1024;
/// How far below the highest counter a datagram may arrive (reordering).
const WINDOW: u64 = 128;

/// The cluster's gossip key: 32 secret bytes shared by every node and router.
#[derive(Clone)]
pub struct GossipKey([u8; 32]);

impl GossipKey {
    pub fn new(bytes: [u8; 32]) -> GossipKey {
        GossipKey(bytes)
    }

    /// The AEAD key of one sender instance.
    fn for_instance(&self, instance: &[u8; 16]) -> LessSafeKey {
        let prk = Salt::new(HKDF_SHA256, b"unikv gossip v1").extract(&self.0);
        let mut bytes = [0u8; 32];
        prk.expand(&[instance], &CHACHA20_POLY1305)
            .and_then(|okm| okm.fill(&mut bytes))
            .expect("HKDF output of the AEAD key length");
        LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &bytes).expect("a 32-byte key"))
    }
}

impl std::fmt::Debug for GossipKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GossipKey(..)")
    }
}

/// What the sealed transport dropped, and what it passed.
#[derive(Debug, Default)]
pub struct SealStats {
    pub accepted: AtomicU64,
    /// Did not open: not a sealed datagram, another key, or altered.
    pub forged: AtomicU64,
    /// Opened, but seen before or older than the window.
    pub replayed: AtomicU64,
    /// Too large to send once sealed.
    pub oversize: AtomicU64,
}

/// A reading of [`SealStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SealCounts {
    pub accepted: u64,
    pub forged: u64,
    pub replayed: u64,
    pub oversize: u64,
}

impl SealStats {
    pub fn counts(&self) -> SealCounts {
        SealCounts {
            accepted: self.accepted.load(Relaxed),
            forged: self.forged.load(Relaxed),
            replayed: self.replayed.load(Relaxed),
            oversize: self.oversize.load(Relaxed),
        }
    }
}

/// Seals and opens datagrams for one process.
pub struct Sealer {
    key: GossipKey,
    instance: [u8; 16],
    sealing: LessSafeKey,
    counter: u64,
    senders: HashMap<[u8; 16], Sender>,
    next_seen: u64,
    pub stats: Arc<SealStats>,
}

struct Sender {
    key: LessSafeKey,
    highest: u64,
    /// Bit i: counter `highest - i` was seen.
    seen: u128,
    /// When it was last heard of (an ordinal), to forget the oldest.
    last: u64,
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    Forged,
    Replayed,
}

impl Sealer {
    pub fn new(key: GossipKey, stats: Arc<SealStats>) -> Sealer {
        let mut instance = [0u8; 16];
        SystemRandom::new()
            .fill(&mut instance)
            .expect("the system's random source");
        let sealing = key.for_instance(&instance);
        Sealer {
            key,
            instance,
            sealing,
            counter: 0,
            senders: HashMap::new(),
            next_seen: 0,
            stats,
        }
    }

    /// `plain` sealed into a datagram.
    pub fn seal(&mut self, plain: &[u8]) -> Vec<u8> {
        self.counter += 1;
        let mut out = Vec::with_capacity(HEADER + plain.len() + TAG);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.instance);
        out.extend_from_slice(&self.counter.to_be_bytes());
        let mut body = plain.to_vec();
        self.sealing
            .seal_in_place_append_tag(nonce(self.counter), Aad::from(&out[..HEADER]), &mut body)
            .expect("sealing never fails for in-range lengths");
        out.extend_from_slice(&body);
        out
    }

    /// The plaintext of a datagram, unless it is forged or replayed.
    pub fn open(&mut self, datagram: &[u8]) -> Result<Vec<u8>, Dropped> {
        if datagram.len() < HEADER + TAG || &datagram[..4] != MAGIC {
            return Err(Dropped::Forged);
        }
        let instance: [u8; 16] = datagram[4..20].try_into().expect("16 bytes");
        let counter = u64::from_be_bytes(datagram[20..28].try_into().expect("8 bytes"));
        let (header, sealed) = datagram.split_at(HEADER);
        if let Some(s) = self.senders.get(&instance) {
            if counter + WINDOW <= s.highest
                || (counter <= s.highest && s.seen >> (s.highest - counter) & 1 == 1)
            {
                return Err(Dropped::Replayed);
            }
        }
        let derived;
        let key = match self.senders.get(&instance) {
            Some(s) => &s.key,
            None => {
                derived = self.key.for_instance(&instance);
                &derived
            }
        };
        let mut body = sealed.to_vec();
        let plain_len = key
            .open_in_place(nonce(counter), Aad::from(header), &mut body)
            .map_err(|_| Dropped::Forged)?
            .len();
        body.truncate(plain_len);
        // Authentic: remember it.
        self.next_seen += 1;
        let last = self.next_seen;
        if !self.senders.contains_key(&instance) {
            if self.senders.len() >= MAX_SENDERS {
                if let Some(oldest) = self
                    .senders
                    .iter()
                    .min_by_key(|(_, s)| s.last)
                    .map(|(k, _)| *k)
                {
                    self.senders.remove(&oldest);
                }
            }
            let key = self.key.for_instance(&instance);
            self.senders.insert(
                instance,
                Sender {
                    key,
                    highest: 0,
                    seen: 0,
                    last,
                },
            );
        }
        let s = self.senders.get_mut(&instance).expect("inserted");
        s.last = last;
        if counter > s.highest {
            let shift = counter - s.highest;
            s.seen = if shift >= 128 { 0 } else { s.seen << shift };
            s.seen |= 1;
            s.highest = counter;
        } else {
            s.seen |= 1 << (s.highest - counter);
        }
        Ok(body)
    }
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

/// chitchat's UDP transport with every datagram sealed (see the module).
///
/// chitchat encodes its messages only inside its own UDP socket, so the sealed socket keeps
/// one (`inner`, on loopback) and bounces each datagram off a second loopback socket
/// (`relay`) to get at the bytes: chitchat sends to the relay, the relay's bytes are sealed
/// and sent to the peer; a peer's datagram is opened and handed from the relay to `inner`,
/// which decodes it. Only datagrams between these two sockets are taken on loopback.
pub struct SealedUdp {
    pub key: GossipKey,
    pub stats: Arc<SealStats>,
}

/// How long a bounce over loopback may take before the datagram is given up (gossip
/// tolerates loss; a bounce is microseconds).
const BOUNCE: std::time::Duration = std::time::Duration::from_millis(200);

#[async_trait]
impl Transport for SealedUdp {
    async fn open(&self, listen: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let public = tokio::net::UdpSocket::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("failed to bind to {listen}/UDP for gossip: {e}"))?;
        let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
        let inner = chitchat::transport::UdpSocket::open(loopback).await?;
        let relay = tokio::net::UdpSocket::bind(loopback).await?;
        Ok(Box::new(SealedSocket {
            inner_addr: inner.local_addr()?,
            relay_addr: relay.local_addr()?,
            public,
            inner,
            relay,
            sealer: Sealer::new(self.key.clone(), self.stats.clone()),
            buf: vec![0u8; MAX_DATAGRAM],
            pending_from: None,
        }))
    }
}

struct SealedSocket {
    public: tokio::net::UdpSocket,
    inner: chitchat::transport::UdpSocket,
    inner_addr: SocketAddr,
    relay: tokio::net::UdpSocket,
    relay_addr: SocketAddr,
    sealer: Sealer,
    buf: Vec<u8>,
    /// The peer of an opened datagram handed to `inner` and not yet decoded (a `recv`
    /// cancelled midway finishes it first).
    pending_from: Option<SocketAddr>,
}

impl SealedSocket {
    /// The next datagram the relay got from `inner`, within [`BOUNCE`].
    async fn bounced_back(&mut self) -> Option<usize> {
        let deadline = tokio::time::Instant::now() + BOUNCE;
        loop {
            match tokio::time::timeout_at(deadline, self.relay.recv_from(&mut self.buf)).await {
                Ok(Ok((n, from))) if from == self.inner_addr => return Some(n),
                Ok(Ok(_)) => continue,
                _ => return None,
            }
        }
    }
}

#[async_trait]
impl Socket for SealedSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.public.local_addr()?)
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        self.inner.send(self.relay_addr, envelope).await?;
        let Some(n) = self.bounced_back().await else {
            tracing::debug!(%to, "gossip datagram lost on its loopback bounce");
            return Ok(SendOutcome { num_bytes_sent: 0 });
        };
        let datagram = self.sealer.seal(&self.buf[..n]);
        if datagram.len() > MAX_DATAGRAM {
            // chitchat fills a datagram up to the UDP limit; sealed it no longer fits.
            self.sealer.stats.oversize.fetch_add(1, Relaxed);
            tracing::warn!(bytes = datagram.len(), %to, "sealed gossip datagram too large; not sent");
            return Ok(SendOutcome { num_bytes_sent: 0 });
        }
        match self.public.send_to(&datagram, to).await {
            Ok(n) => Ok(SendOutcome { num_bytes_sent: n }),
            // A peer that went away is not a broken transport.
            Err(e) if transient(&e) => Ok(SendOutcome { num_bytes_sent: 0 }),
            Err(e) => Err(anyhow::anyhow!("failed to send gossip to {to}: {e}")),
        }
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            if let Some(from) = self.pending_from {
                let got = match tokio::time::timeout(BOUNCE, self.inner.recv()).await {
                    Ok(got) => got?,
                    Err(_) => {
                        tracing::debug!(%from, "gossip datagram lost on its loopback bounce");
                        self.pending_from = None;
                        continue;
                    }
                };
                if got.from_addr != self.relay_addr {
                    // Not ours: something else on this machine wrote to the inner socket.
                    self.sealer.stats.forged.fetch_add(1, Relaxed);
                    continue;
                }
                self.pending_from = None;
                self.sealer.stats.accepted.fetch_add(1, Relaxed);
                return Ok(RecvOutcome {
                    from_addr: from,
                    ..got
                });
            }
            let (n, from) = match self.public.recv_from(&mut self.buf).await {
                Ok(r) => r,
                Err(e) if transient(&e) => continue,
                Err(e) => return Err(anyhow::anyhow!("gossip receive failed: {e}")),
            };
            let plain = match self.sealer.open(&self.buf[..n]) {
                Ok(p) => p,
                Err(why) => {
                    let counter = match why {
                        Dropped::Forged => &self.sealer.stats.forged,
                        Dropped::Replayed => &self.sealer.stats.replayed,
                    };
                    if counter.fetch_add(1, Relaxed) % 1000 == 0 {
                        tracing::warn!(%from, bytes = n, reason = ?why, "dropped a gossip datagram that is not this cluster's");
                    }
                    continue;
                }
            };
            self.relay.send_to(&plain, self.inner_addr).await?;
            self.pending_from = Some(from);
        }
    }
}

fn transient(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(key: u8) -> Sealer {
        Sealer::new(GossipKey::new([key; 32]), Arc::default())
    }

    #[test]
    fn only_this_clusters_fresh_datagrams_open() {
        let (mut a, mut b) = (sealer(1), sealer(1));
        let d1 = a.seal(b"hello");
        let d2 = a.seal(b"world");
        assert_eq!(b.open(&d2).unwrap(), b"world");
        // Reordered within the window: fine; again: replayed.
        assert_eq!(b.open(&d1).unwrap(), b"hello");
        assert_eq!(b.open(&d1), Err(Dropped::Replayed));
        assert_eq!(b.open(&d2), Err(Dropped::Replayed));
        // Altered anywhere: forged.
        for i in [0, 5, 21, 30, 44] {
            let mut bad = a.seal(b"x");
            assert_eq!(bad.len(), 45);
            bad[i] ^= 1;
            assert_eq!(b.open(&bad), Err(Dropped::Forged), "byte {i}");
        }
        // Another cluster's key, plaintext, or too short: forged.
        let mut other = sealer(2);
        assert_eq!(b.open(&other.seal(b"hello")), Err(Dropped::Forged));
        assert_eq!(
            b.open(b"plain chitchat bytes, no seal at all"),
            Err(Dropped::Forged)
        );
        assert_eq!(b.open(b"UKG1"), Err(Dropped::Forged));
        // Far behind the window: replayed, even if never seen.
        let old = a.seal(b"old");
        for _ in 0..200 {
            b.open(&a.seal(b"n")).unwrap();
        }
        assert_eq!(b.open(&old), Err(Dropped::Replayed));
        // A restarted sender is a new instance: its counter starts again.
        let mut a2 = sealer(1);
        assert_eq!(b.open(&a2.seal(b"again")).unwrap(), b"again");
    }
}
