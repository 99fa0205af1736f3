//! What a shard's Raft log carries: KV writes, the steps of slot moves, registry changes and the
//! bootstrap claim — and what applying one returns.

use serde::{Deserialize, Serialize};
use unikv_types::{
    ChunkId, ClientSeq, Epoch, Keyspace, KvError, KvOp, KvReply, ShardId, ShardState, Slot,
    SlotRange,
};

use crate::records::DedupRecord;

/// A replicated command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "legacy::CommandDe")]
pub enum Command {
    /// A KV write (`op` is never `Get`), applied at most once per `client` if present.
    Kv {
        slot: Slot,
        key: String,
        op: KvOp,
        client: Option<ClientSeq>,
        /// For an append: the longest value it may leave (the proposing leader's
        /// `--max_value_bytes`, in the log so every replica decides alike).
        #[serde(default)]
        max_value_bytes: Option<u64>,
        /// The proposing leader's clock and dedup window (absent in entries of older
        /// versions: those neither advance the shard's clock nor expire records).
        #[serde(default)]
        clock: Option<LeaderClock>,
        /// The collection's keyspace (absent: `default`, as in entries of older versions).
        #[serde(default, skip_serializing_if = "Keyspace::is_default")]
        keyspace: Keyspace,
        /// For a shard key placed on chosen shards: the key's bucket. The write then goes to
        /// the keyspace's unit on this shard (`ShardDescriptor::units`), not to `slot`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bucket: Option<u16>,
        /// For a range collection: the write goes to the chunk holding `key` here (see
        /// `chunk_map`), not to `slot`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        range: bool,
    },
    /// A step of a slot move (see `moves`).
    Move(MoveCommand),
    /// A split or a step of a chunk move (see `chunk_moves`).
    Chunk(ChunkCommand),
    /// A step of moving a shard key's unit between shards (see `unit_moves`).
    Unit(UnitCommand),
    /// Claims the shard's initial slots. Applied only while the descriptor was never
    /// initialised, so a replayed or duplicated bootstrap can never change ownership.
    Bootstrap {
        shard: ShardId,
        ranges: Vec<SlotRange>,
        epoch: Epoch,
    },
    /// A change of this shard's registry entry (see `registry`).
    Registry(RegistryCommand),
}

impl Command {
    /// About how many bytes the entry holds in memory (its keys and values and a little
    /// for the rest): what bounds the in-memory log tail by size.
    pub fn approx_bytes(&self) -> usize {
        const PER_ITEM: usize = 48;
        let pairs = |kv: &[(String, String)]| -> usize {
            kv.iter().map(|(k, v)| k.len() + v.len() + PER_ITEM).sum()
        };
        let in_collections = |kv: &[(Keyspace, String, String)]| -> usize {
            kv.iter()
                .map(|(_, k, v)| k.len() + v.len() + PER_ITEM)
                .sum()
        };
        let dedup = |d: &[(String, DedupRecord)]| d.len() * (PER_ITEM * 2);
        let strings = |s: &[String]| -> usize { s.iter().map(|k| k.len() + PER_ITEM).sum() };
        PER_ITEM * 4
            + match self {
                Command::Kv { key, op, .. } => {
                    key.len()
                        + match op {
                            KvOp::Put { value } | KvOp::Append { value } => value.len(),
                            _ => 0,
                        }
                }
                Command::Move(MoveCommand::In {
                    kv,
                    dedup: d,
                    collections_kv,
                    deleted,
                    ..
                }) => {
                    pairs(kv) + dedup(d) + in_collections(collections_kv) + deleted.len() * PER_ITEM
                }
                Command::Move(MoveCommand::Stage {
                    kv,
                    collections_kv,
                    deleted,
                    ..
                }) => pairs(kv) + in_collections(collections_kv) + deleted.len() * PER_ITEM,
                Command::Chunk(ChunkCommand::In {
                    kv,
                    dedup: d,
                    deleted,
                    ..
                }) => pairs(kv) + dedup(d) + strings(deleted),
                Command::Chunk(ChunkCommand::Stage { kv, deleted, .. }) => {
                    pairs(kv) + strings(deleted)
                }
                Command::Unit(UnitCommand::In { kv, dedup: d, .. }) => pairs(kv) + dedup(d),
                _ => 0,
            }
    }
}

