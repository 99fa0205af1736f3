//! Shared by the resharding suite (`tests/resharding.rs`): the background traffic that runs
//! while shards are added and drained, and the checks that follow every change — nothing
//! acknowledged lost, every appended token present exactly once, each shard owning its fair
//! share in every node's `/config`, and moved slots' data gone from the shards that gave them
//! away.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::load::{start_appender, start_writer, AppendLog, Load, WriteLog};
use crate::unified::NODES_PER_SHARD;
use crate::{assert_no_failures, make_kvs};
use crate::{
    check_values, node_ref, put_all, unique, wait_until_ok, ClusterConfig, RebalanceStatus,
    Unified, ROUTER,
};
use serde_json::Value;
use unikv_types::{key_slot, SLOT_COUNT};

/// The shard the growth tests add.
pub const NEW_SHARD: u64 = 4;
/// Slots per shard once four shards share 16384.
pub const QUARTER: usize = SLOT_COUNT as usize / 4;
/// Bound of a rebalance: from `/addshard` (or `/removeshard`) answered to every node agreeing
/// that nothing is left to move.
pub const BALANCE_TIMEOUT: Duration = Duration::from_secs(120);
/// The same with a leader killed mid-move (a hand-off may wait for a new leader).
pub const BALANCE_AFTER_KILL_TIMEOUT: Duration = Duration::from_secs(150);
/// Bound of a registry state change reaching every node's `/config` through gossip.
pub const CONFIG_STATE_WAIT: Duration = Duration::from_secs(15);
/// Pause between two rounds of `/rebalance/status` on every node.
pub const STATUS_POLL: Duration = Duration::from_millis(250);
/// How long a killed leader stays down before it is restarted.
pub const DOWN_FOR: Duration = Duration::from_secs(2);
/// How long after its first finished move a leader is watched for a hand-off in flight
/// before it is killed anyway.
pub const IN_FLIGHT_GRACE: Duration = Duration::from_secs(5);
/// Keys the appenders append to.
pub const APPEND_KEYS: usize = 20;
/// Writer and appender tasks, and the pause each takes after a request.
pub const WRITER_TASKS: usize = 4;
pub const APPENDER_TASKS: usize = 2;
pub const LOAD_PAUSE: Duration = Duration::from_millis(5);
/// Acknowledged requests of each load before the test changes the cluster.
pub const LOAD_WARMUP: u64 = 20;
/// Moved keys per source shard asked for directly on that shard's nodes.
pub const MOVED_KEY_PROBES: usize = 10;

/// Asserts the JSON the script printed for `addshard`/`removeshard` says `"ok": true`.
pub fn assert_script_ok(what: &str, answer: &Value) {
    assert_eq!(
        answer.get("ok"),
        Some(&Value::Bool(true)),
        "{what}: the node answered {answer}"
    );
}

/// Slots per shard when `shards` share all slots evenly (what every test expects at the end).
pub fn even_split(shards: &[u64]) -> BTreeMap<u64, usize> {
    let n = shards.len();
    let total = SLOT_COUNT as usize;
    shards
        .iter()
        .enumerate()
        .map(|(i, s)| (*s, (i + 1) * total / n - i * total / n))
        .collect()
}

/// The kind of a failure: `"HTTP <status> <code>"` for an answer, else its first words.
pub fn error_kind(e: &str) -> String {
    let code = e
        .split_once("\"code\":\"")
        .and_then(|(_, rest)| rest.split('"').next());
    match (e.strip_prefix("HTTP "), code) {
        (Some(rest), Some(code)) => {
            format!("HTTP {} {code}", rest.split(' ').next().unwrap_or_default())
        }
        _ => e.chars().take(80).collect(),
    }
}

/// `"; failures: …"` (the commonest kinds, see [`top_errors`]) or nothing when there are none.
fn failures_suffix<'a>(errors: impl Iterator<Item = &'a str>) -> String {
    let mut errors = errors.peekable();
    if errors.peek().is_none() {
        return String::new();
    }
    format!("; failures: {}", top_errors(errors))
}

