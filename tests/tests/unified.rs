//! The unified cluster: three shards of three real `unikv-node` processes plus the router,
//! started only through `scripts/run_unified.sh`. Keys spread over the shards, every slot is
//! routable, every node reports the same map, and bad input is rejected with JSON errors
//! (failures — kill -9, a dead shard, a router restart — are in `unified_failover.rs`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use unikv_tests::unified::{all_procs, NODES_PER_SHARD};
use unikv_tests::{
    assert_json_error, check_values, node_ref, put_all, run_concurrent, unique, Body, Method,
    SlotMap, Unified, ROUTER, SHARDS,
};
use unikv_tests::{assert_no_failures, make_kvs};
use unikv_types::{key_slot, SLOT_COUNT};

/// Client-side bound of one router request: the router's deadline plus a margin.
const ROUTER_REPLY_BOUND: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_comes_up_and_spreads_keys() {
    let u = Unified::start().await;
    let api = u.api();
    let kvs = make_kvs("spread", 1000);

    let t0 = Instant::now();
    assert_no_failures(
        "put 1000 keys through the router",
        &put_all(&api, &[ROUTER], &kvs, 16).await,
    );
    let put_time = t0.elapsed();
    assert_no_failures(
        "read 1000 keys back through the router",
        &check_values(&api, &[ROUTER], &kvs, 16).await,
    );
    println!(
        "[figure] 1000 puts through the router, 16 tasks: {put_time:?} ({:.0} puts/s)",
        1000.0 / put_time.as_secs_f64()
    );

    // Ask a node of every shard for every key: its owner answers 200 with the value, the
    // other shards 421 wrong_shard.
    let map = u.agreed_slot_map().await;
    let items: Vec<(usize, String, String)> = kvs
        .iter()
        .enumerate()
        .map(|(i, (k, v))| (i, k.clone(), v.clone()))
        .collect();
    let probe_api = api.clone();
    let answers = run_concurrent(items, 16, move |(i, key, val)| {
        let api = probe_api.clone();
        async move {
            let mut owners = Vec::new();
            let mut problems = Vec::new();
            for s in 1..=SHARDS {
                let node = node_ref(s, 1 + i as u64 % NODES_PER_SHARD);
                match api.get(node, &key).await {
                    Ok(r) if r.status == 200 => {
                        owners.push(s);
                        if r.str_field("value") != Some(val.as_str()) {
                            problems.push(format!("{key:?} on node {node}: expected {val:?}: {r}"));
                        }
                    }
                    Ok(r) if r.status == 421 && r.code() == Some("wrong_shard") => {
                        if r.field("owner").is_none() {
                            problems.push(format!("{key:?} on node {node}: no \"owner\": {r}"));
                        }
                    }
                    Ok(r) => problems.push(format!("{key:?} on node {node}: {r}")),
                    Err(e) => problems.push(format!("{key:?} on node {node}: {e:#}")),
                }
            }
            (key, owners, problems)
        }
    })
    .await;

    let mut per_shard: BTreeMap<u64, usize> = (1..=SHARDS).map(|s| (s, 0)).collect();
    let mut failures = Vec::new();
    for (key, owners, problems) in answers {
        failures.extend(problems);
        let expected = map.key_owner(&key);
        if owners.len() != 1 || Some(owners[0]) != expected {
            failures.push(format!(
                "{key:?} (slot {}): held by shards {owners:?}, /config says {expected:?}",
                key_slot(key.as_bytes())
            ));
            continue;
        }
        *per_shard.entry(owners[0]).or_default() += 1;
    }
    assert_no_failures("ask every shard for every key", &failures);
    println!("[figure] keys per shard (of 1000): {per_shard:?}");
    for (s, n) in &per_shard {
        assert!(
            (250..=420).contains(n),
            "shard {s} holds {n} of 1000 keys, outside 25%..42%: {per_shard:?}"
        );
    }
    u.assert_running(&all_procs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_slot_is_routable() {
    let u = Unified::start().await;
    let api = u.api();

    let mut by_slot: Vec<Option<String>> = vec![None; SLOT_COUNT as usize];
    let mut missing = SLOT_COUNT as usize;
    let mut i = 0u64;
    while missing > 0 {
        assert!(i < 10_000_000, "{missing} slots have no key k0..k{i}");
        let k = format!("k{i}");
        let cell = &mut by_slot[key_slot(k.as_bytes()) as usize];
        if cell.is_none() {
            *cell = Some(k);
            missing -= 1;
        }
        i += 1;
    }
    let kvs: Vec<(String, String)> = by_slot
        .into_iter()
        .enumerate()
        .map(|(slot, k)| {
            let k = k.expect("every slot has a key");
            let v = format!("slot-{slot}-{k}");
            (k, v)
        })
        .collect();

    let t0 = Instant::now();
    assert_no_failures(
        "put one key per slot through the router",
        &put_all(&api, &[ROUTER], &kvs, 32).await,
    );
    let put_time = t0.elapsed();
    let t1 = Instant::now();
    assert_no_failures(
        "read one key per slot back through the router",
        &check_values(&api, &[ROUTER], &kvs, 32).await,
    );
    let get_time = t1.elapsed();
    println!(
        "[figure] 16384 slots: puts {put_time:?} ({:.0}/s), gets {get_time:?} ({:.0}/s), 32 tasks",
        16384.0 / put_time.as_secs_f64(),
        16384.0 / get_time.as_secs_f64()
    );
    if let Ok(s) = u.router_status().await {
        println!(
            "[figure] router counters after 32768 requests: {}",
            s.counters
        );
    }
    u.assert_running(&all_procs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn config_is_the_same_from_every_node() {
    let u = Unified::start().await;
    let t0 = Instant::now();
    let configs = u.agreed_configs().await;
    println!(
        "[figure] all 9 /config views agreed after {:?} (after start)",
        t0.elapsed()
    );

    let versions: BTreeMap<u64, u64> = configs.iter().map(|(n, c)| (*n, c.version)).collect();
    let (_, c) = &configs[0];
    assert!(
        versions.values().all(|v| *v == c.version),
        "nodes disagree on the config version: {versions:?}"
    );

    let ids: Vec<u64> = c.shards.iter().map(|s| s.id).collect();
    assert_eq!(ids, vec![1, 2, 3], "shards in /config: {c:?}");

    // Slot ranges: well-formed, disjoint, and together exactly 0..=16383.
    let mut ranges: Vec<(u16, u16, u64)> = Vec::new();
    for s in &c.shards {
        let mut count = 0usize;
        for [lo, hi] in &s.slots {
            assert!(lo <= hi, "shard {} has range [{lo}, {hi}]", s.id);
            ranges.push((*lo, *hi, s.id));
            count += (*hi - *lo) as usize + 1;
        }
        assert_eq!(count, s.slot_count, "shard {}: slot_count vs ranges", s.id);
        let epoch_slots: usize = s
            .epochs
            .iter()
            .map(|e| {
                assert!(
                    e.lo <= e.hi && (e.lo..=e.hi).all(|slot| s.owns(slot)),
                    "shard {}: epoch range {e:?} outside its slots {:?}",
                    s.id,
                    s.slots
                );
                (e.hi - e.lo) as usize + 1
            })
            .sum();
        assert_eq!(
            epoch_slots, s.slot_count,
            "shard {}: epochs {:?} do not cover its slots {:?}",
            s.id, s.epochs, s.slots
        );
    }
    ranges.sort_unstable();
    let mut next = 0u32;
    for (lo, hi, shard) in &ranges {
        assert_eq!(
            u32::from(*lo),
            next,
            "slot ranges overlap or leave a gap before shard {shard}'s [{lo}, {hi}]: {ranges:?}"
        );
        next = u32::from(*hi) + 1;
    }
    assert_eq!(
        next,
        u32::from(SLOT_COUNT),
        "slot ranges end before 16383: {ranges:?}"
    );
    let map: SlotMap = c.slot_map();
    assert!((0..SLOT_COUNT).all(|slot| map.owner(slot).is_some()));

    // Every shard has a leader, a member of the shard that says it leads.
    for s in &c.shards {
        let leader = s
            .leader
            .as_ref()
            .unwrap_or_else(|| panic!("shard {} has no leader: {s:?}", s.id));
        assert!(
            s.members.iter().any(|m| m.node_id == leader.node_id),
            "shard {}: leader {} is not a member: {:?}",
            s.id,
            leader.node_id,
            s.members
        );
        let st = u
            .raft_status(node_ref(s.id, leader.node_id))
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert!(
            st.role == "leader" && st.shard_id == Some(s.id),
            "shard {}: /config names node {} leader, its /raft/status says {}",
            s.id,
            leader.node_id,
            st.summary()
        );
    }
    println!(
        "[figure] config version {} on all 9 nodes; ranges {:?}",
        c.version, ranges
    );
    u.assert_running(&all_procs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn router_rejects_bad_input_with_json() {
    const MAX_VALUE: usize = 1024;
    let max = MAX_VALUE.to_string();
    let u = Unified::start_with(&[], &["--max_value_bytes", &max]).await;
    let api = u.api();
    let big = "v".repeat(MAX_VALUE + 1);
    let key = unique("bad-input");

    type Case<'a> = (Method, &'a str, Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (Method::GET, "/get", vec![], 400, "missing_param"),
        (
            Method::GET,
            "/put",
            vec![("val", "x")],
            400,
            "missing_param",
        ),
        (
            Method::POST,
            "/put",
            vec![("val", "x")],
            400,
            "missing_param",
        ),
        (
            Method::POST,
            "/append",
            vec![("val", "x")],
            400,
            "missing_param",
        ),
        (Method::DELETE, "/delete", vec![], 400, "missing_param"),
        (Method::GET, "/get", vec![("key", "")], 400, "empty_key"),
        (
            Method::POST,
            "/put",
            vec![("key", ""), ("val", "x")],
            400,
            "empty_key",
        ),
        (
            Method::POST,
            "/append",
            vec![("key", ""), ("val", "x")],
            400,
            "empty_key",
        ),
        (
            Method::DELETE,
            "/delete",
            vec![("key", "")],
            400,
            "empty_key",
        ),
        (
            Method::POST,
            "/put",
            vec![("key", &key), ("val", &big)],
            400,
            "value_too_long",
        ),
        (
            Method::GET,
            "/put",
            vec![("key", &key), ("val", &big)],
            400,
            "value_too_long",
        ),
        (
            Method::POST,
            "/append",
            vec![("key", &key), ("val", &big)],
            400,
            "value_too_long",
        ),
        (Method::GET, "/no-such-endpoint", vec![], 404, "not_found"),
        (
            Method::GET,
            "/delete",
            vec![("key", &key)],
            405,
            "method_not_allowed",
        ),
    ];
    for (method, path, query, status, code) in &cases {
        let what = format!("{method} {path} {query:?}");
        let r = api
            .request(
                ROUTER,
                method.clone(),
                path,
                query,
                Body::Empty,
                ROUTER_REPLY_BOUND,
            )
            .await
            .unwrap_or_else(|e| panic!("{what}: {e:#}"));
        assert_json_error(&what, &r, *status, code);
    }
    println!(
        "[figure] {} bad inputs rejected with JSON errors",
        cases.len()
    );

    // Nothing rejected was written; a missing key is a JSON 404 too; a value of exactly the
    // limit is accepted.
    let r = api.get(ROUTER, &key).await.expect("GET through the router");
    assert_json_error("GET of a never-written key", &r, 404, "not_found");
    let at_limit = "v".repeat(MAX_VALUE);
    let r = api.put(ROUTER, &key, &at_limit).await.expect("PUT");
    assert!(r.is_ok_true(), "PUT of a {MAX_VALUE}-byte value: {r}");
    assert_eq!(
        api.get_value(ROUTER, &key).await.expect("GET").as_deref(),
        Some(at_limit.as_str())
    );
    let r = api.delete(ROUTER, &key).await.expect("DELETE");
    assert!(
        r.is_ok_true() && r.field("deleted") == Some(&Value::Bool(true)),
        "DELETE of an existing key: {r}"
    );
    u.assert_running(&all_procs());
}
