//! The nemesis: on a schedule, faults against real node processes, each healed before the
//! next — kill -9 and restart, SIGSTOP/SIGCONT longer than an election timeout, iptables
//! partitions (an isolated leader, an isolated follower, one-way cuts), overlapping faults (a
//! partitioned leader while a follower is paused, a paused leader while a follower is cut off,
//! a leader killed during a slot move or a partition), power cuts of a whole shard (its data on
//! the power-cut file system), and on the unified cluster slot moves between shards and adding,
//! then draining, a fourth shard. Clock-rate faults are set for a whole run (`RunConfig`).

use std::collections::BTreeMap;
use std::time::Duration;

use rand::prelude::*;

use super::firewall::{Cut, Firewall};
use super::topology::{Kind, NodeRef, Topology};
use crate::api::{Body, Method};
use crate::unified::{MAX_SHARDS, ROUTER};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    Kill,
    Pause,
    Partition,
    Move,
    /// `run_unified.sh addshard 4` the first time, `removeshard 4` (a drain) the second.
    Reshard,
    /// Two faults at once (see the module doc).
    Overlap,
    /// Every node of the shard killed at once and its unsynced bytes dropped (single shard
    /// on the power-cut file system only).
    PowerCut,
}

impl FaultKind {
    pub const ALL: [FaultKind; 7] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Partition,
        FaultKind::Move,
        FaultKind::Reshard,
        FaultKind::Overlap,
        FaultKind::PowerCut,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
            FaultKind::Move => "move",
            FaultKind::Reshard => "reshard",
            FaultKind::Overlap => "overlap",
            FaultKind::PowerCut => "powercut",
        }
    }
}

impl std::str::FromStr for FaultKind {
    type Err = String;
    fn from_str(s: &str) -> Result<FaultKind, String> {
        FaultKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown fault {s:?} (kill | pause | partition | move | reshard | overlap | powercut)"
                )
            })
    }
}

/// What the nemesis did, for the run report.
#[derive(Default, Debug, Clone)]
pub struct FaultLog {
    pub counts: BTreeMap<String, u64>,
    pub events: Vec<String>,
}

impl FaultLog {
    fn note(&mut self, kind: &str, what: String) {
        *self.counts.entry(kind.to_string()).or_default() += 1;
        eprintln!("[nemesis] {what}");
        self.events.push(what);
    }
}

fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill {sig} {pid} failed");
    Ok(())
}

/// Picks the shard's leader half the time (the interesting case), else any node.
async fn pick_node(topo: &Topology, rng: &mut StdRng) -> NodeRef {
    let shards = topo.shards();
    let shard = shards[rng.random_range(0..shards.len())];
    if rng.random_bool(0.5) {
        if let Some(l) = topo.leader(shard).await {
            return l;
        }
    }
    NodeRef {
        shard,
        node: rng.random_range(1..=3),
    }
}

