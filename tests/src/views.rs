//! The JSON bodies a unified cluster answers (`/config`, the router's `/status`,
//! `/rebalance/status`, `/stats`), parsed for tests, and the slot map derived from them.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::Value;
use unikv_types::{key_slot, Slot, SLOT_COUNT};

use crate::api::LeaderInfo;

/// A leader as `/config` and the router's `/status` report it.
pub type Leader = LeaderInfo;

/// A member of a shard in `/config` or the router's `/status`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Member {
    pub node_id: u64,
    #[serde(default)]
    pub http: Option<String>,
    #[serde(default)]
    pub raft: Option<String>,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub live: Option<bool>,
}

/// One `{"lo","hi","epoch"}` of a shard's `epochs`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub struct EpochRange {
    pub lo: u16,
    pub hi: u16,
    pub epoch: u64,
}

/// One shard of `/config` (or of the router's `/status`, which has no `epochs`).
#[derive(Debug, Clone, Deserialize)]
pub struct ShardInfo {
    pub id: u64,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub leader: Option<Leader>,
    #[serde(default)]
    pub term: u64,
    #[serde(default)]
    pub members: Vec<Member>,
    #[serde(default)]
    pub slots: Vec<[u16; 2]>,
    #[serde(default)]
    pub slot_count: usize,
    #[serde(default)]
    pub epochs: Vec<EpochRange>,
    #[serde(default)]
    pub descriptor_version: u64,
}

impl ShardInfo {
    /// True if one of the shard's slot ranges holds `slot`.
    pub fn owns(&self, slot: Slot) -> bool {
        self.slots.iter().any(|[lo, hi]| *lo <= slot && slot <= *hi)
    }
}

/// The body of a node's `GET /config`.
#[derive(Debug, Clone, Deserialize)]
pub struct ClusterConfig {
    pub version: u64,
    pub shards: Vec<ShardInfo>,
}

/// What two nodes must agree on: per shard, its leader's node id, slot ranges and epochs.
pub type ConfigView = BTreeMap<u64, (Option<u64>, Vec<[u16; 2]>, Vec<EpochRange>)>;

impl ClusterConfig {
    /// The part of the config every node must agree on (live/role details left out).
    pub fn view(&self) -> ConfigView {
        self.shards
            .iter()
            .map(|s| {
                let mut epochs = s.epochs.clone();
                epochs.sort();
                (
                    s.id,
                    (
                        s.leader.as_ref().map(|l| l.node_id),
                        s.slots.clone(),
                        epochs,
                    ),
                )
            })
            .collect()
    }

    /// The slot → shard map of this config.
    pub fn slot_map(&self) -> SlotMap {
        SlotMap::from_shards(&self.shards)
    }

    /// The shard with this id.
    pub fn shard(&self, id: u64) -> Option<&ShardInfo> {
        self.shards.iter().find(|s| s.id == id)
    }

    /// Per slot, the shard owning it and the epoch it owns it at (from `epochs`); panics if
    /// two shards claim a slot.
    pub fn slot_epochs(&self) -> Vec<Option<(u64, u64)>> {
        let mut out = vec![None; SLOT_COUNT as usize];
        for s in &self.shards {
            for e in &s.epochs {
                for slot in e.lo..=e.hi {
                    let cell = out.get_mut(slot as usize).unwrap_or_else(|| {
                        panic!(
                            "shard {} has an epoch for slot {slot} >= {SLOT_COUNT}",
                            s.id
                        )
                    });
                    if let Some((other, _)) = cell.replace((s.id, e.epoch)) {
                        panic!("slot {slot} has epochs in shards {other} and {}", s.id);
                    }
                }
            }
        }
        out
    }

    /// Slots owned per shard (every shard listed, also those owning none).
    pub fn slot_counts(&self) -> BTreeMap<u64, usize> {
        self.shards.iter().map(|s| (s.id, s.slot_count)).collect()
    }
}

/// The body of the router's `GET /status`.
#[derive(Debug, Clone, Deserialize)]
pub struct RouterStatus {
    #[serde(default)]
    pub router: Value,
    #[serde(default)]
    pub view_revision: Value,
    #[serde(default)]
    pub version: u64,
    pub shards: Vec<ShardInfo>,
    pub unowned_slots: u64,
    #[serde(default)]
    pub counters: Value,
}

/// `write_pause_ms` of `/rebalance/status`: the write pause of slots this node handed off.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct WritePause {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// The `cluster` part of `/rebalance/status`: the node's gossip view with its own shard taken
/// from its descriptor.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RebalanceCluster {
    /// Slots above their shard's fair share, summed over all shards.
    pub pending_slots: usize,
    /// Fair share per shard.
    pub targets: BTreeMap<u64, usize>,
    /// Owned slots per shard.
    pub slot_counts: BTreeMap<u64, usize>,
    /// Bytes per shard (served slots, chunks) as this node's balancer counts them.
    #[serde(default)]
    pub bytes: BTreeMap<u64, u64>,
    /// Where every active shard's bytes should be.
    #[serde(default)]
    pub bound: BalanceBound,
    /// `balanced`, `slots` or `bytes`, and why.
    #[serde(default)]
    pub phase: String,
    #[serde(default)]
    pub reason: String,
}

/// The balancer's bound on bytes per active shard: `mean_bytes` ± `tolerance_bytes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct BalanceBound {
    pub mean_bytes: u64,
    pub tolerance_bytes: u64,
}

