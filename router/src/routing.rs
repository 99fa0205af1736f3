//! The routing table: which shard owns each slot, and which nodes to ask for each shard.
//!
//! The router never asks anyone where a key lives while serving a request. Gossip is the only
//! source of the map: every view change rebuilds a whole [`Table`] and swaps it in atomically,
//! so a request always routes by one consistent snapshot. Between view changes the nodes'
//! answers are faster news than gossip, so [`Routing`] keeps small caches learned from them: a
//! leader hint per shard (from `NotLeader`), an owner override per slot (from `WrongShard`, used
//! only while its epoch is newer than the table's) and a short list of nodes that just failed to
//! answer (tried last for a few seconds, so one dead node does not slow every request down).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use unikv_types::leader::candidates;
use unikv_types::{Epoch, NodeId, NodeRef, ShardId, Slot, SLOT_COUNT};

/// How long a node that failed to answer is tried after the others.
const SUSPECT_FOR: Duration = Duration::from_secs(3);

/// A slot's owner as the router believes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub shard: ShardId,
    pub epoch: Epoch,
}

/// How to reach one shard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardRoute {
    pub id: ShardId,
    /// The leader the view reports, if any.
    pub leader: Option<NodeRef>,
    /// The Raft term that leader was elected in.
    pub term: u64,
    /// Members gossip reports alive.
    pub live: Vec<NodeRef>,
    /// Members gossip reports down: tried only after every other node.
    pub down: Vec<NodeRef>,
}

/// One consistent snapshot of the cluster map, built from a gossip view.
#[derive(Debug, Clone)]
pub struct Table {
    /// The gossip view revision this table was built from.
    pub revision: u64,
    /// The view's topology version (changes only when ownership or membership does).
    pub version: u64,
    /// Owner of each slot, exactly `SLOT_COUNT` entries.
    slots: Vec<Option<Owner>>,
    /// The shard that owned each slot in this or an earlier table (gossip forgets a shard whose
    /// nodes stay dead; errors still name the shard the slot belongs to).
    last_owners: Vec<Option<ShardId>>,
    shards: BTreeMap<ShardId, ShardRoute>,
}

impl Table {
    /// Builds a table. `slots` is indexed by slot; a shorter list leaves the remaining slots
    /// unowned and a longer one is cut, so a malformed view can never make a lookup fail.
    pub fn new(
        revision: u64,
        version: u64,
        mut slots: Vec<Option<Owner>>,
        shards: impl IntoIterator<Item = ShardRoute>,
    ) -> Table {
        slots.resize(usize::from(SLOT_COUNT), None);
        let last_owners = slots.iter().map(|o| o.map(|o| o.shard)).collect();
        Table {
            revision,
            version,
            slots,
            last_owners,
            shards: shards.into_iter().map(|s| (s.id, s)).collect(),
        }
    }

    /// The table before the first view arrives: nothing is owned.
    pub fn empty() -> Table {
        Table::new(0, 0, Vec::new(), [])
    }

    /// The owner of `slot` according to the view; `None` for unowned or out-of-range slots.
    pub fn owner(&self, slot: Slot) -> Option<Owner> {
        self.slots.get(usize::from(slot)).copied().flatten()
    }

    /// The shard that owns `slot`, or else the last one known to have owned it.
    pub fn last_owner(&self, slot: Slot) -> Option<ShardId> {
        self.last_owners.get(usize::from(slot)).copied().flatten()
    }

    /// Fills the slots this table leaves unowned with the last owner `previous` knew.
    fn remember_owners(&mut self, previous: &Table) {
        for (mine, theirs) in self.last_owners.iter_mut().zip(&previous.last_owners) {
            if mine.is_none() {
                *mine = *theirs;
            }
        }
    }

    pub fn shard(&self, id: ShardId) -> Option<&ShardRoute> {
        self.shards.get(&id)
    }

    pub fn shards(&self) -> impl Iterator<Item = &ShardRoute> {
        self.shards.values()
    }

