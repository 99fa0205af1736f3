//! Collision-safe port selection for tests that run in parallel inside one test binary.
//!
//! Ports come from a random base in `PORT_MIN..PORT_MAX` (below the Linux ephemeral range, so
//! outgoing connections of other processes do not grab them); every port is probed with a TCP
//! and a UDP bind on 127.0.0.1 before use, and is remembered process-wide so two tests of the
//! same binary never receive the same port, even after a node holding it was killed.

use std::collections::HashSet;
use std::net::{TcpListener, UdpSocket};
use std::sync::{Mutex, OnceLock};

use rand::Rng;

/// Lowest port handed out.
pub const PORT_MIN: u16 = 20_000;
/// One past the highest port handed out (the Linux ephemeral range starts at 32768).
pub const PORT_MAX: u16 = 32_000;

fn reserved() -> &'static Mutex<HashSet<u16>> {
    static RESERVED: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    RESERVED.get_or_init(|| Mutex::new(HashSet::new()))
}

/// True when both a TCP listener and a UDP socket can bind `127.0.0.1:port` right now.
pub fn port_is_free(port: u16) -> bool {
    let tcp = TcpListener::bind(("127.0.0.1", port));
    let udp = UdpSocket::bind(("127.0.0.1", port));
    tcp.is_ok() && udp.is_ok()
}

/// Reserves `n` consecutive ports that are free for TCP and UDP and were never handed out
/// before in this process.
pub fn alloc_ports(n: usize) -> Vec<u16> {
    assert!(n > 0 && n < 1000, "alloc_ports: bad count {n}");
    let n16 = n as u16;
    let mut rng = rand::rng();
    let mut taken = reserved().lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..5_000 {
        let base = rng.random_range(PORT_MIN..PORT_MAX - n16);
        let ports: Vec<u16> = (base..base + n16).collect();
        if ports.iter().all(|p| !taken.contains(p) && port_is_free(*p)) {
            taken.extend(ports.iter().copied());
            return ports;
        }
    }
    panic!("alloc_ports: found no {n} free consecutive ports in {PORT_MIN}..{PORT_MAX}");
}

/// Reserves one free port (TCP and UDP) on which nothing listens.
pub fn alloc_port() -> u16 {
    alloc_ports(1)[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_never_repeat() {
        let mut seen = HashSet::new();
        for _ in 0..50 {
            for p in alloc_ports(4) {
                assert!((PORT_MIN..PORT_MAX).contains(&p));
                assert!(seen.insert(p), "port {p} handed out twice");
            }
        }
    }
}