/// The body of a node's `GET /rebalance/status` (counters are since that process started).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RebalanceStatus {
    pub shard: u64,
    pub state: String,
    pub leader: bool,
    /// Slots of this shard being copied to another while they serve.
    #[serde(default)]
    pub copying: usize,
    /// Slots of this shard being handed off (frozen until the target's `In`, data here until
    /// `Done`).
    pub moving: usize,
    /// Copies of slots arriving here, not served.
    #[serde(default)]
    pub staging: usize,
    /// Planned hand-offs not started yet.
    pub queued: usize,
    pub moved_slots: u64,
    pub moved_bytes: u64,
    pub aborted: u64,
    pub rate_bytes_per_s: f64,
    pub write_pause_ms: Option<WritePause>,
    pub cluster: RebalanceCluster,
    /// Hand-offs running or planned here, and the bytes their slots hold.
    pub left: Left,
    /// Seconds until `left` is sent at the rate so far (none when nothing is left).
    pub eta_s: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Left {
    pub slots: usize,
    pub bytes: u64,
}

impl RebalanceStatus {
    /// Ok if this node sees the cluster balanced at `expected` (slots per shard; shards not
    /// listed own and get none) with nothing moving, staged or queued here; else why not.
    pub fn balanced_at(&self, expected: &BTreeMap<u64, usize>) -> Result<(), String> {
        let c = &self.cluster;
        let mut problems = Vec::new();
        if c.pending_slots != 0
            || self.moving != 0
            || self.staging != 0
            || self.queued != 0
            || self.left.slots != 0
        {
            problems.push(format!(
                "pending {} moving {} staging {} queued {} left {} ({} bytes)",
                c.pending_slots,
                self.moving,
                self.staging,
                self.queued,
                self.left.slots,
                self.left.bytes
            ));
        }
        if self.left.slots == 0 && self.eta_s.is_some() {
            problems.push(format!("nothing left but an ETA of {:?} s", self.eta_s));
        }
        let shards: BTreeSet<u64> = expected
            .keys()
            .chain(c.targets.keys())
            .chain(c.slot_counts.keys())
            .copied()
            .collect();
        for s in shards {
            let want = expected.get(&s).copied().unwrap_or(0);
            let target = c.targets.get(&s).copied().unwrap_or(0);
            let count = c.slot_counts.get(&s).copied().unwrap_or(0);
            if target != want || count != want {
                problems.push(format!(
                    "shard {s}: target {target} slots {count} (want {want})"
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!("shard {}: {}", self.shard, problems.join(", ")))
        }
    }
}

/// Keys and bytes of one slot in `/stats?slots=1`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SlotStats {
    pub slot: Slot,
    pub keys: u64,
    pub bytes: u64,
}

/// One shard of a node's `GET /stats`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ShardStats {
    pub id: u64,
    pub state: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    pub slot_count: usize,
    pub keys: u64,
    pub bytes: u64,
    pub descriptor_version: u64,
    /// Per-slot counts (`?slots=1`, the answering node's own shard, slots holding data only).
    #[serde(default)]
    pub slots: Option<Vec<SlotStats>>,
}

/// The body of a node's `GET /stats`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Stats {
    pub version: u64,
    pub shards: Vec<ShardStats>,
}

impl Stats {
    /// The shard with this id.
    pub fn shard(&self, id: u64) -> Option<&ShardStats> {
        self.shards.iter().find(|s| s.id == id)
    }
}

/// The last line of `text` that is a JSON object (what the script prints for `curl`).
pub fn last_json_line(text: &str) -> Option<Value> {
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .find(Value::is_object)
}

/// Which shard owns each slot.
#[derive(Debug, Clone)]
pub struct SlotMap {
    owner: Vec<Option<u64>>,
}

impl SlotMap {
    /// Builds the map from shards' slot ranges; a slot claimed twice panics.
    pub fn from_shards(shards: &[ShardInfo]) -> SlotMap {
        let mut owner = vec![None; SLOT_COUNT as usize];
        for s in shards {
            for [lo, hi] in &s.slots {
                for slot in *lo..=*hi {
                    let cell = owner.get_mut(slot as usize).unwrap_or_else(|| {
                        panic!("shard {} claims slot {slot} >= {SLOT_COUNT}", s.id)
                    });
                    if let Some(other) = cell.replace(s.id) {
                        panic!("slot {slot} is claimed by shards {other} and {}", s.id);
                    }
                }
            }
        }
        SlotMap { owner }
    }

    /// The shard owning a slot.
    pub fn owner(&self, slot: Slot) -> Option<u64> {
        self.owner[slot as usize]
    }

    /// The shard owning a key.
    pub fn key_owner(&self, key: &str) -> Option<u64> {
        self.owner(key_slot(key.as_bytes()))
    }

    /// `n` keys `"{prefix}-{i}"` owned by `shard`, scanning `i` upwards.
    pub fn keys_of(&self, shard: u64, prefix: &str, n: usize) -> Vec<String> {
        let mut out = Vec::with_capacity(n);
        let mut i = 0u64;
        while out.len() < n {
            assert!(
                i < 10_000_000,
                "no {n} keys of shard {shard} found with prefix {prefix:?}"
            );
            let k = format!("{prefix}-{i}");
            if self.key_owner(&k) == Some(shard) {
                out.push(k);
            }
            i += 1;
        }
        out
    }
}
