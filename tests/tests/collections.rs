//! Collections with real processes (`scripts/run_unified.sh`, 3 shards × 3 nodes + router):
//! the catalog calls through the router and through any node, point calls in a collection, the
//! same key in two collections, name validation, optimistic concurrency between two admins,
//! delete (the data is gone and the name can be used again, with a new id), and a catalog that
//! survives kill -9 of every process and the draining of the shard that held it. Custom
//! collections and the promote: `custom_collections.rs`.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{json, Value};
use unikv_tests::collection_calls::{call, catalog_version, kv, names, value};
use unikv_tests::reshard_checks::{assert_script_ok, even_split, BALANCE_TIMEOUT, STATUS_POLL};
use unikv_tests::{
    assert_json_error, node_ref, wait_until_ok, Proc, Unified, ROUTER, UNIFIED_WAIT,
};
use unikv_types::catalog::catalog_slot;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn collections_through_the_router_and_any_node() {
    let u = Unified::start().await;
    let api = u.api();
    let some_node = node_ref(2, 2);

    // Create (201), again alike (200, nothing changes), and refusals.
    let r = call(
        &api,
        ROUTER,
        Method::PUT,
        "/collections/users",
        json!({"sharding": "hash"}),
    )
    .await;
    assert_eq!(r.status, 201, "{r}");
    assert_eq!(r.field("created"), Some(&json!(true)), "{r}");
    let users_id = r.field("collection").unwrap()["id"].as_u64().unwrap();
    let v1 = catalog_version(&r);
    let r = call(
        &api,
        some_node,
        Method::PUT,
        "/collections/users",
        json!({"sharding": "hash"}),
    )
    .await;
    assert_eq!(
        (r.status, r.field("created")),
        (200, Some(&json!(false))),
        "{r}"
    );
    assert_eq!(
        catalog_version(&r),
        v1,
        "an idempotent create changes nothing"
    );
    let r = call(
        &api,
        ROUTER,
        Method::PUT,
        "/collections/users",
        json!({"sharding": "range"}),
    )
    .await;
    assert_json_error("users as range", &r, 409, "collection_exists");
    for bad in ["_system", "a..b", "sp%20ace", &"x".repeat(129)] {
        let r = call(
            &api,
            ROUTER,
            Method::PUT,
            &format!("/collections/{bad}"),
            Value::Null,
        )
        .await;
        assert_json_error(bad, &r, 400, "bad_name");
    }
    let r = call(
        &api,
        ROUTER,
        Method::PUT,
        "/collections/users2",
        json!({"sharding": "sideways"}),
    )
    .await;
    assert_json_error("bad sharding", &r, 400, "bad_sharding");
    let r = call(
        &api,
        ROUTER,
        Method::PUT,
        "/collections/users",
        json!({"sharding": "range"}),
    )
    .await;
    assert_json_error("users as range", &r, 409, "collection_exists");

    // Listed the same through the router and every node, `default` included.
    let want: BTreeSet<String> = ["default", "users"].map(String::from).into();
    for n in std::iter::once(ROUTER).chain(u.all_nodes()) {
        let r = call(&api, n, Method::GET, "/collections", Value::Null).await;
        assert!(r.is_ok(), "node {n}: {r}");
        assert_eq!(names(&r), want, "node {n}: {r}");
        assert_eq!(catalog_version(&r), v1, "node {n}");
    }
    // The cluster gossips sealed (the catalog version above came by gossip): every node
    // accepted authentic datagrams and dropped none as forged.
    let r = call(&api, some_node, Method::GET, "/raft/status", Value::Null).await;
    let g = r.field("gossip_datagrams").cloned().unwrap_or_default();
    assert!(
        g["accepted"].as_u64().unwrap_or(0) > 0 && g["forged"] == json!(0),
        "gossip_datagrams: {r}"
    );
    // `/config` shows the catalog the node last read.
    let r = call(&api, some_node, Method::GET, "/config", Value::Null).await;
    let catalog = r.field("catalog").cloned().unwrap_or_default();
    assert_eq!(
        (&catalog["version"], &catalog["collections"]),
        (&json!(v1), &json!(2)),
        "/config: {r}"
    );
    let r = call(
        &api,
        some_node,
        Method::GET,
        "/collections/users",
        Value::Null,
    )
    .await;
    assert_eq!(
        (
            r.str_field("sharding"),
            r.field("id").and_then(Value::as_u64)
        ),
        (Some("hash"), Some(users_id)),
        "{r}"
    );
    let r = call(&api, ROUTER, Method::GET, "/collections/nope", Value::Null).await;
    assert_json_error("GET unknown", &r, 404, "unknown_collection");

    // The same key in two collections holds two values; every point call takes collection=.
    for (key, n) in [("k1", 0), ("k2", 1), ("{tag}k3", 2)] {
        let flat = format!("flat-{n}");
        let theirs = format!("users-{n}");
        assert!(kv(&api, ROUTER, "put", &[("key", key), ("val", &flat)])
            .await
            .is_ok_true());
        let r = kv(
            &api,
            ROUTER,
            "put",
            &[("key", key), ("val", &theirs), ("collection", "users")],
        )
        .await;
        assert!(r.is_ok_true(), "{r}");
        let r = kv(
            &api,
            ROUTER,
            "append",
            &[("key", key), ("val", "+"), ("collection", "users")],
        )
        .await;
        assert_eq!(r.field("previous"), Some(&json!(theirs)), "{r}");
        let r = value(&api, ROUTER, key, None).await;
        assert_eq!(r.str_field("value"), Some(flat.as_str()), "{r}");
        let r = value(&api, ROUTER, key, Some("users")).await;
        assert_eq!(
            r.str_field("value"),
            Some(format!("{theirs}+").as_str()),
            "{r}"
        );
        let r = value(&api, ROUTER, key, Some("default")).await;
        assert_eq!(
            r.str_field("value"),
            Some(flat.as_str()),
            "collection=default: {r}"
        );
        // On nodes: the owner serves, the others answer wrong_shard (the seed's rule).
        let mut served = 0;
        for node in u.all_nodes() {
            let r = value(&api, node, key, Some("users")).await;
            match r.status {
                200 => {
                    assert_eq!(
                        r.str_field("value"),
                        Some(format!("{theirs}+").as_str()),
                        "{r}"
                    );
                    served += 1;
                }
                421 => assert_eq!(r.code(), Some("wrong_shard"), "{r}"),
                _ => panic!("node {node}: {r}"),
            }
        }
        assert_eq!(served, 3, "the owner shard's three nodes serve {key}");
    }
    let r = kv(
        &api,
        ROUTER,
        "delete",
        &[("key", "k1"), ("collection", "users")],
    )
    .await;
    assert_eq!(r.field("deleted"), Some(&json!(true)), "{r}");
    assert_json_error(
        "deleted in users",
        &value(&api, ROUTER, "k1", Some("users")).await,
        404,
        "not_found",
    );
    // Each collection's own keys and bytes (users: k2 and {tag}k3, values "users-N+";
    // default: the three flat keys, values "flat-N"), from every shard.
    for (name, want) in [("users", (2, 10 + 15)), ("default", (3, 8 + 8 + 13))] {
        wait_until_ok(UNIFIED_WAIT, "a collection's keys and bytes", || {
            let api = api.clone();
            async move {
                let path = format!("/collections/{name}");
                let r = call(&api, ROUTER, Method::GET, &path, Value::Null).await;
                let got = (
                    r.field("keys").and_then(Value::as_u64),
                    r.field("bytes").and_then(Value::as_u64),
                );
                if got == (Some(want.0), Some(want.1)) && r.field("unanswered_shards").is_none() {
                    Ok(())
                } else {
                    Err(format!("{name}: want {want:?}: {r}"))
                }
            }
        })
        .await;
    }
    assert!(
        value(&api, ROUTER, "k1", None).await.is_ok(),
        "default's k1 stays"
    );
    for q in [
        vec![("key", "k1"), ("collection", "nope")],
        vec![("key", "k1"), ("val", "x"), ("collection", "nope")],
    ] {
        let op = if q.len() == 3 { "put" } else { "get" };
        assert_json_error(
            "unknown collection",
            &kv(&api, ROUTER, op, &q).await,
            404,
            "unknown_collection",
        );
        assert_json_error(
            "unknown on a node",
            &kv(&api, some_node, op, &q).await,
            404,
            "unknown_collection",
        );
    }
    let r = kv(
        &api,
        ROUTER,
        "put",
        &[("key", "k"), ("val", "x"), ("collection", "_catalog")],
    )
    .await;
    assert_json_error("system collection", &r, 400, "bad_name");

    // A collection created through one node is usable through every other at once.
    let creator = node_ref(3, 1);
    let r = call(
        &api,
        creator,
        Method::PUT,
        "/collections/orders",
        Value::Null,
    )
    .await;
    assert_eq!(r.status, 201, "{r}");
    let r = kv(
        &api,
        ROUTER,
        "put",
        &[("key", "o1"), ("val", "x"), ("collection", "orders")],
    )
    .await;
    assert!(r.is_ok_true(), "right after the create: {r}");

    // Two admins change the catalog from the same version: exactly one wins.
    let at = catalog_version(&call(&api, ROUTER, Method::GET, "/collections", Value::Null).await);
    let ev = at.to_string();
    let (a, b) = tokio::join!(
        call(
            &api,
            node_ref(1, 1),
            Method::PUT,
            "/collections/race-a",
            json!({"expected_version": ev})
        ),
        call(
            &api,
            node_ref(2, 1),
            Method::PUT,
            "/collections/race-b",
            json!({"expected_version": ev})
        ),
    );
    let statuses = BTreeSet::from([a.status, b.status]);
    assert_eq!(statuses, BTreeSet::from([201, 409]), "a: {a}\nb: {b}");
    let loser = if a.status == 409 { &a } else { &b };
    assert_json_error("the racing loser", loser, 409, "version_conflict");
    let r = call(&api, ROUTER, Method::GET, "/collections", Value::Null).await;
    assert_eq!(catalog_version(&r), at + 1, "{r}");
    assert_eq!(
        names(&r).iter().filter(|n| n.starts_with("race-")).count(),
        1,
        "{r}"
    );

    // Delete: `default` cannot go; a collection goes with its data, everywhere.
    let r = call(
        &api,
        ROUTER,
        Method::DELETE,
        "/collections/default",
        Value::Null,
    )
    .await;
    assert_json_error("delete default", &r, 409, "default_collection");
    let r = call(
        &api,
        some_node,
        Method::DELETE,
        "/collections/users",
        Value::Null,
    )
    .await;
    assert!(r.is_ok_true(), "{r}");
    assert_eq!(
        r.field("dropped"),
        Some(&json!(true)),
        "every shard dropped it: {r}"
    );
    for n in std::iter::once(ROUTER).chain(u.all_nodes()) {
        let r = value(&api, n, "k2", Some("users")).await;
        assert!(
            r.code() == Some("unknown_collection") || r.code() == Some("wrong_shard"),
            "node {n} after the delete: {r}"
        );
    }
    let r = call(&api, ROUTER, Method::GET, "/collections", Value::Null).await;
    assert!(!names(&r).contains("users"), "{r}");
    assert_eq!(r.field("deleting"), Some(&json!([])), "{r}");
    // The name can be used again: a new, empty collection with a new id.
    let r = call(&api, ROUTER, Method::PUT, "/collections/users", Value::Null).await;
    assert_eq!(r.status, 201, "{r}");
    let new_id = r.field("collection").unwrap()["id"].as_u64().unwrap();
    assert!(
        new_id > users_id,
        "ids are never reused: {new_id} after {users_id}"
    );
    for n in std::iter::once(ROUTER).chain(u.all_nodes()) {
        let r = value(&api, n, "k2", Some("users")).await;
        assert!(
            r.code() == Some("not_found") || r.code() == Some("wrong_shard"),
            "node {n}, the new users: {r}"
        );
    }
    assert_eq!(
        value(&api, ROUTER, "k2", None).await.str_field("value"),
        Some("flat-1"),
        "default is untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_catalog_survives_kill_9_of_everything_and_draining_its_shard() {
    let u = Unified::start().await;
    let api = u.api();
    for name in ["alpha", "beta.gamma"] {
        let r = call(
            &api,
            ROUTER,
            Method::PUT,
            &format!("/collections/{name}"),
            Value::Null,
        )
        .await;
        assert_eq!(r.status, 201, "{r}");
    }
    let keys: Vec<String> = (0..60).map(|i| format!("key-{i}")).collect();
    for k in &keys {
        for c in ["alpha", "beta.gamma"] {
            let r = kv(
                &api,
                ROUTER,
                "put",
                &[("key", k), ("val", &format!("{c}:{k}")), ("collection", c)],
            )
            .await;
            assert!(r.is_ok_true(), "{r}");
        }
    }
    let check = |when: &'static str| {
        let (api, keys) = (api.clone(), keys.clone());
        async move {
            for k in &keys {
                for c in ["alpha", "beta.gamma"] {
                    let r = value(&api, ROUTER, k, Some(c)).await;
                    assert_eq!(
                        r.str_field("value"),
                        Some(format!("{c}:{k}").as_str()),
                        "{when}: {r}"
                    );
                }
            }
        }
    };
    let version =
        catalog_version(&call(&api, ROUTER, Method::GET, "/collections", Value::Null).await);

    // kill -9 of every process, then a restart.
    for p in u.procs() {
        u.kill9(p).await;
    }
    for p in u.procs() {
        match p {
            Proc::Node(s, n) => u.restart_node(s, n).await,
            Proc::Router => u.restart_router().await,
        }
    }
    let r = wait_until_ok(
        UNIFIED_WAIT,
        "the catalog after restarting everything",
        || async {
            match api.get_path(ROUTER, "/collections", &[]).await {
                Ok(r) if r.is_ok() => Ok(r),
                Ok(r) => Err(r.to_string()),
                Err(e) => Err(format!("{e:#}")),
            }
        },
    )
    .await;
    assert_eq!(catalog_version(&r), version, "{r}");
    assert_eq!(
        names(&r),
        ["default", "alpha", "beta.gamma"].map(String::from).into(),
        "{r}"
    );
    check("after kill -9 of everything").await;

    // Drain the shard holding the catalog: the catalog moves with its slot and keeps working.
    let map = u.agreed_slot_map().await;
    let holder = map
        .owner(catalog_slot())
        .expect("the catalog slot is owned");
    let answer = u
        .remove_shard(holder)
        .await
        .unwrap_or_else(|e| panic!("removeshard {holder}: {e:#}"));
    assert_script_ok("removeshard", &answer);
    let rest: Vec<u64> = u.shard_ids().into_iter().filter(|s| *s != holder).collect();
    let mut expected = even_split(&rest);
    expected.insert(holder, 0);
    u.wait_balanced(&expected, STATUS_POLL, BALANCE_TIMEOUT)
        .await;
    let now = u.agreed_slot_map().await.owner(catalog_slot());
    assert!(
        now.is_some_and(|s| s != holder),
        "the catalog slot is on shard {now:?}"
    );
    let r = call(
        &api,
        node_ref(holder, 1),
        Method::PUT,
        "/collections/after-drain",
        Value::Null,
    )
    .await;
    assert_eq!(
        r.status, 201,
        "a change through a node of the drained shard: {r}"
    );
    assert_eq!(catalog_version(&r), version + 1, "{r}");
    for n in std::iter::once(ROUTER).chain(u.all_nodes()) {
        let r = call(&api, n, Method::GET, "/collections", Value::Null).await;
        assert!(names(&r).contains("after-drain"), "node {n}: {r}");
    }
    check("after draining the catalog's shard").await;
}
