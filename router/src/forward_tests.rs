//! Tests of `forward`.
use super::*;
use crate::routing::tests::{node, three_shards};
use crate::routing::{Owner, ShardRoute};
use std::sync::Mutex;
use unikv_types::catalog::Space;
use unikv_types::{Epoch, NodeId, NodeRef, SLOT_COUNT};

type Answer = unikv_net::Result<Result<KvReply, KvError>>;
type Script = dyn Fn(&str, &KvRequest) -> Answer + Send + Sync;

/// A backend that answers by script and records every call.
pub(crate) struct Fake {
    script: Box<Script>,
    pub(crate) calls: Mutex<Vec<(String, KvRequest)>>,
}

impl Fake {
    pub(crate) fn new(
        script: impl Fn(&str, &KvRequest) -> Answer + Send + Sync + 'static,
    ) -> Arc<Fake> {
        Arc::new(Fake {
            script: Box::new(script),
            calls: Mutex::new(Vec::new()),
        })
    }

    pub(crate) fn calls(&self) -> Vec<(String, KvRequest)> {
        self.calls.lock().unwrap().clone()
    }

    fn take_calls(&self) -> Vec<(String, KvRequest)> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

impl Backend for Arc<Fake> {
    fn call(
        &self,
        raft_addr: &str,
        req: &KvRequest,
        _timeout: Duration,
    ) -> impl Future<Output = Answer> + Send {
        self.calls
            .lock()
            .unwrap()
            .push((raft_addr.to_string(), req.clone()));
        let answer = (self.script)(raft_addr, req);
        async move { answer }
    }
}

/// Answers every request as the operation's success would.
pub(crate) fn success(req: &KvRequest) -> Answer {
    Ok(Ok(match &req.op {
        KvOp::Get => KvReply::Value(Some(format!("v-{}", req.key))),
        KvOp::Put { .. } => KvReply::Written,
        KvOp::Append { .. } => KvReply::Appended { previous: None },
        KvOp::Delete => KvReply::Deleted { existed: true },
        KvOp::Catalog(_) => KvReply::Catalog(unikv_types::catalog::CatalogReply {
            outcome: unikv_types::catalog::CatalogOutcome::Created,
            version: 1,
            collection: None,
        }),
        KvOp::Scan(_) => KvReply::Scan(Default::default()),
        KvOp::Chunks => KvReply::Chunks(vec![]),
        KvOp::Split | KvOp::MoveChunk { .. } => KvReply::Written,
        KvOp::Usage => KvReply::Usage { keys: 0, bytes: 0 },
    }))
}

fn unavailable(shard: u64) -> Answer {
    Ok(Err(KvError::Unavailable {
        shard: ShardId(shard),
        reason: "no quorum".into(),
    }))
}

fn lost(addr: &str) -> Answer {
    Err(unikv_net::Error::Timeout {
        addr: addr.into(),
        after_ms: 1500,
    })
}

pub(crate) fn forwarder(fake: &Arc<Fake>, timeout_ms: u64) -> Forwarder<Arc<Fake>> {
    let routing = Arc::new(Routing::new());
    routing.install(three_shards(1));
    Forwarder::new(
        fake.clone(),
        routing,
        Limits::default(),
        Duration::from_millis(timeout_ms),
    )
}

fn put(v: &str) -> KvOp {
    KvOp::Put { value: v.into() }
}

/// "foo" hashes to slot 12182, owned by shard 3 in `three_shards`.
const FOO_SHARD: u64 = 3;

#[tokio::test]
async fn requests_go_to_the_owner_leader_and_writes_get_a_session() {
    let fake = Fake::new(|_, req| success(req));
    let f = forwarder(&fake, 1000);
    assert_eq!(
        f.execute("foo".into(), put("1"), None, Space::default())
            .await
            .unwrap(),
        KvReply::Written
    );
    assert_eq!(
        f.execute("foo".into(), put("2"), None, Space::default())
            .await
            .unwrap(),
        KvReply::Written
    );
    let caller = ClientSeq::new("me", 42);
    f.execute(
        "foo".into(),
        KvOp::Delete,
        Some(caller.clone()),
        Space::default(),
    )
    .await
    .unwrap();
    f.execute("foo".into(), KvOp::Get, None, Space::default())
        .await
        .unwrap();
    let calls = fake.calls();
    assert_eq!(calls.len(), 4);
    for (addr, req) in &calls {
        assert_eq!(addr, &node(FOO_SHARD, 1).raft);
        assert!(!req.forwarded);
    }
    let (a, b) = (
        calls[0].1.client.clone().unwrap(),
        calls[1].1.client.clone().unwrap(),
    );
    assert!(a.client_id.starts_with('r'));
    assert_eq!(a.client_id, b.client_id);
    assert_eq!((a.seq, b.seq), (1, 2));
    // The caller's pair goes on as it is, stamped with when the router first sent it.
    let sent = calls[2].1.client.clone().unwrap();
    assert_eq!((&sent.client_id, sent.seq), (&caller.client_id, caller.seq));
    assert!(sent.ts.is_some() && a.ts.is_some());
    assert_eq!(calls[3].1.client, None);
    assert_eq!(
        f.counters().to_json(),
        serde_json::json!({"requests": 4, "ok": 4, "errors": 0, "redirects": 0, "retries": 0, "unavailable": 0})
    );
}

#[tokio::test]
async fn not_leader_is_followed_and_remembered() {
    let leader = node(FOO_SHARD, 2);
    let hint = leader.clone();
    let fake = Fake::new(move |addr, req| {
        if addr == hint.raft {
            success(req)
        } else {
            Ok(Err(KvError::NotLeader {
                shard: ShardId(FOO_SHARD),
                leader: Some(hint.clone()),
            }))
        }
    });
    let f = forwarder(&fake, 1000);
    f.execute("foo".into(), put("1"), None, Space::default())
        .await
        .unwrap();
    let calls = fake.take_calls();
    let addrs: Vec<&str> = calls.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        addrs,
        [node(FOO_SHARD, 1).raft.as_str(), leader.raft.as_str()]
    );
    // Both attempts carry the same (client id, seq).
    assert_eq!(calls[0].1.client, calls[1].1.client);
    // The next request goes straight to the hinted leader.
    f.execute("foo".into(), KvOp::Get, None, Space::default())
        .await
        .unwrap();
    assert_eq!(fake.take_calls()[0].0, leader.raft);
    assert_eq!(f.counters().to_json()["redirects"], 1);
}

