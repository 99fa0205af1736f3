//! Which slots this shard gives away, decided from its own descriptor and the gossip view.
//!
//! Every shard computes the same fair share: the active shards (this one included if active)
//! sorted by id split 16384 slots as evenly as possible, exactly as the bootstrap split does
//! (the i-th of n gets `i·16384/n - (i-1)·16384/n`). A draining shard's share is 0. Donors (shards above their share) and recipients
//! (active shards below it) are matched greedily in id order, so every leader that sees the
//! same view derives the same global plan and executes only its own part: exactly the surplus
//! moves, to the most under-loaded shards first, and nothing moves twice.

use std::collections::BTreeMap;

use unikv_gossip::ClusterView;
use unikv_storage::ShardDescriptor;
use unikv_types::{ShardId, ShardState, Slot, SLOT_COUNT};

/// Slot counts and states of every shard that matters for balancing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shares {
    /// shard → (owned slots, state).
    pub shards: BTreeMap<ShardId, (usize, ShardState)>,
}

impl Shares {
    /// From the view, with this shard's entry replaced by its own descriptor.
    pub fn new(view: &ClusterView, me: &ShardDescriptor) -> Self {
        let mut shards = BTreeMap::new();
        for (id, s) in &view.shards {
            let count = s.slots.iter().map(|(r, _)| r.len()).sum();
            shards.insert(*id, (count, s.state));
        }
        shards.insert(me.shard, (me.slot_count(), me.state));
        Shares { shards }
    }

    /// The fair share of each shard.
    pub fn targets(&self) -> BTreeMap<ShardId, usize> {
        let active: Vec<ShardId> = self
            .shards
            .iter()
            .filter(|(_, (_, st))| *st == ShardState::Active)
            .map(|(id, _)| *id)
            .collect();
        let mut out: BTreeMap<ShardId, usize> = self.shards.keys().map(|id| (*id, 0)).collect();
        if active.is_empty() {
            return out;
        }
        // The same split as the bootstrap's `initial_range`, so a fresh cluster is balanced.
        let (total, n) = (SLOT_COUNT as usize, active.len());
        for (i, id) in active.iter().enumerate() {
            out.insert(*id, (i + 1) * total / n - i * total / n);
        }
        out
    }

    /// The global plan: (donor, recipient, count), greedy in id order.
    pub fn matching(&self) -> Vec<(ShardId, ShardId, usize)> {
        let targets = self.targets();
        let mut donors: Vec<(ShardId, usize)> = Vec::new();
        let mut recipients: Vec<(ShardId, usize)> = Vec::new();
        for (id, (count, state)) in &self.shards {
            let t = targets.get(id).copied().unwrap_or(0);
            if *count > t && *state != ShardState::Unreachable {
                donors.push((*id, count - t));
            } else if *count < t && *state == ShardState::Active {
                recipients.push((*id, t - count));
            }
        }
        let mut out = Vec::new();
        let (mut di, mut ri) = (0, 0);
        while di < donors.len() && ri < recipients.len() {
            let n = donors[di].1.min(recipients[ri].1);
            if n > 0 {
                out.push((donors[di].0, recipients[ri].0, n));
            }
            donors[di].1 -= n;
            recipients[ri].1 -= n;
            if donors[di].1 == 0 {
                di += 1;
            }
            if recipients[ri].1 == 0 {
                ri += 1;
            }
        }
        out
    }

    /// Slots above the fair share, summed over all shards.
    pub fn pending(&self) -> usize {
        let targets = self.targets();
        self.shards
            .iter()
            .map(|(id, (c, _))| c.saturating_sub(targets.get(id).copied().unwrap_or(0)))
            .sum()
    }
}

