//! The typed cluster view and its derivation from member states. Everything here is pure: the
//! running member ([`crate::Gossip`]) collects [`MemberView`]s from chitchat and calls
//! [`ClusterView::from_members`].

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use tracing::warn;
use unikv_types::{Epoch, NodeId, NodeRef, Role, ShardId, ShardState, Slot, SLOT_COUNT};

use crate::{MemberKind, NodeState};

/// What a member knows about the cluster, derived from gossip.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    /// Increases by one every time the derived view changes (local counter, for change detection).
    pub revision: u64,
    /// Every member known (live or dead), sorted by name.
    pub members: Vec<MemberView>,
    pub shards: BTreeMap<ShardId, ShardView>,
}

/// One gossip member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberView {
    pub name: String,
    pub kind: MemberKind,
    /// Whether the failure detector considers it alive (and it has not announced that it left).
    pub live: bool,
    pub gossip_addr: SocketAddr,
    /// The node's published state; `None` for routers, for nodes that have not published yet and
    /// for nodes whose published values cannot be parsed.
    pub node: Option<NodeState>,
}

/// One shard as derived from its members' states.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardView {
    pub id: ShardId,
    /// Among the shard's members, the leader claim with the highest term wins: a live member
    /// reporting role=Leader at term T beats any `leader` field reported at a lower term;
    /// otherwise the `leader` field reported with the highest term is used, its addresses taken
    /// from that node's own state (`None` if that node's state is unknown). At the same term a
    /// self-reported leader wins.
    pub leader: Option<NodeRef>,
    /// The highest Raft term reported by any member of the shard (may be above the leader's
    /// term while an election is under way).
    pub term: u64,
    /// Sorted by node id; one entry per node id.
    pub members: Vec<ShardMember>,
    /// Ownership from the member that reports the highest descriptor_version.
    pub slots: Vec<(unikv_types::SlotRange, Epoch)>,
    pub descriptor_version: u64,
    pub initialised: bool,
    /// The `--initial_shards` its members were started with (the highest any member reports,
    /// live or not; `None` if none says): a fresh shard compares it with its own before
    /// claiming.
    pub initial_shards: Option<u64>,
    /// The published state (from the highest descriptor_version member), or Unreachable if no
    /// member of the shard is live.
    pub state: ShardState,
    /// Keys and bytes stored, as last reported by the leader (else the ownership source).
    pub keys: u64,
    pub bytes: u64,
    /// Range chunks held (from the same member as `keys`).
    pub chunks: u64,
    /// Registry tags (from the highest descriptor_version member).
    pub tags: Vec<(String, String)>,
}

/// One replica of a shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardMember {
    pub node_id: NodeId,
    pub http: String,
    pub raft: String,
    pub role: Role,
    pub live: bool,
}

static SLOT_CONFLICT_LOGGED: AtomicBool = AtomicBool::new(false);

fn log_slot_conflict(slot: Slot, a: ShardId, b: ShardId, epoch: Epoch) {
    if !SLOT_CONFLICT_LOGGED.swap(true, Ordering::Relaxed) {
        warn!(
            slot,
            shard_a = a.0,
            shard_b = b.0,
            epoch = epoch.0,
            "two shards claim a slot at the same epoch; preferring the lower shard id \
             (logged once)"
        );
    }
}

impl ClusterView {
    /// Every shard: whether it takes data, bytes stored, tags.
    pub fn summaries(&self) -> Vec<unikv_types::ShardSummary> {
        self.shards
            .values()
            .map(|s| unikv_types::ShardSummary {
                id: s.id,
                active: s.state == ShardState::Active,
                bytes: s.bytes,
                tags: s.tags.iter().cloned().collect(),
            })
            .collect()
    }

    /// Derives a view (with revision 0) from member states. Members are sorted by name; members
    /// that carry a [`NodeState`] are grouped into shards.
    pub fn from_members(mut members: Vec<MemberView>) -> ClusterView {
        members.sort_by(|a, b| a.name.cmp(&b.name));
        let mut by_shard: BTreeMap<ShardId, Vec<(&MemberView, &NodeState)>> = BTreeMap::new();
        for m in &members {
            if let Some(ns) = &m.node {
                by_shard.entry(ns.shard).or_default().push((m, ns));
            }
        }
        // A removed shard (unregistered for good) is left out of the view.
        let shards = by_shard
            .into_iter()
            .map(|(id, entries)| (id, derive_shard(id, &entries)))
            .filter(|(_, s)| s.state != ShardState::Removed)
            .collect();
        ClusterView {
            revision: 0,
            members,
            shards,
        }
    }

