//! Registry calls that must be refused, on real processes, with the JSON error naming why and
//! nothing changed: `/addshard` of a shard that exists, of an address no member has, of a
//! server that is not part of the cluster (never contacted over HTTP: no request forgery
//! through the node), of a malformed address or a node of another shard; `/removeshard` of an
//! unknown or the last active shard; `/moveslot` out of range or to a shard that is not active;
//! and tags, which are accepted and reach every node's `/stats`.

use std::collections::BTreeMap;
use std::time::Duration;

use unikv_tests::{assert_json_error, node_ref, wait_until_ok, Unified, UNIFIED_WAIT};
use unikv_types::SLOT_COUNT;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unsafe_requests_are_refused() {
    // One shard: the cheapest cluster with a last active shard.
    let u = Unified::start_shards(1, &[], &[]).await;
    let api = u.api();
    let via = node_ref(1, 1);
    let own_addr = api.http_addr(node_ref(1, 2)).to_string();
    // A port reserved for shard 2's first node, where nothing runs.
    let nobody = api.http_addr(node_ref(2, 1)).to_string();
    // A server that is not part of the cluster: `/addshard` must never connect to it (no
    // request forgery through the node).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bystander = listener.local_addr().unwrap().to_string();
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
            "unknown_address",
        ),
        (
            "/addshard",
            vec![("shardID", "2"), ("shardAddress", &bystander)],
            400,
            "unknown_address",
        ),
        (
            "/addshard",
            vec![("shardID", "2"), ("shardAddress", "no port")],
            400,
            "bad_address",
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
    // Every answer came before this point, so a connection the nodes made would be queued.
    let connected = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
    assert!(
        connected.is_err(),
        "/addshard connected to the address it was given: {connected:?}"
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
