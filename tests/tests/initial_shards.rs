//! Shards started together with different `--initial_shards` would split the slots
//! differently and could claim overlapping ranges at epoch 1. Two real one-node shards, one
//! started with 2 (one peer), the other with 3 (two peers, one never started): each sees the
//! other fresh and disagreeing, claims nothing, and says why in its log and `/raft/status`.
//! (Before, the first one claimed half of the slots while the other still expected three.)

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use unikv_tests::{alloc_ports, node_bin, wait_until, Api};

/// Kills the process it holds when dropped (a failing test leaves nothing running).
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_disagreeing_on_initial_shards_claim_nothing_and_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let p = alloc_ports(5);
    let (http1, raft1, http2, raft2, http3) = (p[0], p[1], p[2], p[3], p[4]);
    let start = |shard: u64, http: u16, raft: u16, peers: String| {
        let child = Command::new(node_bin())
            .args(["--shard_id", &shard.to_string(), "--node_id", "1"])
            .args(["--port", &http.to_string()])
            .args(["--raft_addr", &format!("127.0.0.1:{raft}")])
            .args(["--peer_shards", &peers])
            .arg("--data_dir")
            .arg(dir.path().join(format!("data{shard}")))
            .arg("--tls_dir")
            .arg(dir.path().join("tls"))
            .arg("--log_file")
            .arg(dir.path().join(format!("node{shard}.log")))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start unikv-node");
        Proc(child)
    };
    // Shard 1 counts 2 initial shards; shard 2 counts 3.
    let _one = start(1, http1, raft1, format!("127.0.0.1:{http2}"));
    let _two = start(
        2,
        http2,
        raft2,
        format!("127.0.0.1:{http1},127.0.0.1:{http3}"),
    );
    let api = Api::new(BTreeMap::from([
        (1, format!("127.0.0.1:{http1}")),
        (2, format!("127.0.0.1:{http2}")),
    ]));
    for (node, ours, theirs) in [(1u64, 2u64, 3u64), (2, 3, 2)] {
        let status: Value = wait_until(
            Duration::from_secs(20),
            &format!("shard {node} reports a claim problem"),
            || async {
                let r = api.get_path(node, "/raft/status", &[]).await.ok()?;
                let j = r.json?;
                j.get("claim_problem")?.as_str()?;
                Some(j)
            },
        )
        .await;
        let why = status["claim_problem"].as_str().unwrap();
        assert_eq!(status["initial_shards"].as_u64(), Some(ours), "{status}");
        assert!(
            why.contains(&format!("--initial_shards {theirs}")),
            "shard {node}: {why}"
        );
    }
    // Neither claimed anything, and the logs say why.
    for node in [1u64, 2] {
        let r = api.get_path(node, "/config", &[]).await.unwrap();
        let shards = r
            .json
            .as_ref()
            .and_then(|j| j["shards"].as_array())
            .unwrap();
        for s in shards {
            assert_eq!(
                s["epochs"].as_array().map(Vec::len),
                Some(0),
                "node of shard {node} sees shard {} own slots: {s}",
                s["id"]
            );
        }
        let log = std::fs::read_to_string(dir.path().join(format!("node{node}.log"))).unwrap();
        assert!(
            log.contains("not claiming initial slots"),
            "shard {node}'s log says why"
        );
    }
}