    /// The newest catalog version any node reports having applied (0: none reported).
    pub fn catalog_version(&self) -> u64 {
        self.members
            .iter()
            .filter_map(|m| m.node.as_ref())
            .map(|n| n.catalog_version)
            .max()
            .unwrap_or(0)
    }

    /// Owner of a slot: across all shards, the claim with the highest epoch wins (on a tie, which
    /// a correct cluster never produces, the lower shard id wins and a warning is logged once).
    /// `None` if no shard claims the slot.
    pub fn owner_of(&self, slot: Slot) -> Option<(ShardId, Epoch)> {
        let mut best: Option<(ShardId, Epoch)> = None;
        for (id, shard) in &self.shards {
            for (range, epoch) in &shard.slots {
                if !range.contains(slot) {
                    continue;
                }
                match best {
                    Some((_, e)) if *epoch < e => {}
                    Some((b, e)) if *epoch == e => {
                        if b != *id {
                            log_slot_conflict(slot, b, *id, e);
                        }
                    }
                    _ => best = Some((*id, *epoch)),
                }
            }
        }
        best
    }

    /// The owner of every slot (index = slot), by the same rule as [`ClusterView::owner_of`].
    pub fn slot_table(&self) -> Vec<Option<(ShardId, Epoch)>> {
        let mut table: Vec<Option<(ShardId, Epoch)>> = vec![None; SLOT_COUNT as usize];
        // Shards are visited in ascending id order, so on equal epochs the lower id stays.
        for (id, shard) in &self.shards {
            for (range, epoch) in &shard.slots {
                let hi = range.1.min(SLOT_COUNT - 1);
                for slot in range.0..=hi {
                    let cell = &mut table[slot as usize];
                    match *cell {
                        Some((_, e)) if *epoch < e => {}
                        Some((b, e)) if *epoch == e => {
                            if b != *id {
                                log_slot_conflict(slot, b, *id, e);
                            }
                        }
                        _ => *cell = Some((*id, *epoch)),
                    }
                }
            }
        }
        table
    }

    /// Sum of all shards' descriptor versions: increases with every ownership change anywhere.
    pub fn topology_version(&self) -> u64 {
        self.shards
            .values()
            .fold(0u64, |acc, s| acc.saturating_add(s.descriptor_version))
    }

    pub fn shard(&self, id: ShardId) -> Option<&ShardView> {
        self.shards.get(&id)
    }

    /// The member with this name.
    pub fn member(&self, name: &str) -> Option<&MemberView> {
        self.members
            .binary_search_by(|m| m.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.members[i])
    }

    /// Whether two views hold the same facts (everything but the revision).
    pub fn same_content(&self, other: &ClusterView) -> bool {
        self.members == other.members && self.shards == other.shards
    }
}

fn node_ref(ns: &NodeState) -> NodeRef {
    NodeRef {
        node_id: ns.node,
        http: ns.http.clone(),
        raft: ns.raft.clone(),
    }
}

/// A claim that some node leads the shard.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Claim {
    term: u64,
    /// A live member saying "I am the leader" (beats a `leader` field at the same term).
    self_reported: bool,
    /// Lower node ids win remaining ties, deterministically.
    leader: Reverse<NodeId>,
}

