//! The only place that reads gossip's [`ClusterView`]: it turns a view into a routing
//! [`Table`]. Who owns a slot (highest epoch wins) is already decided by gossip's slot table;
//! this adds, per shard, the nodes worth asking.

use unikv_gossip::{ClusterView, ShardMember, ShardView};
use unikv_types::NodeRef;

use crate::routing::{Owner, ShardRoute, Table};

/// Builds the routing table for `view`.
pub fn table(view: &ClusterView) -> Table {
    let slots = view
        .slot_table()
        .into_iter()
        .map(|o| o.map(|(shard, epoch)| Owner { shard, epoch }))
        .collect();
    Table::new(
        view.revision,
        view.topology_version(),
        slots,
        view.shards.values().map(route),
    )
}

fn route(s: &ShardView) -> ShardRoute {
    let (live, down): (Vec<&ShardMember>, Vec<&ShardMember>) =
        s.members.iter().partition(|m| m.live);
    let refs = |ms: Vec<&ShardMember>| {
        ms.into_iter()
            .map(|m| NodeRef {
                node_id: m.node_id,
                http: m.http.clone(),
                raft: m.raft.clone(),
            })
            .collect()
    };
    // A leader gossip already reports down is not worth asking first.
    let leader = s
        .leader
        .clone()
        .filter(|l| !down.iter().any(|m| m.node_id == l.node_id));
    ShardRoute {
        id: s.id,
        leader,
        term: s.term,
        live: refs(live),
        down: refs(down),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::net::SocketAddr;
    use unikv_gossip::{MemberKind, MemberView, NodeState};
    use unikv_types::{Epoch, NodeId, Role, ShardId, ShardState, SlotRange, SLOT_COUNT};

    fn state(shard: u64, node: u64, term: u64, leader: Option<u64>) -> NodeState {
        NodeState {
            shard: ShardId(shard),
            node: NodeId(node),
            role: if leader == Some(node) {
                Role::Leader
            } else {
                Role::Follower
            },
            leader: leader.map(NodeId),
            term,
            http: format!("127.0.0.1:80{shard}{node}"),
            raft: format!("127.0.0.1:180{shard}{node}"),
            state: ShardState::Active,
            descriptor_version: 1,
            initialised: true,
            initial_shards: None,
            slots: Vec::new(),
            keys: 0,
            bytes: 0,
            chunks: 0,
            tags: Vec::new(),
            catalog_version: 0,
        }
    }

    fn member(state: NodeState, live: bool) -> MemberView {
        MemberView {
            name: format!("node-{}-{}", state.shard.0, state.node.0),
            kind: MemberKind::Node,
            live,
            gossip_addr: SocketAddr::from(([127, 0, 0, 1], 8000)),
            node: Some(state),
        }
    }

    /// Shard 1 owns 0..=8191 at epoch 1 and has just handed 100..=199 to shard 2 (epoch 2,
    /// which shard 1 still claims at epoch 1 in its stale report); shard 2 owns the rest.
    /// Shard 2's leader (node 1) is down.
    pub(crate) fn sample_view() -> ClusterView {
        let mut members = Vec::new();
        for n in 1..=3 {
            let mut s = state(1, n, 4, Some(2));
            s.slots = vec![(SlotRange(0, 8191), Epoch(1))];
            members.push(member(s, true));
            let mut s = state(2, n, 7, Some(1));
            s.descriptor_version = 3;
            s.slots = vec![
                (SlotRange(100, 199), Epoch(2)),
                (SlotRange(8192, SLOT_COUNT - 1), Epoch(1)),
            ];
            members.push(member(s, n != 1));
        }
        let mut view = ClusterView::from_members(members);
        view.revision = 9;
        view
    }

    #[test]
    fn view_becomes_a_table() {
        let view = sample_view();
        let t = table(&view);
        assert_eq!(t.revision, 9);
        assert_eq!(t.version, view.topology_version());
        assert_eq!(t.unowned_slots(), 0);
        let owner = |s| t.owner(s).map(|o| (o.shard.0, o.epoch.0));
        assert_eq!(owner(0), Some((1, 1)));
        assert_eq!(owner(99), Some((1, 1)));
        assert_eq!(owner(100), Some((2, 2)));
        assert_eq!(owner(199), Some((2, 2)));
        assert_eq!(owner(200), Some((1, 1)));
        assert_eq!(owner(8192), Some((2, 1)));
        assert_eq!(owner(SLOT_COUNT - 1), Some((2, 1)));
        for slot in 0..SLOT_COUNT {
            assert!(t.owner(slot).is_some(), "slot {slot}");
        }

        let s1 = t.shard(ShardId(1)).unwrap();
        assert_eq!(s1.leader.as_ref().map(|l| l.node_id), Some(NodeId(2)));
        assert_eq!(s1.term, 4);
        assert_eq!(s1.live.len(), 3);
        assert!(s1.down.is_empty());

        // Shard 2's leader is down: not preferred, and listed after the live members.
        let s2 = t.shard(ShardId(2)).unwrap();
        assert_eq!(s2.leader, None);
        let ids = |v: &[NodeRef]| v.iter().map(|n| n.node_id.0).collect::<Vec<_>>();
        assert_eq!(ids(&s2.live), [2, 3]);
        assert_eq!(ids(&s2.down), [1]);
        assert_eq!(s2.down[0].raft, "127.0.0.1:18021");
    }

    #[test]
    fn an_empty_view_routes_nothing() {
        let t = table(&ClusterView::default());
        assert_eq!(t.unowned_slots(), usize::from(SLOT_COUNT));
        assert_eq!(t.shards().count(), 0);
    }
}
