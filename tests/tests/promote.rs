//! The promote (seed 003) with real processes (`scripts/run_unified.sh`): from hash to custom
//! under a writer (no byte moved, every acknowledged key readable, one version bump), refused
//! during a slot move and without a shard's quorum, refused twice, no way back, and with a
//! leader killed at several moments: once or not at all.

use reqwest::Method;
use serde_json::{json, Value};
use unikv_tests::api::{Api, Body, Resp, REQUEST_TIMEOUT};
use unikv_tests::collection_calls::{call, catalog_version, kv, signal, value_once_served};
use unikv_tests::{
    assert_json_error, node_ref, wait_until_ok, Proc, Unified, ROUTER, UNIFIED_WAIT,
};
use unikv_types::catalog::catalog_slot;

/// `POST /collections/{collection}/sharding/promote_to_custom` through the router.
async fn promote(api: &Api, collection: &str, body: Value) -> Resp {
    let path = format!("/collections/{collection}/sharding/promote_to_custom");
    call(api, ROUTER, Method::POST, &path, body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn promote_to_custom_moves_no_byte_and_has_no_way_back() {
    let u = Unified::start().await;
    let api = u.api();
    for c in ["users", "orders"] {
        let r = call(
            &api,
            ROUTER,
            Method::PUT,
            &format!("/collections/{c}"),
            Value::Null,
        )
        .await;
        assert_eq!(r.status, 201, "{r}");
    }
    let moved_bytes = || async {
        let mut total = 0;
        for n in u.all_nodes() {
            total += u
                .rebalance_status(n)
                .await
                .map(|s| s.moved_bytes)
                .unwrap_or(0);
        }
        total
    };
    let moved_before = moved_bytes().await;

    // A writer on `users` the whole time: every acknowledged key must be readable after.
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let writer = {
        let (api, stop, count) = (api.clone(), stop.clone(), count.clone());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0;
            while !stop.load(Relaxed) {
                let k = format!("w-{i}");
                let q = [("collection", "users"), ("key", k.as_str()), ("val", "v")];
                if kv(&api, ROUTER, "put", &q).await.is_ok_true() {
                    acked.push(k);
                    count.fetch_add(1, Relaxed);
                }
                i += 1;
            }
            acked
        })
    };
    let written = |n: usize| {
        let count = count.clone();
        async move {
            wait_until_ok(UNIFIED_WAIT, "the writer to get writes through", || async {
                let c = count.load(Relaxed);
                if c >= n {
                    Ok(c)
                } else {
                    Err(c)
                }
            })
            .await
        }
    };
    let before = written(30).await;
    let version =
        catalog_version(&call(&api, ROUTER, Method::GET, "/collections", Value::Null).await);
    let r = promote(&api, "users", json!({"default_shard_key": "default"})).await;
    assert!(r.is_ok_true(), "{r}");
    assert_eq!(catalog_version(&r), version + 1, "one commit: {r}");
    assert_eq!(r.field("collection").unwrap()["sharding"], "custom", "{r}");
    written(before + 30).await;
    stop.store(true, Relaxed);
    let acked = writer.await.unwrap();
    for k in &acked {
        for sk in [None, Some("default")] {
            let mut q = vec![("collection", "users"), ("key", k.as_str())];
            if let Some(sk) = sk {
                q.push(("shard_key", sk));
            }
            let r = kv(&api, ROUTER, "get", &q).await;
            assert_eq!(
                r.str_field("value"),
                Some("v"),
                "{k} with shard_key {sk:?}: {r}"
            );
        }
    }
    assert_eq!(
        moved_bytes().await,
        moved_before,
        "the promote moved no byte"
    );
    println!(
        "[figure] promote under a writer: {} writes acknowledged, 0 bytes moved",
        acked.len()
    );

    // No second time, no way back; new shard keys can be created.
    let r = promote(&api, "users", Value::Null).await;
    assert_json_error("promote twice", &r, 409, "already_custom");
    let r = call(
        &api,
        ROUTER,
        Method::PUT,
        "/collections/users",
        json!({"sharding": "hash"}),
    )
    .await;
    assert_json_error("back to hash", &r, 409, "one_way");
    let r = call(
        &api,
        ROUTER,
        Method::POST,
        "/collections/users/sharding/promote_to_hash",
        Value::Null,
    )
    .await;
    assert_json_error("back to hash", &r, 409, "one_way");
    let r = call(
        &api,
        ROUTER,
        Method::PUT,
        "/collections/users/shard_keys/eu",
        json!({"shards": [1]}),
    )
    .await;
    assert_eq!(r.status, 201, "{r}");
    let q = [
        ("collection", "users"),
        ("shard_key", "eu"),
        ("key", "w-1"),
        ("val", "eu"),
    ];
    assert!(kv(&api, ROUTER, "put", &q).await.is_ok_true());
    let r = kv(
        &api,
        ROUTER,
        "get",
        &[("collection", "users"), ("key", "w-1")],
    )
    .await;
    assert_eq!(
        r.str_field("value"),
        Some("v"),
        "the default key's w-1 is another key: {r}"
    );

    // Refused while a slot is moving: shard 3 stopped, shard 1 hands it a slot.
    let map = u.agreed_slot_map().await;
    let slot = (0..unikv_types::SLOT_COUNT)
        .find(|s| map.owner(*s) == Some(1))
        .unwrap();
    let three: Vec<Proc> = (1..=3).map(|n| Proc::Node(3, n)).collect();
    for p in &three {
        signal(&u, *p, "-STOP");
    }
    let mover = {
        let api = api.clone();
        let slot = slot.to_string();
        tokio::spawn(async move {
            api.get_path(
                node_ref(1, 1),
                "/moveslot",
                &[("slot", slot.as_str()), ("to", "3")],
            )
            .await
        })
    };
    wait_until_ok(UNIFIED_WAIT, "shard 1 to be handing a slot off", || async {
        for n in u.shard_nodes(1) {
            if let Ok(st) = u.rebalance_status(n).await {
                if st.leader && st.moving > 0 {
                    return Ok(());
                }
            }
        }
        Err("no move in flight yet")
    })
    .await;
    let r = promote(&api, "orders", Value::Null).await;
    assert_json_error("promote during a move", &r, 409, "move_in_progress");
    for p in &three {
        signal(&u, *p, "-CONT");
    }
    let _ = mover.await;
    let r = call(
        &api,
        ROUTER,
        Method::GET,
        "/collections/orders",
        Value::Null,
    )
    .await;
    assert_eq!(
        r.str_field("sharding"),
        Some("hash"),
        "nothing changed: {r}"
    );

    // Refused (503) with a shard's majority down; nothing changes.
    let two = [Proc::Node(2, 1), Proc::Node(2, 2)];
    for p in two {
        signal(&u, p, "-STOP");
    }
    let r = promote(&api, "orders", Value::Null).await;
    for p in two {
        signal(&u, p, "-CONT");
    }
    assert_json_error("promote without shard 2's quorum", &r, 503, "unavailable");
    let r = call(
        &api,
        ROUTER,
        Method::GET,
        "/collections/orders",
        Value::Null,
    )
    .await;
    assert_eq!(
        r.str_field("sharding"),
        Some("hash"),
        "nothing changed: {r}"
    );
    // Once every shard is back, the promote goes through (no fence was left behind).
    let r = wait_until_ok(UNIFIED_WAIT, "the promote of orders", || async {
        let r = promote(&api, "orders", Value::Null).await;
        if r.is_ok_true() {
            Ok(r)
        } else {
            Err(r.to_string())
        }
    })
    .await;
    assert_eq!(r.field("collection").unwrap()["sharding"], "custom", "{r}");

    // `default` is promoted like any hash collection: the seed's calls keep working, and a
    // shard key of its own can then be created and used without naming the collection.
    assert!(api
        .put(ROUTER, "seed-key", "before")
        .await
        .unwrap()
        .is_ok_true());
    // (The balancer may be evening out the slot the test moved: a promote waits for that.)
    let r = wait_until_ok(UNIFIED_WAIT, "the promote of default", || async {
        let r = promote(&api, "default", Value::Null).await;
        match r.code() {
            None if r.is_ok_true() => Ok(r),
            Some("move_in_progress") => Err(r.to_string()),
            _ => panic!("promote of default: {r}"),
        }
    })
    .await;
    assert_eq!(r.field("collection").unwrap()["sharding"], "custom", "{r}");
    assert_eq!(
        api.get_value(ROUTER, "seed-key").await.unwrap().as_deref(),
        Some("before")
    );
    assert!(api
        .put(ROUTER, "seed-key", "after")
        .await
        .unwrap()
        .is_ok_true());
    let r = call(
        &api,
        ROUTER,
        Method::PUT,
        "/collections/default/shard_keys/acme",
        json!({"shards": [1]}),
    )
    .await;
    assert_eq!(r.status, 201, "{r}");
    let w = kv(
        &api,
        ROUTER,
        "put",
        &[
            ("shard_key", "acme"),
            ("key", "seed-key"),
            ("val", "acme's"),
        ],
    )
    .await;
    assert!(w.is_ok_true(), "{w}");
    let got = kv(
        &api,
        ROUTER,
        "get",
        &[("shard_key", "acme"), ("key", "seed-key")],
    )
    .await;
    assert_eq!(got.str_field("value"), Some("acme's"), "{got}");
    assert_eq!(
        api.get_value(ROUTER, "seed-key").await.unwrap().as_deref(),
        Some("after"),
        "the default shard key's value is another"
    );
    let r = promote(&api, "default", Value::Null).await;
    assert_json_error("a second promote of default", &r, 409, "already_custom");
}