fn derive_shard(id: ShardId, entries: &[(&MemberView, &NodeState)]) -> ShardView {
    let any_live = entries.iter().any(|(m, _)| m.live);
    let term = entries.iter().map(|(_, ns)| ns.term).max().unwrap_or(0);

    // Ownership: the highest descriptor version; then live, newer term, lower node id, name.
    let owner = entries.iter().max_by_key(|(m, ns)| {
        (
            ns.descriptor_version,
            m.live,
            ns.term,
            Reverse(ns.node),
            Reverse(m.name.as_str()),
        )
    });

    // Members, one per node id: prefer the live, most recent report.
    let mut by_node: BTreeMap<NodeId, (&MemberView, &NodeState)> = BTreeMap::new();
    for &(m, ns) in entries {
        let rank = |m: &MemberView, ns: &NodeState| {
            (
                m.live,
                ns.term,
                ns.descriptor_version,
                Reverse(m.name.clone()),
            )
        };
        match by_node.get(&ns.node) {
            Some(&(om, ons)) if rank(om, ons) >= rank(m, ns) => {}
            _ => {
                by_node.insert(ns.node, (m, ns));
            }
        }
    }
    let members = by_node
        .values()
        .map(|(m, ns)| ShardMember {
            node_id: ns.node,
            http: ns.http.clone(),
            raft: ns.raft.clone(),
            role: ns.role,
            live: m.live,
        })
        .collect();

    // Leader: the best claim, self-reported by a live leader or named in a `leader` field.
    let mut best: Option<Claim> = None;
    for (m, ns) in entries {
        let mut offer = |claim: Claim| {
            if best.as_ref().is_none_or(|b| claim > *b) {
                best = Some(claim);
            }
        };
        if m.live && ns.role == Role::Leader {
            offer(Claim {
                term: ns.term,
                self_reported: true,
                leader: Reverse(ns.node),
            });
        }
        if let Some(leader) = ns.leader {
            offer(Claim {
                term: ns.term,
                self_reported: false,
                leader: Reverse(leader),
            });
        }
    }
    let leader_state = best.and_then(|claim| by_node.get(&claim.leader.0).map(|(_, ns)| *ns));
    let leader = leader_state.map(node_ref);
    let stats_source = leader_state.or(owner.map(|(_, ns)| *ns));

    ShardView {
        id,
        leader,
        term,
        members,
        slots: owner.map(|(_, ns)| ns.slots.clone()).unwrap_or_default(),
        descriptor_version: owner.map(|(_, ns)| ns.descriptor_version).unwrap_or(0),
        initialised: owner.is_some_and(|(_, ns)| ns.initialised),
        initial_shards: entries.iter().filter_map(|(_, ns)| ns.initial_shards).max(),
        state: match owner {
            Some((_, ns)) if ns.state == ShardState::Removed => ShardState::Removed,
            Some((_, ns)) if any_live => ns.state,
            _ => ShardState::Unreachable,
        },
        keys: stats_source.map(|ns| ns.keys).unwrap_or(0),
        bytes: stats_source.map(|ns| ns.bytes).unwrap_or(0),
        chunks: stats_source.map(|ns| ns.chunks).unwrap_or(0),
        tags: owner.map(|(_, ns)| ns.tags.clone()).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use unikv_types::SlotRange;

    fn ns(shard: u64, node: u64) -> NodeState {
        NodeState {
            shard: ShardId(shard),
            node: NodeId(node),
            role: Role::Follower,
            leader: None,
            term: 1,
            http: format!("127.0.0.1:{}", 8000 + shard * 10 + node),
            raft: format!("127.0.0.1:{}", 9000 + shard * 10 + node),
            state: ShardState::Active,
            descriptor_version: 1,
            initialised: true,
            initial_shards: None,
            keys: 0,
            bytes: 0,
            chunks: 0,
            tags: Vec::new(),
            catalog_version: 0,
            slots: vec![],
        }
    }

    fn member(state: NodeState, live: bool) -> MemberView {
        MemberView {
            name: format!("node-{}-{}", state.shard.0, state.node.0),
            kind: MemberKind::Node,
            live,
            gossip_addr: SocketAddr::from(([127, 0, 0, 1], 7000 + state.node.0 as u16)),
            node: Some(state),
        }
    }

    fn router() -> MemberView {
        MemberView {
            name: "router-1".into(),
            kind: MemberKind::Router,
            live: true,
            gossip_addr: SocketAddr::from(([127, 0, 0, 1], 7999)),
            node: None,
        }
    }

    fn leader_id(v: &ClusterView, shard: u64) -> Option<u64> {
        v.shard(ShardId(shard))
            .unwrap()
            .leader
            .as_ref()
            .map(|l| l.node_id.0)
    }

    #[test]
    fn members_sorted_and_grouped() {
        let v = ClusterView::from_members(vec![
            member(ns(2, 1), true),
            router(),
            member(ns(1, 2), true),
            member(ns(1, 1), true),
        ]);
        let names: Vec<_> = v.members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["node-1-1", "node-1-2", "node-2-1", "router-1"]);
        assert_eq!(v.shards.len(), 2);
        let s1 = v.shard(ShardId(1)).unwrap();
        let ids: Vec<_> = s1.members.iter().map(|m| m.node_id.0).collect();
        assert_eq!(ids, [1, 2]);
        assert_eq!(v.member("router-1").unwrap().kind, MemberKind::Router);
        assert!(v.member("nobody").is_none());
        assert_eq!(v.revision, 0);
    }

    #[test]
    fn highest_term_leader_wins() {
        let mut a = ns(1, 1);
        a.role = Role::Leader;
        a.term = 3;
        a.leader = Some(NodeId(1));
        let mut b = ns(1, 2);
        b.role = Role::Leader;
        b.term = 5;
        b.leader = Some(NodeId(2));
        let mut c = ns(1, 3);
        c.term = 5;
        c.leader = Some(NodeId(2));
        let v = ClusterView::from_members(vec![
            member(a, true),
            member(b.clone(), true),
            member(c, true),
        ]);
        let s = v.shard(ShardId(1)).unwrap();
        assert_eq!(s.leader, Some(node_ref(&b)));
        assert_eq!(s.term, 5);
    }

    #[test]
    fn stale_leader_claim_at_lower_term_loses() {
        // Node 1 still believes it leads at term 4; node 3 has seen node 2 win term 6 but node 2's
        // own report has not arrived yet (it still shows its old state at term 4).
        let mut a = ns(1, 1);
        a.role = Role::Leader;
        a.term = 4;
        a.leader = Some(NodeId(1));
        let mut b = ns(1, 2);
        b.term = 4;
        b.leader = Some(NodeId(1));
        let mut c = ns(1, 3);
        c.term = 6;
        c.leader = Some(NodeId(2));
        let v = ClusterView::from_members(vec![
            member(a.clone(), true),
            member(b.clone(), true),
            member(c, true),
        ]);
        assert_eq!(leader_id(&v, 1), Some(2));
        // Addresses come from node 2's own state.
        assert_eq!(v.shard(ShardId(1)).unwrap().leader, Some(node_ref(&b)));
        assert_eq!(v.shard(ShardId(1)).unwrap().term, 6);

        // A live self-reported leader beats a `leader` field at a lower term...
        let mut d = ns(1, 3);
        d.term = 7;
        d.role = Role::Leader;
        d.leader = Some(NodeId(3));
        let mut e = ns(1, 2);
        e.term = 6;
        e.leader = Some(NodeId(2));
        let v = ClusterView::from_members(vec![member(d.clone(), true), member(e, true)]);
        assert_eq!(leader_id(&v, 1), Some(3));
        // ...and wins a tie at the same term against another member's `leader` field.
        let mut f = ns(1, 1);
        f.term = 7;
        f.leader = Some(NodeId(1));
        let v = ClusterView::from_members(vec![member(d.clone(), true), member(f, true)]);
        assert_eq!(leader_id(&v, 1), Some(3));
        // A dead member's role=Leader is no self-report: a live member's field at a higher term
        // wins, and a field naming a node nobody knows yields no leader (but keeps the term).
        let mut g = ns(1, 1);
        g.term = 8;
        g.leader = Some(NodeId(9));
        let v = ClusterView::from_members(vec![member(d.clone(), false), member(g, true)]);
        assert_eq!(leader_id(&v, 1), None);
        assert_eq!(v.shard(ShardId(1)).unwrap().term, 8);
        // With only the dead leader left, its own `leader` field still names it (last known).
        let v = ClusterView::from_members(vec![member(d, false)]);
        assert_eq!(leader_id(&v, 1), Some(3));
        assert_eq!(v.shard(ShardId(1)).unwrap().state, ShardState::Unreachable);
    }

    #[test]
    fn highest_descriptor_version_wins_for_slots() {
        let mut a = ns(1, 1);
        a.descriptor_version = 4;
        a.slots = vec![(SlotRange(0, 99), Epoch(1))];
        a.state = ShardState::Active;
        let mut b = ns(1, 2);
        b.descriptor_version = 5;
        b.slots = vec![(SlotRange(0, 49), Epoch(1))];
        b.state = ShardState::Draining;
        let mut c = ns(1, 3);
        c.descriptor_version = 3;
        c.slots = vec![(SlotRange(0, 199), Epoch(1))];
        c.initialised = false;
        // Order of members must not matter.
        for members in [
            vec![
                member(a.clone(), true),
                member(b.clone(), false),
                member(c.clone(), true),
            ],
            vec![
                member(c.clone(), true),
                member(a.clone(), true),
                member(b.clone(), false),
            ],
        ] {
            let v = ClusterView::from_members(members);
            let s = v.shard(ShardId(1)).unwrap();
            assert_eq!(s.descriptor_version, 5);
            assert_eq!(s.slots, b.slots);
            assert_eq!(s.state, ShardState::Draining);
            assert!(s.initialised);
            assert_eq!(v.owner_of(49), Some((ShardId(1), Epoch(1))));
            assert_eq!(v.owner_of(50), None);
        }
    }

    #[test]
    fn owner_of_uses_highest_epoch_across_shards() {
        // Slot 100 moved from shard 1 (epoch 1) to shard 2 (epoch 2); shard 1 still (stale)
        // reports it at epoch 1.
        let mut s1 = ns(1, 1);
        s1.slots = vec![(SlotRange(0, 8191), Epoch(1))];
        let mut s2 = ns(2, 1);
        s2.slots = vec![
            (SlotRange(8192, 16383), Epoch(1)),
            (SlotRange(100, 100), Epoch(2)),
        ];
        let v = ClusterView::from_members(vec![member(s1, true), member(s2, true)]);
        assert_eq!(v.owner_of(100), Some((ShardId(2), Epoch(2))));
        assert_eq!(v.owner_of(99), Some((ShardId(1), Epoch(1))));
        assert_eq!(v.owner_of(101), Some((ShardId(1), Epoch(1))));
        assert_eq!(v.owner_of(16383), Some((ShardId(2), Epoch(1))));
        let table = v.slot_table();
        assert_eq!(table.len(), SLOT_COUNT as usize);
        for slot in 0..SLOT_COUNT {
            assert_eq!(table[slot as usize], v.owner_of(slot), "slot {slot}");
        }
        assert!(table.iter().all(Option::is_some));

        // Equal epochs (a broken cluster): the lower shard id wins, in both functions.
        let mut t1 = ns(1, 1);
        t1.slots = vec![(SlotRange(5, 5), Epoch(3))];
        let mut t2 = ns(2, 1);
        t2.slots = vec![(SlotRange(5, 6), Epoch(3))];
        let v = ClusterView::from_members(vec![member(t2, true), member(t1, true)]);
        assert_eq!(v.owner_of(5), Some((ShardId(1), Epoch(3))));
        assert_eq!(v.slot_table()[5], Some((ShardId(1), Epoch(3))));
        assert_eq!(v.owner_of(6), Some((ShardId(2), Epoch(3))));
        assert_eq!(v.owner_of(7), None);
        assert_eq!(v.slot_table()[7], None);
    }

    #[test]
    fn topology_version_sums_descriptor_versions() {
        let mut a = ns(1, 1);
        a.descriptor_version = 3;
        let mut b = ns(1, 2);
        b.descriptor_version = 4;
        let mut c = ns(2, 1);
        c.descriptor_version = 10;
        let v = ClusterView::from_members(vec![member(a, true), member(b, true), member(c, true)]);
        assert_eq!(v.topology_version(), 14);
        assert_eq!(ClusterView::default().topology_version(), 0);
    }

    #[test]
    fn dead_shard_is_unreachable_but_keeps_its_slots() {
        let mut a = ns(1, 1);
        a.slots = vec![(SlotRange(0, 10), Epoch(1))];
        let mut b = ns(2, 1);
        b.slots = vec![(SlotRange(11, 20), Epoch(1))];
        b.state = ShardState::Draining;
        b.descriptor_version = 2;
        let mut b2 = ns(2, 2);
        b2.role = Role::Leader;
        b2.leader = Some(NodeId(2));
        let v = ClusterView::from_members(vec![
            member(a.clone(), false),
            member(b.clone(), false),
            member(b2.clone(), true),
            router(),
        ]);
        let s1 = v.shard(ShardId(1)).unwrap();
        assert_eq!(s1.state, ShardState::Unreachable);
        assert_eq!(s1.slots, a.slots);
        assert!(!s1.members[0].live);
        assert_eq!(v.owner_of(5), Some((ShardId(1), Epoch(1))));
        // One live member is enough for the published state, which comes from the (dead)
        // member with the newest descriptor.
        let s2 = v.shard(ShardId(2)).unwrap();
        assert_eq!(s2.state, ShardState::Draining);
        assert_eq!(s2.slots, b.slots);
        assert_eq!(s2.leader, Some(node_ref(&b2)));
    }

    #[test]
    fn duplicate_node_ids_collapse_to_the_live_report() {
        let a = ns(1, 1);
        let mut old = member(a.clone(), false);
        old.name = "node-1-1-old".into();
        let mut a2 = a.clone();
        a2.term = 9;
        a2.role = Role::Leader;
        a2.http = "127.0.0.1:1".into();
        let v = ClusterView::from_members(vec![old, member(a2, true)]);
        let s = v.shard(ShardId(1)).unwrap();
        assert_eq!(s.members.len(), 1);
        assert!(s.members[0].live);
        assert_eq!(s.members[0].http, "127.0.0.1:1");
        assert_eq!(s.leader.as_ref().unwrap().http, "127.0.0.1:1");
        assert_eq!(v.members.len(), 2);
    }

    #[test]
    fn same_content_ignores_revision() {
        let v = ClusterView::from_members(vec![member(ns(1, 1), true)]);
        let mut w = v.clone();
        w.revision = 9;
        assert!(v.same_content(&w));
        assert_ne!(v, w);
        w.members[0].live = false;
        assert!(!v.same_content(&w));
    }
}
