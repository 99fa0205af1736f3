//! Per-process certificates on a real `run_unified.sh` cluster (issued by `unikv-node certs` on
//! first start):
//! - the router's certificate gets client requests answered, but a node refuses it every
//!   Raft, move and membership request (`APPEND`, `MOVE_ACTIVATE`, `MOVE_IN`, `ADMIN`, ...);
//! - a certificate from another cluster CA is refused at the handshake, with an error that
//!   says so and what to do;
//! - no process needs the CA key after `certs` ran: with the CA directory gone, nodes and the
//!   router restart and serve, and no process's directory holds a CA key.

use std::path::Path;
use std::time::Duration;

use unikv_net::{ClusterTls, Error, Identity, Transport};
use unikv_tests::{wait_until_ok, Proc, Unified, ROUTER, UNIFIED_WAIT};
use unikv_types::{rpc_kind, KvOp, KvReply, KvRequest};

const SHORT: Duration = Duration::from_secs(3);

fn get(key: &str) -> KvRequest {
    KvRequest {
        key: key.into(),
        op: KvOp::Get,
        client: None,
        forwarded: false,
        collection: None,
        shard_key: None,
    }
}

fn certs(u: &Unified, name: &str) -> std::path::PathBuf {
    u.root().join("data").join("certs").join(name)
}

/// The KV answer for `key` from node 1 of `shard` (forwarded to its leader if need be).
async fn kv_get(
    t: &Transport,
    addr: &str,
    key: &str,
) -> Result<Result<KvReply, unikv_types::KvError>, Error> {
    t.call(addr, rpc_kind::KV, &get(key), SHORT).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_router_certificate_sends_only_client_requests() {
    let u = Unified::start().await;
    let api = u.api();
    assert!(api.put(ROUTER, "cert-key", "v").await.unwrap().is_ok_true());
    let router_tls = ClusterTls::load(&certs(&u, "router"), &Identity::router("router").unwrap())
        .expect("the router's certificate directory");
    assert!(!router_tls.is_development());
    let t = Transport::client(&router_tls).unwrap();
    let shard = u
        .agreed_slot_map()
        .await
        .owner(unikv_types::key_slot(b"cert-key"))
        .unwrap();
    let addr = format!("127.0.0.1:{}", u.ports().raft(shard, 1));

    let reply = kv_get(&t, &addr, "cert-key").await.expect("a KV call");
    assert_eq!(reply, Ok(KvReply::Value(Some("v".into()))));

    for (kind, name) in [
        (rpc_kind::APPEND, "APPEND"),
        (rpc_kind::VOTE, "VOTE"),
        (rpc_kind::MOVE_IN, "MOVE_IN"),
        (rpc_kind::MOVE_REFUSE, "MOVE_REFUSE"),
        (rpc_kind::ADMIN, "ADMIN"),
        (rpc_kind::SHARD_ADMIN, "SHARD_ADMIN"),
        (rpc_kind::FENCE, "FENCE"),
        (rpc_kind::UNIT_ACTIVATE, "UNIT_ACTIVATE"),
    ] {
        let r = t.call::<_, ()>(&addr, kind, &(), SHORT).await;
        assert!(
            matches!(r, Err(Error::Refused(_))),
            "{name} from a router certificate: {r:?}"
        );
        println!(
            "[figure] {name} from the router's certificate: {}",
            r.unwrap_err()
        );
    }
    // Still a good client afterwards: refusals end streams, not the connection.
    let reply = kv_get(&t, &addr, "cert-key").await.expect("a KV call");
    assert_eq!(reply, Ok(KvReply::Value(Some("v".into()))));

    // The same request from a node's certificate is answered (HELLO: who are you?).
    let router_hello = t
        .call::<_, serde_json::Value>(&addr, rpc_kind::HELLO, &(), SHORT)
        .await;
    assert!(
        matches!(router_hello, Err(Error::Refused(_))),
        "{router_hello:?}"
    );
    let node_tls = ClusterTls::load(&certs(&u, "node-1-2"), &Identity::node(1, 2)).unwrap();
    let n = Transport::client(&node_tls).unwrap();
    let hello: serde_json::Value = n
        .call(&addr, rpc_kind::HELLO, &(), SHORT)
        .await
        .expect("a node's HELLO");
    assert!(!hello.is_null(), "{hello}");
    t.close().await;
    n.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_ca_is_refused_and_the_ca_key_is_never_needed() {
    let u = Unified::start().await;
    let api = u.api();
    let addr = format!("127.0.0.1:{}", u.ports().raft(1, 1));

    // A certificate of another cluster, even for a valid identity, is refused.
    let other = tempfile::tempdir().unwrap();
    unikv_net::issue_certificates(
        &other.path().join("ca"),
        &other.path().join("n"),
        &Identity::node(1, 1),
    )
    .unwrap();
    let stranger_tls = ClusterTls::load(&other.path().join("n"), &Identity::node(1, 1)).unwrap();
    let stranger = Transport::client(&stranger_tls).unwrap();
    let e = kv_get(&stranger, &addr, "k").await.unwrap_err();
    let text = e.to_string();
    println!("[figure] another CA: {text}");
    assert!(matches!(e, Error::Tls(_)), "{text}");
    assert!(
        text.contains("another cluster CA") && text.contains("unikv-node certs"),
        "{text}"
    );
    stranger.close().await;

    // What each process was given: its own directory, the CA certificate without its key.
    let data = u.root().join("data");
    for p in u.procs() {
        let name = match p {
            Proc::Node(s, n) => format!("node-{s}-{n}"),
            Proc::Router => "router".to_owned(),
        };
        let dir = data.join("certs").join(&name);
        assert_no_ca_key(&dir);
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", u.pid(p).unwrap())).unwrap();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(
            cmdline.contains(&format!("certs/{name}")) && !cmdline.contains("data/ca"),
            "{p}: {cmdline}"
        );
    }

    // With the CA directory gone, a node and the router still restart and serve.
    std::fs::rename(data.join("ca"), u.root().join("ca-offline")).unwrap();
    assert!(api.put(ROUTER, "before", "1").await.unwrap().is_ok_true());
    u.kill9(Proc::Node(1, 1)).await;
    u.restart_node(1, 1).await;
    u.wait_node_caught_up(1, 1).await;
    u.restart_router().await;
    wait_until_ok(
        UNIFIED_WAIT,
        "a put through the restarted router",
        || async {
            match api.put(ROUTER, "after", "2").await {
                Ok(r) if r.is_ok_true() => Ok(()),
                Ok(r) => Err(r.to_string()),
                Err(e) => Err(format!("{e:#}")),
            }
        },
    )
    .await;
    assert_eq!(
        api.get_value(ROUTER, "before").await.unwrap().as_deref(),
        Some("1")
    );
    assert!(!data.join("ca").exists());
}

fn assert_no_ca_key(dir: &Path) {
    assert!(dir.join("cert.pem").is_file(), "{}", dir.display());
    assert!(!dir.join("ca.key").exists(), "{}", dir.display());
    let ca = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
    assert!(!ca.contains("PRIVATE KEY"), "{}: {ca}", dir.display());
}
