//! Finding a shard's leader, written once for every caller that sends a request to "the
//! shard" rather than to one node: the router's request path (`unikv_router::forward`) and a
//! node calling another shard (`unikv_node::rebalance::peer::call_shard`).
//!
//! The walk is the same for both: try the best candidate (a learned leader hint, the view's
//! leader, then the other members); a `NotLeader` answer naming someone else is followed at
//! once, one naming nobody (or the node itself) crosses that node off; `Unavailable`, `Unknown`
//! and transport failures cross the node off too; once every candidate is crossed off the
//! caller pauses and starts over; and redirects followed back to back are capped so two nodes
//! naming each other cannot spin. [`LeaderWalk`] is that state machine and [`classify`] the
//! reading of an answer. Neither sleeps, sends or reads a clock: each caller keeps its own
//! loop, its own pacing and its own extras (the router's owner learning, counters and
//! suspects), and the walk can be tested without a runtime.
//!
//! It lives in `unikv-types` because it is pure logic over this crate's [`NodeRef`] and
//! [`KvError`] and every process depends on this crate: `unikv-net` is the transport and knows
//! nothing of KV errors, `unikv-gossip` holds a view the router does not route by (it keeps its
//! own table), and `unikv-http` is about HTTP. The transport error is a type parameter, so no
//! transport dependency is needed here.

use crate::kv::{KvError, NodeRef};

/// One member's answer, as the walk reads it.
#[derive(Debug)]
pub enum Answer<T, E> {
    /// The member served the request.
    Reply(T),
    /// The member is not the leader; it names the one it believes in, if any.
    NotLeader(Option<NodeRef>),
    /// `Unavailable`: the member cannot serve now (no leader yet, no quorum); try another.
    Unavailable(KvError),
    /// `Unknown`: the leader changed before answering, the request may have been applied.
    /// Safe to resend only if it is idempotent (a write carrying a (client id, seq)).
    Unknown(KvError),
    /// The transport failed: the member did not answer.
    Lost(E),
    /// Any other error, `WrongShard` included: not about leadership, the caller decides.
    Other(KvError),
}

/// Reads a call's result: `Err` is the transport's failure, `Ok(Err)` the member's refusal.
pub fn classify<T, E>(result: Result<Result<T, KvError>, E>) -> Answer<T, E> {
    match result {
        Ok(Ok(reply)) => Answer::Reply(reply),
        Ok(Err(KvError::NotLeader { leader, .. })) => Answer::NotLeader(leader),
        Ok(Err(e @ KvError::Unavailable { .. })) => Answer::Unavailable(e),
        Ok(Err(e @ KvError::Unknown { .. })) => Answer::Unknown(e),
        Ok(Err(e)) => Answer::Other(e),
        Err(e) => Answer::Lost(e),
    }
}

/// The members to try for a shard, best first, each once (by Raft address): typically a
/// learned leader hint, the view's leader, then the other members.
pub fn candidates<'a>(nodes: impl IntoIterator<Item = &'a NodeRef>) -> Vec<NodeRef> {
    let mut out: Vec<NodeRef> = Vec::new();
    for n in nodes {
        if !out.iter().any(|o| o.raft == n.raft) {
            out.push(n.clone());
        }
    }
    out
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Send the request to this member.
    Try(NodeRef),
    /// Every candidate failed once: pause, then the next call starts a new round.
    Exhausted,
    /// There is no candidate at all: wait for the view to name some.
    NoCandidates,
}

/// The leader-finding walk of one request: which members failed it since the candidates were
/// last all tried, and how many redirects were followed since the last pause.
#[derive(Debug, Clone)]
pub struct LeaderWalk {
    /// Raft addresses crossed off in this round.
    tried: Vec<String>,
    hops: u32,
    max_hops: u32,
}

impl LeaderWalk {
    /// A walk that asks for a pause after `max_hops` redirects in a row.
    pub fn new(max_hops: u32) -> LeaderWalk {
        LeaderWalk {
            tried: Vec::new(),
            hops: 0,
            max_hops,
        }
    }

    /// The first of `candidates` (best first) not crossed off in this round. When all are,
    /// the round ends: [`Next::Exhausted`], and the next call starts again from the best.
    pub fn next(&mut self, candidates: &[NodeRef]) -> Next {
        if candidates.is_empty() {
            return Next::NoCandidates;
        }
        match candidates.iter().find(|n| !self.tried.contains(&n.raft)) {
            Some(n) => Next::Try(n.clone()),
            None => {
                self.tried.clear();
                Next::Exhausted
            }
        }
    }

    /// `target` answered `NotLeader` naming `leader`. Returns the leader to try next (the
    /// caller puts it first among the candidates), or `None` when `target` named nobody else,
    /// in which case it is crossed off. Either way one redirect is counted.
    pub fn not_leader(&mut self, target: &NodeRef, leader: Option<NodeRef>) -> Option<NodeRef> {
        self.hops += 1;
        let leader = leader.filter(|l| l.raft != target.raft);
        if leader.is_none() {
            self.failed(target);
        }
        leader
    }

