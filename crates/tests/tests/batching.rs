//! Concurrent writes share Raft entries on real processes: every write is acknowledged with its
//! own answer and reads back, and the leader's proposer counters show entries carrying more
//! than one write.

use futures::future::join_all;
use unikv_tests::{Cluster, WAIT};

async fn proposer_counters(c: &Cluster, node: u64) -> (u64, u64) {
    let r = c
        .api()
        .get_path(node, "/raft/status", &[])
        .await
        .expect("/raft/status");
    let n = |f: &str| {
        r.field(f)
            .and_then(|v| v.as_u64())
            .unwrap_or_else(|| panic!("/raft/status has no {f}: {r}"))
    };
    (n("proposed_entries"), n("proposed_writes"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_share_entries_and_each_gets_its_own_answer() {
    let c = Cluster::start().await;
    let leader = c.wait_converged(WAIT).await;
    let (entries_before, writes_before) = proposer_counters(&c, leader).await;
    let api = c.api();
    for round in 0..5 {
        let puts = (0..64).map(|i| {
            let api = api.clone();
            async move {
                let key = format!("b{round}-{i}");
                let r = api
                    .put_seq(
                        leader,
                        &key,
                        &format!("v{round}-{i}"),
                        &format!("c{i}"),
                        round + 1,
                    )
                    .await
                    .unwrap();
                (key, r)
            }
        });
        for (key, r) in join_all(puts).await {
            assert!(r.is_ok(), "put {key}: {r}");
        }
        // Appends answer with the value they extended: each must see its own key's value.
        let appends = (0..64).map(|i| {
            let api = api.clone();
            async move {
                let key = format!("b{round}-{i}");
                (i, api.append(leader, &key, "+").await.unwrap())
            }
        });
        for (i, r) in join_all(appends).await {
            assert!(r.is_ok(), "append b{round}-{i}: {r}");
            assert_eq!(
                r.str_field("previous"),
                Some(format!("v{round}-{i}").as_str()),
                "{r}"
            );
        }
    }
    for round in 0..5 {
        for i in 0..64 {
            let key = format!("b{round}-{i}");
            let want = format!("v{round}-{i}+");
            assert_eq!(
                c.get_value(leader, &key).await.as_deref(),
                Some(want.as_str())
            );
        }
    }
    let (entries, writes) = proposer_counters(&c, leader).await;
    let (entries, writes) = (entries - entries_before, writes - writes_before);
    eprintln!("[batching] {writes} writes in {entries} entries");
    assert_eq!(
        writes,
        5 * 128,
        "every write went through the proposer once"
    );
    assert!(
        entries < writes,
        "640 concurrent writes never shared an entry ({entries} entries)"
    );
}