/// Applies one fault of `kind`, holds it for `hold`, heals it. Returns a description, or None
/// if the fault does not apply (e.g. slot moves on a single shard).
pub async fn apply(
    topo: &Topology,
    firewall: &Firewall,
    kind: FaultKind,
    hold: Duration,
    keys: &[String],
    rng: &mut StdRng,
    log: &mut FaultLog,
) -> anyhow::Result<()> {
    match kind {
        FaultKind::Kill => {
            let n = pick_node(topo, rng).await;
            topo.kill9(n).await;
            log.note("kill", format!("kill -9 node {n}, restart after {hold:?}"));
            tokio::time::sleep(hold).await;
            topo.restart(n).await;
        }
        FaultKind::Pause => {
            let n = pick_node(topo, rng).await;
            let Some(pid) = topo.pid(n) else {
                return Ok(());
            };
            signal(pid, "-STOP")?;
            log.note(
                "pause",
                format!("SIGSTOP node {n} (pid {pid}) for {hold:?}"),
            );
            tokio::time::sleep(hold).await;
            signal(pid, "-CONT")?;
        }
        FaultKind::Partition => {
            let n = pick_node(topo, rng).await;
            let cut = match rng.random_range(0..4) {
                0 => Cut::Inbound,
                1 => Cut::Outbound,
                _ => Cut::Both,
            };
            firewall.isolate(&topo.udp_ports(n), cut)?;
            log.note(
                "partition",
                format!("partition node {n} ({cut:?}) for {hold:?}"),
            );
            tokio::time::sleep(hold).await;
            firewall.heal()?;
        }
        FaultKind::Reshard => {
            let Topology::Unified(u) = topo else {
                return Ok(());
            };
            let done = log.counts.get("reshard").copied().unwrap_or(0);
            let outcome = match done {
                0 => u.add_shard(MAX_SHARDS).await,
                1 => u.remove_shard(MAX_SHARDS).await,
                _ => return Ok(()),
            };
            let what = if done == 0 { "addshard" } else { "removeshard" };
            let outcome = match outcome {
                Ok(v) => v.to_string(),
                Err(e) => format!("error {e:#}"),
            };
            log.note(
                "reshard",
                format!("{what} {MAX_SHARDS} while clients run: {outcome}"),
            );
            tokio::time::sleep(hold).await;
        }
        FaultKind::Move => {
            if topo.kind() != Kind::Unified || keys.is_empty() {
                return Ok(());
            }
            let what = move_slot(topo, keys, rng).await;
            log.note("move", what);
            tokio::time::sleep(hold).await;
        }
        FaultKind::Overlap => overlap(topo, firewall, hold, keys, rng, log).await?,
        FaultKind::PowerCut => {
            if let Some(r) = topo.power_cut().await {
                log.note(
                    "powercut",
                    format!(
                        "power cut of the whole shard: every node killed, {} unsynced bytes in {} files dropped, restarted",
                        r.bytes, r.files
                    ),
                );
            }
        }
    }
    Ok(())
}

/// Moves the slot of one of the clients' keys to another shard (their histories are the ones
/// checked); returns what happened.
async fn move_slot(topo: &Topology, keys: &[String], rng: &mut StdRng) -> String {
    let key = &keys[rng.random_range(0..keys.len())];
    if let Some(k) = super::spaces::range_key(key) {
        return move_chunk(topo, k, rng).await;
    }
    let slot = unikv_types::key_slot(key.as_bytes());
    let mut shards = topo.shards();
    shards.shuffle(rng);
    let api = topo.api();
    let slot_s = slot.to_string();
    // The owner is not known here: try targets until one is not the owner.
    for to in shards {
        let via = topo.api_id(NodeRef { shard: to, node: 1 });
        let to_s = to.to_string();
        let resp = api
            .request(
                via,
                Method::POST,
                "/moveslot",
                &[("slot", &slot_s), ("to", &to_s)],
                Body::Empty,
                Duration::from_secs(10),
            )
            .await;
        let (outcome, owner) = match resp {
            Ok(r) => (
                format!("{} {}", r.status, r.code().unwrap_or("")),
                r.code() == Some("bad_target"),
            ),
            Err(e) => (format!("error {e:#}"), false),
        };
        if !owner {
            return format!("move slot {slot} (key {key}) to shard {to}: {outcome}");
        }
    }
    format!("move slot {slot}: no target")
}

/// A range key's move: split its chunk at the key, then move the chunk starting there to
/// another shard (through the router).
async fn move_chunk(topo: &Topology, key: &str, rng: &mut StdRng) -> String {
    let api = topo.api();
    let t = Duration::from_secs(10);
    let base = format!("/collections/{}", super::spaces::RANGE);
    let split = api
        .request(
            ROUTER,
            Method::POST,
            &format!("{base}/split"),
            &[("at", key)],
            Body::Empty,
            t,
        )
        .await;
    let split = match split {
        Ok(r) => format!("{} {}", r.status, r.code().unwrap_or("")),
        Err(e) => format!("error {e:#}"),
    };
    let listed = api
        .request(
            ROUTER,
            Method::GET,
            &format!("{base}/chunks"),
            &[],
            Body::Empty,
            t,
        )
        .await;
    let chunk = listed.ok().and_then(|r| {
        r.field("chunks")?
            .as_array()?
            .iter()
            .find(|c| c["min"].as_str() == Some(key))
            .cloned()
    });
    let Some(chunk) = chunk else {
        return format!("split at range key {key}: {split}; no chunk starts there");
    };
    let from = chunk["shard"].as_u64().unwrap_or(0);
    let others: Vec<u64> = topo.shards().into_iter().filter(|s| *s != from).collect();
    let Some(to) = others.choose(rng).copied() else {
        return format!("split at range key {key}: {split}; nowhere to move");
    };
    let path = format!("{base}/chunks/{}/move", chunk["id"]);
    let moved = api
        .request(
            ROUTER,
            Method::POST,
            &path,
            &[("to", &to.to_string())],
            Body::Empty,
            t,
        )
        .await;
    let moved = match moved {
        Ok(r) => format!("{} {}", r.status, r.code().unwrap_or("")),
        Err(e) => format!("error {e:#}"),
    };
    format!(
        "split at range key {key}: {split}; chunk {} from shard {from} to {to}: {moved}",
        chunk["id"]
    )
}

