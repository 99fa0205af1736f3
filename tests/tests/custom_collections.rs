//! Custom collections and the promote with real processes (`scripts/run_unified.sh`): a shard
//! key's data on its shards only (per-shard statistics show it), the errors for a missing or
//! unknown shard key, deleting a shard key; the promote from hash to custom under a writer
//! (no byte moved, every acknowledged key readable, one version bump), refused during a slot
//! move and without a shard's quorum, refused twice, no way back, and with its coordinator
//! killed: once or not at all.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{json, Value};
use unikv_tests::api::{Body, REQUEST_TIMEOUT};
use unikv_tests::collection_calls::{call, catalog_version, kv, shard_key_stats, signal, value};
use unikv_tests::{
    assert_json_error, node_ref, wait_until_ok, Proc, Unified, ROUTER, UNIFIED_WAIT,
};
use unikv_types::catalog::catalog_slot;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn custom_collections_keep_a_shard_keys_data_on_its_shards() {
    let u = Unified::start().await;
    let api = u.api();
    let r = call(
        &api,
        ROUTER,
        Method::PUT,
        "/collections/tenants",
        json!({"sharding": "custom"}),
    )
    .await;
    assert_eq!(r.status, 201, "{r}");
    let put = |q: Vec<(&'static str, String)>| {
        let api = api.clone();
        async move {
            let q: Vec<(&str, &str)> = q.iter().map(|(k, v)| (*k, v.as_str())).collect();
            kv(&api, ROUTER, "put", &q).await
        }
    };
    let s = |v: &str| v.to_string();
    let r = put(vec![
        ("collection", s("tenants")),
        ("key", s("u1")),
        ("val", s("y")),
    ])
    .await;
    assert_json_error("no shard key", &r, 400, "missing_shard_key");
    let r = put(vec![
        ("collection", s("tenants")),
        ("shard_key", s("acme")),
        ("key", s("u1")),
        ("val", s("y")),
    ])
    .await;
    assert_json_error("unknown shard key", &r, 404, "unknown_shard_key");
    let r = put(vec![
        ("key", s("u1")),
        ("val", s("y")),
        ("shard_key", s("acme")),
    ])
    .await;
    assert_json_error("shard key on default", &r, 400, "unexpected_shard_key");

    let r = call(
        &api,
        ROUTER,
        Method::PUT,
        "/collections/tenants/shard_keys/acme",
        json!({"shards": [2, 3]}),
    )
    .await;
    assert_eq!(r.status, 201, "{r}");
    assert_eq!(
        r.field("shard_key").unwrap()["placement"],
        json!({"shards": [2, 3]}),
        "{r}"
    );
    let acme = r.field("shard_key").unwrap()["id"].as_u64().unwrap();
    let r = call(
        &api,
        node_ref(1, 2),
        Method::PUT,
        "/collections/tenants/shard_keys/globex",
        json!({"shard_number": 1}),
    )
    .await;
    assert_eq!(r.status, 201, "{r}");
    // `expected_version` in the query works for shard keys as for collections.
    let r = api
        .request(
            ROUTER,
            Method::PUT,
            "/collections/tenants/shard_keys/late",
            &[("expected_version", "1")],
            Body::Json(json!({"shards": [1]})),
            REQUEST_TIMEOUT,
        )
        .await
        .unwrap();
    assert_json_error("an old version in the query", &r, 409, "version_conflict");
    let r = call(
        &api,
        ROUTER,
        Method::PUT,
        "/collections/tenants/shard_keys/bad",
        json!({"shards": [9]}),
    )
    .await;
    assert_json_error("unknown shard", &r, 404, "unknown_shard");
    let r = call(
        &api,
        ROUTER,
        Method::PUT,
        "/collections/tenants/shard_keys/acme",
        json!({"shards": [1]}),
    )
    .await;
    assert_json_error("moved shard key", &r, 409, "shard_key_exists");
    let r = call(
        &api,
        ROUTER,
        Method::GET,
        "/collections/tenants/shard_keys",
        Value::Null,
    )
    .await;
    let listed: BTreeSet<&str> = r
        .field("shard_keys")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(listed, BTreeSet::from(["acme", "globex"]), "{r}");

    // 200 keys under acme land on shards 2 and 3 only; the same names elsewhere are other keys.
    let keys: Vec<String> = (0..200).map(|i| format!("user-{i}")).collect();
    for k in &keys {
        let r = put(vec![
            ("collection", s("tenants")),
            ("shard_key", s("acme")),
            ("key", k.clone()),
            ("val", format!("acme:{k}")),
        ])
        .await;
        assert!(r.is_ok_true(), "{r}");
    }
    assert!(put(vec![("key", s("user-1")), ("val", s("flat"))])
        .await
        .is_ok_true());
    for k in &keys {
        let q = [
            ("collection", "tenants"),
            ("shard_key", "acme"),
            ("key", k.as_str()),
        ];
        let r = kv(&api, ROUTER, "get", &q).await;
        assert_eq!(
            r.str_field("value"),
            Some(format!("acme:{k}").as_str()),
            "{r}"
        );
        let r = kv(
            &api,
            ROUTER,
            "get",
            &[
                ("collection", "tenants"),
                ("shard_key", "globex"),
                ("key", k.as_str()),
            ],
        )
        .await;
        assert_json_error("globex has none", &r, 404, "not_found");
    }
    assert_eq!(
        value(&api, ROUTER, "user-1", None).await.str_field("value"),
        Some("flat")
    );
    // Nodes follow the seed's rule: shard 1 never serves acme, shards 2 and 3 serve their half.
    let q = [
        ("collection", "tenants"),
        ("shard_key", "acme"),
        ("key", "user-7"),
    ];
    let r = kv(&api, node_ref(1, 1), "get", &q).await;
    assert_json_error("shard 1 and acme", &r, 421, "wrong_shard");
    let mut served = 0;
    for n in [node_ref(2, 1), node_ref(3, 1)] {
        if kv(&api, n, "get", &q).await.status == 200 {
            served += 1;
        }
    }
    assert_eq!(served, 1, "exactly one of shards 2 and 3 holds user-7");
    let stats = wait_until_ok(UNIFIED_WAIT, "per-shard statistics of acme", || async {
        let st = shard_key_stats(&u, acme).await;
        let total: u64 = st.iter().map(|(_, k)| k).sum();
        if total == 200 {
            Ok(st)
        } else {
            Err(format!("{st:?}"))
        }
    })
    .await;
    println!("[figure] acme keys per shard: {stats:?}");
    assert!(
        stats.iter().all(|(s, k)| (*s == 1) == (*k == 0)),
        "acme on shards 2 and 3 only, both used: {stats:?}"
    );

    // The collection's own figures: keys and bytes in all, per shard and per shard key.
    let want_bytes: u64 = keys.iter().map(|k| (k.len() * 2 + 5) as u64).sum();
    let r = call(
        &api,
        ROUTER,
        Method::GET,
        "/collections/tenants",
        Value::Null,
    )
    .await;
    assert_eq!(
        (r.field("keys"), r.field("bytes")),
        (Some(&json!(200)), Some(&json!(want_bytes))),
        "{r}"
    );
    let per_shard = r.field("per_shard").cloned().unwrap_or_default();
    let on = |s: &str| per_shard[s]["keys"].as_u64().unwrap_or(0);
    assert_eq!((on("1"), on("2") + on("3")), (0, 200), "{r}");
    assert!(on("2") > 0 && on("3") > 0, "{r}");
    let acme_json = r
        .field("shard_keys")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "acme")
        .cloned()
        .unwrap();
    assert_eq!(acme_json["keys"], json!(200), "{r}");
    println!(
        "[figure] GET /collections/tenants: keys {} bytes {} per shard {per_shard}",
        200, want_bytes
    );

    // Tags constrain where `shard_number` places a shard key (zone sharding).
    let r = api
        .get_path(
            node_ref(3, 1),
            "/shard/tags",
            &[("shardID", "3"), ("zone", "eu")],
        )
        .await
        .unwrap();
    assert!(r.is_ok(), "{r}");
    let eu = json!({"shard_number": 1, "tags": {"zone": "eu"}});
    let r = wait_until_ok(UNIFIED_WAIT, "shard 3's tag in the router's view", || {
        let (api, eu) = (api.clone(), eu.clone());
        async move {
            let r = call(
                &api,
                ROUTER,
                Method::PUT,
                "/collections/tenants/shard_keys/euro",
                eu,
            )
            .await;
            if r.status == 201 {
                Ok(r)
            } else {
                Err(format!("{r}"))
            }
        }
    })
    .await;
    assert_eq!(
        r.field("shard_key").unwrap()["placement"],
        json!({"shards": [3]}),
        "{r}"
    );
    let r = call(
        &api,
        ROUTER,
        Method::PUT,
        "/collections/tenants/shard_keys/euro2",
        json!({"shard_number": 2, "tags": {"zone": "eu"}}),
    )
    .await;
    assert_json_error("two eu shards", &r, 409, "not_enough_shards");
    let r = call(
        &api,
        ROUTER,
        Method::PUT,
        "/collections/tenants/shard_keys/euro2",
        json!({"shard_number": 1, "tags": ["eu"]}),
    )
    .await;
    assert_json_error("tags not an object", &r, 400, "bad_tags");
    let r = call(
        &api,
        ROUTER,
        Method::PUT,
        "/collections/tenants/shard_keys/euro2",
        json!({"shards": [1], "tags": {"zone": "eu"}}),
    )
    .await;
    assert_json_error("shards and tags", &r, 400, "bad_shards");

    // Its shards cannot be drained while it is there; deleting it drops its data.
    let r = api
        .get_path(node_ref(1, 1), "/removeshard", &[("shardID", "2")])
        .await
        .unwrap();
    assert_json_error("draining acme's shard", &r, 409, "holds_shard_keys");
    let r = call(
        &api,
        ROUTER,
        Method::DELETE,
        "/collections/tenants/shard_keys/acme",
        Value::Null,
    )
    .await;
    assert!(
        r.is_ok_true() && r.field("dropped") == Some(&json!(true)),
        "{r}"
    );
    let r = kv(&api, ROUTER, "get", &q).await;
    assert_json_error("deleted shard key", &r, 404, "unknown_shard_key");
    let st = shard_key_stats(&u, acme).await;
    assert!(
        st.iter().all(|(_, k)| *k == 0),
        "acme's data is gone: {st:?}"
    );
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
    let r = call(
        &api,
        ROUTER,
        Method::POST,
        "/collections/users/sharding/promote_to_custom",
        json!({"default_shard_key": "default"}),
    )
    .await;
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
    let r = call(
        &api,
        ROUTER,
        Method::POST,
        "/collections/users/sharding/promote_to_custom",
        Value::Null,
    )
    .await;
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
    let r = call(
        &api,
        ROUTER,
        Method::POST,
        "/collections/orders/sharding/promote_to_custom",
        Value::Null,
    )
    .await;
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
    let r = call(
        &api,
        ROUTER,
        Method::POST,
        "/collections/orders/sharding/promote_to_custom",
        Value::Null,
    )
    .await;
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
        let r = call(
            &api,
            ROUTER,
            Method::POST,
            "/collections/orders/sharding/promote_to_custom",
            Value::Null,
        )
        .await;
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
    let r = call(
        &api,
        ROUTER,
        Method::POST,
        "/collections/default/sharding/promote_to_custom",
        Value::Null,
    )
    .await;
    assert!(r.is_ok_true(), "{r}");
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
    let r = call(
        &api,
        ROUTER,
        Method::POST,
        "/collections/default/sharding/promote_to_custom",
        Value::Null,
    )
    .await;
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
        for k in &keys {
            let r = value(&api, ROUTER, k, Some(name.as_str())).await;
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
