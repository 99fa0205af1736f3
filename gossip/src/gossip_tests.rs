//! Tests of `gossip`.
use super::*;
use unikv_types::{Epoch, NodeId, Role, ShardId, ShardState, SlotRange};

fn state(shard: u64, node: u64, dv: u64, slots: Vec<(SlotRange, Epoch)>) -> NodeState {
    NodeState {
        shard: ShardId(shard),
        node: NodeId(node),
        role: Role::Follower,
        leader: None,
        term: 1,
        http: "127.0.0.1:1".into(),
        raft: "127.0.0.1:2".into(),
        state: ShardState::Active,
        descriptor_version: dv,
        initialised: true,
        initial_shards: None,
        keys: 0,
        bytes: 0,
        chunks: 0,
        tags: Vec::new(),
        catalog_version: 0,
        slots,
    }
}

fn member(name: &str, node: Option<NodeState>) -> MemberView {
    MemberView {
        name: name.into(),
        kind: MemberKind::Node,
        live: false,
        gossip_addr: "127.0.0.1:1".parse().unwrap(),
        node,
    }
}

#[test]
fn forgotten_members_are_retained_only_while_useful() {
    let slots = vec![(SlotRange(0, 9), Epoch(1))];
    let gone = member("node-1-1", Some(state(1, 1, 5, slots.clone())));
    let empty = BTreeMap::new();
    assert!(worth_retaining(&gone, &empty));
    // Without slots or without a node state there is nothing to keep.
    assert!(!worth_retaining(&member("r", None), &empty));
    assert!(!worth_retaining(
        &member("node-1-1", Some(state(1, 1, 5, vec![]))),
        &empty
    ));
    let present = |m: MemberView| BTreeMap::from([(m.name.clone(), m)]);
    // Same name back, same node under another name, or a newer descriptor: dropped.
    assert!(!worth_retaining(&gone, &present(member("node-1-1", None))));
    assert!(!worth_retaining(
        &gone,
        &present(member("x", Some(state(1, 1, 1, vec![]))))
    ));
    assert!(!worth_retaining(
        &gone,
        &present(member("y", Some(state(1, 2, 5, vec![]))))
    ));
    // An older report from the same shard, or other shards, do not replace it.
    assert!(worth_retaining(
        &gone,
        &present(member("y", Some(state(1, 2, 4, vec![]))))
    ));
    assert!(worth_retaining(
        &gone,
        &present(member("z", Some(state(2, 1, 9, slots))))
    ));
}

#[test]
fn bad_member_values_are_skipped_and_last_good_state_kept() {
    let id = ChitchatId::new("node-1-1", 1, "127.0.0.1:1".parse().unwrap());
    let good = state(1, 1, 3, vec![(SlotRange(0, 9), Epoch(1))]);
    let mut kv: BTreeMap<String, String> = keys::encode_node_state(&good).into_iter().collect();
    kv.insert(keys::KIND.into(), "node".into());
    let p = parse_member(&id, 1, &kv, None);
    assert_eq!(p.node.as_ref(), Some(&good));
    assert!(!p.leaving);
    kv.insert(keys::TERM.into(), "garbage".into());
    assert!(parse_member(&id, 2, &kv, None).node.is_none());
    assert_eq!(
        parse_member(&id, 2, &kv, Some(good.clone())).node,
        Some(good)
    );
    kv.insert(keys::KIND.into(), "alien".into());
    assert!(parse_member(&id, 3, &kv, None).kind.is_none());
    kv.insert(keys::KIND.into(), "router".into());
    kv.insert(keys::LEAVING.into(), "true".into());
    let p = parse_member(&id, 4, &kv, None);
    assert_eq!(p.kind, Some(MemberKind::Router));
    assert!(p.node.is_none());
    assert!(p.leaving);
}

