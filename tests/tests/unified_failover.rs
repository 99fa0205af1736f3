//! The unified cluster under failures: the router follows a new leader after kill -9 without
//! losing or doubling an acknowledged write, a dead shard fails only its own keys (with a JSON
//! `unavailable` naming it), and a restarted router relearns the map from gossip.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use unikv_tests::unified::{all_procs, NODES_PER_SHARD};
use unikv_tests::{
    assert_json_error, check_values, node_ref, put_all, try_wait_until, unique, wait_until_ok,
    Proc, Resp, Unified, ROUTER, ROUTER_DEADLINE, SHARDS, UNIFIED_WAIT,
};
use unikv_tests::{assert_no_failures, make_kvs};
use unikv_types::key_slot;

/// Client-side bound of one router request: the router's deadline plus a margin.
const ROUTER_REPLY_BOUND: Duration = Duration::from_secs(5);
/// The failover writer starts a write this often.
const WRITE_EVERY: Duration = Duration::from_millis(10);
/// Writes the failover writer leaves pending at most.
const MAX_IN_FLIGHT: usize = 256;

/// One write attempt of the failover writer.
struct Attempt {
    key: String,
    value: String,
    started: Instant,
    finished: Instant,
    result: Result<(), String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn router_follows_a_new_leader_after_kill9() {
    const SHARD: u64 = 2;
    let u = Unified::start().await;
    let api = u.api();
    let map = u.agreed_slot_map().await;
    let all: Vec<u64> = (1..=NODES_PER_SHARD).collect();
    let old_leader = u.wait_shard_leader(SHARD, &all, UNIFIED_WAIT).await;

    // The writer: keys of shard 2 only; it starts a write every WRITE_EVERY whether or not
    // earlier ones have answered (at most MAX_IN_FLIGHT pending), so a write stuck in the
    // outage does not hide the moment writes succeed again. Every attempt is recorded.
    let log: Arc<Mutex<Vec<Attempt>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (api, log, stop, map) = (api.clone(), log.clone(), stop.clone(), map.clone());
        let prefix = unique("failover");
        tokio::spawn(async move {
            let mut in_flight = tokio::task::JoinSet::new();
            let mut tick = tokio::time::interval(WRITE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                while in_flight.len() >= MAX_IN_FLIGHT {
                    in_flight.join_next().await;
                }
                let key = loop {
                    i += 1;
                    let key = format!("{prefix}-{i}");
                    if map.key_owner(&key) == Some(SHARD) {
                        break key;
                    }
                };
                let value = format!("v{i}");
                let (api, log) = (api.clone(), log.clone());
                in_flight.spawn(async move {
                    let started = Instant::now();
                    let result = match api
                        .put_timeout(ROUTER, &key, &value, ROUTER_REPLY_BOUND)
                        .await
                    {
                        Ok(r) if r.is_ok_true() => Ok(()),
                        Ok(r) => Err(r.to_string()),
                        Err(e) => Err(format!("{e:#}")),
                    };
                    let finished = Instant::now();
                    log.lock().unwrap().push(Attempt {
                        key,
                        value,
                        started,
                        finished,
                        result,
                    });
                });
            }
            while in_flight.join_next().await.is_some() {}
        })
    };
    let acked = |log: &Arc<Mutex<Vec<Attempt>>>| {
        log.lock()
            .unwrap()
            .iter()
            .filter(|a| a.result.is_ok())
            .count()
    };
    wait_until_ok(
        UNIFIED_WAIT,
        "20 acknowledged writes before the kill",
        || {
            let n = acked(&log);
            let last_err = log
                .lock()
                .unwrap()
                .iter()
                .rev()
                .find_map(|a| a.result.clone().err());
            async move {
                if n >= 20 {
                    Ok(())
                } else {
                    Err(format!("{n} acknowledged; last error {last_err:?}"))
                }
            }
        },
    )
    .await;

    u.kill9(Proc::Node(SHARD, old_leader)).await;
    let killed_at = Instant::now();

    // The Raft side alone: how long until the survivors elect a leader (polled every 50 ms).
    let others: Vec<u64> = all.iter().copied().filter(|n| *n != old_leader).collect();
    let new_leader = u.wait_shard_leader(SHARD, &others, UNIFIED_WAIT).await;
    let elected = killed_at.elapsed();
    assert_ne!(new_leader, old_leader);
    println!(
        "[figure] failover: shard {SHARD} survivors report new leader node {new_leader} {} ms after the kill",
        elected.as_millis()
    );