/// The most frequent kinds of failure in a list, as `"count x kind"`.
pub fn top_errors<'a>(errors: impl Iterator<Item = &'a str>) -> String {
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for e in errors {
        *by.entry(error_kind(e)).or_default() += 1;
    }
    let mut v: Vec<(usize, String)> = by.into_iter().map(|(k, n)| (n, k)).collect();
    v.sort_by(|a, b| b.cmp(a));
    v.iter()
        .take(5)
        .map(|(n, k)| format!("{n} x {k}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Preloaded keys plus a writer of unique keys and an appender of unique tokens, all through
/// the router.
pub struct Traffic {
    pub preload: Vec<(String, String)>,
    pub append_keys: Vec<String>,
    pub writer: Load<WriteLog>,
    pub appender: Load<AppendLog>,
    pub started: Instant,
}

/// What the traffic did, once stopped.
pub struct Done {
    pub preload: Vec<(String, String)>,
    pub append_keys: Vec<String>,
    pub writes: WriteLog,
    pub appends: AppendLog,
    pub ran: Duration,
}

impl Traffic {
    /// Puts `preload` keys, then starts the writer and the appender and waits until both have
    /// had requests acknowledged.
    pub async fn start(u: &Unified, preload: usize) -> Traffic {
        let api = u.api();
        let kvs = make_kvs("pre", preload);
        let t0 = Instant::now();
        assert_no_failures(
            "preload through the router",
            &put_all(&api, &[ROUTER], &kvs, 16).await,
        );
        println!(
            "[figure] preloaded {preload} keys through the router in {:?}",
            t0.elapsed()
        );
        let p = unique("app");
        let append_keys: Vec<String> = (0..APPEND_KEYS).map(|i| format!("{p}-{i:02}")).collect();
        let writer = start_writer(&api, ROUTER, &unique("w"), WRITER_TASKS, LOAD_PAUSE);
        let appender = start_appender(&api, ROUTER, &append_keys, APPENDER_TASKS, LOAD_PAUSE);
        wait_until_ok(
            Duration::from_secs(30),
            "the writer and the appender to get acknowledgements",
            || async {
                let (w, a) = (writer.acked(), appender.acked());
                if w >= LOAD_WARMUP && a >= LOAD_WARMUP {
                    Ok(())
                } else {
                    Err(format!(
                        "writer {w}/{} acked, appender {a}/{} acked",
                        writer.sent(),
                        appender.sent()
                    ))
                }
            },
        )
        .await;
        Traffic {
            preload: kvs,
            append_keys,
            writer,
            appender,
            started: Instant::now(),
        }
    }

    pub async fn stop(self) -> Done {
        let ran = self.started.elapsed();
        let writes = WriteLog::merge(self.writer.stop().await);
        let appends = AppendLog::merge(self.appender.stop().await);
        Done {
            preload: self.preload,
            append_keys: self.append_keys,
            writes,
            appends,
            ran,
        }
    }
}

impl Done {
    /// Every acknowledged put reads back with its value through the router; every appended
    /// key holds each token at most once and each acknowledged token exactly once.
    pub async fn check_data(&self, u: &Unified) {
        let api = u.api();
        let w = &self.writes;
        println!(
            "[figure] writer: {} puts acknowledged, {} failed in {:?} ({:.0} acked/s){}",
            w.acked.len(),
            w.failed.len(),
            self.ran,
            w.acked.len() as f64 / self.ran.as_secs_f64(),
            failures_suffix(w.failed.iter().map(|f| f.2.as_str()))
        );
        let mut expected = self.preload.clone();
        expected.extend(w.acked.iter().cloned());
        assert_no_failures(
            "acknowledged puts read back through the router",
            &check_values(&api, &[ROUTER], &expected, 16).await,
        );

        let mut values = BTreeMap::new();
        for k in &self.append_keys {
            let v = api
                .get_value(ROUTER, k)
                .await
                .unwrap_or_else(|e| panic!("read appended key {k:?}: {e:#}"));
            values.insert(k.clone(), v);
        }
        let (problems, unacked_in) = self.appends.check(&values);
        let a = &self.appends;
        println!(
            "[figure] appender: {} tokens acknowledged, {} failed ({} of those applied anyway){}",
            a.acked.len(),
            a.failed.len(),
            unacked_in,
            failures_suffix(a.failed.iter().map(|f| f.2.as_str()))
        );
        assert_no_failures(
            "appended tokens: once each, acknowledged ones present",
            &problems,
        );
        assert!(
            !a.acked.is_empty() && !w.acked.is_empty(),
            "the load got nothing acknowledged"
        );
    }

    /// Bounds of the number of keys in the cluster: everything acknowledged at least, every
    /// key ever sent at most (a failed put may still have been applied).
    pub fn key_bounds(&self) -> (u64, u64) {
        let appended: BTreeSet<&str> = self.appends.acked.iter().map(|(k, _)| k.as_str()).collect();
        let lo = self.preload.len() + self.writes.acked.len() + appended.len();
        let hi = self.preload.len()
            + self.writes.acked.len()
            + self.writes.failed.len()
            + self.append_keys.len();
        (lo as u64, hi as u64)
    }
}

/// Asserts every node's `/config` gives each shard exactly its `expected` slot count (and no
/// slot to two shards); returns the config of the first node.
pub fn assert_layout(
    configs: &[(u64, ClusterConfig)],
    expected: &BTreeMap<u64, usize>,
) -> ClusterConfig {
    for (n, c) in configs {
        let counts = c.slot_counts();
        for (s, want) in expected {
            let have = counts.get(s).copied().unwrap_or(0);
            assert_eq!(
                have, *want,
                "node {n}: shard {s} owns {have} slots, not {want}: {counts:?}"
            );
            let listed: usize = c.shard(*s).map_or(0, |x| {
                x.slots.iter().map(|[lo, hi]| (hi - lo) as usize + 1).sum()
            });
            assert_eq!(
                listed, *want,
                "node {n}: shard {s}'s ranges hold {listed} slots"
            );
        }
        let map = c.slot_map();
        assert!(
            (0..SLOT_COUNT).all(|slot| map.owner(slot).is_some()),
            "node {n}: some slot has no owner"
        );
    }
    configs[0].1.clone()
}

/// The data of moved slots is gone from the shards that gave them away: every node's
/// `/stats?slots=1` lists only slots its shard owns now, a preloaded key that moved is
/// answered 421 `wrong_shard` naming its new owner by the nodes of its old one, and the
/// shards together hold as many keys as were written.
pub async fn assert_moved_away(
    u: &Unified,
    before: &ClusterConfig,
    after: &ClusterConfig,
    done: &Done,
) {
    let api = u.api();
    let (old, new) = (before.slot_map(), after.slot_map());
    let mut problems = Vec::new();
    let mut total_keys = 0u64;
    let mut listed_slots = 0usize;
    for s in u.shard_ids() {
        let leader = after
            .shard(s)
            .and_then(|x| x.leader.as_ref())
            .map(|l| l.node_id)
            .unwrap_or_else(|| panic!("shard {s} has no leader in {after:?}"));
        for n in 1..=NODES_PER_SHARD {
            let node = node_ref(s, n);
            let stats = u
                .stats(node, true)
                .await
                .unwrap_or_else(|e| panic!("{e:#}"));
            let own = stats
                .shard(s)
                .unwrap_or_else(|| panic!("node {node}: /stats has no shard {s}: {stats:?}"));
            let slots = own.slots.as_deref().unwrap_or_default();
            let foreign: Vec<u16> = slots
                .iter()
                .map(|x| x.slot)
                .filter(|slot| new.owner(*slot) != Some(s))
                .collect();
            if !foreign.is_empty() {
                problems.push(format!(
                    "node {node}: /stats?slots=1 lists {} slots shard {s} does not own, e.g. {:?}",
                    foreign.len(),
                    &foreign[..foreign.len().min(10)]
                ));
            }
            let slot_keys: u64 = slots.iter().map(|x| x.keys).sum();
            if slot_keys != own.keys {
                problems.push(format!(
                    "node {node}: per-slot keys sum to {slot_keys}, the shard total is {}",
                    own.keys
                ));
            }
            if n == leader {
                total_keys += own.keys;
                listed_slots += slots.len();
            }
        }
    }
    let (lo, hi) = done.key_bounds();
    if !(lo..=hi).contains(&total_keys) {
        problems.push(format!(
            "the shards hold {total_keys} keys, expected between {lo} and {hi}"
        ));
    }

    let mut probes: BTreeMap<u64, Vec<(&str, u64)>> = BTreeMap::new();
    for (k, _) in &done.preload {
        let (from, to) = (old.key_owner(k), new.key_owner(k));
        if let (Some(from), Some(to)) = (from, to) {
            let list = probes.entry(from).or_default();
            if from != to && list.len() < MOVED_KEY_PROBES {
                list.push((k, to));
            }
        }
    }
    let mut probed = 0;
    for (from, keys) in &probes {
        for (k, to) in keys {
            for n in 1..=NODES_PER_SHARD {
                let node = node_ref(*from, n);
                probed += 1;
                match api.get(node, k).await {
                    Ok(r)
                        if r.status == 421
                            && r.code() == Some("wrong_shard")
                            && r.field("owner").and_then(Value::as_u64) == Some(*to) => {}
                    Ok(r) => problems.push(format!(
                        "moved key {k:?} (slot {}, shard {from} -> {to}) on node {node}: {r}",
                        key_slot(k.as_bytes())
                    )),
                    Err(e) => problems.push(format!("moved key {k:?} on node {node}: {e:#}")),
                }
            }
        }
    }
    assert_no_failures("moved data gone from the sources", &problems);
    println!(
        "[figure] after the move: {total_keys} keys in the cluster (written: {lo}..={hi}), \
         {listed_slots} slots hold data, {probed} direct GETs of moved keys on old owners all 421"
    );
}

/// Every node's `/stats` calls `shard` active (bounded by [`CONFIG_STATE_WAIT`]).
pub async fn wait_active_everywhere(u: &Unified, shard: u64) {
    let nodes = u.all_nodes();
    let what = format!("every node's /stats to call shard {shard} active");
    wait_until_ok(CONFIG_STATE_WAIT, &what, || async {
        for &n in &nodes {
            let s = u.stats(n, false).await.map_err(|e| format!("{e:#}"))?;
            match s.shard(shard) {
                Some(x) if x.state == "active" => {}
                other => return Err(format!("node {n}: shard {shard} is {other:?}")),
            }
        }
        Ok(())
    })
    .await;
}

/// `run_unified.sh addshard 4`: answered ok, and then active in every node's view.
pub async fn add_new_shard(u: &Unified) {
    let answer = u
        .add_shard(NEW_SHARD)
        .await
        .unwrap_or_else(|e| panic!("run_unified.sh addshard 4: {e:#}"));
    assert_script_ok("addshard 4", &answer);
    wait_active_everywhere(u, NEW_SHARD).await;
}

/// `/rebalance/status` of every node.
pub async fn all_rebalance_status(u: &Unified) -> BTreeMap<u64, RebalanceStatus> {
    let mut out = BTreeMap::new();
    for n in u.all_nodes() {
        let st = u
            .rebalance_status(n)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        out.insert(n, st);
    }
    out
}

/// Prints what each shard's leader moved, its rate and the write pause of its slots.
pub fn print_moves(statuses: &BTreeMap<u64, RebalanceStatus>, took: Duration) {
    let mut slots = 0;
    let mut bytes = 0;
    for (n, st) in statuses {
        slots += st.moved_slots;
        bytes += st.moved_bytes;
        if st.moved_slots > 0 || st.aborted > 0 {
            let pause = st.write_pause_ms.map_or("-".to_string(), |p| {
                format!(
                    "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                    p.p50, p.p99, p.max
                )
            });
            println!(
                "[figure] node {n} (shard {}): moved {} slots, {} bytes at {} B/s, aborted {}, \
                 write pause {pause}",
                st.shard, st.moved_slots, st.moved_bytes, st.rate_bytes_per_s, st.aborted
            );
        }
    }
    println!(
        "[figure] {slots} slots ({bytes} bytes) moved in {took:?}: {:.0} slots/s",
        slots as f64 / took.as_secs_f64()
    );
}

/// Prints the router's counters (requests, retries, redirects), if it answers.
pub async fn print_router_counters(u: &Unified) {
    if let Ok(s) = u.router_status().await {
        println!("[figure] router counters: {}", s.counters);
    }
}

/// Slots whose owner changed between two configs, and the highest epoch in `after`.
pub fn moved_slots(before: &ClusterConfig, after: &ClusterConfig) -> (BTreeSet<u16>, u64) {
    let (b, a) = (before.slot_epochs(), after.slot_epochs());
    let moved = (0..SLOT_COUNT)
        .filter(|s| b[*s as usize].map(|x| x.0) != a[*s as usize].map(|x| x.0))
        .collect();
    let max_epoch = a.iter().flatten().map(|x| x.1).max().unwrap_or(0);
    (moved, max_epoch)
}