#[tokio::test]
async fn wrong_shard_with_a_newer_owner_is_followed_and_remembered() {
    let fake = Fake::new(|addr, req| {
        if addr == node(FOO_SHARD, 1).raft {
            Ok(Err(KvError::WrongShard {
                slot: 12182,
                shard: ShardId(FOO_SHARD),
                owner: Some(ShardId(2)),
                epoch: Some(Epoch(2)),
            }))
        } else {
            success(req)
        }
    });
    let f = forwarder(&fake, 1000);
    f.execute("foo".into(), KvOp::Get, None, Space::default())
        .await
        .unwrap();
    let calls = fake.take_calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].0, node(2, 1).raft);
    // Remembered: the next request for the slot goes to shard 2 directly.
    f.execute("foo".into(), put("x"), None, Space::default())
        .await
        .unwrap();
    let calls = fake.take_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].0, node(2, 1).raft);
    // Other slots of shard 3 are still sent to shard 3 first.
    let other = (0..)
        .map(|i| format!("k{i}"))
        .find(|k| {
            let s = key_slot(k.as_bytes());
            s != 12182 && u64::from(s) * 3 / u64::from(SLOT_COUNT) + 1 == FOO_SHARD
        })
        .unwrap();
    f.execute(other, KvOp::Get, None, Space::default())
        .await
        .unwrap();
    assert_eq!(fake.take_calls()[0].0, node(FOO_SHARD, 1).raft);
}

#[tokio::test]
async fn wrong_shard_without_an_owner_waits_for_gossip() {
    let fake = Fake::new(|addr, req| {
        if addr.starts_with("127.0.0.1:1803") {
            Ok(Err(KvError::WrongShard {
                slot: 12182,
                shard: ShardId(FOO_SHARD),
                owner: None,
                epoch: None,
            }))
        } else {
            success(req)
        }
    });
    let f = forwarder(&fake, 3000);
    let routing = f.routing.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Gossip now says slot 12182 moved to shard 1 at epoch 2.
        let old = routing.table();
        let mut slots: Vec<Option<Owner>> = (0..SLOT_COUNT).map(|s| old.owner(s)).collect();
        slots[12182] = Some(Owner {
            shard: ShardId(1),
            epoch: Epoch(2),
        });
        let shards: Vec<ShardRoute> = old.shards().cloned().collect();
        routing.install(Table::new(2, 2, slots, shards));
    });
    let started = Instant::now();
    f.execute("foo".into(), KvOp::Get, None, Space::default())
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    let calls = fake.calls();
    assert_eq!(calls.last().unwrap().0, node(1, 1).raft);
}

