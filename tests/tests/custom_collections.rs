//! Custom collections with real processes (`scripts/run_unified.sh`): a shard key's data on
//! its shards only (per-shard statistics and `GET /collections/{c}` show it), the errors for
//! a missing or unknown shard key, placement by tags, a shard key's part moving off a shard
//! being drained under a writer, and deleting a shard key.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{json, Value};
use unikv_tests::api::{Body, REQUEST_TIMEOUT};
use unikv_tests::collection_calls::{call, kv, shard_key_stats, value};
use unikv_tests::{assert_json_error, node_ref, wait_until_ok, Unified, ROUTER, UNIFIED_WAIT};

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
    // Append and delete work under a shard key too (the key is gone again after).
    let extra = |val: Option<&'static str>| {
        let mut q = vec![
            ("collection", "tenants"),
            ("shard_key", "acme"),
            ("key", "extra"),
        ];
        q.extend(val.map(|v| ("val", v)));
        q
    };
    assert!(kv(&api, ROUTER, "put", &extra(Some("a")))
        .await
        .is_ok_true());
    let r = kv(&api, ROUTER, "append", &extra(Some("+b"))).await;
    assert_eq!(r.field("previous"), Some(&json!("a")), "{r}");
    let r = kv(&api, ROUTER, "get", &extra(None)).await;
    assert_eq!(r.str_field("value"), Some("a+b"), "{r}");
    let r = kv(&api, ROUTER, "delete", &extra(None)).await;
    assert_eq!(r.field("deleted"), Some(&json!(true)), "{r}");
    let r = kv(&api, ROUTER, "get", &extra(None)).await;
    assert_json_error("a deleted key under acme", &r, 404, "not_found");
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

    // Draining one of acme's shards moves its part to the shard acme is not on yet, under a
    // writer: shard 1 takes shard 2's place (the same buckets), no acknowledged write lost.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (api, stop) = (api.clone(), stop.clone());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let k = format!("late-{i}");
                i += 1;
                let q = [
                    ("collection", "tenants"),
                    ("shard_key", "acme"),
                    ("key", k.as_str()),
                    ("val", "w"),
                ];
                if kv(&api, ROUTER, "put", &q).await.is_ok_true() {
                    acked.push(k);
                }
            }
            (acked, i)
        })
    };
    let r = api
        .get_path(node_ref(1, 1), "/removeshard", &[("shardID", "2")])
        .await
        .unwrap();
    assert!(r.is_ok_true(), "draining one of acme's shards: {r}");
    let placed = wait_until_ok(
        std::time::Duration::from_secs(120),
        "acme's part on shard 2 moved to shard 1 and shard 2 drained",
        || async {
            let r = call(
                &api,
                ROUTER,
                Method::GET,
                "/collections/tenants/shard_keys",
                Value::Null,
            )
            .await;
            let acme = r
                .field("shard_keys")
                .and_then(Value::as_array)
                .and_then(|a| a.iter().find(|k| k["name"] == "acme").cloned())
                .unwrap_or_default();
            let st = api
                .get_path(node_ref(2, 1), "/rebalance/status", &[])
                .await
                .map_err(|e| format!("{e:#}"))?;
            match (&acme["placement"], st.str_field("state")) {
                (p, Some("inactive")) if *p == json!({"shards": [1, 3]}) => Ok(p.clone()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acked, tried) = writer.await.unwrap();
    println!("[figure] acme after draining shard 2: {placed}; {} of {tried} writes during the move acknowledged", acked.len());
    for k in keys.iter().chain(acked.iter()) {
        let q = [
            ("collection", "tenants"),
            ("shard_key", "acme"),
            ("key", k.as_str()),
        ];
        let r = kv(&api, ROUTER, "get", &q).await;
        let want = if k.starts_with("late-") {
            "w".to_string()
        } else {
            format!("acme:{k}")
        };
        assert_eq!(
            r.str_field("value"),
            Some(want.as_str()),
            "{k} after the move: {r}"
        );
    }
    let total = (keys.len() + acked.len()) as u64;
    let stats = wait_until_ok(
        UNIFIED_WAIT,
        "acme's keys on shards 1 and 3 only",
        || async {
            let st = shard_key_stats(&u, acme).await;
            let on = |s| st.iter().find(|(x, _)| *x == s).map_or(0, |(_, k)| *k);
            if on(2) == 0 && on(1) > 0 && on(3) > 0 && on(1) + on(3) >= total {
                Ok(st)
            } else {
                Err(format!("{st:?}"))
            }
        },
    )
    .await;
    println!("[figure] acme keys per shard after the drain: {stats:?}");
    // Shard 1 now serves the moved buckets; shard 2 refuses them, naming where they went.
    let r = kv(&api, node_ref(2, 1), "get", &q).await;
    assert_json_error("shard 2 after acme moved off it", &r, 421, "wrong_shard");
    // Acme is now on every active shard: draining another of its shards has nowhere to go.
    let r = api
        .get_path(node_ref(1, 1), "/removeshard", &[("shardID", "3")])
        .await
        .unwrap();
    assert_json_error("draining acme's last spare", &r, 409, "holds_shard_keys");
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