    /// How many slots no shard owns.
    pub fn unowned_slots(&self) -> usize {
        self.slots.iter().filter(|s| s.is_none()).count()
    }
}

/// A leader learned from a `NotLeader` reply, with what the view said when it was learned.
#[derive(Debug, Clone)]
struct LeaderHint {
    node: NodeRef,
    /// The view's term for the shard when the hint was learned.
    term: u64,
    /// The view's leader for the shard when the hint was learned.
    view_leader: Option<NodeId>,
}

/// What replies taught us since the last view change.
#[derive(Debug, Default)]
struct Learned {
    leaders: HashMap<ShardId, LeaderHint>,
    owners: HashMap<Slot, Owner>,
    /// Raft address → when it last failed to answer.
    suspects: HashMap<String, Instant>,
}

/// The current [`Table`] plus what replies taught since. Shared by all requests.
pub struct Routing {
    table: watch::Sender<Arc<Table>>,
    learned: Mutex<Learned>,
}

impl Default for Routing {
    fn default() -> Self {
        Routing::new()
    }
}

impl Routing {
    pub fn new() -> Routing {
        Routing {
            table: watch::Sender::new(Arc::new(Table::empty())),
            learned: Mutex::new(Learned::default()),
        }
    }

    /// Swaps in a table built from a new view, dropping what the view has caught up with: owner
    /// overrides no newer than the table, and leader hints for shards whose term or leader moved.
    pub fn install(&self, mut table: Table) {
        table.remember_owners(&self.table.borrow());
        {
            let mut learned = self.learned();
            learned.owners.retain(|slot, o| match table.owner(*slot) {
                Some(current) => o.epoch > current.epoch,
                None => true,
            });
            learned.leaders.retain(|shard, hint| {
                let (term, leader) = view_leader(&table, *shard);
                term <= hint.term && leader == hint.view_leader
            });
        }
        self.table.send_replace(Arc::new(table));
    }

    /// The current table.
    pub fn table(&self) -> Arc<Table> {
        self.table.borrow().clone()
    }

    /// A receiver that sees every table installed from now on (for waiting on view changes).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Table>> {
        self.table.subscribe()
    }

    /// The owner of `slot`: the table's, unless a reply named a newer one.
    pub fn owner(&self, table: &Table, slot: Slot) -> Option<Owner> {
        let current = table.owner(slot);
        let learned = self.learned().owners.get(&slot).copied();
        match (current, learned) {
            (Some(c), Some(l)) if l.epoch > c.epoch => Some(l),
            (None, Some(l)) => Some(l),
            (c, _) => c,
        }
    }

    /// Records that `shard` owns `slot` at `epoch` (from a `WrongShard` reply). Returns whether
    /// that is news, i.e. newer than both the table and any earlier override.
    pub fn learn_owner(&self, table: &Table, slot: Slot, shard: ShardId, epoch: Epoch) -> bool {
        if slot >= SLOT_COUNT {
            return false;
        }
        let mut learned = self.learned();
        let newest = match (table.owner(slot), learned.owners.get(&slot)) {
            (Some(t), Some(l)) => Some(t.epoch.max(l.epoch)),
            (t, l) => t.or(l.copied()).map(|o| o.epoch),
        };
        if newest.is_some_and(|e| epoch <= e) {
            return false;
        }
        learned.owners.insert(slot, Owner { shard, epoch });
        true
    }

    /// Records `leader` as the leader of `shard` (from a `NotLeader` reply).
    pub fn learn_leader(&self, table: &Table, shard: ShardId, leader: NodeRef) {
        let (term, view_leader) = view_leader(table, shard);
        let hint = LeaderHint {
            node: leader,
            term,
            view_leader,
        };
        self.learned().leaders.insert(shard, hint);
    }

    /// Drops the leader hint for `shard` if it names the node at `raft`.
    pub fn forget_leader(&self, shard: ShardId, raft: &str) {
        let mut learned = self.learned();
        if learned
            .leaders
            .get(&shard)
            .is_some_and(|h| h.node.raft == raft)
        {
            learned.leaders.remove(&shard);
        }
    }

    /// The leader hint for `shard`, if any.
    pub fn leader_hint(&self, shard: ShardId) -> Option<NodeRef> {
        self.learned().leaders.get(&shard).map(|h| h.node.clone())
    }

    /// Marks the node at `raft` as having failed to answer.
    pub fn suspect(&self, raft: &str) {
        self.learned()
            .suspects
            .insert(raft.to_string(), Instant::now());
    }

    /// Clears the suspicion on the node at `raft` (it just answered).
    pub fn vouch(&self, raft: &str) {
        let mut learned = self.learned();
        if !learned.suspects.is_empty() {
            learned.suspects.remove(raft);
        }
    }

    /// The nodes to try for `shard`, best first: the leader hint, the view's leader, live
    /// members, then members gossip thinks are down. Nodes that recently failed to answer go
    /// last. Each node appears once.
    pub fn targets(&self, table: &Table, shard: ShardId) -> Vec<NodeRef> {
        let mut learned = self.learned();
        let hint = learned.leaders.get(&shard).map(|h| &h.node);
        let route = table.shard(shard);
        let view = route
            .into_iter()
            .flat_map(|r| r.leader.iter().chain(&r.live).chain(&r.down));
        let mut out = candidates(hint.into_iter().chain(view));
        if !learned.suspects.is_empty() {
            let now = Instant::now();
            learned
                .suspects
                .retain(|_, at| now.saturating_duration_since(*at) < SUSPECT_FOR);
            // A stable sort keeps the preference order within each group.
            out.sort_by_key(|n| learned.suspects.contains_key(&n.raft));
        }
        out
    }

    /// Never panics: a poisoned lock only means another request panicked mid-update of a
    /// cache, and every cache entry is valid on its own.
    fn learned(&self) -> MutexGuard<'_, Learned> {
        self.learned.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The view's term and leader id for `shard` (0 and `None` if the shard is unknown).
