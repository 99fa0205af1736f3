//! Online resharding with real processes, started only through `scripts/run_unified.sh`: a
//! fourth shard joins a 3x3 cluster under writes and appends (also with the source's or the
//! target's leader killed mid-move), a shard drains under load, slots that do not move never
//! see an error, and unsafe administrative requests are refused with a JSON reason.
//!
//! After every change the tests check that nothing acknowledged was lost, every appended
//! token is there exactly once, each shard owns its fair share in every node's `/config`, and
//! the data of moved slots is gone from the shards that gave them away.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;
use unikv_tests::load::{
    start_appender, start_hammer, start_writer, AppendLog, Load, Outcome, WriteLog,
};
use unikv_tests::unified::NODES_PER_SHARD;
use unikv_tests::{assert_no_failures, make_kvs};
use unikv_tests::{
    check_values, node_ref, put_all, unique, wait_until_ok, ClusterConfig, Proc, RebalanceStatus,
    Resp, Unified, ROUTER, UNIFIED_WAIT,
};
use unikv_types::{key_slot, SLOT_COUNT};

/// The shard the growth tests add.
const NEW_SHARD: u64 = 4;
/// Slots per shard once four shards share 16384.
const QUARTER: usize = SLOT_COUNT as usize / 4;
/// Bound of a rebalance: from `/addshard` (or `/removeshard`) answered to every node agreeing
/// that nothing is left to move.
const BALANCE_TIMEOUT: Duration = Duration::from_secs(120);
/// The same with a leader killed mid-move (a hand-off may wait for a new leader).
const BALANCE_AFTER_KILL_TIMEOUT: Duration = Duration::from_secs(150);
/// Bound of a registry state change reaching every node's `/config` through gossip.
const CONFIG_STATE_WAIT: Duration = Duration::from_secs(15);
/// Pause between two rounds of `/rebalance/status` on every node.
const STATUS_POLL: Duration = Duration::from_millis(250);
/// How long a killed leader stays down before it is restarted.
const DOWN_FOR: Duration = Duration::from_secs(2);
/// How long after its first finished move a leader is watched for a hand-off in flight
/// before it is killed anyway.
const IN_FLIGHT_GRACE: Duration = Duration::from_secs(5);
/// Keys the appenders append to.
const APPEND_KEYS: usize = 20;
/// Writer and appender tasks, and the pause each takes after a request.
const WRITER_TASKS: usize = 4;
const APPENDER_TASKS: usize = 2;
const LOAD_PAUSE: Duration = Duration::from_millis(5);
/// Acknowledged requests of each load before the test changes the cluster.
const LOAD_WARMUP: u64 = 20;
/// Moved keys per source shard asked for directly on that shard's nodes.
const MOVED_KEY_PROBES: usize = 10;

/// Asserts a JSON error body `{"error": "<non-empty>", "code": code}` with `status`.
fn assert_json_error(what: &str, r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "{what}: expected HTTP {status}, got {r}");
    assert_eq!(r.code(), Some(code), "{what}: wrong code: {r}");
    assert!(
        r.str_field("error").is_some_and(|e| !e.is_empty()),
        "{what}: no \"error\" message: {r}"
    );
}

/// Asserts the JSON the script printed for `addshard`/`removeshard` says `"ok": true`.
fn assert_script_ok(what: &str, answer: &Value) {
    assert_eq!(
        answer.get("ok"),
        Some(&Value::Bool(true)),
        "{what}: the node answered {answer}"
    );
}

/// Slots per shard when `shards` share all slots evenly (what every test expects at the end).
fn even_split(shards: &[u64]) -> BTreeMap<u64, usize> {
    let n = shards.len();
    let total = SLOT_COUNT as usize;
    shards
        .iter()
        .enumerate()
        .map(|(i, s)| (*s, (i + 1) * total / n - i * total / n))
        .collect()
}