/// What the proposing leader's clock said, written into the entry so every replica decides
/// expiry alike (replicas never read their own clock while applying).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderClock {
    /// Wall clock, ms since the Unix epoch.
    pub now_ms: u64,
    /// How long a client's dedup record is kept after its last write (`--dedup_window_s`).
    pub dedup_window_ms: u64,
}

/// The steps of moving a slot between shards. Every step is idempotent: applying it again after
/// it took effect changes nothing and answers success.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MoveCommand {
    /// Source: hand `slot` to `to`, where it will have `epoch`. Freezes writes to it.
    Out {
        slot: Slot,
        to: ShardId,
        epoch: Epoch,
        /// The proposing leader's clock (ms since the Unix epoch): a fence that ended before
        /// it no longer stops the move, even on a shard no write has advanced the clock of.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        now_ms: Option<u64>,
    },
    /// Target: install `slot` received from `from` (data and dedup table) and serve it from
    /// now on: the point of no return of a hand-off (the source, frozen since `Out`, only
    /// cleans up with `Done`).
    In {
        slot: Slot,
        from: ShardId,
        epoch: Epoch,
        kv: Vec<(String, String)>,
        dedup: Vec<(String, DedupRecord)>,
        /// The slot's dedup horizon at the source (see `dedup`): it moves with the records.
        #[serde(default)]
        dedup_horizon_ms: u64,
        /// The slot's pairs of collections other than `default`, with their keyspace.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        collections_kv: Vec<(Keyspace, String, String)>,
        /// The copy staged here before the freeze that `kv`, `collections_kv` and `deleted`
        /// complete (absent: they are the whole slot).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        staged: Option<Staged>,
        /// With `staged`: keys deleted since the copy read them.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        deleted: Vec<(Keyspace, String)>,
    },
    /// Target: piece `part` of copy `copy` of `slot`, sent by `from` while it still serves the
    /// slot (or, after a source leader change, while frozen) ahead of the hand-off at
    /// `epoch`: stored, not served. Part 0 replaces whatever was staged or received for the
    /// slot at an older epoch; a part arrives once, in order.
    Stage {
        slot: Slot,
        from: ShardId,
        epoch: Epoch,
        copy: u64,
        part: u32,
        /// Whether the pairs may already be staged (written keys sent again); pieces of the
        /// first scan hold keys not staged yet.
        overwrite: bool,
        kv: Vec<(String, String)>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        collections_kv: Vec<(Keyspace, String, String)>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        deleted: Vec<(Keyspace, String)>,
    },
    /// Target: the source gave up copy `copy` of `slot` before its hand-off: delete it.
    Unstage { slot: Slot, copy: u64 },
    /// Source: the target installed (and serves) the slot; delete the data, keep a
    /// forwarding note.
    Done { slot: Slot, epoch: Epoch },
    /// Source: give up a hand-off whose `In` the target never committed (never sent, or
    /// refused for good by the target's `Refuse`); the slot serves again.
    Abort { slot: Slot, epoch: Epoch },
    /// Target: never take the hand-off of `slot` at `epoch` (or older) from `from`: the
    /// source gives it up. Refused with `already_received` once that `In` committed here.
    Refuse {
        slot: Slot,
        from: ShardId,
        epoch: Epoch,
    },
}

/// The staged copy an `In` completes: its id and how many pieces the target must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staged {
    pub copy: u64,
    pub parts: u32,
}

