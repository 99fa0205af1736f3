//! Router sessions: the (client id, sequence number) pairs that make the router's own retries
//! at-most-once.
//!
//! A node applies a write at most once per (client id, seq), so a write the router resends
//! after a timeout or a leader change is deduplicated instead of applied twice (an `append`
//! would otherwise double). Callers that send no `client_id`/`seq` get one of the router's
//! sessions: a request leases a free session, uses its next seq for every attempt, and the
//! lease gives it back with the seq advanced when the request ends — also when the request is
//! cancelled mid-flight, since the write may already have reached a node. A session serves one
//! request at a time, so its seqs reach the shard in order; the pool grows to the peak number
//! of concurrent writes and then reuses ids, keeping the nodes' dedup tables small.

use std::sync::{Mutex, MutexGuard};

use unikv_types::ClientSeq;

/// One client identity with the next sequence number it will use.
#[derive(Debug)]
struct Session {
    client_id: String,
    next_seq: u64,
}

#[derive(Debug, Default)]
struct Pool {
    free: Vec<Session>,
    created: u64,
}

/// The router's pool of sessions.
#[derive(Debug)]
pub struct Sessions {
    /// `r<random 64-bit hex>`: distinguishes this router process from every other.
    prefix: String,
    pool: Mutex<Pool>,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions::new()
    }
}

impl Sessions {
    pub fn new() -> Sessions {
        Sessions::with_prefix(format!("r{:016x}", rand::random::<u64>()))
    }

    fn with_prefix(prefix: String) -> Sessions {
        Sessions {
            prefix,
            pool: Mutex::new(Pool::default()),
        }
    }

    /// Leases a free session (creating one if none is free).
    pub fn lease(&self) -> Lease<'_> {
        let session = {
            let mut pool = self.pool();
            match pool.free.pop() {
                Some(s) => s,
                None => {
                    pool.created += 1;
                    Session {
                        client_id: format!("{}-{}", self.prefix, pool.created),
                        next_seq: 1,
                    }
                }
            }
        };
        Lease {
            sessions: self,
            session: Some(session),
        }
    }

    /// How many sessions exist (leased or free).
    pub fn created(&self) -> u64 {
        self.pool().created
    }

    fn pool(&self) -> MutexGuard<'_, Pool> {
        // The pool is consistent after every statement; a panic elsewhere cannot break it.
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A session in use by one request; returned to the pool, seq advanced, when dropped.
#[derive(Debug)]
pub struct Lease<'a> {
    sessions: &'a Sessions,
    session: Option<Session>,
}

impl Lease<'_> {
    /// The (client id, seq) every attempt of this request carries.
    pub fn client_seq(&self) -> ClientSeq {
        match &self.session {
            Some(s) => ClientSeq::new(s.client_id.clone(), s.next_seq),
            // Only `drop` takes the session out.
            None => ClientSeq::new(String::new(), 0),
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(mut s) = self.session.take() {
            s.next_seq = s.next_seq.saturating_add(1);
            self.sessions.pool().free.push(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    #[test]
    fn concurrent_leases_are_distinct_and_ids_are_reused_with_higher_seqs() {
        let sessions = Sessions::new();
        let a = sessions.lease();
        let b = sessions.lease();
        let (ca, cb) = (a.client_seq(), b.client_seq());
        assert_ne!(ca.client_id, cb.client_id);
        assert_eq!((ca.seq, cb.seq), (1, 1));
        assert!(ca.client_id.starts_with('r') && ca.client_id.ends_with("-1"));
        // The same lease always names the same pair (every retry of a request).
        assert_eq!(a.client_seq(), ca);
        drop(a);
        let c = sessions.lease();
        assert_eq!(c.client_seq().client_id, ca.client_id);
        assert_eq!(c.client_seq().seq, 2);
        drop(b);
        drop(c);
        assert_eq!(sessions.created(), 2);
    }

    #[test]
    fn many_rounds_never_repeat_a_pair() {
        let sessions = Sessions::new();
        let mut used = HashSet::new();
        let mut last: HashMap<String, u64> = HashMap::new();
        for round in 0..50 {
            let leases: Vec<Lease<'_>> = (0..(round % 7 + 1)).map(|_| sessions.lease()).collect();
            let pairs: Vec<ClientSeq> = leases.iter().map(Lease::client_seq).collect();
            let ids: HashSet<&String> = pairs.iter().map(|p| &p.client_id).collect();
            assert_eq!(ids.len(), pairs.len(), "two requests share a session");
            for p in pairs {
                if let Some(prev) = last.insert(p.client_id.clone(), p.seq) {
                    assert!(p.seq > prev, "seq went backwards for {}", p.client_id);
                }
                assert!(used.insert((p.client_id, p.seq)), "pair reused");
            }
        }
        assert_eq!(sessions.created(), 7);
    }

    #[test]
    fn routers_use_different_ids() {
        let a = Sessions::new().lease().client_seq().client_id;
        let b = Sessions::new().lease().client_seq().client_id;
        assert_ne!(a, b);
        let fixed = Sessions::with_prefix("rx".into());
        assert_eq!(fixed.lease().client_seq().client_id, "rx-1");
    }
}