/// The promote's coordinator (the leader of the shard holding the catalog) killed with -9
/// right as the promote starts: afterwards it either happened or not — a retry makes it happen
/// exactly once (one version bump) — the data is all there, and no fence is left behind:
/// slot moves work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_promote_whose_coordinator_is_killed_happens_once_or_not_at_all() {
    let u = Unified::start().await;
    let api = u.api();
    let holder = u
        .agreed_slot_map()
        .await
        .owner(catalog_slot())
        .expect("the catalog slot is owned");
    let all: Vec<u64> = (1..=3).collect();
    let other = if holder == 1 { 2 } else { 1 };
    // A leader killed at several moments of a promote: its coordinator (the catalog shard's
    // leader) before the fences, while they are set, around the commit and after it; and
    // the leader of another, fenced, shard. Each time: either it happened or it did not,
    // and a retry finishes it, with exactly one flip of the catalog.
    let moments: [(u64, u64); 6] = [
        (holder, 0),
        (holder, 15),
        (holder, 60),
        (holder, 250),
        (other, 0),
        (other, 40),
    ];
    for (i, (victim_shard, delay_ms)) in moments.into_iter().enumerate() {
        let name = format!("users{i}");
        let path = format!("/collections/{name}");
        let r = call(&api, ROUTER, Method::PUT, &path, Value::Null).await;
        assert_eq!(r.status, 201, "{r}");
        let keys: Vec<String> = (0..20).map(|i| format!("k-{i}")).collect();
        for k in &keys {
            let q = [
                ("collection", name.as_str()),
                ("key", k.as_str()),
                ("val", "v"),
            ];
            assert!(kv(&api, ROUTER, "put", &q).await.is_ok_true());
        }
        let version =
            catalog_version(&call(&api, ROUTER, Method::GET, "/collections", Value::Null).await);
        let victim = u.wait_shard_leader(victim_shard, &all, UNIFIED_WAIT).await;
        let promote_path = format!("{path}/sharding/promote_to_custom");
        let promote = {
            let (api, promote_path) = (api.clone(), promote_path.clone());
            tokio::spawn(async move {
                api.request(
                    ROUTER,
                    Method::POST,
                    &promote_path,
                    &[],
                    Body::Empty,
                    REQUEST_TIMEOUT,
                )
                .await
            })
        };
        // The fault's timing, not a wait for anything.
        tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
        u.kill9(Proc::Node(victim_shard, victim)).await;
        let first = promote.await.unwrap();
        let first = match &first {
            Ok(r) => format!("{} {}", r.status, r.code().unwrap_or("ok")),
            Err(e) => format!("{e:#}"),
        };
        u.restart_node(victim_shard, victim).await;
        let r = wait_until_ok(UNIFIED_WAIT, "the promote to be done", || async {
            let r = call(&api, ROUTER, Method::POST, &promote_path, Value::Null).await;
            match r.code() {
                None if r.is_ok_true() => Ok(r),
                Some("already_custom") => Ok(r),
                _ => Err(r.to_string()),
            }
        })
        .await;
        println!(
            "[figure] shard {victim_shard}'s leader killed {delay_ms} ms into a promote: it answered {first}; the retry {}",
            r.code().unwrap_or("promoted")
        );
        let r = call(&api, ROUTER, Method::GET, "/collections", Value::Null).await;
        assert_eq!(catalog_version(&r), version + 1, "exactly one flip: {r}");
        let r = call(&api, ROUTER, Method::GET, &path, Value::Null).await;
        assert_eq!(r.str_field("sharding"), Some("custom"), "{r}");
        // The victim's shard may still be electing a leader: a read answers 503 until then.
        for k in &keys {
            let r = value_once_served(&api, ROUTER, k, Some(name.as_str()), UNIFIED_WAIT).await;
            assert_eq!(r.str_field("value"), Some("v"), "{k}: {r}");
        }
    }
    // No fence outlives its promote for long: a slot move goes through.
    let map = u.agreed_slot_map().await;
    let from = if holder == 1 { 2 } else { 1 };
    let slot = (0..unikv_types::SLOT_COUNT)
        .find(|s| map.owner(*s) == Some(from))
        .unwrap()
        .to_string();
    let to = holder.to_string();
    wait_until_ok(UNIFIED_WAIT, "a slot move after the promote", || async {
        match api
            .get_path(
                node_ref(from, 1),
                "/moveslot",
                &[("slot", &slot), ("to", &to)],
            )
            .await
        {
            Ok(r) if r.is_ok_true() => Ok(()),
            Ok(r) => Err(r.to_string()),
            Err(e) => Err(format!("{e:#}")),
        }
    })
    .await;
}