/// Splitting a chunk of a range collection, and the steps of moving one between shards: the
/// slot move's protocol (`MoveCommand`) over a chunk id. Every step is idempotent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChunkCommand {
    /// Create the first chunk of a range collection, the whole keyspace, here.
    Create { keyspace: Keyspace, now_ms: u64 },
    /// Split chunk `id` at `at`: it keeps `[lo, at)`, a new chunk takes `[at, hi)`.
    Split {
        id: ChunkId,
        at: String,
        now_ms: u64,
    },
    /// Merge chunk `right` into chunk `left`, its neighbour on this shard: `left` then ends
    /// where `right` ended.
    Merge {
        left: ChunkId,
        right: ChunkId,
        now_ms: u64,
    },
    /// Source: hand chunk `id` to `to`, where it will have `epoch`. Freezes it (neither read
    /// nor written here from then on).
    Out {
        id: ChunkId,
        to: ShardId,
        epoch: Epoch,
        now_ms: u64,
    },
    /// Target: piece `part` of copy `copy` of chunk `id` (`[lo, hi)` of `keyspace`), sent by
    /// `from` while it still serves the chunk (or, after a source leader change, while
    /// frozen) ahead of the hand-off at `epoch`: stored, not served. Part 0 replaces whatever
    /// this shard had in those bounds without serving them; a part arrives once, in order.
    Stage {
        id: ChunkId,
        keyspace: Keyspace,
        lo: String,
        hi: Option<String>,
        from: ShardId,
        epoch: Epoch,
        copy: u64,
        part: u32,
        /// Whether the pairs may already be staged (written keys sent again).
        overwrite: bool,
        kv: Vec<(String, String)>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        deleted: Vec<String>,
    },
    /// Target: install chunk `id` received from `from` and serve it from now on: the point of
    /// no return of a hand-off (the source, frozen since `Out`, only cleans up with `Done`).
    In {
        id: ChunkId,
        keyspace: Keyspace,
        lo: String,
        hi: Option<String>,
        from: ShardId,
        epoch: Epoch,
        kv: Vec<(String, String)>,
        dedup: Vec<(String, DedupRecord)>,
        dedup_horizon_ms: u64,
        /// The chunk's version at the source (0 in entries of earlier versions): it is one
        /// more here.
        #[serde(default)]
        version: u64,
        now_ms: u64,
        /// The copy staged here that `kv` and `deleted` complete (absent: `kv` is the whole
        /// chunk).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        staged: Option<Staged>,
        /// With `staged`: keys deleted since the copy read them.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        deleted: Vec<String>,
    },
    /// Target: the source gave up copy `copy` of chunk `id` before its hand-off: delete it.
    Unstage { id: ChunkId, copy: u64 },
    /// Source: the target installed (and serves) the chunk; delete it here, keep a
    /// forwarding note.
    Done { id: ChunkId, epoch: Epoch },
    /// Source: give up a hand-off whose `In` the target never committed (never sent, or
    /// refused for good by the target's `Refuse`); the chunk serves again.
    Abort { id: ChunkId, epoch: Epoch },
    /// Target: never take the hand-off of chunk `id` at `epoch` (or older) from `from`: the
    /// source gives it up. Refused with `already_received` once that `In` committed here.
    Refuse {
        id: ChunkId,
        from: ShardId,
        epoch: Epoch,
    },
}

/// The steps of moving one shard key's unit (its data on one shard) to another shard: the
/// slot move's protocol over a keyspace. Every step is idempotent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UnitCommand {
    /// Source: hand the unit of `keyspace` to `to` at `epoch`; freezes its writes.
    Out {
        keyspace: Keyspace,
        to: ShardId,
        epoch: Epoch,
    },
    /// Target: store the unit's data (not served yet).
    In {
        keyspace: Keyspace,
        from: ShardId,
        epoch: Epoch,
        kv: Vec<(String, String)>,
        dedup: Vec<(String, DedupRecord)>,
        dedup_horizon_ms: u64,
    },
    /// Source: the target stored it; delete it here, keep a forwarding note.
    Done { keyspace: Keyspace, epoch: Epoch },
    /// Source: give up a hand-off the target has not confirmed.
    Abort { keyspace: Keyspace, epoch: Epoch },
    /// Target: the source let go; serve it.
    Activate { keyspace: Keyspace, epoch: Epoch },
    /// Target: the source kept it; delete the copy.
    Drop { keyspace: Keyspace, epoch: Epoch },
}