/// Another node of `n`'s shard.
fn other_node(n: NodeRef, rng: &mut StdRng) -> NodeRef {
    let others: Vec<u64> = (1..=3).filter(|x| *x != n.node).collect();
    NodeRef {
        shard: n.shard,
        node: others[rng.random_range(0..others.len())],
    }
}

/// Two faults at once, healed together.
async fn overlap(
    topo: &Topology,
    firewall: &Firewall,
    hold: Duration,
    keys: &[String],
    rng: &mut StdRng,
    log: &mut FaultLog,
) -> anyhow::Result<()> {
    let shards = topo.shards();
    let shard = shards[rng.random_range(0..shards.len())];
    let Some(leader) = topo.leader(shard).await else {
        return Ok(());
    };
    let follower = other_node(leader, rng);
    match rng.random_range(0..3) {
        0 => {
            // The leader cut off while one of the followers is paused: no quorum anywhere
            // until the pause ends; then the other two elect, and the old leader must not
            // serve stale reads from its lease.
            firewall.isolate(&topo.udp_ports(leader), Cut::Both)?;
            let Some(pid) = topo.pid(follower) else {
                firewall.heal()?;
                return Ok(());
            };
            signal(pid, "-STOP")?;
            log.note(
                "overlap",
                format!("partition leader {leader} and SIGSTOP follower {follower} for {hold:?}"),
            );
            tokio::time::sleep(hold / 2).await;
            signal(pid, "-CONT")?;
            tokio::time::sleep(hold / 2).await;
            firewall.heal()?;
        }
        1 => {
            // The leader paused while a follower is cut off one way.
            let cut = if rng.random_bool(0.5) {
                Cut::Inbound
            } else {
                Cut::Outbound
            };
            firewall.isolate(&topo.udp_ports(follower), cut)?;
            let Some(pid) = topo.pid(leader) else {
                firewall.heal()?;
                return Ok(());
            };
            signal(pid, "-STOP")?;
            log.note(
                "overlap",
                format!("SIGSTOP leader {leader} and partition follower {follower} ({cut:?}) for {hold:?}"),
            );
            tokio::time::sleep(hold).await;
            signal(pid, "-CONT")?;
            firewall.heal()?;
        }
        _ if topo.kind() == Kind::Unified && !keys.is_empty() => {
            // A slot move while a shard's leader is killed part way through it.
            let delay = Duration::from_millis(rng.random_range(0..300));
            let mut move_rng = StdRng::seed_from_u64(rng.random());
            let (what, ()) = tokio::join!(move_slot(topo, keys, &mut move_rng), async {
                tokio::time::sleep(delay).await;
                topo.kill9(leader).await;
            });
            log.note(
                "overlap",
                format!("kill -9 leader {leader} {delay:?} into a slot move ({what}), restart after {hold:?}"),
            );
            tokio::time::sleep(hold).await;
            topo.restart(leader).await;
        }
        _ => {
            // A follower killed while the leader is cut off: the remaining follower alone
            // cannot elect until one of them is back.
            firewall.isolate(&topo.udp_ports(leader), Cut::Both)?;
            topo.kill9(follower).await;
            log.note(
                "overlap",
                format!("partition leader {leader} and kill -9 follower {follower} for {hold:?}"),
            );
            tokio::time::sleep(hold).await;
            topo.restart(follower).await;
            firewall.heal()?;
        }
    }
    Ok(())
}