#[tokio::test]
async fn failing_nodes_are_skipped_keeping_the_same_seq() {
    let fake = Fake::new(|addr, req| {
        if addr == node(FOO_SHARD, 1).raft {
            lost(addr)
        } else if addr == node(FOO_SHARD, 2).raft {
            Ok(Err(KvError::Unknown {
                reason: "leader changed".into(),
            }))
        } else {
            success(req)
        }
    });
    let f = forwarder(&fake, 2000);
    let reply = f
        .execute(
            "foo".into(),
            KvOp::Append { value: "a".into() },
            None,
            Space::default(),
        )
        .await
        .unwrap();
    assert_eq!(reply, KvReply::Appended { previous: None });
    let calls = fake.take_calls();
    let addrs: Vec<&str> = calls.iter().map(|(a, _)| a.as_str()).collect();
    let want: Vec<String> = (1..=3).map(|n| node(FOO_SHARD, n).raft).collect();
    assert_eq!(addrs, want);
    assert!(calls.iter().all(|(_, r)| r.client == calls[0].1.client));
    assert_eq!(f.counters().to_json()["retries"], 2);
    // The node that timed out is now tried last.
    f.execute("foo".into(), KvOp::Get, None, Space::default())
        .await
        .unwrap();
    assert_ne!(fake.take_calls()[0].0, node(FOO_SHARD, 1).raft);
}

#[tokio::test]
async fn the_deadline_answers_503_naming_slot_and_shard() {
    let fake = Fake::new(|_, _| unavailable(FOO_SHARD));
    let f = forwarder(&fake, 300);
    let started = Instant::now();
    let err = f
        .execute("foo".into(), put("1"), None, Space::default())
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(2));
    assert_eq!(err.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(err.code, "unavailable");
    assert_eq!(err.details["slot"], 12182);
    assert_eq!(err.details["shard"], FOO_SHARD);
    assert_eq!(err.details["maybe_applied"], false);
    assert!(err.message.contains("slot 12182"), "{}", err.message);
    let calls = fake.calls();
    // Every member was tried, with backoff between rounds (not a hot loop).
    assert!(
        calls.len() >= 3 && calls.len() < 100,
        "{} calls",
        calls.len()
    );
    assert!(calls.iter().all(|(_, r)| r.client == calls[0].1.client));
    let c = f.counters().to_json();
    assert_eq!(
        (c["unavailable"].as_u64(), c["errors"].as_u64()),
        (Some(1), Some(1))
    );
}