/// The kind of a failure: `"HTTP <status> <code>"` for an answer, else its first words.
fn error_kind(e: &str) -> String {
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

/// The most frequent kinds of failure in a list, as `"count x kind"`.
fn top_errors<'a>(errors: impl Iterator<Item = &'a str>) -> String {
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
struct Traffic {
    preload: Vec<(String, String)>,
    append_keys: Vec<String>,
    writer: Load<WriteLog>,
    appender: Load<AppendLog>,
    started: Instant,
}

/// What the traffic did, once stopped.
struct Done {
    preload: Vec<(String, String)>,
    append_keys: Vec<String>,
    writes: WriteLog,
    appends: AppendLog,
    ran: Duration,
}

impl Traffic {
    /// Puts `preload` keys, then starts the writer and the appender and waits until both have
    /// had requests acknowledged.
    async fn start(u: &Unified, preload: usize) -> Traffic {
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

    async fn stop(self) -> Done {
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
    async fn check_data(&self, u: &Unified) {
        let api = u.api();
        let w = &self.writes;
        println!(
            "[figure] writer: {} puts acknowledged, {} failed in {:?} ({:.0} acked/s){}",
            w.acked.len(),
            w.failed.len(),
            self.ran,
            w.acked.len() as f64 / self.ran.as_secs_f64(),
            if w.failed.is_empty() {
                String::new()
            } else {
                format!(
                    "; failures: {}",
                    top_errors(w.failed.iter().map(|f| f.2.as_str()))
                )
            }
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
            if a.failed.is_empty() {
                String::new()
            } else {
                format!(
                    "; failures: {}",
                    top_errors(a.failed.iter().map(|f| f.2.as_str()))
                )
            }
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
    fn key_bounds(&self) -> (u64, u64) {
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
fn assert_layout(
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
async fn assert_moved_away(
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
async fn wait_active_everywhere(u: &Unified, shard: u64) {
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
async fn add_new_shard(u: &Unified) {
    let answer = u
        .add_shard(NEW_SHARD)
        .await
        .unwrap_or_else(|e| panic!("run_unified.sh addshard 4: {e:#}"));
    assert_script_ok("addshard 4", &answer);
    wait_active_everywhere(u, NEW_SHARD).await;
}

/// `/rebalance/status` of every node.
async fn all_rebalance_status(u: &Unified) -> BTreeMap<u64, RebalanceStatus> {
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
fn print_moves(statuses: &BTreeMap<u64, RebalanceStatus>, took: Duration) {
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
async fn print_router_counters(u: &Unified) {
    if let Ok(s) = u.router_status().await {
        println!("[figure] router counters: {}", s.counters);
    }
}

/// Slots whose owner changed between two configs, and the highest epoch in `after`.
fn moved_slots(before: &ClusterConfig, after: &ClusterConfig) -> (BTreeSet<u16>, u64) {
    let (b, a) = (before.slot_epochs(), after.slot_epochs());
    let moved = (0..SLOT_COUNT)
        .filter(|s| b[*s as usize].map(|x| x.0) != a[*s as usize].map(|x| x.0))
        .collect();
    let max_epoch = a.iter().flatten().map(|x| x.1).max().unwrap_or(0);
    (moved, max_epoch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_to_four_shards_under_writes_and_appends() {
    let u = Unified::start().await;
    let api = u.api();
    let before = u.agreed_configs().await.remove(0).1;
    let surplus: BTreeMap<u64, usize> = before
        .shards
        .iter()
        .map(|s| (s.id, s.slot_count - QUARTER))
        .collect();
    assert_eq!(
        surplus,
        BTreeMap::from([(1, 1365), (2, 1365), (3, 1366)]),
        "slots above 4096 per shard at the start"
    );
    let traffic = Traffic::start(&u, 2_000).await;

    let t0 = Instant::now();
    add_new_shard(&u).await;
    let added = t0.elapsed();
    let t1 = Instant::now();
    let configs = u
        .wait_balanced(&even_split(&[1, 2, 3, 4]), STATUS_POLL, BALANCE_TIMEOUT)
        .await;
    let took = t1.elapsed();
    println!("[figure] addshard 4 (three nodes started and joined, /addshard answered): {added:?}; balanced {took:?} later");
    let statuses = all_rebalance_status(&u).await;
    let done = traffic.stop().await;

    done.check_data(&u).await;
    let after = assert_layout(&configs, &even_split(&[1, 2, 3, 4]));
    assert_moved_away(&u, &before, &after, &done).await;

    // Exactly the surplus moved, each slot once: per source shard, the hand-offs its nodes
    // completed; every moved slot now at epoch 2, every other one still at its epoch.
    let mut by_shard: BTreeMap<u64, u64> = BTreeMap::new();
    for st in statuses.values() {
        *by_shard.entry(st.shard).or_default() += st.moved_slots;
    }
    print_moves(&statuses, took);
    for (s, want) in &surplus {
        assert_eq!(
            by_shard.get(s).copied().unwrap_or(0),
            *want as u64,
            "shard {s} moved {:?} slots, its surplus is {want}: {by_shard:?}",
            by_shard.get(s)
        );
    }
    assert_eq!(
        by_shard.get(&NEW_SHARD).copied().unwrap_or(0),
        0,
        "{by_shard:?}"
    );
    let (b, a) = (before.slot_epochs(), after.slot_epochs());
    let mut wrong = Vec::new();
    for slot in 0..SLOT_COUNT as usize {
        let (Some((bo, be)), Some((ao, ae))) = (b[slot], a[slot]) else {
            wrong.push(format!(
                "slot {slot}: before {:?}, after {:?}",
                b[slot], a[slot]
            ));
            continue;
        };
        let ok = if bo == ao {
            ae == be
        } else {
            ao == NEW_SHARD && ae == be + 1
        };
        if !ok || ae > 2 {
            wrong.push(format!(
                "slot {slot}: shard {bo} epoch {be} -> shard {ao} epoch {ae}"
            ));
        }
    }
    assert_no_failures("slot epochs after one move each", &wrong);
    let (moved, max_epoch) = moved_slots(&before, &after);
    assert_eq!(moved.len(), QUARTER, "slots that changed owner");
    println!(
        "[figure] {} slots changed owner, highest epoch {max_epoch}",
        moved.len()
    );

    // An explicit move: a slot of the new shard, with data, back to shard 1, asked of a node
    // of shard 2; it answers once done, and the key reads back through the router.
    let (key, value) = done
        .preload
        .iter()
        .find(|(k, _)| after.slot_map().key_owner(k) == Some(NEW_SHARD))
        .expect("a preloaded key moved to the new shard")
        .clone();
    let slot = key_slot(key.as_bytes());
    let (slot_s, to, from) = (slot.to_string(), "1".to_string(), NEW_SHARD.to_string());
    let t2 = Instant::now();
    let r = api
        .get_path(
            node_ref(2, 1),
            "/moveslot",
            &[("slot", &slot_s), ("to", &to), ("from", &from)],
        )
        .await
        .unwrap_or_else(|e| panic!("/moveslot: {e:#}"));
    let moveslot_took = t2.elapsed();
    assert!(r.is_ok(), "/moveslot?slot={slot}&to=1&from=4: {r}");
    let res = r.field("result").cloned().unwrap_or_default();
    assert_eq!(r.field("ok"), Some(&Value::Bool(true)), "{r}");
    assert_eq!(
        (
            res["slot"].as_u64(),
            res["from"].as_u64(),
            res["to"].as_u64(),
            res["epoch"].as_u64()
        ),
        (Some(u64::from(slot)), Some(NEW_SHARD), Some(1), Some(3)),
        "/moveslot result: {r}"
    );
    let got = api.get_value(ROUTER, &key).await;
    assert!(
        matches!(&got, Ok(Some(v)) if *v == value),
        "{key:?} after /moveslot: {got:?}, expected {value:?}"
    );
    println!("[figure] /moveslot of slot {slot} (4 -> 1) answered in {moveslot_took:?}");
    print_router_counters(&u).await;
    u.assert_running(&u.procs());
}

/// Which side of the move loses its leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Victim {
    /// Shard 1's leader, once it moves slots.
    Source,
    /// The new shard's leader, once it receives slots.
    Target,
}

/// Adds shard 4 under load and kill -9s the `victim` leader mid-move, restarting it
/// [`DOWN_FOR`] later; then every final check of the plain growth test.
async fn add_shard_killing_a_leader(victim: Victim) {
    let u = Unified::start().await;
    let before = u.agreed_configs().await.remove(0).1;
    let surplus = (before.shard(1).expect("shard 1").slot_count - QUARTER) as u64;
    let traffic = Traffic::start(&u, 1_000).await;
    let all: Vec<u64> = (1..=NODES_PER_SHARD).collect();
    let shard = match victim {
        Victim::Source => 1,
        Victim::Target => NEW_SHARD,
    };

    // Add the shard and, meanwhile, watch the victim's shard for the first sign of a move.
    // Hand-offs run in batches, so the leader is preferably killed with one in flight (slots
    // frozen, or received and not yet served); if no poll catches that within
    // IN_FLIGHT_GRACE of the first finished move, it is killed between two batches.
    let t0 = Instant::now();
    let first_progress: Cell<Option<Instant>> = Cell::new(None);
    let what = format!("shard {shard}'s leader to take part in a move");
    let watch = wait_until_ok(Duration::from_secs(60), &what, || async {
        let leader = u.observe_shard_leader(shard, &all).await?;
        let st = u
            .rebalance_status(node_ref(shard, leader))
            .await
            .map_err(|e| format!("{e:#}"))?;
        let own = st.cluster.slot_counts.get(&shard).copied().unwrap_or(0);
        let (in_flight, progress) = match victim {
            Victim::Source => (st.moving > 0, st.moved_slots > 0),
            Victim::Target => (st.receiving > 0, own > 0),
        };
        if st.leader && progress && first_progress.get().is_none() {
            first_progress.set(Some(Instant::now()));
        }
        let waited_enough = first_progress
            .get()
            .is_some_and(|t| t.elapsed() >= IN_FLIGHT_GRACE);
        if st.leader && (in_flight || waited_enough) {
            Ok((leader, st, own))
        } else {
            Err(format!("node {shard}/{leader}: {st:?}"))
        }
    });
    let (answer, (leader, seen, own)) = tokio::join!(u.add_shard(NEW_SHARD), watch);
    let answer = answer.unwrap_or_else(|e| panic!("run_unified.sh addshard 4: {e:#}"));
    assert_script_ok("addshard 4", &answer);
    u.kill9(Proc::Node(shard, leader)).await;
    let killed_at = t0.elapsed();
    println!(
        "[figure] killed {victim:?} leader {shard}/{leader} {killed_at:?} after addshard began: \
         it had moved {} slots, was moving {}, receiving {}, queued {}, owned {own}",
        seen.moved_slots, seen.moving, seen.receiving, seen.queued
    );
    match victim {
        Victim::Source => assert!(
            seen.moved_slots < surplus,
            "shard 1's leader had already moved {} of its {surplus} slots: not mid-move",
            seen.moved_slots
        ),
        Victim::Target => assert!(own < QUARTER, "the new shard already owned {own} slots"),
    }
    tokio::time::sleep(DOWN_FOR).await;
    u.restart_node(shard, leader).await;

    let configs = u
        .wait_balanced(
            &even_split(&[1, 2, 3, 4]),
            STATUS_POLL,
            BALANCE_AFTER_KILL_TIMEOUT,
        )
        .await;
    let took = t0.elapsed();
    u.wait_node_caught_up(shard, leader).await;
    let statuses = all_rebalance_status(&u).await;
    let done = traffic.stop().await;
    print_moves(&statuses, took);

    done.check_data(&u).await;
    let after = assert_layout(&configs, &even_split(&[1, 2, 3, 4]));
    assert_moved_away(&u, &before, &after, &done).await;
    let (moved, max_epoch) = moved_slots(&before, &after);
    let aborted: u64 = statuses.values().map(|s| s.aborted).sum();
    let removed = after
        .slot_epochs()
        .iter()
        .flatten()
        .filter(|(_, e)| *e > 2)
        .count();
    println!(
        "[figure] {} slots changed owner; {aborted} hand-offs aborted (since restart), \
         {removed} slots above epoch 2, highest epoch {max_epoch}",
        moved.len()
    );
    assert_eq!(moved.len(), QUARTER, "slots that changed owner");
    print_router_counters(&u).await;
    u.assert_running(&u.procs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn source_leader_killed_mid_move() {
    add_shard_killing_a_leader(Victim::Source).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn target_leader_killed_mid_move() {
    add_shard_killing_a_leader(Victim::Target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drain_under_load() {
    const DRAINED: u64 = 2;
    let u = Unified::start().await;
    let before = u.agreed_configs().await.remove(0).1;
    let traffic = Traffic::start(&u, 1_000).await;

    let t0 = Instant::now();
    let answer = u
        .remove_shard(DRAINED)
        .await
        .unwrap_or_else(|e| panic!("run_unified.sh removeshard 2: {e:#}"));
    assert_script_ok("removeshard 2", &answer);
    let mut expected = even_split(&[1, 3]);
    expected.insert(DRAINED, 0);
    let configs = u
        .wait_balanced(&expected, STATUS_POLL, BALANCE_TIMEOUT)
        .await;
    let took = t0.elapsed();
    // Inactive everywhere: in every node's /stats and in the drained shard's own status.
    let nodes = u.all_nodes();
    wait_until_ok(
        UNIFIED_WAIT,
        "every node to report shard 2 inactive with no slots",
        || async {
            for &n in &nodes {
                let stats = u.stats(n, false).await.map_err(|e| format!("{e:#}"))?;
                match stats.shard(DRAINED) {
                    Some(s) if s.state == "inactive" && s.slot_count == 0 => {}
                    other => return Err(format!("node {n}: shard 2 is {other:?}")),
                }
            }
            for n in u.shard_nodes(DRAINED) {
                let st = u.rebalance_status(n).await.map_err(|e| format!("{e:#}"))?;
                if st.state != "inactive" {
                    return Err(format!("node {n}: /rebalance/status says {}", st.state));
                }
            }
            Ok(())
        },
    )
    .await;
    let inactive = t0.elapsed();
    let statuses = all_rebalance_status(&u).await;
    let done = traffic.stop().await;
    println!(
        "[figure] removeshard 2: balanced after {took:?}, inactive everywhere after {inactive:?}"
    );
    print_moves(&statuses, took);

    done.check_data(&u).await;
    let after = assert_layout(&configs, &expected);
    assert_moved_away(&u, &before, &after, &done).await;
    for n in u.shard_nodes(DRAINED) {
        let s = u.stats(n, true).await.unwrap_or_else(|e| panic!("{e:#}"));
        let own = s.shard(DRAINED).expect("own shard in /stats");
        assert!(
            own.keys == 0 && own.slots.as_deref().is_some_and(<[_]>::is_empty),
            "node {n}: the drained shard still holds data: {own:?}"
        );
    }
    let moved: u64 = statuses
        .values()
        .filter(|s| s.shard == DRAINED)
        .map(|s| s.moved_slots)
        .sum();
    assert_eq!(
        moved,
        before.shard(DRAINED).expect("shard 2").slot_count as u64,
        "slots moved by shard 2's nodes"
    );
    // Tags set on a remaining shard show in every node's /stats (other shards learn them
    // through gossip).
    let r = u
        .api()
        .get_path(
            node_ref(DRAINED, 1),
            "/shard/tags",
            &[("shardID", "3"), ("datacenter", "eu-west")],
        )
        .await
        .unwrap_or_else(|e| panic!("/shard/tags: {e:#}"));
    assert!(r.is_ok(), "/shard/tags?shardID=3&datacenter=eu-west: {r}");
    wait_until_ok(
        UNIFIED_WAIT,
        "shard 3's tag in every node's /stats",
        || async {
            for &n in &nodes {
                let s = u.stats(n, false).await.map_err(|e| format!("{e:#}"))?;
                match s.shard(3) {
                    Some(x) if x.tags.get("datacenter").map(String::as_str) == Some("eu-west") => {}
                    other => return Err(format!("node {n}: shard 3 is {other:?}")),
                }
            }
            Ok(())
        },
    )
    .await;

    // Every node's /config, the drained shard's own nodes included, calls it inactive.
    wait_until_ok(
        CONFIG_STATE_WAIT,
        "every node's /config to call shard 2 inactive",
        || async {
            let configs = u.configs(&nodes).await.map_err(|e| format!("{e:#}"))?;
            let states: Vec<(u64, Option<String>)> = configs
                .iter()
                .map(|(n, c)| (*n, c.shard(DRAINED).map(|s| s.state.clone())))
                .collect();
            if states.iter().all(|(_, s)| s.as_deref() == Some("inactive")) {
                Ok(())
            } else {
                Err(format!("shard 2's state per node: {states:?}"))
            }
        },
    )
    .await;
    u.assert_running(&u.procs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unmoved_slots_see_no_errors() {
    const KEYS: usize = 500;
    const TASKS: usize = 8;
    let u = Unified::start().await;
    let api = u.api();
    let before = u.agreed_configs().await.remove(0).1;
    let kvs = make_kvs("hammer", KEYS);
    assert_no_failures(
        "preload through the router",
        &put_all(&api, &[ROUTER], &kvs, 16).await,
    );
    let keys: Vec<String> = kvs.iter().map(|(k, _)| k.clone()).collect();
    let hammer = start_hammer(&api, ROUTER, &keys, TASKS, Duration::from_millis(2));
    wait_until_ok(
        Duration::from_secs(30),
        "the hammer to get going",
        || async {
            if hammer.acked() >= 100 {
                Ok(())
            } else {
                Err(format!("{}/{} ok", hammer.acked(), hammer.sent()))
            }
        },
    )
    .await;

    let t0 = Instant::now();
    add_new_shard(&u).await;
    let configs = u
        .wait_balanced(&even_split(&[1, 2, 3, 4]), STATUS_POLL, BALANCE_TIMEOUT)
        .await;
    let took = t0.elapsed();
    let outcomes: Vec<Outcome> = hammer.stop().await.into_iter().flatten().collect();
    let after = assert_layout(&configs, &even_split(&[1, 2, 3, 4]));

    // Slots whose owner and epoch are what they were: none of their requests may fail.
    let (b, a) = (before.slot_epochs(), after.slot_epochs());
    let unmoved = |k: &str| {
        let slot = key_slot(k.as_bytes()) as usize;
        b[slot] == a[slot]
    };
    let (still, moved): (Vec<&Outcome>, Vec<&Outcome>) =
        outcomes.iter().partition(|o| unmoved(&o.key));
    let still_errors: Vec<String> = still
        .iter()
        .filter_map(|o| {
            o.result.as_ref().err().map(|e| {
                format!(
                    "{} {:?} (slot {}) after {:?}: {e}",
                    if o.write { "put" } else { "get" },
                    o.key,
                    key_slot(o.key.as_bytes()),
                    o.latency
                )
            })
        })
        .collect();
    let moved_errors: Vec<&Outcome> = moved
        .iter()
        .copied()
        .filter(|o| o.result.is_err())
        .collect();
    let max = |v: &[&Outcome]| v.iter().map(|o| o.latency).max().unwrap_or_default();
    let keys_moved = keys.iter().filter(|k| !unmoved(k)).count();
    println!(
        "[figure] hammer ({TASKS} tasks, {KEYS} keys, {keys_moved} in moved slots) during addshard \
         + rebalance ({took:?}): {} requests on unmoved slots, {} errors, max latency {:?}; \
         {} on moved slots, {} errors, max latency {:?}{}",
        still.len(),
        still_errors.len(),
        max(&still),
        moved.len(),
        moved_errors.len(),
        max(&moved),
        if moved_errors.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                top_errors(moved_errors.iter().filter_map(|o| o.result.as_ref().err()).map(String::as_str))
            )
        }
    );
    assert!(
        still.len() >= 1_000 && !moved.is_empty(),
        "too little load to tell: {} requests on unmoved slots, {} on moved ones",
        still.len(),
        moved.len()
    );
    assert_no_failures("requests on slots that did not move", &still_errors);

    // Keys that saw errors while their slot moved work now.
    let failed_keys: BTreeSet<&str> = moved_errors.iter().map(|o| o.key.as_str()).collect();
    let retry: Vec<(String, String)> = failed_keys
        .iter()
        .map(|k| (k.to_string(), format!("after-{k}")))
        .collect();
    assert_no_failures(
        "puts of keys that failed while moving",
        &put_all(&api, &[ROUTER], &retry, 8).await,
    );
    assert_no_failures(
        "reads of keys that failed while moving",
        &check_values(&api, &[ROUTER], &retry, 8).await,
    );
    print_router_counters(&u).await;
    u.assert_running(&u.procs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unsafe_requests_are_refused() {
    // One shard: the cheapest cluster with a last active shard.
    let u = Unified::start_shards(1, &[], &[]).await;
    let api = u.api();
    let via = node_ref(1, 1);
    let own_addr = api.http_addr(node_ref(1, 2)).to_string();
    // A port reserved for shard 2's first node, where nothing runs.
    let nobody = api.http_addr(node_ref(2, 1)).to_string();
    let before = u.agreed_configs().await.remove(0).1;

    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "/addshard",
            vec![("shardID", "1"), ("shardAddress", &own_addr)],
            409,
            "shard_exists",
        ),
        (
            "/addshard",
            vec![("shardID", "2"), ("shardAddress", &nobody)],
            400,
            "unreachable",
        ),
        (
            "/addshard",
            vec![("shardID", "2"), ("shardAddress", &own_addr)],
            400,
            "wrong_shard",
        ),
        ("/removeshard", vec![("shardID", "7")], 404, "unknown_shard"),
        (
            "/removeshard",
            vec![("shardID", "1")],
            400,
            "last_active_shard",
        ),
        (
            "/moveslot",
            vec![("slot", "16384"), ("to", "1")],
            400,
            "bad_request",
        ),
        (
            "/moveslot",
            vec![("slot", "5"), ("to", "2")],
            400,
            "bad_target",
        ),
        (
            "/moveslot",
            vec![("slot", "5"), ("to", "1"), ("from", "2")],
            409,
            "not_owner",
        ),
        (
            "/moveslot",
            vec![("slot", "5"), ("to", "1")],
            400,
            "bad_target",
        ),
        (
            "/shard/tags",
            vec![("shardID", "7"), ("datacenter", "x")],
            404,
            "unknown_shard",
        ),
        (
            "/shard/tags",
            vec![("shardID", "1"), ("data center", "x")],
            400,
            "bad_tag",
        ),
    ];
    for (path, query, status, code) in &cases {
        for node in [via, node_ref(1, 3)] {
            let what = format!("{path}?{query:?} on node {node}");
            let r = api
                .get_path(node, path, query)
                .await
                .unwrap_or_else(|e| panic!("{what}: {e:#}"));
            assert_json_error(&what, &r, *status, code);
        }
    }
    println!(
        "[figure] {} refusals checked on 2 nodes each, all with their status and code",
        cases.len()
    );

    // Nothing changed: one active shard owning every slot at its first epoch.
    let configs = u.agreed_configs().await;
    for (n, c) in &configs {
        assert_eq!(
            c.slot_counts(),
            BTreeMap::from([(1, SLOT_COUNT as usize)]),
            "node {n}: /config after the refusals"
        );
        assert_eq!(
            c.slot_epochs(),
            before.slot_epochs(),
            "node {n}: epochs changed"
        );
    }

    // Tags: accepted, then in every node's /stats.
    let r = api
        .get_path(
            via,
            "/shard/tags",
            &[("shardID", "1"), ("datacenter", "us-east")],
        )
        .await
        .unwrap_or_else(|e| panic!("/shard/tags: {e:#}"));
    assert!(r.is_ok(), "/shard/tags?shardID=1&datacenter=us-east: {r}");
    let nodes = u.all_nodes();
    wait_until_ok(UNIFIED_WAIT, "the tag in every node's /stats", || async {
        for &n in &nodes {
            let s = u.stats(n, false).await.map_err(|e| format!("{e:#}"))?;
            match s.shard(1) {
                Some(x)
                    if x.state == "active"
                        && x.tags.get("datacenter").map(String::as_str) == Some("us-east") => {}
                other => return Err(format!("node {n}: shard 1 is {other:?}")),
            }
        }
        Ok(())
    })
    .await;
    u.assert_running(&u.procs());
}