/// This shard's part of the plan: which of its slots go where. It gives away its highest
/// slots first (keeping ranges contiguous) and never a slot already moving.
pub fn plan(view: &ClusterView, me: &ShardDescriptor) -> Vec<(Slot, ShardId)> {
    if !me.initialised || !matches!(me.state, ShardState::Active | ShardState::Draining) {
        return Vec::new();
    }
    // Never plan from a partial picture: a shard that owns slots but cannot be reached might
    // be mid-move itself.
    if view
        .shards
        .values()
        .any(|s| s.id != me.shard && s.state == ShardState::Unreachable && !s.slots.is_empty())
    {
        return Vec::new();
    }
    let shares = Shares::new(view, me);
    let mine: Vec<(ShardId, usize)> = shares
        .matching()
        .into_iter()
        .filter(|(donor, _, _)| *donor == me.shard)
        .map(|(_, to, n)| (to, n))
        .collect();
    let mut slots = me
        .ranges
        .iter()
        .rev()
        .flat_map(|r| (r.lo..=r.hi).rev())
        .filter(|s| !me.outgoing.contains_key(s));
    let mut out = Vec::new();
    for (to, n) in mine {
        out.extend(slots.by_ref().take(n).map(|s| (s, to)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use unikv_gossip::ShardView;
    use unikv_types::{Epoch, SlotRange};

    fn sv(id: u64, ranges: &[(u16, u16)], state: ShardState) -> ShardView {
        ShardView {
            id: ShardId(id),
            leader: None,
            term: 1,
            members: Vec::new(),
            slots: ranges
                .iter()
                .map(|(a, b)| (SlotRange(*a, *b), Epoch(1)))
                .collect(),
            descriptor_version: 1,
            initialised: true,
            initial_shards: None,
            state,
            keys: 0,
            bytes: 0,
            chunks: 0,
            tags: Vec::new(),
        }
    }

    fn desc(id: u64, ranges: &[(u16, u16)], state: ShardState) -> ShardDescriptor {
        let mut d = ShardDescriptor::new(ShardId(id));
        let r: Vec<SlotRange> = ranges.iter().map(|(a, b)| SlotRange(*a, *b)).collect();
        assert!(d.bootstrap(&r, Epoch(1)));
        d.state = state;
        d
    }

    fn three_plus_new() -> ClusterView {
        let shards = vec![
            sv(1, &[(0, 5460)], ShardState::Active),
            sv(2, &[(5461, 10921)], ShardState::Active),
            sv(3, &[(10922, 16383)], ShardState::Active),
            sv(4, &[], ShardState::Active),
        ];
        ClusterView {
            shards: shards.into_iter().map(|s| (s.id, s)).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn adding_a_fourth_shard_moves_exactly_the_surplus() {
        let view = three_plus_new();
        let mut total = 0;
        for (id, range) in [(1, (0, 5460)), (2, (5461, 10921)), (3, (10922, 16383))] {
            let d = desc(id, &[range], ShardState::Active);
            let p = plan(&view, &d);
            let expected = (range.1 - range.0 + 1) as usize - 4096;
            assert_eq!(p.len(), expected, "shard {id}");
            assert!(p.iter().all(|(_, to)| *to == ShardId(4)));
            // Distinct slots, all owned by the donor.
            let mut slots: Vec<Slot> = p.iter().map(|(s, _)| *s).collect();
            slots.sort();
            slots.dedup();
            assert_eq!(slots.len(), p.len());
            assert!(slots.iter().all(|s| d.owns(*s).is_some()));
            total += p.len();
        }
        assert_eq!(total, 4096);
    }

    #[test]
    fn the_bootstrap_split_is_already_balanced() {
        let view = ClusterView {
            shards: [
                sv(1, &[(0, 5460)], ShardState::Active),
                sv(2, &[(5461, 10921)], ShardState::Active),
                sv(3, &[(10922, 16383)], ShardState::Active),
            ]
            .into_iter()
            .map(|s| (s.id, s))
            .collect(),
            ..Default::default()
        };
        for (id, r) in [(1, (0, 5460)), (2, (5461, 10921)), (3, (10922, 16383))] {
            assert!(
                plan(&view, &desc(id, &[r], ShardState::Active)).is_empty(),
                "shard {id}"
            );
        }
    }

    #[test]
    fn a_balanced_cluster_plans_nothing() {
        let shards = vec![
            sv(1, &[(0, 4095)], ShardState::Active),
            sv(2, &[(4096, 8191)], ShardState::Active),
            sv(3, &[(8192, 12287)], ShardState::Active),
            sv(4, &[(12288, 16383)], ShardState::Active),
        ];
        let view = ClusterView {
            shards: shards.into_iter().map(|s| (s.id, s)).collect(),
            ..Default::default()
        };
        assert!(plan(&view, &desc(2, &[(4096, 8191)], ShardState::Active)).is_empty());
        assert_eq!(
            Shares::new(&view, &desc(2, &[(4096, 8191)], ShardState::Active)).pending(),
            0
        );
    }

    #[test]
    fn a_draining_shard_gives_everything_to_the_others_evenly() {
        let mut view = three_plus_new();
        view.shards.remove(&ShardId(4));
        let d = desc(2, &[(5461, 10921)], ShardState::Draining);
        let p = plan(&view, &d);
        assert_eq!(p.len(), 5461);
        let to1 = p.iter().filter(|(_, t)| *t == ShardId(1)).count();
        let to3 = p.iter().filter(|(_, t)| *t == ShardId(3)).count();
        // Shares of 16384 over 2 active shards: 8192 each.
        assert_eq!(to1, 8192 - 5461);
        assert_eq!(to3, 8192 - 5462);
        assert_eq!(to1 + to3, 5461);
    }

    #[test]
    fn inactive_and_uninitialised_shards_plan_nothing() {
        let view = three_plus_new();
        let d = desc(1, &[(0, 5460)], ShardState::Inactive);
        assert!(plan(&view, &d).is_empty());
    }
}