    let resumed = try_wait_until(Duration::from_secs(15) + ROUTER_REPLY_BOUND, || {
        let found = log
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.started >= killed_at && a.result.is_ok())
            .map(|a| a.finished)
            .min();
        async move { found }
    })
    .await;
    let (failed_after_kill, errors): (usize, BTreeMap<String, usize>) = {
        let log = log.lock().unwrap();
        let mut errors = BTreeMap::new();
        let mut n = 0;
        for a in log.iter().filter(|a| a.started >= killed_at) {
            if let Err(e) = &a.result {
                n += 1;
                let kind: String = e.chars().take(40).collect();
                *errors.entry(kind).or_insert(0) += 1;
            }
        }
        (n, errors)
    };
    let resumed = resumed.unwrap_or_else(|| {
        panic!(
            "no write started after the kill of node {SHARD}/{old_leader} succeeded within 20 s; \
             {failed_after_kill} failed: {errors:?}"
        )
    });
    let failover = resumed.duration_since(killed_at);
    println!(
        "[figure] failover (kill -9 of shard {SHARD} leader -> first acknowledged write started after it): {} ms; {failed_after_kill} writes failed meanwhile: {errors:?}",
        failover.as_millis()
    );
    assert!(
        failover <= Duration::from_secs(15),
        "writes resumed only after {failover:?}"
    );

    // Bring the old leader back; the writer keeps going meanwhile.
    u.restart_node(SHARD, old_leader).await;
    u.wait_node_caught_up(SHARD, old_leader).await;
    let before = acked(&log);
    wait_until_ok(
        UNIFIED_WAIT,
        "20 more acknowledged writes after the restart",
        || {
            let n = acked(&log);
            async move {
                if n >= before + 20 {
                    Ok(())
                } else {
                    Err(format!("{} more", n - before))
                }
            }
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("writer task panicked");

    let (acked_kvs, attempts, failures) = {
        let log = log.lock().unwrap();
        let acked: Vec<(String, String)> = log
            .iter()
            .filter(|a| a.result.is_ok())
            .map(|a| (a.key.clone(), a.value.clone()))
            .collect();
        // Failed attempts: when the first and last started relative to the kill, and the
        // first answers in full.
        let offset = |a: &Attempt| {
            if a.started >= killed_at {
                a.started.duration_since(killed_at).as_millis() as i128
            } else {
                -(killed_at.duration_since(a.started).as_millis() as i128)
            }
        };
        let failed: Vec<&Attempt> = log.iter().filter(|a| a.result.is_err()).collect();
        let failures = format!(
            "{} failed, started {:?}..{:?} ms from the kill; first: {:?}",
            failed.len(),
            failed.iter().map(|a| offset(a)).min(),
            failed.iter().map(|a| offset(a)).max(),
            failed
                .iter()
                .take(2)
                .map(|a| format!(
                    "started {} ms, took {} ms: {}",
                    offset(a),
                    a.finished.duration_since(a.started).as_millis(),
                    a.result.as_ref().err().map_or("", |e| e.as_str())
                ))
                .collect::<Vec<_>>()
        );
        (acked, log.len(), failures)
    };
    println!(
        "[figure] failover writer: {} of {attempts} writes acknowledged; {failures}",
        acked_kvs.len()
    );
    assert_no_failures(
        "acknowledged writes read through the router",
        &check_values(&api, &[ROUTER], &acked_kvs, 16).await,
    );
    assert_no_failures(
        "acknowledged writes read on the restarted node",
        &check_values(&api, &[node_ref(SHARD, old_leader)], &acked_kvs, 16).await,
    );
    u.assert_running(&all_procs());
}

/// Asserts the router's answer for a key of a dead shard: 503 `unavailable` naming its slot
/// and shard.
fn assert_unavailable(what: &str, r: &Resp, key: &str, shard: u64) {
    assert_json_error(what, r, 503, "unavailable");
    let slot = u64::from(key_slot(key.as_bytes()));
    assert_eq!(
        r.field("slot").and_then(Value::as_u64),
        Some(slot),
        "{what}: \"slot\" should be {slot}: {r}"
    );
    assert_eq!(
        r.field("shard").and_then(Value::as_u64),
        Some(shard),
        "{what}: \"shard\" should be {shard}: {r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_shard_fails_only_its_keys() {
    const DEAD: u64 = 3;
    let u = Unified::start().await;
    let api = u.api();
    let kvs = make_kvs("dead", 300);
    assert_no_failures(
        "put 300 keys through the router",
        &put_all(&api, &[ROUTER], &kvs, 16).await,
    );
    let map = u.agreed_slot_map().await;
    let (dead_kvs, live_kvs): (Vec<_>, Vec<_>) = kvs
        .iter()
        .cloned()
        .partition(|(k, _)| map.key_owner(k) == Some(DEAD));
    assert!(
        !dead_kvs.is_empty() && !live_kvs.is_empty(),
        "300 keys: {} on shard {DEAD}, {} elsewhere",
        dead_kvs.len(),
        live_kvs.len()
    );

    for n in 1..=NODES_PER_SHARD {
        u.kill9(Proc::Node(DEAD, n)).await;
    }

    // Keys of the dead shard: 503 unavailable, within the router's deadline plus a margin.
    let bound = ROUTER_DEADLINE + Duration::from_secs(3);
    let mut took_ms = Vec::new();
    for (k, _) in dead_kvs.iter().take(5) {
        let t = Instant::now();
        let r = api.get(ROUTER, k).await.expect("GET through the router");
        let took = t.elapsed();
        assert_unavailable(&format!("GET {k:?} of dead shard"), &r, k, DEAD);
        assert!(took <= bound, "GET {k:?} answered 503 after {took:?}");
        took_ms.push(took.as_millis());

        let t = Instant::now();
        let r = api
            .put(ROUTER, k, "written-while-dead")
            .await
            .expect("PUT through the router");
        let took = t.elapsed();
        assert_unavailable(&format!("PUT {k:?} of dead shard"), &r, k, DEAD);
        assert!(took <= bound, "PUT {k:?} answered 503 after {took:?}");
        took_ms.push(took.as_millis());
    }
    println!(
        "[figure] dead shard: 503 after {took_ms:?} ms (GET, PUT alternately; router deadline {} ms)",
        ROUTER_DEADLINE.as_millis()
    );

    // Keys of the live shards: every one reads and writes.
    let t = Instant::now();
    assert_no_failures(
        "read keys of live shards while shard 3 is down",
        &check_values(&api, &[ROUTER], &live_kvs, 16).await,
    );
    let live_new: Vec<(String, String)> = live_kvs
        .iter()
        .map(|(k, v)| (k.clone(), format!("{v}-rewritten")))
        .collect();
    assert_no_failures(
        "write keys of live shards while shard 3 is down",
        &put_all(&api, &[ROUTER], &live_new, 16).await,
    );
    assert_no_failures(
        "read rewritten keys of live shards while shard 3 is down",
        &check_values(&api, &[ROUTER], &live_new, 16).await,
    );
    println!(
        "[figure] {} live-shard keys read, rewritten and read again with shard 3 down in {:?}",
        live_kvs.len(),
        t.elapsed()
    );

    // Bring shard 3 back: its keys serve again with their old values (the 503 writes were
    // not applied).
    let t0 = Instant::now();
    for n in 1..=NODES_PER_SHARD {
        u.restart_node(DEAD, n).await;
    }
    let (k0, v0) = dead_kvs[0].clone();
    wait_until_ok(UNIFIED_WAIT, "a key of shard 3 to read again", || async {
        match api.get_value(ROUTER, &k0).await {
            Ok(Some(v)) if v == v0 => Ok(()),
            Ok(other) => Err(format!("value {other:?}")),
            Err(e) => Err(format!("{e:#}")),
        }
    })
    .await;
    println!(
        "[figure] shard 3 restart (3 nodes) -> first read of its key through the router: {} ms",
        t0.elapsed().as_millis()
    );
    let mut expected = dead_kvs.clone();
    expected.extend(live_new);
    assert_no_failures(
        "all 300 keys after shard 3 came back",
        &check_values(&api, &[ROUTER], &expected, 16).await,
    );
    u.assert_running(&all_procs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn router_restart_relearns_the_map() {
    let u = Unified::start().await;
    let api = u.api();
    let kvs = make_kvs("relearn", 100);
    assert_no_failures(
        "put 100 keys through the router",
        &put_all(&api, &[ROUTER], &kvs, 16).await,
    );

    u.kill9(Proc::Router).await;
    assert!(
        api.get(ROUTER, &kvs[0].0).await.is_err(),
        "the killed router still answers"
    );

    let t0 = Instant::now();
    u.restart_router().await;
    let mut i = 0usize;
    let first = try_wait_until(Duration::from_secs(20), || {
        let (k, v) = kvs[i % kvs.len()].clone();
        i += 1;
        let api = api.clone();
        async move {
            match api.get_value(ROUTER, &k).await {
                Ok(Some(got)) if got == v => Some(Instant::now()),
                _ => None,
            }
        }
    })
    .await
    .expect("no successful GET through the restarted router within 20 s");
    let relearn = first.duration_since(t0);
    println!(
        "[figure] router restart -> first successful GET: {} ms",
        relearn.as_millis()
    );
    assert!(
        relearn < Duration::from_secs(10),
        "the restarted router served its first GET after {relearn:?}"
    );
    assert_no_failures(
        "100 keys through the restarted router",
        &check_values(&api, &[ROUTER], &kvs, 16).await,
    );
    wait_until_ok(
        Duration::from_secs(10),
        "the restarted router to see every slot owned and every leader",
        || async {
            let s = u.router_status().await.map_err(|e| format!("{e:#}"))?;
            if s.unowned_slots == 0
                && s.shards.len() as u64 == SHARDS
                && s.shards.iter().all(|x| x.leader.is_some())
            {
                Ok(())
            } else {
                Err(format!("{s:?}"))
            }
        },
    )
    .await;
    u.assert_running(&all_procs());
}
