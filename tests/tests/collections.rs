//! Collections with real processes (`scripts/run_unified.sh`, 3 shards × 3 nodes + router):
//! the catalog calls through the router and through any node, point calls in a collection, the
//! same key in two collections, name validation, optimistic concurrency between two admins,
//! delete (the data is gone and the name can be used again, with a new id), and a catalog that
//! survives kill -9 of every process and the draining of the shard that held it.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{json, Value};
use unikv_tests::api::{Api, Body, Resp, REQUEST_TIMEOUT};
use unikv_tests::reshard_checks::{assert_script_ok, even_split, BALANCE_TIMEOUT, STATUS_POLL};
use unikv_tests::{
    assert_json_error, node_ref, wait_until_ok, Proc, Unified, ROUTER, UNIFIED_WAIT,
};
use unikv_types::catalog::catalog_slot;

async fn call(api: &Api, node: u64, method: Method, path: &str, body: Value) -> Resp {
    let body = if body.is_null() {
        Body::Empty
    } else {
        Body::Json(body)
    };
    api.request(node, method.clone(), path, &[], body, REQUEST_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{method} {path} on {node}: {e:#}"))
}

async fn kv(api: &Api, node: u64, op: &str, q: &[(&str, &str)]) -> Resp {
    let method = if op == "delete" {
        Method::DELETE
    } else {
        Method::POST
    };
    api.request(
        node,
        method,
        &format!("/{op}"),
        q,
        Body::Empty,
        REQUEST_TIMEOUT,
    )
    .await
    .unwrap_or_else(|e| panic!("/{op} {q:?} on {node}: {e:#}"))
}

async fn value(api: &Api, node: u64, key: &str, collection: Option<&str>) -> Resp {
    let mut q = vec![("key", key)];
    if let Some(c) = collection {
        q.push(("collection", c));
    }
    kv(api, node, "get", &q).await
}

fn catalog_version(r: &Resp) -> u64 {
    r.field("version")
        .or_else(|| r.field("catalog_version"))
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no catalog version in {r}"))
}

fn names(r: &Resp) -> BTreeSet<String> {
    r.field("collections")
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("no collections in {r}"))
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

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
        "/collections/events",
        json!({"sharding": "range"}),
    )
    .await;
    assert_json_error("range for now", &r, 501, "not_implemented");

    // Listed the same through the router and every node, `default` included.
    let want: BTreeSet<String> = ["default", "users"].map(String::from).into();
    for n in std::iter::once(ROUTER).chain(u.all_nodes()) {
        let r = call(&api, n, Method::GET, "/collections", Value::Null).await;
        assert!(r.is_ok(), "node {n}: {r}");
        assert_eq!(names(&r), want, "node {n}: {r}");
        assert_eq!(catalog_version(&r), v1, "node {n}");
    }
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

fn signal(u: &Unified, p: Proc, sig: &str) {
    let pid = u.pid(p).unwrap_or_else(|e| panic!("pid of {p}: {e:#}"));
    assert!(
        u.is_ours(pid),
        "{p} (pid {pid}) is not a process this test started"
    );
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

/// Keys and bytes of keyspace `ks` that each shard reports storing (`/stats` of its node 1).
async fn shard_key_stats(u: &Unified, ks: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for shard in u.shard_ids() {
        let r = u
            .api()
            .get_path(node_ref(shard, 1), "/stats", &[])
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        let own = r
            .field("shards")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().find(|s| s["id"] == json!(shard)).cloned())
            .unwrap_or_else(|| panic!("shard {shard} in its own /stats: {r}"));
        let keys = own["shard_keys"]
            .as_array()
            .unwrap_or_else(|| panic!("no shard_keys in {own}"))
            .iter()
            .find(|k| k["keyspace"] == json!(ks))
            .map_or(0, |k| k["keys"].as_u64().unwrap_or(0));
        out.push((shard, keys));
    }
    out
}

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
}

/// The promote's coordinator (the leader of the shard holding the catalog) killed with -9
/// right as the promote starts: afterwards it either happened or not — a retry makes it happen
/// exactly once (one version bump) — the data is all there, and no fence is left behind:
/// slot moves work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_promote_whose_coordinator_is_killed_happens_once_or_not_at_all() {
    let u = Unified::start().await;
    let api = u.api();
    let r = call(&api, ROUTER, Method::PUT, "/collections/users", Value::Null).await;
    assert_eq!(r.status, 201, "{r}");
    let keys: Vec<String> = (0..40).map(|i| format!("k-{i}")).collect();
    for k in &keys {
        let q = [("collection", "users"), ("key", k.as_str()), ("val", "v")];
        assert!(kv(&api, ROUTER, "put", &q).await.is_ok_true());
    }
    let version =
        catalog_version(&call(&api, ROUTER, Method::GET, "/collections", Value::Null).await);
    let holder = u
        .agreed_slot_map()
        .await
        .owner(catalog_slot())
        .expect("the catalog slot is owned");
    let all: Vec<u64> = (1..=3).collect();
    let leader = u.wait_shard_leader(holder, &all, UNIFIED_WAIT).await;
    let promote = {
        let api = api.clone();
        tokio::spawn(async move {
            api.request(
                ROUTER,
                Method::POST,
                "/collections/users/sharding/promote_to_custom",
                &[],
                Body::Empty,
                REQUEST_TIMEOUT,
            )
            .await
        })
    };
    u.kill9(Proc::Node(holder, leader)).await;
    let first = promote.await.unwrap();
    println!("[figure] the promote while its coordinator was killed answered {first:?}");
    u.restart_node(holder, leader).await;
    let r = wait_until_ok(UNIFIED_WAIT, "the promote to be done", || async {
        let r = call(
            &api,
            ROUTER,
            Method::POST,
            "/collections/users/sharding/promote_to_custom",
            Value::Null,
        )
        .await;
        match r.code() {
            None if r.is_ok_true() => Ok(r),
            Some("already_custom") => Ok(r),
            _ => Err(r.to_string()),
        }
    })
    .await;
    println!("[figure] then: {r}");
    let r = call(&api, ROUTER, Method::GET, "/collections", Value::Null).await;
    assert_eq!(catalog_version(&r), version + 1, "exactly one flip: {r}");
    let r = call(&api, ROUTER, Method::GET, "/collections/users", Value::Null).await;
    assert_eq!(r.str_field("sharding"), Some("custom"), "{r}");
    for k in &keys {
        let r = value(&api, ROUTER, k, Some("users")).await;
        assert_eq!(r.str_field("value"), Some("v"), "{k}: {r}");
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