fn view_leader(table: &Table, shard: ShardId) -> (u64, Option<NodeId>) {
    table
        .shard(shard)
        .map(|s| (s.term, s.leader.as_ref().map(|l| l.node_id)))
        .unwrap_or((0, None))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use unikv_types::key_slot;

    pub(crate) fn node(shard: u64, n: u64) -> NodeRef {
        NodeRef {
            node_id: NodeId(n),
            http: format!("127.0.0.1:80{shard}{n}"),
            raft: format!("127.0.0.1:180{shard}{n}"),
        }
    }

    /// A three-member shard whose leader is member `leader` (if any), all live.
    pub(crate) fn shard(id: u64, term: u64, leader: Option<u64>) -> ShardRoute {
        ShardRoute {
            id: ShardId(id),
            leader: leader.map(|l| node(id, l)),
            term,
            live: (1..=3).map(|n| node(id, n)).collect(),
            down: Vec::new(),
        }
    }

    /// Three shards splitting the slots evenly at epoch 1, plus `extra` routes.
    pub(crate) fn three_shards(revision: u64) -> Table {
        let slots = (0..SLOT_COUNT)
            .map(|s| {
                Some(Owner {
                    shard: ShardId(u64::from(s) * 3 / u64::from(SLOT_COUNT) + 1),
                    epoch: Epoch(1),
                })
            })
            .collect();
        Table::new(
            revision,
            1,
            slots,
            [
                shard(1, 1, Some(1)),
                shard(2, 1, Some(1)),
                shard(3, 1, Some(1)),
            ],
        )
    }

    #[test]
    fn every_slot_of_every_key_routes_without_panicking() {
        let routing = Routing::new();
        // Before the first view: nothing is owned, nothing panics.
        let empty = routing.table();
        for slot in 0..=u16::MAX {
            assert_eq!(routing.owner(&empty, slot), None);
        }
        routing.install(three_shards(1));
        let table = routing.table();
        // Find a real key for every one of the 16384 slots and route it.
        let mut seen = vec![false; usize::from(SLOT_COUNT)];
        let mut missing = usize::from(SLOT_COUNT);
        let mut i = 0u64;
        while missing > 0 {
            let key = format!("key-{i}");
            i += 1;
            let slot = key_slot(key.as_bytes());
            let owner = routing.owner(&table, slot).expect("every slot is owned");
            assert!(!routing.targets(&table, owner.shard).is_empty());
            if let Some(s) = seen.get_mut(usize::from(slot)) {
                if !*s {
                    *s = true;
                    missing -= 1;
                }
            }
        }
        // The last slot too (the one a seed router once lost).
        assert_eq!(
            routing.owner(&table, SLOT_COUNT - 1).unwrap().shard,
            ShardId(3)
        );
        assert_eq!(routing.owner(&table, 0).unwrap().shard, ShardId(1));
        // Out-of-range slots are simply unowned.
        assert_eq!(routing.owner(&table, SLOT_COUNT), None);
        assert_eq!(routing.owner(&table, u16::MAX), None);
        assert!(!routing.learn_owner(&table, u16::MAX, ShardId(1), Epoch(9)));
    }

    #[test]
    fn short_or_long_slot_lists_are_tolerated() {
        let t = Table::new(
            1,
            1,
            vec![
                Some(Owner {
                    shard: ShardId(1),
                    epoch: Epoch(1)
                });
                3
            ],
            [],
        );
        assert_eq!(t.unowned_slots(), usize::from(SLOT_COUNT) - 3);
        assert_eq!(t.owner(2).map(|o| o.shard), Some(ShardId(1)));
        assert_eq!(t.owner(3), None);
        let t = Table::new(1, 1, vec![None; 20_000], []);
        assert_eq!(t.unowned_slots(), usize::from(SLOT_COUNT));
        assert_eq!(t.owner(19_999), None);
    }

    #[test]
    fn owner_overrides_apply_only_while_newer_than_the_table() {
        let routing = Routing::new();
        routing.install(three_shards(1));
        let table = routing.table();
        let slot = 100; // shard 1 at epoch 1
                        // Not newer than the table: ignored.
        assert!(!routing.learn_owner(&table, slot, ShardId(2), Epoch(1)));
        assert_eq!(routing.owner(&table, slot).unwrap().shard, ShardId(1));
        // Newer: used.
        assert!(routing.learn_owner(&table, slot, ShardId(2), Epoch(2)));
        assert_eq!(
            routing.owner(&table, slot),
            Some(Owner {
                shard: ShardId(2),
                epoch: Epoch(2)
            })
        );
        // An older override does not replace a newer one.
        assert!(!routing.learn_owner(&table, slot, ShardId(3), Epoch(2)));
        assert!(routing.learn_owner(&table, slot, ShardId(3), Epoch(3)));
        assert_eq!(routing.owner(&table, slot).unwrap().shard, ShardId(3));
        // Other slots are unaffected.
        assert_eq!(routing.owner(&table, slot + 1).unwrap().shard, ShardId(1));

        // A view that has not caught up keeps the override.
        routing.install(three_shards(2));
        let table = routing.table();
        assert_eq!(routing.owner(&table, slot).unwrap().shard, ShardId(3));

        // A view that caught up (same epoch, or newer) wins, and the override is gone.
        let mut slots: Vec<Option<Owner>> = (0..SLOT_COUNT).map(|s| table.owner(s)).collect();
        slots[usize::from(slot)] = Some(Owner {
            shard: ShardId(2),
            epoch: Epoch(4),
        });
        let shards: Vec<ShardRoute> = table.shards().cloned().collect();
        routing.install(Table::new(3, 2, slots, shards));
        let table = routing.table();
        assert_eq!(routing.owner(&table, slot).unwrap().shard, ShardId(2));
        assert!(routing.learned().owners.is_empty());

        // An override for a slot the view leaves unowned is used until the view owns it.
        let mut slots: Vec<Option<Owner>> = (0..SLOT_COUNT).map(|s| table.owner(s)).collect();
        slots[7] = None;
        routing.install(Table::new(4, 3, slots, table.shards().cloned()));
        let table = routing.table();
        assert_eq!(routing.owner(&table, 7), None);
        // Errors can still name the shard the slot belonged to.
        assert_eq!(table.last_owner(7), Some(ShardId(1)));
        assert_eq!(table.last_owner(8), Some(ShardId(1)));
        assert_eq!(table.last_owner(u16::MAX), None);
        assert!(routing.learn_owner(&table, 7, ShardId(3), Epoch(2)));
        assert_eq!(routing.owner(&table, 7).unwrap().shard, ShardId(3));
    }

    #[test]
    fn leader_hints_come_first_until_the_view_moves_on() {
        let routing = Routing::new();
        routing.install(three_shards(1));
        let table = routing.table();
        let ids = |v: Vec<NodeRef>| v.into_iter().map(|n| n.node_id.0).collect::<Vec<_>>();
        assert_eq!(ids(routing.targets(&table, ShardId(2))), [1, 2, 3]);

        routing.learn_leader(&table, ShardId(2), node(2, 3));
        assert_eq!(ids(routing.targets(&table, ShardId(2))), [3, 1, 2]);
        assert_eq!(ids(routing.targets(&table, ShardId(1))), [1, 2, 3]);

        // A view change that leaves shard 2 alone keeps the hint.
        routing.install(three_shards(2));
        let table = routing.table();
        assert_eq!(ids(routing.targets(&table, ShardId(2))), [3, 1, 2]);

        // Forgetting a different node keeps it; forgetting the hinted node drops it.
        routing.forget_leader(ShardId(2), &node(2, 1).raft);
        assert_eq!(routing.leader_hint(ShardId(2)), Some(node(2, 3)));
        routing.forget_leader(ShardId(2), &node(2, 3).raft);
        assert_eq!(routing.leader_hint(ShardId(2)), None);

        // The view's term moving past the hint's drops it.
        routing.learn_leader(&table, ShardId(2), node(2, 3));
        let mut shards: Vec<ShardRoute> = table.shards().cloned().collect();
        shards[1].term = 2;
        let slots = (0..SLOT_COUNT).map(|s| table.owner(s)).collect();
        routing.install(Table::new(3, 1, slots, shards.clone()));
        let table = routing.table();
        assert_eq!(routing.leader_hint(ShardId(2)), None);
        assert_eq!(ids(routing.targets(&table, ShardId(2))), [1, 2, 3]);

        // So does the view naming another leader at the same term.
        routing.learn_leader(&table, ShardId(2), node(2, 3));
        shards[1].leader = Some(node(2, 2));
        let slots = (0..SLOT_COUNT).map(|s| table.owner(s)).collect();
        routing.install(Table::new(4, 1, slots, shards));
        let table = routing.table();
        assert_eq!(routing.leader_hint(ShardId(2)), None);
        assert_eq!(ids(routing.targets(&table, ShardId(2))), [2, 1, 3]);
    }

    #[test]
    fn targets_prefer_live_members_and_put_suspects_last() {
        let routing = Routing::new();
        let mut s = shard(1, 5, None);
        s.down = vec![s.live.remove(0)];
        routing.install(Table::new(1, 1, Vec::new(), [s]));
        let table = routing.table();
        let ids = |v: Vec<NodeRef>| v.into_iter().map(|n| n.node_id.0).collect::<Vec<_>>();
        // No leader known: live members, then the one gossip thinks is down.
        assert_eq!(ids(routing.targets(&table, ShardId(1))), [2, 3, 1]);
        routing.suspect(&node(1, 2).raft);
        assert_eq!(ids(routing.targets(&table, ShardId(1))), [3, 1, 2]);
        routing.vouch(&node(1, 2).raft);
        assert_eq!(ids(routing.targets(&table, ShardId(1))), [2, 3, 1]);
        // Unknown shards have no targets.
        assert!(routing.targets(&table, ShardId(9)).is_empty());
    }
}