    /// `target` could not serve the request (`Unavailable`, `Unknown`, no answer): the other
    /// candidates are tried before it again.
    pub fn failed(&mut self, target: &NodeRef) {
        if !self.tried.contains(&target.raft) {
            self.tried.push(target.raft.clone());
        }
    }

    /// Counts a redirect the caller followed on its own (the router's `WrongShard` → owner).
    pub fn hop(&mut self) {
        self.hops += 1;
    }

    /// Whether `max_hops` redirects were followed since the last pause; if so the count
    /// restarts and the caller should pause before the next attempt. Ask after every answer.
    pub fn should_pause(&mut self) -> bool {
        if self.hops >= self.max_hops {
            self.hops = 0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{NodeId, ShardId};

    fn n(i: u64) -> NodeRef {
        NodeRef {
            node_id: NodeId(i),
            http: format!("h{i}"),
            raft: format!("r{i}"),
        }
    }

    fn tried(next: Next) -> u64 {
        match next {
            Next::Try(t) => t.node_id.0,
            other => panic!("expected a target, got {other:?}"),
        }
    }

    #[test]
    fn candidates_keep_the_first_place_of_each_node() {
        let (a, b, c) = (n(1), n(2), n(3));
        let got = candidates([&b, &a, &b, &c, &a]);
        assert_eq!(got, [b, a, c]);
        assert!(candidates(std::iter::empty()).is_empty());
    }

    #[test]
    fn failures_move_on_until_the_round_is_exhausted() {
        let all = [n(1), n(2), n(3)];
        let mut w = LeaderWalk::new(3);
        for want in 1..=3 {
            let t = w.next(&all);
            assert_eq!(tried(t.clone()), want);
            if let Next::Try(t) = t {
                w.failed(&t);
            }
            assert!(!w.should_pause(), "failures are not redirects");
        }
        assert_eq!(w.next(&all), Next::Exhausted);
        // A new round starts from the best candidate again.
        assert_eq!(tried(w.next(&all)), 1);
        assert_eq!(w.next(&[]), Next::NoCandidates);
    }

    #[test]
    fn a_named_leader_is_followed_and_nobody_crosses_the_node_off() {
        let (a, b) = (n(1), n(2));
        let mut w = LeaderWalk::new(10);
        assert_eq!(w.not_leader(&a, Some(b.clone())), Some(b.clone()));
        // Still a candidate: a leader hint does not cross the redirecting node off.
        assert_eq!(tried(w.next(&[a.clone(), b.clone()])), 1);
        // Naming itself or nobody crosses it off.
        assert_eq!(w.not_leader(&a, Some(a.clone())), None);
        assert_eq!(tried(w.next(&[a.clone(), b.clone()])), 2);
        assert_eq!(w.not_leader(&b, None), None);
        assert_eq!(w.next(&[a, b]), Next::Exhausted);
    }

    #[test]
    fn redirects_in_a_row_ask_for_a_pause() {
        let (a, b) = (n(1), n(2));
        let mut w = LeaderWalk::new(3);
        let mut pauses = 0;
        for i in 0..9 {
            let (from, to) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
            assert_eq!(w.not_leader(from, Some(to.clone())).as_ref(), Some(to));
            pauses += usize::from(w.should_pause());
        }
        assert_eq!(pauses, 3);
        w.hop();
        w.hop();
        assert!(!w.should_pause());
        w.hop();
        assert!(w.should_pause());
        assert!(!w.should_pause());
    }

    #[test]
    fn answers_are_classified_by_what_they_mean_for_the_walk() {
        type R = Result<Result<u8, KvError>, &'static str>;
        let shard = ShardId(1);
        let c = |r: R| classify(r);
        assert!(matches!(c(Ok(Ok(7))), Answer::Reply(7)));
        let nl = KvError::NotLeader {
            shard,
            leader: Some(n(2)),
        };
        assert!(matches!(c(Ok(Err(nl))), Answer::NotLeader(Some(l)) if l == n(2)));
        let un = KvError::Unavailable {
            shard,
            reason: "no quorum".into(),
        };
        assert!(matches!(c(Ok(Err(un))), Answer::Unavailable(_)));
        let uk = KvError::Unknown { reason: "x".into() };
        assert!(matches!(c(Ok(Err(uk))), Answer::Unknown(_)));
        let ws = KvError::WrongShard {
            slot: 1,
            shard,
            owner: None,
            epoch: None,
        };
        assert!(matches!(
            c(Ok(Err(ws))),
            Answer::Other(KvError::WrongShard { .. })
        ));
        assert!(matches!(c(Err("down")), Answer::Lost("down")));
    }
}