#[tokio::test]
async fn unowned_slots_wait_for_gossip_then_answer_503() {
    let fake = Fake::new(|_, req| success(req));
    let f = Forwarder::new(
        fake.clone(),
        Arc::new(Routing::new()),
        Limits::default(),
        Duration::from_millis(200),
    );
    let err = f
        .execute("foo".into(), KvOp::Get, None, Space::default())
        .await
        .unwrap_err();
    assert_eq!(err.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(err.details["slot"], 12182);
    assert!(err.details["shard"].is_null());
    assert!(!err.details.contains_key("maybe_applied"));
    assert!(fake.calls().is_empty());

    // A view arriving in time is used at once.
    let routing = f.routing.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        routing.install(three_shards(1));
    });
    f.execute("foo".into(), KvOp::Get, None, Space::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_slot_gossip_forgot_is_reported_with_its_last_owner() {
    let fake = Fake::new(|_, req| success(req));
    let f = forwarder(&fake, 200);
    // All of shard 3's nodes died long enough ago for gossip to forget them.
    let old = f.routing.table();
    let slots: Vec<Option<Owner>> = (0..SLOT_COUNT)
        .map(|s| old.owner(s).filter(|o| o.shard != ShardId(FOO_SHARD)))
        .collect();
    let shards: Vec<ShardRoute> = old
        .shards()
        .filter(|s| s.id != ShardId(FOO_SHARD))
        .cloned()
        .collect();
    f.routing.install(Table::new(2, 2, slots, shards));
    let err = f
        .execute("foo".into(), KvOp::Get, None, Space::default())
        .await
        .unwrap_err();
    assert_eq!(err.code, "unavailable");
    assert_eq!(err.details["slot"], 12182);
    assert_eq!(err.details["shard"], FOO_SHARD);
    assert!(fake.calls().is_empty());
}

#[tokio::test]
async fn a_shard_with_no_known_members_is_unavailable() {
    let fake = Fake::new(|_, req| success(req));
    let routing = Arc::new(Routing::new());
    let slots = vec![
        Some(Owner {
            shard: ShardId(5),
            epoch: Epoch(1)
        });
        usize::from(SLOT_COUNT)
    ];
    routing.install(Table::new(1, 1, slots, []));
    let f = Forwarder::new(
        fake.clone(),
        routing,
        Limits::default(),
        Duration::from_millis(200),
    );
    let err = f
        .execute("foo".into(), KvOp::Get, None, Space::default())
        .await
        .unwrap_err();
    assert_eq!(err.details["shard"], 5);
    assert!(
        err.message.contains("no member of shard 5"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn other_errors_are_answered_as_they_are() {
    let fake = Fake::new(|_, req| {
        Ok(Err(match &req.op {
            KvOp::Get => KvError::BadRequest {
                code: "odd".into(),
                message: "odd request".into(),
            },
            KvOp::Put { .. } => KvError::StaleSequence {
                client_id: "me".into(),
                seq: 1,
                last: 5,
            },
            KvOp::Append { .. } => KvError::InsufficientStorage {
                shard: ShardId(1),
                node: NodeId(1),
                reason: "No space left on device".into(),
            },
            _ => KvError::Internal("disk".into()),
        }))
    });
    let f = forwarder(&fake, 1000);
    let e = f
        .execute("foo".into(), KvOp::Get, None, Space::default())
        .await
        .unwrap_err();
    assert_eq!((e.status.as_u16(), e.code.as_str()), (400, "odd"));
    let e = f
        .execute("foo".into(), put("v"), None, Space::default())
        .await
        .unwrap_err();
    assert_eq!(
        (e.status.as_u16(), e.code.as_str()),
        (409, "stale_sequence")
    );
    let e = f
        .execute("foo".into(), KvOp::Delete, None, Space::default())
        .await
        .unwrap_err();
    assert_eq!((e.status.as_u16(), e.code.as_str()), (500, "internal"));
    // A full leader's refusal is passed on, not retried elsewhere.
    let append = KvOp::Append { value: "v".into() };
    let e = f
        .execute("foo".into(), append, None, Space::default())
        .await
        .unwrap_err();
    assert_eq!(
        (e.status.as_u16(), e.code.as_str()),
        (507, "insufficient_storage")
    );
    assert_eq!(fake.calls().len(), 4);
}

#[tokio::test]
async fn limits_are_checked_before_anything_is_sent() {
    let fake = Fake::new(|_, req| success(req));
    let f = forwarder(&fake, 1000);
    let e = f
        .execute(String::new(), KvOp::Get, None, Space::default())
        .await
        .unwrap_err();
    assert_eq!((e.status.as_u16(), e.code.as_str()), (400, "empty_key"));
    let e = f
        .execute("k".repeat(1025), KvOp::Get, None, Space::default())
        .await
        .unwrap_err();
    assert_eq!(e.code, "key_too_long");
    let e = f
        .execute(
            "k".into(),
            put(&"v".repeat(1024 * 1024 + 1)),
            None,
            Space::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, "value_too_long");
    assert!(fake.calls().is_empty());
}

#[tokio::test]
async fn two_nodes_naming_each_other_do_not_spin() {
    let a = node(FOO_SHARD, 1);
    let b = node(FOO_SHARD, 2);
    let (a2, b2) = (a.clone(), b.clone());
    let fake = Fake::new(move |addr, _| {
        let other: NodeRef = if addr == a2.raft {
            b2.clone()
        } else {
            a2.clone()
        };
        Ok(Err(KvError::NotLeader {
            shard: ShardId(FOO_SHARD),
            leader: Some(other),
        }))
    });
    let f = forwarder(&fake, 300);
    let err = f
        .execute("foo".into(), KvOp::Get, None, Space::default())
        .await
        .unwrap_err();
    assert_eq!(err.code, "unavailable");
    let n = fake.calls().len();
    assert!(n < 100, "{n} calls in 300 ms");
}