#[tokio::test]
async fn resolves_localhost_to_ipv4() {
    assert_eq!(
        resolve_addr("localhost:8011").await.unwrap(),
        "127.0.0.1:8011".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(
        resolve_addr("10.0.0.1:5").await.unwrap(),
        "10.0.0.1:5".parse::<SocketAddr>().unwrap()
    );
    assert!(resolve_addr("nope").await.is_err());
    assert!(resolve_addr("host:notaport").await.is_err());
    let seeds = resolve_seeds(&["localhost:1".into(), "bad".into(), "127.0.0.1:1".into()]).await;
    assert_eq!(seeds, vec!["127.0.0.1:1".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgotten_shard_keeps_its_slots_in_the_view() {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut rc = GossipConfig::new("router-1", MemberKind::Router, any, any, vec![]);
    rc.cluster = "retain".into();
    rc.dead_grace_period = Duration::from_secs(2);
    let router = Gossip::start(rc).await.unwrap();
    let mut nc = GossipConfig::new(
        "node-1-1",
        MemberKind::Node,
        any,
        any,
        vec![router.local_addr().to_string()],
    );
    nc.cluster = "retain".into();
    let node = Gossip::start(nc).await.unwrap();
    node.publish(&state(1, 1, 1, vec![(SlotRange(0, 9), Epoch(1))]))
        .await;
    let mut rx = router.watch();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let until = |pred: fn(&ClusterView) -> bool| {
        let mut rx = rx.clone();
        async move {
            loop {
                if pred(&rx.borrow_and_update()) {
                    return;
                }
                assert!(tokio::time::Instant::now() < deadline, "timed out");
                let _ = tokio::time::timeout(Duration::from_millis(300), rx.changed()).await;
            }
        }
    };
    until(|v| {
        v.shard(ShardId(1))
            .is_some_and(|s| s.state == ShardState::Active)
    })
    .await;
    node.abort();
    // Dead, then garbage-collected by chitchat (2 s later): the view still has the slots.
    let chitchat = router.inner.chitchat.clone();
    let started = tokio::time::Instant::now();
    loop {
        let known = chitchat.lock().await.node_states().len();
        if known == 1 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never collected"
        );
        let _ = tokio::time::timeout(Duration::from_millis(300), rx.changed()).await;
    }
    // One more round so the view has seen the collection.
    refresh_view(&router.inner.builder, &router.inner.view_tx).await;
    let view = router.view();
    let shard = view.shard(ShardId(1)).expect("shard still known");
    assert_eq!(shard.state, ShardState::Unreachable);
    assert_eq!(view.owner_of(3), Some((ShardId(1), Epoch(1))));
    assert!(!view.member("node-1-1").unwrap().live);
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_gossip_is_dropped_and_the_view_unchanged() {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let key = crate::sealed::GossipKey::new([7; 32]);
    let cfg = |name: &str, seeds: Vec<String>, key: Option<crate::sealed::GossipKey>| {
        let mut c = GossipConfig::new(name, MemberKind::Node, any, any, seeds);
        c.cluster = "sealed".into();
        c.key = key;
        c
    };
    // Two members of the cluster: shard 1 owns slots 0-9 at epoch 1.
    let victim = Gossip::start(cfg("node-2-1", vec![], Some(key.clone())))
        .await
        .unwrap();
    let seeds = vec![victim.local_addr().to_string()];
    let owner = Gossip::start(cfg("node-1-1", seeds.clone(), Some(key.clone())))
        .await
        .unwrap();
    owner
        .publish(&state(1, 1, 1, vec![(SlotRange(0, 9), Epoch(1))]))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut rx = victim.watch();
    while victim.view().owner_of(3) != Some((ShardId(1), Epoch(1))) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the owner never showed"
        );
        let _ = tokio::time::timeout(Duration::from_millis(300), rx.changed()).await;
    }
    // Outsiders — one in the clear, one with another cluster's key — claim the same slots
    // at a higher epoch and a newer descriptor, and gossip them at the victim.
    let forged = state(3, 1, 99, vec![(SlotRange(0, 9), Epoch(50))]);
    let plain = Gossip::start(cfg("node-3-1", seeds.clone(), None))
        .await
        .unwrap();
    plain.publish(&forged).await;
    let other_key = crate::sealed::GossipKey::new([8; 32]);
    let foreign = Gossip::start(cfg("node-3-2", seeds, Some(other_key)))
        .await
        .unwrap();
    foreign
        .publish(&state(3, 2, 99, vec![(SlotRange(0, 9), Epoch(50))]))
        .await;
    // Wait until the victim has dropped datagrams from both for a while.
    let stats = victim.seal_stats().expect("sealed gossip");
    while stats.forged.load(std::sync::atomic::Ordering::Relaxed) < 20 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no forged datagram arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let view = victim.view();
    assert_eq!(
        view.owner_of(3),
        Some((ShardId(1), Epoch(1))),
        "slot owner unchanged"
    );
    assert!(
        view.shard(ShardId(3)).is_none(),
        "the outsiders are not members"
    );
    assert!(view.member("node-3-1").is_none() && view.member("node-3-2").is_none());
    let counts = stats.counts();
    assert!(counts.accepted > 0, "{counts:?}");
    // The members' own gossip still flows both ways.
    assert!(owner.seal_stats().unwrap().counts().accepted > 0);
    for g in [plain, foreign, owner, victim] {
        g.shutdown().await;
    }
}
