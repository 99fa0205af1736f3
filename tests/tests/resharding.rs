//! Online resharding with real processes, started only through `scripts/run_unified.sh`: a
//! fourth shard joins a 3x3 cluster under writes and appends (also with the source's or the
//! target's leader killed mid-move), a shard drains under load and is then unregistered for
//! good, and slots that do not move never see an error (refused registry calls:
//! `registry_refusals.rs`).
//!
//! After every change the tests check that nothing acknowledged was lost, every appended
//! token is there exactly once, each shard owns its fair share in every node's `/config`, and
//! the data of moved slots is gone from the shards that gave them away (the traffic and those
//! checks live in `unikv_tests::reshard_checks`).

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;
use unikv_tests::api::REQUEST_TIMEOUT;
use unikv_tests::load::{start_hammer, Outcome};
use unikv_tests::reshard_checks::*;
use unikv_tests::unified::shard_of;
use unikv_tests::unified::NODES_PER_SHARD;
use unikv_tests::{
    assert_json_error, check_values, node_ref, put_all, wait_until_ok, Body, Method, Proc, Unified,
    ROUTER, UNIFIED_WAIT,
};
use unikv_tests::{assert_no_failures, make_kvs};
use unikv_types::{key_slot, SLOT_COUNT};

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
/// [`DOWN_FOR`] later; then every final check of the plain growth test. `node_args`: e.g.
/// `--move_batch_slots 16`, so the kill lands with a batch of slots in flight (a new source
/// leader resumes each frozen slot alone; a target leader may die with part of a batch
/// committed).
async fn add_shard_killing_a_leader(victim: Victim, node_args: &[&str]) {
    let u = Unified::start_with(node_args, &[]).await;
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
    // frozen, or copies staged); if no poll catches that within
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
            Victim::Source => (st.copying + st.moving > 0, st.moved_slots > 0),
            // Slots sent whole (batches) are never staged: part-filled is in flight.
            Victim::Target => (st.staging > 0 || (own > 0 && own < QUARTER), own > 0),
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
         it had moved {} slots, was copying {}, moving {}, staging {}, queued {}, \
         owned {own}",
        seen.moved_slots, seen.copying, seen.moving, seen.staging, seen.queued
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
    add_shard_killing_a_leader(Victim::Source, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn target_leader_killed_mid_move() {
    add_shard_killing_a_leader(Victim::Target, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn source_leader_killed_mid_batch() {
    add_shard_killing_a_leader(Victim::Source, &["--move_batch_slots", "16"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn target_leader_killed_mid_batch() {
    add_shard_killing_a_leader(Victim::Target, &["--move_batch_slots", "16"]).await;
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

    // Unregistered for good (seed 000's registry removal): refused for an active shard,
    // done for the drained one; then no view lists it and it cannot be added back.
    let api = u.api();
    let delete = |id: &'static str| {
        let api = api.clone();
        async move {
            let path = format!("/shards/{id}");
            api.request(
                node_ref(1, 1),
                Method::DELETE,
                &path,
                &[],
                Body::Empty,
                REQUEST_TIMEOUT,
            )
            .await
            .unwrap_or_else(|e| panic!("DELETE {path}: {e:#}"))
        }
    };
    assert_json_error(
        "DELETE an active shard",
        &delete("3").await,
        409,
        "shard_active",
    );
    assert_json_error(
        "DELETE an unknown shard",
        &delete("7").await,
        404,
        "unknown_shard",
    );
    assert_json_error("DELETE shard zero", &delete("0").await, 400, "bad_request");
    let r = delete("2").await;
    assert!(
        r.is_ok_true() && r.str_field("state") == Some("removed"),
        "{r}"
    );
    let others: Vec<u64> = nodes
        .iter()
        .copied()
        .filter(|n| shard_of(*n) != DRAINED)
        .collect();
    wait_until_ok(
        CONFIG_STATE_WAIT,
        "shard 2 gone from the router's and the other nodes' views",
        || async {
            for (n, c) in u.configs(&others).await.map_err(|e| format!("{e:#}"))? {
                if let Some(s) = c.shard(DRAINED) {
                    return Err(format!("node {n} still lists shard 2: {s:?}"));
                }
            }
            let st = u.router_status().await.map_err(|e| format!("{e:#}"))?;
            if st.shards.iter().any(|s| s.id == DRAINED) {
                return Err("the router still lists shard 2".into());
            }
            Ok(())
        },
    )
    .await;
    for n in u.shard_nodes(DRAINED) {
        let st = u
            .rebalance_status(n)
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(st.state, "removed", "node {n}'s own state");
    }
    let again = delete("2").await;
    assert_json_error(
        "DELETE a removed shard from another shard",
        &again,
        404,
        "unknown_shard",
    );
    let addr = format!("127.0.0.1:{}", u.ports().http(DRAINED, 1));
    let r = api
        .get_path(
            node_ref(1, 1),
            "/addshard",
            &[("shardID", "2"), ("shardAddress", &addr)],
        )
        .await
        .unwrap_or_else(|e| panic!("/addshard 2: {e:#}"));
    assert_json_error("adding a removed shard back", &r, 409, "shard_removed");
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