/// Changes of the shard's registry entry: its state and its tags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegistryCommand {
    /// Set this shard's state (active, draining, inactive, removed: only once it owns
    /// nothing, and for good).
    SetState { state: ShardState },
    /// Set tags (an empty value removes the tag).
    SetTags { tags: Vec<(String, String)> },
    /// A collection was deleted: drop its keyspace's data here and refuse writes to it from
    /// now on (ids are never reused).
    DropKeyspace { keyspace: Keyspace },
    /// Start no slot move until `until_ms` (by the shard's clock) or `Unfence`: a promote
    /// holds every shard still while it commits. Refused while a move is in flight or the
    /// shard is not active.
    /// `now_ms`: the proposer's clock. Refused while another promote's fence holds.
    Fence {
        token: u64,
        until_ms: u64,
        now_ms: u64,
    },
    /// End the fence `token` set.
    Unfence { token: u64 },
    /// `/removeshard?forget=true`: drain, then be removed for good (at once if already
    /// drained).
    Retire,
}

/// What applying a command returns to the proposer.
pub type CommandResult = Result<KvReply, KvError>;

/// Reading entries written before registry changes had their own variant: they were
/// `Move(SetState{..})` and `Move(SetTags{..})`. Logs of such data dirs still decode (the same
/// entry is then `Registry(..)`); new entries are written in the new form only.
mod legacy {
    use super::*;

    #[derive(Deserialize)]
    pub(super) enum CommandDe {
        Kv {
            slot: Slot,
            key: String,
            op: KvOp,
            client: Option<ClientSeq>,
            #[serde(default)]
            max_value_bytes: Option<u64>,
            #[serde(default)]
            clock: Option<LeaderClock>,
            #[serde(default)]
            keyspace: Keyspace,
            #[serde(default)]
            bucket: Option<u16>,
            #[serde(default)]
            range: bool,
        },
        Move(MoveDe),
        Chunk(ChunkCommand),
        Unit(UnitCommand),
        Bootstrap {
            shard: ShardId,
            ranges: Vec<SlotRange>,
            epoch: Epoch,
        },
        Registry(RegistryCommand),
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    pub(super) enum MoveDe {
        Move(MoveCommand),
        Registry(RegistryCommand),
    }

    impl From<CommandDe> for Command {
        fn from(c: CommandDe) -> Self {
            match c {
                CommandDe::Kv {
                    slot,
                    key,
                    op,
                    client,
                    max_value_bytes,
                    clock,
                    keyspace,
                    bucket,
                    range,
                } => Command::Kv {
                    slot,
                    key,
                    op,
                    client,
                    max_value_bytes,
                    clock,
                    keyspace,
                    bucket,
                    range,
                },
                CommandDe::Chunk(c) => Command::Chunk(c),
                CommandDe::Unit(u) => Command::Unit(u),
                CommandDe::Move(MoveDe::Move(m)) => Command::Move(m),
                CommandDe::Move(MoveDe::Registry(r)) | CommandDe::Registry(r) => {
                    Command::Registry(r)
                }
                CommandDe::Bootstrap {
                    shard,
                    ranges,
                    epoch,
                } => Command::Bootstrap {
                    shard,
                    ranges,
                    epoch,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{decode, encode};

    #[test]
    fn every_command_round_trips() {
        let cmds = [
            Command::Kv {
                slot: 7,
                key: "k".into(),
                op: KvOp::Put { value: "v".into() },
                client: Some(ClientSeq::new("c", 3).stamped(1_700_000_000_000)),
                max_value_bytes: Some(10),
                clock: Some(LeaderClock {
                    now_ms: 1_700_000_000_001,
                    dedup_window_ms: 600_000,
                }),
                keyspace: Keyspace(16),
                bucket: Some(3),
                range: false,
            },
            Command::Kv {
                slot: 0,
                key: "2026-12-01".into(),
                op: KvOp::Delete,
                client: None,
                max_value_bytes: None,
                clock: None,
                keyspace: Keyspace(17),
                bucket: None,
                range: true,
            },
            Command::Chunk(ChunkCommand::Split {
                id: ChunkId(1 << 40 | 1),
                at: "m".into(),
                now_ms: 9,
            }),
            Command::Chunk(ChunkCommand::In {
                id: ChunkId(2),
                keyspace: Keyspace(17),
                lo: "m".into(),
                hi: None,
                from: ShardId(1),
                epoch: Epoch(2),
                kv: vec![("m1".into(), "v".into())],
                dedup: vec![],
                dedup_horizon_ms: 0,
                version: 3,
                now_ms: 10,
                staged: Some(Staged { copy: 7, parts: 2 }),
                deleted: vec!["m0".into()],
            }),
            Command::Chunk(ChunkCommand::Stage {
                id: ChunkId(2),
                keyspace: Keyspace(17),
                lo: "m".into(),
                hi: None,
                from: ShardId(1),
                epoch: Epoch(2),
                copy: 7,
                part: 1,
                overwrite: true,
                kv: vec![("m2".into(), "w".into())],
                deleted: vec![],
            }),
            Command::Chunk(ChunkCommand::Refuse {
                id: ChunkId(2),
                from: ShardId(1),
                epoch: Epoch(2),
            }),
            Command::Registry(RegistryCommand::DropKeyspace {
                keyspace: Keyspace(17),
            }),
            Command::Move(MoveCommand::In {
                slot: 9,
                from: ShardId(2),
                epoch: Epoch(4),
                kv: vec![("a".into(), "b".into())],
                dedup: vec![(
                    "c".into(),
                    DedupRecord {
                        seq: 1,
                        reply: KvReply::Written,
                        request: Some(9),
                        at_ms: 5,
                        ts_max: 4,
                    },
                )],
                dedup_horizon_ms: 3,
                collections_kv: vec![(Keyspace(16), "a".into(), "c".into())],
                staged: Some(Staged { copy: 77, parts: 3 }),
                deleted: vec![(Keyspace(16), "gone".into())],
            }),
            Command::Move(MoveCommand::Stage {
                slot: 9,
                from: ShardId(2),
                epoch: Epoch(4),
                copy: 77,
                part: 2,
                overwrite: true,
                kv: vec![("a".into(), "b".into())],
                collections_kv: vec![(Keyspace(16), "a".into(), "c".into())],
                deleted: vec![(Keyspace::DEFAULT, "x".into())],
            }),
            Command::Move(MoveCommand::Unstage { slot: 9, copy: 77 }),
            Command::Move(MoveCommand::Done {
                slot: 9,
                epoch: Epoch(4),
            }),
            Command::Bootstrap {
                shard: ShardId(1),
                ranges: vec![SlotRange(0, 5)],
                epoch: Epoch(1),
            },
            Command::Registry(RegistryCommand::SetState {
                state: ShardState::Draining,
            }),
            Command::Registry(RegistryCommand::SetTags {
                tags: vec![("dc".into(), "east".into())],
            }),
        ];
        for c in cmds {
            let back: Command = decode("command", &encode("command", &c).unwrap()).unwrap();
            assert_eq!(back, c);
        }
    }

    /// The shape registry changes had in the log before they got their own variant.
    #[derive(Serialize)]
    enum OldCommand {
        Move(OldMove),
    }
    #[derive(Serialize)]
    enum OldMove {
        SetState { state: ShardState },
        SetTags { tags: Vec<(String, String)> },
    }

    #[test]
    fn registry_changes_written_as_moves_still_decode() {
        let old = encode(
            "command",
            &OldCommand::Move(OldMove::SetState {
                state: ShardState::Inactive,
            }),
        )
        .unwrap();
        let c: Command = decode("command", &old).unwrap();
        assert_eq!(
            c,
            Command::Registry(RegistryCommand::SetState {
                state: ShardState::Inactive
            })
        );
        let old = encode(
            "command",
            &OldCommand::Move(OldMove::SetTags {
                tags: vec![("a".into(), String::new())],
            }),
        )
        .unwrap();
        let c: Command = decode("command", &old).unwrap();
        assert_eq!(
            c,
            Command::Registry(RegistryCommand::SetTags {
                tags: vec![("a".into(), String::new())]
            })
        );
    }
}
